"""FHIR Bundles to care events, by the codes in ``carehub/domain/data/fhir/mapping.toml``.

Two shapes come in (docs/fhir.md):

* a **message** Bundle (``$process-message``): its first entry a MessageHeader whose
  eventCoding says admit, discharge or transfer (Da Vinci Unsolicited Notifications, which NHS
  England's notification services follow), its focus the Encounter, with the Patient, Conditions,
  Organizations and Locations it refers to;
* a **transaction** Bundle (``POST [base]``) of Patient, Encounter and Condition resources, the
  shape Synthea and many EHR exports produce: each Encounter states its visit as it stands.

:func:`map_bundle` returns a :class:`MappedBundle`: the events, what was imperfect but did not
stop it (``warnings``, returned to the sender in the OperationOutcome), or why it cannot be
accepted (``refusal``). The sender's organisation comes from how it authenticated, never from the
Bundle. Nothing here raises for a Bundle's content.

Event ids are deterministic, as for HL7 v2 (docs/hl7v2-adt.md, "Event ids"): a visit's events
take theirs from the sender, the Encounter (its first identifier, else its id) and the event's
role, so the same notification sent twice, or an admission re-stated by a later transaction,
gives the same events and ingest keeps one; an Encounter whose status becomes
``entered-in-error`` cancels the events that its visit had. Coded diagnoses take theirs from the
Bundle (its id, else its identifier, else the digest of its bytes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo

from nhs_number.validate import is_valid as nhs_number_is_valid
from pydantic import Field, model_validator

from carehub.domain.fhir.outcome import Issue, error, warning
from carehub.domain.fhir.senders import Sender
from carehub.domain.hl7v2.mapping import ICD10, MAX_ADDRESS_LINE, METHODS, SCHEMA_VERSION, SEXES, UK_POSTCODE
from carehub.domain.loader import Definition, Reader, Text, Version, ZoneName, fail_on
from carehub.v1 import care_event_pb2 as ce

PACKAGED = Path(__file__).resolve().parent.parent / "data" / "fhir" / "mapping.toml"

EventAction = Literal["start", "discharge", "transfer"]
VisitKind = Literal["admission", "ed_attendance", "none"]
Method = Literal["emergency", "elective", "maternity", "transfer"]
CANCELLED = ("entered-in-error", "cancelled")
PROVISIONAL = ("provisional", "differential", "unconfirmed")
MAX_TEXT = 200


class CarriedSystems(Definition):
    admission_source: list[Text] = Field(default_factory=list)
    discharge_destination: list[Text] = Field(default_factory=list)


class FhirMappingFile(Definition):
    """The whole mapping.toml (its header explains each key)."""

    version: Version
    timezone: ZoneName
    national_id_systems: list[Text] = Field(min_length=1)
    organisation_systems: list[Text] = Field(default_factory=list)
    icd10_systems: list[Text] = Field(min_length=1)
    admission_method_extensions: list[Text] = Field(default_factory=list)
    events: dict[str, EventAction] = Field(min_length=1)
    encounter_class: dict[str, VisitKind] = Field(min_length=1)
    admission_method: dict[str, Method] = Field(default_factory=dict)
    carried_systems: CarriedSystems = Field(default_factory=CarriedSystems)


    @model_validator(mode="after")
    def _codings(self) -> Self:
        fail_on([((table, key), "must be written \"system|code\"")
                 for table in ("events", "encounter_class", "admission_method")
                 for key in getattr(self, table) if not _is_coding_key(key)])
        return self


def _is_coding_key(key: str) -> bool:
    system, bar, code = key.rpartition("|")
    return bool(bar and system and code)


@dataclass(frozen=True)
class FhirMapping:
    path: Path
    file: FhirMappingFile
    zone: ZoneInfo
    digest: str


def load_fhir_mapping(path: Path | str | None = None) -> FhirMapping:
    """The mapping in ``path`` (default: the packaged one); a bad file raises DefinitionError
    naming it and the entry."""
    where = Path(path) if path is not None else PACKAGED
    reader = Reader()
    loaded = reader.load(where, FhirMappingFile)
    return FhirMapping(where, loaded, ZoneInfo(loaded.timezone), reader.digest)


@dataclass
class MappedBundle:
    kind: str = ""
    bundle_key: str = ""
    events: list[ce.CareEvent] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    refusal: list[Issue] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.refusal


class _Refused(Exception):
    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.diagnostics)
        self.issue = issue


def _whole(value: object) -> int | None:
    """A validated positiveInt as written: the validator takes 2, 2.0, "2" and true alike."""
    try:
        return int(value) if value is not None else None  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def fhir_event_id(*parts: str) -> str:
    return "fhir-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def bundle_key(bundle: Mapping[str, Any], body: bytes) -> str:
    """What makes a Bundle the same Bundle: Bundle.id, else Bundle.identifier, else its bytes."""
    if bundle.get("id"):
        return f"id:{bundle['id']}"
    ident = bundle.get("identifier") or {}
    if ident.get("value"):
        return f"identifier:{ident.get('system', '')}|{ident['value']}"
    return "sha256:" + hashlib.sha256(body).hexdigest()


# -- the Bundle's resources ------------------------------------------------------------------------

class _Resources:
    """The Bundle's entries, found by fullUrl or ``Type/id``, each with its FHIRPath."""

    def __init__(self, bundle: Mapping[str, Any]) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []
        self._by_ref: dict[str, tuple[str, dict[str, Any]]] = {}
        for i, entry in enumerate(bundle.get("entry") or []):
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                continue
            path = f"Bundle.entry[{i}].resource"
            self.entries.append((path, resource))
            if entry.get("fullUrl"):
                self._by_ref[entry["fullUrl"]] = (path, resource)
            if resource.get("id"):
                self._by_ref[f"{resource['resourceType']}/{resource['id']}"] = (path, resource)

    def of_type(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(p, r) for p, r in self.entries if r.get("resourceType") == kind]

    def resolve(self, reference: Mapping[str, Any] | None, kind: str) -> tuple[str, dict[str, Any]] | None:
        ref = (reference or {}).get("reference")
        if not isinstance(ref, str):
            return None
        found = self._by_ref.get(ref)
        if found is None and "/" in ref:  # an absolute URL: its last two parts are Type/id
            found = self._by_ref.get("/".join(ref.rstrip("/").split("/")[-2:]))
        if found is None or found[1].get("resourceType") != kind:
            return None
        return found


