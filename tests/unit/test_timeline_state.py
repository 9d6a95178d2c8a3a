"""The person timeline as pure state: spells, cancellations, clocks, consent, repeats."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from carehub.domain.timeline import (
    MAX_APPLIED,
    MAX_SPELLS,
    PersonState,
    Step,
    apply,
    merge_states,
    receive,
    recipient,
    split,
    step,
)
from carehub.kafka.batching import target_partition
from carehub.settings import Settings
from carehub.topics import timeline_handover_topic as handover_topic
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import ingest_pb2 as ing
from carehub.v1 import timeline_pb2 as tl
from services.timeline.app import Timeline

OCT = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
PERSON = "0b4c3a52-8f1e-4c2e-9a57-1d2f3e4a5b6c"


class Feed:
    """One person's timeline, fed events in link order."""

    def __init__(self, person_id: str = PERSON, local_id: str = "",
                 sequence: Iterator[int] | None = None) -> None:
        self.person_id, self.local_id = person_id, local_id
        self.state = PersonState.new(person_id)
        self.sequence = sequence or itertools.count(1)

    @property
    def timeline(self) -> tl.PersonTimeline:
        return self.state.timeline  # replaced whole by a merge or an un-merge

    def linked(self, kind: ce.EventType.ValueType, when: datetime, *, org: str = "RR8", spell: str = "S-1",
               event_id: str | None = None, **clinical: object) -> idn.LinkedEvent:
        event = ing.AcceptedEvent(
            event_id=event_id or str(uuid.uuid4()), schema_version=1, source_org=org,
            source_sector=ce.SECTOR_ACUTE, event_type=kind,
            person=ing.PseudonymisedPerson(local_id=self.local_id or f"L-{org}", age_years=85, sex=ce.SEX_FEMALE),
            clinical=ce.ClinicalDetail(spell_id=spell, **clinical),  # type: ignore[arg-type]
        )
        event.event_time.FromDatetime(when)
        return idn.LinkedEvent(person_id=self.person_id, event=event, link_sequence=next(self.sequence))

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
    for days in (10, 400, 200, 300, 800):  # out of order, two too old to count, one too old to keep
        v = f.send(ce.EVENT_TYPE_ED_ATTENDANCE, now - timedelta(days=days), org="RR8ED", spell="")
    v = f.send(ce.EVENT_TYPE_ED_ATTENDANCE, now, org="RR8ED", spell="")
    assert v.prior_ed_attendances_365d == 3
    times = [a.at.ToDatetime(tzinfo=UTC) for a in f.timeline.ed_attendances]
    # two years are kept (the indicators' 12-month windows look a year further back): not the 800-day one
    assert times == sorted(times) and len(times) == 5
    # late: counts by event time
    v = f.send(ce.EVENT_TYPE_ED_ATTENDANCE, now - timedelta(days=5), org="RR8ED", spell="")
    assert v.prior_ed_attendances_365d == 3 and v.is_late
    cancel = f.linked(ce.EVENT_TYPE_CANCELLATION, now, org="RR8ED", spell="")
    cancel.event.target_event_id = f.timeline.ed_attendances[1].event_id  # 300 days before (after the 400-day one)
    assert apply(f.state, cancel) is not None
    v = f.send(ce.EVENT_TYPE_ED_ATTENDANCE, now + timedelta(days=1), org="RR8ED", spell="")
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
    outgoing, by_tag, _ = timeline.apply_records([(("t", 0), first.SerializeToString()),
                                               (("t", 1), second.SerializeToString())])
    assert {tag: set(p) for tag, p in by_tag.items()} == {("t", 0): {PERSON}, ("t", 1): {"another-person"}}
    assert sum(len(v) for v in outgoing.values()) == 3
    assert [e.linked.person_id for e in outgoing[target_partition(PERSON, 4)]].count(PERSON) == 2
    for timelines in by_tag.values():
        timeline.write(timelines)
    stored = tl.PersonTimeline.FromString(table[PERSON])
    assert stored.spells[0].status == tl.SPELL_STATUS_CLOSED
    outgoing, by_tag, _ = timeline.apply_records([(("t", 0), first.SerializeToString())])  # replayed after a crash
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


