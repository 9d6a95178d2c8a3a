"""Starting a worker process: settings, telemetry, metrics, topics, then faust or an asyncio service."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Protocol

import faust

from carehub.kafka.broker import create_topics, wait_for_metadata
from carehub.runtime.metrics import serve_metrics
from carehub.settings import Settings, load_settings
from carehub.telemetry import setup_tracing
from carehub.topics import topic_specs


def run_worker(service: str, build_app: Callable[[Settings, str], faust.App], needs_key: bool = True) -> None:
    """Run a faust worker; ``needs_key=False`` for a stage that reads only pseudonymised topics (no key given)."""
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if needs_key:
        settings.pseudonym_key_bytes()  # no key outside the demo profile: stop here, not mid-stream
    if not settings.kafka_bootstrap:
        raise SystemExit(f"carehub {service}: set CAREHUB_KAFKA_BOOTSTRAP (or use `carehub run` for the demo)")
    wait_for_metadata(settings.kafka_bootstrap, 60.0)
    create_topics(settings.kafka_bootstrap, topic_specs(settings))
    setup_tracing(f"carehub-{service}")
    serve_metrics(settings)
    import uvloop

    uvloop.install()  # faust's per-event overhead is the ceiling; uvloop shaves some of it
    app = build_app(settings, settings.kafka_bootstrap)
    faust_worker(app, settings).execute_from_commandline()


def faust_worker(app: faust.App, settings: Settings) -> faust.Worker:
    """faust's Worker for ``app``, without its terminal spinner.

    At a log level of WARNING or above, faust's Worker hooks its progress spinner into the root
    logger and sets the root logger to DEBUG (``Worker._setup_spinner_handler``), so that every
    ``log.debug`` in aiokafka and faust builds a record: one per message sent, about 8% of the
    identity stage's CPU under load (README "Performance"). A worker of carehub writes logs, not a
    spinner.
    """
    from faust.worker import Worker

    worker = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.spinner = None
    return worker


class AsyncService(Protocol):
    """A service that runs on its own asyncio loop until ``stop`` is set (gateway, indicators, mllp)."""

    async def run(self, stop: asyncio.Event) -> None: ...


def run_async_service(service: str, build: Callable[[Settings, str], AsyncService]) -> None:
    """Build the service (its configuration is checked before Kafka is touched), then run it until
    SIGINT or SIGTERM."""
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not settings.kafka_bootstrap:
        raise SystemExit(f"carehub {service}: set CAREHUB_KAFKA_BOOTSTRAP (or use `carehub run` for the demo)")
    instance = build(settings, settings.kafka_bootstrap)
    wait_for_metadata(settings.kafka_bootstrap, 60.0)
    create_topics(settings.kafka_bootstrap, topic_specs(settings))
    setup_tracing(f"carehub-{service}")
    serve_metrics(settings)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await instance.run(stop)

    asyncio.run(run())
