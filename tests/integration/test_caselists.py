"""Case-finding lists through the real broker, served over gRPC with mutual TLS and by `carehub caselist`.

Ingest, identity, timeline, population, case-list and gateway workers run as processes. Sixty
people are registered with two practices; three of them have been admitted as emergencies:
Margaret, known to social care, who has a care plan there; Arthur, seen by the community
team; and Edith, who opted out of sharing for direct care. Among sixty people the top two
tiers hold three (5%), so all three are in the high tier: Margaret is on her practice's list
and on social care's, each under its own record id, with the factors behind her score and her
care plan (owned by social care, its review date and contact role); Arthur on his practice's
and the community team's; Edith on none, ever. Each partner reads only its own list. The alert
worker runs too: Margaret's emergency admission after her plan was made reaches social care,
the plan's owner, over gRPC, naming the plan's contact role. When Margaret dies she leaves both
lists and a watcher sees it happen.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from carehub.harness import eventually
from carehub.kafka.broker import free_port
from carehub.sdk import Publisher
from carehub.tlsgen import make_demo_pki
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import partner_pb2_grpc as pb_grpc
from carehub.v1 import risk_pb2 as rk
from services.gateway.auth import client_channel_sync
from tests.factories import care_event
from tests.integration.conftest import ROOT, Hub
from tests.integration.test_gateway import Partner as AlertPartner
from tests.integration.test_gateway import wait_serving

pytestmark = pytest.mark.integration

GP, GP_2, SOCIAL, COMMUNITY, HOSPITAL = "B86001", "B86002", "SC001", "COM01", "RR8"
SECTOR = {GP: ce.SECTOR_PRIMARY_CARE, GP_2: ce.SECTOR_PRIMARY_CARE, SOCIAL: ce.SECTOR_SOCIAL_CARE,
          COMMUNITY: ce.SECTOR_COMMUNITY, HOSPITAL: ce.SECTOR_ACUTE}
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
PEOPLE = 60
REVIEW_DUE = (NOW + timedelta(days=60)).date()  # Margaret's care plan, reviewed in two months
WALTER_DUE = (NOW - timedelta(days=15)).date()  # the community team's plan for Walter (3): overdue


def nhs_numbers(n: int) -> list[str]:
    """``n`` distinct NHS numbers with a valid mod-11 check digit."""
    out: list[str] = []
    base = 943_400_000
    while len(out) < n:
        digits = f"{base:09d}"
        base += 7
        check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(digits)) % 11
        if check == 10:
            continue
        out.append(digits + str(0 if check == 11 else check))
    return out


NHS = nhs_numbers(PEOPLE)
FAMILIES = ["Whitfield", "Pennington", "Crowther", "Ashworth", "Blakemore", "Cartwright", "Dunmore", "Eastwood",
            "Fairbairn", "Greenhalgh", "Hollingworth", "Illingworth"]
GIVEN = ["Margaret", "Arthur", "Edith", "Walter", "Doris", "Harold", "Irene", "Leonard", "Mabel", "Norman"]


def who(i: int) -> dict[str, str]:
    """Person i's identity as every organisation sends it: Margaret (0), Arthur (1), Edith (2), then others aged 40."""
    born = ("1941-03-17", "1938-07-02", "1935-01-09")[i] if i < 3 else f"1985-{i % 12 + 1:02d}-{i % 27 + 1:02d}"
    return dict(national_id=NHS[i], given=GIVEN[i % len(GIVEN)], family=f"{FAMILIES[i % len(FAMILIES)]}{i // 12 or ''}",
                birth_date=born, postcode=f"LS{i % 27 + 1} {i % 9 + 1}AB")


def event(kind: ce.EventType.ValueType, i: int, org: str, local_id: str, when: datetime, spell: str = "",
          diagnosis: str = "") -> ce.CareEvent:
    e = care_event(kind, when=when, source_org=org, local_id=local_id, **who(i))
    e.source_sector = SECTOR[org]
    if kind == ce.EVENT_TYPE_ADMISSION:
        e.clinical.spell_id = spell
        e.clinical.diagnoses[0].code = diagnosis
    else:
        e.ClearField("clinical")
    e.registered_practice, e.locality = (org, "L01") if org in (GP, GP_2) else ("", "")
    return e


class Partner:
    def __init__(self, target: str, pki_dir: Path, org: str) -> None:
        self.channel = client_channel_sync(target, pki_dir / "ca.pem", pki_dir / f"{org}.pem", pki_dir / f"{org}.key")
        self.stub = pb_grpc.PartnerGatewayStub(self.channel)

    def caselist(self, new_only: bool = False) -> rk.CaseList:
        return self.stub.GetCaseList(pb.CaseListRequest(new_only=new_only), timeout=30)


