"""A person's timeline: apply one linked event, and derive the view that travels with it.

Pure functions over protobuf messages; no Kafka. ``apply`` changes the person's
``PersonTimeline`` (held in a ``PersonState``) and returns the enriched ``TimelineEvent``, or
None for an event already applied.

Events arrive in link order (``LinkedEvent.link_sequence``), which is not event-time order:
- spells are keyed by (organisation, spell id), so a discharge that arrives before its
  admission creates the spell (CLOSED, admission unknown) and a late discharge closes the
  spell it names, whatever came in between;
- "prior" and "previous" questions (ED attendances, the previous discharge) use event time;
- consent is the one thing that follows link order: a change applies from itself on.

Identity merges (``LinkedEvent.merge``) come as two copies of one event, one per person.
``step`` acts on the copy of the person that gives its history away: the absorbed person
(merge) hands its whole state to the survivor, and the survivor (un-merge) gives back the
absorbed person's side of the merge, kept up to date with the moved records' events since
(``absorb``); ``receive`` takes that ``TimelineHandover`` in on the other side
and applies the merge event there. The other copy does nothing by itself. The enriched merge
events carry the person's whole timeline after them (``TimelineEvent.timeline``), since what
a merge moves is in no single event.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import ingest_pb2 as ing
from carehub.v1 import timeline_pb2 as tl

MAX_APPLIED = 2000  # events remembered to ignore repeats
DIGEST = 8  # bytes of each remembered event's digest
MAX_CANCELLED = 2000  # cancellations that named an event not seen (yet)
MAX_SPELLS = 200  # beyond this the oldest closed or cancelled spells are dropped
DAY_NS = 86_400 * 10**9
ED_WINDOW_NS = 365 * DAY_NS
# ED attendances and contacts are kept this long before the newest event: the indicators'
# 12-month windows need a year of them, each attendance with its own 365 days before it.
HISTORY_NS = 2 * ED_WINDOW_NS
FOLLOW_UP_SECTORS = frozenset({ce.SECTOR_PRIMARY_CARE, ce.SECTOR_COMMUNITY})
CARE_HOME_CODES = frozenset({"54", "65", "85"})  # source of admission / discharge destination
DIED = "79"  # discharge destination: not discharged, died


def ns(ts: Timestamp) -> int:
    return ts.seconds * 10**9 + ts.nanos


def utc_date(t_ns: int) -> date:
    return datetime.fromtimestamp(t_ns // 10**9, UTC).date()


def event_key(org: str, event_id: str) -> str:
    return f"{org}/{event_id}"


@dataclass
class PersonState:
    """A ``PersonTimeline`` being worked on, with its applied-event digests unpacked for lookups.

    (Re-setting the packed ``applied_events`` bytes field after every event would cost more
    than the rest of ``apply``; ``to_bytes`` packs it once.)
    """

    timeline: tl.PersonTimeline
    applied: dict[bytes, None] = field(default_factory=dict)  # digests, oldest first

    @classmethod
    def new(cls, person_id: str) -> PersonState:
        return cls(tl.PersonTimeline(person_id=person_id))

    @classmethod
    def from_bytes(cls, data: bytes) -> PersonState:
        timeline = tl.PersonTimeline.FromString(data)
        packed = timeline.applied_events
        return cls(timeline, dict.fromkeys(packed[i:i + DIGEST] for i in range(0, len(packed), DIGEST)))

    def to_bytes(self) -> bytes:
        self.timeline.applied_events = b"".join(self.applied)
        return self.timeline.SerializeToString()


def event_digest(event: ing.AcceptedEvent) -> bytes:
    return hashlib.blake2b(event_key(event.source_org, event.event_id).encode(), digest_size=DIGEST).digest()


def apply(state: PersonState, linked: idn.LinkedEvent) -> tl.TimelineEvent | None:
    """Apply ``linked`` to the person (in place); its enriched event, or None if applied before."""
    event = linked.event
    key = event_key(event.source_org, event.event_id)
    digest = event_digest(event)
    if digest in state.applied:
        return None
    _apply_to_sides(state.timeline, linked)
    timeline = state.timeline
    if not timeline.person_id:
        timeline.person_id = linked.person_id
    when = event.event_time
    t = ns(when)
    view = tl.TimelineView(
        age_years=event.person.age_years, sex=event.person.sex, days_since_previous_discharge=-1,
        prior_ed_attendances_365d=-1,
        is_late=timeline.HasField("newest_event_at") and t < ns(timeline.newest_event_at),
    )
    # A reviewer's decision (an identity merge made at the review desk) is no news of the person: no
    # organisation saw them, and it carries no age, sex or registration.
    decided = event.HasField("review_decision")
    own = _own_record(linked)
    if own:
        _note_record(timeline, event.source_org, event.person.local_id)
    if own and not decided:
        _note_involvement(timeline, event.source_org, event.source_sector, when)
        if event.registered_practice:
            _note_registration(timeline, event.registered_practice, event.locality, when)
        _note_age(timeline, event.person.age_years, event.person.sex, when)
    elif decided and timeline.HasField("age_at"):
        view.age_years, view.sex = timeline.age_years, timeline.sex

    spell: tl.Spell | None = None
    kind = event.event_type
    if kind == ce.EVENT_TYPE_ADMISSION:
        spell = _admit(timeline, event, key)
        view.days_since_previous_discharge = days_since_previous_discharge(timeline, spell)
    elif kind == ce.EVENT_TYPE_TRANSFER:
        spell = _transfer(timeline, event)
    elif kind == ce.EVENT_TYPE_DISCHARGE:
        spell = _discharge(timeline, event, key)
    elif kind == ce.EVENT_TYPE_DIAGNOSIS_CODED:
        spell = _code(timeline, event)
    elif kind == ce.EVENT_TYPE_CANCELLATION:
        spell = _cancel(timeline, event.source_org, event.target_event_id)
    elif kind == ce.EVENT_TYPE_ED_ATTENDANCE:
        counted = key not in timeline.cancelled_event_keys
        if counted and repeats_attendance(timeline, event):
            view.repeated_attendance = True
        else:
            view.prior_ed_attendances_365d = _attend(timeline, event, when, counted=counted)
    elif kind == ce.EVENT_TYPE_GP_CONTACT:
        if not timeline.HasField("last_gp_contact_at") or t > ns(timeline.last_gp_contact_at):
            timeline.last_gp_contact_at.CopyFrom(when)
        if event.source_sector in FOLLOW_UP_SECTORS and key not in timeline.cancelled_event_keys:
            _insert_by_time(timeline.contacts, tl.Contact(event_id=event.event_id, at=when, org=event.source_org))
    elif kind == ce.EVENT_TYPE_CARE_HOME_ADMISSION:
        _note_care_home(timeline, event.source_org, when)
    elif kind == ce.EVENT_TYPE_CARE_PLAN:
        if key not in timeline.cancelled_event_keys:
            plan = care_plan_of(event)
            _note_care_plan(timeline, plan.owner_org, plan)
    elif kind == ce.EVENT_TYPE_DEATH:
        _die(timeline, when, key)
    elif kind == ce.EVENT_TYPE_CONSENT_CHANGE:
        consent = timeline.consent
        if linked.link_sequence >= consent.changed_at_sequence:
            consent.direct_care_opt_out = event.consent.direct_care_opt_out
            consent.planning_opt_out = event.consent.planning_opt_out
            consent.changed_at_sequence = linked.link_sequence
    # EVENT_TYPE_IDENTITY_MERGE and the rest: recorded (ids, involvement) and passed on with a view.
    if spell is not None:
        view.spell.CopyFrom(spell_view(spell))  # before pruning, which may drop an old spell

    if own and not decided and (not timeline.HasField("newest_event_at") or t > ns(timeline.newest_event_at)):
        timeline.newest_event_at.CopyFrom(when)
    _prune_ed(timeline)
    _prune_spells(timeline)
    state.applied[digest] = None
    if len(state.applied) > MAX_APPLIED:
        del state.applied[next(iter(state.applied))]
    timeline.last_link_sequence = max(timeline.last_link_sequence, linked.link_sequence)

    view.registered_practice = timeline.registered_practice
    view.locality = timeline.locality
    view.care_home_resident = timeline.HasField("care_home")
    view.direct_care_opt_out = timeline.consent.direct_care_opt_out
    view.planning_opt_out = timeline.consent.planning_opt_out
    view.deceased = timeline.HasField("died_at")
    view.local_records.extend(timeline.local_records)
    for org, involvement in timeline.involvement.items():
        view.involvement[org].CopyFrom(involvement)
    view.care_home_org = timeline.care_home.org
    for owner, plan in timeline.care_plans.items():
        if not plan.closed:  # a closed plan is kept only to order later events against
            view.care_plans[owner].CopyFrom(plan)
    out = tl.TimelineEvent(view=view)
    out.linked.CopyFrom(linked)
    return out


def spell_view(spell: tl.Spell) -> tl.SpellView:
    view = tl.SpellView(
        org=spell.org, spell_id=spell.spell_id, status=spell.status, admission_method=spell.admission_method,
        admission_source=spell.admission_source, discharge_destination=spell.discharge_destination,
        transfer_count=spell.transfer_count, last_location=spell.last_location,
    )
    if spell.HasField("admitted_at"):
        view.admitted_at.CopyFrom(spell.admitted_at)
    if spell.HasField("discharged_at"):
        view.discharged_at.CopyFrom(spell.discharged_at)
    primary = _primary(spell.coded_diagnoses)
    if primary:
        view.primary_diagnosis = primary
        view.diagnoses.extend(_by_position(spell.coded_diagnoses))
        view.procedures.extend(spell.coded_procedures)
    else:
        view.primary_diagnosis = _primary(spell.provisional_diagnoses)
        view.primary_diagnosis_provisional = bool(view.primary_diagnosis)
        view.diagnoses.extend(_by_position(spell.provisional_diagnoses))
        view.procedures.extend(spell.provisional_procedures)
    view.age_at_admission = spell.age_at_admission
    view.admission_sector = spell.admission_sector
    return view


def _by_position(diagnoses: Iterable[ce.Diagnosis]) -> list[ce.Diagnosis]:
    return sorted(diagnoses, key=lambda d: d.position or 1 << 30)


def days_since_previous_discharge(timeline: tl.PersonTimeline, spell: tl.Spell) -> int:
    """Calendar days (UTC) from the latest discharge at or before ``spell``'s admission, -1 if none.

    Only closed spells that were not cancelled count, at any organisation; ``spell`` itself does not.
    """
    if not spell.HasField("admitted_at") or spell.status == tl.SPELL_STATUS_CANCELLED:
        return -1
    admitted = ns(spell.admitted_at)
    best = -1
    for other in timeline.spells:
        if (other.org, other.spell_id) == (spell.org, spell.spell_id):
            continue
        if other.status != tl.SPELL_STATUS_CLOSED or not other.HasField("discharged_at"):
            continue
        discharged = ns(other.discharged_at)
        if best < discharged <= admitted:
            best = discharged
    if best < 0:
        return -1
    return (utc_date(admitted) - utc_date(best)).days


def prior_ed_attendances(timeline: tl.PersonTimeline, t_ns: int) -> int:
    """ED attendances in the 365 days before ``t_ns`` (not counting one at that very time)."""
    return sum(1 for a in timeline.ed_attendances if t_ns - ED_WINDOW_NS <= ns(a.at) < t_ns)


def _primary(diagnoses: Iterable[ce.Diagnosis]) -> str:
    best: ce.Diagnosis | None = None
    for d in diagnoses:
        if best is None or (d.position or 1 << 30) < (best.position or 1 << 30):
            best = d
    return best.code if best is not None else ""


def _find_spell(timeline: tl.PersonTimeline, org: str, spell_id: str) -> tl.Spell:
    for spell in timeline.spells:
        if spell.org == org and spell.spell_id == spell_id:
            return spell
    return timeline.spells.add(org=org, spell_id=spell_id)


def _admit(timeline: tl.PersonTimeline, event: ing.AcceptedEvent, key: str) -> tl.Spell:
    clinical = event.clinical
    when: Timestamp = event.event_time
    spell = _find_spell(timeline, event.source_org, clinical.spell_id)
    spell.admission_event_id = event.event_id
    spell.admitted_at.CopyFrom(when)
    spell.admission_method = clinical.admission_method
    spell.admission_source = clinical.admission_source
    spell.age_at_admission = event.person.age_years
    spell.admission_sector = event.source_sector
    spell.admission_opted_out = timeline.consent.planning_opt_out
    spell.admission_practice, spell.admission_locality = registration_at_event(timeline, event)
    del spell.provisional_diagnoses[:]
    spell.provisional_diagnoses.extend(clinical.diagnoses)
    del spell.provisional_procedures[:]
    spell.provisional_procedures.extend(clinical.procedures)
    if key in timeline.cancelled_event_keys:  # its cancellation came first
        spell.status = tl.SPELL_STATUS_CANCELLED
    elif spell.status == tl.SPELL_STATUS_UNSPECIFIED:
        spell.status = tl.SPELL_STATUS_OPEN
    # CLOSED (the discharge came first), OPEN (a transfer did) and CANCELLED stay as they are
    if clinical.admission_source in CARE_HOME_CODES and spell.status != tl.SPELL_STATUS_CANCELLED:
        _note_care_home(timeline, "", when)
    return spell


def _transfer(timeline: tl.PersonTimeline, event: ing.AcceptedEvent) -> tl.Spell:
    clinical = event.clinical
    when: Timestamp = event.event_time
    spell = _find_spell(timeline, event.source_org, clinical.spell_id)
    if spell.status == tl.SPELL_STATUS_UNSPECIFIED:
        spell.status = tl.SPELL_STATUS_OPEN
    spell.transfer_count += 1
    if clinical.location and (not spell.HasField("last_transfer_at") or ns(when) >= ns(spell.last_transfer_at)):
        spell.last_location = clinical.location
        spell.last_transfer_at.CopyFrom(when)
    return spell


def _discharge(timeline: tl.PersonTimeline, event: ing.AcceptedEvent, key: str) -> tl.Spell:
    clinical = event.clinical
    when: Timestamp = event.event_time
    spell = _find_spell(timeline, event.source_org, clinical.spell_id)
    if key in timeline.cancelled_event_keys:  # its cancellation (A13) came first
        if spell.status == tl.SPELL_STATUS_UNSPECIFIED:
            spell.status = tl.SPELL_STATUS_OPEN
        return spell
    if spell.status != tl.SPELL_STATUS_CANCELLED:
        spell.status = tl.SPELL_STATUS_CLOSED
    spell.discharge_event_id = event.event_id
    spell.discharged_at.CopyFrom(when)
    spell.discharge_opted_out = timeline.consent.planning_opt_out
    spell.discharge_practice, spell.discharge_locality = registration_at_event(timeline, event)
    spell.discharge_destination = clinical.discharge_destination
    if spell.status != tl.SPELL_STATUS_CANCELLED:
        if clinical.discharge_destination == DIED:
            _die(timeline, when, key)
        elif clinical.discharge_destination in CARE_HOME_CODES:
            _note_care_home(timeline, "", when)
    return spell


def _code(timeline: tl.PersonTimeline, event: ing.AcceptedEvent) -> tl.Spell:
    clinical = event.clinical
    when: Timestamp = event.event_time
    spell = _find_spell(timeline, event.source_org, clinical.spell_id)
    # a spell known only from its coding keeps status UNSPECIFIED until its admission or discharge
    if not spell.HasField("coded_at") or ns(when) >= ns(spell.coded_at):
        del spell.coded_diagnoses[:]
        spell.coded_diagnoses.extend(clinical.diagnoses)
        del spell.coded_procedures[:]
        spell.coded_procedures.extend(clinical.procedures)
        spell.coded_at.CopyFrom(when)
    return spell


def _cancel(timeline: tl.PersonTimeline, org: str, target_event_id: str) -> tl.Spell | None:
    target = event_key(org, target_event_id)
    found: tl.Spell | None = None
    for spell in timeline.spells:
        if spell.org != org:
            continue
        if spell.admission_event_id == target_event_id:  # A11: cancel admit
            spell.status = tl.SPELL_STATUS_CANCELLED
            found = spell
            break
        if spell.discharge_event_id == target_event_id:  # A13: cancel discharge, the spell reopens
            if spell.status != tl.SPELL_STATUS_CANCELLED:
                spell.status = tl.SPELL_STATUS_OPEN
            spell.discharge_event_id = ""
            spell.discharge_destination = ""
            spell.ClearField("discharged_at")
            found = spell
            break
    attended = [i for i, a in enumerate(timeline.ed_attendances) if (a.org, a.event_id) == (org, target_event_id)]
    for i in reversed(attended):
        del timeline.ed_attendances[i]
    contacted = [i for i, c in enumerate(timeline.contacts) if (c.org, c.event_id) == (org, target_event_id)]
    for i in reversed(contacted):
        del timeline.contacts[i]
    attended += contacted
    # a cancelled care-plan event is forgotten (what it replaced or closed is not restored); its
    # key is still kept as cancelled below, as for an event not seen, which changes nothing (a
    # resend of it is a repeat) and keeps the risk state's mirror exact
    for owner in [o for o, plan in timeline.care_plans.items()
                  if (_sender(o, plan), plan.event_id) == (org, target_event_id)]:
        del timeline.care_plans[owner]
    if timeline.died_event_key == target:
        timeline.ClearField("died_at")
        timeline.died_event_key = ""
    elif found is None and not attended:
        timeline.cancelled_event_keys.append(target)
        if len(timeline.cancelled_event_keys) > MAX_CANCELLED:
            del timeline.cancelled_event_keys[: len(timeline.cancelled_event_keys) - MAX_CANCELLED]
    return found


def repeats_attendance(timeline: tl.PersonTimeline, event: ing.AcceptedEvent) -> bool:
    """An attendance of the event's organisation and encounter id is on the timeline already.

    A provider that corrects a record (an NHS number with a wrong check digit, say) and sends it
    again under a new event id reports the same attendance twice; counted twice, it would make
    a frequent attender of someone seen once and alert the practice twice. An event without an
    encounter id is never taken for a repeat.
    """
    encounter = event.clinical.spell_id
    return bool(encounter) and any(a.org == event.source_org and a.encounter_id == encounter
                                   for a in timeline.ed_attendances)


def _attend(timeline: tl.PersonTimeline, event: ing.AcceptedEvent, when: Timestamp, counted: bool) -> int:
    t = ns(when)
    prior = prior_ed_attendances(timeline, t)
    if counted:  # not cancelled before it came
        practice, locality = registration_at_event(timeline, event)
        _insert_by_time(timeline.ed_attendances, tl.EdAttendance(
            event_id=event.event_id, at=when, org=event.source_org, opted_out=timeline.consent.planning_opt_out,
            sector=event.source_sector, practice=practice, locality=locality, encounter_id=event.clinical.spell_id))
    return prior


def _insert_by_time(items: Any, item: Any) -> None:
    """Insert ``item`` into a repeated field kept sorted by ``at`` (after equal times)."""
    times = [ns(x.at) for x in items]
    items.insert(bisect.bisect_right(times, ns(item.at)), item)


def _note_age(timeline: tl.PersonTimeline, age_years: int, sex: ce.Sex.ValueType, when: Timestamp) -> None:
    if timeline.HasField("age_at") and ns(when) < ns(timeline.age_at):
        return
    timeline.age_years = age_years
    timeline.sex = sex
    timeline.age_at.CopyFrom(when)


def _die(timeline: tl.PersonTimeline, when: Timestamp, key: str) -> None:
    if not timeline.HasField("died_at") or ns(when) < ns(timeline.died_at):
        timeline.died_at.CopyFrom(when)
        timeline.died_event_key = key


def _note_record(timeline: tl.PersonTimeline, org: str, local_id: str) -> None:
    if not local_id:
        return
    for record in timeline.local_records:
        if record.org == org and record.local_id == local_id:
            return
    timeline.local_records.add(org=org, local_id=local_id)


def _note_involvement(timeline: tl.PersonTimeline, org: str, sector: ce.Sector.ValueType, when: Timestamp) -> None:
    involvement = timeline.involvement[org]
    if not involvement.HasField("last_event_at") or ns(when) >= ns(involvement.last_event_at):
        involvement.last_event_at.CopyFrom(when)
        involvement.sector = sector


def registration_at_event(timeline: tl.PersonTimeline, event: ing.AcceptedEvent) -> tuple[str, str]:
    """The practice and locality the person was registered with at ``event`` (already noted): the
    practice the event names, with its locality (or the person's, when the event names none and the
    person's practice is that one); else the registration in force. What indicators attribute a
    fact to with ``CAREHUB_INDICATORS_ATTRIBUTION=at_event`` (docs/indicator-semantics.md)."""
    practice = event.registered_practice
    if not practice:
        return timeline.registered_practice, timeline.locality
    if event.locality:
        return practice, event.locality
    return practice, timeline.locality if timeline.registered_practice == practice else ""


def _note_registration(timeline: tl.PersonTimeline, practice: str, locality: str, when: Timestamp) -> None:
    if timeline.HasField("registration_at") and ns(when) < ns(timeline.registration_at):
        return
    if locality:
        timeline.locality = locality
    elif practice != timeline.registered_practice:
        timeline.locality = ""
    timeline.registered_practice = practice
    timeline.registration_at.CopyFrom(when)


def care_plan_of(event: ing.AcceptedEvent) -> tl.CarePlan:
    """The plan a care-plan event speaks of: owned by the organisation it names, else by its sender
    (who then coordinates it, as before the contract named owners)."""
    detail = event.care_plan
    plan = tl.CarePlan(event_id=event.event_id, source_org=event.source_org,
                       owner_org=detail.owner_org or event.source_org, review_due=detail.review_due,
                       segment=detail.segment, contact_role=detail.contact_role, closed=detail.closed)
    plan.at.CopyFrom(event.event_time)
    return plan


def _sender(owner: str, plan: tl.CarePlan) -> str:
    """Who sent the plan's latest event; plans kept before senders were recorded were keyed by it."""
    return plan.source_org or owner


def _note_care_plan(timeline: tl.PersonTimeline, owner: str, plan: tl.CarePlan) -> None:
    """Keep the latest event (by event time) about ``owner``'s plan, whoever sent it.

    A closing event is kept as a closed plan rather than deleted: an older event about the same
    plan that arrives after it then changes nothing, instead of reopening what was closed.
    """
    kept = timeline.care_plans.get(owner)
    if kept is not None and ns(plan.at) < ns(kept.at):
        return
    timeline.care_plans[owner].CopyFrom(plan)
    timeline.care_plans[owner].owner_org = owner
    timeline.care_plans[owner].source_org = _sender(owner, plan)


def _note_care_home(timeline: tl.PersonTimeline, org: str, when: Timestamp) -> None:
    home = timeline.care_home
    if timeline.HasField("care_home") and ns(when) < ns(home.since):
        return
    home.org = org
    home.since.CopyFrom(when)


def _prune_ed(timeline: tl.PersonTimeline) -> None:
    horizon = ns(timeline.newest_event_at) - HISTORY_NS
    for items in (timeline.ed_attendances, timeline.contacts):
        drop = 0
        for item in items:
            if ns(item.at) >= horizon:
                break
            drop += 1
        if drop:
            del items[:drop]


def _prune_spells(timeline: tl.PersonTimeline) -> None:
    excess = len(timeline.spells) - MAX_SPELLS
    if excess <= 0:
        return

    def age(i: int) -> int:
        spell = timeline.spells[i]
        at = spell.discharged_at if spell.HasField("discharged_at") else spell.admitted_at
        return ns(at)

    done = [i for i, s in enumerate(timeline.spells) if s.status != tl.SPELL_STATUS_OPEN]
    for i in sorted(sorted(done, key=age)[:excess], reverse=True):
        del timeline.spells[i]


# --- identity merges and un-merges -------------------------------------------------------------


@dataclass
class Step:
    """What one linked event or handover gave: the enriched event to send, a handover to send."""

    event: tl.TimelineEvent | None = None
    handover: tl.TimelineHandover | None = None


def is_merge(linked: idn.LinkedEvent) -> bool:
    return linked.event.event_type == ce.EVENT_TYPE_IDENTITY_MERGE and linked.HasField("merge")


def recipient(handover: tl.TimelineHandover) -> str:
    """The person a handover is for (its partition key)."""
    return handover.from_person_id if handover.unmerge else handover.into_person_id


def step(state: PersonState, linked: idn.LinkedEvent) -> Step:
    """Apply one linked event, acting on a merge or un-merge copy as described in the module doc."""
    if not is_merge(linked):
        return Step(apply(state, linked))
    merge = linked.merge
    if not merge.unmerge and linked.person_id == merge.from_person_id:
        return hand_over(state, linked)
    if merge.unmerge and linked.person_id == merge.into_person_id:
        return split(state, linked)
    return Step()  # the receiver's copy: applied, with its view, when the handover comes


def _handover(linked: idn.LinkedEvent, state: bytes) -> tl.TimelineHandover:
    merge = linked.merge
    out = tl.TimelineHandover(into_person_id=merge.into_person_id, from_person_id=merge.from_person_id,
                              unmerge=merge.unmerge, state=state, merge_event_id=linked.event.event_id)
    out.linked.CopyFrom(linked)
    return out


def with_timeline(out: tl.TimelineEvent | None, timeline: tl.PersonTimeline) -> tl.TimelineEvent | None:
    """``out`` carrying the person's timeline after a merge or un-merge (``TimelineEvent.timeline``).

    Without what only an un-merge needs (absorbed persons, applied-event digests): a consumer
    recomputes its own per-person state from it (carehub/domain/risk/state.py).
    """
    if out is not None:
        out.timeline.CopyFrom(timeline)
        out.timeline.ClearField("absorbed")
        out.timeline.ClearField("applied_events")
    return out


def hand_over(state: PersonState, linked: idn.LinkedEvent) -> Step:
    """The absorbed person's copy of a merge: send its whole state to the survivor, keep a shell."""
    if event_digest(linked.event) in state.applied:
        return Step()
    handover = _handover(linked, state.to_bytes())  # without the merge event: the survivor applies it
    out = apply(state, linked)
    old = state.timeline
    shell = tl.PersonTimeline(person_id=old.person_id or linked.person_id, merged_into=linked.merge.into_person_id,
                              last_link_sequence=old.last_link_sequence)
    if old.HasField("newest_event_at"):
        shell.newest_event_at.CopyFrom(old.newest_event_at)
    state.timeline = shell
    return Step(with_timeline(out, shell), handover)


def receive(state: PersonState, handover: tl.TimelineHandover) -> Step:
    """Take a handover in: absorb a person (merge) or get one's own history back (un-merge)."""
    linked = idn.LinkedEvent()
    linked.CopyFrom(handover.linked)
    linked.person_id = recipient(handover)
    if event_digest(linked.event) in state.applied:
        return Step()  # taken in before
    if handover.unmerge:
        restored = PersonState.from_bytes(handover.state)
        restored.timeline.person_id = linked.person_id
        restored.timeline.merged_into = ""
        for digest in state.applied:  # what the shell saw meanwhile, so repeats stay repeats
            restored.applied.setdefault(digest, None)
        _bound_applied(restored)
        state.timeline, state.applied = restored.timeline, restored.applied
    else:
        absorb(state, handover)
    return Step(with_timeline(apply(state, linked), state.timeline))


def absorb(state: PersonState, handover: tl.TimelineHandover) -> None:
    """Merge the handed-over person into ``state``, keeping both sides apart for an un-merge.

    The merge's entry in ``absorbed`` holds the survivor's own state (with the merges before this
    one inside it) and the absorbed person's, and each event applied from then on is applied to
    one of them as well (``_apply_to_sides``). So the merges of a person form a tree, one merge
    per level, and the state kept grows with the merges in force, never with the events. The
    sides keep no applied-event digests: the joined person's are given to both on an un-merge.
    """
    _upgrade(state.timeline)
    own = _side(state.timeline)
    merge_states(state, PersonState.from_bytes(handover.state))
    state.timeline.ClearField("absorbed")  # the earlier merges are inside ``own``
    entry = state.timeline.absorbed[handover.from_person_id]
    entry.state = _side(tl.PersonTimeline.FromString(handover.state))
    entry.survivor_before = own
    entry.moved_records.extend(handover.linked.merge.moved_records)


def split(state: PersonState, linked: idn.LinkedEvent) -> Step:
    """The survivor's copy of an un-merge: keep its own history, hand the moved records' back.

    The merge undone may be the survivor's latest, or any one inside the tree of merges (chained,
    undone in any order): its two sides are what each person is without the other, and every
    merge above it is joined again from its sides. Without a record of the merge, the survivor
    keeps everything and the absorbed person gets an empty state.
    """
    if event_digest(linked.event) in state.applied:
        return Step()
    merge = linked.merge
    moved = {(r.source_org, r.local_id) for r in merge.moved_records}
    found = _detach(state, merge.from_person_id, moved)
    if found is None:
        given_back = PersonState.new(merge.from_person_id)
    else:
        survivor, given_back = found
        for side in (survivor, given_back):  # everything seen stays a repeat for both
            for digest in state.applied:
                side.applied.setdefault(digest, None)
            _bound_applied(side)
        survivor.timeline.person_id = state.timeline.person_id
        state.timeline, state.applied = survivor.timeline, survivor.applied
    given_back.timeline.person_id = merge.from_person_id
    return Step(with_timeline(apply(state, linked), state.timeline), _handover(linked, given_back.to_bytes()))


def _detach(state: PersonState, person_id: str,
            moved: set[tuple[str, str]]) -> tuple[PersonState, PersonState] | None:
    """``state`` without the person ``person_id`` that one of its merges absorbed, and that person; None if none did."""
    _upgrade(state.timeline)
    absorbed = state.timeline.absorbed
    entry = absorbed.get(person_id)
    if entry is not None:
        return PersonState.from_bytes(entry.survivor_before), PersonState.from_bytes(entry.state)
    for key, entry in absorbed.items():
        for side in ("survivor_before", "state"):
            found = _detach(PersonState.from_bytes(getattr(entry, side)), person_id, moved)
            if found is None:
                continue
            rest, given_back = found
            setattr(entry, side, rest.to_bytes())
            if side == "state":  # the records that went back no longer go with this merge's absorbed side
                gone = moved | {(r.org, r.local_id) for r in given_back.timeline.local_records}
                kept = [r for r in entry.moved_records if (r.source_org, r.local_id) not in gone]
                del entry.moved_records[:]
                entry.moved_records.extend(kept)
            joined = PersonState.from_bytes(entry.survivor_before)
            merge_states(joined, PersonState.from_bytes(entry.state))
            joined.timeline.ClearField("absorbed")
            joined.timeline.absorbed[key].CopyFrom(entry)
            return joined, given_back
    return None


def _apply_to_sides(timeline: tl.PersonTimeline, linked: idn.LinkedEvent) -> None:
    """Apply an event to the side of each merge in force its record belongs to (see ``absorb``)."""
    _upgrade(timeline)
    record = (linked.event.source_org, linked.event.person.local_id)
    for entry in timeline.absorbed.values():
        moved = any((r.source_org, r.local_id) == record for r in entry.moved_records)
        name = "state" if moved else "survivor_before"
        side = PersonState.from_bytes(getattr(entry, name))
        apply(side, linked)
        side.applied.clear()
        setattr(entry, name, side.to_bytes())


def _side(timeline: tl.PersonTimeline) -> bytes:
    """``timeline`` as one side of a merge: without its applied-event digests (see ``absorb``)."""
    side = tl.PersonTimeline()
    side.CopyFrom(timeline)
    side.ClearField("applied_events")
    return side.SerializeToString()


def _upgrade(timeline: tl.PersonTimeline) -> None:
    """Bring a merge kept as a log of what came since it (before the sides were kept up to date) to sides.

    The log is replayed onto the two states as they were at the merge; after a log cut short,
    the survivor's side is the whole person without that merge, and the absorbed side its state
    at the merge (what an un-merge gave then).
    """
    for person_id, entry in list(timeline.absorbed.items()):
        if entry.since_truncated:
            whole = tl.PersonTimeline()
            whole.CopyFrom(timeline)
            del whole.absorbed[person_id]
            entry.survivor_before = whole.SerializeToString()
        elif entry.since:
            moved = {(r.source_org, r.local_id) for r in entry.moved_records}
            survivor, absorbed = PersonState.from_bytes(entry.survivor_before), PersonState.from_bytes(entry.state)
            for item in entry.since:
                if item.HasField("handover"):
                    absorb(survivor, item.handover)
                elif (item.event.event.source_org, item.event.event.person.local_id) in moved:
                    apply(absorbed, item.event)
                else:
                    apply(survivor, item.event)
            entry.survivor_before, entry.state = survivor.to_bytes(), absorbed.to_bytes()
        else:
            continue
        del entry.since[:]
        entry.since_truncated = False


def _own_record(linked: idn.LinkedEvent) -> bool:
    """False for the copy of a merge or un-merge event applied to the person that does not hold its
    record afterwards (the absorbed person of a merge; of an un-merge, the person the record does
    not go back to): it changes nothing there but the applied events."""
    if not is_merge(linked):
        return True
    merge, event = linked.merge, linked.event
    goes_back = merge.unmerge and any((r.source_org, r.local_id) == (event.source_org, event.person.local_id)
                                      for r in merge.moved_records)
    return linked.person_id == (merge.from_person_id if goes_back else merge.into_person_id)


def merge_states(into: PersonState, other: PersonState) -> None:
    """Join ``other``'s history into ``into`` (in place); ``into``'s own absorbed persons stay its own."""
    a, b = into.timeline, other.timeline
    for spell in b.spells:
        _merge_spell(_find_spell(a, spell.org, spell.spell_id), spell)
    seen = {(e.org, e.event_id) for e in a.ed_attendances}
    encounters = {(e.org, e.encounter_id) for e in a.ed_attendances if e.encounter_id}
    joined = list(a.ed_attendances) + [e for e in b.ed_attendances if (e.org, e.event_id) not in seen
                                       and (e.org, e.encounter_id) not in encounters]  # one attendance sent twice
    joined.sort(key=lambda e: ns(e.at))
    del a.ed_attendances[:]
    a.ed_attendances.extend(joined)
    seen = {(c.org, c.event_id) for c in a.contacts}
    contacts = list(a.contacts) + [c for c in b.contacts if (c.org, c.event_id) not in seen]
    contacts.sort(key=lambda c: ns(c.at))
    del a.contacts[:]
    a.contacts.extend(contacts)
    if b.HasField("age_at") and (not a.HasField("age_at") or ns(b.age_at) > ns(a.age_at)):
        a.age_years = b.age_years
        a.sex = b.sex
        a.age_at.CopyFrom(b.age_at)
    for digest in other.applied:
        into.applied.setdefault(digest, None)
    _bound_applied(into)
    for record in b.local_records:
        _note_record(a, record.org, record.local_id)
    for org, involvement in b.involvement.items():
        _note_involvement(a, org, involvement.sector, involvement.last_event_at)
    if b.HasField("registration_at") and (not a.HasField("registration_at")
                                          or ns(b.registration_at) > ns(a.registration_at)):
        a.registered_practice, a.locality = b.registered_practice, b.locality
        a.registration_at.CopyFrom(b.registration_at)
    if b.HasField("care_home"):
        _note_care_home(a, b.care_home.org, b.care_home.since)
    for org, plan in b.care_plans.items():
        _note_care_plan(a, org, plan)
    if b.HasField("died_at"):
        _die(a, b.died_at, b.died_event_key)
    if b.consent.changed_at_sequence > a.consent.changed_at_sequence:
        a.consent.CopyFrom(b.consent)
    for key in b.cancelled_event_keys:
        if key not in a.cancelled_event_keys:
            a.cancelled_event_keys.append(key)
    if len(a.cancelled_event_keys) > MAX_CANCELLED:
        del a.cancelled_event_keys[: len(a.cancelled_event_keys) - MAX_CANCELLED]
    for name in ("last_gp_contact_at", "newest_event_at"):
        if b.HasField(name) and (not a.HasField(name) or ns(getattr(b, name)) > ns(getattr(a, name))):
            getattr(a, name).CopyFrom(getattr(b, name))
    a.last_link_sequence = max(a.last_link_sequence, b.last_link_sequence)
    if a.HasField("newest_event_at"):
        _prune_ed(a)
    _prune_spells(a)


def _merge_spell(mine: tl.Spell, theirs: tl.Spell) -> None:
    """One spell known to both persons (or only to ``theirs``, when ``mine`` is new): fill in the gaps."""
    if not mine.HasField("admitted_at") and theirs.HasField("admitted_at"):
        for name in ("admission_event_id", "admission_method", "admission_source", "age_at_admission",
                     "admission_opted_out", "admission_sector", "admission_practice", "admission_locality"):
            setattr(mine, name, getattr(theirs, name))
        mine.admitted_at.CopyFrom(theirs.admitted_at)
        del mine.provisional_diagnoses[:]
        mine.provisional_diagnoses.extend(theirs.provisional_diagnoses)
        del mine.provisional_procedures[:]
        mine.provisional_procedures.extend(theirs.provisional_procedures)
    if theirs.HasField("coded_at") and (not mine.HasField("coded_at") or ns(theirs.coded_at) > ns(mine.coded_at)):
        del mine.coded_diagnoses[:]
        mine.coded_diagnoses.extend(theirs.coded_diagnoses)
        del mine.coded_procedures[:]
        mine.coded_procedures.extend(theirs.coded_procedures)
        mine.coded_at.CopyFrom(theirs.coded_at)
    mine.transfer_count += theirs.transfer_count
    if theirs.HasField("last_transfer_at") and (not mine.HasField("last_transfer_at")
                                                or ns(theirs.last_transfer_at) >= ns(mine.last_transfer_at)):
        mine.last_location = theirs.last_location
        mine.last_transfer_at.CopyFrom(theirs.last_transfer_at)
    if not mine.HasField("discharged_at") and theirs.HasField("discharged_at"):
        mine.discharge_event_id, mine.discharge_destination = theirs.discharge_event_id, theirs.discharge_destination
        mine.discharged_at.CopyFrom(theirs.discharged_at)
        mine.discharge_opted_out = theirs.discharge_opted_out
        mine.discharge_practice, mine.discharge_locality = theirs.discharge_practice, theirs.discharge_locality
    if tl.SPELL_STATUS_CANCELLED in (mine.status, theirs.status):
        mine.status = tl.SPELL_STATUS_CANCELLED
    elif mine.HasField("discharged_at"):
        mine.status = tl.SPELL_STATUS_CLOSED
    elif tl.SPELL_STATUS_OPEN in (mine.status, theirs.status):
        mine.status = tl.SPELL_STATUS_OPEN


def _bound_applied(state: PersonState) -> None:
    excess = len(state.applied) - MAX_APPLIED
    for digest in list(state.applied)[:max(excess, 0)]:
        del state.applied[digest]
