"""The reviews stage: a review pack for every selected emergency ACSC admission, kept current.

It reads ``carehub.timeline.events`` (``TimelineBatch`` records, partitioned by person id) and
keeps a ``ReviewPerson`` per person in the faust table ``reviews-persons``, co-partitioned with
it: the events of the last 455 days that a pack lists, every spell as its latest view shows it,
and who knows the person (carehub/domain/review/history.py). After each batch it recomputes the
packs of every person the batch touched (carehub/domain/review/packs.py) and writes those that
changed to ``carehub.review.packs`` (compacted, key = pack id), and a tombstone for a pack
withdrawn (coding that takes the admission out of the ACSC list, a cancellation, a direct-care
opt-out). Packs go out before the state that records them is written, so a crash can repeat
one, never lose one.

Merges: the timeline sends merge and un-merge events with the person's whole timeline after
them, and the person is rebuilt from it (history.py says what a merge keeps). Pack ids come from
the admission, not the person, so the survivor republishes the absorbed person's packs under the
same ids, with their recorded outcomes still attached; nothing is withdrawn for a merge.

Logs carry counts only, never a person id or a record id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any

import faust

from carehub.domain.alert_rules import load_rules
from carehub.domain.definitions import load_catalogue
from carehub.domain.review.history import take
from carehub.domain.review.packs import PackRules, changes, is_review_admission, pack_rules, packs_for, practice_record
from carehub.domain.review.taxonomy import load_taxonomy
from carehub.runtime.stage import Batch, StageRuntime
from carehub.settings import Settings
from carehub.topics import review_packs_topic, timeline_topic
from carehub.v1 import review_pb2 as rv
from carehub.v1 import timeline_pb2 as tl

from . import metrics as m

log = logging.getLogger(__name__)
APP_SUFFIX = "reviews"
TABLE = "reviews-persons"
RULE = "acsc_emergency_admission"


def load_pack_rules(settings: Settings) -> PackRules:
    """The rule, indicators and taxonomy packs are made with; a bad file stops the worker here, naming it."""
    book = load_rules(definitions=settings.indicator_definitions)
    [rule] = [r for r in book.rules if r.id == RULE]
    return pack_rules(rule, load_catalogue(settings.indicator_definitions), load_taxonomy(settings.review_taxonomy),
                      settings.review_sample_fraction)


class Reviews:
    def __init__(self, settings: Settings, persons: MutableMapping[str, Any], out: Any, rules: PackRules) -> None:
        self.settings = settings
        self.persons = persons
        self.out = out
        self.rules = rules
        self.source_topic = timeline_topic(settings)

    def load(self, person_id: str) -> rv.ReviewPerson:
        raw = self.persons.get(person_id)
        return rv.ReviewPerson.FromString(raw) if raw else rv.ReviewPerson()

    def apply_records(self, values: list[tuple[int, bytes]], now_ns: int,
                      ) -> tuple[list[tuple[str, rv.ReviewPack | None]], dict[int, dict[str, rv.ReviewPerson]]]:
        """(packs to send, in order; changed persons by source partition) for (partition, TimelineBatch)."""
        cache: dict[str, rv.ReviewPerson] = {}
        touched: dict[int, dict[str, None]] = {}
        for partition, value in values:
            for event in tl.TimelineBatch.FromString(value).events:
                person_id = event.linked.person_id
                person = cache.get(person_id)
                if person is None:
                    person = cache[person_id] = self.load(person_id)
                m.EVENTS.labels(take(person, event)).inc()
                touched.setdefault(partition, {})[person_id] = None
        sends: list[tuple[str, rv.ReviewPack | None]] = []
        writes: dict[int, dict[str, rv.ReviewPerson]] = {}
        for partition, people in sorted(touched.items()):
            for person_id in people:
                person = cache[person_id]
                packs = packs_for(self.rules, person, now_ns)
                if not packs and not practice_record(person) and any(
                        is_review_admission(self.rules.rule, s.view) for s in person.spells):
                    m.NO_PRACTICE_RECORD.inc()
                sends += changes(person, packs)
                writes.setdefault(partition, {})[person_id] = person
        return sends, writes

    async def process_batch(self, batch: Batch) -> None:
        started = time.perf_counter()
        values = [(record.partition, record.value) for record in batch]
        sends, writes = self.apply_records(values, time.time_ns())
        await self.send(sends)
        for partition, persons in writes.items():
            with batch.state_for(self.source_topic, partition):
                for person_id, person in persons.items():
                    self.persons[person_id] = person.SerializeToString()
        m.BATCH_SECONDS.observe(time.perf_counter() - started)
        if sends:
            log.info("reviews: %d packs written, %d withdrawn", sum(p is not None for _, p in sends),
                     sum(p is None for _, p in sends))

    async def send(self, sends: list[tuple[str, rv.ReviewPack | None]]) -> None:
        futures = []
        for pid, pack in sends:
            value = pack.SerializeToString() if pack is not None else None
            futures.append(await self.out.send(key=pid.encode(), value=value, partition=0))
            (m.WRITTEN if pack is not None else m.WITHDRAWN).inc()
        for future in futures:
            await future


def build_app(settings: Settings, bootstrap: str) -> faust.App:
    runtime = StageRuntime(APP_SUFFIX, settings, bootstrap)
    persons = runtime.table(TABLE, partitions=settings.partitions, value_type=bytes)
    rules = load_pack_rules(settings)
    log.info("reviews: rule %s, taxonomy %s (digest %s), sample fraction %g, %d-day window", rules.rule.definition,
             rules.taxonomy.label, rules.taxonomy.digest, rules.sample_fraction, rules.window_days)
    reviews = Reviews(settings, persons, runtime.topic(review_packs_topic(settings)), rules)
    runtime.batch_stage("reviews", [timeline_topic(settings)], reviews, settings.ingest_batch_size,
                        settings.ingest_batch_within_s)
    app = runtime.app
    app.carehub_reviews = reviews  # type: ignore[attr-defined]
    return app
