"""The person timeline through the real broker: ingest, identity and timeline workers as processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carehub.sdk import Publisher
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import timeline_pb2 as tl
from tests.factories import VALID_NHS, care_event
from tests.integration.conftest import Hub, assert_not_in_clear, hub_topics

pytestmark = pytest.mark.integration

OCT = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)


def enriched(values: list[bytes]) -> dict[str, tl.TimelineEvent]:
    return {e.linked.event.event_id: e for v in values for e in tl.TimelineBatch.FromString(v).events}


def test_spells_consent_and_readmission_clock_across_organisations(hub: Hub) -> None:
    hub.start("ingest")
    hub.start("identity")
    timeline = hub.start("timeline")

    first = care_event(ce.EVENT_TYPE_ADMISSION, when=OCT, source_org="RR8", local_id="H-1")
    first.clinical.spell_id = "S-A"
    second = care_event(ce.EVENT_TYPE_ADMISSION, when=OCT + timedelta(days=19), source_org="RAE", local_id="R-5")
    second.clinical.spell_id = "S-B"
    late_discharge = care_event(ce.EVENT_TYPE_DISCHARGE, when=OCT + timedelta(days=4), source_org="RR8",
                                local_id="H-1")
    late_discharge.clinical.spell_id = "S-A"
    late_discharge.clinical.discharge_destination = "19"
    opt_out = care_event(ce.EVENT_TYPE_CONSENT_CHANGE, when=OCT + timedelta(days=21), source_org="B86001",
                         local_id="P-4471")
    opt_out.consent.planning_opt_out = True
    gp_contact = care_event(ce.EVENT_TYPE_GP_CONTACT, when=OCT + timedelta(days=20), source_org="B86001",
                            local_id="P-4471")
    readmission = care_event(ce.EVENT_TYPE_ADMISSION, when=OCT + timedelta(days=25), source_org="RR8",
                             local_id="H-1")
    readmission.clinical.spell_id = "S-C"
    for event in (opt_out, gp_contact):
        event.source_sector = ce.SECTOR_PRIMARY_CARE
        event.ClearField("clinical")

    final_discharge = care_event(ce.EVENT_TYPE_DISCHARGE, when=OCT + timedelta(days=27), source_org="RR8",
                                 local_id="H-1")
    final_discharge.clinical.spell_id = "S-C"

    got: dict[str, tl.TimelineEvent] = {}
    values: list[bytes] = []
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        # one at a time, so that each arrives after the one before (provider partitions differ)
        for event in (first, second, late_discharge, opt_out, gp_contact, readmission, final_discharge):
            if event is final_discharge:  # a new timeline worker must find the person's state in the table
                hub.stop(timeline)
                hub.start("timeline")
            pub.publish(event)
            pub.flush()
            values = hub.wait_values("timeline.events", lambda vs, e=event: e.event_id in enriched(vs),  # type: ignore[misc]
                                     timeout_s=120)
            got = enriched(values)

    assert len({e.linked.person_id for e in got.values()}) == 1  # one person across three organisations
    view = got[first.event_id].view
    assert (view.spell.org, view.spell.spell_id, view.spell.status) == ("RR8", "S-A", tl.SPELL_STATUS_OPEN)
    assert view.days_since_previous_discharge == -1 and view.age_years == 85
    assert got[second.event_id].view.days_since_previous_discharge == -1  # S-A still open when it came

    view = got[late_discharge.event_id].view
    assert (view.spell.org, view.spell.spell_id, view.spell.status) == ("RR8", "S-A", tl.SPELL_STATUS_CLOSED)
    assert view.spell.discharged_at.ToDatetime(tzinfo=UTC) == OCT + timedelta(days=4)
    assert view.is_late

    assert got[opt_out.event_id].view.planning_opt_out
    assert not got[late_discharge.event_id].view.planning_opt_out
    view = got[gp_contact.event_id].view
    assert view.planning_opt_out and not view.direct_care_opt_out and view.is_late  # earlier time, later link

    view = got[readmission.event_id].view
    assert (view.spell.spell_id, view.spell.status) == ("S-C", tl.SPELL_STATUS_OPEN)
    assert view.days_since_previous_discharge == 21  # discharged 5 Oct, admitted 26 Oct
    assert view.planning_opt_out and view.registered_practice == "B86001"

    view = got[final_discharge.event_id].view
    assert (view.spell.spell_id, view.spell.status) == ("S-C", tl.SPELL_STATUS_CLOSED)
    assert view.spell.admitted_at.ToDatetime(tzinfo=UTC) == OCT + timedelta(days=25)
    assert view.planning_opt_out and not view.is_late
    hub.settle("ingest", "identity", "timeline")
    values = hub.values("timeline.events")
    sent = [e.linked.event.event_id for v in values for e in tl.TimelineBatch.FromString(v).events]
    assert len(sent) == len(set(sent)) == 7  # the restart repeated nothing

    # nothing in clear on the timeline topic or the timeline table's changelog
    topics = hub_topics(hub, lambda t: "timeline" in t)
    assert any("changelog" in t for t in topics), topics
    raw = [VALID_NHS.encode(), b"Whitfield", b"WHITFIELD", b"Margaret", b"LS1 4AP", b"1941-03-17", b"Pinkerton"]
    assert assert_not_in_clear(hub.bootstrap, topics, raw) >= 7


def test_timeline_follows_a_merge_and_an_unmerge(hub: Hub) -> None:
    hub.start("ingest")
    hub.start("identity")
    hub.start("timeline")
    peggy = {"national_id": "", "given": "Peggy", "birth_date": "1941-07-03", "postcode": "LS6 2AA"}
    survivor_ed = care_event(ce.EVENT_TYPE_ED_ATTENDANCE, when=OCT - timedelta(days=60), source_org="RR8",
                             local_id="H-1", national_id="")
    # the same patient registered again at the same hospital with other details: a second person
    dup_ed = care_event(ce.EVENT_TYPE_ED_ATTENDANCE, when=OCT - timedelta(days=30), source_org="RR8",
                        local_id="H-2", **peggy)
    dup_admission = care_event(ce.EVENT_TYPE_ADMISSION, when=OCT, source_org="RR8", local_id="H-2",
                               **peggy)
    dup_discharge = care_event(ce.EVENT_TYPE_DISCHARGE, when=OCT + timedelta(days=4), source_org="RR8",
                               local_id="H-2", **peggy)
    for event in (dup_admission, dup_discharge):
        event.clinical.spell_id = "S-A"
    survivor_ed.clinical.spell_id, dup_ed.clinical.spell_id = "A-1", "A-2"  # ED encounters of their own
    dup_discharge.clinical.discharge_destination = "19"
    a40 = care_event(ce.EVENT_TYPE_IDENTITY_MERGE, when=OCT + timedelta(days=5), source_org="RR8",
                     local_id="H-1", national_id="")
    a40.merge.prior_local_id = "H-2"
    admission = care_event(ce.EVENT_TYPE_ADMISSION, when=OCT + timedelta(days=14), source_org="RR8",
                           local_id="H-1", national_id="")
    admission.clinical.spell_id = "S-B"
    ed = care_event(ce.EVENT_TYPE_ED_ATTENDANCE, when=OCT + timedelta(days=15), source_org="RR8",
                    local_id="H-1", national_id="")
    ed.clinical.spell_id = "A-3"
    undo = care_event(ce.EVENT_TYPE_IDENTITY_MERGE, when=OCT + timedelta(days=16), source_org="RR8",
                      local_id="H-1", national_id="")
    undo.merge.prior_local_id, undo.merge.unmerge = "H-2", True
    readmission = care_event(ce.EVENT_TYPE_ADMISSION, when=OCT + timedelta(days=20), source_org="RR8",
                             local_id="H-1", national_id="")
    readmission.clinical.spell_id = "S-C"
    dup_readmission = care_event(ce.EVENT_TYPE_ADMISSION, when=OCT + timedelta(days=21), source_org="RR8",
                                 local_id="H-2", **peggy)
    dup_readmission.clinical.spell_id = "S-D"

    def copies(values: list[bytes]) -> dict[str, list[tl.TimelineEvent]]:
        out: dict[str, list[tl.TimelineEvent]] = {}
        for v in values:
            for e in tl.TimelineBatch.FromString(v).events:
                out.setdefault(e.linked.event.event_id, []).append(e)
        return out

    events = (survivor_ed, dup_ed, dup_admission, dup_discharge, a40, admission, ed, undo, readmission,
              dup_readmission)
    got: dict[str, list[tl.TimelineEvent]] = {}
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for event in events:  # one at a time; a merge's two views (one per person) before the next
            want = 2 if event.event_type == ce.EVENT_TYPE_IDENTITY_MERGE else 1
            pub.publish(event)
            pub.flush()
            values = hub.wait_values(
                "timeline.events", lambda vs, e=event, n=want: len(copies(vs).get(e.event_id, ())) >= n,  # type: ignore[misc]
                timeout_s=60)
            got = copies(values)

    survivor, absorbed = got[survivor_ed.event_id][0].linked.person_id, got[dup_ed.event_id][0].linked.person_id
    assert survivor != absorbed and got[dup_discharge.event_id][0].linked.person_id == absorbed
    assert sorted(e.linked.person_id for e in got[a40.event_id]) == sorted([survivor, absorbed])

    view = got[admission.event_id][0].view
    assert got[admission.event_id][0].linked.person_id == survivor
    assert view.days_since_previous_discharge == 10  # from H-2's discharge on 5 Oct, admitted 15 Oct
    assert got[ed.event_id][0].view.prior_ed_attendances_365d == 2  # one under each hospital record

    assert sorted(e.linked.person_id for e in got[undo.event_id]) == sorted([survivor, absorbed])
    view = got[readmission.event_id][0].view
    assert got[readmission.event_id][0].linked.person_id == survivor
    assert view.days_since_previous_discharge == -1  # the survivor alone: S-B still open, S-A gone back
    assert got[dup_readmission.event_id][0].linked.person_id == absorbed
    assert got[dup_readmission.event_id][0].view.days_since_previous_discharge == 17  # S-A is H-2's again
    hub.settle("ingest", "identity", "timeline")
    got = copies(hub.values("timeline.events"))
    assert all(len(v) == (2 if k in (a40.event_id, undo.event_id) else 1) for k, v in got.items())
