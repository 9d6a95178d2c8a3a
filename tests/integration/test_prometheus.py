"""A real Prometheus scrapes a real carehub worker, evaluates the shipped rules, and runs every
dashboard expression.

Prometheus is a real dependency here: without the binary these tests fail, they do not skip
(Debian: ``apt-get install prometheus``; .ci/run installs it). Each test starts its own
Prometheus on 127.0.0.1 with a temporary configuration and data directory, and stops it by
process id.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carehub.kafka.broker import free_port
from carehub.sdk import Publisher
from carehub.v1 import care_event_pb2 as ce
from tests.factories import care_event
from tests.integration.conftest import ROOT, Hub

pytestmark = pytest.mark.integration

DASHBOARDS = ROOT / "deploy/grafana/dashboards"
RULES = ROOT / "deploy/prometheus/rules.yml"


class Prometheus:
    """One Prometheus server on 127.0.0.1, started and stopped by this test."""

    def __init__(self, directory: Path, scrape_targets: dict[str, str]) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.fail("prometheus not found: install it (Debian: apt-get install prometheus); "
                        "these tests need the real server and do not skip without it")
        self.directory = directory
        shutil.copy(RULES, directory / "rules.yml")
        jobs = "".join(f"  - job_name: {job}\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
                       for job, target in scrape_targets.items())
        config = directory / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          "rule_files: [rules.yml]\nscrape_configs:\n" + (jobs or "  []\n"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "prometheus.log"
        self.proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            cwd=directory, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus not ready after {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def query(self, expr: str) -> dict[str, Any]:
        """The HTTP API's answer to an instant query; Prometheus's own error text on a bad one."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        return body

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None while it has no result."""
        answer = self.query(expr)
        assert answer.get("status") == "success", answer
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, accept: Any, timeout_s: float = 90.0) -> float:
        deadline = time.monotonic() + timeout_s
        seen = None
        while time.monotonic() < deadline:
            seen = self.value(expr)
            if seen is not None and accept(seen):
                return seen
            time.sleep(0.5)
        pytest.fail(f"{expr} was {seen} after {timeout_s} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(targets: dict[str, str]) -> Prometheus:
        directory = tmp_path / f"prometheus-{len(started)}"
        directory.mkdir()
        server = Prometheus(directory, targets)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def test_prometheus_scrapes_an_ingest_worker_and_evaluates_the_rules(hub: Hub, start_prometheus: Any) -> None:
    worker = hub.start_with_metrics("ingest", CAREHUB_METRICS_HOST="127.0.0.1")
    assert worker.metrics_url is not None
    prometheus: Prometheus = start_prometheus({"ingest": worker.metrics_url.split("/")[2]})

    events = [care_event(ce.EVENT_TYPE_GP_CONTACT, local_id=f"prom-{i}", source_org="B86001", given=f"Given{i}")
              for i in range(5)]
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for event in events:
            pub.publish(event)
        pub.flush()
    assert pub.failed == 0

    # the worker is up, as Prometheus sees it, and what it accepted arrives through the HTTP API
    assert prometheus.wait_value('up{job="ingest"}', lambda v: v == 1.0) == 1.0
    accepted = prometheus.wait_value("sum(carehub_ingest_accepted_total)", lambda v: v >= len(events))
    assert accepted == len(events)
    assert prometheus.wait_value("sum(carehub_ingest_received_total)", lambda v: v > 0) == len(events)
    # the shipped recording rules run on the real series: the feed that just sent is not silent
    silence = prometheus.wait_value('carehub:feed_silence_seconds{source_org="B86001"}', lambda v: True)
    assert 0 <= silence < 120
    assert prometheus.wait_value('carehub:feed_expected_interval_seconds{source_org="B86001"}',
                                 lambda v: True) == 3600
    assert prometheus.value('ALERTS{alertname="CarehubFeedSilent"}') is None


def dashboard_expressions() -> list[tuple[str, str]]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        stack = list(board["panels"])
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((f"{path.stem} / {panel['title']}", target["expr"]))
    return found


def test_prometheus_accepts_every_dashboard_expression(start_prometheus: Any) -> None:
    """Grafana sends these to Prometheus; Prometheus's parser and engine must accept each one."""
    prometheus: Prometheus = start_prometheus({})
    exprs = dashboard_expressions()
    assert len(exprs) > 30
    for where, expr in exprs:
        # what Grafana puts in place of its variables
        concrete = expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
        answer = prometheus.query(concrete)
        assert answer.get("status") == "success", f"{where}: {expr}: {answer.get('error')}"
