"""Prometheus metrics of the indicators service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PARTIALS = Counter("carehub_indicators_partials_total", "IndicatorPartials records applied")
PUBLISHED = Counter("carehub_indicators_values_published_total", "Indicator values written (changed ones only)")
SIGNALS = Counter("carehub_indicators_signals_total", "Outlier signals written (beyond 99.8% funnel limits)",
                  ["indicator"])
VALUES = Gauge("carehub_indicators_values", "Indicator values currently held (indicator x unit x window)")
AS_OF = Gauge("carehub_indicators_as_of_timestamp_seconds", "The as-of day (newest event day seen), as a Unix time")
STALE = Gauge("carehub_indicators_stale_partitions",
              "Timeline partitions whose counts were made with other definition files than this service's")
COMPUTE_SECONDS = Histogram(
    "carehub_indicators_compute_seconds", "Time to turn the counts into published values",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
