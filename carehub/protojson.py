"""Protobuf canonical JSON -> message, several times faster than ``json_format.ParseDict``.

``json_format`` is pure Python and spends ~100 us on one CareEvent (field lookups by
name per call, timestamps through ``strptime``), as much as faust spends on the event
itself. This parser precomputes, per message type, how each JSON member maps to a field,
and parses timestamps with ``datetime.fromisoformat``. It accepts and rejects what
``json_format.ParseDict`` does for the field kinds it knows (scalars, enums, nested and
repeated messages, ``google.protobuf.Timestamp``); a message type with any other kind
(maps, Any, Struct, wrappers, ...) is handed to ``json_format`` whole.
tests/unit/test_protojson.py holds it to json_format on the synthetic region and on
malformed documents.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

ParseError = json_format.ParseError
F = FieldDescriptor
_INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1), F.TYPE_SINT32: (-(2**31), 2**31 - 1), F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1), F.TYPE_SINT64: (-(2**63), 2**63 - 1), F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1), F.TYPE_FIXED64: (0, 2**64 - 1),
}
TIMESTAMP = "google.protobuf.Timestamp"
_MIN_TS, _MAX_TS = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31, as json_format allows

Converter = Callable[[Any, Any], Any]


class _Unsupported(Exception):
    pass


def _int(field: FieldDescriptor) -> Converter:
    lo, hi = _INT_RANGES[field.type]

    def convert(value: Any, path: Any) -> int:
        if isinstance(value, bool):
            raise ParseError(f"Failed to parse {field.name} field: {_fmt(path)}: bool is not an integer.")
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ParseError(
                    f"Failed to parse {field.name} field: {_fmt(path)}: {value!r} is not an integer."
                ) from None
        elif isinstance(value, float):
            if not value.is_integer():
                raise ParseError(f"Failed to parse {field.name} field: {_fmt(path)}: {value} is not an integer.")
            value = int(value)
        elif not isinstance(value, int):
            raise ParseError(f"Failed to parse {field.name} field: {_fmt(path)}: {value!r} is not an integer.")
        if not lo <= value <= hi:
            raise ParseError(f"Failed to parse {field.name} field: {_fmt(path)}: {value} is out of range.")
        return int(value)

    return convert


def _enum(field: FieldDescriptor) -> Converter:
    enum = field.enum_type
    assert enum is not None
    by_name = {v.name: v.number for v in enum.values}

    def convert(value: Any, path: Any) -> int:
        if isinstance(value, str):
            if value in by_name:
                return by_name[value]
            raise ParseError(
                f"Failed to parse {field.name} field: Invalid enum value {value} for enum type {enum.full_name} "
                f"at {_fmt(path)}."
            )
        if isinstance(value, int):  # json_format takes numbers, and so true/false, as enum values
            return int(value)
        raise ParseError(f"Failed to parse {field.name} field: Invalid enum value {value!r} for enum type "
                         f"{enum.full_name} at {_fmt(path)}.")

    return convert


def _STR(value: Any, path: Any) -> str:
    if not isinstance(value, str):
        raise ParseError(f"Failed to parse field: {_fmt(path)}: expected a string, got {value!r}.")
    return value


def _bool(field: FieldDescriptor) -> Converter:
    def convert(value: Any, path: Any) -> bool:
        if not isinstance(value, bool):
            raise ParseError(
                f"Failed to parse {field.name} field: {_fmt(path)}: expected true or false, got {value!r}."
            )
        return value

    return convert


_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


def _timestamp_seconds_nanos(field: FieldDescriptor, value: Any, path: Any) -> tuple[int, int]:
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        raise ParseError(f"Failed to parse {field.name} field: Failed to parse timestamp: {value!r} at {_fmt(path)}.")
    whole, fraction, zone = match.groups()
    try:
        when = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        raise ParseError(
            f"Failed to parse {field.name} field: Failed to parse timestamp: {value!r} at {_fmt(path)}."
        ) from None
    seconds = int(when.timestamp())
    if not _MIN_TS <= seconds <= _MAX_TS:
        raise ParseError(
            f"Failed to parse {field.name} field: Failed to parse timestamp: out of range at {_fmt(path)}."
        )
    return seconds, int(fraction.ljust(9, "0")) if fraction else 0


class _Plan:
    """How each JSON member of one message type lands in a field."""

    def __init__(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        # json name and field name -> (field name, repeated, converter, plan, field); descriptor
        # attributes are slow to read, so what the hot loop needs is copied out here
        self.members: dict[str, tuple[str, bool, Converter | None, _Plan | None, FieldDescriptor]] = {}
        for field in descriptor.fields:
            if field.containing_oneof is not None:
                raise _Unsupported(field.full_name)
            converter: Converter | None = None
            plan: _Plan | None = None
            if field.type == F.TYPE_MESSAGE:
                assert field.message_type is not None
                full = field.message_type.full_name
                if full == TIMESTAMP:
                    pass  # neither converter nor plan: see _one
                elif field.message_type.GetOptions().map_entry or full.startswith("google.protobuf."):
                    raise _Unsupported(field.full_name)
                elif full in _plans:
                    plan = _plans[full]
                    if plan is None:
                        raise _Unsupported(full)
                else:
                    plan = _plan_for(field.message_type)
            elif field.type == F.TYPE_ENUM:
                converter = _enum(field)
            elif field.type in _INT_RANGES:
                converter = _int(field)
            elif field.type == F.TYPE_STRING:
                converter = _STR
            elif field.type == F.TYPE_BOOL:
                converter = _bool(field)
            else:  # bytes (two base64 alphabets), float, double (NaN, Infinity): left to json_format
                raise _Unsupported(field.full_name)
            entry = (field.name, field.is_repeated, converter, plan, field)
            self.members[field.json_name] = entry
            self.members[field.name] = entry

    def kwargs(self, obj: Any, path: Any) -> dict[str, Any]:
        """Constructor arguments for this message type (nested messages as dicts).

        ``path`` is a nested tuple, formatted only when an error is raised: building the
        path string for every member costs more than the conversion itself.
        """
        if not isinstance(obj, dict):
            raise ParseError(f"Expected a JSON object for {_fmt(path)}, got {type(obj).__name__}.")
        out: dict[str, Any] = {}
        members = self.members
        for key, value in obj.items():
            entry = members.get(key)
            if entry is None:
                raise ParseError(
                    f'Message type "{self.descriptor.full_name}" has no field named "{key}" at "{_fmt(path)}".'
                )
            if value is None:
                continue
            name, repeated, converter, plan, field = entry
            if converter is _STR and type(value) is str:  # the common case, inline
                out[name] = value
                continue
            child = (path, key)
            if repeated:
                if not isinstance(value, list):
                    raise ParseError(f"repeated field {name} must be in [] which is {value!r} at {_fmt(child)}.")
                if plan is not None and None in value:
                    raise ParseError(
                        f"null is not allowed to be used as an element in a repeated field at {_fmt(child)}."
                    )
                out[name] = [self._one(item, converter, plan, field, child) for item in value]
            else:
                out[name] = self._one(value, converter, plan, field, child)
        return out

    @staticmethod
    def _one(value: Any, converter: Converter | None, plan: _Plan | None, field: FieldDescriptor, path: Any) -> Any:
        if converter is not None:
            return converter(value, path)
        if plan is not None:
            return plan.kwargs(value, path)
        seconds, nanos = _timestamp_seconds_nanos(field, value, path)
        return {"seconds": seconds, "nanos": nanos}


def _fmt(path: Any) -> str:
    parts: list[str] = []
    while isinstance(path, tuple):
        path, key = path
        parts.append(key)
    parts.append(path)
    return ".".join(reversed(parts))


_plans: dict[str, _Plan | None] = {}


def _plan_for(descriptor: Descriptor) -> _Plan:
    plan = _Plan.__new__(_Plan)  # registered before building, for recursive message types
    _plans[descriptor.full_name] = plan
    try:
        plan.__init__(descriptor)  # type: ignore[misc]
    except _Unsupported:
        _plans[descriptor.full_name] = None
        raise
    return plan


def parse_dict(obj: Any, message: Message) -> Message:
    """Fill ``message`` from a decoded JSON object, as ``json_format.ParseDict`` would."""
    name = message.DESCRIPTOR.full_name
    if name not in _plans:
        with contextlib.suppress(_Unsupported):
            _plan_for(message.DESCRIPTOR)  # type: ignore[arg-type]
    plan = _plans.get(name)
    if plan is None:
        return json_format.ParseDict(obj, message)
    message.MergeFrom(type(message)(**plan.kwargs(obj, message.DESCRIPTOR.name)))
    return message
