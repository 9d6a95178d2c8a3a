"""Ingest through the real embedded broker and real worker processes."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from carehub import deadletters
from carehub.kafka.read import fetch_ends, read_to_end
from carehub.sdk import Publisher
from carehub.telemetry import setup_tracing
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing
from tests.factories import VALID_NHS, care_event
from tests.integration.conftest import ROOT, Hub, assert_not_in_clear, hub_topics

pytestmark = pytest.mark.integration


def accepted(values: list[bytes]) -> list[ing.AcceptedEvent]:
    return [e for v in values for e in ing.AcceptedBatch.FromString(v).events]


def accepted_when_done(hub: Hub, timeout_s: float = 120.0) -> list[ing.AcceptedEvent]:
    """Every accepted event, once ingest has committed the provider topic to its end.

    ingest's output is flushed before it commits, so extra or missing events would show here.
    """
    hub.wait_caught_up("ingest", ["provider.events"], timeout_s)
    return accepted(hub.values("ingest.accepted"))


def where(hub: Hub, event_ids: list[str]) -> str:
    """Where the provider topic holds ``event_ids``, and how far ingest committed: for a failure message."""
    found = [f"{r.topic}[{r.partition}]@{r.offset}" for r in read_to_end(hub.bootstrap, hub.topic("provider.events"))
             for i in event_ids if r.value and i.encode() in r.value]
    ends = fetch_ends(hub.bootstrap, [hub.topic("provider.events")])
    committed = hub.committed("ingest", list(ends))
    return (f"in the provider topic at: {found or 'nowhere'}; ends {dict(sorted(ends.items()))}; "
            f"ingest committed {dict(sorted(committed.items()))}")


def people(n: int, tag: str) -> list[ce.CareEvent]:
    return [
        care_event(ce.EVENT_TYPE_GP_CONTACT, local_id=f"{tag}-{i}", source_org="B86001",
                   given=f"Given{tag}{i}", family="Whitfield")
        for i in range(n)
    ]


def test_accepts_pseudonymised_rejects_with_reasons_and_drops_duplicates(hub: Hub) -> None:
    memory = InMemorySpanExporter()
    setup_tracing("carehub-test-publisher", extra_processor=SimpleSpanProcessor(memory))
    worker = hub.start_with_metrics("ingest")
    good = people(12, "p")
    future = care_event(when=datetime.now(UTC) + timedelta(days=3))
    bad_nhs = care_event(national_id="9434765918", local_id="bad-nhs-1")  # degraded, not dropped
    unknown_enum = json_format.MessageToDict(care_event())
    unknown_enum["eventType"] = "EVENT_TYPE_TELEPATHY"
    bad_records = {
        "REJECT_REASON_MALFORMED_JSON": (b'{"eventId": "e-1", "sourceOrg": ', "application/json"),
        "REJECT_REASON_UNKNOWN_ENUM": (orjson.dumps(unknown_enum), "application/json"),
        "REJECT_REASON_FUTURE_TIMESTAMP": (future.SerializeToString(), "application/x-protobuf"),
        "REJECT_REASON_MALFORMED_PROTOBUF": (care_event().SerializeToString()[:-11], "application/x-protobuf"),
    }
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for i, event in enumerate(good):
            pub.publish(event, "json" if i % 2 else "protobuf")
        for event in good[:4]:  # resent: must be accepted once
            pub.publish(event)
        pub.publish(bad_nhs)
        for value, content_type in bad_records.values():
            pub.publish_raw(value, b"bad", content_type)
        pub.flush()
    assert pub.failed == 0

    got = accepted_when_done(hub)
    assert sorted(e.event_id for e in got) == sorted(e.event_id for e in [*good, bad_nhs])
    degraded = next(e for e in got if e.event_id == bad_nhs.event_id)  # the admission is kept, marked
    assert [(q.field, q.problem) for q in degraded.quality] == [("person.national_id",
                                                                 ing.REJECT_REASON_INVALID_NHS_NUMBER)]
    assert not degraded.person.national_id_hash and degraded.person.local_id == "bad-nhs-1"
    by_id = {e.event_id: e for e in got}
    sample = by_id[good[0].event_id]
    assert sample.person.local_id == "p-0"
    assert len(sample.person.national_id_hash) == 32 and sample.person.age_years >= 80
    assert sample.source.topic == hub.topic("provider.events")

    # the trace the SDK started continues in ingest
    publish_spans = {s.context.trace_id for s in memory.get_finished_spans() if s.name.endswith("publish")}
    traceparent = sample.trace_context["traceparent"]
    assert int(traceparent.split("-")[1], 16) in publish_spans

    letters = [ing.DeadLetter.FromString(v) for v in hub.values("ingest.deadletter")]
    assert sorted(ing.RejectReason.Name(d.reason) for d in letters) == sorted(bad_records)
    for d in letters:
        value, _ = bad_records[ing.RejectReason.Name(d.reason)]
        assert d.original_value == value and d.message
        assert d.source.topic == hub.topic("provider.events") and d.source.offset >= 0

    # no raw identifier on any topic after ingest (the dead-letter topic is the one exception)
    topics = hub_topics(hub, lambda t: "deadletter" not in t and "provider" not in t)
    assert any("changelog" in t for t in topics) and hub.topic("ingest.accepted") in topics
    raw = [VALID_NHS.encode(), b"Whitfield", b"WHITFIELD", b"Givenp0", b"LS1 4AP", b"LS14AP", b"1941-03-17",
           b"Pinkerton", b"PINKERTON"]
    assert assert_not_in_clear(hub.bootstrap, topics, raw) >= 3  # at least the accepted batches
    assert VALID_NHS not in hub.log_text() and "Whitfield" not in hub.log_text()

    # the worker's own metrics tell the same story
    metrics = worker.metrics()
    assert metrics["carehub_ingest_received_total"] == len(good) + 4 + 1 + len(bad_records)
    assert metrics["carehub_ingest_accepted_total"] == len(good) + 1
    assert metrics["carehub_ingest_degraded_total"] == 1
    assert metrics["carehub_ingest_duplicates_total"] == 4
    assert metrics["carehub_ingest_rejected_total"] == len(bad_records)
    assert metrics["carehub_ingest_latency_from_publish_seconds_count"] == len(good) + 1

    # and the sender's data-quality report, as an operator reads it (today: the processing day)
    report = subprocess.run([sys.executable, "-m", "carehub", "quality", "--org", bad_nhs.source_org, "--json"],
                            cwd=ROOT, env=hub.env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    [today] = orjson.loads(report.stdout)
    assert today["source_org"] == bad_nhs.source_org and int(today["accepted"]) == 1
    assert today["degraded_by_problem"] == {"person.national_id: INVALID_NHS_NUMBER": "1"}
    table = subprocess.run([sys.executable, "-m", "carehub", "quality", "--org", "B86001"], cwd=ROOT, env=hub.env,
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    received, accepted, *_ = next(line for line in table.stdout.splitlines() if line.startswith("all")).split()[1:]
    duplicates = next(line for line in table.stdout.splitlines() if line.startswith("all")).split()[-2]
    assert (int(received), int(accepted), int(duplicates)) == (len(good) + 4, len(good), 4), table.stdout


def test_restart_loses_nothing_and_reaccepts_nothing(hub: Hub) -> None:
    worker = hub.start("ingest")
    first, second = people(30, "a"), people(30, "b")
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for event in first:
            pub.publish(event)
    assert len(accepted_when_done(hub)) == len(first)
    assert hub.stop(worker) == 0, hub.log_text()[-3000:]

    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for event in second + first:  # the first lot again, as a provider retrying would
            pub.publish(event)
    assert pub.failed == 0, pub.errors
    hub.start("ingest")
    got = accepted_when_done(hub)
    ids = [e.event_id for e in got]
    missing = sorted({e.event_id for e in first + second} - set(ids))
    lots = {e.event_id: "first" for e in first} | {e.event_id: "second" for e in second}
    assert not missing, f"not accepted: {[(i, lots[i]) for i in missing]}\n{where(hub, missing)}\n" \
                        f"{hub.log_text()[-3000:]}"
    assert len(ids) == len(set(ids)) == len(first) + len(second)


def test_a_near_megabyte_rejected_record_is_dead_lettered_whole_and_its_batch_kept(hub: Hub) -> None:
    """A dead letter carries its rejected record whole, so one of nearly 1 MB is bigger than
    faust's default producer limit: the send used to fail, and the batch around it was lost."""
    worker = hub.start("ingest")
    before, after = people(5, "before"), people(5, "after")
    huge = b'{"eventId": "' + b"x" * 1_040_000  # unfinished JSON: rejected
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for event in before:
            pub.publish(event)
        pub.publish_raw(huge, b"B86001/huge", "application/json")
        for event in after:
            pub.publish(event)
    assert pub.failed == 0, pub.errors
    got = accepted_when_done(hub)
    assert sorted(e.event_id for e in got) == sorted(e.event_id for e in before + after)
    letters = [ing.DeadLetter.FromString(v) for v in hub.values("ingest.deadletter")]
    assert [(d.reason, d.original_value == huge) for d in letters] == [(ing.REJECT_REASON_MALFORMED_JSON, True)]
    assert worker.proc.poll() is None, hub.log_text()[-3000:]


