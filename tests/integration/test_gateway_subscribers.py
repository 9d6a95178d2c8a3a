"""A partner never receives another partner's alert or case list: property-based, over random routings.

A real gRPC server (the gateway's servicer, over mutual TLS on 127.0.0.1) serves an alert log
filled with random alerts for random recipients; every partner subscribes from the start, from a
random cursor, and must get exactly its own alerts after that cursor, in log order. The Kafka
reader is the collaborator left out: the log is filled directly, so no broker is needed; it is an
integration test because it starts a server and opens sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carehub.kafka.batching import target_partition
from carehub.kafka.broker import free_port
from carehub.settings import load_settings
from carehub.tlsgen import DemoPki, make_demo_pki
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import ingest_pb2 as ing
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import partner_pb2_grpc as pb_grpc
from carehub.v1 import risk_pb2 as rk
from services.gateway.audit import Audit
from services.gateway.auth import client_channel, server_credentials
from services.gateway.logs import AlertLog, CaseListBoard, Entry, IndicatorBoard, QualityLog
from services.gateway.partners import Partner, Partners
from services.gateway.server import PartnerGateway

pytestmark = pytest.mark.integration

ORGS = ("B86001", "B86002", "SC001", "RR8")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    return make_demo_pki(tmp_path_factory.mktemp("pki"), ORGS)


class Server:
    def __init__(self, pki: DemoPki, log: AlertLog, buffer: int = 10_000, board: IndicatorBoard | None = None,
                 quality: QualityLog | None = None, caselists: CaseListBoard | None = None) -> None:
        self.settings = load_settings(gateway_tls_cert=pki.server.cert, gateway_tls_key=pki.server.key,
                                      gateway_client_ca=pki.ca.cert, gateway_port=free_port(),
                                      gateway_heartbeat_s=0.2, gateway_subscriber_buffer=buffer)
        partners = Partners(Partner(org=o, name=o, units=frozenset({"region", f"practice:{o}"})) for o in ORGS)
        self.server = grpc.aio.server()
        pb_grpc.add_PartnerGatewayServicer_to_server(
            PartnerGateway(self.settings, partners, log, board or IndicatorBoard(), Audit(None, "audit"), None,
                           quality, caselists=caselists),
            self.server)
        self.server.add_secure_port(f"127.0.0.1:{self.settings.gateway_port}", server_credentials(self.settings))

    async def __aenter__(self) -> Server:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.server.stop(grace=None)


async def receive(pki: DemoPki, port: int, org: str, cursor: str, expected: int) -> list[pb.AlertMessage]:
    files = pki.clients[org]
    async with client_channel(f"127.0.0.1:{port}", pki.ca.cert, files.cert, files.key) as channel:
        stub = pb_grpc.PartnerGatewayStub(channel)
        got: list[pb.AlertMessage] = []
        call = stub.SubscribeAlerts(pb.SubscribeAlertsRequest(cursor=cursor), timeout=20)
        stream: AsyncIterator[pb.AlertMessage] = call.__aiter__()
        async for message in stream:
            if message.HasField("alert"):
                got.append(message)
            elif len(got) >= expected:  # a heartbeat after everything due: nothing more is coming
                break
        call.cancel()
        return got


def alert_log(routing: list[tuple[int, str]]) -> AlertLog:
    """Alerts in the order given; each on its recipient's partition, as the alert worker keys them."""
    log = AlertLog()
    offsets: dict[int, int] = {}
    for i, (_, org) in enumerate(routing):
        partition = target_partition(org, 4)
        offset = offsets[partition] = offsets.get(partition, -1) + 1
        log.add(Entry(partition, offset, al.Alert(alert_id=f"a{i}", recipient_org=org, local_id=f"{org}-L{i}")))
    log.ready.set()
    return log


routings = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(ORGS)), min_size=0, max_size=40)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(routing=routings, skip=st.integers(0, 10))
def test_each_partner_gets_exactly_its_own_alerts_after_its_cursor(pki: DemoPki, routing: list[tuple[int, str]],
                                                                  skip: int) -> None:
    log = alert_log(routing)

    async def run() -> None:
        async with Server(pki, log) as server:
            for org in ORGS:
                mine = log.by_org.get(org, [])
                cursor = mine[skip - 1].cursor if 0 < skip <= len(mine) else ""
                expected = mine[skip:] if cursor else mine
                got = await receive(pki, server.settings.gateway_port, org, cursor, len(expected))
                assert [m.alert.alert_id for m in got] == [e.alert.alert_id for e in expected]
                assert all(m.alert.recipient_org == org and m.alert.local_id.startswith(org) for m in got)
                assert [m.cursor for m in got] == [e.cursor for e in expected]

    asyncio.run(run())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(increments=st.lists(st.tuples(st.sampled_from(ORGS), st.integers(0, 3), st.integers(1, 9)), max_size=30))