def _codings(concept: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    return [(c.get("system", ""), c.get("code", "")) for c in (concept or {}).get("coding") or [] if c.get("code")]


# -- one visit (Encounter) -------------------------------------------------------------------------

@dataclass
class _Visit:
    mapping: FhirMapping
    sender: Sender
    resources: _Resources
    path: str
    encounter: dict[str, Any]
    bundle_key: str
    recorded: datetime | None
    warnings: list[Issue]
    person: ce.Person = field(default_factory=ce.Person)
    practice: str = ""
    _diagnoses: list[tuple[str, int, bool]] | None = None

    def note(self, where: str, text: str) -> None:
        self.warnings.append(warning(where, text))

    def refuse(self, where: str, text: str, code: Any = "required") -> _Refused:
        return _Refused(error(code, where, text))

    # ids
    @property
    def key(self) -> str:
        for ident in self.encounter.get("identifier") or []:
            if ident.get("value"):
                return f"{ident.get('system', '')}|{ident['value']}"
        if self.encounter.get("id"):
            return f"id:{self.encounter['id']}"
        raise self.refuse(f"{self.path}.identifier", "the Encounter has neither an identifier nor an id: its "
                                                     "events could never be revised or cancelled")

    @property
    def spell(self) -> str:
        """The spell id events carry: the Encounter identifier's value (as PV1-19 is for HL7 v2),
        else its id; the system stays in :attr:`key`, which names the visit in event ids."""
        return self.key.removeprefix("id:") if self.key.startswith("id:") else self.key.split("|", 1)[1]

    def visit_id(self, role: str, *detail: str) -> str:
        return fhir_event_id("visit", self.sender.org, self.key, role, *detail)

    def bundle_id(self, role: str) -> str:
        return fhir_event_id("bundle", self.sender.org, self.bundle_key, self.key, role)

    # values
    def kind(self) -> VisitKind | None:
        concept = self.encounter.get("class") or {}
        system, code = concept.get("system", ""), concept.get("code", "")
        found = self.mapping.file.encounter_class.get(f"{system}|{code}")
        if found is None:
            self.note(f"{self.path}.class", f"class {system}|{code} is not in [encounter_class]: no event")
        return found

    def when(self, value: object, where: str) -> datetime | None:
        """A FHIR dateTime as an aware datetime; a date alone is taken as midnight local time
        (with a warning); a year or year-month is not a time."""
        if not isinstance(value, str) or not value:
            return None
        if len(value) < 10:
            self.note(where, "only a year or month: not a usable time")
            return None
        try:
            if len(value) == 10:
                day = date.fromisoformat(value)
                self.note(where, "a date without a time: taken as midnight local time")
                return datetime.combine(day, time(), self.mapping.zone)
            parsed = datetime.fromisoformat(value)
        except ValueError:  # FHIR's pattern lets through times Python has not (a leap second, 24:00)
            self.note(where, "not a date and time that can be used: left out")
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=self.mapping.zone)

    def period(self, end: bool) -> datetime | None:
        key = "end" if end else "start"
        return self.when((self.encounter.get("period") or {}).get(key), f"{self.path}.period.{key}")

    def location(self) -> str:
        rows = self.encounter.get("location") or []
        active = [r for r in rows if r.get("status") == "active"] or rows
        if not active:
            return ""
        ref = active[-1].get("location") or {}
        found = self.resources.resolve(ref, "Location")
        if found is not None:
            loc = found[1]
            for ident in loc.get("identifier") or []:
                if ident.get("value"):
                    return str(ident["value"])[:MAX_TEXT]
            if loc.get("name"):
                return str(loc["name"])[:MAX_TEXT]
        return str(ref.get("display", ""))[:MAX_TEXT]

    def method(self) -> ce.AdmissionMethod.ValueType:
        concepts = [(f"{self.path}.extension", ext.get("valueCodeableConcept"))
                    for ext in self.encounter.get("extension") or []
                    if ext.get("url") in self.mapping.file.admission_method_extensions]
        concepts.append((f"{self.path}.priority", self.encounter.get("priority")))
        for where, concept in concepts:
            for system, code in _codings(concept):
                word = self.mapping.file.admission_method.get(f"{system}|{code}")
                if word:
                    return METHODS[word]
            if concept:
                self.note(where, "no coding in [admission_method]")
        return ce.ADMISSION_METHOD_UNSPECIFIED

    def carried(self, element: str, systems: list[str]) -> str:
        concept = (self.encounter.get("hospitalization") or {}).get(element)
        for system, code in _codings(concept):
            if system in systems:
                return code[:MAX_TEXT]
        if concept:
            self.note(f"{self.path}.hospitalization.{element}", "no coding of a system in [carried_systems]: left out")
        return ""

    def diagnoses(self) -> list[tuple[str, int, bool]]:
        """(ICD-10 code, position, provisional) from Encounter.diagnosis, then Conditions that
        name this Encounter (read once: its warnings are given once)."""
        if self._diagnoses is None:
            self._diagnoses = self._read_diagnoses()
        return self._diagnoses

    def _read_diagnoses(self) -> list[tuple[str, int, bool]]:
        found: list[tuple[str, dict[str, Any], int | None]] = []
        seen: set[int] = set()
        for i, row in enumerate(self.encounter.get("diagnosis") or []):
            hit = self.resources.resolve(row.get("condition"), "Condition")
            if hit is None:
                self.note(f"{self.path}.diagnosis[{i}].condition", "not a Condition in this Bundle: left out")
                continue
            seen.add(id(hit[1]))
            found.append((hit[0], hit[1], _whole(row.get("rank"))))
        for path, condition in self.resources.of_type("Condition"):
            if id(condition) in seen:
                continue
            hit = self.resources.resolve(condition.get("encounter"), "Encounter")
            if hit is not None and hit[1] is self.encounter:
                found.append((path, condition, None))
        out: list[tuple[str, int, bool]] = []
        top = max((rank for _, _, rank in found if rank), default=0)
        for path, condition, rank in found:
            code = next((c for s, c in _codings(condition.get("code")) if s in self.mapping.file.icd10_systems), None)
            if code is None or not ICD10.match(code.upper()):
                self.note(f"{path}.code", "no ICD-10 coding: left out")
                continue
            if not rank:
                top += 1
                rank = top
            status = {c for _, c in _codings(condition.get("verificationStatus"))}
            out.append((code.upper(), int(rank), bool(status & set(PROVISIONAL)) or not status))
        return out

    # events
    def base(self, kind: ce.EventType.ValueType, event_id: str, when: datetime) -> ce.CareEvent:
        event = ce.CareEvent(event_id=event_id, schema_version=SCHEMA_VERSION, source_org=self.sender.org,
                             source_sector=self.sender.sector, event_type=kind)
        event.event_time.FromDatetime(when.astimezone(UTC).replace(tzinfo=None))
        if self.recorded is not None:
            event.recorded_time.FromDatetime(self.recorded.astimezone(UTC).replace(tzinfo=None))
        event.person.CopyFrom(self.person)
        if self.practice:
            event.registered_practice = self.practice
        event.clinical.spell_id = self.spell[:MAX_TEXT]
        return event

    def time_or_recorded(self, when: datetime | None, where: str) -> datetime:
        if when is not None:
            return when
        if self.recorded is None:
            raise self.refuse(where, "no time: the element is empty and the Bundle has no timestamp")
        self.note(where, "empty: the event time is the Bundle's timestamp")
        return self.recorded


