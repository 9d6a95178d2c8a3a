"""The timeline worker: linked events in; each person's timeline kept; enriched events out.

It reads ``carehub.identity.linked`` (LinkedBatch records, partitioned by person id), applies
each event to its person's ``PersonTimeline`` (carehub/domain/timeline.py) and writes
``TimelineBatch`` records to ``carehub.timeline.events``, on the same partition (by person
id), one record per target partition per batch.

The timelines live in the faust table ``timeline-persons`` (serialised ``PersonTimeline`` by
person id), co-partitioned with the source. A batch reads each person once, and writes each
touched person once, after the batch's output is on Kafka, with the current event set to an
event of that person's source partition so the changelog stays co-partitioned. A crash before
the write repeats the batch's output downstream but never applies an event twice to the state.

Identity merges: the absorbed person's timeline is handed to the survivor (and on an
un-merge, the split-off part back to the restored person) as a ``TimelineHandover`` on the
internal topic ``carehub.timeline.handover``, partitioned by the receiving person like the
linked topic; this worker consumes it as a second source topic (carehub/domain/timeline.py).
A handover is sent, like the enriched events, before the sender's state is written.

Indicators: the engine's person stage (carehub/domain/indicator_counts.py) runs here, beside the
state it reads. Each touched person's indicator cells are recomputed before and after the batch
and the difference counted per partition; the changed counts go to
``carehub.indicators.partials`` after the persons are written.

Logs carry counts and positions only, never a person id or local record id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import MutableMapping, Sequence
from typing import Any

import faust
from opentelemetry import trace

from carehub.domain.definitions import load_catalogue
from carehub.domain.indicator_counts import PartitionCounts
from carehub.domain.indicator_facts import Cells, PersonFacts
from carehub.domain.timeline import PersonState, Step, is_merge, receive, recipient, step
from carehub.kafka.batching import batch_records, target_partition
from carehub.runtime.stage import Batch, StageRuntime
from carehub.settings import Settings
from carehub.telemetry import continue_trace, tracing_enabled
from carehub.topics import indicator_partials_topic, linked_topic, timeline_handover_topic, timeline_topic
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import timeline_pb2 as tl

from . import metrics as m

log = logging.getLogger(__name__)
tracer = trace.get_tracer("carehub.timeline")
APP_SUFFIX = "timeline"
TABLE = "timeline-persons"


class Timeline:
    def __init__(self, settings: Settings, persons: MutableMapping[str, Any], out: Any,
                 handovers: Any = None, counts: PartitionCounts | None = None, partials: Any = None) -> None:
        self.settings = settings
        self.persons = persons
        self.out = out
        self.handovers = handovers
        self.handover_topic = timeline_handover_topic(settings)
        self.counts = counts
        self.partials = partials
        self.snapshot_due: set[int] = set()
        self.partials_lock = asyncio.Lock()
        self.tracing = tracing_enabled()

    def partition_of(self, person_id: str) -> int:
        return target_partition(person_id, self.settings.partitions)

    def forget_partitions(self, topic_partitions: set[str]) -> None:
        """After a revocation: the next owner (maybe us again) counts from the table."""
        if self.counts is not None:
            partitions = {int(tp.rsplit(":", 1)[1]) for tp in topic_partitions}
            self.counts.forget(partitions)
            self.snapshot_due -= partitions

    def ensure_counted(self, partitions: set[int]) -> None:
        """Count partitions seen for the first time since assignment (their table is recovered)."""
        if self.counts is None:
            return
        missing = {p for p in partitions if not self.counts.has(p)}
        if not missing:
            return
        started = time.perf_counter()
        by_partition: dict[int, list[tl.PersonTimeline]] = {p: [] for p in missing}
        for person_id, raw in self.persons.items():
            rows = by_partition.get(self.partition_of(person_id))
            if rows is not None and raw:
                rows.append(tl.PersonTimeline.FromString(raw))
        for p, timelines in by_partition.items():
            persons = self.counts.rebuild(p, timelines)
            log.info("indicators: partition %d counted from %d persons in %.2fs", p, persons,
                     time.perf_counter() - started)
        self.snapshot_due |= missing

    def load(self, person_id: str) -> PersonState:
        raw = self.persons.get(person_id)
        return PersonState.from_bytes(raw) if raw else PersonState.new(person_id)

    def apply_records(self, values: list[tuple[Any, bytes]],
                      ) -> tuple[dict[int, list[tl.TimelineEvent]], dict[Any, dict[str, PersonState]],
                                 list[tl.TimelineHandover]]:
        """Apply each (source tag, LinkedBatch or TimelineHandover bytes) in order.

        A tag is (topic, partition); records of the handover topic are handovers. Returns the
        enriched events by target partition, the changed timelines by source tag, and the
        handovers to send.
        """
        cache: dict[str, PersonState] = {}
        before: dict[str, Cells] = {}
        facts = self.counts.facts if self.counts is not None else None
        changed: dict[str, Any] = {}
        outgoing: dict[int, list[tl.TimelineEvent]] = {}
        handovers: list[tl.TimelineHandover] = []
        duplicates = late = 0

        def state_of(person_id: str) -> PersonState:
            state = cache.get(person_id)
            if state is None:
                state = cache[person_id] = self.load(person_id)
                if facts is not None:
                    before[person_id] = facts.cells(state.timeline)
            return state

        def note(person_id: str, tag: Any, done: Step) -> None:
            nonlocal late
            if done.handover is not None:
                handovers.append(done.handover)
            if done.event is not None:
                late += done.event.view.is_late
                outgoing.setdefault(target_partition(person_id, self.settings.partitions), []).append(done.event)
            if done.event is not None or done.handover is not None:
                changed[person_id] = tag

        for tag, value in values:
            if tag[0] == self.handover_topic:
                handover = tl.TimelineHandover.FromString(value)
                person_id = recipient(handover)
                note(person_id, tag, receive(state_of(person_id), handover))
                continue
            for linked in idn.LinkedBatch.FromString(value).events:
                with (continue_trace(tracer, "timeline", linked.event.trace_context, tag[0], tag[1],
                                     linked.event.event_id) if self.tracing else contextlib.nullcontext()):
                    done = step(state_of(linked.person_id), linked)
                if done.event is None and not is_merge(linked):
                    duplicates += 1
                note(linked.person_id, tag, done)
        by_tag: dict[Any, dict[str, PersonState]] = {}
        for person_id, tag in changed.items():
            by_tag.setdefault(tag, {})[person_id] = cache[person_id]
            if self.counts is not None:
                self.counts.update(self.partition_of(person_id), before[person_id], cache[person_id].timeline)
        m.DUPLICATES.inc(duplicates)
        m.LATE.inc(late)
        return outgoing, by_tag, handovers

    def write(self, states: dict[str, PersonState]) -> int:
        for person_id, state in states.items():
            self.persons[person_id] = state.to_bytes()
        return len(states)

    async def process_batch(self, batch: Batch) -> None:
        started = time.perf_counter()
        values: list[tuple[Any, bytes]] = [(record.tag, record.value) for record in batch]
        partitions = {record.partition for record in batch}
        self.ensure_counted(partitions)
        outgoing, by_tag, handovers = self.apply_records(values)
        await self._send(outgoing, handovers)
        written = 0
        for (topic, partition), timelines in by_tag.items():
            with batch.state_for(topic, partition):
                written += self.write(timelines)
        await self._send_partials(partitions)
        sent = sum(len(v) for v in outgoing.values())
        m.EVENTS.inc(sent)
        m.PERSONS_WRITTEN.observe(written)
        m.BATCH_SECONDS.observe(time.perf_counter() - started)
        log.debug("timeline batch: %d records, %d events, %d persons written", len(batch), sent, written)

    async def _send(self, outgoing: dict[int, list[tl.TimelineEvent]],
                    handovers: Sequence[tl.TimelineHandover] = ()) -> None:
        futures = []
        for partition, enriched in sorted(outgoing.items()):
            for chunk in batch_records(enriched, self.settings.ingest_max_batch_bytes):
                futures.append(await self.out.send(value=chunk, partition=partition))
        for handover in handovers:
            partition = target_partition(recipient(handover), self.settings.partitions)
            futures.append(await self.handovers.send(value=handover.SerializeToString(), partition=partition))
        for future in futures:
            await future

    async def _send_partials(self, partitions: set[int]) -> None:
        if self.counts is None or self.partials is None:
            return
        async with self.partials_lock:  # a snapshot's chunks and a batch's changes never interleave
            futures = []
            for p in sorted(partitions):
                if p in self.snapshot_due:
                    records = self.counts.snapshot_records(p)
                    self.counts.changed.pop(p, None)
                    self.snapshot_due.discard(p)
                else:
                    records = self.counts.changed_records(p)
                for record in records:
                    futures.append(await self.partials.send(value=record))
            for future in futures:
                await future

    async def snapshot_assigned(self, runtime: StageRuntime) -> None:
        """Count and snapshot every partition assigned here, whether or not records come for it.

        A partition whose input is all done still needs its snapshot after a restart: the last
        batch before the stop may have been written to the table without its changes being sent.
        """
        if self.counts is None or not runtime.recovered():
            return
        mine = runtime.assigned(linked_topic(self.settings))
        missing = {p for p in mine if not self.counts.has(p)}
        if missing:
            self.ensure_counted(missing)
            await self._send_partials(missing)


def build_app(settings: Settings, bootstrap: str) -> faust.App:
    runtime = StageRuntime(APP_SUFFIX, settings, bootstrap)
    persons = runtime.table(TABLE, partitions=settings.partitions, value_type=bytes)
    counts = PartitionCounts(PersonFacts(load_catalogue(settings.indicator_definitions),
                                         settings.indicators_attribution))
    timeline = Timeline(settings, persons, runtime.topic(timeline_topic(settings)),
                        runtime.topic(timeline_handover_topic(settings)), counts,
                        runtime.topic(indicator_partials_topic(settings)))
    # two source topics, both partitioned by person id with settings.partitions partitions
    runtime.batch_stage("timeline", [linked_topic(settings), timeline_handover_topic(settings)], timeline,
                        settings.ingest_batch_size, settings.ingest_batch_within_s)
    runtime.forget_on_revoke(timeline)

    async def snapshot_assigned() -> None:
        await timeline.snapshot_assigned(runtime)

    runtime.every(2.0, snapshot_assigned)
    app = runtime.app
    app.carehub_timeline = timeline  # type: ignore[attr-defined]
    return app
