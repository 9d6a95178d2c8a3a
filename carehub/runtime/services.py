"""carehub's services, known by name: the core starts them, it never imports them.

Services live in the top-level ``services/`` folder of the source tree and are installed as the
``carehub.services`` package (setup.py). The core (contract, settings, Kafka access, runtime,
domain) must not depend on any of them, so the CLI, the demo and the test harness start a
service by its module name in a child process or through ``runpy``.
tests/unit/test_import_direction.py holds both directions.
"""

from __future__ import annotations

import runpy
import sys

SERVICE_PACKAGE = "carehub.services"
# In start-up order: each stage's input is written by one before it (the doors, mllp and fhir,
# write the provider topic; population, caselists and reviews, last, read the timeline's output).
SERVICES = ("ingest", "identity", "timeline", "indicators", "alerts", "gateway", "mllp", "fhir", "population",
            "caselists", "reviews")


def service_module(name: str) -> str:
    if name not in SERVICES:
        raise SystemExit(f"carehub: no service named {name!r} (services: {', '.join(SERVICES)})")
    return f"{SERVICE_PACKAGE}.{name}"


def service_command(name: str) -> list[str]:
    """The command line that runs one worker of service ``name`` with this interpreter."""
    return [sys.executable, "-m", service_module(name)]


def run_service(name: str) -> None:
    """Run service ``name`` in this process, as ``python -m carehub.services.NAME`` would."""
    runpy.run_module(service_module(name), run_name="__main__", alter_sys=True)
