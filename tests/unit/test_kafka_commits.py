"""What carehub's consumer commits (carehub/kafka/transport.py), without a broker.

faust commits an offset once every record below it is acknowledged, but it acknowledges records
it never handed to an agent (skipped in a rebalance, a cancelled batch), lets a commit pass an
unacknowledged record at the head of a partition, and takes a committed 0 for none. Each of
these lost a record for good once the offset was committed; carehub's consumer must refuse them.
The consumer here is a real, unstarted one: acknowledgements and the choice of the next offset
are bookkeeping only, so no connection is made.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from faust.types import TP, Message

from carehub.kafka import transport
from carehub.runtime.app import faust_app
from carehub.settings import load_settings

TOPIC = "commits.in"


@pytest.fixture
def consumer(tmp_path: Path) -> Iterator[transport.Consumer]:
    settings = load_settings(kafka_bootstrap="127.0.0.1:9", topic_prefix=f"u{secrets.token_hex(5)}",
                             data_dir=tmp_path, pseudonym_key=secrets.token_hex(32))
    app = faust_app("commits-unit", settings, "127.0.0.1:9")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app.topics.acking_topics.add(TOPIC)  # as for a topic an agent reads: its acknowledgements count
    c = app.consumer
    assert isinstance(c, transport.Consumer)
    try:
        yield c
    finally:
        c._thread.thread_loop.close()
        loop.close()
        asyncio.set_event_loop(None)


def message(offset: int, partition: int = 0) -> Message:
    return Message(TOPIC, partition, offset, 0.0, 0, None, None, b"v", None, tp=TP(TOPIC, partition))


def started_at(consumer: transport.Consumer, tp: TP, committed: int) -> None:
    """As :meth:`transport.Consumer.perform_seek` leaves a partition whose committed offset is ``committed``."""
    consumer._committed_offset[tp] = committed
    consumer._seeked.add(tp)


def processed(consumer: transport.Consumer, *offsets: int) -> list[Message]:
    msgs = [message(o) for o in offsets]
    consumer.mark_processed(msgs)
    for m in msgs:
        consumer.ack(m)
    return msgs


TP0 = TP(TOPIC, 0)


def test_processed_records_are_committed_in_an_unbroken_run_from_the_committed_offset(
        consumer: transport.Consumer) -> None:
    started_at(consumer, TP0, 14)
    processed(consumer, 14, 15, 16)
    assert consumer._new_offset(TP0) == 17


def test_a_record_acknowledged_without_being_processed_is_never_committed(consumer: transport.Consumer) -> None:
    started_at(consumer, TP0, 14)
    skipped = message(14)  # what faust's stream does with a record it skips in a rebalance
    assert consumer.ack(skipped) is False
    assert skipped.acked and skipped not in consumer._unacked_messages  # a stop does not wait for it
    processed(consumer, 15, 16)
    assert consumer._new_offset(TP0) is None  # faust 0.15.3 alone commits 17 here: 14 lost
    processed(consumer, 14)  # read again after the seek, and processed this time
    assert consumer._new_offset(TP0) == 17


@pytest.mark.parametrize("committed", [0, 14])
def test_the_head_must_be_the_committed_offset_itself(consumer: transport.Consumer, committed: int) -> None:
    """faust tests ``min(acked) - committed > 1`` (off by one) and skips the test when committed is 0."""
    started_at(consumer, TP0, committed)
    processed(consumer, committed + 1, committed + 2)
    assert consumer._new_offset(TP0) is None


def test_nothing_is_committed_before_the_partition_has_a_known_start(consumer: transport.Consumer) -> None:
    processed(consumer, 0, 1, 2)  # delivered in a new assignment before faust's seek to committed
    assert consumer._new_offset(TP0) is None
    started_at(consumer, TP0, 0)
    assert consumer._new_offset(TP0) == 3


def test_a_head_missing_too_long_reads_the_partition_again(consumer: transport.Consumer,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    seeks: list[tuple[TP, int]] = []

    async def seek_wait(partitions: dict[TP, int]) -> None:  # the broker call a seek makes is not under test
        seeks.extend(partitions.items())

    monkeypatch.setattr(consumer, "seek_wait", seek_wait)
    monkeypatch.setattr(transport, "HELD_COMMIT_RESEEK_S", 0.0)
    started_at(consumer, TP0, 14)
    processed(consumer, 15, 16)
    with caplog.at_level(logging.WARNING, logger=transport.__name__):
        assert consumer._new_offset(TP0) is None
    asyncio.get_event_loop().run_until_complete(asyncio.sleep(0))
    assert seeks == [(TP0, 14)]
    assert "offset 14 was never processed" in caplog.text
    assert not consumer._acked[TP0]  # 15 and 16 count again only when processed again
    processed(consumer, 14, 15, 16)
    assert consumer._new_offset(TP0) == 17


def test_a_revoked_partition_commits_nothing_until_it_is_started_again(consumer: transport.Consumer) -> None:
    started_at(consumer, TP0, 3)
    asyncio.get_event_loop().run_until_complete(consumer.on_partitions_revoked({TP0}))
    processed(consumer, 3, 4)
    assert consumer._new_offset(TP0) is None
