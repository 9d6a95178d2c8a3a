"""The batch indicator reference (tests/reference/indicators.py) on small hand-built linked logs.

Each expected value is worked out by hand from docs/indicator-semantics.md.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from tests.reference.indicators import (
    Condition,
    Values,
    as_of,
    condition_matches,
    load_definitions,
    reference_values,
)

DEFINITIONS = Path(__file__).resolve().parents[2] / "carehub" / "domain" / "data"
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
_ids = itertools.count()


class Log:
    """Builds a linked log; ``link_sequence`` follows the order of the calls."""

    def __init__(self) -> None:
        self.events: list[idn.LinkedEvent] = []

    def add(
        self,
        person: str,
        kind: ce.EventType.ValueType,
        day: float,
        *,
        org: str = "RR8",
        sector: ce.Sector.ValueType = ce.SECTOR_ACUTE,
        event_id: str | None = None,
        spell: str = "",
        method: ce.AdmissionMethod.ValueType = ce.ADMISSION_METHOD_EMERGENCY,
        source: str = "19",
        diagnoses: tuple[str, ...] = (),
        destination: str = "",
        practice: str = "P1",
        locality: str = "L1",
        age: int = 70,
        local_id: str | None = None,
        target: str = "",
        planning_opt_out: bool | None = None,
        merge: idn.PersonMerge | None = None,
    ) -> str:
        linked = idn.LinkedEvent(person_id=person, link_sequence=len(self.events))
        e = linked.event
        e.event_id = event_id or f"e{next(_ids)}"
        e.source_org, e.source_sector, e.event_type = org, sector, kind
        e.event_time.FromDatetime(T0 + timedelta(days=day))
        e.person.local_id = local_id or f"{org}-{person}"
        e.person.age_years = age
        e.registered_practice, e.locality = practice, locality
        e.target_event_id = target
        e.clinical.spell_id = spell
        e.clinical.admission_method = method
        e.clinical.admission_source = source
        e.clinical.discharge_destination = destination
        for i, code in enumerate(diagnoses):
            e.clinical.diagnoses.add(code=code, position=i + 1, provisional=kind == ce.EVENT_TYPE_ADMISSION)
        if planning_opt_out is not None:
            e.consent.planning_opt_out = planning_opt_out
        if merge is not None:
            linked.merge.CopyFrom(merge)
        self.events.append(linked)
        return e.event_id

    def spell(self, person: str, admitted: float, discharged: float | None, spell: str, **kw: object) -> None:
        self.add(person, ce.EVENT_TYPE_ADMISSION, admitted, spell=spell, **kw)  # type: ignore[arg-type]
        if discharged is not None:
            kw.pop("diagnoses", None)
            self.add(person, ce.EVENT_TYPE_DISCHARGE, discharged, spell=spell, **kw)  # type: ignore[arg-type]

    def until(self, day: float) -> None:
        """A GP registration event on ``day`` by a bystander, to set as-of."""
        self.add("bystander", ce.EVENT_TYPE_REGISTRATION, day, org="P1", sector=ce.SECTOR_PRIMARY_CARE)

    def values(self) -> Values:
        return reference_values(self.events, DEFINITIONS)


def test_definitions_load() -> None:
    defs = load_definitions(DEFINITIONS)
    assert {i.id for i in defs.indicators} >= {"acsc_all", "followup_7d", "readmission_30d", "long_stay_7d"}
    assert set(defs.codelists) == {"acsc", "cancer", "falls"}


def test_codelist_rules() -> None:
    copd = Condition("copd", "chronic", "primary", ("J41", "J42", "J43", "J44", "J47"),
                     with_secondary_codes=("J20",), with_secondary=("J41", "J42", "J43", "J44", "J47"))
    assert condition_matches(copd, [("j44.1", 1)], [])
    assert not condition_matches(copd, [("J20.9", 1)], [])
    assert condition_matches(copd, [("J20.9", 1), ("J44.0", 2)], [])
    assert condition_matches(copd, [("J44.0", 0), ("J20.9", 1)], [])  # position 0 is last: J20 with J44
    assert not condition_matches(copd, [("J44.0", 0), ("I10", 1)], [])
    angina = Condition("angina", "chronic", "primary", ("I20",), exclude_procedures=("K",))
    assert condition_matches(angina, [("I20.0", 1)], ["X50.1"])
    assert not condition_matches(angina, [("I20.0", 1)], ["K40.1"])
    falls = Condition("fall", "falls", "primary", ("S",), require_secondary=("W01",))
    assert not condition_matches(falls, [("S72.0", 1)], [])
    assert condition_matches(falls, [("S72.0", 1), ("W01", 2)], [])
    flu = Condition("flu", "acute", "any", ("J10",), exclude_secondary=("D57",))
    assert condition_matches(flu, [("I10", 1), ("J10.1", 2)], [])
    assert not condition_matches(flu, [("J10.1", 1), ("D57.1", 2)], [])


def test_acsc_admission_provisional_then_coded() -> None:
    log = Log()
    log.add("a", ce.EVENT_TYPE_ADMISSION, 0, spell="S1", diagnoses=("J45.9",))  # asthma: chronic ACSC
    log.add("b", ce.EVENT_TYPE_REGISTRATION, 0, org="P2", sector=ce.SECTOR_PRIMARY_CARE, practice="P2", locality="L2")
    log.add("a", ce.EVENT_TYPE_DISCHARGE, 2, spell="S1", destination="19")
    before = log.values()
    assert as_of(log.events) == date(2026, 6, 3)
    assert before[("acsc_chronic", "region", "30d")] == (1, 2, 1)  # 2 registered people, provisional
    assert before[("acsc_all", "practice:P1", "12m")] == (1, 1, 1)
    assert before[("acsc_acute", "region", "30d")] == (0, 2, 0)
    assert before[("acsc_chronic", "provider:RR8", "2026-06")] == (1, None, 1)
    assert before[("acsc_chronic", "sector:acute", "30d")] == (1, None, 1)
    assert before[("acsc_chronic", "practice:P2", "30d")] == (0, 1, 0)  # population only
    assert ("acsc_chronic", "provider:P2", "30d") not in before  # no fact there, no population
    log.add("a", ce.EVENT_TYPE_DIAGNOSIS_CODED, 10, spell="S1", diagnoses=("J45.0", "I10"))
    assert log.values()[("acsc_chronic", "region", "30d")] == (1, 2, 0)  # confirmed
    # a later coding (by event time) to a non-ACSC condition replaces it; an older one does not
    log.add("a", ce.EVENT_TYPE_DIAGNOSIS_CODED, 12, spell="S1", diagnoses=("R07.4",))
    log.add("a", ce.EVENT_TYPE_DIAGNOSIS_CODED, 11, spell="S1", diagnoses=("J45.0",))
    assert log.values()[("acsc_chronic", "region", "30d")] == (0, 2, 0)


def test_cancelled_admission_counts_nowhere_even_when_the_cancellation_comes_first() -> None:
    log = Log()
    first = log.add("a", ce.EVENT_TYPE_ADMISSION, 0, spell="S1", diagnoses=("J45",))
    log.add("a", ce.EVENT_TYPE_CANCELLATION, 0.1, target=first)
    log.add("b", ce.EVENT_TYPE_CANCELLATION, 1.1, target="later")
    log.add("b", ce.EVENT_TYPE_ADMISSION, 1, spell="S2", diagnoses=("J45",), event_id="later")
    log.add("c", ce.EVENT_TYPE_ADMISSION, 2, spell="S3", diagnoses=("J45",), source="54")
    v = log.values()
    assert v[("acsc_chronic", "region", "30d")] == (1, 3, 1)
    assert v[("care_home_admissions", "region", "30d")] == (1, 1, 0)
    assert v[("long_stay_7d", "region", "now")] == (0, None, 0)  # as-of is day 2: not open 7 days yet


def test_readmission_day_29_counts_day_30_does_not() -> None:
    log = Log()
    log.spell("a", 0, 5, "A1", method=ce.ADMISSION_METHOD_ELECTIVE)
    log.spell("a", 5 + 29, 40, "A2")
    log.spell("b", 0, 5, "B1")
    log.spell("b", 5 + 30, 40, "B2")
    v = log.values()
    # index discharges: A1, A2, B1, B2 (emergency or elective, alive); A1 readmitted in 29 days
    # provisional: the index spell is not coded, and the cancer exclusion may still remove it
    assert v[("readmission_30d", "region", "12m")] == (1, 4, 1)
    assert v[("readmission_28d", "region", "12m")] == (0, 4, 0)
    assert v[("readmission_30d", "region", "30d")] == (0, 2, 0)  # as-of day 40: A1, B1 fall outside 30d


def test_readmission_needs_an_emergency_admission_after_the_discharge_time() -> None:
    log = Log()
    log.spell("a", 0, 5, "A1")
    log.spell("a", 5.5, 8, "A2", method=ce.ADMISSION_METHOD_ELECTIVE)  # not emergency
    log.spell("b", 0, 5.5, "B1")
    log.spell("b", 5.2, 8, "B2", org="RXX")  # same day, but admitted before the discharge time
    log.spell("c", 0, 3, "C1", destination="79")  # died: not an index spell
    log.spell("c", 3, 5, "C2")
    v = log.values()
    assert v[("readmission_30d", "region", "12m")] == (0, 5, 0)


def test_follow_up_same_day_does_not_count_day_7_does() -> None:
    log = Log()
    log.spell("a", 0, 2, "A1", destination="19")
    log.add("a", ce.EVENT_TYPE_GP_CONTACT, 2.2, org="P1", sector=ce.SECTOR_PRIMARY_CARE)  # day 0 after
    log.spell("b", 0, 2, "B1", destination="19")
    log.add("b", ce.EVENT_TYPE_GP_CONTACT, 9, org="C1", sector=ce.SECTOR_COMMUNITY)  # day 7 after
    log.spell("c", 0, 2, "C1", destination="19")
    log.add("c", ce.EVENT_TYPE_GP_CONTACT, 5, org="MH", sector=ce.SECTOR_MENTAL_HEALTH)  # wrong sector
    log.until(9.5)  # as-of day 9: discharges on day 2 are 7 days old
    v = log.values()
    assert v[("followup_7d", "region", "30d")] == (1, 3, 0)
    assert v[("followup_overdue", "region", "30d")] == (2, None, 0)
    log.add("d", ce.EVENT_TYPE_DISCHARGE, 3, spell="D1")  # a discharge without admission: no fact
    log.spell("e", 1, 3, "E1", destination="19")  # discharged day 3: its lag has not passed
    v = log.values()
    assert v[("followup_7d", "region", "30d")] == (1, 3, 0)
    assert v[("followup_7d", "practice:P1", "30d")] == (1, 3, 0)  # the key exists: a fact on any day
    assert ("followup_7d", "provider:RR8", "12m") in v


def test_frequent_ed_attender_fourth_attendance() -> None:
    log = Log()
    for day in (0, 100, 200, 300, 366):
        log.add("a", ce.EVENT_TYPE_ED_ATTENDANCE, day, sector=ce.SECTOR_EMERGENCY)
    v = log.values()
    # the 4th (day 300) has 3 prior within 365 days; the 5th (day 366) has days 100, 200, 300
    assert v[("frequent_ed_attenders", "region", "12m")] == (2, 4, 0)  # day 0 is outside 12m
    assert v[("frequent_ed_attenders", "sector:emergency", "12m")] == (2, 4, 0)
    assert v[("frequent_ed_attenders", "region", "30d")] == (1, 1, 0)
    log = Log()
    for day in (0, 100, 200, 365):
        log.add("a", ce.EVENT_TYPE_ED_ATTENDANCE, day, sector=ce.SECTOR_EMERGENCY)
    # day 0 is exactly 365 days before the 4th: at t - 365 days, so it counts
    assert log.values()[("frequent_ed_attenders", "region", "30d")] == (1, 1, 0)


def test_planning_opt_out_before_an_admission() -> None:
    log = Log()
    log.add("a", ce.EVENT_TYPE_CONSENT_CHANGE, 0, org="P1", sector=ce.SECTOR_PRIMARY_CARE, planning_opt_out=True)
    log.spell("a", 1, 2, "A1", diagnoses=("J45",))
    log.spell("b", 1, None, "B1", diagnoses=("J45",))
    log.add("b", ce.EVENT_TYPE_CONSENT_CHANGE, 3, org="P1", sector=ce.SECTOR_PRIMARY_CARE, planning_opt_out=True)
    log.add("b", ce.EVENT_TYPE_DISCHARGE, 4, spell="B1", destination="19")
    log.add("c", ce.EVENT_TYPE_REGISTRATION, 4, org="P1", sector=ce.SECTOR_PRIMARY_CARE)
    v = log.values()
    # a: left out entirely; b: admitted before opting out (admission counts, discharge does not);
    # population now: only c (a and b are opted out)
    assert v[("acsc_chronic", "region", "30d")] == (1, 1, 1)
    assert not any(key[0] == "readmission_30d" for key in v)  # no discharge fact: no keys at all


def test_duplicate_event_counts_once() -> None:
    log = Log()
    log.add("a", ce.EVENT_TYPE_ADMISSION, 0, spell="S1", diagnoses=("J45",), event_id="x1")
    log.add("a", ce.EVENT_TYPE_ADMISSION, 0, spell="S1", diagnoses=("J45",), event_id="x1")
    log.add("a", ce.EVENT_TYPE_ED_ATTENDANCE, 0, sector=ce.SECTOR_EMERGENCY, event_id="x2")
    log.add("a", ce.EVENT_TYPE_ED_ATTENDANCE, 0, sector=ce.SECTOR_EMERGENCY, event_id="x2")
    v = log.values()
    assert v[("acsc_chronic", "region", "30d")] == (1, 1, 1)
    assert v[("frequent_ed_attenders", "provider:RR8", "30d")] == (0, 1, 0)


def test_merge_of_two_persons() -> None:
    log = Log()
    log.spell("a", 0, 3, "A1", practice="P1", locality="L1")
    log.spell("dup", 10, None, "D1", practice="P2", locality="L2", local_id="RR8-dup")
    before = log.values()
    assert before[("readmission_30d", "region", "30d")] == (0, 1, 0)
    assert before[("acsc_all", "region", "30d")][1] == 2
    merge = idn.PersonMerge(from_person_id="dup", into_person_id="a",
                            moved_records=[idn.LocalRecord(source_org="RR8", local_id="RR8-dup")])
    # two copies, one per person; the merge event itself is at the survivor's record, day 11
    for person in ("a", "dup"):
        log.add(person, ce.EVENT_TYPE_IDENTITY_MERGE, 11, event_id="m1", merge=merge, practice="", locality="",
                local_id="RR8-a")
    v = log.values()
    assert v[("readmission_30d", "region", "30d")] == (1, 1, 1)  # D1 readmits A1 now (uncoded: provisional)
    # one person; the later registration (the absorbed person's, day 10) wins
    assert v[("acsc_all", "region", "30d")] == (0, 1, 0)
    assert v[("acsc_all", "practice:P2", "30d")] == (0, 1, 0)
    assert ("acsc_all", "practice:P1", "30d") not in v
    assert v[("readmission_30d", "locality:L2", "30d")] == (1, 1, 1)
    # undone: the moved record's events go back
    unmerge = idn.PersonMerge(from_person_id="dup", into_person_id="a", unmerge=True,
                              moved_records=[idn.LocalRecord(source_org="RR8", local_id="RR8-dup")])
    for person in ("a", "dup"):
        log.add(person, ce.EVENT_TYPE_IDENTITY_MERGE, 12, event_id="m2", merge=unmerge, practice="", locality="",
                local_id="RR8-a")
    v = log.values()
    assert v[("readmission_30d", "region", "30d")] == (0, 1, 0)
    assert v[("acsc_all", "region", "30d")] == (0, 2, 0)


def test_late_discharge_closes_its_spell_whatever_came_between() -> None:
    log = Log()
    log.add("a", ce.EVENT_TYPE_ADMISSION, 0, spell="A1")
    log.add("a", ce.EVENT_TYPE_ADMISSION, 20, spell="A2")  # readmission, linked before A1's discharge
    log.add("a", ce.EVENT_TYPE_DISCHARGE, 22, spell="A2", destination="19")
    log.until(30)
    v = log.values()
    assert v[("long_stay_21d", "region", "now")] == (1, None, 0)  # A1 open since day 0, as-of day 30
    assert v[("readmission_30d", "region", "30d")] == (0, 1, 0)
    log.add("a", ce.EVENT_TYPE_DISCHARGE, 3, spell="A1", destination="19")  # arrives late
    v = log.values()
    assert ("long_stay_21d", "region", "now") not in v  # no open spell left: no key
    assert v[("readmission_30d", "region", "30d")] == (1, 2, 1)  # A1 readmitted after 17 days
    assert v[("readmission_30d", "region", "2026-06")] == (1, 2, 1)


def test_cancelled_discharge_reopens_and_death_empties_population() -> None:
    log = Log()
    log.add("a", ce.EVENT_TYPE_ADMISSION, 0, spell="A1")
    out = log.add("a", ce.EVENT_TYPE_DISCHARGE, 1, spell="A1", destination="79")
    log.add("b", ce.EVENT_TYPE_REGISTRATION, 8, org="P1", sector=ce.SECTOR_PRIMARY_CARE)
    v = log.values()
    assert v[("acsc_all", "region", "30d")] == (0, 1, 0)  # a died
    assert ("long_stay_7d", "region", "now") not in v
    log.add("a", ce.EVENT_TYPE_CANCELLATION, 9, target=out)
    v = log.values()
    assert v[("acsc_all", "region", "30d")] == (0, 2, 0)
    assert v[("long_stay_7d", "region", "now")] == (1, None, 0)


def test_windows_and_months_with_lag() -> None:
    log = Log()
    log.spell("a", 0, 1, "A1", destination="19")
    log.until(365)  # as-of 2027-06-01; followup windows end 2027-05-25
    v = log.values()
    labels = {w for (i, u, w) in v if i == "followup_7d" and u == "region"}
    months = {f"2026-{m:02d}" for m in range(5, 13)} | {f"2027-{m:02d}" for m in range(1, 6)}
    assert labels == {"30d", "12m"} | months
    assert v[("followup_7d", "region", "12m")] == (0, 1, 0)  # 12m: 2026-05-26 .. 2027-05-25
    assert v[("followup_7d", "region", "2026-06")] == (0, 1, 0)
    assert v[("readmission_30d", "region", "12m")] == (0, 1, 0)  # no lag: window 2026-06-02 .. 2027-06-01
    labels = {w for (i, u, w) in v if i == "readmission_30d" and u == "region"}
    assert "2026-06" in labels and "2026-05" not in labels


@pytest.mark.parametrize("age, counted", [(64, 0), (65, 1), (-1, 0)])
def test_falls_age_limit(age: int, counted: int) -> None:
    log = Log()
    log.add("a", ce.EVENT_TYPE_ADMISSION, 0, spell="A1", diagnoses=("S72.0", "W01"), age=age)
    v = log.values()
    assert v.get(("falls_65plus", "region", "30d"), (0, 0, 0))[0] == counted
