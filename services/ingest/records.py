"""Turning one provider record into an accepted event or a dead letter (no Kafka here)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from carehub.telemetry import extract_from_headers, trace_context_dict
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing
from services.ingest.pseudonymise import Pseudonymiser
from services.ingest.validation import Limits, Rejection, decode, validate

log = logging.getLogger(__name__)
tracer = trace.get_tracer("carehub.ingest")


@dataclass
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp_s: float = 0.0

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name and v is not None:
                return v.decode("latin-1")
        return None


def routing_key(event: ing.AcceptedEvent) -> str:
    """Events of one source record keep their order: they share this key (and so a partition)."""
    return f"{event.source_org}/{event.person.local_id}"


def dedupe_key(event: ing.AcceptedEvent) -> str:
    return f"{event.source_org}/{event.event_id}"


class RecordProcessor:
    def __init__(self, pseudonymiser: Pseudonymiser, limits: Limits) -> None:
        self.pseudonymiser = pseudonymiser
        self.limits = limits

    def process(self, rec: RawRecord, now: datetime) -> ing.AcceptedEvent | ing.DeadLetter:
        parent = extract_from_headers(rec.headers)
        with tracer.start_as_current_span(
            f"{rec.topic} process", context=parent, kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": rec.topic,
                "messaging.destination.partition.id": str(rec.partition),
                "messaging.kafka.offset": rec.offset,
            },
        ) as span:
            try:
                event = decode(rec.value, rec.header("content-type"))
                validate(event, now, self.limits)
                accepted = self._accept(event, rec, now)
            except Rejection as rej:
                span.set_status(Status(StatusCode.ERROR, ing.RejectReason.Name(rej.reason)))
                return self._dead_letter(rec, rej.reason, rej.message, rej.event, now)
            except Exception as exc:  # a poison record must never stop the stream
                log.exception("unexpected error on %s[%d]@%d", rec.topic, rec.partition, rec.offset)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, "processing error"))
                return self._dead_letter(
                    rec, ing.REJECT_REASON_PROCESSING_ERROR, f"{type(exc).__name__}: {exc}", None, now
                )
            span.set_attribute("messaging.message.id", accepted.event_id)
            accepted.trace_context.update(trace_context_dict())
            return accepted

    def _accept(self, event: ce.CareEvent, rec: RawRecord, now: datetime) -> ing.AcceptedEvent:
        event_day = event.event_time.ToDatetime(tzinfo=UTC).date()
        out = ing.AcceptedEvent(
            event_id=event.event_id,
            schema_version=event.schema_version,
            source_org=event.source_org,
            source_sector=event.source_sector,
            event_type=event.event_type,
            person=self.pseudonymiser.encode(event.person, event_day),
            registered_practice=event.registered_practice,
            locality=event.locality,
            target_event_id=event.target_event_id,
            source=ing.SourceRef(topic=rec.topic, partition=rec.partition, offset=rec.offset),
        )
        out.event_time.CopyFrom(event.event_time)
        for name in ("recorded_time", "clinical", "consent", "merge"):
            if event.HasField(name):
                getattr(out, name).CopyFrom(getattr(event, name))
        out.accepted_time.FromDatetime(now)
        if rec.timestamp_s:
            out.published_time.CopyFrom(_timestamp(rec.timestamp_s))
        return out

    @staticmethod
    def _dead_letter(rec: RawRecord, reason: ing.RejectReason.ValueType, message: str, event: ce.CareEvent | None,
                     now: datetime) -> ing.DeadLetter:
        dl = ing.DeadLetter(
            original_value=rec.value or b"",
            original_key=rec.key or b"",
            source=ing.SourceRef(topic=rec.topic, partition=rec.partition, offset=rec.offset),
            reason=reason,
            message=message,
        )
        for k, v in rec.headers:
            dl.original_headers[k] = v or b""
        dl.rejected_time.FromDatetime(now)
        if event is not None:
            dl.event_id, dl.source_org = event.event_id, event.source_org
        return dl


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def now_utc() -> datetime:
    return datetime.now(UTC)
