"""`python -m services.timeline`: the timeline worker (start several to share the partitions)."""

from carehub.worker import run_worker
from services.timeline.app import build_app


def main() -> None:
    run_worker("timeline", build_app)
