"""`python -m carehub.services.indicators`: the indicators service (one per deployment)."""

from __future__ import annotations

import logging

from carehub.domain.definitions import load_catalogue
from carehub.kafka.broker import create_topics, wait_for_metadata
from carehub.runtime.metrics import serve_metrics
from carehub.settings import load_settings
from carehub.telemetry import setup_tracing
from carehub.topics import topic_specs

from .app import serve


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    load_catalogue(settings.indicator_definitions)  # a bad definition file stops here, with its name
    if not settings.kafka_bootstrap:
        raise SystemExit("carehub indicators-worker: set CAREHUB_KAFKA_BOOTSTRAP (or use `carehub run` for the demo)")
    wait_for_metadata(settings.kafka_bootstrap, 60.0)
    create_topics(settings.kafka_bootstrap, topic_specs(settings))
    setup_tracing("carehub-indicators")
    serve_metrics(settings)
    serve(settings, settings.kafka_bootstrap)
