"""Alert rules over a person's timeline events, without Kafka: who hears what, and when."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carehub.domain.alert_evaluation import AlertEngine
from carehub.domain.alert_rules import PACKAGED, load_rules
from carehub.domain.timeline import apply
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import timeline_pb2 as tl
from tests.unit.test_timeline_state import Feed

OCT = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
NOW = 1_800_000_000 * 10**9
GP, SOCIAL, HOSPITAL, COMMUNITY = "B86001", "SC001", "RR8", "CN001"


class Person:
    """A frail man known to his practice and to social care, events applied in link order."""

    def __init__(self, person_id: str = "person-1") -> None:
        self.person_id = person_id
        self.feed = Feed(person_id=person_id)
        self.state = al.AlertState()
        self.engine = AlertEngine(load_rules(), involved_within_days=90)

    def event(self, kind: ce.EventType.ValueType, when: datetime, *, org: str = HOSPITAL,
              sector: ce.Sector.ValueType = ce.SECTOR_ACUTE, local_id: str = "", spell: str = "S-1",
              **clinical: object) -> idn.LinkedEvent:
        linked = self.feed.linked(kind, when, org=org, spell=spell, **clinical)  # type: ignore[arg-type]
        linked.event.source_sector = sector
        linked.event.person.local_id = local_id or {GP: "P-4471", SOCIAL: "C-7730", HOSPITAL: "H-99812",
                                                    COMMUNITY: "N-1"}.get(org, "X-1")
        linked.event.trace_context["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        if org == GP:
            linked.event.registered_practice, linked.event.locality = GP, "L01"
        return linked

    def send(self, linked: idn.LinkedEvent) -> list[al.Alert]:
        out = apply(self.feed.state, linked)
        assert out is not None
        return self.engine.on_event(self.state, self.person_id, out, NOW)

    def known(self) -> None:
        self.send(self.event(ce.EVENT_TYPE_REGISTRATION, OCT - timedelta(days=300), org=GP,
                             sector=ce.SECTOR_PRIMARY_CARE))
        self.send(self.event(ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, OCT - timedelta(days=30), org=SOCIAL,
                             sector=ce.SECTOR_SOCIAL_CARE))

    def admit(self, when: datetime, code: str, spell: str = "S-1", source: str = "19") -> list[al.Alert]:
        return self.send(self.event(ce.EVENT_TYPE_ADMISSION, when, spell=spell,
                                    admission_method=ce.ADMISSION_METHOD_EMERGENCY, admission_source=source,
                                    diagnoses=[ce.Diagnosis(code=code, position=1)]))


def by_org(alerts: list[al.Alert]) -> dict[str, list[al.Alert]]:
    out: dict[str, list[al.Alert]] = {}
    for a in alerts:
        out.setdefault(a.recipient_org, []).append(a)
    return out


def test_acsc_admission_reaches_the_gp_and_social_worker_in_their_own_terms_once() -> None:
    p = Person()
    p.known()
    alerts = p.admit(OCT, "N10")  # pyelonephritis: an acute ACSC
    got = by_org(alerts)
    assert set(got) == {GP, SOCIAL}  # the hospital sent it; no other organisation knows him
    gp = got[GP][0]
    assert (gp.rule, gp.local_id, gp.kind, gp.provisional) == ("acsc_emergency_admission", "P-4471",
                                                                al.ALERT_KIND_NEW, True)
    assert got[SOCIAL][0].local_id == "C-7730" and got[SOCIAL][0].recipient_role == "social_care"
    assert gp.trace_id == "0af7651916cd43dd8448eb211c80319c" and "N10" in gp.detail
    assert "H-99812" not in gp.detail and "person-1" not in gp.SerializeToString().decode("latin-1")
    # the same situation again (a batch processed twice after a restart) raises nothing new
    again = p.engine.on_event(p.state, p.person_id, apply_again(p), NOW)
    assert again == []


def apply_again(p: Person) -> tl.TimelineEvent:
    """The enriched event of the last admission, as the timeline would send it again after a crash."""
    spell = p.feed.timeline.spells[0]
    linked = p.event(ce.EVENT_TYPE_ADMISSION, OCT, admission_method=ce.ADMISSION_METHOD_EMERGENCY,
                     diagnoses=[ce.Diagnosis(code="N10", position=1)], event_id=spell.admission_event_id)
    view = tl.TimelineView(registered_practice=GP, days_since_previous_discharge=-1, prior_ed_attendances_365d=-1)
    view.spell.CopyFrom(tl.SpellView(org=HOSPITAL, spell_id="S-1", status=tl.SPELL_STATUS_OPEN,
                                     admission_method=ce.ADMISSION_METHOD_EMERGENCY,
                                     primary_diagnosis="N10", primary_diagnosis_provisional=True,
                                     diagnoses=[ce.Diagnosis(code="N10", position=1)]))
    view.spell.admitted_at.FromDatetime(OCT)
    view.local_records.extend(p.feed.timeline.local_records)
    for org, involvement in p.feed.timeline.involvement.items():
        view.involvement[org].CopyFrom(involvement)
    return tl.TimelineEvent(linked=linked, view=view)


def test_coding_confirms_or_withdraws_and_a_cancelled_admission_is_retracted() -> None:
    confirmed, withdrawn, cancelled = Person("a"), Person("b"), Person("c")
    for p in (confirmed, withdrawn, cancelled):
        p.known()
        p.admit(OCT, "N10")
    first = {a.recipient_org: a.alert_id for a in confirmed.state.raised}
    revision = confirmed.send(confirmed.event(ce.EVENT_TYPE_DIAGNOSIS_CODED, OCT + timedelta(days=4),
                                              diagnoses=[ce.Diagnosis(code="N10", position=1)]))
    assert {(a.kind, a.refers_to, a.provisional) for a in revision} == {
        (al.ALERT_KIND_REVISION, first[GP], False), (al.ALERT_KIND_REVISION, first[SOCIAL], False)}
    retraction = withdrawn.send(withdrawn.event(ce.EVENT_TYPE_DIAGNOSIS_CODED, OCT + timedelta(days=4),
                                                diagnoses=[ce.Diagnosis(code="N39.0", position=1)]))
    assert {a.kind for a in retraction} == {al.ALERT_KIND_RETRACTION} and len(retraction) == 2
    cancel = cancelled.event(ce.EVENT_TYPE_CANCELLATION, OCT + timedelta(hours=2), spell="")
    cancel.event.target_event_id = cancelled.feed.timeline.spells[0].admission_event_id
    gone = cancelled.send(cancel)
    assert {a.kind for a in gone} == {al.ALERT_KIND_RETRACTION} and {a.recipient_org for a in gone} == {GP, SOCIAL}


def test_discharge_starts_a_follow_up_clock_that_a_contact_stops() -> None:
    seen, missed = Person("seen"), Person("missed")
    for p in (seen, missed):
        p.known()
        p.admit(OCT, "I21.9")  # not an ACSC: no admission alert
        due = p.send(p.event(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=3), discharge_destination="19"))
        assert {a.rule for a in due} == {"discharge_followup_due"}
    seen.send(seen.event(ce.EVENT_TYPE_GP_CONTACT, OCT + timedelta(days=6), org=GP, sector=ce.SECTOR_PRIMARY_CARE))
    clock = int((OCT + timedelta(days=12)).timestamp()) * 10**9
    assert seen.engine.expire(seen.state, "seen", clock, NOW) == []
    assert missed.engine.next_due(missed.state) is not None
    early = int((OCT + timedelta(days=10)).timestamp()) * 10**9  # day 7 after discharge still counts
    assert missed.engine.expire(missed.state, "missed", early, NOW) == []
    overdue = missed.engine.expire(missed.state, "missed", clock, NOW)
    assert {(a.rule, a.recipient_org) for a in overdue} == {("followup_overdue", GP)}
    assert missed.engine.expire(missed.state, "missed", clock, NOW) == []  # once


def test_readmission_frequent_attender_and_direct_care_opt_out() -> None:
    p = Person()
    p.known()
    p.admit(OCT, "I21.9", spell="S-1")
    p.send(p.event(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=2), spell="S-1"))
    readmitted = p.admit(OCT + timedelta(days=20), "I21.9", spell="S-2")
    assert {a.rule for a in readmitted} == {"emergency_readmission"} and "18 days after" in readmitted[0].detail

    q = Person("q")
    q.known()
    rules = []
    for days in (300, 200, 100, 10):
        rules += [a.rule for a in q.send(q.event(ce.EVENT_TYPE_ED_ATTENDANCE, OCT - timedelta(days=days),
                                                 org="RR8ED", sector=ce.SECTOR_EMERGENCY, spell=f"A-{days}"))]
    assert rules.count("frequent_ed_attender") == 2  # the 4th attendance, to the GP and social care

    r = Person("r")
    r.known()
    opt_out = r.event(ce.EVENT_TYPE_CONSENT_CHANGE, OCT - timedelta(days=1), org=GP, sector=ce.SECTOR_PRIMARY_CARE)
    opt_out.event.consent.direct_care_opt_out = True
    r.send(opt_out)
    assert r.admit(OCT, "N10") == []  # only the hospital that sent it may hear, and it has no rule recipient role


def test_outlier_signal_goes_to_the_unit_and_rules_are_checked(tmp_path: Path) -> None:
    engine = AlertEngine(load_rules())
    value = ind.IndicatorValue(indicator="readmission_30d", unit="provider:RR8", window="12m", as_of="2026-10-31",
                               title="Emergency readmissions within 30 days", value=0.2, regional_value=0.1,
                               outlier="high_998")
    alerts = engine.on_signal(value, NOW)
    assert [(a.recipient_org, a.unit, a.local_id) for a in alerts] == [("RR8", "provider:RR8", "")]
    assert engine.on_signal(value, NOW)[0].alert_id == alerts[0].alert_id
    value.unit = "region"
    assert engine.on_signal(value, NOW) == []

    broken = tmp_path / "rules"
    shutil.copytree(PACKAGED, broken)
    (broken / "death.toml").write_text((broken / "death.toml").read_text().replace('on = "death"', 'on = "deth"'))
    with pytest.raises(ValueError, match=r"death\.toml: on must be one of"):
        load_rules(broken)
