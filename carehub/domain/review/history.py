"""What the reviews stage remembers of a person, event by event: the material of review packs.

Pure: a ``ReviewPerson`` (protos/carehub/v1/review.proto) and one enriched timeline event in,
the same person after it. Why a state of its own: a pack shows the 90 days before an admission
across organisations (contacts of every sector, referrals, social-care events, care-home
moves), and the timeline's ``PersonTimeline`` keeps only part of that (GP and community
contacts, ED attendances, each organisation's last involvement, the care home lived in now).
Each event on ``carehub.timeline.events`` carries what it was and the person's view after it,
so the stage keeps what it needs: the events of the last 455 days (a year of admissions, each
with its 90 days), every spell as its latest view shows it, and who knows the person.

Cancellations remove the event they name, or are remembered until it arrives (as the timeline
does). A repeated event is kept once (keyed by organisation and event id).

**Merges.** An identity merge moves history that no single event carries. The timeline sends
its merge and un-merge events with the person's whole timeline after them, and
:func:`rebuild` takes from it what it holds: spells, GP and community contacts, ED attendances,
care plans, registration and consent. What it does not hold is kept from this person's own
memory (referrals, contacts of other sectors, social-care events, care-home moves), so of the
*absorbed* person's such events only what the timeline summarises survives: each social-care
organisation's last event, and the care home they live in now with its date.
"""

from __future__ import annotations

import bisect

from carehub.domain.timeline import (
    DAY_NS,
    FOLLOW_UP_SECTORS,
    MAX_CANCELLED,
    MAX_SPELLS,
    event_key,
    is_merge,
    ns,
    spell_view,
)
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import review_pb2 as rv
from carehub.v1 import timeline_pb2 as tl

HISTORY_NS = (365 + 90) * DAY_NS  # events kept before the newest: a year of admissions, each with its 90 days
MAX_ITEMS = 3000  # and at most this many (the newest)

APPLIED = "applied"
REBUILT = "rebuilt"        # a merge or un-merge: rebuilt from the timeline it carried
ABSORBED = "absorbed"      # merged into another person, who now has the history (and the packs)
UNRESOLVED = "unresolved"  # a merge without the timeline: left as it was

KINDS: dict[int, int] = {
    ce.EVENT_TYPE_GP_CONTACT: rv.REMEMBERED_KIND_CONTACT,
    ce.EVENT_TYPE_REFERRAL: rv.REMEMBERED_KIND_CONTACT,
    ce.EVENT_TYPE_ED_ATTENDANCE: rv.REMEMBERED_KIND_ED_ATTENDANCE,
    ce.EVENT_TYPE_CARE_HOME_ADMISSION: rv.REMEMBERED_KIND_CARE_HOME_MOVE,
    ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT: rv.REMEMBERED_KIND_SOCIAL_CARE,
    ce.EVENT_TYPE_CARE_PLAN: rv.REMEMBERED_KIND_CARE_PLAN,
}
# What the timeline itself keeps (and a merge therefore carries whole)
CARRIED = frozenset({rv.REMEMBERED_KIND_ED_ATTENDANCE})


def _carried(item: rv.RememberedEvent) -> bool:
    return item.kind in CARRIED or (item.event_type == ce.EVENT_TYPE_GP_CONTACT and item.sector in FOLLOW_UP_SECTORS)


def kind_of(event_type: int, sector: int) -> int | None:
    """The remembered kind of an event, None for one a pack does not list (spells come from views)."""
    kind = KINDS.get(event_type)
    if kind == rv.REMEMBERED_KIND_CONTACT and sector == ce.SECTOR_SOCIAL_CARE:
        return rv.REMEMBERED_KIND_SOCIAL_CARE
    return kind