def test_dead_letters_listed_and_replayed_once_after_the_cause_is_fixed(hub: Hub) -> None:
    worker = hub.start("ingest")
    ahead = care_event(when=datetime.now(UTC) + timedelta(hours=30))  # a provider clock 30 h fast
    path = hub.data_dir / "events.jsonl"
    path.write_text(json_format.MessageToJson(ahead, indent=None) + "\n" + "{not json\n")
    env = dict(hub.env)
    cli = [sys.executable, "-m", "carehub", ]
    out = subprocess.run([*cli, "publish", str(path), "--topic", hub.topic("provider.events")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "sent 2, failed 0" in out.stdout
    topic = hub.topic("ingest.deadletter")
    hub.wait_caught_up("ingest", ["provider.events"])
    assert len(hub.values("ingest.deadletter")) == 2

    listing = subprocess.run([*cli, "dlq", "list"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "2 dead letters" in listing.stdout
    assert "future_timestamp" in listing.stdout and "malformed_json" in listing.stdout

    hub.stop(worker)  # the fix: this region's providers may run up to 48 h ahead
    hub.start("ingest", CAREHUB_MAX_FUTURE_SKEW_HOURS="48")
    replayed = subprocess.run([*cli, "dlq", "replay", "--reason", "future_timestamp"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 dead letters; 0 were replayed before" in replayed.stdout
    got = accepted_when_done(hub)
    assert [e.event_id for e in got] == [ahead.event_id]

    again = deadletters.replay(hub.bootstrap, topic, hub.topic("ingest.deadletter.replayed"), "future_timestamp")
    assert again == (0, 1)
