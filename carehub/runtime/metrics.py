"""A service's HTTP endpoint (/metrics, /ready, /live), bound to loopback unless configured otherwise."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge

from carehub.runtime.health import serve_health_and_metrics
from carehub.settings import Settings

log = logging.getLogger(__name__)

# Per stream stage (faust agents: ingest, identity, timeline, alerts, signals, population), measured by the stage.
STAGE_RECORDS = Counter("carehub_stage_records_total", "Kafka records a stage has processed", ["stage"])
STAGE_LAG = Gauge("carehub_stage_lag_seconds",
                  "Consumer lag in time: now minus the produce timestamp of the newest record processed", ["stage"])
STAGE_LAG_RECORDS = Gauge("carehub_stage_lag_records",
                          "Records waiting: the Fetch high watermark minus the next offset to process, summed over "
                          "the stage's assigned partitions", ["stage"])
STAGE_LAST = Gauge("carehub_stage_last_record_timestamp_seconds",
                   "Produce timestamp of the newest record processed (Unix time)", ["stage"])


def serve_metrics(settings: Settings) -> str | None:
    """Start /metrics (with /ready and /live, carehub/runtime/health.py); its URL, or None when the port is 0."""
    if settings.metrics_port == 0:
        return None
    serve_health_and_metrics(settings.metrics_host, settings.metrics_port)
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    log.info("metrics at %s", url)
    return url
