"""How each organisation knows a person: its own record id and its own copy of the demographics.

Every organisation numbers people its own way and keys its own demographics, so the hub
can only join records by linkage; ``truth`` keeps the real answer for measuring that linkage.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from carehub.synthetic.config import RegionConfig
from carehub.synthetic.noise import name_typo, postcode_typo
from carehub.synthetic.orgs import Organisation, OrgKind
from carehub.synthetic.population import Person
from carehub.v1 import care_event_pb2 as pb

# (prefix, lowest number, highest number) of local record ids per kind of organisation.
ID_FORMATS: dict[OrgKind, tuple[str, int, int]] = {
    OrgKind.PRACTICE: ("", 100_000, 9_999_999),  # practice record number
    OrgKind.HOSPITAL: ("H-", 10_000, 999_999),  # MRN, e.g. "H-99812"
    OrgKind.SOCIAL_CARE: ("SC", 100_000, 999_999),  # client id
    OrgKind.COMMUNITY: ("C", 1_000_000, 9_999_999),
    OrgKind.MENTAL_HEALTH: ("MH", 100_000, 999_999),
    OrgKind.AMBULANCE: ("AMB", 1_000_000, 9_999_999),
    OrgKind.CARE_HOME: ("R", 1_000, 9_999),  # resident number
}


@dataclass(frozen=True, slots=True)
class LocalRecord:
    org: str
    local_id: str
    person: int
    message: pb.Person  # the demographics as this organisation holds them
    typo: str  # which field was mistyped ("given_name", "family_name", "postcode", "address_line") or ""
    duplicate: bool  # a second record the organisation created in error (later merged)


class Registry:
    """Allocates local ids and per-organisation demographics, each from its organisation's own Random.

    Separate Randoms keep one organisation's ids independent of how much the others do.
    """

    def __init__(self, config: RegionConfig) -> None:
        self._config = config
        self._rngs: dict[str, random.Random] = {}
        self._used: dict[str, set[str]] = {}
        self._records: dict[tuple[int, str], LocalRecord] = {}
        self._ids_of_person: dict[int, set[str]] = {}
        self._duplicates: list[LocalRecord] = []
        self.truth: dict[tuple[str, str], int] = {}

    def _rng(self, org: str) -> random.Random:
        rng = self._rngs.get(org)
        if rng is None:
            rng = self._rngs[org] = random.Random(f"{self._config.seed}/ids/{org}")
            self._used[org] = set()
        return rng

    def _new_id(self, org: Organisation, person: int) -> str:
        rng = self._rng(org.code)
        prefix, low, high = ID_FORMATS[org.kind]
        used = self._used[org.code]
        mine = self._ids_of_person.setdefault(person, set())
        while True:
            local_id = f"{prefix}{rng.randint(low, high)}"
            if local_id not in used and local_id not in mine:
                used.add(local_id)
                mine.add(local_id)
                return local_id

    def record(self, person: Person, org: Organisation) -> LocalRecord:
        rec = self._records.get((person.index, org.code))
        if rec is None:
            rec = self._records[(person.index, org.code)] = self._make(person, org, duplicate=False)
        return rec

    def duplicate_record(self, person: Person, org: Organisation) -> LocalRecord:
        """A record made in a hurry (e.g. an unidentified arrival in ED), usually without the NHS number."""
        rec = self._make(person, org, duplicate=True)
        self._duplicates.append(rec)
        return rec

    def _make(self, person: Person, org: Organisation, *, duplicate: bool) -> LocalRecord:
        rng = self._rng(org.code)
        local_id = self._new_id(org, person.index)
        missing_share = 0.7 if duplicate else self._config.missing_national_id_share
        msg = pb.Person(
            local_id=local_id,
            national_id="" if rng.random() < missing_share else person.nhs_number,
            given_name=person.given_name,
            family_name=person.family_name,
            birth_date=person.birth_date.isoformat(),
            sex=person.sex,
            postcode=person.postcode,
            address_line=person.address_line,
        )
        typo = ""
        if rng.random() < self._config.typo_share:
            typo = rng.choices(("given_name", "family_name", "postcode", "address_line"), (4, 4, 2, 2))[0]
            if typo == "postcode":
                msg.postcode = postcode_typo(rng, msg.postcode)
            else:
                setattr(msg, typo, name_typo(rng, getattr(msg, typo)))
        self.truth[(org.code, local_id)] = person.index
        return LocalRecord(org.code, local_id, person.index, msg, typo, duplicate)

    def encounter_id(self, org: Organisation, prefix: str) -> str:
        """Spell or attendance ids, unique within the organisation."""
        rng = self._rng(org.code)
        used = self._used[org.code]
        while True:
            value = f"{prefix}{rng.randint(10_000_000, 99_999_999)}"
            if value not in used:
                used.add(value)
                return value

    def records(self) -> list[LocalRecord]:
        return [*self._records.values(), *self._duplicates]
