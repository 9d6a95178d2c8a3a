"""The identity worker: the linkage log in; events joined to hub persons out.

It reads ``carehub.ingest.accepted`` (one partition: one total order of decisions), and
for each event finds its person: the known (organisation, local id), else a Fellegi-Sunter
decision over keyed encodings (services/identity/linkage). Most events are of known records whose
demographics have not changed since they were last remembered (the same fingerprint): those take
a fast path of three lookups, without the resolver or the person's profile; a known record with
new demographics keeps its person and adds them to the person's profile and blocking keys. It writes LinkedBatch records
keyed by person to ``carehub.identity.linked``, near misses to ``carehub.identity.review``,
and each new (organisation, local id) -> person mapping to the compacted registry topic.

New person ids are surrogates computed from the event's position in the linkage log under
a key derived from the hub key: not from any identifier, unguessable without the key, and
the same when a crash makes the worker decide the same event again.

Known nicknames (services/identity/weights/nicknames.json) are read and keyed with the hub key
once, at start-up, so that a record calling Margaret "Peggy" still links (docs/linkage.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from typing import Any

import faust
from opentelemetry import trace

from carehub.domain.dedupe import DedupeIndex
from carehub.domain.pseudonymise import Pseudonymiser
from carehub.kafka.batching import batch_records, target_partition
from carehub.runtime.stage import Batch, StageRuntime
from carehub.settings import Settings
from carehub.telemetry import continue_trace, tracing_enabled
from carehub.topics import accepted_topic, linked_topic, registry_topic, review_topic
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import ingest_pb2 as ing

from . import metrics as m
from .linkage import (
    Decision,
    KeyedNicknames,
    Linker,
    Outcome,
    demographics_fingerprint,
    keyed_nicknames,
    load_model,
    load_nicknames,
)
from .linkage.model import DEFAULT_VERSION
from .linkage.nicknames import FILE_NAME as NICKNAMES_FILE
from .merges import merge, unmerge
from .table_store import TABLES, TableStore

log = logging.getLogger(__name__)
tracer = trace.get_tracer("carehub.identity")
APP_SUFFIX = "identity"
OUTCOMES = {
    Outcome.LINK: idn.LINK_OUTCOME_LINKED,
    Outcome.NEW: idn.LINK_OUTCOME_NEW_PERSON,
    Outcome.REVIEW: idn.LINK_OUTCOME_UNCERTAIN,
}
MAX_EVENTS_PER_RECORD = 1 << 16  # link_sequence = offset * this + position in the record


def service_nicknames(settings: Settings) -> KeyedNicknames:
    """The shipped nickname list keyed with the hub key, as ingest keys the records' given names.

    Read once, at start-up: a list that does not load stops the service with an error naming the
    file and the group at fault, rather than linking without nicknames.
    """
    try:
        groups = load_nicknames()
    except (OSError, ValueError) as exc:
        message = str(exc) if NICKNAMES_FILE in str(exc) else f"services/identity/weights/{NICKNAMES_FILE}: {exc}"
        raise SystemExit(f"carehub identity: nickname list not loaded: {message}") from exc
    keyed = keyed_nicknames(groups, Pseudonymiser(settings.pseudonym_key_bytes()))
    log.info("nicknames: %d groups, %d keyed pairs from %s", len(groups.groups), len(keyed), groups.source)
    return keyed


class Identity:
    def __init__(self, settings: Settings, tables: dict[str, Any], linked: Any, review: Any, registry: Any,
                 model_version: str = DEFAULT_VERSION, nicknames: KeyedNicknames | None = None) -> None:
        """``nicknames``: the keyed nickname list; by default the shipped one (``service_nicknames``)."""
        self.settings = settings
        self.store = TableStore({name: tables[name] for name in TABLES})
        if nicknames is None:
            nicknames = service_nicknames(settings)
        self.linker = Linker(load_model(model_version), self.store, nicknames=nicknames)
        self.index = DedupeIndex(tables["dedupe"], settings.dedupe_retention.total_seconds())
        self.linked, self.review, self.registry = linked, review, registry
        self._id_key = hmac.digest(settings.pseudonym_key_bytes(), b"carehub person id", "sha256")
        self.tracing = tracing_enabled()  # a span per event only when spans go somewhere

    def new_person_id(self, offset: int, position: int) -> str:
        digest = hmac.digest(self._id_key, f"{offset}:{position}".encode(), hashlib.sha256)
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def link_one(self, event: ing.AcceptedEvent, sequence: int, offset: int, position: int,
                 ) -> tuple[list[idn.LinkedEvent], idn.ReviewItem | None, list[idn.RegistryEntry]]:
        org, person = event.source_org, event.person
        store = self.store
        known = store.local_person(org, person.local_id)
        fingerprint = demographics_fingerprint(person)
        review: idn.ReviewItem | None = None
        registry: list[idn.RegistryEntry] = []
        if known is not None:
            person_id, outcome, score = known, idn.LINK_OUTCOME_KNOWN_RECORD, 0.0
            unchanged = store.fingerprint(org, person.local_id) == fingerprint
            m.KNOWN_RECORDS.labels("unchanged" if unchanged else "changed").inc()
        else:
            unchanged = False
            decision: Decision = self.linker.decide(org, person)
            if decision.outcome is Outcome.LINK and decision.person_id:
                person_id = decision.person_id
            else:
                person_id = self.new_person_id(offset, position)
            outcome, score = OUTCOMES[decision.outcome], decision.score
            m.DECISIONS.labels(decision.outcome.value).inc()
            if decision.outcome is Outcome.REVIEW:
                review = idn.ReviewItem(
                    review_id=f"{offset}:{position}", person_id=person_id,
                    candidate_person_id=decision.person_id or "", score=decision.score, reason=decision.reason,
                    source_org=org, local_id=person.local_id, event_id=event.event_id,
                )
                review.created_time.GetCurrentTime()
            registry.append(_entry(org, person.local_id, person_id))
        if not unchanged:  # the fast path: a known record as last remembered needs nothing more
            self.linker.remember(org, person, person_id)
            store.set_fingerprint(org, person.local_id, fingerprint)
        linked = idn.LinkedEvent(person_id=person_id, outcome=outcome, score=score, link_sequence=sequence)
        linked.event.CopyFrom(event)
        out = [linked]
        if event.event_type == ce.EVENT_TYPE_IDENTITY_MERGE:
            act = unmerge if event.merge.unmerge else merge
            result = act(store, org, person_id, event.merge.prior_local_id)
            registry += [_entry(*moved) for moved in result.registry]
            if result.merge is not None:
                m.MERGES.labels("unmerge" if result.merge.unmerge else "merge").inc()
                linked.merge.CopyFrom(result.merge)
                other = idn.LinkedEvent()
                other.CopyFrom(linked)
                other.person_id = result.merge.from_person_id
                out.append(other)
        return out, review, registry

    async def process_batch(self, batch: Batch) -> None:
        started = time.perf_counter()
        now_s = time.time()
        outgoing: dict[int, list[idn.LinkedEvent]] = {}
        reviews: list[idn.ReviewItem] = []
        registry: list[idn.RegistryEntry] = []
        new_keys: list[str] = []
        batch_keys: set[str] = set()
        tag = ""
        for record in batch:
            tag = f"{record.topic}:{record.partition}"
            for position, event in enumerate(ing.AcceptedBatch.FromString(record.value).events):
                key = f"{event.source_org}/{event.event_id}"
                if key in batch_keys or self.index.seen(tag, key):
                    m.DUPLICATES.inc()
                    continue
                batch_keys.add(key)
                new_keys.append(key)
                with (continue_trace(tracer, "identity", event.trace_context, record.topic, record.partition,
                                     event.event_id) if self.tracing else contextlib.nullcontext()):
                    linked_events, review, entries = self.link_one(
                        event, record.offset * MAX_EVENTS_PER_RECORD + position, record.offset, position
                    )
                for linked in linked_events:
                    partition = target_partition(linked.person_id, self.settings.partitions)
                    outgoing.setdefault(partition, []).append(linked)
                if review is not None:
                    reviews.append(review)
                registry += entries
        await self._send(outgoing, reviews, registry)
        if batch.records:
            last = batch.records[-1]  # one source partition: the linkage log
            with batch.state_for(last.topic, last.partition):
                m.TABLE_WRITES.inc(self.store.flush())
                m.FULL_BLOCKS.inc(self.store.full_blocks)
                self.store.full_blocks = 0
                if new_keys:
                    self.index.record(tag, batch.records[0].offset, new_keys, now_s)
                self.index.expire(tag, now_s)
        m.LINKED.inc(sum(len(v) for v in outgoing.values()))
        m.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _send(self, outgoing: dict[int, list[idn.LinkedEvent]], reviews: list[idn.ReviewItem],
                    registry: list[idn.RegistryEntry]) -> None:
        futures = []
        for partition, linked in sorted(outgoing.items()):
            for chunk in batch_records(linked, self.settings.ingest_max_batch_bytes):
                futures.append(await self.linked.send(value=chunk, partition=partition))
        for item in reviews:
            futures.append(await self.review.send(key=item.review_id.encode(), value=item.SerializeToString()))
        for entry in registry:
            key = f"{entry.source_org}/{entry.local_id}".encode()
            futures.append(await self.registry.send(key=key, value=entry.SerializeToString()))
        for future in futures:
            await future


def _entry(org: str, local_id: str, person_id: str) -> idn.RegistryEntry:
    entry = idn.RegistryEntry(source_org=org, local_id=local_id, person_id=person_id)
    entry.updated_time.GetCurrentTime()
    return entry


def build_app(settings: Settings, bootstrap: str) -> faust.App:
    nicknames = service_nicknames(settings)  # a bad list stops the worker here, before any table or topic
    runtime = StageRuntime(APP_SUFFIX, settings, bootstrap)
    tables = {
        "local": runtime.table("identity-local", partitions=1, value_type=str),
        "blocks": runtime.table("identity-blocks", partitions=1),
        "profiles": runtime.table("identity-profiles", partitions=1, value_type=bytes),
        "members": runtime.table("identity-members", partitions=1),
        "redirects": runtime.table("identity-redirects", partitions=1, value_type=str),
        "merges": runtime.table("identity-merges", partitions=1),
        "fingerprints": runtime.table("identity-fingerprints", partitions=1, value_type=bytes),
        "dedupe": runtime.table("identity-dedupe", partitions=1),
    }
    identity = Identity(settings, tables, runtime.topic(linked_topic(settings)),
                        runtime.topic(review_topic(settings)), runtime.topic(registry_topic(settings)),
                        nicknames=nicknames)
    runtime.batch_stage("identity", [accepted_topic(settings)], identity, settings.ingest_batch_size,
                        settings.ingest_batch_within_s)
    runtime.forget_on_revoke(identity.index)
    app = runtime.app

    app.carehub_identity = identity  # type: ignore[attr-defined]
    return app
