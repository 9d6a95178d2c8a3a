"""The engine's person stage: counts per timeline partition, sent as absolute values.

It runs inside the timeline worker, beside the person state it reads: each batch, every touched
person's cells are recomputed before and after (carehub/domain/indicator_facts.py) and the difference
is added to the counts of the person's partition. The changed cells then go to
``carehub.indicators.partials`` as absolute values (``IndicatorPartials``), one record per
partition per batch, so a repeated record cannot double count. The counts live in memory: the
first batch after a partition is assigned rebuilds them from the persons table (which faust has
recovered by then) and sends a full snapshot, which tells the aggregator to drop what it held
for that partition.
"""

from __future__ import annotations

from collections.abc import Iterable

from carehub.domain.indicator_facts import Cells, Key, PersonFacts, day_of, diff
from carehub.domain.timeline import ns
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import timeline_pb2 as tl

MAX_CELLS_PER_RECORD = 20_000  # ~0.5 MB: under Kafka's default 1 MB record limit


class PartitionCounts:
    def __init__(self, facts: PersonFacts) -> None:
        self.facts = facts
        self.digest = facts.digest
        self.counts: dict[int, dict[Key, list[int]]] = {}
        self.newest: dict[int, int] = {}
        self.changed: dict[int, set[Key]] = {}

    def has(self, partition: int) -> bool:
        return partition in self.counts

    def rebuild(self, partition: int, timelines: Iterable[tl.PersonTimeline]) -> int:
        """Count a partition from scratch; the next ``records`` sends it as a full snapshot."""
        counts: dict[Key, list[int]] = {}
        newest = 0
        persons = 0
        for timeline in timelines:
            persons += 1
            _add_all(counts, self.facts.cells(timeline), 1)
            if timeline.HasField("newest_event_at"):
                newest = max(newest, day_of(ns(timeline.newest_event_at)))
        self.counts[partition] = counts
        self.newest[partition] = newest
        self.changed.pop(partition, None)
        return persons

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.counts.pop(p, None)
            self.newest.pop(p, None)
            self.changed.pop(p, None)

    def update(self, partition: int, before: Cells, after: tl.PersonTimeline) -> None:
        """A person of ``partition`` whose cells were ``before`` now has timeline ``after``."""
        delta = diff(before, self.facts.cells(after))
        if delta:
            _add_all(self.counts[partition], delta, 1, self.changed.setdefault(partition, set()))
        if after.HasField("newest_event_at"):
            self.newest[partition] = max(self.newest[partition], day_of(ns(after.newest_event_at)))

    def snapshot_records(self, partition: int) -> list[bytes]:
        cells = self.counts[partition]
        return self._records(partition, list(cells), replace=True)

    def changed_records(self, partition: int) -> list[bytes]:
        keys = self.changed.pop(partition, set())
        return self._records(partition, sorted(keys), replace=False) if keys else []

    def _records(self, partition: int, keys: list[Key], replace: bool) -> list[bytes]:
        counts = self.counts[partition]
        out = []
        for start in range(0, max(len(keys), 1), MAX_CELLS_PER_RECORD):
            record = ind.IndicatorPartials(source_partition=partition, replace=replace and start == 0,
                                           newest_day=self.newest[partition], definitions_digest=self.digest)
            for key in keys[start:start + MAX_CELLS_PER_RECORD]:
                num, den, prov = counts.get(key) or (0, 0, 0)
                record.cells.add(indicator=key[0], unit=key[1], day=key[2], numerator=num, denominator=den,
                                 provisional=prov)
            out.append(record.SerializeToString())
        return out


def _add_all(counts: dict[Key, list[int]], cells: Cells, sign: int, changed: set[Key] | None = None) -> None:
    for key, (num, den, prov) in cells.items():
        cell = counts.get(key)
        if cell is None:
            cell = counts[key] = [0, 0, 0]
        cell[0] += sign * num
        cell[1] += sign * den
        cell[2] += sign * prov
        if cell == [0, 0, 0]:
            del counts[key]
        if changed is not None:
            changed.add(key)
