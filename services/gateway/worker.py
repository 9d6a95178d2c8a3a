"""`python -m carehub.services.gateway`: the partner gateway (several may run behind one address)."""

from __future__ import annotations

import asyncio
import logging
import signal

from carehub.kafka.broker import create_topics, wait_for_metadata
from carehub.runtime.metrics import serve_metrics
from carehub.settings import load_settings
from carehub.telemetry import setup_tracing
from carehub.topics import topic_specs

from .server import Gateway


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not settings.kafka_bootstrap:
        raise SystemExit("carehub gateway: set CAREHUB_KAFKA_BOOTSTRAP (or use `carehub run` for the demo)")
    gateway = Gateway(settings, settings.kafka_bootstrap)  # partners and TLS material checked here
    wait_for_metadata(settings.kafka_bootstrap, 60.0)
    create_topics(settings.kafka_bootstrap, topic_specs(settings))
    setup_tracing("carehub-gateway")
    serve_metrics(settings)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await gateway.run(stop)

    asyncio.run(run())
