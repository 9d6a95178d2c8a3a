"""`python -m carehub.services.caselists`: the case-list service (one per deployment)."""

from __future__ import annotations

from carehub.runtime.worker import run_async_service

from .app import CaseListService


def main() -> None:
    # a bad risk model file stops it when it is built, naming the file and the entry
    run_async_service("caselists", CaseListService)
