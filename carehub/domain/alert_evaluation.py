"""Which alerts a timeline event raises, revises or retracts, and for whom. Pure; no Kafka.

Every alert has a deterministic id (rule, person, the fact it is about, recipient), and the
person's ``AlertState`` remembers what was raised, so the same situation never gives two alerts,
even when a batch is processed again after a restart. A coding that changes a spell's
classification gives a revision or a retraction referring to the alert it changes; a cancelled
admission or discharge retracts its alerts. The person is named only by the recipient's own
record id, and a direct-care opt-out limits the recipients to the organisation that sent the
event. The owner of a care plan is told which plan an alert concerns and whom the plan names
to contact, since the owner coordinates the person's care across organisations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

from carehub.domain.alert_rules import Rule, RuleBook
from carehub.domain.codelists import normal
from carehub.domain.dates import day_start_ns
from carehub.domain.timeline import DAY_NS, DIED, FOLLOW_UP_SECTORS, ns
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import ingest_pb2 as ing
from carehub.v1 import timeline_pb2 as tl

ROLE_SECTORS = {"social_care": ce.SECTOR_SOCIAL_CARE, "community": ce.SECTOR_COMMUNITY,
                "care_home": ce.SECTOR_CARE_HOME}
UNIT_KINDS = ("provider:", "practice:")


def alert_id(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def trace_id_of(context: Iterable[tuple[str, str]]) -> str:
    parent = dict(context).get("traceparent", "")
    pieces = parent.split("-")
    return pieces[1] if len(pieces) == 4 else ""


def _when(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%d %b %Y %H:%M UTC")


class AlertEngine:
    def __init__(self, book: RuleBook, involved_within_days: int = 90) -> None:
        self.book = book
        self.involved_ns = involved_within_days * DAY_NS
        self.overdue = book.on("followup_overdue")
        self.review_rules = book.on("care_plan_review_overdue")

    # --- recipients ---------------------------------------------------------------------------

    def recipients(self, rule: Rule, view: tl.TimelineView, event_org: str, event_ns: int,
                   spell_org: str = "") -> list[al.Recipient]:
        records: dict[str, str] = {}
        for record in view.local_records:
            records.setdefault(record.org, record.local_id)
        out: list[al.Recipient] = []
        seen: set[str] = set()

        def add(org: str, role: str) -> None:
            if org and org not in seen and org in records:
                seen.add(org)
                out.append(al.Recipient(org=org, role=role, local_id=records[org]))

        for role in rule.recipients:
            if role == "registered_practice":
                add(view.registered_practice, role)
            elif role in ("admitting_hospital", "discharging_hospital"):
                add(spell_org, role)
            elif role == "source":
                add(event_org, role)
            elif role == "care_plan_owner":
                for org in plan_owners(view, event_ns):
                    add(org, role)
            elif role in ROLE_SECTORS:
                if role == "care_home":
                    add(view.care_home_org, role)
                for org, involvement in sorted(view.involvement.items()):
                    if (involvement.sector == ROLE_SECTORS[role]
                            and ns(involvement.last_event_at) >= event_ns - self.involved_ns):
                        add(org, role)
        if view.direct_care_opt_out:  # no sharing for direct care beyond the organisation that told us
            out = [r for r in out if r.org == event_org]
        return out

    # --- one timeline event -------------------------------------------------------------------

    def on_event(self, state: al.AlertState, person_id: str, event: tl.TimelineEvent, now_ns: int,
                 ) -> list[al.Alert]:
        linked, view = event.linked, event.view
        accepted = linked.event
        kind = accepted.event_type
        t = ns(accepted.event_time)
        out: list[al.Alert] = []
        spell = view.spell if view.HasField("spell") else None
        base = _base(accepted, now_ns)
        if kind == ce.EVENT_TYPE_ADMISSION and spell is not None and spell.status != tl.SPELL_STATUS_CANCELLED:
            for rule in self.book.on("admission"):
                if self._admission_matches(rule, view, spell):
                    out += self._raise(state, rule, person_id, _spell_key(spell), view, accepted.source_org, t,
                                       base, spell.org, provisional=self._provisional(rule, spell),
                                       detail=_spell_detail("Emergency admission" if spell.admission_method ==
                                                            ce.ADMISSION_METHOD_EMERGENCY else "Admission",
                                                            spell, view))
        elif kind == ce.EVENT_TYPE_DIAGNOSIS_CODED and spell is not None:
            out += self._recode(state, person_id, view, spell, accepted.source_org, t, base)
        elif kind == ce.EVENT_TYPE_DISCHARGE and spell is not None and spell.status == tl.SPELL_STATUS_CLOSED:
            died = spell.discharge_destination == DIED
            for rule in self.book.on("discharge"):
                if not (rule.exclude_died and died):
                    out += self._raise(state, rule, person_id, _spell_key(spell) + "#discharge", view,
                                       accepted.source_org, t, base, spell.org,
                                       detail=_spell_detail("Discharged", spell, view))
            if not died and self.overdue and not view.deceased:
                self._await_follow_up(state, spell, view, accepted, t)
            if died:
                out += self._death(state, person_id, view, accepted.source_org, t, base)
        elif kind == ce.EVENT_TYPE_DEATH:
            out += self._death(state, person_id, view, accepted.source_org, t, base)
        elif kind == ce.EVENT_TYPE_ED_ATTENDANCE:
            for rule in self.book.on("ed_attendance"):
                if view.prior_ed_attendances_365d == rule.prior_ed_attendances_exactly:
                    detail = (f"ED attendance at {accepted.source_org} on {_when(t)}: the "
                              f"{view.prior_ed_attendances_365d + 1}th in 365 days")
                    out += self._raise(state, rule, person_id, f"{accepted.source_org}/{accepted.event_id}", view,
                                       accepted.source_org, t, base, detail=detail)
        elif kind == ce.EVENT_TYPE_GP_CONTACT and accepted.source_sector in FOLLOW_UP_SECTORS:
            self._followed_up(state, t)
        elif kind == ce.EVENT_TYPE_CANCELLATION:
            out += self._cancelled(state, view, spell, accepted, base)
        if self.review_rules:
            self._await_reviews(state, person_id, view)
        return out

    def _admission_matches(self, rule: Rule, view: tl.TimelineView, spell: tl.SpellView) -> bool:
        if rule.admission_methods and spell.admission_method not in rule.admission_methods:
            return False
        if rule.admission_sources and spell.admission_source not in rule.admission_sources:
            return False
        if rule.readmission_max_days is not None and not (
                0 <= view.days_since_previous_discharge <= rule.readmission_max_days):
            return False
        return rule.codelist is None or rule.codelist.matches(
            rule.groups, [normal(d.code) for d in spell.diagnoses], [normal(p.code) for p in spell.procedures])

    @staticmethod
    def _provisional(rule: Rule, spell: tl.SpellView) -> bool:
        return rule.codelist is not None and spell.primary_diagnosis_provisional

    def _raise(self, state: al.AlertState, rule: Rule, person_id: str, fact_key: str, view: tl.TimelineView,
               event_org: str, t: int, base: al.Alert, spell_org: str = "", *, provisional: bool = False,
               detail: str = "") -> list[al.Alert]:
        raised = {r.alert_id for r in state.raised}
        out = []
        for recipient in self.recipients(rule, view, event_org, t, spell_org):
            aid = alert_id(rule.id, person_id, fact_key, recipient.org)
            if aid in raised:
                continue
            alert = _alert(base, rule, recipient, aid, provisional=provisional,
                           detail=_for_recipient(detail, view, recipient))
            state.raised.add(alert_id=aid, rule=rule.id, fact_key=fact_key, recipient_org=recipient.org,
                             recipient_role=recipient.role, local_id=recipient.local_id, provisional=provisional,
                             last_id=aid)
            out.append(alert)
        return out

    def _recode(self, state: al.AlertState, person_id: str, view: tl.TimelineView, spell: tl.SpellView,
                event_org: str, t: int, base: al.Alert) -> list[al.Alert]:
        key = _spell_key(spell)
        out: list[al.Alert] = []
        rules = {r.id: r for r in self.book.on("admission") if r.codelist is not None}
        for entry in state.raised:
            rule = rules.get(entry.rule)
            if rule is None or entry.fact_key != key or entry.retracted:
                continue
            still = self._admission_matches(rule, view, spell)
            recipient = al.Recipient(org=entry.recipient_org, role=entry.recipient_role, local_id=entry.local_id)
            coded = ", ".join(d.code for d in spell.diagnoses[:3])
            if not still:
                aid = alert_id(entry.alert_id, "retraction")
                out.append(_alert(base, rule, recipient, aid, kind=al.ALERT_KIND_RETRACTION, refers_to=entry.last_id,
                                  detail=f"Coded diagnoses ({coded}) do not meet the rule: withdrawn"))
                entry.retracted, entry.last_id = True, aid
            elif entry.provisional and not self._provisional(rule, spell):
                aid = alert_id(entry.alert_id, "confirmed")
                out.append(_alert(base, rule, recipient, aid, kind=al.ALERT_KIND_REVISION, refers_to=entry.last_id,
                                  detail=f"Confirmed by coding ({coded})"))
                entry.provisional, entry.last_id = False, aid
        if spell.status != tl.SPELL_STATUS_CANCELLED and spell.HasField("admitted_at"):
            for rule in rules.values():  # coding can also show what the working diagnosis did not
                if self._admission_matches(rule, view, spell):
                    out += self._raise(state, rule, person_id, key, view, event_org, ns(spell.admitted_at), base,
                                       spell.org, detail=_spell_detail("Emergency admission", spell, view))
        return out

    def _cancelled(self, state: al.AlertState, view: tl.TimelineView, spell: tl.SpellView | None,
                   accepted: ing.AcceptedEvent, base: al.Alert) -> list[al.Alert]:
        keys: set[str] = set()
        org, target = accepted.source_org, accepted.target_event_id
        if spell is not None and spell.status == tl.SPELL_STATUS_CANCELLED:
            keys |= {_spell_key(spell), _spell_key(spell) + "#discharge"}
        elif spell is not None and spell.status == tl.SPELL_STATUS_OPEN:  # a discharge cancelled (A13)
            keys.add(_spell_key(spell) + "#discharge")
        keys.add(f"{org}/{target}")
        if not view.deceased:
            keys.add("death")
        kept = [p for p in state.pending if p.fact_key not in keys]
        del state.pending[:]
        state.pending.extend(kept)
        out = []
        rules = {r.id: r for r in self.book.rules}
        for entry in state.raised:
            if entry.fact_key in keys and not entry.retracted and entry.rule in rules:
                aid = alert_id(entry.alert_id, "retraction")
                recipient = al.Recipient(org=entry.recipient_org, role=entry.recipient_role, local_id=entry.local_id)
                out.append(_alert(base, rules[entry.rule], recipient, aid, kind=al.ALERT_KIND_RETRACTION,
                                  refers_to=entry.last_id, detail="The event was cancelled by its source: withdrawn"))
                entry.retracted, entry.last_id = True, aid
        return out

    def _death(self, state: al.AlertState, person_id: str, view: tl.TimelineView, event_org: str, t: int,
               base: al.Alert) -> list[al.Alert]:
        del state.pending[:]
        del state.reviews[:]
        out: list[al.Alert] = []
        for rule in self.book.on("death"):
            out += self._raise(state, rule, person_id, "death", view, event_org, t, base,
                               detail=f"Death recorded by {event_org}, on {_when(t)}")
        return out

    # --- follow-up clocks ---------------------------------------------------------------------

    def _await_follow_up(self, state: al.AlertState, spell: tl.SpellView, view: tl.TimelineView,
                         accepted: ing.AcceptedEvent, t: int) -> None:
        key = _spell_key(spell) + "#discharge"
        if any(p.fact_key == key for p in state.pending):
            return
        rule = self.overdue[0]
        pending = state.pending.add(fact_key=key, source_org=accepted.source_org,
                                    direct_care_opt_out=view.direct_care_opt_out)
        pending.discharged_at.FromNanoseconds(t)
        pending.recipients.extend(self.recipients(rule, view, accepted.source_org, t,
                                                  spell.org))
        for k, v in accepted.trace_context.items():
            pending.trace_context[k] = v

    def _followed_up(self, state: al.AlertState, t: int) -> None:
        day = t // DAY_NS
        after = self.overdue[0].after_days if self.overdue else 7
        kept = [p for p in state.pending if not 1 <= day - ns(p.discharged_at) // DAY_NS <= after]
        if len(kept) != len(state.pending):
            del state.pending[:]
            state.pending.extend(kept)

    def next_due(self, state: al.AlertState) -> int | None:
        """The event time (ns) from which the earliest pending follow-up or care plan review is overdue."""
        dues = [self._review_due_ns(r) for r in state.reviews]
        if self.overdue and state.pending:
            after = self.overdue[0].after_days
            dues += [(ns(p.discharged_at) // DAY_NS + after + 1) * DAY_NS for p in state.pending]
        return min((d for d in dues if d is not None), default=None)

    def expire(self, state: al.AlertState, person_id: str, clock_ns: int, now_ns: int) -> list[al.Alert]:
        """Overdue alerts for follow-ups and care plan reviews whose days have passed by ``clock_ns``
        (the hub's event clock)."""
        out = self._overdue_reviews(state, person_id, clock_ns, now_ns)
        if not self.overdue:
            return out
        rule = self.overdue[0]
        kept = []
        raised = {r.alert_id for r in state.raised}
        for pending in state.pending:
            discharged = ns(pending.discharged_at)
            if clock_ns < (discharged // DAY_NS + rule.after_days + 1) * DAY_NS:
                kept.append(pending)
                continue
            base = al.Alert(source_org=pending.source_org)
            base.event_time.FromNanoseconds(discharged)
            base.raised_at.FromNanoseconds(now_ns)
            for k, v in pending.trace_context.items():
                base.trace_context[k] = v
            base.trace_id = trace_id_of(pending.trace_context.items())
            for recipient in pending.recipients:
                aid = alert_id(rule.id, person_id, pending.fact_key, recipient.org)
                if aid in raised:
                    continue
                out.append(_alert(base, rule, recipient, aid, detail=(
                    f"Discharged by {pending.source_org} on {_when(discharged)}; no GP or community contact "
                    f"recorded in the {rule.after_days} days after")))
                state.raised.add(alert_id=aid, rule=rule.id, fact_key=pending.fact_key, recipient_org=recipient.org,
                                 recipient_role=recipient.role, local_id=recipient.local_id, last_id=aid)
        del state.pending[:]
        state.pending.extend(kept)
        return out

    # --- care plan reviews --------------------------------------------------------------------

    def _await_reviews(self, state: al.AlertState, person_id: str, view: tl.TimelineView) -> None:
        """Keep one pending review per open plan with a known review date, as the view has it now.

        A newer review date (the plan was reviewed), a closed plan or a death replaces or drops
        the pending review; a review already alerted is not awaited again. With a direct-care
        opt-out, only a plan its owner sent itself is followed: telling an owner of a plan that
        another organisation reported would share what the person declined.
        """
        rule = self.review_rules[0]
        wanted: dict[str, al.PendingReview] = {}
        if not view.deceased:
            records: dict[str, str] = {}
            for record in view.local_records:
                records.setdefault(record.org, record.local_id)
            raised = {r.alert_id for r in state.raised}
            for owner, plan in sorted(view.care_plans.items()):
                if (plan.closed or owner not in records or day_start_ns(plan.review_due) is None
                        or (view.direct_care_opt_out and plan.source_org != owner)
                        or alert_id(rule.id, person_id, _review_key(owner, plan.review_due), owner) in raised):
                    continue
                wanted[owner] = al.PendingReview(
                    owner_org=owner, review_due=plan.review_due, plan_event_id=plan.event_id,
                    source_org=plan.source_org, segment=plan.segment, contact_role=plan.contact_role,
                    recipient=al.Recipient(org=owner, role="care_plan_owner", local_id=records[owner]))
        if [r.SerializeToString(deterministic=True) for r in state.reviews] != [
                r.SerializeToString(deterministic=True) for r in wanted.values()]:
            del state.reviews[:]
            state.reviews.extend(wanted.values())

    def _review_due_ns(self, review: al.PendingReview) -> int | None:
        """When ``review`` is overdue: the start of the day after its review day and the rule's grace days."""
        day = day_start_ns(review.review_due)
        if day is None or not self.review_rules:
            return None
        return day + (self.review_rules[0].after_days + 1) * DAY_NS

    def _overdue_reviews(self, state: al.AlertState, person_id: str, clock_ns: int, now_ns: int) -> list[al.Alert]:
        if not self.review_rules:
            return []
        rule = self.review_rules[0]
        out: list[al.Alert] = []
        kept: list[al.PendingReview] = []
        for review in state.reviews:
            due = self._review_due_ns(review)
            if due is None or clock_ns < due:
                kept.append(review)
                continue
            key = _review_key(review.owner_org, review.review_due)
            aid = alert_id(rule.id, person_id, key, review.owner_org)
            base = al.Alert(source_org=review.source_org)
            base.event_time.FromNanoseconds(due)
            base.raised_at.FromNanoseconds(now_ns)
            about = [f"segment {review.segment}"] if review.segment else []
            about.append(f"contact: {review.contact_role}" if review.contact_role else "no contact role named")
            grace = f" and {rule.after_days} days' grace" if rule.after_days else ""
            out.append(_alert(base, rule, review.recipient, aid, detail=(
                f"Your care plan for the person ({', '.join(about)}) was due for review on {review.review_due}; "
                f"that day{grace} {'have' if grace else 'has'} passed with no newer review date or closing event "
                "received")))
            state.raised.add(alert_id=aid, rule=rule.id, fact_key=key, recipient_org=review.owner_org,
                             recipient_role=review.recipient.role, local_id=review.recipient.local_id, last_id=aid)
        if len(kept) != len(state.reviews):
            del state.reviews[:]
            state.reviews.extend(kept)
        return out

    # --- indicator signals --------------------------------------------------------------------

    def on_signal(self, value: ind.IndicatorValue, now_ns: int) -> list[al.Alert]:
        out = []
        for rule in self.book.on("indicator_outlier"):
            if value.outlier not in rule.outliers or not value.unit.startswith(UNIT_KINDS):
                continue
            org = value.unit.split(":", 1)[1]
            base = al.Alert(source_org="carehub", unit=value.unit)
            base.raised_at.FromNanoseconds(now_ns)
            aid = alert_id(rule.id, value.indicator, value.unit, value.window, value.outlier, value.as_of[:7])
            detail = (f"{value.title} ({value.window} to {value.as_of}): {value.value:.3g} against a regional "
                      f"{value.regional_value:.3g}, beyond the 99.8% limits ({value.outlier})")
            out.append(_alert(base, rule, al.Recipient(org=org, role="unit"), aid, detail=detail))
        return out


def _base(accepted: ing.AcceptedEvent, now_ns: int) -> al.Alert:
    base = al.Alert(source_org=accepted.source_org)
    base.event_time.CopyFrom(accepted.event_time)
    base.raised_at.FromNanoseconds(now_ns)
    for k, v in accepted.trace_context.items():
        base.trace_context[k] = v
    base.trace_id = trace_id_of(base.trace_context.items())
    return base


def _alert(base: al.Alert, rule: Rule, recipient: al.Recipient, aid: str, *, kind: int = al.ALERT_KIND_NEW,
           refers_to: str = "", provisional: bool = False, detail: str = "") -> al.Alert:
    alert = al.Alert()
    alert.CopyFrom(base)
    alert.alert_id, alert.kind, alert.refers_to = aid, kind, refers_to  # type: ignore[assignment]
    alert.rule, alert.rule_version, alert.severity = rule.id, rule.version, rule.severity  # type: ignore[assignment]
    alert.recipient_org, alert.recipient_role, alert.local_id = recipient.org, recipient.role, recipient.local_id
    alert.title, alert.detail, alert.provisional, alert.definition = rule.title, detail, provisional, rule.definition
    return alert


def plan_owners(view: tl.TimelineView, event_ns: int) -> list[str]:
    """Owners of the person's open care plans recorded at or before ``event_ns``: a plan made after
    the moment (an older admission arriving late) was not in place when it happened."""
    return [owner for owner, plan in sorted(view.care_plans.items()) if not plan.closed and ns(plan.at) <= event_ns]


def _for_recipient(detail: str, view: tl.TimelineView, recipient: al.Recipient) -> str:
    """``detail``, and for a care-plan owner which of its plans this is and whom the plan names to contact."""
    plan = view.care_plans.get(recipient.org) if recipient.role == "care_plan_owner" else None
    if plan is None:
        return detail
    about = [f"recorded {datetime.fromtimestamp(plan.at.seconds, UTC):%d %b %Y}"]
    if plan.segment:
        about.append(f"segment {plan.segment}")
    if plan.review_due:
        about.append(f"review due {plan.review_due}")
    contact = f"contact: {plan.contact_role}" if plan.contact_role else "no contact role named in the plan"
    return f"{detail}; your care plan for the person ({', '.join(about)}), {contact}"


def _review_key(owner: str, review_due: str) -> str:
    return f"care_plan/{owner}/{review_due}"


def _spell_key(spell: tl.SpellView) -> str:
    return f"{spell.org}/{spell.spell_id}"


def _spell_detail(what: str, spell: tl.SpellView, view: tl.TimelineView) -> str:
    at = spell.discharged_at if what == "Discharged" and spell.HasField("discharged_at") else spell.admitted_at
    parts = [f"{what} at {spell.org} on {_when(ns(at))}"]
    if spell.primary_diagnosis:
        state = "working diagnosis, provisional" if spell.primary_diagnosis_provisional else "coded"
        parts.append(f"primary diagnosis {spell.primary_diagnosis} ({state})")
    if view.days_since_previous_discharge >= 0 and what != "Discharged":
        parts.append(f"{view.days_since_previous_discharge} days after a previous discharge")
    if spell.admission_source in ("54", "65", "85"):
        parts.append(f"admitted from a care home (source {spell.admission_source})")
    return "; ".join(parts)
