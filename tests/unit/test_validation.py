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


def issues_of(event: ce.CareEvent) -> list[tuple[str, str]]:
    return [(i.field, R.Name(i.problem)) for i in validate(event, NOW, Limits())]


@pytest.mark.parametrize("number", ["9434765918", "94347659", "943476591X"])
def test_a_bad_nhs_number_degrades_the_event_it_does_not_drop_it(number: str) -> None:
    event = care_event(when=NOW, national_id=number)
    assert issues_of(event) == [("person.national_id", "REJECT_REASON_INVALID_NHS_NUMBER")]
    assert not event.person.national_id  # left out; the rest is kept
    assert event.person.local_id and event.person.family_name and event.clinical.diagnoses


def test_degraded_values_are_removed_and_named_never_echoed() -> None:
    event = care_event(when=NOW, national_id="9434765918", postcode="NOT A POSTCODE", birth_date="2030-01-01")
    event.person.given_name = "x" * 900_000  # a 0.9 MB name
    event.person.sex = 9  # type: ignore[assignment]
    event.recorded_time.FromDatetime(NOW + timedelta(days=30))
    event.registered_practice = "not a practice!"
    issues = issues_of(event)
    assert dict(issues) == {
        "recorded_time": "REJECT_REASON_FUTURE_TIMESTAMP",
        "person.national_id": "REJECT_REASON_INVALID_NHS_NUMBER",
        "person.sex": "REJECT_REASON_UNKNOWN_ENUM",
        "person.birth_date": "REJECT_REASON_INVALID_FIELD",
        "person.postcode": "REJECT_REASON_INVALID_FIELD",
        "person.given_name": "REJECT_REASON_TOO_LONG",
        "registered_practice": "REJECT_REASON_INVALID_FIELD",
    }
    person = event.person
    assert not (person.national_id or person.postcode or person.birth_date or person.given_name or person.sex)
    assert not event.HasField("recorded_time") and not event.registered_practice
    assert person.family_name and person.local_id  # what was good stays


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
def test_a_bad_icd10_code_is_left_out(code: str) -> None:
    event = care_event(when=NOW)
    event.clinical.diagnoses[0].code = code
    event.clinical.diagnoses.add(code="J18.1", position=2)
    assert issues_of(event) == [("clinical.diagnoses[0]", "REJECT_REASON_INVALID_ICD10")]
    assert [d.code for d in event.clinical.diagnoses] == ["J18.1"]


def test_coded_diagnoses_with_no_usable_code_are_rejected() -> None:
    event = care_event(ce.EVENT_TYPE_DIAGNOSIS_CODED, when=NOW)
    del event.clinical.diagnoses[:]
    event.clinical.diagnoses.add(code="XYZ", position=1)
    assert reason_of(event.SerializeToString(), PROTOBUF) == "REJECT_REASON_INVALID_ICD10"


def test_ids_over_their_length_reject() -> None:
    event = care_event(when=NOW)
    event.person.local_id = "L" * 129
    assert reason_of(event.SerializeToString(), PROTOBUF) == "REJECT_REASON_TOO_LONG"


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


@pytest.mark.parametrize("birth_date", ["17/03/1941", "2030-01-01", "19410317", "1850-01-01", "1941-W11-1"])
def test_a_bad_birth_date_is_left_out(birth_date: str) -> None:
    assert issues_of(care_event(when=NOW, birth_date=birth_date)) == [("person.birth_date",
                                                                       "REJECT_REASON_INVALID_FIELD")]


# --- care plans: owner, review date, segment and contact role (README "What degrades") ---------


def care_plan_event(**detail: object) -> ce.CareEvent:
    event = care_event(ce.EVENT_TYPE_CARE_PLAN, when=NOW, source_org="SC001")
    event.source_sector = ce.SECTOR_SOCIAL_CARE
    event.ClearField("clinical")
    event.care_plan.CopyFrom(ce.CarePlanDetail(**detail))  # type: ignore[arg-type]
    return event


def test_a_care_plan_is_accepted_with_all_it_says_and_reads_from_json() -> None:
    event = care_plan_event(owner_org="SC001", review_due="2027-02-01", segment="frail",
                            contact_role="care coordinator")
    assert issues_of(event) == []
    assert (event.care_plan.owner_org, event.care_plan.review_due) == ("SC001", "2027-02-01")
    doc = as_json(event)
    assert doc["carePlan"] == {"ownerOrg": "SC001", "reviewDue": "2027-02-01", "segment": "frail",
                               "contactRole": "care coordinator"}
    doc["carePlan"] = {"ownerOrg": "SC001", "closed": True}
    closing = decode(orjson.dumps(doc), JSON)
    assert validate(closing, NOW, Limits()) == [] and closing.care_plan.closed


@pytest.mark.parametrize("review_due", ["2026-10-01", "1990-01-01", "2036-12-31"])
def test_a_review_date_in_the_past_or_years_ahead_is_kept(review_due: str) -> None:
    event = care_plan_event(review_due=review_due)
    assert issues_of(event) == [] and event.care_plan.review_due == review_due  # a past one: overdue


@pytest.mark.parametrize("review_due", ["2027-02-30", "2027-13-01", "01/02/2027", "20270201", "2027-W05-1",
                                        "next spring", "1989-12-31", "2037-01-01"])
def test_an_unparseable_or_impossible_review_date_is_left_out_and_the_plan_kept(review_due: str) -> None:
    event = care_plan_event(owner_org="SC001", review_due=review_due, contact_role="social worker")
    assert issues_of(event) == [("care_plan.review_due", "REJECT_REASON_INVALID_FIELD")]
    assert not event.care_plan.review_due
    assert (event.care_plan.owner_org, event.care_plan.contact_role) == ("SC001", "social worker")


@pytest.mark.parametrize("owner", ["S", "not an org!", "X" * 33, "SC 001"])
def test_an_owner_that_is_no_organisation_code_is_left_out_so_the_sender_owns_the_plan(owner: str) -> None:
    event = care_plan_event(owner_org=owner, review_due="2027-02-01")
    assert issues_of(event) == [("care_plan.owner_org", "REJECT_REASON_INVALID_FIELD")]
    assert not event.care_plan.owner_org and event.care_plan.review_due == "2027-02-01"


def test_care_plan_texts_over_their_length_are_left_out() -> None:
    event = care_plan_event(segment="s" * 65, contact_role="r" * 101, review_due="2027-02-01")
    assert sorted(issues_of(event)) == [("care_plan.contact_role", "REJECT_REASON_TOO_LONG"),
                                        ("care_plan.segment", "REJECT_REASON_TOO_LONG")]
    assert not (event.care_plan.segment or event.care_plan.contact_role) and event.care_plan.review_due
    fits = care_plan_event(segment="s" * 64, contact_role="r" * 100)
    assert issues_of(fits) == []
