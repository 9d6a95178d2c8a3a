"""Seeded mutations of HL7 v2 ADT messages and of their MLLP framing; the framing a server sees.

Message level, on segments and fields (the message as bytes, segments ending in CR): another
field separator or other encoding characters in MSH-1/MSH-2, MSH fields missing or with values
the hub refuses (message type, trigger, processing id, version, facility, control id), MSH-15/16
acknowledgement modes (NE: no ACK at all), escape sequences that cannot be read, MSH-18
character sets that are not supported or do not match the bytes, huge fields (0.9 MB, and over the
1 MiB frame limit), garbage lines between segments, 0x0B/0x1C bytes inside fields, segments
missing, repeated or out of order, impossible dates, other line ends.

Framing level: bytes before the start block, a frame without its start or end, two frames in one
send, empty frames.

:func:`pieces` reads a byte stream as an MLLP server does (services/mllp/server.py: up to each
0x1C 0x0D, the message after the last 0x0B before it, a frame over the limit ends the connection),
so that a sender knows which frames the server saw; :func:`ack_expected` says whether the
message's MSH-15 lets the server stay silent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from typing import Literal

from carehub.fuzz.mutators import HUGE, choose, mutate_bytes

START, END = b"\x0b", b"\x1c\r"
OVERSIZE = 1_500_000  # bytes: well over the MLLP door's default limit (1 MiB)

Segments = list[list[bytes]]  # fields of each segment; for MSH, [b"MSH", MSH-2, MSH-3, ...]
Mutation = Callable[[Segments, Random], str | None]


def frame(payload: bytes) -> bytes:
    return START + payload + END


def split(message: bytes) -> Segments:
    return [segment.split(b"|") for segment in message.rstrip(b"\r").split(b"\r")]


def join(segments: Segments) -> bytes:
    return b"\r".join(b"|".join(fields) for fields in segments) + b"\r"


def _find(segments: Segments, name: bytes) -> list[list[bytes]]:
    return [s for s in segments if s and s[0] == name]


def _set(segment: list[bytes], index: int, value: bytes) -> None:
    while len(segment) <= index:
        segment.append(b"")
    segment[index] = value


def _msh(segments: Segments) -> list[bytes] | None:
    found = _find(segments, b"MSH")
    return found[0] if found else None


def _msh_index(n: int) -> int:
    """Where MSH-n is in the MSH's field list (MSH-1 is the separator itself, not a list item)."""
    return n - 1


def _random_field(segments: Segments, rng: Random) -> tuple[list[bytes], int] | None:
    choices = [(s, i) for s in segments for i in range(1, len(s)) if not (s[0] == b"MSH" and i == 1)]
    return rng.choice(choices) if choices else None


MSH_VALUES: dict[int, tuple[bytes, ...]] = {
    3: (b"", b"A" * 300, b"PAS^X^Y", b"P\\F\\AS"),
    4: (b"", b"UNKNOWN", b"rr8", b"RR8^^ISO", b"LTHT_ED", b"RR8 ", b"RR8~RR9"),
    7: (b"", b"2026", b"20261332", b"abc"),
    9: (b"ORU^R01", b"ADT", b"ADT^A99", b"ADT^A01^ADT_A01^X", b"^A01", b"adt^a01", b"ADT^A08", b"ADT^A31",
        b"ADT^A40", b"ADT^A11", b"ADT^A13", b"ADT^A47", b"ACK", b"", b"ADT~ORU", b"ADT^A01~ADT^A02"),
    10: (b"", b" ", b"X" * 300, b"C\\F\\1", b"C^1", b"C~2", b"\\X41\\", b'""'),
    11: (b"T", b"D", b"", b"P^T", b"p", b"P~T"),
    12: (b"2.9", b"", b"3.0", b"2.5.1.1", b"2.3", b"2.5^GBR", b"2.4~2.5"),
    15: (b"AL", b"NE", b"ER", b"SU", b"", b"XX", b"ne", b"NE^AL"),
    16: (b"AL", b"NE", b"ER", b"SU", b"", b"XX"),
}


