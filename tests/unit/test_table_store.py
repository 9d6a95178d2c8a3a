from __future__ import annotations

from typing import Any

from carehub.v1 import ingest_pb2 as ing
from services.identity.linkage import Profile
from services.identity.linkage.features import Encoding
from services.identity.linkage.linker import blocking_keys_of
from services.identity.table_store import MAX_BLOCK_MEMBERS, TABLES, TableStore


def store() -> tuple[TableStore, dict[str, dict[str, Any]]]:
    tables: dict[str, dict[str, Any]] = {name: {} for name in TABLES}
    return TableStore(dict(tables)), tables


def test_writes_wait_for_flush_and_reads_see_them_before() -> None:
    s, t = store()
    s.set_local_person("RR8", "H-1", "p1")
    s.add_to_block("k", "p1")
    s.add_to_block("k", "p2")
    s.add_to_block("k", "p1")
    assert s.local_person("RR8", "H-1") == "p1" and s.block("k") == ["p1", "p2"]
    assert t["local"] == {} and t["keys"] == {}
    assert s.flush() == 3  # the local record, each person's row of blocking keys
    assert t["local"] == {"RR8/H-1": "p1"} and t["keys"] == {"p1": "k", "p2": "k"}
    assert s.pending == 0 and s.flush() == 0


def test_a_person_writes_one_row_for_all_its_keys() -> None:
    s, t = store()
    for key in ("n:1", "d:2", "p:3", "gf:4"):
        s.add_to_block(key, "p1")
    s.add_to_block("d:2", "p1")
    assert s.flush() == 1 and t["keys"] == {"p1": "n:1 d:2 p:3 gf:4"}
    s.add_to_block("an:5", "p1")
    assert s.flush() == 1 and t["keys"] == {"p1": "n:1 d:2 p:3 gf:4 an:5"}


def test_the_index_is_built_again_from_the_rows() -> None:
    s, t = store()
    for person, keys in (("p1", ("a", "b")), ("p2", ("b", "c")), ("p3", ("a",))):
        for key in keys:
            s.add_to_block(key, person)
    s.flush()
    again = TableStore(dict(t))
    assert {k: sorted(again.block(k)) for k in "abc"} == {"a": ["p1", "p3"], "b": ["p1", "p2"], "c": ["p2"]}
    t["keys"]["p4"] = "c"  # what a revocation and a new recovery can bring
    assert again.block("c") == ["p2"]
    again.forget_index()
    assert sorted(again.block("c")) == ["p2", "p4"]


def test_a_person_with_a_profile_and_no_row_is_indexed_under_its_profile() -> None:
    """State from before the keys table, or a row a crash lost: the profile's variants give the keys."""
    person = ing.PseudonymisedPerson(birth_date_hash=b"d" * 8, postcode_hash=b"p" * 8)
    variant = Encoding.of(person)
    s, t = store()
    t["profiles"]["p1"] = Profile((variant,))
    keys = blocking_keys_of(variant)
    assert keys and all(s.block(key) == ["p1"] for key in keys)


def test_full_blocks_stop_growing() -> None:
    s, t = store()
    t["keys"].update({f"p{i}": "common" for i in range(MAX_BLOCK_MEMBERS)})
    s.add_to_block("common", "newcomer")
    assert s.full_blocks == 1 and "newcomer" not in s.block("common")


def test_moving_a_record_updates_both_member_lists() -> None:
    s, _ = store()
    s.set_local_person("RR8", "H-1", "p1")
    s.set_local_person("RR8", "H-2", "p1")
    s.set_local_person("RR8", "H-1", "p2")
    assert s.members("p1") == ["RR8/H-2"] and s.members("p2") == ["RR8/H-1"]


def test_members_are_the_local_table_read_backwards_after_a_restart() -> None:
    """No table of their own: a new worker builds them from the local rows (fingerprints and all), sorted."""
    s, t = store()
    for local, person in (("H-9", "p1"), ("H-1", "p2"), ("H-3", "p1")):
        s.set_local_person("RR8", local, person)
    s.set_fingerprint("RR8", "H-3", b"\x01\x02")
    s.flush()
    assert set(t) == set(TABLES) and "members" not in t
    again = TableStore(dict(t))
    assert again.members("p1") == ["RR8/H-3", "RR8/H-9"] and again.members("p2") == ["RR8/H-1"]
    again.set_local_person("RR8", "H-9", "p2")  # a merge moves it
    assert again.members("p1") == ["RR8/H-3"] and again.members("p2") == ["RR8/H-1", "RR8/H-9"]
    again.set_local_person("RR8", "H-3", "p2")
    assert again.members("p1") == [] and again.members("p2") == ["RR8/H-1", "RR8/H-3", "RR8/H-9"]
    t["local"]["GP1/7"] = "p1"  # what a revocation and a new recovery can bring
    again.forget_index()
    assert again.members("p1") == ["GP1/7"]


def test_blocks_follow_redirects_and_deleted_keys_go() -> None:
    s, t = store()
    s.add_to_block("k", "old")
    s.add_to_block("k", "new")
    s.set_redirect("old", "new")
    assert s.block("k") == ["new"] and s.resolve("old") == "new"
    s.flush()
    s.set_redirect("old", None)
    s.flush()
    assert "old" not in t["redirects"] and s.block("k") == ["old", "new"]
