"""The synthetic region's hospital traffic as the hospitals' own systems send it: HL7 v2 ADT and FHIR.

`make run` publishes most of the region as CareEvents through the SDK (the provider topic). A
share of the acute hospitals' visit events goes through the other two doors instead, so that
every run uses all three: HL7 v2 ADT over MLLP (services/mllp) and FHIR notification messages
over HTTPS (services/fhir). This module only translates (no I/O); carehub/demo.py sends.

What goes where (:class:`Router`): admissions, ED attendances, transfers, discharges and
cancellations of acute hospitals, chosen by a hash of the organisation and the spell (the ED
attendance's own encounter id for an attendance), so that every event of a spell takes the same
door. That matters: each door derives its events' ids from the visit (PV1-19, the Encounter
identifier), so a discharge or a cancellation only finds the admission it belongs to when both
came through the same door. MLLP carries only organisations that have a sending facility in the
MLLP service's facilities file (the packaged one lists RR8); FHIR takes any organisation with a
client certificate and a row in the FHIR senders file (the demo writes one for every organisation).

How an event is written:

* HL7 v2.5.1 ADT (:func:`to_hl7`): A01 admission (PV1-2 ``I``), A04 ED attendance (``E``), A02
  transfer, A03 discharge, A11 cancelled admission; MSH-4 the organisation's sending facility;
  PID-3 the local number (``MR``) and the NHS number (``NHS``/``NH``), PID-5/7/8/11 and PD1-3
  the registered practice; PV1-19 the spell id; the admission method as an NHS admission method
  code in PV1-4; provisional diagnoses as working (``W``) DG1s. Text is escaped as HL7 wants
  and declared UTF-8 (MSH-18), so any name survives.
* FHIR R4 (:func:`to_fhir`): a Da Vinci Unsolicited Notification (message Bundle: admit,
  transfer or discharge; a cancelled admission is an admit whose Encounter is
  ``entered-in-error``, which the FHIR door turns into two cancellations: of the visit's
  admission and of its discharge) with the Encounter (its identifier the spell id), the Patient (local
  id, NHS number, name, birth date, gender, address), the registered practice as an
  Organization with its ODS code, provisional Conditions and the ward as a Location.

Both keep the person's fields, so identity linkage joins door events to the same people as
before, and both round-trip through the hub's own mappers to the same event type, time,
organisation, person and spell (tests/unit/test_synthetic_doors.py), with the door's own event
ids. What the doors cannot say, and so differs from the SDK's events: an ED attendance takes
the sector of the organisation (acute) rather than ``SECTOR_EMERGENCY``; a discharge carries no
admission method (the spell's admission has it); an event's ``locality`` is not carried. Both
doors name a spell by its id (PV1-19, the Encounter identifier's value), so the spell's coded
diagnoses, which stay on the SDK feed (the doors carry no procedures), land on the same spell.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from carehub.domain.hl7v2.charset import escape
from carehub.domain.hl7v2.mapping import Facility
from carehub.v1 import care_event_pb2 as pb

# -- which door ------------------------------------------------------------------------------------

SHARE = 10  # one spell in SHARE goes over MLLP (where the organisation has a facility), another over FHIR
DOOR_EVENT_TYPES = frozenset({pb.EVENT_TYPE_ADMISSION, pb.EVENT_TYPE_ED_ATTENDANCE, pb.EVENT_TYPE_TRANSFER,
                              pb.EVENT_TYPE_DISCHARGE, pb.EVENT_TYPE_CANCELLATION})
HOSPITAL_SECTORS = frozenset({pb.SECTOR_ACUTE, pb.SECTOR_EMERGENCY})


class Door(StrEnum):
    SDK = "sdk"    # a CareEvent on the provider topic, through carehub.sdk.Publisher
    MLLP = "mllp"  # HL7 v2 ADT over MLLP
    FHIR = "fhir"  # a FHIR message Bundle over HTTPS


def spell_bucket(org: str, spell_id: str, share: int = SHARE) -> int:
    """A number in [0, share) that is the same for every event of the spell, on any machine."""
    digest = hashlib.sha256(f"{org}/{spell_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % share


@dataclass(frozen=True)
class Router:
    """Which door each synthetic event takes.

    ``hospitals``: the acute hospitals' organisation codes (``region.directory.hospitals``);
    ``facilities``: organisation code -> the MLLP sending facility (MSH-4) the MLLP service knows it
    by (:func:`facilities_by_org`); ``share``: one spell in ``share`` per door.
    """

    hospitals: Collection[str]
    facilities: Mapping[str, str]
    share: int = SHARE

    def spell_door(self, org: str, spell_id: str) -> Door:
        if org not in self.hospitals or not spell_id:
            return Door.SDK
        bucket = spell_bucket(org, spell_id, self.share)
        if bucket == 0 and org in self.facilities:
            return Door.MLLP
        if bucket == 1:
            return Door.FHIR
        return Door.SDK

    def door(self, event: pb.CareEvent) -> Door:
        if event.event_type not in DOOR_EVENT_TYPES or event.source_sector not in HOSPITAL_SECTORS:
            return Door.SDK
        return self.spell_door(event.source_org, event.clinical.spell_id)


def facilities_by_org(facilities: Mapping[str, Facility]) -> dict[str, str]:
    """Organisation code -> its first sending facility, from ``AdtMapping.facilities`` (facility ->
    Facility(org, sector)), so that one organisation's messages all carry one MSH-4."""
    out: dict[str, str] = {}
    for facility, row in facilities.items():
        out.setdefault(row.org, facility)
    return out


