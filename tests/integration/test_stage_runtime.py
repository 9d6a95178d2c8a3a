"""The stage runtime on the embedded broker: batches of plain records, readiness that means working.

A real faust app built by ``StageRuntime`` runs in this process with one batch stage. Its
readiness must be "not ready" before it has partitions, "ready" once assigned and recovered, and
"not ready" again when records wait and the stage makes no progress (here: the stage is held
on purpose), then ready again when it moves. The HTTP endpoint of a real ingest worker answers
/ready with 200 once it is consuming, and /live.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from carehub.harness import LocalHub, eventually
from carehub.kafka.broker import EmbeddedBroker, create_topics
from carehub.kafka.read import read_to_end
from carehub.runtime.health import Health
from carehub.runtime.stage import EXIT_BATCH_FAILED, Batch, StageRecord, StageRuntime
from carehub.settings import load_settings
from carehub.topics import TopicSpec
from tests.integration.conftest import ROOT
from tests.integration.table_stage import digest

pytestmark = pytest.mark.integration

DEADLINE_S = 90.0


class HeldStage:
    """Records every batch; holds the first one until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.records: list[StageRecord] = []

    async def process_batch(self, batch: Batch) -> None:
        await self.release.wait()
        self.records += batch.records


async def until(predicate: Any, what: str, timeout_s: float = DEADLINE_S) -> None:
    """Poll ``predicate`` on the app's own loop until it holds; fail naming ``what`` at the deadline."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s:.0f} s: {what}") from None


def test_readiness_follows_assignment_progress_and_stalls(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = load_settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}",
                             data_dir=tmp_path, pseudonym_key=secrets.token_hex(32), partitions=1)
    source = settings.topic("stage.in")
    create_topics(broker.bootstrap, [TopicSpec(source, 1)])
    health = Health(fresh_s=10.0)
    runtime = StageRuntime("stage", settings, broker.bootstrap, health=health, stall_after_s=3.0)
    stage = HeldStage()
    runtime.batch_stage("held", [source], stage, size=100, within_s=0.1)
    assert health.ready_report()[0] == 503  # nothing judged yet

    def reasons() -> str:
        return " ".join(health.ready_report()[1]["reasons"])

    async def run() -> None:
        await runtime.app.start()
        try:
            await until(lambda: health.ready_report()[0] == 200, "ready once assigned and recovered")
            assert runtime.recovered() and runtime.assigned(source) == {0}
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
            for i in range(5):
                producer.send(source, key=b"k", value=f"v{i}".encode(), headers=[("h", b"1")])
            producer.flush()
            producer.close()
            # the stage holds its first batch: records wait, nothing progresses -> not ready, and why
            await until(lambda: "no progress" in reasons(), "a stall is reported")
            assert health.ready_report()[0] == 503
            assert health.ready_report()[1]["held"]["lag_records"] == 5
            assert health.live_report()[0] == 200  # stalled, not dead: nobody should restart it for that
            stage.release.set()
            await until(lambda: len(stage.records) == 5, "the held batch goes through")
            await until(lambda: health.ready_report()[0] == 200, "ready again once it moved")
            assert health.ready_report()[1]["held"]["lag_records"] == 0
        finally:
            await runtime.app.stop()

    asyncio.run(run())
    first = stage.records[0]
    assert (first.topic, first.partition, first.offset, first.key, first.value) == (source, 0, 0, b"k", b"v0")
    assert first.headers == (("h", b"1"),) and first.timestamp_s > 0
    assert [r.offset for r in stage.records] == [0, 1, 2, 3, 4]


def test_a_worker_answers_ready_and_live_over_http(hub: LocalHub) -> None:
    worker = hub.start_with_metrics("ingest")
    assert worker.metrics_url is not None
    base = worker.metrics_url.removesuffix("/metrics")

    def get(path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}

    def ready() -> dict[str, Any] | None:
        status, body = get("/ready")
        return body if status == 200 else None

    body = eventually(ready, 120, "ingest answers /ready 200")
    assert body["ready"] is True and body["ingest"]["lag_records"] == 0
    assert get("/live")[0] == 200
    assert "carehub_ready 1.0" in urllib.request.urlopen(worker.metrics_url, timeout=5).read().decode()


class MisbehavingWorker:
    """tests/integration/failing_stage.py as a worker process on a topic of its own, with ``values``
    (five records, a poison one, five more) published before it starts."""

    values = [f"v{i}".encode() for i in range(5)] + [b"poison"] + [f"w{i}".encode() for i in range(5)]

    def __init__(self, broker: EmbeddedBroker, tmp_path: Path, mode: str) -> None:
        prefix = f"t{uuid.uuid4().hex[:10]}"
        source = f"{prefix}.stage.in"
        create_topics(broker.bootstrap, [TopicSpec(source, 1)])
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for value in self.values:
            producer.send(source, value=value)
        producer.flush()
        producer.close()
        self.tmp_path = tmp_path
        self.out, self.marker = tmp_path / "processed.txt", tmp_path / "misbehaved-once"
        self.env = {**os.environ, "CAREHUB_KAFKA_BOOTSTRAP": broker.bootstrap, "CAREHUB_TOPIC_PREFIX": prefix,
                    "CAREHUB_DATA_DIR": str(tmp_path), "CAREHUB_PSEUDONYM_KEY": secrets.token_hex(32),
                    "CAREHUB_PARTITIONS": "1"}
        self.command = [sys.executable, "-m", "tests.integration.failing_stage", mode, source, str(self.out),
                        str(self.marker)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"worker-{len(self.procs) + 1}.log").open("wb")
        proc = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, n: int) -> str:
        return (self.tmp_path / f"worker-{n}.log").read_text(errors="replace")

    def processed(self) -> list[bytes]:
        return self.out.read_bytes().splitlines() if self.out.exists() else []

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.stop(proc)


def test_a_failed_batch_ends_the_worker_uncommitted_and_is_taken_again(broker: EmbeddedBroker,
                                                                       tmp_path: Path) -> None:
    """faust acknowledges a take's records even when the code handling them raises; the runtime
    must exit before that, so that the restarted worker processes the failed batch again."""
    worker = MisbehavingWorker(broker, tmp_path, "fail")
    try:
        first = worker.start()
        assert first.wait(timeout=DEADLINE_S) == EXIT_BATCH_FAILED, worker.log(1)[-3000:]
        assert worker.marker.exists()
        worker.start()
        eventually(lambda: set(worker.processed()) == set(worker.values), DEADLINE_S,
                   "the restarted worker processes every record, the failed batch's too")
    finally:
        worker.close()
    assert "CRITICAL" not in worker.log(2)


def test_a_worker_stopped_mid_batch_finishes_it_before_committing(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """SIGTERM while a batch is being processed: the stop waits for the batch (faust's
    stream_wait_empty, and the runtime's own wait should the agent be cancelled first), so the
    commit at stop covers only what was done and the stop loses nothing."""
    worker = MisbehavingWorker(broker, tmp_path, "slow")
    try:
        first = worker.start()
        eventually(worker.marker.exists, DEADLINE_S, "the worker is in the middle of the slow batch")
        assert worker.stop(first) == 0, worker.log(1)[-3000:]
        worker.start()
        eventually(lambda: set(worker.processed()) == set(worker.values), DEADLINE_S,
                   "every record is processed, across the stop")
    finally:
        worker.close()


ROWS = 3000
BURST = 500  # one batch of the writer: that many table updates queued at once


def test_a_table_written_in_multi_record_batches_is_recovered_whole(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """faust's producer batches a table's changelog writes; the embedded broker then reports a short
    end offset (ListOffsets), and a recovery that read only to it lost the last rows. Recovery reads
    to the Fetch high watermark instead (carehub/kafka/ends.py): a worker that starts with nothing
    but the changelog has every row, with its last value. A table with a ``ValueCodec`` comes back
    the same, its values decoded."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    writes, reports = f"{prefix}.table.in", f"{prefix}.table.report"
    create_topics(broker.bootstrap, [TopicSpec(writes, 1), TopicSpec(reports, 1)])
    expected: dict[str, str] = {}
    sent = 0

    def send(n: int) -> None:
        nonlocal sent
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, batch_size=65_536, linger_ms=50)
        for i in range(sent, sent + n):
            key, value = f"k{i % (ROWS // 2)}", f"v{i}"  # every key written again: the last value must win
            expected[key] = value
            producer.send(writes, value=f"{key}={value}".encode())
        producer.flush()
        producer.close()
        sent += n

    env = {**os.environ, "CAREHUB_KAFKA_BOOTSTRAP": broker.bootstrap, "CAREHUB_TOPIC_PREFIX": prefix,
           "CAREHUB_DATA_DIR": str(tmp_path), "CAREHUB_PSEUDONYM_KEY": secrets.token_hex(32),
           "CAREHUB_PARTITIONS": "1"}
    written, reported = tmp_path / "written.txt", tmp_path / "reported.txt"

    def start(mode: str, source: str, out: Path) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{mode}.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "tests.integration.table_stage", mode, source, str(out)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def last_line(path: Path) -> str:
        lines = path.read_text().splitlines() if path.exists() else []
        return lines[-1] if lines else ""

    def changelog() -> str:
        names = [t for t in KafkaConsumer(bootstrap_servers=broker.bootstrap).topics()
                 if prefix in t and t.endswith("-rows-changelog")]
        assert len(names) == 1, names
        return str(names[0])

    def short_listed_end() -> tuple[int, int]:
        """(records in the changelog, the end ListOffsets gives for it)."""
        name = changelog()
        tp = TopicPartition(name, 0)
        entries = len(read_to_end(broker.bootstrap, name, timeout_s=60))
        return entries, int(KafkaConsumer(bootstrap_servers=broker.bootstrap).end_offsets([tp])[tp])

    send(ROWS)
    writer = start("write", writes, written)
    try:
        eventually(lambda: last_line(written) == str(sent), DEADLINE_S, f"the writer wrote {sent} rows")
        # the premise: the changelog ends with a multi-record batch, so its listed end is short. Where
        # the last batch the producer sent held one record, another burst of updates is written.
        for _ in range(10):
            entries, listed = short_listed_end()
            if listed < entries:
                break
            send(BURST)
            eventually(lambda: last_line(written) == str(sent), DEADLINE_S, f"the writer wrote {sent} rows")
        assert listed < entries, f"changelog of {entries} records, listed end {listed}: never a multi-record tail"
    finally:
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(timeout=60) == 0, (tmp_path / "write.log").read_text(errors="replace")[-3000:]
    entries, listed = short_listed_end()  # a stop commits offsets and writes no table update
    assert entries >= sent and listed < entries, f"after the stop: {entries} records, listed end {listed}"

    reporter = start("report", reports, reported)
    try:
        probe = KafkaProducer(bootstrap_servers=broker.bootstrap)
        probe.send(reports, value=b"report")
        probe.flush()
        probe.close()
        eventually(lambda: last_line(reported), DEADLINE_S, "the recovered worker reports its table")
    finally:
        reporter.send_signal(signal.SIGTERM)
        reporter.wait(timeout=60)
    assert json.loads(last_line(reported)) == {"rows": len(expected), "digest": digest(expected),
                                               "boxes": digest(expected)}, (
        f"changelog of {entries} records, listed end {listed}")