SURVIVOR, ABSORBED = "person-a", "person-b"


def merge_copies(f: Feed, when: datetime, unmerge: bool = False,
                 moved: tuple[tuple[str, str], ...] = (("RR8", "H-2"),)) -> tuple[idn.LinkedEvent, idn.LinkedEvent]:
    """The two copies identity sends of an A40 at RR8 under H-1 (the survivor's record): (into, from)."""
    into = f.linked(ce.EVENT_TYPE_IDENTITY_MERGE, when, spell="")
    into.event.merge.prior_local_id, into.event.merge.unmerge = "H-2", unmerge
    into.person_id = SURVIVOR
    into.merge.CopyFrom(idn.PersonMerge(
        from_person_id=ABSORBED, into_person_id=SURVIVOR, unmerge=unmerge,
        moved_records=[idn.LocalRecord(source_org=o, local_id=local) for o, local in moved]))
    other = idn.LinkedEvent()
    other.CopyFrom(into)
    other.person_id = ABSORBED
    return into, other


def spell_ids(f: Feed) -> set[str]:
    return {s.spell_id for s in f.timeline.spells}


def test_merge_hands_the_history_over_and_unmerge_splits_it_again() -> None:
    seq = itertools.count(1)
    a, b = Feed(SURVIVOR, "H-1", seq), Feed(ABSORBED, "H-2", seq)
    a.send(ce.EVENT_TYPE_ED_ATTENDANCE, OCT - timedelta(days=60), spell="")
    b.send(ce.EVENT_TYPE_ED_ATTENDANCE, OCT - timedelta(days=30), spell="")
    b.send(ce.EVENT_TYPE_ADMISSION, OCT, spell="S-A")
    b.send(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=4), spell="S-A", discharge_destination="19")
    consent = b.linked(ce.EVENT_TYPE_CONSENT_CHANGE, OCT + timedelta(days=4))
    consent.event.consent.planning_opt_out = True
    assert apply(b.state, consent) is not None

    into, other = merge_copies(a, OCT + timedelta(days=5))
    before = a.state.to_bytes()
    assert step(a.state, into) == Step() and a.state.to_bytes() == before  # acted on when the handover comes
    done = step(b.state, other)
    assert done.event is not None and done.event.linked.person_id == ABSORBED
    handover = done.handover
    assert handover is not None and not handover.unmerge and recipient(handover) == SURVIVOR
    assert handover.merge_event_id == into.event.event_id
    assert b.timeline.merged_into == SURVIVOR and not b.timeline.spells and not b.timeline.ed_attendances
    assert step(b.state, other) == Step()  # a repeat sends nothing again

    got = receive(a.state, handover)
    assert got.event is not None and got.handover is None and got.event.linked.person_id == SURVIVOR
    assert got.event.view.planning_opt_out  # the absorbed person's consent came later in link order
    assert receive(a.state, handover) == Step()  # a repeated handover changes nothing
    assert step(a.state, into) == Step()
    assert spell_ids(a) == {"S-A"} and {(r.org, r.local_id) for r in a.timeline.local_records} >= {("RR8", "H-2")}
    assert set(a.timeline.absorbed) == {ABSORBED}

    v = a.send(ce.EVENT_TYPE_ADMISSION, OCT + timedelta(days=14), spell="S-B")
    assert v.days_since_previous_discharge == 10  # S-A's discharge, under the absorbed record
    v = a.send(ce.EVENT_TYPE_ED_ATTENDANCE, OCT + timedelta(days=15), spell="")
    assert v.prior_ed_attendances_365d == 2  # one under each record
    moved_later = a.linked(ce.EVENT_TYPE_ADMISSION, OCT + timedelta(days=16), spell="S-D")
    moved_later.event.person.local_id = "H-2"  # after the merge, H-2's events come to the survivor
    assert apply(a.state, moved_later) is not None

    into, other = merge_copies(a, OCT + timedelta(days=17), unmerge=True)
    assert step(b.state, other) == Step()  # the restored person waits for its handover
    done = step(a.state, into)
    assert done.event is not None and done.handover is not None
    assert done.handover.unmerge and recipient(done.handover) == ABSORBED
    assert spell_ids(a) == {"S-B"} and not a.timeline.absorbed
    assert len(a.timeline.ed_attendances) == 2 and not a.timeline.consent.planning_opt_out
    assert ("RR8", "H-2") not in {(r.org, r.local_id) for r in a.timeline.local_records}
    assert apply(a.state, moved_later) is None  # seen: still a repeat for the survivor

    got = receive(b.state, done.handover)
    assert got.event is not None and got.event.linked.person_id == ABSORBED and got.event.view.planning_opt_out
    assert b.timeline.merged_into == "" and b.timeline.person_id == ABSORBED
    assert spell_ids(b) == {"S-A", "S-D"} and len(b.timeline.ed_attendances) == 1
    assert receive(b.state, done.handover) == Step()

    assert a.send(ce.EVENT_TYPE_ADMISSION, OCT + timedelta(days=20), spell="S-C").days_since_previous_discharge == -1
    b.send(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=18), spell="S-D")
    assert b.send(ce.EVENT_TYPE_ADMISSION, OCT + timedelta(days=21), spell="S-E").days_since_previous_discharge == 3


