"""A case conference's outcome for a pack, checked before it is recorded. Pure.

Why here and not in the gateway: the taxonomy is the domain's, and every way an outcome is
recorded (the gateway today) must refuse the same things with the same words: an unknown
verdict or factor (named), an action without text or owner, a date that is not YYYY-MM-DD.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from carehub.domain.review.taxonomy import Taxonomy
from carehub.v1 import review_pb2 as rv

MAX_TEXT = 2000
MAX_ACTIONS = 50


def _date_problem(what: str, value: str, required: bool) -> str | None:
    if not value:
        return f"{what} is required (YYYY-MM-DD)" if required else None
    try:
        date.fromisoformat(value)
    except ValueError:
        return f"{what} {value!r} is not a date (YYYY-MM-DD)"
    if len(value) != 10:
        return f"{what} {value!r} is not a date (YYYY-MM-DD)"
    return None


def outcome_problems(taxonomy: Taxonomy, verdict: str, factors: Sequence[str], actions: Sequence[rv.ReviewAction],
                     conference_date: str) -> list[str]:
    """Everything wrong with an outcome (empty: it may be recorded)."""
    problems = taxonomy.problems(verdict, factors)
    if taxonomy.verdicts.get(verdict) is not None and taxonomy.verdicts[verdict].avoidable and not factors:
        problems.append("an avoidable verdict needs at least one contributory factor")
    if len(actions) > MAX_ACTIONS:
        problems.append(f"at most {MAX_ACTIONS} actions")
    for n, action in enumerate(actions, 1):
        if not action.text.strip():
            problems.append(f"action {n} has no text")
        if not action.owner_org.strip():
            problems.append(f"action {n} has no owner organisation")
        problem = _date_problem(f"action {n} due date", action.due, required=False)
        if problem:
            problems.append(problem)
    problem = _date_problem("conference date", conference_date, required=True)
    if problem:
        problems.append(problem)
    return problems


def outcome_record(taxonomy: Taxonomy, pack: rv.ReviewPack, verdict: str, factors: Sequence[str],
                   actions: Sequence[rv.ReviewAction], conference_date: str, notes: str, recorded_ns: int,
                   ) -> rv.ReviewOutcome:
    """The outcome as recorded (call :func:`outcome_problems` first)."""
    outcome = rv.ReviewOutcome(pack_id=pack.pack_id, practice=pack.practice, locality=pack.locality, verdict=verdict,
                               factors=list(factors), conference_date=conference_date, notes=notes[:MAX_TEXT],
                               taxonomy_version=taxonomy.label)
    for action in actions:
        outcome.actions.add(text=action.text.strip()[:MAX_TEXT], owner_org=action.owner_org.strip(), due=action.due)
    outcome.recorded_at.FromNanoseconds(recorded_ns)
    outcome.admitted_at.CopyFrom(pack.admission.admitted_at)
    return outcome