def _person(v: _Visit) -> None:
    """Patient -> the event's person (Encounter.subject must be a Patient in the Bundle)."""
    hit = v.resources.resolve(v.encounter.get("subject"), "Patient")
    if hit is None:
        raise v.refuse(f"{v.path}.subject", "must refer to a Patient in this Bundle")
    path, patient = hit
    national = v.mapping.file.national_id_systems
    person = v.person
    for i, ident in enumerate(patient.get("identifier") or []):
        value = str(ident.get("value") or "")
        if not value:
            continue
        if ident.get("system") in national:
            digits = "".join(value.split())
            if len(digits) == 10 and digits.isdigit() and nhs_number_is_valid(digits):
                person.national_id = person.national_id or digits
            else:
                v.note(f"{path}.identifier[{i}]", "NHS number is not 10 digits with a valid check digit: left out")
        elif not person.local_id:
            person.local_id = value[:MAX_TEXT]
    if not person.local_id:
        if not patient.get("id"):
            raise v.refuse(f"{path}.identifier", "the Patient has no local identifier and no id")
        person.local_id = str(patient["id"])
        v.note(f"{path}.identifier", "no local identifier: the Patient's id is used as the local id")
    names = patient.get("name") or []
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if name.get("given"):
        person.given_name = str(name["given"][0])[:MAX_TEXT]
    if name.get("family"):
        person.family_name = str(name["family"])[:MAX_TEXT]
    birth = patient.get("birthDate")
    if isinstance(birth, str):
        if len(birth) == 10:
            person.birth_date = birth
        else:
            v.note(f"{path}.birthDate", "not a full date: left out")
    if patient.get("gender") in SEXES:
        person.sex = SEXES[patient["gender"]]
    addresses = patient.get("address") or []
    address = next((a for a in addresses if a.get("use") == "home"), addresses[0] if addresses else {})
    postcode = " ".join(str(address.get("postalCode") or "").split()).upper()
    if postcode:
        if UK_POSTCODE.match(postcode):
            person.postcode = postcode
        else:
            v.note(f"{path}.address.postalCode", "not a UK postcode: left out")
    line = ", ".join(str(x) for x in address.get("line") or [])
    if line:
        if len(line) <= MAX_ADDRESS_LINE:
            person.address_line = line
        else:
            v.note(f"{path}.address.line", f"longer than {MAX_ADDRESS_LINE} characters: left out")
    for i, ref in enumerate(patient.get("generalPractitioner") or []):
        code = _organisation_code(v, ref)
        if code:
            v.practice = code
            break
        v.note(f"{path}.generalPractitioner[{i}]", "no organisation code (an Organization with an identifier "
                                                   "of a system in organisation_systems): left out")


