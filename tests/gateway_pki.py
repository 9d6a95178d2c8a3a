"""The gateway-auth tests' certificates, partners and settings, for both tiers.

tests/unit/test_gateway_auth.py checks configuration and the partners file without a server;
tests/integration/test_gateway_tls.py runs real TLS handshakes against a grpc.aio server.
Certificates come from carehub.tlsgen in a temporary directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from carehub import tlsgen
from carehub.settings import Settings

KNOWN = "B86001"
HOSPITAL = "RR8"
UNKNOWN = "Z99999"  # certificate from the hub's CA, but not in the partners file
TOKEN = "riverside-token-4d7e0c2b9a1f6e8d3c5b7a9f0e2d4c6b"
HOSPITAL_TOKEN = "hospital-token-0a1b2c3d4e5f60718293a4b5c6d7e8f9"


@dataclass(frozen=True)
class Pki:
    hub: tlsgen.DemoPki
    rogue_ca: tlsgen.CertFiles
    rogue_client: tlsgen.CertFiles  # CN is a known partner, but signed by another CA
    rogue_server: tlsgen.CertFiles  # a server certificate for 127.0.0.1 from another CA


def make_pki(base: Path) -> Pki:
    hub = tlsgen.make_demo_pki(base / "hub", [KNOWN, HOSPITAL, UNKNOWN])
    rogue_ca = tlsgen.make_ca(base / "rogue", name="someone else's CA")
    return Pki(
        hub=hub,
        rogue_ca=rogue_ca,
        rogue_client=tlsgen.issue_client(rogue_ca, KNOWN, base / "rogue"),
        rogue_server=tlsgen.issue_server(rogue_ca, base / "rogue"),
    )


def settings_for(pki: Pki, *, require_client_cert: bool = True, server: tlsgen.CertFiles | None = None) -> Settings:
    server = server or pki.hub.server
    return Settings(
        gateway_tls_cert=server.cert,
        gateway_tls_key=server.key,
        gateway_client_ca=pki.hub.ca.cert,
        gateway_require_client_cert=require_client_cert,
    )
