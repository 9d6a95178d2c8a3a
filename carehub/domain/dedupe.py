"""Exact-duplicate detection by event id, durable in a faust table, bounded by retention.

Writing one table row per event would send one changelog record per event, which is
what limits faust pipelines on the embedded broker (docs/embedded-broker.md).
So the table holds one row per processed batch and source partition (the keys that
batch accepted), and an in-memory index over those rows answers lookups. The index of
a partition is rebuilt from the table after it is (re)assigned, and rows older than
the retention window are deleted as batches go by.
"""

from __future__ import annotations

from collections import deque
from collections.abc import MutableMapping
from typing import Any

Row = dict[str, Any]  # {"t": accepted epoch seconds, "k": [dedupe keys]}
ROW_KEYS = 4000  # keys per row: ~200 KB, well under Kafka's default 1 MB record limit


class DedupeIndex:
    def __init__(self, table: MutableMapping[str, Row | None], retention_s: float) -> None:
        self.table = table
        self.retention_s = retention_s
        self._seen: dict[str, dict[str, float]] = {}  # partition tag -> dedupe key -> time
        self._rows: dict[str, deque[tuple[float, str]]] = {}  # partition tag -> (time, row key), oldest first

    def _load(self, tag: str) -> dict[str, float]:
        seen = self._seen.get(tag)
        if seen is not None:
            return seen
        seen, rows = {}, []
        prefix = f"{tag}|"
        for row_key, row in list(self.table.items()):
            if row and row_key.startswith(prefix):
                rows.append((float(row["t"]), row_key))
                for k in row["k"]:
                    seen[k] = float(row["t"])
        rows.sort()
        self._seen[tag], self._rows[tag] = seen, deque(rows)
        return seen

    def seen(self, tag: str, key: str) -> bool:
        return key in self._load(tag)

    def record(self, tag: str, first_offset: int, keys: list[str], now_s: float) -> None:
        """Remember keys accepted by one batch; must run with a current event of that partition."""
        seen = self._load(tag)
        for start in range(0, len(keys), ROW_KEYS):
            row_key = f"{tag}|{first_offset}" if start == 0 else f"{tag}|{first_offset}+{start}"
            self.table[row_key] = {"t": now_s, "k": keys[start:start + ROW_KEYS]}
            self._rows[tag].append((now_s, row_key))
        for k in keys:
            seen[k] = now_s

    def expire(self, tag: str, now_s: float) -> int:
        """Drop rows older than the retention window; returns how many keys were forgotten."""
        seen = self._load(tag)
        rows = self._rows[tag]
        cutoff = now_s - self.retention_s
        forgotten = 0
        while rows and rows[0][0] < cutoff:
            _, row_key = rows.popleft()
            row = self.table.get(row_key)
            if row:
                for k in row["k"]:
                    if seen.get(k, now_s) < cutoff:
                        del seen[k]
                        forgotten += 1
            del self.table[row_key]
        return forgotten

    def forget_from(self, tag: str, offset: int) -> int:
        """Stop taking for repeats the keys only batches from ``offset`` on recorded; returns how many.

        For a worker that takes a partition again from its committed ``offset``: the batches after it
        were processed, but whether all their state reached the changelogs is not known, so their
        events are to be processed again rather than skipped. A key that a batch before ``offset``
        recorded as well is still a repeat. The rows stay in the table, to expire as usual.
        """
        seen = self._load(tag)
        later: set[str] = set()
        earlier: set[str] = set()
        for _, row_key in self._rows[tag]:
            row = self.table.get(row_key)
            if not row:
                continue
            first = int(row_key.rsplit("|", 1)[1].split("+", 1)[0])
            (later if first >= offset else earlier).update(row["k"])
        forgotten = later - earlier
        for k in forgotten:
            seen.pop(k, None)
        return len(forgotten)

    def forget_partitions(self, tags: set[str]) -> None:
        """After a revocation: the next owner (maybe us again) rebuilds from the table."""
        for tag in tags:
            self._seen.pop(tag, None)
            self._rows.pop(tag, None)

    def __len__(self) -> int:
        return sum(len(s) for s in self._seen.values())