@dataclass(frozen=True)
class DoorMessage:
    """One message for a door: ``body`` is the HL7 message (CR-terminated segments, ASCII) or the
    Bundle (JSON); ``org`` the sender (its client certificate for FHIR); ``events`` how many care
    events the door writes to the provider topic for it, once accepted."""

    door: Door
    org: str
    source: str  # for people and logs: "<org> <event type> <8 hex digits of a hash of the event id>"
    body: bytes
    events: int = 1


def translate(event: pb.CareEvent, door: Door, facilities: Mapping[str, str]) -> DoorMessage:
    if door == Door.MLLP:
        return to_hl7(event, facilities[event.source_org])
    if door == Door.FHIR:
        return to_fhir(event)
    raise ValueError(f"no translation for door {door}")


def _label(event: pb.CareEvent) -> str:
    digest = hashlib.sha256(f"{event.source_org}/{event.event_id}".encode()).hexdigest()
    return f"{event.source_org} {pb.EventType.Name(event.event_type).removeprefix('EVENT_TYPE_').lower()} {digest[:8]}"


def _when(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


# -- HL7 v2 ----------------------------------------------------------------------------------------

HL7_APPLICATION = "SYNTH_PAS"
HL7_VERSION = "2.5.1"
HL7_CHARSET = "UNICODE UTF-8"
TRIGGERS = {pb.EVENT_TYPE_ADMISSION: "A01", pb.EVENT_TYPE_ED_ATTENDANCE: "A04", pb.EVENT_TYPE_TRANSFER: "A02",
            pb.EVENT_TYPE_DISCHARGE: "A03", pb.EVENT_TYPE_CANCELLATION: "A11"}
STRUCTURES = {"A01": "ADT_A01", "A04": "ADT_A01", "A02": "ADT_A02", "A03": "ADT_A03", "A11": "ADT_A09"}
HL7_SEX = {pb.SEX_MALE: "M", pb.SEX_FEMALE: "F", pb.SEX_OTHER: "O", pb.SEX_UNKNOWN: "U"}
# NHS Data Dictionary admission method codes (adt.toml [tables.admission_type]; UK Core AdmissionMethodEngland)
ADMISSION_METHOD_CODES = {pb.ADMISSION_METHOD_EMERGENCY: "21", pb.ADMISSION_METHOD_ELECTIVE: "11",
                          pb.ADMISSION_METHOD_MATERNITY: "31", pb.ADMISSION_METHOD_TRANSFER: "81"}


def _t(value: str) -> str:
    return escape(value, charset=HL7_CHARSET)


def _dtm(ts: Timestamp) -> str:
    return _when(ts).strftime("%Y%m%d%H%M%S") + "+0000"


def _segment(name: str, fields: Mapping[int, str]) -> str:
    """A segment from {field number: already escaped text}, empty fields between."""
    last = max((n for n, v in fields.items() if v), default=0)
    return "|".join([name, *(fields.get(n, "") for n in range(1, last + 1))])


def control_id(event: pb.CareEvent) -> str:
    """MSH-10: at most 20 characters (HL7 v2.5 ST), the same for a resend of the same event."""
    return hashlib.sha256(f"{event.source_org}/{event.event_id}".encode()).hexdigest()[:20].upper()


def to_hl7(event: pb.CareEvent, facility: str, application: str = HL7_APPLICATION) -> DoorMessage:
    """The HL7 v2.5.1 ADT message for one hospital visit event (see the module doc)."""
    trigger = TRIGGERS.get(event.event_type)
    if trigger is None:
        raise ValueError(f"no ADT trigger for {pb.EventType.Name(event.event_type)}")
    if not event.clinical.spell_id:
        raise ValueError("a visit event needs clinical.spell_id (PV1-19)")
    recorded = event.recorded_time if event.HasField("recorded_time") else event.event_time
    person, clinical = event.person, event.clinical
    msh = ("MSH|^~\\&|" + "|".join([
        _t(application), _t(facility), "CAREHUB", "CAREHUB", _dtm(recorded), "",
        f"ADT^{trigger}^{STRUCTURES[trigger]}", control_id(event),
        "P", HL7_VERSION, "", "", "", "", "GBR", HL7_CHARSET]))
    evn: dict[int, str] = {1: trigger, 2: _dtm(recorded)}
    if trigger in ("A02", "A11"):
        evn[6] = _dtm(event.event_time)  # when the move, or the cancellation, happened
    ids = [f"{_t(person.local_id)}^^^{_t(event.source_org)}^MR"]
    if person.national_id:
        ids.append(f"{_t(person.national_id)}^^^NHS^NH")
    address = f"{_t(person.address_line)}^^^^{_t(person.postcode)}" if person.address_line or person.postcode else ""
    pid = {1: "1", 3: "~".join(ids), 5: f"{_t(person.family_name)}^{_t(person.given_name)}" if (
        person.family_name or person.given_name) else "",
        7: person.birth_date.replace("-", ""), 8: HL7_SEX.get(person.sex, ""), 11: address}
    pv1: dict[int, str] = {1: "1", 2: "E" if trigger == "A04" else "I", 19: _t(clinical.spell_id)}
    if clinical.location:
        pv1[3] = _t(clinical.location)
    if clinical.admission_method and trigger != "A11":
        pv1[4] = ADMISSION_METHOD_CODES.get(clinical.admission_method, "")
    if trigger == "A01" and clinical.admission_source:
        pv1[14] = _t(clinical.admission_source)
    if trigger in ("A01", "A04"):
        pv1[44] = _dtm(event.event_time)
    if trigger == "A03":
        pv1[45] = _dtm(event.event_time)
        if clinical.discharge_destination:
            pv1[36] = _t(clinical.discharge_destination)
    segments = [msh, _segment("EVN", evn), _segment("PID", pid)]
    if event.registered_practice:
        segments.append(_segment("PD1", {3: f"^^{_t(event.registered_practice)}"}))
    segments.append(_segment("PV1", pv1))
    if trigger in ("A01", "A04"):
        for n, dx in enumerate(d for d in clinical.diagnoses if d.provisional):
            segments.append(_segment("DG1", {1: str(n + 1), 3: f"{_t(dx.code)}^^I10", 6: "W",
                                             15: str(dx.position) if dx.position else ""}))
    text = "\r".join(segments) + "\r"
    return DoorMessage(Door.MLLP, event.source_org, _label(event), text.encode("ascii"))


# -- FHIR ------------------------------------------------------------------------------------------

SYSTEM_BASE = "https://fhir.synthetic.carehub.example"
NOTIFY = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
CONDITION_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ADMISSION_METHOD_EXTENSION = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-AdmissionMethod"
ADMISSION_METHOD_SYSTEM = "https://fhir.hl7.org.uk/CodeSystem/UKCore-AdmissionMethodEngland"
ADMISSION_SOURCE_SYSTEM = "https://fhir.hl7.org.uk/CodeSystem/UKCore-SourceOfAdmissionEngland"
DISCHARGE_DESTINATION_SYSTEM = "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeDestinationEngland"
FHIR_GENDER = {pb.SEX_MALE: "male", pb.SEX_FEMALE: "female", pb.SEX_OTHER: "other", pb.SEX_UNKNOWN: "unknown"}
NOTIFICATIONS = {pb.EVENT_TYPE_ADMISSION: "admit", pb.EVENT_TYPE_ED_ATTENDANCE: "admit",
                 pb.EVENT_TYPE_CANCELLATION: "admit", pb.EVENT_TYPE_TRANSFER: "transfer",
                 pb.EVENT_TYPE_DISCHARGE: "discharge"}


def local_id_system(org: str) -> str:
    return f"{SYSTEM_BASE}/{org}/Id/local-record"


def spell_system(org: str) -> str:
    return f"{SYSTEM_BASE}/{org}/Id/spell"


def _iso(ts: Timestamp) -> str:
    return _when(ts).isoformat()


def to_fhir(event: pb.CareEvent) -> DoorMessage:
    """The FHIR notification message Bundle for one hospital visit event (see the module doc)."""
    action = NOTIFICATIONS.get(event.event_type)
    if action is None:
        raise ValueError(f"no FHIR notification for {pb.EventType.Name(event.event_type)}")
    if not event.clinical.spell_id:
        raise ValueError("a visit event needs clinical.spell_id (the Encounter identifier)")
    org, person, clinical = event.source_org, event.person, event.clinical
    base = f"{SYSTEM_BASE}/{org}/fhir"
    kind = event.event_type
    cancelled = kind == pb.EVENT_TYPE_CANCELLATION
    # a cancellation happens when it is sent: the Bundle's timestamp is its time
    stamp = event.event_time if cancelled or not event.HasField("recorded_time") else event.recorded_time

    patient: dict[str, Any] = {"resourceType": "Patient", "id": "patient",
                               "identifier": [{"system": local_id_system(org), "value": person.local_id}]}
    if person.national_id:
        patient["identifier"].append({"system": NHS_NUMBER, "value": person.national_id})
    name: dict[str, Any] = {}
    if person.family_name:
        name["family"] = person.family_name
    if person.given_name:
        name["given"] = [person.given_name]
    if name:
        patient["name"] = [{"use": "official", **name}]
    if person.sex in FHIR_GENDER:
        patient["gender"] = FHIR_GENDER[person.sex]
    if person.birth_date:
        patient["birthDate"] = person.birth_date
    address: dict[str, Any] = {}
    if person.address_line:
        address["line"] = [person.address_line]
    if person.postcode:
        address["postalCode"] = person.postcode
    if address:
        patient["address"] = [{"use": "home", **address}]
    resources: list[dict[str, Any]] = []
    if event.registered_practice:
        patient["generalPractitioner"] = [{"reference": "Organization/practice"}]
        resources.append({"resourceType": "Organization", "id": "practice",
                          "identifier": [{"system": ODS, "value": event.registered_practice}]})

    ed = kind == pb.EVENT_TYPE_ED_ATTENDANCE
    encounter: dict[str, Any] = {
        "resourceType": "Encounter", "id": "encounter",
        "status": "entered-in-error" if cancelled else "finished" if kind == pb.EVENT_TYPE_DISCHARGE else "in-progress",
        "identifier": [{"system": spell_system(org), "value": clinical.spell_id}],
        "class": {"system": ACT, "code": "EMER" if ed else "IMP"},
        "subject": {"reference": "Patient/patient"},
    }
    if clinical.admission_method in ADMISSION_METHOD_CODES and not cancelled:
        encounter["extension"] = [{"url": ADMISSION_METHOD_EXTENSION, "valueCodeableConcept": {"coding": [
            {"system": ADMISSION_METHOD_SYSTEM, "code": ADMISSION_METHOD_CODES[clinical.admission_method]}]}}]
    if kind in (pb.EVENT_TYPE_ADMISSION, pb.EVENT_TYPE_ED_ATTENDANCE):
        encounter["period"] = {"start": _iso(event.event_time)}
    elif kind == pb.EVENT_TYPE_DISCHARGE:
        encounter["period"] = {"end": _iso(event.event_time)}
    hospitalization: dict[str, Any] = {}
    if kind == pb.EVENT_TYPE_ADMISSION and clinical.admission_source:
        hospitalization["admitSource"] = {"coding": [{"system": ADMISSION_SOURCE_SYSTEM,
                                                      "code": clinical.admission_source}]}
    if kind == pb.EVENT_TYPE_DISCHARGE and clinical.discharge_destination:
        hospitalization["dischargeDisposition"] = {"coding": [{"system": DISCHARGE_DESTINATION_SYSTEM,
                                                               "code": clinical.discharge_destination}]}
    if hospitalization:
        encounter["hospitalization"] = hospitalization
    if clinical.location and not cancelled:
        place: dict[str, Any] = {"location": {"reference": "Location/ward"}, "status": "active"}
        if kind == pb.EVENT_TYPE_TRANSFER:
            place["period"] = {"start": _iso(event.event_time)}
        encounter["location"] = [place]
        resources.append({"resourceType": "Location", "id": "ward", "name": clinical.location})
    elif kind == pb.EVENT_TYPE_TRANSFER:
        raise ValueError("a transfer needs clinical.location (where the person moved to)")
    if kind in (pb.EVENT_TYPE_ADMISSION, pb.EVENT_TYPE_ED_ATTENDANCE):
        diagnoses = [d for d in clinical.diagnoses if d.provisional]
        if diagnoses:
            encounter["diagnosis"] = []
        for n, dx in enumerate(diagnoses, 1):
            encounter["diagnosis"].append({"condition": {"reference": f"Condition/dx{n}"},
                                           **({"rank": dx.position} if dx.position else {})})
            resources.append({"resourceType": "Condition", "id": f"dx{n}", "subject": {"reference": "Patient/patient"},
                              "encounter": {"reference": "Encounter/encounter"},
                              "verificationStatus": {"coding": [{"system": CONDITION_STATUS, "code": "provisional"}]},
                              "code": {"coding": [{"system": ICD10, "code": dx.code}]}})

    header = {"resourceType": "MessageHeader", "id": "header",
              "eventCoding": {"system": NOTIFY, "code": f"notification-{action}"},
              "source": {"name": org, "endpoint": base},
              "focus": [{"reference": "Encounter/encounter"}]}
    entries = [header, encounter, patient, *resources]
    digest = hashlib.sha256(f"{org}/{event.event_id}".encode()).hexdigest()
    bundle = {"resourceType": "Bundle", "id": f"synthetic-{digest[:40]}", "type": "message",
              "timestamp": _iso(stamp),
              "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in entries]}
    # the FHIR door cancels an admission's start and its discharge (an Encounter entered in error)
    return DoorMessage(Door.FHIR, org, _label(event), orjson.dumps(bundle), events=2 if cancelled else 1)


__all__ = ["DOOR_EVENT_TYPES", "Door", "DoorMessage", "Router", "control_id", "facilities_by_org",
           "spell_bucket", "to_fhir", "to_hl7", "translate"]
