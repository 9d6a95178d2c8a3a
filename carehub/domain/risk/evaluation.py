"""How well a risk model predicts: AUC (Mann-Whitney) with an interval, and calibration by tier.

Why in the domain and not only in the bench script: the figures in docs/risk.md are only as
good as these few formulas, so they are pure functions with their own tests
(tests/unit/test_risk_evaluation.py), and any later evaluation on real data uses the same ones.
No dependency beyond the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def auc(scores: Sequence[float], outcomes: Sequence[bool]) -> float:
    """Area under the ROC curve by the Mann-Whitney rank formula (ties get their average rank).

    The probability that a person with the outcome scores higher than one without (ties count
    half). Raises ValueError without both kinds of people.
    """
    if len(scores) != len(outcomes):
        raise ValueError(f"{len(scores)} scores but {len(outcomes)} outcomes")
    positives = sum(1 for o in outcomes if o)
    negatives = len(outcomes) - positives
    if not positives or not negatives:
        raise ValueError("AUC needs people with and without the outcome")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        average = (i + j) / 2 + 1  # ranks i+1 .. j+1
        rank_sum += average * sum(1 for k in range(i, j + 1) if outcomes[order[k]])
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def auc_interval(value: float, positives: int, negatives: int, z: float = 1.96) -> tuple[float, float]:
    """Hanley and McNeil's (1982) normal interval for an AUC, clipped to [0, 1]."""
    q1 = value / (2 - value)
    q2 = 2 * value * value / (1 + value)
    variance = (value * (1 - value) + (positives - 1) * (q1 - value * value)
                + (negatives - 1) * (q2 - value * value)) / (positives * negatives)
    half = z * math.sqrt(max(variance, 0.0))
    return max(0.0, value - half), min(1.0, value + half)


def calibration_line(risks: Sequence[float], outcomes: Sequence[bool], rounds: int = 50) -> tuple[float, float]:
    """(intercept, slope) of the logistic regression of the outcome on the logit of the predicted risk.

    Perfect calibration is (0, 1); a slope below 1 means the predictions are too extreme (the
    points add up too fast), above 1 too timid; the intercept then shifts them all. Fitted by
    Newton-Raphson; risks are clipped away from 0 and 1. Raises ValueError without both outcomes.
    """
    if len(risks) != len(outcomes):
        raise ValueError(f"{len(risks)} risks but {len(outcomes)} outcomes")
    if all(outcomes) or not any(outcomes):
        raise ValueError("a calibration line needs people with and without the outcome")
    xs = [math.log(p / (1 - p)) for p in (min(max(r, 1e-9), 1 - 1e-9) for r in risks)]
    a, b = 0.0, 1.0
    for _ in range(rounds):
        g0 = g1 = h00 = h01 = h11 = 0.0
        for x, y in zip(xs, outcomes, strict=True):
            p = _expit(a + b * x)
            r, w = float(y) - p, p * (1 - p)
            g0, g1 = g0 + r, g1 + r * x
            h00, h01, h11 = h00 + w, h01 + w * x, h11 + w * x * x
        det = h00 * h11 - h01 * h01
        if det <= 0:
            raise ValueError("the predicted risks do not vary: no slope to fit")
        da, db = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
        a, b = a + da, b + db
        if abs(da) < 1e-10 and abs(db) < 1e-10:
            break
    return a, b


def _expit(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class CalibrationRow:
    group: str
    people: int
    predicted: float  # mean predicted risk
    observed: int  # people with the outcome
    share_of_outcomes: float  # of everyone's outcomes

    @property
    def observed_rate(self) -> float:
        return self.observed / self.people if self.people else 0.0


def calibration(rows: Iterable[tuple[str, float, bool]], groups: Sequence[str]) -> list[CalibrationRow]:
    """Per group (a tier, a segment), in ``groups`` order: people, mean predicted risk, observed outcomes.

    ``rows`` are (group, predicted risk, outcome), one per person.
    """
    people = dict.fromkeys(groups, 0)
    predicted = dict.fromkeys(groups, 0.0)
    observed = dict.fromkeys(groups, 0)
    for group, risk, outcome in rows:
        if group not in people:
            raise ValueError(f"group {group!r} is not one of {', '.join(groups)}")
        people[group] += 1
        predicted[group] += risk
        observed[group] += int(outcome)
    total = sum(observed.values())
    return [CalibrationRow(g, people[g], predicted[g] / people[g] if people[g] else 0.0, observed[g],
                           observed[g] / total if total else 0.0) for g in groups]
