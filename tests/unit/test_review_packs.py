"""Review packs from hand-built timelines: which admissions get one, what its sections say, and how
coding, cancellation, opt-outs, sampling and merges change it. No Kafka."""

from __future__ import annotations

import itertools

from carehub.domain.review.history import ABSORBED, REBUILT
from carehub.domain.review.packs import changes, draw, pack_id, packs_for, selection
from carehub.domain.timeline import receive, split, step
from carehub.settings import load_settings
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import review_pb2 as rv
from carehub.v1 import timeline_pb2 as tl
from services.reviews.app import Reviews
from tests.unit.review_people import (
    CARE_HOME,
    COMMUNITY,
    GP,
    GP_2,
    HOSPITAL,
    OOH,
    SOCIAL,
    Person,
    at,
    rules,
)

NOW = 1_800_000_000 * 10**9
RULES = rules()


def margaret() -> Person:
    """Registered at B86001; GP contacts, an ED visit, a discharge not followed up, social care, a care-home
    move and a care plan overdue for review in the 90 days before an emergency admission for heart failure (day 100)."""
    p = Person()
    p.register(0)
    p.send(ce.EVENT_TYPE_GP_CONTACT, 5, GP)                       # before the window: not in the pack
    p.send(ce.EVENT_TYPE_GP_CONTACT, 20, GP)
    p.send(ce.EVENT_TYPE_GP_CONTACT, 22, COMMUNITY)
    p.send(ce.EVENT_TYPE_REFERRAL, 25, GP)
    p.send(ce.EVENT_TYPE_ED_ATTENDANCE, 30, HOSPITAL, local_id="H-1")
    p.send(ce.EVENT_TYPE_ADMISSION, 40, HOSPITAL, local_id="H-1", spell="S-0", diagnoses=("S72.0",),
           method=ce.ADMISSION_METHOD_EMERGENCY)
    p.send(ce.EVENT_TYPE_DISCHARGE, 44, HOSPITAL, local_id="H-1", spell="S-0", destination="19")
    p.send(ce.EVENT_TYPE_GP_CONTACT, 60, GP)                      # 16 days after: too late to follow up
    p.send(ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, 50, SOCIAL)
    plan = p.linked(ce.EVENT_TYPE_CARE_PLAN, 55, SOCIAL)
    plan.event.care_plan.CopyFrom(ce.CarePlanDetail(owner_org=SOCIAL, review_due="2026-08-01", segment="frail",
                                                    contact_role="social worker"))
    from carehub.domain.timeline import apply
    p.take(apply(p.state, plan))
    p.send(ce.EVENT_TYPE_CARE_HOME_ADMISSION, 70, CARE_HOME)
    p.send(ce.EVENT_TYPE_GP_CONTACT, 80, OOH)
    p.send(ce.EVENT_TYPE_ADMISSION, 100, HOSPITAL, local_id="H-1", spell="S-1", diagnoses=("I50.9",), source="54")
    return p


def only(p: Person) -> rv.ReviewPack:
    [pack] = packs_for(RULES, p.review, NOW).values()
    return pack


def test_an_emergency_acsc_admission_gets_a_pack_with_the_90_days_before_it() -> None:
    pack = only(margaret())
    assert pack.pack_id == pack_id(HOSPITAL, "S-1")
    assert (pack.practice, pack.locality, pack.local_id, pack.month) == (GP, "L01", "P-0001", "2026-09")
    assert pack.window_days == 90 and pack.window_start.ToDatetime().date() == at(10).date()
    assert pack.admission.org == HOSPITAL and pack.admission.primary_diagnosis == "I50.9"
    assert pack.admission.provisional and pack.admission.condition == "congestive_heart_failure"
    assert pack.admission.days_since_previous_discharge == 56
    # contacts by sector: the practice (two contacts and a referral), community, social care (2), out of hours
    sectors = {s.sector: (s.contacts, s.organisations) for s in pack.contacts_by_sector}
    assert sectors == {ce.SECTOR_PRIMARY_CARE: (3, 1), ce.SECTOR_COMMUNITY: (1, 1), ce.SECTOR_SOCIAL_CARE: (2, 1),
                       ce.SECTOR_AMBULANCE: (1, 1)}
    assert pack.contacts[0].at.ToDatetime().date() == at(20).date()  # day 5 is outside
    assert [(e.org, e.at.ToDatetime().date()) for e in pack.ed_attendances] == [(HOSPITAL, at(30).date())]
    [discharge] = pack.discharges
    assert discharge.follow_up == rv.FOLLOW_UP_MISSED and discharge.within_days == 7 and pack.missed_follow_ups == 1
    assert [s.what for s in pack.social_care] == ["social care assessment", "care plan"]
    assert [m.what for m in pack.care_home_moves] == ["moved into a care home", "admitted from a care home (source 54)"]
    [plan] = pack.care_plans
    assert pack.care_plan_known and plan.owner_org == SOCIAL and plan.overdue and plan.contact_role == "social worker"
    counted = {c.indicator: c for c in pack.counts_in}
    assert {"acsc_chronic", "acsc_all", "care_home_admissions"} <= set(counted)
    assert "acsc_acute" not in counted and counted["acsc_chronic"].provisional
    assert pack.selection.startswith("every emergency admission") and pack.taxonomy_version == "carehub-review v1"


