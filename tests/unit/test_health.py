"""What /ready and /live answer (carehub/runtime/health.py), called as WSGI without a socket."""

from __future__ import annotations

import json
from typing import Any

import pytest

from carehub.runtime.health import Health, health_app


def call(health: Health, path: str) -> tuple[str, dict[str, Any]]:
    status: list[str] = []
    body = health_app(health)({"PATH_INFO": path, "REQUEST_METHOD": "GET"},
                              lambda s, headers: status.append(s))
    return status[0], json.loads(b"".join(body))


def test_not_ready_until_judged_then_as_judged() -> None:
    health = Health()
    status, body = call(health, "/ready")
    assert status.startswith("503") and body["reasons"] == ["starting"]
    health.judge([], {"ingest": {"lag_records": 0}})
    status, body = call(health, "/ready")
    assert status.startswith("200") and body == {"ready": True, "reasons": [], "ingest": {"lag_records": 0}}
    health.judge(["ingest: 12 records waiting and no progress for 61 s"])
    status, body = call(health, "/ready")
    assert status.startswith("503") and "no progress" in body["reasons"][0]


def test_a_judgement_that_is_not_refreshed_stops_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    health = Health(fresh_s=10.0, live_after_s=120.0)
    clock = [1000.0]
    monkeypatch.setattr("carehub.runtime.health.time.monotonic", lambda: clock[0])
    health.judge([])
    assert call(health, "/ready")[0].startswith("200") and call(health, "/live")[0].startswith("200")
    clock[0] += 11  # the event loop that judges is wedged, or the watcher died
    status, body = call(health, "/ready")
    assert status.startswith("503") and body["reasons"] == ["last judged 11 s ago"]
    assert call(health, "/live")[0].startswith("200")
    clock[0] += 120
    status, body = call(health, "/live")
    assert status.startswith("503") and body["live"] is False


def test_everything_else_is_prometheus_metrics() -> None:
    health = Health()
    health.judge([])
    status: list[str] = []
    body = b"".join(health_app(health)({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "QUERY_STRING": ""},
                                       lambda s, headers: status.append(s)))
    assert status[0].startswith("200") and b"carehub_ready 1.0" in body