def _organisation_code(v: _Visit, ref: Mapping[str, Any]) -> str:
    systems = v.mapping.file.organisation_systems
    idents = [ref.get("identifier") or {}]
    hit = v.resources.resolve(ref, "Organization")
    if hit is not None:
        idents += hit[1].get("identifier") or []
    return next((str(i["value"]) for i in idents if i.get("system") in systems and i.get("value")), "")


def _start(v: _Visit, kind: VisitKind | None, restating: bool) -> list[ce.CareEvent]:
    if kind in (None, "none"):
        return []
    when = v.period(end=False)
    if restating and when is None:
        return []
    when = v.time_or_recorded(when, f"{v.path}.period.start")
    if kind == "admission":
        method = v.method()
        if method == ce.ADMISSION_METHOD_UNSPECIFIED:
            raise v.refuse(f"{v.path}.priority", "an admission needs its admission method: the UK Core "
                                                 "AdmissionMethod extension or Encounter.priority, coded as in "
                                                 "[admission_method]", "business-rule")
        event = v.base(ce.EVENT_TYPE_ADMISSION, v.visit_id("admission"), when)
        event.clinical.admission_method = method
        source = v.carried("admitSource", v.mapping.file.carried_systems.admission_source)
        if source:
            event.clinical.admission_source = source
    else:
        event = v.base(ce.EVENT_TYPE_ED_ATTENDANCE, v.visit_id("ed_attendance"), when)
    location = v.location()
    if location:
        event.clinical.location = location
    event.clinical.diagnoses.extend(ce.Diagnosis(code=c, position=p, provisional=True)
                                    for c, p, provisional in v.diagnoses() if provisional)
    return [event]


