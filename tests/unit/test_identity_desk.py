"""The identity review desk without a broker: items, decisions in the identity stage, the printouts, explain."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from carehub import identity_desk as desk
from carehub.domain.pseudonymise import Pseudonymiser
from carehub.domain.timeline import PersonState, apply
from carehub.kafka.read import Record
from carehub.runtime.stage import Batch
from carehub.settings import Settings, load_settings
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import identity_review_pb2 as rvw
from carehub.v1 import ingest_pb2 as ing
from services.identity.app import Identity
from services.identity.linkage import FIELDS, load_model
from services.identity.linkage.features import MISSING
from services.identity.review import field_comparisons
from services.identity.table_store import TABLES
from tests.factories import VALID_NHS, VALID_NHS_2


class Sent:
    """A topic stand-in: what was sent, as (key, value)."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, Any]] = []

    async def send(self, key: bytes | None = None, value: Any = None, partition: int | None = None) -> Any:
        self.records.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path, pseudonym_key="ab" * 32)


def stage(tmp_path: Path) -> tuple[Identity, dict[str, dict[str, Any]], Sent]:
    tables: dict[str, dict[str, Any]] = {name: {} for name in (*TABLES, "dedupe", "reviews")}
    audit = Sent()
    identity = Identity(settings(tmp_path), tables, Sent(), Sent(), Sent(), audit=audit)
    return identity, tables, audit


def accepted(identity: Identity, org: str, local_id: str, nhs: str) -> ing.AcceptedEvent:
    person = ce.Person(local_id=local_id, national_id=nhs, given_name="Margaret", family_name="Whitfield",
                       birth_date="1941-03-17", sex=ce.SEX_FEMALE, postcode="LS1 4AP",
                       address_line="12 Pinkerton Circuit")
    pseudonymiser = Pseudonymiser(identity.settings.pseudonym_key_bytes())
    event = ing.AcceptedEvent(event_id=f"e-{org}-{local_id}", source_org=org, event_type=ce.EVENT_TYPE_GP_CONTACT)
    event.person.CopyFrom(pseudonymiser.encode(person, date(2026, 1, 1)))
    event.event_time.FromDatetime(datetime(2026, 11, 1, tzinfo=UTC))
    return event


def near_pair(identity: Identity) -> idn.ReviewItem:
    """Two records alike in every field but the NHS number: the second is a new person and a review item."""
    first, _, _ = identity.link_one(accepted(identity, "B86001", "P-1", VALID_NHS), 1, 1, 0)
    _, item, _ = identity.link_one(accepted(identity, "RR8", "H-2", VALID_NHS_2), 2, 2, 0)
    assert item is not None and item.candidate_person_id == first[0].person_id
    identity.keep_review(item)
    return item


def decision_for(item: idn.ReviewItem, verdict: str, reviewer: str = "A. Reviewer") -> ing.AcceptedEvent:
    return desk.decision_event(desk.new_decision(item.review_id, verdict, reviewer, "same person at both"))


def decide(identity: Identity, event: ing.AcceptedEvent, sequence: int,
           ) -> tuple[list[idn.LinkedEvent], idn.ReviewItem, list[idn.RegistryEntry]]:
    """A decision the item does not hold yet: applied or refused, never taken for one applied before."""
    out, item, registry = identity.decide_review(event, sequence)
    assert item is not None
    return out, item, registry


def test_field_comparisons_say_agree_partial_disagree_missing_with_weights() -> None:
    model = load_model()
    levels = (1, 0, 1, MISSING, 1, 3, 0, MISSING)  # nid differs, given exact, family close, no birth date ...
    got = {f.field: f for f in field_comparisons(model, levels)}
    assert list(got) == list(FIELDS)
    assert got["national_id"].agreement == idn.FIELD_AGREEMENT_DISAGREE and got["national_id"].weight < 0
    assert got["given_name"].agreement == idn.FIELD_AGREEMENT_AGREE and got["given_name"].level == "exact"
    assert got["family_name"].agreement == idn.FIELD_AGREEMENT_PARTIAL and got["family_name"].weight > 0
    assert got["birth_date"].agreement == idn.FIELD_AGREEMENT_MISSING and got["birth_date"].weight == 0
    assert got["postcode"].level == "sector" and got["address"].agreement == idn.FIELD_AGREEMENT_DISAGREE