def entries(case_list: rk.CaseList) -> dict[str, rk.CaseListEntry]:
    return {e.local_id: e for e in case_list.entries}


def alerts_until(partner: AlertPartner, enough: Callable[[list[al.Alert]], bool],
                 timeout_s: float = 180) -> list[al.Alert]:
    """The partner's alerts from the start of its log, read until ``enough`` holds at a heartbeat (the
    gateway sends one only when it has nothing more to deliver: every alert then in the log has come)."""
    deadline = time.monotonic() + timeout_s
    while True:  # a stream that ends (its own deadline) starts again from the beginning
        got: list[al.Alert] = []
        call = partner.stream()
        try:
            for message in call:
                if message.HasField("alert"):
                    got.append(message.alert)
                elif message.HasField("heartbeat") and enough(got):
                    return got
                assert time.monotonic() < deadline, f"only {[a.rule for a in got]} in time"
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED or time.monotonic() > deadline:
                raise
        finally:
            call.cancel()  # type: ignore[attr-defined]


@pytest.mark.timeout(600)
def test_case_lists_reach_each_practice_and_team_in_its_own_record_ids_and_nobody_else(hub: Hub,
                                                                                      tmp_path: Path) -> None:
    orgs = [GP, GP_2, SOCIAL, COMMUNITY, HOSPITAL]
    pki = make_demo_pki(tmp_path / "pki", [*orgs, "Z00000"])
    partners = tmp_path / "partners.toml"
    partners.write_text("".join(f'[partners.{org}]\nname = "{org}"\n' for org in orgs))
    port = free_port()
    target = f"127.0.0.1:{port}"
    gateway_env = dict(CAREHUB_GATEWAY_HOST="127.0.0.1", CAREHUB_GATEWAY_PORT=str(port),
                       CAREHUB_GATEWAY_TLS_CERT=str(pki.server.cert), CAREHUB_GATEWAY_TLS_KEY=str(pki.server.key),
                       CAREHUB_GATEWAY_CLIENT_CA=str(pki.ca.cert), CAREHUB_GATEWAY_PARTNERS_FILE=str(partners),
                       CAREHUB_GATEWAY_HEARTBEAT_S="1")
    for service in ("ingest", "identity", "timeline", "alerts"):
        hub.start(service)
    population = hub.start_with_metrics("population", CAREHUB_RISK_CUTOFFS_INTERVAL_S="1")
    hub.start("caselists", CAREHUB_RISK_CUTOFFS_INTERVAL_S="1", CAREHUB_CASELIST_PUBLISH_INTERVAL_S="0.5")
    hub.start("gateway", **gateway_env)

    def publish(*events: ce.CareEvent) -> None:
        with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
            for e in events:
                pub.publish(e)
            pub.flush()

    # everyone registered, Margaret known to social care with a care plan, Arthur to the community team,
    # Edith's opt-out: first, as in life
    registered = NOW - timedelta(days=300)
    first = [event(ce.EVENT_TYPE_REGISTRATION, i, GP if i % 2 == 0 else GP_2, f"P-{i:04d}", registered)
             for i in range(PEOPLE)]
    plan = event(ce.EVENT_TYPE_CARE_PLAN, 0, SOCIAL, "C-7730", NOW - timedelta(days=30))
    plan.care_plan.CopyFrom(ce.CarePlanDetail(owner_org=SOCIAL, review_due=REVIEW_DUE.isoformat(), segment="frail",
                                              contact_role="social worker"))
    walter_plan = event(ce.EVENT_TYPE_CARE_PLAN, 3, COMMUNITY, "CN-33", NOW - timedelta(days=25))
    walter_plan.care_plan.CopyFrom(ce.CarePlanDetail(review_due=WALTER_DUE.isoformat(), contact_role="district nurse"))
    first += [event(ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, 0, SOCIAL, "C-7730", NOW - timedelta(days=40)), plan,
              event(ce.EVENT_TYPE_GP_CONTACT, 1, COMMUNITY, "CN-12", NOW - timedelta(days=20)), walter_plan]
    opt_out = event(ce.EVENT_TYPE_CONSENT_CHANGE, 2, GP, "P-0002", NOW - timedelta(days=50))
    opt_out.consent.direct_care_opt_out = True
    publish(*first, opt_out)
    hub.settle("ingest", "identity", "timeline", timeout_s=240)
    admissions = [
        event(ce.EVENT_TYPE_ADMISSION, 0, HOSPITAL, "H-99812", NOW - timedelta(days=60), "S-1", "I50.9"),
        event(ce.EVENT_TYPE_ADMISSION, 0, HOSPITAL, "H-99812", NOW - timedelta(days=10), "S-2", "N10"),
        event(ce.EVENT_TYPE_ADMISSION, 1, HOSPITAL, "H-12345", NOW - timedelta(days=5), "S-3", "J44.1"),
        event(ce.EVENT_TYPE_ADMISSION, 2, HOSPITAL, "H-55555", NOW - timedelta(days=4), "S-4", "N10"),
    ]
    publish(*admissions)
    publish(event(ce.EVENT_TYPE_GP_CONTACT, 3, GP_2, "P-0003", NOW - timedelta(days=2)))  # after Walter's review day

    def lists() -> dict[str, rk.CaseList]:
        latest: dict[str, rk.CaseList] = {}
        for record in hub.read("caselists"):
            if record.key and record.value:
                latest[record.key.decode()] = rk.CaseList.FromString(record.value)
        return latest

    def admitted(case_list: rk.CaseList | None, local_id: str, times: int) -> bool:
        entry = entries(case_list or rk.CaseList()).get(local_id)
        return (entry is not None and entry.tier == "high"
                and {f.factor: f.value for f in entry.factors}["emergency_admissions"] == times)

    def both_listed() -> dict[str, rk.CaseList] | None:
        hub.assert_running()
        # their ages alone may list them at first; then their admissions come in, and new scores are placed
        # against the last cut-offs until the next are computed with them (a top score then looks very high)
        now = lists()
        return now if admitted(now.get(GP), "P-0000", 2) and admitted(now.get(GP_2), "P-0001", 1) else None

    published = eventually(both_listed, 240, "Margaret and Arthur on their practices' lists, admissions counted")
    assert set(published) == {GP, GP_2, SOCIAL, COMMUNITY}  # a hospital has no list
    margaret = entries(published[GP])["P-0000"]
    assert (margaret.role, margaret.tier) == ("registered_practice", "high")
    assert margaret.new_this_week
    factors = {f.factor: f for f in margaret.factors}
    assert factors["emergency_admissions"].value == 2 and factors["emergency_admissions"].points == 1.5
    assert factors["age"].value >= 85 and factors["social_care"].value == 1
    assert "heart_failure" in factors["long_term_conditions"].evidence
    assert margaret.care_plan.presence == rk.CARE_PLAN_PRESENCE_RECORDED and margaret.care_plan.org == SOCIAL
    assert margaret.care_plan.due.ToDatetime(tzinfo=UTC).date() == REVIEW_DUE and not margaret.care_plan.overdue
    assert margaret.care_plan.contact_role == "social worker"
    assert list(entries(published[SOCIAL])) == ["C-7730"] and entries(published[SOCIAL])["C-7730"].role == \
        "social_care"
    arthur = entries(published[GP_2])["P-0001"]
    assert arthur.care_plan.presence == rk.CARE_PLAN_PRESENCE_UNKNOWN
    assert list(entries(published[COMMUNITY])) == ["CN-12"]
    assert published[GP].cutoffs.population == PEOPLE and published[GP].tiers == ["very_high", "high"]

    # over gRPC with mutual TLS: each partner its own list, and nothing else. The gateway follows the
    # lists topic, so just after a list is published it may still serve the one before for a moment.
    wait_serving(target, pki.ca.cert, pki.clients[GP])
    pki_dir = tmp_path / "pki"
    callers = {org: Partner(target, pki_dir, org) for org in orgs}

    def served_as_published() -> dict[str, rk.CaseList] | None:
        newest = lists()
        mine = {org: caller.caselist() for org, caller in callers.items()}
        same = all(list(c.entries) == list(newest[org].entries if org in newest else []) for org, c in mine.items())
        return mine if same else None

    mine = eventually(served_as_published, 60, "each partner served the list last published")
    for org, case_list in mine.items():
        assert case_list.org == org
        assert bool(case_list.entries) == (org in published)
    assert list(entries(mine[GP])) == ["P-0000"] and list(entries(mine[GP_2])) == ["P-0001"]
    assert [e.local_id for e in Partner(target, pki_dir, GP).caselist(new_only=True).entries] == ["P-0000"]
    with pytest.raises(grpc.RpcError) as unknown:
        Partner(target, pki_dir, "Z00000").caselist()
    assert unknown.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)

    # Margaret's second emergency admission came after social care made her plan: social care, the plan's
    # owner, hears of it over gRPC under its own record id, with the plan's contact role; her first
    # admission, before the plan, and her practice, which owns no plan, give no such alert
    social_alerts = alerts_until(AlertPartner(target, pki.ca.cert, pki.clients[SOCIAL]),
                                 lambda got: any(a.rule == "care_plan_admission" for a in got))
    [plan_alert] = [a for a in social_alerts if a.rule == "care_plan_admission"]
    assert (plan_alert.local_id, plan_alert.recipient_org, plan_alert.recipient_role) == (
        "C-7730", SOCIAL, "care_plan_owner")
    assert "contact: social worker" in plan_alert.detail and f"review due {REVIEW_DUE}" in plan_alert.detail
    assert plan_alert.event_time.ToDatetime(tzinfo=UTC) == NOW - timedelta(days=10)
    gp_alerts = alerts_until(AlertPartner(target, pki.ca.cert, pki.clients[GP]),
                             lambda got: sum(a.rule == "acsc_emergency_admission" for a in got) >= 2)
    assert not any(a.rule == "care_plan_admission" for a in gp_alerts)  # both admissions in, none of these
    # the community team's plan for Walter passed its review day with no newer date: the team, its owner,
    # hears once, under its own record id; Margaret's plan, due in two months, gives social care nothing
    community_alerts = alerts_until(AlertPartner(target, pki.ca.cert, pki.clients[COMMUNITY]),
                                    lambda got: any(a.rule == "care_plan_review_overdue" for a in got))
    [overdue] = [a for a in community_alerts if a.rule == "care_plan_review_overdue"]
    assert (overdue.local_id, overdue.recipient_role) == ("CN-33", "care_plan_owner")
    assert f"due for review on {WALTER_DUE}" in overdue.detail and "contact: district nurse" in overdue.detail
    assert not any(a.rule == "care_plan_review_overdue" for a in social_alerts + gp_alerts)

    # `carehub caselist`: an operator reading Kafka, and the practice over the gateway
    operator = subprocess.run([sys.executable, "-m", "carehub", "caselist", "--org", GP], cwd=ROOT, env=hub.env,
                              capture_output=True, text=True, timeout=120)
    assert operator.returncode == 0, operator.stderr
    assert "P-0000" in operator.stdout and "NEW" in operator.stdout and f"{SOCIAL} " in operator.stdout
    assert "P-0002" not in operator.stdout and "C-7730" not in operator.stdout
    remote = subprocess.run([sys.executable, "-m", "carehub", "caselist", "--remote", "--json", "--target", target,
                             "--ca", str(pki.ca.cert), "--cert", str(pki.clients[SOCIAL].cert),
                             "--key", str(pki.clients[SOCIAL].key)],
                            cwd=ROOT, env=hub.env, capture_output=True, text=True, timeout=120)
    assert remote.returncode == 0, remote.stderr
    as_json = json.loads(remote.stdout)
    assert as_json["org"] == SOCIAL and [e["local_id"] for e in as_json["entries"]] == ["C-7730"]

    # a watcher sees Margaret leave her practice's list when she dies
    seen: list[rk.CaseList] = []
    watching = Partner(target, pki_dir, GP)
    call = watching.stub.WatchCaseList(pb.CaseListRequest(), timeout=180)

    def watch() -> None:
        try:
            for case_list in call:
                seen.append(case_list)
                if not case_list.entries:
                    return
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    eventually(lambda: seen, 60, "the watcher's first list")
    assert list(entries(seen[0])) == ["P-0000"]
    publish(event(ce.EVENT_TYPE_DEATH, 0, GP, "P-0000", NOW))
    eventually(lambda: seen and not seen[-1].entries, 180, "Margaret gone from her practice's list")
    call.cancel()
    reader.join(10)
    assert not entries(lists()[SOCIAL])

    # Edith, who opted out of sharing for direct care, was on no list at any time
    for record in hub.read("caselists"):
        assert record.value is not None and b"P-0002" not in record.value and b"H-55555" not in record.value
    # the lists name people only in the organisations' own record ids: no hub person id on them
    person_ids = {rk.RiskAssessment.FromString(r.value).person_id for r in hub.read("risk.assessments") if r.value}
    assert len(person_ids) == PEOPLE
    for record in hub.read("caselists"):
        assert record.value is not None and not any(pid.encode() in record.value for pid in person_ids)
    # every read of a case list is audited
    audit = [al.AuditRecord.FromString(v) for v in hub.wait_values(
        "audit", lambda v: any(al.AuditRecord.FromString(x).action == "deliver_caselist" for x in v))]
    actions = {(r.org, r.action) for r in audit}
    assert {(GP, "get_caselist"), (SOCIAL, "get_caselist"), (GP, "watch_caselist"),
            (GP, "deliver_caselist")} <= actions
    assert population.metrics()["carehub_population_events_total"] >= PEOPLE + len(admissions)
