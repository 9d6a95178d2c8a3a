"""`carehub identity`: the identity worker (one per deployment: it owns the linkage log)."""

from carehub.runtime.worker import run_worker

from .app import build_app


def main() -> None:
    run_worker("identity", build_app)