def test_review_item_shows_candidate_records_and_fields(tmp_path: Path) -> None:
    identity, _, _ = stage(tmp_path)
    item = near_pair(identity)
    assert [(r.source_org, r.local_id) for r in item.candidate_records] == [("B86001", "P-1")]
    fields = {f.field: f.agreement for f in item.fields}
    assert fields["national_id"] == idn.FIELD_AGREEMENT_DISAGREE
    assert fields["given_name"] == fields["birth_date"] == idn.FIELD_AGREEMENT_AGREE
    assert item.reason == "national ids differ"


def test_link_joins_the_persons_once_and_a_second_decision_is_refused(tmp_path: Path) -> None:
    identity, _, _ = stage(tmp_path)
    item = near_pair(identity)
    out, decided, registry = decide(identity, decision_for(item, "link"), 10)
    d = decided.decision
    assert d.result == rvw.REVIEW_RESULT_LINKED and d.reviewer == "A. Reviewer"
    assert (d.person_id, d.candidate_person_id, d.source_org, d.local_id) == (
        item.person_id, item.candidate_person_id, "RR8", "H-2")
    # announced to both persons as an A40 merge is, marked as the reviewer's decision
    assert sorted(e.person_id for e in out) == sorted([item.person_id, item.candidate_person_id])
    assert all(e.event.event_type == ce.EVENT_TYPE_IDENTITY_MERGE and e.event.HasField("review_decision")
               and e.merge.from_person_id == item.person_id and e.merge.into_person_id == item.candidate_person_id
               for e in out)
    assert [(e.source_org, e.local_id, e.person_id) for e in registry] == [("RR8", "H-2", item.candidate_person_id)]
    assert identity.store.local_person("RR8", "H-2") == item.candidate_person_id
    identity.keep_review(decided)

    again, refused, _ = decide(identity, decision_for(item, "separate", "B. Other"), 11)
    assert again == [] and refused.decision == d
    assert [r.result for r in refused.refused] == [rvw.REVIEW_RESULT_ALREADY_DECIDED]
    assert identity.store.local_person("RR8", "H-2") == item.candidate_person_id


def test_a_decision_taken_again_after_a_crash_completes_its_merge_and_is_not_applied_twice(tmp_path: Path) -> None:
    """A worker killed after the item's row reached its changelog and before the moved record's did:
    the same decision (the same id), decided again, neither refuses itself nor merges twice."""
    identity, _, _ = stage(tmp_path)
    item = near_pair(identity)
    sent = decision_for(item, "link")
    _, decided, _ = decide(identity, sent, 10)
    identity.keep_review(decided)
    identity.store.flush()
    identity.store.set_local_person("RR8", "H-2", item.person_id)  # the moved record's row lost
    identity.store.flush()
    assert identity.decide_review(sent, 10) == ([], None, [])
    assert identity.store.local_person("RR8", "H-2") == item.candidate_person_id


def test_separate_changes_no_person_and_unknown_items_are_refused(tmp_path: Path) -> None:
    identity, _, _ = stage(tmp_path)
    item = near_pair(identity)
    out, decided, registry = decide(identity, decision_for(item, "separate"), 10)
    assert out == [] and registry == []
    assert decided.decision.result == rvw.REVIEW_RESULT_SEPARATED
    assert identity.store.local_person("RR8", "H-2") == item.person_id
    _, unknown, _ = decide(identity, decision_for(idn.ReviewItem(review_id="9:9"), "link"), 11)
    assert not unknown.source_org and unknown.refused[0].result == rvw.REVIEW_RESULT_UNKNOWN_ITEM


def test_a_batch_with_a_decision_writes_the_item_the_table_and_the_audit(tmp_path: Path) -> None:
    identity, tables, audit = stage(tmp_path)
    item = near_pair(identity)
    identity.store.flush()
    for review_id, raw in identity._reviews_dirty.items():
        tables["reviews"][review_id] = raw
    identity._reviews_dirty.clear()
    event = decision_for(item, "link")

    message = SimpleNamespace(topic="t", partition=0, offset=3, key=None, headers=None, timestamp=0.0,
                              value=ing.AcceptedBatch(events=[event]).SerializeToString())
    stream = SimpleNamespace(current_event=None, _set_current_event=lambda e: None)
    asyncio.run(identity.process_batch(Batch(stream, [SimpleNamespace(message=message)])))
    stored = idn.ReviewItem.FromString(tables["reviews"][item.review_id])
    assert stored.decision.result == rvw.REVIEW_RESULT_LINKED
    written = [idn.ReviewItem.FromString(v) for _, v in identity.review.records]
    assert written[-1].decision.decision_id == event.review_decision.decision_id
    [(key, value)] = audit.records
    record = al.AuditRecord.FromString(value)
    assert key == b"carehub" and record.action == "identity_review_link"
    assert "A. Reviewer" in record.detail and "same person at both" in record.detail and "linked" in record.detail