def test_a_discharge_followed_up_in_time_or_cut_short_by_the_admission_is_not_missed() -> None:
    p = Person()
    p.register(0)
    p.send(ce.EVENT_TYPE_ADMISSION, 10, HOSPITAL, spell="S-0", diagnoses=("S72.0",))
    p.send(ce.EVENT_TYPE_DISCHARGE, 12, HOSPITAL, spell="S-0", destination="19")
    p.send(ce.EVENT_TYPE_GP_CONTACT, 15, COMMUNITY)
    p.send(ce.EVENT_TYPE_ADMISSION, 30, HOSPITAL, spell="S-1", diagnoses=("J44.1",))
    p.send(ce.EVENT_TYPE_DISCHARGE, 33, HOSPITAL, spell="S-1", destination="19")
    p.send(ce.EVENT_TYPE_ADMISSION, 36, HOSPITAL, spell="S-2", diagnoses=("J44.1",))
    packs = packs_for(RULES, p.review, NOW)
    last = packs[pack_id(HOSPITAL, "S-2")]
    assert [d.follow_up for d in last.discharges] == [rv.FOLLOW_UP_DONE, rv.FOLLOW_UP_INTERRUPTED]
    assert last.discharges[0].followed_up_by == COMMUNITY and last.missed_follow_ups == 0
    assert {c.indicator for c in last.counts_in} >= {"readmission_30d", "readmission_28d", "acsc_chronic"}
    assert pack_id(HOSPITAL, "S-0") not in packs  # a fracture is not an ACSC


def test_coding_revises_or_withdraws_the_pack_and_a_cancellation_withdraws_it() -> None:
    p = margaret()
    first = changes(p.review, packs_for(RULES, p.review, NOW))
    assert [(pid, pack is not None) for pid, pack in first] == [(pack_id(HOSPITAL, "S-1"), True)]
    assert changes(p.review, packs_for(RULES, p.review, NOW + 10**9)) == []  # recomputed, not changed
    p.send(ce.EVENT_TYPE_DIAGNOSIS_CODED, 104, HOSPITAL, local_id="H-1", spell="S-1", diagnoses=("I50.0",))
    [(_, confirmed)] = changes(p.review, packs_for(RULES, p.review, NOW))
    assert confirmed is not None and not confirmed.admission.provisional
    p.send(ce.EVENT_TYPE_DIAGNOSIS_CODED, 105, HOSPITAL, local_id="H-1", spell="S-1", diagnoses=("S72.0",))
    assert changes(p.review, packs_for(RULES, p.review, NOW)) == [(pack_id(HOSPITAL, "S-1"), None)]
    p.send(ce.EVENT_TYPE_DIAGNOSIS_CODED, 106, HOSPITAL, local_id="H-1", spell="S-1", diagnoses=("I50.9",))
    assert [pack is not None for _, pack in changes(p.review, packs_for(RULES, p.review, NOW))] == [True]
    admission = next(i for i in p.state.timeline.spells if i.spell_id == "S-1").admission_event_id
    p.send(ce.EVENT_TYPE_CANCELLATION, 107, HOSPITAL, local_id="H-1", target=admission)
    assert changes(p.review, packs_for(RULES, p.review, NOW)) == [(pack_id(HOSPITAL, "S-1"), None)]
    assert p.review.published == {} or pack_id(HOSPITAL, "S-1") not in p.review.published


def test_a_cancelled_contact_leaves_the_pack_and_a_late_one_joins_it() -> None:
    p = margaret()
    before = only(p)
    contact = p.send(ce.EVENT_TYPE_GP_CONTACT, 45, GP)  # late, and a follow-up of the discharge on day 44
    after = only(p)
    assert after.discharges[0].follow_up == rv.FOLLOW_UP_DONE and len(after.contacts) == len(before.contacts) + 1
    p.send(ce.EVENT_TYPE_CANCELLATION, 101, GP, target=contact)
    assert only(p).discharges[0].follow_up == rv.FOLLOW_UP_MISSED and len(only(p).contacts) == len(before.contacts)


def test_no_pack_without_the_practices_own_record_or_with_a_direct_care_opt_out() -> None:
    p = Person()
    p.send(ce.EVENT_TYPE_ADMISSION, 10, HOSPITAL, spell="S-1", diagnoses=("J44.1",), practice=GP)
    assert p.review.registered_practice == GP and packs_for(RULES, p.review, NOW) == {}  # known only from RR8
    p.register(11)
    assert len(packs_for(RULES, p.review, NOW)) == 1
    opt_out = p.linked(ce.EVENT_TYPE_CONSENT_CHANGE, 12, GP, local_id="P-0001")
    opt_out.event.consent.direct_care_opt_out = True
    from carehub.domain.timeline import apply
    p.take(apply(p.state, opt_out))
    assert packs_for(RULES, p.review, NOW) == {}


