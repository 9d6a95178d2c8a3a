"""HL7 v2 ADT, the pure part: bytes to text, text to care events, and the ACK to send back.

No sockets here (carehub.domain does no I/O): the MLLP server frames and unframes, and calls
:func:`charset.decode`, :func:`mapping.map_message` and :func:`ack.build_ack`. What is mapped,
and why, is in docs/hl7v2-adt.md; the table itself is data, ``carehub/domain/data/hl7v2/adt.toml``.
"""
