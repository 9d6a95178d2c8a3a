"""Factors, score, explanation, segments and tiers on hand-built timelines and scores.

Each expected value is worked out by hand from docs/risk.md ("From events to a tier",
"Factors", "Tiers", "Segments"). The scoring tests use a small model of their own (``MODEL`` below), so that they
check the arithmetic and the rules, not the packaged points, which are data and will change.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carehub.domain.codelists import CodeList, CodeListFile, load_codelists
from carehub.domain.loader import Reader
from carehub.domain.risk import (
    FactorState,
    age_at,
    assess,
    assign_tiers,
    compute_factors,
    load_model,
    parse_model,
    tier_cutoffs,
    tier_of,
)
from carehub.domain.risk.model import PACKAGED, RiskModel, Tier, risk_codelist_paths
from carehub.v1 import care_event_pb2 as ce
from tests.unit.test_risk_state import T0, Person

AS_OF = T0 + timedelta(days=100)
EMERGENCY, ELECTIVE = ce.ADMISSION_METHOD_EMERGENCY, ce.ADMISSION_METHOD_ELECTIVE


def codelists() -> dict[str, CodeList]:
    reader = Reader()
    out = load_codelists(PACKAGED / "codelists", reader)
    for path in risk_codelist_paths(PACKAGED / "risk"):
        built = reader.load(path, CodeListFile).build()
        out[built.id] = built
    return out


def band(at_least: float, points: float) -> dict[str, float]:
    return {"at_least": at_least, "points": points}


MODEL_DATA: dict[str, Any] = {
    "id": "test-risk", "version": "0.1", "title": "t", "source": "tests",
    "score": {"outcome": "emergency admission", "horizon_days": 90, "intercept": -3.0},
    "factors": {
        "emergency_admissions": {"kind": "emergency_admissions", "title": "EA", "window_days": 365,
                                 "points": [band(2, 1.0), band(1, 0.5)]},
        "ed_attendances": {"kind": "ed_attendances", "title": "ED", "window_days": 365, "points": [band(5, 0.9)]},
        "ltc": {"kind": "conditions", "title": "LTC", "codelist": "risk_conditions", "groups": ["ltc"],
                "points": [band(3, 0.7)]},
        "age": {"kind": "age", "title": "Age", "points": [band(75, 0.4)]},
        "care_home": {"kind": "care_home", "title": "CH", "points": [band(1, 0.3)]},
        "social_care": {"kind": "social_care", "title": "SC", "window_days": 365},
        "frailty": {"kind": "deficits", "title": "eFI", "codelist": "efi_deficits", "groups": ["deficit"],
                    "denominator": 36, "min_age": 65, "points": [{"above": 0.12, "points": 0.6}]},
        "eol": {"kind": "conditions", "title": "EoL", "codelist": "risk_conditions", "groups": ["end_of_life"]},
    },
    "tiers": [{"name": "top", "title": "Top", "top_share": 0.1}, {"name": "rest", "title": "Rest", "top_share": 1.0}],
    "segments": [
        {"name": "end_of_life", "title": "EoL", "any_of": [{"factor": "eol", "at_least": 1}]},
        {"name": "frail", "title": "Frail", "any_of": [{"factor": "frailty", "above": 0.24},
                                                        {"factor": "care_home", "at_least": 1}]},
        {"name": "older_complex", "title": "Older, complex", "all_of": [{"factor": "age", "at_least": 65}],
         "any_of": [{"factor": "ltc", "at_least": 3}, {"factor": "emergency_admissions", "at_least": 2}]},
        {"name": "ltc", "title": "LTC", "any_of": [{"factor": "ltc", "at_least": 1}]},
        {"name": "healthy", "title": "Healthy"},
    ],
}


@pytest.fixture(scope="module")
def model() -> RiskModel:
    return parse_model(MODEL_DATA, codelists(), "test model")


def coded(person: Person, spell: str, day: float, method: ce.AdmissionMethod.ValueType, codes: tuple[str, ...],
          discharged: float | None = None) -> None:
    person.send(ce.EVENT_TYPE_ADMISSION, day, spell=spell, method=method, diagnoses=("R69",))
    if discharged is not None:
        person.send(ce.EVENT_TYPE_DISCHARGE, discharged, spell=spell, destination="19")
    person.send(ce.EVENT_TYPE_DIAGNOSIS_CODED, (discharged or day) + 5, spell=spell, diagnoses=codes)


def busy_person() -> Person:
    """Worked example: see each factor's comment in test_factors_of_a_worked_example."""
    p = Person()
    coded(p, "S1", -300, EMERGENCY, ("E11.9",), -295)  # outside the 12 months (from day -265); diabetes counts
    coded(p, "S2", 10, EMERGENCY, ("I50.9", "N18.3", "W19"), 14)
    coded(p, "S3", 50, EMERGENCY, ("J44.1", "I10", "F03"), 55)
    coded(p, "S4", 60, ELECTIVE, ("H25.9",), 60.5)  # elective: not an emergency admission; cataract is a deficit
    cancelled = p.send(ce.EVENT_TYPE_ADMISSION, 70, spell="S5", diagnoses=("C78.0",))
    p.send(ce.EVENT_TYPE_CANCELLATION, 70.1, target=cancelled)  # its metastasis code counts nowhere
    p.send(ce.EVENT_TYPE_ADMISSION, 120, spell="S6", diagnoses=("G20",))  # after as-of: not counted
    for day in (-280, 9, 49, 100):  # -280 is outside the window, 100 is as-of itself (not before it)
        p.send(ce.EVENT_TYPE_ED_ATTENDANCE, day, sector=ce.SECTOR_EMERGENCY)
    p.send(ce.EVENT_TYPE_CARE_HOME_ADMISSION, 30, org="CH1")
    p.send(ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, -200, org="LA1")
    return p


