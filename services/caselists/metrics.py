"""Prometheus metrics of the case-list service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PEOPLE = Gauge("carehub_caselists_people", "Persons whose latest assessment is held (the population of the tiers "
               "and lists)")
OTHER_MODEL = Gauge("carehub_caselists_other_model_assessments",
                    "Assessments read that were made with another risk model (label or digest) and left out")
LISTS = Gauge("carehub_caselists_lists", "Organisations with someone on their case list")
LISTED = Gauge("carehub_caselists_entries", "Entries on all case lists (a person is on each of their "
               "organisations' lists)")
PUBLISHED = Counter("carehub_caselists_published_total", "Case lists written (changed ones, and lists emptied)")
CUTOFFS = Counter("carehub_caselists_cutoffs_published_total", "Tier cut-offs written (when they changed)")
CUTOFF_SCORE = Gauge("carehub_caselists_cutoff_score", "The score a person must be above to be in a tier", ["tier"])
CUTOFFS_SECONDS = Histogram(
    "carehub_caselists_cutoffs_seconds", "Time to recompute the tier cut-offs over every score",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COMPUTE_SECONDS = Histogram(
    "carehub_caselists_compute_seconds", "Time to build every case list and write the changed ones",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
