"""The factors of one person as of a moment: what each kind of factor in the model file means.

Why here, apart from the scoring: the factors are the evidence a clinician checks ("two
emergency admissions this year, heart failure and COPD coded, lives in a care home"), and
each kind has one definition, used alike by the score, the segments and docs/risk.md
("Factors"). Pure: a :class:`~carehub.domain.risk.state.FactorState`, a moment and a model in,
values out.

``as_of`` ends the look-back windows: admissions and attendances at or after it are not
counted. The state is meant to hold what was known at ``as_of``; social-care involvement is
known only by each organisation's latest event, so it counts when that is within the window
before ``as_of`` or later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from carehub.domain.risk.model import Factor, RiskModel
from carehub.domain.risk.state import FactorState, SpellRecord
from carehub.domain.timeline import DAY_NS, utc_date
from carehub.v1 import care_event_pb2 as ce

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Factors:
    """Each factor's value (in model order) and, for coded ones, which conditions or deficits were found."""

    as_of: datetime
    values: Mapping[str, float]
    evidence: Mapping[str, tuple[str, ...]]


def as_ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"as_of must be timezone-aware (got {moment.isoformat()})")
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def age_at(state: FactorState, as_of: datetime) -> int:
    """Age in whole years at ``as_of``: the latest age sent plus the whole years since; -1 unknown.

    The timeline keeps the age of the latest event, not the birth date (pseudonymised away), so
    this is within a year of the true age.
    """
    if state.age_years < 0 or state.age_at_ns is None:
        return -1
    then, now = utc_date(state.age_at_ns), as_of.astimezone(UTC).date()
    years = now.year - then.year - ((now.month, now.day) < (then.month, then.day))
    return state.age_years + max(0, years)


def compute_factors(state: FactorState, as_of: datetime, model: RiskModel) -> Factors:
    """Every factor of ``model`` for the person in ``state``, as of ``as_of`` (timezone-aware)."""
    t = as_ns(as_of)
    age = age_at(state, as_of)
    spells = [s for s in state.spells.values() if not s.cancelled and (s.admitted_ns is None or s.admitted_ns < t)]
    values: dict[str, float] = {}
    evidence: dict[str, tuple[str, ...]] = {}
    for factor in model.factors:
        value, found = _value(factor, state, spells, t, age)
        values[factor.name] = value
        if found is not None:
            evidence[factor.name] = found
    return Factors(as_of, values, evidence)


def _value(factor: Factor, state: FactorState, spells: list[SpellRecord], t: int,
           age: int) -> tuple[float, tuple[str, ...] | None]:
    kind = factor.kind
    since = t - (factor.window_days or 0) * DAY_NS
    if kind == "emergency_admissions":
        return float(sum(1 for s in spells if s.method == ce.ADMISSION_METHOD_EMERGENCY
                         and s.admitted_ns is not None and since <= s.admitted_ns < t)), None
    if kind == "ed_attendances":
        return float(sum(1 for at in state.ed_attendances.values() if since <= at < t)), None
    if kind == "social_care":
        last = state.social_care_last_ns
        return float(last is not None and last >= since), None
    if kind == "care_home":
        return float(state.care_home), None
    if kind == "age":
        return float(age), None
    found = _found(factor, spells)
    if kind == "conditions":
        return float(len(found)), found
    if kind == "deficits":
        if factor.min_age is not None and age < factor.min_age:
            return 0.0, ()
        assert factor.denominator is not None
        return len(found) / factor.denominator, found
    raise AssertionError(f"unknown factor kind {kind!r}")  # the model file's Literal lists them


def _found(factor: Factor, spells: list[SpellRecord]) -> tuple[str, ...]:
    """Names of the factor's conditions met by any spell's diagnoses, in code-list order."""
    return tuple(c.name for c in factor.conditions
                 if any(c.matches(s.diagnoses, s.procedures) for s in spells))


def next_change(state: FactorState, as_of: datetime, model: RiskModel) -> datetime | None:
    """The earliest moment after ``as_of`` from which the factors may differ with no new event; None: never.

    The windows roll on with time: an admission, an attendance or a social-care contact leaves
    its window, and the person has a birthday (age bands, and the frailty factor's minimum
    age). A stage reassesses a person whose as-of has reached this moment, so assessments stay
    current without events (carehub/domain/risk/__init__.py). Everything else the factors read
    changes only with an event.
    """
    t = as_ns(as_of)
    candidates: list[int] = []

    def leaves(at: int | None, window_days: int | None) -> None:
        if at is None:
            return
        if at >= t:  # not counted yet: it is, from just after it
            candidates.append(at + 1)
        elif window_days is not None and at + window_days * DAY_NS >= t:  # counted until the window passes it
            candidates.append(at + window_days * DAY_NS + 1)

    for factor in model.factors:
        if factor.kind == "emergency_admissions":
            for s in state.spells.values():
                if not s.cancelled and s.method == ce.ADMISSION_METHOD_EMERGENCY:
                    leaves(s.admitted_ns, factor.window_days)
        elif factor.kind == "ed_attendances":
            for at in state.ed_attendances.values():
                leaves(at, factor.window_days)
        elif factor.kind == "social_care":
            leaves(state.social_care_last_ns, factor.window_days)
        elif factor.kind in ("conditions", "deficits"):
            for s in state.spells.values():
                if not s.cancelled and s.admitted_ns is not None and s.admitted_ns >= t:
                    candidates.append(s.admitted_ns + 1)
    if state.age_years >= 0 and state.age_at_ns is not None:
        born = utc_date(state.age_at_ns)  # the anniversary of the age sent: the age moves on that day
        today = as_of.astimezone(UTC).date()
        for year in (today.year, today.year + 1):
            try:
                day = born.replace(year=year)
            except ValueError:  # 29 February in a common year: age_at counts it from 1 March
                day = born.replace(year=year, month=3, day=1)
            if day > today:
                candidates.append(as_ns(datetime(day.year, day.month, day.day, tzinfo=UTC)))
                break
    if not candidates:
        return None
    first = min(candidates)
    return EPOCH + timedelta(microseconds=-(-first // 1000))  # rounded up to a microsecond
