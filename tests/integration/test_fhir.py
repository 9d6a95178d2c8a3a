"""FHIR R4 in over real HTTPS: the real FHIR service, ingest and the embedded broker.

A sender POSTs Bundles with a client certificate or a bearer token and gets 200 only once the
Bundle and its events are on the broker; the same Bundle again is answered 200 and kept once;
each kind of bad input gets a clear refusal with an OperationOutcome (and is dead-lettered when
it had a body), and valid traffic after it is unaffected.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from carehub import fhir_client, tlsgen
from carehub.domain.fhir.senders import hash_token
from carehub.harness import LocalHub, eventually, scrape
from carehub.kafka.broker import EmbeddedBroker, free_port
from carehub.revocation import fingerprint_pem
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing
from tests.fhir_bundles import NHS_NUMBER, body, notification, spoiled, transaction
from tests.integration.conftest import ROOT, assert_not_in_clear

pytestmark = pytest.mark.integration

TOKEN = "community-token-7c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f"


@dataclass(frozen=True)
class Door:
    base: str
    pki: tlsgen.DemoPki
    metrics_url: str

    def client(self, org: str | None = "RR8", token: str | None = None) -> httpx.Client:
        cert = self.pki.clients[org] if org else None
        return fhir_client.client(self.pki.ca.cert, cert.cert if cert else None, cert.key if cert else None,
                                  token, 60.0)

    def post(self, bundle: dict[str, Any] | bytes, org: str | None = "RR8", token: str | None = None,
             path: str | None = None) -> httpx.Response:
        raw = bundle if isinstance(bundle, bytes) else body(bundle)
        if path is None:
            path = "/$process-message" if isinstance(bundle, dict) and bundle.get("type") == "message" else ""
        with self.client(org, token) as http:
            return http.post(self.base + path, content=raw)

    def in_flight(self) -> float:
        return scrape(self.metrics_url).get("carehub_fhir_bundles_in_flight", 0.0)


def write_senders(path: Path) -> Path:
    path.write_text(f'version = 1\n[senders.RR8]\nsector = "acute"\n'
                    f'[senders.AXG]\nsector = "community"\ntoken_sha256 = ["{hash_token(TOKEN)}"]\n')
    return path


def revoked_file(hub: LocalHub) -> Path:
    path = hub.data_dir / "revoked.txt"
    if not path.exists():
        path.write_text("# no certificate revoked yet\n")
    return path


@pytest.fixture
def door(hub: LocalHub) -> Iterator[Door]:
    pki = tlsgen.make_demo_pki(hub.data_dir / "pki", ["RR8", "AXG", "Z99999"])
    port = free_port()
    hub.start("ingest")
    fhir = hub.start_with_metrics("fhir", CAREHUB_FHIR_PORT=str(port), CAREHUB_FHIR_MAX_INFLIGHT_PER_SENDER="1",
                                  CAREHUB_FHIR_TLS_CERT=str(pki.server.cert),
                                  CAREHUB_FHIR_TLS_KEY=str(pki.server.key), CAREHUB_FHIR_CLIENT_CA=str(pki.ca.cert),
                                  CAREHUB_FHIR_REQUIRE_CLIENT_CERT="false",
                                  CAREHUB_FHIR_SENDERS_FILE=str(write_senders(hub.data_dir / "senders.toml")),
                                  CAREHUB_REVOKED_CERTIFICATES=str(revoked_file(hub)))

    hub.wait_listening(port)
    yield Door(f"https://127.0.0.1:{port}/fhir", pki, fhir.metrics_url or "")


def accepted(hub: LocalHub, count: int) -> list[ing.AcceptedEvent]:
    def enough() -> list[ing.AcceptedEvent] | None:
        hub.assert_running()
        events = [e for v in hub.values("ingest.accepted") for e in ing.AcceptedBatch.FromString(v).events]
        return events if len(events) >= count else None

    hub.wait_caught_up("ingest", ["provider.events"])
    return eventually(enough, 60, f"{count} accepted events")


def outcome(response: httpx.Response) -> list[dict[str, Any]]:
    resource = response.json()
    assert resource["resourceType"] == "OperationOutcome", resource
    return list(resource["issue"])


def test_notifications_are_written_before_200_kept_once_and_mapped(hub: LocalHub, door: Door) -> None:
    admit = notification("admit", "b-admit-1")
    first = door.post(admit)  # mutual TLS: the certificate says RR8
    again = door.post(admit)  # the answer was lost, say: sent again
    assert first.status_code == 200 and again.status_code == 200, (first.text, again.text)
    assert outcome(again)[0]["code"] == "duplicate"
    assert hub.values("fhir.raw").count(body(admit)) == 1

    discharge = notification("discharge", "b-discharge-1", status="finished", end="2026-12-01T10:00:00+00:00")
    assert door.post(discharge).status_code == 200
    cancelled = notification("admit", "b-cancel-1", visit="V002", status="entered-in-error")
    assert door.post(cancelled).status_code == 200

    events = accepted(hub, 5)
    kinds = sorted(ce.EventType.Name(e.event_type) for e in events)
    assert kinds == ["EVENT_TYPE_ADMISSION", "EVENT_TYPE_CANCELLATION", "EVENT_TYPE_CANCELLATION",
                     "EVENT_TYPE_DIAGNOSIS_CODED", "EVENT_TYPE_DISCHARGE"], kinds
    admission = next(e for e in events if e.event_type == ce.EVENT_TYPE_ADMISSION)
    assert admission.source_org == "RR8" and admission.person.local_id == "MRN123"
    assert admission.clinical.admission_method == ce.ADMISSION_METHOD_EMERGENCY
    assert [d.code for d in admission.clinical.diagnoses] == ["J44.1"]
    assert admission.registered_practice == "B86001" and len(admission.person.national_id_hash) == 32
    # the NHS number is on the raw topic (like any provider topic) and nowhere past ingest
    assert assert_not_in_clear(hub.bootstrap, [hub.topic("ingest.accepted")], [NHS_NUMBER.encode()]) >= 1


def test_transaction_bundle_with_a_bearer_token(hub: LocalHub, door: Door) -> None:
    bundle = transaction("synthea-7", status="finished", end="2026-12-01T10:00:00+00:00")
    response = door.post(bundle, org=None, token=TOKEN)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "transaction-response"
    events = accepted(hub, 3)
    assert {e.source_org for e in events} == {"AXG"}  # who authenticated, not what the Bundle says
    assert sorted(ce.EventType.Name(e.event_type) for e in events) == [
        "EVENT_TYPE_ADMISSION", "EVENT_TYPE_DIAGNOSIS_CODED", "EVENT_TYPE_DISCHARGE"]


def test_bad_input_is_refused_clearly_and_valid_traffic_goes_on(hub: LocalHub, door: Door) -> None:
    # who: nobody, an unknown token, a CA-signed certificate of an organisation that is not a sender
    assert door.post(notification(), org=None).status_code == 401
    assert door.post(notification(), org=None, token="not-a-token").status_code == 401
    assert door.post(notification(), org="Z99999").status_code == 403
    # a certificate from another CA fails the handshake itself
    rogue_ca = tlsgen.make_ca(hub.data_dir / "rogue", name="someone else's CA")
    rogue = tlsgen.issue_client(rogue_ca, "RR8", hub.data_dir / "rogue")
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)), \
            fhir_client.client(door.pki.ca.cert, rogue.cert, rogue.key, None, 60.0) as http:
        http.post(door.base + "/$process-message", content=body(notification())).raise_for_status()

    # an expired certificate fails the handshake; a revoked one is refused once the deny list names it
    expired = tlsgen.issue_client(door.pki.ca, "RR8", hub.data_dir / "expired", days=0)
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)), \
            fhir_client.client(door.pki.ca.cert, expired.cert, expired.key, None, 60.0) as http:
        http.post(door.base + "/$process-message", content=body(notification())).raise_for_status()
    assert door.post(notification(bundle_id="b-before-revocation"), org="AXG").status_code == 200
    revoked_file(hub).write_text(fingerprint_pem(door.pki.clients["AXG"].cert.read_bytes()) + "\n")
    os.utime(revoked_file(hub), ns=(1, 10**18))
    revoked = door.post(notification(bundle_id="b-after-revocation"), org="AXG")
    assert revoked.status_code == 403 and "revoked" in outcome(revoked)[0]["diagnostics"]

    # what: not JSON, not FHIR, an unknown element, no MessageHeader, an admission without method
    not_json = door.post(b'{"resourceType": "Bundle", ', path="/$process-message")
    assert not_json.status_code == 400 and "not JSON" in outcome(not_json)[0]["diagnostics"]
    unknown = spoiled(notification())
    unknown["entry"][2]["resource"]["shoeSize"] = 44
    refused = door.post(unknown)
    assert refused.status_code == 400
    assert outcome(refused)[0]["expression"] == ["Bundle.entry[2].resource.shoeSize"]
    headless = spoiled(notification())
    headless["entry"] = headless["entry"][1:]
    refused = door.post(headless)
    assert refused.status_code == 422 and "MessageHeader" in outcome(refused)[0]["diagnostics"]
    no_method = door.post(notification(bundle_id="b-no-method", priority=None))
    assert no_method.status_code == 422 and outcome(no_method)[0]["expression"] == ["Bundle.entry[1].resource.priority"]
    # how: the wrong media type, and a 5 MB body (the limit is 2 MiB by default)
    with door.client() as http:
        wrong = http.post(door.base + "/$process-message", content=body(notification()),
                          headers={"Content-Type": "text/plain"})
        assert wrong.status_code == 415
        huge = http.post(door.base + "/$process-message", content=b" " * (5 * 1024 * 1024))
        assert huge.status_code == 413

    # refused bodies are dead-lettered with the outcome's text, for operators
    letters = [ing.DeadLetter.FromString(v) for v in hub.wait_values("ingest.deadletter", lambda v: len(v) >= 4)]
    assert {d.reason for d in letters} == {ing.REJECT_REASON_FHIR_REFUSED}
    assert any("shoeSize" in d.message for d in letters)

    # and none of it held anyone up
    assert door.post(notification(bundle_id="b-after")).status_code == 200


def test_send_fhir_prints_each_answer(hub: LocalHub, door: Door) -> None:
    good, bad = hub.data_dir / "admit.json", hub.data_dir / "bad.json"
    good.write_bytes(body(notification(bundle_id="b-cli-1")))
    bad.write_bytes(b"{}")
    token = hub.data_dir / "token"
    token.write_text(TOKEN)
    out = subprocess.run([sys.executable, "-m", "carehub", "send-fhir", str(good), str(bad), "--base", door.base,
                          "--ca", str(door.pki.ca.cert), "--token-file", str(token)],
                         cwd=ROOT, env=hub.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr  # one of the two was refused
    assert f"{good}: 200 Bundle b-cli-1" in out.stdout
    assert f"{bad}: 400" in out.stdout and "expected a Bundle" in out.stdout
    assert "sent 2, accepted 1, not accepted 1" in out.stdout


def test_a_sender_over_its_in_flight_limit_is_answered_429_and_others_are_not_held_up(
        hub: LocalHub, broker: EmbeddedBroker, door: Door) -> None:
    """One Bundle in flight per sender here: with the broker paused, RR8's first Bundle cannot be
    stored, so its next one is refused at once with 429 and Retry-After, while AXG's Bundle is
    taken in (and stored once the broker continues)."""
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGSTOP)
    resumed = False
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(door.post, notification("admit", "b-held-1"))
            eventually(lambda: door.in_flight() == 1, 60, "RR8's first Bundle is being stored")
            over = door.post(notification("admit", "b-over-1"))
            assert over.status_code == 429 and over.headers["retry-after"] == "1", over.text
            assert outcome(over)[0]["code"] == "throttled"
            other = pool.submit(door.post, transaction("synthea-over", status="finished",
                                                       end="2026-12-01T10:00:00+00:00"), None, TOKEN)
            eventually(lambda: door.in_flight() == 2, 60, "AXG's Bundle is taken in beside RR8's")
            os.kill(broker.pid, signal.SIGCONT)
            resumed = True
            assert first.result(timeout=120).status_code == 200
            assert other.result(timeout=120).status_code == 200
    finally:
        if not resumed:
            os.kill(broker.pid, signal.SIGCONT)
    again = door.post(notification("admit", "b-over-1"))  # as the sender retries after Retry-After
    assert again.status_code == 200, again.text
