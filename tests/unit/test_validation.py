from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from google.protobuf import json_format

from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing
from services.ingest.validation import JSON, PROTOBUF, Limits, Rejection, decode, validate
from tests.factories import care_event

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
R = ing.RejectReason


def reason_of(value: bytes, content_type: str | None = JSON) -> str:
    with pytest.raises(Rejection) as info:
        validate(decode(value, content_type), NOW, Limits())
    return R.Name(info.value.reason)


def as_json(event: ce.CareEvent) -> dict[str, object]:
    return json_format.MessageToDict(event)


def test_valid_event_passes_in_both_encodings() -> None:
    event = care_event(when=NOW - timedelta(hours=1))
    for value, ctype in ((orjson.dumps(as_json(event)), JSON), (event.SerializeToString(), PROTOBUF)):
        decoded = decode(value, ctype)
        validate(decoded, NOW, Limits())
        assert decoded == event


def test_content_type_is_sniffed_when_header_missing() -> None:
    event = care_event(when=NOW)
    assert decode(orjson.dumps(as_json(event)), None) == event
    assert decode(event.SerializeToString(), None) == event


def test_malformed_json() -> None:
    assert reason_of(b'{"eventId": "x", ') == "REJECT_REASON_MALFORMED_JSON"


def test_json_that_is_not_an_object() -> None:
    assert reason_of(b"[1, 2]") == "REJECT_REASON_SCHEMA_VIOLATION"


def test_unknown_enum_in_json() -> None:
    doc = as_json(care_event(when=NOW))
    doc["eventType"] = "EVENT_TYPE_TELEPATHY"
    assert reason_of(orjson.dumps(doc)) == "REJECT_REASON_UNKNOWN_ENUM"


def test_unknown_enum_number_in_protobuf() -> None:
    event = care_event(when=NOW)
    event.source_sector = 77  # type: ignore[assignment]
    assert reason_of(event.SerializeToString(), PROTOBUF) == "REJECT_REASON_UNKNOWN_ENUM"


def test_unknown_field_in_json() -> None:
    doc = as_json(care_event(when=NOW))
    doc["favouriteColour"] = "blue"
    assert reason_of(orjson.dumps(doc)) == "REJECT_REASON_SCHEMA_VIOLATION"


def test_truncated_protobuf() -> None:
    value = care_event(when=NOW).SerializeToString()
    assert reason_of(value[:-9], PROTOBUF) == "REJECT_REASON_MALFORMED_PROTOBUF"


@pytest.mark.parametrize("number", ["9434765918", "94347659", "943476591X"])
def test_bad_nhs_number(number: str) -> None:
    event = care_event(when=NOW, national_id=number)
    assert reason_of(event.SerializeToString(), PROTOBUF) == "REJECT_REASON_INVALID_NHS_NUMBER"


def test_nhs_number_never_echoed_in_message() -> None:
    event = care_event(when=NOW, national_id="9434765918")
    with pytest.raises(Rejection) as info:
        validate(event, NOW, Limits())
    assert "9434765918" not in info.value.message


def test_nhs_number_with_spaces_is_accepted() -> None:
    validate(care_event(when=NOW, national_id="943 476 5919"), NOW, Limits())


def test_future_timestamp_beyond_skew() -> None:
    assert reason_of(care_event(when=NOW + timedelta(hours=25)).SerializeToString(), PROTOBUF) == (
        "REJECT_REASON_FUTURE_TIMESTAMP"
    )
    validate(care_event(when=NOW + timedelta(hours=23)), NOW, Limits())
    validate(care_event(when=NOW + timedelta(hours=25)), NOW, Limits(max_future_skew=timedelta(hours=48)))


def test_implausibly_old_timestamp() -> None:
    old = care_event(when=datetime(1970, 1, 2, tzinfo=UTC))
    assert reason_of(old.SerializeToString(), PROTOBUF) == "REJECT_REASON_IMPLAUSIBLE_TIMESTAMP"


@pytest.mark.parametrize("code", ["XYZ", "J1", "18.1", "J18.12345", "j18.1"])
def test_bad_icd10_shape(code: str) -> None:
    event = care_event(when=NOW)
    event.clinical.diagnoses[0].code = code
    assert reason_of(event.SerializeToString(), PROTOBUF) == "REJECT_REASON_INVALID_ICD10"


@pytest.mark.parametrize("code", ["J18.1", "J181", "E11.65", "I50.810", "K52"])
def test_good_icd10_shapes(code: str) -> None:
    event = care_event(when=NOW)
    event.clinical.diagnoses[0].code = code
    validate(event, NOW, Limits())


def test_required_fields() -> None:
    mutations: tuple[tuple[Callable[[ce.CareEvent], object], str], ...] = (
        (lambda e: e.ClearField("event_id"), "event_id"),
        (lambda e: e.ClearField("source_org"), "source_org"),
        (lambda e: e.ClearField("event_type"), "event_type"),
        (lambda e: e.ClearField("event_time"), "event_time"),
        (lambda e: e.person.ClearField("local_id"), "person.local_id"),
        (lambda e: e.clinical.ClearField("spell_id"), "clinical.spell_id"),
        (lambda e: e.clinical.ClearField("admission_method"), "clinical.admission_method"),
    )
    for mutate, field in mutations:
        event = care_event(when=NOW)
        mutate(event)
        with pytest.raises(Rejection) as info:
            validate(event, NOW, Limits())
        assert info.value.reason == R.REJECT_REASON_MISSING_FIELD, field
        assert field in info.value.message


def test_cancellation_needs_target() -> None:
    event = care_event(ce.EVENT_TYPE_CANCELLATION, when=NOW)
    with pytest.raises(Rejection, match="target_event_id"):
        validate(event, NOW, Limits())
    event.target_event_id = "e-1"
    validate(event, NOW, Limits())


def test_unsupported_schema_version() -> None:
    event = care_event(when=NOW)
    event.schema_version = 2
    assert reason_of(event.SerializeToString(), PROTOBUF) == "REJECT_REASON_UNSUPPORTED_SCHEMA_VERSION"


def test_bad_postcode_and_birth_date() -> None:
    assert reason_of(care_event(when=NOW, postcode="NOT A POSTCODE").SerializeToString(), PROTOBUF) == (
        "REJECT_REASON_INVALID_FIELD"
    )
    assert reason_of(care_event(when=NOW, birth_date="17/03/1941").SerializeToString(), PROTOBUF) == (
        "REJECT_REASON_INVALID_FIELD"
    )
    assert reason_of(care_event(when=NOW, birth_date="2030-01-01").SerializeToString(), PROTOBUF) == (
        "REJECT_REASON_INVALID_FIELD"
    )
    assert reason_of(care_event(when=NOW, birth_date="19410317").SerializeToString(), PROTOBUF) == (
        "REJECT_REASON_INVALID_FIELD"
    )
