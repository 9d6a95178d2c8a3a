"""The identity review desk through the real broker: ingest, identity and timeline workers as processes,
`carehub review` and `carehub identity explain` as an identity team runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from carehub import identity_desk as desk
from carehub.harness import eventually
from carehub.kafka.broker import free_port
from carehub.sdk import Publisher
from carehub.tlsgen import make_demo_pki
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import identity_review_pb2 as rvw
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import partner_pb2_grpc as pb_grpc
from carehub.v1 import timeline_pb2 as tl
from services.gateway.auth import client_channel_sync
from tests.factories import VALID_NHS, VALID_NHS_2, care_event
from tests.integration.conftest import ROOT, Hub
from tests.integration.test_gateway import wait_serving

pytestmark = pytest.mark.integration
OTHER_NHS = ("4010232137", "4010232145")  # valid check digits, one person's two registrations


def carehub(hub: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "carehub", *args], cwd=ROOT, env=hub.env, capture_output=True,
                          text=True, timeout=120)


def publish_in_turn(hub: Hub, *events: ce.CareEvent) -> None:
    """One at a time, each linked before the next (records of two organisations travel on two partitions)."""
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for event in events:
            pub.publish(event)
            pub.flush()
            hub.settle("ingest", "identity")


def test_link_and_separate_are_applied_once_audited_and_survive_a_restart(hub: Hub) -> None:
    hub.start("ingest")
    identity = hub.start("identity")
    hub.start("timeline")
    settings = hub.settings()
    # two pairs alike in everything but the NHS number: each second record is a review item
    margaret = [care_event(ce.EVENT_TYPE_GP_CONTACT, source_org="B86001", local_id="P-1", national_id=VALID_NHS),
                care_event(ce.EVENT_TYPE_ADMISSION, source_org="RR8", local_id="H-2", national_id=VALID_NHS_2)]
    john = [care_event(ce.EVENT_TYPE_GP_CONTACT, source_org="B86002", local_id="P-3", national_id=OTHER_NHS[0],
                       given="John", family="Ashworth", birth_date="1950-06-02", postcode="M1 1AE"),
            care_event(ce.EVENT_TYPE_ADMISSION, source_org="RR9", local_id="H-4", national_id=OTHER_NHS[1],
                       given="John", family="Ashworth", birth_date="1950-06-02", postcode="M1 1AE")]
    publish_in_turn(hub, *margaret, *john)

    listed = carehub(hub, "review", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    items = {(i["source_org"], i["local_id"]): i for i in json.loads(listed.stdout)["items"]}
    assert set(items) == {("RR8", "H-2"), ("RR9", "H-4")}, listed.stdout
    to_link, to_separate = items[("RR8", "H-2")], items[("RR9", "H-4")]
    assert to_link["candidate_records"] == [{"source_org": "B86001", "local_id": "P-1"}]
    shown = carehub(hub, "review", "show", to_link["review_id"])
    assert shown.returncode == 0 and "national_id" in shown.stdout and "disagree" in shown.stdout, shown.stdout

    linked = carehub(hub, "review", "link", to_link["review_id"], "--reviewer", "A. Reviewer",
                     "--why", "second registration at RR8, confirmed by phone")
    assert linked.returncode == 0 and "linked: the two persons are one now" in linked.stdout, linked.stderr
    separated = carehub(hub, "review", "separate", to_separate["review_id"], "--reviewer", "A. Reviewer",
                        "--why", "brothers: RR9 holds the right NHS number")
    assert separated.returncode == 0 and "kept apart" in separated.stdout, separated.stderr
    again = carehub(hub, "review", "separate", to_link["review_id"], "--reviewer", "B. Second",
                    "--why", "changed my mind")
    assert again.returncode == 1 and "refused: the item was decided before" in again.stdout, again.stdout

    survivor, absorbed = to_link["candidate_person_id"], to_link["person_id"]

    # the timeline holds one person with both records; the absorbed person is a shell naming it
    def merged() -> tl.PersonTimeline | None:
        events = [e for v in hub.values("timeline.events") for e in tl.TimelineBatch.FromString(v).events]
        joined = [e.timeline for e in events if e.linked.event.HasField("review_decision")
                  and e.linked.person_id == survivor and len(e.timeline.local_records) == 2]
        return joined[-1] if joined else None

    timeline = eventually(merged, 120, "the survivor's timeline after the review merge")
    assert {(r.org, r.local_id) for r in timeline.local_records} == {("B86001", "P-1"), ("RR8", "H-2")}
    assert set(timeline.involvement) == {"B86001", "RR8"}  # the decision is no contact by anyone

    audit = [al.AuditRecord.FromString(v) for v in hub.values("audit")]
    trail = [(a.action, a.detail) for a in audit if a.action.startswith("identity_review_")]
    assert len(trail) == 3
    assert trail[0][0] == "identity_review_link" and "A. Reviewer" in trail[0][1]
    assert "confirmed by phone" in trail[0][1]
    assert trail[2][0] == "identity_review_separate" and "already_decided by B. Second" in trail[2][1]

    # after a restart: nothing open, the decision holds, and a new decision is still refused
    hub.stop(identity)
    hub.restart(identity)
    assert desk.open_items(desk.read_items(hub.bootstrap, settings)) == []
    later = care_event(ce.EVENT_TYPE_DISCHARGE, source_org="RR8", local_id="H-2", national_id=VALID_NHS_2)
    publish_in_turn(hub, later)
    people = {e.event.event_id: e.person_id for v in hub.values("identity.linked")
              for e in idn.LinkedBatch.FromString(v).events}
    assert people[later.event_id] == survivor != absorbed
    decision = desk.decide(hub.bootstrap, settings, to_link["review_id"], "separate", "C. Third", "after restart",
                           timeout_s=120)
    assert decision.result == rvw.REVIEW_RESULT_ALREADY_DECIDED
    registry = desk.read_registry(hub.bootstrap, settings)
    assert registry[("RR9", "H-4")] != registry[("B86002", "P-3")]  # kept apart

    explained = carehub(hub, "identity", "explain", survivor)
    assert explained.returncode == 0, explained.stderr
    assert "RR8 H-2" in explained.stdout and "review decision" in explained.stdout and "A. Reviewer" in explained.stdout


def test_only_an_identity_review_team_works_the_queue_over_grpc_and_every_call_is_audited(
        hub: Hub, tmp_path: Path) -> None:
    team, surgery = "IDT01", "B86001"
    pki = make_demo_pki(tmp_path / "pki", [team, surgery])
    partners = tmp_path / "partners.toml"
    partners.write_text(f'[partners.{team}]\nname = "Identity team"\nroles = ["identity_review"]\n'
                        f'[partners.{surgery}]\nname = "Riverside Surgery"\n')
    port = free_port()
    target = f"127.0.0.1:{port}"
    hub.start("ingest")
    hub.start("identity")
    hub.start("gateway", CAREHUB_GATEWAY_HOST="127.0.0.1", CAREHUB_GATEWAY_PORT=str(port),
              CAREHUB_GATEWAY_TLS_CERT=str(pki.server.cert), CAREHUB_GATEWAY_TLS_KEY=str(pki.server.key),
              CAREHUB_GATEWAY_CLIENT_CA=str(pki.ca.cert), CAREHUB_GATEWAY_PARTNERS_FILE=str(partners))
    publish_in_turn(hub,
                    care_event(ce.EVENT_TYPE_GP_CONTACT, source_org=surgery, local_id="P-1", national_id=VALID_NHS),
                    care_event(ce.EVENT_TYPE_ADMISSION, source_org="RR8", local_id="H-2", national_id=VALID_NHS_2))
    wait_serving(target, pki.ca.cert, pki.clients[team])

    def stub(org: str) -> pb_grpc.PartnerGatewayStub:
        files = pki.clients[org]
        return pb_grpc.PartnerGatewayStub(client_channel_sync(target, pki.ca.cert, files.cert, files.key))

    with pytest.raises(grpc.RpcError) as denied:
        stub(surgery).ListIdentityReviews(pb.ListIdentityReviewsRequest(), timeout=30)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as denied:
        stub(surgery).DecideIdentityReview(pb.DecideIdentityReviewRequest(review_id="x"), timeout=30)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    desk_tool = stub(team)

    def listed() -> list[idn.ReviewItem] | None:
        items = list(desk_tool.ListIdentityReviews(pb.ListIdentityReviewsRequest(), timeout=30).items)
        return items or None

    [item] = eventually(listed, 60, "the review item, over gRPC")
    assert (item.source_org, item.local_id) == ("RR8", "H-2")
    assert desk_tool.GetIdentityReview(pb.GetIdentityReviewRequest(review_id=item.review_id), timeout=30) == item
    with pytest.raises(grpc.RpcError) as bad:
        desk_tool.DecideIdentityReview(pb.DecideIdentityReviewRequest(
            review_id=item.review_id, verdict=rvw.REVIEW_VERDICT_LINK, reviewer="", reason="why"), timeout=30)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    decided = desk_tool.DecideIdentityReview(pb.DecideIdentityReviewRequest(
        review_id=item.review_id, verdict=rvw.REVIEW_VERDICT_LINK, reviewer="D. Team",
        reason="same patient, NHS number mistyped at RR8"), timeout=60).decision
    assert decided.result == rvw.REVIEW_RESULT_LINKED and decided.reviewer_org == team
    assert decided.into_person_id == item.candidate_person_id
    assert listed() is None

    def trail() -> list[al.AuditRecord] | None:
        records = [al.AuditRecord.FromString(v) for v in hub.values("audit")]
        return records if any(r.action == "identity_review_link" for r in records) else None

    audit = eventually(trail, 60, "the identity stage's audit record")
    refusals = [r for r in audit if r.org == surgery and r.action == "refuse"]
    assert {r.detail for r in refusals} == {"list_identity_reviews: no identity_review role",
                                            "decide_identity_review: no identity_review role"}
    [asked] = [r for r in audit if r.action == "decide_identity_review"]
    assert asked.org == team and "link by D. Team" in asked.detail and "mistyped" in asked.detail
    [applied] = [r for r in audit if r.action == "identity_review_link"]
    assert applied.org == team and "linked by D. Team" in applied.detail
