"""Reading a topic to its end, where "end" is what the broker says in a Fetch response.

"Everything in a topic" cannot be "whatever arrived before the topic went quiet": on a busy
machine a slow producer is not a finished one, and such reads undercounted. Nor can it be the
end offset from ListOffsets(latest), which the embedded broker reports wrongly after a
multi-record produce batch (docs/embedded-broker.md). The high watermark in each Fetch response
is right on both brokers, so :func:`read_to_end` fetches every partition from the start, takes
the first high watermark each partition reports as that partition's end, reads up to it, and
returns. It never returns a partial read: if the end is not reached within ``timeout_s`` it
raises :class:`ReadTimeout` naming the partitions that fell short.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from carehub.kafka.profile import EMBEDDED, ClientProfile

# A reader's own fetch wait: short, because on the embedded broker an empty partition's fetch
# returns only when the wait expires, and a read to the end always ends on one.
READ_FETCH_WAIT_MS = 20


class ReadTimeout(TimeoutError):
    pass


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def read_to_end(bootstrap: str, topics: str | Sequence[str], *, timeout_s: float = 60.0,
                profile: ClientProfile = EMBEDDED, keep: Callable[[Record], bool] | None = None,
                ) -> list[Record]:
    """Every record of ``topics`` from the start to the end each partition had when first fetched.

    Records come in partition order, each partition in offset order. ``keep`` filters while
    reading (a long topic need not be held whole).
    """
    names = [topics] if isinstance(topics, str) else list(topics)
    consumer = _reader(bootstrap, profile, "carehub-read-to-end")
    deadline = time.monotonic() + timeout_s
    try:
        tps = _partitions(consumer, names, deadline)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: dict[TopicPartition, list[Record]] = {tp: [] for tp in tps}
        ends: dict[TopicPartition, int] = {}
        while True:
            for tp, records in consumer.poll(timeout_ms=100, max_records=10_000).items():
                for r in records:
                    if tp not in ends or r.offset < ends[tp]:
                        rec = Record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value,
                                     tuple(r.headers or ()))
                        if keep is None or keep(rec):
                            out[tp].append(rec)
            for tp in tps:
                if tp not in ends and (hw := consumer.highwater(tp)) is not None:
                    ends[tp] = hw
            short = [tp for tp in tps if tp not in ends or consumer.position(tp) < ends[tp]]
            if not short:
                # records read past a partition's end before that end was known are dropped here
                return [rec for tp in tps for rec in out[tp] if rec.offset < ends[tp]]
            if time.monotonic() > deadline:
                detail = ", ".join(f"{tp.topic}[{tp.partition}] at {consumer.position(tp)} of "
                                   f"{ends.get(tp, 'unknown')}" for tp in short)
                raise ReadTimeout(f"read_to_end: not at the end after {timeout_s:.0f} s: {detail}")
    finally:
        consumer.close()


def fetch_ends(bootstrap: str, topics: Sequence[str], *, timeout_s: float = 30.0) -> dict[TopicPartition, int]:
    """Each partition's end (next offset) as a Fetch response reports it: correct on every broker."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             client_id="carehub-fetch-ends", fetch_max_wait_ms=READ_FETCH_WAIT_MS,
                             max_partition_fetch_bytes=1024)
    deadline = time.monotonic() + timeout_s
    try:
        tps = _partitions(consumer, list(topics), deadline)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while True:
            consumer.poll(timeout_ms=100, max_records=1)
            ends = {tp: hw for tp in tps if (hw := consumer.highwater(tp)) is not None}
            if len(ends) == len(tps):
                return ends
            if time.monotonic() > deadline:
                raise ReadTimeout(f"fetch_ends: no fetch answer within {timeout_s:.0f} s for "
                                  f"{sorted(f'{tp.topic}[{tp.partition}]' for tp in set(tps) - set(ends))}")
    finally:
        consumer.close()


def last_records(bootstrap: str, topic: str, *, timeout_s: float = 30.0,
                 profile: ClientProfile = EMBEDDED) -> list[Record]:
    """The newest record of each partition of ``topic`` (none for an empty partition).

    For a worker that must know, when it starts, how far its predecessor's output got (identity
    re-deciding what it decided before a crash). The ends are the Fetch high watermarks
    (:func:`fetch_ends`); each partition is then read from its end minus one.
    """
    ends = {tp: end for tp, end in fetch_ends(bootstrap, [topic], timeout_s=timeout_s).items() if end > 0}
    if not ends:
        return []
    consumer = _reader(bootstrap, profile, "carehub-last-records")
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign(list(ends))
        for tp, end in ends.items():
            consumer.seek(tp, end - 1)
        last: dict[TopicPartition, Record] = {}
        while len(last) < len(ends):
            for tp, records in consumer.poll(timeout_ms=100).items():
                for r in records:
                    if r.offset == ends[tp] - 1:
                        last[tp] = Record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value,
                                          tuple(r.headers or ()))
            if time.monotonic() > deadline:
                missing = sorted(f"{tp.topic}[{tp.partition}]@{ends[tp] - 1}" for tp in set(ends) - set(last))
                raise ReadTimeout(f"last_records: not read within {timeout_s:.0f} s: {', '.join(missing)}")
        return [last[tp] for tp in sorted(last, key=lambda tp: tp.partition)]
    finally:
        consumer.close()


async def at_end(consumer: Any, tps: Iterable[TopicPartition]) -> bool:
    """Has an aiokafka ``consumer`` handed out every record of ``tps`` up to the Fetch high watermark?

    For long-lived readers (the gateway's logs, the indicators service) that must say when they
    have caught up; False until each partition has had a fetch answer.
    """
    for tp in tps:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True


def latest_by_key(records: Iterable[Record]) -> dict[bytes, Record]:
    """A compacted topic's view: the newest record per key, tombstones removing the key."""
    latest: dict[bytes, Record] = {}
    for r in records:
        if r.key is None:
            continue
        if r.value is None:
            latest.pop(r.key, None)
        else:
            latest[r.key] = r
    return latest


def _reader(bootstrap: str, profile: ClientProfile, client_id: str) -> KafkaConsumer:
    """A consumer outside any group, with the profile's settings and a reader's short fetch wait."""
    config = profile.kafka_python_consumer() | {"fetch_max_wait_ms": READ_FETCH_WAIT_MS}
    return KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                         client_id=client_id, **config)


def _partitions(consumer: KafkaConsumer, topics: list[str], deadline: float) -> list[TopicPartition]:
    """Every partition of ``topics``; a topic the cluster does not know is an error, not empty."""
    tps: list[TopicPartition] = []
    for topic in topics:
        parts: set[int] | None = consumer.partitions_for_topic(topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.1)
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise LookupError(f"read_to_end: topic {topic!r} does not exist on the cluster")
        tps.extend(TopicPartition(topic, p) for p in sorted(parts))
    return tps
