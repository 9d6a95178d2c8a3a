"""Partner organisations of the gateway: who they are, which indicator units they see, their tokens.

The partners file is TOML, one table per organisation, keyed by its organisation code (the
common name of its client certificate)::

    [partners.B86001]
    name = "Riverside Surgery"
    units = ["practice:B86001", "locality:L01", "region"]   # optional
    tokens_sha256 = ["<hex sha256 of a bearer token>"]        # optional
    roles = ["identity_review"]                                # optional

    [partners.B86001.fhir]                                     # optional: alerts also as FHIR
    endpoint = "https://fhir.riverside.example/notifications"
    token_env = "CAREHUB_FHIR_TOKEN_B86001"                   # optional

``units`` are the indicator units the partner may see; without it, the units whose code is the
organisation's own (``practice:ORG``, ``provider:ORG``) and ``region``. ``tokens_sha256`` holds
the SHA-256 (hex) of each bearer token the partner may use where the gateway accepts tokens;
tokens themselves are never stored, and should be random (``python -c 'import secrets;
print(secrets.token_urlsafe(32))'``; its hash: :func:`hash_token`). Loading checks every key and
fails with the file and key at fault, so a gateway never starts on a file it would misread.

``roles`` grants what only some partners may do: ``identity_review`` lets an identity team's own
tool work the identity review queue (``ListIdentityReviews``, ``GetIdentityReview``,
``DecideIdentityReview``). Without it those calls are refused; a role the gateway does not know
is an error naming the file and key.

A ``fhir`` table makes the gateway POST the partner's alerts to ``endpoint`` as FHIR notification
Bundles (services/gateway/fhir_delivery.py), beside gRPC, which stays open to every partner. The
endpoint must be ``https://``; plain ``http://`` is accepted only for a loopback host
(``127.0.0.1``, ``::1``, ``localhost``: tests and the demo), and it may carry no user name or
password. ``token_env`` names the environment variable holding the bearer token the hub
presents; the token itself is never in the file, and a variable that is unset when the gateway
starts stops it with the partner and the variable named.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# kinds of indicator unit (carehub/domain/definitions.py UNITS); "region" has no code
UNIT_KINDS = ("practice", "locality", "provider", "sector")
REGION = "region"
ORG_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
UNIT_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
PARTNER_KEYS = {"name", "units", "tokens_sha256", "fhir", "roles"}
IDENTITY_REVIEW = "identity_review"
ROLES = (IDENTITY_REVIEW,)  # what a partner may be granted beyond its own data
FHIR_KEYS = {"endpoint", "token_env"}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class GatewayConfigError(ValueError):
    """The gateway's configuration (partners file, TLS files) is wrong; the message says where."""


class PartnersFileError(GatewayConfigError):
    """The partners file is missing, unreadable or invalid; the message names the file and key."""


@dataclass(frozen=True)
class FhirEndpoint:
    """Where a partner takes its alerts as FHIR, and which variable holds the token to present."""

    endpoint: str
    token_env: str | None = None


@dataclass(frozen=True)
class Partner:
    org: str
    name: str
    units: frozenset[str]  # indicator units this partner may see
    token_hashes: frozenset[str] = frozenset()  # hex SHA-256 of its bearer tokens
    fhir: FhirEndpoint | None = None  # alerts also POSTed as FHIR notifications
    roles: frozenset[str] = frozenset()  # of ROLES

    def __repr__(self) -> str:  # keep token hashes out of logs and tracebacks
        return (f"Partner(org={self.org!r}, name={self.name!r}, units={sorted(self.units)!r}, "
                f"roles={sorted(self.roles)!r})")


def hash_token(token: str) -> str:
    """The hex SHA-256 of a bearer token, as written under ``tokens_sha256``."""
    return hashlib.sha256(token.encode()).hexdigest()


def default_units(org: str) -> frozenset[str]:
    """Without an explicit list: the units whose code is the organisation's own, and the region."""
    return frozenset({f"practice:{org}", f"provider:{org}", REGION})


