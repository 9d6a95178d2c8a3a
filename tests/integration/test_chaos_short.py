"""`make chaos`, short: the fault suite of tools/chaos.py for 45 s of publishing at 1,000 records/s.

Every worker and the gateway SIGKILLed once and restarted, the broker stopped for 5 s, partners'
connections dropped, while the synthetic region goes in through all three doors and 32 partners
are subscribed. The suite runs its own broker (it stalls it), so it runs as the tool a person
runs, and the test reads the figures it writes: nothing lost, nothing delivered twice, no event on
two persons, every indicator value equal to the batch reference, every stage caught up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)  # about 3 minutes here; the suite's own catch-up deadline is 300 s
def test_faults_at_1000_events_a_second_lose_nothing_and_deliver_nothing_twice(tmp_path: Path) -> None:
    report = tmp_path / "chaos.json"
    run = subprocess.run([sys.executable, "tools/chaos.py", "--short", "--report", str(report)], cwd=ROOT,
                         capture_output=True, text=True, timeout=840)
    out = run.stdout[-6000:] + run.stderr[-3000:]
    assert report.exists(), out
    figures = json.loads(report.read_text())
    ingest, alerts, indicators = figures["ingest"], figures["alerts"], figures["indicators"]
    assert figures["problems"] == [], out
    assert ingest["expected_events"] > 40_000 and ingest["lost"] == 0, out
    assert ingest["lost_at_identity"] == ingest["lost_at_timeline"] == 0, out
    assert ingest["linked_to_two_persons"] == 0, out
    assert alerts["delivered_twice"] == alerts["same_situation_twice"] == alerts["missing"] == 0, out
    assert alerts["in_topic"] > 0 and alerts["delivered"] > 0, out
    assert indicators["reference"] > 0 and indicators["equal"] == indicators["reference"], out
    assert all(s is not None for s in figures["catch_up_s"].values()), out
    assert len(figures["faults"]) >= 11, out  # 8 kills, a stall and its end, partner drops
    assert run.returncode == 0, out
