"""Inputs the fuzzer (tools/fuzz.py, carehub.fuzz) found that broke a door or ingest, each kept as a test.

Each test names the input that broke it and what it did then: ingest's catch-all dead letter
(``processing_error``) or a dead stream agent, an HTTP 500 from the FHIR door, an MLLP connection
closed without its ACK.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any, cast

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from carehub.domain.fhir.bundle import BundleRejected, parse_bundle
from carehub.domain.fhir.mapping import load_fhir_mapping, map_bundle
from carehub.domain.fhir.senders import load_senders
from carehub.domain.pseudonymise import Pseudonymiser
from carehub.fuzz import corpus
from carehub.fuzz.mutators import Raw, dumps
from carehub.kafka.profile import MAX_DEADLETTER_ORIGINAL_BYTES, MAX_RECORD_BYTES, client_profile
from carehub.settings import load_settings
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing
from services.ingest.records import RawRecord, RecordProcessor
from services.ingest.validation import JSON, PROTOBUF, Limits, Rejection, decode, validate
from services.mllp.server import MllpService, refusal_without_header
from tests.factories import care_event

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
R = ing.RejectReason


def rejection(value: bytes, content_type: str) -> Rejection:
    with pytest.raises(Rejection) as info:
        validate(decode(value, content_type), NOW, Limits())
    return info.value


# -- ingest ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "nanos", "reason"), [
    (253402300800, 0, R.REJECT_REASON_FUTURE_TIMESTAMP),  # 10000-01-01: past what a Timestamp holds
    (2**63 - 1, 0, R.REJECT_REASON_FUTURE_TIMESTAMP),
    (-62135596801, 0, R.REJECT_REASON_IMPLAUSIBLE_TIMESTAMP),  # before year 1
    (-(2**63), 0, R.REJECT_REASON_IMPLAUSIBLE_TIMESTAMP),
    (253402300799, 2**31 - 1, R.REJECT_REASON_FUTURE_TIMESTAMP),  # nanos over a second
    (1_790_000_000, -1, R.REJECT_REASON_IMPLAUSIBLE_TIMESTAMP),  # a plausible second, impossible nanos
    (1_790_000_000, 1_000_000_000, R.REJECT_REASON_IMPLAUSIBLE_TIMESTAMP),
])
def test_an_event_time_no_timestamp_can_hold_is_rejected_not_an_error(seconds: int, nanos: int,
                                                                       reason: ing.RejectReason.ValueType) -> None:
    """Protobuf `event_time = 253402300800 s`: ToDatetime raised ValueError, a processing_error."""
    event = care_event(when=NOW - timedelta(hours=1))
    event.event_time.seconds, event.event_time.nanos = seconds, nanos
    assert rejection(event.SerializeToString(), PROTOBUF).reason == reason


def test_a_recorded_time_no_timestamp_can_hold_is_left_out() -> None:
    event = care_event(when=NOW - timedelta(hours=1))
    event.recorded_time.seconds, event.recorded_time.nanos = 1_099_511_627_776, 1_000_000_000
    decoded = decode(event.SerializeToString(), PROTOBUF)
    issues = validate(decoded, NOW, Limits())
    assert [(i.field, i.problem) for i in issues] == [("recorded_time", R.REJECT_REASON_FUTURE_TIMESTAMP)]
    assert not decoded.HasField("recorded_time")


@pytest.mark.parametrize("value", [
    b'{"sourceSector": 2147483648}',  # an enum number past 32 bits: ValueError building the message
    b'{"person": {"sex": -4294967296}}',
    b'{"eventType": ' + b"[" * 999 + b"1" + b"]" * 999 + b"}",  # RecursionError describing the value
])
def test_json_the_message_cannot_hold_is_a_schema_violation(value: bytes) -> None:
    """JSON inputs that ended as processing_error dead letters."""
    with pytest.raises(Rejection) as info:
        decode(value, JSON)
    assert info.value.reason == R.REJECT_REASON_SCHEMA_VIOLATION


def test_a_huge_id_makes_a_dead_letter_of_the_record_and_little_more() -> None:
    """A 900,000-character source_org was quoted in the message and copied into the dead letter's
    source_org: 2.7 MB, which the ingest producer refused, and the agent crashed."""
    event = care_event(when=NOW - timedelta(hours=1), source_org="R" * 900_000)
    value = event.SerializeToString()
    rej = rejection(value, PROTOBUF)
    assert rej.reason == R.REJECT_REASON_INVALID_FIELD and len(rej.message) <= 503
    assert rej.event is not None and len(rej.event.source_org) == 128 and rej.event.event_id == event.event_id
    processor = RecordProcessor(Pseudonymiser(b"k" * 32), Limits())
    letter = processor.process(RawRecord("t", 0, 1, b"k", value, [("content-type", PROTOBUF.encode())]), NOW)
    assert isinstance(letter, ing.DeadLetter) and letter.reason == R.REJECT_REASON_INVALID_FIELD
    assert len(letter.SerializeToString()) < len(value) + 1_000


def test_a_near_megabyte_rejected_record_fits_in_its_dead_letter() -> None:
    """A rejected record of nearly 1 MB (a JSON record with a long unknown-field value) made a dead
    letter over faust's 1,000,000-byte producer limit: the send failed, the stream agent died and
    its batch was acknowledged unprocessed. Stream workers now write records up to
    MAX_RECORD_BYTES, and a dead letter copies the original whole below that."""
    value = b'{"eventId": ' + b'"' + b"x" * 1_040_000 + b'"'  # not even JSON: rejected
    processor = RecordProcessor(Pseudonymiser(b"k" * 32), Limits())
    letter = processor.process(RawRecord("t", 0, 1, b"k", value, [("content-type", JSON.encode())]), NOW)
    assert isinstance(letter, ing.DeadLetter) and letter.original_value == value
    size = len(letter.SerializeToString())
    assert 1_000_000 < size <= MAX_RECORD_BYTES
    for broker in ("embedded", "kafka"):
        profile = client_profile(load_settings(pseudonym_key="00" * 32, broker_profile=broker))
        assert profile.faust_settings()["producer_max_request_size"] == MAX_RECORD_BYTES


def test_a_record_too_big_to_copy_is_dead_lettered_by_its_position() -> None:
    value = b"\xff" * (MAX_DEADLETTER_ORIGINAL_BYTES + 1)
    processor = RecordProcessor(Pseudonymiser(b"k" * 32), Limits())
    letter = processor.process(RawRecord("provider", 2, 99, b"k", value, [("content-type", PROTOBUF.encode())]),
                               NOW)
    assert isinstance(letter, ing.DeadLetter) and letter.original_value == b"" and not letter.original_headers
    assert (letter.source.topic, letter.source.partition, letter.source.offset) == ("provider", 2, 99)
    assert "not copied" in letter.message and len(letter.SerializeToString()) < 10_000


# -- the FHIR door ---------------------------------------------------------------------------------

def bundle() -> dict[str, Any]:
    return dict(orjson.loads(corpus.make("fhir", 1, 10, True).payload))


def rejected(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    with pytest.raises(BundleRejected) as info:
        parse_bundle(dumps(data), ("message",))  # carehub.fuzz's writer: deeper than orjson writes
    return [(i.code, i.expression, i.diagnostics) for i in info.value.issues]


@pytest.mark.parametrize("kind", ["Patientx", "Encounter Type", "", 5, None, True, ["Patient"], "HumanName"])
def test_an_entry_that_is_not_a_resource_type_is_a_400(kind: Any) -> None:
    """resourceType "Patientx" (KeyError) or 5 (TypeError) inside the model library: a 500."""
    data = bundle()
    data["entry"][2]["resource"]["resourceType"] = kind
    (issue,) = rejected(data)
    assert issue[:2] == ("structure", "Bundle.entry[2].resource.resourceType")


@pytest.mark.parametrize("endpoint", [5, 1.5, True, ["x"], {"a": 1}])
def test_a_url_of_the_wrong_type_is_a_400(endpoint: Any) -> None:
    """MessageHeader.source.endpoint 5: AttributeError ('int' has no startswith) in the library: a 500."""
    data = bundle()
    data["entry"][0]["resource"]["source"]["endpoint"] = endpoint
    assert rejected(data)


def test_extensions_nested_deep_are_a_400_not_a_recursion_error() -> None:
    """An extension 200 deep: RecursionError in the model library, a 500."""
    opening, inner = b'{"url":"https://example.org/x","extension":[', b'{"url":"https://example.org/x","valueString":"a"}'
    data = bundle()
    data["entry"][2]["resource"]["extension"] = Raw(b"[" + opening * 200 + inner + b"]}" * 200 + b"]")
    assert rejected(data) == [("too-costly", "Bundle", "nested deeper than 64 levels")]


def mapped(data: dict[str, Any]) -> Any:
    body = orjson.dumps(data)
    sender = load_senders(None).by_org("RR8")
    assert sender is not None
    return map_bundle(parse_bundle(body, ("message",)), body, sender, load_fhir_mapping())


def test_a_leap_second_is_a_warning_not_a_500() -> None:
    """period.start 2026-11-30T09:15:60Z and Bundle.timestamp likewise: FHIR's pattern allows them,
    datetime.fromisoformat raised ValueError."""
    data = bundle()
    data["timestamp"] = "2026-11-30T09:20:60+00:00"
    encounter = next(e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "Encounter")
    encounter["period"] = {"start": "2026-11-30T09:15:60+00:00"}
    out = mapped(data)
    assert {w.expression for w in out.warnings} >= {"Bundle.timestamp"}
    assert any("period.start" in w.expression for w in out.warnings + out.refusal)


def test_a_rank_written_as_text_is_read_as_the_validator_read_it() -> None:
    """Encounter.diagnosis.rank "1" (pydantic takes it as 1): comparing "1" with 0 raised TypeError."""
    for seed in range(40):  # an admission with a diagnosis
        data = dict(orjson.loads(corpus.make("fhir", seed, 10, True).payload))
        encounter = next(e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "Encounter")
        if encounter.get("diagnosis") and encounter.get("status") == "in-progress":
            break
    encounter["diagnosis"][0]["rank"] = "1"
    out = mapped(data)
    assert out.accepted and out.events[0].clinical.diagnoses[0].position == 1


# -- the MLLP door ---------------------------------------------------------------------------------

def test_a_refusal_without_header_is_ascii_whatever_the_text() -> None:
    """An MSH-18 of byte 0xFF: its name in the refusal text broke the ASCII encoding of the AR."""
    ack = refusal_without_header("MSH-18 character set '\xff' is not supported, nor 'Ä' or '\u4e2d'")
    assert ack.decode("ascii").startswith("MSH|") and "MSA|AR||MSH-18 character set" in ack.decode()


class Producer:
    """Takes the door's writes without a broker, and refuses a record over the size the door's
    producer is set up for (its max_request_size), as aiokafka does."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[None]:
        size = len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers or [])
        if size > self.limit:
            raise ValueError(f"MessageSizeTooLargeError: {size} bytes")
        self.sent.append((topic, value, key or b"", headers or []))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def mllp_service() -> tuple[MllpService, Producer]:
    settings = load_settings(kafka_bootstrap="127.0.0.1:9")
    service = MllpService(settings, "127.0.0.1:9")
    producer = Producer(settings.mllp_max_message_bytes + 64 * 1024)  # as MllpService.run sets it up
    service.producer = cast(AIOKafkaProducer, producer)
    return service, producer