class Partners:
    """The partners known to the gateway, looked up by organisation code or bearer token."""

    def __init__(self, partners: Iterable[Partner] = ()) -> None:
        self._by_org: dict[str, Partner] = {}
        self._hashes: list[tuple[bytes, Partner]] = []
        for partner in partners:
            if partner.org in self._by_org:
                raise ValueError(f"partner {partner.org} given twice")
            self._by_org[partner.org] = partner
            for digest in partner.token_hashes:
                if any(hmac.compare_digest(digest.encode(), other) for other, _ in self._hashes):
                    raise ValueError(f"partner {partner.org}: a token hash is also another partner's")
                self._hashes.append((digest.encode(), partner))

    def __len__(self) -> int:
        return len(self._by_org)

    def __iter__(self) -> Iterator[Partner]:
        return iter(self._by_org.values())

    def __contains__(self, org: object) -> bool:
        return org in self._by_org

    def by_org(self, org: str) -> Partner | None:
        return self._by_org.get(org)

    def by_token(self, token: str) -> Partner | None:
        """The partner holding this bearer token, or None.

        The token is hashed and compared with every stored hash in constant time (no early exit),
        so the time taken says nothing about how close a guess came or which partner it is near.
        """
        if not token:
            return None
        digest = hash_token(token).encode()
        found: Partner | None = None
        for stored, partner in self._hashes:
            if hmac.compare_digest(digest, stored):
                found = partner
        return found

    def entitled_units(self, org: str, available_units: Iterable[str]) -> set[str]:
        """Those of ``available_units`` the organisation may see (none for an unknown one)."""
        partner = self._by_org.get(org)
        if partner is None:
            return set()
        return {unit for unit in available_units if unit in partner.units}


def load_partners(path: Path | str) -> Partners:
    """Read and check the partners file; raise PartnersFileError naming the file and key at fault."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise PartnersFileError(f"{path}: partners file not found (CAREHUB_GATEWAY_PARTNERS_FILE)") from None
    except OSError as exc:
        raise PartnersFileError(f"{path}: cannot read the partners file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PartnersFileError(f"{path}: not valid TOML: {exc}") from None
    return parse_partners(data, source=str(path))


def parse_partners(data: Mapping[str, Any], source: str = "<partners>") -> Partners:
    """Check an already parsed partners document (see :func:`load_partners`)."""

    def fail(key: str, message: str) -> PartnersFileError:
        return PartnersFileError(f"{source}: {key}: {message}")

    extra = sorted(set(data) - {"partners"})
    if extra:
        raise fail(extra[0], "unknown key (expected only [partners.<org code>] tables)")
    table = data.get("partners")
    if not isinstance(table, dict):
        raise fail("partners", "missing or not a table: expected [partners.<org code>] tables")
    partners: list[Partner] = []
    owners: dict[str, str] = {}
    for org, entry in table.items():
        where = f"partners.{org}"
        if not ORG_CODE.fullmatch(org):
            raise fail(where, "an organisation code is 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
        entry = _table(entry, where, PARTNER_KEYS, "expected a table", fail)
        name = _text(entry, where, "name", "required: a non-empty string", fail)
        units = default_units(org) if "units" not in entry else _units(entry["units"], f"{where}.units", fail)
        hashes = _hashes(entry.get("tokens_sha256", []), f"{where}.tokens_sha256", fail)
        for digest in hashes:
            if digest in owners:
                raise fail(f"{where}.tokens_sha256", f"a token hash is also partners.{owners[digest]}'s")
            owners[digest] = org
        fhir = _fhir(entry["fhir"], f"{where}.fhir", fail) if "fhir" in entry else None
        roles = _roles(entry.get("roles", []), f"{where}.roles", fail)
        partners.append(Partner(org=org, name=name, units=units, token_hashes=hashes, fhir=fhir, roles=roles))
    return Partners(partners)


def _table(value: object, key: str, keys: set[str], expected: str,
           fail: Callable[[str, str], PartnersFileError]) -> dict[str, Any]:
    """``value`` as a table holding none but ``keys``."""
    if not isinstance(value, dict):
        raise fail(key, expected)
    unknown = sorted(set(value) - keys)
    if unknown:
        raise fail(f"{key}.{unknown[0]}", f"unknown key (expected {', '.join(sorted(keys))})")
    return value


def _text(table: Mapping[str, Any], key: str, name: str, required: str,
          fail: Callable[[str, str], PartnersFileError]) -> str:
    """The non-empty string ``table[name]``, stripped."""
    value = table.get(name)
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{key}.{name}", required)
    return value.strip()


def _fhir(value: object, key: str, fail: Callable[[str, str], PartnersFileError]) -> FhirEndpoint:
    table = _table(value, key, FHIR_KEYS, 'expected a table: [partners.<org>.fhir] with endpoint = "https://..."',
                   fail)
    endpoint = _text(table, key, "endpoint", 'required: the URL alerts are POSTed to, "https://..."', fail)
    problem = endpoint_problem(endpoint)
    if problem:
        raise fail(f"{key}.endpoint", problem)
    token_env = table.get("token_env")
    if token_env is not None and (not isinstance(token_env, str) or not ENV_NAME.fullmatch(token_env)):
        # the name of a variable, never its value: a token pasted here must not reach the logs
        raise fail(f"{key}.token_env", "expected the name of an environment variable (letters, digits, '_'), "
                                       "not the token")
    return FhirEndpoint(endpoint=endpoint, token_env=token_env)


def endpoint_problem(url: str) -> str | None:
    """What is wrong with a partner's FHIR endpoint URL, or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "not a URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password (use token_env for a bearer token)"
    if not host:
        return "no host in the URL"
    if parts.fragment:
        return "must not have a #fragment"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and host in LOOPBACK:
        return None  # tests and the demo: a receiver on this machine
    return "must be https:// (plain http:// only to 127.0.0.1, ::1 or localhost)"


