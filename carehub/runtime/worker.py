"""Starting a faust worker process: settings, telemetry, metrics, topics, then faust."""

from __future__ import annotations

import logging
from collections.abc import Callable

import faust

from carehub.kafka.broker import create_topics, wait_for_metadata
from carehub.runtime.metrics import serve_metrics
from carehub.settings import Settings, load_settings
from carehub.telemetry import setup_tracing
from carehub.topics import topic_specs


def run_worker(service: str, build_app: Callable[[Settings, str], faust.App]) -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings.pseudonym_key_bytes()  # no key outside the demo profile: stop here, not mid-stream
    if not settings.kafka_bootstrap:
        raise SystemExit(f"carehub {service}: set CAREHUB_KAFKA_BOOTSTRAP (or use `carehub run` for the demo)")
    wait_for_metadata(settings.kafka_bootstrap, 60.0)
    create_topics(settings.kafka_bootstrap, topic_specs(settings))
    setup_tracing(f"carehub-{service}")
    serve_metrics(settings)
    import uvloop
    from faust.worker import Worker

    uvloop.install()  # faust's per-event overhead is the ceiling; uvloop shaves some of it
    app = build_app(settings, settings.kafka_bootstrap)
    Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False).execute_from_commandline()
