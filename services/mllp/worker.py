"""`carehub mllp`: the HL7 v2 MLLP listener (several may run behind one address)."""

from __future__ import annotations

from carehub.runtime.worker import run_async_service

from .server import MllpService


def main() -> None:
    run_async_service("mllp", MllpService)  # the mapping tables are checked when it is built
