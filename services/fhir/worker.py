"""`carehub fhir`: the FHIR R4 endpoint (several may run behind one address)."""

from __future__ import annotations

from carehub.runtime.worker import run_async_service

from .server import FhirService


def main() -> None:
    run_async_service("fhir", FhirService)  # TLS material, senders and mapping are checked when it is built
