"""Risk tiers by population percentile: a pure function over everyone's scores.

Why separate from the score: a tier ("top 0.5%") is a statement about the population, not the
person, and its size is a capacity (how many people a case-management team can take), so the
cut-offs are recomputed over all scores and a new score is placed against the last cut-offs
(:func:`tier_of`) until they are recomputed.

Ties are never split: people with equal scores get the same tier, and a tier never holds more
than its share, so people tied across a boundary go to the lower tier. With the model's tiers
(top 0.5%, 0.5-5%, 5-20%, the rest) and N people, tier i takes the people whose score is
strictly above the (floor(share_i * N) + 1)-th highest score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from carehub.domain.risk.model import RiskModel

# floor(share * N) with a little room for binary fractions: 0.29 * 100 is 28.999999999999996
_EPSILON = 1e-9


@dataclass(frozen=True)
class TierCutoffs:
    """Each tier with the score a person must be strictly above to be in it (None: everyone left).

    Carries the label and digest of the model whose scores and tiers they were made with.
    """

    model: str
    digest: str
    population: int
    bounds: tuple[tuple[str, float | None], ...]  # highest tier first

    def counts(self, scores: Iterable[float]) -> dict[str, int]:
        out = dict.fromkeys((name for name, _ in self.bounds), 0)
        for s in scores:
            out[tier_of(s, self)] += 1
        return out


def tier_cutoffs(scores: Iterable[float], model: RiskModel) -> TierCutoffs:
    """The cut-offs of the model's tiers (highest first, cumulative shares, the last 1) over ``scores``."""
    ranked = sorted(scores, reverse=True)
    n = len(ranked)
    bounds: list[tuple[str, float | None]] = []
    for tier in model.tiers:
        k = math.floor(tier.top_share * n + _EPSILON)  # people this tier and those above may hold
        if k < n:
            bounds.append((tier.name, ranked[k]))
        else:  # the last tier (share 1) takes the rest; with nobody to rank, the others take no one
            bounds.append((tier.name, None if tier.top_share >= 1 else math.inf))
    return TierCutoffs(model.label, model.digest, n, tuple(bounds))


def tier_of(score: float, cutoffs: TierCutoffs) -> str:
    """The highest tier whose bound ``score`` is strictly above (the last tier takes the rest)."""
    for name, bound in cutoffs.bounds:
        if bound is None or score > bound:
            return name
    return cutoffs.bounds[-1][0]  # unreachable when the last share is 1: its bound is None


def assign_tiers(scores: Mapping[str, float], model: RiskModel) -> tuple[TierCutoffs, dict[str, str]]:
    """The cut-offs over the population of ``scores`` (by person id), and each person's tier."""
    cutoffs = tier_cutoffs(scores.values(), model)
    return cutoffs, {person: tier_of(score, cutoffs) for person, score in scores.items()}
