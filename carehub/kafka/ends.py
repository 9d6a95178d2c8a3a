"""The end of a partition from a Fetch answer, for faust's table recovery.

faust recovers a table by reading its changelog up to the partition's end, which it asks for with
ListOffsets(latest) (``AIOKafkaConsumerThread.highwaters`` -> ``AIOKafkaConsumer.end_offsets``).
The embedded broker answers that request with the start offset of the last produce batch plus
one, which is short of the end whenever that batch held more than one record
(docs/embedded-broker.md): recovery then stops early and a table loses rows. The high watermark
in a Fetch answer is right. So the end offsets ListOffsets gives are checked with one Fetch per
broker, from the offset before each listed end (a record that exists, so the broker answers at
once), and the Fetch answer's high watermark is taken when it is further on. On a broker whose
ListOffsets is right, the two agree and nothing changes.

A partition whose Fetch fails keeps its listed end, with a warning: recovery is then no worse
than faust's own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

K = TypeVar("K", bound=tuple[str, int])  # faust's TP or aiokafka's TopicPartition: (topic, partition)
READ_UNCOMMITTED = 0


async def fetched_ends(client: Any, listed: Mapping[K, int | None], max_wait_ms: int) -> dict[K, int | None]:
    """``listed`` (end offsets from ListOffsets, by partition), each raised to the Fetch high watermark.

    ``client`` is the aiokafka client (``AIOKafkaClient``) of a started consumer.
    """
    out = dict(listed)
    requests: dict[int, dict[str, list[tuple[int, int, int]]]] = {}
    keys: dict[tuple[str, int], K] = {}
    for key, end in listed.items():
        topic, partition = key[0], key[1]
        if end is None or end <= 0:
            continue  # empty: nothing to read, and no record to fetch
        node = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        if node is None or node < 0:
            log.warning("%s[%d]: no leader known; recovery reads to the listed end %d", topic, partition, end)
            continue
        # (partition, fetch offset, max bytes): the broker sends at least the batch holding that offset
        requests.setdefault(node, {}).setdefault(topic, []).append((partition, end - 1, 1))
        keys[(topic, partition)] = key
    for node, topics in requests.items():
        request = FetchRequest(max_wait_ms, 1, 1, READ_UNCOMMITTED, list(topics.items()))
        try:
            response = await client.send(node, request)
        except Exception as exc:  # a failed check leaves faust's own ends, as before
            log.warning("fetching the ends of %s from broker %d failed (%r); recovery reads to the listed ends",
                        sorted(topics), node, exc)
            continue
        for topic, partitions in response.topics:
            for partition, error_code, high_watermark, *_ in partitions:
                key = keys[(topic, partition)]
                if error_code != 0:
                    log.warning("%s[%d]: Fetch for its end answered error %d; recovery reads to the listed end %s",
                                topic, partition, error_code, listed[key])
                    continue
                before = out[key]
                if before is None or high_watermark > before:
                    out[key] = int(high_watermark)
    return out