def msh_field(segments: Segments, rng: Random) -> str | None:
    msh = _msh(segments)
    if msh is None:
        return None
    n = rng.choice(sorted(MSH_VALUES))
    _set(msh, _msh_index(n), rng.choice(MSH_VALUES[n]))
    return f"MSH-{n} changed"


def ack_modes(segments: Segments, rng: Random) -> str | None:
    """MSH-15/16: enhanced mode, where the sender may ask for no ACK at all (NE)."""
    msh = _msh(segments)
    if msh is None:
        return None
    accept, application = rng.choice(MSH_VALUES[15]), rng.choice(MSH_VALUES[16])
    _set(msh, _msh_index(15), accept)
    _set(msh, _msh_index(16), application)
    return f"MSH-15 {accept.decode(errors='replace')!r}, MSH-16 {application.decode(errors='replace')!r}"


def drop_msh_field(segments: Segments, rng: Random) -> str | None:
    msh = _msh(segments)
    if msh is None or len(msh) < 4:
        return None
    i = rng.randrange(2, len(msh))
    del msh[i]
    return f"MSH-{i + 1} removed (the rest shifted)"


ENCODINGS = (b"", b"^", b"^~", b"^~\\", b"^~\\&#", b"ABCD", b"^^^^", b"\\\\\\\\", b"~^&\\", b"^~\\&\xff", b"|")


def encoding_characters(segments: Segments, rng: Random) -> str | None:
    msh = _msh(segments)
    if msh is None or len(msh) < 2:
        return None
    msh[1] = rng.choice(ENCODINGS)
    return f"MSH-2 {msh[1]!r}"


SEPARATORS = (b"#", b"!", b"\t", b"^", b"~", b"\\", b"&", b"\x00", b"\x0b", b"\xff", b" ", b"")


def field_separator(segments: Segments, rng: Random) -> str | None:
    """MSH-1 changed; every other separator left as it was (so the fields no longer line up)."""
    msh = _msh(segments)
    if msh is None:
        return None
    new = rng.choice(SEPARATORS)
    msh[0] = b"MSH" + new if rng.random() < 0.7 else b"MSH" + new + b"|"
    return f"MSH-1 {new!r}"


ESCAPES = (b"\\X0\\", b"\\XZZ\\", b"\\C2842\\", b"\\M2442\\", b"\\Z99\\", b"\\", b"\\.br\\", b"\\X00\\", b"\\XC3\\",
           b"\\E\\\\", b"\\H\\", b"\\F", b"\\XFFFE\\", b"\\X" + b"41" * 1000 + b"\\", b"\\S\\\\T\\\\R\\")


def _insert(segments: Segments, rng: Random, choices: tuple[bytes, ...]) -> str | None:
    """One of ``choices`` put somewhere inside a field chosen by ``rng``; where, or None."""
    found = _random_field(segments, rng)
    if found is None:
        return None
    segment, i = found
    at = rng.randint(0, len(segment[i]))
    what = rng.choice(choices)
    segment[i] = segment[i][:at] + what + segment[i][at:]
    return f"{what[:12]!r} inside {segment[0]!r}-{i}"


def bad_escape(segments: Segments, rng: Random) -> str | None:
    return _insert(segments, rng, ESCAPES)


CHARSETS = (b"", b"ASCII", b"8859/1", b"8859/15", b"UNICODE UTF-8", b"UNICODE", b"UTF-8", b"ISO IR6", b"ISO IR100",
            b"8859/99", b"GB 18030-2000", b"KS X 1001", b"UNICODE UTF-16", b"unicode utf-8", b" UNICODE UTF-8 ",
            b"UNICODE UTF-8~8859/1", b"\xff", b"8859/1^x")
