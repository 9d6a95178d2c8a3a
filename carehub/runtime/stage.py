"""The stage runtime: the one module that owns faust.

A service declares its stream stages and their state here: its topics, its tables, the batch
stages that read them and the timers it needs. It never touches faust's internals; what it
gets for each batch is a :class:`Batch` of plain :class:`StageRecord`\\ s in arrival order, and
a way to write state for one source partition (:meth:`Batch.state_for`).

Why the runtime does what it does:

- Batches: faust's per-event machinery is the throughput ceiling (docs/embedded-broker.md), so
  stages take up to ``size`` records at a time with ``take_events``.
- State writes per source partition: faust 0.15.3 raises "Cannot modify table key from outside
  of stream iteration" when a table is written while handling a ``take_events`` batch, and a
  table write goes to the changelog partition of the stream's *current event*. ``state_for``
  sets the current event to one of that partition's records (a private faust method, used here
  only), so the changelog stays co-partitioned with the source and restores to the right owner.
- Readiness (carehub/runtime/health.py): a worker is ready when its partitions are assigned,
  its tables are recovered and its lag was read in the last few seconds, and no assigned
  partition has input waiting while the stage has made no progress for ``stall_after_s``.
  Lag in records is the Fetch response's high watermark (right on every broker; ListOffsets
  is not on the embedded one) minus the next offset the stage will process (the committed
  offset until the stage has processed a record of that partition).
- Only processed records are committed: the agent marks a batch's records processed once the
  stage has handled them, and carehub's consumer (carehub/kafka/transport.py) commits nothing
  else: not the records faust skips and acknowledges during a rebalance, nor a cancelled batch.
- A worker told to stop finishes the batch in hand before it commits (faust waits for it, see
  :meth:`StageRuntime._complete`); every table write of a committed batch is on the broker
  before the commit (carehub/kafka/transport.py, ``Consumer._commit_offsets``).
- Each partition in order: a stage sees a partition's records in offset order, never one after a
  later one. faust drops records it fetched before a rebalance and counts on a seek to the
  committed offset to bring them back; once, a restarted timeline worker was handed a partition
  from offset 72 while its committed offset was 65, and took 65-71 only when the commit guard read
  the partition again 30 s later, after 72 on: events of one person applied out of link order (a
  discharge applied after a later consent change took that opt-out). So records that come after a
  gap (past the next offset expected: the last processed plus one, or the start offset since
  assignment) are not handed to the stage: the partition is read again from the expected offset,
  and records past the gap are dropped until it comes (``in_order``).
- A batch that fails ends the process (exit code ``EXIT_BATCH_FAILED``) before anything more
  runs: faust's ``take_events`` acknowledges a batch's records in a ``finally`` clause, so an
  exception raised into it, or a supervisor restarting the agent, would commit records that
  were never processed. Exiting at once leaves the committed offsets where the last processed
  batch put them, and a restarted worker takes the failed batch again (duplicates are harmless
  downstream; losses are not).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Generic, Protocol, TypeVar, cast

import faust
from faust.serializers import codecs
from faust.stores.memory import Store as MemoryTableStore
from mode.types.signals import BaseSignalT

from carehub.kafka.transport import Consumer
from carehub.runtime.app import faust_app
from carehub.runtime.health import HEALTH, Health
from carehub.runtime.metrics import STAGE_LAG, STAGE_LAG_RECORDS, STAGE_LAST, STAGE_RECORDS
from carehub.settings import Settings

log = logging.getLogger(__name__)
RAW: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
V = TypeVar("V")


@dataclass(frozen=True)
class ValueCodec(Generic[V]):
    """How a table's values of one type become bytes on its changelog, and back."""

    dumps: Callable[[V], bytes]
    loads: Callable[[bytes], V]


def _coded_type(serializer: str) -> type:
    """A value type that makes a faust table use the codec ``serializer``, for values of any class.

    faust 0.15 takes a table's serializer from its value type (``value_type._options.serializer``,
    as a ``faust.Record`` declares it) for the store and the changelog alike, and after decoding
    calls ``value_type.from_data``: this type names the codec and hands the decoded value back.
    (tests/integration/test_stage_runtime.py recovers such a table from its changelog.)
    """

    def from_data(cls: type, data: Any, preferred_type: Any = None) -> Any:
        return data

    return type(f"Coded[{serializer}]", (), {"_options": SimpleNamespace(serializer=serializer),
                                             "from_data": classmethod(from_data)})


