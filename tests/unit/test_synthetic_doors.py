"""The synthetic region's door traffic (carehub/synthetic/doors.py) read back by the hub's own mappers.

Every hospital visit event of a small region is written as HL7 v2 ADT and as a FHIR notification
Bundle, then mapped back with the real MLLP and FHIR mappings (no server, no socket): the events
must say what the original said, under the door's own ids, and a discharge or a cancellation
must find the admission that came through the same door.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import orjson
import pytest

from carehub.domain.fhir.bundle import parse_bundle
from carehub.domain.fhir.mapping import FhirMapping, load_fhir_mapping, map_bundle
from carehub.domain.fhir.senders import Sender
from carehub.domain.hl7v2.mapping import AdtMapping, load_adt_mapping, map_message
from carehub.synthetic import RegionConfig, generate_region
from carehub.synthetic.doors import (
    DOOR_EVENT_TYPES,
    SHARE,
    Door,
    DoorMessage,
    Router,
    control_id,
    facilities_by_org,
    spell_bucket,
    to_fhir,
    to_hl7,
    translate,
)
from carehub.synthetic.region import KIND_VALID, Region, decode
from carehub.v1 import care_event_pb2 as pb


@pytest.fixture(scope="module")
def region() -> Region:
    # more cancellations than the default so that a small region is sure to have some
    return generate_region(RegionConfig(people=1500, seed=7, cancellation_share=0.03))


@pytest.fixture(scope="module")
def adt() -> AdtMapping:
    return load_adt_mapping()


@pytest.fixture(scope="module")
def fhir() -> FhirMapping:
    return load_fhir_mapping()


@pytest.fixture(scope="module")
def hospitals(region: Region) -> set[str]:
    return {org.code for org in region.directory.hospitals}


@pytest.fixture(scope="module")
def visit_events(region: Region, hospitals: set[str]) -> list[pb.CareEvent]:
    """The hospitals' visit events (valid records only), in publish order."""
    out = []
    for record in region.records:
        if record.kind != KIND_VALID:
            continue
        event = decode(record)
        if event.source_org in hospitals and event.event_type in DOOR_EVENT_TYPES:
            out.append(event)
    return out


def hl7_back(message: DoorMessage, adt: AdtMapping) -> list[pb.CareEvent]:
    assert message.door == Door.MLLP
    text = message.body.decode("ascii")  # escaped: plain ASCII whatever the names hold
    mapped = map_message(text, adt)
    assert mapped.refusal is None, (mapped.refusal, text)
    assert len(mapped.events) == message.events
    return mapped.events


def fhir_back(message: DoorMessage, fhir: FhirMapping) -> list[pb.CareEvent]:
    assert message.door == Door.FHIR
    bundle = parse_bundle(message.body, ("message",))  # validates against the FHIR models
    mapped = map_bundle(bundle, message.body, Sender(message.org, pb.SECTOR_ACUTE), fhir)
    assert mapped.accepted, mapped.refusal
    assert len(mapped.events) == message.events
    return mapped.events


def same_person_and_visit(original: pb.CareEvent, back: pb.CareEvent, spell: str) -> None:
    assert back.event_type == original.event_type
    assert back.event_time == original.event_time
    assert back.source_org == original.source_org
    assert back.event_id != original.event_id  # the door's own id
    person, got = original.person, back.person
    assert got.local_id == person.local_id
    assert got.national_id == person.national_id
    assert (got.given_name, got.family_name, got.birth_date, got.sex) == (
        person.given_name, person.family_name, person.birth_date, person.sex)
    assert got.postcode == " ".join(person.postcode.split()).upper()
    assert got.address_line == person.address_line
    assert back.registered_practice == original.registered_practice
    assert back.clinical.spell_id == spell
    if original.event_type == pb.EVENT_TYPE_ADMISSION:
        assert back.clinical.admission_method == original.clinical.admission_method
        assert back.clinical.admission_source == original.clinical.admission_source
    else:
        # a discharge carries no admission method at either door: the spell's admission has it
        assert back.clinical.admission_method == pb.ADMISSION_METHOD_UNSPECIFIED
    if original.event_type in (pb.EVENT_TYPE_ADMISSION, pb.EVENT_TYPE_ED_ATTENDANCE):
        assert list(back.clinical.diagnoses) == [d for d in original.clinical.diagnoses if d.provisional]
    if original.event_type == pb.EVENT_TYPE_DISCHARGE:
        assert back.clinical.discharge_destination == original.clinical.discharge_destination
    if original.event_type == pb.EVENT_TYPE_TRANSFER:
        assert back.clinical.location == original.clinical.location


