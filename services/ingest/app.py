"""The ingest worker: provider topics in; accepted batches and dead letters out.

Per batch from ``take_events``, in arrival order: decode and validate every record, pseudonymise the
accepted ones, drop duplicates by (source_org, event_id), send accepted events in
AcceptedBatch records (one per target partition), wait for those sends, then record the
batch's keys in the dedupe table. A crash between the two can only repeat events
downstream, never lose them.

An event with an unusable value is accepted without it ("degrade, don't drop":
services/ingest/validation.py); each batch also writes what became of each sender's records
that day to ``carehub.quality`` (carehub/domain/quality.py), for the providers' feedback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import faust

from carehub.domain.dedupe import DedupeIndex
from carehub.domain.pseudonymise import Pseudonymiser
from carehub.domain.quality import UNKNOWN_SENDER, Tally
from carehub.kafka.batching import batch_records, target_partition
from carehub.runtime.stage import Batch, StageRecord, StageRuntime
from carehub.settings import Settings
from carehub.topics import ACCEPTED_PARTITIONS, accepted_topic, deadletter_topic, quality_topic
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing

from . import metrics as m
from .records import RawRecord, RecordProcessor, dedupe_key, now_utc, routing_key
from .validation import ORG_CODE, Limits

log = logging.getLogger(__name__)
APP_SUFFIX = "ingest"


def sender_of(key: bytes | None) -> str:
    """The organisation a record's key names (``source_org/local_id``, as the SDK writes it), for
    counting a record whose content could not be read; "" when the key says nothing usable."""
    org = (key or b"").split(b"/", 1)[0].decode("ascii", "replace")
    return org if ORG_CODE.match(org) else UNKNOWN_SENDER


def _raw(record: StageRecord) -> RawRecord:
    return RawRecord(record.topic, record.partition, record.offset, record.key, record.value,
                     list(record.headers), record.timestamp_s)


class Ingest:
    def __init__(self, settings: Settings, accepted: Any, dlq: Any, table: Any, quality: Any) -> None:
        self.settings = settings
        self.accepted = accepted
        self.dlq = dlq
        self.quality = quality
        self.late_after_s = settings.quality_late_after_hours * 3600
        self.processor = RecordProcessor(
            Pseudonymiser(settings.pseudonym_key_bytes()),
            Limits(settings.max_future_skew, settings.earliest_event_year),
        )
        self.index = DedupeIndex(table, settings.dedupe_retention.total_seconds())
        self._accepted = {v: m.ACCEPTED.labels(ce.Sector.Name(v)) for v in ce.Sector.values()}

    async def process_batch(self, batch: Batch) -> None:
        started = time.perf_counter()
        now = now_utc()
        now_s = now.timestamp()
        outgoing: dict[int, list[ing.AcceptedEvent]] = {}
        dead: list[ing.DeadLetter] = []
        sectors: Counter[ce.Sector.ValueType] = Counter()
        feeds: Counter[str] = Counter()
        tally = Tally()
        today = now.date().isoformat()
        last_seen: dict[str, float] = {}
        groups = batch.by_partition()
        new_keys: dict[str, list[str]] = {f"{t}:{p}": [] for t, p in groups}
        batch_keys: set[str] = set()
        for (topic, _), group in groups.items():
            m.RECEIVED.labels(topic).inc(len(group))
        # In arrival order, not partition by partition: the accepted topic is the linkage log,
        # and its order is the order the identity stage decides in.
        for record in batch:
            rec = _raw(record)
            tag = f"{rec.topic}:{rec.partition}"
            result = self.processor.process(rec, now)
            if isinstance(result, ing.DeadLetter):
                dead.append(result)
                tally.rejected(result.source_org or sender_of(rec.key), today, result.reason)
                continue
            key = dedupe_key(result)
            if key in batch_keys or self.index.seen(tag, key):
                m.DUPLICATES.inc()
                tally.duplicate(result.source_org, today)
                continue
            batch_keys.add(key)
            new_keys[tag].append(key)
            p = target_partition(routing_key(result), ACCEPTED_PARTITIONS)
            outgoing.setdefault(p, []).append(result)
            sectors[result.source_sector] += 1
            feeds[result.source_org] += 1
            tally.accepted(result.source_org, today, result.quality,
                           late=now_s - result.event_time.seconds > self.late_after_s)
            m.FROM_EVENT.observe(max(0.0, now_s - result.event_time.seconds))
            if rec.timestamp_s:
                m.FROM_PUBLISH.observe(max(0.0, now_s - rec.timestamp_s))
                last_seen[result.source_org] = max(rec.timestamp_s, last_seen.get(result.source_org, 0.0))
        await self._send(outgoing, dead, tally)
        # Only now that the events are in the accepted topic may they count as seen.
        for (topic, partition), group in groups.items():
            keys = new_keys[f"{topic}:{partition}"]
            if keys:
                with batch.state_for(topic, partition):
                    self.index.record(f"{topic}:{partition}", group[0].offset, keys, now_s)
        for topic, partition in groups:
            with batch.state_for(topic, partition):
                self.index.expire(f"{topic}:{partition}", now_s)
        for sector, n in sectors.items():
            self._accepted[sector].inc(n)
        for org, n in feeds.items():
            m.FEED_EVENTS.labels(org).inc(n)
        for counts in tally.records():  # the per-sender metrics, from the batch's quality counts
            for key, n in counts.degraded_by_problem.items():
                field, _, problem = key.partition(": ")
                m.DEGRADED.labels(counts.source_org, field, f"REJECT_REASON_{problem}").inc(n)
            for reason, n in counts.rejected_by_reason.items():
                m.FEED_REJECTED.labels(counts.source_org, reason).inc(n)
            if counts.duplicates:
                m.FEED_DUPLICATES.labels(counts.source_org).inc(counts.duplicates)
        for org, ts in last_seen.items():
            m.LAST_EVENT.labels(org).set(ts)
        m.BATCH_SIZE.observe(len(batch))
        m.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _send(self, outgoing: dict[int, list[ing.AcceptedEvent]], dead: list[ing.DeadLetter],
                    tally: Tally) -> None:
        futures = []
        limit = self.settings.ingest_max_batch_bytes
        for partition, batch in sorted(outgoing.items()):
            for chunk in batch_records(batch, limit):
                futures.append(await self.accepted.send(value=chunk, partition=partition))
        for dl in dead:
            m.REJECTED.labels(ing.RejectReason.Name(dl.reason)).inc()
            # position and reason only: a message may quote a value, and raw values stay in the DLQ
            log.warning("rejected %s[%d]@%d: %s", dl.source.topic, dl.source.partition, dl.source.offset,
                        ing.RejectReason.Name(dl.reason))
            futures.append(await self.dlq.send(value=dl.SerializeToString(), key=dl.event_id.encode() or None))
        for counts in tally.records():  # the batch's data-quality increments, with the batch
            futures.append(await self.quality.send(value=counts.SerializeToString(),
                                                   key=counts.source_org.encode() or None))
        await asyncio.gather(*futures)


def build_app(settings: Settings, bootstrap: str) -> faust.App:
    runtime = StageRuntime(APP_SUFFIX, settings, bootstrap)
    table = runtime.table("ingest-dedupe", partitions=settings.partitions)
    ingest = Ingest(settings, runtime.topic(accepted_topic(settings)), runtime.topic(deadletter_topic(settings)), table,
                    runtime.topic(quality_topic(settings)))
    runtime.batch_stage("ingest", settings.source_topics, ingest, settings.ingest_batch_size,
                        settings.ingest_batch_within_s)
    runtime.forget_on_revoke(ingest.index)
    app = runtime.app
    app.carehub_ingest = ingest  # type: ignore[attr-defined]
    return app
