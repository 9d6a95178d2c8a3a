"""The person timeline as pure state: spells, cancellations, clocks, consent, repeats."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

from carehub.batching import target_partition
from carehub.settings import Settings
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import ingest_pb2 as ing
from carehub.v1 import timeline_pb2 as tl
from services.timeline.app import Timeline
from services.timeline.state import MAX_APPLIED, MAX_SPELLS, PersonState, apply

OCT = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
PERSON = "0b4c3a52-8f1e-4c2e-9a57-1d2f3e4a5b6c"


class Feed:
    """One person's timeline, fed events in link order."""

    def __init__(self) -> None:
        self.state = PersonState.new(PERSON)
        self.timeline = self.state.timeline
        self.sequence = itertools.count(1)

    def linked(self, kind: ce.EventType.ValueType, when: datetime, *, org: str = "RR8", spell: str = "S-1",
               event_id: str | None = None, **clinical: object) -> idn.LinkedEvent:
        event = ing.AcceptedEvent(
            event_id=event_id or str(uuid.uuid4()), schema_version=1, source_org=org,
            source_sector=ce.SECTOR_ACUTE, event_type=kind,
            person=ing.PseudonymisedPerson(local_id=f"L-{org}", age_years=85, sex=ce.SEX_FEMALE),
            clinical=ce.ClinicalDetail(spell_id=spell, **clinical),  # type: ignore[arg-type]
        )
        event.event_time.FromDatetime(when)
        return idn.LinkedEvent(person_id=PERSON, event=event, link_sequence=next(self.sequence))

    def send(self, kind: ce.EventType.ValueType, when: datetime, **kw: object) -> tl.TimelineView:
        out = apply(self.state, self.linked(kind, when, **kw))  # type: ignore[arg-type]
        assert out is not None
        return out.view

    def spell(self, org: str, spell_id: str) -> tl.Spell:
        (found,) = [s for s in self.timeline.spells if (s.org, s.spell_id) == (org, spell_id)]
        return found


def dt(view_ts: object) -> datetime:
    return view_ts.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined,no-any-return]


def test_admission_transfer_discharge_closes_the_spell() -> None:
    f = Feed()
    v = f.send(ce.EVENT_TYPE_ADMISSION, OCT, admission_method=ce.ADMISSION_METHOD_EMERGENCY,
               admission_source="19", diagnoses=[ce.Diagnosis(code="N39.0", position=1, provisional=True)])
    assert v.spell.status == tl.SPELL_STATUS_OPEN and dt(v.spell.admitted_at) == OCT
    assert v.spell.admission_method == ce.ADMISSION_METHOD_EMERGENCY
    assert v.days_since_previous_discharge == -1 and v.prior_ed_attendances_365d == -1
    assert v.age_years == 85 and v.sex == ce.SEX_FEMALE and not v.is_late
    v = f.send(ce.EVENT_TYPE_TRANSFER, OCT + timedelta(hours=5), location="Ward 7")
    assert v.spell.status == tl.SPELL_STATUS_OPEN
    assert (v.spell.transfer_count, v.spell.last_location) == (1, "Ward 7")
    v = f.send(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=3), discharge_destination="19")
    assert v.spell.status == tl.SPELL_STATUS_CLOSED
    assert dt(v.spell.discharged_at) == OCT + timedelta(days=3)
    assert v.spell.discharge_destination == "19" and not v.deceased
    assert len(f.timeline.spells) == 1


def test_late_discharge_closes_the_spell_it_names() -> None:
    f = Feed()
    f.send(ce.EVENT_TYPE_ADMISSION, OCT, org="RR8", spell="S-1")
    f.send(ce.EVENT_TYPE_ADMISSION, OCT + timedelta(days=19), org="RAE", spell="S-1")
    v = f.send(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=4), org="RR8", spell="S-1")
    assert (v.spell.org, v.spell.spell_id, v.spell.status) == ("RR8", "S-1", tl.SPELL_STATUS_CLOSED)
    assert v.is_late
    assert f.spell("RAE", "S-1").status == tl.SPELL_STATUS_OPEN
    assert not f.spell("RAE", "S-1").HasField("discharged_at")


