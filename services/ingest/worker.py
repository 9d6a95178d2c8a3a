"""`carehub ingest`: one ingest worker."""

from carehub.worker import run_worker
from services.ingest.app import build_app


def main() -> None:
    run_worker("ingest", build_app)
