"""Decoding and validation of provider records: each one is accepted or rejected with a reason.

Rules that come from the contract (protos/carehub/v1/care_event.proto) and from the
reference facts in docs/events-reference.md (what each ADT-like event must carry).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import DecodeError
from nhs_number.validate import is_valid as nhs_number_is_valid

from carehub import protojson
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing

R = ing.RejectReason
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
JSON = "application/json"
PROTOBUF = "application/x-protobuf"

# ICD-10: a letter, two digits, then optionally a dot and up to four characters
# (J18.1, J181, E11.65, I50.810 in ICD-10-CM style). See docs/indicators-reference.md.
ICD10 = re.compile(r"^[A-Z][0-9]{2}(\.?[0-9A-Z]{1,4})?$")
UK_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$")
ORG_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,31}$")
MAX_ID_LEN = 128

# Events that belong to a hospital spell must name it.
SPELL_EVENTS = frozenset({
    ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_TRANSFER, ce.EVENT_TYPE_DISCHARGE, ce.EVENT_TYPE_DIAGNOSIS_CODED,
})


class Rejection(Exception):
    """An event that cannot be accepted, with a machine-readable reason and a human message."""

    def __init__(self, reason: ing.RejectReason.ValueType, message: str, event: ce.CareEvent | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.event = event


@dataclass(frozen=True)
class Limits:
    max_future_skew: timedelta = timedelta(hours=24)
    earliest_event_year: int = 1990


def decode(value: bytes | None, content_type: str | None) -> ce.CareEvent:
    """Parse a provider record: protobuf binary or canonical JSON (by header, else by first byte)."""
    if not value:
        raise Rejection(R.REJECT_REASON_MALFORMED_PROTOBUF, "empty record")
    if content_type == JSON or (content_type != PROTOBUF and value.lstrip()[:1] == b"{"):
        return _decode_json(value)
    event = ce.CareEvent()
    try:
        event.ParseFromString(value)
    except DecodeError as exc:
        raise Rejection(R.REJECT_REASON_MALFORMED_PROTOBUF, f"not a CareEvent: {exc}") from None
    return event


def _decode_json(value: bytes) -> ce.CareEvent:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise Rejection(R.REJECT_REASON_MALFORMED_JSON, f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Rejection(R.REJECT_REASON_SCHEMA_VIOLATION, f"expected a JSON object, got {type(obj).__name__}")
    event = ce.CareEvent()
    try:
        protojson.parse_dict(obj, event)
    except json_format.ParseError as exc:
        text = str(exc).split("\n", 1)[0]
        reason = R.REJECT_REASON_UNKNOWN_ENUM if "Invalid enum value" in text else R.REJECT_REASON_SCHEMA_VIOLATION
        raise Rejection(reason, text) from None
    return event


def _check_enum(event: ce.CareEvent, descriptor: EnumDescriptor, number: int, field: str,
                required: bool) -> None:
    if number == 0:
        if required:
            raise Rejection(R.REJECT_REASON_MISSING_FIELD, f"{field} is required", event)
        return
    if number not in descriptor.values_by_number:
        raise Rejection(R.REJECT_REASON_UNKNOWN_ENUM, f"{field}: unknown value {number}", event)


def _time(ts: object) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


def validate(event: ce.CareEvent, now: datetime, limits: Limits) -> None:
    """Raise Rejection unless the event can be accepted. ``now`` is timezone-aware UTC."""
    if not event.event_id:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "event_id is required", event)
    if len(event.event_id) > MAX_ID_LEN:
        raise Rejection(R.REJECT_REASON_INVALID_FIELD, f"event_id longer than {MAX_ID_LEN}", event)
    if event.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        raise Rejection(
            R.REJECT_REASON_UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {event.schema_version} is not one of {sorted(SUPPORTED_SCHEMA_VERSIONS)}", event,
        )
    if not event.source_org:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "source_org is required", event)
    if not ORG_CODE.match(event.source_org):
        raise Rejection(R.REJECT_REASON_INVALID_FIELD, f"source_org {event.source_org!r} is not an org code", event)
    _check_enum(event, ce.Sector.DESCRIPTOR, event.source_sector, "source_sector", True)
    _check_enum(event, ce.EventType.DESCRIPTOR, event.event_type, "event_type", True)
    _check_times(event, now, limits)
    _check_person(event, now)
    _check_clinical(event)
    _check_type_specific(event)


def _check_times(event: ce.CareEvent, now: datetime, limits: Limits) -> None:
    if not event.HasField("event_time"):
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "event_time is required", event)
    now_s = now.timestamp()
    latest = now_s + limits.max_future_skew.total_seconds()
    earliest = datetime(limits.earliest_event_year, 1, 1, tzinfo=UTC).timestamp()
    for field in ("event_time", "recorded_time"):
        if not event.HasField(field):
            continue
        seconds = getattr(event, field).seconds
        if earliest <= seconds <= latest:  # the common case, without building datetimes
            continue
        when = _time(getattr(event, field))
        ahead = when - now
        if ahead > limits.max_future_skew:
            raise Rejection(
                R.REJECT_REASON_FUTURE_TIMESTAMP,
                f"{field} {when.isoformat()} is {ahead.total_seconds() / 3600:.1f} h in the future "
                f"(allowed: {limits.max_future_skew.total_seconds() / 3600:.0f} h)", event,
            )
        if when.year < limits.earliest_event_year:
            raise Rejection(
                R.REJECT_REASON_IMPLAUSIBLE_TIMESTAMP,
                f"{field} {when.isoformat()} is before {limits.earliest_event_year}", event,
            )


def _check_person(event: ce.CareEvent, now: datetime) -> None:
    if not event.HasField("person") or not event.person.local_id:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "person.local_id is required", event)
    person = event.person
    if len(person.local_id) > MAX_ID_LEN:
        raise Rejection(R.REJECT_REASON_INVALID_FIELD, f"person.local_id longer than {MAX_ID_LEN}", event)
    if person.national_id:
        digits = "".join(person.national_id.split()).replace("-", "")
        # never echo the number itself: the message is logged and kept beside the DLQ record
        if len(digits) != 10 or not digits.isdigit():
            raise Rejection(R.REJECT_REASON_INVALID_NHS_NUMBER, "person.national_id is not 10 digits", event)
        if not nhs_number_is_valid(digits):
            raise Rejection(R.REJECT_REASON_INVALID_NHS_NUMBER, "person.national_id fails the mod-11 check", event)
    _check_enum(event, ce.Sex.DESCRIPTOR, person.sex, "person.sex", False)
    if person.birth_date:
        try:
            if len(person.birth_date) != 10:  # fromisoformat also takes 19410317 and week dates
                raise ValueError
            born = date.fromisoformat(person.birth_date)
        except ValueError:
            raise Rejection(R.REJECT_REASON_INVALID_FIELD, "person.birth_date is not YYYY-MM-DD", event) from None
        if born > now.date() or born.year < 1880:
            raise Rejection(R.REJECT_REASON_INVALID_FIELD, "person.birth_date is not a plausible birth date", event)
    if len(person.address_line) > 200:
        raise Rejection(R.REJECT_REASON_INVALID_FIELD, "person.address_line longer than 200", event)
    if person.postcode and not UK_POSTCODE.match(" ".join(person.postcode.split()).upper()):
        raise Rejection(R.REJECT_REASON_INVALID_FIELD, "person.postcode is not a UK postcode", event)


def _check_clinical(event: ce.CareEvent) -> None:
    clinical = event.clinical
    _check_enum(event, ce.AdmissionMethod.DESCRIPTOR, clinical.admission_method, "clinical.admission_method", False)
    for dx in clinical.diagnoses:
        if not ICD10.match(dx.code):
            raise Rejection(R.REJECT_REASON_INVALID_ICD10, f"diagnosis {dx.code!r} is not an ICD-10 code", event)
        if dx.position < 1:
            raise Rejection(R.REJECT_REASON_INVALID_FIELD, f"diagnosis {dx.code} has no position (1 = primary)",
                            event)
    for proc in clinical.procedures:
        if proc.position < 1 or not proc.code:
            raise Rejection(R.REJECT_REASON_INVALID_FIELD, "procedures need a code and a position >= 1", event)


def _check_type_specific(event: ce.CareEvent) -> None:
    t = event.event_type
    if t in SPELL_EVENTS and not event.clinical.spell_id:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD,
                        f"clinical.spell_id is required for {ce.EventType.Name(t)}", event)
    if t == ce.EVENT_TYPE_ADMISSION and event.clinical.admission_method == ce.ADMISSION_METHOD_UNSPECIFIED:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "clinical.admission_method is required for admissions",
                        event)
    if t == ce.EVENT_TYPE_DIAGNOSIS_CODED and not event.clinical.diagnoses:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "clinical.diagnoses is required for coded diagnoses", event)
    if t == ce.EVENT_TYPE_CANCELLATION and not event.target_event_id:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "target_event_id is required for cancellations", event)
    if t == ce.EVENT_TYPE_CONSENT_CHANGE and not event.HasField("consent"):
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "consent is required for consent changes", event)
    if t == ce.EVENT_TYPE_IDENTITY_MERGE and not event.merge.prior_local_id:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "merge.prior_local_id is required for identity merges",
                        event)
    if t == ce.EVENT_TYPE_REGISTRATION and not event.registered_practice:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "registered_practice is required for registrations", event)
