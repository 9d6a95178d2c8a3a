"""The fuzzer's mutations and inputs (carehub.fuzz): pure, seeded, and what they claim to make."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from random import Random
from typing import Any

import orjson
import pytest
from google.protobuf.message import DecodeError

from carehub.domain.fhir.bundle import parse_bundle
from carehub.domain.fhir.mapping import load_fhir_mapping, map_bundle
from carehub.domain.fhir.senders import load_senders
from carehub.domain.hl7v2.charset import decode as decode_hl7
from carehub.domain.hl7v2.mapping import load_adt_mapping, map_message
from carehub.fuzz import corpus, fhir, hl7, mutators, protobuf
from carehub.fuzz.campaign import ACCEPTED, DEAD, DUPLICATE, NO_EVENT, SKIPPED, UNACCOUNTED, _combine, _identity
from carehub.v1 import care_event_pb2 as ce
from services.ingest.validation import Limits, decode, validate

LIMIT = 1024 * 1024 + 3


def event() -> ce.CareEvent:
    return corpus.care_event(Random(1), "fz-pr-1-0", "FZ-PR1-0", ce.EVENT_TYPE_ADMISSION, "RR8")


# -- the same seed, the same inputs ----------------------------------------------------------------

@pytest.mark.parametrize("form", corpus.FORMS)
def test_a_seed_gives_the_same_inputs_and_another_seed_others(form: corpus.Form) -> None:
    first = list(corpus.generate(form, 5, 60))
    assert first == list(corpus.generate(form, 5, 60))
    assert [i.payload for i in first] != [i.payload for i in corpus.generate(form, 6, 60)]
    assert len(first) == corpus.total(60, 10) == 66
    assert [i.index for i in first] == list(range(66))
    assert [i.index for i in first if i.valid] == [10, 21, 32, 43, 54, 65]
    assert all(i.mutations for i in first if not i.valid) and not any(i.mutations for i in first if i.valid)
    assert corpus.make(form, 5, 43, True) == first[43]  # one input made again on its own


def test_valid_and_malformed_inputs_never_share_an_id() -> None:
    valid, malformed = corpus.make("json", 3, 10, True), corpus.make("json", 3, 9, False)
    assert valid.mark == f"{orjson.loads(valid.payload)['sourceOrg']}/ok-js-3-10"
    assert b"ok-" not in malformed.payload and valid.key and malformed.key and valid.key != malformed.key


@pytest.mark.parametrize("form", ["protobuf", "json"])
def test_valid_provider_records_pass_ingest_validation_clean(form: corpus.Form) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    for inp in corpus.generate(form, 2, 300):
        if inp.valid:
            parsed = decode(inp.payload, inp.content_type)
            assert validate(parsed, now, Limits()) == [], inp.index
            assert f"{parsed.source_org}/{parsed.event_id}" == inp.mark


def test_valid_hl7_messages_are_accepted_with_events() -> None:
    mapping = load_adt_mapping()
    for inp in corpus.generate("hl7", 2, 300):
        if inp.valid:
            (piece,) = hl7.pieces(inp.payload, LIMIT)
            mapped = map_message(decode_hl7(piece.payload), mapping)
            assert mapped.refusal is None and mapped.events and mapped.control_id == inp.mark


def test_valid_fhir_bundles_are_accepted_with_events() -> None:
    mapping, sender = load_fhir_mapping(), load_senders(None).by_org("RR8")
    assert sender is not None
    for inp in corpus.generate("fhir", 2, 300):
        if inp.valid:
            mapped = map_bundle(parse_bundle(inp.payload, ("message",)), inp.payload, sender, mapping)
            assert mapped.accepted and mapped.events and not mapped.warnings and mapped.bundle_key == inp.mark


# -- bytes -----------------------------------------------------------------------------------------

DATA = b'{"eventId": "e-1", "sourceOrg": "RR8"}'


@pytest.mark.parametrize("name", sorted(mutators.BYTE_MUTATIONS))
def test_each_byte_mutation_is_a_function_of_its_input_and_seed(name: str) -> None:
    mutation = mutators.BYTE_MUTATIONS[name]
    outs = {mutation(DATA, Random(s)) for s in range(20)}
    assert {mutation(DATA, Random(s)) for s in range(20)} == outs
    assert outs != {DATA}
    assert isinstance(mutation(b"", Random(1)), bytes)


def test_byte_mutations_do_what_they_say() -> None:
    rng = Random(3)
    flipped = mutators.flip_bits(DATA, rng)
    assert len(flipped) == len(DATA) and flipped != DATA
    assert len(mutators.truncate(DATA, rng)) < len(DATA)
    assert len(mutators.insert_random(DATA, rng)) > len(DATA)
    inserted = mutators.insert_boundary(DATA, rng)
    assert any(b in inserted for b in mutators.BOUNDARY_BYTES) and len(inserted) > len(DATA)
    assert len(mutators.duplicate_chunk(DATA, rng)) > len(DATA)
    _, names = mutators.mutate_bytes(DATA, Random(1), rounds=3)
    assert len(names) == 3 and all(n.startswith("bytes.") for n in names)


# -- JSON ------------------------------------------------------------------------------------------

def test_dumps_writes_raw_tokens_and_duplicate_keys_as_they_are() -> None:
    doc = {"a": mutators.Raw(b"NaN"), "b": mutators.Pairs((("k", 1), ("k", "2"))), "c": [2**70, None]}
    assert mutators.dumps(doc) == b'{"a":NaN,"b":{"k":1,"k":"2"},"c":[1180591620717411303424,null]}'


def held(doc: Any) -> list[Any]:
    return [orjson.loads(orjson.dumps(doc))]


def test_json_mutations_hit_members_not_bytes() -> None:
    base = {"eventId": "e", "eventType": "EVENT_TYPE_ADMISSION", "person": {"givenName": "Ann"},
            "eventTime": "2026-10-01T10:15:00Z"}
    holder = held(base)
    assert mutators.drop_member(holder, Random(1))
    assert len(orjson.loads(mutators.dumps(holder[0])).keys() | holder[0].get("person", {}).keys()) >= 1
    holder = held(base)
    mutators.duplicate_member(holder, Random(2))
    text = mutators.dumps(holder[0])
    assert max(text.count(f'"{k}":'.encode()) for k in ("eventId", "eventType", "person", "eventTime",
                                                        "givenName")) == 2
    holder = held(base)
    mutators.unknown_enum(holder, Random(3))
    assert "EVENT_TYPE_ADMISSION" not in orjson.dumps(holder[0]).decode() or holder[0]["eventType"] != base[
        "eventType"]
    holder = held(base)
    assert mutators.bad_timestamp(holder, Random(4))
    assert holder[0]["eventTime"] in mutators.BAD_TIMES


def test_huge_strings_deep_nesting_and_invalid_utf8() -> None:
    holder = held({"person": {"givenName": "Ann"}})
    mutators.huge_string(holder, Random(1), (0, "person", "givenName"))
    assert len(holder[0]["person"]["givenName"]) >= mutators.HUGE // 3
    nested = mutators.nested(100_000, Random(1)).data
    assert len(nested) > 200_000 and nested.count(b"[") + nested.count(b"{") == 100_000
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(nested)  # past orjson's 1024 levels
    holder = held({"name": "Ann"})
    mutators.invalid_utf8(holder, Random(5))
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(mutators.dumps(holder[0]))


def test_mutate_json_leaves_its_input_alone_and_is_seeded() -> None:
    doc = {"a": {"b": [1, 2, {"c": "x"}]}, "d": "2026-01-01T00:00:00Z"}
    before = orjson.dumps(doc)
    outs = [mutators.mutate_json(doc, Random(s), 3) for s in range(30)]
    assert orjson.dumps(doc) == before
    assert outs == [mutators.mutate_json(doc, Random(s), 3) for s in range(30)]
    assert all(names for _, names in outs) and len({body for body, _ in outs}) > 20


# -- protobuf --------------------------------------------------------------------------------------

def test_the_wire_reader_reads_back_what_the_library_wrote() -> None:
    data = event().SerializeToString()
    fields = protobuf.parse_wire(data, ce.CareEvent.DESCRIPTOR)
    assert protobuf.encode_wire(fields) == data
    person = next(f for f in fields if f.number == 8)
    assert person.children is not None and person.message is ce.Person.DESCRIPTOR


@pytest.mark.parametrize("name", sorted(protobuf.WIRE_MUTATIONS))
def test_each_wire_mutation_changes_the_encoding(name: str) -> None:
    data = event().SerializeToString()
    mutation = protobuf.WIRE_MUTATIONS[name][0]
    changed = 0
    for seed in range(10):
        fields = protobuf.parse_wire(data, ce.CareEvent.DESCRIPTOR)
        if mutation(fields, ce.CareEvent.DESCRIPTOR, Random(seed)) is not None:
            changed += protobuf.encode_wire(fields) != data
    assert changed >= 5


def test_wire_mutations_make_what_they_claim() -> None:
    data = event().SerializeToString()
    fields = protobuf.parse_wire(data, ce.CareEvent.DESCRIPTOR)
    protobuf.unknown_field(fields, ce.CareEvent.DESCRIPTOR, Random(1))
    parsed = ce.CareEvent.FromString(protobuf.encode_wire(fields))  # unknown fields are kept, not errors
    assert parsed.event_id == "fz-pr-1-0" and len(parsed.SerializeToString()) > len(data)
    fields = protobuf.parse_wire(data, ce.CareEvent.DESCRIPTOR)
    protobuf.huge_length(fields, ce.CareEvent.DESCRIPTOR, Random(2))
    with pytest.raises(DecodeError):
        ce.CareEvent.FromString(protobuf.encode_wire(fields))
    fields = protobuf.parse_wire(data, ce.CareEvent.DESCRIPTOR)
    assert protobuf.invalid_utf8_string(fields, ce.CareEvent.DESCRIPTOR, Random(3))
    with pytest.raises(DecodeError):
        ce.CareEvent.FromString(protobuf.encode_wire(fields))


def test_field_mutations_set_values_outside_the_contract() -> None:
    changed = event()
    protobuf.out_of_range_timestamp(changed, Random(1))
    stamps = [changed.event_time, changed.recorded_time]
    assert any(s.seconds in protobuf.SECONDS and s.nanos in protobuf.NANOS for s in stamps)
    changed = event()
    what = protobuf.unknown_enum_number(changed, Random(2))
    assert any(str(n) in what for n in protobuf.UNKNOWN_NUMBERS)
    body, names = protobuf.mutate_protobuf(event(), Random(4))
    assert names and body != event().SerializeToString()


# -- HL7 v2 and MLLP -------------------------------------------------------------------------------

MESSAGE = b"MSH|^~\\&|PAS|RR8|CAREHUB|CAREHUB|20261001101700||ADT^A01^ADT_A01|C1|P|2.4\rEVN|A01\rPID|1||H1^^^RR8^MR\r"


def test_segments_split_and_join_back() -> None:
    assert hl7.join(hl7.split(MESSAGE)) == MESSAGE
    segments = hl7.split(MESSAGE)
    assert segments[0][hl7._msh_index(10)] == b"C1" and segments[2][3] == b"H1^^^RR8^MR"


@pytest.mark.parametrize("name", sorted(hl7.HL7_MUTATIONS))
def test_each_hl7_mutation_changes_the_message(name: str) -> None:
    mutation = hl7.HL7_MUTATIONS[name][0]
    results = []
    for seed in range(12):
        segments = hl7.split(MESSAGE)
        if mutation(segments, Random(seed)) is not None:
            results.append(hl7.join(segments))
    assert results and sum(r != MESSAGE for r in results) >= len(results) // 2


def test_ack_modes_and_charsets_land_in_msh() -> None:
    segments = hl7.split(MESSAGE)
    hl7.ack_modes(segments, Random(1))
    assert segments[0][hl7._msh_index(15)] in hl7.MSH_VALUES[15]
    segments = hl7.split(MESSAGE)
    hl7.charset(segments, Random(2))
    assert segments[0][hl7._msh_index(18)] in hl7.CHARSETS


def test_mutate_hl7_gives_a_stream_for_one_connection() -> None:
    streams = [hl7.mutate_hl7(MESSAGE, Random(s)) for s in range(200)]
    assert streams == [hl7.mutate_hl7(MESSAGE, Random(s)) for s in range(200)]
    assert all(names for _, names in streams)
    framed = sum(s.startswith(hl7.START) and s.endswith(hl7.END) for s, _ in streams)
    assert 100 < framed < 200  # most framed, some framing broken on purpose


@pytest.mark.parametrize(("stream", "kinds"), [
    (hl7.frame(MESSAGE), ["frame"]),
    (b"junk" + hl7.frame(MESSAGE), ["frame"]),
    (MESSAGE + hl7.END, ["garbage"]),
    (hl7.START + MESSAGE, ["unterminated"]),
    (hl7.frame(MESSAGE) * 2, ["frame", "frame"]),
    (hl7.frame(b"A" * 100) + hl7.frame(b"B" * 2000), ["frame", "oversize"]),
    (b"\r\n ", []),
])
def test_pieces_read_a_stream_as_the_server_does(stream: bytes, kinds: list[str]) -> None:
    assert [p.kind for p in hl7.pieces(stream, 1000)] == kinds


def test_the_message_after_the_last_start_block_is_the_one_read() -> None:
    (piece,) = hl7.pieces(hl7.START + b"half a mess" + hl7.frame(MESSAGE), LIMIT)
    assert piece.payload == MESSAGE


@pytest.mark.parametrize(("msh15", "stored", "due"), [
    ("", True, True), ("AL", False, True), ("NE", True, False), ("NE", False, False),
    ("ER", True, False), ("ER", False, True), ("SU", True, True), ("SU", False, False), ("XX", False, True),
])
def test_an_ack_is_due_unless_msh15_excuses_it(msh15: str, stored: bool, due: bool) -> None:
    message = f"MSH|^~\\&|PAS|RR8|||20261001||ADT^A01|C1|P|2.5|||{msh15}|AL\rEVN|A01\r".encode()
    assert hl7.ack_expected(message, stored) is due
    assert hl7.ack_expected(b"not HL7 at all", stored) is True


def test_ack_fields_read_msa() -> None:
    assert hl7.ack_fields(b"MSH|^~\\&|CAREHUB\rMSA|AE|C1|text\r") == ("AE", "C1")
    assert hl7.ack_fields(b"garbage") == ("?", "")


# -- FHIR ------------------------------------------------------------------------------------------

def bundle() -> dict[str, Any]:
    return dict(orjson.loads(corpus.make("fhir", 1, 10, True).payload))


@pytest.mark.parametrize("name", sorted(fhir.FHIR_MUTATIONS))
def test_each_fhir_mutation_applies_to_a_notification(name: str) -> None:
    mutation = fhir.FHIR_MUTATIONS[name][0]
    changed = 0
    for seed in range(8):
        holder = [bundle()]
        if mutation(holder, Random(seed)) is not None:
            changed += mutators.dumps(holder[0]) != orjson.dumps(bundle())
    assert changed >= 4  # some draws may put back a value the Bundle had


def test_structure_aware_fhir_mutations() -> None:
    holder = [bundle()]
    fhir.no_message_header(holder, Random(1))
    assert all(e["resource"]["resourceType"] != "MessageHeader" for e in holder[0]["entry"])
    holder = [bundle()]
    fhir.deep_extensions(holder, Random(1))
    body = mutators.dumps(holder[0])
    assert body.count(b'"extension":[') >= min(fhir.EXTENSION_DEPTHS)
    outs = [fhir.mutate_fhir(bundle(), Random(s)) for s in range(300)]
    assert {path for _, _, path, _ in outs} == {fhir.MESSAGE_PATH, fhir.TRANSACTION_PATH}
    assert len({ctype for _, ctype, _, _ in outs}) > 1
    assert all(names for *_, names in outs)


# -- accounting helpers ----------------------------------------------------------------------------

def test_identity_reads_both_spellings_and_protobuf() -> None:
    assert _identity(b'{"sourceOrg": "RR8", "eventId": "e1"}', b"application/json") == ("RR8", "e1")
    assert _identity(b'{"source_org": "RR8", "eventId": "a", "event_id": "b"}', None) == ("RR8", "b")
    assert _identity(event().SerializeToString(), b"application/x-protobuf") == ("RR8", "fz-pr-1-0")
    assert _identity(b"\xff\xff", None) is None and _identity(b"[1]", None) is None


def test_one_outcome_per_input_by_priority() -> None:
    combine: Callable[[list[tuple[str, list[str]]]], tuple[str, list[str]]] = _combine
    assert combine([(ACCEPTED, []), (DUPLICATE, [])]) == (ACCEPTED, [])
    assert combine([(ACCEPTED, []), (DEAD, ["ingest: too_long"])]) == (DEAD, ["ingest: too_long"])
    assert combine([(NO_EVENT, []), (UNACCOUNTED, ["x"])])[0] == UNACCOUNTED
    assert combine([]) == (SKIPPED, [])
