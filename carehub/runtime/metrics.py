"""Prometheus endpoint for a service, bound to loopback unless configured otherwise."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, start_http_server

from carehub.settings import Settings

log = logging.getLogger(__name__)

# Per stream stage (faust agents: ingest, identity, timeline, alerts, signals), measured by the stage.
STAGE_RECORDS = Counter("carehub_stage_records_total", "Kafka records a stage has processed", ["stage"])
STAGE_LAG = Gauge("carehub_stage_lag_seconds",
                  "Consumer lag in time: now minus the produce timestamp of the newest record processed", ["stage"])
STAGE_LAST = Gauge("carehub_stage_last_record_timestamp_seconds",
                   "Produce timestamp of the newest record processed (Unix time)", ["stage"])


def serve_metrics(settings: Settings) -> str | None:
    """Start /metrics; returns its URL, or None when CAREHUB_METRICS_PORT=0."""
    if settings.metrics_port == 0:
        return None
    start_http_server(settings.metrics_port, addr=settings.metrics_host)
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    log.info("metrics at %s", url)
    return url
