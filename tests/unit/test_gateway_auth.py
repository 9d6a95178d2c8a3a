"""The gateway's authentication configuration, and the partners file: no server, no socket.

The TLS handshakes and caller identification against a real grpc.aio server are in
tests/integration/test_gateway_tls.py. Certificates come from carehub.tlsgen in a temporary
directory (tests/gateway_pki.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from carehub.domain.definitions import UNITS
from services.gateway import partners as partners_module
from services.gateway.auth import client_channel, client_channel_sync, server_credentials
from services.gateway.partners import (
    GatewayConfigError,
    PartnersFileError,
    hash_token,
    load_partners,
    parse_partners,
)
from tests.gateway_pki import HOSPITAL, HOSPITAL_TOKEN, KNOWN, TOKEN, Pki, make_pki, settings_for


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


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


def test_roles_are_granted_only_where_the_file_says() -> None:
    loaded = parse_partners({"partners": {"IDT01": {"name": "Identity team", "roles": ["identity_review"]},
                                          "B86001": {"name": "Riverside Surgery"}}})
    team, surgery = loaded.by_org("IDT01"), loaded.by_org("B86001")
    assert team is not None and team.roles == {"identity_review"}
    assert surgery is not None and surgery.roles == frozenset()


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
        ("[partners.B86001]\nname = 'x'\nroles = ['identity_reviewer']\n",
         r"partners.B86001.roles\[0\]: unknown role 'identity_reviewer' \(known: identity_review\)"),
        ("[partners.B86001]\nname = 'x'\nroles = 'identity_review'\n", "partners.B86001.roles: expected a list"),
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
