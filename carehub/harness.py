"""A hub on this machine for tests and benches: broker, chosen workers, and ways to wait.

One harness so that the integration tests, the fault suites and the benches start, stop, kill
and read a hub the same way, and so that nothing waits for a topic to "go quiet": they wait
for a condition with a deadline (:func:`eventually`), read topics to the end that the broker
reports (carehub.kafka.read), and know a stage has finished its input when its consumer group
has committed up to that input's end (faust flushes the stage's output before it commits).

Workers are child processes started by service name (carehub.runtime.services), or a client
command such as ``carehub dashboard`` (:meth:`LocalHub.start_command`), each with its own log
file under the hub's data folder; :meth:`LocalHub.kill` sends SIGKILL to the pid
it started and to nothing else.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from carehub.kafka.broker import create_topics, free_port
from carehub.kafka.read import Record, fetch_ends, read_to_end
from carehub.runtime.services import service_command
from carehub.settings import Settings, load_settings
from carehub.topics import topic_specs

T = TypeVar("T")
# Each stream stage's consumer group reads these topics (names without the hub's prefix), in
# pipeline order; the indicators and case-list services and the gateway keep no group (they rebuild
# on start).
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "ingest": ("provider.events",),
    "identity": ("ingest.accepted",),
    "timeline": ("identity.linked", "timeline.handover"),
    "alerts": ("timeline.events", "indicators.signals"),
    "population": ("timeline.events",),
    "reviews": ("timeline.events",),
}


def eventually(predicate: Callable[[], T | None], timeout_s: float, what: str = "", interval_s: float = 0.2) -> T:
    """``predicate()``'s first truthy value, polled until ``timeout_s``; else AssertionError.

    The error names ``what`` and the last value seen, so a failure says how far it got.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what or predicate!r} (last: {value!r:.500})")
        time.sleep(interval_s)


