"""Confidence intervals and funnel-plot control limits for published indicators (standard library only).

Why these methods:

* Rates (count per ``per`` registered population) use the exact Poisson interval: small areas have small counts,
  where the normal approximation is badly wrong. The interval is found by bisection on the Poisson CDF, which is
  the same as the chi-square/gamma formula (Garwood 1936). Above ``EXACT_MAX_COUNT`` we use Byar's approximation,
  as Public Health England's "Technical Guide: Confidence intervals" does for all counts; by then it agrees with the
  exact interval to better than one part in a million and costs nothing.
* Proportions use the Wilson score interval (PHE "Technical Guide: Confidence intervals"; Newcombe 1998), which
  stays inside [0, 1] and behaves at 0 and n, unlike the Wald interval.
* Funnel limits follow Spiegelhalter (2005) "Funnel plots for comparing institutional performance" and PHE
  "Technical guide: funnel plots": the exact Poisson quantile for rates, interpolated across the discrete step
  (Spiegelhalter 2005, appendix) so the limits are smooth in population; the normal approximation
  p ± z·sqrt(p(1-p)/n) for proportions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

from carehub.domain.standardisation import byar_limits

__all__ = [
    "EXACT_MAX_COUNT",
    "funnel_limits_proportion",
    "funnel_limits_rate",
    "outlier",
    "poisson_count_ci",
    "proportion_ci",
    "rate_ci",
]

#: Counts above this use Byar's approximation instead of the exact (bisection) interval, to bound the cost.
EXACT_MAX_COUNT = 1000

# Summation stops once a term adds less than this relative amount; 2**-56 is below double precision.
_TAIL_EPS = 2.0**-56


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")


def _z(level: float) -> float:
    """Two-sided standard-normal quantile for ``level`` (1.959964 for 0.95, 3.090232 for 0.998)."""
    _check_level(level)
    return NormalDist().inv_cdf(1.0 - (1.0 - level) / 2.0)


def _poisson_cdf(k: int, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu).

    Why not a plain sum from 0: terms are formed from the largest one (in log space, via ``lgamma``) and the sum
    walks away from the mode, always over decreasing terms, stopping when they are negligible. That takes about
    9·sqrt(mu) terms near the mode and far fewer in the tails, never underflows, and is accurate for mu up to ~1e6+.
    Below the mean we sum the lower tail directly; otherwise we sum the upper tail and take its complement, so the
    summed tail is always the one that is at most about one half.
    """
    if k < 0:
        return 0.0
    if mu <= 0.0:
        return 1.0
    if k < mu:
        # Terms t_i for i = k, k-1, ..., 0 with t_{i-1} = t_i * i / mu (ratio < 1 since i <= k < mu).
        log_first = -mu + k * math.log(mu) - math.lgamma(k + 1)
        total, term, i = 1.0, 1.0, k
        while i > 0:
            term *= i / mu
            total += term
            i -= 1
            if term < _TAIL_EPS * total:
                break
        return min(1.0, math.exp(log_first + math.log(total)))
    # Upper tail: terms t_j for j = k+1, k+2, ... with t_{j+1} = t_j * mu / (j + 1) (ratio < 1 since j >= k+1 > mu).
    j = k + 1
    log_first = -mu + j * math.log(mu) - math.lgamma(j + 1)
    total, term = 1.0, 1.0
    while True:
        j += 1
        term *= mu / j
        total += term
        if term < _TAIL_EPS * total:
            break
    return max(0.0, 1.0 - math.exp(log_first + math.log(total)))


