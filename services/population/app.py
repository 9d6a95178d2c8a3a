"""The population stage: every person's risk assessment, kept current as timeline events arrive.

It reads ``carehub.timeline.events`` (``TimelineBatch`` records, partitioned by person id) and
keeps a ``PopulationPerson`` per person in the faust table ``population-persons``,
co-partitioned with it: the risk factor state (carehub/domain/risk/state.py), advanced event by
event, and who knows the person (registered practice, each organisation's own record ids and
last involvement, care plans, consent) from the latest timeline view
(carehub/domain/risk/person.py). After each batch it assesses every person the batch touched
and writes those whose assessment changed (score, tier, segment, factors, addressees) to
``carehub.risk.assessments``, compacted and keyed by person id, on the person's partition; a
person merged into another gets a tombstone. Assessments go out before the state that records
them is written, so a crash can repeat one, never lose one.

**Merges.** The timeline topic carries each event's view of the person, not the whole
timeline, and ``advance`` cannot follow a merge. The timeline sends its merge and un-merge
events with the person's whole timeline after them, and the state is recomputed from that
(carehub/domain/risk/person.py says why there is no other way for a consumer of the topic).

**As of.** The windows end at the end of the newest event day this partition has seen (event
time, like the alert stage's follow-up clocks and the indicators' as-of day), so the same
events give the same assessments. As that clock moves on, the windows roll: each person's next
change without a new event (an admission leaving its 12 months, a birthday:
``next_change``) is indexed per partition, the index rebuilt from the table after an
assignment, and people whose moment has come are reassessed in their partition's next batch.
A partition that receives nothing keeps its clock (as the alert stage's follow-ups do).

**Tiers** are a statement about the whole population, which no worker of this stage sees: the
case-list service (services/caselists) computes the cut-offs over everyone's scores and
publishes them to ``carehub.risk.cutoffs``. Every ``CAREHUB_RISK_CUTOFFS_INTERVAL_S`` this
stage reads the latest; each assessment carries its tier against them, and when they change,
every person of this worker's partitions whose tier moved is published again.

Logs carry counts only, never a person id or a record id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from carehub.caselist_report import read_cutoffs
from carehub.domain.risk import FactorState, RiskModel, load_model
from carehub.domain.risk.factors import as_ns, next_change
from carehub.domain.risk.person import assessment, changed, keep, made_with, note_published, placed, take
from carehub.domain.risk.records import state_of
from carehub.domain.timeline import DAY_NS, ns
from carehub.kafka.batching import target_partition
from carehub.kafka.read import ReadTimeout
from carehub.runtime.stage import Batch, StageRuntime
from carehub.settings import Settings
from carehub.topics import risk_assessments_topic, timeline_topic
from carehub.v1 import risk_pb2 as rk
from carehub.v1 import timeline_pb2 as tl

from . import metrics as m

log = logging.getLogger(__name__)
APP_SUFFIX = "population"
TABLE = "population-persons"


def day_end(clock_ns: int) -> datetime:
    """The end of the UTC day of ``clock_ns``: the as-of moment of a partition whose newest event is then."""
    return datetime.fromtimestamp((clock_ns // DAY_NS + 1) * 86_400, UTC)


@dataclass(slots=True)
class Indexed:
    """What the stage remembers in memory of each person of its partitions."""

    due_ns: int | None  # the as-of from which the assessment may change with no event (None: never)
    score: float
    tier: str
    published: bool


class Population:
    def __init__(self, settings: Settings, persons: MutableMapping[str, Any], out: Any, model: RiskModel,
                 bootstrap: str | None = None) -> None:
        self.settings = settings
        self.persons = persons
        self.out = out
        self.model = model
        self.bootstrap = bootstrap
        self.source_topic = timeline_topic(settings)
        self.clock: dict[int, int] = {}  # partition -> newest event time seen (ns)
        self.index: dict[int, dict[str, Indexed]] = {}  # partition -> person -> what is remembered
        self.cutoffs: rk.RiskCutoffs | None = None
        self.lock = asyncio.Lock()  # a batch and a re-placing after new cut-offs never interleave

    def partition_of(self, person_id: str) -> int:
        return target_partition(person_id, self.settings.partitions)

    def forget_partitions(self, topic_partitions: set[str]) -> None:
        for tp in topic_partitions:
            p = int(tp.rsplit(":", 1)[1])
            self.index.pop(p, None)
            self.clock.pop(p, None)

    def load(self, person_id: str) -> rk.PopulationPerson:
        raw = self.persons.get(person_id)
        return rk.PopulationPerson.FromString(raw) if raw else rk.PopulationPerson()

    def as_of(self, partition: int) -> datetime | None:
        clock = self.clock.get(partition)
        return day_end(clock) if clock is not None else None

    # -- the in-memory index ----------------------------------------------------------------
    def _indexed(self, person: rk.PopulationPerson, as_of: datetime | None, state: FactorState | None = None,
                 ) -> Indexed:
        due = None
        if as_of is not None and person.published and not person.merged_into:
            state = state if state is not None else state_of(person.factors)
            if not state.deceased:
                moment = next_change(state, as_of, self.model)
                due = as_ns(moment) if moment is not None else None
        return Indexed(due, person.score, person.tier, bool(person.published))

    def _index(self, partitions: set[int]) -> None:
        """Index the partitions not seen since their assignment, from the table (recovered by then)."""
        missing = {p for p in partitions if p not in self.index}
        if not missing:
            return
        started = time.perf_counter()
        for p in missing:
            self.index[p] = {}
        for person_id, raw in self.persons.items():
            p = self.partition_of(person_id)
            if p in missing and raw:
                person = rk.PopulationPerson.FromString(raw)
                as_of = datetime.fromtimestamp(person.as_of_ns / 1e9, UTC) if person.as_of_ns else None
                self.index[p][person_id] = self._indexed(person, as_of)
                if person.as_of_ns:  # the clock starts where the last assessments left it, never earlier
                    self.clock[p] = max(self.clock.get(p, 0), person.as_of_ns - 1)
        m.PERSONS.set(sum(len(i) for i in self.index.values()))
        log.info("population: partitions %s indexed (%d persons) in %.2fs", sorted(missing),
                 sum(len(self.index[p]) for p in missing), time.perf_counter() - started)

    # -- one batch --------------------------------------------------------------------------
    def apply_records(self, values: list[tuple[int, bytes]], now_ns: int,
                      ) -> tuple[list[tuple[str, rk.RiskAssessment | None]], dict[int, dict[str, rk.PopulationPerson]]]:
        """(assessments to send, in order; changed persons by source partition) for (partition, TimelineBatch)."""
        partitions = {p for p, _ in values}
        self._index(partitions)
        cache: dict[str, tuple[rk.PopulationPerson, FactorState]] = {}
        touched: dict[int, dict[str, None]] = {p: {} for p in partitions}  # in order of arrival
        took: set[str] = set()

        def person_of(person_id: str) -> tuple[rk.PopulationPerson, FactorState]:
            got = cache.get(person_id)
            if got is None:
                person = self.load(person_id)
                got = cache[person_id] = (person, state_of(person.factors))
            return got

        for partition, value in values:
            for event in tl.TimelineBatch.FromString(value).events:
                person_id = event.linked.person_id
                person, state = person_of(person_id)
                outcome, state = take(person, event, state)
                cache[person_id] = (person, state)
                m.EVENTS.labels(outcome).inc()
                took.add(person_id)
                touched[partition][person_id] = None
                t = ns(event.linked.event.event_time)
                self.clock[partition] = max(self.clock.get(partition, t), t)
        sends: list[tuple[str, rk.RiskAssessment | None]] = []
        writes: dict[int, dict[str, rk.PopulationPerson]] = {}
        for partition in sorted(partitions):
            as_of = self.as_of(partition)
            if as_of is None:
                continue
            index = self.index.setdefault(partition, {})
            limit = as_ns(as_of)
            due = [pid for pid, ix in index.items() if ix.due_ns is not None and ix.due_ns <= limit
                   and pid not in touched[partition]]
            m.ASSESSED.labels("event").inc(len(touched[partition]))
            m.ASSESSED.labels("window").inc(len(due))
            for person_id in [*touched[partition], *due]:
                person, state = person_of(person_id)
                record = assessment(person_id, person, as_of, self.model, self.cutoffs, state)
                if changed(person, record):
                    if record is not None:
                        record.assessed_at.FromNanoseconds(now_ns)
                    sends.append((person_id, record))
                    note_published(person, record)
                    writes.setdefault(partition, {})[person_id] = keep(person, state)
                elif person_id in took:
                    writes.setdefault(partition, {})[person_id] = keep(person, state)
                index[person_id] = self._indexed(person, as_of, state)
        m.PERSONS.set(sum(len(i) for i in self.index.values()))
        return sends, writes

    async def process_batch(self, batch: Batch) -> None:
        started = time.perf_counter()
        async with self.lock:
            values = [(record.partition, record.value) for record in batch]
            sends, writes = self.apply_records(values, time.time_ns())
            await self.send(sends)
            for partition, persons in writes.items():
                with batch.state_for(self.source_topic, partition):
                    for person_id, person in persons.items():
                        self.persons[person_id] = person.SerializeToString()
        m.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def send(self, sends: list[tuple[str, rk.RiskAssessment | None]]) -> None:
        futures = []
        for person_id, record in sends:
            value = record.SerializeToString() if record is not None else None
            futures.append(await self.out.send(key=person_id.encode(), value=value,
                                               partition=self.partition_of(person_id)))
            m.PUBLISHED.labels("assessment" if record is not None else "tombstone").inc()
        for future in futures:
            await future

    # -- tier cut-offs ----------------------------------------------------------------------
    async def refresh_cutoffs(self, runtime: StageRuntime) -> None:
        """Read the latest cut-offs; if they changed, publish again everyone whose tier moved."""
        if self.bootstrap is None or not runtime.recovered():
            return
        try:
            latest = await asyncio.to_thread(read_cutoffs, self.bootstrap, self.settings, self.model.id, 30.0)
        except (ReadTimeout, LookupError) as exc:
            log.warning("population: could not read the tier cut-offs (%s); keeping the last ones", exc)
            return
        if latest is None or (self.cutoffs is not None and latest.SerializeToString(deterministic=True)
                              == self.cutoffs.SerializeToString(deterministic=True)):
            return
        if not made_with(latest, self.model):
            log.warning("population: the published cut-offs were made with %s (digest %s), not this model's %s "
                        "(digest %s); ignored", latest.model, latest.digest, self.model.label, self.model.digest)
            return
        async with self.lock:
            self.cutoffs = latest
            m.CUTOFFS_AT.set(latest.computed_at.ToNanoseconds() / 1e9)
            moved = await self.replace_tiers(runtime.assigned(self.source_topic))
        log.info("population: new tier cut-offs over %d people; %d assessments published again with their new tier",
                 latest.population, moved)

    async def replace_tiers(self, partitions: set[int]) -> int:
        """Publish again each person of ``partitions`` whose tier the current cut-offs change.

        Outside a batch the table cannot be written (faust), so only the index notes the new
        tier; the person's next batch writes it (and may publish once more, harmlessly).
        """
        self._index(partitions)
        sends: list[tuple[str, rk.RiskAssessment | None]] = []
        now = time.time_ns()
        for partition in sorted(partitions):
            for person_id, ix in self.index.get(partition, {}).items():
                if not ix.published or placed(ix.score, self.model, self.cutoffs) == ix.tier:
                    continue
                person = self.load(person_id)
                as_of = self.as_of(partition) or datetime.fromtimestamp(person.as_of_ns / 1e9, UTC)
                record = assessment(person_id, person, as_of, self.model, self.cutoffs)
                if record is None:
                    continue
                record.assessed_at.FromNanoseconds(now)
                sends.append((person_id, record))
                ix.score, ix.tier = record.score, record.tier
        await self.send(sends)
        m.ASSESSED.labels("tier").inc(len(sends))
        return len(sends)


def build_app(settings: Settings, bootstrap: str) -> faust.App:
    runtime = StageRuntime(APP_SUFFIX, settings, bootstrap)
    persons = runtime.table(TABLE, partitions=settings.partitions, value_type=bytes)
    model = load_model(settings.risk_definitions)  # a bad model file stops the worker here, naming it
    log.info("population: risk model %s (digest %s)", model.label, model.digest)
    population = Population(settings, persons, runtime.topic(risk_assessments_topic(settings)), model, bootstrap)
    runtime.batch_stage("population", [timeline_topic(settings)], population, settings.ingest_batch_size,
                        settings.ingest_batch_within_s)
    runtime.forget_on_revoke(population)

    async def refresh_cutoffs() -> None:
        await population.refresh_cutoffs(runtime)

    runtime.every(settings.risk_cutoffs_interval_s, refresh_cutoffs)
    app = runtime.app
    app.carehub_population = population  # type: ignore[attr-defined]
    return app
