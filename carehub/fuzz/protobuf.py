"""Seeded mutations of protobuf CareEvents: at the level of fields, and of the wire format.

Field level (on a copy of the message): enum numbers the contract does not define, timestamps out
of range (before year 1, after 9999, nanos outside 0..999,999,999), required fields left out,
strings just over a limit or huge, too many diagnoses, other schema versions.

Wire level (on the encoding, read into a tree of fields by the descriptors): a field with the
wrong wire type, a length prefix far beyond the data, unknown fields (as a newer sender would
send, or junk), over-long varints, strings that are not UTF-8, field number 0, reserved wire types,
groups left open or nested past any parser's limit, garbage in place of a nested message, a field
repeated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from carehub.fuzz.mutators import HUGE, choose, long_length, mutate_bytes
from carehub.v1 import care_event_pb2 as ce
from carehub.wire import decode_varint, encode_varint

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5

# -- field level -----------------------------------------------------------------------------------

ENUM_FIELDS = (("", "source_sector"), ("", "event_type"), ("person", "sex"), ("clinical", "admission_method"))
UNKNOWN_NUMBERS = (11, 16, 17, 99, 1000, -1, -(2**31), 2**31 - 1)
SECONDS = (-62135596801, -62135596800, -1, 0, 631151999, 4102444800, 32503680000, 253402300799, 253402300800,
           2**40, 2**63 - 1, -(2**63))
NANOS = (0, -1, 999_999_999, 1_000_000_000, 2**31 - 1, -(2**31))
TEXT_FIELDS = (("", "event_id"), ("", "source_org"), ("", "registered_practice"), ("", "locality"),
               ("", "target_event_id"), ("person", "local_id"), ("person", "national_id"),
               ("person", "given_name"), ("person", "family_name"), ("person", "birth_date"),
               ("person", "postcode"), ("person", "address_line"), ("clinical", "spell_id"),
               ("clinical", "admission_source"), ("clinical", "discharge_destination"), ("clinical", "location"),
               ("clinical", "referred_to_org"), ("merge", "prior_local_id"))
CLEARABLE = ("event_id", "schema_version", "source_org", "source_sector", "event_type", "event_time",
             "recorded_time", "person", "clinical", "registered_practice", "target_event_id", "consent", "merge")


def unknown_enum_number(event: ce.CareEvent, rng: Random) -> str:
    owner, name = rng.choice(ENUM_FIELDS)
    value = rng.choice(UNKNOWN_NUMBERS)
    setattr(getattr(event, owner) if owner else event, name, value)
    return f"{owner + '.' if owner else ''}{name} = {value}"


def out_of_range_timestamp(event: ce.CareEvent, rng: Random) -> str:
    name = rng.choice(("event_time", "recorded_time"))
    ts = getattr(event, name)
    ts.seconds = rng.choice(SECONDS)
    ts.nanos = rng.choice(NANOS)
    return f"{name} = {ts.seconds}s {ts.nanos}ns"


def missing_field(event: ce.CareEvent, rng: Random) -> str:
    if rng.random() < 0.3:
        owner, name = rng.choice(TEXT_FIELDS)
        message: Message = getattr(event, owner) if owner else event
        message.ClearField(name)
        return f"cleared {owner + '.' if owner else ''}{name}"
    name = rng.choice(CLEARABLE)
    cleared: Message = event
    cleared.ClearField(name)
    return f"cleared {name}"


def long_text(event: ce.CareEvent, rng: Random) -> str:
    owner, name = rng.choice(TEXT_FIELDS)
    size = HUGE if rng.random() < 0.01 else long_length(rng)
    setattr(getattr(event, owner) if owner else event, name, rng.choice("Aé 9") * size)
    return f"{owner + '.' if owner else ''}{name}: {size} characters"


def schema_version(event: ce.CareEvent, rng: Random) -> str:
    event.schema_version = rng.choice((0, 2, 99, 2**32 - 1))
    return f"schema_version = {event.schema_version}"


def many_codes(event: ce.CareEvent, rng: Random) -> str:
    count = rng.choice((51, 200, 2000))
    for i in range(count):
        event.clinical.diagnoses.add(code=rng.choice(("J18.1", "X", "", "N39.0" * 10)), position=i % 3)
        event.clinical.procedures.add(code=rng.choice(("W37.1", "", "Y" * 17)), position=i % 2)
    return f"{count} more diagnoses and procedures"


MessageMutation = Callable[[ce.CareEvent, Random], str]
FIELD_MUTATIONS: dict[str, tuple[MessageMutation, float]] = {
    "unknown_enum_number": (unknown_enum_number, 10), "out_of_range_timestamp": (out_of_range_timestamp, 10),
    "missing_field": (missing_field, 8), "long_text": (long_text, 6), "schema_version": (schema_version, 2),
    "many_codes": (many_codes, 1),
}


# -- wire level ------------------------------------------------------------------------------------

@dataclass
class WireField:
    """One field as encoded: its number, wire type and payload (int for varints and fixed widths,
    bytes for length-delimited fields; ``children`` when the payload is a message of known type)."""

    number: int
    wire_type: int
    value: int | bytes
    children: list[WireField] | None = None
    message: Descriptor | None = field(default=None, repr=False)
    raw: bytes | None = None  # written as they are, instead of the encoding of the rest


def parse_wire(data: bytes, message: Descriptor | None = None) -> list[WireField]:
    """The fields of ``data``; nested messages of ``message``'s known fields are read too.
    ValueError if ``data`` is not well-formed wire format."""
    fields: list[WireField] = []
    pos = 0
    while pos < len(data):
        key, pos = decode_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == VARINT:
            value, pos = decode_varint(data, pos)
        elif wire_type == I64:
            value, pos = int.from_bytes(data[pos:pos + 8], "little"), pos + 8
        elif wire_type == I32:
            value, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
        elif wire_type == LEN:
            size, pos = decode_varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        else:
            raise ValueError(f"wire type {wire_type} is not read here")
        if pos > len(data):
            raise ValueError("truncated field")
        wf = WireField(number, wire_type, value)
        known = message.fields_by_number.get(number) if message is not None else None
        if known is not None and known.type == FieldDescriptor.TYPE_MESSAGE and wire_type == LEN:
            assert isinstance(value, bytes)
            wf.message = known.message_type
            wf.children = parse_wire(value, known.message_type)
        fields.append(wf)
    return fields


def tag(number: int, wire_type: int) -> bytes:
    return encode_varint(number << 3 | wire_type)


def encode_wire(fields: list[WireField]) -> bytes:
    out = bytearray()
    for f in fields:
        if f.raw is not None:
            out += f.raw
            continue
        out += tag(f.number, f.wire_type)
        out += _payload(f)
    return bytes(out)


def _payload(f: WireField) -> bytes:
    """The encoding of a field's value for its wire type (length prefix included)."""
    if f.wire_type == LEN:
        data = encode_wire(f.children) if f.children is not None else f.value
        assert isinstance(data, bytes)
        return encode_varint(len(data)) + data
    assert isinstance(f.value, int)
    if f.wire_type == VARINT:
        return encode_varint(f.value)
    return f.value.to_bytes(8 if f.wire_type == I64 else 4, "little")


