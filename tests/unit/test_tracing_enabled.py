"""Per-event spans after ingest only when spans go somewhere (carehub.telemetry.tracing_enabled).

Each case runs in a fresh interpreter: OpenTelemetry takes one global tracer provider per process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "from carehub.telemetry import setup_tracing, tracing_enabled; "
    "provider = setup_tracing('carehub-test'); "
    "print(provider is not None, tracing_enabled())"
)


def probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "True False"),  # the SDK is installed (ingest gives events a trace) but nothing is exported
    ({"OTEL_TRACES_EXPORTER": "none"}, "True False"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "True True"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, "True True"),
    ({"OTEL_SDK_DISABLED": "true"}, "False False"),
])
def test_stages_make_spans_only_when_they_are_exported(env: dict[str, str], expected: str) -> None:
    assert probe(**env) == expected
