"""One trace from the provider's publish to the partner's gRPC delivery.

The workers export their spans over OTLP/HTTP (configured only by ``OTEL_*`` variables) to a
receiver in this test, which keeps them in memory; the publisher's own spans go to an in-memory
exporter. One emergency admission, published with a trace, must show the same trace id in the
SDK's publish span and in the ingest, identity, timeline and alert workers' spans (each with the
messaging semantic-convention attributes) and in the gateway's delivery span.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from carehub.kafka.broker import free_port
from carehub.sdk import Publisher
from carehub.telemetry import setup_tracing
from carehub.tlsgen import make_demo_pki
from carehub.v1 import care_event_pb2 as ce
from tests.integration.conftest import Hub
from tests.integration.test_gateway import GP, HOSPITAL, Partner, event, wait_serving

pytestmark = pytest.mark.integration


class Receiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that keeps every span it is sent: (service, span)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    service = next((a.value.string_value for a in resource_spans.resource.attributes
                                    if a.key == "service.name"), "")
                    for scope in resource_spans.scope_spans:
                        receiver.spans.extend((service, span) for span in scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()
                self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_one_trace_from_provider_publish_to_partner_delivery(hub: Hub, tmp_path: Path, receiver: Receiver) -> None:
    memory = InMemorySpanExporter()
    setup_tracing("carehub-test-publisher", extra_processor=SimpleSpanProcessor(memory))
    otel = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200"}
    pki = make_demo_pki(tmp_path / "pki", [GP])
    partners = tmp_path / "partners.toml"
    partners.write_text(f'[partners.{GP}]\nname = "{GP}"\n')
    port = free_port()
    for service in ("ingest", "identity", "timeline", "alerts"):
        hub.start(service, **otel)
    hub.start("gateway", CAREHUB_GATEWAY_PORT=str(port), CAREHUB_GATEWAY_TLS_CERT=str(pki.server.cert),
              CAREHUB_GATEWAY_TLS_KEY=str(pki.server.key), CAREHUB_GATEWAY_CLIENT_CA=str(pki.ca.cert),
              CAREHUB_GATEWAY_PARTNERS_FILE=str(partners), CAREHUB_GATEWAY_HEARTBEAT_S="1", **otel)

    when = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    admission = event(ce.EVENT_TYPE_ADMISSION, when, HOSPITAL, ce.SECTOR_ACUTE, "H-99812")
    admission.clinical.diagnoses[0].code = "N10"
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for e in (event(ce.EVENT_TYPE_REGISTRATION, when - timedelta(days=90), GP, ce.SECTOR_PRIMARY_CARE, "P-4471"),
                  admission):
            pub.publish(e)
            pub.flush()
    published = {s.context.trace_id: s for s in memory.get_finished_spans() if s.name.endswith("publish")}

    target = f"127.0.0.1:{port}"
    wait_serving(target, pki.ca.cert, pki.clients[GP])
    [alert], _ = Partner(target, pki.ca.cert, pki.clients[GP]).take(1)
    trace_id = int(alert.trace_id, 16)
    assert trace_id in published, "the alert carries the trace the provider's publish started"

    wanted = {"carehub-ingest", "carehub-identity", "carehub-timeline", "carehub-alerts", "carehub-gateway"}
    deadline = time.monotonic() + 60
    while True:
        mine = [(service, span) for service, span in receiver.spans
                if int.from_bytes(span.trace_id, "big") == trace_id]  # type: ignore[attr-defined]
        if {service for service, _ in mine} >= wanted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    services = {service for service, _ in mine}
    assert services >= wanted, f"spans of this trace came from {sorted(services)} only"
    for service, span in mine:
        attributes = {a.key: a.value.string_value for a in span.attributes}  # type: ignore[attr-defined]
        if service == "carehub-gateway":
            assert span.name == "deliver alert" and attributes["rpc.system"] == "grpc"  # type: ignore[attr-defined]
        else:
            assert attributes["messaging.system"] == "kafka", (service, attributes)
            assert attributes["messaging.destination.name"].startswith(hub.prefix)
            assert attributes["messaging.operation.type"] == "process"
