"""The identity review desk: `carehub review list | show | link | separate` and `carehub identity explain`.

Review items are read from ``carehub.identity.review`` (keyed by review id; the newest record of an
item is its state: raised, then decided). A decision goes onto the linkage log
(``carehub.ingest.accepted``) as an ``AcceptedEvent`` carrying only a ``ReviewDecision``, so that
the identity stage applies it in order with every event; the desk then waits until the stage has
written the item back with this decision's result. The gateway serves the same desk to an identity
team's own tool (``ListIdentityReviews`` and the rest) with the functions here.

Nothing here shows an identifier: review items name organisations, local ids and pseudonymous
person ids, and compare fields by level only.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import json_format
from kafka import KafkaProducer

from carehub.display import day
from carehub.kafka.profile import client_profile
from carehub.kafka.read import Record, latest_by_key, read_to_end
from carehub.settings import Settings
from carehub.topics import accepted_topic, linked_topic, registry_topic, review_topic
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import identity_review_pb2 as rvw
from carehub.v1 import ingest_pb2 as ing

VERDICTS = {"link": rvw.REVIEW_VERDICT_LINK, "separate": rvw.REVIEW_VERDICT_SEPARATE}
RESULTS = {
    rvw.REVIEW_RESULT_LINKED: "linked: the two persons are one now",
    rvw.REVIEW_RESULT_ALREADY_ONE: "linked: the two were one person already",
    rvw.REVIEW_RESULT_SEPARATED: "kept apart: two people",
    rvw.REVIEW_RESULT_ALREADY_DECIDED: "refused: the item was decided before",
    rvw.REVIEW_RESULT_UNKNOWN_ITEM: "refused: the identity stage raised no such item",
}
AGREEMENT = {idn.FIELD_AGREEMENT_AGREE: "agree", idn.FIELD_AGREEMENT_PARTIAL: "partial",
             idn.FIELD_AGREEMENT_DISAGREE: "disagree", idn.FIELD_AGREEMENT_MISSING: "missing"}


class DeskError(Exception):
    """A desk request that cannot be done (no such item, a bad verdict); the message says why."""


# --- reading ------------------------------------------------------------------------------------


def fold(items: dict[str, idn.ReviewItem], item: idn.ReviewItem) -> None:
    """Take one record of the review topic into ``items`` (see :func:`items_of`)."""
    held = items.get(item.review_id)
    if item.source_org or held is None:
        items[item.review_id] = item
    else:
        held.refused.extend(item.refused)


def items_of(records: Iterable[Record]) -> dict[str, idn.ReviewItem]:
    """Each item's current state from the review topic's records, in offset order.

    The newest record of an item is its state. A refusal of an item the identity stage never raised
    comes as a bare item (no record on it); it only adds its refused decisions to what is held.
    """
    out: dict[str, idn.ReviewItem] = {}
    for record in records:
        if record.value:
            fold(out, idn.ReviewItem.FromString(record.value))
    return out


def read_items(bootstrap: str, settings: Settings, timeout_s: float = 60.0) -> dict[str, idn.ReviewItem]:
    return items_of(read_to_end(bootstrap, review_topic(settings), timeout_s=timeout_s,
                                profile=client_profile(settings)))


def read_registry(bootstrap: str, settings: Settings, timeout_s: float = 60.0) -> dict[tuple[str, str], str]:
    """Which person each local record belongs to now: (org, local id) -> person id."""
    records = read_to_end(bootstrap, registry_topic(settings), timeout_s=timeout_s, profile=client_profile(settings))
    entries = (idn.RegistryEntry.FromString(r.value) for r in latest_by_key(records).values() if r.value)
    return {(e.source_org, e.local_id): e.person_id for e in entries}


def open_items(items: Mapping[str, idn.ReviewItem], include_decided: bool = False) -> list[idn.ReviewItem]:
    """Items without a decision (or every item raised, with ``include_decided``), oldest first."""
    waiting = [i for i in items.values() if i.source_org and (include_decided or not i.HasField("decision"))]
    return sorted(waiting, key=lambda i: (i.created_time.ToNanoseconds(), i.review_id))


def records_of(registry: Mapping[tuple[str, str], str], person_id: str) -> list[tuple[str, str]]:
    return sorted(record for record, person in registry.items() if person == person_id)


# --- printing -----------------------------------------------------------------------------------


def _age(item: idn.ReviewItem, now: datetime) -> str:
    seconds = max(0.0, now.timestamp() - item.created_time.ToNanoseconds() / 1e9)
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


def _records(records: Iterable[idn.LocalRecord] | Iterable[tuple[str, str]]) -> str:
    pairs = [(r.source_org, r.local_id) if isinstance(r, idn.LocalRecord) else r for r in records]
    return ", ".join(f"{org} {local}" for org, local in pairs) or "none known"


def list_text(items: list[idn.ReviewItem], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    lines = [f"{len(items)} open review items, oldest first"]
    for item in items:
        lines.append(f"  {item.review_id:14} score {item.score:6.2f}  record {item.source_org} {item.local_id}  "
                     f"candidate {_records(item.candidate_records)}  {_age(item, now)} old  ({item.reason})")
    return "\n".join(lines)


def decision_text(decision: rvw.ReviewDecision) -> str:
    verdict = rvw.ReviewVerdict.Name(decision.verdict).removeprefix("REVIEW_VERDICT_").lower()
    into = f" (person {decision.into_person_id})" if decision.result == rvw.REVIEW_RESULT_LINKED else ""
    return (f"{verdict} by {decision.reviewer} on {day(decision.decided_time)}: {decision.reason}; "
            f"{RESULTS.get(decision.result, 'not applied yet')}{into}")


def show_text(item: idn.ReviewItem, registry: Mapping[tuple[str, str], str]) -> str:
    lines = [f"review item {item.review_id}  raised {day(item.created_time)}  score {item.score:.2f} "
             f"(log2 odds)  {item.reason}",
             f"  record     {item.source_org} {item.local_id}, given person {item.person_id}; now its person's "
             f"records: {_records(records_of(registry, registry.get((item.source_org, item.local_id), '')))}",
             f"  candidate  person {item.candidate_person_id}: records when raised: "
             f"{_records(item.candidate_records)}",
             "  field          level                agreement  weight"]
    for f in item.fields:
        lines.append(f"    {f.field:12} {f.level:20} {AGREEMENT.get(f.agreement, '?'):9} {f.weight:+7.2f}")
    if not item.fields:
        lines.append("    (not recorded for this item)")
    if item.HasField("decision"):
        lines.append(f"  DECIDED: {decision_text(item.decision)}")
    else:
        lines.append("  open: carehub review link|separate ID --reviewer NAME --why TEXT")
    lines += [f"  later decision refused: {decision_text(d)}" for d in item.refused]
    return "\n".join(lines)


def item_json(item: idn.ReviewItem) -> dict[str, object]:
    return json_format.MessageToDict(item, preserving_proto_field_name=True)


def as_json(items: Iterable[idn.ReviewItem]) -> str:
    return json.dumps({"items": [item_json(i) for i in items]}, indent=2, sort_keys=True)


# --- deciding -----------------------------------------------------------------------------------


def refused(decision: rvw.ReviewDecision) -> bool:
    return decision.result in (rvw.REVIEW_RESULT_ALREADY_DECIDED, rvw.REVIEW_RESULT_UNKNOWN_ITEM)


def new_decision(review_id: str, verdict: str, reviewer: str, reason: str) -> rvw.ReviewDecision:
    """A decision as a reviewer sends it; who and why are required (the decision is audited)."""
    if verdict not in VERDICTS:
        raise DeskError(f"a verdict is one of {sorted(VERDICTS)}, not {verdict!r}")
    if not reviewer.strip() or not reason.strip():
        raise DeskError("a decision needs the reviewer's name and the reason (--reviewer, --why)")
    decision = rvw.ReviewDecision(review_id=review_id, verdict=VERDICTS[verdict], reviewer=reviewer.strip(),
                                  reason=reason.strip(), decision_id=str(uuid.uuid4()))
    decision.decided_time.GetCurrentTime()
    return decision


def decision_event(decision: rvw.ReviewDecision) -> ing.AcceptedEvent:
    """The decision as it travels on the linkage log: no care event, only the decision."""
    event = ing.AcceptedEvent(event_id=f"review-decision-{decision.decision_id}", schema_version=1)
    event.accepted_time.CopyFrom(decision.decided_time)
    event.review_decision.CopyFrom(decision)
    return event


def decision_record(decision: rvw.ReviewDecision) -> tuple[bytes, bytes]:
    """(key, value) of the linkage-log record carrying ``decision``."""
    value = ing.AcceptedBatch(events=[decision_event(decision)]).SerializeToString()
    return f"review/{decision.review_id}".encode(), value


def send_decision(bootstrap: str, settings: Settings, decision: rvw.ReviewDecision, timeout_s: float = 30.0) -> None:
    key, value = decision_record(decision)
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="carehub-review-desk",
                             **client_profile(settings).kafka_python_producer())
    try:
        producer.send(accepted_topic(settings), value=value, key=key).get(timeout=timeout_s)
    finally:
        producer.close()


def result_of(items: Mapping[str, idn.ReviewItem], review_id: str, decision_id: str) -> rvw.ReviewDecision | None:
    """The applied form of decision ``decision_id`` on ``review_id``, once the identity stage wrote it back."""
    item = items.get(review_id)
    if item is None:
        return None
    for decision in (item.decision, *item.refused):
        if decision.decision_id == decision_id:
            return decision
    return None


def wait_result(bootstrap: str, settings: Settings, review_id: str, decision_id: str, timeout_s: float = 60.0,
                ) -> rvw.ReviewDecision:
    """Wait until the identity stage has applied the decision; TimeoutError past ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = result_of(read_items(bootstrap, settings, timeout_s=max(5.0, timeout_s)), review_id, decision_id)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"decision {decision_id} on review item {review_id} not applied within "
                               f"{timeout_s:.0f} s: is the identity stage running?")
        time.sleep(0.5)


