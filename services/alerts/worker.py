"""`python -m services.alerts`: the alert worker (start several to share the partitions)."""

from carehub.worker import run_worker
from services.alerts.app import build_app


def main() -> None:
    run_worker("alerts", build_app)
