"""Prometheus metrics of the population stage."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("carehub_population_events_total", "Timeline events taken into a person's risk state, by what they "
                 "did: applied, recomputed (a merge: from the timeline it carried), absorbed (merged into another "
                 "person), unresolved (a merge without its timeline)", ["outcome"])
ASSESSED = Counter("carehub_population_assessments_total", "Persons assessed, by why: an event, a window rolling on "
                   "(no event), or new tier cut-offs moving their tier", ["reason"])
PUBLISHED = Counter("carehub_population_published_total", "Assessments written to carehub.risk.assessments (changed "
                    "ones only), and tombstones for persons merged into another", ["kind"])
PERSONS = Gauge("carehub_population_persons", "Persons of this worker's partitions held in its index")
CUTOFFS_AT = Gauge("carehub_population_cutoffs_timestamp_seconds",
                   "When the tier cut-offs this worker places scores against were computed (Unix time)")
BATCH_SECONDS = Histogram(
    "carehub_population_batch_seconds", "Processing time of one batch",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
