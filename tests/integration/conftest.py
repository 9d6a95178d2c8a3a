"""Real parts: one embedded broker per test session, ingest workers as child processes."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from carehub.kafka.broker import EmbeddedBroker, create_topics
from carehub.settings import Settings, load_settings
from carehub.topics import topic_specs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    if os.environ.get("CAREHUB_KAFKA_BOOTSTRAP"):
        pytest.fail("integration tests start their own broker; unset CAREHUB_KAFKA_BOOTSTRAP")
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@dataclass
class Hub:
    """One isolated carehub deployment on the shared broker: its own topic prefix and groups."""

    bootstrap: str
    data_dir: Path
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    key: str = field(default_factory=lambda: secrets.token_hex(32))
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAREHUB_", "OTEL_"))}
        env.update(
            CAREHUB_KAFKA_BOOTSTRAP=self.bootstrap, CAREHUB_PSEUDONYM_KEY=self.key,
            CAREHUB_TOPIC_PREFIX=self.prefix, CAREHUB_DATA_DIR=str(self.data_dir),
            CAREHUB_METRICS_PORT="0", CAREHUB_PARTITIONS="2", CAREHUB_INGEST_BATCH_WITHIN_S="0.1",
            CAREHUB_LOG_LEVEL="info", OTEL_SDK_DISABLED="false",
        )
        return env

    def settings(self) -> Settings:
        return load_settings(kafka_bootstrap=self.bootstrap, pseudonym_key=self.key, topic_prefix=self.prefix,
                             data_dir=self.data_dir, partitions=2)

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def start(self, service: str, **extra_env: str) -> subprocess.Popen[bytes]:
        """Start ``services.<service>`` as a worker process of this hub."""
        n = len(self.workers) + 1
        log = (self.data_dir / f"{service}-{n}.log").open("ab")
        env = dict(self.env, CAREHUB_WORKER_NAME=f"w{n}", CAREHUB_WEB_PORT=str(6100 + n), **extra_env)
        proc = subprocess.Popen([sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def start_ingest(self, **extra_env: str) -> subprocess.Popen[bytes]:
        return self.start("ingest", **extra_env)

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.data_dir.glob("*-*.log")))


@pytest.fixture
def hub(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Hub]:
    h = Hub(broker.bootstrap, tmp_path)
    create_topics(h.bootstrap, topic_specs(h.settings()))
    yield h
    for proc in h.workers:
        h.stop(proc)


def consume(bootstrap: str, topic: str, until: Callable[[list[bytes]], bool], timeout_s: float = 60.0,
            ) -> list[bytes]:
    """Every record value in ``topic`` from the start, polling until ``until(values)`` or timeout."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        parts: set[int] = set()
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic) or set()
            time.sleep(0.1) if not parts else None
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        values: list[bytes] = []
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
            if until(values):
                break
        return values
    finally:
        consumer.close()


def read_until_quiet(bootstrap: str, topic: str, idle_s: float = 3.0, timeout_s: float = 60.0) -> list[bytes]:
    """Every record value in ``topic``, read until nothing new has come for ``idle_s``.

    A fixed reading time would undercount on a loaded machine; quiet is what "all" means here.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() - last < idle_s and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
                last = time.monotonic()
        return values
    finally:
        consumer.close()


def hub_topics(hub: Hub, keep: Callable[[str], bool]) -> list[str]:
    """This hub's topics (its own and faust's changelogs) that ``keep`` accepts."""
    admin = KafkaAdminClient(bootstrap_servers=hub.bootstrap)
    try:
        return [t for t in admin.list_topics() if t.startswith(hub.prefix) and keep(t)]
    finally:
        admin.close()


def assert_not_in_clear(bootstrap: str, topics: list[str], raw: list[bytes]) -> None:
    """No key, value or header of any record in ``topics`` contains any of ``raw``."""
    for topic, blobs in all_topic_bytes(bootstrap, topics).items():
        for blob in blobs:
            for value in raw:
                assert value not in blob, f"{value!r} in clear on {topic}"


def all_topic_bytes(bootstrap: str, topics: list[str], idle_s: float = 2.0) -> dict[str, list[bytes]]:
    """Every key and value of every record in ``topics``, read until they go quiet."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    out: dict[str, list[bytes]] = {t: [] for t in topics}
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for r in records:
                    out[tp.topic].extend(x for x in (r.key, r.value) if x)
                    out[tp.topic].extend(v for _, v in r.headers or () if v)
                last = time.monotonic()
        return out
    finally:
        consumer.close()
