"""A running faust worker fetches with the broker profile's wait, not faust's 1500 ms.

carehub/kafka/transport.py replaces the fetch wait faust hard-codes (docs/embedded-broker.md);
this starts a real faust App from ``faust_app`` on the embedded broker, has its agent receive a
record (so the consumer is started, in its group and fetching) and reads the wait in aiokafka's
``Fetcher`` of that consumer, the object that puts it into every FetchRequest.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from pathlib import Path
from typing import Any

import aiokafka
import faust
import pytest

from carehub.kafka.broker import EmbeddedBroker
from carehub.kafka.transport import Consumer, Transport
from carehub.runtime.app import faust_app
from carehub.settings import load_settings

pytestmark = pytest.mark.integration

FETCH_MAX_WAIT_MS = 37  # what CAREHUB_KAFKA_FETCH_MAX_WAIT_MS=37 sets; neither profile's default nor faust's
DEADLINE_S = 90.0  # start, topic creation, a group join (~5 s on the embedded broker) and one record


def running_fetcher(app: faust.App) -> Any:
    """aiokafka's Fetcher of the app's started worker consumer, or None before it exists."""
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    aiokafka_consumer = consumer._thread._consumer
    assert aiokafka_consumer is None or isinstance(aiokafka_consumer, aiokafka.AIOKafkaConsumer)
    return None if aiokafka_consumer is None else aiokafka_consumer._fetcher


def test_running_worker_fetches_with_the_configured_wait(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = load_settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}",
                             data_dir=tmp_path, pseudonym_key=secrets.token_hex(32), partitions=1,
                             kafka_fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    app = faust_app(settings.topic("transport").replace(".", "-"), settings, broker.bootstrap)
    topic = app.topic(settings.topic("transport.in"), value_type=bytes, value_serializer="raw")
    received: asyncio.Queue[bytes] = asyncio.Queue()

    @app.agent(topic)
    async def sink(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            await received.put(value)

    async def run() -> int:
        await app.start()
        try:
            async with asyncio.timeout(DEADLINE_S):
                await topic.send(value=b"ping")
                # the record came through the worker consumer: started, assigned, fetching
                assert await received.get() == b"ping"
            assert isinstance(app.transport, Transport)
            fetcher = running_fetcher(app)
            assert fetcher is not None
            return int(fetcher._fetch_max_wait_ms)  # read while the consumer runs
        finally:
            await app.stop()

    assert asyncio.run(run()) == FETCH_MAX_WAIT_MS
