"""The identity worker's known-record fast path (services/identity/app.py ``Identity.link_one``).

An event of a known local record whose demographics are as last remembered must cost no table
write and no resolver call, and change nothing any later decision sees; a changed record, or one
a merge moved, must be remembered again. Over a whole synthetic region the fast path must give
every event the person the full path gives it.
"""

from __future__ import annotations

import os
from datetime import date
from typing import Any

import pytest

from carehub.domain.pseudonymise import Pseudonymiser
from carehub.settings import load_settings
from carehub.synthetic import RegionConfig, generate_region
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import ingest_pb2 as ing
from services.identity.app import Identity
from services.identity.linkage import blocking_keys_of, demographics_fingerprint
from services.identity.linkage.data import region_records
from services.identity.linkage.features import Encoding
from services.identity.table_store import TABLES

KEY = os.urandom(32)
PSEUDO = Pseudonymiser(KEY)


def identity() -> tuple[Identity, dict[str, dict[str, Any]]]:
    tables: dict[str, dict[str, Any]] = {name: {} for name in (*TABLES, "dedupe", "reviews")}
    return Identity(load_settings(pseudonym_key=KEY.hex()), tables, linked=None, review=None, registry=None), tables


def person(local_id: str, postcode: str = "LS1 4AP", day: date = date(2026, 1, 1), **fields: str) -> Any:
    raw = ce.Person(local_id=local_id, given_name=fields.get("given", "Ann"), family_name="Jones",
                    birth_date="1950-01-01", sex=ce.SEX_FEMALE, postcode=postcode, address_line="1 High Street")
    return PSEUDO.encode(raw, day)


def event(org: str, who: Any, n: int) -> ing.AcceptedEvent:
    return ing.AcceptedEvent(event_id=f"E{n}", source_org=org, event_type=ce.EVENT_TYPE_ED_ATTENDANCE, person=who)


def test_fingerprint_ignores_age_and_local_id_and_follows_every_encoding() -> None:
    young, old = person("A", day=date(2026, 1, 1)), person("B", day=date(2040, 1, 1))
    assert young.age_years != old.age_years
    assert demographics_fingerprint(young) == demographics_fingerprint(old)
    assert demographics_fingerprint(young) != demographics_fingerprint(person("A", postcode="M1 1AE"))
    assert demographics_fingerprint(young) != demographics_fingerprint(person("A", given="Anne"))


def test_an_unchanged_known_record_writes_nothing() -> None:
    hub, tables = identity()
    first, _, _ = hub.link_one(event("RR8", person("H-1"), 1), 1, 1, 0)
    assert first[0].outcome == idn.LINK_OUTCOME_NEW_PERSON
    hub.store.flush()
    snapshot = {name: dict(table) for name, table in tables.items()}
    again, review, registry = hub.link_one(event("RR8", person("H-1", day=date(2031, 6, 1)), 2), 2, 2, 0)
    assert again[0].outcome == idn.LINK_OUTCOME_KNOWN_RECORD
    assert again[0].person_id == first[0].person_id
    assert (review, registry) == (None, [])
    assert hub.store.pending == 0
    assert {name: dict(table) for name, table in tables.items()} == snapshot


def test_a_known_record_with_new_demographics_is_remembered_again() -> None:
    hub, _ = identity()
    first, _, _ = hub.link_one(event("RR8", person("H-1"), 1), 1, 1, 0)
    pid = first[0].person_id
    moved = person("H-1", postcode="M1 1AE")
    again, _, _ = hub.link_one(event("RR8", moved, 2), 2, 2, 0)
    assert again[0].outcome == idn.LINK_OUTCOME_KNOWN_RECORD and again[0].person_id == pid
    profile = hub.store.profile(pid)
    assert profile is not None and Encoding.of(moved) in profile.variants
    assert all(pid in hub.store.block(key) for key in blocking_keys_of(Encoding.of(moved)))
    assert hub.store.fingerprint("RR8", "H-1") == demographics_fingerprint(moved)
    # another organisation's record with the new address now finds the person
    other, _, _ = hub.link_one(event("LA01", person("C-7", postcode="M1 1AE"), 3), 3, 3, 0)
    assert other[0].outcome == idn.LINK_OUTCOME_LINKED and other[0].person_id == pid


def test_a_record_moved_by_a_merge_is_remembered_under_its_new_person() -> None:
    hub, _ = identity()
    a, _, _ = hub.link_one(event("RR8", person("H-1"), 1), 1, 1, 0)
    b, _, _ = hub.link_one(event("RR8", person("H-2", given="Zoe", postcode="M1 1AE"), 2), 2, 2, 0)
    assert a[0].person_id != b[0].person_id
    assert hub.store.fingerprint("RR8", "H-2") is not None
    a40 = event("RR8", person("H-1"), 3)
    a40.event_type = ce.EVENT_TYPE_IDENTITY_MERGE
    a40.merge.prior_local_id = "H-2"
    out, _, _ = hub.link_one(a40, 3, 3, 0)
    assert out[0].merge.from_person_id == b[0].person_id
    assert hub.store.fingerprint("RR8", "H-2") is None  # moved: not as last remembered for its new person
    hub.link_one(event("RR8", person("H-2", given="Zoe", postcode="M1 1AE"), 4), 4, 4, 0)
    profile = hub.store.profile(a[0].person_id)
    assert profile is not None and Encoding.of(person("H-2", given="Zoe", postcode="M1 1AE")) in profile.variants


@pytest.mark.parametrize("seed", [5])
def test_over_a_region_the_fast_path_links_every_event_as_the_full_path_does(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    region = generate_region(RegionConfig(people=600, seed=seed))
    records = list(region_records(region, PSEUDO))
    assert len(records) > 1_000

    def run(fast: bool) -> tuple[list[tuple[str, idn.LinkOutcome.ValueType]], int]:
        hub, tables = identity()
        if not fast:
            monkeypatch.setattr(hub.store, "fingerprint", lambda org, local_id: None)
        out = []
        for n, record in enumerate(records, 1):
            linked, _, _ = hub.link_one(event(record.org, record.person, n), n, n, 0)
            out.append((linked[0].person_id, linked[0].outcome))
            if n % 50 == 0:
                hub.store.flush()
        hub.store.flush()
        return out, sum(hub.store.fingerprint(*row.split("/", 1)) is not None for row in tables["local"])

    fast, fingerprints = run(True)
    full, _ = run(False)
    assert fingerprints > 0
    assert sum(outcome == idn.LINK_OUTCOME_KNOWN_RECORD for _, outcome in fast) > len(records) // 3
    assert fast == full
