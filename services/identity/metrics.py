"""Prometheus metrics of the identity service."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LINKED = Counter("carehub_identity_linked_total", "Events joined to a hub person")
DECISIONS = Counter("carehub_identity_decisions_total", "Linkage decisions for unknown local records",
                    ["outcome"])
KNOWN_RECORDS = Counter("carehub_identity_known_records_total",
                        "Events of known local records, by whether their demographics changed since last remembered",
                        ["demographics"])
DUPLICATES = Counter("carehub_identity_duplicates_total", "Events seen before (repeated after a restart)")
FULL_BLOCKS = Counter("carehub_identity_full_block_total",
                      "Blocking-index additions refused because the key already had too many people")
MERGES = Counter("carehub_identity_merges_total",
                 "Persons joined or separated by A40-style merges (action: merge, unmerge, review)", ["action"])
REVIEW_DECISIONS = Counter("carehub_identity_review_decisions_total",
                           "Reviewers' decisions on review items (verdict: link, separate, refused)", ["verdict"])
TABLE_WRITES = Counter("carehub_identity_table_writes_total", "Table keys written (one changelog record each)")
BATCH_SECONDS = Histogram(
    "carehub_identity_batch_seconds", "Processing time of one batch",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