class _ValueCodec(codecs.Codec):
    """A ``ValueCodec`` as faust's serializers want it (registered by name in ``StageRuntime.table``)."""

    def __init__(self, codec: ValueCodec[Any], children: tuple[Any, ...] | None = None) -> None:
        super().__init__(children=children, codec=codec)  # in kwargs, as faust's clone() passes them on
        self._codec = codec

    def _dumps(self, obj: Any) -> bytes:
        return self._codec.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return self._codec.loads(s)
# No progress for this long while records wait: the stage has stalled, and says so on /ready.
STALL_AFTER_S = 60.0
HEALTH_EVERY_S = 2.0
# While records past a gap are held back: how often to warn, and to ask whether the offsets waited
# for were removed from the partition (see ``in_order``).
GAP_WAIT_S = 20.0
# The exit code of a worker whose batch failed (EX_SOFTWARE): its orchestrator restarts it.
EXIT_BATCH_FAILED = 70

Tag = tuple[str, int]  # (topic, partition)


def table_reader(table: Any) -> Callable[[str], Any]:
    """A read of one key of ``table`` (None when absent) for a stage that reads thousands per batch.

    ``table.get`` on a faust table calls faust's per-read hook (its sensors count keys read) and,
    for a key that is absent, raises and catches a KeyError inside: about a tenth of the identity
    stage's CPU went there, most of it on absent keys (a person without a redirect). For faust's
    memory store this reads its dict directly; the table's contents are the same, only faust's
    count of keys read misses these reads. Any other mapping (another store, a dict in a test) is
    read with its own ``get``.
    """
    store = getattr(table, "data", None)
    held = getattr(store, "data", None)
    if isinstance(store, MemoryTableStore) and isinstance(held, dict):
        return held.get
    return cast(Callable[[str], Any], table.get)


@dataclass(frozen=True, slots=True)
class StageRecord:
    """One Kafka record as a stage sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_s: float  # when it was produced (0.0 if the broker gave none)

    @property
    def tag(self) -> Tag:
        return (self.topic, self.partition)


def _record(event: Any) -> StageRecord:
    msg = event.message
    headers = msg.headers
    if isinstance(headers, dict):
        headers = headers.items()
    return StageRecord(msg.topic, msg.partition, msg.offset, msg.key, msg.value or b"",
                       tuple((k, v) for k, v in (headers or ()) if v is not None), msg.timestamp or 0.0)


class Batch:
    """Records of one take, in arrival order, with state writes routed per source partition."""

    def __init__(self, stream: Any, events: Sequence[Any]) -> None:
        self._stream = stream
        self.records = [_record(e) for e in events]
        self._last_event: dict[Tag, Any] = {}
        for event, record in zip(events, self.records, strict=True):
            self._last_event[record.tag] = event

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[StageRecord]:
        return iter(self.records)

    def by_partition(self) -> dict[Tag, list[StageRecord]]:
        """The records grouped by (topic, partition), each group in offset order."""
        groups: dict[Tag, list[StageRecord]] = {}
        for record in self.records:
            groups.setdefault(record.tag, []).append(record)
        return groups

    @contextlib.contextmanager
    def state_for(self, topic: str, partition: int) -> Iterator[None]:
        """Table writes inside go to the changelog partition of source ``topic``/``partition``."""
        event = self._last_event[(topic, partition)]
        previous = self._stream.current_event
        self._stream._set_current_event(event)
        try:
            yield
        finally:
            self._stream._set_current_event(previous)


def _exit_uncommitted(stage: str, batch: Batch) -> None:
    """End the process now, without acknowledging ``batch`` (see the module docstring)."""
    first = batch.records[0] if batch.records else None
    where = f" from {first.topic}[{first.partition}]@{first.offset}" if first else ""
    log.critical("stage %s: a batch of %d records%s failed; exiting with code %d without committing it, "
                 "so that the restarted worker takes it again", stage, len(batch), where, EXIT_BATCH_FAILED,
                 exc_info=True)
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)


class BatchStage(Protocol):
    async def process_batch(self, batch: Batch) -> None: ...


class PartitionIndex(Protocol):
    def forget_partitions(self, topic_partitions: set[str]) -> None: ...


@dataclass
class Progress:
    """A batch stage's place in each source partition, for lag, stalls and keeping partitions in order."""

    next_offset: dict[Tag, int] = field(default_factory=dict)  # next offset to process, per source partition
    progressed_at: float = field(default_factory=time.monotonic)
    reread: dict[Tag, tuple[int, float]] = field(default_factory=dict)  # partitions read again: (offset, until)


