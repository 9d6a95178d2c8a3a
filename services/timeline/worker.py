"""`python -m carehub.services.timeline`: the timeline worker (start several to share the partitions)."""

from carehub.runtime.worker import run_worker

from .app import build_app


def main() -> None:
    run_worker("timeline", build_app)
