"""Batch processing helpers for faust streams.

faust 0.15.3 raises "Cannot modify table key from outside of stream iteration" when a
table is written while handling a batch from ``take_events()``: table writes go to the
changelog partition of the stream's *current event*. ``current_event_of`` sets it to an
event of the partition being written, so the changelog stays co-partitioned with the
source (docs/embedded-broker.md). It uses a private faust method, wrapped here
only, and tests/integration/test_ingest.py covers it through restart recovery.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import faust
from mode.types.signals import BaseSignalT

from carehub.runtime.metrics import STAGE_LAG, STAGE_LAST, STAGE_RECORDS


@contextlib.contextmanager
def current_event_of(stream: Any, event: Any) -> Iterator[None]:
    previous = stream.current_event
    stream._set_current_event(event)
    try:
        yield
    finally:
        stream._set_current_event(previous)


def group_by_partition(events: Sequence[Any]) -> dict[tuple[str, int], list[Any]]:
    """Events of a batch grouped by (topic, partition), each group in offset order."""
    groups: dict[tuple[str, int], list[Any]] = {}
    for event in events:
        tp = (event.message.topic, event.message.partition)
        groups.setdefault(tp, []).append(event)
    return groups


class BatchStage(Protocol):
    async def process_batch(self, stream: Any, events: list[Any]) -> None: ...


def add_batch_agent(app: faust.App, source: Any, name: str, stage: BatchStage, size: int, within_s: float,
                    ) -> None:
    """An agent that hands ``stage.process_batch`` up to ``size`` events at a time.

    The method is looked up per batch, so a wrapper installed after start-up (the bench's
    clock) takes effect.
    """

    @app.agent(source, name=name)
    async def agent(stream: Any) -> None:
        async for events in stream.take_events(size, within_s):
            batch = list(events)
            await stage.process_batch(stream, batch)
            note_batch(name, batch)


def note_batch(stage: str, events: Sequence[Any]) -> None:
    """How far behind the stage is, measured by itself: the age of the newest record it has done.

    Record timestamps (set when produced), not end offsets: those are wrong on the embedded broker.
    """
    if not events:
        return
    STAGE_RECORDS.labels(stage).inc(len(events))
    newest = max(e.message.timestamp for e in events)
    if newest:
        STAGE_LAG.labels(stage).set(max(0.0, time.time() - newest))
        STAGE_LAST.labels(stage).set(newest)


def forget_on_revoke(app: faust.App, index: Any) -> None:
    """Drop ``index``'s in-memory view of partitions this worker no longer owns."""

    @app.on_partitions_revoked.connect
    def on_revoked(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", set())
        index.forget_partitions({f"{tp.topic}:{tp.partition}" for tp in revoked})