class Rereader(Protocol):
    """What keeping partitions in order needs of the consumer (carehub/kafka/transport.py)."""

    def start_offset(self, topic: str, partition: int) -> int | None: ...
    async def first_offset(self, topic: str, partition: int) -> int | None: ...
    async def read_again(self, topic: str, partition: int, offset: int) -> None: ...
    async def note_absent(self, topic: str, partition: int, offset_from: int, offset_to: int) -> None: ...


async def in_order(events: Sequence[Any], progress: Progress, consumer: Rereader,
                   now: float | None = None) -> list[Any]:
    """``events`` without the records of partitions that jumped past the next expected offset.

    Such a partition is read again from the expected offset, each time records past it come:
    faust's fetch loop may still hand over records fetched before a seek, and each one it hands
    over moves faust's read offset past the expected one, so that the records read again would be
    dropped; a seek after the last of them sets both back. Offsets that do not come are waited for,
    with a warning every ``GAP_WAIT_S``, unless they are below the partition's first offset
    (removed by retention): none of the stages' input topics is compacted, so an offset at or past
    the first is there to be read.
    """
    first: dict[Tag, int] = {}
    for event in events:
        tag = (event.message.topic, event.message.partition)
        first[tag] = min(first.get(tag, event.message.offset), event.message.offset)
    gapped: set[Tag] = set()
    now = time.monotonic() if now is None else now
    for tag, offset in first.items():
        expected = progress.next_offset.get(tag)
        if expected is None:
            expected = consumer.start_offset(*tag)
        if expected is None or offset <= expected:
            progress.reread.pop(tag, None)
            continue
        waiting = progress.reread.get(tag)
        if waiting is None or waiting[0] != expected:
            log.warning("%s[%d]: records from offset %d came before %d to %d were processed: reading the "
                        "partition again from %d, so that it is processed in order", tag[0], tag[1], offset,
                        expected, offset - 1, expected)
            progress.reread[tag] = (expected, now + GAP_WAIT_S)
        elif now >= waiting[1]:
            start = await consumer.first_offset(*tag)
            if start is not None and start > expected:
                log.warning("%s[%d]: offsets %d to %d were removed from the partition (it starts at %d) before "
                            "they were processed", tag[0], tag[1], expected, start - 1, start)
                await consumer.note_absent(tag[0], tag[1], expected, start - 1)
                progress.next_offset[tag] = expected = start
                if offset <= expected:
                    progress.reread.pop(tag, None)
                    continue
            else:
                log.warning("%s[%d]: still waiting for offset %d (records from %d on held back)", tag[0], tag[1],
                            expected, offset)
            progress.reread[tag] = (expected, now + GAP_WAIT_S)
        gapped.add(tag)
        await consumer.read_again(tag[0], tag[1], expected)
    if not gapped:
        return list(events)
    return [e for e in events if (e.message.topic, e.message.partition) not in gapped]


# Records a stage may leave in faust's producer buffer (table changelogs, mostly) before it takes
# its next batch. faust adds a changelog record to that buffer on every table write and only
# slows its streams a little when the buffer is long (``ProducerBuffer.wait_until_ebb``): a stage
# that writes faster than the producer sends held 465,000 records there after 7 minutes at 1,000
# events/s, and grew by half a gigabyte a minute. With this bound the backlog waits in Kafka as
# the stage's lag instead, and memory stays flat.
PRODUCER_BACKLOG = 20_000


