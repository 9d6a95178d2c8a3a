"""Seeded mutations of FHIR message Bundles (Da Vinci notifications), as the FHIR door receives them.

Structure-aware, on the Bundle as JSON data: no MessageHeader, or not first; a wrong resourceType
(of the Bundle or of an entry); elements FHIR R4 does not have; invalid dates and instants;
extensions nested deep; references to nothing; resources left out; unknown event codes and
statuses; malformed entries; a 0.9 MB name, and rarely a body over the 2 MiB limit. Besides: every
generic JSON mutation (carehub.fuzz.mutators), bodies that are not JSON at all, other content
types and the other endpoint.
"""

from __future__ import annotations

from random import Random
from typing import Any

import orjson

from carehub.fuzz.mutators import (
    HUGE,
    JSON_MUTATIONS,
    JsonMutation,
    Path,
    Raw,
    apply_json,
    dumps,
    get,
    huge_string,
    locations,
    mutate_bytes,
    put,
)

FHIR_JSON = "application/fhir+json"
MESSAGE_PATH, TRANSACTION_PATH = "/$process-message", ""
OVER_LIMIT = 2_200_000  # characters: over the FHIR door's default 2 MiB


def _entries(holder: list[Any]) -> list[Any] | None:
    bundle = holder[0]
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    return entries if isinstance(entries, list) else None


def _resource_paths(holder: list[Any], kind: str | None = None) -> list[Path]:
    entries = _entries(holder) or []
    return [(0, "entry", i, "resource") for i, e in enumerate(entries)
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            and (kind is None or e["resource"].get("resourceType") == kind)]


def no_message_header(holder: list[Any], rng: Random) -> str | None:
    entries = _entries(holder)
    paths = _resource_paths(holder, "MessageHeader")
    if entries is None or not paths:
        return None
    for path in reversed(paths):
        del entries[int(path[2])]
    return "no MessageHeader"


def header_not_first(holder: list[Any], rng: Random) -> str | None:
    entries = _entries(holder)
    if entries is None or len(entries) < 2:
        return None
    entries.append(entries.pop(0))
    return "MessageHeader last"


RESOURCE_TYPES = ("Bundel", "bundle", "Patient", "", None, 5, "Observation", "MessageHeader", "Basic", "Bundle ")


def wrong_resource_type(holder: list[Any], rng: Random) -> str | None:
    paths = [(0,), *_resource_paths(holder)]
    path = rng.choice(paths)
    target = get(holder, path)
    if not isinstance(target, dict):
        return None
    target["resourceType"] = rng.choice(RESOURCE_TYPES)
    return f"resourceType of {'/'.join(map(str, path[1:])) or 'the Bundle'}"


FHIR_DATES = ("1950-02-30", "1950", "1950-13", "2026-11-30T09:15:00", "2026-11-30T25:00:00+00:00", "30/11/2026",
              "2026-11-30T09:15:00+00:00Z", "0000-00-00", "2026-11-30T09:15:60Z", "10000-01-01", "2026-11-31",
              "2026-11-30 09:15:00+00:00", "")


def invalid_date(holder: list[Any], rng: Random) -> str | None:
    paths = [p for p in locations(holder) if p and p[-1] in ("birthDate", "start", "end", "timestamp")]
    if not paths:
        return None
    path = rng.choice(paths)
    put(holder, path, rng.choice(FHIR_DATES))
    return f"invalid date at {'/'.join(map(str, path[1:]))}"


EXTENSION_DEPTHS = (20, 100, 200, 990, 1100)  # orjson stops at 1024 levels


def deep_extensions(holder: list[Any], rng: Random) -> str | None:
    """An extension with extensions inside it, very deep (built as bytes)."""
    paths = _resource_paths(holder)
    if not paths:
        return None
    depth = 5_000 if rng.random() < 0.02 else rng.choice(EXTENSION_DEPTHS)
    opening = b'{"url":"https://example.org/x","extension":['
    inner = b'{"url":"https://example.org/x","valueString":"a"}'
    get(holder, rng.choice(paths))["extension"] = Raw(b"[" + opening * depth + inner + b"]}" * depth + b"]")
    return f"extensions nested {depth} deep"


BUNDLE_TYPES = ("transaction", "collection", "document", "", "batch", "MESSAGE", None, "history", 1)


def bundle_type(holder: list[Any], rng: Random) -> str | None:
    if not isinstance(holder[0], dict):
        return None
    holder[0]["type"] = rng.choice(BUNDLE_TYPES)
    return f"Bundle.type {holder[0]['type']!r}"


REFERENCES = ("Encounter/nope", "", "urn:uuid:00000000-0000-0000-0000-000000000000", 5, "Patient/", "/", "#x",
              "Encounter/enc-1/_history/1", "http://elsewhere.example/fhir/Encounter/1", None)


def broken_reference(holder: list[Any], rng: Random) -> str | None:
    paths = [p for p in locations(holder) if p and p[-1] == "reference"]
    if not paths:
        return None
    path = rng.choice(paths)
    put(holder, path, rng.choice(REFERENCES))
    return f"reference at {'/'.join(map(str, path[1:]))}"


