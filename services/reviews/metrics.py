"""Prometheus metrics of the reviews stage."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS = Counter("carehub_reviews_events_total", "Timeline events taken into a person's review history, by what they "
                 "did: applied, rebuilt (a merge: from the timeline it carried), absorbed (merged into another "
                 "person), unresolved (a merge without its timeline)", ["outcome"])
WRITTEN = Counter("carehub_reviews_packs_written_total", "Review packs written to carehub.review.packs (new or "
                  "changed)")
WITHDRAWN = Counter("carehub_reviews_packs_withdrawn_total", "Tombstones written for packs withdrawn (coding that "
                    "takes the admission out of the ACSC list, a cancellation, a direct-care opt-out)")
NO_PRACTICE_RECORD = Counter("carehub_reviews_without_practice_record_total",
                             "Batches' touched persons with an emergency ACSC admission but no record of their "
                             "registered practice's own, so no pack")
BATCH_SECONDS = Histogram(
    "carehub_reviews_batch_seconds", "Processing time of one batch",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
