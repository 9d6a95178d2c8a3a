"""Protobuf wire-format helpers: varints, and repeated message fields built from bytes.

Building an ``AcceptedBatch`` by appending messages copies each one and serialises it
again; concatenating the already serialised events with their field tag and length is
the same encoding without that work.
"""

from __future__ import annotations

from collections.abc import Iterable


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The base-128 varint at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def repeated_field(field_number: int, payloads: Iterable[bytes]) -> bytes:
    """Encoding of a repeated message (or bytes) field holding ``payloads`` in order."""
    tag = encode_varint(field_number << 3 | 2)
    return b"".join(tag + encode_varint(len(p)) + p for p in payloads)


def iter_delimited(data: bytes) -> Iterable[bytes]:
    """The payloads of a length-delimited stream (each preceded by its size as a varint)."""
    pos = 0
    while pos < len(data):
        size, pos = decode_varint(data, pos)
        if pos + size > len(data):
            raise ValueError("truncated record")
        yield data[pos:pos + size]
        pos += size