def take(person: rv.ReviewPerson, event: tl.TimelineEvent) -> str:
    """Apply one enriched timeline event to ``person`` (in place); which of the outcomes above."""
    linked = event.linked
    if is_merge(linked):
        if not event.HasField("timeline"):
            return UNRESOLVED
        if event.timeline.merged_into:
            into = event.timeline.merged_into
            person.Clear()
            person.merged_into = into  # no tombstones: the person it joined publishes the same packs
            return ABSORBED
        rebuild(person, event.timeline)
        _note_view(person, event.view)
        return REBUILT
    e, view = linked.event, event.view
    t = ns(e.event_time)
    key = event_key(e.source_org, e.event_id)
    person.merged_into = ""
    if view.HasField("spell"):
        _put_spell(person, view.spell, view.planning_opt_out if e.event_type == ce.EVENT_TYPE_ADMISSION else None)
    if e.event_type == ce.EVENT_TYPE_CANCELLATION:
        target = event_key(e.source_org, e.target_event_id)
        kept = [i for i in person.items if i.key != target]
        found = len(kept) != len(person.items) or view.HasField("spell")
        if len(kept) != len(person.items):
            del person.items[:]
            person.items.extend(kept)
        if not found and target not in person.cancelled:
            person.cancelled.append(target)
            del person.cancelled[:-MAX_CANCELLED]
    else:
        kind = kind_of(e.event_type, e.source_sector)
        if view.repeated_attendance:  # the attendance is held already, under its first event id
            kind = None
        if kind is not None and key not in person.cancelled and not any(i.key == key for i in person.items):
            _insert(person, rv.RememberedEvent(key=key, at_ns=t, org=e.source_org, sector=e.source_sector,
                                               kind=kind, event_type=e.event_type))  # type: ignore[arg-type]
    person.newest_ns = max(person.newest_ns, t)
    _note_view(person, view)
    _prune(person)
    return APPLIED


def _insert(person: rv.ReviewPerson, item: rv.RememberedEvent) -> None:
    at = [i.at_ns for i in person.items]
    position = bisect.bisect_right(at, item.at_ns)
    person.items.insert(position, item)


def _put_spell(person: rv.ReviewPerson, view: tl.SpellView, opted_out: bool | None) -> None:
    for held in person.spells:
        if (held.view.org, held.view.spell_id) == (view.org, view.spell_id):
            held.view.CopyFrom(view)
            if opted_out is not None:
                held.admission_opted_out = opted_out
            return
    person.spells.add(view=view, admission_opted_out=bool(opted_out))
    excess = len(person.spells) - MAX_SPELLS
    if excess > 0:  # the oldest that are not open go first, as in the timeline
        done = sorted((i for i, s in enumerate(person.spells) if s.view.status != tl.SPELL_STATUS_OPEN),
                      key=lambda i: _spell_age(person.spells[i].view))[:excess]
        kept = [s for i, s in enumerate(person.spells) if i not in set(done)]
        del person.spells[:]
        person.spells.extend(kept)


def _spell_age(view: tl.SpellView) -> int:
    if view.HasField("discharged_at"):
        return ns(view.discharged_at)
    return ns(view.admitted_at) if view.HasField("admitted_at") else 0


def _note_view(person: rv.ReviewPerson, view: tl.TimelineView) -> None:
    person.registered_practice = view.registered_practice
    person.locality = view.locality
    del person.local_records[:]
    person.local_records.extend(view.local_records)
    person.care_plans.clear()
    for org, plan in view.care_plans.items():
        person.care_plans[org].CopyFrom(plan)
    person.direct_care_opt_out = view.direct_care_opt_out
    person.planning_opt_out = view.planning_opt_out
    person.deceased = view.deceased


def _prune(person: rv.ReviewPerson) -> None:
    horizon = person.newest_ns - HISTORY_NS
    if (person.items and person.items[0].at_ns < horizon) or len(person.items) > MAX_ITEMS:
        kept = [i for i in person.items if i.at_ns >= horizon][-MAX_ITEMS:]
        del person.items[:]
        person.items.extend(kept)


