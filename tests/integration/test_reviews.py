"""Avoidable-admission review packs through the real broker, served over gRPC with mutual TLS.

Ingest, identity, timeline, reviews and gateway workers run as processes. Margaret is registered
at B86001: in the 90 days before her emergency admission for heart failure she saw her GP twice
and the community team once, attended ED, and was discharged from an earlier admission with no
follow-up in the 7 days after; social care assessed her. Arthur, at B86002, was admitted as an
emergency for COPD. Each practice reads its own pack only, under its own record id, with those
sections; B86002 cannot read or record an outcome on Margaret's pack; an outcome with a factor
not in the taxonomy is refused naming it; a valid outcome shows on the pack and in the learning
counts; the CLI prints packs and records an outcome; no hub person id reaches a partner; reads
and outcomes are audited.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from carehub.demo import _packs_now
from carehub.harness import eventually
from carehub.kafka.broker import free_port
from carehub.sdk import Publisher
from carehub.tlsgen import make_demo_pki
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import partner_pb2_grpc as pb_grpc
from carehub.v1 import review_pb2 as rv
from carehub.v1 import timeline_pb2 as tl
from services.gateway.auth import client_channel_sync
from tests.factories import VALID_NHS, VALID_NHS_2, care_event
from tests.integration.conftest import ROOT, Hub
from tests.integration.test_gateway import wait_serving

pytestmark = pytest.mark.integration

GP, GP_2, COMMUNITY, SOCIAL, HOSPITAL = "B86001", "B86002", "COM01", "SC001", "RR8"
SECTOR = {GP: ce.SECTOR_PRIMARY_CARE, GP_2: ce.SECTOR_PRIMARY_CARE, COMMUNITY: ce.SECTOR_COMMUNITY,
          SOCIAL: ce.SECTOR_SOCIAL_CARE, HOSPITAL: ce.SECTOR_ACUTE}
ADMITTED = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
PEOPLE = {"margaret": dict(national_id=VALID_NHS, given="Margaret", family="Whitfield", birth_date="1941-03-17",
                           postcode="LS1 4AP"),
          "arthur": dict(national_id=VALID_NHS_2, given="Arthur", family="Pennington", birth_date="1938-07-02",
                         postcode="LS6 2AB")}


def event(kind: ce.EventType.ValueType, who: str, org: str, local_id: str, days_before: float, *, spell: str = "",
          diagnosis: str = "", destination: str = "") -> ce.CareEvent:
    e = care_event(kind, when=ADMITTED - timedelta(days=days_before), source_org=org, local_id=local_id,
                   **PEOPLE[who])
    e.source_sector = SECTOR[org]
    if spell:
        e.clinical.spell_id = spell
        e.clinical.diagnoses[0].code = diagnosis or "I50.9"
        e.clinical.discharge_destination = destination
        if kind != ce.EVENT_TYPE_ADMISSION:
            del e.clinical.diagnoses[:]
    else:
        e.ClearField("clinical")
    practice = GP if who == "margaret" else GP_2
    e.registered_practice, e.locality = (practice, "L01") if org in (GP, GP_2) else ("", "")
    return e


class Practice:
    def __init__(self, target: str, pki_dir: Path, org: str) -> None:
        channel = client_channel_sync(target, pki_dir / "ca.pem", pki_dir / f"{org}.pem", pki_dir / f"{org}.key")
        self.stub = pb_grpc.PartnerGatewayStub(channel)

    def packs(self) -> pb.ReviewPacks:
        return self.stub.GetReviewPacks(pb.ReviewPacksRequest(), timeout=30)

    def record(self, pack_id: str, verdict: str, factors: list[str],
               actions: list[rv.ReviewAction] | None = None) -> rv.ReviewOutcome:
        return self.stub.RecordReviewOutcome(pb.RecordReviewOutcomeRequest(
            pack_id=pack_id, verdict=verdict, factors=factors, actions=actions or [],
            conference_date=datetime.now(UTC).date().isoformat()), timeout=30).outcome

    def learning(self) -> rv.ReviewLearning:
        return self.stub.GetReviewLearning(pb.ReviewLearningRequest(), timeout=30)


@pytest.mark.timeout(600)
def test_each_practice_reads_its_own_review_packs_and_records_outcomes_that_are_counted(hub: Hub,
                                                                                      tmp_path: Path) -> None:
    orgs = [GP, GP_2, COMMUNITY, SOCIAL, HOSPITAL]
    pki = make_demo_pki(tmp_path / "pki", orgs)
    partners = tmp_path / "partners.toml"
    partners.write_text("".join(f'[partners.{org}]\nname = "{org}"\n' for org in orgs))
    port = free_port()
    target = f"127.0.0.1:{port}"
    for service in ("ingest", "identity", "timeline", "reviews"):
        hub.start(service)
    hub.start("gateway", CAREHUB_GATEWAY_HOST="127.0.0.1", CAREHUB_GATEWAY_PORT=str(port),
              CAREHUB_GATEWAY_TLS_CERT=str(pki.server.cert), CAREHUB_GATEWAY_TLS_KEY=str(pki.server.key),
              CAREHUB_GATEWAY_CLIENT_CA=str(pki.ca.cert), CAREHUB_GATEWAY_PARTNERS_FILE=str(partners),
              CAREHUB_SUPPRESSION_MAX="0")  # one review: shown, not withheld (the unit tests cover withholding)

    history = [
        event(ce.EVENT_TYPE_REGISTRATION, "margaret", GP, "P-0000", 400),
        event(ce.EVENT_TYPE_REGISTRATION, "arthur", GP_2, "Q-0001", 400),
        event(ce.EVENT_TYPE_GP_CONTACT, "margaret", GP, "P-0000", 120),  # before the 90 days
        event(ce.EVENT_TYPE_GP_CONTACT, "margaret", GP, "P-0000", 80),
        event(ce.EVENT_TYPE_GP_CONTACT, "margaret", COMMUNITY, "CN-12", 75),
        event(ce.EVENT_TYPE_ED_ATTENDANCE, "margaret", HOSPITAL, "H-99812", 60),
        event(ce.EVENT_TYPE_ADMISSION, "margaret", HOSPITAL, "H-99812", 50, spell="S-0", diagnosis="S72.0"),
        event(ce.EVENT_TYPE_DISCHARGE, "margaret", HOSPITAL, "H-99812", 45, spell="S-0", destination="19"),
        event(ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, "margaret", SOCIAL, "C-7730", 30),
        event(ce.EVENT_TYPE_GP_CONTACT, "margaret", GP, "P-0000", 20),  # 25 days after the discharge: not a follow-up
        event(ce.EVENT_TYPE_ADMISSION, "margaret", HOSPITAL, "H-99812", 0, spell="S-1", diagnosis="I50.9"),
        event(ce.EVENT_TYPE_ADMISSION, "arthur", HOSPITAL, "H-12345", 1, spell="S-2", diagnosis="J44.1"),
    ]
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for e in history:
            pub.publish(e)
        pub.flush()

    def packs() -> dict[str, rv.ReviewPack]:
        hub.assert_running()
        latest: dict[str, rv.ReviewPack] = {}
        for record in hub.read("review.packs"):
            if record.key:
                if record.value:
                    latest[record.key.decode()] = rv.ReviewPack.FromString(record.value)
                else:
                    latest.pop(record.key.decode(), None)
        return latest

    def one_each() -> dict[str, rv.ReviewPack] | None:
        now = packs()
        return now if {x.practice for x in now.values()} == {GP, GP_2} else None

    published = eventually(one_each, 240, "a pack for each practice")
    assert _packs_now(hub.bootstrap, hub.settings()) == "review packs now: 2, for 2 practices"  # as `make run` says
    [margaret_id] = [pid for pid, p in published.items() if p.practice == GP]
    [arthur_id] = [pid for pid, p in published.items() if p.practice == GP_2]

    wait_serving(target, pki.ca.cert, pki.clients[GP])
    pki_dir = tmp_path / "pki"
    gp, gp_2 = Practice(target, pki_dir, GP), Practice(target, pki_dir, GP_2)
    def served() -> pb.ReviewPacks | None:
        answer = gp.packs()
        return answer if answer.packs else None

    mine = eventually(served, 60, "B86001's pack served").packs
    [pack] = mine
    assert pack.pack_id == margaret_id and pack.local_id == "P-0000" and pack.practice == GP
    assert pack.admission.org == HOSPITAL and pack.admission.primary_diagnosis == "I50.9"
    assert pack.admission.condition == "congestive_heart_failure" and pack.admission.provisional
    sectors = {s.sector: s.contacts for s in pack.contacts_by_sector}
    assert sectors == {ce.SECTOR_PRIMARY_CARE: 2, ce.SECTOR_COMMUNITY: 1, ce.SECTOR_SOCIAL_CARE: 1}
    assert [e.org for e in pack.ed_attendances] == [HOSPITAL]
    [discharge] = pack.discharges
    assert discharge.follow_up == rv.FOLLOW_UP_MISSED and pack.missed_follow_ups == 1
    assert [s.org for s in pack.social_care] == [SOCIAL] and not pack.care_plan_known
    assert {"acsc_chronic", "acsc_all"} <= {c.indicator for c in pack.counts_in}
    assert not pack.HasField("outcome")
    theirs = gp_2.packs()
    assert [p.pack_id for p in theirs.packs] == [arthur_id] and theirs.packs[0].local_id == "Q-0001"

    # a watcher at B86001 sees the outcome arrive on its pack
    seen: list[pb.ReviewPacks] = []
    call = gp.stub.WatchReviewPacks(pb.ReviewPacksRequest(), timeout=180)

    def watch() -> None:
        try:
            for answer in call:
                seen.append(answer)
                if answer.packs and answer.packs[0].HasField("outcome"):
                    return
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    eventually(lambda: seen, 60, "the watcher's first packs")
    assert [p.pack_id for p in seen[0].packs] == [margaret_id] and not seen[0].packs[0].HasField("outcome")

    # another practice cannot record on Margaret's pack; a factor not in the taxonomy is refused, named
    with pytest.raises(grpc.RpcError) as other:
        gp_2.record(margaret_id, "avoidable", ["access"])
    assert other.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as unknown:
        gp.record(margaret_id, "avoidable", ["access", "bad_luck"])
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'bad_luck'" in (unknown.value.details() or "")
    outcome = gp.record(margaret_id, "avoidable", ["follow_up_missed", "interface"],
                        [rv.ReviewAction(text="Call within 2 days of every discharge", owner_org=GP, due="2027-01-31")])
    assert outcome.practice == GP and outcome.taxonomy_version == "carehub-review v1"
    [again] = gp.packs().packs
    assert again.outcome.verdict == "avoidable" and list(again.outcome.factors) == ["follow_up_missed", "interface"]
    assert not gp_2.packs().packs[0].HasField("outcome")
    eventually(lambda: seen[-1].packs[0].HasField("outcome"), 60, "the watcher sees the outcome")
    call.cancel()
    reader.join(10)
    cells = {(c.unit, c.item): c.count for c in gp.learning().cells}
    assert cells[("practice:B86001", "factor:follow_up_missed")] == 1 and cells[("region", "verdict:avoidable")] == 1
    assert not any(unit.startswith("practice:B86002") for unit, _ in cells)  # another practice's units: not its own
    assert cells[("region", "reviewed")] == 1

    # the CLI: a practice over the gateway, an operator from Kafka
    gateway_args = ["--target", target, "--ca", str(pki.ca.cert), "--cert", str(pki.clients[GP_2].cert),
                    "--key", str(pki.clients[GP_2].key)]
    recorded = subprocess.run([sys.executable, "-m", "carehub", "review-outcome", "--remote", *gateway_args,
                               arthur_id, "--verdict", "anticipated", "--action", f"Review COPD plan@{GP_2}"],
                              cwd=ROOT, env=hub.env, capture_output=True, text=True, timeout=120)
    assert recorded.returncode == 0, recorded.stderr
    assert "anticipated" in recorded.stdout
    remote = subprocess.run([sys.executable, "-m", "carehub", "reviews", "--remote", "--json", *gateway_args],
                            cwd=ROOT, env=hub.env, capture_output=True, text=True, timeout=120)
    assert remote.returncode == 0, remote.stderr
    as_json = json.loads(remote.stdout)
    assert as_json["org"] == GP_2 and [p["local_id"] for p in as_json["packs"]] == ["Q-0001"]
    assert as_json["packs"][0]["outcome"]["verdict"] == "anticipated"
    operator = subprocess.run([sys.executable, "-m", "carehub", "reviews", "--org", GP], cwd=ROOT, env=hub.env,
                              capture_output=True, text=True, timeout=120)
    assert operator.returncode == 0, operator.stderr
    assert "P-0000" in operator.stdout and "MISSED follow-up" in operator.stdout and "OUTCOME" in operator.stdout
    assert "Q-0001" not in operator.stdout

    # no hub person id reaches a partner: not on the packs topic, not in what the gateway served
    person_ids = {e.linked.person_id for r in hub.read("timeline.events") if r.value
                  for e in tl.TimelineBatch.FromString(r.value).events}
    assert len(person_ids) == 2
    blobs = [gp.packs().SerializeToString(), gp_2.packs().SerializeToString(), gp.learning().SerializeToString(),
              *(r.value for r in hub.read(["review.packs", "review.outcomes"]) if r.value)]
    assert not any(pid.encode() in blob for pid in person_ids for blob in blobs)
    # every read and every outcome, recorded or refused, is audited
    audit = [al.AuditRecord.FromString(v) for v in hub.wait_values(
        "audit", lambda v: sum(al.AuditRecord.FromString(x).action == "record_review_outcome" for x in v) >= 2)]
    actions = {(r.org, r.action) for r in audit}
    assert {(GP, "get_review_packs"), (GP_2, "get_review_packs"), (GP, "record_review_outcome"),
            (GP_2, "record_review_outcome"), (GP_2, "refuse_review_outcome"), (GP, "refuse_review_outcome"),
            (GP, "get_review_learning"), (GP, "watch_review_packs"), (GP, "deliver_review_packs")} <= actions
