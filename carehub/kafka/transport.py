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

Everything else is faust's aiokafka driver unchanged: the producer, topic creation, rebalancing.
A worker's consumer differs in its fetch wait, in the end offsets table recovery reads to (checked
against a Fetch answer, carehub/kafka/ends.py) and in what it commits. faust commits an offset once
every record below it is acknowledged, and faust acknowledges records it never handed to an
agent: those a stream skips during a rebalance (flow stopped, or fetched in an earlier
generation) and a ``take_events`` batch whose agent was cancelled. It also commits past an
unacknowledged record at the head of a partition (its head-gap test is off by one) and treats a
committed offset of 0 as none. :class:`Consumer` therefore commits only records the stage runtime
says it processed (:meth:`Consumer.mark_processed`), in an unbroken run from where the partition
was committed, and only once the table writes before them are on the broker
(docs/stream-commits.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from aiokafka.errors import IllegalStateError
from faust.exceptions import ImproperlyConfigured
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, ConsumerT, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify
from yarl import URL

from carehub.kafka.ends import fetched_ends

log = logging.getLogger(__name__)

#: The URL scheme ``faust.transports`` maps to :class:`Transport` (see pyproject.toml).
SCHEME = "carehub"
#: The broker URL query parameter that carries the fetch wait.
FETCH_MAX_WAIT_PARAM = "fetch_max_wait_ms"
#: What faust-streaming 0.15.3 hard-codes in ``_create_worker_consumer``.
FAUST_FETCH_MAX_WAIT_MS = 1500
#: How long a partition's commits may wait on a record that was never processed before the
#: consumer reads the partition again from its committed offset (see ``Consumer._new_offset``).
HELD_COMMIT_RESEEK_S = 30.0


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

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        """faust's end offsets (ListOffsets), each checked against a Fetch answer's high watermark.

        Table recovery reads a changelog to these ends; ListOffsets is short of the end on the
        embedded broker after a multi-record batch, the Fetch high watermark is not
        (carehub/kafka/ends.py). Runs in the consumer thread, like faust's.
        """
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return listed
        consumer = self._ensure_consumer()
        ends = await fetched_ends(consumer._client, listed, consumer._fetch_max_wait_ms)
        raised = {tp: (listed[tp], end) for tp, end in ends.items() if end != listed[tp]}
        if raised:
            log.info("end offsets past the listed ones (listed, fetched): %s", raised)
        return ends  # type: ignore[return-value]


class Consumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer on :class:`ConsumerThread`, committing only what is processed and written."""

    _thread: ConsumerThread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Records the stage runtime processed and whose acknowledgement has not come yet.
        self._processed: weakref.WeakSet[Message] = weakref.WeakSet()
        # Partitions whose starting offset is known since their last assignment: until then a
        # commit could not tell a processed head from a skipped one.
        self._seeked: set[TP] = set()
        self._held_since: dict[TP, float] = {}
        self._reseeks: set[asyncio.Future[None]] = set()

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def mark_processed(self, messages: Iterable[Message]) -> None:
        """Say that ``messages`` were processed: only their acknowledgements count towards commits."""
        self._processed.update(messages)

    def ack(self, message: Message) -> bool:
        """Acknowledge ``message``; one the runtime did not process is let go but not committed.

        faust acknowledges a record it skipped (a rebalance stopped the flow, or it was fetched in
        an earlier generation) and every record of a ``take_events`` batch whose agent was
        cancelled, counting on a seek to the committed offset to bring the skipped ones back.
        Counted, such a record can be committed before it is processed again, and then it never
        is. So it is only marked acknowledged, for faust's bookkeeping of records in hand.
        """
        if message in self._processed:
            self._processed.discard(message)
            return bool(super().ack(message))
        with ack_lock:  # the lock faust holds for the same bookkeeping
            if not message.acked:
                message.acked = True
                self._unacked_messages.discard(message)
                notify(self._waiting_for_ack)
        return False

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Not on faust's word: a record that comes past the next offset is not taken for a gap.

        faust notes offsets skipped in what a fetch brings as a gap, and a gap counts as processed
        for commits. But records skipped in a rebalance and read again after a seek make the same
        pattern (72 fetched before 66-71 come): counted as a gap, they were committed before they
        were processed. The stage runtime keeps each partition in order and notes a gap itself
        (:meth:`note_absent`) only for offsets retention removed before they were processed.
        """

    async def note_absent(self, topic: str, partition: int, offset_from: int, offset_to: int) -> None:
        """Offsets ``offset_from`` to ``offset_to`` are not in the partition: commits may pass them."""
        await super()._add_gap(TP(topic, partition), offset_from, offset_to)

    async def first_offset(self, topic: str, partition: int) -> int | None:
        """The partition's first offset (what retention has not removed), None if it cannot be read."""
        tp = TP(topic, partition)
        try:
            return (await self.earliest_offsets(tp)).get(tp)
        except Exception as exc:  # a question for a warning: an answer that does not come changes nothing
            log.warning("%s[%d]: first offset not read (%r)", topic, partition, exc)
            return None

    async def read_again(self, topic: str, partition: int, offset: int) -> None:
        """Fetch the partition again from ``offset`` (records fetched past it are dropped by the runtime).

        A partition revoked meanwhile is not sought: its next owner starts from the committed offset.
        """
        tp = TP(topic, partition)
        if tp not in self.assignment():
            return
        try:
            await self._seek_in_thread(tp, offset)
        except IllegalStateError:  # revoked between the check and the seek
            log.info("%s[%d]: revoked before it could be read again from %d", topic, partition, offset)

    async def _seek_in_thread(self, tp: TP, offset: int) -> None:
        """faust's ``seek``, but run in the consumer's own thread (faust's ``seek_wait``).

        faust 0.15.3's ``Consumer.seek`` calls aiokafka's ``seek`` from the caller's thread, while the
        aiokafka consumer lives in faust's consumer thread with its own event loop: the fetcher is
        not woken, and the partition is never fetched again. In a fault run an ingest worker that
        read a partition again that way took nothing more from it (796 events never accepted).
        ``seek_wait`` runs the seek in the consumer thread and sets faust's read offset as ``seek`` does.
        """
        await self.seek_wait({tp: offset})

    def start_offset(self, topic: str, partition: int) -> int | None:
        """Where processing of a partition starts since its assignment: its committed offset (or the
        reset policy's position), once known (:meth:`perform_seek`); None before."""
        tp = TP(topic, partition)
        return self._committed_offset.get(tp) if tp in self._seeked else None

    def _new_offset(self, tp: TP) -> int | None:
        """faust's next offset to commit for ``tp``, if every record from the committed one on is processed.

        faust 0.15.3 lets a commit pass an unacknowledged record at the head (it tests
        ``min(acked) - committed > 1`` where ``committed`` is the next offset to process, and
        skips the test when that offset is 0). Here the head must be the committed offset itself,
        and nothing is committed before the partition's starting offset is known
        (:meth:`perform_seek`). A head that stays missing means a record that was skipped and not
        fetched again: after ``HELD_COMMIT_RESEEK_S`` the partition is read again from its
        committed offset (repeats are harmless downstream, a loss is not).
        """
        acked = self._acked[tp]
        if not acked:
            return None
        committed = self._committed_offset[tp]
        if tp not in self._seeked or committed is None:
            return None
        gaps = self._gap[tp]
        head = min(min(acked), gaps.begin()) if gaps else min(acked)
        if head > committed:
            self._hold(tp, committed, head)
            return None
        self._held_since.pop(tp, None)
        offset: int | None = super()._new_offset(tp)
        return offset

    def _hold(self, tp: TP, committed: int, head: int) -> None:
        since = self._held_since.setdefault(tp, time.monotonic())
        if time.monotonic() - since < HELD_COMMIT_RESEEK_S:
            return
        self._held_since.pop(tp, None)
        log.warning("%s[%d]: offset %d was never processed (processed from %d on); reading the partition "
                    "again from %d", tp.topic, tp.partition, committed, head, committed)
        self._acked[tp].clear()
        self._acked_index[tp].clear()
        self._gap.pop(tp, None)
        task = asyncio.ensure_future(self._seek_in_thread(tp, committed), loop=self.loop)
        self._reseeks.add(task)
        task.add_done_callback(self._reseeks.discard)

    async def perform_seek(self) -> None:
        """faust's seek to the committed offsets, keeping a committed 0 (faust makes it "none").

        A partition without a committed offset starts where the reset policy put the consumer.
        """
        committed = await self.seek_to_committed()
        acks_enabled_for = self.app.topics.acks_enabled_for
        for tp, offset in committed.items():
            known = offset is not None and offset >= 0
            self._read_offset[faust_consumer.ensure_TP(tp)] = offset if known else None  # as faust sets it
            if not known and not acks_enabled_for(tp.topic):
                continue  # a changelog: faust reads it itself and never commits it
            start = offset if known else await self.position(tp)
            tp = faust_consumer.ensure_TP(tp)
            if start is not None:
                self._committed_offset[tp] = start
                self._seeked.add(tp)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._seeked.discard(tp)
            self._held_since.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def _commit_offsets(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Commit ``offsets`` once every table write queued so far is on the broker.

        A table write is queued in faust's producer buffer and sent later. Before a commit faust
        flushes that buffer, but ``ProducerBuffer.flush_atmost`` gives up as soon as no message
        is sent within 0.1 s, and faust commits anyway: a worker killed then restarts from
        offsets whose state never reached the changelog (identity linked one person's later
        records to a second person id). The offsets being committed are of records whose
        processing, table writes included, was done before they were acknowledged, so their
        writes are in the buffer now, ahead of any queued later (the buffer is first in, first
        out): sending as many messages as it holds now, then waiting for the driver's in-flight
        sends, puts them on the broker before the commit. Waiting for the buffer to be empty
        instead never ended while a busy stage kept writing: a timeline worker catching up held
        one commit for 581 s of a fault run.
        """
        producer = self.app.producer
        buffer = producer.buffer
        before = buffer.size
        while before > 0 and buffer.size:
            # each count is a wake-up after at least one send, the oldest first: never too many
            before -= await buffer.flush_atmost(before)
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