NON_ASCII = (b"\xe9", b"\xc3\xa9", b"\xff\xfe", b"\xe6\x9d\x8e", b"\\XC3A9\\", b"\\XE9\\", b"\xc3", b"\xed\xa0\x80")


def charset(segments: Segments, rng: Random) -> str | None:
    """A declared character set (MSH-18), and often a name in bytes that may not be in it."""
    msh = _msh(segments)
    if msh is None:
        return None
    declared = rng.choice(CHARSETS)
    _set(msh, _msh_index(18), declared)
    pid = _find(segments, b"PID")
    if pid and rng.random() < 0.7:
        _set(pid[0], 5, b"Nom" + rng.choice(NON_ASCII) + b"^Ren" + rng.choice(NON_ASCII))
    return f"MSH-18 {declared!r}"


def huge_field(segments: Segments, rng: Random) -> str | None:
    """A field of 0.9 MB (under the frame limit), 1.5 MB (over it: the connection is closed), or
    just long."""
    found = _random_field(segments, rng)
    if found is None:
        return None
    segment, i = found
    roll = rng.random()
    size = OVERSIZE if roll < 0.02 else HUGE if roll < 0.1 else rng.choice((300, 10_000, 65_536))
    segment[i] = b"W" * size
    return f"{size} bytes in {segment[0]!r}-{i}"


GARBAGE_LINES = (b"", b" ", b"\n", b"ZZZ|1|2", b"\x00\x00", b"MSH", b"PID", b"pid|1", b"|||", b"\x1c", b"\x0b",
                 b"MSH|^~\\&|X", b"\xff\xfe\xfd")


def garbage_between_segments(segments: Segments, rng: Random) -> str | None:
    line = rng.choice(GARBAGE_LINES) if rng.random() < 0.8 else bytes(rng.randrange(32, 256) for _ in range(12))
    at = rng.randint(1, len(segments))
    segments.insert(at, [line])
    return f"garbage line {line[:12]!r} before segment {at}"


CONTROL = (b"\x0b", b"\x1c", b"\x1c\r", b"\x0b\x1c", b"\r\x1c", b"\x1c\x1c")


def embedded_control(segments: Segments, rng: Random) -> str | None:
    """MLLP's frame bytes inside a field."""
    return _insert(segments, rng, CONTROL)


def segment_order(segments: Segments, rng: Random) -> str | None:
    """A segment dropped, repeated, or moved (MSH included)."""
    if not segments:
        return None
    i = rng.randrange(len(segments))
    how = rng.choice(("drop", "repeat", "move", "move"))
    name = segments[i][0]
    if how == "drop":
        del segments[i]
    elif how == "repeat":
        segments.insert(rng.randint(0, len(segments)), list(segments[i]))
    else:
        segments.insert(rng.randint(0, len(segments) - 1), segments.pop(i))
    return f"{how} {name!r}"


COMPONENTS = (b"^^^^^^", b"~~~~", b"&&&&", b"^~&", b"~".join([b"A"] * 1000), b"^" * 5000, b'""', b"\\")


def component_garbage(segments: Segments, rng: Random) -> str | None:
    found = _random_field(segments, rng)
    if found is None:
        return None
    segment, i = found
    segment[i] = rng.choice(COMPONENTS)
    return f"separators only in {segment[0]!r}-{i}"


BAD_DATES = (b"20261332", b"2026", b"abcd", b"99991231235959", b"20250229", b"18000101", b"202601011200+9999",
             b"20260101120000.12345", b"20260101250000", b"00000000", b"2026010112", b'""', b"20260101120000-2400",
             b"19691231235959", b"1", b"20260101120000+0000^X")
DATE_FIELDS = ((b"EVN", 2), (b"EVN", 6), (b"PV1", 44), (b"PV1", 45), (b"PID", 7), (b"MSH", 6))