def test_merge_states_joins_both_histories() -> None:
    seq = itertools.count(1)
    a, b = Feed(SURVIVOR, "H-1", seq), Feed(ABSORBED, "H-2", seq)
    a.send(ce.EVENT_TYPE_ADMISSION, OCT, spell="S-1", event_id="adm")
    b.send(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=3), spell="S-1", event_id="dis")  # the same spell
    for f, days in ((a, 10), (b, 5), (b, 10)):
        f.send(ce.EVENT_TYPE_ED_ATTENDANCE, OCT - timedelta(days=days), org="RR8ED", event_id=f"ed{days}", spell="")
    a.send(ce.EVENT_TYPE_ED_ATTENDANCE, OCT - timedelta(days=7), org="RR8ED", event_id="ed7", spell="")
    reg = b.linked(ce.EVENT_TYPE_REGISTRATION, OCT + timedelta(days=1), org="B86001")
    reg.event.registered_practice, reg.event.locality = "B86001", "Leeds North"
    old = a.linked(ce.EVENT_TYPE_REGISTRATION, OCT - timedelta(days=100), org="B86099")
    old.event.registered_practice = "B86099"
    consent = a.linked(ce.EVENT_TYPE_CONSENT_CHANGE, OCT, org="B86001")
    consent.event.consent.direct_care_opt_out = True
    for state, linked in ((b.state, reg), (a.state, old), (a.state, consent)):
        assert apply(state, linked) is not None
    b.send(ce.EVENT_TYPE_DEATH, OCT + timedelta(days=30), org="B86001")
    merge_states(a.state, b.state)

    (spell,) = a.timeline.spells
    assert spell.status == tl.SPELL_STATUS_CLOSED and dt(spell.admitted_at) == OCT
    assert dt(spell.discharged_at) == OCT + timedelta(days=3) and spell.discharge_event_id == "dis"
    assert [a.event_id for a in a.timeline.ed_attendances] == ["ed10", "ed7", "ed5"]  # deduped, by time
    assert (a.timeline.registered_practice, a.timeline.locality) == ("B86001", "Leeds North")
    assert a.timeline.consent.direct_care_opt_out  # the later change in link order
    assert a.timeline.HasField("died_at") and dt(a.timeline.newest_event_at) == OCT + timedelta(days=30)
    assert set(b.state.applied) <= set(a.state.applied)
    assert dt(a.timeline.involvement["B86001"].last_event_at) == OCT + timedelta(days=30)
    assert {r.local_id for r in a.timeline.local_records} == {"H-1", "H-2"}


