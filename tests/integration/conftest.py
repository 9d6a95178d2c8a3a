"""Real parts: one embedded broker per test session; each test its own hub (carehub.harness).

A failing test prints the tail of every worker's log; the logs stay in the test's tmp folder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from carehub.harness import LocalHub
from carehub.kafka.broker import EmbeddedBroker
from carehub.kafka.read import read_to_end

ROOT = Path(__file__).resolve().parents[2]
Hub = LocalHub  # the name the tests use for their deployment
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                            pytest.TestReport]:
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    if os.environ.get("CAREHUB_KAFKA_BOOTSTRAP"):
        pytest.fail("integration tests start their own broker; unset CAREHUB_KAFKA_BOOTSTRAP")
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture
def hub(broker: EmbeddedBroker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalHub]:
    h = LocalHub(broker.bootstrap, tmp_path)
    h.create_topics()
    yield h
    h.stop_all()
    reports = request.node.stash.get(REPORTS, {})
    if any(r.failed for r in reports.values()):
        for worker in h.workers:
            lines = worker.log.read_text(errors="replace").splitlines() if worker.log.exists() else []
            print(f"\n----- {worker.service} pid {worker.pid} exit {worker.proc.returncode}: {worker.log} "
                  f"(last 60 of {len(lines)} lines)", file=sys.stderr)
            print("\n".join(lines[-60:]), file=sys.stderr)


def hub_topics(hub: LocalHub, keep: Callable[[str], bool]) -> list[str]:
    """This hub's topics (its own and faust's changelogs) that ``keep`` accepts."""
    admin = KafkaAdminClient(bootstrap_servers=hub.bootstrap)
    try:
        return [t for t in admin.list_topics() if t.startswith(hub.prefix) and keep(t)]
    finally:
        admin.close()


def assert_not_in_clear(bootstrap: str, topics: list[str], raw: list[bytes]) -> int:
    """No key, value or header of any record in ``topics`` contains any of ``raw``; how many were read.

    A scan that read nothing proves nothing: it fails.
    """
    records = read_to_end(bootstrap, topics)
    assert records, f"the privacy scan read no record from {topics}"
    for r in records:
        blobs = [x for x in (r.key, r.value) if x] + [v for _, v in r.headers if v]
        for blob in blobs:
            for value in raw:
                assert value not in blob, f"{value!r} in clear on {r.topic}[{r.partition}]@{r.offset}"
    return len(records)