def bad_date(segments: Segments, rng: Random) -> str | None:
    name, n = rng.choice(DATE_FIELDS)
    found = _find(segments, name)
    if not found:
        return None
    _set(found[0], n, rng.choice(BAD_DATES))
    return f"bad date in {name.decode()}-{n + 1 if name == b'MSH' else n}"


FIELD_VALUES: dict[tuple[bytes, int], tuple[bytes, ...]] = {
    (b"PV1", 2): (b"Z", b"", b"E~I", b"O", b"P", b"I^E"),
    (b"PV1", 4): (b"99", b"", b"21~11", b"X"),
    (b"PID", 3): (b"^^^^MR", b"~~~", b"X^^^RR8^XX", b"", b"\\F\\^^^RR8^MR", b"A^^^RR8^MR~B^^^RR8^MR"),
    (b"PID", 8): (b"Q", b"", b"MF", b"M^F"),
    (b"PV1", 19): (b"", b"V" * 300, b"V~W", b"\\.br\\"),
    (b"PV1", 3): (b"", b"^^^", b"W" * 300),
    (b"EVN", 1): (b"A99", b"", b"A01~A02"),
    (b"PD1", 3): (b"^^" + b"Z" * 40, b"^^", b"^^B8 6001"),
}


def field_value(segments: Segments, rng: Random) -> str | None:
    (name, n) = rng.choice(sorted(FIELD_VALUES))
    found = _find(segments, name)
    if not found:
        return None
    _set(found[0], n, rng.choice(FIELD_VALUES[(name, n)]))
    return f"{name.decode()}-{n} changed"


TRIGGERS = (b"A02", b"A03", b"A04", b"A05", b"A06", b"A07", b"A08", b"A11", b"A12", b"A13", b"A21", b"A22", b"A28",
            b"A31", b"A40", b"A47")


def trigger(segments: Segments, rng: Random) -> str | None:
    """Another trigger with the same segments (an A40 without its MRG, say)."""
    msh = _msh(segments)
    if msh is None:
        return None
    new = rng.choice(TRIGGERS)
    _set(msh, _msh_index(9), b"ADT^" + new)
    for evn in _find(segments, b"EVN"):
        _set(evn, 1, new)
    if new in (b"A40", b"A47") and rng.random() < 0.5:
        segments.append([b"MRG", rng.choice((b"OLD1^^^RR8^MR", b"", b"^^^RR8^MR"))])
    return f"trigger {new.decode()}"


HL7_MUTATIONS: dict[str, tuple[Mutation, float]] = {
    "msh_field": (msh_field, 12), "ack_modes": (ack_modes, 5), "drop_msh_field": (drop_msh_field, 4),
    "encoding_characters": (encoding_characters, 3), "field_separator": (field_separator, 3),
    "bad_escape": (bad_escape, 8), "charset": (charset, 8), "huge_field": (huge_field, 0.3),
    "garbage_between_segments": (garbage_between_segments, 6), "embedded_control": (embedded_control, 5),
    "segment_order": (segment_order, 6), "component_garbage": (component_garbage, 4), "bad_date": (bad_date, 6),
    "field_value": (field_value, 8), "trigger": (trigger, 5),
}

LINE_ENDS = (b"\n", b"\r\n", b"\n\r", b"")


def _line_ends(message: bytes, rng: Random) -> tuple[bytes, str]:
    end = rng.choice(LINE_ENDS)
    return message.replace(b"\r", end), f"segments end with {end!r}"


def _framed(payload: bytes, rng: Random) -> tuple[bytes, str | None]:
    """``payload`` in an MLLP frame; sometimes a broken one."""
    if rng.random() >= 0.2:
        return frame(payload), None
    how = rng.choice(("garbage_before", "no_start", "no_end", "wrong_end", "two_frames", "empty_frame",
                      "double_start", "end_only"))
    if how == "garbage_before":
        return rng.randbytes(rng.randint(1, 40)).replace(START, b"").replace(b"\x1c", b"") + frame(payload), how
    if how == "no_start":
        return payload + END, how
    if how == "no_end":
        return START + payload, how
    if how == "wrong_end":
        return START + payload + rng.choice((b"\x1c", b"\r\x1c", b"\x1c\n", b"\x1c\x1c")), how
    if how == "two_frames":
        return frame(payload) + frame(payload), how
    if how == "empty_frame":
        return frame(b"") + frame(payload), how
    if how == "double_start":
        return START + frame(payload), how
    return END, how