def decide(bootstrap: str, settings: Settings, review_id: str, verdict: str, reviewer: str, reason: str,
           timeout_s: float = 60.0) -> rvw.ReviewDecision:
    """Send a decision on an open item and return it as applied (its result)."""
    items = read_items(bootstrap, settings)
    if review_id not in items or not items[review_id].source_org:
        raise DeskError(f"no review item {review_id!r}")
    decision = new_decision(review_id, verdict, reviewer, reason)
    send_decision(bootstrap, settings, decision)
    return wait_result(bootstrap, settings, review_id, decision.decision_id, timeout_s)


# --- explain ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Because:
    org: str
    local_id: str
    reasons: tuple[str, ...]


OUTCOME_WORDS = {
    idn.LINK_OUTCOME_KNOWN_RECORD: "known record",
    idn.LINK_OUTCOME_LINKED: "linked to a known person",
    idn.LINK_OUTCOME_NEW_PERSON: "a new person: no candidate came close",
    idn.LINK_OUTCOME_UNCERTAIN: "a new person, with a review item: a candidate came close",
}


def explain(person_id: str, linked: Iterable[idn.LinkedEvent], registry: Mapping[tuple[str, str], str],
            ) -> list[Because]:
    """Why each local record of ``person_id`` belongs to that person, from the linked events in order."""
    first: dict[tuple[str, str], str] = {}
    moves: dict[tuple[str, str], list[str]] = {}
    seen_merges: set[tuple[str, str, str, bool]] = set()
    for e in sorted(linked, key=lambda x: x.link_sequence):
        event = e.event
        record = (event.source_org, event.person.local_id)
        if not e.HasField("merge"):
            if record not in first and not event.HasField("review_decision"):
                score = f" (score {e.score:.2f})" if e.outcome in (idn.LINK_OUTCOME_LINKED,
                                                                    idn.LINK_OUTCOME_UNCERTAIN) else ""
                first[record] = f"{OUTCOME_WORDS.get(e.outcome, 'linked')}{score}, first seen {day(event.event_time)}"
            continue
        merge = e.merge
        key = (event.event_id, merge.from_person_id, merge.into_person_id, merge.unmerge)
        if key in seen_merges:
            continue  # the other person's copy
        seen_merges.add(key)
        if event.HasField("review_decision"):
            d = event.review_decision
            how = (f"linked by review decision {d.review_id} of {d.reviewer} on {day(d.decided_time)} "
                   f"({d.reason})")
        else:
            verb = "un-merged" if merge.unmerge else "merged"
            how = f"{verb} by an A40 from {event.source_org} on {day(event.event_time)}"
        target = merge.from_person_id if merge.unmerge else merge.into_person_id
        for moved in merge.moved_records:
            moves.setdefault((moved.source_org, moved.local_id), []).append(f"{how}, into person {target}")
    out = []
    for record in records_of(registry, person_id):
        reasons = [first.get(record, "named in an A40 merge before it was seen"), *moves.get(record, [])]
        out.append(Because(record[0], record[1], tuple(reasons)))
    return out


def read_linked(bootstrap: str, settings: Settings, timeout_s: float = 120.0) -> list[idn.LinkedEvent]:
    records = read_to_end(bootstrap, linked_topic(settings), timeout_s=timeout_s, profile=client_profile(settings))
    return [e for r in records if r.value for e in idn.LinkedBatch.FromString(r.value).events]


def explain_text(person_id: str, because: list[Because]) -> str:
    if not because:
        return f"person {person_id}: no local record belongs to this person now (merged away, or unknown)"
    lines = [f"person {person_id}: {len(because)} local records"]
    for b in because:
        lines.append(f"  {b.org} {b.local_id}")
        lines += [f"    - {reason}" for reason in b.reasons]
    return "\n".join(lines)
