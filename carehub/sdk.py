"""Provider SDK: publish CareEvents to carehub over Kafka.

    from carehub.sdk import Publisher
    with Publisher("kafka:9092") as pub:
        pub.publish(event)            # a carehub.v1.CareEvent; JSON by default

Each record is keyed ``source_org/local_id`` (so one person's events at one provider keep
their order), carries a ``content-type`` header, and a W3C ``traceparent`` header from a
producer span, so the trace continues through the hub.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal

from google.protobuf import json_format
from kafka import KafkaProducer
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from carehub.kafka.profile import EMBEDDED, ClientProfile
from carehub.telemetry import inject_into_headers
from carehub.v1 import care_event_pb2 as ce

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
DEFAULT_TOPIC = "carehub.provider.events"
Format = Literal["json", "protobuf"]
tracer = trace.get_tracer("carehub.sdk")


def encode(event: ce.CareEvent, fmt: Format = "json") -> tuple[bytes, str]:
    if fmt == "protobuf":
        return event.SerializeToString(), PROTOBUF
    return json_format.MessageToJson(event, indent=None).encode(), JSON


class Publisher:
    """A thread-safe publisher; ``sent`` and ``failed`` count delivery outcomes."""

    def __init__(self, bootstrap: str, topic: str = DEFAULT_TOPIC, profile: ClientProfile = EMBEDDED,
                 **producer_config: Any) -> None:
        """``profile``: the broker's client settings (carehub/kafka/profile.py: acks, batching,
        idempotence, timeouts); ``producer_config`` overrides single kafka-python settings."""
        config: dict[str, Any] = {**profile.kafka_python_producer(), "retries": 5, "client_id": "carehub-sdk"}
        config.update(producer_config)
        self.topic = topic
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, **config)
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.errors: list[str] = []

    def publish(self, event: ce.CareEvent, fmt: Format = "json",
                on_done: Callable[[bool], None] | None = None) -> None:
        value, content_type = encode(event, fmt)
        self.publish_raw(value, f"{event.source_org}/{event.person.local_id}".encode(), content_type,
                         on_done=on_done)

    def publish_raw(self, value: bytes, key: bytes | None, content_type: str | None,
                    on_done: Callable[[bool], None] | None = None,
                    extra_headers: list[tuple[str, bytes]] | None = None) -> None:
        """Publish bytes as they are (already encoded events, or replays of dead letters)."""
        headers: list[tuple[str, bytes]] = list(extra_headers or [])
        if content_type:
            headers.append(("content-type", content_type.encode()))
        with tracer.start_as_current_span(
            f"{self.topic} publish", kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "send",
                        "messaging.destination.name": self.topic},
        ):
            inject_into_headers(headers)
            future = self._producer.send(self.topic, value=value, key=key, headers=headers)

        def ok(_: Any) -> None:
            with self._lock:
                self.sent += 1
            if on_done:
                on_done(True)

        def err(exc: BaseException) -> None:
            with self._lock:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(str(exc))
            if on_done:
                on_done(False)

        future.add_callback(ok)
        future.add_errback(err)

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
