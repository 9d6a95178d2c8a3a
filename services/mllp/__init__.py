"""HL7 v2 ADT over MLLP: the door for hospitals' patient administration systems."""
