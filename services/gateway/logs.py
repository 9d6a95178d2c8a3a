"""What the gateway serves, read from Kafka: the alert log by partner, the indicator values, the case lists,
the review packs and their outcomes, and (for identity review teams) the identity review items.

All are rebuilt from their topics on every start (read from the beginning, no consumer group),
so the gateway keeps no state of its own: ``carehub.alerts`` (retained
``CAREHUB_ALERTS_RETENTION_DAYS``) is the durable log a resume cursor points into, and
``carehub.indicators`` and ``carehub.caselists`` are compacted. Each new record is handed to the
live subscribers of its partner through bounded queues; a queue that is full marks its
subscriber as fallen behind instead of slowing anyone else down (a case list is a whole
snapshot, so a watcher that is behind just gets the latest).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from carehub.domain.quality import QualityBook
from carehub.identity_desk import fold, result_of
from carehub.kafka.profile import ClientProfile
from carehub.kafka.read import at_end
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import identity_review_pb2 as rvw
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import review_pb2 as rv
from carehub.v1 import risk_pb2 as rk

log = logging.getLogger(__name__)


def cursor_of(partition: int, offset: int) -> str:
    return f"{partition}:{offset}"


def parse_cursor(cursor: str) -> tuple[int, int] | None:
    """(partition, offset) of a cursor; None for empty; ValueError for anything else."""
    if not cursor:
        return None
    partition, _, offset = cursor.partition(":")
    if not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"not a cursor: {cursor!r}")
    return int(partition), int(offset)


@dataclass
class Entry:
    partition: int
    offset: int
    alert: al.Alert

    @property
    def cursor(self) -> str:
        return cursor_of(self.partition, self.offset)


@dataclass(eq=False)
class Subscriber:
    org: str
    queue: asyncio.Queue[Entry]
    behind: bool = False  # its queue overflowed: it must reconnect from its cursor


@dataclass
class AlertLog:
    by_org: dict[str, list[Entry]] = field(default_factory=dict)
    by_id: dict[str, Entry] = field(default_factory=dict)
    subscribers: dict[str, set[Subscriber]] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, entry: Entry) -> None:
        org = entry.alert.recipient_org
        self.by_org.setdefault(org, []).append(entry)
        self.by_id.setdefault(entry.alert.alert_id, entry)
        for sub in self.subscribers.get(org, ()):
            if sub.behind:
                continue
            try:
                sub.queue.put_nowait(entry)
            except asyncio.QueueFull:
                sub.behind = True

    def subscribe(self, org: str, cursor: tuple[int, int] | None, buffer: int) -> tuple[Subscriber, list[Entry]]:
        """Register a live subscriber and return what it has not seen yet, with no gap between them.

        No ``await`` here: the backlog and the registration are one step for the event loop.
        """
        entries = self.by_org.get(org, [])
        start = 0
        if cursor is not None:
            start = bisect.bisect_right([(e.partition, e.offset) for e in entries], cursor)
        sub = Subscriber(org, asyncio.Queue(maxsize=buffer))
        self.subscribers.setdefault(org, set()).add(sub)
        return sub, entries[start:]

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.get(sub.org, set()).discard(sub)

    def count_subscribers(self) -> int:
        return sum(len(s) for s in self.subscribers.values())


@dataclass
class QualityLog:
    """Every organisation's data-quality increments, added up (carehub/domain/quality.py)."""

    book: QualityBook = field(default_factory=QualityBook)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class IndicatorBoard:
    values: dict[str, ind.IndicatorValue] = field(default_factory=dict)
    watchers: set[asyncio.Queue[ind.IndicatorValue | None]] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, key: str, value: ind.IndicatorValue | None) -> None:
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value
        for queue in list(self.watchers):
            try:
                queue.put_nowait(value)
            except asyncio.QueueFull:  # a slow watcher gets a fresh snapshot instead (None)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)


@dataclass
class CaseListBoard:
    """Every organisation's latest case list, and who is watching which organisation's.

    Watchers are registered under their own organisation only, so a list reaches no one else's
    queue. A queue holds one list: a newer one replaces a list not yet taken.
    """

    lists: dict[str, rk.CaseList] = field(default_factory=dict)
    watchers: dict[str, set[asyncio.Queue[rk.CaseList]]] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, org: str, case_list: rk.CaseList | None) -> None:
        latest = case_list if case_list is not None else rk.CaseList(org=org)
        if case_list is None:
            self.lists.pop(org, None)
        else:
            self.lists[org] = case_list
        for queue in list(self.watchers.get(org, ())):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(latest)

    def of(self, org: str) -> rk.CaseList:
        """``org``'s list, or an empty one naming it."""
        return self.lists.get(org) or rk.CaseList(org=org)

    def watch(self, org: str) -> asyncio.Queue[rk.CaseList]:
        queue: asyncio.Queue[rk.CaseList] = asyncio.Queue(maxsize=1)
        self.watchers.setdefault(org, set()).add(queue)
        return queue

    def unwatch(self, org: str, queue: asyncio.Queue[rk.CaseList]) -> None:
        self.watchers.get(org, set()).discard(queue)


