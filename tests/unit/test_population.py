"""The population stage's logic: a person's risk state kept from timeline events, merges, rolling windows.

No Kafka: the stage (services/population/app.py) runs on a dict for its table and a list for
its output. What it must do: assess a person as events arrive and publish only what changed;
follow merges through the timeline the merge event carries; reassess people whose windows roll
on with no event; re-place tiers when the cut-offs change; keep care plans and consent as the
timeline reports them.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carehub.domain.risk import compute_factors, factor_state, load_model
from carehub.domain.risk.factors import next_change
from carehub.domain.risk.person import ABSORBED, RECOMPUTED, UNRESOLVED, keep, take
from carehub.domain.risk.records import cutoffs_of, state_of, state_record
from carehub.domain.risk.tiers import tier_cutoffs, tier_of
from carehub.domain.timeline import PersonState, receive, split, step
from carehub.kafka.batching import target_partition
from carehub.settings import load_settings
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import risk_pb2 as rk
from carehub.v1 import timeline_pb2 as tl
from services.population.app import Population, day_end
from tests.unit.test_risk_state import T0, Draw, Person, draws, play

MODEL = load_model()


# -- records ------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(draws, min_size=1, max_size=30))
def test_a_factor_state_reads_back_as_written(sequence: list[Draw]) -> None:
    person = Person()
    for draw in sequence:
        play(person, draw)
        assert state_of(rk.RiskFactorState.FromString(state_record(person.factors).SerializeToString())) == \
            person.factors


def test_cutoffs_read_back_as_computed() -> None:
    from carehub.domain.risk.records import cutoffs_record

    for scores in ([], [1.0], [float(i % 7) for i in range(300)]):
        cutoffs = tier_cutoffs(scores, MODEL)
        assert cutoffs_of(cutoffs_record(cutoffs, None, datetime.now(UTC))) == cutoffs


# -- the timeline's care plans ------------------------------------------------------------------


def test_the_timeline_keeps_each_organisations_latest_care_plan_and_forgets_a_cancelled_one() -> None:
    person = Person()
    person.send(ce.EVENT_TYPE_CARE_PLAN, 1, org="LA1", event_id="cp1")
    person.send(ce.EVENT_TYPE_CARE_PLAN, 5, org="LA1", event_id="cp2")
    person.send(ce.EVENT_TYPE_CARE_PLAN, 3, org="LA1", event_id="cp0")  # older: the latest stays
    person.send(ce.EVENT_TYPE_CARE_PLAN, 2, org="COM", event_id="cp3")
    plans = person.state.timeline.care_plans
    assert {org: p.event_id for org, p in plans.items()} == {"LA1": "cp2", "COM": "cp3"}
    person.send(ce.EVENT_TYPE_CANCELLATION, 6, org="COM", target="cp3")
    person.send(ce.EVENT_TYPE_CANCELLATION, 6, org="LA1", target="cp9")  # names a plan not seen yet
    person.send(ce.EVENT_TYPE_CARE_PLAN, 7, org="LA1", event_id="cp9")  # so it never counts
    assert {org: p.event_id for org, p in person.state.timeline.care_plans.items()} == {"LA1": "cp2"}
    assert person.factors == person.recomputed()  # the risk state's mirror of cancellations still holds


# -- merges -------------------------------------------------------------------------------------


def took(person: rk.PopulationPerson, event: tl.TimelineEvent) -> str:
    """``take`` and ``keep``, as the stage does for a person it writes."""
    outcome, state = take(person, event)
    keep(person, state)
    return outcome


def merge_copies(survivor: Person, absorbed: Person, day: float, unmerge: bool = False,
                 ) -> tuple[idn.LinkedEvent, idn.LinkedEvent]:
    into = survivor.linked(ce.EVENT_TYPE_IDENTITY_MERGE, day)
    into.merge.CopyFrom(idn.PersonMerge(from_person_id=absorbed.person_id, into_person_id=survivor.person_id,
                                        unmerge=unmerge, moved_records=[idn.LocalRecord(source_org="RR8",
                                                                                        local_id=absorbed.local_id)]))
    other = idn.LinkedEvent()
    other.CopyFrom(into)
    other.person_id = absorbed.person_id
    return into, other


def test_a_merge_moves_the_absorbed_history_and_an_unmerge_gives_it_back() -> None:
    sequence = itertools.count(1)
    survivor, absorbed = Person("p1", "H-1", sequence), Person("p2", "H-2", sequence)
    survivor.spell("S1", 0, 2)
    absorbed.spell("S9", 10, 12, diagnoses=("I50.9",))
    absorbed.send(ce.EVENT_TYPE_CARE_PLAN, 13, org="LA1", event_id="cp1")
    kept = {p.person_id: rk.PopulationPerson() for p in (survivor, absorbed)}
    _, other = merge_copies(survivor, absorbed, 20)

    gave = step(absorbed.state, other)
    assert gave.event is not None and gave.handover is not None
    assert gave.event.timeline.merged_into == "p1" and not gave.event.timeline.absorbed
    assert took(kept["p2"], gave.event) == ABSORBED and kept["p2"].merged_into == "p1"
    got = receive(survivor.state, gave.handover)
    assert got.event is not None and not got.event.timeline.absorbed and not got.event.timeline.applied_events
    assert took(kept["p1"], got.event) == RECOMPUTED
    assert set(state_of(kept["p1"].factors).spells) == {("RR8", "S1"), ("RR8", "S9")}
    assert state_of(kept["p1"].factors) == factor_state(survivor.state.timeline)
    assert set(kept["p1"].care_plans) == {"LA1"}  # from the merged view
    assert {r.local_id for r in kept["p1"].local_records} == {"H-1", "H-2"}

    undo_into, _ = merge_copies(survivor, absorbed, 30, unmerge=True)
    back = split(survivor.state, undo_into)
    assert back.event is not None and back.handover is not None
    assert took(kept["p1"], back.event) == RECOMPUTED
    assert set(state_of(kept["p1"].factors).spells) == {("RR8", "S1")}
    restored = PersonState.new("p2")
    returned = receive(restored, back.handover)
    assert returned.event is not None and took(kept["p2"], returned.event) == RECOMPUTED
    assert kept["p2"].merged_into == "" and set(state_of(kept["p2"].factors).spells) == {("RR8", "S9")}


def test_a_merge_without_its_timeline_leaves_the_state_and_says_so() -> None:
    sequence = itertools.count(1)
    survivor, absorbed = Person("p1", "H-1", sequence), Person("p2", "H-2", sequence)
    survivor.spell("S1", 0, 2)
    kept = rk.PopulationPerson()
    first = survivor.state.timeline
    kept.factors.CopyFrom(state_record(factor_state(first)))
    _, other = merge_copies(survivor, absorbed, 20)
    gave = step(absorbed.state, other)
    got = receive(survivor.state, gave.handover)  # type: ignore[arg-type]
    assert got.event is not None
    got.event.ClearField("timeline")  # as a timeline worker without the field sends it
    before = kept.factors.SerializeToString()
    assert took(kept, got.event) == UNRESOLVED and kept.factors.SerializeToString() == before


# -- windows rolling on -------------------------------------------------------------------------


def test_the_next_change_is_when_a_window_passes_an_admission_or_a_birthday_comes() -> None:
    person = Person()
    person.spell("S1", 0, 3, age=79)  # an emergency admission at T0, aged 79 then
    state = person.factors
    as_of = T0 + timedelta(days=30)
    moment = next_change(state, as_of, MODEL)
    assert moment is not None
    birthday = datetime(2027, 6, 1, tzinfo=UTC)  # the age was sent on 1 June 2026 (T0 + 3 days: the discharge)
    leaves = T0 + timedelta(days=365)
    assert moment == min(birthday + timedelta(days=3), leaves + timedelta(microseconds=1))
    before = compute_factors(state, moment - timedelta(microseconds=1), MODEL).values
    assert compute_factors(state, as_of, MODEL).values == before
    assert compute_factors(state, moment + timedelta(microseconds=1), MODEL).values != before


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(draws, min_size=1, max_size=25), st.integers(0, 1200))
def test_nothing_changes_before_the_next_change(sequence: list[Draw], day: int) -> None:
    person = Person()
    for draw in sequence:
        play(person, draw)
    as_of = T0 + timedelta(days=day)
    moment = next_change(person.factors, as_of, MODEL)
    now = compute_factors(person.factors, as_of, MODEL).values
    end = moment if moment is not None else as_of + timedelta(days=800)
    for probe in (as_of + (end - as_of) / 3, end - timedelta(microseconds=1)):
        if probe >= as_of:
            assert compute_factors(person.factors, probe, MODEL).values == now


# -- the stage ----------------------------------------------------------------------------------


class Out:
    """The output topic: what was sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None, int]] = []

    async def send(self, key: bytes, value: bytes | None, partition: int) -> Any:
        self.sent.append((key, value, partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Stage:
    """The population stage on a dict table, fed the events a timeline gives for ``Person``s."""

    def __init__(self) -> None:
        self.settings = load_settings(partitions=1)
        self.table: dict[str, bytes] = {}
        self.out = Out()
        self.stage = Population(self.settings, self.table, self.out, MODEL)
        self.batches: list[tl.TimelineEvent] = []

    def run(self, *events: tl.TimelineEvent | None, now: int = 0) -> list[tuple[str, rk.RiskAssessment | None]]:
        batch = tl.TimelineBatch(events=[e for e in events if e is not None])
        sends, writes = self.stage.apply_records([(0, batch.SerializeToString())], now)
        for persons in writes.values():
            for person_id, person in persons.items():
                self.table[person_id] = person.SerializeToString()
        return sends


def event_of(person: Person, kind: ce.EventType.ValueType, day: float, **kw: Any) -> tl.TimelineEvent | None:
    from carehub.domain.timeline import apply

    out = apply(person.state, person.linked(kind, day, **kw))
    person.take(out)
    return out


def test_the_stage_publishes_an_assessment_when_it_changes_and_not_otherwise() -> None:
    stage, person = Stage(), Person("p1", "H-1")
    [(pid, first)] = stage.run(event_of(person, ce.EVENT_TYPE_ADMISSION, 0, spell="S1", diagnoses=("I50.9",), age=82))
    assert pid == "p1" and first is not None
    assert first.as_of.ToDatetime(tzinfo=UTC) == day_end(int(T0.timestamp() * 1e9))
    assert first.factors[0].factor in ("emergency_admissions", "age") and first.tier == ""  # no cut-offs yet
    assert {f.factor: f.value for f in first.factors}["emergency_admissions"] == 1
    conditions = {f.factor: list(f.evidence) for f in first.factors}["long_term_conditions"]
    assert conditions == ["heart_failure"]
    # a contact the same day changes no factor: nothing published, the state is still written
    assert stage.run(event_of(person, ce.EVENT_TYPE_GP_CONTACT, 0.5, org="B86001", age=82)) == []
    assert rk.PopulationPerson.FromString(stage.table["p1"]).factors.contacts
    [(_, second)] = stage.run(event_of(person, ce.EVENT_TYPE_ADMISSION, 2, spell="S2", age=82))
    assert second is not None and second.score > first.score
    assert {f.factor: f.value for f in second.factors}["emergency_admissions"] == 2


def test_the_stage_reassesses_a_person_whose_window_rolls_on_without_an_event() -> None:
    stage, person, other = Stage(), Person("p1", "H-1"), Person("p2", "H-2")
    [(_, first)] = stage.run(event_of(person, ce.EVENT_TYPE_ADMISSION, 0, spell="S1", age=50))
    assert first is not None
    # a year and more later only someone else's events arrive on the partition
    sends = dict(stage.run(event_of(other, ce.EVENT_TYPE_GP_CONTACT, 370, org="B86001", age=40)))
    assert set(sends) == {"p1", "p2"}
    rolled = sends["p1"]
    assert rolled is not None and {f.factor: f.value for f in rolled.factors}["emergency_admissions"] == 0
    assert rolled.score < first.score
    assert stage.run(event_of(other, ce.EVENT_TYPE_GP_CONTACT, 371, org="B86001", age=40)) == []


def test_consent_care_plans_and_record_ids_travel_with_the_assessment() -> None:
    stage, person = Stage(), Person("p1", "P-1")
    from carehub.domain.timeline import apply

    registration = person.linked(ce.EVENT_TYPE_REGISTRATION, 0, org="B86001")
    registration.event.registered_practice = "B86001"
    stage.run(apply(person.state, registration))
    stage.run(event_of(person, ce.EVENT_TYPE_CARE_PLAN, 1, org="LA1"))
    opt_out = person.linked(ce.EVENT_TYPE_CONSENT_CHANGE, 2, org="B86001")
    opt_out.event.consent.direct_care_opt_out = True
    out = apply(person.state, opt_out)
    [(_, record)] = stage.run(out)
    assert record is not None and record.direct_care_opt_out and not record.planning_opt_out
    assert set(record.care_plans) == {"LA1"} and record.registered_practice == "B86001"
    assert {r.org for r in record.local_records} == {"B86001", "LA1"}  # the practice's and the team's, no other
    assert set(record.involvement) == {"LA1"} and record.involvement["LA1"].sector == ce.SECTOR_SOCIAL_CARE
    assert record.involvement["LA1"].last_event_at.seconds % 86_400 == 0  # to the day


def test_a_person_merged_away_gets_a_tombstone_once() -> None:
    stage = Stage()
    sequence = itertools.count(1)
    survivor, absorbed = Person("p1", "H-1", sequence), Person("p2", "H-2", sequence)
    stage.run(event_of(survivor, ce.EVENT_TYPE_ADMISSION, 0, spell="S1"))
    stage.run(event_of(absorbed, ce.EVENT_TYPE_ADMISSION, 1, spell="S9"))
    _, other = merge_copies(survivor, absorbed, 20)
    gave = step(absorbed.state, other)
    assert gave.handover is not None
    got = receive(survivor.state, gave.handover)
    sends = stage.run(gave.event, got.event)
    assert [(pid, record is None) for pid, record in sends] == [("p2", True), ("p1", False)]
    merged = dict(sends)["p1"]
    assert merged is not None and {f.factor: f.value for f in merged.factors}["emergency_admissions"] == 2
    assert stage.run(event_of(survivor, ce.EVENT_TYPE_GP_CONTACT, 20.2, org="B86001")) == []


def test_new_cutoffs_publish_again_those_whose_tier_moved() -> None:
    stage = Stage()
    people = [Person(f"p{i}", f"H-{i}") for i in range(40)]
    for i, person in enumerate(people):  # every mix of 0-3 emergency admissions and five ages, twice
        age = (30, 50, 70, 80, 90)[i // 8]
        for k in range(i % 4):
            stage.run(event_of(person, ce.EVENT_TYPE_ADMISSION, k, spell=f"S{k}", age=age))
        stage.run(event_of(person, ce.EVENT_TYPE_GP_CONTACT, 5, org="B86001", age=age))
    scores = {p.person_id: rk.PopulationPerson.FromString(stage.table[p.person_id]).score for p in people}
    from carehub.domain.risk.records import cutoffs_record

    cutoffs = tier_cutoffs(scores.values(), MODEL)
    stage.stage.cutoffs = cutoffs_record(cutoffs, None, datetime.now(UTC))
    moved = asyncio.run(stage.stage.replace_tiers({0}))
    assert moved == 40  # everyone had no tier before
    tiers = {key.decode(): rk.RiskAssessment.FromString(value).tier for key, value, _ in stage.out.sent if value}
    assert tiers == {pid: tier_of(score, cutoffs) for pid, score in scores.items()}
    assert {"high", "moderate", "low"} <= set(tiers.values())
    assert all(partition == target_partition(key.decode(), 1) for key, _, partition in stage.out.sent)
    stage.out.sent.clear()
    assert asyncio.run(stage.stage.replace_tiers({0})) == 0 and stage.out.sent == []  # nothing moved this time
    # the next batch of a person writes the tier the index knew; nothing more is published for it
    assert all(r is None or r.tier for _, r in stage.run(event_of(people[0], ce.EVENT_TYPE_GP_CONTACT, 6,
                                                                  org="B86001", age=30)))
