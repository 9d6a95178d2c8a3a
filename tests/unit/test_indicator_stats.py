from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from services.indicators import stats
from services.indicators.stats import (
    funnel_limits_proportion,
    funnel_limits_rate,
    outlier,
    poisson_count_ci,
    proportion_ci,
    rate_ci,
)


def naive_poisson_cdf(k: int, mu: float) -> float:
    """Independent check: the textbook sum, fine for the moderate k and mu used here."""
    return math.fsum(math.exp(-mu + i * math.log(mu) - math.lgamma(i + 1)) for i in range(k + 1)) if mu > 0 else 1.0


# Exact (Garwood) 95% limits for a Poisson count, as tabulated from the chi-square relation
# lower = chi2(0.025, 2k) / 2, upper = chi2(0.975, 2k + 2) / 2 (e.g. the PHE confidence-interval guide's tables).
@pytest.mark.parametrize(
    ("count", "lower", "upper", "places"),
    [
        (0, 0.0, 3.6889, 4),
        (1, 0.0253, 5.5716, 4),
        (5, 1.6235, 11.6683, 4),
        (10, 4.7954, 18.3904, 4),
        (100, 81.364, 121.627, 3),
    ],
)
def test_exact_poisson_ci_matches_published_values(count: int, lower: float, upper: float, places: int) -> None:
    got = poisson_count_ci(count, 0.95)
    assert got[0] == pytest.approx(lower, abs=0.5 * 10**-places)
    assert got[1] == pytest.approx(upper, abs=0.5 * 10**-places)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 20, 60])
@pytest.mark.parametrize("level", [0.95, 0.998])
def test_exact_poisson_ci_limits_have_the_defining_tail_probabilities(count: int, level: float) -> None:
    lower, upper = poisson_count_ci(count, level)
    tail = (1 - level) / 2
    assert 1 - naive_poisson_cdf(count - 1, lower) == pytest.approx(tail, rel=1e-8)  # P(X >= count | lower)
    assert naive_poisson_cdf(count, upper) == pytest.approx(tail, rel=1e-8)  # P(X <= count | upper)


@pytest.mark.parametrize(("k", "mu"), [(0, 0.5), (3, 0.1), (3, 9.0), (12, 3.0), (50, 50.0), (80, 120.0), (400, 350.0)])
def test_poisson_cdf_agrees_with_textbook_sum(k: int, mu: float) -> None:
    assert stats._poisson_cdf(k, mu) == pytest.approx(naive_poisson_cdf(k, mu), rel=1e-12, abs=1e-300)


def test_poisson_cdf_is_stable_for_large_means() -> None:
    # P(X <= mu) for integer mu is 1/2 + 2 / (3 sqrt(2 pi mu)) + O(1/mu) (Ramanujan's median problem).
    mu = 1_000_000
    assert stats._poisson_cdf(mu, float(mu)) == pytest.approx(0.5 + 2 / (3 * math.sqrt(2 * math.pi * mu)), abs=1e-6)
    assert stats._poisson_cdf(mu - 10_000, float(mu)) < 1e-20
    assert stats._poisson_cdf(mu + 10_000, float(mu)) == 1.0


def test_byar_takes_over_above_the_exact_limit_and_agrees_with_exact() -> None:
    count = stats.EXACT_MAX_COUNT + 1
    byar = poisson_count_ci(count, 0.95)
    exact = stats._exact_poisson_ci(count, 0.95)
    assert byar == stats._byar_ci(count, 0.95)
    assert byar[0] == pytest.approx(exact[0], rel=1e-6)
    assert byar[1] == pytest.approx(exact[1], rel=1e-6)


