"""HL7 v2 ADT -> CareEvent: every row of data/hl7v2/adt.toml, each trigger's decision, the id rule.

The rules are in docs/hl7v2-adt.md. Events are also run through the hub's own validation
(services/ingest/validation.py), so that what the mapper emits is what ingest accepts.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carehub.domain.hl7v2 import charset
from carehub.domain.hl7v2.mapping import (
    PACKAGED,
    TARGETS,
    AdtMapping,
    Mapped,
    load_adt_mapping,
    map_message,
    message_event_id,
    visit_event_id,
)
from carehub.domain.loader import DefinitionError
from carehub.v1 import care_event_pb2 as ce
from services.ingest.validation import Limits, validate
from tests.hl7v2_messages import NHS, NHS_2, PV1_INPATIENT, PYTHON_HL7_SAMPLE_A04, adt, dg1, segment

NOW = datetime(2027, 1, 1, tzinfo=UTC)
VISIT = "S-2026-0042"


@pytest.fixture(scope="module")
def mapping() -> AdtMapping:
    return load_adt_mapping()


def mapped(mapping: AdtMapping, text: str) -> Mapped:
    out = map_message(text, mapping)
    for event in out.events:  # whatever the mapper emits, ingest accepts
        validate(event, NOW, Limits())
    return out


def only(out: Mapped) -> ce.CareEvent:
    assert out.refusal is None, out.refusal
    assert len(out.events) == 1, out.events
    return out.events[0]


def vid(role: str, *detail: str, visit: str = VISIT) -> str:
    return visit_event_id("PAS", "RR8", visit, role, *detail)


def fields(out: Mapped) -> set[str]:
    return {p.field for p in out.degraded}


# -- the table itself ------------------------------------------------------------------------------

# Which test exercises each target of adt.toml: a new row needs a test here.
COVERED = {
    "message.sending_application": "test_ids_are_deterministic_and_hold_no_personal_data",
    "message.sending_facility": "test_admission_maps_every_person_and_visit_field",
    "message.time": "test_event_time_falls_back_to_msh_7",
    "message.type": "test_refusals",
    "message.trigger": "test_refusals",
    "message.control_id": "test_refusals",
    "message.processing_id": "test_refusals",
    "message.version": "test_refusals",
    "event.recorded_time": "test_admission_maps_every_person_and_visit_field",
    "event.occurred_time": "test_transfer_time_prefers_evn_6",
    "person.local_id": "test_admission_maps_every_person_and_visit_field",
    "person.national_id": "test_admission_maps_every_person_and_visit_field",
    "person.family_name": "test_admission_maps_every_person_and_visit_field",
    "person.given_name": "test_admission_maps_every_person_and_visit_field",
    "person.birth_date": "test_admission_maps_every_person_and_visit_field",
    "person.sex": "test_admission_maps_every_person_and_visit_field",
    "person.address_line": "test_admission_maps_every_person_and_visit_field",
    "person.postcode": "test_admission_maps_every_person_and_visit_field",
    "person.registered_practice": "test_demographics_register_the_practice",
    "visit.patient_class": "test_a04_by_patient_class",
    "visit.location": "test_transfer_and_a12",
    "visit.prior_location": "test_transfer_and_a12",
    "visit.admission_method": "test_admission_method_codes",
    "visit.admission_source": "test_admission_maps_every_person_and_visit_field",
    "visit.number": "test_admission_maps_every_person_and_visit_field",
    "visit.discharge_destination": "test_discharge_and_a13",
    "visit.admit_time": "test_admission_maps_every_person_and_visit_field",
    "visit.discharge_time": "test_discharge_and_a13",
    "diagnosis.code": "test_diagnoses",
    "diagnosis.coding_system": "test_diagnoses",
    "diagnosis.type": "test_a08_revises_and_never_duplicates",
    "diagnosis.priority": "test_diagnoses",
    "merge.prior_local_id": "test_a40_merges_each_pair",
}


def test_every_row_of_the_table_has_a_test(mapping: AdtMapping) -> None:
    assert {row.target for row in mapping.file.fields} == set(TARGETS) == set(COVERED)
    names = set(globals())
    assert {name for name in COVERED.values() if name not in names} == set()


def test_packaged_mapping_loads(mapping: AdtMapping) -> None:
    assert mapping.path == PACKAGED / "adt.toml"
    assert mapping.facilities["RR8"].org == "RR8"
    assert mapping.facilities["RR8"].sector == ce.SECTOR_ACUTE
    assert re.fullmatch(r"[0-9a-f]{16}", mapping.digest)
    assert {"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13", "A21", "A22", "A28",
            "A31", "A40", "A47"} <= set(mapping.file.triggers)


# -- person and visit fields -----------------------------------------------------------------------

def test_admission_maps_every_person_and_visit_field(mapping: AdtMapping) -> None:
    out = mapped(mapping, adt("A01", extra=[dg1(1, "N39.0", priority="1")]))
    assert (out.trigger, out.control_id, out.sending_application, out.sending_facility) == (
        "A01", "MSG0001", "PAS", "RR8")
    assert out.degraded == []
    event = only(out)
    assert event.event_type == ce.EVENT_TYPE_ADMISSION
    assert event.event_id == vid("admission")
    assert (event.source_org, event.source_sector, event.schema_version) == ("RR8", ce.SECTOR_ACUTE, 1)
    # PV1-44 20261001101500 is local (Europe/London, BST): 09:15 UTC; EVN-2 the recorded time
    assert event.event_time.ToDatetime(tzinfo=UTC) == datetime(2026, 10, 1, 9, 15, tzinfo=UTC)
    assert event.recorded_time.ToDatetime(tzinfo=UTC) == datetime(2026, 10, 1, 9, 17, 42, tzinfo=UTC)
    p = event.person
    assert (p.local_id, p.national_id, p.family_name, p.given_name) == ("H-99812", NHS, "Whitfield", "Margaret")
    assert (p.birth_date, p.sex, p.postcode, p.address_line) == ("1941-03-17", ce.SEX_FEMALE, "LS1 4AP",
                                                                  "12 Pinkerton Circuit")
    c = event.clinical
    assert (c.spell_id, c.admission_method, c.admission_source, c.location) == (
        VISIT, ce.ADMISSION_METHOD_EMERGENCY, "54", "WARD7")
    assert [(d.code, d.position, d.provisional) for d in c.diagnoses] == [("N39.0", 1, True)]
    assert event.registered_practice == "B86001"


def test_identifiers_by_authority_and_type(mapping: AdtMapping) -> None:
    # NHS number by type NH alone; local number untyped (the first that is not the NHS number)
    pid = {1: "1", 3: f"{NHS}^^^X^NH~L-77^^^^", 5: "Doe^Jo", 8: "M"}
    event = only(mapped(mapping, adt("A01", pid=pid)))
    assert (event.person.local_id, event.person.national_id, event.person.sex) == ("L-77", NHS, ce.SEX_MALE)
    # assigning authority NHS with no type; a bad check digit is left out, never echoed
    pid = {1: "1", 3: "H-1^^^RR8^PI~9434765918^^^NHS", 8: "2"}
    out = mapped(mapping, adt("A01", pid=pid))
    event = only(out)
    assert (event.person.local_id, event.person.national_id, event.person.sex) == ("H-1", "", ce.SEX_FEMALE)
    assert [p.field for p in out.degraded] == ["PID-3"]
    assert "9434765918" not in str(out.degraded)


def test_imperfect_person_fields_are_degraded_not_refused(mapping: AdtMapping) -> None:
    pid = {1: "1", 3: "H-1^^^RR8^MR", 5: "Doe^Jo", 7: "19411340", 8: "Q", 11: "1 Road^^Town^^NOT A CODE"}
    out = mapped(mapping, adt("A01", pid=pid))
    event = only(out)
    assert (event.person.birth_date, event.person.sex, event.person.postcode) == ("", ce.SEX_UNSPECIFIED, "")
    assert event.person.address_line == "1 Road"
    assert fields(out) == {"PID-7", "PID-8", "PID-11.5"}
    assert "NOT A CODE" not in str(out.degraded)


def test_admission_method_codes(mapping: AdtMapping) -> None:
    for code, method in (("E", ce.ADMISSION_METHOD_EMERGENCY), ("C", ce.ADMISSION_METHOD_ELECTIVE),
                         ("L", ce.ADMISSION_METHOD_MATERNITY), ("21", ce.ADMISSION_METHOD_EMERGENCY),
                         ("11", ce.ADMISSION_METHOD_ELECTIVE), ("81", ce.ADMISSION_METHOD_TRANSFER)):
        event = only(mapped(mapping, adt("A01", pv1={**PV1_INPATIENT, 4: code})))
        assert event.clinical.admission_method == method, code
    out = mapped(mapping, adt("A01", pv1={**PV1_INPATIENT, 4: "N"}))
    assert out.refusal is not None and (out.refusal.code, out.refusal.field) == ("AE", "PV1-4")
    # an admission source outside the NHS codes is left out
    out = mapped(mapping, adt("A01", pv1={**PV1_INPATIENT, 14: "7"}))
    assert only(out).clinical.admission_source == "" and fields(out) == {"PV1-14"}


# -- times -----------------------------------------------------------------------------------------

def test_transfer_time_prefers_evn_6(mapping: AdtMapping) -> None:
    evn = {1: "A02", 2: "20261001120000", 6: "20261001114500+0000"}
    assert only(mapped(mapping, adt("A02", evn=evn))).event_time.ToDatetime(tzinfo=UTC) == datetime(
        2026, 10, 1, 11, 45, tzinfo=UTC)
    evn = {1: "A02", 2: "20261201120000"}  # GMT in December: local = UTC
    assert only(mapped(mapping, adt("A02", evn=evn))).event_time.ToDatetime(tzinfo=UTC) == datetime(
        2026, 12, 1, 12, 0, tzinfo=UTC)


def test_event_time_falls_back_to_msh_7(mapping: AdtMapping) -> None:
    out = mapped(mapping, adt("A02", evn={1: "A02"}, msh_fields={"f7": "202610011030-0200"}))
    event = only(out)
    assert event.event_time.ToDatetime(tzinfo=UTC) == datetime(2026, 10, 1, 12, 30, tzinfo=UTC)
    assert event.recorded_time == event.event_time
    # an admission without PV1-44 says so, and takes EVN-6
    out = mapped(mapping, adt("A01", pv1={**PV1_INPATIENT, 44: ""}))
    assert only(out).event_time.ToDatetime(tzinfo=UTC) == datetime(2026, 10, 1, 9, 15, tzinfo=UTC)
    assert fields(out) == {"PV1-44"}
    # a date without a time: midnight, noted
    out = mapped(mapping, adt("A01", pv1={**PV1_INPATIENT, 44: "20261001"}))
    assert only(out).event_time.ToDatetime(tzinfo=UTC) == datetime(2026, 9, 30, 23, 0, tzinfo=UTC)
    assert fields(out) == {"PV1-44"}


# -- triggers ----------------------------------------------------------------------------------------

ED = {1: "1", 2: "E", 3: "ED^^^RR8", 19: "ED-5511", 44: "20261001093000"}


def test_a04_by_patient_class(mapping: AdtMapping) -> None:
    event = only(mapped(mapping, adt("A04", pv1=ED)))
    assert event.event_type == ce.EVENT_TYPE_ED_ATTENDANCE
    assert event.event_id == vid("ed_attendance", visit="ED-5511")
    assert event.clinical.spell_id == "ED-5511"
    out = mapped(mapping, adt("A04", pv1={1: "1", 2: "O", 19: "OP-1"}))  # outpatient: accepted, no event
    assert (out.refusal, out.events, out.degraded) == (None, [], [])
    # A01 with class E is an ED attendance too; an unknown class gives nothing, said
    assert only(mapped(mapping, adt("A01", pv1=ED))).event_type == ce.EVENT_TYPE_ED_ATTENDANCE
    out = mapped(mapping, adt("A01", pv1={**PV1_INPATIENT, 2: "Z"}))
    assert out.events == [] and out.refusal is None and fields(out) == {"PV1-2"}
    # an attendance without a visit number: message id, noted
    out = mapped(mapping, adt("A04", pv1={**ED, 19: ""}))
    assert only(out).event_id == message_event_id("PAS", "RR8", "MSG0001", "ed_attendance")
    assert fields(out) == {"PV1-19.1"}


@pytest.mark.parametrize("trigger", ["A05", "A21", "A22"])
def test_ignored_triggers_are_accepted_without_events(mapping: AdtMapping, trigger: str) -> None:
    out = mapped(mapping, adt(trigger))
    assert (out.refusal, out.events, out.trigger) == (None, [], trigger)


def test_a06_admits_the_visit_and_a07_cancels_the_admission(mapping: AdtMapping) -> None:
    admitted = only(mapped(mapping, adt("A06", "M6")))
    assert (admitted.event_type, admitted.event_id) == (ce.EVENT_TYPE_ADMISSION, vid("admission"))
    out = mapped(mapping, adt("A07", "M7", pv1={**PV1_INPATIENT, 2: "E"}))
    assert [e.event_type for e in out.events] == [ce.EVENT_TYPE_CANCELLATION, ce.EVENT_TYPE_ED_ATTENDANCE]
    assert out.events[0].target_event_id == vid("admission")
    assert out.events[1].event_id == vid("ed_attendance")
    out = mapped(mapping, adt("A07", "M8", pv1={**PV1_INPATIENT, 2: "O"}))
    assert [e.target_event_id for e in out.events] == [vid("admission")]


def test_a08_revises_and_never_duplicates(mapping: AdtMapping) -> None:
    admission = only(mapped(mapping, adt("A01", "M1")))
    # the update re-states the admission under the SAME id: ingest drops it as a duplicate when the
    # A01 was seen, and it stands in for an A01 that never arrived
    update = mapped(mapping, adt("A08", "M2", evn={1: "A08", 2: "20261003090000"},
                                 extra=[dg1(1, "J18.1", "F", "1"), dg1(2, "I10", "F", "2"), dg1(3, "R05", "W")]))
    assert update.refusal is None
    restated, coded = update.events
    assert restated.event_id == admission.event_id
    assert restated.event_type == ce.EVENT_TYPE_ADMISSION
    # final diagnoses revise the spell's coding: DIAGNOSIS_CODED, its own (message) id
    assert coded.event_type == ce.EVENT_TYPE_DIAGNOSIS_CODED
    assert coded.event_id == message_event_id("PAS", "RR8", "M2", "diagnoses")
    assert coded.clinical.spell_id == VISIT
    assert [(d.code, d.position, d.provisional) for d in coded.clinical.diagnoses] == [
        ("J18.1", 1, False), ("I10", 2, False)]
    assert "DG1-6" in fields(update)  # the working diagnosis does not revise anything, and it is said
    # a later coding is a new revision (new MSH-10, new id); the same A08 resent is the same event
    again = mapped(mapping, adt("A08", "M3", evn={1: "A08", 2: "20261004090000"}, extra=[dg1(1, "J18.0", "F", "1")]))
    assert again.events[1].event_id != coded.event_id
    assert mapped(mapping, adt("A08", "M2", evn={1: "A08", 2: "20261003090000"},
                               extra=[dg1(1, "J18.1", "F", "1"), dg1(2, "I10", "F", "2")])).events[1] == coded
    # no admit time: nothing to re-state; a discharge time: the discharge, under the A03's id
    assert mapped(mapping, adt("A08", "M4", pv1={**PV1_INPATIENT, 44: ""})).events == []
    out = mapped(mapping, adt("A08", "M5", pv1={**PV1_INPATIENT, 45: "20261005110000"}))
    assert [e.event_id for e in out.events] == [vid("admission"), vid("discharge")]


def test_discharge_and_a13(mapping: AdtMapping) -> None:
    pv1 = {**PV1_INPATIENT, 36: "54", 45: "20261005110000"}
    discharge = only(mapped(mapping, adt("A03", "D1", pv1=pv1)))
    assert (discharge.event_type, discharge.event_id) == (ce.EVENT_TYPE_DISCHARGE, vid("discharge"))
    assert discharge.clinical.discharge_destination == "54"
    assert discharge.event_time.ToDatetime(tzinfo=UTC) == datetime(2026, 10, 5, 10, 0, tzinfo=UTC)
    cancel = only(mapped(mapping, adt("A13", "D2", pv1={1: "1", 2: "I", 19: VISIT})))
    assert cancel.event_type == ce.EVENT_TYPE_CANCELLATION
    assert cancel.target_event_id == discharge.event_id
    assert cancel.event_id == message_event_id("PAS", "RR8", "D2", "cancel:discharge")
    # an ED visit's end is not a discharge
    assert mapped(mapping, adt("A03", "D3", pv1=ED)).events == []
    # a disposition outside the NHS codes is left out, noted
    out = mapped(mapping, adt("A03", "D4", pv1={**pv1, 36: "01"}))
    assert only(out).clinical.discharge_destination == "" and fields(out) == {"PV1-36"}
    # final diagnoses at discharge are a coding
    out = mapped(mapping, adt("A03", "D5", pv1=pv1, extra=[dg1(1, "J18.1", "F", "1")]))
    assert [e.event_type for e in out.events] == [ce.EVENT_TYPE_DISCHARGE, ce.EVENT_TYPE_DIAGNOSIS_CODED]


def test_a11_cancels_what_the_visit_started(mapping: AdtMapping) -> None:
    admission = only(mapped(mapping, adt("A01", "C1")))
    cancel = only(mapped(mapping, adt("A11", "C2", pv1={1: "1", 2: "I", 19: VISIT})))
    assert cancel.target_event_id == admission.event_id
    assert cancel.event_id == message_event_id("PAS", "RR8", "C2", "cancel:admission")
    attendance = only(mapped(mapping, adt("A04", "C3", pv1=ED)))
    cancel = only(mapped(mapping, adt("A11", "C4", pv1={1: "1", 2: "E", 19: "ED-5511"})))
    assert cancel.target_event_id == attendance.event_id
    # no class: both candidates are cancelled (one names nothing, harmlessly), and it is said
    out = mapped(mapping, adt("A11", "C5", pv1={1: "1", 19: VISIT}))
    assert [e.target_event_id for e in out.events] == [vid("admission"), vid("ed_attendance")]
    assert fields(out) == {"PV1-2"}
    # without the visit number nothing can be named: refused
    out = mapped(mapping, adt("A11", "C6", pv1={1: "1", 2: "I"}))
    assert out.refusal is not None and (out.refusal.code, out.refusal.field) == ("AE", "PV1-19.1")


def test_transfer_and_a12(mapping: AdtMapping) -> None:
    pv1 = {**PV1_INPATIENT, 3: "WARD9^^^RR8", 6: "WARD7^^^RR8"}
    evn = {1: "A02", 2: "20261002100500", 6: "20261002100000"}
    transfer = only(mapped(mapping, adt("A02", "T1", evn=evn, pv1=pv1)))
    assert (transfer.event_type, transfer.clinical.location) == (ce.EVENT_TYPE_TRANSFER, "WARD9")
    assert transfer.event_id == vid("transfer", "WARD7", "WARD9", "20261002090000")
    # A12: PV1-3 where the person was before the transfer, PV1-6 where it took them, EVN-6 its time
    cancel = only(mapped(mapping, adt("A12", "T2", evn={1: "A12", 2: "20261002110000", 6: "20261002100000"},
                                      pv1={1: "1", 2: "I", 3: "WARD7", 6: "WARD9", 19: VISIT})))
    assert cancel.target_event_id == transfer.event_id
    # without EVN-6 the transfer cannot be named: accepted, no event, said
    out = mapped(mapping, adt("A12", "T3", evn={1: "A12", 2: "20261002110000"}, pv1={1: "1", 2: "I", 19: VISIT}))
    assert out.events == [] and fields(out) == {"EVN-6"}
    # a move inside ED is not a spell transfer
    assert mapped(mapping, adt("A02", "T4", pv1=ED)).events == []


def test_diagnoses(mapping: AdtMapping) -> None:
    extra = [dg1(1, "I10", priority="2"), dg1(2, "J181", priority="1"), dg1(3, "R05"),
             dg1(4, "NOT-ICD"), dg1(5, "123456", system="SNM"), dg1(6, "E11.9", priority="0", system="")]
    out = mapped(mapping, adt("A01", extra=extra))
    event = only(out)
    assert [(d.code, d.position) for d in event.clinical.diagnoses] == [("I10", 2), ("J181", 1), ("R05", 3),
                                                                        ("E11.9", 4)]
    assert fields(out) == {"DG1-15", "DG1-3.1", "DG1-3.3"}


def test_demographics_register_the_practice(mapping: AdtMapping) -> None:
    event = only(mapped(mapping, adt("A28", "R1", pv1={1: "1", 2: "N"})))
    assert (event.event_type, event.registered_practice) == (ce.EVENT_TYPE_REGISTRATION, "B86001")
    assert event.event_id == message_event_id("PAS", "RR8", "R1", "registration")
    assert mapped(mapping, adt("A31", "R2", pd1={}, pv1={1: "1", 2: "N"})).events == []


def test_a40_merges_each_pair(mapping: AdtMapping) -> None:
    groups = [segment("PID", {1: "1", 3: f"H-1^^^RR8^MR~{NHS}^^^NHS^NH", 5: "Whitfield^Margaret"}),
              segment("MRG", {1: "H-2^^^RR8^MR"}),
              segment("PID", {1: "2", 3: f"H-3^^^RR8^MR~{NHS_2}^^^NHS^NH"}),
              segment("MRG", {1: f"{NHS_2}^^^NHS^NH~H-4^^^RR8^MR"})]
    text = "\r".join([adt("A40", "G1").split("\r")[0], "EVN|A40|20261002080000", *groups])
    out = mapped(mapping, text)
    assert out.refusal is None
    assert [(e.event_type, e.person.local_id, e.merge.prior_local_id) for e in out.events] == [
        (ce.EVENT_TYPE_IDENTITY_MERGE, "H-1", "H-2"), (ce.EVENT_TYPE_IDENTITY_MERGE, "H-3", "H-4")]
    assert out.events[1].person.national_id == NHS_2
    assert len({e.event_id for e in out.events}) == 2
    out = mapped(mapping, "\r".join([adt("A40", "G2").split("\r")[0], "EVN|A40|20261002080000", groups[0]]))
    assert out.refusal is not None and (out.refusal.code, out.refusal.field) == ("AE", "MRG-1")


def test_a47_changes_the_local_number(mapping: AdtMapping) -> None:
    text = adt("A47", "I1", pv1={1: "1", 2: "N"}, extra=[segment("MRG", {1: "OLD-1^^^RR8^MR"})])
    event = only(mapped(mapping, text))
    assert (event.event_type, event.person.local_id, event.merge.prior_local_id) == (
        ce.EVENT_TYPE_IDENTITY_MERGE, "H-99812", "OLD-1")
    same = adt("A47", "I2", pv1={1: "1", 2: "N"}, extra=[segment("MRG", {1: "H-99812^^^RR8^MR"})])
    assert mapped(mapping, same).events == []


# -- ids ---------------------------------------------------------------------------------------------

def test_ids_are_deterministic_and_hold_no_personal_data(mapping: AdtMapping) -> None:
    text = adt("A01", extra=[dg1(1, "N39.0", priority="1")])
    first, second = mapped(mapping, text), mapped(mapping, text)
    assert [e.SerializeToString(deterministic=True) for e in first.events] == [
        e.SerializeToString(deterministic=True) for e in second.events]
    # the visit decides an admission's id, not MSH-10: the same admission in another message
    assert only(mapped(mapping, adt("A01", "OTHER"))).event_id == first.events[0].event_id
    # another sending application is another id space
    other = only(mapped(mapping, adt("A01", msh_fields={"f3": "EDSYS"})))
    assert other.event_id == visit_event_id("EDSYS", "RR8", VISIT, "admission") != first.events[0].event_id
    for value in ("H-99812", NHS, VISIT, "Whitfield"):
        assert value not in first.events[0].event_id
    assert re.fullmatch(r"hl7v2-[0-9a-f]{40}", first.events[0].event_id)


# -- refusals ----------------------------------------------------------------------------------------

def test_refusals(mapping: AdtMapping) -> None:
    def refusal(text: str) -> tuple[str, str | None, str]:
        out = mapped(mapping, text)
        assert out.events == [] and out.refusal is not None
        return out.refusal.code, out.refusal.field, out.refusal.condition

    assert refusal(adt("A01").replace("ADT^A01^ADT_A01", "ORU^R01^ORU_R01")) == ("AR", "MSH-9.1", "200")
    assert refusal(adt("A99")) == ("AR", "MSH-9.2", "201")
    assert refusal(adt("A01", "")) == ("AE", "MSH-10", "101")
    assert refusal(adt("A01", msh_fields={"f4": "ELSEWHERE"})) == ("AR", "MSH-4.1", "204")
    assert refusal(adt("A01", msh_fields={"f12": "2.1"})) == ("AR", "MSH-12.1", "203")
    assert refusal(adt("A01", msh_fields={"f11": "T"})) == ("AR", "MSH-11.1", "202")
    assert refusal("hello") == ("AR", "MSH", "100")
    assert refusal(adt("A01", pid={1: "1", 3: f"{NHS}^^^NHS^NH"})) == ("AE", "PID-3", "101")
    assert refusal(adt("A01", pv1={**PV1_INPATIENT, 19: ""})) == ("AE", "PV1-19.1", "101")
    assert refusal(adt("A02", pv1={**PV1_INPATIENT, 19: ""})) == ("AE", "PV1-19.1", "101")
    # a refused message still says what it was, for the ACK and the log
    out = mapped(mapping, adt("A01", "X-1", msh_fields={"f4": "ELSEWHERE"}))
    assert (out.trigger, out.control_id, out.sending_facility) == ("A01", "X-1", "ELSEWHERE")


def test_unknown_triggers_can_be_accepted(tmp_path: Path) -> None:
    path = copy_mapping(tmp_path, lambda s: s.replace('unknown_triggers = "refuse"', 'unknown_triggers = "accept"'))
    out = map_message(adt("A99"), load_adt_mapping(path))
    assert (out.refusal, out.events, fields(out)) == (None, [], {"MSH-9.2"})


def test_segment_separators_and_blank_lines(mapping: AdtMapping) -> None:
    expected = only(mapped(mapping, adt("A01")))
    assert only(mapped(mapping, adt("A01", separator="\n"))) == expected
    assert only(mapped(mapping, adt("A01", separator="\r\n") + "\r\n")) == expected


def test_python_hl7_sample_outpatient_registration(tmp_path: Path) -> None:
    """python-hl7's own ADT^A04 sample (see tests/hl7v2_messages.py for its source and licence)."""
    path = copy_mapping(tmp_path, lambda s: s, facilities='version = 1\n[[facilities]]\nfacility = "ABCHS"\n'
                                                          'org = "ABCHS"\nsector = "acute"\n')
    mapping = load_adt_mapping(path)
    text = charset.decode(PYTHON_HL7_SAMPLE_A04.encode("ascii"))
    out = map_message(text, mapping)
    assert (out.refusal, out.trigger, out.control_id, out.sending_facility) == (
        None, "A04", "12334456778890", "ABCHS")
    assert out.events == []  # PV1-2 O: an outpatient, no care event
    as_ed = map_message(text.replace("PV1|1|O|", "PV1|1|E|"), mapping)
    event = only(as_ed)
    assert (event.event_type, event.person.local_id) == (ce.EVENT_TYPE_ED_ATTENDANCE, "0000112234")
    assert event.event_time.ToDatetime(tzinfo=UTC) == datetime(2006, 7, 4, 23, 0, tzinfo=UTC)


