"""carehub's faust transport: faust's aiokafka transport with the broker profile's fetch wait.

faust-streaming 0.15.3 builds every worker's consumer with ``fetch_max_wait_ms=1500`` written
into ``AIOKafkaConsumerThread._create_worker_consumer``; no faust setting changes it. On the
embedded broker a fetch is answered only when data is found on one of its polls or its wait
expires, never woken by a produce, so each hop of a pipeline pays up to that wait
(docs/embedded-broker.md). The wait must be the broker profile's (carehub/kafka/profile.py).

faust picks a transport by the scheme of the broker URL, looking the scheme up in
``faust.transport.drivers.TRANSPORTS``, which also loads the ``faust.transports`` entry points
(pyproject.toml registers ``carehub`` -> :class:`Transport`). The fetch wait travels in the
broker URL itself, ``carehub://host:port?fetch_max_wait_ms=100``: the URL is what faust hands a
transport, so no global state and no faust setting of our own is needed. :func:`broker_urls`
writes those URLs; carehub/runtime/app.py ``faust_app`` uses it.

Everything else is faust's aiokafka driver unchanged: the producer, topic creation, offsets,
rebalancing. Only a worker's consumer differs: in its fetch wait, and in draining the producer
completely before it commits offsets (:meth:`Consumer._commit_offsets`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from faust.exceptions import ImproperlyConfigured
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, ConsumerT
from yarl import URL

#: The URL scheme ``faust.transports`` maps to :class:`Transport` (see pyproject.toml).
SCHEME = "carehub"
#: The broker URL query parameter that carries the fetch wait.
FETCH_MAX_WAIT_PARAM = "fetch_max_wait_ms"
#: What faust-streaming 0.15.3 hard-codes in ``_create_worker_consumer``.
FAUST_FETCH_MAX_WAIT_MS = 1500


def broker_urls(bootstrap: str, fetch_max_wait_ms: int) -> str:
    """faust's ``broker`` setting for ``host:port[,host:port]`` over carehub's transport."""
    if fetch_max_wait_ms < 1:
        raise ValueError(f"fetch_max_wait_ms must be at least 1, got {fetch_max_wait_ms}")
    query = f"{FETCH_MAX_WAIT_PARAM}={fetch_max_wait_ms}"
    return ",".join(f"{SCHEME}://{hp.strip()}?{query}" for hp in bootstrap.split(","))


def fetch_max_wait_ms_of(urls: list[URL]) -> int:
    """The fetch wait the broker URLs carry: URLs that give one must agree, and one must."""
    given = {u.query[FETCH_MAX_WAIT_PARAM] for u in urls if FETCH_MAX_WAIT_PARAM in u.query}
    shown = ", ".join(str(u) for u in urls)
    if not given:
        raise ImproperlyConfigured(
            f"{SCHEME}:// broker URLs must carry ?{FETCH_MAX_WAIT_PARAM}=<ms> (the broker profile's fetch "
            f"wait, see carehub/kafka/profile.py); got {shown}"
        )
    if len(given) > 1:
        raise ImproperlyConfigured(f"broker URLs disagree on {FETCH_MAX_WAIT_PARAM}: {shown}")
    (value,) = given
    if not value.isdigit() or int(value) < 1:
        raise ImproperlyConfigured(f"{FETCH_MAX_WAIT_PARAM} must be a positive integer of milliseconds: {shown}")
    return int(value)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with the transport's fetch wait for a worker's consumer."""

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> Any:
        """faust's worker consumer, its fetch wait replaced before it starts.

        faust passes ``fetch_max_wait_ms=1500`` straight to ``aiokafka.AIOKafkaConsumer``, which
        keeps the value in ``_fetch_max_wait_ms`` until ``start()`` hands it to its ``Fetcher``;
        the consumer is not started yet, so setting it here is as if faust had passed ours.
        This calls faust rather than copying its 50-line method, at the price of one private
        attribute of aiokafka: checked for aiokafka==0.14.0 and faust-streaming==0.15.3 (pinned
        in pyproject.toml). Should either change, the guard below fails at start-up rather than
        letting the old wait through; tests/integration/test_kafka_transport.py checks the
        running fetcher.
        """
        fetch_max_wait_ms = _carehub_transport(transport).fetch_max_wait_ms
        consumer = super()._create_worker_consumer(transport)
        if getattr(consumer, "_fetch_max_wait_ms", None) != FAUST_FETCH_MAX_WAIT_MS or consumer._fetcher is not None:
            raise RuntimeError(
                "faust's worker consumer no longer looks like faust-streaming 0.15.3 over aiokafka 0.14.0 "
                "(fetch_max_wait_ms=1500 kept in AIOKafkaConsumer._fetch_max_wait_ms until start): "
                "revisit carehub/kafka/transport.py"
            )
        consumer._fetch_max_wait_ms = fetch_max_wait_ms
        return consumer


class Consumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer on :class:`ConsumerThread`, committing only what is written."""

    _thread: ConsumerThread

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit_offsets(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Commit ``offsets`` once every table write queued so far is on the broker.

        A table write is queued in faust's producer buffer and sent later. Before a commit faust
        flushes that buffer, but ``ProducerBuffer.flush_atmost`` gives up as soon as no message
        is sent within 0.1 s, and faust commits anyway: a worker killed then restarts from
        offsets whose state never reached the changelog (identity linked one person's later
        records to a second person id). The offsets being committed are of records whose
        processing, table writes included, was done before they were acknowledged, so their
        writes are in the buffer now: draining it all, then waiting for the driver's in-flight
        sends, puts them on the broker before the commit.
        """
        producer = self.app.producer
        buffer = producer.buffer
        while buffer.size:
            await buffer.flush_atmost(buffer.size)
        await producer.flush()
        return bool(await super()._commit_offsets(offsets, start_new_transaction))


class Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport whose consumers wait ``fetch_max_wait_ms`` from the broker URL."""

    Consumer: ClassVar[type[ConsumerT]] = Consumer

    fetch_max_wait_ms: int

    def __init__(self, url: list[URL], app: AppT, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(url, app, loop)
        self.fetch_max_wait_ms = fetch_max_wait_ms_of(self.url)


def _carehub_transport(transport: object) -> Transport:
    if not isinstance(transport, Transport):
        raise ImproperlyConfigured(f"carehub's consumer needs carehub's transport, got {type(transport).__name__}")
    return transport
