"""The gateway's authentication against a real grpc.aio server on 127.0.0.1, and the partners file.

The server is a one-method service registered with a generic handler whose handler asks
``caller()`` who is calling and answers with the organisation code; every client is a real
TLS (or, once, plaintext) channel. Certificates come from carehub.tlsgen in a temporary directory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from carehub import tlsgen
from carehub.domain.definitions import UNITS
from carehub.settings import Settings
from services.gateway import partners as partners_module
from services.gateway.auth import caller, client_channel, client_channel_sync, server_credentials
from services.gateway.partners import (
    GatewayConfigError,
    Partner,
    Partners,
    PartnersFileError,
    hash_token,
    load_partners,
    parse_partners,
)

KNOWN = "B86001"
HOSPITAL = "RR8"
UNKNOWN = "Z99999"  # certificate from the hub's CA, but not in the partners file
TOKEN = "riverside-token-4d7e0c2b9a1f6e8d3c5b7a9f0e2d4c6b"
HOSPITAL_TOKEN = "hospital-token-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
SERVICE = "carehub.test.WhoAmI"
METHOD = f"/{SERVICE}/Who"


@dataclass(frozen=True)
class Pki:
    hub: tlsgen.DemoPki
    rogue_ca: tlsgen.CertFiles
    rogue_client: tlsgen.CertFiles  # CN is a known partner, but signed by another CA
    rogue_server: tlsgen.CertFiles  # a server certificate for 127.0.0.1 from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    hub = tlsgen.make_demo_pki(base / "hub", [KNOWN, HOSPITAL, UNKNOWN])
    rogue_ca = tlsgen.make_ca(base / "rogue", name="someone else's CA")
    return Pki(
        hub=hub,
        rogue_ca=rogue_ca,
        rogue_client=tlsgen.issue_client(rogue_ca, KNOWN, base / "rogue"),
        rogue_server=tlsgen.issue_server(rogue_ca, base / "rogue"),
    )


@pytest.fixture(scope="module")
def partners() -> Partners:
    return Partners(
        [
            Partner(KNOWN, "Surgery", frozenset({"practice:B86001", "region"}), frozenset({hash_token(TOKEN)})),
            Partner(HOSPITAL, "Hospital", frozenset({"provider:RR8"}), frozenset({hash_token(HOSPITAL_TOKEN)})),
        ]
    )


def settings_for(pki: Pki, *, require_client_cert: bool = True, server: tlsgen.CertFiles | None = None) -> Settings:
    server = server or pki.hub.server
    return Settings(
        gateway_tls_cert=server.cert,
        gateway_tls_key=server.key,
        gateway_client_ca=pki.hub.ca.cert,
        gateway_require_client_cert=require_client_cert,
    )


Scenario = Callable[[str], Awaitable[None]]


def serve(partners: Partners, credentials: grpc.ServerCredentials | None, scenario: Scenario) -> None:
    """Run ``scenario(target)`` against a WhoAmI server on 127.0.0.1 (port chosen by the OS)."""

    async def who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return (await caller(context, partners)).org.encode()

    async def main() -> None:
        handler = grpc.method_handlers_generic_handler(SERVICE, {"Who": grpc.unary_unary_rpc_method_handler(who)})
        server = grpc.aio.server(handlers=[handler])
        if credentials is None:
            port = server.add_insecure_port("127.0.0.1:0")  # only to show caller() refuses plaintext
        else:
            port = server.add_secure_port("127.0.0.1:0", credentials)
        assert port > 0
        await server.start()
        try:
            await scenario(f"127.0.0.1:{port}")
        finally:
            await server.stop(None)

    asyncio.run(main())


async def who_am_i(channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]] = ()) -> str:
    async with channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
        reply = await call(b"", timeout=5, metadata=tuple(metadata) or None)
        return reply.decode()


async def refused(channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]] = ()) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await who_am_i(channel, metadata)
    error: grpc.aio.AioRpcError = info.value
    return error


def client(pki: Pki, org: str, **kwargs: Any) -> grpc.aio.Channel:
    files = pki.hub.clients[org]
    return client_channel(kwargs.pop("target"), pki.hub.ca.cert, files.cert, files.key, **kwargs)


# --- mutual TLS ---------------------------------------------------------------------------------


def test_client_certificate_of_a_partner_identifies_it(pki: Pki, partners: Partners) -> None:
    async def scenario(target: str) -> None:
        assert await who_am_i(client(pki, KNOWN, target=target)) == KNOWN
        assert await who_am_i(client(pki, HOSPITAL, target=target)) == HOSPITAL
        # the blocking channel too (in a thread: the server runs on this event loop)
        files = pki.hub.clients[KNOWN]

        def blocking() -> str:
            with client_channel_sync(target, pki.hub.ca.cert, files.cert, files.key) as channel:
                call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
                reply = call(b"", timeout=5)
                return reply.decode()

        assert await asyncio.to_thread(blocking) == KNOWN

    serve(partners, server_credentials(settings_for(pki)), scenario)


def test_client_certificate_from_another_ca_fails_the_handshake(pki: Pki, partners: Partners) -> None:
    async def scenario(target: str) -> None:
        rogue = client_channel(target, pki.hub.ca.cert, pki.rogue_client.cert, pki.rogue_client.key)
        assert (await refused(rogue)).code() == grpc.StatusCode.UNAVAILABLE
        # no certificate at all, even with a valid token: mutual TLS is required at the handshake
        anonymous = client_channel(target, pki.hub.ca.cert, token=TOKEN)
        assert (await refused(anonymous)).code() == grpc.StatusCode.UNAVAILABLE

    serve(partners, server_credentials(settings_for(pki)), scenario)


def test_client_refuses_a_server_certificate_from_another_ca(pki: Pki, partners: Partners) -> None:
    async def scenario(target: str) -> None:
        assert (await refused(client(pki, KNOWN, target=target))).code() == grpc.StatusCode.UNAVAILABLE

    serve(partners, server_credentials(settings_for(pki, server=pki.rogue_server)), scenario)


def test_certificate_of_an_unknown_organisation_is_refused(
    pki: Pki, partners: Partners, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(target: str) -> None:
        error = await refused(client(pki, UNKNOWN, target=target))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert UNKNOWN in (error.details() or "")

    with caplog.at_level(logging.WARNING, logger="services.gateway.auth"):
        serve(partners, server_credentials(settings_for(pki)), scenario)
    assert f"refused organisation {UNKNOWN}" in caplog.text


def test_a_token_beside_a_certificate_must_be_the_same_partners(pki: Pki, partners: Partners) -> None:
    async def scenario(target: str) -> None:
        assert await who_am_i(client(pki, KNOWN, target=target, token=TOKEN)) == KNOWN
        error = await refused(client(pki, KNOWN, target=target, token=HOSPITAL_TOKEN))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        # an unknown organisation's certificate is not rescued by a partner's token
        error = await refused(client(pki, UNKNOWN, target=target, token=TOKEN))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED

    serve(partners, server_credentials(settings_for(pki)), scenario)


# --- bearer tokens over TLS -----------------------------------------------------------------------


def test_bearer_tokens_when_client_certificates_are_not_required(
    pki: Pki, partners: Partners, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(target: str) -> None:
        assert await who_am_i(client_channel(target, pki.hub.ca.cert, token=TOKEN)) == KNOWN
        assert await who_am_i(client_channel(target, pki.hub.ca.cert, token=HOSPITAL_TOKEN)) == HOSPITAL
        for channel, metadata in [
            (client_channel(target, pki.hub.ca.cert, token=TOKEN + "x"), ()),  # wrong token
            (client_channel(target, pki.hub.ca.cert), ()),  # no credential at all
            (client_channel(target, pki.hub.ca.cert), [("authorization", f"Basic {TOKEN}")]),
            (client_channel(target, pki.hub.ca.cert), [("authorization", "Bearer ")]),
            # grpc's Python server does not request client certificates in this mode: a cert alone is nobody
            (client(pki, KNOWN, target=target), ()),
        ]:
            error = await refused(channel, metadata)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error

    with caplog.at_level(logging.DEBUG, logger="services.gateway.auth"):
        serve(partners, server_credentials(settings_for(pki, require_client_cert=False)), scenario)
    assert "bearer token matches no partner" in caplog.text
    assert "token-" not in caplog.text  # no token, right or wrong, is ever logged


def test_plaintext_calls_are_refused_even_with_a_valid_token(partners: Partners) -> None:
    async def scenario(target: str) -> None:
        channel = grpc.aio.insecure_channel(target)
        error = await refused(channel, [("authorization", f"Bearer {TOKEN}")])
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "TLS" in (error.details() or "")

    serve(partners, None, scenario)


# --- configuration fails fast ---------------------------------------------------------------------


def test_server_credentials_name_the_setting_and_file(pki: Pki, tmp_path: Path) -> None:
    good = settings_for(pki)
    missing = tmp_path / "nope.pem"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"gateway_tls_cert": None}, "CAREHUB_GATEWAY_TLS_CERT is not set"),
        ({"gateway_tls_key": None}, "CAREHUB_GATEWAY_TLS_KEY is not set"),
        ({"gateway_tls_key": missing}, f"CAREHUB_GATEWAY_TLS_KEY={missing}: file not found"),
        ({"gateway_client_ca": missing}, f"CAREHUB_GATEWAY_CLIENT_CA={missing}: file not found"),
        ({"gateway_client_ca": None}, "CAREHUB_GATEWAY_CLIENT_CA is not set"),
        ({"gateway_tls_cert": tmp_path}, f"CAREHUB_GATEWAY_TLS_CERT={tmp_path}: cannot read it"),
        ({"gateway_tls_key": pki.hub.clients[KNOWN].key}, "is not the key of the certificate"),
        ({"gateway_tls_cert": pki.hub.server.key}, "CAREHUB_GATEWAY_TLS_CERT=.*not PEM certificates"),
        ({"gateway_tls_key": pki.hub.server.cert}, "CAREHUB_GATEWAY_TLS_KEY=.*not an unencrypted PEM private key"),
    ]
    for change, message in cases:
        with pytest.raises(GatewayConfigError, match=message):
            server_credentials(good.model_copy(update=change))
    # without required client certificates there is no client CA to need
    server_credentials(good.model_copy(update={"gateway_require_client_cert": False, "gateway_client_ca": None}))


def test_client_channel_checks_its_arguments(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        client_channel("127.0.0.1:1", pki.hub.ca.cert, cert_file=pki.hub.clients[KNOWN].cert)
    with pytest.raises(GatewayConfigError, match=r"ca_file=.*file not found"):
        client_channel_sync("127.0.0.1:1", tmp_path / "none.pem")
    with pytest.raises(ValueError, match="token is empty"):
        client_channel_sync("127.0.0.1:1", pki.hub.ca.cert, token="")


# --- the partners file ----------------------------------------------------------------------------

GOOD = f"""
[partners.B86001]
name = "Riverside Surgery"
units = ["practice:B86001", "locality:L01", "region"]
tokens_sha256 = ["{hash_token(TOKEN).upper()}"]

