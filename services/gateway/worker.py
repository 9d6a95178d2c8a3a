"""`python -m carehub.services.gateway`: the partner gateway (several may run behind one address)."""

from __future__ import annotations

from carehub.runtime.worker import run_async_service

from .server import Gateway


def main() -> None:
    run_async_service("gateway", Gateway)  # partners and TLS material are checked when it is built