def test_every_visit_event_round_trips_through_hl7_v2(region: Region, visit_events: list[pb.CareEvent],
                                                      adt: AdtMapping) -> None:
    facilities = facilities_by_org(adt.facilities)
    events = [e for e in visit_events if e.source_org in facilities]
    assert {e.event_type for e in events} == DOOR_EVENT_TYPES, "the region should have every kind of visit event"
    admissions: dict[str, str] = {}  # spell -> the door's admission id
    seen: Counter[str] = Counter()
    for original in events:
        message = to_hl7(original, facilities[original.source_org])
        assert len(control_id(original)) <= 20
        (back,) = hl7_back(message, adt)
        seen[pb.EventType.Name(original.event_type)] += 1
        if original.event_type == pb.EVENT_TYPE_CANCELLATION:
            assert back.event_type == original.event_type and back.event_time == original.event_time
            assert back.person.local_id == original.person.local_id
            assert back.clinical.spell_id == original.clinical.spell_id
            # A11 names the admission by its visit: the id the same door gave it
            assert back.target_event_id == admissions[original.clinical.spell_id]
            continue
        same_person_and_visit(original, back, original.clinical.spell_id)
        assert back.recorded_time == original.recorded_time
        if original.event_type == pb.EVENT_TYPE_ADMISSION:
            admissions[original.clinical.spell_id] = back.event_id
    assert seen["EVENT_TYPE_CANCELLATION"] > 0 and seen["EVENT_TYPE_TRANSFER"] > 0


def test_every_visit_event_round_trips_through_fhir(visit_events: list[pb.CareEvent], fhir: FhirMapping) -> None:
    admissions: dict[str, str] = {}
    discharges: dict[str, str] = {}
    for original in visit_events:
        message = to_fhir(original)
        back = fhir_back(message, fhir)
        spell = original.clinical.spell_id
        if original.event_type == pb.EVENT_TYPE_CANCELLATION:
            # an Encounter entered in error withdraws its admission and its discharge
            assert [e.event_type for e in back] == [pb.EVENT_TYPE_CANCELLATION] * 2
            assert back[0].target_event_id == admissions[spell]
            assert all(e.event_time == original.event_time and e.clinical.spell_id == spell for e in back)
            assert all(e.person.local_id == original.person.local_id for e in back)
            assert all(e.person.national_id == original.person.national_id for e in back)
            continue
        (one,) = back
        same_person_and_visit(original, one, spell)
        assert one.recorded_time == original.recorded_time
        if original.event_type == pb.EVENT_TYPE_ADMISSION:
            admissions[spell] = one.event_id
        if original.event_type == pb.EVENT_TYPE_DISCHARGE:
            discharges[spell] = one.event_id
    assert admissions and discharges and set(discharges) & set(admissions), "spells seen from start to end"


def test_a_resend_is_the_same_message_so_the_door_gives_the_same_ids(visit_events: list[pb.CareEvent],
                                                                     adt: AdtMapping, fhir: FhirMapping) -> None:
    admission = next(e for e in visit_events if e.event_type == pb.EVENT_TYPE_ADMISSION and e.source_org == "RR8")
    discharge = next(e for e in visit_events if e.event_type == pb.EVENT_TYPE_DISCHARGE
                     and e.clinical.spell_id == admission.clinical.spell_id)
    assert to_hl7(admission, "RR8") == to_hl7(admission, "RR8")
    assert to_fhir(admission) == to_fhir(admission)
    # the admission and the discharge of one spell are one visit at each door
    hl7_ids = [hl7_back(to_hl7(e, "RR8"), adt)[0] for e in (admission, discharge)]
    fhir_ids = [fhir_back(to_fhir(e), fhir)[0] for e in (admission, discharge)]
    for a, d in (hl7_ids, fhir_ids):
        assert a.clinical.spell_id == d.clinical.spell_id
        assert a.event_id != d.event_id


def awkward(event: pb.CareEvent) -> pb.CareEvent:
    out = pb.CareEvent()
    out.CopyFrom(event)
    out.person.given_name = "Zoë-Anne"
    out.person.family_name = "O'Brien|Smith^Jones~&\\"
    out.person.address_line = "Flat 2 & 3, Søndergade"
    out.person.postcode = "ls1  4ap"
    return out


