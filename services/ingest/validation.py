"""Decoding and validation of provider records: each one is accepted or rejected with a reason.

Rules that come from the contract (protos/carehub/v1/care_event.proto) and from the
reference facts in docs/events-reference.md (what each ADT-like event must carry).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import DecodeError, Message
from nhs_number.validate import is_valid as nhs_number_is_valid

from carehub import protojson
from carehub.domain.dates import calendar_date
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
TIMESTAMP_MIN_S, TIMESTAMP_MAX_S = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31, google.protobuf.Timestamp
MAX_MESSAGE = 500  # characters of a rejection's message
MAX_ID_LEN = 128  # event_id, person.local_id, clinical.spell_id, target_event_id, merge.prior_local_id: rejects
# Free text and codes: longer is left out of the event (degraded), README "What ingest rejects".
MAX_TEXT = {
    "person.given_name": 100, "person.family_name": 100, "person.address_line": 200,
    "registered_practice": 32, "locality": 64,
    "clinical.admission_source": 16, "clinical.discharge_destination": 16, "clinical.location": 200,
    "clinical.referred_to_org": 32, "care_plan.segment": 64, "care_plan.contact_role": 100,
}
ORG_FIELDS = ("registered_practice", "clinical.referred_to_org", "care_plan.owner_org")  # degrade unless ORG_CODE
# A care plan's review date further ahead than this is taken for a typing error (plans are
# reviewed at least yearly; a decade leaves room for any local practice).
MAX_REVIEW_AHEAD_YEARS = 10
MAX_CODES = 50      # diagnoses, and procedures, kept per event
MAX_CODE_LEN = 16   # a procedure code

# Events that belong to a hospital spell must name it.
SPELL_EVENTS = frozenset({
    ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_TRANSFER, ce.EVENT_TYPE_DISCHARGE, ce.EVENT_TYPE_DIAGNOSIS_CODED,
})


class Rejection(Exception):
    """An event that cannot be accepted, with a machine-readable reason and a human message.

    The message is cut to MAX_MESSAGE characters, and ``event`` keeps only ids of a length an id
    may have: the dead letter carries both beside the record's own bytes, and a record of nearly
    a megabyte must still fit in one dead letter.
    """

    def __init__(self, reason: ing.RejectReason.ValueType, message: str, event: ce.CareEvent | None = None) -> None:
        message = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "..."
        super().__init__(message)
        self.reason = reason
        self.message = message
        if event is not None and max(len(event.event_id), len(event.source_org)) > MAX_ID_LEN:
            event = ce.CareEvent(event_id=event.event_id[:MAX_ID_LEN], source_org=event.source_org[:MAX_ID_LEN])
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
    except (ValueError, TypeError, RecursionError) as exc:
        # a value the message cannot hold (an enum number beyond 32 bits), or nesting too deep to
        # describe: json_format rejects both as well (a ParseError, or no answer at all)
        raise Rejection(R.REJECT_REASON_SCHEMA_VIOLATION, f"not a CareEvent: {type(exc).__name__}") from None
    return event


def _check_enum(event: ce.CareEvent, descriptor: EnumDescriptor, number: int, field: str) -> None:
    """A field every event needs (source_sector, event_type): missing or unknown rejects."""
    if number == 0:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, f"{field} is required", event)
    if number not in descriptor.values_by_number:
        raise Rejection(R.REJECT_REASON_UNKNOWN_ENUM, f"{field}: unknown value {number}", event)


def _time(ts: object) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


class _Issues:
    """The values an event is accepted without: each is cleared and noted (never its value)."""

    def __init__(self) -> None:
        self.found: list[ing.QualityIssue] = []

    def drop(self, message: Message, attr: str, field: str, problem: ing.RejectReason.ValueType) -> None:
        message.ClearField(attr)
        self.found.append(ing.QualityIssue(field=field, problem=problem))

    def note(self, field: str, problem: ing.RejectReason.ValueType) -> None:
        self.found.append(ing.QualityIssue(field=field, problem=problem))


def validate(event: ce.CareEvent, now: datetime, limits: Limits) -> list[ing.QualityIssue]:
    """Raise Rejection if the event cannot mean anything; otherwise remove each unusable value
    from it and return what was removed and why. ``now`` is timezone-aware UTC.

    Which problems reject and which degrade, field by field, is the README's table ("What ingest
    rejects and what it degrades"); :data:`MAX_TEXT` holds the lengths.
    """
    if not event.event_id:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "event_id is required", event)
    if len(event.event_id) > MAX_ID_LEN:
        raise Rejection(R.REJECT_REASON_TOO_LONG, f"event_id longer than {MAX_ID_LEN}", event)
    if event.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        raise Rejection(
            R.REJECT_REASON_UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {event.schema_version} is not one of {sorted(SUPPORTED_SCHEMA_VERSIONS)}", event,
        )
    if not event.source_org:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "source_org is required", event)
    if not ORG_CODE.match(event.source_org):
        raise Rejection(R.REJECT_REASON_INVALID_FIELD, f"source_org {event.source_org[:40]!r} is not an org code",
                        event)
    _check_enum(event, ce.Sector.DESCRIPTOR, event.source_sector, "source_sector")
    _check_enum(event, ce.EventType.DESCRIPTOR, event.event_type, "event_type")
    issues = _Issues()
    _check_times(event, now, limits, issues)
    _check_identifiers(event)
    _check_person(event, now, issues)
    _check_texts(event, issues)
    _check_clinical(event, issues)
    _check_care_plan(event, limits, issues)
    _check_type_specific(event)
    return issues.found


def _check_times(event: ce.CareEvent, now: datetime, limits: Limits, issues: _Issues) -> None:
    if not event.HasField("event_time"):
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "event_time is required", event)
    now_s = now.timestamp()
    latest = now_s + limits.max_future_skew.total_seconds()
    earliest = datetime(limits.earliest_event_year, 1, 1, tzinfo=UTC).timestamp()
    for field in ("event_time", "recorded_time"):
        if not event.HasField(field):
            continue
        stamp = getattr(event, field)
        seconds = stamp.seconds
        real = 0 <= stamp.nanos < 1_000_000_000
        if earliest <= seconds <= latest and real:  # the common case, without building datetimes
            continue
        if not (real and TIMESTAMP_MIN_S <= seconds <= TIMESTAMP_MAX_S):
            # not a time at all (a Timestamp spans years 1 to 9999, nanos below 10^9): no datetime for it
            reason = R.REJECT_REASON_FUTURE_TIMESTAMP if seconds > latest else R.REJECT_REASON_IMPLAUSIBLE_TIMESTAMP
            if field == "recorded_time":
                issues.drop(event, field, field, reason)
                continue
            raise Rejection(reason, f"{field} is not a valid timestamp ({seconds} s, {stamp.nanos} ns)", event)
        when = _time(stamp)
        ahead = when - now
        reason = R.REJECT_REASON_FUTURE_TIMESTAMP if ahead > limits.max_future_skew else \
            R.REJECT_REASON_IMPLAUSIBLE_TIMESTAMP
        if field == "recorded_time":  # when the provider recorded it: the event still happened
            issues.drop(event, field, field, reason)
        elif reason == R.REJECT_REASON_FUTURE_TIMESTAMP:
            raise Rejection(reason, f"{field} {when.isoformat()} is {ahead.total_seconds() / 3600:.1f} h in the "
                                    f"future (allowed: {limits.max_future_skew.total_seconds() / 3600:.0f} h)", event)
        else:
            raise Rejection(reason, f"{field} {when.isoformat()} is before {limits.earliest_event_year}", event)


def _check_identifiers(event: ce.CareEvent) -> None:
    """The ids that say what an event is about: missing or too long rejects (it could not be
    joined, revised or cancelled)."""
    if not event.HasField("person") or not event.person.local_id:
        raise Rejection(R.REJECT_REASON_MISSING_FIELD, "person.local_id is required", event)
    for field, value in (("person.local_id", event.person.local_id), ("clinical.spell_id", event.clinical.spell_id),
                         ("target_event_id", event.target_event_id),
                         ("merge.prior_local_id", event.merge.prior_local_id)):
        if len(value) > MAX_ID_LEN:
            raise Rejection(R.REJECT_REASON_TOO_LONG, f"{field} longer than {MAX_ID_LEN}", event)


def _check_person(event: ce.CareEvent, now: datetime, issues: _Issues) -> None:
    person = event.person
    if person.national_id:
        digits = "".join(person.national_id.split()).replace("-", "")
        # never echo the number itself: issues are logged and counted
        if len(digits) != 10 or not digits.isdigit() or not nhs_number_is_valid(digits):
            issues.drop(person, "national_id", "person.national_id", R.REJECT_REASON_INVALID_NHS_NUMBER)
    if person.sex and person.sex not in ce.Sex.DESCRIPTOR.values_by_number:
        issues.drop(person, "sex", "person.sex", R.REJECT_REASON_UNKNOWN_ENUM)
    if person.birth_date:
        born = calendar_date(person.birth_date)
        if born is None or not (born <= now.date() and born.year >= 1880):
            issues.drop(person, "birth_date", "person.birth_date", R.REJECT_REASON_INVALID_FIELD)
    if person.postcode and not UK_POSTCODE.match(" ".join(person.postcode.split()).upper()):
        issues.drop(person, "postcode", "person.postcode", R.REJECT_REASON_INVALID_FIELD)


def _check_care_plan(event: ce.CareEvent, limits: Limits, issues: _Issues) -> None:
    """A review date that is no date, or one no plan could have, is left out: the event still says
    a plan was made or reviewed, and the case lists show its due date as unknown."""
    due_text = event.care_plan.review_due
    if not due_text:
        return
    due = calendar_date(due_text)
    made = _time(event.event_time).date()
    if due is None or due.year < limits.earliest_event_year or due.year > made.year + MAX_REVIEW_AHEAD_YEARS:
        issues.drop(event.care_plan, "review_due", "care_plan.review_due", R.REJECT_REASON_INVALID_FIELD)


def _check_texts(event: ce.CareEvent, issues: _Issues) -> None:
    """Free text and codes over their maximum length are left out (MAX_TEXT)."""
    for path, limit in MAX_TEXT.items():
        owner_name, _, attr = path.rpartition(".")
        owner: Message = getattr(event, owner_name) if owner_name else event
        if len(getattr(owner, attr)) > limit:
            issues.drop(owner, attr, path, R.REJECT_REASON_TOO_LONG)
    for path in ORG_FIELDS:
        owner_name, _, attr = path.rpartition(".")
        owner = getattr(event, owner_name) if owner_name else event
        value = getattr(owner, attr)
        if value and not ORG_CODE.match(value):
            issues.drop(owner, attr, path, R.REJECT_REASON_INVALID_FIELD)


def _check_clinical(event: ce.CareEvent, issues: _Issues) -> None:
    clinical = event.clinical
    method = clinical.admission_method
    if method and method not in ce.AdmissionMethod.DESCRIPTOR.values_by_number:
        issues.drop(clinical, "admission_method", "clinical.admission_method", R.REJECT_REASON_UNKNOWN_ENUM)
    kept = []
    for i, dx in enumerate(clinical.diagnoses):
        if i >= MAX_CODES:
            issues.note(f"clinical.diagnoses[{i}]", R.REJECT_REASON_TOO_LONG)
        elif not ICD10.match(dx.code):
            issues.note(f"clinical.diagnoses[{i}]", R.REJECT_REASON_INVALID_ICD10)
        elif dx.position < 1:
            issues.note(f"clinical.diagnoses[{i}]", R.REJECT_REASON_INVALID_FIELD)
        else:
            kept.append(dx)
    if len(kept) < len(clinical.diagnoses):
        if not kept and event.event_type == ce.EVENT_TYPE_DIAGNOSIS_CODED:
            raise Rejection(R.REJECT_REASON_INVALID_ICD10, "no usable diagnosis in a coded-diagnoses event", event)
        _keep(clinical.diagnoses, kept)
    procedures = []
    for i, proc in enumerate(clinical.procedures):
        if i < MAX_CODES and proc.position >= 1 and 0 < len(proc.code) <= MAX_CODE_LEN:
            procedures.append(proc)
        else:
            issues.note(f"clinical.procedures[{i}]", R.REJECT_REASON_INVALID_FIELD)
    if len(procedures) < len(clinical.procedures):
        _keep(clinical.procedures, procedures)


def _keep(field: Any, kept: list[Any]) -> None:
    copies = [type(item)() for item in kept]
    for copy, item in zip(copies, kept, strict=True):
        copy.CopyFrom(item)
    del field[:]
    field.extend(copies)


def _check_type_specific(event: ce.CareEvent) -> None:
    """What an event of each type cannot mean anything without: missing rejects."""
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
