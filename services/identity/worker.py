"""`carehub identity`: the identity worker (one per deployment: it owns the linkage log)."""

from carehub.worker import run_worker
from services.identity.app import build_app


def main() -> None:
    run_worker("identity", build_app)
