"""One person's assessment: score, predicted risk, segment, and the points that explain the score.

Why the explanation travels with the score: a list of people ranked by a number nobody can
check is not used in a case-management meeting. Each :class:`Assessment` lists every scored
factor with its value and points (zero points included), so "why is this person very high?"
is answered by reading the list, and it carries the model's label and digest, so a score is
never compared with one made by another version. The tier is not here: it depends on the whole
population's scores (carehub/domain/risk/tiers.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from carehub.domain.risk.factors import Factors, compute_factors
from carehub.domain.risk.model import RiskModel
from carehub.domain.risk.state import FactorState


@dataclass(frozen=True, slots=True)
class Contribution:
    """One line of the explanation: a factor, its value for the person, and the points it gave."""

    factor: str
    value: float
    points: float


@dataclass(frozen=True)
class Assessment:
    model: str  # RiskModel.label: "<id> <version>"
    digest: str  # RiskModel.digest
    as_of: datetime
    factors: Factors
    contributions: tuple[Contribution, ...]  # every scored factor, in model order
    score: float  # the sum of the points
    risk: float  # predicted probability of the model's outcome within its horizon
    segment: str

    def explain(self) -> list[tuple[str, float, float]]:
        """(factor, value, points), the factors that gave points first, most points first."""
        ranked = sorted(self.contributions, key=lambda c: -c.points)
        return [(c.factor, c.value, c.points) for c in ranked]


def segment_of(values: Mapping[str, float], model: RiskModel) -> str:
    """The first segment whose rules hold (the model's last segment has none and takes the rest)."""
    for segment in model.segments:
        if segment.matches(values):
            return segment.name
    raise AssertionError("the model's last segment has no rules")  # checked when the model is loaded


def score_factors(factors: Factors, model: RiskModel) -> Assessment:
    contributions = tuple(Contribution(f.name, factors.values[f.name], f.points(factors.values[f.name]))
                          for f in model.factors if f.scored)
    score = sum(c.points for c in contributions)
    return Assessment(model=model.label, digest=model.digest, as_of=factors.as_of, factors=factors,
                      contributions=contributions, score=score, risk=model.risk(score),
                      segment=segment_of(factors.values, model))


def assess(state: FactorState, as_of: datetime, model: RiskModel) -> Assessment:
    """Factors, score, risk and segment of the person in ``state`` as of ``as_of``."""
    return score_factors(compute_factors(state, as_of, model), model)