# -- broken mapping files ------------------------------------------------------------------------------

def copy_mapping(tmp_path: Path, edit: Callable[[str], str], facilities: str | None = None) -> Path:
    target = tmp_path / "adt.toml"
    target.write_text(edit((PACKAGED / "adt.toml").read_text()))
    if facilities is None:
        shutil.copy(PACKAGED / "facilities.toml", tmp_path / "facilities.toml")
    else:
        (tmp_path / "facilities.toml").write_text(facilities)
    return target


def row_index(target: str) -> int:
    return [str(r.target) for r in load_adt_mapping().file.fields].index(target)


@pytest.mark.parametrize(("edit", "entry", "words"), [
    (lambda s: s.replace('target = "person.birth_date"\nconvert = "date"', 'target = "person.birth_date"\n'
                         'convert = "text"'), f"fields[{row_index('person.birth_date')}].convert", "date"),
    (lambda s: s.replace('field = "PID-7"', 'field = "PID7"'), f"fields[{row_index('person.birth_date')}].field",
     "SEG-n"),
    (lambda s: s.replace('field = "PID-8"\n', 'field = "PID-8"\ncolour = "red"\n'),
     f"fields[{row_index('person.sex')}].colour", "unknown key"),
    (lambda s: s.replace('target = "person.given_name"', 'target = "person.family_name"'),
     f"fields[{row_index('person.given_name')}].target", "already mapped"),
    (lambda s: s.replace('target = "person.sex"', 'target = "person.gender"'),
     f"fields[{row_index('person.sex')}].target", "must be one of"),
    (lambda s: s.replace('[tables.sex]  # HL7 table 0001, and the NHS Data Dictionary person stated gender codes\n'
                         'M = "male"', '[tables.sex]\nM = "man"'), "[tables.sex].M", "must be one of"),
    (lambda s: s.replace('[triggers.A05]\naction = "ignore"', '[triggers.A05]\naction = "skip"'),
     "[triggers.A05].action", "must be one of"),
    (lambda s: s.replace('unknown_triggers = "refuse"', 'unknown_triggers = "maybe"'), "unknown_triggers",
     "must be one of"),
    (lambda s: s.replace('timezone = "Europe/London"', 'timezone = "Mars/Olympus"'), "timezone", "IANA"),
    (lambda s: s.replace('match = ["NHS", "NH"]\nnote', 'note'), f"fields[{row_index('person.national_id')}].match",
     "required"),
])
def test_a_broken_mapping_names_the_file_and_row(tmp_path: Path, edit: Callable[[str], str], entry: str,
                                                  words: str) -> None:
    path = copy_mapping(tmp_path, edit)
    with pytest.raises(DefinitionError) as caught:
        load_adt_mapping(path)
    assert caught.value.path == str(path)
    assert any(e == entry and words in p for e, p in caught.value.problems), caught.value.problems
    assert str(path) in str(caught.value)


