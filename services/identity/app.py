"""The identity worker: the linkage log in; events joined to hub persons out.

It reads ``carehub.ingest.accepted`` (one partition: one total order of decisions), and
for each event finds its person: the known (organisation, local id), else a Fellegi-Sunter
decision over keyed encodings (services/identity/linkage). Most events are of known records whose
demographics have not changed since they were last remembered (the same fingerprint): those take
a fast path of three lookups, without the resolver or the person's profile; a known record with
new demographics keeps its person and adds them to the person's profile and blocking keys. It writes LinkedBatch records
keyed by person to ``carehub.identity.linked``, near misses to ``carehub.identity.review``,
and each new (organisation, local id) -> person mapping to the compacted registry topic.

A reviewer's decision on a review item (``AcceptedEvent.review_decision``, sent by ``carehub review
link / separate`` or the gateway) comes through the same log, so it is applied in order with every
event and a replay gives the same result. LINK joins the record's person into the candidate as an
A40 merge does; SEPARATE changes no person. The first decision on an item holds; the item, decided
(or with a later decision refused), is written back to the review topic under its id.

New person ids are surrogates computed from the event's position in the linkage log under
a key derived from the hub key: not from any identifier, unguessable without the key, and
the same when a crash makes the worker decide the same event again.

After a crash: a batch's links are on the broker before any of its table writes is sent, and the
tables go to one changelog each, so a worker killed while writing them leaves some tables with the
batch's writes and some without (a merge's redirect without its moved records, a profile without
its blocking keys). Its successor starts from the committed offset and, before its first batch,
reads how far the links got (the newest record of each ``identity.linked`` partition): every event
up to there is decided again in repair mode, which writes again what a decision needs and may find
missing (no fast path; blocking keys indexed even for a variant the profile holds; a merge found
done, or half done, completed from its record; an un-merge finished from its journal; a record whose
person was merged away taken to the survivor). A batch's merge records and un-merge journals are on
the broker before its other table writes are sent (services/identity/merges.py). The
events the uncommitted batches recorded as seen are decided again too, not skipped as repeats, since
their state may not have reached the changelogs. Decisions are a function of the tables and the
event, so an event decided again gets the person it got before (tests/unit/test_identity_crash.py
kills the tables mid-write at random and checks it).

Known nicknames (services/identity/weights/nicknames.json) are read and keyed with the hub key
once, at start-up, so that a record calling Margaret "Peggy" still links (docs/linkage.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from opentelemetry import trace

from carehub.domain.dedupe import DedupeIndex
from carehub.domain.pseudonymise import Pseudonymiser
from carehub.kafka.batching import batch_records, target_partition
from carehub.kafka.profile import client_profile
from carehub.kafka.read import last_records
from carehub.runtime.stage import Batch, StageRecord, StageRuntime
from carehub.settings import Settings
from carehub.telemetry import continue_trace, tracing_enabled
from carehub.topics import accepted_topic, audit_topic, linked_topic, registry_topic, review_topic
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import identity_review_pb2 as rvw
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
from .merges import complete, merge, unmerge
from .review import field_comparisons, refuse, with_item
from .table_store import PROFILE_CODEC, TABLES, TableStore

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


def decided_until(bootstrap: str, settings: Settings) -> Callable[[], int]:
    """How far a previous worker's links got: the newest linkage-log offset on ``identity.linked`` (-1: none)."""

    def read() -> int:
        newest = -1
        try:
            last = last_records(bootstrap, linked_topic(settings), profile=client_profile(settings))
        except LookupError:  # no linked topic yet: nothing was linked
            return newest
        for record in last:
            for linked in idn.LinkedBatch.FromString(record.value or b"").events:
                newest = max(newest, linked.link_sequence // MAX_EVENTS_PER_RECORD)
        return newest

    return read


@dataclass
class Decided:
    """What one batch's decisions give: the links by target partition and what goes with them."""

    outgoing: dict[int, list[idn.LinkedEvent]] = field(default_factory=dict)
    reviews: list[idn.ReviewItem] = field(default_factory=list)
    decided: list[rvw.ReviewDecision] = field(default_factory=list)  # reviewers' decisions applied or refused
    registry: list[idn.RegistryEntry] = field(default_factory=list)
    new_keys: list[str] = field(default_factory=list)
    tag: str = ""


class Identity:
    def __init__(self, settings: Settings, tables: dict[str, Any], linked: Any, review: Any, registry: Any,
                 model_version: str = DEFAULT_VERSION, nicknames: KeyedNicknames | None = None,
                 audit: Any = None, decided_until: Callable[[], int] | None = None,
                 write_through: Callable[[dict[str, Any], int], Awaitable[None]] | None = None) -> None:
        """``nicknames``: the keyed nickname list; by default the shipped one (``service_nicknames``).
        ``audit``: the audit topic, where each review decision applied or refused is recorded.
        ``decided_until``: reads how far a previous worker's links got (see the module doc); without
        it nothing is decided again in repair mode. ``write_through``: puts merges-table rows on the
        broker and waits until they, and all sent before them, are there
        (``StageRuntime.write_through``); without it the journal is written with the other rows."""
        self.settings = settings
        self.store = TableStore({name: tables[name] for name in TABLES})
        if nicknames is None:
            nicknames = service_nicknames(settings)
        self.model = load_model(model_version)
        self.linker = Linker(self.model, self.store, nicknames=nicknames)
        # review items as raised, then as decided: review id -> ReviewItem bytes (written once per batch)
        self.reviews = tables["reviews"]
        self._reviews_dirty: dict[str, bytes] = {}
        self.index = DedupeIndex(tables["dedupe"], settings.dedupe_retention.total_seconds())
        self.linked, self.review, self.registry, self.audit = linked, review, registry, audit
        self._id_key = hmac.digest(settings.pseudonym_key_bytes(), b"carehub person id", "sha256")
        self._decided_until = decided_until
        self._write_through = write_through
        self.repair_until: int | None = None  # offsets up to here are decided in repair mode; None: not read yet
        self.tracing = tracing_enabled()  # a span per event only when spans go somewhere

    def new_person_id(self, offset: int, position: int) -> str:
        digest = hmac.digest(self._id_key, f"{offset}:{position}".encode(), hashlib.sha256)
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def repairing(self, offset: int) -> bool:
        """Whether the event at ``offset`` of the linkage log is decided again after a crash (``begin``)."""
        return self.repair_until is not None and offset <= self.repair_until

    def link_one(self, event: ing.AcceptedEvent, sequence: int, offset: int, position: int,
                 ) -> tuple[list[idn.LinkedEvent], idn.ReviewItem | None, list[idn.RegistryEntry]]:
        org, person = event.source_org, event.person
        store = self.store
        known = store.local_person(org, person.local_id)
        fingerprint = demographics_fingerprint(person)
        review: idn.ReviewItem | None = None
        registry: list[idn.RegistryEntry] = []
        repair = self.repairing(offset)
        if known is not None:
            # resolved: a crash may have left the record's row behind its person's merge
            person_id, outcome, score = store.resolve(known), idn.LINK_OUTCOME_KNOWN_RECORD, 0.0
            unchanged = not repair and person_id == known and store.fingerprint(org, person.local_id) == fingerprint
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
                if decision.person_id:
                    review.candidate_records.extend(
                        idn.LocalRecord(source_org=o, local_id=local)
                        for o, _, local in (r.partition("/") for r in self.store.members(decision.person_id)))
                if decision.levels is not None:
                    review.fields.extend(field_comparisons(self.model, decision.levels))
            registry.append(_entry(org, person.local_id, person_id))
        if not unchanged:  # the fast path: a known record as last remembered needs nothing more
            self.linker.remember(org, person, person_id, repair=repair)
            store.set_fingerprint(org, person.local_id, fingerprint)
        linked = idn.LinkedEvent(person_id=person_id, outcome=outcome, score=score, link_sequence=sequence)
        linked.event.CopyFrom(event)
        out = [linked]
        if event.event_type == ce.EVENT_TYPE_IDENTITY_MERGE:
            if event.merge.unmerge:
                result = unmerge(store, org, person_id, event.merge.prior_local_id, sequence, repair=repair)
            else:
                result = merge(store, org, person_id, event.merge.prior_local_id, repair=repair)
            registry += [_entry(*moved) for moved in result.registry]
            if result.merge is not None:
                m.MERGES.labels("unmerge" if result.merge.unmerge else "merge").inc()
                linked.merge.CopyFrom(result.merge)
                other = idn.LinkedEvent()
                other.CopyFrom(linked)
                other.person_id = result.merge.from_person_id
                out.append(other)
        return out, review, registry

    def review_item(self, review_id: str) -> idn.ReviewItem | None:
        raw = self._reviews_dirty.get(review_id) or self.reviews.get(review_id)
        return idn.ReviewItem.FromString(raw) if raw else None

    def keep_review(self, item: idn.ReviewItem) -> None:
        self._reviews_dirty[item.review_id] = item.SerializeToString()

    def decide_review(self, event: ing.AcceptedEvent, sequence: int,
                      ) -> tuple[list[idn.LinkedEvent], idn.ReviewItem | None, list[idn.RegistryEntry]]:
        """Apply a reviewer's decision: the linked events of a merge (for LINK), the item as now decided.

        The item is None for a decision this item holds already (decided again after a crash): its
        merge is completed where a crash left it half written, and nothing is sent or audited twice.
        """
        decision = rvw.ReviewDecision()
        decision.CopyFrom(event.review_decision)
        decision.applied_time.GetCurrentTime()
        item = self.review_item(decision.review_id)
        if item is not None and item.decision.decision_id and item.decision.decision_id == decision.decision_id:
            held = item.decision
            if held.result == rvw.REVIEW_RESULT_LINKED:
                complete(self.store, f"{held.source_org}/{held.local_id}", self.store.resolve(held.into_person_id))
            return [], None, []
        if item is None or item.HasField("decision"):
            m.REVIEW_DECISIONS.labels("refused").inc()
            return [], refuse(item, decision), []
        with_item(decision, item)
        out: list[idn.LinkedEvent] = []
        registry: list[idn.RegistryEntry] = []
        if decision.verdict == rvw.REVIEW_VERDICT_LINK:
            survivor = self.store.resolve(item.candidate_person_id)
            repair = self.repairing(sequence // MAX_EVENTS_PER_RECORD)
            result = merge(self.store, item.source_org, survivor, item.local_id, repair=repair)
            registry += [_entry(*moved) for moved in result.registry]
            decision.into_person_id = survivor
            if result.merge is None:
                decision.result = rvw.REVIEW_RESULT_ALREADY_ONE
            else:
                decision.result = rvw.REVIEW_RESULT_LINKED
                m.MERGES.labels("review").inc()
                out = _merge_copies(decision, event, result.merge, sequence)
        else:
            decision.result = rvw.REVIEW_RESULT_SEPARATED
        m.REVIEW_DECISIONS.labels(rvw.ReviewVerdict.Name(decision.verdict).removeprefix("REVIEW_VERDICT_")
                                  .lower()).inc()
        decided = idn.ReviewItem()
        decided.CopyFrom(item)
        decided.decision.CopyFrom(decision)
        return out, decided, registry

    def forget_partitions(self, topic_partitions: set[str]) -> None:
        """After a revocation: the next owner (maybe us again) reads its tables and how far links got."""
        self.index.forget_partitions(topic_partitions)
        self.store.forget_index()
        self.repair_until = None

    def begin(self, first: StageRecord, until: int) -> int:
        """The first batch since assignment starts at the committed ``first`` offset; ``until``: how far
        links got. Sets the repair range; returns how many events recorded as seen will be decided again."""
        self.repair_until = until
        if until < first.offset:
            return 0
        forgotten = self.index.forget_from(f"{first.topic}:{first.partition}", first.offset)
        log.warning("identity: the linkage log from offset %d to %d was decided before this worker started and "
                    "not committed: deciding it again in repair mode (%d events recorded as seen taken again)",
                    first.offset, until, forgotten)
        return forgotten

    def decide(self, records: Sequence[StageRecord]) -> Decided:
        """Every event of ``records`` decided, in order, against the tables (written by ``write_state``)."""
        out = Decided()
        batch_keys: set[str] = set()
        for record in records:
            out.tag = tag = f"{record.topic}:{record.partition}"
            for position, event in enumerate(ing.AcceptedBatch.FromString(record.value).events):
                key = f"{event.source_org}/{event.event_id}"
                if key in batch_keys or self.index.seen(tag, key):
                    m.DUPLICATES.inc()
                    continue
                batch_keys.add(key)
                out.new_keys.append(key)
                sequence = record.offset * MAX_EVENTS_PER_RECORD + position
                review: idn.ReviewItem | None
                if event.HasField("review_decision"):
                    linked_events, review, entries = self.decide_review(event, sequence)
                    sent = event.review_decision.decision_id
                    if review is not None:
                        out.decided.append(review.decision if review.decision.decision_id == sent
                                           else review.refused[-1])
                else:
                    with (continue_trace(tracer, "identity", event.trace_context, record.topic, record.partition,
                                         event.event_id) if self.tracing else contextlib.nullcontext()):
                        linked_events, review, entries = self.link_one(event, sequence, record.offset, position)
                for linked in linked_events:
                    partition = target_partition(linked.person_id, self.settings.partitions)
                    out.outgoing.setdefault(partition, []).append(linked)
                if review is not None:
                    out.reviews.append(review)
                    self.keep_review(review)
                out.registry += entries
        return out

    def write_state(self, first_offset: int, decided: Decided, now_s: float) -> None:
        """The batch's table writes (with the current event set to a record of the linkage log)."""
        m.TABLE_WRITES.inc(self.store.flush() + len(self._reviews_dirty))
        for review_id, raw in self._reviews_dirty.items():
            self.reviews[review_id] = raw
        self._reviews_dirty.clear()
        m.FULL_BLOCKS.inc(self.store.full_blocks)
        self.store.full_blocks = 0
        if decided.new_keys:
            self.index.record(decided.tag, first_offset, decided.new_keys, now_s)
        if decided.tag:
            self.index.expire(decided.tag, now_s)

    async def process_batch(self, batch: Batch) -> None:
        started = time.perf_counter()
        now_s = time.time()
        if self.repair_until is None and batch.records:
            until = await asyncio.to_thread(self._decided_until) if self._decided_until is not None else -1
            self.begin(batch.records[0], until)
        decided = self.decide(batch.records)
        await self._send(decided.outgoing, decided.reviews, decided.registry)
        await self._audit(decided.decided)
        if batch.records:
            last = batch.records[-1]  # one source partition: the linkage log
            journal = self.store.take_journal()  # merges and un-merges: what finishes them after a crash
            if journal and self._write_through is not None:
                await self._write_through(journal, last.partition)
            with batch.state_for(last.topic, last.partition):
                self.write_state(batch.records[0].offset, decided, now_s)
        m.LINKED.inc(sum(len(v) for v in decided.outgoing.values()))
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

    async def _audit(self, decisions: list[rvw.ReviewDecision]) -> None:
        """One audit record per decision applied or refused in this batch: who, when, why, with what result."""
        if self.audit is None:
            return
        futures = []
        for d in decisions:
            verdict = rvw.ReviewVerdict.Name(d.verdict).removeprefix("REVIEW_VERDICT_").lower()
            result = rvw.ReviewResult.Name(d.result).removeprefix("REVIEW_RESULT_").lower()
            org = d.reviewer_org or "carehub"
            record = al.AuditRecord(
                org=org, action=f"identity_review_{verdict}", trace_id=d.decision_id,
                detail=f"review {d.review_id} {result} by {d.reviewer} at {d.decided_time.ToJsonString()}: {d.reason}"
                       f"; record {d.source_org}/{d.local_id}, persons {d.person_id} {d.candidate_person_id}",
            )
            record.at.CopyFrom(d.applied_time)
            futures.append(await self.audit.send(key=org.encode(), value=record.SerializeToString()))
        for future in futures:
            await future


def _merge_copies(decision: rvw.ReviewDecision, sent: ing.AcceptedEvent, joined: idn.PersonMerge, sequence: int,
                  ) -> list[idn.LinkedEvent]:
    """A LINK decision as an identity-merge event to both persons, as an A40 merge is announced.

    The event is the record's (its organisation and local id) at the decision's time, and carries the
    decision, so the timeline joins the two histories without taking it for news of the person.
    """
    event = ing.AcceptedEvent(event_id=sent.event_id, schema_version=sent.schema_version or 1,
                              source_org=decision.source_org, event_type=ce.EVENT_TYPE_IDENTITY_MERGE)
    event.person.local_id = decision.local_id
    event.person.age_years = -1
    event.merge.prior_local_id = decision.local_id
    for stamp in (event.event_time, event.recorded_time, event.accepted_time):
        stamp.CopyFrom(decision.decided_time)
    event.review_decision.CopyFrom(decision)
    linked = idn.LinkedEvent(person_id=joined.into_person_id, outcome=idn.LINK_OUTCOME_KNOWN_RECORD,
                             link_sequence=sequence)
    linked.event.CopyFrom(event)
    linked.merge.CopyFrom(joined)
    other = idn.LinkedEvent()
    other.CopyFrom(linked)
    other.person_id = joined.from_person_id
    return [linked, other]


def _entry(org: str, local_id: str, person_id: str) -> idn.RegistryEntry:
    entry = idn.RegistryEntry(source_org=org, local_id=local_id, person_id=person_id)
    entry.updated_time.GetCurrentTime()
    return entry


def build_app(settings: Settings, bootstrap: str) -> faust.App:
    nicknames = service_nicknames(settings)  # a bad list stops the worker here, before any table or topic
    runtime = StageRuntime(APP_SUFFIX, settings, bootstrap)
    tables = {
        "local": runtime.table("identity-local", partitions=1, value_type=str),
        "keys": runtime.table("identity-keys", partitions=1, value_type=str),
        "profiles": runtime.table("identity-profiles", partitions=1, codec=PROFILE_CODEC),
        "redirects": runtime.table("identity-redirects", partitions=1, value_type=str),
        "merges": runtime.table("identity-merges", partitions=1),
        "dedupe": runtime.table("identity-dedupe", partitions=1),
        "reviews": runtime.table("identity-reviews", partitions=1, value_type=bytes),
    }
    identity = Identity(settings, tables, runtime.topic(linked_topic(settings)),
                        runtime.topic(review_topic(settings)), runtime.topic(registry_topic(settings)),
                        nicknames=nicknames, audit=runtime.topic(audit_topic(settings)),
                        decided_until=decided_until(bootstrap, settings),
                        write_through=runtime.write_through(tables["merges"]))
    runtime.batch_stage("identity", [accepted_topic(settings)], identity, settings.ingest_batch_size,
                        settings.ingest_batch_within_s)
    runtime.forget_on_revoke(identity)
    app = runtime.app

    app.carehub_identity = identity  # type: ignore[attr-defined]
    return app
