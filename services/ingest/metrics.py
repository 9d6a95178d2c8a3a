"""Prometheus metrics of the ingest service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)

RECEIVED = Counter("carehub_ingest_received_total", "Provider records read", ["topic"])
ACCEPTED = Counter("carehub_ingest_accepted_total", "Events accepted, by source sector", ["sector"])
REJECTED = Counter("carehub_ingest_rejected_total", "Records sent to the dead-letter topic", ["reason"])
DEGRADED = Counter("carehub_ingest_degraded_total",
                   "Values left out of accepted events (degrade, don't drop), by sender, field and problem",
                   ["source_org", "field", "problem"])
DUPLICATES = Counter("carehub_ingest_duplicates_total", "Events dropped as exact duplicates of an event id")
FROM_EVENT = Histogram(
    "carehub_ingest_latency_from_event_seconds",
    "Accepted time minus the event's event_time (includes provider delay)",
    buckets=LATENCY_BUCKETS,
)
FROM_PUBLISH = Histogram(
    "carehub_ingest_latency_from_publish_seconds",
    "Accepted time minus the provider record's Kafka timestamp",
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "carehub_ingest_batch_events", "Events per processed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
BATCH_SECONDS = Histogram(
    "carehub_ingest_batch_seconds", "Processing time of one batch",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
FEED_EVENTS = Counter("carehub_feed_events_total", "Events accepted from each source organisation (per feed)",
                      ["source_org"])
FEED_REJECTED = Counter("carehub_feed_rejected_total",
                        "Records dead-lettered, per sending organisation (from the record's key when unreadable) "
                        "and reason", ["source_org", "reason"])
FEED_DUPLICATES = Counter("carehub_feed_duplicates_total", "Exact duplicates dropped, per sending organisation",
                          ["source_org"])
LAST_EVENT = Gauge(
    "carehub_feed_last_event_timestamp_seconds",
    "Kafka timestamp of the last record received from each source organisation",
    ["source_org"],
)
