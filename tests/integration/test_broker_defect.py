"""Guard for the embedded broker's high-watermark defect (docs/embedded-broker.md).

Tansu reports a wrong end offset after a produce batch of more than one record; carehub's
embedded faust profile therefore sends one record per batch. If the first test fails
because the end offset is right, the broker is fixed: drop ``producer_max_batch_size``
from carehub/runtime/app.py and this guard.
"""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from carehub.kafka.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


def end_offset_after(bootstrap: str, batch_size: int, records: int) -> int:
    topic = f"guard-{uuid.uuid4().hex[:8]}"
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
    assert end != 15, "Tansu now reports the right end offset: the producer_max_batch_size=1 workaround can go"


def test_single_record_batches_report_it_right(broker: EmbeddedBroker) -> None:
    # kafka-python's smallest batch holds one of these records: the workaround's premise
    assert end_offset_after(broker.bootstrap, batch_size=1, records=15) == 15
