"""Fair comparison in the indicators, without Kafka: counts by stratum, the DSR beside the crude
rate (equal to a hand computation), its suppression, national reference values and attribution."""

from __future__ import annotations

import math
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carehub.domain.definitions import PACKAGED, load_catalogue, parse_indicator
from carehub.domain.indicator_counts import PartitionCounts
from carehub.domain.indicator_facts import PersonFacts, day_of, stratum_of
from carehub.domain.reference_values import load_reference_values
from carehub.domain.timeline import apply
from carehub.settings import load_settings
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import indicators_pb2 as ind
from services.indicators.aggregate import Aggregate
from tests.reference.indicators import reference
from tests.unit.broken_copies import assert_broken_copy_refused
from tests.unit.test_timeline_state import Feed

OCT = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
F, M, UNKNOWN = ce.SEX_FEMALE, ce.SEX_MALE, ce.SEX_UNKNOWN
EMERGENCY = ce.ADMISSION_METHOD_EMERGENCY
SENT: dict[str, list[idn.LinkedEvent]] = {}  # every linked event applied, by person: for the reference


def event(f: Feed, kind: ce.EventType.ValueType, when: datetime, age: int, sex: ce.Sex.ValueType,
          practice: str = "P01", locality: str = "L1", **clinical: object) -> None:
    link = f.linked(kind, when, **clinical)  # type: ignore[arg-type]
    link.event.person.age_years, link.event.person.sex = age, sex
    link.event.registered_practice, link.event.locality = practice, locality
    assert apply(f.state, link) is not None
    SENT.setdefault(f.person_id, []).append(link)


def person(pid: str, age: int, sex: ce.Sex.ValueType, admissions: int, practice: str = "P01") -> Feed:
    """Registered at ``practice``; ``admissions`` emergency admissions for pyelonephritis (an acute ACSC)."""
    f = Feed(person_id=pid)
    SENT.pop(pid, None)  # a new person of that id
    event(f, ce.EVENT_TYPE_REGISTRATION, OCT - 200 * DAY, age, sex, practice)
    for i in range(admissions):
        when = OCT - (100 - 20 * i) * DAY
        event(f, ce.EVENT_TYPE_ADMISSION, when, age, sex, practice, spell=f"S-{i}",
              admission_method=ce.ADMISSION_METHOD_EMERGENCY, diagnoses=[ce.Diagnosis(code="N10", position=1)])
        event(f, ce.EVENT_TYPE_DISCHARGE, when + 2 * DAY, age, sex, practice, spell=f"S-{i}",
              discharge_destination="19")
    return f


def small_practice() -> list[Feed]:
    """13 registered people of practice P01 and 12 admissions, written out for the hand computation."""
    women_70 = [person(f"w70-{i}", 70, F, n) for i, n in enumerate((2, 2, 1, 1, 0))]  # 6 admissions
    men_70 = [person(f"m70-{i}", 71, M, n) for i, n in enumerate((1, 1, 0, 0))]  # 2 admissions
    women_86 = [person(f"w86-{i}", 86, F, n) for i, n in enumerate((2, 1))]  # 3 admissions
    man_30 = [person("m30", 30, M, 0)]
    unknown_sex = [person("u50", 50, UNKNOWN, 1)]  # fits no stratum
    return women_70 + men_70 + women_86 + man_30 + unknown_sex


def values_of(feeds: list[Feed], threshold: int = 0, **kw: object) -> dict[tuple[str, str, str], ind.IndicatorValue]:
    facts = PersonFacts(load_catalogue(), **kw)  # type: ignore[arg-type]
    counts = PartitionCounts(facts)
    counts.rebuild(0, [f.timeline for f in feeds])
    aggregate = Aggregate(facts.catalogue, facts.attribution, references=load_reference_values())
    for record in counts.snapshot_records(0):
        aggregate.apply(ind.IndicatorPartials.FromString(record))
    return {(v.indicator, v.unit, v.window): v for v in aggregate.values(threshold)}


