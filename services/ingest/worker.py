"""Starting an ingest worker process: settings, telemetry, metrics, then faust."""

from __future__ import annotations

import logging

from carehub.broker import create_topics, wait_for_metadata
from carehub.metrics import serve_metrics
from carehub.settings import load_settings
from carehub.telemetry import setup_tracing
from carehub.topics import topic_specs
from services.ingest.app import build_app


def main() -> None:
    settings = load_settings()
    settings.pseudonym_key_bytes()  # no key outside the demo profile: stop here, not mid-stream
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not settings.kafka_bootstrap:
        raise SystemExit("carehub ingest: set CAREHUB_KAFKA_BOOTSTRAP (or use `carehub run` for the embedded demo)")
    wait_for_metadata(settings.kafka_bootstrap, 60.0)
    create_topics(settings.kafka_bootstrap, topic_specs(settings))
    setup_tracing("carehub-ingest")
    serve_metrics(settings)
    import uvloop
    from faust.worker import Worker

    uvloop.install()  # faust's per-event overhead is the ceiling; uvloop shaves some of it
    app = build_app(settings, settings.kafka_bootstrap)

    worker = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