def test_factors_of_a_worked_example(model: RiskModel) -> None:
    p = busy_person()
    f = compute_factors(p.factors, AS_OF, model)
    assert f.values["emergency_admissions"] == 2  # S2, S3 (S1 too old, S4 elective, S5 cancelled, S6 later)
    assert f.values["ed_attendances"] == 2  # days 9 and 49
    # diabetes (S1), heart failure, CKD (S2), COPD, hypertension, dementia (S3)
    assert f.evidence["ltc"] == ("hypertension", "heart_failure", "diabetes", "copd_and_chronic_lung_disease",
                                 "chronic_kidney_disease", "dementia")
    assert f.values["ltc"] == 6
    # deficits: diabetes, falls, CKD, heart failure, hypertension, memory, respiratory, cataract (visual)
    assert set(f.evidence["frailty"]) == {"diabetes", "falls", "chronic_kidney_disease", "heart_failure",
                                          "hypertension", "memory_and_cognitive_problems", "respiratory_disease",
                                          "visual_impairment"}
    assert f.values["frailty"] == pytest.approx(8 / 36)
    assert f.values["age"] == 80 and f.values["care_home"] == 1 and f.values["social_care"] == 1
    assert f.values["eol"] == 0 and f.evidence["eol"] == ()
    later = compute_factors(p.factors, T0 + timedelta(days=200), model)
    assert later.values["social_care"] == 0  # the assessment was on day -200: more than 365 days before
    assert later.values["eol"] == 0 and later.evidence["ltc"][-1] == "parkinsons_disease"  # S6 now before as-of


def test_frailty_counts_from_its_minimum_age_only(model: RiskModel) -> None:
    p = Person()
    coded(p, "S1", 0, EMERGENCY, ("I50.9", "W19", "F03"), 3)
    assert compute_factors(p.factors, AS_OF, model).values["frailty"] == pytest.approx(3 / 36)
    young = Person()
    young.send(ce.EVENT_TYPE_ADMISSION, 0, spell="S1", diagnoses=("I50.9", "W19", "F03"), age=64)
    f = compute_factors(young.factors, AS_OF, model)
    assert f.values["frailty"] == 0 and f.values["ltc"] == 2


def test_age_rolls_on_from_the_latest_age_sent_and_unknown_stays_unknown(model: RiskModel) -> None:
    p = Person()
    p.send(ce.EVENT_TYPE_GP_CONTACT, 0, org="B86001", age=79)
    assert age_at(p.factors, T0) == 79
    assert age_at(p.factors, T0 + timedelta(days=364)) == 79
    assert age_at(p.factors, T0 + timedelta(days=365 * 2 + 1)) == 81
    p.send(ce.EVENT_TYPE_GP_CONTACT, -10, org="B86001", age=78)  # older event: does not replace the age
    assert age_at(p.factors, T0) == 79
    assert age_at(FactorState(), T0) == -1
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_factors(p.factors, datetime(2026, 1, 1), model)


def test_score_risk_and_explanation(model: RiskModel) -> None:
    a = assess(busy_person().factors, AS_OF, model)
    # 2 admissions 1.0 + 6 conditions 0.7 + age 80 0.4 + care home 0.3 + eFI 8/36 > 0.12 0.6; ED 2 < 5: 0
    assert a.score == pytest.approx(3.0)
    assert a.risk == pytest.approx(0.5)  # 1 / (1 + exp(-(-3 + 3)))
    assert a.model == "test-risk 0.1" and a.as_of == AS_OF
    assert a.explain() == [("emergency_admissions", 2.0, 1.0), ("ltc", 6.0, 0.7),
                           ("frailty", pytest.approx(8 / 36), 0.6), ("age", 80.0, 0.4), ("care_home", 1.0, 0.3),
                           ("ed_attendances", 2.0, 0.0)]
    # social care and eol have no points: not in the explanation, but their values are in the factors
    assert {c.factor for c in a.contributions} == {"emergency_admissions", "ed_attendances", "ltc", "age",
                                                  "care_home", "frailty"}
    assert a.factors.values["social_care"] == 1


