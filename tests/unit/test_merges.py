"""A40-style merges and un-merges over the identity service's table store."""

from __future__ import annotations

import os
from datetime import date
from typing import Any

from carehub.domain.pseudonymise import Pseudonymiser
from carehub.v1 import care_event_pb2 as ce
from services.identity.linkage import Linker, load_model
from services.identity.merges import merge, unmerge
from services.identity.table_store import TABLES, TableStore

PSEUDO = Pseudonymiser(os.urandom(32))


def encoded(local_id: str, given: str, family: str, born: str, postcode: str) -> Any:
    person = ce.Person(local_id=local_id, given_name=given, family_name=family, birth_date=born,
                       sex=ce.SEX_FEMALE, postcode=postcode)
    return PSEUDO.encode(person, date(2026, 1, 1))


def setup() -> tuple[TableStore, Linker]:
    store = TableStore({name: {} for name in TABLES})
    linker = Linker(load_model("v1"), store)
    # one patient, registered twice at RR8 under different details, so two hub persons
    linker.remember("RR8", encoded("H-1", "Ann", "Jones", "1950-01-01", "LS1 4AP"), "p-survivor")
    linker.remember("B86001", encoded("P-9", "Ann", "Jones", "1950-01-01", "LS1 4AP"), "p-survivor")
    linker.remember("RR8", encoded("H-2", "Anne", "Jone", "1950-10-01", "M1 1AE"), "p-dup")
    linker.remember("LA01", encoded("C-7", "Anne", "Jone", "1950-10-01", "M1 1AE"), "p-dup")
    return store, linker


def test_merge_moves_every_record_of_the_absorbed_person() -> None:
    store, linker = setup()
    result = merge(store, "RR8", "p-survivor", "H-2")
    assert result.merge is not None and not result.merge.unmerge
    assert (result.merge.from_person_id, result.merge.into_person_id) == ("p-dup", "p-survivor")
    assert {(r.source_org, r.local_id) for r in result.merge.moved_records} == {("RR8", "H-2"), ("LA01", "C-7")}
    assert store.local_person("LA01", "C-7") == "p-survivor" and store.local_person("RR8", "H-2") == "p-survivor"
    assert sorted(store.members("p-survivor")) == ["B86001/P-9", "LA01/C-7", "RR8/H-1", "RR8/H-2"]
    assert store.resolve("p-dup") == "p-survivor"
    # a new record like the absorbed person's details now finds the survivor
    decision = linker.decide("RY6", encoded("X-1", "Anne", "Jone", "1950-10-01", "M1 1AE"))
    assert decision.person_id == "p-survivor"
    assert sorted(result.registry) == [("LA01", "C-7", "p-survivor"), ("RR8", "H-2", "p-survivor")]


def test_unmerge_puts_everything_back() -> None:
    store, _ = setup()
    before = store.profile("p-survivor")
    merge(store, "RR8", "p-survivor", "H-2")
    result = unmerge(store, "RR8", "p-survivor", "H-2", 7)
    assert result.merge is not None and result.merge.unmerge
    assert store.local_person("LA01", "C-7") == "p-dup" and store.local_person("RR8", "H-2") == "p-dup"
    assert sorted(store.members("p-survivor")) == ["B86001/P-9", "RR8/H-1"]
    assert store.resolve("p-dup") == "p-dup" and store.profile("p-survivor") == before
    assert unmerge(store, "RR8", "p-survivor", "H-2", 8).merge is None  # only once


def test_merging_the_same_person_or_an_unknown_record() -> None:
    store, _ = setup()
    assert merge(store, "RR8", "p-survivor", "H-1").merge is None
    fresh = merge(store, "RR8", "p-survivor", "H-404")
    assert fresh.merge is None and store.local_person("RR8", "H-404") == "p-survivor"
