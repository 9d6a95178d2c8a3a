"""The stage runtime keeps each partition in order (carehub/runtime/stage.py ``in_order``).

faust may hand a stage records past some it dropped in a rebalance (72 before 65-71); the runtime
holds those back and reads the partition again from the expected offset, again each time records
past it come (faust may still hand over some fetched before the seek); offsets that do not come are
skipped only when retention removed them. The consumer here is a stand-in that records what it
was asked; tests/integration/test_stage_runtime.py runs a real one.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from carehub.runtime.stage import GAP_WAIT_S, Progress, in_order

LINKED, HANDOVER = "p.identity.linked", "p.timeline.handover"


class Consumer:
    def __init__(self, starts: dict[tuple[str, int], int], first: int = 0) -> None:
        self.starts, self.first = starts, first
        self.read_again_at: list[tuple[str, int, int]] = []
        self.absent: list[tuple[str, int, int, int]] = []

    def start_offset(self, topic: str, partition: int) -> int | None:
        return self.starts.get((topic, partition))

    async def first_offset(self, topic: str, partition: int) -> int | None:
        return self.first

    async def read_again(self, topic: str, partition: int, offset: int) -> None:
        self.read_again_at.append((topic, partition, offset))

    async def note_absent(self, topic: str, partition: int, offset_from: int, offset_to: int) -> None:
        self.absent.append((topic, partition, offset_from, offset_to))


def records(topic: str, partition: int, *offsets: int) -> list[Any]:
    return [SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition, offset=o)) for o in offsets]


def offsets(events: list[Any]) -> list[tuple[str, int, int]]:
    return [(e.message.topic, e.message.partition, e.message.offset) for e in events]


def take(events: list[Any], progress: Progress, consumer: Consumer, now: float) -> list[tuple[str, int, int]]:
    """One batch through the guard, the kept records then noted as processed (as the agent does)."""
    kept = asyncio.run(in_order(events, progress, consumer, now))
    for e in kept:
        tag = (e.message.topic, e.message.partition)
        progress.next_offset[tag] = max(progress.next_offset.get(tag, 0), e.message.offset + 1)
    return offsets(kept)


def test_records_past_the_committed_offset_wait_until_the_partition_is_read_again_from_it() -> None:
    consumer, progress = Consumer({(LINKED, 0): 65, (LINKED, 1): 10}), Progress()
    batch = records(LINKED, 0, 72, 73) + records(LINKED, 1, 10, 11)
    assert take(batch, progress, consumer, now=0.0) == [(LINKED, 1, 10), (LINKED, 1, 11)]
    assert consumer.read_again_at == [(LINKED, 0, 65)]
    # what was fetched before the seek still comes: held back, and the partition read again after it
    assert take(records(LINKED, 0, 74), progress, consumer, now=1.0) == []
    assert consumer.read_again_at == [(LINKED, 0, 65), (LINKED, 0, 65)]
    # then the partition from 65, in order; 72 and on again after it
    assert take(records(LINKED, 0, *range(65, 72)), progress, consumer, now=2.0) == [
        (LINKED, 0, o) for o in range(65, 72)]
    assert take(records(LINKED, 0, 72, 73, 74), progress, consumer, now=3.0) == [(LINKED, 0, o) for o in (72, 73, 74)]
    assert consumer.absent == [] and progress.reread == {}


def test_a_gap_after_processing_is_read_again_and_repeats_pass() -> None:
    consumer, progress = Consumer({(HANDOVER, 2): 0}), Progress()
    assert take(records(HANDOVER, 2, 0, 1, 2), progress, consumer, now=0.0) == [(HANDOVER, 2, o) for o in (0, 1, 2)]
    assert take(records(HANDOVER, 2, 5), progress, consumer, now=1.0) == []
    assert consumer.read_again_at == [(HANDOVER, 2, 3)]
    # a seek further back brings records processed already: repeats, handed over (harmless downstream)
    assert take(records(HANDOVER, 2, 1, 2, 3, 4, 5), progress, consumer, now=2.0) == [
        (HANDOVER, 2, o) for o in range(1, 6)]


def test_offsets_that_do_not_come_are_waited_for_unless_retention_removed_them() -> None:
    consumer, progress = Consumer({(LINKED, 0): 65}, first=0), Progress()
    assert take(records(LINKED, 0, 72), progress, consumer, now=0.0) == []
    late = GAP_WAIT_S + 0.1
    assert take(records(LINKED, 0, 72), progress, consumer, now=late) == []  # still there to be read: waited for
    assert consumer.absent == []
    consumer.first = 70  # 65-69 removed by retention meanwhile; 70 and 71 are still to come
    assert take(records(LINKED, 0, 72, 73), progress, consumer, now=2 * late) == []
    assert consumer.absent == [(LINKED, 0, 65, 69)] and consumer.read_again_at[-1] == (LINKED, 0, 70)
    assert take(records(LINKED, 0, 70, 71, 72), progress, consumer, now=2 * late + 1) == [
        (LINKED, 0, 70), (LINKED, 0, 71), (LINKED, 0, 72)]


def test_a_partition_without_a_known_start_is_not_judged() -> None:
    consumer, progress = Consumer({}), Progress()
    assert take(records(LINKED, 3, 40, 41), progress, consumer, now=0.0) == [(LINKED, 3, 40), (LINKED, 3, 41)]
    assert consumer.read_again_at == []
