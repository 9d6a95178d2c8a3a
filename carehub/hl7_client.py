"""`carehub send-hl7`: an MLLP client that sends HL7 v2 messages and prints each ACK.

Files hold one or more messages; segments end with CR, LF or CRLF (sent as CR, as HL7 wants)
and messages are separated by a blank line or by the next MSH. Bytes are sent as they are in
the file, so a message declares its own character set in MSH-18. Framing and the ACK read use
python-hl7's MLLP streams (``hl7.mllp.open_hl7_connection``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import hl7.mllp

_SEGMENT_END = re.compile(rb"\r\n|\n|\r")


def split_messages(data: bytes) -> Iterator[bytes]:
    """The messages in ``data``, each with CR-terminated segments."""
    message: list[bytes] = []
    for line in _SEGMENT_END.split(data):
        if not line.strip() or line.startswith(b"MSH"):
            if message:
                yield b"\r".join(message) + b"\r"
                message = []
            if not line.strip():
                continue
        message.append(line)
    if message:
        yield b"\r".join(message) + b"\r"


@dataclass(frozen=True)
class Outcome:
    source: str
    control_id: str
    code: str
    text: str


def _field(segment: bytes, n: int) -> str:
    parts = segment.split(segment[3:4]) if segment[:3] == b"MSH" else segment.split(b"|")
    index = n - 1 if segment[:3] == b"MSH" else n
    value = parts[index] if len(parts) > index else b""
    return value.decode("latin-1")


def describe(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-3) of an ACK."""
    for segment in _SEGMENT_END.split(ack):
        if segment.startswith(b"MSA"):
            return _field(segment, 1), _field(segment, 3)
    return "?", "no MSA segment in the answer"


async def send(host: str, port: int, messages: Iterable[tuple[str, bytes]], timeout_s: float = 30.0,
               ) -> list[Outcome]:
    reader, writer = await hl7.mllp.open_hl7_connection(host, port)
    out: list[Outcome] = []
    try:
        for source, message in messages:
            msh = message.split(b"\r", 1)[0]
            writer.writeblock(message)
            await writer.drain()
            ack = await asyncio.wait_for(reader.readblock(), timeout_s)
            code, text = describe(ack)
            out.append(Outcome(source, _field(msh, 10), code, text))
            print(f"{source} {out[-1].control_id}: {code}{' ' + text if text else ''}", flush=True)
    finally:
        writer.close()
    return out


def messages_of(paths: Iterable[Path]) -> Iterator[tuple[str, bytes]]:
    for path in paths:
        for n, message in enumerate(split_messages(path.read_bytes()), 1):
            yield f"{path}#{n}", message
