"""Prometheus metrics of the timeline service."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS = Counter("carehub_timeline_events_total", "Linked events applied to a person's timeline and sent on")
DUPLICATES = Counter("carehub_timeline_duplicates_total", "Events already applied (repeated upstream), dropped")
LATE = Counter("carehub_timeline_late_events_total",
               "Events whose event time is before the newest one already applied for the person")
PERSONS_WRITTEN = Histogram(
    "carehub_timeline_persons_written", "Person timelines written to the table per batch (one changelog record each)",
    buckets=(0, 1, 5, 10, 50, 100, 250, 500, 1000, 2000),
)
BATCH_SECONDS = Histogram(
    "carehub_timeline_batch_seconds", "Processing time of one batch",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
