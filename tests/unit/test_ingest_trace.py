"""Ingest without spans (nothing exported): every accepted event still carries a valid trace context."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carehub.domain.pseudonymise import Pseudonymiser
from carehub.telemetry import new_traceparent, tracing_enabled, valid_traceparent
from carehub.v1 import ingest_pb2 as ing
from services.ingest.records import RawRecord, RecordProcessor
from services.ingest.validation import PROTOBUF, Limits
from tests.factories import care_event

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def accepted(headers: list[tuple[str, bytes]]) -> ing.AcceptedEvent:
    processor = RecordProcessor(Pseudonymiser(b"k" * 32), Limits())
    assert not processor.tracing, "a unit test process exports no spans"
    value = care_event(when=NOW - timedelta(hours=1)).SerializeToString()
    result = processor.process(RawRecord("t", 0, 1, b"k", value, [("content-type", PROTOBUF.encode()), *headers]), NOW)
    assert isinstance(result, ing.AcceptedEvent)
    return result


def test_the_publisher_s_trace_context_is_passed_on_unchanged() -> None:
    event = accepted([("traceparent", PARENT.encode()), ("tracestate", b"carehub=1")])
    assert dict(event.trace_context) == {"traceparent": PARENT, "tracestate": "carehub=1"}


@pytest.mark.parametrize("headers", [
    [],
    [("traceparent", b"not a trace context")],
    [("traceparent", b"00-00000000000000000000000000000000-00f067aa0ba902b7-01")],
])
def test_an_event_without_a_valid_trace_context_gets_a_new_trace(headers: list[tuple[str, bytes]]) -> None:
    first, second = accepted(headers), accepted(headers)
    assert set(first.trace_context) == {"traceparent"}
    assert valid_traceparent(first.trace_context["traceparent"])
    assert first.trace_context["traceparent"][3:35] != second.trace_context["traceparent"][3:35]


def test_traceparent_checks() -> None:
    assert valid_traceparent(PARENT) and valid_traceparent(new_traceparent())
    assert not valid_traceparent(PARENT.upper()) and not valid_traceparent(PARENT[:-1])
    assert not valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")
    assert not tracing_enabled()
