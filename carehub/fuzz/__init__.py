"""Malformed inputs for the hub's four wire forms, made by mutating valid messages, and a run
that sends them with valid traffic in between and accounts for every one.

Pure and seeded (no I/O): :mod:`.mutators` (bytes, and JSON as data with raw tokens),
:mod:`.protobuf` (CareEvent fields and wire format), :mod:`.hl7` (segments, fields, escapes,
character sets and MLLP framing), :mod:`.fhir` (Bundles) and :mod:`.corpus` (the valid messages,
and the inputs of a run: the same seed gives the same inputs). :mod:`.campaign` sends them to a
running hub (carehub.harness.LocalHub) and reads every outcome back from its topics;
``tools/fuzz.py`` is the command line (``make fuzz``).
"""