def test_the_dsr_equals_a_hand_computation_on_a_small_population() -> None:
    v = values_of(small_practice())[("acsc_all", "practice:P01", "12m")]
    # crude: 12 admissions (11 in strata, 1 of unknown sex) in 13 registered people
    assert (v.numerator, v.denominator) == (12, 13)
    assert v.value == pytest.approx(12 / 13 * 100_000)

    # By hand (docs/standardisation.md). ESP 2013 weights: 70-74 5,000; 85-89 1,500; 30-34 6,500.
    # Strata with events, x events in n people, weight w (each sex has the 100,000 of ESP 2013):
    #   women 70-74: x = 6, n = 5, w = 5,000 -> x*w/n = 6,000;  x*(w/n)^2 = 6 * 1,000^2 = 6,000,000
    #   men   70-74: x = 2, n = 4, w = 5,000 -> x*w/n = 2,500;  x*(w/n)^2 = 2 * 1,250^2 = 3,125,000
    #   women 85-89: x = 3, n = 2, w = 1,500 -> x*w/n = 2,250;  x*(w/n)^2 = 3 *   750^2 = 1,687,500
    #   men   30-34: x = 0, n = 1 (and every other stratum empty): adds 0, keeps its weight.
    # Sum of weights over both sexes: 200,000.
    # DSR = (6,000 + 2,500 + 2,250) / 200,000 * 100,000 = 5,375 per 100,000
    # var = (6,000,000 + 3,125,000 + 1,687,500) / 200,000^2 * 100,000^2 = 2,703,125
    # O = 11 events in strata; Byar, z = 1.959964:
    #   O_L = 11 * (1 - 1/99 - z/(3*sqrt(11)))^3 = 5.4837,  O_U = 12 * (1 - 1/108 + z/(3*sqrt(12)))^3 = 19.6832
    # Dobson: DSR + sqrt(var/O) * (O_L - O), DSR + sqrt(var/O) * (O_U - O), sqrt(var/O) = 495.72:
    #   lower 5,375 + 495.72 * (5.4837 - 11) = 2,640.5;  upper 5,375 + 495.72 * (19.6832 - 11) = 9,679.5
    z = 1.959964
    o_low = 11 * (1 - 1 / 99 - z / (3 * math.sqrt(11))) ** 3
    o_high = 12 * (1 - 1 / 108 + z / (3 * math.sqrt(12))) ** 3
    scale = math.sqrt(2_703_125 / 11)
    assert o_low == pytest.approx(5.4837, abs=1e-4) and o_high == pytest.approx(19.6832, abs=1e-4)
    assert v.dsr == pytest.approx(5_375.0, rel=1e-12)
    assert v.dsr_ci_low == pytest.approx(5_375 + scale * (o_low - 11), rel=1e-6)
    assert v.dsr_ci_high == pytest.approx(5_375 + scale * (o_high - 11), rel=1e-6)
    assert round(v.dsr_ci_low, 1) == 2640.5 and round(v.dsr_ci_high, 1) == 9679.5
    assert v.standard_population == "European Standard Population 2013" and v.dsr_not_computed == ""
    assert (v.unstratified_events, v.unstratified_population) == (1, 1)

    # the region is the same people: the same DSR; a count indicator has none
    region = values_of(small_practice())[("acsc_all", "region", "12m")]
    assert region.dsr == pytest.approx(5_375.0, rel=1e-12)
    assert not values_of(small_practice())[("readmission_30d", "region", "12m")].standard_population


def test_a_dsr_is_not_computed_on_fewer_than_ten_events_and_providers_have_none() -> None:
    values = values_of(small_practice())
    acute = values[("acsc_acute", "practice:P01", "2026-07")]  # one month: 3 admissions
    assert acute.numerator > 0 and not acute.HasField("dsr") and acute.dsr_not_computed == "too_few_events"
    provider = values[("acsc_all", "provider:RR8", "12m")]
    assert provider.numerator == 12 and not provider.standard_population and not provider.HasField("dsr")