def test_unmerge_without_a_record_of_the_merge_keeps_the_survivor_whole() -> None:
    a = Feed(SURVIVOR, "H-1")
    a.send(ce.EVENT_TYPE_ADMISSION, OCT, spell="S-1")
    into, _ = merge_copies(a, OCT + timedelta(days=1), unmerge=True)
    done = split(a.state, into)
    assert done.event is not None and done.handover is not None and spell_ids(a) == {"S-1"}
    given = tl.PersonTimeline.FromString(done.handover.state)
    assert given.person_id == ABSORBED and not given.spells


def test_batch_routes_handovers_through_the_handover_topic() -> None:
    settings = Settings(partitions=4)
    table: dict[str, bytes] = {}
    timeline = Timeline(settings, table, out=None)
    seq = itertools.count(1)
    a, b = Feed(SURVIVOR, "H-1", seq), Feed(ABSORBED, "H-2", seq)
    admission = b.linked(ce.EVENT_TYPE_ADMISSION, OCT, spell="S-A")
    discharge = b.linked(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=2), spell="S-A")
    into, other = merge_copies(a, OCT + timedelta(days=3))
    batch = idn.LinkedBatch(events=[admission, discharge, into, other])
    outgoing, by_tag, handovers = timeline.apply_records([(("linked", 0), batch.SerializeToString())])
    assert [e.linked.person_id for v in outgoing.values() for e in v] == [ABSORBED] * 3  # none yet for a
    assert [h.into_person_id for h in handovers] == [SURVIVOR] and set(by_tag[("linked", 0)]) == {ABSORBED}
    for timelines in by_tag.values():
        timeline.write(timelines)
    topic = handover_topic(settings)
    outgoing, by_tag, handovers = timeline.apply_records([((topic, 1), handovers[0].SerializeToString())])
    (event,) = [e for v in outgoing.values() for e in v]
    assert event.linked.person_id == SURVIVOR and event.linked.event.event_id == into.event.event_id
    assert set(by_tag[(topic, 1)]) == {SURVIVOR} and not handovers
    timeline.write(by_tag[(topic, 1)])
    assert [s.spell_id for s in tl.PersonTimeline.FromString(table[SURVIVOR]).spells] == ["S-A"]
    assert tl.PersonTimeline.FromString(table[ABSORBED]).merged_into == SURVIVOR


def merged_after_an_admission() -> Feed:
    """The survivor, after a merge of the absorbed person that was admitted (spell S-A)."""
    seq = itertools.count(1)
    a, b = Feed(SURVIVOR, "H-1", seq), Feed(ABSORBED, "H-2", seq)
    b.send(ce.EVENT_TYPE_ADMISSION, OCT, spell="S-A")
    _, other = merge_copies(a, OCT + timedelta(days=1))
    handover = step(b.state, other).handover
    assert handover is not None and receive(a.state, handover).event is not None
    return a


def test_a_merge_kept_as_a_log_is_undone_as_one_kept_as_sides() -> None:
    """Before the sides were kept up to date, a merge kept both states at the merge and a log."""
    a = merged_after_an_admission()
    at_merge = tl.AbsorbedPerson()
    at_merge.CopyFrom(a.timeline.absorbed[ABSORBED])
    later = [a.linked(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=2), spell="S-A"),
             a.linked(ce.EVENT_TYPE_ADMISSION, OCT + timedelta(days=3), spell="S-B")]
    later[0].event.person.local_id = "H-2"
    for linked in later:
        assert apply(a.state, linked) is not None
    legacy = PersonState.from_bytes(a.state.to_bytes())
    legacy.timeline.absorbed[ABSORBED].CopyFrom(at_merge)
    legacy.timeline.absorbed[ABSORBED].since.extend(tl.SinceMerge(event=linked) for linked in later)
    unmerge, _ = merge_copies(a, OCT + timedelta(days=4), unmerge=True)
    kept, logged = split(a.state, unmerge), split(legacy, unmerge)
    assert kept.handover is not None and logged.handover is not None
    for one, two in ((kept.handover.state, logged.handover.state), (a.state.to_bytes(), legacy.to_bytes())):
        x, y = PersonState.from_bytes(one), PersonState.from_bytes(two)
        assert set(x.applied) == set(y.applied)  # the same digests, in another order
        x.timeline.ClearField("applied_events")
        y.timeline.ClearField("applied_events")
        assert x.timeline == y.timeline
    assert spell_ids(a) == {"S-B"}
    assert [s.spell_id for s in tl.PersonTimeline.FromString(kept.handover.state).spells] == ["S-A"]


