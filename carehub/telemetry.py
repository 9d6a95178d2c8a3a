"""OpenTelemetry set-up from OTEL_* variables, and W3C trace context in Kafka headers.

Exporter choice follows OTEL_TRACES_EXPORTER (otlp | console | none). Unlike the SDK's
own default, carehub exports nothing unless an exporter or an OTLP endpoint is named, so
a laptop run does not log connection errors to a collector that is not there.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator, MutableMapping, MutableSequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

Headers = Iterable[tuple[str, bytes]]


class _HeaderGetter(Getter[Headers]):
    def get(self, carrier: Headers, key: str) -> list[str] | None:
        values = [v.decode("latin-1") for k, v in carrier or () if k.lower() == key and v is not None]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k for k, _ in carrier or ()]


class _HeaderSetter(Setter[MutableSequence[tuple[str, bytes]]]):
    def set(self, carrier: MutableSequence[tuple[str, bytes]], key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode("latin-1")))


HEADER_GETTER = _HeaderGetter()
HEADER_SETTER = _HeaderSetter()


def extract_from_headers(headers: Headers | None) -> Context:
    return propagate.extract(headers or [], getter=HEADER_GETTER)


def inject_into_headers(headers: MutableSequence[tuple[str, bytes]], context: Context | None = None) -> None:
    propagate.inject(headers, context=context, setter=HEADER_SETTER)


def trace_context_dict(context: Context | None = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier


_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_IDS = RandomIdGenerator()


def valid_traceparent(value: str) -> bool:
    """A W3C trace context ``traceparent`` of version 00 with non-zero ids (what the SDK's propagator accepts)."""
    return _TRACEPARENT.fullmatch(value) is not None


def new_traceparent() -> str:
    """A ``traceparent`` opening a new trace, sampled, for an event that came without one and when no span is made."""
    return f"00-{_IDS.generate_trace_id():032x}-{_IDS.generate_span_id():016x}-01"


def tracing_enabled() -> bool:
    """True when spans go somewhere: an SDK tracer provider is installed and ``setup_tracing`` gave it
    an exporter or a processor.

    The stages after ingest make a span per event only then. With no exporter a span is built,
    ended and dropped: about a tenth of the identity stage's CPU at 1,000 events/s (README
    "Performance"). Without spans a stage passes the event's trace context on unchanged, so the
    trace id still reaches the alert and the audit log; ingest gives an event that came without a
    valid one a new trace id (``new_traceparent``), as a root span would.
    """
    return _exporting and isinstance(trace.get_tracer_provider(), TracerProvider)


@contextlib.contextmanager
def continue_trace(tracer: trace.Tracer, stage: str, carrier: MutableMapping[str, str], topic: str,
                   partition: int, message_id: str) -> Iterator[None]:
    """A span of ``stage`` for one event, child of the context in ``carrier`` (the event's
    ``trace_context``), which then carries the new span's context to the next stage.

    Messaging attributes follow the OpenTelemetry semantic conventions for Kafka consumers.
    """
    parent = propagate.extract(dict(carrier))
    with tracer.start_as_current_span(
        f"{topic} process", context=parent, kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.message.id": message_id,
            "carehub.stage": stage,
        },
    ):
        for key, value in trace_context_dict().items():
            carrier[key] = value
        yield


_configured = False
_exporting = False  # setup_tracing added an exporter or a processor: spans go somewhere


def setup_tracing(service_name: str, extra_processor: SpanProcessor | None = None) -> TracerProvider | None:
    """Install the global tracer provider once per process; None when OTEL_SDK_DISABLED is true."""
    global _configured, _exporting
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if _configured:
        provider = trace.get_tracer_provider()
        if extra_processor and isinstance(provider, TracerProvider):
            provider.add_span_processor(extra_processor)
            _exporting = True
        return provider if isinstance(provider, TracerProvider) else None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    exporter = os.environ.get("OTEL_TRACES_EXPORTER")
    if exporter is None:
        has_endpoint = any(k in os.environ for k in (
            "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        exporter = "otlp" if has_endpoint else "none"
    for name in (e.strip() for e in exporter.split(",")):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            _exporting = True
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
            _exporting = True
        elif name not in ("none", ""):
            raise SystemExit(f"carehub: OTEL_TRACES_EXPORTER={name!r} is not one of otlp, console, none")
    if extra_processor:
        provider.add_span_processor(extra_processor)
        _exporting = True
    trace.set_tracer_provider(provider)
    _configured = True
    return provider
