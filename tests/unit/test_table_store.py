from __future__ import annotations

from typing import Any

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
    assert t["local"] == {} and t["blocks"] == {}
    assert s.flush() == 3  # local record, its person's members, the block
    assert t["local"] == {"RR8/H-1": "p1"} and t["blocks"] == {"k": ["p1", "p2"]}
    assert t["members"] == {"p1": ["RR8/H-1"]}
    assert s.pending == 0 and s.flush() == 0


def test_full_blocks_stop_growing() -> None:
    s, t = store()
    t["blocks"]["common"] = [f"p{i}" for i in range(MAX_BLOCK_MEMBERS)]
    s.add_to_block("common", "newcomer")
    assert s.full_blocks == 1 and s.pending == 0


def test_moving_a_record_updates_both_member_lists() -> None:
    s, _ = store()
    s.set_local_person("RR8", "H-1", "p1")
    s.set_local_person("RR8", "H-2", "p1")
    s.set_local_person("RR8", "H-1", "p2")
    assert s.members("p1") == ["RR8/H-2"] and s.members("p2") == ["RR8/H-1"]


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