def test_a_withheld_value_withholds_its_dsr_and_small_counts_outside_the_strata() -> None:
    feeds = small_practice() + [person(f"p2-{i}", 40, F, 0, practice="P02") for i in range(20)]
    values = values_of(feeds, threshold=7)
    # P01's 12 admissions are published with the DSR; its 1 event of unknown sex is a small count,
    # withheld, and the region's 1 too (a count from 1 to 7 itself, and P01's from it and P02's 0).
    p1 = values[("acsc_all", "practice:P01", "12m")]
    assert not p1.suppressed and p1.HasField("dsr")
    assert not p1.HasField("unstratified_events")
    assert not values[("acsc_all", "region", "12m")].HasField("unstratified_events")
    # a threshold above the count withholds the value, and the DSR built on it
    withheld = values_of(feeds, threshold=12)[("acsc_all", "practice:P01", "12m")]
    assert withheld.suppressed and not withheld.HasField("dsr") and not withheld.standard_population


def test_strata_change_no_existing_cell() -> None:
    """The cells by stratum sit beside the others under their own names."""
    facts = PersonFacts(load_catalogue())
    cells = facts.cells(person("w", 70, F, 1).timeline)
    admitted = day_of(int((OCT - 100 * DAY).timestamp()) * 10**9)
    assert cells[("acsc_all", "practice:P01", admitted)] == (1, 1, 1)  # working diagnosis: provisional
    assert cells[("acsc_all/70/female", "practice:P01", admitted)] == (1, 0, 1)
    assert cells[("_population/70/female", "region", 0)] == (0, 1, 0)
    assert ("acsc_all/70/female", "provider:RR8", admitted) not in cells  # no population, no strata
    assert not any(k[0].startswith("readmission_30d/") for k in cells)  # proportions have none


def test_national_values_give_funnel_limits_where_comparable() -> None:
    values = values_of(small_practice())
    readmissions = values[("readmission_30d", "practice:P01", "12m")]
    assert readmissions.national_reference == "nhsof_3b_2017_18" and readmissions.national_value == 0.138
    assert readmissions.national_funnel_95_low < 0.138 < readmissions.national_funnel_95_high
    assert readmissions.national_funnel_998_low <= readmissions.national_funnel_95_low
    assert readmissions.outlier == ""  # judged against the region only
    assert not values[("acsc_all", "practice:P01", "12m")].national_reference  # no national rate found


def test_attribution_current_or_at_event() -> None:
    """A person admitted while registered at P01 who then moved to P02, and was discharged after."""
    f = Feed(person_id="mover")
    event(f, ce.EVENT_TYPE_REGISTRATION, OCT - 100 * DAY, 70, F, "P01")
    event(f, ce.EVENT_TYPE_ADMISSION, OCT - 50 * DAY, 70, F, "P01", spell="S-1",
          admission_method=ce.ADMISSION_METHOD_EMERGENCY, diagnoses=[ce.Diagnosis(code="N10", position=1)])
    event(f, ce.EVENT_TYPE_REGISTRATION, OCT - 45 * DAY, 70, F, "P02", "L2")
    event(f, ce.EVENT_TYPE_DISCHARGE, OCT - 40 * DAY, 70, F, "", "", spell="S-1", discharge_destination="19")
    feeds = [f]
    current = values_of(feeds)
    assert current[("acsc_all", "practice:P02", "12m")].numerator == 1
    assert ("acsc_all", "practice:P01", "12m") not in current
    assert current[("readmission_30d", "practice:P02", "12m")].denominator == 1

    at_event = values_of(feeds, attribution="at_event")
    assert at_event[("acsc_all", "practice:P01", "12m")].numerator == 1  # admitted while at P01
    assert at_event[("acsc_all", "locality:L1", "12m")].numerator == 1
    assert at_event[("acsc_all", "practice:P02", "12m")].numerator == 0  # its population is P02's now
    assert at_event[("acsc_all", "practice:P02", "12m")].denominator == 1
    assert at_event[("readmission_30d", "practice:P02", "12m")].denominator == 1  # discharged while at P02
    assert ("readmission_30d", "practice:P01", "12m") not in at_event


