"""Who may send FHIR to carehub: organisations, their sectors, and the token hashes they may use.

The FHIR door identifies a sender by its client certificate's common name (mutual TLS) or by a
bearer token whose SHA-256 is listed here; the sender's organisation code becomes the events'
``source_org``, whatever the Bundle itself claims, so one organisation cannot write another's
events. Tokens never appear in the file, only their hashes (compared in constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator

from carehub.domain.hl7v2.mapping import ORG_CODE, SectorName
from carehub.domain.loader import Definition, Reader, Text, Version, fail_on
from carehub.v1 import care_event_pb2 as ce

PACKAGED = Path(__file__).resolve().parent.parent / "data" / "fhir" / "senders.toml"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class SenderRow(Definition):
    """One ``[senders.<org>]`` table of senders.toml."""

    sector: SectorName
    token_sha256: list[Text] = Field(default_factory=list)
    note: str = ""

    @field_validator("token_sha256")
    @classmethod
    def _hashes(cls, value: list[str]) -> list[str]:
        for i, digest in enumerate(value):
            if not SHA256_HEX.match(digest):
                raise ValueError(f"item {i} must be 64 lower-case hex digits (the token's SHA-256), not a token")
        return value


class SendersFile(Definition):
    version: Version
    senders: dict[str, SenderRow]

    @model_validator(mode="after")
    def _codes(self) -> Self:
        fail_on([(("senders", org), f"{org!r} is not an organisation code such as \"RR8\"")
                 for org in self.senders if not ORG_CODE.match(org)])
        return self


@dataclass(frozen=True)
class Sender:
    org: str
    sector: ce.Sector.ValueType

    def __repr__(self) -> str:
        return f"Sender({self.org})"


class Senders:
    def __init__(self, rows: Mapping[str, SenderRow], path: Path | None = None) -> None:
        self.path = path
        self._by_org = {org: Sender(org, ce.Sector.Value(f"SECTOR_{row.sector.upper()}")) for org, row in rows.items()}
        self._hashes = [(digest, org) for org, row in rows.items() for digest in row.token_sha256]

    def __len__(self) -> int:
        return len(self._by_org)

    def by_org(self, org: str) -> Sender | None:
        return self._by_org.get(org)

    def by_token(self, token: str) -> Sender | None:
        digest = hash_token(token)
        found = None
        for listed, org in self._hashes:  # every hash compared, in constant time each
            if hmac.compare_digest(listed, digest):
                found = org
        return self._by_org[found] if found else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_senders(path: Path | str | None = None) -> Senders:
    """The senders in ``path`` (default: the packaged example). A bad file raises
    DefinitionError naming it and the entry."""
    where = Path(path) if path is not None else PACKAGED
    return Senders(Reader().load(where, SendersFile).senders, where)