def mutate_hl7(message: bytes, rng: Random) -> tuple[bytes, list[str]]:
    """A byte stream for one MLLP connection, made from one valid ADT ``message`` (CR-terminated
    segments): field-, segment-, byte- and framing-level mutations, at least one of them."""
    segments = split(message)
    names: list[str] = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        name = choose(rng, HL7_MUTATIONS)
        what = HL7_MUTATIONS[name][0](segments, rng)
        if what is not None:
            names.append(f"hl7.{name}: {what}")
    payload = join(segments)
    if rng.random() < 0.05:
        payload, what = _line_ends(payload, rng)
        names.append(f"hl7.line_ends: {what}")
    if rng.random() < 0.15 or not names:
        payload, more = mutate_bytes(payload, rng)
        names += more
    stream, how = _framed(payload, rng)
    if how is not None:
        names.append(f"mllp.{how}")
    return stream, names


# -- what a server sees ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    """One thing an MLLP server reads from a stream: a message (``frame``), bytes outside any frame
    (``garbage``), bytes left without an end block when the sender closed (``unterminated``), or
    a frame over the limit, after which the server closes the connection (``oversize``)."""

    kind: Literal["frame", "garbage", "unterminated", "oversize"]
    payload: bytes = b""


def pieces(stream: bytes, limit: int) -> list[Piece]:
    """How a server that reads up to each end block, at most ``limit`` bytes before it (asyncio's
    ``readuntil``), takes the message after the last start block, and closes the connection on
    an oversize frame, reads ``stream``."""
    out: list[Piece] = []
    pos = 0
    while pos < len(stream):
        end = stream.find(END, pos)
        if end < 0:
            rest = stream[pos:]
            if len(rest) > limit + 1:
                out.append(Piece("oversize"))
            elif rest.strip():
                out.append(Piece("unterminated", rest))
            break
        if end - pos > limit:
            out.append(Piece("oversize"))
            break
        chunk = stream[pos:end]
        start = chunk.rfind(START)
        out.append(Piece("garbage", chunk) if start < 0 else Piece("frame", chunk[start + 1:]))
        pos = end + len(END)
    return out


def ack_expected(payload: bytes, stored: bool) -> bool:
    """Must the server ACK this message? Only MSH-15 (the accept acknowledgement mode, HL7 v2.5
    section 2.9) can excuse it: NE never, ER only on an error, SU only on success; ``stored`` says
    whether the message was accepted."""
    line = re.split(r"[\r\n]", payload.decode("latin-1").lstrip(), maxsplit=1)[0]
    if len(line) < 8 or not line.startswith("MSH"):
        return True
    fields = ["MSH", line[3], *line.split(line[3])[1:]]
    encoding = (fields[2] if len(fields) > 2 else "") or "^~\\&"
    accept = (fields[15] if len(fields) > 15 else "").split(encoding[1:2] or "~")[0].split(encoding[0])[0].strip()
    return {"NE": False, "ER": not stored, "SU": stored}.get(accept, True)


def ack_fields(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK: the code, and the control id it answers."""
    for segment in re.split(rb"[\r\n]+", ack):
        if segment.startswith(b"MSA") and len(segment) > 3:
            parts = segment.split(segment[3:4])
            return (parts[1].decode("latin-1") if len(parts) > 1 else "?",
                    parts[2].decode("latin-1") if len(parts) > 2 else "")
    return "?", ""