def test_attribution_equals_the_reference_both_ways() -> None:
    """A mover with late events, an attendance naming no practice and a readmission: the engine's
    values, by either rule, equal the batch reference's (tests/reference/indicators.py)."""
    f = Feed(person_id="mover-2")
    SENT.pop("mover-2", None)
    event(f, ce.EVENT_TYPE_REGISTRATION, OCT - 100 * DAY, 70, F, "P01")
    event(f, ce.EVENT_TYPE_ADMISSION, OCT - 50 * DAY, 70, F, "P01", spell="S-1", admission_method=EMERGENCY,
          diagnoses=[ce.Diagnosis(code="N10", position=1)])
    event(f, ce.EVENT_TYPE_REGISTRATION, OCT - 45 * DAY, 70, F, "P02", "L2")
    event(f, ce.EVENT_TYPE_ED_ATTENDANCE, OCT - 42 * DAY, 70, F, "", "", spell="")  # names no practice: P02
    event(f, ce.EVENT_TYPE_DISCHARGE, OCT - 40 * DAY, 70, F, "", "", spell="S-1", discharge_destination="19")
    event(f, ce.EVENT_TYPE_ADMISSION, OCT - 35 * DAY, 71, F, "P02", "", spell="S-2", admission_method=EMERGENCY,
          diagnoses=[ce.Diagnosis(code="J18.1", position=1)])  # names P02 without a locality: L2
    event(f, ce.EVENT_TYPE_ADMISSION, OCT - 60 * DAY, 70, F, "P01", "", spell="S-0", admission_method=EMERGENCY,
          diagnoses=[ce.Diagnosis(code="I50.0", position=1)])  # late, names P01 without a locality: unknown
    event(f, ce.EVENT_TYPE_DISCHARGE, OCT - 58 * DAY, 70, F, "", "", spell="S-0", discharge_destination="19")
    feeds = [f, *small_practice()]
    linked = [link for feed in feeds for link in SENT[feed.person_id]]
    for attribution in ("current", "at_event"):
        got = values_of(feeds, attribution=attribution)
        expected = reference(linked, PACKAGED, attribution)
        assert {k: (v.numerator, v.denominator if v.HasField("denominator") else None, v.provisional)
                for k, v in got.items()} == expected.values, attribution
        for key, (_, reason, events_out, people_out) in expected.standardised.items():
            assert (got[key].dsr_not_computed, got[key].unstratified_events,
                    got[key].unstratified_population) == (reason, events_out, people_out), key
    at_event = values_of(feeds, attribution="at_event")
    assert at_event[("acsc_chronic", "locality:unknown", "12m")].numerator == 1  # S-0, named P01 alone
    assert at_event[("frequent_ed_attenders", "practice:P02", "12m")].denominator == 1


def test_an_unknown_attribution_is_refused() -> None:
    with pytest.raises(ValueError, match="attribution must be one of current, at_event"):
        PersonFacts(load_catalogue(), "at_discharge")