def test_each_partner_reads_exactly_its_own_quality_report(pki: DemoPki,
                                                          increments: list[tuple[str, int, int]]) -> None:
    today = datetime.now(UTC).date()
    quality = QualityLog()
    for org, days_ago, n in increments:
        day = (today - timedelta(days=days_ago)).isoformat()
        quality.book.add(ing.QualityCounts(source_org=org, day=day, accepted=n, duplicates=1))
    quality.ready.set()

    async def run() -> None:
        async with Server(pki, alert_log([]), quality=quality) as server:
            for org in ORGS:
                files = pki.clients[org]
                async with client_channel(f"127.0.0.1:{server.settings.gateway_port}", pki.ca.cert, files.cert,
                                          files.key) as channel:
                    report = await pb_grpc.PartnerGatewayStub(channel).GetQuality(pb.QualityRequest(days=7),
                                                                                   timeout=20)
                assert report.source_org == org and all(d.source_org == org for d in report.days)
                mine = [(n, 1) for o, _, n in increments if o == org]
                assert sum(d.accepted for d in report.days) == sum(n for n, _ in mine)
                assert sum(d.duplicates for d in report.days) == len(mine)

    asyncio.run(run())


def test_a_slow_subscriber_is_told_to_resume_and_others_are_not_held_up(pki: DemoPki) -> None:
    log = alert_log([])

    async def run() -> None:
        async with Server(pki, log, buffer=3) as server:
            files = pki.clients["B86001"]
            async with client_channel(f"127.0.0.1:{server.settings.gateway_port}", pki.ca.cert, files.cert,
                                      files.key) as channel:
                stub = pb_grpc.PartnerGatewayStub(channel)
                stuck = stub.SubscribeAlerts(pb.SubscribeAlertsRequest(), timeout=20)
                first = await stuck.read()  # subscribed: a heartbeat, nothing due yet
                assert isinstance(first, pb.AlertMessage) and first.HasField("heartbeat")
                for i in range(10):  # arrives while the stuck reader reads nothing
                    log.add(Entry(0, i, al.Alert(alert_id=f"s{i}", recipient_org="B86001")))
                    log.add(Entry(1, i, al.Alert(alert_id=f"o{i}", recipient_org="B86002")))
                other = await receive(pki, server.settings.gateway_port, "B86002", "", 10)
                assert len(other) == 10  # not held up by the stuck one
                messages: list[pb.AlertMessage] = []
                while (message := await stuck.read()) is not grpc.aio.EOF:
                    assert isinstance(message, pb.AlertMessage)
                    messages.append(message)
                *delivered, last = messages
                assert last.HasField("resume"), "the stuck subscriber was not told to resume"
                # It may have got some alerts before it fell behind, or none (on a busy machine the
                # overflow can come before its stream runs again): either way it resumes exactly
                # after what it got, and loses nothing.
                assert all(m.HasField("alert") for m in delivered)
                assert last.cursor == (delivered[-1].cursor if delivered else "")
                rest = await receive(pki, server.settings.gateway_port, "B86001", last.cursor,
                                     10 - len(delivered))
                assert [m.alert.alert_id for m in delivered + rest] == [f"s{i}" for i in range(10)]

    asyncio.run(run())


def test_indicators_are_only_the_callers_entitled_units_as_a_snapshot_and_as_changes(pki: DemoPki) -> None:
    board = IndicatorBoard()
    for unit in ("region", "practice:B86001", "practice:B86002", "provider:RR8"):
        board.put(f"acsc_all|{unit}|12m", ind.IndicatorValue(indicator="acsc_all", unit=unit, window="12m"))
    board.ready.set()

    async def run() -> None:
        async with Server(pki, alert_log([]), board=board) as server:
            files = pki.clients["B86001"]
            async with client_channel(f"127.0.0.1:{server.settings.gateway_port}", pki.ca.cert, files.cert,
                                      files.key) as channel:
                stub = pb_grpc.PartnerGatewayStub(channel)
                got = await stub.GetIndicators(pb.IndicatorsRequest(), timeout=10)
                assert sorted(v.unit for v in got.values) == ["practice:B86001", "region"]
                watch = stub.WatchIndicators(pb.IndicatorsRequest(window="12m"), timeout=10)
                first = await watch.read()
                assert isinstance(first, pb.IndicatorsResponse)
                assert sorted(v.unit for v in first.values) == ["practice:B86001", "region"]
                for unit in ("practice:B86002", "practice:B86001"):  # another's change is not sent
                    board.put(f"acsc_all|{unit}|12m", ind.IndicatorValue(indicator="acsc_all", unit=unit,
                                                                         window="12m", numerator=9))
                change = await watch.read()
                assert isinstance(change, pb.IndicatorsResponse)
                assert [(v.unit, v.numerator) for v in change.values] == [("practice:B86001", 9)]
                watch.cancel()

    asyncio.run(run())


