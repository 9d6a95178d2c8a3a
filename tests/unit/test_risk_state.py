"""The risk factor state: updated event by event, it equals the state recomputed from the timeline.

The timeline (carehub/domain/timeline.py) is the reference: after every event of a random
sequence (late events, repeats, cancellations before and after what they cancel, deaths,
codings that replace working diagnoses, care-home moves), the state that ``advance`` kept must
equal ``factor_state`` of the timeline the same events built.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carehub.domain.risk import FactorState, advance, factor_state
from carehub.domain.timeline import MAX_SPELLS, PersonState, apply, receive, step
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import timeline_pb2 as tl

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
SECTOR_OF_ORG = {"RR8": ce.SECTOR_ACUTE, "RAE": ce.SECTOR_ACUTE, "B86001": ce.SECTOR_PRIMARY_CARE,
                 "LA1": ce.SECTOR_SOCIAL_CARE, "CH1": ce.SECTOR_CARE_HOME, "COM": ce.SECTOR_COMMUNITY}


class Person:
    """One person's timeline and the factor state kept from its enriched events, side by side."""

    def __init__(self, person_id: str = "p1", local_id: str = "L1",
                 sequence: itertools.count[int] | None = None) -> None:
        self.person_id, self.local_id = person_id, local_id
        self.state = PersonState.new(person_id)
        self.factors = FactorState()
        self.sequence = sequence or itertools.count(1)
        self.ids = itertools.count()

    def linked(self, kind: ce.EventType.ValueType, day: float, *, org: str = "RR8",
               sector: ce.Sector.ValueType | None = None, event_id: str | None = None, spell: str = "",
               method: ce.AdmissionMethod.ValueType = ce.ADMISSION_METHOD_EMERGENCY, source: str = "19",
               destination: str = "", diagnoses: tuple[str, ...] = (), target: str = "",
               age: int = 80) -> idn.LinkedEvent:
        linked = idn.LinkedEvent(person_id=self.person_id, link_sequence=next(self.sequence))
        e = linked.event
        e.event_id = event_id or f"{self.person_id}-e{next(self.ids)}"
        e.source_org, e.event_type = org, kind
        e.source_sector = SECTOR_OF_ORG.get(org, ce.SECTOR_ACUTE) if sector is None else sector
        e.event_time.FromDatetime(T0 + timedelta(days=day))
        e.person.local_id, e.person.age_years = self.local_id, age
        e.target_event_id = target
        c = e.clinical
        c.spell_id, c.admission_method, c.admission_source, c.discharge_destination = spell, method, source, destination
        for i, code in enumerate(diagnoses):
            c.diagnoses.add(code=code, position=i + 1, provisional=kind == ce.EVENT_TYPE_ADMISSION)
        return linked

    def take(self, out: tl.TimelineEvent | None) -> None:
        if out is not None:
            updated = advance(self.factors, out)
            self.factors = updated if updated is not None else factor_state(self.state.timeline)

    def send(self, kind: ce.EventType.ValueType, day: float, **kw: object) -> str:
        linked = self.linked(kind, day, **kw)  # type: ignore[arg-type]
        self.take(apply(self.state, linked))
        return linked.event.event_id

    def spell(self, spell: str, admitted: float, discharged: float | None, **kw: object) -> None:
        diagnoses = kw.pop("diagnoses", ())
        self.send(ce.EVENT_TYPE_ADMISSION, admitted, spell=spell, diagnoses=diagnoses, **kw)
        if discharged is not None:
            self.send(ce.EVENT_TYPE_DISCHARGE, discharged, spell=spell, destination="19", **kw)

    def recomputed(self) -> FactorState:
        return factor_state(self.state.timeline)


# -- random event sequences ---------------------------------------------------------------------

KINDS = (ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_DISCHARGE, ce.EVENT_TYPE_DIAGNOSIS_CODED,
         ce.EVENT_TYPE_CANCELLATION, ce.EVENT_TYPE_CANCELLATION, ce.EVENT_TYPE_ED_ATTENDANCE,
         ce.EVENT_TYPE_ED_ATTENDANCE, ce.EVENT_TYPE_GP_CONTACT, ce.EVENT_TYPE_TRANSFER,
         ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, ce.EVENT_TYPE_CARE_HOME_ADMISSION, ce.EVENT_TYPE_DEATH,
         ce.EVENT_TYPE_REGISTRATION)
ORG_OF_KIND = {ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT: ("LA1",), ce.EVENT_TYPE_CARE_HOME_ADMISSION: ("CH1",),
               ce.EVENT_TYPE_REGISTRATION: ("B86001",), ce.EVENT_TYPE_GP_CONTACT: ("B86001", "COM", "RR8"),
               ce.EVENT_TYPE_DEATH: ("B86001", "RR8"), ce.EVENT_TYPE_CANCELLATION: ("RR8", "RAE", "B86001", "COM")}
CODES = ("I50.9", "J44.1", "N18.3", "W19", "S72.0", "R07.4", "F03", "C78.0", "I10")


@dataclass(frozen=True)
class Draw:
    kind: ce.EventType.ValueType
    day: float
    org_pick: int
    event_id: str
    spell: str
    method: ce.AdmissionMethod.ValueType
    source: str
    destination: str
    diagnoses: tuple[str, ...]
    target: str
    age: int