def rebuild(person: rv.ReviewPerson, timeline: tl.PersonTimeline) -> None:
    """``person`` from the whole timeline a merge or un-merge carried, keeping what only this stage remembers."""
    own = [i for i in person.items if not _carried(i)]
    items: list[rv.RememberedEvent] = list(own)
    keys = {i.key for i in own}

    def add(item: rv.RememberedEvent) -> None:
        if item.key not in keys:
            keys.add(item.key)
            items.append(item)

    for contact in timeline.contacts:
        involvement = timeline.involvement.get(contact.org)
        sector = involvement.sector if involvement is not None and involvement.sector in FOLLOW_UP_SECTORS \
            else ce.SECTOR_PRIMARY_CARE
        add(rv.RememberedEvent(key=event_key(contact.org, contact.event_id), at_ns=ns(contact.at), org=contact.org,
                               sector=sector, kind=rv.REMEMBERED_KIND_CONTACT, event_type=ce.EVENT_TYPE_GP_CONTACT))
    for attendance in timeline.ed_attendances:
        add(rv.RememberedEvent(key=event_key(attendance.org, attendance.event_id), at_ns=ns(attendance.at),
                               org=attendance.org, sector=attendance.sector, kind=rv.REMEMBERED_KIND_ED_ATTENDANCE,
                               event_type=ce.EVENT_TYPE_ED_ATTENDANCE))
    for org, involvement in sorted(timeline.involvement.items()):
        if involvement.sector == ce.SECTOR_SOCIAL_CARE and involvement.HasField("last_event_at"):
            at = ns(involvement.last_event_at)
            if not any(i.org == org and i.at_ns == at for i in items):
                add(rv.RememberedEvent(key=f"{org}/last-involvement", at_ns=at, org=org,
                                       sector=ce.SECTOR_SOCIAL_CARE, kind=rv.REMEMBERED_KIND_SOCIAL_CARE,
                                       event_type=ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT))
    if timeline.HasField("care_home") and timeline.care_home.HasField("since"):
        at = ns(timeline.care_home.since)
        if not any(i.kind == rv.REMEMBERED_KIND_CARE_HOME_MOVE and i.at_ns == at for i in items):
            home = timeline.care_home.org
            add(rv.RememberedEvent(key=f"{home}/care-home-since", at_ns=at, org=home,
                                   sector=ce.SECTOR_CARE_HOME, kind=rv.REMEMBERED_KIND_CARE_HOME_MOVE,
                                   event_type=ce.EVENT_TYPE_CARE_HOME_ADMISSION))
    items.sort(key=lambda i: i.at_ns)
    del person.items[:]
    person.items.extend(items)
    held = {(s.org, s.spell_id) for s in timeline.spells}
    del person.spells[:]
    for spell in timeline.spells:
        person.spells.add(view=spell_view(spell), admission_opted_out=spell.admission_opted_out)
    # packs of spells now held by another person are theirs to publish: forgotten here, not withdrawn
    for pack_id, published in list(person.published.items()):
        if (published.spell_org, published.spell_id) not in held:
            del person.published[pack_id]
    del person.cancelled[:]
    person.cancelled.extend(timeline.cancelled_event_keys)
    person.registered_practice = timeline.registered_practice
    person.locality = timeline.locality
    del person.local_records[:]
    person.local_records.extend(timeline.local_records)
    person.care_plans.clear()
    for org, plan in timeline.care_plans.items():
        if not plan.closed:
            person.care_plans[org].CopyFrom(plan)
    person.direct_care_opt_out = timeline.consent.direct_care_opt_out
    person.planning_opt_out = timeline.consent.planning_opt_out
    person.deceased = timeline.HasField("died_at")
    if timeline.HasField("newest_event_at"):
        person.newest_ns = max(person.newest_ns, ns(timeline.newest_event_at))
    person.merged_into = ""
    _prune(person)