def test_indicators_come_with_the_national_reference_values_of_their_indicators(pki: DemoPki) -> None:
    board = IndicatorBoard()
    for indicator in ("readmission_30d", "acsc_chronic"):
        board.put(f"{indicator}|region|12m", ind.IndicatorValue(indicator=indicator, unit="region", window="12m"))
    board.ready.set()

    async def run() -> None:
        async with Server(pki, alert_log([]), board=board) as server:
            files = pki.clients["B86001"]
            async with client_channel(f"127.0.0.1:{server.settings.gateway_port}", pki.ca.cert, files.cert,
                                      files.key) as channel:
                stub = pb_grpc.PartnerGatewayStub(channel)
                got = await stub.GetIndicators(pb.IndicatorsRequest(), timeout=10)
                refs = {r.name: r for r in got.references}
                assert list(refs) == ["nhsof_3b_2017_18", "nhsof_3b_2013_14", "iap00068_share_2015_16",
                                      "nhsof_2_3_i_latest"]  # file order, only the indicators answered
                latest = refs["nhsof_3b_2017_18"]
                assert (latest.value, latest.unit, latest.period, latest.status, latest.comparison) == \
                    (13.8, "percent", "2017/18", "published", "definition_differs")
                assert latest.source_publisher == "NHS Digital" and latest.definition and latest.differences
                chronic = refs["nhsof_2_3_i_latest"]
                assert chronic.status == "not_found" and not chronic.HasField("value") and chronic.note
                # asked for one indicator with no value yet: its reference values all the same
                acute = await stub.GetIndicators(pb.IndicatorsRequest(indicator="acsc_acute"), timeout=10)
                assert not acute.values and [r.name for r in acute.references] == ["nhsof_3a_latest"]
                watch = stub.WatchIndicators(pb.IndicatorsRequest(indicator="readmission_30d"), timeout=10)
                first = await watch.read()
                assert isinstance(first, pb.IndicatorsResponse)
                assert [r.name for r in first.references] == ["nhsof_3b_2017_18", "nhsof_3b_2013_14"]
                watch.cancel()

    asyncio.run(run())


def case_lists(routing: list[tuple[str, int, bool]]) -> CaseListBoard:
    """Lists of random people for random organisations, as the case-list service keys them (by organisation)."""
    board = CaseListBoard()
    lists: dict[str, rk.CaseList] = {}
    for i, (org, tier, new) in enumerate(routing):
        case_list = lists.setdefault(org, rk.CaseList(org=org, tiers=["very_high", "high"]))
        case_list.entries.add(local_id=f"{org}-L{i}", tier=("very_high", "high")[tier], new_this_week=new,
                              role="registered_practice")
    for org, case_list in lists.items():
        board.put(org, case_list)
    board.ready.set()
    return board


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(routing=st.lists(st.tuples(st.sampled_from(ORGS), st.integers(0, 1), st.booleans()), max_size=40),
       changed=st.lists(st.sampled_from(ORGS), min_size=1, max_size=6))
def test_each_partner_reads_and_watches_exactly_its_own_case_list(pki: DemoPki, routing: list[tuple[str, int, bool]],
                                                                 changed: list[str]) -> None:
    board = case_lists(routing)

    async def run() -> None:
        async with Server(pki, alert_log([]), caselists=board) as server:
            for org in ORGS:
                board.lists.clear()  # every organisation's list as drawn
                board.lists.update(case_lists(routing).lists)
                files = pki.clients[org]
                async with client_channel(f"127.0.0.1:{server.settings.gateway_port}", pki.ca.cert, files.cert,
                                          files.key) as channel:
                    stub = pb_grpc.PartnerGatewayStub(channel)
                    mine = [f"{o}-L{i}" for i, (o, _, _) in enumerate(routing) if o == org]
                    got = await stub.GetCaseList(pb.CaseListRequest(), timeout=20)
                    assert got.org == org and [e.local_id for e in got.entries] == mine
                    new = await stub.GetCaseList(pb.CaseListRequest(new_only=True), timeout=20)
                    assert [e.local_id for e in new.entries] == [f"{o}-L{i}" for i, (o, _, n) in enumerate(routing)
                                                                 if o == org and n]
                    watch = stub.WatchCaseList(pb.CaseListRequest(), timeout=20)
                    first = await watch.read()
                    assert isinstance(first, rk.CaseList) and [e.local_id for e in first.entries] == mine
                    # other organisations' lists change, then the caller's: only the caller's reaches it
                    for n, other in enumerate(changed):
                        if other != org:
                            board.put(other, rk.CaseList(org=other, entries=[rk.CaseListEntry(local_id=f"x{n}")]))
                    board.put(org, rk.CaseList(org=org, entries=[rk.CaseListEntry(local_id=f"{org}-changed")]))
                    update = await watch.read()
                    assert isinstance(update, rk.CaseList)
                    assert update.org == org and [e.local_id for e in update.entries] == [f"{org}-changed"]
                    watch.cancel()

    asyncio.run(run())
