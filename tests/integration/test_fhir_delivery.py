"""FHIR delivery through the real broker, a real gateway process and a real HTTP receiver.

The receiver is an HTTP server in this process on 127.0.0.1 that records every POST (the Bundle
id, what it answered, the headers) and answers as the test tells it. Alerts are written to the
alerts topic as the alert worker writes them (keyed by recipient), for a FHIR partner and for
others. Short retry settings keep each test well inside its bound; every wait is a condition with
a deadline.

1. The partner's endpoint refuses connections for a while, then answers 503 a few times, then
   recovers: it receives every one of its alerts once, in order, and nobody else's; the only
   repeats are re-POSTs of the alert in flight; every attempt is audited. Then the gateway is
   killed with an alert in flight and the partner is down while it restarts: when the partner is
   back it gets the rest in order, the alert that was in flight being the one repeat.
2. The partner refuses one alert for good (400 with an OperationOutcome): it is dead-lettered
   with the partner's reason and the next alerts go on; after the endpoint is fixed, a replay
   delivers it once, a second replay does nothing, and gRPC subscribers do not see it twice.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from kafka import KafkaProducer

from carehub.domain.fhir.notifications import bundle_id
from carehub.fhir_deadletters import FhirDeadLetter, list_lines, replay
from carehub.harness import Worker, eventually
from carehub.kafka.broker import free_port
from carehub.tlsgen import DemoPki, make_demo_pki
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import partner_pb2_grpc as pb_grpc
from services.gateway.auth import client_channel_sync
from tests.integration.conftest import Hub

pytestmark = pytest.mark.integration

FHIR_PARTNER, OTHER = "B86001", "SC001"
TOKEN = "fhir-partner-token-8f3a1c5e7b9d2f4a6c8e0b1d3f5a7c9e"
TOKEN_ENV = "CAREHUB_FHIR_TOKEN_B86001"


@dataclass
class Post:
    bundle_id: str
    alert_id: str
    status: int
    authorization: str
    content_type: str
    body: bytes


@dataclass
class Receiver:
    """The partner's FHIR endpoint: ``answer(bundle, number)`` decides each status (and headers), and
    may block (an answer the gateway waits for). Each POST is recorded once it is answered; its
    Bundle id is in ``arrived`` from the moment it arrives."""

    port: int
    answer: Callable[[dict[str, object], int], tuple[int, dict[str, str], bytes]]
    posts: list[Post] = field(default_factory=list)
    arrived: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: http.server.HTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                bundle = orjson.loads(body)
                with receiver.lock:
                    number = len(receiver.arrived)
                    receiver.arrived.append(bundle["id"])
                status, headers, reply = receiver.answer(bundle, number)
                with receiver.lock:
                    receiver.posts.append(Post(bundle["id"], bundle["identifier"]["value"], status,
                                               self.headers.get("Authorization", ""),
                                               self.headers.get("Content-Type", ""), body))
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the gateway that sent it was killed meanwhile

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def snapshot(self) -> list[Post]:
        with self.lock:
            return list(self.posts)

    def accepted(self) -> list[str]:
        return [p.bundle_id for p in self.snapshot() if 200 <= p.status < 300]

    def has_arrived(self, bundle: str) -> bool:
        with self.lock:
            return bundle in self.arrived

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"


@pytest.fixture
def pki(tmp_path: Path) -> DemoPki:
    return make_demo_pki(tmp_path / "pki", [FHIR_PARTNER, OTHER])


def start_gateway(hub: Hub, tmp_path: Path, pki: DemoPki, endpoint: str) -> tuple[Worker, int]:
    """A gateway worker with a FHIR partner (a token from the environment) and a gRPC-only one;
    the worker and its gRPC port."""
    partners = tmp_path / "partners.toml"
    partners.write_text(f'[partners.{FHIR_PARTNER}]\nname = "Riverside"\n'
                        f'[partners.{FHIR_PARTNER}.fhir]\nendpoint = "{endpoint}"\ntoken_env = "{TOKEN_ENV}"\n'
                        f'[partners.{OTHER}]\nname = "Social care"\n')
    port = free_port()
    worker = hub.start_with_metrics(
        "gateway", CAREHUB_GATEWAY_PORT=str(port), CAREHUB_GATEWAY_TLS_CERT=str(pki.server.cert),
        CAREHUB_GATEWAY_TLS_KEY=str(pki.server.key), CAREHUB_GATEWAY_CLIENT_CA=str(pki.ca.cert),
        CAREHUB_GATEWAY_PARTNERS_FILE=str(partners), CAREHUB_GATEWAY_HEARTBEAT_S="1",
        CAREHUB_FHIR_OUT_RETRY_INITIAL_S="0.2", CAREHUB_FHIR_OUT_RETRY_MAX_S="1", CAREHUB_FHIR_OUT_TIMEOUT_S="5",
        CAREHUB_FHIR_OUT_GIVE_UP_AFTER_S="600", **{TOKEN_ENV: TOKEN})
    return worker, port


def make_alert(i: int, org: str) -> al.Alert:
    alert = al.Alert(alert_id=f"alert-{org}-{i:03d}", kind=al.ALERT_KIND_NEW, rule="acsc_emergency_admission",
                     rule_version=1, severity=al.SEVERITY_WARNING, recipient_org=org,
                     recipient_role="registered_practice", local_id=f"{org}-L{i}", source_org="RR8",
                     title="Emergency admission for an ambulatory care sensitive condition",
                     detail=f"Emergency admission at RR8, number {i}", provisional=True)
    alert.event_time.FromSeconds(1_790_000_000 + 60 * i)
    alert.raised_at.FromNanoseconds(time.time_ns())
    return alert


def publish(hub: Hub, alerts: list[al.Alert]) -> None:
    """As the alert worker writes them: keyed by recipient, so one partner's alerts keep their order."""
    producer = KafkaProducer(bootstrap_servers=hub.bootstrap)
    try:
        for alert in alerts:
            producer.send(hub.topic("alerts"), key=alert.recipient_org.encode(),
                          value=alert.SerializeToString()).get(30)
    finally:
        producer.close()