def test_timeline_takes_a_review_merge_for_no_news_of_the_person() -> None:
    state = PersonState.new("p-1")
    care = idn.LinkedEvent(person_id="p-1", link_sequence=1)
    care.event.event_id, care.event.source_org, care.event.event_type = "e-1", "B86001", ce.EVENT_TYPE_GP_CONTACT
    care.event.person.local_id, care.event.person.age_years = "P-1", 85
    care.event.event_time.FromDatetime(datetime(2026, 11, 1, tzinfo=UTC))
    apply(state, care)
    item = idn.ReviewItem(review_id="2:0", source_org="RR8", local_id="H-2")
    merge = idn.LinkedEvent(person_id="p-1", link_sequence=2)
    merge.event.CopyFrom(decision_for(item, "link"))
    merge.event.source_org, merge.event.event_type = "RR8", ce.EVENT_TYPE_IDENTITY_MERGE
    merge.event.person.local_id, merge.event.person.age_years = "H-2", -1
    merge.event.event_time.FromDatetime(datetime(2026, 12, 1, tzinfo=UTC))
    view = apply(state, merge)
    assert view is not None and view.view.age_years == 85
    timeline = state.timeline
    assert timeline.age_years == 85 and set(timeline.involvement) == {"B86001"}
    assert timeline.newest_event_at.ToDatetime(UTC) == datetime(2026, 11, 1, tzinfo=UTC)
    assert ("RR8", "H-2") in {(r.org, r.local_id) for r in timeline.local_records}


def record(offset: int, item: idn.ReviewItem) -> Record:
    return Record("r", 0, offset, 0, item.review_id.encode(), item.SerializeToString(), ())


def test_items_open_list_and_results() -> None:
    older = idn.ReviewItem(review_id="1:0", source_org="RR8", local_id="H-1", score=11.5)
    older.created_time.FromDatetime(datetime(2026, 11, 1, tzinfo=UTC))
    newer = idn.ReviewItem(review_id="5:0", source_org="RR8", local_id="H-5")
    newer.created_time.FromDatetime(datetime(2026, 11, 2, tzinfo=UTC))
    decided = idn.ReviewItem()
    decided.CopyFrom(newer)
    decided.decision.CopyFrom(desk.new_decision("5:0", "separate", "R", "two people"))
    stray = idn.ReviewItem(review_id="1:0")
    stray.refused.add(decision_id="x", result=rvw.REVIEW_RESULT_UNKNOWN_ITEM)
    items = desk.items_of([record(0, newer), record(1, older), record(2, decided), record(3, stray)])
    assert [i.review_id for i in desk.open_items(items)] == ["1:0"]
    assert items["1:0"].source_org == "RR8" and [d.decision_id for d in items["1:0"].refused] == ["x"]
    assert desk.result_of(items, "5:0", decided.decision.decision_id) == decided.decision
    assert desk.result_of(items, "1:0", "x") is not None and desk.result_of(items, "1:0", "y") is None
    text = desk.list_text(desk.open_items(items), now=datetime(2026, 11, 3, tzinfo=UTC))
    assert "1:0" in text and "RR8 H-1" in text and "2 d old" in text and "5:0" not in text
    shown = desk.show_text(decided, {("RR8", "H-5"): "p-5"})
    assert "DECIDED: separate by R" in shown and "kept apart" not in shown  # not applied yet: no result


@pytest.mark.parametrize(("verdict", "reviewer", "why"), [("merge", "R", "x"), ("link", " ", "x"), ("link", "R", "")])
def test_a_decision_needs_a_verdict_a_reviewer_and_a_reason(verdict: str, reviewer: str, why: str) -> None:
    with pytest.raises(desk.DeskError):
        desk.new_decision("1:0", verdict, reviewer, why)


