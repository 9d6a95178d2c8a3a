"""Data-quality feedback per sending organisation and day: counting it, and adding it up.

Integrators report back to each provider what became of its records (accepted, degraded and
why, rejected and why, duplicates, late), so that the provider can fix its feed. Ingest counts a
batch with :class:`Tally` and writes one ``QualityCounts`` increment per organisation and day;
the gateway (for the provider itself) and ``carehub quality`` (for operators) add the increments
up with :class:`QualityBook`. Increments rather than running totals: any number of ingest workers
can write them, and a reader needs no state but the topic.

Counts are at least once: a batch that ingest processes again after a crash (before it committed
its offsets) is counted again. Its events are not accepted twice; the report can overstate that
day's counts by at most one batch per crash.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from carehub.v1 import ingest_pb2 as ing

UNKNOWN_SENDER = ""  # a record whose source_org could not be read


def problem_key(issue: ing.QualityIssue) -> str:
    """``field: PROBLEM``, the field without list positions (``clinical.diagnoses[3]`` -> ``clinical.diagnoses``)."""
    return f"{issue.field.split('[')[0]}: {ing.RejectReason.Name(issue.problem).removeprefix('REJECT_REASON_')}"


def reason_key(reason: ing.RejectReason.ValueType) -> str:
    return ing.RejectReason.Name(reason).removeprefix("REJECT_REASON_")


@dataclass
class Tally:
    """One batch's counts, by (organisation, day)."""

    counts: dict[tuple[str, str], ing.QualityCounts] = field(default_factory=dict)

    def _of(self, org: str, day: str) -> ing.QualityCounts:
        found = self.counts.get((org, day))
        if found is None:
            found = self.counts[(org, day)] = ing.QualityCounts(source_org=org, day=day)
        return found

    def accepted(self, org: str, day: str, quality: Iterable[ing.QualityIssue], late: bool) -> None:
        counts = self._of(org, day)
        counts.accepted += 1
        problems = [problem_key(issue) for issue in quality]
        if problems:
            counts.degraded += 1
            for key in problems:
                counts.degraded_by_problem[key] += 1
        if late:
            counts.late += 1

    def rejected(self, org: str, day: str, reason: ing.RejectReason.ValueType) -> None:
        self._of(org, day).rejected_by_reason[reason_key(reason)] += 1

    def duplicate(self, org: str, day: str) -> None:
        self._of(org, day).duplicates += 1

    def records(self) -> list[ing.QualityCounts]:
        return list(self.counts.values())


def add(into: ing.QualityCounts, more: ing.QualityCounts) -> None:
    into.accepted += more.accepted
    into.degraded += more.degraded
    into.duplicates += more.duplicates
    into.late += more.late
    for key, n in more.degraded_by_problem.items():
        into.degraded_by_problem[key] += n
    for key, n in more.rejected_by_reason.items():
        into.rejected_by_reason[key] += n


@dataclass
class QualityBook:
    """The increments read so far, added up per organisation and day."""

    days: dict[str, dict[str, ing.QualityCounts]] = field(default_factory=dict)

    def add(self, increment: ing.QualityCounts) -> None:
        by_day = self.days.setdefault(increment.source_org, {})
        total = by_day.get(increment.day)
        if total is None:
            total = by_day[increment.day] = ing.QualityCounts(source_org=increment.source_org, day=increment.day)
        add(total, increment)

    def report(self, org: str, today: date, days: int) -> list[ing.QualityCounts]:
        """``org``'s counts for the ``days`` days up to ``today``, oldest first."""
        first = (today - timedelta(days=max(days, 1) - 1)).isoformat()
        by_day = self.days.get(org, {})
        return [by_day[d] for d in sorted(by_day) if first <= d <= today.isoformat()]

    def orgs(self) -> list[str]:
        return sorted(self.days)


def totals(days: Iterable[ing.QualityCounts]) -> ing.QualityCounts:
    out = ing.QualityCounts()
    for day in days:
        if not out.source_org:
            out.source_org = day.source_org
        add(out, day)
    return out


def received(counts: ing.QualityCounts) -> int:
    """Records this organisation sent that day: accepted, rejected and duplicates."""
    return counts.accepted + sum(counts.rejected_by_reason.values()) + counts.duplicates


__all__ = ["UNKNOWN_SENDER", "QualityBook", "Tally", "add", "problem_key", "reason_key", "received", "totals"]
