"""HTTPS for the FHIR door, and who is on the other end of each connection.

The endpoint serves TLS only, like the partner gateway. With CAREHUB_FHIR_REQUIRE_CLIENT_CERT
(the default) a sender must present a certificate signed by CAREHUB_FHIR_CLIENT_CA at the
handshake, and its common name is its organisation code. Otherwise a client certificate is
optional (checked against the CA when one is set) and a bearer token identifies the sender.

uvicorn does not yet hand the client certificate to the application (the ASGI TLS extension is
not implemented in 0.54; uvicorn PR #3132 is open), so :class:`CertAwareH11Protocol` reads it
from the connection, after the handshake verified it, and puts the common name in the
connection's ASGI ``state``, which uvicorn copies into every request's scope. It is the one place
that leans on uvicorn's protocol class; tests/integration/test_fhir.py checks it over real TLS.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from carehub.revocation import fingerprint_der
from carehub.settings import Settings

PEER_CN = "carehub_peer_common_name"
PEER_FINGERPRINT = "carehub_peer_certificate_sha256"  # for the deny list (carehub/revocation.py)


class FhirConfigError(ValueError):
    """TLS material the FHIR door cannot use: the setting and the file are named."""


def server_ssl_context(settings: Settings) -> ssl.SSLContext:
    cert, key, ca = settings.fhir_tls_cert, settings.fhir_tls_key, settings.fhir_client_ca
    for name, path in (("CAREHUB_FHIR_TLS_CERT", cert), ("CAREHUB_FHIR_TLS_KEY", key)):
        _readable(name, path)
    if settings.fhir_require_client_cert or ca is not None:
        _readable("CAREHUB_FHIR_CLIENT_CA", ca)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise FhirConfigError(f"CAREHUB_FHIR_TLS_CERT {cert} and CAREHUB_FHIR_TLS_KEY {key}: not a certificate "
                              f"chain and its matching private key ({exc.reason})") from None
    if ca is not None:
        try:
            context.load_verify_locations(str(ca))
        except ssl.SSLError as exc:
            raise FhirConfigError(f"CAREHUB_FHIR_CLIENT_CA {ca}: not a PEM CA certificate ({exc.reason})") from None
    context.verify_mode = (ssl.CERT_REQUIRED if settings.fhir_require_client_cert
                           else ssl.CERT_OPTIONAL if ca is not None else ssl.CERT_NONE)
    return context


def _readable(name: str, path: Path | None) -> None:
    if path is None:
        raise FhirConfigError(f"{name} is not set: the FHIR endpoint serves HTTPS only")
    if not path.is_file():
        raise FhirConfigError(f"{name} {path}: no such file")


class CertAwareH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus the verified client certificate's common name and fingerprint."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cert: dict[str, Any] | None = transport.get_extra_info("peercert")
        common_name = next((value for rdn in (cert or {}).get("subject", ()) for key, value in rdn
                            if key == "commonName"), None)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        # a copy: the dict uvicorn passed is shared by every connection
        self.app_state = {**self.app_state, PEER_CN: common_name,
                          PEER_FINGERPRINT: fingerprint_der(der) if der else None}
