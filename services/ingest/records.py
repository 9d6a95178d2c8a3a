"""Turning one provider record into an accepted event or a dead letter (no Kafka here)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from carehub.domain.pseudonymise import Pseudonymiser
from carehub.kafka.profile import MAX_DEADLETTER_ORIGINAL_BYTES
from carehub.telemetry import (
    extract_from_headers,
    new_traceparent,
    trace_context_dict,
    tracing_enabled,
    valid_traceparent,
)
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing

from .validation import Limits, Rejection, decode, validate

log = logging.getLogger(__name__)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
tracer = trace.get_tracer("carehub.ingest")


@dataclass(slots=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp_s: float = 0.0

    def header(self, name: str) -> str | None:
        """A header's value by lower-case name, whatever case the sender used."""
        for k, v in self.headers:
            if (k == name or k.lower() == name) and v is not None:
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
        # Spans only when they go somewhere (telemetry.tracing_enabled). Otherwise the publisher's
        # trace context is passed on unchanged, and an event without a valid one is given a new
        # trace id, as a root span would give it, so that later stages and the audit log have one.
        self.tracing = tracing_enabled()

    def process(self, rec: RawRecord, now: datetime) -> ing.AcceptedEvent | ing.DeadLetter:
        if not self.tracing:
            result = self._process(rec, now, None)
            if isinstance(result, ing.AcceptedEvent):
                traceparent = rec.header("traceparent")
                if traceparent and valid_traceparent(traceparent):
                    result.trace_context["traceparent"] = traceparent
                    state = rec.header("tracestate")
                    if state:
                        result.trace_context["tracestate"] = state
                else:
                    result.trace_context["traceparent"] = new_traceparent()
            return result
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
            result = self._process(rec, now, span)
            if isinstance(result, ing.AcceptedEvent):
                span.set_attribute("messaging.message.id", result.event_id)
                result.trace_context.update(trace_context_dict())
            return result

    def _process(self, rec: RawRecord, now: datetime, span: Span | None) -> ing.AcceptedEvent | ing.DeadLetter:
        try:
            event = decode(rec.value, rec.header("content-type"))
            issues = validate(event, now, self.limits)
            accepted = self._accept(event, rec, now)
            accepted.quality.extend(issues)
            return accepted
        except Rejection as rej:
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, ing.RejectReason.Name(rej.reason)))
            return self._dead_letter(rec, rej.reason, rej.message, rej.event, now)
        except Exception as exc:  # a poison record must never stop the stream
            # the type only: an exception's text may quote a raw value (the DLQ keeps it)
            log.error("unexpected %s on %s[%d]@%d", type(exc).__name__, rec.topic, rec.partition, rec.offset)
            log.debug("traceback", exc_info=True)
            if span is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, "processing error"))
            return self._dead_letter(
                rec, ing.REJECT_REASON_PROCESSING_ERROR, f"{type(exc).__name__}: {exc}", None, now
            )

    def _accept(self, event: ce.CareEvent, rec: RawRecord, now: datetime) -> ing.AcceptedEvent:
        event_day = date.fromordinal(_EPOCH_ORDINAL + event.event_time.seconds // 86400)
        person = self.pseudonymiser.encode(event.person, event_day)
        # AcceptedEvent repeats CareEvent's fields 1-14 and 20 with the same numbers and types, except
        # the person (test_contract.py holds them to that): without the raw person, the event's
        # bytes are a valid AcceptedEvent, which is much cheaper than copying field by field.
        # Unknown fields (a newer sender's, or anything smuggled) must not travel on.
        event.ClearField("person")
        event.DiscardUnknownFields()
        out = ing.AcceptedEvent.FromString(event.SerializeToString())
        out.person.CopyFrom(person)
        source = out.source
        source.topic, source.partition, source.offset = rec.topic, rec.partition, rec.offset
        accepted_s = now.timestamp()
        out.accepted_time.seconds = int(accepted_s)
        out.accepted_time.nanos = int((accepted_s % 1) * 1e9)
        if rec.timestamp_s:
            out.published_time.CopyFrom(_timestamp(rec.timestamp_s))
        return out

    @staticmethod
    def _dead_letter(rec: RawRecord, reason: ing.RejectReason.ValueType, message: str, event: ce.CareEvent | None,
                     now: datetime) -> ing.DeadLetter:
        size = len(rec.value or b"") + len(rec.key or b"") + sum(len(k) + len(v or b"") for k, v in rec.headers)
        if size > MAX_DEADLETTER_ORIGINAL_BYTES:  # too big to write whole: its source position says where it is
            message = f"{message} (the original, {size} bytes, is not copied: read it at its source position)"
        dl = ing.DeadLetter(
            source=ing.SourceRef(topic=rec.topic, partition=rec.partition, offset=rec.offset),
            reason=reason,
            message=message,
        )
        if size <= MAX_DEADLETTER_ORIGINAL_BYTES:
            dl.original_value, dl.original_key = rec.value or b"", rec.key or b""
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
