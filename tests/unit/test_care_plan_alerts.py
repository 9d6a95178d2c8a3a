"""Alerts to the owners of a person's care plans: who hears of an emergency admission, and what it says."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from carehub.domain.alert_rules import PACKAGED, load_rules
from carehub.domain.loader import DefinitionError
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import care_event_pb2 as ce
from tests.unit.test_alert_rules import GP, HOSPITAL, OCT, SOCIAL, Person, by_org

RULE = "care_plan_admission"


def with_plan(person_id: str = "person-1", *, when: datetime = OCT - timedelta(days=20), org: str = SOCIAL,
              **detail: object) -> Person:
    """A man known to his practice and social care, with a care plan ``org`` sent (owner: ``detail``)."""
    p = Person(person_id)
    p.known()
    plan = p.event(ce.EVENT_TYPE_CARE_PLAN, when, org=org, spell="",
                   sector=ce.SECTOR_PRIMARY_CARE if org == GP else ce.SECTOR_SOCIAL_CARE)
    plan.event.care_plan.CopyFrom(ce.CarePlanDetail(**detail))  # type: ignore[arg-type]
    assert p.send(plan) == []
    return p


def plan_alerts(alerts: list[al.Alert]) -> list[al.Alert]:
    return [a for a in alerts if a.rule == RULE]


def test_the_plan_owner_hears_of_an_emergency_admission_with_the_plans_contact_role() -> None:
    p = with_plan(review_due="2027-01-10", segment="frail", contact_role="social worker")
    alerts = p.admit(OCT, "I21.9")  # a heart attack: no ACSC, so the plan rule alone speaks
    [alert] = alerts
    assert (alert.rule, alert.recipient_org, alert.recipient_role, alert.local_id) == (
        RULE, SOCIAL, "care_plan_owner", "C-7730")
    assert alert.kind == al.ALERT_KIND_NEW and alert.severity == al.SEVERITY_WARNING
    assert "Emergency admission at RR8" in alert.detail and "contact: social worker" in alert.detail
    assert "review due 2027-01-10" in alert.detail and "segment frail" in alert.detail
    assert "H-99812" not in alert.detail and "person-1" not in alert.SerializeToString().decode("latin-1")
    assert p.admit(OCT, "I21.9") == []  # the same situation again raises nothing new


def test_each_owner_hears_once_under_its_own_record_and_other_roles_still_hear_as_before() -> None:
    p = with_plan(contact_role="care coordinator")
    gp_plan = p.event(ce.EVENT_TYPE_CARE_PLAN, OCT - timedelta(days=5), org=GP, spell="",
                      sector=ce.SECTOR_PRIMARY_CARE)
    p.send(gp_plan)  # the practice's own plan, no detail: it owns it, no contact role named
    got = by_org(p.admit(OCT, "N10"))  # pyelonephritis: an ACSC as well
    assert {(a.rule, a.recipient_role) for a in got[SOCIAL]} == {(RULE, "care_plan_owner"),
                                                                 ("acsc_emergency_admission", "social_care")}
    [gp] = [a for a in got[GP] if a.rule == RULE]
    assert gp.local_id == "P-4471" and "no contact role named in the plan" in gp.detail
    assert "contact: care coordinator" in next(a.detail for a in got[SOCIAL] if a.rule == RULE)
    assert "your care plan" not in next(a.detail for a in got[SOCIAL] if a.rule != RULE)


def test_an_owner_named_by_another_sender_hears_if_it_knows_the_person() -> None:
    p = with_plan(org=GP, owner_org=SOCIAL, contact_role="social worker")
    [alert] = plan_alerts(p.admit(OCT, "I21.9"))
    assert (alert.recipient_org, alert.local_id) == (SOCIAL, "C-7730")
    q = with_plan("q", org=GP, owner_org="LA999")  # an owner with no record of its own for him
    assert plan_alerts(q.admit(OCT, "I21.9")) == []


def test_no_alert_for_an_elective_admission_a_closed_plan_or_one_made_after_the_admission() -> None:
    elective = with_plan("e")
    assert elective.send(elective.event(ce.EVENT_TYPE_ADMISSION, OCT, admission_method=ce.ADMISSION_METHOD_ELECTIVE,
                                        diagnoses=[ce.Diagnosis(code="I21.9", position=1)])) == []
    closed = with_plan("c")
    closing = closed.event(ce.EVENT_TYPE_CARE_PLAN, OCT - timedelta(days=2), org=SOCIAL, spell="",
                           sector=ce.SECTOR_SOCIAL_CARE)
    closing.event.care_plan.closed = True
    closed.send(closing)
    assert plan_alerts(closed.admit(OCT, "I21.9")) == []
    later = with_plan("l", when=OCT + timedelta(days=3))  # the admission arrives after a plan made later
    assert plan_alerts(later.admit(OCT, "I21.9")) == []


def test_a_direct_care_opt_out_keeps_the_alert_from_the_plan_owner() -> None:
    p = with_plan(contact_role="social worker")
    opt_out = p.event(ce.EVENT_TYPE_CONSENT_CHANGE, OCT - timedelta(days=1), org=GP, sector=ce.SECTOR_PRIMARY_CARE)
    opt_out.event.consent.direct_care_opt_out = True
    p.send(opt_out)
    assert p.admit(OCT, "I21.9") == []  # only the hospital that sent it may hear, and it owns no plan
    own = with_plan("h", org=HOSPITAL)  # a plan the admitting hospital owns itself
    opt_out = own.event(ce.EVENT_TYPE_CONSENT_CHANGE, OCT - timedelta(days=1), org=GP, sector=ce.SECTOR_PRIMARY_CARE)
    opt_out.event.consent.direct_care_opt_out = True
    own.send(opt_out)
    assert [(a.rule, a.recipient_org) for a in own.admit(OCT, "I21.9")] == [(RULE, HOSPITAL)]


def test_a_cancelled_admission_retracts_the_plan_owners_alert() -> None:
    p = with_plan(contact_role="social worker")
    [first] = p.admit(OCT, "I21.9")
    cancel = p.event(ce.EVENT_TYPE_CANCELLATION, OCT + timedelta(hours=2), spell="")
    cancel.event.target_event_id = p.feed.timeline.spells[0].admission_event_id
    [gone] = p.send(cancel)
    assert (gone.kind, gone.refers_to, gone.recipient_org) == (al.ALERT_KIND_RETRACTION, first.alert_id, SOCIAL)


def broken_rules(tmp_path: Path, name: str, old: str, new: str) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(PACKAGED, rules)
    path = rules / name
    path.write_text(path.read_text().replace(old, new))
    return rules


def test_the_packaged_rule_loads_and_a_wrong_recipient_is_refused_naming_file_and_entry(tmp_path: Path) -> None:
    (rule,) = [r for r in load_rules().rules if r.id == RULE]
    assert rule.recipients == ("care_plan_owner",) and rule.on == "admission"
    typo = broken_rules(tmp_path / "a", "care_plan_admission.toml", '["care_plan_owner"]', '["care_plan_owners"]')
    with pytest.raises(DefinitionError, match=r"care_plan_admission\.toml: recipients\[0\] must be one of .*"
                                              r"'care_plan_owner'"):
        load_rules(typo)
    signal = broken_rules(tmp_path / "b", "provider_outlier.toml", '["unit"]', '["unit", "care_plan_owner"]')
    with pytest.raises(DefinitionError, match=r"provider_outlier\.toml: recipients name \['care_plan_owner'\], "
                                              r"a person's organisations"):
        load_rules(signal)


# --- an overdue review: the owner hears once its review day has passed (event clock) ----------

REVIEW = "care_plan_review_overdue"


def day_ns(text: str) -> int:
    return int(datetime.fromisoformat(text + "T00:00:00+00:00").timestamp()) * 10**9


def review_alerts(p: Person, clock: str) -> list[al.Alert]:
    return [a for a in p.engine.expire(p.state, p.person_id, day_ns(clock), 0) if a.rule == REVIEW]


def test_the_owner_hears_once_when_the_review_day_has_passed_by_the_event_clock() -> None:
    p = with_plan(review_due="2026-09-20", segment="frail", contact_role="social worker")
    assert p.engine.next_due(p.state) == day_ns("2026-09-21")  # after the whole review day
    assert review_alerts(p, "2026-09-20") == []  # the review day itself: not yet overdue
    [alert] = review_alerts(p, "2026-09-21")
    assert (alert.recipient_org, alert.recipient_role, alert.local_id) == (SOCIAL, "care_plan_owner", "C-7730")
    assert alert.kind == al.ALERT_KIND_NEW and alert.severity == al.SEVERITY_INFO
    assert "due for review on 2026-09-20" in alert.detail and "contact: social worker" in alert.detail
    assert "segment frail" in alert.detail and "person-1" not in alert.SerializeToString().decode("latin-1")
    assert alert.event_time.ToNanoseconds() == day_ns("2026-09-21")
    assert review_alerts(p, "2026-12-01") == [] and p.engine.next_due(p.state) is None  # once
    p.known()  # later events still show the same overdue plan: it is not awaited again
    assert review_alerts(p, "2026-12-01") == [] and p.engine.next_due(p.state) is None


def test_a_newer_review_date_replaces_the_one_awaited_and_is_alerted_in_its_turn() -> None:
    p = with_plan(review_due="2026-09-20")
    reviewed = p.event(ce.EVENT_TYPE_CARE_PLAN, OCT - timedelta(days=12), org=SOCIAL, spell="",
                       sector=ce.SECTOR_SOCIAL_CARE)
    reviewed.event.care_plan.review_due = "2027-03-01"  # reviewed before the day: a new date
    p.send(reviewed)
    assert review_alerts(p, "2026-12-01") == []
    [alert] = review_alerts(p, "2027-03-02")
    assert "due for review on 2027-03-01" in alert.detail


def test_no_review_is_awaited_for_a_closed_plan_a_dead_person_or_no_known_date() -> None:
    closed = with_plan("c", review_due="2026-09-20")
    closing = closed.event(ce.EVENT_TYPE_CARE_PLAN, OCT - timedelta(days=12), org=SOCIAL, spell="",
                           sector=ce.SECTOR_SOCIAL_CARE)
    closing.event.care_plan.closed = True
    closed.send(closing)
    assert closed.engine.next_due(closed.state) is None and review_alerts(closed, "2026-12-01") == []
    died = with_plan("d", review_due="2026-09-20")
    died.send(died.event(ce.EVENT_TYPE_DEATH, OCT - timedelta(days=15), org=GP, sector=ce.SECTOR_PRIMARY_CARE))
    assert review_alerts(died, "2026-12-01") == []
    undated = with_plan("u", contact_role="social worker")
    assert undated.engine.next_due(undated.state) is None


def test_with_a_direct_care_opt_out_only_a_plan_its_owner_sent_is_followed() -> None:
    told = with_plan("t", org=GP, owner_org=SOCIAL, review_due="2026-09-20")  # the practice says social care owns it
    own = with_plan("o", review_due="2026-09-20")
    assert told.engine.next_due(told.state) == own.engine.next_due(own.state) == day_ns("2026-09-21")  # before
    for p in (told, own):
        opt_out = p.event(ce.EVENT_TYPE_CONSENT_CHANGE, OCT - timedelta(days=10), org=GP,
                          sector=ce.SECTOR_PRIMARY_CARE)
        opt_out.event.consent.direct_care_opt_out = True
        p.send(opt_out)
    assert review_alerts(told, "2026-12-01") == []
    assert [a.recipient_org for a in review_alerts(own, "2026-12-01")] == [SOCIAL]


def test_an_owner_without_its_own_record_for_the_person_is_not_told() -> None:
    p = with_plan(org=GP, owner_org="LA999", review_due="2026-09-20")
    assert review_alerts(p, "2026-12-01") == []
