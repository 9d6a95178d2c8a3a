"""The case-list service: tier cut-offs over everyone's scores, and each organisation's case-finding list.

It reads ``carehub.risk.assessments`` (every partition) from the beginning on every start, with
no consumer group: the topic is compacted by person, so reading it whole gives everyone's
latest assessment, and a restart rebuilds everything from it. Only this service sees the whole
population, so it is the one that computes the tier cut-offs (carehub/domain/risk/tiers.py),
every ``CAREHUB_RISK_CUTOFFS_INTERVAL_S`` (and at once when the population has changed by more
than a tenth, as at a start or a bulk load), over the scores of people alive and without a
planning opt-out, and writes them to ``carehub.risk.cutoffs`` (compacted, key = model id) for
the population stage to place each new score against.

Every ``CAREHUB_CASELIST_PUBLISH_INTERVAL_S`` it places every score against the current
cut-offs and builds the lists (carehub/domain/caselists.py): per registered practice and per
community or social-care team, the people in the top ``CAREHUB_CASELIST_TIERS`` tiers, in the
organisation's own record ids. Lists that changed go to ``carehub.caselists`` (compacted, key =
organisation); a list that empties is written once, empty. The partner gateway serves them
(GetCaseList, WatchCaseList) and ``carehub caselist`` prints them.

When each person entered each list is part of the published lists; a restarted instance reads
the lists first and keeps those moments, and publishes nothing until it has read the
assessments to their end (never lists from half the population).

One instance per deployment (it holds everyone's latest assessment in memory, about 3 KB a
person as measured with the model's eight factors); a second one writes the same lists. Logs
carry counts and organisation codes only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from carehub.caselist_report import read_lists
from carehub.domain.caselists import CaseBook, without_time
from carehub.domain.risk import RiskModel, load_model
from carehub.domain.risk.records import cutoffs_record
from carehub.kafka.profile import client_profile
from carehub.kafka.read import at_end
from carehub.runtime.health import HEALTH
from carehub.settings import Settings
from carehub.topics import caselists_topic, risk_assessments_topic, risk_cutoffs_topic
from carehub.v1 import risk_pb2 as rk

from . import metrics as m

log = logging.getLogger(__name__)


class CaseListService:
    def __init__(self, settings: Settings, bootstrap: str, model: RiskModel | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.model = model or load_model(settings.risk_definitions)  # a bad model file stops it here
        self.book = CaseBook(self.model, settings.caselist_tiers, settings.caselist_involved_within_days,
                             settings.caselist_new_within_days)
        self.last: dict[str, bytes] = {}  # organisation -> its last published list (without times); b"": empty
        self.last_cutoffs = b""
        self.cutoffs_population: int | None = None  # people held when the cut-offs were last computed
        self.dirty = False

    async def run(self, stop: asyncio.Event) -> None:
        profile = client_profile(self.settings)
        consumer = AIOKafkaConsumer(
            risk_assessments_topic(self.settings), bootstrap_servers=self.bootstrap, group_id=None,
            auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024, **profile.aiokafka_consumer())
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, max_request_size=2 * 1024 * 1024,
                                    **(profile.aiokafka_producer() | {"linger_ms": 20}))
        self.seed(await self._published(stop))
        await consumer.start()
        await producer.start()
        log.info("caselists: risk model %s (digest %s), tiers %s listed; lists every %.1fs, cut-offs every %.1fs",
                 self.model.label, self.model.digest, ", ".join(self.book.tiers),
                 self.settings.caselist_publish_interval_s, self.settings.risk_cutoffs_interval_s)
        caught_up = False
        next_lists = next_cutoffs = time.monotonic()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                for records in batches.values():
                    for record in records:
                        if record.key is None:
                            continue
                        self.book.put(record.key.decode(),
                                      rk.RiskAssessment.FromString(record.value) if record.value else None)
                        self.dirty = True
                caught_up = caught_up or (bool(consumer.assignment()) and await at_end(consumer,
                                                                                     consumer.assignment()))
                HEALTH.judge([] if caught_up else ["reading the assessments"])
                m.PEOPLE.set(len(self.book.people))
                m.OTHER_MODEL.set(self.book.other_model)
                if not caught_up:  # never from half the population
                    continue
                now = time.monotonic()
                if now >= next_cutoffs or self.grown():
                    await self.publish_cutoffs(producer)
                    next_cutoffs = now + self.settings.risk_cutoffs_interval_s
                flip = self.book.next_flip_ns
                if flip is not None and time.time_ns() >= flip:  # someone stops being new this week
                    self.dirty = True
                if self.dirty and now >= next_lists:
                    await self.publish_lists(producer)
                    next_lists = now + self.settings.caselist_publish_interval_s
        finally:
            await consumer.stop()
            await producer.stop()

    def grown(self) -> bool:
        """Has the population changed by more than a tenth since the last cut-offs (a start, a bulk load)?

        Then the cut-offs are recomputed at once rather than at the next interval: cut-offs over
        an empty or a much smaller population would place nearly everyone in the top tiers, or
        nobody.
        """
        before, now = self.cutoffs_population, len(self.book.people)
        return before is None or abs(now - before) > max(10, before // 10)

    def seed(self, published: dict[str, rk.CaseList]) -> None:
        """Start from the lists already published: when each person entered each, and what to compare with."""
        self.book.seed(published.values())
        self.last = {org: without_time(case_list) if case_list.entries else b""
                     for org, case_list in published.items()}
        self.dirty = bool(published)  # emptied at the first publication if nobody is on them now
        log.info("caselists: %d lists published before this start", len(published))

    async def _published(self, stop: asyncio.Event) -> dict[str, rk.CaseList]:
        """The lists topic as it stands, read to its end; retried until read or stopped."""
        while True:
            HEALTH.judge(["reading the published lists"])
            try:
                return await asyncio.to_thread(read_lists, self.bootstrap, self.settings)
            except TimeoutError as exc:
                log.warning("caselists: could not read the published lists yet (%s); retrying", exc)
                if stop.is_set():
                    return {}

    async def publish_cutoffs(self, producer: AIOKafkaProducer) -> rk.RiskCutoffs | None:
        """Recompute the cut-offs over everyone's scores; write them when they changed."""
        started = time.perf_counter()
        self.cutoffs_population = len(self.book.people)
        cutoffs = self.book.recompute_cutoffs()
        record = cutoffs_record(cutoffs, self.book.cutoffs_as_of, datetime.now(UTC))
        body = _cutoffs_body(record)
        m.CUTOFFS_SECONDS.observe(time.perf_counter() - started)
        self.dirty = True  # the lists are placed against them
        if body == self.last_cutoffs:
            return None
        await producer.send_and_wait(risk_cutoffs_topic(self.settings), key=self.model.id.encode(),
                                     value=record.SerializeToString())
        self.last_cutoffs = body
        m.CUTOFFS.inc()
        for bound in record.bounds:
            if not bound.rest:
                m.CUTOFF_SCORE.labels(bound.tier).set(bound.above)
        log.info("caselists: tier cut-offs over %d people: %s", record.population,
                 ", ".join(f"{b.tier} > {b.above:g}" for b in record.bounds if not b.rest))
        return record

    async def publish_lists(self, producer: AIOKafkaProducer) -> int:
        """Build every list; write those that changed, and once, empty, those nobody is on any more."""
        started = time.perf_counter()
        self.dirty = False
        computed_at = datetime.now(UTC)
        lists = self.book.lists(computed_at)
        topic = caselists_topic(self.settings)
        futures = []
        for org, case_list in sorted(lists.items()):
            body = without_time(case_list)
            if self.last.get(org) != body:
                self.last[org] = body
                futures.append(await producer.send(topic, key=org.encode(), value=case_list.SerializeToString()))
        cutoffs = self.book.cutoffs_record(computed_at)
        for org in sorted(set(self.last) - set(lists)):
            if self.last[org] == b"":
                continue
            self.last[org] = b""
            empty = self.book.case_list(org, [], cutoffs, self.book.clock_ns, computed_at)
            futures.append(await producer.send(topic, key=org.encode(), value=empty.SerializeToString()))
        for future in futures:
            await future
        listed = sum(len(c.entries) for c in lists.values())
        m.LISTS.set(len(lists))
        m.LISTED.set(listed)
        m.PUBLISHED.inc(len(futures))
        m.COMPUTE_SECONDS.observe(time.perf_counter() - started)
        if futures:
            log.info("caselists: %d lists with %d entries; %d written in %.2fs", len(lists), listed, len(futures),
                     time.perf_counter() - started)
        return len(futures)


def _cutoffs_body(record: rk.RiskCutoffs) -> bytes:
    copy = rk.RiskCutoffs()
    copy.CopyFrom(record)
    copy.ClearField("computed_at")
    copy.ClearField("as_of")
    return copy.SerializeToString(deterministic=True)
