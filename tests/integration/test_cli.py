"""The broker and topics commands as an operator runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def test_broker_command_serves_topics_and_stops_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREHUB_")}
    broker = subprocess.Popen([sys.executable, "-m", "carehub", "broker"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert broker.stdout is not None
        first = broker.stdout.readline()
        match = re.search(r"on (127\.0\.0\.1:\d+), pid (\d+)", first)
        assert match, first
        bootstrap, tansu_pid = match.group(1), int(match.group(2))
        topics = subprocess.run([sys.executable, "-m", "carehub", "topics", "--bootstrap", bootstrap],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert topics.returncode == 0, topics.stderr
        assert re.search(r"carehub\.provider\.events\s+partitions=4\s+exists", topics.stdout)
        assert re.search(r"carehub\.ingest\.deadletter\s+partitions=1\s+exists", topics.stdout)
    finally:
        broker.send_signal(signal.SIGTERM)
        assert broker.wait(30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(tansu_pid, 0)


def test_commands_that_need_kafka_say_so() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREHUB_")}
    out = subprocess.run([sys.executable, "-m", "carehub", "dlq", "list"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "set CAREHUB_KAFKA_BOOTSTRAP" in out.stderr