def test_discharge_before_its_admission_creates_the_spell() -> None:
    f = Feed()
    v = f.send(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=2))
    assert v.spell.status == tl.SPELL_STATUS_CLOSED and not v.spell.HasField("admitted_at")
    v = f.send(ce.EVENT_TYPE_ADMISSION, OCT)
    assert v.spell.status == tl.SPELL_STATUS_CLOSED and dt(v.spell.admitted_at) == OCT
    assert v.is_late and len(f.timeline.spells) == 1


def test_cancelled_admission_is_retracted_and_a_cancelled_discharge_reopens() -> None:
    f = Feed()
    f.send(ce.EVENT_TYPE_ADMISSION, OCT, spell="S-1", event_id="a1")
    cancel = f.linked(ce.EVENT_TYPE_CANCELLATION, OCT + timedelta(hours=1), spell="")
    cancel.event.target_event_id = "a1"
    cancel.event.source_org = "RAE"  # another organisation's a1: not this admission
    out = apply(f.state, cancel)
    assert out is not None and not out.view.HasField("spell")
    assert list(f.timeline.cancelled_event_keys) == ["RAE/a1"]  # remembered, in case it comes later
    assert f.spell("RR8", "S-1").status == tl.SPELL_STATUS_OPEN
    cancel = f.linked(ce.EVENT_TYPE_CANCELLATION, OCT + timedelta(hours=1), spell="")
    cancel.event.target_event_id = "a1"
    out = apply(f.state, cancel)
    assert out is not None and out.view.spell.status == tl.SPELL_STATUS_CANCELLED

    f.send(ce.EVENT_TYPE_ADMISSION, OCT + timedelta(days=1), spell="S-2", event_id="a2")
    f.send(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=3), spell="S-2", event_id="d2",
           discharge_destination="79")
    assert f.spell("RR8", "S-2").status == tl.SPELL_STATUS_CLOSED and f.timeline.HasField("died_at")
    cancel = f.linked(ce.EVENT_TYPE_CANCELLATION, OCT + timedelta(days=3, hours=1), spell="")
    cancel.event.target_event_id = "d2"
    out = apply(f.state, cancel)
    assert out is not None
    spell = out.view.spell
    assert (spell.spell_id, spell.status) == ("S-2", tl.SPELL_STATUS_OPEN)
    assert not spell.HasField("discharged_at") and spell.discharge_destination == ""
    assert not out.view.deceased  # the death came with the discharge that was cancelled

    # a cancelled admission is no previous discharge; a cancellation that came first still applies
    cancel = f.linked(ce.EVENT_TYPE_CANCELLATION, OCT + timedelta(days=5), spell="")
    cancel.event.target_event_id = "a3"
    assert apply(f.state, cancel) is not None
    v = f.send(ce.EVENT_TYPE_ADMISSION, OCT + timedelta(days=4), spell="S-3", event_id="a3")
    assert v.spell.status == tl.SPELL_STATUS_CANCELLED and v.days_since_previous_discharge == -1


def test_coded_diagnoses_replace_provisional_ones() -> None:
    f = Feed()
    v = f.send(ce.EVENT_TYPE_ADMISSION, OCT, diagnoses=[ce.Diagnosis(code="N39.0", position=1, provisional=True)])
    assert (v.spell.primary_diagnosis, v.spell.primary_diagnosis_provisional) == ("N39.0", True)
    v = f.send(ce.EVENT_TYPE_DIAGNOSIS_CODED, OCT + timedelta(days=9), diagnoses=[
        ce.Diagnosis(code="E86", position=2), ce.Diagnosis(code="J18.1", position=1)])
    assert (v.spell.primary_diagnosis, v.spell.primary_diagnosis_provisional) == ("J18.1", False)
    # an older coding arriving later does not replace the newer one
    v = f.send(ce.EVENT_TYPE_DIAGNOSIS_CODED, OCT + timedelta(days=8), diagnoses=[ce.Diagnosis(code="I50", position=1)])
    assert v.spell.primary_diagnosis == "J18.1"


