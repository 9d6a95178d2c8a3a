"""Several events per Kafka record on internal topics, grouped by target partition.

On the embedded broker every record sent is a produce request (the workaround in
carehub/runtime/app.py), so stages send one record per target partition per batch
rather than one per event (docs/embedded-broker.md).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from google.protobuf.message import Message
from kafka.partitioner.default import murmur2

from carehub.wire import repeated_field


@functools.lru_cache(maxsize=100_000)
def target_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner would choose for ``key`` (pure Python: cached)."""
    return (int(murmur2(key.encode())) & 0x7FFFFFFF) % partitions


def batch_records(events: Iterable[Message], max_bytes: int, field_number: int = 1) -> list[bytes]:
    """Serialised batch messages (``repeated`` field ``field_number``) of about ``max_bytes`` at most.

    A single event bigger than ``max_bytes`` goes alone.
    """
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for event in events:
        data = event.SerializeToString()
        if chunk and size + len(data) + 6 > max_bytes:
            out.append(repeated_field(field_number, chunk))
            chunk, size = [], 0
        chunk.append(data)
        size += len(data) + 6
    if chunk:
        out.append(repeated_field(field_number, chunk))
    return out