def test_a_definition_opts_in_to_the_cancer_exclusion() -> None:
    """readmission_30d leaves out index spells with a cancer diagnosis; readmission_28d does not opt in."""
    f = Feed(person_id="c")
    event(f, ce.EVENT_TYPE_ADMISSION, OCT - 30 * DAY, 60, F, spell="S-1",
          admission_method=ce.ADMISSION_METHOD_ELECTIVE,
          diagnoses=[ce.Diagnosis(code="C50.9", position=1, provisional=True)])
    event(f, ce.EVENT_TYPE_DISCHARGE, OCT - 28 * DAY, 60, F, spell="S-1", discharge_destination="19")
    event(f, ce.EVENT_TYPE_ADMISSION, OCT - 20 * DAY, 60, F, spell="S-2",
          admission_method=ce.ADMISSION_METHOD_EMERGENCY,
          diagnoses=[ce.Diagnosis(code="N10", position=1, provisional=True)])
    event(f, ce.EVENT_TYPE_DISCHARGE, OCT - 18 * DAY, 60, F, spell="S-2", discharge_destination="19")
    values = values_of([f])
    assert (values[("readmission_28d", "region", "12m")].numerator,
            values[("readmission_28d", "region", "12m")].denominator) == (1, 2)
    r30 = values[("readmission_30d", "region", "12m")]
    assert (r30.numerator, r30.denominator) == (0, 1)  # the cancer spell is no index spell
    # the exclusion is judged on diagnoses, so on working ones the fact is provisional until coded
    event(f, ce.EVENT_TYPE_ADMISSION, OCT - 10 * DAY, 60, F, spell="S-3",
          admission_method=ce.ADMISSION_METHOD_EMERGENCY,
          diagnoses=[ce.Diagnosis(code="J18.1", position=1, provisional=True)])
    r30 = values_of([f])[("readmission_30d", "region", "12m")]
    assert (r30.numerator, r30.denominator, r30.provisional) == (1, 1, 1)
    event(f, ce.EVENT_TYPE_DIAGNOSIS_CODED, OCT - 5 * DAY, 60, F, spell="S-2",
          diagnoses=[ce.Diagnosis(code="C18.7", position=2), ce.Diagnosis(code="N10", position=1)])
    values = values_of([f])
    assert ("readmission_30d", "region", "12m") not in values  # coded: a secondary cancer diagnosis excludes it
    assert values[("readmission_28d", "region", "12m")].denominator == 2  # S-3 is still open


def test_an_exclusion_naming_no_code_list_group_is_refused(tmp_path: Path) -> None:
    source = PACKAGED / "indicators" / "readmission_30d.toml"
    codelists = load_catalogue().codelists

    def load(path: Path) -> object:
        return parse_indicator(tomllib.loads(path.read_text()), codelists, str(path))

    assert_broken_copy_refused(source, tmp_path / "r.toml", load, 'exclude_groups = ["cancer"]',
                               'exclude_groups = ["cancers"]', r"\[filter\]\.exclude_groups must name groups")
    assert_broken_copy_refused(source, tmp_path / "r.toml", load, 'exclude_codelist = "cancer"',
                               'exclude_codelist = "oncology"', r"\[filter\]\.exclude_codelist names no known")


def test_counts_made_under_the_other_attribution_are_stale() -> None:
    facts = PersonFacts(load_catalogue())  # current
    counts = PartitionCounts(facts)
    counts.rebuild(0, [person("s", 70, F, 1).timeline])
    for attribution, stale in (("current", []), ("at_event", [0])):
        aggregate = Aggregate(facts.catalogue, attribution)
        for record in counts.snapshot_records(0):
            aggregate.apply(ind.IndicatorPartials.FromString(record))
        assert aggregate.stale_partitions() == stale


def test_the_attribution_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().indicators_attribution == "current"
    monkeypatch.setenv("CAREHUB_INDICATORS_ATTRIBUTION", "at_event")
    assert load_settings().indicators_attribution == "at_event"
    monkeypatch.setenv("CAREHUB_INDICATORS_ATTRIBUTION", "at_discharge")
    with pytest.raises(SystemExit, match="CAREHUB_INDICATORS_ATTRIBUTION"):
        load_settings()


def test_the_looked_up_bands_are_the_standards() -> None:
    facts = PersonFacts(load_catalogue())
    for age in (-1, 0, 4, 5, 64, 65, 89, 90, 120, 121, 130):
        for sex in (F, M, UNKNOWN):
            assert facts.stratum(age, sex) == stratum_of(facts.standard, age, sex), (age, sex)
    assert facts.stratum(87, F) == "85/female" and facts.stratum(130, M) == "90/male"