def test_days_since_previous_discharge() -> None:
    f = Feed()
    f.send(ce.EVENT_TYPE_ADMISSION, OCT - timedelta(days=6), org="RR8", spell="S-1")
    f.send(ce.EVENT_TYPE_DISCHARGE, OCT.replace(hour=18), org="RR8", spell="S-1")
    v = f.send(ce.EVENT_TYPE_ADMISSION, OCT.replace(day=20, hour=9), org="RAE", spell="S-7")
    assert v.days_since_previous_discharge == 19  # 1 Oct -> 20 Oct, any organisation
    # an admission earlier than that discharge, arriving late, looks only at discharges before it
    v = f.send(ce.EVENT_TYPE_ADMISSION, OCT - timedelta(days=40), org="RR8", spell="S-0")
    assert v.days_since_previous_discharge == -1 and v.is_late


def test_prior_ed_attendances_in_365_days() -> None:
    f = Feed()
    now = OCT
    for days in (10, 400, 200, 300):  # out of order, one too old to count
        v = f.send(ce.EVENT_TYPE_ED_ATTENDANCE, now - timedelta(days=days), org="RR8ED")
    v = f.send(ce.EVENT_TYPE_ED_ATTENDANCE, now, org="RR8ED")
    assert v.prior_ed_attendances_365d == 3
    times = [a.at.ToDatetime(tzinfo=UTC) for a in f.timeline.ed_attendances]
    assert times == sorted(times) and len(times) == 4  # the 400-day one is outside the window kept
    v = f.send(ce.EVENT_TYPE_ED_ATTENDANCE, now - timedelta(days=5), org="RR8ED")  # late: counts by event time
    assert v.prior_ed_attendances_365d == 3 and v.is_late
    cancel = f.linked(ce.EVENT_TYPE_CANCELLATION, now, org="RR8ED", spell="")
    cancel.event.target_event_id = f.timeline.ed_attendances[0].event_id  # 300 days before
    assert apply(f.state, cancel) is not None
    v = f.send(ce.EVENT_TYPE_ED_ATTENDANCE, now + timedelta(days=1), org="RR8ED")
    assert v.prior_ed_attendances_365d == 4  # 200 and 10 days before, the late one at 5, and "now"


def test_consent_opt_out_applies_to_the_next_event_whatever_its_time() -> None:
    f = Feed()
    v = f.send(ce.EVENT_TYPE_GP_CONTACT, OCT, org="B86001")
    assert not v.planning_opt_out
    consent = f.linked(ce.EVENT_TYPE_CONSENT_CHANGE, OCT + timedelta(days=10), org="B86001")
    consent.event.consent.planning_opt_out = True
    out = apply(f.state, consent)
    assert out is not None and out.view.planning_opt_out and not out.view.direct_care_opt_out
    v = f.send(ce.EVENT_TYPE_GP_CONTACT, OCT + timedelta(days=2), org="B86001")  # earlier than the change
    assert v.planning_opt_out and v.is_late
    assert f.timeline.consent.changed_at_sequence == consent.link_sequence


def test_a_repeated_event_changes_nothing() -> None:
    f = Feed()
    admission = f.linked(ce.EVENT_TYPE_ADMISSION, OCT)
    assert apply(f.state, admission) is not None
    before = f.state.to_bytes()
    assert apply(f.state, admission) is None
    assert f.state.to_bytes() == before
    for i in range(MAX_APPLIED + 10):
        f.send(ce.EVENT_TYPE_GP_CONTACT, OCT + timedelta(minutes=i), org="B86001")
    assert len(f.state.applied) == MAX_APPLIED
    assert len(PersonState.from_bytes(f.state.to_bytes()).applied) == MAX_APPLIED
    assert apply(f.state, admission) is not None  # forgotten after 2,000 newer events