def valid_message() -> bytes:
    return corpus.make("hl7", 11, 10, True).payload[1:-2]


@pytest.mark.parametrize("charset", [b"\xff", b"UNICO\xc4E UTF-8"])
def test_a_charset_name_that_is_not_ascii_gets_an_ar(charset: bytes) -> None:
    """Inputs hl7:59 and hl7:1634 of seed 11: the connection closed without an ACK."""
    message = valid_message().replace(b"|UNICODE UTF-8\r", b"|" + charset + b"\r")
    assert charset in message
    service, producer = mllp_service()
    ack = asyncio.run(service.handle(message))
    assert ack is not None and b"MSA|AR|" in ack
    ack.decode("ascii")
    (topic, value, _, _), = producer.sent  # the refused bytes went to the dead-letter topic
    assert topic.endswith("ingest.deadletter") and ing.DeadLetter.FromString(value).original_value == message


def test_a_huge_msh3_is_stored_once_not_refused_for_ever() -> None:
    """Input hl7:14369 of seed 21 (MSH-3 of 900,000 bytes): the raw record's key repeated MSH-3, the
    record was over the producer's limit, and the door answered AE ("please resend") for ever."""
    message = valid_message().replace(b"|SYNTH_PAS|", b"|" + b"W" * 900_000 + b"|", 1)
    service, producer = mllp_service()
    ack = asyncio.run(service.handle(message))
    assert ack is not None and b"MSA|AA|" in ack
    raw = [(key, value) for topic, value, key, _ in producer.sent if topic.endswith("mllp.raw")]
    assert raw == [(b"W" * 128 + b"/" + raw[0][0].split(b"/", 1)[1], message)] and len(raw[0][0]) < 300
    events = [headers for topic, _, _, headers in producer.sent if topic.endswith("provider.events")]
    assert events and all(len(v) <= 128 for h in events for _, v in h)


