"""Certificates and alerts for the partner-client tests, in both tiers.

tests/integration/test_partner_client.py runs the client against a scripted gRPC server over TLS;
tests/unit/test_partner_client.py keeps the checks that need no server.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from carehub.v1 import alerts_pb2 as al

T0 = dt.datetime(2026, 3, 3, 14, 5, tzinfo=dt.UTC)


# -- certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN = ORG1
    client_key: Path
    other_ca: Path     # a CA that issued nothing the server uses


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


def make_pki(d: Path) -> Pki:
    """A CA, a server certificate for localhost/127.0.0.1, ORG1's client certificate, and another CA, in ``d``."""
    ca_key, other_key, server_key, client_key = _key(), _key(), _key(), _key()
    ca = _cert("carehub test CA", ca_key, None, ca_key, ca=True)
    other = _cert("someone else's CA", other_key, None, other_key, ca=True)
    return Pki(ca=_write(d / "ca.pem", ca),
               server_cert=_write(d / "server.pem", _cert("localhost", server_key, ca, ca_key, server=True)),
               server_key=_write(d / "server.key", key=server_key),
               client_cert=_write(d / "org1.pem", _cert("ORG1", client_key, ca, ca_key)),
               client_key=_write(d / "org1.key", key=client_key),
               other_ca=_write(d / "other-ca.pem", other))


def alert(n: int, *, kind: al.AlertKind.ValueType = al.ALERT_KIND_NEW, refers_to: str = "",
          provisional: bool = False) -> al.Alert:
    a = al.Alert(alert_id=f"A{n}", kind=kind, refers_to=refers_to, rule="acsc_emergency_admission", rule_version=1,
                 definition="acsc_emergency_admission v1", severity=al.SEVERITY_URGENT, recipient_org="ORG1",
                 recipient_role="registered_practice", local_id=f"P-{1000 + n}", source_org="RR8",
                 title=f"Emergency admission {n}", detail=f"Admitted as an emergency to RR8 ({n})",
                 provisional=provisional)
    a.event_time.FromDatetime(T0 + dt.timedelta(minutes=n))
    a.raised_at.FromDatetime(T0 + dt.timedelta(minutes=n + 27))
    return a
