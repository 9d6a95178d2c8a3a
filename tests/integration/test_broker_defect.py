"""Guard for the embedded broker's high-watermark defect (docs/embedded-broker.md), and its workaround.

Tansu reports a wrong end offset (ListOffsets) after a produce batch of more than one record.
faust's table recovery reads a changelog up to that end; carehub's transport raises it to the high
watermark of a Fetch answer, which is right (carehub/kafka/ends.py). If the first test fails
because the end offset is right, the broker is fixed and the Fetch check is a no-op: it and this
guard can go.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as AioTopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from carehub.kafka.broker import EmbeddedBroker
from carehub.kafka.ends import fetched_ends
from carehub.kafka.read import last_records

pytestmark = pytest.mark.integration


def end_offset_after(bootstrap: str, batch_size: int, records: int, topic: str = "") -> int:
    topic = topic or f"guard-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=200, batch_size=batch_size)
    for i in range(records):
        producer.send(topic, value=f"record-{i}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    tp = TopicPartition(topic, 0)
    end = consumer.end_offsets([tp])[tp]
    consumer.close()
    return int(end)


def test_multi_record_batches_still_misreport_the_end_offset(broker: EmbeddedBroker) -> None:
    end = end_offset_after(broker.bootstrap, batch_size=16384, records=15)
    assert end != 15, "Tansu now reports the right end offset: the Fetch check (carehub/kafka/ends.py) can go"


def test_single_record_batches_report_it_right(broker: EmbeddedBroker) -> None:
    # kafka-python's smallest batch holds one of these records: the defect is about multi-record batches
    assert end_offset_after(broker.bootstrap, batch_size=1, records=15) == 15


def test_the_fetch_high_watermark_gives_the_true_end_after_multi_record_batches(broker: EmbeddedBroker) -> None:
    topic, empty = f"guard-{uuid.uuid4().hex[:8]}", f"guard-{uuid.uuid4().hex[:8]}"
    listed = end_offset_after(broker.bootstrap, batch_size=16384, records=15, topic=topic)
    end_offset_after(broker.bootstrap, batch_size=16384, records=0, topic=empty)

    async def ends() -> dict[AioTopicPartition, int | None]:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        try:
            tps = [AioTopicPartition(topic, 0), AioTopicPartition(empty, 0)]
            from_list_offsets = await consumer.end_offsets(tps)
            assert from_list_offsets[tps[0]] == listed != 15  # the defect, as aiokafka (faust's client) sees it
            return await fetched_ends(consumer._client, from_list_offsets, max_wait_ms=100)
        finally:
            await consumer.stop()

    assert asyncio.run(ends()) == {AioTopicPartition(topic, 0): 15, AioTopicPartition(empty, 0): 0}


def test_last_records_are_the_newest_of_each_partition_after_multi_record_batches(broker: EmbeddedBroker) -> None:
    """What a restarted identity worker reads to know how far its predecessor's links got."""
    topic = f"guard-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200, batch_size=16384)
    for i in range(15):
        producer.send(topic, value=f"p0-{i}".encode(), partition=0)
    for i in range(4):
        producer.send(topic, value=f"p2-{i}".encode(), partition=2)
    producer.flush()
    producer.close()
    assert end_offset_after(broker.bootstrap, batch_size=16384, records=15) != 15  # the defect is there

    last = last_records(broker.bootstrap, topic, timeout_s=30)
    assert [(r.partition, r.offset, r.value) for r in last] == [(0, 14, b"p0-14"), (2, 3, b"p2-3")]
    assert last_records(broker.bootstrap, topic, timeout_s=30) == last  # reading moves no offset


def test_the_embedded_broker_cannot_trim_a_partition(broker: EmbeddedBroker) -> None:
    """Why long local runs cannot be bounded (docs/embedded-broker.md, "Bounding topics"): Tansu 0.6.0
    drops the connection on DeleteRecords, and a partition keeps its first offset. If this fails
    because the records were deleted, the embedded profile can trim its topics."""
    topic = f"guard-{uuid.uuid4().hex[:8]}"
    end_offset_after(broker.bootstrap, batch_size=1, records=20, topic=topic)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        with pytest.raises(KafkaError):
            admin.delete_records({TopicPartition(topic, 0): 10})
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    tp = TopicPartition(topic, 0)
    try:
        assert consumer.beginning_offsets([tp])[tp] == 0
    finally:
        consumer.close()