def _messages(fields: list[WireField], message: Descriptor) -> list[tuple[list[WireField], Descriptor]]:
    """Every message in the tree (the top one first) with its type."""
    found = [(fields, message)]
    for f in fields:
        if f.children is not None and f.message is not None:
            found += _messages(f.children, f.message)
    return found


WireMutation = Callable[[list[WireField], Descriptor, Random], str | None]


def wrong_wire_type(fields: list[WireField], message: Descriptor, rng: Random) -> str | None:
    candidates = [f for f in fields if f.raw is None]
    if not candidates:
        return None
    f = rng.choice(candidates)
    old = f.wire_type
    payload = _payload(f)
    f.raw = tag(f.number, rng.choice([t for t in (VARINT, I64, LEN, I32) if t != old])) + payload
    return f"field {f.number} of {message.name}: wire type {old} written as another"


HUGE_LENGTHS = (2**31 - 1, 2**31, 2**32 + 5, 2**63, 2**64 - 1)


def huge_length(fields: list[WireField], message: Descriptor, rng: Random) -> str | None:
    candidates = [f for f in fields if f.wire_type == LEN and f.raw is None]
    if not candidates:
        return None
    f = rng.choice(candidates)
    data = encode_wire(f.children) if f.children is not None else f.value
    assert isinstance(data, bytes)
    size = rng.choice((len(data) + 1, len(data) + 1000, *HUGE_LENGTHS))
    f.raw = tag(f.number, LEN) + encode_varint(size) + data
    return f"field {f.number} of {message.name}: length {size} for {len(data)} bytes"


UNKNOWN_FIELD_NUMBERS = (15, 16, 99, 1000, 18999, 19000, 19999, 2**29 - 1)


def unknown_field(fields: list[WireField], message: Descriptor, rng: Random) -> str | None:
    number = rng.choice([n for n in (*UNKNOWN_FIELD_NUMBERS, rng.randint(20, 5000)) if n not in
                         message.fields_by_number])
    wire_type = rng.choice((VARINT, I64, LEN, I32))
    value: int | bytes = rng.randbytes(rng.choice((0, 1, 8, 300))) if wire_type == LEN else rng.getrandbits(32)
    fields.insert(rng.randint(0, len(fields)), WireField(number, wire_type, value))
    return f"unknown field {number} (wire type {wire_type}) in {message.name}"


