"""A small private PKI for tests and the demo, so the partner gateway never runs without TLS.

``make_ca`` makes a certificate authority; ``issue_server`` a server certificate for
``localhost`` / ``127.0.0.1`` (and any extra names); ``issue_client`` a partner's client
certificate whose subject common name is its organisation code (the gateway's identity for
it). Keys are ECDSA P-256, written as unencrypted PKCS#8 PEM with mode 0600; certificates as
PEM. ``make_demo_pki`` makes (or reuses) a whole set in one directory. Production certificates
come from the organisation's real PKI through the CAREHUB_GATEWAY_* settings, not from here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DAYS = 365
BACKDATE = dt.timedelta(minutes=5)  # tolerate a little clock skew between the issuer and peers
RENEW_WITHIN = dt.timedelta(days=1)  # make_demo_pki replaces certificates expiring sooner than this
ORG_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # as services/gateway/partners.py
SERVER_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class CertFiles:
    """A certificate (PEM) and its private key (PEM, mode 0600)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class DemoPki:
    directory: Path
    ca: CertFiles
    server: CertFiles
    clients: dict[str, CertFiles] = field(default_factory=dict)  # by organisation code


def make_ca(directory: Path | str, name: str = "carehub test CA", *, days: int = DEFAULT_DAYS) -> CertFiles:
    """A self-signed CA (may sign leaf certificates only), written as ca.pem and ca.key."""
    directory = _directory(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(directory, "ca", cert, key)


def issue_server(
    ca: CertFiles,
    directory: Path | str,
    names: Iterable[str] = (),
    *,
    days: int = DEFAULT_DAYS,
    stem: str = "server",
) -> CertFiles:
    """A server certificate for DNS:localhost, IP:127.0.0.1 and ``names`` (IP addresses or DNS names)."""
    all_names = list(dict.fromkeys([*SERVER_NAMES, *names]))
    sans: list[x509.GeneralName] = []
    for name in all_names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return _issue(ca, _directory(directory), stem, all_names[0], sans, ExtendedKeyUsageOID.SERVER_AUTH, days)


def issue_client(ca: CertFiles, org: str, directory: Path | str, *, days: int = DEFAULT_DAYS) -> CertFiles:
    """A partner's client certificate: subject CN is the organisation code; files <org>.pem, <org>.key."""
    if not ORG_CODE.fullmatch(org):
        raise ValueError(f"not an organisation code: {org!r}")
    return _issue(ca, _directory(directory), org, org, [], ExtendedKeyUsageOID.CLIENT_AUTH, days)


def make_demo_pki(
    directory: Path | str,
    orgs: Sequence[str],
    *,
    days: int = DEFAULT_DAYS,
    server_names: Iterable[str] = (),
    reuse: bool = True,
) -> DemoPki:
    """A CA, a server certificate and one client certificate per organisation under ``directory``.

    With ``reuse``, files from an earlier call are kept while they still verify against the CA,
    cover the names asked for and are not about to expire, so partner demo clients keep working
    across runs; anything else is (re)issued, and a new CA re-issues everything.
    """
    directory = _directory(directory)
    server_names = list(server_names)
    ca = CertFiles(directory / "ca.pem", directory / "ca.key")
    ca_cert = _usable(ca, None) if reuse else None
    if ca_cert is None:
        ca = make_ca(directory, days=days)
        ca_cert = _load_cert(ca.cert)
        reuse = False
    server = CertFiles(directory / "server.pem", directory / "server.key")
    cert = _usable(server, ca_cert) if reuse else None
    wanted = {*SERVER_NAMES, *server_names}
    if cert is None or not wanted <= _san_names(cert):
        server = issue_server(ca, directory, server_names, days=days)
    clients: dict[str, CertFiles] = {}
    for org in orgs:
        files = CertFiles(directory / f"{org}.pem", directory / f"{org}.key")
        cert = _usable(files, ca_cert) if reuse and ORG_CODE.fullmatch(org) else None
        if cert is None or _common_name(cert) != org:
            files = issue_client(ca, org, directory, days=days)
        clients[org] = files
    return DemoPki(directory=directory, ca=ca, server=server, clients=clients)


def _issue(
    ca: CertFiles,
    directory: Path,
    stem: str,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> CertFiles:
    ca_cert = _load_cert(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca.key}: expected an EC private key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _write(directory, stem, builder.sign(ca_key, hashes.SHA256()), key)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertFiles:
    files = CertFiles(directory / f"{stem}.pem", directory / f"{stem}.key")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_file(files.key, key_pem, 0o600)
    _write_file(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with ``mode`` (never briefly world-readable), then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; 0644 certificates are meant to be readable
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
        os.replace(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)


def _directory(directory: Path | str) -> Path:
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _usable(files: CertFiles, ca_cert: x509.Certificate | None) -> x509.Certificate | None:
    """The certificate if both files load, the key matches, it is issued by ``ca_cert`` and not near expiry."""
    try:
        cert = _load_cert(files.cert)
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        if key.public_key() != cert.public_key():
            return None
        cert.verify_directly_issued_by(ca_cert if ca_cert is not None else cert)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return None
    if cert.not_valid_after_utc - _now() < RENEW_WITHIN or (files.key.stat().st_mode & 0o077):
        return None
    return cert


def _san_names(cert: x509.Certificate) -> set[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {*sans.get_values_for_type(x509.DNSName), *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))}


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if len(names) == 1 else None
    return value if isinstance(value, str) else None
