"""Seeded mutations of bytes and of JSON documents; pure functions of their input and a Random.

Bytes: bit flips, truncation, insertion of random or boundary bytes (NUL, 0xFF, the MLLP
frame bytes 0x0B/0x1C, UTF-8 that is not), deletion, overwriting and duplication of chunks.

JSON is mutated as data, so that a mutation hits a member, not a byte: members dropped,
duplicated or added, values of the wrong type, enum names the contract does not define, very
long strings (a 0.9 MB given name), deep nesting, invalid UTF-8, numbers JSON does not have,
impossible timestamps. What plain data cannot hold (a duplicate key, invalid UTF-8, ``NaN``, a
document nested 100,000 deep) is written through two markers, :class:`Raw` and :class:`Pairs`,
which :func:`dumps` writes as they are.

Every mutation takes a ``random.Random`` and nothing else that varies, so one seed gives the same
inputs on every machine (``Random`` seeded with a string is stable across processes).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random
from typing import Any

import orjson

BytesMutation = Callable[[bytes, Random], bytes]

# Bytes that parsers treat specially: NUL, the top of each byte range, MLLP's start and end of
# frame, line ends, UTF-8 that is not (overlong NUL, a surrogate, beyond U+10FFFF, a lone
# continuation byte), a byte order mark, and the separators of JSON and HL7.
BOUNDARY_BYTES: tuple[bytes, ...] = (
    b"\x00", b"\xff", b"\x7f", b"\x80", b"\x0b", b"\x1c", b"\x1c\x0d", b"\x0d", b"\x0a", b"\x0d\x0a",
    b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xbf", b"\xef\xbb\xbf", b"{", b"}", b"[", b"]", b'"',
    b"\\", b",", b":", b"|", b"^", b"~", b"&", b"\\X\\",
)
HUGE = 900_000  # characters: "a 0.9 MB given name"


def flip_bits(data: bytes, rng: Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(data: bytes, rng: Random) -> bytes:
    """The first part only, cut anywhere (sometimes the last part only)."""
    if len(data) < 2:
        return b""
    cut = rng.randrange(len(data))
    return data[cut:] if rng.random() < 0.2 else data[:cut]


def insert_random(data: bytes, rng: Random) -> bytes:
    at = rng.randint(0, len(data))
    return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]


def insert_boundary(data: bytes, rng: Random) -> bytes:
    at = rng.randint(0, len(data))
    return data[:at] + rng.choice(BOUNDARY_BYTES) * rng.choice((1, 1, 1, 2, 3, 64)) + data[at:]


def delete_chunk(data: bytes, rng: Random) -> bytes:
    if not data:
        return data
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randint(1, max(1, min(64, len(data) - start))):]


def overwrite_chunk(data: bytes, rng: Random) -> bytes:
    if not data:
        return rng.randbytes(4)
    start = rng.randrange(len(data))
    size = rng.randint(1, 16)
    return data[:start] + rng.randbytes(size) + data[start + size:]


def duplicate_chunk(data: bytes, rng: Random) -> bytes:
    """A piece of the data copied elsewhere in it (or repeated where it is)."""
    if not data:
        return data
    start = rng.randrange(len(data))
    chunk = data[start:start + rng.randint(1, min(256, len(data) - start))]
    at = rng.randint(0, len(data))
    return data[:at] + chunk * rng.choice((1, 1, 2, 8)) + data[at:]


BYTE_MUTATIONS: dict[str, BytesMutation] = {
    "flip_bits": flip_bits, "truncate": truncate, "insert_random": insert_random,
    "insert_boundary": insert_boundary, "delete_chunk": delete_chunk, "overwrite_chunk": overwrite_chunk,
    "duplicate_chunk": duplicate_chunk,
}


def mutate_bytes(data: bytes, rng: Random, rounds: int = 1) -> tuple[bytes, list[str]]:
    """``data`` after ``rounds`` byte mutations chosen by ``rng``, and their names."""
    names = []
    for _ in range(rounds):
        name = rng.choice(sorted(BYTE_MUTATIONS))
        data = BYTE_MUTATIONS[name](data, rng)
        names.append(f"bytes.{name}")
    return data, names


# -- JSON ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Raw:
    """Bytes written into a JSON document exactly as they are (``NaN``, invalid UTF-8, ...)."""

    data: bytes


@dataclass(frozen=True)
class Pairs:
    """A JSON object written with these members in this order, duplicate keys kept."""

    items: tuple[tuple[str, Any], ...]


def dumps(value: Any) -> bytes:
    """A JSON document with :class:`Raw` and :class:`Pairs` written as they are."""
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, Pairs | dict):
        items = value.items if isinstance(value, Pairs) else value.items()
        return b"{" + b",".join(orjson.dumps(str(k)) + b":" + dumps(v) for k, v in items) + b"}"
    if isinstance(value, list | tuple):
        return b"[" + b",".join(dumps(v) for v in value) + b"]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()  # any size, where orjson stops at 64 bits
    return orjson.dumps(value)


Path = tuple[str | int, ...]
JsonMutation = Callable[[Any, Random], str | None]


def locations(doc: Any) -> list[Path]:
    """Every member and array item of ``doc`` (not inside a Raw or Pairs), parents first."""
    found: list[Path] = []
    stack: list[tuple[Path, Any]] = [((), doc)]
    while stack:
        path, value = stack.pop()
        children: Sequence[tuple[str | int, Any]] = (
            list(value.items()) if isinstance(value, dict) else list(enumerate(value)) if isinstance(value, list)
            else [])
        for key, child in reversed(children):
            found.append((*path, key))
            stack.append(((*path, key), child))
    return found


def get(doc: Any, path: Path) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def put(doc: Any, path: Path, value: Any) -> None:
    get(doc, path[:-1])[path[-1]] = value


def _pick(doc: Any, rng: Random, keep: Callable[[Path, Any], bool] | None = None) -> Path | None:
    paths = [p for p in locations(doc) if keep is None or keep(p, get(doc, p))]
    return rng.choice(paths) if paths else None


def _in_object(doc: Any) -> Callable[[Path, Any], bool]:
    return lambda p, _: isinstance(get(doc, p[:-1]), dict)


def drop_member(doc: Any, rng: Random) -> str | None:
    path = _pick(doc, rng, _in_object(doc))
    if path is None:
        return None
    del get(doc, path[:-1])[path[-1]]
    return f"drop {_show(path)}"


def duplicate_member(doc: Any, rng: Random) -> str | None:
    """An object written with one key twice: the same value again, or another one."""
    path = _pick(doc, rng, lambda p, v: isinstance(v, dict) and bool(v))
    if path is None:
        return None
    obj = get(doc, path)
    key = rng.choice(list(obj))
    second = obj[key] if rng.random() < 0.5 else _other_value(obj[key], rng)
    items = list(obj.items())
    items.insert(rng.randint(0, len(items)), (key, second))
    put(doc, path, Pairs(tuple(items)))
    return f"duplicate key {key!r} in {_show(path)}"


_VALUES_BY_TYPE: tuple[Any, ...] = (0, -1, 1.5, 2**64, True, False, None, "", "x", "1", [], [1, "a"], {}, {"a": 1})


def _other_value(value: Any, rng: Random) -> Any:
    options = [v for v in _VALUES_BY_TYPE if type(v) is not type(value)]
    return copy.deepcopy(rng.choice(options))  # a fresh one: a later mutation may change it


def wrong_type(doc: Any, rng: Random) -> str | None:
    path = _pick(doc, rng)
    if path is None:
        return None
    value = get(doc, path)
    put(doc, path, _other_value(value, rng))
    return f"wrong type at {_show(path)}"


def null_value(doc: Any, rng: Random) -> str | None:
    path = _pick(doc, rng)
    if path is None:
        return None
    put(doc, path, None)
    return f"null at {_show(path)}"


def unknown_member(doc: Any, rng: Random) -> str | None:
    """A member the schema does not have: a stranger, or a near miss of a real name."""
    path = _pick(doc, rng, lambda _, v: isinstance(v, dict))
    if path is None:
        return None
    obj = get(doc, path)
    names = ["unknownField", "x", "", "__proto__", "\u0000", "\u00e9v\u00e9nement", "extension_", "_id"]
    if obj:
        real = rng.choice(list(obj))
        names += [real.upper(), real.lower(), real + "s", re.sub(r"([A-Z])", r"_\1", real).lower() + "_", real[:-1]]
    name = rng.choice(names)
    if name in obj:
        name += "X"
    obj[name] = copy.deepcopy(rng.choice(_VALUES_BY_TYPE))
    return f"unknown member {name!r} in {_show(path)}"


ENUM_NAME = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")


def unknown_enum(doc: Any, rng: Random) -> str | None:
    """An enum name (UPPER_SNAKE, or a code) the contract does not define."""
    path = _pick(doc, rng, lambda _, v: isinstance(v, str) and bool(ENUM_NAME.match(v)))
    path = path or _pick(doc, rng, lambda _, v: isinstance(v, str))
    if path is None:
        return None
    value = get(doc, path)
    prefix = value.rsplit("_", 1)[0] if "_" in value else value
    put(doc, path, rng.choice([f"{prefix}_TELEPATHY", value.lower(), value + " ", f"{prefix}_", "99", 99, -1,
                               2**31, "UNSPECIFIED", value.replace("_", "-"), "notification-" + value]))
    return f"unknown enum at {_show(path)}"


LONG_LENGTHS = (101, 129, 201, 257, 1_000)  # just over the limits (100, 128, 200), and well over


def long_length(rng: Random) -> int:
    """A length just over a limit, sometimes far over (far over costs the hub more)."""
    roll = rng.random()
    return 65_536 if roll < 0.01 else 10_000 if roll < 0.05 else rng.choice(LONG_LENGTHS)


def long_string(doc: Any, rng: Random) -> str | None:
    """A string just over a limit, or far over one."""
    path = _pick(doc, rng, lambda _, v: isinstance(v, str))
    if path is None:
        return None
    put(doc, path, rng.choice("AZaz09 ") * long_length(rng))
    return f"long string at {_show(path)}"


def huge_string(doc: Any, rng: Random, path: Path | None = None) -> str | None:
    """A 0.9 MB string (a name, say): at ``path``, else at a string chosen by ``rng``."""
    path = path or _pick(doc, rng, lambda _, v: isinstance(v, str))
    if path is None:
        return None
    put(doc, path, rng.choice(["A", "é", "x y"]) * (HUGE // 3 if rng.random() < 0.3 else HUGE // 1))
    return f"huge string at {_show(path)}"


BAD_NUMBERS = (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b"01", b"0x1F", b"1.", b".5", b"+1",
               b"18446744073709551616", b"-9223372036854775809", b"1e-400", b"4294967296", b"-1", b"1.0e2")


def bad_number(doc: Any, rng: Random) -> str | None:
    path = _pick(doc, rng, lambda _, v: isinstance(v, int | float) and not isinstance(v, bool)) or _pick(doc, rng)
    if path is None:
        return None
    put(doc, path, Raw(rng.choice(BAD_NUMBERS)))
    return f"bad number at {_show(path)}"


INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf", b"\x80",
                b"\xe2\x82", b"\\ud800", b"\\udc00x", b"\x01", b"\t", b"\\x41", b"\\u00")


def invalid_utf8(doc: Any, rng: Random) -> str | None:
    """A string with bytes that are not UTF-8, a lone surrogate escape, or a raw control character."""
    path = _pick(doc, rng, lambda _, v: isinstance(v, str)) or _pick(doc, rng)
    if path is None:
        return None
    value = get(doc, path)
    text = value.encode() if isinstance(value, str) else b"x"
    at = rng.randint(0, len(text))
    put(doc, path, Raw(orjson.dumps(text[:at].decode(errors="ignore"))[:-1] + rng.choice(INVALID_UTF8) +
                       orjson.dumps(text[at:].decode(errors="ignore"))[1:]))
    return f"invalid UTF-8 at {_show(path)}"


DEPTHS = (64, 200, 999, 1023, 1025, 5_000)  # orjson stops at 1024


def nested(depth: int, rng: Random) -> Raw:
    """A value nested ``depth`` deep in arrays or objects, built as bytes (no recursion)."""
    if rng.random() < 0.5:
        return Raw(b"[" * depth + b"1" + b"]" * depth)
    return Raw(b'{"a":' * depth + b"1" + b"}" * depth)


def deep_nesting(doc: Any, rng: Random) -> str | None:
    path = _pick(doc, rng)
    if path is None:
        return None
    depth = 100_000 if rng.random() < 0.02 else rng.choice(DEPTHS)
    put(doc, path, nested(depth, rng))
    return f"nested {depth} deep at {_show(path)}"


DATE_LIKE = re.compile(r"^\d{4}-\d{2}")
BAD_TIMES = (
    "2026-02-30T10:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z", "2026-06-01T23:59:60Z",
    "2026-01-01T10:00:00", "2026-01-01", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "10000-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "1899-12-31T00:00:00Z", "2999-01-01T00:00:00Z",
    "2026-01-01T10:00:00.1234567891Z", "2026-01-01T10:00:00+25:00", "2026-01-01T10:00:00-00:60",
    " 2026-01-01T10:00:00Z", "2026-01-01t10:00:00z", "2026-1-1T1:0:0Z", "20260101T100000Z", "", "yesterday",
    "2026-02-29", "1850-01-01", "2026-00-10", "+002026-01-01T00:00:00Z", "2026-01-01T10:00:00.Z",
)


def bad_timestamp(doc: Any, rng: Random) -> str | None:
    path = _pick(doc, rng, lambda _, v: isinstance(v, str) and bool(DATE_LIKE.match(v)))
    if path is None:
        return None
    put(doc, path, rng.choice(BAD_TIMES))
    return f"bad time at {_show(path)}"


def empty_container(doc: Any, rng: Random) -> str | None:
    path = _pick(doc, rng, lambda _, v: isinstance(v, dict | list))
    if path is None:
        return None
    put(doc, path, rng.choice([{}, [], [None], [{}], ""]))
    return f"emptied {_show(path)}"


def swap_values(doc: Any, rng: Random) -> str | None:
    paths = locations(doc)
    leaves = [p for p in paths if not isinstance(get(doc, p), dict | list)]
    if len(leaves) < 2:
        return None
    a, b = rng.sample(leaves, 2)
    va, vb = get(doc, a), get(doc, b)
    put(doc, a, vb)
    put(doc, b, va)
    return f"swapped {_show(a)} and {_show(b)}"


# name -> (mutation, weight); huge strings are rare: each costs a megabyte through the hub
JSON_MUTATIONS: dict[str, tuple[JsonMutation, float]] = {
    "drop_member": (drop_member, 10), "duplicate_member": (duplicate_member, 5), "wrong_type": (wrong_type, 10),
    "null_value": (null_value, 4), "unknown_member": (unknown_member, 6), "unknown_enum": (unknown_enum, 8),
    "long_string": (long_string, 5), "huge_string": (huge_string, 0.03), "bad_number": (bad_number, 3),
    "invalid_utf8": (invalid_utf8, 5), "deep_nesting": (deep_nesting, 3), "bad_timestamp": (bad_timestamp, 8),
    "empty_container": (empty_container, 3), "swap_values": (swap_values, 3),
}


def choose(rng: Random, table: dict[str, tuple[Any, float]]) -> str:
    names = sorted(table)
    return rng.choices(names, [table[n][1] for n in names])[0]


def apply_json(holder: list[Any], rng: Random, table: dict[str, tuple[JsonMutation, float]],
               rounds: int) -> list[str]:
    """``rounds`` mutations from ``table`` applied in place to the document in ``holder[0]`` (held
    so that the document itself can be replaced); their descriptions."""
    done: list[str] = []
    tries = 0
    while len(done) < rounds and tries < rounds * 10:
        tries += 1
        name = choose(rng, table)
        what = table[name][0](holder, rng)
        if what is not None:
            done.append(f"json.{name}: {what}")
    return done


def mutate_json(doc: Any, rng: Random, rounds: int = 1) -> tuple[bytes, list[str]]:
    """A copy of JSON data ``doc`` mutated ``rounds`` times (any of :data:`JSON_MUTATIONS`), as bytes."""
    holder = [orjson.loads(orjson.dumps(doc))]
    names = apply_json(holder, rng, JSON_MUTATIONS, rounds)
    return dumps(holder[0]), names


def _show(path: Path) -> str:
    """A location in a held document (its first step is the holder's 0) as /member/0/member."""
    return "/" + "/".join(str(p) for p in path[1:])