def test_death_and_care_home_and_registration() -> None:
    f = Feed()
    v = f.send(ce.EVENT_TYPE_ADMISSION, OCT, admission_source="54")
    assert v.care_home_resident and not v.deceased
    reg = f.linked(ce.EVENT_TYPE_REGISTRATION, OCT + timedelta(days=1), org="B86001")
    reg.event.registered_practice, reg.event.locality = "B86001", "Leeds North"
    old = f.linked(ce.EVENT_TYPE_REGISTRATION, OCT - timedelta(days=100), org="B86099")
    old.event.registered_practice, old.event.locality = "B86099", "Leeds South"
    assert apply(f.state, reg) is not None
    out = apply(f.state, old)
    assert out is not None and (out.view.registered_practice, out.view.locality) == ("B86001", "Leeds North")
    v = f.send(ce.EVENT_TYPE_DEATH, OCT + timedelta(days=2), org="B86001")
    assert v.deceased
    assert {(r.org, r.local_id) for r in f.timeline.local_records} == {("RR8", "L-RR8"), ("B86001", "L-B86001"),
                                                                      ("B86099", "L-B86099")}
    assert f.timeline.involvement["B86001"].sector == ce.SECTOR_ACUTE


def test_identity_merge_passes_through_with_a_view() -> None:
    f = Feed()
    merge = f.linked(ce.EVENT_TYPE_IDENTITY_MERGE, OCT)
    merge.event.merge.prior_local_id = "L-old"
    out = apply(f.state, merge)
    assert out is not None and out.linked == merge and not out.view.HasField("spell")


def test_batch_writes_each_touched_person_once_and_routes_by_person() -> None:
    settings = Settings(partitions=4)
    table: dict[str, bytes] = {}
    timeline = Timeline(settings, table, out=None)
    f, g = Feed(), Feed()
    g.timeline.person_id = "another-person"
    first = idn.LinkedBatch(events=[f.linked(ce.EVENT_TYPE_ADMISSION, OCT), f.linked(ce.EVENT_TYPE_DISCHARGE, OCT)])
    other = g.linked(ce.EVENT_TYPE_GP_CONTACT, OCT, org="B86001")
    other.person_id = "another-person"
    second = idn.LinkedBatch(events=[other, first.events[0]])  # the admission again: a repeat
    outgoing, by_tag = timeline.apply_records([(("t", 0), first.SerializeToString()),
                                               (("t", 1), second.SerializeToString())])
    assert {tag: set(p) for tag, p in by_tag.items()} == {("t", 0): {PERSON}, ("t", 1): {"another-person"}}
    assert sum(len(v) for v in outgoing.values()) == 3
    assert [e.linked.person_id for e in outgoing[target_partition(PERSON, 4)]].count(PERSON) == 2
    for timelines in by_tag.values():
        timeline.write(timelines)
    stored = tl.PersonTimeline.FromString(table[PERSON])
    assert stored.spells[0].status == tl.SPELL_STATUS_CLOSED
    outgoing, by_tag = timeline.apply_records([(("t", 0), first.SerializeToString())])  # replayed after a crash
    assert outgoing == {} and by_tag == {}


def test_spells_kept_are_bounded_keeping_open_ones() -> None:
    f = Feed()
    f.send(ce.EVENT_TYPE_ADMISSION, OCT - timedelta(days=3000), spell="OPEN")
    for i in range(MAX_SPELLS + 5):
        f.send(ce.EVENT_TYPE_ADMISSION, OCT + timedelta(days=2 * i), spell=f"S-{i}")
        v = f.send(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=2 * i, hours=5), spell=f"S-{i}")
    assert v.spell.spell_id == f"S-{MAX_SPELLS + 4}" and v.spell.status == tl.SPELL_STATUS_CLOSED
    kept = {s.spell_id for s in f.timeline.spells}
    assert len(kept) == MAX_SPELLS and "OPEN" in kept and "S-0" not in kept
