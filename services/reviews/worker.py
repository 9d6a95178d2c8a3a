"""`python -m carehub.services.reviews`: the reviews worker (start several to share the partitions)."""

from carehub.runtime.worker import run_worker

from .app import build_app


def main() -> None:
    run_worker("reviews", build_app, needs_key=False)  # it reads pseudonymised topics only