def test_unmerge_of_a_log_cut_short_gives_back_the_state_at_the_merge() -> None:
    a = merged_after_an_admission()
    a.timeline.absorbed[ABSORBED].since_truncated = True  # as an earlier carehub left it after 500 events
    a.send(ce.EVENT_TYPE_ADMISSION, OCT + timedelta(days=2), spell="S-B")
    into, _ = merge_copies(a, OCT + timedelta(days=3), unmerge=True)
    done = split(a.state, into)
    assert done.handover is not None and spell_ids(a) == {"S-A", "S-B"} and not a.timeline.absorbed
    assert [s.spell_id for s in tl.PersonTimeline.FromString(done.handover.state).spells] == ["S-A"]


# --- care plans: one per owner organisation ---------------------------------------------------


def plan_event(f: Feed, when: datetime, org: str, event_id: str, **detail: object) -> tl.TimelineView:
    """A care-plan event ``org`` sends, with what it says of the plan (ce.CarePlanDetail's fields)."""
    linked = f.linked(ce.EVENT_TYPE_CARE_PLAN, when, org=org, spell="", event_id=event_id)
    linked.event.source_sector = ce.SECTOR_SOCIAL_CARE
    linked.event.care_plan.CopyFrom(ce.CarePlanDetail(**detail))  # type: ignore[arg-type]
    out = apply(f.state, linked)
    assert out is not None
    return out.view


def plans(view: tl.TimelineView) -> dict[str, tuple[str, str, str, str, str]]:
    return {owner: (p.event_id, p.source_org, p.review_due, p.segment, p.contact_role)
            for owner, p in view.care_plans.items()}


def test_care_plans_are_kept_by_owner_with_review_date_segment_and_contact_role() -> None:
    f = Feed()
    plan_event(f, OCT, "SC001", "cp1", owner_org="SC001", review_due="2027-01-10", segment="frail",
               contact_role="care coordinator")
    v = plan_event(f, OCT + timedelta(days=1), "B86001", "cp2", review_due="2027-04-01")  # owner: the sender
    assert plans(v) == {"SC001": ("cp1", "SC001", "2027-01-10", "frail", "care coordinator"),
                        "B86001": ("cp2", "B86001", "2027-04-01", "", "")}
    assert v.care_plans["SC001"].owner_org == "SC001" and dt(v.care_plans["SC001"].at) == OCT
    # the community team records a review of social care's plan: one plan, its latest event
    v = plan_event(f, OCT + timedelta(days=20), "COM01", "cp3", owner_org="SC001", review_due="2027-07-10",
                   segment="frail", contact_role="social worker")
    assert plans(v)["SC001"] == ("cp3", "COM01", "2027-07-10", "frail", "social worker") and len(v.care_plans) == 2
    v = plan_event(f, OCT + timedelta(days=5), "SC001", "cp0", owner_org="SC001", review_due="2026-12-01")
    assert plans(v)["SC001"][0] == "cp3"  # older by event time: the latest stays


def test_a_closing_event_removes_that_owners_plan_and_an_older_event_does_not_reopen_it() -> None:
    f = Feed()
    plan_event(f, OCT, "SC001", "cp1", review_due="2027-01-10")
    plan_event(f, OCT, "COM01", "cp2", review_due="2027-02-10")
    v = plan_event(f, OCT + timedelta(days=10), "SC001", "cp3", closed=True)
    assert set(v.care_plans) == {"COM01"}  # the other owner's plan stays
    assert f.timeline.care_plans["SC001"].closed  # kept, closed, to order later events against
    v = plan_event(f, OCT + timedelta(days=5), "SC001", "cp4", review_due="2027-03-01")  # older, arriving late
    assert set(v.care_plans) == {"COM01"}
    v = plan_event(f, OCT + timedelta(days=30), "SC001", "cp5", review_due="2027-05-01")  # a new plan
    assert plans(v)["SC001"][0] == "cp5" and not v.care_plans["SC001"].closed


