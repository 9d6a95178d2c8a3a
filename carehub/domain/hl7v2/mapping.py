"""HL7 v2 ADT messages to care events, by the table in ``carehub/domain/data/hl7v2/adt.toml``.

:func:`map_message` reads one decoded message (see :mod:`carehub.domain.hl7v2.charset`) and
returns a :class:`Mapped`: the care events it stands for, what was imperfect but did not stop it
(``degraded``), or why it can never be accepted (``refusal``: the code, text and field the ACK
carries, see :mod:`carehub.domain.hl7v2.ack`). Nothing here raises for a message's content.

Event ids are deterministic (docs/hl7v2-adt.md, "Event ids"): a resent message gives the same
events, so the hub drops the repeat, and a later message can compute the id of the event it
cancels. Events that a later message may target (a visit's admission, ED attendance, discharge
and transfers) take their id from the VISIT: sending application, sending facility, PV1-19 and
the event's role (:func:`visit_event_id`). Events nothing targets (cancellations, coded
diagnoses, merges, registrations) take it from the MESSAGE: application, facility, MSH-10 and
the role (:func:`message_event_id`). Neither holds personal data: both are hashes.

The table's words (targets, converters, actions) are checked when the file is loaded, by the
domain loader (carehub/domain/loader.py), so that a misspelt row stops the server at start-up
rather than dropping a field from every message.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self, get_args
from zoneinfo import ZoneInfo

import hl7
from nhs_number.validate import is_valid as nhs_number_is_valid
from pydantic import Field, field_validator, model_validator

from carehub.domain.hl7v2.charset import BadEscape, unescape
from carehub.domain.loader import Definition, Loc, Reader, Text, Version, ZoneName, fail_on
from carehub.v1 import care_event_pb2 as ce

PACKAGED = Path(__file__).resolve().parent.parent / "data" / "hl7v2"
SCHEMA_VERSION = 1

Target = Literal[
    "message.sending_application", "message.sending_facility", "message.time", "message.type",
    "message.trigger", "message.control_id", "message.processing_id", "message.version",
    "event.recorded_time", "event.occurred_time",
    "person.local_id", "person.national_id", "person.family_name", "person.given_name", "person.birth_date",
    "person.sex", "person.address_line", "person.postcode", "person.registered_practice",
    "visit.patient_class", "visit.location", "visit.prior_location", "visit.admission_method",
    "visit.admission_source", "visit.number", "visit.discharge_destination", "visit.admit_time",
    "visit.discharge_time",
    "diagnosis.code", "diagnosis.coding_system", "diagnosis.type", "diagnosis.priority",
    "merge.prior_local_id",
]
TARGETS: tuple[str, ...] = get_args(Target)
TimeTarget = Literal["message.time", "event.recorded_time", "event.occurred_time", "visit.admit_time",
                     "visit.discharge_time"]
Convert = Literal["text", "datetime", "date", "table", "identifier", "nhs_number", "postcode", "icd10", "priority"]
Action = Literal["visit", "update", "transfer", "discharge", "reclassify", "cancel_visit", "cancel_transfer",
                 "cancel_discharge", "merge", "identifier_change", "demographics", "ignore"]
SectorName = Literal["primary_care", "acute", "emergency", "mental_health", "community", "social_care", "ambulance",
                     "pharmacy", "care_home", "other"]

# What each target may be read as; a table target names its one table.
_CONVERTS: dict[str, frozenset[str]] = {
    **{t: frozenset({"text"}) for t in TARGETS},
    **{t: frozenset({"datetime"}) for t in get_args(TimeTarget)},
    "person.local_id": frozenset({"identifier"}),
    "merge.prior_local_id": frozenset({"identifier"}),
    "person.national_id": frozenset({"nhs_number"}),
    "person.birth_date": frozenset({"date"}),
    "person.postcode": frozenset({"postcode", "text"}),
    "diagnosis.code": frozenset({"icd10"}),
    "diagnosis.priority": frozenset({"priority"}),
}
TARGET_TABLE: dict[str, str] = {
    "person.sex": "sex", "visit.patient_class": "patient_class", "visit.admission_method": "admission_type",
    "visit.admission_source": "admission_source", "visit.discharge_destination": "discharge_destination",
    "diagnosis.type": "diagnosis_type", "diagnosis.coding_system": "coding_system",
}
for _target in TARGET_TABLE:
    _CONVERTS[_target] = frozenset({"table"})
# The words a table may map codes to (None: any non-empty code, carried as written).
TABLE_WORDS: dict[str, frozenset[str] | None] = {
    "sex": frozenset({"male", "female", "other", "unknown"}),
    "patient_class": frozenset({"admission", "ed_attendance", "none"}),
    "admission_type": frozenset({"emergency", "elective", "maternity", "transfer"}),
    "admission_source": None,
    "discharge_destination": None,
    "diagnosis_type": frozenset({"provisional", "final"}),
    "coding_system": frozenset({"icd10"}),
}
# Where a target's segment must be: diagnoses are read per DG1, merges per MRG.
_SEGMENT_OF = {"diagnosis.": "DG1", "merge.": "MRG"}

FIELD = re.compile(r"^([A-Z][A-Z0-9]{2})-([1-9][0-9]*)(?:\.([1-9][0-9]*)(?:\.([1-9][0-9]*))?)?$")
TRIGGER = re.compile(r"^[A-Z][0-9A-Z]{2}$")
ORG_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,31}$")
# Same shapes as the hub's validation (services/ingest/validation.py), which the core may not import.
ICD10 = re.compile(r"^[A-Z][0-9]{2}(\.?[0-9A-Z]{1,4})?$")
UK_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$")
DTM = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,4}))?)?([+-]\d{4})?$")
MAX_ADDRESS_LINE = 200

SEXES = {"male": ce.SEX_MALE, "female": ce.SEX_FEMALE, "other": ce.SEX_OTHER, "unknown": ce.SEX_UNKNOWN}
METHODS = {"emergency": ce.ADMISSION_METHOD_EMERGENCY, "elective": ce.ADMISSION_METHOD_ELECTIVE,
           "maternity": ce.ADMISSION_METHOD_MATERNITY, "transfer": ce.ADMISSION_METHOD_TRANSFER}


# -- the file shapes -------------------------------------------------------------------------------

class FieldRow(Definition):
    """One ``[[fields]]`` row: where a value is, what it becomes, how it is read (header of adt.toml)."""

    field: Text
    target: Target
    convert: Convert
    table: Text | None = None
    match: list[Text] = Field(default_factory=list)
    otherwise: list[Text] = Field(default_factory=list)
    required: bool = False
    note: Text

    @field_validator("field")
    @classmethod
    def _location(cls, value: str) -> str:
        if not FIELD.match(value):
            raise ValueError(f"must be SEG-n, SEG-n.c or SEG-n.c.s, e.g. \"PID-5.1\" (got {value!r})")
        return value

    @model_validator(mode="after")
    def _fits(self) -> Self:
        problems: list[tuple[Loc, str]] = []
        allowed = _CONVERTS[self.target]
        if self.convert not in allowed:
            problems.append((("convert",), f"must be {' or '.join(sorted(allowed))} for target {self.target} "
                                           f"(got {self.convert!r})"))
        wanted = TARGET_TABLE.get(self.target)
        if self.convert == "table" and wanted is not None and self.table != wanted:
            problems.append((("table",), f"must be {wanted!r} for target {self.target} (got {self.table!r})"))
        if self.convert != "table" and self.table is not None:
            problems.append((("table",), "is only for convert = \"table\""))
        if self.convert in ("identifier", "nhs_number") and not self.match:
            problems.append((("match",), f"is required for convert = {self.convert!r}: the CX-4/CX-5 values "
                                         "that pick the repetition"))
        if self.convert not in ("identifier", "nhs_number") and self.match:
            problems.append((("match",), "is only for convert = \"identifier\" or \"nhs_number\""))
        if self.convert != "identifier" and self.otherwise:
            problems.append((("otherwise",), "is only for convert = \"identifier\""))
        segment = self.field.split("-")[0]
        for prefix, needed in _SEGMENT_OF.items():
            if self.target.startswith(prefix) and segment != needed:
                problems.append((("field",), f"must be in {needed} for target {self.target} (got {self.field!r})"))
        if self.target.split(".")[0] == "message" and segment != "MSH":
            problems.append((("field",), f"must be in MSH for target {self.target} (got {self.field!r})"))
        fail_on(problems)
        return self

    @cached_property  # read for every row of every message: parsed once
    def location(self) -> tuple[str, int, int | None, int | None]:
        found = FIELD.match(self.field)
        assert found is not None  # checked at load
        seg, f, c, s = found.groups()
        return seg, int(f), int(c) if c else None, int(s) if s else None


class TriggerRow(Definition):
    """One ``[triggers.<event>]`` table: what the trigger does and where its event time comes from."""

    action: Action
    time: list[TimeTarget]
    note: Text

    @model_validator(mode="after")
    def _timed(self) -> Self:
        if self.action != "ignore" and not self.time:
            fail_on([(("time",), f"must name at least one time for action {self.action!r}")])
        return self


class AdtFile(Definition):
    """The whole adt.toml."""

    version: Version
    unknown_triggers: Literal["accept", "refuse"]
    versions: list[Text] = Field(min_length=1)
    processing_ids: list[Text] = Field(default_factory=lambda: ["P"])
    timezone: ZoneName
    fields: list[FieldRow] = Field(min_length=1)
    triggers: dict[str, TriggerRow] = Field(min_length=1)
    tables: dict[str, dict[str, Text]]


    @model_validator(mode="after")
    def _complete(self) -> Self:
        problems: list[tuple[Loc, str]] = []
        seen: dict[str, int] = {}
        for i, row in enumerate(self.fields):
            if row.target in seen:
                problems.append((("fields", i, "target"),
                                 f"{row.target} is already mapped by fields[{seen[row.target]}]"))
            seen.setdefault(row.target, i)
        missing = [t for t in TARGETS if t not in seen]
        if missing:
            problems.append((("fields",), f"must map every target; not mapped: {', '.join(missing)}"))
        for name in self.triggers:
            if not TRIGGER.match(name):
                problems.append((("triggers", name), "is not an HL7 trigger event code such as A01"))
        for name, words in TABLE_WORDS.items():
            if name not in self.tables:
                problems.append((("tables",), f"must have [tables.{name}]"))
                continue
            for code, word in self.tables[name].items():
                if words is not None and word not in words:
                    problems.append((("tables", name, code), f"must be one of {', '.join(sorted(words))} "
                                                              f"(got {word!r})"))
        for name in self.tables:
            if name not in TABLE_WORDS:
                problems.append((("tables", name), f"is not a table the mapping uses "
                                                   f"(known: {', '.join(TABLE_WORDS)})"))
        fail_on(problems)
        return self


class FacilityRow(Definition):
    """One ``[[facilities]]`` row of facilities.toml."""

    facility: Text
    org: Text
    sector: SectorName
    note: str = ""

    @field_validator("org")
    @classmethod
    def _org(cls, value: str) -> str:
        if not ORG_CODE.match(value):
            raise ValueError(f"must be an organisation code such as \"RR8\" (got {value!r})")
        return value


class FacilitiesFile(Definition):
    version: Version
    facilities: list[FacilityRow]

    @model_validator(mode="after")
    def _unique(self) -> Self:
        first: dict[str, int] = {}
        problems: list[tuple[Loc, str]] = []
        for i, row in enumerate(self.facilities):
            if row.facility in first:
                problems.append((("facilities", i, "facility"),
                                 f"{row.facility!r} is already listed by facilities[{first[row.facility]}]"))
            first.setdefault(row.facility, i)
        fail_on(problems)
        return self


@dataclass(frozen=True)
class Facility:
    org: str
    sector: ce.Sector.ValueType


@dataclass(frozen=True)
class AdtMapping:
    """A loaded, checked mapping: the rows, the triggers, the tables and the facilities."""

    path: Path
    facilities_path: Path
    file: AdtFile
    facilities: Mapping[str, Facility]
    zone: ZoneInfo
    digest: str

    def row(self, target: str) -> FieldRow:
        return next(r for r in self.file.fields if r.target == target)


def load_adt_mapping(path: Path | str | None = None, facilities: Path | str | None = None) -> AdtMapping:
    """The mapping in ``path`` (default: the packaged adt.toml) with the facilities in ``facilities``
    (default: facilities.toml beside it). A bad file raises DefinitionError naming it and the row."""
    adt_path = Path(path) if path is not None else PACKAGED / "adt.toml"
    facilities_path = Path(facilities) if facilities is not None else adt_path.parent / "facilities.toml"
    reader = Reader()
    adt = reader.load(adt_path, AdtFile)
    listed = reader.load(facilities_path, FacilitiesFile)
    sectors = {row.facility: Facility(row.org, ce.Sector.Value(f"SECTOR_{row.sector.upper()}"))
               for row in listed.facilities}
    return AdtMapping(adt_path, facilities_path, adt, sectors, ZoneInfo(adt.timezone), reader.digest)


# -- results ---------------------------------------------------------------------------------------

class Problem(NamedTuple):
    """Imperfect data that did not stop the message: the HL7 field, and what was wrong (no personal data)."""

    field: str
    problem: str


class Refusal(NamedTuple):
    """Why a message can never be accepted: the ACK code (AE/AR), text, field, and HL7 error (table 0357)."""

    code: Literal["AE", "AR"]
    text: str
    field: str | None
    condition: str = "207"


@dataclass
class Mapped:
    trigger: str = ""
    control_id: str = ""
    sending_application: str = ""
    sending_facility: str = ""
    events: list[ce.CareEvent] = field(default_factory=list)
    degraded: list[Problem] = field(default_factory=list)
    refusal: Refusal | None = None

    @property
    def accepted(self) -> bool:
        return self.refusal is None


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.text)
        self.refusal = refusal


# -- ids -------------------------------------------------------------------------------------------

def _hash_id(*parts: str) -> str:
    return "hl7v2-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def message_event_id(application: str, facility: str, control_id: str, role: str) -> str:
    """The id of an event no later message targets: one per (sender, MSH-10, role)."""
    return _hash_id("message", application, facility, control_id, role)


def visit_event_id(application: str, facility: str, visit: str, role: str, *detail: str) -> str:
    """The id of a visit's event that a later message may target (admission, ED attendance,
    discharge; a transfer with its detail): the same whichever message carries it."""
    return _hash_id("visit", application, facility, visit, role, *detail)


# -- reading fields --------------------------------------------------------------------------------

class _Segments:
    """The parsed message, with raw field access: components are split here and unescaped strictly."""

    def __init__(self, text: str) -> None:
        lines = [line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line.strip()]
        if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
            raise _Refused(Refusal("AR", "not an HL7 v2 message: no MSH segment first", "MSH", "100"))
        try:
            self.message: Any = hl7.parse("\r".join(lines))
        except Exception as exc:  # python-hl7 raises several kinds on malformed text
            raise _Refused(Refusal("AE", f"message cannot be parsed: {type(exc).__name__}", None, "102")) from None
        msh = self.message.segment("MSH")
        self.field_separator = str(msh(1))
        self.encoding = str(msh(2))
        pad = self.encoding + "^~\\&"[len(self.encoding):]
        self.component, self.repetition, self.escape, self.subcomponent = pad[0], pad[1], pad[2], pad[3]
        self.charset = self.raw(msh, 18).split(self.repetition)[0].strip()

    def all(self, name: str) -> list[Any]:
        return [s for s in self.message if str(s(0)) == name]

    def first(self, name: str) -> Any | None:
        found = self.all(name)
        return found[0] if found else None

    @staticmethod
    def raw(segment: Any, number: int) -> str:
        if segment is None or number >= len(segment):
            return ""
        return str(segment(number))

    def unescape(self, value: str) -> str:
        return unescape(value, self.encoding, self.field_separator, self.charset).strip()

    def pick(self, raw: str, component: int | None, subcomponent: int | None) -> str:
        """Component/subcomponent of the first repetition of a raw field, still escaped."""
        value = raw.split(self.repetition)[0]
        parts = value.split(self.component)
        value = parts[(component or 1) - 1] if len(parts) >= (component or 1) else ""
        subs = value.split(self.subcomponent)
        return subs[(subcomponent or 1) - 1] if len(subs) >= (subcomponent or 1) else ""

    def identifiers(self, raw: str) -> list[tuple[str, str, str]]:
        """(CX-1 escaped, CX-4.1, CX-5) of each repetition."""
        out = []
        for rep in raw.split(self.repetition):
            parts = [*rep.split(self.component), "", "", "", "", ""]
            out.append((parts[0].split(self.subcomponent)[0], parts[3].split(self.subcomponent)[0].strip(),
                        parts[4].split(self.subcomponent)[0].strip()))
        return out


def parse_dtm(value: str, zone: ZoneInfo) -> tuple[datetime | None, str | None]:
    """An HL7 DTM as an aware datetime, and a problem: date only (midnight), or not a time at all."""
    found = DTM.match(value)
    if not found:
        return None, "is not an HL7 date/time (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ])"
    year, month, day, hour, minute, second, fraction, offset = found.groups()
    try:
        tz: timezone | ZoneInfo = zone
        if offset:
            sign = -1 if offset[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
        micro = int((fraction or "0").ljust(6, "0")[:6])
        when = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                        micro, tzinfo=tz)
    except ValueError as exc:
        return None, f"is not a valid date/time ({exc})"
    return when, None if hour else "has a date but no time: midnight taken"


class _Reading:
    """Converts rows' raw values, collecting problems."""

    def __init__(self, segs: _Segments, mapping: AdtMapping, degraded: list[Problem]) -> None:
        self.segs, self.mapping, self.degraded = segs, mapping, degraded

    def values(self, rows: Iterable[FieldRow], segments: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for row in rows:
            seg_name, number, component, subcomponent = row.location
            raw = self.segs.raw(segments.get(seg_name), number)
            if not raw:
                continue
            try:
                value = self.convert(row, raw, component, subcomponent)
            except BadEscape as exc:
                self.degraded.append(Problem(row.field, f"left out: {exc}"))
                continue
            if value is not None:
                out[row.target] = value
        return out

    def convert(self, row: FieldRow, raw: str, component: int | None, subcomponent: int | None) -> Any:
        segs = self.segs
        if row.convert in ("identifier", "nhs_number"):
            return self.identifier(row, raw)
        text = segs.unescape(segs.pick(raw, component, subcomponent))
        if not text or text == '""':  # "" is HL7's explicit null: nothing to carry
            return None
        if row.convert == "text":
            if row.target == "person.address_line" and len(text) > MAX_ADDRESS_LINE:
                return self.bad(row, f"longer than {MAX_ADDRESS_LINE} characters")
            return text
        if row.convert in ("datetime", "date"):
            when, problem = parse_dtm(text, self.mapping.zone)
            if when is None:
                return self.bad(row, problem or "is not a date")
            if row.convert == "date":
                return when.date().isoformat()
            if problem:
                self.degraded.append(Problem(row.field, problem))
            return when
        if row.convert == "table":
            table = row.table or ""
            word = self.mapping.file.tables[table].get(text)
            if word is None:
                return self.bad(row, f"code {text!r} is not in [tables.{table}]")
            return word
        if row.convert == "postcode":
            code = " ".join(text.split()).upper()
            return code if UK_POSTCODE.match(code) else self.bad(row, "is not a UK postcode")
        if row.convert == "icd10":
            code = text.upper()
            return code if ICD10.match(code) else self.bad(row, f"{text!r} is not an ICD-10 code")
        if row.convert == "priority":
            return int(text) if text.isdigit() else self.bad(row, f"{text!r} is not a whole number")
        raise AssertionError(row.convert)  # the loader admits no other converter

    def identifier(self, row: FieldRow, raw: str) -> str | None:
        reps = self.segs.identifiers(raw)
        chosen = next((r for r in reps if r[0] and (r[1] in row.match or r[2] in row.match)), None)
        if chosen is None and row.otherwise:
            chosen = next((r for r in reps if r[0] and r[1] not in row.otherwise and r[2] not in row.otherwise), None)
        if chosen is None:
            return None
        value = self.segs.unescape(chosen[0])
        if row.convert == "nhs_number":
            digits = "".join(value.split()).replace("-", "")
            if len(digits) != 10 or not digits.isdigit() or not nhs_number_is_valid(digits):
                return self.bad(row, "NHS number is not 10 digits with a valid check digit: left out")
            return digits
        return value or None

    def bad(self, row: FieldRow, problem: str) -> str | None:
        """Note a value that cannot be used. Values of person fields are never echoed (the notes
        are logged); codes are."""
        self.degraded.append(Problem(row.field, problem if problem.startswith("left out") else f"{problem}: left out"))
        return None  # typed as a value so that converters can `return self.bad(...)`


# -- mapping ---------------------------------------------------------------------------------------

@dataclass
class _Context:
    mapping: AdtMapping
    segs: _Segments
    values: dict[str, Any]
    diagnoses: list[dict[str, Any]]
    trigger: TriggerRow
    trigger_code: str
    application: str
    facility: str
    control_id: str
    source: Facility
    degraded: list[Problem]

    def field_of(self, target: str) -> str:
        return self.mapping.row(target).field

    def note(self, target: str, problem: str) -> None:
        self.degraded.append(Problem(self.field_of(target), problem))

    def refuse(self, target: str, text: str, condition: str = "101") -> _Refused:
        return _Refused(Refusal("AE", text, self.field_of(target), condition))

    def time(self, order: Iterable[str], values: Mapping[str, Any] | None = None) -> datetime:
        values = self.values if values is None else values
        order = list(order)
        for i, target in enumerate(order):
            when = values.get(target)
            if isinstance(when, datetime):
                if i and order[0].startswith("visit."):
                    self.note(order[0], f"empty: event time taken from {self.field_of(target)}")
                return when
        raise self.refuse(order[0] if order else "message.time", "no event time: " + ", ".join(
            self.field_of(t) for t in order) + " all empty")

    def base(self, kind: ce.EventType.ValueType, event_id: str, when: datetime,
             values: Mapping[str, Any] | None = None) -> ce.CareEvent:
        v = self.values if values is None else values
        event = ce.CareEvent(event_id=event_id, schema_version=SCHEMA_VERSION, source_org=self.source.org,
                             source_sector=self.source.sector, event_type=kind)
        event.event_time.FromDatetime(when.astimezone(UTC).replace(tzinfo=None))
        recorded = self.values.get("event.recorded_time") or self.values.get("message.time")
        if isinstance(recorded, datetime):
            event.recorded_time.FromDatetime(recorded.astimezone(UTC).replace(tzinfo=None))
        person = event.person
        if not v.get("person.local_id"):
            raise self.refuse("person.local_id", f"{self.field_of('person.local_id')} has no local identifier")
        person.local_id = v["person.local_id"]
        for target, attr in (("person.national_id", "national_id"), ("person.given_name", "given_name"),
                             ("person.family_name", "family_name"), ("person.birth_date", "birth_date"),
                             ("person.postcode", "postcode"), ("person.address_line", "address_line")):
            if v.get(target):
                setattr(person, attr, v[target])
        if v.get("person.sex"):
            person.sex = SEXES[v["person.sex"]]
        if self.values.get("person.registered_practice"):
            event.registered_practice = self.values["person.registered_practice"]
        return event

    def visit(self) -> str | None:
        number = self.values.get("visit.number")
        return number if isinstance(number, str) and number else None

    def visit_id(self, role: str, *detail: str) -> str:
        visit = self.visit()
        assert visit is not None
        return visit_event_id(self.application, self.facility, visit, role, *detail)

    def message_id(self, role: str) -> str:
        return message_event_id(self.application, self.facility, self.control_id, role)

    def need_visit(self, what: str) -> str:
        visit = self.visit()
        if visit is None:
            raise self.refuse("visit.number", f"{self.field_of('visit.number')} (visit number) is required for {what}")
        return visit


def _diagnoses(ctx: _Context, final: bool) -> list[ce.Diagnosis]:
    """The DG1s of one kind (final coded, or provisional) with positions from DG1-15."""
    chosen = [d for d in ctx.diagnoses if (d.get("diagnosis.type") == "final") == final]
    ranked = [d for d in chosen if d.get("diagnosis.priority")]
    top = max((d["diagnosis.priority"] for d in ranked), default=0)
    out = []
    for d in chosen:
        position = d.get("diagnosis.priority")
        if not position:
            top += 1
            position = top
            ctx.note("diagnosis.priority", f"empty or 0 for {d['diagnosis.code']}: position {position} "
                                           "(after the ranked diagnoses)")
        out.append(ce.Diagnosis(code=d["diagnosis.code"], position=position, provisional=not final))
    return out


def _clinical(ctx: _Context, event: ce.CareEvent, admission: bool = False) -> None:
    v = ctx.values
    clinical = event.clinical
    if ctx.visit():
        clinical.spell_id = ctx.visit() or ""
    if v.get("visit.location"):
        clinical.location = v["visit.location"]
    if admission:
        if v.get("visit.admission_method"):
            clinical.admission_method = METHODS[v["visit.admission_method"]]
        if v.get("visit.admission_source"):
            clinical.admission_source = v["visit.admission_source"]


def _start(ctx: _Context, kind: str | None, restating: bool = False) -> list[ce.CareEvent]:
    """The event a visit start is (A01, A04, A06; A08 re-stating it): admission or ED attendance."""
    times = ["visit.admit_time", *ctx.trigger.time] if not restating else ["visit.admit_time"]
    if restating and not ctx.values.get("visit.admit_time"):
        return []  # an update re-states a visit start only when PV1-44 says it has happened
    if kind is None:
        ctx.note("visit.patient_class", "empty or unknown: no admission or attendance event")
        return []
    if kind == "admission":
        if restating and (ctx.visit() is None or not ctx.values.get("visit.admission_method")):
            ctx.note("visit.number", "the update cannot re-state the admission (no visit number or admission type)")
            return []
        ctx.need_visit("an admission")
        if not ctx.values.get("visit.admission_method"):
            raise ctx.refuse("visit.admission_method", f"{ctx.field_of('visit.admission_method')} (admission type) "
                             "is required for an admission and must be in [tables.admission_type]", "103")
        event = ctx.base(ce.EVENT_TYPE_ADMISSION, ctx.visit_id("admission"), ctx.time(times))
        _clinical(ctx, event, admission=True)
        event.clinical.diagnoses.extend(_diagnoses(ctx, final=False))
        return [event]
    if kind == "ed_attendance":
        if ctx.visit():
            event_id = ctx.visit_id("ed_attendance")
        else:
            if restating:
                return []
            event_id = ctx.message_id("ed_attendance")
            ctx.note("visit.number", "empty: the attendance's id comes from MSH-10, so an A11 cannot cancel it")
        event = ctx.base(ce.EVENT_TYPE_ED_ATTENDANCE, event_id, ctx.time(times))
        _clinical(ctx, event)
        event.clinical.diagnoses.extend(_diagnoses(ctx, final=False))
        return [event]
    return []  # outpatients, pre-admits and the like: no care event in the contract


def _discharge(ctx: _Context, kind: str | None, restating: bool = False) -> list[ce.CareEvent]:
    if kind not in ("admission", None):
        return []  # the end of an ED or outpatient visit: the contract has no event for it
    if restating:
        if not ctx.values.get("visit.discharge_time") or kind is None or ctx.visit() is None:
            return []
        times = ["visit.discharge_time"]
    else:
        ctx.need_visit("a discharge")
        times = ["visit.discharge_time", *ctx.trigger.time]
        if kind is None:
            ctx.note("visit.patient_class", "empty or unknown: taken as an admitted visit's discharge")
    event = ctx.base(ce.EVENT_TYPE_DISCHARGE, ctx.visit_id("discharge"), ctx.time(times))
    _clinical(ctx, event)
    if ctx.values.get("visit.discharge_destination"):
        event.clinical.discharge_destination = ctx.values["visit.discharge_destination"]
    return [event]


def _coded(ctx: _Context) -> list[ce.CareEvent]:
    """Final DG1s as a coded-diagnosis revision of the spell (replaces earlier codings by time)."""
    diagnoses = _diagnoses(ctx, final=True)
    if not diagnoses:
        return []
    if ctx.visit() is None:
        ctx.note("visit.number", "empty: final diagnoses cannot be attached to a spell: left out")
        return []
    event = ctx.base(ce.EVENT_TYPE_DIAGNOSIS_CODED, ctx.message_id("diagnoses"), ctx.time(ctx.trigger.time))
    event.clinical.spell_id = ctx.visit() or ""
    event.clinical.diagnoses.extend(diagnoses)
    return [event]


def _cancel(ctx: _Context, target_id: str, role: str) -> ce.CareEvent:
    event = ctx.base(ce.EVENT_TYPE_CANCELLATION, ctx.message_id(f"cancel:{role}"), ctx.time(ctx.trigger.time))
    event.target_event_id = target_id
    if ctx.visit():
        event.clinical.spell_id = ctx.visit() or ""
    return event


def _transfer_detail(origin: str, destination: str, when: datetime) -> tuple[str, str, str]:
    return origin, destination, when.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def _act(ctx: _Context, action: str) -> list[ce.CareEvent]:
    kind = ctx.values.get("visit.patient_class")
    v = ctx.values
    if action == "visit":
        return _start(ctx, kind)
    if action == "update":
        provisional = [d for d in ctx.diagnoses if d.get("diagnosis.type") != "final"]
        if provisional:
            ctx.note("diagnosis.type", "working (not final) diagnoses in an update are not carried: the contract "
                                       "revises only coded diagnoses")
        return [*_start(ctx, kind, restating=True), *_discharge(ctx, kind, restating=True), *_coded(ctx)]
    if action == "transfer":
        if kind not in ("admission", None):
            return []  # a move within ED or an outpatient clinic: not a spell transfer
        ctx.need_visit("a transfer")
        when = ctx.time(ctx.trigger.time)
        if not v.get("visit.prior_location"):
            ctx.note("visit.prior_location", "empty: an A12 cannot name this transfer")
        event = ctx.base(ce.EVENT_TYPE_TRANSFER, ctx.visit_id(
            "transfer", *_transfer_detail(v.get("visit.prior_location", ""), v.get("visit.location", ""), when)), when)
        _clinical(ctx, event)
        return [event]
    if action == "discharge":
        return [*_discharge(ctx, kind), *_coded(ctx)]
    if action == "reclassify":
        ctx.need_visit("a change of patient class")
        events = [_cancel(ctx, ctx.visit_id("admission"), "admission")]
        if kind == "ed_attendance":
            events += _start(ctx, kind)
        return events
    if action == "cancel_visit":
        ctx.need_visit("a cancelled admission or visit")
        roles = {"admission": ["admission"], "ed_attendance": ["ed_attendance"], "none": []}.get(
            kind or "", ["admission", "ed_attendance"])
        if kind is None:
            ctx.note("visit.patient_class", "empty or unknown: both the admission and the attendance are cancelled")
        return [_cancel(ctx, ctx.visit_id(role), role) for role in roles]
    if action == "cancel_transfer":
        if kind not in ("admission", None):
            return []
        ctx.need_visit("a cancelled transfer")
        moved = v.get("event.occurred_time")
        if not isinstance(moved, datetime):
            ctx.note("event.occurred_time", "empty: the time of the cancelled transfer is needed to name it: no event")
            return []
        # A12: PV1-3 is where the person was before the cancelled transfer, PV1-6 where it took them
        target = ctx.visit_id("transfer", *_transfer_detail(v.get("visit.location", ""),
                                                            v.get("visit.prior_location", ""), moved))
        return [_cancel(ctx, target, "transfer")]
    if action == "cancel_discharge":
        if kind not in ("admission", None):
            return []
        ctx.need_visit("a cancelled discharge")
        return [_cancel(ctx, ctx.visit_id("discharge"), "discharge")]
    if action == "demographics":
        if not v.get("person.registered_practice"):
            return []
        return [ctx.base(ce.EVENT_TYPE_REGISTRATION, ctx.message_id("registration"), ctx.time(ctx.trigger.time))]
    if action in ("merge", "identifier_change"):
        return _merges(ctx, action)
    raise AssertionError(action)


def _merges(ctx: _Context, action: str) -> list[ce.CareEvent]:
    """A40: one IDENTITY_MERGE per PID/MRG pair. A47: one, when the local number changed."""
    reading = _Reading(ctx.segs, ctx.mapping, ctx.degraded)
    person_rows = [r for r in ctx.mapping.file.fields if r.location[0] in ("PID", "MRG")]
    groups: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for segment in ctx.segs.message:
        name = str(segment(0))
        if name == "PID":
            current = {"PID": segment}
            groups.append(current)
        elif name == "MRG" and current and "MRG" not in current:
            current["MRG"] = segment
    events = []
    when = ctx.time(ctx.trigger.time)
    for i, group in enumerate(groups, start=1):
        values = reading.values(person_rows, group)
        if not values.get("person.local_id"):
            raise ctx.refuse("person.local_id", f"{ctx.field_of('person.local_id')} has no local identifier "
                                                f"(patient group {i})")
        prior = values.get("merge.prior_local_id")
        if not prior:
            raise ctx.refuse("merge.prior_local_id", f"{ctx.field_of('merge.prior_local_id')} has no prior local "
                                                     f"identifier (patient group {i})")
        if prior == values["person.local_id"]:
            if action == "merge":
                ctx.note("merge.prior_local_id", f"the same as the surviving local identifier (patient group {i}): "
                                                 "no merge")
            continue  # A47 that changed another identifier (the NHS number, say): later events carry it
        role = f"merge:{i}" if action == "merge" else "identifier_change"
        event = ctx.base(ce.EVENT_TYPE_IDENTITY_MERGE, ctx.message_id(role), when, values)
        event.merge.prior_local_id = prior
        events.append(event)
    return events


def map_message(message_text: str, mapping: AdtMapping) -> Mapped:
    """The care events one HL7 v2 ADT message stands for, or why it is refused (see the module doc)."""
    out = Mapped()
    try:
        _map(message_text, mapping, out)
    except _Refused as refused:
        out.refusal = refused.refusal
        out.events = []
    return out


def _map(text: str, mapping: AdtMapping, out: Mapped) -> None:
    segs = _Segments(text)
    degraded = out.degraded
    reading = _Reading(segs, mapping, degraded)
    single = {name: segs.first(name) for name in ("MSH", "EVN", "PID", "PD1", "PV1", "MRG")}
    rows = [r for r in mapping.file.fields if r.location[0] not in ("DG1",)]
    values = reading.values(rows, single)
    out.trigger = values.get("message.trigger", "")
    out.control_id = values.get("message.control_id", "")
    out.sending_application = values.get("message.sending_application", "")
    out.sending_facility = values.get("message.sending_facility", "")

    def field_of(target: str) -> str:
        return mapping.row(target).field

    if values.get("message.type") != "ADT":
        raise _Refused(Refusal("AR", f"message type {values.get('message.type', '')!r} is not supported: only ADT",
                               field_of("message.type"), "200"))
    if not out.control_id:
        raise _Refused(Refusal("AE", f"{field_of('message.control_id')} (message control id) is required",
                               field_of("message.control_id"), "101"))
    processing = values.get("message.processing_id", "")
    if processing not in mapping.file.processing_ids:
        raise _Refused(Refusal("AR", f"processing id {processing!r} is not accepted "
                                     f"(accepted: {', '.join(mapping.file.processing_ids)})",
                               field_of("message.processing_id"), "202"))
    version = values.get("message.version", "")
    if version not in mapping.file.versions:
        raise _Refused(Refusal("AR", f"HL7 version {version!r} is not supported", field_of("message.version"), "203"))
    source = mapping.facilities.get(out.sending_facility)
    if source is None:
        raise _Refused(Refusal("AR", f"sending facility {out.sending_facility!r} is not known to the hub",
                               field_of("message.sending_facility"), "204"))
    trigger = mapping.file.triggers.get(out.trigger)
    if trigger is None:
        if mapping.file.unknown_triggers == "refuse" or not out.trigger:
            raise _Refused(Refusal("AR", f"trigger event {out.trigger!r} is not supported",
                                   field_of("message.trigger"), "201"))
        degraded.append(Problem(field_of("message.trigger"), f"trigger event {out.trigger!r} is not mapped: no event"))
        return
    if trigger.action == "ignore":
        return
    for row in mapping.file.fields:
        if row.required and row.location[0] in ("MSH", "EVN", "PID", "PV1") and not values.get(row.target):
            raise _Refused(Refusal("AE", f"{row.field} is required ({row.note.split(';')[0]})", row.field, "101"))
    dg1_rows = [r for r in mapping.file.fields if r.location[0] == "DG1"]
    diagnoses = []
    for segment in segs.all("DG1"):
        found = reading.values(dg1_rows, {"DG1": segment})
        if not found.get("diagnosis.code"):
            continue
        system_row = mapping.row("diagnosis.coding_system")
        if segs.pick(segs.raw(segment, system_row.location[1]), *system_row.location[2:]).strip() and \
                found.get("diagnosis.coding_system") != "icd10":
            degraded.append(Problem(system_row.field, f"diagnosis {found['diagnosis.code']} is not coded in "
                                                      "ICD-10: left out"))
            continue
        diagnoses.append(found)
    ctx = _Context(mapping, segs, values, diagnoses, trigger, out.trigger, out.sending_application,
                   out.sending_facility, out.control_id, source, degraded)
    out.events = _act(ctx, trigger.action)


__all__ = ["AdtMapping", "Mapped", "Problem", "Refusal", "load_adt_mapping", "map_message", "message_event_id",
           "visit_event_id"]