def test_explain_names_how_each_record_joined() -> None:
    def linked(seq: int, person: str, org: str, local: str, outcome: int, score: float = 0.0) -> idn.LinkedEvent:
        e = idn.LinkedEvent(person_id=person, link_sequence=seq, outcome=outcome, score=score)  # type: ignore[arg-type]
        e.event.event_id, e.event.source_org, e.event.person.local_id = f"e{seq}", org, local
        e.event.event_time.FromDatetime(datetime(2026, 11, seq, tzinfo=UTC))
        return e

    events = [linked(1, "p-1", "B86001", "P-1", idn.LINK_OUTCOME_NEW_PERSON),
              linked(2, "p-1", "RY6", "X-1", idn.LINK_OUTCOME_LINKED, 14.2),
              linked(3, "p-2", "RR8", "H-2", idn.LINK_OUTCOME_UNCERTAIN, 12.0)]
    item = idn.ReviewItem(review_id="3:0", source_org="RR8", local_id="H-2")
    merge = linked(4, "p-1", "RR8", "H-2", idn.LINK_OUTCOME_KNOWN_RECORD)
    merge.event.review_decision.CopyFrom(desk.new_decision(item.review_id, "link", "A. Reviewer", "same person"))
    merge.merge.from_person_id, merge.merge.into_person_id = "p-2", "p-1"
    merge.merge.moved_records.add(source_org="RR8", local_id="H-2")
    copy = idn.LinkedEvent()
    copy.CopyFrom(merge)
    copy.person_id = "p-2"
    registry = {("B86001", "P-1"): "p-1", ("RY6", "X-1"): "p-1", ("RR8", "H-2"): "p-1"}
    because = {(b.org, b.local_id): b.reasons for b in desk.explain("p-1", [*events, merge, copy], registry)}
    assert because[("B86001", "P-1")][0].startswith("a new person")
    assert because[("RY6", "X-1")] == ("linked to a known person (score 14.20), first seen 2026-11-02",)
    h2 = because[("RR8", "H-2")]
    assert h2[0].startswith("a new person, with a review item") and len(h2) == 2
    assert "review decision 3:0 of A. Reviewer" in h2[1] and "into person p-1" in h2[1]
    assert "3 local records" in desk.explain_text("p-1", list(desk.explain("p-1", events, registry)))


def test_the_commands_parse_and_the_identity_worker_still_starts_bare() -> None:
    from carehub.cli import build_parser, cmd_identity, cmd_review

    parser = build_parser()
    worker = parser.parse_args(["identity"])
    assert worker.func is cmd_identity and worker.action is None and worker.person is None
    explain = parser.parse_args(["identity", "explain", "p-1", "--json"])
    assert (explain.action, explain.person, explain.json) == ("explain", "p-1", True)
    link = parser.parse_args(["review", "link", "3:0", "--reviewer", "A. Reviewer", "--why", "same person"])
    assert link.func is cmd_review and (link.action, link.id, link.reviewer, link.why) == (
        "link", "3:0", "A. Reviewer", "same person")
    with pytest.raises(SystemExit):
        parser.parse_args(["review", "merge", "3:0"])


def test_a_link_decided_again_after_a_crash_that_kept_only_its_merge_record_finishes_that_merge(
        tmp_path: Path) -> None:
    """Killed after the merge record was on the broker (it goes first) and before anything else of the
    batch: the decision taken again in repair mode finishes that merge, with the same result, and
    does not nest a second record under the first (which an un-merge would leave in force)."""
    identity, tables, _ = stage(tmp_path)
    item = near_pair(identity)
    identity.store.flush()
    tables["reviews"][item.review_id] = item.SerializeToString()
    before = {name: dict(table) for name, table in tables.items()}
    sent = decision_for(item, "link")
    first, decided, _ = decide(identity, sent, 10)
    journal = identity.store.take_journal()
    assert [r["from"] for r in journal.values()] == [item.person_id]

    after_crash = {name: dict(table) for name, table in before.items()}
    after_crash["merges"].update(journal)
    successor = Identity(settings(tmp_path), after_crash, Sent(), Sent(), Sent(), audit=Sent())
    successor.repair_until = 0  # the decision (offset 0) was decided before the crash
    again, redecided, _ = decide(successor, sent, 10)
    assert redecided.decision.result == decided.decision.result == rvw.REVIEW_RESULT_LINKED
    assert [(e.person_id, e.merge) for e in again] == [(e.person_id, e.merge) for e in first]
    assert successor.store.local_person("RR8", "H-2") == item.candidate_person_id
    assert successor.store.resolve(item.person_id) == item.candidate_person_id
    record = successor.store.merge_record("RR8/H-2")
    assert record is not None and "earlier" not in record
