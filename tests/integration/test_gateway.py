"""Closing the loop through the real broker and a real gRPC server over mutual TLS.

Ingest, identity, timeline, alert and gateway workers run as processes. A frail man known to his
practice and to social care is admitted as an emergency with pyelonephritis: his GP and his
social worker hear of it, each under their own record id, and nobody else does. A subscriber
killed mid-stream, and a gateway restart, lose nothing and repeat nothing; a wrong certificate
is refused; acknowledgements and deliveries are audited.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from carehub.harness import eventually
from carehub.kafka.broker import free_port
from carehub.sdk import Publisher
from carehub.synthetic import RegionConfig, generate_region
from carehub.tlsgen import CertFiles, issue_client, make_ca, make_demo_pki
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import partner_pb2_grpc as pb_grpc
from carehub.v1 import timeline_pb2 as tl
from services.gateway.auth import client_channel_sync
from tests.factories import VALID_NHS, VALID_NHS_2, care_event
from tests.integration.conftest import ROOT, Hub

pytestmark = pytest.mark.integration

GP, GP_2, SOCIAL, HOSPITAL, OUTSIDER = "B86001", "B86002", "SC001", "RR8", "Y99999"
OPTED_OUT_NHS = "9434765129"
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)


class Partner:
    def __init__(self, target: str, ca: Path, files: CertFiles) -> None:
        self.channel = client_channel_sync(target, ca, files.cert, files.key)
        self.stub = pb_grpc.PartnerGatewayStub(self.channel)

    def stream(self, cursor: str = "") -> Iterator[pb.AlertMessage]:
        return self.stub.SubscribeAlerts(pb.SubscribeAlertsRequest(cursor=cursor), timeout=120)

    def take(self, count: int, cursor: str = "") -> tuple[list[al.Alert], str]:
        """The alerts after ``cursor`` until ``count`` have come and then a heartbeat.

        The gateway sends a heartbeat only when it has nothing to deliver, so an alert beyond
        ``count`` already in its log arrives before that heartbeat and is returned too.
        """
        got: list[al.Alert] = []
        call = self.stream(cursor)
        deadline = time.monotonic() + 100
        try:
            for message in call:
                cursor = message.cursor or cursor
                if message.HasField("alert"):
                    got.append(message.alert)
                elif message.HasField("heartbeat") and len(got) >= count:
                    break
                assert time.monotonic() < deadline, f"only {[(a.rule, a.kind) for a in got]} of {count} alerts"
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            raise AssertionError(f"only {[(a.rule, a.kind) for a in got]} of {count} alerts in time") from None
        finally:
            call.cancel()  # type: ignore[attr-defined]
        return got, cursor


def wait_serving(target: str, ca: Path, files: CertFiles, timeout_s: float = 90.0) -> None:
    """Until the stock health service says the gateway serves (it has read the alert log)."""
    channel = client_channel_sync(target, ca, files.cert, files.key)
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                request = health_pb2.HealthCheckRequest(service="carehub.v1.PartnerGateway")
                status = stub.Check(request, timeout=5).status  # type: ignore[attr-defined]
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "the gateway did not come up"
            time.sleep(0.5)
    finally:
        channel.close()


def event(kind: ce.EventType.ValueType, when: datetime, org: str, sector: ce.Sector.ValueType, local_id: str,
          nhs: str = VALID_NHS, **kw: str) -> ce.CareEvent:
    e = care_event(kind, when=when, source_org=org, local_id=local_id, national_id=nhs, **kw)
    e.source_sector = sector
    if kind != ce.EVENT_TYPE_ADMISSION:
        e.ClearField("clinical")
    # only the practice says where the person is registered
    e.registered_practice, e.locality = (org, "L01") if org.startswith("B86") else ("", "")
    return e


def test_alerts_reach_the_right_partners_resume_without_loss_and_refuse_strangers(hub: Hub, tmp_path: Path) -> None:
    pki = make_demo_pki(tmp_path / "pki", [GP, GP_2, SOCIAL, HOSPITAL, "Z00000"])
    partners = tmp_path / "partners.toml"
    partners.write_text("".join(f'[partners.{org}]\nname = "{org}"\n' for org in (GP, GP_2, SOCIAL, HOSPITAL)))
    port, health_port = free_port(), free_port()
    gateway_env = dict(CAREHUB_GATEWAY_PORT=str(port), CAREHUB_GATEWAY_HEALTH_PORT=str(health_port),
                       CAREHUB_GATEWAY_TLS_CERT=str(pki.server.cert),
                       CAREHUB_GATEWAY_TLS_KEY=str(pki.server.key), CAREHUB_GATEWAY_CLIENT_CA=str(pki.ca.cert),
                       CAREHUB_GATEWAY_PARTNERS_FILE=str(partners), CAREHUB_GATEWAY_HEARTBEAT_S="1")
    for service in ("ingest", "identity", "timeline", "alerts"):
        hub.start(service)
    gateway = hub.start("gateway", **gateway_env)
    target = f"127.0.0.1:{port}"

    def publish(*events: ce.CareEvent) -> None:
        with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
            for e in events:  # one at a time, in order: each organisation's feed is its own partition
                pub.publish(e)
                pub.flush()

    admission = event(ce.EVENT_TYPE_ADMISSION, NOW, HOSPITAL, ce.SECTOR_ACUTE, "H-99812")
    admission.clinical.diagnoses[0].code = "N10"
    # the hospital got his NHS number wrong (one digit): the admission is kept without it, linked on
    # his name, birth date and postcode, alerted to his practice, and reported back to the hospital
    other = event(ce.EVENT_TYPE_ADMISSION, NOW, HOSPITAL, ce.SECTOR_ACUTE, "H-12345", nhs=VALID_NHS_2[:-1] + "1",
                  given="Arthur", family="Pennington", birth_date="1938-07-02", postcode="LS6 2QT")
    other.clinical.spell_id = "S-9"
    other.clinical.diagnoses[0].code = "J44.1"  # COPD: a chronic ACSC
    # a third person told her practice she does not want her care shared between organisations
    private = dict(nhs=OPTED_OUT_NHS, given="Edith", family="Crowther", birth_date="1935-01-09", postcode="LS8 1AB")
    opt_out = event(ce.EVENT_TYPE_CONSENT_CHANGE, NOW - timedelta(days=5), GP, ce.SECTOR_PRIMARY_CARE, "P-0003",
                    **private)
    opt_out.consent.direct_care_opt_out = True
    hers = event(ce.EVENT_TYPE_ADMISSION, NOW, HOSPITAL, ce.SECTOR_ACUTE, "H-55555", **private)
    hers.clinical.spell_id = "S-5"
    hers.clinical.diagnoses[0].code = "N10"
    publish(
        event(ce.EVENT_TYPE_REGISTRATION, NOW - timedelta(days=200), GP, ce.SECTOR_PRIMARY_CARE, "P-4471"),
        event(ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, NOW - timedelta(days=30), SOCIAL, ce.SECTOR_SOCIAL_CARE,
              "C-7730"),
        event(ce.EVENT_TYPE_REGISTRATION, NOW - timedelta(days=100), GP_2, ce.SECTOR_PRIMARY_CARE, "P-0002",
              nhs=VALID_NHS_2, given="Arthur", family="Pennington", birth_date="1938-07-02", postcode="LS6 2QT"),
        event(ce.EVENT_TYPE_REGISTRATION, NOW - timedelta(days=300), GP, ce.SECTOR_PRIMARY_CARE, "P-0003", **private),
        opt_out,
    )
    hub.settle("ingest", "identity", "timeline")  # registrations and the opt-out first, as in life
    publish(admission, other, hers)

    ca = pki.ca.cert
    wait_serving(target, ca, pki.clients[GP])
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as probe:  # what a kubelet gRPC probe sees
        check = health_pb2_grpc.HealthStub(probe).Check  # type: ignore[attr-defined]
        assert check(health_pb2.HealthCheckRequest(service="carehub.v1.PartnerGateway"), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError):  # and nothing but health there
            pb_grpc.PartnerGatewayStub(probe).GetIndicators(pb.IndicatorsRequest(), timeout=10)
    gp, social, gp_2, hospital = (Partner(target, ca, pki.clients[o]) for o in (GP, SOCIAL, GP_2, HOSPITAL))
    [first], gp_cursor = gp.take(1)
    assert (first.rule, first.local_id, first.provisional) == ("acsc_emergency_admission", "P-4471", True)
    assert "N10" in first.detail and first.trace_id
    [seen], _ = social.take(1)
    assert (seen.rule, seen.local_id, seen.recipient_role) == ("acsc_emergency_admission", "C-7730", "social_care")
    [theirs], _ = gp_2.take(1)
    assert (theirs.local_id, theirs.recipient_org) == ("P-0002", GP_2)  # despite the wrong NHS number
    def hospital_report() -> pb.QualityReport | None:  # the sender's own feedback, once the gateway read it
        report = hospital.stub.GetQuality(pb.QualityRequest(days=7), timeout=30)
        return report if sum(d.accepted for d in report.days) >= 3 else None

    report = eventually(hospital_report, 60, "the hospital's quality report counts its three admissions")
    assert report.source_org == HOSPITAL and sum(d.accepted for d in report.days) == 3
    assert sum(d.degraded_by_problem["person.national_id: INVALID_NHS_NUMBER"] for d in report.days) == 1
    theirs_report = gp.stub.GetQuality(pb.QualityRequest(), timeout=30)  # only ever one's own feed
    assert theirs_report.source_org == GP and all(d.source_org == GP for d in theirs_report.days)
    assert not any(d.degraded for d in theirs_report.days)
    nothing, _ = hospital.take(0)  # the hospital reported it; no rule sends it back there
    assert nothing == []

    # the GP's subscriber was killed after the first alert; more happens meanwhile
    discharge = event(ce.EVENT_TYPE_DISCHARGE, NOW + timedelta(days=3), HOSPITAL, ce.SECTOR_ACUTE, "H-99812")
    discharge.clinical.spell_id, discharge.clinical.discharge_destination = "S-1", "19"
    coded = event(ce.EVENT_TYPE_DIAGNOSIS_CODED, NOW + timedelta(days=5), HOSPITAL, ce.SECTOR_ACUTE, "H-99812")
    coded.clinical.spell_id = "S-1"
    coded.clinical.diagnoses.add(code="N10", position=1)
    publish(discharge, coded)
    resumed, gp_cursor = gp.take(2, cursor=gp_cursor)
    assert [(a.rule, a.kind) for a in resumed] == [("discharge_followup_due", al.ALERT_KIND_NEW),
                                                   ("acsc_emergency_admission", al.ALERT_KIND_REVISION)]
    assert resumed[1].refers_to == first.alert_id and not resumed[1].provisional

    # the gateway restarts; a death is recorded while it is down; the GP resumes from its cursor
    hub.stop(gateway)
    publish(event(ce.EVENT_TYPE_DEATH, NOW + timedelta(days=9), GP, ce.SECTOR_PRIMARY_CARE, "P-4471"))
    hub.wait_values("alerts", lambda v: any(al.Alert.FromString(x).rule == "death" for x in v), timeout_s=120)
    hub.start("gateway", **gateway_env)
    wait_serving(target, ca, pki.clients[GP])
    after_restart, _ = gp.take(1, cursor=gp_cursor)
    assert [a.rule for a in after_restart] == ["death"]
    everything, _ = gp.take(4)  # from the start: all four, once each
    assert len({a.alert_id for a in everything}) == len(everything) == 4

    # what a person at the practice reads: `carehub watch`, as they would run it
    watch = subprocess.run([sys.executable, "-m", "carehub", "watch", "--partner", GP, "--target", target,
                            "--ca", str(ca), "--cert", str(pki.clients[GP].cert), "--key", str(pki.clients[GP].key),
                            "--limit", "4"], cwd=ROOT, env=hub.env, capture_output=True, text=True, timeout=120)
    assert watch.returncode == 0, watch.stderr
    assert watch.stdout.count("P-4471") == 4 and "REVISION" in watch.stdout and "C-7730" not in watch.stdout

    # acknowledgements are events; another partner's alert cannot be acknowledged
    assert gp.stub.Acknowledge(pb.AcknowledgeRequest(alert_id=first.alert_id, status=al.ACK_STATUS_ACTIONED,
                                                     note="seen at home"), timeout=30).recorded
    with pytest.raises(grpc.RpcError) as refused:
        social.stub.Acknowledge(pb.AcknowledgeRequest(alert_id=first.alert_id, status=al.ACK_STATUS_RECEIVED),
                                timeout=30)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    acks = [al.Acknowledgement.FromString(v) for v in hub.values("alerts.acks")]  # written before the answer
    assert [(a.alert_id, a.org, a.status) for a in acks] == [(first.alert_id, GP, al.ACK_STATUS_ACTIONED)]
    audit = [al.AuditRecord.FromString(v) for v in hub.wait_values(
        "audit", lambda v: any(al.AuditRecord.FromString(x).action == "acknowledge" for x in v))]
    assert {(r.org, r.action) for r in audit} >= {(GP, "deliver"), (GP, "acknowledge"), (SOCIAL, "deliver")}

    # every alert on the log went to one of the people's partners, in their own terms; nothing about
    # the woman who opted out of sharing went beyond the hospital that reported her admission
    hub.settle("ingest", "identity", "timeline", "alerts")
    log = [al.Alert.FromString(v) for v in hub.values("alerts")]
    assert {(a.recipient_org, a.local_id) for a in log} == {(GP, "P-4471"), (SOCIAL, "C-7730"), (GP_2, "P-0002")}
    timeline = hub.values("timeline.events")
    assert any(e.view.direct_care_opt_out for x in timeline for e in tl.TimelineBatch.FromString(x).events
               if e.linked.event.event_id == hers.event_id), "her admission was applied, with the opt-out in force"

    # strangers are refused: a certificate from another CA, and a partner the hub does not know
    other_ca = make_ca(tmp_path / "other")
    forged = issue_client(other_ca, GP, tmp_path / "other")
    with pytest.raises(grpc.RpcError) as handshake:
        Partner(target, ca, forged).take(1)
    assert handshake.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as unknown:
        Partner(target, ca, pki.clients["Z00000"]).take(1)
    assert unknown.value.code() in (grpc.StatusCode.PERMISSION_DENIED,
                                    grpc.StatusCode.UNAUTHENTICATED)


@pytest.mark.timeout(900)
def test_the_synthetic_regions_alerts_reach_each_persons_own_partners_and_nobody_else(hub: Hub,
                                                                                      tmp_path: Path) -> None:
    """Every organisation of a synthetic region subscribes; what each receives is checked against the
    generator's ground truth: the record id it is given is its own record of the person the alert is
    about, all recipients of one alert situation are the same real person's organisations, and nothing
    reaches an organisation it was not addressed to."""
    region = generate_region(RegionConfig(people=2_000, seed=5))
    orgs = [o.code for o in region.directory.all]
    pki = make_demo_pki(tmp_path / "pki", orgs)
    partners = tmp_path / "partners.toml"
    partners.write_text("".join(f'[partners.{org}]\nname = "{org}"\n' for org in orgs))
    port = free_port()
    for service in ("ingest", "identity", "timeline", "alerts"):
        hub.start(service)
    hub.start("gateway", CAREHUB_GATEWAY_PORT=str(port), CAREHUB_GATEWAY_TLS_CERT=str(pki.server.cert),
              CAREHUB_GATEWAY_TLS_KEY=str(pki.server.key), CAREHUB_GATEWAY_CLIENT_CA=str(pki.ca.cert),
              CAREHUB_GATEWAY_PARTNERS_FILE=str(partners), CAREHUB_GATEWAY_HEARTBEAT_S="1")
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for record in region.records:
            pub.publish_raw(record.value, record.key, record.content_type)
        pub.flush()
    hub.settle("ingest", "identity", "timeline", "alerts", timeout_s=600)
    logged = [al.Alert.FromString(v) for v in hub.values("alerts")]
    assert len(logged) > 100, "the region should raise alerts"

    target = f"127.0.0.1:{port}"
    wait_serving(target, pki.ca.cert, pki.clients[orgs[0]])
    received: dict[str, list[al.Alert]] = {}
    for org in orgs:
        expected = sum(1 for a in logged if a.recipient_org == org)
        got, _ = Partner(target, pki.ca.cert, pki.clients[org]).take(expected)
        received[org] = got
        assert all(a.recipient_org == org for a in got), f"{org} received another partner's alert"
        assert sorted(a.alert_id for a in got) == sorted(a.alert_id for a in logged if a.recipient_org == org)

    situations: dict[tuple[str, str, int], set[int]] = {}
    for org, alerts in received.items():
        for a in alerts:
            if a.unit:
                continue  # about a unit, not a person
            person = region.truth.get((org, a.local_id))
            assert person is not None, f"{org} was given {a.local_id!r}, which is not its own record id"
            situations.setdefault((a.rule, a.source_org, a.event_time.ToNanoseconds()), set()).add(person)
    mixed = {k: v for k, v in situations.items() if len(v) > 1}
    assert not mixed, f"one alert situation went to the organisations of different people: {list(mixed)[:5]}"
    assert {a.rule for a in logged} >= {"acsc_emergency_admission", "discharge_followup_due", "death"}