def _discharge(v: _Visit, kind: VisitKind | None, restating: bool) -> list[ce.CareEvent]:
    if kind != "admission":
        return []  # the end of an ED or outpatient visit: the contract has no event for it
    when = v.period(end=True)
    if restating and (when is None or v.encounter.get("status") != "finished"):
        return []
    event = v.base(ce.EVENT_TYPE_DISCHARGE, v.visit_id("discharge"),
                   v.time_or_recorded(when, f"{v.path}.period.end"))
    destination = v.carried("dischargeDisposition", v.mapping.file.carried_systems.discharge_destination)
    if destination:
        event.clinical.discharge_destination = destination
    location = v.location()
    if location:
        event.clinical.location = location
    final = [ce.Diagnosis(code=c, position=p) for c, p, provisional in v.diagnoses() if not provisional]
    if not final:
        return [event]
    coded = v.base(ce.EVENT_TYPE_DIAGNOSIS_CODED, v.bundle_id("diagnoses"), event.event_time.ToDatetime(UTC))
    coded.clinical.diagnoses.extend(final)
    return [event, coded]


def _transfer(v: _Visit, kind: VisitKind | None) -> list[ce.CareEvent]:
    if kind != "admission":
        return []
    rows = v.encounter.get("location") or []
    active = [r for r in rows if r.get("status") == "active"] or rows
    moved = v.when(((active[-1].get("period") or {}) if active else {}).get("start"),
                   f"{v.path}.location.period.start")
    when = v.time_or_recorded(moved, f"{v.path}.location.period.start")
    location = v.location()
    event = v.base(ce.EVENT_TYPE_TRANSFER, v.visit_id("transfer", location,
                                                      when.astimezone(UTC).strftime("%Y%m%d%H%M%S")), when)
    if location:
        event.clinical.location = location
    return [event]


def _cancel(v: _Visit, kind: VisitKind | None) -> list[ce.CareEvent]:
    """An Encounter entered in error (or cancelled) withdraws its visit's start and discharge."""
    roles = {"admission": ["admission", "discharge"], "ed_attendance": ["ed_attendance"]}.get(
        kind or "", ["admission", "ed_attendance", "discharge"])
    if v.recorded is None:  # a cancellation happens when it is sent: the Bundle's timestamp
        raise v.refuse("Bundle.timestamp", "a Bundle that cancels an Encounter needs its timestamp")
    when = v.recorded
    out = []
    for role in roles:
        event = v.base(ce.EVENT_TYPE_CANCELLATION, v.bundle_id(f"cancel:{role}"), when)
        event.target_event_id = v.visit_id(role)
        out.append(event)
    return out


