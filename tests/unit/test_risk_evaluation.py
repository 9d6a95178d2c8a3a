"""AUC, its interval, the calibration line and calibration tables, against hand-worked values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carehub.domain.risk import auc, auc_interval, calibration, calibration_line


def pairwise_auc(scores: list[float], outcomes: list[bool]) -> float:
    """The definition: over every (with, without) pair, 1 if the one with the outcome scores higher, 1/2 if tied."""
    pos = [s for s, o in zip(scores, outcomes, strict=True) if o]
    neg = [s for s, o in zip(scores, outcomes, strict=True) if not o]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_by_hand() -> None:
    # pairs (with, without): 0.8>0.5, 0.8>0.2, 0.5=0.5 (half), 0.5>0.2 -> 3.5 / 4
    assert auc([0.8, 0.5, 0.5, 0.2], [True, True, False, False]) == pytest.approx(0.875)
    assert auc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert auc([1, 2, 3, 4], [True, True, False, False]) == 0.0
    assert auc([7, 7, 7], [True, False, False]) == 0.5


@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=60))
def test_auc_equals_the_pairwise_definition(rows: list[tuple[int, bool]]) -> None:
    scores, outcomes = [float(s) for s, _ in rows], [o for _, o in rows]
    if all(outcomes) or not any(outcomes):
        with pytest.raises(ValueError, match="with and without"):
            auc(scores, outcomes)
    else:
        assert auc(scores, outcomes) == pytest.approx(pairwise_auc(scores, outcomes))


def test_auc_interval_hanley_mcneil() -> None:
    # AUC 0.8, 50 and 50: Q1 = 0.8/1.2, Q2 = 1.28/1.8; var = (0.16 + 49(Q1-0.64) + 49(Q2-0.64)) / 2500
    low, high = auc_interval(0.8, 50, 50)
    half = 1.96 * math.sqrt((0.16 + 49 * (0.8 / 1.2 - 0.64) + 49 * (1.28 / 1.8 - 0.64)) / 2500)
    assert (low, high) == pytest.approx((0.8 - half, 0.8 + half))
    assert half == pytest.approx(0.0872, abs=1e-4)
    assert auc_interval(1.0, 5, 5) == (1.0, 1.0)


def test_calibration_line_of_calibrated_and_overconfident_risks() -> None:
    # each risk level observed at exactly its own rate: the line is the identity
    risks = [0.1] * 10 + [0.5] * 10 + [0.8] * 10
    outcomes = [i < 1 for i in range(10)] + [i < 5 for i in range(10)] + [i < 8 for i in range(10)]
    intercept, slope = calibration_line(risks, outcomes)
    assert intercept == pytest.approx(0, abs=1e-6) and slope == pytest.approx(1, abs=1e-6)
    # predicted 5% / 95%, observed 20% / 80%: logit 0.8 / logit 0.95 = 0.471, too extreme
    risks = [0.05] * 10 + [0.95] * 10
    outcomes = [i < 2 for i in range(10)] + [i < 8 for i in range(10)]
    intercept, slope = calibration_line(risks, outcomes)
    assert intercept == pytest.approx(0, abs=1e-6)
    assert slope == pytest.approx(math.log(4) / math.log(19), abs=1e-6)
    with pytest.raises(ValueError, match="do not vary"):
        calibration_line([0.2, 0.2], [True, False])


def test_calibration_table_by_group() -> None:
    rows = [("high", 0.5, True), ("high", 0.3, False), ("low", 0.1, False), ("low", 0.1, True), ("low", 0.1, False)]
    high, low, empty = calibration(rows, ["high", "low", "none"])
    assert (high.group, high.people, high.observed) == ("high", 2, 1) and high.predicted == pytest.approx(0.4)
    assert high.observed_rate == 0.5 and high.share_of_outcomes == 0.5
    assert (low.people, low.observed) == (3, 1)
    assert low.predicted == pytest.approx(0.1) and low.observed_rate == pytest.approx(1 / 3)
    assert (empty.people, empty.observed_rate, empty.share_of_outcomes) == (0, 0.0, 0.0)
    with pytest.raises(ValueError, match="'other' is not one of"):
        calibration([("other", 0.1, False)], ["high"])