def test_nobody_known_gets_the_intercept_and_an_unknown_age_no_age_points(model: RiskModel) -> None:
    a = assess(FactorState(), AS_OF, model)
    assert a.score == 0 and a.risk == pytest.approx(1 / (1 + math.exp(3.0)))
    assert a.factors.values["age"] == -1 and a.segment == "healthy"


def test_segments_are_tried_in_order(model: RiskModel) -> None:
    frail = busy_person()  # care home and complex: frail comes first
    assert assess(frail.factors, AS_OF, model).segment == "frail"
    frail.send(ce.EVENT_TYPE_ADMISSION, 90, spell="S7", diagnoses=("Z51.5",))
    assert assess(frail.factors, AS_OF, model).segment == "end_of_life"
    older = Person()
    coded(older, "S1", 0, ELECTIVE, ("I10", "E11.9", "J45.9"), 1)
    assert assess(older.factors, AS_OF, model).segment == "older_complex"
    younger = Person()
    younger.send(ce.EVENT_TYPE_ADMISSION, 0, spell="S1", diagnoses=("I10", "E11.9", "J45.9"), age=50)
    assert assess(younger.factors, AS_OF, model).segment == "ltc"  # all_of: age 65 fails


def test_packaged_model_explains_every_scored_factor() -> None:
    packaged = load_model()
    a = assess(busy_person().factors, AS_OF, packaged)
    assert a.model == "carehub-risk 1.0.0" and a.digest == packaged.digest
    assert [c.factor for c in a.contributions] == [f.name for f in packaged.factors if f.bands]
    assert a.score == pytest.approx(sum(c.points for c in a.contributions))
    assert a.risk == pytest.approx(1 / (1 + math.exp(-(packaged.intercept + a.score))))
    assert a.segment == "frail"


# -- tiers --------------------------------------------------------------------------------------

TIERS = (Tier("very_high", "", 0.005), Tier("high", "", 0.05), Tier("moderate", "", 0.2), Tier("low", "", 1.0))


def with_tiers(model: RiskModel, *tiers: Tier) -> RiskModel:
    return dataclasses.replace(model, tiers=tiers)


def test_tiers_by_percentile_of_distinct_scores(model: RiskModel) -> None:
    scores = {f"p{i}": float(i) for i in range(1000)}
    cutoffs, tiers = assign_tiers(scores, with_tiers(model, *TIERS))
    assert (cutoffs.model, cutoffs.population) == ("test-risk 0.1", 1000)
    assert {p for p, t in tiers.items() if t == "very_high"} == {f"p{i}" for i in range(995, 1000)}
    assert sum(1 for t in tiers.values() if t == "high") == 45 and tiers["p950"] == "high"
    assert tiers["p949"] == "moderate" and tiers["p800"] == "moderate" and tiers["p799"] == "low"


def test_ties_are_never_split_and_a_tier_never_overfills(model: RiskModel) -> None:
    tiers = with_tiers(model, Tier("top", "", 0.1), Tier("next", "", 0.5), Tier("rest", "", 1.0))
    scores = [5.0, 5.0, 3.0, 3.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    cutoffs = tier_cutoffs(scores, tiers)
    # top may hold 1 person, but two share the highest score: nobody; next may hold 5: the 5s and 3s
    assert cutoffs.counts(scores) == {"top": 0, "next": 5, "rest": 5}
    assert tier_of(6.0, cutoffs) == "top" and tier_of(4.0, cutoffs) == "next" and tier_of(1.0, cutoffs) == "rest"


def test_nobody_to_rank_puts_every_new_score_in_the_last_tier() -> None:
    cutoffs = tier_cutoffs([], load_model())
    assert cutoffs.population == 0 and tier_of(99.0, cutoffs) == "low"


@given(scores=st.lists(st.integers(0, 30).map(float), min_size=1, max_size=400))
def test_tiers_hold_their_shares_and_follow_the_score(model: RiskModel, scores: list[float]) -> None:
    cutoffs = tier_cutoffs(scores, with_tiers(model, *TIERS))
    names = [t.name for t in TIERS]
    assigned = [tier_of(s, cutoffs) for s in scores]
    for i, tier in enumerate(TIERS):  # a tier and those above hold at most their share
        assert sum(1 for a in assigned if names.index(a) <= i) <= math.floor(tier.top_share * len(scores) + 1e-9)
    by_score = sorted(zip(scores, assigned, strict=True))
    for (s1, a1), (s2, a2) in itertools.pairwise(by_score):  # higher score, same or higher tier
        assert names.index(a2) <= names.index(a1) or s2 == s1
        if s1 == s2:
            assert a1 == a2
    if len(set(scores)) == len(scores) and len(scores) >= 200:  # distinct scores fill the top share exactly
        assert assigned.count("very_high") == math.floor(0.005 * len(scores) + 1e-9)
