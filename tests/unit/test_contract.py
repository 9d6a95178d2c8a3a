"""Properties of the contract that code relies on."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from carehub.domain.pseudonymise import Pseudonymiser
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing
from carehub.wire import iter_delimited, repeated_field
from services.ingest.records import RawRecord, RecordProcessor
from services.ingest.validation import Limits
from tests.factories import care_event


def test_accepted_event_mirrors_care_event_fields_except_person() -> None:
    accepted = ing.AcceptedEvent.DESCRIPTOR.fields_by_number
    for field in ce.CareEvent.DESCRIPTOR.fields:
        if field.name == "person":
            continue
        twin = accepted[field.number]
        assert (twin.name, twin.type, twin.is_repeated) == (field.name, field.type, field.is_repeated)
        for kind in ("message_type", "enum_type"):
            a, b = getattr(field, kind), getattr(twin, kind)
            assert (a and a.full_name) == (b and b.full_name), field.name


def processed(event: ce.CareEvent) -> ing.AcceptedEvent:
    rec = RawRecord("carehub.provider.events", 1, 42, b"k", event.SerializeToString(),
                    [("content-type", b"application/x-protobuf")], 1_700_000_000.5)
    out = RecordProcessor(Pseudonymiser(os.urandom(32)), Limits()).process(rec, datetime.now(UTC))
    assert isinstance(out, ing.AcceptedEvent)
    return out


def test_accepted_event_carries_the_event_and_where_it_came_from() -> None:
    event = care_event()
    out = processed(event)
    assert out.event_id == event.event_id and out.event_type == event.event_type
    assert out.clinical == event.clinical and out.event_time == event.event_time
    assert out.registered_practice == "B86001" and out.locality == "Leeds North"
    assert (out.source.topic, out.source.partition, out.source.offset) == ("carehub.provider.events", 1, 42)
    assert out.published_time.ToNanoseconds() == 1_700_000_000_500_000_000
    assert out.person.local_id == "H-99812" and out.person.national_id_hash


def test_unknown_fields_do_not_travel_on() -> None:
    smuggled = care_event().SerializeToString() + bytes([0x82, 0x01, 10]) + b"9434765919"  # field 16, bytes
    event = ce.CareEvent.FromString(smuggled)
    out = processed(event)
    assert b"9434765919" not in out.SerializeToString()
    assert out.source.topic == "carehub.provider.events"


def test_a_provider_cannot_send_a_review_decision() -> None:
    """AcceptedEvent.review_decision (21) is the review desk's: no CareEvent field has its number, and a
    provider's record carrying one as an unknown field arrives without it."""
    number = ing.AcceptedEvent.DESCRIPTOR.fields_by_name["review_decision"].number
    assert number not in ce.CareEvent.DESCRIPTOR.fields_by_number
    forged = ing.AcceptedEvent()
    forged.review_decision.review_id, forged.review_decision.reviewer = "1:0", "nobody"
    event = ce.CareEvent.FromString(care_event().SerializeToString() + forged.SerializeToString())
    out = processed(event)
    assert not out.HasField("review_decision") and b"nobody" not in out.SerializeToString()


def test_repeated_field_framing_is_what_protobuf_writes() -> None:
    events = [ing.AcceptedEvent(event_id=str(i) * (i * 50 + 1)) for i in range(5)]
    built = repeated_field(1, [e.SerializeToString() for e in events])
    assert built == ing.AcceptedBatch(events=events).SerializeToString()
    assert list(ing.AcceptedBatch.FromString(built).events) == events


def test_delimited_stream_round_trip() -> None:
    payloads = [b"", b"a", b"x" * 300, b"y" * 20000]
    from carehub.wire import encode_varint

    data = b"".join(encode_varint(len(p)) + p for p in payloads)
    assert list(iter_delimited(data)) == payloads


def test_an_unexpected_error_becomes_a_dead_letter_not_a_crash() -> None:
    class Failing(Pseudonymiser):
        def encode(self, person: ce.Person, event_day: object) -> ing.PseudonymisedPerson:
            raise RuntimeError("encoder broke on 9434765919")

    processor = RecordProcessor(Failing(os.urandom(32)), Limits())
    event = care_event()
    rec = RawRecord("t", 0, 7, b"k", event.SerializeToString(), [("content-type", b"application/x-protobuf")])
    out = processor.process(rec, datetime.now(UTC))
    assert isinstance(out, ing.DeadLetter)
    assert out.reason == ing.REJECT_REASON_PROCESSING_ERROR
    assert out.original_value == event.SerializeToString() and out.source.offset == 7
    ok = RecordProcessor(Pseudonymiser(os.urandom(32)), Limits()).process(rec, datetime.now(UTC))
    assert isinstance(ok, ing.AcceptedEvent)


def test_header_names_in_any_case() -> None:
    rec = RawRecord("t", 0, 0, None, b"", [("Content-Type", b"application/json")])
    assert rec.header("content-type") == "application/json"
    assert rec.header("traceparent") is None


def test_batch_records_split_by_size_and_keep_order() -> None:
    from carehub.kafka.batching import batch_records

    events = [ing.AcceptedEvent(event_id=f"{i:04d}" + "x" * 1000) for i in range(50)]
    records = batch_records(events, max_bytes=16 * 1024)
    assert len(records) == 4 and all(len(r) <= 16 * 1024 for r in records)
    back = [e for r in records for e in ing.AcceptedBatch.FromString(r).events]
    assert back == events
    huge = ing.AcceptedEvent(event_id="y" * 40_000)
    assert [ing.AcceptedBatch.FromString(r).events[0] for r in batch_records([huge], 16 * 1024)] == [huge]


def test_a_care_plan_travels_on_with_the_accepted_event() -> None:
    event = care_event(ce.EVENT_TYPE_CARE_PLAN)
    event.care_plan.CopyFrom(ce.CarePlanDetail(owner_org="SC001", review_due="2027-02-01", segment="frail",
                                               contact_role="care coordinator", closed=True))
    out = processed(event)
    assert out.care_plan == event.care_plan and out.source.offset == 42 and out.accepted_time.seconds > 0
