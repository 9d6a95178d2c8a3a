"""The gateway's authentication against a real grpc.aio server on 127.0.0.1.

The server is a one-method service registered with a generic handler whose handler asks
``caller()`` who is calling and answers with the organisation code; every client is a real
TLS (or, once, plaintext) channel. Certificates come from carehub.tlsgen in a temporary directory
(tests/gateway_pki.py). Configuration and partners-file checks that need no server are in
tests/unit/test_gateway_auth.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509

from carehub.harness import eventually
from carehub.revocation import RevocationList, fingerprint_pem
from carehub.tlsgen import issue_client
from services.gateway.auth import caller, client_channel, client_channel_sync, server_credentials
from services.gateway.partners import Partner, Partners, hash_token
from tests.gateway_pki import HOSPITAL, HOSPITAL_TOKEN, KNOWN, TOKEN, UNKNOWN, Pki, make_pki, settings_for

pytestmark = pytest.mark.integration

SERVICE = "carehub.test.WhoAmI"
METHOD = f"/{SERVICE}/Who"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def partners() -> Partners:
    return Partners(
        [
            Partner(KNOWN, "Surgery", frozenset({"practice:B86001", "region"}), frozenset({hash_token(TOKEN)})),
            Partner(HOSPITAL, "Hospital", frozenset({"provider:RR8"}), frozenset({hash_token(HOSPITAL_TOKEN)})),
        ]
    )


Scenario = Callable[[str], Awaitable[None]]


def serve(partners: Partners, credentials: grpc.ServerCredentials | None, scenario: Scenario,
          revocations: RevocationList | None = None) -> None:
    """Run ``scenario(target)`` against a WhoAmI server on 127.0.0.1 (port chosen by the OS)."""

    async def who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return (await caller(context, partners, revocations)).org.encode()

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


def test_an_expired_client_certificate_fails_the_handshake(pki: Pki, partners: Partners, tmp_path: Path) -> None:
    expired = issue_client(pki.hub.ca, KNOWN, tmp_path, days=0)  # valid until the moment it was made
    eventually(lambda: x509.load_pem_x509_certificate(expired.cert.read_bytes()).not_valid_after_utc
               < datetime.now(UTC), 10, "the certificate has expired")

    async def scenario(target: str) -> None:
        channel = client_channel(target, pki.hub.ca.cert, expired.cert, expired.key)
        assert (await refused(channel)).code() == grpc.StatusCode.UNAVAILABLE

    serve(partners, server_credentials(settings_for(pki)), scenario)


def test_a_revoked_certificate_is_refused_without_a_restart(pki: Pki, partners: Partners, tmp_path: Path) -> None:
    deny = tmp_path / "revoked.txt"
    deny.write_text("# nothing revoked yet\n")
    revocations = RevocationList(deny)
    files = pki.hub.clients[KNOWN]

    async def scenario(target: str) -> None:
        assert await who_am_i(client(pki, KNOWN, target=target)) == KNOWN
        deny.write_text(f"# the surgery's laptop was stolen\n{fingerprint_pem(files.cert.read_bytes())}\n")
        os.utime(deny, ns=(1, 10**18))  # a new mtime however coarse the file system's clock
        error = await refused(client(pki, KNOWN, target=target))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "revoked" in (error.details() or "")
        assert await who_am_i(client(pki, HOSPITAL, target=target)) == HOSPITAL  # others are unaffected

    serve(partners, server_credentials(settings_for(pki)), scenario, revocations)


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
