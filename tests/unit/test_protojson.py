"""carehub.protojson must accept and reject exactly what json_format.ParseDict does."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from google.protobuf import json_format

from carehub import protojson
from carehub.synthetic import KIND_DUPLICATE, KIND_VALID, RegionConfig, generate_region, json_line
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing
from tests.factories import care_event


def both(doc: Any, message_type: type = ce.CareEvent) -> tuple[Any, Any]:
    """(result or exception type) from json_format and from protojson."""
    results = []
    for parse in (json_format.ParseDict, protojson.parse_dict):
        try:
            results.append(parse(copy.deepcopy(doc), message_type()))
        except json_format.ParseError:
            results.append(json_format.ParseError)
    return results[0], results[1]


def test_same_messages_for_the_synthetic_region() -> None:
    region = generate_region(RegionConfig(people=300, seed=3))
    docs = [orjson.loads(json_line(r)) for r in region.records if r.kind in (KIND_VALID, KIND_DUPLICATE)]
    assert len(docs) > 1000
    for doc in docs:
        expected, got = both(doc)
        assert got == expected


BASE = json_format.MessageToDict(care_event())


def variant(path: list[str], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    target = doc
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize("doc", [
    variant(["eventType"], "EVENT_TYPE_TELEPATHY"),
    variant(["eventType"], 4),
    variant(["eventType"], 99),
    variant(["eventType"], True),
    variant(["eventType"], None),
    variant(["schemaVersion"], "1"),
    variant(["schemaVersion"], -1),
    variant(["schemaVersion"], 2**32),
    variant(["schemaVersion"], 1.0),
    variant(["schemaVersion"], 1.5),
    variant(["schemaVersion"], True),
    variant(["schemaVersion"], "one"),
    variant(["eventId"], 12),
    variant(["event_id"], "snake-case-name"),
    variant(["unknownField"], 1),
    variant(["person", "sex"], "SEX_ROBOT"),
    variant(["person", "localId"], ["a"]),
    variant(["person"], "not an object"),
    variant(["person"], {}),
    variant(["clinical", "diagnoses"], {"code": "J18.1"}),
    variant(["clinical", "diagnoses"], [{"code": "J18.1", "position": 1, "provisional": "yes"}]),
    variant(["clinical", "diagnoses"], [None]),
    variant(["clinical", "diagnoses"], []),
    variant(["consent", "planningOptOut"], 1),
    variant(["eventTime"], "2026-10-01T10:00:00Z"),
    variant(["eventTime"], "2026-10-01T10:00:00.123456789Z"),
    variant(["eventTime"], "2026-10-01T10:00:00.1234567891Z"),
    variant(["eventTime"], "2026-10-01T10:00:00+01:00"),
    variant(["eventTime"], "2026-10-01T10:00:00-05:30"),
    variant(["eventTime"], "2026-10-01T10:00:00"),
    variant(["eventTime"], "2026-10-01T10:00Z"),
    variant(["eventTime"], "2026-10-01"),
    variant(["eventTime"], "2026-13-01T10:00:00Z"),
    variant(["eventTime"], "2026-10-01T10:00:00z"),
    variant(["eventTime"], "yesterday"),
    variant(["eventTime"], 1700000000),
    variant(["eventTime"], "0001-01-01T00:00:00Z"),
    variant(["eventTime"], "9999-12-31T23:59:59Z"),
])
def test_same_outcome_for_edge_cases(doc: dict[str, Any]) -> None:
    expected, got = both(doc)
    assert got == expected


def test_types_it_does_not_cover_go_to_json_format() -> None:
    letter = ing.DeadLetter(original_value=b"\x00\xff", message="m")
    letter.original_headers["content-type"] = b"application/json"
    doc = json_format.MessageToDict(letter)
    expected, got = both(doc, ing.DeadLetter)
    assert got == expected == letter
