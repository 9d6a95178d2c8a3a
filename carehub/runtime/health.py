"""What a worker's /ready and /live answer, and the one HTTP endpoint that serves them with /metrics.

A stream worker whose metrics endpoint answers is not thereby working: it may never have been
given partitions, may still be restoring its tables, or its consumption may have stalled while
input waits. So readiness is a judgement the runtime makes and refreshes (carehub/runtime/stage.py
for faust stages; the gateway and the indicators service report their own), and a judgement
that was not refreshed recently is itself a failure: a blocked event loop cannot report.

- ``/ready``: 200 when the last judgement was "ready" and is fresh; 503 with the reasons otherwise.
- ``/live``: 200 while judgements keep coming (the process is not wedged); 503 when none came for
  ``live_after_s``. It does not restart a worker for lag: a slow stage is not a dead one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Gauge, make_wsgi_app

log = logging.getLogger(__name__)

READY = Gauge("carehub_ready", "1 when this worker judges itself ready (the /ready answer), else 0")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass
class Health:
    fresh_s: float = 10.0  # a readiness judgement older than this no longer counts
    live_after_s: float = 120.0
    ready: bool = False
    reasons: list[str] = field(default_factory=lambda: ["starting"])
    details: dict[str, Any] = field(default_factory=dict)
    judged_at: float | None = None  # monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def judge(self, reasons: Iterable[str], details: dict[str, Any] | None = None) -> None:
        """Record a judgement: ready exactly when there is no reason against it."""
        with self._lock:
            self.reasons = list(reasons)
            self.ready = not self.reasons
            self.details = details or {}
            self.judged_at = time.monotonic()
        READY.set(1 if self.ready else 0)

    def ready_report(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            age = None if self.judged_at is None else time.monotonic() - self.judged_at
            reasons = list(self.reasons)
            if age is None:
                reasons = reasons or ["not judged yet"]
            elif age > self.fresh_s:
                reasons.append(f"last judged {age:.0f} s ago")
            body = {"ready": not reasons, "reasons": reasons, **self.details}
        return (200 if not reasons else 503), body

    def live_report(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            age = None if self.judged_at is None else time.monotonic() - self.judged_at
        if age is not None and age > self.live_after_s:
            return 503, {"live": False, "reason": f"no readiness judgement for {age:.0f} s"}
        return 200, {"live": True}


HEALTH = Health()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
        pass


def health_app(health: Health) -> Callable[[dict[str, Any], StartResponse], list[bytes]]:
    """/ready and /live from ``health``; everything else is Prometheus's /metrics."""
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/ready", "/live"):
            code, body = health.ready_report() if path == "/ready" else health.live_report()
            status = "200 OK" if code == 200 else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        result: list[bytes] = list(metrics(environ, start_response))
        return result

    return app


def serve_health_and_metrics(host: str, port: int, health: Health = HEALTH) -> WSGIServer:
    """Serve /metrics, /ready and /live on ``host:port`` from a daemon thread."""
    server = make_server(host, port, health_app(health), server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="carehub-http", daemon=True).start()
    return server
