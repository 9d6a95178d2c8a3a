"""`carehub quality`: a sending organisation's data-quality report, as a table or JSON.

Operators read the ``carehub.quality`` topic directly (any organisation: ``--org``); a provider
asks the partner gateway for its own (``--remote``, the organisation is its certificate's or
token's). Both add up the same increments (carehub/domain/quality.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf import json_format

from carehub.domain.quality import QualityBook, received, totals
from carehub.kafka.profile import client_profile
from carehub.kafka.read import read_to_end
from carehub.settings import Settings
from carehub.topics import quality_topic
from carehub.v1 import ingest_pb2 as ing


def read_book(bootstrap: str, settings: Settings) -> QualityBook:
    """Every increment on the quality topic, added up (the topic read to its end)."""
    book = QualityBook()
    for record in read_to_end(bootstrap, [quality_topic(settings)], profile=client_profile(settings)):
        if record.value:
            book.add(ing.QualityCounts.FromString(record.value))
    return book


def report(book: QualityBook, org: str, days: int) -> list[ing.QualityCounts]:
    return book.report(org, datetime.now(UTC).date(), days)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def table(org: str, days: Iterable[ing.QualityCounts]) -> str:
    rows = list(days)
    if not rows:
        return f"{org}: nothing received in this period"
    lines = [f"data quality of {org}'s feed (UTC days; received = accepted + rejected + duplicates)",
             f"{'day':10}  {'received':>8}  {'accepted':>8}  {'degraded':>8}  {'rejected':>8}  {'duplicates':>10}  "
             f"{'late':>6}"]
    for day in [*rows, totals(rows)]:
        rejected = sum(day.rejected_by_reason.values())
        lines.append(f"{day.day or 'all':10}  {received(day):8}  {day.accepted:8}  "
                     f"{day.degraded:8} ({_share(day.degraded, day.accepted):>5})  {rejected:8}  {day.duplicates:10}  "
                     f"{day.late:6}")
    whole = totals(rows)
    if whole.degraded_by_problem:
        lines.append("values left out (the event was kept):")
        lines += [f"  {n:8}  {key}" for key, n in sorted(whole.degraded_by_problem.items(), key=lambda kv: -kv[1])]
    if whole.rejected_by_reason:
        lines.append("records rejected (dead-lettered), by reason:")
        by_count = sorted(whole.rejected_by_reason.items(), key=lambda kv: -kv[1])
        lines += [f"  {n:8}  {key.lower()}" for key, n in by_count]
    return "\n".join(lines)


def as_json(days: Iterable[ing.QualityCounts]) -> str:
    return json.dumps([json_format.MessageToDict(d, preserving_proto_field_name=True) for d in days], indent=2)