def test_a_broken_facilities_file_names_the_file_and_row(tmp_path: Path) -> None:
    bad = ('version = 1\n[[facilities]]\nfacility = "A"\norg = "RR8"\nsector = "acute"\n'
           '[[facilities]]\nfacility = "A"\norg = "R R8"\nsector = "hospital"\n')
    path = copy_mapping(tmp_path, lambda s: s, facilities=bad)
    with pytest.raises(DefinitionError) as caught:
        load_adt_mapping(path)
    entries = {e for e, _ in caught.value.problems}
    assert caught.value.path == str(tmp_path / "facilities.toml")
    assert {"facilities[1].org", "facilities[1].sector"} <= entries
    # and the duplicate, once the row is otherwise right
    bad = bad.replace('org = "R R8"\nsector = "hospital"', 'org = "RR8"\nsector = "acute"')
    (tmp_path / "facilities.toml").write_text(bad)
    with pytest.raises(DefinitionError, match=r"facilities\[1\]\.facility 'A' is already listed by facilities\[0\]"):
        load_adt_mapping(path)


def test_a_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = copy_mapping(tmp_path, lambda s: s + "\n[[fields]\n")
    with pytest.raises(DefinitionError, match=re.escape(str(path)) + ": not valid TOML"):
        load_adt_mapping(path)


def test_the_docs_list_every_row_and_trigger(mapping: AdtMapping) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "hl7v2-adt.md").read_text()
    for row in mapping.file.fields:
        assert f"| {row.field} | `{row.target}` |" in doc, row.target
    for trigger in mapping.file.triggers:
        assert re.search(rf"^\| ({trigger}|{trigger}, A\d\d|A\d\d, {trigger}) \|", doc, re.M), trigger