def test_names_with_separators_and_accents_survive_both_doors(visit_events: list[pb.CareEvent], adt: AdtMapping,
                                                              fhir: FhirMapping) -> None:
    for kind in (pb.EVENT_TYPE_ADMISSION, pb.EVENT_TYPE_TRANSFER):
        original = awkward(next(e for e in visit_events if e.event_type == kind))
        (hl7,) = hl7_back(to_hl7(original, "RR8"), adt)
        (fh,) = fhir_back(to_fhir(original), fhir)
        for back in (hl7, fh):
            assert back.person.given_name == "Zoë-Anne"
            assert back.person.family_name == "O'Brien|Smith^Jones~&\\"
            assert back.person.address_line == "Flat 2 & 3, Søndergade"
            assert back.person.postcode == "LS1 4AP"
    transfer = pb.CareEvent()
    transfer.CopyFrom(next(e for e in visit_events if e.event_type == pb.EVENT_TYPE_TRANSFER))
    transfer.clinical.location = "Trauma & Orthopaedics"
    assert hl7_back(to_hl7(transfer, "RR8"), adt)[0].clinical.location == "Trauma & Orthopaedics"


def test_an_event_without_an_nhs_number_or_demographics_still_maps(visit_events: list[pb.CareEvent],
                                                                   adt: AdtMapping, fhir: FhirMapping) -> None:
    bare = pb.CareEvent()
    bare.CopyFrom(next(e for e in visit_events if e.event_type == pb.EVENT_TYPE_ED_ATTENDANCE))
    bare.person.Clear()
    bare.person.local_id = "H-1"
    bare.ClearField("registered_practice")
    bare.ClearField("recorded_time")
    for back in (hl7_back(to_hl7(bare, "RR8"), adt)[0], fhir_back(to_fhir(bare), fhir)[0]):
        assert back.person.local_id == "H-1" and not back.person.national_id
        assert back.event_time == bare.event_time


def test_translate_refuses_what_has_no_door(visit_events: list[pb.CareEvent]) -> None:
    coded = pb.CareEvent(event_type=pb.EVENT_TYPE_DIAGNOSIS_CODED, source_org="RR8")
    coded.clinical.spell_id = "S1"
    with pytest.raises(ValueError):
        to_hl7(coded, "RR8")
    with pytest.raises(ValueError):
        to_fhir(coded)
    with pytest.raises(ValueError):
        translate(visit_events[0], Door.SDK, {})


def events_by_spell(events: list[pb.CareEvent]) -> Iterator[tuple[tuple[str, str], list[pb.CareEvent]]]:
    spells: dict[tuple[str, str], list[pb.CareEvent]] = {}
    for e in events:
        spells.setdefault((e.source_org, e.clinical.spell_id), []).append(e)
    yield from spells.items()


def test_a_spell_takes_one_door_and_each_door_gets_a_share(region: Region, visit_events: list[pb.CareEvent],
                                                           adt: AdtMapping, hospitals: set[str]) -> None:
    facilities = facilities_by_org(adt.facilities)
    router = Router(hospitals, facilities)
    doors: Counter[Door] = Counter()
    for (org, spell), events in events_by_spell(visit_events):
        chosen = {router.door(e) for e in events}
        assert len(chosen) == 1, "every event of a spell goes through the same door"
        door = chosen.pop()
        doors[door] += 1
        if door == Door.MLLP:
            assert org in facilities
        assert door == router.spell_door(org, spell)
        assert spell_bucket(org, spell) == spell_bucket(org, spell) < SHARE
    total = sum(doors.values())
    assert 0.05 < doors[Door.FHIR] / total < 0.15
    assert doors[Door.MLLP] > 0
    # only organisations with a sending facility go over MLLP (the packaged file knows RR8)
    assert set(facilities) == {"RR8"}
    # everything else (GP contacts, mental health, coded diagnoses, deaths) stays on the SDK feed
    for record in region.records[:3000]:
        if record.kind != KIND_VALID:
            continue
        event = decode(record)
        if event.event_type not in DOOR_EVENT_TYPES or event.source_org not in hospitals:
            assert router.door(event) == Door.SDK


def test_a_bundle_is_fhir_json_and_an_hl7_message_is_cr_separated(visit_events: list[pb.CareEvent]) -> None:
    event = next(e for e in visit_events if e.event_type == pb.EVENT_TYPE_ADMISSION)
    bundle = orjson.loads(to_fhir(event).body)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "message"
    assert bundle["entry"][0]["resource"]["resourceType"] == "MessageHeader"
    text = to_hl7(event, "RR8").body.decode("ascii")
    segments = text.rstrip("\r").split("\r")
    assert [s[:3] for s in segments][:3] == ["MSH", "EVN", "PID"] and "\n" not in text
    assert segments[0].split("|")[3] == "RR8" and segments[0].split("|")[8] == "ADT^A01^ADT_A01"
