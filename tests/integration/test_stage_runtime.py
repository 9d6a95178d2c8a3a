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
import secrets
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from carehub.harness import LocalHub, eventually
from carehub.kafka.broker import EmbeddedBroker, create_topics
from carehub.runtime.health import Health
from carehub.runtime.stage import Batch, StageRecord, StageRuntime
from carehub.settings import load_settings
from carehub.topics import TopicSpec

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