def test_a_huge_facility_is_refused_and_dead_lettered() -> None:
    """MSH-4 of 900,000 bytes: refused (unknown facility), and the dead letter repeated it in its
    source_org, over the limit: refused but not dead-lettered."""
    message = valid_message()
    facility = message.split(b"|")[3]
    message = message.replace(b"|" + facility + b"|", b"|" + b"F" * 900_000 + b"|", 1)
    service, producer = mllp_service()
    ack = asyncio.run(service.handle(message))
    assert ack is not None and b"MSA|AR|" in ack
    (topic, value, _, _), = producer.sent
    letter = ing.DeadLetter.FromString(value)
    assert topic.endswith("ingest.deadletter") and letter.original_value == message
    assert letter.source_org == "F" * 128


def test_generated_malformed_inputs_include_these() -> None:
    """The fuzzer still makes each kind of input above (so a regression shows in `make fuzz` too)."""
    names = [m for i in range(3000) for m in corpus.make("protobuf", 1, i, False).mutations]
    assert any("out_of_range_timestamp" in n for n in names)
    rng = Random(1)
    assert corpus.care_event(rng, "e", "l").event_id == "e"
    assert ce.EventType.Name(corpus.care_event(rng, "e", "l", ce.EVENT_TYPE_ADMISSION).event_type) == \
        "EVENT_TYPE_ADMISSION"