draws = st.builds(
    Draw,
    kind=st.sampled_from(KINDS),
    day=st.floats(min_value=0, max_value=900, allow_nan=False).map(lambda d: round(d, 2)),
    org_pick=st.integers(0, 3),
    event_id=st.sampled_from([f"e{i}" for i in range(10)]),  # a small pool: repeats and cancellation targets
    spell=st.sampled_from(["S1", "S2", "S3"]),
    method=st.sampled_from([ce.ADMISSION_METHOD_EMERGENCY, ce.ADMISSION_METHOD_EMERGENCY,
                            ce.ADMISSION_METHOD_ELECTIVE, ce.ADMISSION_METHOD_TRANSFER]),
    source=st.sampled_from(["19", "19", "54"]),
    destination=st.sampled_from(["19", "19", "79", "65", ""]),
    diagnoses=st.lists(st.sampled_from(CODES), max_size=3).map(tuple),
    target=st.sampled_from([f"e{i}" for i in range(10)]),
    age=st.sampled_from([-1, 44, 70, 91]),
)


def play(person: Person, draw: Draw) -> None:
    orgs = ORG_OF_KIND.get(draw.kind, ("RR8", "RAE"))
    org = orgs[draw.org_pick % len(orgs)]
    sector = ce.SECTOR_EMERGENCY if draw.kind == ce.EVENT_TYPE_ED_ATTENDANCE else None
    person.send(draw.kind, draw.day, org=org, sector=sector, event_id=draw.event_id, spell=draw.spell,
                method=draw.method, source=draw.source, destination=draw.destination, diagnoses=draw.diagnoses,
                target=draw.target, age=draw.age)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(draws, min_size=1, max_size=40))
def test_incremental_state_equals_recomputation_after_every_event(sequence: list[Draw]) -> None:
    person = Person()
    for draw in sequence:
        play(person, draw)
        assert person.factors == person.recomputed()


def test_the_random_sequences_reach_the_cases_that_differ_from_plain_counting() -> None:
    """The property above means something only if these happen; here each is made to happen once."""
    person = Person()
    person.send(ce.EVENT_TYPE_CANCELLATION, 1, target="ed1")  # names an attendance not seen yet
    person.send(ce.EVENT_TYPE_ED_ATTENDANCE, 0.5, event_id="ed1", sector=ce.SECTOR_EMERGENCY)  # so never counted
    person.send(ce.EVENT_TYPE_ED_ATTENDANCE, 2, event_id="ed2", sector=ce.SECTOR_EMERGENCY)
    person.send(ce.EVENT_TYPE_ED_ATTENDANCE, 2, event_id="ed2", sector=ce.SECTOR_EMERGENCY)  # a repeat
    person.send(ce.EVENT_TYPE_GP_CONTACT, 3, org="B86001", event_id="gp1")
    person.send(ce.EVENT_TYPE_CANCELLATION, 4, org="B86001", target="gp1")  # the contact: not remembered
    person.send(ce.EVENT_TYPE_DEATH, 5, org="B86001", event_id="d1")
    person.send(ce.EVENT_TYPE_CANCELLATION, 6, org="B86001", target="d1")  # the death: not remembered
    assert list(person.factors.ed_attendances) == ["RR8/ed2"]
    assert person.factors.cancelled == ("RR8/ed1",)
    assert not person.factors.deceased and not person.factors.contacts
    person.send(ce.EVENT_TYPE_ED_ATTENDANCE, 800, sector=ce.SECTOR_EMERGENCY)  # two years on: ed2 is dropped
    assert len(person.factors.ed_attendances) == 1
    assert person.factors == person.recomputed()


def test_coding_replaces_the_working_diagnoses_of_the_spell() -> None:
    person = Person()
    person.send(ce.EVENT_TYPE_ADMISSION, 0, spell="S1", diagnoses=("R06.0",))
    person.send(ce.EVENT_TYPE_DIAGNOSIS_CODED, 20, spell="S1", diagnoses=("J44.1", "I10"))
    person.send(ce.EVENT_TYPE_DIAGNOSIS_CODED, 15, spell="S1", diagnoses=("R07.4",))  # an older coding: ignored
    assert person.factors.spells[("RR8", "S1")].diagnoses == ("J441", "I10")
    assert person.factors == person.recomputed()


def test_spells_are_bounded_like_the_timeline() -> None:
    person = Person()
    for i in range(MAX_SPELLS + 5):
        person.spell(f"S{i}", i, i + 0.5)
    assert len(person.factors.spells) == MAX_SPELLS
    assert ("RR8", "S0") not in person.factors.spells and ("RR8", f"S{MAX_SPELLS + 4}") in person.factors.spells
    assert person.factors == person.recomputed()


def test_a_merge_is_recomputed_from_the_timeline_and_brings_the_absorbed_history() -> None:
    sequence = itertools.count(1)
    survivor, absorbed = Person("p1", "H-1", sequence), Person("p2", "H-2", sequence)
    survivor.spell("S1", 0, 2)
    absorbed.spell("S9", 10, 12, diagnoses=("I50.9",))
    into = survivor.linked(ce.EVENT_TYPE_IDENTITY_MERGE, 20)
    into.merge.CopyFrom(idn.PersonMerge(from_person_id="p2", into_person_id="p1",
                                        moved_records=[idn.LocalRecord(source_org="RR8", local_id="H-2")]))
    other = idn.LinkedEvent()
    other.CopyFrom(into)
    other.person_id = "p2"
    gave = step(absorbed.state, other)
    assert gave.event is not None and gave.handover is not None
    assert advance(absorbed.factors, gave.event) is None  # no single event carries a merge
    absorbed.take(gave.event)
    assert not absorbed.factors.spells  # a shell now
    got = receive(survivor.state, gave.handover)
    assert got.event is not None and advance(survivor.factors, got.event) is None
    survivor.take(got.event)
    assert set(survivor.factors.spells) == {("RR8", "S1"), ("RR8", "S9")}