def scrape(url: str) -> dict[str, float]:
    """Sum of each sample name across labels, from a Prometheus text endpoint."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@dataclass
class Worker:
    service: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_url: str | None = None
    killed: bool = False  # by the test (LocalHub.kill): its exit is expected, not a failure
    env: dict[str, str] = field(default_factory=dict)  # the extra environment it was started with
    command: list[str] = field(default_factory=list)  # what it runs (a service's module, or a carehub command)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def metrics(self) -> dict[str, float]:
        if self.metrics_url is None:
            raise ValueError(f"{self.service} was started without a metrics port")
        return scrape(self.metrics_url)

    def ready(self) -> bool:
        """Does the worker's ``/ready`` (beside its metrics) answer 200 now?"""
        return self.readiness()[0]

    def readiness(self) -> tuple[bool, str]:
        """The worker's ``/ready`` answer now: 200 or not, and its body (the reasons, as JSON)."""
        if self.metrics_url is None:
            raise ValueError(f"{self.service} was started without a metrics port")
        try:
            with urllib.request.urlopen(self.metrics_url.removesuffix("/metrics") + "/ready", timeout=5) as resp:
                return int(resp.status) == 200, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:  # 503: not ready, and why
            return False, exc.read().decode(errors="replace")
        except OSError as exc:  # not listening (yet)
            return False, str(exc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 if it cannot be read (it has ended).

    Benches read it before and after a run to say what each process spent on the same events."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    """SIGSTOP ``pid`` for the duration of the block, and SIGCONT it however the block ends.

    A stalled process, not a dead one: its sockets stay open and nothing it holds is released
    (a stalled broker, as in tests/integration/test_mllp.py).
    """
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@dataclass
class LocalHub:
    """One isolated carehub deployment on a broker: its own topic prefix, groups, key and folder."""

    bootstrap: str
    data_dir: Path
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    key: str = field(default_factory=lambda: secrets.token_hex(32))
    partitions: int = 2
    base_env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAREHUB_", "OTEL_"))}
        env.update(
            CAREHUB_KAFKA_BOOTSTRAP=self.bootstrap, CAREHUB_PSEUDONYM_KEY=self.key,
            CAREHUB_TOPIC_PREFIX=self.prefix, CAREHUB_DATA_DIR=str(self.data_dir),
            CAREHUB_METRICS_PORT="0", CAREHUB_PARTITIONS=str(self.partitions),
            CAREHUB_INGEST_BATCH_WITHIN_S="0.1", CAREHUB_LOG_LEVEL="info", OTEL_SDK_DISABLED="false",
        )
        env.update(self.base_env)
        return env

    def settings(self) -> Settings:
        return load_settings(kafka_bootstrap=self.bootstrap, pseudonym_key=self.key, topic_prefix=self.prefix,
                             data_dir=self.data_dir, partitions=self.partitions)

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def create_topics(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        create_topics(self.bootstrap, topic_specs(self.settings()))

    # ---- workers --------------------------------------------------------------------------
    def start_with_metrics(self, service: str, **extra_env: str) -> Worker:
        """:meth:`start` with a Prometheus endpoint on a free port (``worker.metrics()`` reads it)."""
        return self.start(service, CAREHUB_METRICS_PORT=str(free_port()), **extra_env)

    def start(self, service: str, **extra_env: str) -> Worker:
        """Start one worker of ``service`` (by name) for this hub; its log goes to the hub's folder."""
        return self._spawn(service, service_command(service), extra_env)

    def start_command(self, name: str, args: Sequence[str], **extra_env: str) -> Worker:
        """Start ``python -m carehub ARGS`` (a client of the hub, such as ``carehub dashboard``) as one of
        this hub's processes, under ``name``: logged, stopped and listed on failure like its workers."""
        return self._spawn(name, [sys.executable, "-m", "carehub", *args], extra_env)

    def _spawn(self, name: str, command: list[str], extra_env: dict[str, str]) -> Worker:
        n = len(self.workers) + 1
        log = self.data_dir / f"{name}-{n}.log"
        env = dict(self.env, CAREHUB_WORKER_NAME=f"w{n}", CAREHUB_WEB_PORT=str(free_port()), **extra_env)
        port = env["CAREHUB_METRICS_PORT"]
        metrics_url = f"http://127.0.0.1:{port}/metrics" if port != "0" else None
        with log.open("ab") as out:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        worker = Worker(name, proc, log, metrics_url, env=dict(extra_env), command=command)
        self.workers.append(worker)
        return worker

    def restart(self, worker: Worker) -> Worker:
        """A new worker of ``worker``'s service with the same extra environment (ports, files), once
        the old one has exited (after :meth:`kill` or :meth:`stop`); its log is a new file."""
        if worker.running:
            raise RuntimeError(f"{worker.service} (pid {worker.pid}) is still running: kill or stop it first")
        return self._spawn(worker.service, worker.command or service_command(worker.service), dict(worker.env))

    def live(self, service: str) -> Worker:
        """The newest running worker of ``service``."""
        for worker in reversed(self.workers):
            if worker.service == service and worker.running:
                return worker
        raise LookupError(f"no running {service} worker")

    def stop(self, worker: Worker, timeout_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit code."""
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
            try:
                worker.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        return worker.proc.returncode

    def kill(self, worker: Worker) -> None:
        """SIGKILL to the worker's own pid: a crash, with nothing flushed or committed."""
        if worker.proc.poll() is None:
            worker.killed = True
            os.kill(worker.pid, signal.SIGKILL)
            worker.proc.wait()

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            self.stop(worker)

    def log_text(self) -> str:
        return "\n".join(w.log.read_text(errors="replace") for w in self.workers if w.log.exists())

    def wait_listening(self, port: int, timeout_s: float = 90.0) -> None:
        """Wait until a worker of this hub accepts TCP connections on 127.0.0.1:``port`` (and
        fail at once if a worker died meanwhile)."""
        def listening() -> bool:
            self.assert_running()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        eventually(listening, timeout_s, f"a worker accepts connections on port {port}")

    def assert_running(self) -> None:
        dead = [f"{w.service} (pid {w.pid}) exited {w.proc.returncode}" for w in self.workers
                if w.proc.poll() is not None and w.proc.returncode != 0 and not w.killed]
        assert not dead, "; ".join(dead) + "\n" + self.log_text()[-4000:]

    # ---- reading --------------------------------------------------------------------------
    def read(self, names: str | Sequence[str], timeout_s: float = 60.0,
             keep: Callable[[Record], bool] | None = None) -> list[Record]:
        """Every record of the hub's topics ``names`` (without the prefix), to their end.

        ``keep`` filters while reading, as in :func:`carehub.kafka.read.read_to_end`.
        """
        topics = [self.topic(n) for n in ([names] if isinstance(names, str) else names)]
        return read_to_end(self.bootstrap, topics, timeout_s=timeout_s, keep=keep)

    def values(self, name: str, timeout_s: float = 60.0) -> list[bytes]:
        return [r.value for r in self.read(name, timeout_s) if r.value is not None]

    def wait_values(self, name: str, until: Callable[[list[bytes]], bool], timeout_s: float = 60.0,
                    ) -> list[bytes]:
        """The values of topic ``name`` once ``until(values)`` holds, each look a read to the end."""
        def attempt() -> tuple[list[bytes]] | None:
            self.assert_running()
            values = self.values(name)
            return (values,) if until(values) else None

        return eventually(attempt, timeout_s, f"{name}: {until!r}")[0]

    def committed(self, app: str, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offsets the stage ``app`` (ingest, identity, timeline, alerts) has committed on ``tps``.

        Asked with an OffsetFetch of the stage's group, without joining it.
        """
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=f"{self.prefix}-{app}",
                                 enable_auto_commit=False, client_id="carehub-harness")
        try:
            return {tp: offset for tp in tps if (offset := consumer.committed(tp)) is not None}
        finally:
            consumer.close()

    def caught_up(self, app: str, inputs: Sequence[str]) -> bool:
        """Has stage ``app`` committed every input topic (names without prefix) to its current end?

        faust flushes a stage's output before it commits, so then that output is in its topics.
        """
        ends = fetch_ends(self.bootstrap, [self.topic(n) for n in inputs])
        committed = self.committed(app, list(ends))
        return all(committed.get(tp, 0) >= end for tp, end in ends.items() if end > 0)

    def settle(self, *stages: str, timeout_s: float = 120.0, interval_s: float = 0.2) -> None:
        """Wait until each of ``stages``, in order, has finished all its input (see caught_up).

        Each look costs two short-lived Kafka clients; a bench measuring the hub meanwhile may
        look less often (``interval_s``).
        """
        for stage in stages:
            self.wait_caught_up(stage, STAGE_INPUTS[stage], timeout_s, interval_s)

    def wait_caught_up(self, app: str, inputs: Sequence[str], timeout_s: float = 120.0,
                       interval_s: float = 0.2) -> None:
        def done() -> bool:
            self.assert_running()
            return self.caught_up(app, inputs)

        eventually(done, timeout_s, f"{app} committed {', '.join(inputs)} to the end", interval_s)