def running(hub: Hub) -> bool:
    """True, or the failure of a worker that exited (with the end of the logs)."""
    hub.assert_running()
    return True


def audit(hub: Hub, action: str) -> list[al.AuditRecord]:
    return [r for r in (al.AuditRecord.FromString(v) for v in hub.values("audit")) if r.action == action]


def grpc_alerts(port: int, pki: DemoPki, org: str, count: int) -> list[str]:
    """The alert ids a gRPC subscriber of ``org`` gets from the start, until a heartbeat after ``count``."""
    files = pki.clients[org]
    channel = client_channel_sync(f"127.0.0.1:{port}", pki.ca.cert, files.cert, files.key)
    got: list[str] = []
    try:
        call = pb_grpc.PartnerGatewayStub(channel).SubscribeAlerts(pb.SubscribeAlertsRequest(), timeout=60)
        for message in call:
            if message.HasField("alert"):
                got.append(message.alert.alert_id)
            elif message.HasField("heartbeat") and len(got) >= count:
                break
        call.cancel()
    finally:
        channel.close()
    return got


def in_order_with_inflight_repeats(posts: list[Post], expected: list[str]) -> int:
    """Every POST is the alert in flight again or the next expected one; returns the 2xx repeats."""
    position = -1
    repeats = 0
    delivered: set[str] = set()
    for post in posts:
        if position >= 0 and post.bundle_id == expected[position]:
            repeats += post.bundle_id in delivered and 200 <= post.status < 300
        else:
            assert position + 1 < len(expected) and post.bundle_id == expected[position + 1], \
                f"POST of {post.bundle_id} out of order after {expected[position] if position >= 0 else 'none'}"
            position += 1
        if 200 <= post.status < 300:
            delivered.add(post.bundle_id)
    return repeats


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.stop()


