"""`python -m carehub.services.population`: the population worker (start several to share the partitions)."""

from carehub.runtime.worker import run_worker

from .app import build_app


def main() -> None:
    run_worker("population", build_app, needs_key=False)  # it reads pseudonymised topics only
