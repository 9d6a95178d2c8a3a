"""The indicators service: every timeline partition's counts in, published indicator values out.

It reads ``carehub.indicators.partials`` from the beginning on every start, with no consumer
group: its state is a function of that log (each partition's last snapshot and the changes
after it), so a restart rebuilds it and nothing needs a changelog. Every
``CAREHUB_INDICATORS_PUBLISH_INTERVAL_S`` it turns the counts into values
(services/indicators/aggregate.py) and writes those that changed to the compacted
``carehub.indicators`` topic (key ``indicator|unit|window``), and a signal to
``carehub.indicators.signals`` when a unit moves beyond its 99.8% funnel limits.

One instance per deployment is enough (it reads one small topic); a second one writes the same
values. Logs carry counts and unit codes only.

A restarted instance first reads what is published (the compacted values topic, to its end) and
publishes nothing until it has read the partials to their end: its first publication then
changes only what its predecessor left wrong, withdraws the values its predecessor published
that no longer exist, and signals no outlier twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from carehub.domain.definitions import Catalogue, load_catalogue
from carehub.domain.reference_values import load_reference_values
from carehub.indicator_report import read_values
from carehub.kafka.profile import client_profile
from carehub.kafka.read import at_end
from carehub.runtime.health import HEALTH
from carehub.settings import Settings
from carehub.topics import indicator_partials_topic, indicator_signals_topic, indicators_topic
from carehub.v1 import indicators_pb2 as ind

from . import metrics as m
from .aggregate import Aggregate

log = logging.getLogger(__name__)


def value_key(value: ind.IndicatorValue) -> bytes:
    return f"{value.indicator}|{value.unit}|{value.window}".encode()


def _without_time(value: ind.IndicatorValue) -> bytes:
    copy = ind.IndicatorValue()
    copy.CopyFrom(value)
    copy.ClearField("computed_at")
    return copy.SerializeToString(deterministic=True)


class Publisher:
    """Which values changed since the last publication, and which outliers are new."""

    def __init__(self) -> None:
        self.last: dict[bytes, bytes] = {}
        self.outliers: dict[bytes, str] = {}

    def seed(self, published: Iterable[ind.IndicatorValue]) -> None:
        """Start from what is already published (a previous instance's values), not from nothing."""
        for value in published:
            key = value_key(value)
            self.last[key] = _without_time(value)
            self.outliers[key] = value.outlier if value.outlier.endswith("_998") else ""

    def changes(self, values: Iterable[ind.IndicatorValue],
                ) -> tuple[list[ind.IndicatorValue], list[bytes], list[ind.IndicatorValue]]:
        """(changed values, keys no longer produced, new 99.8% outlier signals)."""
        changed, signals = [], []
        seen: set[bytes] = set()
        for value in values:
            key = value_key(value)
            seen.add(key)
            body = _without_time(value)
            if self.last.get(key) != body:
                self.last[key] = body
                changed.append(value)
            outlier = value.outlier if value.outlier.endswith("_998") else ""
            if outlier != self.outliers.get(key, ""):
                self.outliers[key] = outlier
                if outlier:
                    signals.append(value)
        gone = [k for k in self.last if k not in seen]
        for key in gone:
            del self.last[key]
            self.outliers.pop(key, None)
        return changed, gone, signals


class IndicatorService:
    def __init__(self, settings: Settings, bootstrap: str, catalogue: Catalogue | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.catalogue = catalogue or load_catalogue(settings.indicator_definitions)
        self.aggregate = Aggregate(self.catalogue, settings.indicators_attribution,
                                   references=load_reference_values(definitions=self.catalogue.directory))
        self.publisher = Publisher()
        self.dirty = False

    async def run(self, stop: asyncio.Event) -> None:
        profile = client_profile(self.settings)
        topic = indicator_partials_topic(self.settings)
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest",
            enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024,
            **profile.aiokafka_consumer())
        # Every reader of the values topic reads to the Fetch high watermark (carehub.kafka.read),
        # never to ListOffsets' end, so the profile's ordinary batching is safe here; the linger
        # gathers one publication's values into few requests.
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, max_request_size=2 * 1024 * 1024,
                                    **(profile.aiokafka_producer() | {"linger_ms": 20}))
        published = await self._published(stop)
        self.publisher.seed(published.values())
        self.dirty = bool(published)  # withdrawn at the first publication if nothing produces them now
        await consumer.start()
        await producer.start()
        log.info("indicators: %d definitions (digest %s), publishing every %.1fs",
                 len(self.catalogue.indicators), self.catalogue.digest, self.settings.indicators_publish_interval_s)
        next_publish = time.monotonic() + self.settings.indicators_publish_interval_s
        caught_up = False
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                caught_up = caught_up or (bool(consumer.assignment()) and await at_end(consumer, consumer.assignment()))
                HEALTH.judge([] if caught_up else ["reading the partials"])
                for records in batches.values():
                    for record in records:
                        self.aggregate.apply(ind.IndicatorPartials.FromString(record.value))
                        m.PARTIALS.inc()
                        self.dirty = True
                # never from half the partials: values would move backwards, and be withdrawn
                if self.dirty and caught_up and time.monotonic() >= next_publish:
                    await self.publish(producer)
                    next_publish = time.monotonic() + self.settings.indicators_publish_interval_s
            if self.dirty and caught_up:
                await self.publish(producer)
        finally:
            await consumer.stop()
            await producer.stop()

    async def _published(self, stop: asyncio.Event) -> dict[str, ind.IndicatorValue]:
        """The values topic as it stands, read to its end; retried until read or stopped."""
        while True:
            HEALTH.judge(["reading the published values"])
            try:
                values = await asyncio.to_thread(read_values, self.bootstrap, self.settings)
            except TimeoutError as exc:
                log.warning("indicators: could not read the published values yet (%s); retrying", exc)
                if stop.is_set():
                    return {}
                continue
            log.info("indicators: %d values published before this start", len(values))
            return values

    async def publish(self, producer: AIOKafkaProducer) -> int:
        started = time.perf_counter()
        self.dirty = False
        stale = self.aggregate.stale_partitions()
        m.STALE.set(len(stale))
        if stale:
            log.warning("indicators: partitions %s were counted with other definitions; their next snapshot "
                        "(a timeline worker restart) brings them in line", stale)
        values = list(self.aggregate.values(self.settings.suppression_max, time.time()))
        changed, gone, signals = self.publisher.changes(values)
        topic, signal_topic = indicators_topic(self.settings), indicator_signals_topic(self.settings)
        futures = [await producer.send(topic, key=value_key(v), value=v.SerializeToString()) for v in changed]
        futures += [await producer.send(topic, key=key, value=None) for key in gone]
        for value in signals:
            futures.append(await producer.send(signal_topic, key=value_key(value),
                                               value=ind.IndicatorSignal(value=value).SerializeToString()))
            m.SIGNALS.labels(value.indicator).inc()
        for future in futures:
            await future
        as_of = self.aggregate.as_of
        if as_of is not None:
            m.AS_OF.set(as_of * 86_400)
        m.VALUES.set(len(values))
        m.PUBLISHED.inc(len(changed))
        m.COMPUTE_SECONDS.observe(time.perf_counter() - started)
        log.info("indicators: %d values, %d changed, %d withdrawn, %d signals in %.2fs", len(values), len(changed),
                 len(gone), len(signals), time.perf_counter() - started)
        return len(changed)