def resource_left_out(holder: list[Any], rng: Random) -> str | None:
    entries = _entries(holder)
    paths = [p for p in _resource_paths(holder) if get(holder, p).get("resourceType") != "MessageHeader"]
    if entries is None or not paths:
        return None
    path = rng.choice(paths)
    kind = get(holder, path).get("resourceType")
    del entries[int(path[2])]
    return f"no {kind}"


CODES = ("notification-foo", "notification-admit ", "NOTIFICATION-ADMIT", "", "admit", "notification-discharge",
         "notification-transfer", "unknown-status", "ZZZ", "EMER", "IMP", "entered-in-error", "finished", "planned")


def code_value(holder: list[Any], rng: Random) -> str | None:
    """An event code, status or class code the mapping does not know (or another known one)."""
    paths = [p for p in locations(holder) if p and p[-1] in ("code", "status", "system")]
    if not paths:
        return None
    path = rng.choice(paths)
    put(holder, path, rng.choice(CODES) if path[-1] != "system" else rng.choice(("", "urn:x", "http://x")))
    return f"code at {'/'.join(map(str, path[1:]))}"


def entry_shape(holder: list[Any], rng: Random) -> str | None:
    bundle = holder[0]
    if not isinstance(bundle, dict):
        return None
    entries = _entries(holder)
    if entries and rng.random() < 0.6:
        i = rng.randrange(len(entries))
        entries[i] = rng.choice((None, {}, [], "entry", {"fullUrl": "x"}, {"resource": None}))
        return f"entry {i} malformed"
    bundle["entry"] = rng.choice(({}, [], None, "x", [None], entries[0] if entries else {}))
    return "Bundle.entry malformed"


def large_name(holder: list[Any], rng: Random) -> str | None:
    """A 0.9 MB family name, or (rarely) one that takes the body over the door's limit."""
    paths = [p for p in locations(holder) if p and p[-1] == "family"] or \
        [p for p in locations(holder) if isinstance(get(holder, p), str)]
    if not paths:
        return None
    path = rng.choice(paths)
    if rng.random() < 0.25:
        put(holder, path, "F" * OVER_LIMIT)
        return f"{OVER_LIMIT} characters at {'/'.join(map(str, path[1:]))}"
    return huge_string(holder, rng, path)


FHIR_MUTATIONS: dict[str, tuple[JsonMutation, float]] = {
    "no_message_header": (no_message_header, 5), "header_not_first": (header_not_first, 3),
    "wrong_resource_type": (wrong_resource_type, 5), "invalid_date": (invalid_date, 8),
    "deep_extensions": (deep_extensions, 3), "bundle_type": (bundle_type, 3),
    "broken_reference": (broken_reference, 5), "resource_left_out": (resource_left_out, 5),
    "code_value": (code_value, 8), "entry_shape": (entry_shape, 3), "large_name": (large_name, 0.04),
    **{name: (fn, weight) for name, (fn, weight) in JSON_MUTATIONS.items() if name != "huge_string"},
}

NOT_JSON = (b"", b"null", b"[]", b"42", b'"Bundle"', b'<Bundle xmlns="http://hl7.org/fhir"><id value="1"/></Bundle>',
            b"MSH|^~\\&|PAS|RR8|||20261001||ADT^A01|1|P|2.4\r", b"\xef\xbb\xbf{}", b"{", b"}", b"\x00" * 16,
            b'{"resourceType":"Bundle"', b"true")
CONTENT_TYPES = ("text/plain", "application/xml", "", "application/fhir+xml", "application/json; charset=utf-8",
                 "APPLICATION/FHIR+JSON", "application/fhir+json;fhirVersion=4.0", "multipart/form-data",
                 "application/json+fhir", "application/x-protobuf")


def mutate_fhir(bundle: dict[str, Any], rng: Random) -> tuple[bytes, str, str, list[str]]:
    """(body, Content-Type, path under the base, what was done) for a malformed request made from
    a valid message ``bundle``; at least one mutation."""
    content_type, path, names = FHIR_JSON, MESSAGE_PATH, []
    roll = rng.random()
    if roll < 0.04:
        body = rng.choice(NOT_JSON)
        names.append("fhir.not_json")
    elif roll < 0.06:
        body = orjson.dumps(bundle).decode().encode(rng.choice(("utf-16", "utf-32", "latin-1")), errors="replace")
        names.append("fhir.not_utf8")
    else:
        holder = [orjson.loads(orjson.dumps(bundle))]
        names += [f"fhir.{n.removeprefix('json.')}" for n in
                  apply_json(holder, rng, FHIR_MUTATIONS, rng.choice((1, 1, 1, 2, 3)))]
        body = dumps(holder[0])
    if rng.random() < 0.1 or not names:
        body, more = mutate_bytes(body, rng)
        names += more
    if rng.random() < 0.03:
        content_type = rng.choice(CONTENT_TYPES)
        names.append(f"http.content_type {content_type!r}")
    if rng.random() < 0.03:
        path = TRANSACTION_PATH
        names.append("http.transaction endpoint")
    return body, content_type, path, names


__all__ = ["FHIR_JSON", "FHIR_MUTATIONS", "HUGE", "MESSAGE_PATH", "TRANSACTION_PATH", "mutate_fhir"]