def overlong_varint(fields: list[WireField], message: Descriptor, rng: Random) -> str | None:
    candidates = [f for f in fields if f.wire_type == VARINT and f.raw is None]
    if not candidates:
        return None
    f = rng.choice(candidates)
    assert isinstance(f.value, int)
    extra = rng.choice((1, 5, 11))  # 10 bytes is the most a varint may take
    body = bytearray(encode_varint(f.value))
    body[-1] |= 0x80
    f.raw = tag(f.number, VARINT) + bytes(body) + b"\x80" * (extra - 1) + b"\x00"
    return f"field {f.number} of {message.name}: varint {extra} bytes too long"


NOT_UTF8 = (b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\x80")


def invalid_utf8_string(fields: list[WireField], message: Descriptor, rng: Random) -> str | None:
    strings = [f for f in fields if f.wire_type == LEN and f.raw is None
               and (d := message.fields_by_number.get(f.number)) is not None and d.type == FieldDescriptor.TYPE_STRING]
    if not strings:
        return None
    f = rng.choice(strings)
    assert isinstance(f.value, bytes)
    at = rng.randint(0, len(f.value))
    f.value = f.value[:at] + rng.choice(NOT_UTF8) + f.value[at:]
    return f"field {f.number} of {message.name}: not UTF-8"


def bad_tag(fields: list[WireField], message: Descriptor, rng: Random) -> str | None:
    """Field number 0, a reserved wire type (6, 7), or an end-group with no start."""
    raw = rng.choice((tag(0, VARINT) + b"\x01", tag(1, 6) + b"\x01", tag(2, 7), tag(3, EGROUP), tag(0, LEN) + b"\x00"))
    fields.insert(rng.randint(0, len(fields)), WireField(0, VARINT, 0, raw=raw))
    return f"bad tag {raw[:1].hex()} in {message.name}"


def groups(fields: list[WireField], message: Descriptor, rng: Random) -> str | None:
    """A group left open, or groups nested deeper than any parser allows."""
    depth = rng.choice((1, 99, 101, 1_000))
    number = rng.choice((50, 1, 8))
    opened = tag(number, SGROUP) * depth
    closed = tag(number, EGROUP) * depth if rng.random() < 0.6 else b""
    fields.insert(rng.randint(0, len(fields)), WireField(number, SGROUP, 0, raw=opened + closed))
    return f"groups {depth} deep{'' if closed else ', never closed'} in {message.name}"


def garbage_message(fields: list[WireField], message: Descriptor, rng: Random) -> str | None:
    nested = [f for f in fields if f.children is not None and f.raw is None]
    if not nested:
        return None
    f = rng.choice(nested)
    f.children = None
    f.value = rng.randbytes(rng.choice((1, 3, 16, 64)))
    return f"field {f.number} of {message.name}: garbage for a message"


def repeated_field(fields: list[WireField], message: Descriptor, rng: Random) -> str | None:
    if not fields:
        return None
    f = rng.choice(fields)
    fields.insert(rng.randint(0, len(fields)), WireField(f.number, f.wire_type, 0, raw=encode_wire([f])))
    return f"field {f.number} of {message.name} twice"


WIRE_MUTATIONS: dict[str, tuple[WireMutation, float]] = {
    "wrong_wire_type": (wrong_wire_type, 10), "huge_length": (huge_length, 8), "unknown_field": (unknown_field, 10),
    "overlong_varint": (overlong_varint, 4), "invalid_utf8_string": (invalid_utf8_string, 8),
    "bad_tag": (bad_tag, 4), "groups": (groups, 3), "garbage_message": (garbage_message, 6),
    "repeated_field": (repeated_field, 4),
}


def mutate_wire(data: bytes, rng: Random, rounds: int = 1,
                message: Descriptor = ce.CareEvent.DESCRIPTOR) -> tuple[bytes, list[str]]:
    """``data`` (a well-formed encoding of ``message``) after ``rounds`` wire-level mutations."""
    fields = parse_wire(data, message)
    names: list[str] = []
    tries = 0
    while len(names) < rounds and tries < rounds * 10:
        tries += 1
        target, descriptor = rng.choice(_messages(fields, message))
        name = choose(rng, WIRE_MUTATIONS)
        what = WIRE_MUTATIONS[name][0](target, descriptor, rng)
        if what is not None:
            names.append(f"wire.{name}: {what}")
    return encode_wire(fields), names


def mutate_protobuf(event: ce.CareEvent, rng: Random) -> tuple[bytes, list[str]]:
    """A malformed record made from a valid ``event``: field-level, wire-level and byte-level
    mutations, at least one of them."""
    changed = ce.CareEvent()
    changed.CopyFrom(event)
    names: list[str] = []
    roll = rng.random()
    if roll < 0.45:
        name = choose(rng, FIELD_MUTATIONS)
        names.append(f"field.{name}: {FIELD_MUTATIONS[name][0](changed, rng)}")
    data = changed.SerializeToString()
    if roll >= 0.3 or not names:
        data, wire = mutate_wire(data, rng, rng.choice((1, 1, 2)))
        names += wire
    if rng.random() < 0.15 or not names:
        data, more = mutate_bytes(data, rng)
        names += more
    return data, names