def test_an_endpoint_that_refuses_for_a_while_then_recovers_gets_every_alert_once_in_order(
        hub: Hub, tmp_path: Path, pki: DemoPki, receivers: list[Receiver]) -> None:
    mine = [make_alert(i, FHIR_PARTNER) for i in range(20)]
    later = [make_alert(i, FHIR_PARTNER) for i in range(20, 30)]
    held = threading.Event()  # the answer to the first of ``later`` waits for this

    def answer(bundle: dict[str, object], n: int) -> tuple[int, dict[str, str], bytes]:
        if n < 4:  # up, but not well yet: 503s, one asking for a second's pause
            return 503, {"Retry-After": "1"} if n == 1 else {}, b""
        if bundle["id"] == bundle_id(later[0].alert_id):
            held.wait(60)
        return 200, {}, b""

    receiver = Receiver(free_port(), answer)  # not listening yet: connections are refused
    receivers.append(receiver)
    gateway, _ = start_gateway(hub, tmp_path, pki, receiver.url)
    others = [make_alert(i, OTHER) for i in range(10)]
    publish(hub, [a for pair in zip(mine, others + [None] * 10, strict=True) for a in pair if a is not None])
    refused = wait_refused(hub, mine[0], 5)
    assert {r.alert_id for r in refused} == {mine[0].alert_id} and {r.org for r in refused} == {FHIR_PARTNER}
    receiver.start()  # the partner is back

    expected = [bundle_id(a.alert_id) for a in mine]
    assert wait_accepted(hub, receiver, expected) == 0  # nothing re-POSTed after a 2xx
    posts = receiver.snapshot()
    assert [p.status for p in posts[:4]] == [503] * 4 and all(p.status == 200 for p in posts[4:])
    assert {p.authorization for p in posts} == {f"Bearer {TOKEN}"}
    assert {p.content_type for p in posts} == {"application/fhir+json"}
    assert all(p.alert_id.startswith(f"alert-{FHIR_PARTNER}-") for p in posts)  # nobody else's
    Bundle.model_validate(orjson.loads(posts[-1].body))
    delivered = wait_audited(hub, "fhir_delivered", len(mine))
    assert [r.alert_id for r in delivered] == [a.alert_id for a in mine]
    retries = audit(hub, "fhir_retry")
    assert sum("HTTP 503" in r.detail for r in retries) == 4
    metrics = gateway.metrics()
    assert metrics["carehub_gateway_fhir_attempts_total"] == len(retries) + len(delivered)
    assert metrics["carehub_gateway_fhir_delivery_lag_seconds"] == 0

    # The gateway dies (kill -9) with an alert in flight, which the partner takes; the partner is
    # down while the gateway restarts. When it is back it gets the rest from the last commit, in
    # order: the alert that was in flight once more (same Bundle id), nothing delivered before it.
    publish(hub, later)
    eventually(lambda: receiver.has_arrived(bundle_id(later[0].alert_id)), 30, "the first later alert in flight")
    hub.kill(gateway)
    held.set()
    eventually(lambda: bundle_id(later[0].alert_id) in receiver.accepted(), 30, "the in-flight alert answered")
    receiver.stop()
    start_gateway(hub, tmp_path, pki, receiver.url)
    wait_refused(hub, later[0], 3)
    receiver.start()
    expected += [bundle_id(a.alert_id) for a in later]
    assert wait_accepted(hub, receiver, expected) == 1  # the alert in flight at the kill, sent again
    assert receiver.accepted().count(bundle_id(later[0].alert_id)) == 2
    assert [r.alert_id for r in wait_audited(hub, "fhir_delivered", len(expected))] == \
        [a.alert_id for a in mine + later]
    assert all(TOKEN not in r.detail for r in audit(hub, "fhir_retry") + delivered)
    assert TOKEN not in hub.log_text()
    assert hub.values("fhir.delivery.deadletter") == []


def wait_refused(hub: Hub, alert: al.Alert, count: int) -> list[al.AuditRecord]:
    """The audited attempts to send ``alert`` that found the endpoint refusing connections, once
    there are ``count``; every refused attempt so far is of that alert."""
    def refused() -> list[al.AuditRecord]:
        hub.assert_running()
        found = [r for r in audit(hub, "fhir_retry") if "ConnectError" in r.detail]
        return found if sum(r.alert_id == alert.alert_id for r in found) >= count else []

    return eventually(refused, 60, f"{count} refused attempts of {alert.alert_id}, audited")