[partners.RR8]
name = "Riverside Hospital"
"""


def test_partners_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "partners.toml"
    path.write_text(GOOD)
    loaded = load_partners(path)
    assert len(loaded) == 2 and KNOWN in loaded and {p.org for p in loaded} == {KNOWN, HOSPITAL}
    surgery = loaded.by_org(KNOWN)
    assert surgery is not None and surgery.name == "Riverside Surgery"
    assert loaded.by_token(TOKEN) is surgery
    assert loaded.by_token(HOSPITAL_TOKEN) is None and loaded.by_token("") is None
    assert loaded.by_org("nobody") is None
    assert TOKEN not in repr(surgery) and hash_token(TOKEN) not in repr(surgery)
    available = {"practice:B86001", "practice:B86002", "locality:L01", "locality:L02", "provider:RR8", "region"}
    assert loaded.entitled_units(KNOWN, available) == {"practice:B86001", "locality:L01", "region"}
    assert loaded.entitled_units(HOSPITAL, available) == {"provider:RR8", "region"}  # the default rule
    assert loaded.entitled_units("nobody", available) == set()


def test_unit_kinds_are_the_indicator_engines() -> None:
    assert {*partners_module.UNIT_KINDS, partners_module.REGION} == set(UNITS)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[partners.B86001]\nname = 'x'\nunits = 'region'\n", "partners.B86001.units"),
        ("[partners.B86001]\nname = 'x'\nunits = ['ward:7']\n", r"partners.B86001.units\[0\]"),
        ("[partners.B86001]\nname = 'x'\nunits = ['region', 'practice:']\n", r"partners.B86001.units\[1\]"),
        ("[partners.B86001]\nname = ''\n", "partners.B86001.name"),
        ("[partners.B86001]\nunits = ['region']\n", "partners.B86001.name"),
        ("[partners.B86001]\nname = 'x'\nunit = ['region']\n", "partners.B86001.unit: unknown key"),
        ("[partners.B86001]\nname = 'x'\ntokens_sha256 = ['not-a-hash']\n", r"partners.B86001.tokens_sha256\[0\]"),
        ("[partners.B86001]\nname = 'x'\ntokens_sha256 = 'abc'\n", "partners.B86001.tokens_sha256"),
        ("[partners.'bad code']\nname = 'x'\n", "partners.bad code"),
        ("[partners]\nB86001 = 'x'\n", "partners.B86001: expected a table"),
        ("[partner.B86001]\nname = 'x'\n", "partner: unknown key"),
        ("title = 'x'\n", "title: unknown key"),
        ("", "partners: missing"),
        ("[partners.B86001\nname = 'x'\n", "not valid TOML"),
        (
            f"[partners.A1]\nname = 'a'\ntokens_sha256 = ['{'a' * 64}']\n"
            f"[partners.B2]\nname = 'b'\ntokens_sha256 = ['{'A' * 64}']\n",
            "partners.B2.tokens_sha256: a token hash is also partners.A1's",
        ),
    ],
)
def test_bad_partners_files_name_the_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "partners.toml"
    path.write_text(text)
    with pytest.raises(PartnersFileError, match=f"^{path}: .*{key}" if "TOML" in key else f"^{path}: {key}"):
        load_partners(path)


def test_a_token_pasted_instead_of_its_hash_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(PartnersFileError) as info:
        parse_partners({"partners": {KNOWN: {"name": "x", "tokens_sha256": [TOKEN]}}}, source="p.toml")
    assert TOKEN not in str(info.value) and "p.toml: partners.B86001.tokens_sha256[0]" in str(info.value)


def test_missing_partners_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PartnersFileError, match=f"{tmp_path / 'none.toml'}: partners file not found"):
        load_partners(tmp_path / "none.toml")
