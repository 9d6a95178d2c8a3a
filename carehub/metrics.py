"""Prometheus endpoint for a service, bound to loopback unless configured otherwise."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from carehub.settings import Settings

log = logging.getLogger(__name__)


def serve_metrics(settings: Settings) -> str | None:
    """Start /metrics; returns its URL, or None when CAREHUB_METRICS_PORT=0."""
    if settings.metrics_port == 0:
        return None
    start_http_server(settings.metrics_port, addr=settings.metrics_host)
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    log.info("metrics at %s", url)
    return url
