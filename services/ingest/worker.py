"""`carehub ingest`: one ingest worker."""

from carehub.runtime.worker import run_worker

from .app import build_app


def main() -> None:
    run_worker("ingest", build_app)
