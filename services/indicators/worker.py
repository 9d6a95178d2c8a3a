"""`python -m carehub.services.indicators`: the indicators service (one per deployment)."""

from __future__ import annotations

from carehub.runtime.worker import run_async_service

from .app import IndicatorService


def main() -> None:
    # a bad definition file stops it when it is built, naming the file and the entry
    run_async_service("indicators", IndicatorService)
