"""Prometheus metrics of the alert stage."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ALERTS = Counter("carehub_alerts_raised_total", "Alerts written, by rule, kind and recipient role",
                 ["rule", "kind", "role"])
OVERDUE_CHECKED = Counter("carehub_alerts_followups_expired_total", "Persons checked for overdue follow-ups")
BATCH_SECONDS = Histogram(
    "carehub_alerts_batch_seconds", "Processing time of one batch",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
