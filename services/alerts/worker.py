"""`python -m carehub.services.alerts`: the alert worker (start several to share the partitions)."""

from carehub.runtime.worker import run_worker

from .app import build_app


def main() -> None:
    run_worker("alerts", build_app)