class ProducerBacklog(Protocol):
    """What ``ebb`` needs of faust's ``ProducerBuffer``."""

    @property
    def size(self) -> int: ...
    async def flush_atmost(self, n: int) -> int: ...


async def ebb(buffer: ProducerBacklog, limit: int) -> None:
    """Wait until at most ``limit`` records wait in ``buffer`` (each ``flush_atmost`` returns after
    0.1 s without a send, so a producer that cannot send keeps the stage here, not its memory)."""
    while buffer.size > limit:
        await buffer.flush_atmost(buffer.size - limit)


class StageRuntime:
    """A faust worker of one service: its topics, tables, batch stages, timers and readiness."""

    def __init__(self, app_suffix: str, settings: Settings, bootstrap: str, health: Health = HEALTH,
                 stall_after_s: float = STALL_AFTER_S) -> None:
        self.settings = settings
        self.app: faust.App = faust_app(settings.topic(app_suffix).replace(".", "-"), settings, bootstrap)
        self.health = health
        self.stall_after_s = stall_after_s
        self._stages: dict[str, tuple[set[str], Progress]] = {}
        self._assigned_once = False
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.timer(interval=HEALTH_EVERY_S)(self._judge)

    # ---- declarations ---------------------------------------------------------------------
    def topic(self, *names: str) -> Any:
        """A topic of raw bytes (keys and values), to read from or send to."""
        return self.app.topic(*names, **RAW)

    def table(self, name: str, partitions: int, value_type: type | None = None,
              codec: ValueCodec[Any] | None = None) -> Any:
        """A faust table of str keys, its changelog partitioned ``partitions`` ways.

        ``codec``: for values of a type of the service's own, its (to bytes, from bytes) pair. The
        table then holds the values decoded, as written and after recovery alike, and the changelog
        carries their bytes: a stage that reads a key many times does not decode it each time.
        """
        if codec is None:
            return self.app.Table(name, default=None, partitions=partitions, key_type=str, value_type=value_type)
        serializer = f"carehub-{name}"
        codecs.register(serializer, _ValueCodec(codec))
        return self.app.Table(name, default=None, partitions=partitions, key_type=str,
                              value_type=_coded_type(serializer))

    def batch_stage(self, name: str, topics: Sequence[str], stage: BatchStage, size: int, within_s: float) -> None:
        """Hand ``stage.process_batch`` up to ``size`` records of ``topics`` at a time.

        The method is looked up per batch, so a wrapper installed after start-up (a bench's
        clock) takes effect.
        """
        progress = Progress()
        self._stages[name] = (set(topics), progress)

        @self.app.agent(self.topic(*topics), name=name)
        async def agent(stream: Any) -> None:
            async for events in stream.take_events(size, within_s):
                kept = await in_order(events, progress, self._consumer())
                if not kept:
                    continue
                batch = Batch(stream, kept)
                await self._complete(name, stage, batch)
                # only now may take_events' acknowledgements of these records lead to a commit
                self._consumer().mark_processed(event.message for event in kept)
                self._note_batch(name, batch, progress)
                await ebb(self.app.producer.buffer, PRODUCER_BACKLOG)

    def write_through(self, table: Any) -> Callable[[dict[str, Any], int], Awaitable[None]]:
        """A writer of rows to ``table``'s changelog partition that returns once they are on the broker.

        A table write only queues its changelog record; records of different tables then reach the
        broker in no order a crash respects. Rows written through are on the broker, with every
        record sent before them, when the writer returns: a stage writes through what must never be
        lost without the rest (the identity worker's merge journal), then writes the rest as usual.
        The rows still belong in the table itself: the stage writes them there too.
        """

        async def write(rows: dict[str, Any], partition: int) -> None:
            sent = [table.send_changelog(partition, key, value) for key, value in rows.items()]
            for future in sent:
                await future  # delivered: faust's buffer hands records to the client in order
            await self.app.producer.flush()  # and whatever was queued before them, on other partitions

        return write

    def every(self, interval_s: float, fn: Callable[[], Awaitable[None]]) -> None:
        self.app.timer(interval=interval_s)(fn)

    def forget_on_revoke(self, index: PartitionIndex) -> None:
        """Drop ``index``'s in-memory view of partitions this worker no longer owns ("topic:partition")."""

        @self.app.on_partitions_revoked.connect
        def on_revoked(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any) -> None:
            revoked = args[0] if args else kwargs.get("revoked", set())
            index.forget_partitions({f"{tp.topic}:{tp.partition}" for tp in revoked})

    async def _complete(self, name: str, stage: BatchStage, batch: Batch) -> None:
        """Process ``batch`` in the agent's own task; a batch that fails ends the process.

        A stopping faust worker first waits for its streams' events in hand to be acknowledged
        (``stream_wait_empty``, on by default), so a stop lets the batch in hand finish before
        the commit (test_stage_runtime.py stops a worker mid-batch). The batch runs in the
        agent's own task: run in a task of its own (to finish it even if cancelled), a restarted
        timeline worker never took its input in 4 of 17 runs of test_timeline.py's restart
        test, against 0 of 12 this way.
        """
        try:
            await stage.process_batch(batch)
        except Exception:
            _exit_uncommitted(name, batch)

    def _consumer(self) -> Consumer:
        consumer = self.app.consumer
        if not isinstance(consumer, Consumer):
            raise TypeError(f"a stage needs carehub's Kafka consumer, got {type(consumer).__name__}")
        return consumer

    # ---- questions a stage may ask ------------------------------------------------------------
    def recovered(self) -> bool:
        """Assigned, not rebalancing, and every table restored from its changelog."""
        app = self.app
        recovery = app.tables.recovery  # type: ignore[attr-defined]
        return bool(self._assigned_once and not app.rebalancing and not app.in_recovery
                    and recovery.completed.is_set())

    def assigned(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}

    # ---- the runtime's own bookkeeping ----------------------------------------------------------
    async def _on_assigned(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        self._assigned_once = True

    async def _on_revoked(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        """A partition assigned again starts from its committed offset, wherever this worker had got."""
        revoked = args[0] if args else kwargs.get("revoked", set())
        tags = {(tp.topic, tp.partition) for tp in revoked}
        for _, progress in self._stages.values():
            for tag in tags:
                progress.next_offset.pop(tag, None)
                progress.reread.pop(tag, None)

    def _note_batch(self, name: str, batch: Batch, progress: Progress) -> None:
        """Progress and lag in time, measured by the stage itself from record timestamps."""
        if not batch.records:
            return
        for record in batch.records:
            progress.next_offset[record.tag] = max(progress.next_offset.get(record.tag, 0), record.offset + 1)
        progress.progressed_at = time.monotonic()
        STAGE_RECORDS.labels(name).inc(len(batch))
        newest = max(r.timestamp_s for r in batch.records)
        if newest:
            STAGE_LAG.labels(name).set(max(0.0, time.time() - newest))
            STAGE_LAST.labels(name).set(newest)

    async def _judge(self) -> None:
        """Refresh the readiness judgement and the lag in records (every HEALTH_EVERY_S)."""
        reasons: list[str] = []
        details: dict[str, Any] = {}
        if not self._assigned_once:
            reasons.append("no partition assignment yet")
        elif not self.recovered():
            reasons.append("rebalancing or restoring tables")
        else:
            assignment = self.app.consumer.assignment()
            for name, (topics, progress) in self._stages.items():
                lag = 0
                for tp in assignment:
                    if tp.topic not in topics:
                        continue
                    tag = (tp.topic, tp.partition)
                    high = self.app.consumer.highwater(tp)
                    if high is None:
                        continue  # not fetched yet
                    done = progress.next_offset.get(tag)
                    if done is None:  # nothing processed here yet: start from the committed offset
                        done = self.app.consumer._committed_offset.get(tp) or 0  # type: ignore[attr-defined]
                    lag += max(0, high - done)
                STAGE_LAG_RECORDS.labels(name).set(lag)
                details[name] = {"lag_records": lag}
                idle = time.monotonic() - progress.progressed_at
                if lag and idle > self.stall_after_s:
                    reasons.append(f"{name}: {lag} records waiting and no progress for {idle:.0f} s")
        self.health.judge(reasons, details)