# -- the two Bundle shapes -------------------------------------------------------------------------

def map_bundle(bundle: Mapping[str, Any], body: bytes, sender: Sender, mapping: FhirMapping) -> MappedBundle:
    """The care events a validated Bundle (see carehub/domain/fhir/bundle.py) stands for."""
    out = MappedBundle(kind=str(bundle.get("type", "")), bundle_key=bundle_key(bundle, body))
    try:
        resources = _Resources(bundle)
        recorded = _timestamp(bundle, mapping, out.warnings)
        if out.kind == "message":
            out.events = _message(bundle, resources, sender, mapping, out, recorded)
        else:
            out.events = _transaction(resources, sender, mapping, out, recorded)
    except _Refused as refused:
        out.refusal = [refused.issue]
        out.events = []
    return out


def _timestamp(bundle: Mapping[str, Any], mapping: FhirMapping, warnings: list[Issue]) -> datetime | None:
    value = bundle.get("timestamp")
    if not isinstance(value, str) or len(value) < 19:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:  # a leap second, say: FHIR's pattern allows it, Python's datetime does not
        warnings.append(warning("Bundle.timestamp", "not a time that can be used: left out"))
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=mapping.zone)


def _visit(resources: _Resources, sender: Sender, mapping: FhirMapping, out: MappedBundle, path: str,
           encounter: dict[str, Any], recorded: datetime | None) -> _Visit:
    visit = _Visit(mapping, sender, resources, path, encounter, out.bundle_key, recorded, out.warnings)
    _person(visit)
    return visit


def _message(bundle: Mapping[str, Any], resources: _Resources, sender: Sender, mapping: FhirMapping,
             out: MappedBundle, recorded: datetime | None) -> list[ce.CareEvent]:
    entries = resources.entries
    if not entries or entries[0][1].get("resourceType") != "MessageHeader":
        raise _Refused(error("required", "Bundle.entry[0].resource", "a message Bundle must start with a "
                                                                     "MessageHeader"))
    path, header = entries[0]
    coding = header.get("eventCoding") or {}
    key = f"{coding.get('system', '')}|{coding.get('code', '')}"
    action = mapping.file.events.get(key)
    if action is None:
        raise _Refused(error("not-supported", f"{path}.eventCoding", f"event {key} is not supported (see "
                                                                     "[events] in the FHIR mapping)"))
    focus = [resources.resolve(ref, "Encounter") for ref in header.get("focus") or []]
    encounters = [f for f in focus if f is not None]
    if not encounters:
        raise _Refused(error("required", f"{path}.focus", "the focus must be an Encounter in this Bundle"))
    events: list[ce.CareEvent] = []
    for enc_path, encounter in encounters:
        v = _visit(resources, sender, mapping, out, enc_path, encounter, recorded)
        kind = v.kind()
        if encounter.get("status") in CANCELLED:
            events += _cancel(v, kind)
        elif action == "start":
            events += _start(v, kind, restating=False)
        elif action == "discharge":
            events += _discharge(v, kind, restating=False)
        else:
            events += _transfer(v, kind)
    return events


def _transaction(resources: _Resources, sender: Sender, mapping: FhirMapping, out: MappedBundle,
                 recorded: datetime | None) -> list[ce.CareEvent]:
    events: list[ce.CareEvent] = []
    for path, encounter in resources.of_type("Encounter"):
        v = _visit(resources, sender, mapping, out, path, encounter, recorded)
        kind = v.kind()
        if encounter.get("status") in CANCELLED:
            events += _cancel(v, kind)
            continue
        events += _start(v, kind, restating=True)
        events += _discharge(v, kind, restating=True)
    if not resources.of_type("Encounter"):
        out.warnings.append(warning("Bundle.entry", "no Encounter: nothing for the hub to record"))
    return events


def describe(issues: Iterable[Issue]) -> str:
    """Issues as one log line: elements and reasons only (never values)."""
    return "; ".join(f"{i.expression or 'Bundle'}: {i.diagnostics}" for i in issues)


__all__ = ["FhirMapping", "MappedBundle", "bundle_key", "describe", "fhir_event_id", "load_fhir_mapping",
           "map_bundle"]