def cancel(f: Feed, when: datetime, org: str, target: str) -> tl.TimelineView:
    linked = f.linked(ce.EVENT_TYPE_CANCELLATION, when, org=org, spell="")
    linked.event.target_event_id = target
    out = apply(f.state, linked)
    assert out is not None
    return out.view


def test_a_cancelled_care_plan_event_is_forgotten_by_its_sender_only() -> None:
    f = Feed()
    plan_event(f, OCT, "COM01", "cp1", owner_org="SC001", review_due="2027-01-10")
    assert set(cancel(f, OCT + timedelta(days=1), "SC001", "cp1").care_plans) == {"SC001"}  # another sender's
    v = cancel(f, OCT + timedelta(days=1), "COM01", "cp1")
    assert not v.care_plans and not f.timeline.care_plans


def test_care_plans_follow_a_merge_and_go_back_on_an_unmerge() -> None:
    seq = itertools.count(1)
    a, b = Feed(SURVIVOR, "H-1", seq), Feed(ABSORBED, "H-2", seq)
    plan_event(a, OCT, "B86001", "cp-a", review_due="2027-01-01")
    plan_event(a, OCT - timedelta(days=40), "SC001", "cp-old", review_due="2026-11-01")
    plan_event(b, OCT - timedelta(days=10), "SC001", "cp-b", segment="complex", contact_role="social worker")
    into, other = merge_copies(a, OCT + timedelta(days=5))
    done = step(b.state, other)
    assert done.handover is not None
    got = receive(a.state, done.handover)
    assert got.event is not None
    assert {o: p[0] for o, p in plans(got.event.view).items()} == {"B86001": "cp-a", "SC001": "cp-b"}  # the later
    assert got.event.timeline.care_plans["SC001"].contact_role == "social worker"

    into, other = merge_copies(a, OCT + timedelta(days=9), unmerge=True)
    back = step(a.state, into)
    assert back.event is not None and back.handover is not None
    assert {o: p[0] for o, p in plans(back.event.view).items()} == {"B86001": "cp-a", "SC001": "cp-old"}
    restored = receive(b.state, back.handover)
    assert restored.event is not None and {o: p[0] for o, p in plans(restored.event.view).items()} == {
        "SC001": "cp-b"}


def test_a_closed_plan_in_the_absorbed_person_closes_an_older_one_in_the_survivor() -> None:
    seq = itertools.count(1)
    a, b = Feed(SURVIVOR, "H-1", seq), Feed(ABSORBED, "H-2", seq)
    plan_event(a, OCT, "SC001", "cp-a", review_due="2027-01-01")
    plan_event(b, OCT + timedelta(days=3), "SC001", "cp-b", closed=True)
    merge_states(a.state, b.state)
    assert a.timeline.care_plans["SC001"].closed and a.timeline.care_plans["SC001"].event_id == "cp-b"
    v = a.send(ce.EVENT_TYPE_GP_CONTACT, OCT + timedelta(days=4), org="B86001", spell="")
    assert not v.care_plans


def test_plans_kept_before_owners_were_recorded_are_read_by_their_key() -> None:
    f = Feed()
    legacy = f.timeline.care_plans["SC001"]
    legacy.event_id = "cp-legacy"  # as kept before: keyed by the sender, no sender or owner inside
    legacy.at.FromDatetime(OCT)
    v = plan_event(f, OCT - timedelta(days=1), "SC001", "cp-older", review_due="2027-01-01")
    assert plans(v)["SC001"][0] == "cp-legacy"  # older than the kept one
    assert not cancel(f, OCT + timedelta(days=1), "SC001", "cp-legacy").care_plans  # the key is its sender