def test_an_elective_admission_or_one_at_another_practice_is_not_the_first_practices() -> None:
    p = Person()
    p.register(0)
    p.send(ce.EVENT_TYPE_ADMISSION, 10, HOSPITAL, spell="S-1", diagnoses=("J44.1",),
           method=ce.ADMISSION_METHOD_ELECTIVE)
    assert packs_for(RULES, p.review, NOW) == {}
    p.send(ce.EVENT_TYPE_ADMISSION, 20, HOSPITAL, spell="S-2", diagnoses=("J44.1",))
    p.register(21, GP_2, "Q-77")
    [pack] = packs_for(RULES, p.review, NOW).values()
    assert (pack.practice, pack.local_id) == (GP_2, "Q-77")  # the practice registered with now, its own id


def test_the_sample_is_drawn_from_the_pack_id_alone_and_is_about_its_share() -> None:
    half = rules(0.5)
    ids = [pack_id(HOSPITAL, f"S-{i}") for i in range(2000)]
    chosen = [pid for pid in ids if selection(half, pid) is not None]
    assert 900 < len(chosen) < 1100
    assert chosen == [pid for pid in ids if draw(pid) < 0.5]  # the same on every replay
    assert all("sampled: 50%" in (selection(half, pid) or "") for pid in chosen)
    assert all(selection(RULES, pid) is not None for pid in ids)


def merge_copies(survivor: Person, absorbed: Person, day: float, unmerge: bool = False,
                 ) -> tuple[idn.LinkedEvent, idn.LinkedEvent]:
    into = survivor.linked(ce.EVENT_TYPE_IDENTITY_MERGE, day, HOSPITAL)
    into.merge.CopyFrom(idn.PersonMerge(from_person_id=absorbed.person_id, into_person_id=survivor.person_id,
                                        unmerge=unmerge, moved_records=[idn.LocalRecord(source_org=HOSPITAL,
                                                                                        local_id="H-2")]))
    other = idn.LinkedEvent()
    other.CopyFrom(into)
    other.person_id = absorbed.person_id
    return into, other


def test_a_merge_moves_the_pack_under_its_id_to_the_survivor_and_an_unmerge_gives_it_back() -> None:
    sequence = itertools.count(1)
    survivor, absorbed = Person("p1", sequence), Person("p2", sequence)
    survivor.register(0)
    absorbed.send(ce.EVENT_TYPE_ED_ATTENDANCE, 50, HOSPITAL, local_id="H-2")
    absorbed.send(ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, 52, SOCIAL)
    absorbed.send(ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, 53, SOCIAL)
    absorbed.send(ce.EVENT_TYPE_ADMISSION, 60, HOSPITAL, local_id="H-2", spell="S-9", diagnoses=("J44.1",))
    assert packs_for(RULES, absorbed.review, NOW) == {}  # no practice record of its own
    _, other = merge_copies(survivor, absorbed, 70)
    gave = step(absorbed.state, other)
    assert gave.event is not None and gave.handover is not None
    absorbed.take(gave.event)
    assert absorbed.outcomes[-1] == ABSORBED and changes(absorbed.review, {}) == []  # nothing withdrawn
    got = receive(survivor.state, gave.handover)
    survivor.take(got.event)
    assert survivor.outcomes[-1] == REBUILT
    [pack] = packs_for(RULES, survivor.review, NOW).values()
    assert pack.pack_id == pack_id(HOSPITAL, "S-9") and pack.local_id == "P-0001"
    assert len(pack.ed_attendances) == 1
    # of the absorbed person's two social-care events, the timeline carries the last one only
    assert [s.at.ToDatetime().date() for s in pack.social_care] == [at(53).date()]
    changes(survivor.review, packs_for(RULES, survivor.review, NOW))
    undo, _ = merge_copies(survivor, absorbed, 80, unmerge=True)
    back = split(survivor.state, undo)
    assert back.event is not None
    survivor.take(back.event)
    assert packs_for(RULES, survivor.review, NOW) == {}
    assert changes(survivor.review, {}) == []  # the spell went back with its person: not withdrawn here


def test_the_stage_publishes_a_pack_once_and_a_replayed_batch_changes_nothing() -> None:
    p = margaret()
    persons: dict[str, bytes] = {}
    stage = Reviews(load_settings(partitions=2), persons, None, RULES)
    batch = [(0, tl.TimelineBatch(events=p.events).SerializeToString())]
    sends, writes = stage.apply_records(batch, NOW)
    assert [(pid, pack is not None) for pid, pack in sends] == [(pack_id(HOSPITAL, "S-1"), True)]
    sent = sends[0][1]
    assert sent is not None and sent.local_id == "P-0001" and p.person_id.encode() not in sent.SerializeToString()
    for person_id, person in writes[0].items():
        persons[person_id] = person.SerializeToString()
    again, _ = stage.apply_records(batch, NOW + 10**9)  # a batch taken again after a restart
    assert again == []