def _units(value: object, key: str, fail: Callable[[str, str], PartnersFileError]) -> frozenset[str]:
    if not isinstance(value, list):
        raise fail(key, 'expected a list of units such as "practice:B86001", "locality:L01", "region"')
    units: set[str] = set()
    for i, unit in enumerate(value):
        if not isinstance(unit, str):
            raise fail(f"{key}[{i}]", "expected a string")
        kind, sep, code = unit.partition(":")
        if unit == REGION:
            pass
        elif not sep or kind not in UNIT_KINDS:
            kinds = ", ".join(UNIT_KINDS)
            raise fail(f"{key}[{i}]", f'{unit!r} is not "region" or <kind>:<code> with kind in {kinds}')
        elif not UNIT_CODE.fullmatch(code):
            raise fail(f"{key}[{i}]", f"{unit!r}: bad code {code!r}")
        units.add(unit)
    return frozenset(units)


def _roles(value: object, key: str, fail: Callable[[str, str], PartnersFileError]) -> frozenset[str]:
    if not isinstance(value, list):
        raise fail(key, f"expected a list of roles, of: {', '.join(ROLES)}")
    roles: set[str] = set()
    for i, role in enumerate(value):
        if not isinstance(role, str) or role not in ROLES:
            raise fail(f"{key}[{i}]", f"unknown role {role!r} (known: {', '.join(ROLES)})")
        roles.add(role)
    return frozenset(roles)


def _hashes(value: object, key: str, fail: Callable[[str, str], PartnersFileError]) -> frozenset[str]:
    if not isinstance(value, list):
        raise fail(key, "expected a list of hex SHA-256 digests")
    hashes: set[str] = set()
    for i, digest in enumerate(value):
        if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest.lower()):
            # never echo the value: a token pasted here by mistake must not reach the logs
            raise fail(f"{key}[{i}]", "expected a SHA-256 digest as 64 hex digits (the token's hash, not the token)")
        hashes.add(digest.lower())
    return frozenset(hashes)