def test_rate_ci_scales_the_count_interval_to_a_rate_per_population() -> None:
    lower, upper = rate_ci(10, 50_000)  # 20 per 100,000
    assert lower == pytest.approx(4.7954 * 2, abs=1e-3)
    assert upper == pytest.approx(18.3904 * 2, abs=1e-3)
    lower, upper = rate_ci(10, 50_000, per=1000)
    assert (lower, upper) == pytest.approx((4.7954 / 50, 18.3904 / 50), abs=1e-5)
    assert rate_ci(0, 1234)[0] == 0.0
    wide, narrow = rate_ci(10, 50_000, level=0.998), rate_ci(10, 50_000, level=0.95)
    assert wide[0] < narrow[0] < 20 < narrow[1] < wide[1]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rate_ci(3, 0), "population"),
        (lambda: rate_ci(3, -5), "population"),
        (lambda: rate_ci(-1, 100), "count"),
        (lambda: rate_ci(3, 100, per=0), "per"),
        (lambda: rate_ci(3, 100, level=1.0), "level"),
        (lambda: rate_ci(3, 100, level=0.0), "level"),
        (lambda: proportion_ci(1, 0), "denominator"),
        (lambda: proportion_ci(5, 4), "numerator"),
        (lambda: proportion_ci(-1, 4), "numerator"),
        (lambda: funnel_limits_rate(10.0, 0, 100_000, 0.95), "population"),
        (lambda: funnel_limits_rate(-1.0, 10, 100_000, 0.95), "expected_rate_per"),
        (lambda: funnel_limits_proportion(1.2, 10, 0.95), "p"),
        (lambda: funnel_limits_proportion(0.2, 0, 0.95), "denominator"),
        (lambda: outlier(1.0, (0.0, 5.0), (1.0, 4.0)), "contain"),
    ],
)
def test_invalid_inputs_raise(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# Wilson score (no continuity correction) 95% intervals from Newcombe (1998) "Two-sided confidence intervals for the
# single proportion", Table I, method 3; 8/40 worked by hand from the formula.
@pytest.mark.parametrize(
    ("num", "den", "lower", "upper"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (8, 40, 0.1050, 0.3476),
    ],
)
def test_wilson_interval_matches_published_values(num: int, den: int, lower: float, upper: float) -> None:
    got = proportion_ci(num, den)
    assert got == pytest.approx((lower, upper), abs=5e-5)


def test_wilson_interval_ends_and_symmetry() -> None:
    assert proportion_ci(0, 7)[0] == 0.0
    assert proportion_ci(7, 7)[1] == 1.0
    lo, hi = proportion_ci(3, 10)
    mirror_lo, mirror_hi = proportion_ci(7, 10)
    assert (lo, hi) == pytest.approx((1 - mirror_hi, 1 - mirror_lo), abs=1e-12)


def test_funnel_rate_limits_small_expected_count_by_hand() -> None:
    # Expected count 1 (rate 10 per 1000 with population 100). Upper 97.5% point: P(X <= 2) < 0.975 <= P(X <= 3),
    # so r = 3 and the interpolated limit is 3 - (P(X <= 3) - 0.975) / P(X = 3). Lower: P(X = 0) > 0.025 -> 0.
    f2, f3 = naive_poisson_cdf(2, 1.0), naive_poisson_cdf(3, 1.0)
    assert f2 < 0.975 <= f3
    expected_upper_count = 3 - (f3 - 0.975) / (f3 - f2)
    lower, upper = funnel_limits_rate(10.0, 100, 1000, 0.95)
    assert lower == 0.0
    assert upper == pytest.approx(expected_upper_count * 10, rel=1e-12)  # count / 100 people * 1000
    assert upper == pytest.approx(29.019, abs=1e-3)


def test_funnel_rate_limits_match_cornish_fisher_for_large_counts() -> None:
    # For a large expected count the interpolated quantile is mu + z sqrt(mu) + (z^2 - 1) / 6 - 1/2 (the last term
    # because interpolating across the step at r places each step's mass just below r).
    mu, population, per = 10_000.0, 2_000_000, 100_000
    rate = mu / population * per
    for level in (0.95, 0.998):
        z = stats._z(level)
        lower, upper = funnel_limits_rate(rate, population, per, level)
        assert lower * population / per == pytest.approx(mu - z * math.sqrt(mu) + (z * z - 1) / 6 - 0.5, abs=0.05)
        assert upper * population / per == pytest.approx(mu + z * math.sqrt(mu) + (z * z - 1) / 6 - 0.5, abs=0.05)


def test_funnel_rate_limits_are_continuous_and_funnel_shaped() -> None:
    per, rate = 100_000, 500.0
    previous: tuple[float, float] | None = None
    for population in range(400, 2400, 1):  # expected counts 2..12, a step of 0.005 each
        lower, upper = funnel_limits_rate(rate, population, per, 0.95)
        counts = (lower * population / per, upper * population / per)
        assert lower <= rate <= upper
        if previous is not None:  # no jumps on the count scale, unlike the plain (uninterpolated) quantile
            assert abs(counts[0] - previous[0]) < 0.05 and abs(counts[1] - previous[1]) < 0.05
        previous = counts
    small = funnel_limits_rate(rate, 1000, per, 0.998)
    large = funnel_limits_rate(rate, 100_000, per, 0.998)
    assert small[0] < large[0] < rate < large[1] < small[1]
    assert funnel_limits_rate(0.0, 1000, per, 0.95) == (0.0, 0.0)


def test_funnel_proportion_limits() -> None:
    assert funnel_limits_proportion(0.2, 100, 0.95) == pytest.approx((0.2 - 0.0784, 0.2 + 0.0784), abs=1e-4)
    assert funnel_limits_proportion(0.2, 100, 0.998) == pytest.approx((0.2 - 0.12361, 0.2 + 0.12361), abs=1e-4)
    assert funnel_limits_proportion(0.02, 10, 0.95)[0] == 0.0  # clipped, not negative
    assert funnel_limits_proportion(0.98, 10, 0.95)[1] == 1.0
    assert funnel_limits_proportion(0.0, 50, 0.95) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (50.0, ""),
        (40.0, ""),  # on the 95% limit counts as inside
        (60.0, ""),
        (60.1, "high_95"),
        (70.0, "high_95"),
        (70.1, "high_998"),
        (39.9, "low_95"),
        (30.0, "low_95"),
        (29.9, "low_998"),
    ],
)
def test_outlier_bands(value: float, expected: str) -> None:
    assert outlier(value, (40.0, 60.0), (30.0, 70.0)) == expected