@dataclass
class ReviewBoard:
    """Every review pack (``carehub.review.packs``) and the latest outcome recorded for each
    (``carehub.review.outcomes``), so that a practice reads its packs with their outcomes and the
    learning is counted over them. Both topics are read whole on every start."""

    packs: dict[str, rv.ReviewPack] = field(default_factory=dict)
    outcomes: dict[str, rv.ReviewOutcome] = field(default_factory=dict)
    packs_ready: asyncio.Event = field(default_factory=asyncio.Event)
    outcomes_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # Watchers by their own organisation: a queue holds one "changed" mark, so a slow watcher gets
    # the latest packs, not every version, and a change reaches no other organisation's queue.
    watchers: dict[str, set[asyncio.Queue[None]]] = field(default_factory=dict)

    def put_pack(self, pack_id: str, pack: rv.ReviewPack | None) -> None:
        before = self.packs.pop(pack_id, None)
        if pack is not None:
            self.packs[pack_id] = pack
        self._changed({p.practice for p in (before, pack) if p is not None})

    def put_outcome(self, outcome: rv.ReviewOutcome) -> None:
        held = self.outcomes.get(outcome.pack_id)
        if held is None or outcome.recorded_at.ToNanoseconds() >= held.recorded_at.ToNanoseconds():
            self.outcomes[outcome.pack_id] = outcome
            pack = self.packs.get(outcome.pack_id)
            self._changed({pack.practice} if pack is not None else set())

    def _changed(self, orgs: set[str]) -> None:
        for org in orgs:
            for queue in self.watchers.get(org, ()):
                if not queue.full():
                    queue.put_nowait(None)

    def watch(self, org: str) -> asyncio.Queue[None]:
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self.watchers.setdefault(org, set()).add(queue)
        return queue

    def unwatch(self, org: str, queue: asyncio.Queue[None]) -> None:
        self.watchers.get(org, set()).discard(queue)

    async def ready(self) -> None:
        await self.packs_ready.wait()
        await self.outcomes_ready.wait()

    def of(self, org: str, month: str = "", without_outcome: bool = False) -> list[rv.ReviewPack]:
        """``org``'s packs (only a practice has any), newest admission first, each with its latest outcome."""
        out = []
        for pack in self.packs.values():
            if pack.practice != org or (month and pack.month != month):
                continue
            outcome = self.outcomes.get(pack.pack_id)
            if without_outcome and outcome is not None:
                continue
            served = rv.ReviewPack()
            served.CopyFrom(pack)
            if outcome is not None:
                served.outcome.CopyFrom(outcome)
            out.append(served)
        return sorted(out, key=lambda p: (-p.admission.admitted_at.ToNanoseconds(), p.pack_id))


@dataclass
class IdentityReviewBoard:
    """The identity review items (``carehub.identity.review``, compacted), each in its latest state, read
    whole on every start; for partners with the identity_review role only."""

    items: dict[str, idn.ReviewItem] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set, and replaced, on every record

    def put(self, item: idn.ReviewItem) -> None:
        fold(self.items, item)
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    async def result(self, review_id: str, decision_id: str, timeout_s: float) -> rvw.ReviewDecision | None:
        """The decision as the identity stage applied it, once the item comes back with it; None after ``timeout_s``."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (found := result_of(self.items, review_id, decision_id)) is None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return None
        return found


async def tail(bootstrap: str, topic: str, handle: Callable[[int, int, bytes | None, bytes | None], None],
               ready: asyncio.Event, stop: asyncio.Event, profile: ClientProfile,
               skip: Callable[[Sequence[tuple[str, bytes]]], bool] | None = None) -> None:
    """Read ``topic`` (every partition) from the start and forever; ``ready`` once caught up.

    Records whose headers ``skip`` accepts are not handed to ``handle`` (FHIR replays on the
    alerts topic: for the FHIR delivery loop only).

    Caught up means every partition read to the high watermark a Fetch response reported
    (carehub.kafka.read.at_end), not to ListOffsets' end (wrong on the embedded broker). The
    fetch wait is the profile's: on a broker that answers a fetch only when its wait expires
    (the embedded one), it bounds what the gateway adds to each delivery.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", **profile.aiokafka_consumer())
    await consumer.start()
    try:
        partitions: set[int] = set()
        while not partitions and not stop.is_set():
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await consumer.force_metadata_update()
                await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, records in batches.items():
                for record in records:
                    if skip is None or not skip(record.headers):
                        handle(tp.partition, record.offset, record.key, record.value)
            if not ready.is_set() and await at_end(consumer, tps):
                ready.set()
                log.info("gateway: %s read up to date", topic)
    finally:
        await consumer.stop()