def wait_accepted(hub: Hub, receiver: Receiver, expected: list[str]) -> int:
    """Until the receiver has accepted each expected Bundle; then: once each, in order, and the only
    repeats re-POSTs of the alert in flight. Returns how many repeats it accepted."""
    eventually(lambda: running(hub) and set(receiver.accepted()) >= set(expected), 60,
               f"{len(expected)} alerts accepted by the partner")
    repeats = in_order_with_inflight_repeats(receiver.snapshot(), expected)
    accepted = receiver.accepted()
    assert list(dict.fromkeys(accepted)) == expected  # once each, in order, repeats dropped by Bundle id
    assert repeats == len(accepted) - len(expected)
    print(f"{len(accepted)} accepted POSTs, {repeats} of them repeats of the alert in flight")
    return repeats


def wait_audited(hub: Hub, action: str, count: int) -> list[al.AuditRecord]:
    def found() -> list[al.AuditRecord]:
        records = audit(hub, action)
        return records if len(records) >= count else []

    return eventually(found, 30, f"{count} audit records {action}")


def test_a_refused_alert_is_dead_lettered_and_replayed_once_after_the_fix(
        hub: Hub, tmp_path: Path, pki: DemoPki, receivers: list[Receiver]) -> None:
    mine = [make_alert(i, FHIR_PARTNER) for i in range(3)]
    refused = {bundle_id(mine[1].alert_id)}
    outcome = orjson.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "business-rule", "diagnostics": "Patient B86001-L1 is not registered here"}]})

    def answer(bundle: dict[str, object], n: int) -> tuple[int, dict[str, str], bytes]:
        return (400, {}, outcome) if bundle["id"] in refused else (200, {}, b"")

    receiver = Receiver(free_port(), answer)
    receivers.append(receiver)
    receiver.start()
    _, grpc_port = start_gateway(hub, tmp_path, pki, receiver.url)
    publish(hub, mine)
    expected = [bundle_id(a.alert_id) for a in mine]
    eventually(lambda: running(hub) and receiver.accepted() == [expected[0], expected[2]], 60,
               "the alerts around the refused one delivered")

    letters = [FhirDeadLetter.from_json(v) for v in hub.values("fhir.delivery.deadletter")]
    assert [(d.org, d.alert_id, d.reason, d.attempts, d.last_status) for d in letters] == [
        (FHIR_PARTNER, mine[1].alert_id, "rejected", 1, 400)]
    assert "not registered here" in letters[0].last_error and letters[0].bundle["id"] == expected[1]
    assert al.Alert.FromString(letters[0].alert) == mine[1]
    settings = hub.settings()
    lines = list_lines(settings, each=True)
    assert any(FHIR_PARTNER in line and "rejected" in line and "(1 not replayed)" in line for line in lines)

    refused.clear()  # the partner fixes its side
    assert replay(settings, partner=OTHER) == (0, 0)
    assert replay(settings, partner=FHIR_PARTNER, dry_run=True) == (1, 0)
    assert replay(settings, partner=FHIR_PARTNER) == (1, 0)
    assert replay(settings) == (0, 1)  # each dead letter is replayed once
    eventually(lambda: running(hub) and receiver.accepted() == [expected[0], expected[2], expected[1]], 60,
               "the replayed alert delivered")
    replayed = eventually(lambda: audit(hub, "fhir_replayed"), 30, "the replay audited")
    assert [r.alert_id for r in replayed] == [mine[1].alert_id]
    assert [r.alert_id for r in audit(hub, "fhir_dead_letter")] == [mine[1].alert_id]
    assert any("(0 not replayed)" in line for line in list_lines(settings))
    # gRPC subscribers got it the first time: the replay is not in their log
    assert grpc_alerts(grpc_port, pki, FHIR_PARTNER, 3) == [a.alert_id for a in mine]