def test_a_partition_moved_ahead_is_read_again_from_the_next_offset_in_order(broker: EmbeddedBroker,
                                                                             tmp_path: Path) -> None:
    """faust once handed a restarted worker a partition from offset 72 while 65-71 were not processed;
    they came 30 s later, out of order. Here the worker's consumer is moved from offset 20 to 40
    (from the stage's task, as the runtime seeks: in faust's consumer thread): the runtime must hold
    40 on back, read the partition again from 20, and hand over 20-299 in order, each once. Batches
    of 10: faust's fetch loop still hands over records fetched from 40 after the seek back to 20
    (each moving faust's read offset past 20), which the runtime must answer with a seek again."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    source = f"{prefix}.order.in"
    create_topics(broker.bootstrap, [TopicSpec(source, 1)])
    out = tmp_path / "processed.txt"
    env = {**os.environ, "CAREHUB_KAFKA_BOOTSTRAP": broker.bootstrap, "CAREHUB_TOPIC_PREFIX": prefix,
           "CAREHUB_DATA_DIR": str(tmp_path), "CAREHUB_PSEUDONYM_KEY": secrets.token_hex(32),
           "CAREHUB_PARTITIONS": "1"}

    def send(values: list[bytes]) -> None:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for value in values:
            producer.send(source, value=value, partition=0)
        producer.flush()
        producer.close()

    def processed() -> list[int]:
        return [int(line.split()[1]) for line in out.read_text().splitlines()] if out.exists() else []

    send([b"n"] * 19 + [b"jump:40"])
    log = (tmp_path / "order.log").open("ab")
    worker = subprocess.Popen([sys.executable, "-m", "tests.integration.order_stage", source, str(out)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        eventually(lambda: 19 in processed(), DEADLINE_S, "offsets 0-19 processed, the consumer moved to 40")
        send([b"n"] * 280)  # offsets 20-299: the consumer fetches from 40 first
        eventually(lambda: processed()[-1] == 299, DEADLINE_S,
                   f"offsets 20-299 processed after the move (log: {tmp_path / 'order.log'})")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=DEADLINE_S)
    assert processed() == list(range(300)), processed()
    assert "reading the partition again from 20" in (tmp_path / "order.log").read_text()