def _bisect_decreasing(f: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """The x in [lo, hi] where a decreasing ``f`` crosses ``target``, to relative precision ~1e-13."""
    while f(hi) > target:  # widen until the root is bracketed
        lo, hi = hi, hi * 2.0 + 1.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def _exact_poisson_ci(count: int, level: float) -> tuple[float, float]:
    """Exact (Garwood) interval: P(X >= count | lower) = P(X <= count | upper) = (1 - level) / 2."""
    tail = (1.0 - level) / 2.0
    upper = _bisect_decreasing(lambda mu: _poisson_cdf(count, mu), tail, 0.0, count + 1.0)
    if count == 0:
        return 0.0, upper
    # P(X >= count | mu) = 1 - cdf(count - 1 | mu) rises with mu, so cdf(count - 1 | mu) falls through 1 - tail.
    lower = _bisect_decreasing(lambda mu: _poisson_cdf(count - 1, mu), 1.0 - tail, 0.0, float(count))
    return lower, upper


def _byar_ci(count: int, level: float) -> tuple[float, float]:
    """Byar's approximation to the exact Poisson interval, as given in PHE's confidence-interval guide."""
    return byar_limits(count, _z(level))


def poisson_count_ci(count: int, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval for the mean of a Poisson count: exact up to ``EXACT_MAX_COUNT``, Byar's beyond."""
    _check_level(level)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count > EXACT_MAX_COUNT:
        return _byar_ci(count, level)
    return _exact_poisson_ci(count, level)


def rate_ci(count: int, population: int, per: float = 100_000, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval for ``count`` events in ``population`` people, as a rate per ``per`` people.

    The population is treated as fixed and the count as Poisson (PHE's crude-rate method). A zero count has lower
    limit 0. A zero population has no rate at all, so it raises ``ValueError`` rather than returning infinities.
    """
    if population <= 0:
        raise ValueError(f"population must be > 0, got {population}")
    if per <= 0:
        raise ValueError(f"per must be > 0, got {per}")
    lower, upper = poisson_count_ci(count, level)
    scale = per / population
    return lower * scale, upper * scale


def proportion_ci(numerator: int, denominator: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``numerator / denominator`` (PHE confidence-interval guide; Newcombe 1998)."""
    if denominator <= 0:
        raise ValueError(f"denominator must be > 0, got {denominator}")
    if not 0 <= numerator <= denominator:
        raise ValueError(f"numerator must be in [0, denominator={denominator}], got {numerator}")
    z = _z(level)
    n, p = float(denominator), numerator / denominator
    z2 = z * z
    centre = p + z2 / (2.0 * n)
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    denom = 1.0 + z2 / n
    # The formula gives exactly 0 (or 1) at the ends; pin them so rounding cannot leave [0, 1].
    lower = 0.0 if numerator == 0 else max(0.0, (centre - half) / denom)
    upper = 1.0 if numerator == denominator else min(1.0, (centre + half) / denom)
    return lower, upper


def _interpolated_poisson_quantile(mu: float, prob: float) -> float:
    """Spiegelhalter's (2005, appendix) continuous quantile of Poisson(mu).

    r is the smallest count with P(X <= r) >= prob; the limit is r - a with a = (P(X <= r) - prob) / P(X = r), i.e.
    linear interpolation across the step at r, so that limits move smoothly rather than jumping as the population
    (and hence the expected count) changes.
    """
    hi = math.ceil(mu) + 1
    while _poisson_cdf(hi, mu) < prob:
        hi *= 2
    lo = -1  # cdf(-1) = 0 < prob
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _poisson_cdf(mid, mu) >= prob:
            hi = mid
        else:
            lo = mid
    at_r, below_r = _poisson_cdf(hi, mu), _poisson_cdf(hi - 1, mu)
    step = at_r - below_r
    a = (at_r - prob) / step if step > 0.0 else 0.0
    return max(0.0, hi - a)


def funnel_limits_rate(expected_rate_per: float, population: int, per: float, level: float) -> tuple[float, float]:
    """Funnel-plot control limits, as rates per ``per``, for a unit of ``population`` around ``expected_rate_per``.

    The unit's count is taken as Poisson with mean ``expected_rate_per * population / per`` (the count expected if it
    had the comparator's rate). The limits are the interpolated exact Poisson quantiles at (1 - level) / 2 and
    1 - (1 - level) / 2 (Spiegelhalter 2005; PHE funnel-plot guide), so a unit outside them is unlikely under
    "no real difference" at that level; the lower limit is floored at 0.
    """
    _check_level(level)
    if population <= 0:
        raise ValueError(f"population must be > 0, got {population}")
    if per <= 0:
        raise ValueError(f"per must be > 0, got {per}")
    if expected_rate_per < 0:
        raise ValueError(f"expected_rate_per must be >= 0, got {expected_rate_per}")
    mu = expected_rate_per * population / per
    tail = (1.0 - level) / 2.0
    scale = per / population
    return _interpolated_poisson_quantile(mu, tail) * scale, _interpolated_poisson_quantile(mu, 1.0 - tail) * scale


def funnel_limits_proportion(p: float, denominator: int, level: float) -> tuple[float, float]:
    """Funnel-plot control limits for a proportion around the comparator ``p`` with ``denominator`` cases.

    Normal approximation to the binomial, p ± z·sqrt(p(1 - p) / n) (Spiegelhalter 2005; PHE funnel-plot guide),
    clipped to [0, 1]. Why the approximation: it is what those guides plot; it is poor when n·p is small, which is
    where suppression usually withholds the figure anyway.
    """
    _check_level(level)
    if denominator <= 0:
        raise ValueError(f"denominator must be > 0, got {denominator}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    half = _z(level) * math.sqrt(p * (1.0 - p) / denominator)
    return max(0.0, p - half), min(1.0, p + half)


def outlier(value: float, limits_95: tuple[float, float], limits_998: tuple[float, float]) -> str:
    """Classify ``value`` against the 95% and 99.8% funnel limits (the two bands PHE plots; about 2 and 3 SD).

    Returns "" inside the 95% limits (a value on a limit counts as inside), "high_95"/"low_95" outside them but within
    the 99.8% limits, and "high_998"/"low_998" beyond the 99.8% limits.
    """
    lo95, hi95 = limits_95
    lo998, hi998 = limits_998
    if not (lo998 <= lo95 <= hi95 <= hi998):
        raise ValueError(f"99.8% limits {limits_998} must contain the 95% limits {limits_95}")
    if value > hi998:
        return "high_998"
    if value > hi95:
        return "high_95"
    if value < lo998:
        return "low_998"
    if value < lo95:
        return "low_95"
    return ""
