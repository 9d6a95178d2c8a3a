"""Who is calling the partner gateway: TLS credentials for both ends, and the caller of each RPC.

The gateway serves TLS only; there is no plaintext option. With CAREHUB_GATEWAY_REQUIRE_CLIENT_CERT
(the default) a partner authenticates with its client certificate at the handshake (mutual TLS:
the CA in CAREHUB_GATEWAY_CLIENT_CA vouches for it; its subject common name is the organisation
code). Where that setting is false, partners authenticate with a bearer token over TLS whose
SHA-256 is listed for them in the partners file: grpc's Python server then does not request
client certificates at all (it offers "require and verify" or "don't request", nothing between),
so in that mode a certificate identifies nobody and every partner needs a token.

How :func:`caller` decides, in order:

1. the connection must be TLS (always true on the gateway's own port; checked anyway);
2. a verified client certificate is the identity: its common name must be a partner's code,
   else PERMISSION_DENIED (the CA has authenticated the organisation, but it is not granted
   access: not a partner, or no longer one; another credential on the same call does not
   override that); a bearer token sent beside it must be that same partner's, else
   PERMISSION_DENIED;
3. without a certificate, an ``authorization: Bearer <token>`` entry whose hash is a partner's;
   none, a malformed one or an unknown token is UNAUTHENTICATED.

Logs name the organisation code and the reason only; tokens never reach them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from carehub.revocation import RevocationList, fingerprint_pem
from carehub.settings import Settings

from .partners import GatewayConfigError, Partner, Partners

log = logging.getLogger(__name__)

COMMON_NAME = "x509_common_name"
PEER_CERT = "x509_pem_cert"
SECURITY_TYPE = "transport_security_type"
AUTHORIZATION = "authorization"
NAME_OVERRIDE = "grpc.ssl_target_name_override"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED  # no credential, or one that identifies no partner
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED  # a CA-vouched organisation that may not call


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    """TLS credentials for the gateway's port from CAREHUB_GATEWAY_TLS_CERT/_TLS_KEY/_CLIENT_CA.

    Raises GatewayConfigError naming the setting and file when one is unset, missing, unreadable
    or not what it should be (the key must match the certificate, which must not have expired).
    With CAREHUB_GATEWAY_REQUIRE_CLIENT_CERT (the default) every client must present a
    certificate signed by the client CA, at the handshake; without it client certificates are not
    requested (so CAREHUB_GATEWAY_CLIENT_CA is not needed, and is ignored with a warning).
    """
    cert_pem = _read("CAREHUB_GATEWAY_TLS_CERT", settings.gateway_tls_cert, "the server certificate chain")
    key_pem = _read("CAREHUB_GATEWAY_TLS_KEY", settings.gateway_tls_key, "the server private key")
    chain = _certificates("CAREHUB_GATEWAY_TLS_CERT", settings.gateway_tls_cert, cert_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise GatewayConfigError(
            f"CAREHUB_GATEWAY_TLS_KEY={settings.gateway_tls_key}: not an unencrypted PEM private key ({exc})"
        ) from None
    if key.public_key() != chain[0].public_key():
        raise GatewayConfigError(
            f"CAREHUB_GATEWAY_TLS_KEY={settings.gateway_tls_key} is not the key of the certificate in "
            f"CAREHUB_GATEWAY_TLS_CERT={settings.gateway_tls_cert}"
        )
    if chain[0].not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise GatewayConfigError(
            f"CAREHUB_GATEWAY_TLS_CERT={settings.gateway_tls_cert}: the certificate expired on "
            f"{chain[0].not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    ca_pem: bytes | None = None
    if settings.gateway_require_client_cert:
        ca_pem = _read(
            "CAREHUB_GATEWAY_CLIENT_CA",
            settings.gateway_client_ca,
            "the CA that signs partner certificates (required while CAREHUB_GATEWAY_REQUIRE_CLIENT_CERT is true)",
        )
        _certificates("CAREHUB_GATEWAY_CLIENT_CA", settings.gateway_client_ca, ca_pem)
    elif settings.gateway_client_ca is not None:
        log.warning(
            "CAREHUB_GATEWAY_CLIENT_CA is ignored: with CAREHUB_GATEWAY_REQUIRE_CLIENT_CERT=false client certificates "
            "are not requested, and partners authenticate with bearer tokens"
        )
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=ca_pem,
        require_client_auth=settings.gateway_require_client_cert,
    )


async def caller(context: grpc.aio.ServicerContext[Any, Any], partners: Partners,
                 revocations: RevocationList | None = None) -> Partner:
    """The partner making this call, or the call is aborted (see the module's docstring for the rules;
    a certificate on the operator's deny list, ``revocations``, is refused like an unknown one)."""
    auth = {key: list(values) for key, values in (context.auth_context() or {}).items()}
    if auth.get(SECURITY_TYPE, [b""])[0] != b"ssl":
        log.warning("refused a call not made over TLS")
        await _refuse(context, UNAUTHENTICATED, "the partner gateway accepts calls over TLS only")
    token, problem = _bearer(context.invocation_metadata() or ())
    names = auth.get(COMMON_NAME, [])
    if names or PEER_CERT in auth:
        if len(names) != 1:
            log.warning("refused a client certificate with %d common names", len(names))
            await _refuse(context, PERMISSION_DENIED, "the client certificate must name one organisation")
        org = names[0].decode("utf-8", "replace")
        pem = auth.get(PEER_CERT, [b""])[0]
        if revocations is not None and pem and revocations.revoked(fingerprint_pem(pem)):
            log.warning("refused organisation %s: its certificate is revoked", org)
            await _refuse(context, PERMISSION_DENIED, "the client certificate has been revoked")
        partner = partners.by_org(org)
        if partner is None:
            log.warning("refused organisation %s: certificate accepted but not a partner", org)
            await _refuse(context, PERMISSION_DENIED, f"organisation {org} is not a partner of this hub")
        if (token is not None or problem is not None) and (token is None or partners.by_token(token) is not partner):
            log.warning("refused organisation %s: a bearer token on the call is not its own", org)
            await _refuse(context, PERMISSION_DENIED, "the bearer token is not the certificate's")
        return partner
    if problem is not None:
        log.warning("refused a call without certificate: %s", problem)
        await _refuse(context, UNAUTHENTICATED, problem)
    if token is None:
        log.warning("refused a call with neither a client certificate nor a bearer token")
        await _refuse(context, UNAUTHENTICATED, "a client certificate or a bearer token is required")
    partner = partners.by_token(token)
    if partner is None:
        log.warning("refused a call: bearer token matches no partner")
        await _refuse(context, UNAUTHENTICATED, "the bearer token is not recognised")
    return partner


def client_channel(
    target: str,
    ca_file: Path | str,
    cert_file: Path | str | None = None,
    key_file: Path | str | None = None,
    token: str | None = None,
    *,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to the gateway over TLS, verifying it against ``ca_file``.

    With ``cert_file`` and ``key_file`` the client presents that certificate (mutual TLS); with
    ``token`` every call carries ``authorization: Bearer <token>``. ``server_name`` overrides the
    name checked against the server certificate (only for a certificate not naming ``target``).
    """
    credentials, opts = _channel_credentials(ca_file, cert_file, key_file, token, server_name, options)
    return grpc.aio.secure_channel(target, credentials, options=opts)


def client_channel_sync(
    target: str,
    ca_file: Path | str,
    cert_file: Path | str | None = None,
    key_file: Path | str | None = None,
    token: str | None = None,
    *,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """As :func:`client_channel`, for blocking code."""
    credentials, opts = _channel_credentials(ca_file, cert_file, key_file, token, server_name, options)
    return grpc.secure_channel(target, credentials, options=opts)


def _channel_credentials(
    ca_file: Path | str,
    cert_file: Path | str | None,
    key_file: Path | str | None,
    token: str | None,
    server_name: str | None,
    options: Iterable[tuple[str, Any]],
) -> tuple[grpc.ChannelCredentials, list[tuple[str, Any]]]:
    if (cert_file is None) != (key_file is None):
        raise ValueError("give both cert_file and key_file for a client certificate, or neither")
    root = _read("ca_file", Path(ca_file), "the CA that signs the gateway's certificate")
    cert = _read("cert_file", Path(cert_file), "the client certificate") if cert_file is not None else None
    key = _read("key_file", Path(key_file), "the client private key") if key_file is not None else None
    credentials = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)
    if token is not None:
        if not token:
            raise ValueError("the bearer token is empty")
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
    opts = list(options)
    if server_name is not None:
        opts.append((NAME_OVERRIDE, server_name))
    return credentials, opts


def _bearer(metadata: Iterable[Any]) -> tuple[str | None, str | None]:
    """The bearer token on the call, if any, and what is wrong with the authorization entries."""
    values = [value for key, value in metadata if key.lower() == AUTHORIZATION]
    if not values:
        return None, None
    if len(values) > 1:
        return None, "more than one authorization entry"
    value = values[0]
    if not isinstance(value, str):
        return None, "the authorization entry is not text"
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, "the authorization entry is not 'Bearer <token>'"
    return token.strip(), None


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("context.abort returned")  # it raises; this keeps the type checker honest


def _read(setting: str, path: Path | None, what: str) -> bytes:
    if path is None:
        raise GatewayConfigError(f"{setting} is not set: {what} (the partner gateway serves TLS only)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GatewayConfigError(f"{setting}={path}: file not found ({what})") from None
    except OSError as exc:
        raise GatewayConfigError(f"{setting}={path}: cannot read it ({what}): {exc.strerror or exc}") from None
    if not data.strip():
        raise GatewayConfigError(f"{setting}={path}: the file is empty ({what})")
    return data


def _certificates(setting: str, path: Path | None, pem: bytes) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise GatewayConfigError(f"{setting}={path}: not PEM certificates ({exc})") from None
    return chain
