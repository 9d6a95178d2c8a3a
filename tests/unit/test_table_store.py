from __future__ import annotations

from typing import Any

from services.identity.table_store import MAX_BLOCK_MEMBERS, TableStore


def store() -> tuple[TableStore, dict[str, Any], dict[str, Any], dict[str, Any]]:
    local: dict[str, Any] = {}
    blocks: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    return TableStore(local, blocks, profiles), local, blocks, profiles


def test_writes_wait_for_flush_and_reads_see_them_before() -> None:
    s, local, blocks, _ = store()
    s.set_local_person("RR8", "H-1", "p1")
    s.add_to_block("k", "p1")
    s.add_to_block("k", "p2")
    s.add_to_block("k", "p1")
    assert s.local_person("RR8", "H-1") == "p1" and s.block("k") == ["p1", "p2"]
    assert local == {} and blocks == {}
    assert s.flush() == 2
    assert local == {"RR8/H-1": "p1"} and blocks == {"k": ["p1", "p2"]}
    assert s.pending == 0 and s.flush() == 0


def test_full_blocks_stop_growing() -> None:
    s, _, blocks, _ = store()
    blocks["common"] = [f"p{i}" for i in range(MAX_BLOCK_MEMBERS)]
    s.add_to_block("common", "newcomer")
    assert s.full_blocks == 1 and s.pending == 0
