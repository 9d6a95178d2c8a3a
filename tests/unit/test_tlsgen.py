"""carehub.tlsgen: the files it writes, and that its certificates verify against its CA."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from carehub import tlsgen


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_demo_pki_files_modes_and_verification(tmp_path: Path) -> None:
    pki = tlsgen.make_demo_pki(tmp_path / "pki", ["B86001", "RR8"], days=30, server_names=["gateway.test", "10.0.0.5"])
    keys = [pki.ca.key, pki.server.key, *(c.key for c in pki.clients.values())]
    for key_path in keys:
        assert mode(key_path) == 0o600, key_path
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert mode(pki.ca.cert) == 0o644
    assert mode(tmp_path / "pki") == 0o700
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == sorted(
        ["ca.pem", "ca.key", "server.pem", "server.key", "B86001.pem", "B86001.key", "RR8.pem", "RR8.key"]
    )

    ca = load(pki.ca.cert)
    server = load(pki.server.cert)
    now = dt.datetime.now(dt.UTC)
    assert server.not_valid_after_utc - now <= dt.timedelta(days=30)
    store = Store([ca])
    # RFC 5280 path validation, as a TLS peer would do it, for every name the server should answer to
    for name in [x509.DNSName("localhost"), x509.DNSName("gateway.test")]:
        PolicyBuilder().store(store).build_server_verifier(name).verify(server, [])
    for ip in ["127.0.0.1", "10.0.0.5"]:
        PolicyBuilder().store(store).build_server_verifier(x509.IPAddress(ipaddress.ip_address(ip))).verify(server, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("elsewhere.test")).verify(server, [])
    for org, files in pki.clients.items():
        cert = load(files.cert)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == org
        # cryptography's client verifier insists on a SAN, which these (CN-named) certificates do not
        # carry; the real check is the mutual TLS handshake in tests/integration/test_gateway_tls.py. Here: issuer
        # signature, validity and usage.
        cert.verify_directly_issued_by(ca)
        assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        # a client certificate is not good for a server, nor the other way round
        with pytest.raises(VerificationError):
            PolicyBuilder().store(store).build_server_verifier(x509.DNSName("localhost")).verify(cert, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_client_verifier().verify(server, [])


def test_another_ca_does_not_verify(tmp_path: Path) -> None:
    ca = tlsgen.make_ca(tmp_path / "a")
    other = tlsgen.make_ca(tmp_path / "b")  # same subject name: only the signature tells them apart
    client = load(tlsgen.issue_client(other, "B86001", tmp_path / "b").cert)
    with pytest.raises(InvalidSignature):
        client.verify_directly_issued_by(load(ca.cert))
    server = load(tlsgen.issue_server(other, tmp_path / "b").cert)
    verifier = PolicyBuilder().store(Store([load(ca.cert)])).build_server_verifier(x509.DNSName("localhost"))
    with pytest.raises(VerificationError):
        verifier.verify(server, [])


def test_demo_pki_is_reused_until_it_no_longer_fits(tmp_path: Path) -> None:
    first = tlsgen.make_demo_pki(tmp_path, ["B86001"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    again = tlsgen.make_demo_pki(tmp_path, ["B86001", "RR8"])
    assert again.ca == first.ca and again.clients["B86001"] == first.clients["B86001"]
    assert all((tmp_path / name).read_bytes() == data for name, data in before.items())  # nothing re-issued
    assert "RR8" in again.clients
    # a server name not yet covered: a new server certificate from the same CA
    wider = tlsgen.make_demo_pki(tmp_path, ["B86001"], server_names=["gateway.test"])
    assert (tmp_path / "server.pem").read_bytes() != before["server.pem"]
    assert (tmp_path / "ca.pem").read_bytes() == before["ca.pem"]
    PolicyBuilder().store(Store([load(wider.ca.cert)])).build_server_verifier(x509.DNSName("gateway.test")).verify(
        load(wider.server.cert), []
    )
    # a key left readable by others is not reused
    (tmp_path / "B86001.key").chmod(0o644)
    tlsgen.make_demo_pki(tmp_path, ["B86001"])
    assert (tmp_path / "B86001.pem").read_bytes() != before["B86001.pem"]
    assert mode(tmp_path / "B86001.key") == 0o600
    # reuse=False: everything new
    tlsgen.make_demo_pki(tmp_path, ["B86001"], reuse=False)
    assert (tmp_path / "ca.pem").read_bytes() != before["ca.pem"]


def test_client_names_must_be_organisation_codes(tmp_path: Path) -> None:
    ca = tlsgen.make_ca(tmp_path)
    with pytest.raises(ValueError, match="not an organisation code"):
        tlsgen.issue_client(ca, "../etc/passwd", tmp_path)
