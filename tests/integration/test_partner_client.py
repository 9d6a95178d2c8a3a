"""The partner client against a real grpc server over TLS (a small scripted PartnerGateway, not the real gateway).

Certificates and alerts come from tests/partner_support.py; the client's checks that need no server are in
tests/unit/test_partner_client.py.
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from carehub.partner import PartnerAuthError, PartnerClient, PartnerError, PartnerUnavailable
from carehub.partner_cli import indicators_remote, watch
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import ingest_pb2 as ing
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import partner_pb2_grpc as pb_grpc
from carehub.v1 import review_pb2 as rv
from carehub.v1 import risk_pb2 as rk
from tests.partner_support import T0, Pki, alert, make_pki

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- a scripted gateway


@dataclass
class Gateway(pb_grpc.PartnerGatewayServicer):
    """Serves `log` (message i has cursor f"c{i+1}"); each new subscription takes the next plan from `plans`.

    A plan: {"abort_after": n} ends the stream with UNAVAILABLE after n messages; {"resume_after": n} sends a
    Resume after n messages; {"rewind": k} starts k messages before the cursor asked for (an upstream crash
    redelivering); {"silent": True} sends nothing live.
    Without "abort_after" the stream stays open, sending heartbeats, until the client leaves.
    """

    log: list[pb.AlertMessage] = field(default_factory=list)
    plans: list[dict[str, int]] = field(default_factory=list)
    token: str | None = None          # when set, every call needs `authorization: Bearer <token>`
    deny: grpc.StatusCode | None = None
    subscriptions: list[str] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    acks: list[pb.AcknowledgeRequest] = field(default_factory=list)
    indicator_requests: list[pb.IndicatorsRequest] = field(default_factory=list)
    heartbeat_s: float = 0.05

    def add(self, *alerts: al.Alert) -> None:
        for a in alerts:
            self.log.append(pb.AlertMessage(alert=a, cursor=f"c{len(self.log) + 1}"))

    def add_heartbeat(self) -> None:
        self.log.append(pb.AlertMessage(heartbeat=pb.Heartbeat(server_time_ms=int(T0.timestamp() * 1000)),
                                        cursor=f"c{len(self.log) + 1}"))

    def _check(self, context: grpc.ServicerContext) -> None:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.metadata.append(md)
        self.peers.append(b",".join(context.peer_identities() or []).decode())  # the certificate's CN
        if self.token is not None and md.get("authorization") != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or expired token")
        if self.deny is not None:
            context.abort(self.deny, "ORG1 may not receive these")

    def SubscribeAlerts(self, request: pb.SubscribeAlertsRequest,
                        context: grpc.ServicerContext) -> Iterator[pb.AlertMessage]:
        self._check(context)
        self.subscriptions.append(request.cursor)
        plan = self.plans.pop(0) if self.plans else {}
        start = int(request.cursor[1:]) if request.cursor else 0
        start = max(0, start - plan.get("rewind", 0))
        for sent, message in enumerate(self.log[start:]):
            if "abort_after" in plan and sent >= plan["abort_after"]:
                context.abort(grpc.StatusCode.UNAVAILABLE, "gateway restarting")
            if "resume_after" in plan and sent >= plan["resume_after"]:
                # the subscriber fell behind: resume from the last message sent (the stream stays open)
                yield pb.AlertMessage(resume=pb.Resume(reason="too far behind"), cursor=f"c{start + sent}")
                break
            yield message
        while context.is_active():  # live: nothing new, heartbeats until the client leaves
            time.sleep(self.heartbeat_s)
            if not plan.get("silent"):
                yield pb.AlertMessage(heartbeat=pb.Heartbeat(server_time_ms=int(time.time() * 1000)),
                                      cursor=f"c{len(self.log)}")

    def Acknowledge(self, request: pb.AcknowledgeRequest,
                    context: grpc.ServicerContext) -> pb.AcknowledgeResponse:
        self._check(context)
        self.acks.append(request)
        return pb.AcknowledgeResponse(recorded=request.alert_id.startswith("A"))

    def GetIndicators(self, request: pb.IndicatorsRequest,
                      context: grpc.ServicerContext) -> pb.IndicatorsResponse:
        self._check(context)
        self.indicator_requests.append(request)
        return pb.IndicatorsResponse(values=_values(), references=[
            ind.ReferenceValue(name="chronic", indicator="acsc_chronic", title="NHS OF 2.3.i", area="England",
                               period="latest", status="not_found", unit="per_100000"),
            ind.ReferenceValue(name="readmissions", indicator="readmission_30d", area="England", period="2017/18",
                               status="published", value=13.8, unit="percent", comparison="definition_differs",
                               source_publisher="NHS Digital", source_year=2019)])

    def GetQuality(self, request: pb.QualityRequest, context: grpc.ServicerContext) -> pb.QualityReport:
        self._check(context)
        return pb.QualityReport(source_org="ORG1", days=[ing.QualityCounts(source_org="ORG1", day="2026-12-01",
                                                                          accepted=request.days)])

    def WatchIndicators(self, request: pb.IndicatorsRequest,
                        context: grpc.ServicerContext) -> Iterator[pb.IndicatorsResponse]:
        self._check(context)
        self.indicator_requests.append(request)
        yield pb.IndicatorsResponse(values=_values())
        yield pb.IndicatorsResponse(values=_values()[:1])

    def GetCaseList(self, request: pb.CaseListRequest, context: grpc.ServicerContext) -> rk.CaseList:
        self._check(context)
        return _case_list(request.new_only)

    def WatchCaseList(self, request: pb.CaseListRequest,
                      context: grpc.ServicerContext) -> Iterator[rk.CaseList]:
        self._check(context)
        yield _case_list(request.new_only)
        yield rk.CaseList(org="ORG1")

    def GetReviewPacks(self, request: pb.ReviewPacksRequest, context: grpc.ServicerContext) -> pb.ReviewPacks:
        self._check(context)
        packs = [rv.ReviewPack(pack_id="pk1", local_id="P-1", month="2026-11"),
                 rv.ReviewPack(pack_id="pk2", local_id="P-2", month="2026-12")]
        return pb.ReviewPacks(org="ORG1", packs=[p for p in packs if not request.month or p.month == request.month])

    def WatchReviewPacks(self, request: pb.ReviewPacksRequest,
                         context: grpc.ServicerContext) -> Iterator[pb.ReviewPacks]:
        self._check(context)
        yield self.GetReviewPacks(request, context)
        yield pb.ReviewPacks(org="ORG1")

    def RecordReviewOutcome(self, request: pb.RecordReviewOutcomeRequest,
                            context: grpc.ServicerContext) -> pb.RecordReviewOutcomeResponse:
        self._check(context)
        if request.pack_id != "pk1":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such review pack for this organisation")
        return pb.RecordReviewOutcomeResponse(outcome=rv.ReviewOutcome(
            pack_id=request.pack_id, verdict=request.verdict, factors=request.factors, actions=request.actions,
            conference_date=request.conference_date))

    def GetReviewLearning(self, request: pb.ReviewLearningRequest,
                          context: grpc.ServicerContext) -> rv.ReviewLearning:
        self._check(context)
        return rv.ReviewLearning(cells=[rv.ReviewLearningCell(unit="region", item="reviewed", count=9)])

    # the identity review desk: not what the partner client calls (tests/integration/test_identity_review.py)
    def ListIdentityReviews(self, request: pb.ListIdentityReviewsRequest,
                            context: grpc.ServicerContext) -> pb.IdentityReviews:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity_review role")

    def GetIdentityReview(self, request: pb.GetIdentityReviewRequest,
                          context: grpc.ServicerContext) -> idn.ReviewItem:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity_review role")

    def DecideIdentityReview(self, request: pb.DecideIdentityReviewRequest,
                             context: grpc.ServicerContext) -> pb.DecideIdentityReviewResponse:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity_review role")


def _case_list(new_only: bool) -> rk.CaseList:
    entries = [rk.CaseListEntry(local_id="P-1", tier="high", new_this_week=True),
               rk.CaseListEntry(local_id="P-2", tier="high")]
    return rk.CaseList(org="ORG1", entries=[e for e in entries if e.new_this_week or not new_only])


def _values() -> list[ind.IndicatorValue]:
    return [
        ind.IndicatorValue(indicator="acsc_chronic", definition_version=1, unit="practice:ORG1", window="12m",
                           as_of="2026-03-03", measure="rate", per=100_000, numerator=42, denominator=9000,
                           value=466.7, ci_low=336.3, ci_high=630.8, regional_value=401.2, dsr=512.3,
                           dsr_ci_low=360.1, dsr_ci_high=705.9,
                           standard_population="European Standard Population 2013"),
        ind.IndicatorValue(indicator="acsc_chronic", definition_version=1, unit="region", window="12m",
                           as_of="2026-03-03", measure="rate", per=100_000, numerator=900, denominator=224_000,
                           value=401.2, ci_low=375.6, ci_high=428.2),
        ind.IndicatorValue(indicator="readmission_30d", definition_version=1, unit="practice:ORG1", window="12m",
                           as_of="2026-03-03", measure="proportion", suppressed=True),
    ]


@dataclass
class Running:
    gateway: Gateway
    target: str
    server: grpc.Server


def _serve(pki: Pki, gateway: Gateway, *, client_auth: bool = True) -> Iterator[Running]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_PartnerGatewayServicer_to_server(gateway, server)
    creds = grpc.ssl_server_credentials([(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
                                        root_certificates=pki.ca.read_bytes(), require_client_auth=client_auth)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield Running(gateway, f"127.0.0.1:{port}", server)
    finally:
        server.stop(grace=None)


@pytest.fixture
def gw(pki: Pki) -> Iterator[Running]:
    yield from _serve(pki, Gateway())


@pytest.fixture
def token_gw(pki: Pki) -> Iterator[Running]:
    yield from _serve(pki, Gateway(token="s3cret"), client_auth=False)


def client(pki: Pki, target: str, *, ca_file: Path | None = None, mtls: bool = True, token: str | None = None,
           retries: int = 2, idle_timeout: float | None = None) -> PartnerClient:
    return PartnerClient(target, ca_file=ca_file or pki.ca, cert_file=pki.client_cert if mtls else None,
                         key_file=pki.client_key if mtls else None, token=token, retries=retries,
                         idle_timeout=idle_timeout, backoff_initial=0.02, backoff_max=0.1, timeout=5.0)


def take(c: PartnerClient, n: int, cursor: str | None = None) -> list[tuple[str, str]]:
    return [(r.alert.alert_id, r.cursor) for r in itertools.islice(c.alerts(cursor), n)]


# -- alerts


def test_alerts_arrive_in_order_with_their_cursors_over_mutual_tls(pki: Pki, gw: Running) -> None:
    gw.gateway.add(alert(1), alert(2))
    gw.gateway.add_heartbeat()
    gw.gateway.add(alert(3))
    with client(pki, gw.target) as c:
        assert take(c, 3) == [("A1", "c1"), ("A2", "c2"), ("A3", "c4")]
        assert c.last_heartbeat == T0  # the heartbeat was skipped, its time kept
        assert c.last_heartbeat_received is not None
    assert gw.gateway.subscriptions == [""]
    assert gw.gateway.peers == ["ORG1"]  # the server saw the client certificate's CN


def test_a_cursor_given_starts_after_it(pki: Pki, gw: Running) -> None:
    gw.gateway.add(*(alert(n) for n in range(1, 5)))
    with client(pki, gw.target) as c:
        assert take(c, 2, cursor="c2") == [("A3", "c3"), ("A4", "c4")]
    assert gw.gateway.subscriptions == ["c2"]


def test_a_dropped_stream_is_resumed_from_the_last_cursor_and_nothing_is_missed_or_repeated(
        pki: Pki, gw: Running) -> None:
    gw.gateway.add(*(alert(n) for n in range(1, 8)))
    gw.gateway.plans = [{"abort_after": 3}, {"abort_after": 0}, {"abort_after": 2}]
    with client(pki, gw.target) as c:
        got = take(c, 7)
        assert c.reconnects == 3
    assert [a for a, _ in got] == [f"A{n}" for n in range(1, 8)]
    assert gw.gateway.subscriptions == ["", "c3", "c3", "c5"]


def test_an_alert_delivered_twice_is_yielded_once(pki: Pki, gw: Running) -> None:
    gw.gateway.add(alert(1), alert(2), alert(1), alert(3))
    with client(pki, gw.target) as c:
        got = take(c, 3)
        assert c.duplicates == 1
    assert got == [("A1", "c1"), ("A2", "c2"), ("A3", "c4")]


def test_alerts_redelivered_across_a_reconnect_are_yielded_once(pki: Pki, gw: Running) -> None:
    gw.gateway.add(*(alert(n) for n in range(1, 6)))
    gw.gateway.plans = [{"abort_after": 3}, {"rewind": 2}]  # after the crash it starts again from c1
    with client(pki, gw.target) as c:
        got = take(c, 5)
        assert c.duplicates == 2
    assert [a for a, _ in got] == ["A1", "A2", "A3", "A4", "A5"]


def test_a_resume_message_makes_the_client_reconnect_from_its_cursor(pki: Pki, gw: Running) -> None:
    gw.gateway.add(alert(1), alert(2))
    gw.gateway.add_heartbeat()
    gw.gateway.add(alert(3), alert(4))
    gw.gateway.plans = [{"resume_after": 3}]  # Resume with cursor c3, then the stream stays open
    with client(pki, gw.target) as c:
        got = take(c, 4)
        assert c.reconnects == 1
    assert [a for a, _ in got] == ["A1", "A2", "A3", "A4"]
    assert gw.gateway.subscriptions == ["", "c3"]


def test_a_silent_stream_is_reconnected_after_the_idle_timeout(pki: Pki, gw: Running) -> None:
    gw.gateway.add(alert(1))
    gw.gateway.plans = [{"silent": True}]
    with client(pki, gw.target, idle_timeout=0.3) as c:
        it = c.alerts()
        assert next(it).alert.alert_id == "A1"
        gw.gateway.add(alert(2))
        assert next(it).alert.alert_id == "A2"
        it.close()
    assert gw.gateway.subscriptions == ["", "c1"]


def test_stop_ends_a_live_stream(pki: Pki, gw: Running) -> None:
    gw.gateway.add(alert(1))
    stop = threading.Event()
    with client(pki, gw.target) as c:
        it = c.alerts(stop=stop)
        assert next(it).alert.alert_id == "A1"
        threading.Timer(0.2, stop.set).start()
        started = time.monotonic()
        assert list(it) == []
        assert time.monotonic() - started < 2


def test_without_reconnect_a_dropped_stream_raises(pki: Pki, gw: Running) -> None:
    gw.gateway.add(alert(1), alert(2))
    gw.gateway.plans = [{"abort_after": 1}]
    with client(pki, gw.target) as c:
        it = c.alerts(reconnect=False)
        assert next(it).alert.alert_id == "A1"
        with pytest.raises(PartnerUnavailable, match="gateway restarting"):
            next(it)


def test_a_refused_caller_gets_a_clear_error_not_endless_retries(pki: Pki, gw: Running) -> None:
    gw.gateway.add(alert(1))
    gw.gateway.deny = grpc.StatusCode.PERMISSION_DENIED
    with client(pki, gw.target) as c, pytest.raises(PartnerAuthError, match="permission denied"):
        next(c.alerts())
    assert gw.gateway.subscriptions == []


# -- tokens


def test_a_token_is_sent_as_a_bearer_authorization_header(pki: Pki, token_gw: Running) -> None:
    token_gw.gateway.add(alert(1))
    with client(pki, token_gw.target, mtls=False, token="s3cret\n") as c:
        assert take(c, 1) == [("A1", "c1")]
        assert c.acknowledge("A1", "received")
    assert [m["authorization"] for m in token_gw.gateway.metadata] == ["Bearer s3cret"] * 2
    assert token_gw.gateway.peers == ["", ""]  # no client certificate


def test_a_wrong_token_raises_a_clear_unauthenticated_error(pki: Pki, token_gw: Running) -> None:
    token_gw.gateway.add(alert(1))
    with client(pki, token_gw.target, mtls=False, token="wrong") as c:
        with pytest.raises(PartnerAuthError, match=r"not authenticated .*unknown or expired token"):
            next(c.alerts())
        with pytest.raises(PartnerAuthError, match="not authenticated"):
            c.acknowledge("A1", "received")
    assert token_gw.gateway.subscriptions == []


# -- acknowledgements, indicators


def test_acknowledge_sends_the_id_status_and_note(pki: Pki, gw: Running) -> None:
    with client(pki, gw.target) as c:
        assert c.acknowledge("A1", "not-for-us", "moved to another practice") is True
        assert c.acknowledge("A2", al.ACK_STATUS_ACTIONED) is True
        assert c.acknowledge("X9", "Understood") is False  # the gateway did not record it
    assert [(a.alert_id, a.status, a.note) for a in gw.gateway.acks] == [
        ("A1", al.ACK_STATUS_NOT_FOR_US, "moved to another practice"),
        ("A2", al.ACK_STATUS_ACTIONED, ""),
        ("X9", al.ACK_STATUS_UNDERSTOOD, ""),
    ]


def test_indicators_and_watch_indicators(pki: Pki, gw: Running) -> None:
    with client(pki, gw.target) as c:
        values = c.indicators("acsc_chronic", "12m")
        assert [(v.indicator, v.unit) for v in values][:2] == [("acsc_chronic", "practice:ORG1"),
                                                               ("acsc_chronic", "region")]
        batches = list(c.watch_indicators(reconnect=False))
    assert [len(b) for b in batches] == [3, 1]
    assert [(r.indicator, r.window) for r in gw.gateway.indicator_requests] == [("acsc_chronic", "12m"), ("", "")]


def test_caselist_and_watch_caselist(pki: Pki, gw: Running) -> None:
    with client(pki, gw.target) as c:
        assert [e.local_id for e in c.caselist().entries] == ["P-1", "P-2"]
        assert [e.local_id for e in c.caselist(new_only=True).entries] == ["P-1"]
        lists = list(c.watch_caselist(reconnect=False))
    assert [[e.local_id for e in cl.entries] for cl in lists] == [["P-1", "P-2"], []]


def test_review_packs_outcomes_and_learning(pki: Pki, gw: Running) -> None:
    with client(pki, gw.target) as c:
        assert [p.local_id for p in c.review_packs().packs] == ["P-1", "P-2"]
        assert [p.pack_id for p in c.review_packs(month="2026-12").packs] == ["pk2"]
        outcome = c.record_review_outcome("pk1", "avoidable", ["access"],
                                          [rv.ReviewAction(text="Call back", owner_org="ORG1")], "2026-12-01")
        assert (outcome.verdict, list(outcome.factors), outcome.actions[0].owner_org) == ("avoidable", ["access"],
                                                                                          "ORG1")
        with pytest.raises(PartnerError):
            c.record_review_outcome("pk9", "avoidable", ["access"])
        assert c.review_learning().cells[0].count == 9
        watched = list(c.watch_review_packs(reconnect=False))
    assert [[p.local_id for p in w.packs] for w in watched] == [["P-1", "P-2"], []]


def test_quality_report(pki: Pki, gw: Running) -> None:
    with client(pki, gw.target) as c:
        report = c.quality(7)
    assert report.source_org == "ORG1" and [(d.day, d.accepted) for d in report.days] == [("2026-12-01", 7)]


def test_an_unreachable_gateway_is_reported_as_such(pki: Pki) -> None:
    with client(pki, "127.0.0.1:1", retries=0) as c:
        with pytest.raises(PartnerUnavailable, match=r"cannot reach the partner gateway at 127\.0\.0\.1:1"):
            c.indicators()
        with pytest.raises(PartnerUnavailable, match="cannot connect"):
            c.wait_ready(0.3)


def test_a_gateway_certificate_from_another_ca_is_not_trusted(pki: Pki, gw: Running) -> None:
    with client(pki, gw.target, ca_file=pki.other_ca, retries=0) as c, pytest.raises(PartnerUnavailable):
        c.indicators()
    assert gw.gateway.indicator_requests == []


# -- the command


def watch_args(pki: Pki, target: str, *argv: str) -> argparse.Namespace:
    """The options carehub/cli.py gives `carehub watch` (kept in step with the snippet there)."""
    p = argparse.ArgumentParser()
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--token-file")
    p.add_argument("--server-name")
    p.add_argument("--partner")
    p.add_argument("--cursor-file")
    p.add_argument("--ack")
    p.add_argument("--ack-note", default="")
    p.add_argument("--once", action="store_true")
    p.add_argument("--limit", type=int)
    p.add_argument("--json", action="store_true")
    p.add_argument("--idle-timeout", type=float, default=120.0)
    p.add_argument("--connect-timeout", type=float, default=10.0)
    return p.parse_args(["--target", target, "--ca", str(pki.ca), "--cert", str(pki.client_cert),
                         "--key", str(pki.client_key), *argv])


def test_watch_prints_acknowledges_and_resumes_from_its_cursor_file(
        pki: Pki, gw: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gw.gateway.add(alert(1, provisional=True), alert(2, kind=al.ALERT_KIND_REVISION, refers_to="A1"), alert(3))
    cursor_file = tmp_path / "watch.cursor"
    argv = ("--partner", "ORG1", "--cursor-file", str(cursor_file), "--ack", "received", "--limit", "2")
    assert watch(watch_args(pki, gw.target, *argv)) == 0
    out = capsys.readouterr()
    assert "Emergency admission 1" in out.out and "PROVISIONAL" in out.out
    assert 'Revises   alert A1 of ' in out.out and '"Emergency admission 1"' in out.out
    assert out.out.count("Acknowledged received") == 2
    assert "2 alerts shown" in out.err
    assert cursor_file.read_text().strip() == "c2"
    assert [(a.alert_id, a.status) for a in gw.gateway.acks] == [("A1", al.ACK_STATUS_RECEIVED),
                                                                ("A2", al.ACK_STATUS_RECEIVED)]
    assert watch(watch_args(pki, gw.target, "--cursor-file", str(cursor_file), "--once")) == 0
    assert "Emergency admission 3" in capsys.readouterr().out
    assert gw.gateway.subscriptions == ["", "c2"]


def test_watch_errors_are_one_clear_line(pki: Pki, gw: Running, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"carehub watch: CA certificate file not found: .*missing\.pem"):
        watch(watch_args(pki, gw.target, "--ca", str(tmp_path / "missing.pem")))
    with pytest.raises(SystemExit, match=r"carehub watch: token file not found"):
        watch(watch_args(pki, gw.target, "--token-file", str(tmp_path / "token")))
    with pytest.raises(SystemExit, match=r"carehub watch: --ack: not an acknowledgement status: 'done'"):
        watch(watch_args(pki, gw.target, "--ack", "done"))
    with pytest.raises(SystemExit, match=r"carehub watch: cannot connect to the partner gateway at 127.0.0.1:1 "):
        watch(watch_args(pki, "127.0.0.1:1", "--connect-timeout", "0.3"))
    gw.gateway.deny = grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(SystemExit, match=r"carehub watch: .* refused the alert subscription: not authenticated"):
        watch(watch_args(pki, gw.target, "--once"))


def test_indicators_remote_prints_the_table(pki: Pki, gw: Running, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(target=gw.target, ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key),
                              token_file=None, server_name=None, indicator="acsc_chronic", window="12m",
                              unit="practice:ORG1", json=False, watch=False)
    assert indicators_remote(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("as of 2026-03-03")
    assert "practice:ORG1" in out and "466.7" in out and "*" in out
    assert "512.3" in out and "360.1-705.9" in out and "(European Standard Population 2013)" in out
    assert "  acsc_chronic: no national value (NHS OF 2.3.i, latest: not found)" in out.splitlines()
    assert "  readmission_30d: 13.8% (England 2017/18, definition differs; NHS Digital 2019)" in out.splitlines()
