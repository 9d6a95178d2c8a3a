from __future__ import annotations

from carehub.domain.dedupe import DedupeIndex, Row

DAY = 86400.0


def test_seen_after_record_and_per_partition() -> None:
    table: dict[str, Row | None] = {}
    index = DedupeIndex(table, retention_s=7 * DAY)
    assert not index.seen("t:0", "RR8/e1")
    index.record("t:0", 10, ["RR8/e1", "RR8/e2"], now_s=1000.0)
    assert index.seen("t:0", "RR8/e1") and index.seen("t:0", "RR8/e2")
    assert not index.seen("t:1", "RR8/e1")
    assert len(table) == 1  # one row per batch, not one per event


def test_large_batches_are_split_into_bounded_rows() -> None:
    from carehub.domain.dedupe import ROW_KEYS

    table: dict[str, Row | None] = {}
    index = DedupeIndex(table, retention_s=7 * DAY)
    keys = [f"RR8/e{i}" for i in range(ROW_KEYS * 2 + 5)]
    index.record("t:0", 10, keys, now_s=1000.0)
    assert len(table) == 3 and all(row and len(row["k"]) <= ROW_KEYS for row in table.values())
    fresh = DedupeIndex(table, retention_s=7 * DAY)
    assert all(fresh.seen("t:0", k) for k in keys)
    assert fresh.expire("t:0", now_s=1000.0 + 8 * DAY) == len(keys) and not table


def test_rebuilt_from_table_after_revocation() -> None:
    table: dict[str, Row | None] = {}
    index = DedupeIndex(table, retention_s=7 * DAY)
    index.record("t:0", 10, ["RR8/e1"], now_s=1000.0)
    index.record("t:0", 20, ["RR8/e2"], now_s=1001.0)
    index.forget_partitions({"t:0"})
    assert len(index) == 0
    fresh = DedupeIndex(table, retention_s=7 * DAY)
    assert fresh.seen("t:0", "RR8/e1") and fresh.seen("t:0", "RR8/e2")


def test_rows_expire_after_retention() -> None:
    table: dict[str, Row | None] = {}
    index = DedupeIndex(table, retention_s=DAY)
    index.record("t:0", 10, ["RR8/old"], now_s=0.0)
    index.record("t:0", 20, ["RR8/new"], now_s=DAY / 2)
    assert index.expire("t:0", now_s=DAY + 1) == 1
    assert not index.seen("t:0", "RR8/old")
    assert index.seen("t:0", "RR8/new")
    assert list(table) == ["t:0|20"]


def test_keys_only_batches_from_an_offset_on_recorded_are_forgotten() -> None:
    """A worker that takes a partition again from its committed offset decides those batches again."""
    table: dict[str, Row | None] = {}
    index = DedupeIndex(table, retention_s=3600)
    index.record("t:0", 10, ["a", "b"], now_s=1.0)
    index.record("t:0", 20, ["c", "a"], now_s=2.0)  # "a" again: a repeat the batch at 10 recorded first
    index.record("t:0", 30, ["d"], now_s=3.0)
    index.record("t:1", 40, ["e"], now_s=3.0)
    fresh = DedupeIndex(table, retention_s=3600)  # as after a restart: rebuilt from the table
    assert fresh.forget_from("t:0", 20) == 2
    assert [k for k in "abcde" if fresh.seen("t:0", k)] == ["a", "b"]
    assert fresh.seen("t:1", "e") and len(table) == 4  # other partitions, and the rows, stay
