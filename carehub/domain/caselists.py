"""Case-finding lists: each practice's and each team's people in the top risk tiers. Pure; no Kafka.

A practice's list holds its registered people; a community or social-care team's list holds
the people it has seen in the last ``involved_within_days`` (an organisation of that sector
with an event for the person). On either, a person is named **only by that organisation's own
record id** (the first it sent, as alerts name them), so an organisation without its own record
for a person does not see them. The tiers are placed against cut-offs over the whole
population's scores (:func:`carehub.domain.risk.tier_cutoffs`), the listed tiers are the top
``tiers`` of the model (two by default: very high and high).

Consent, as the timeline records it (README "Timeline"), is honoured in two places:

- a **direct-care opt-out** keeps the person off every list: a list shares what other
  organisations reported (admissions, attendances) with the practice or team, which is the
  sharing the person declined (the alerts, likewise, go only to the organisation that sent the
  event);
- a **planning opt-out** (the national data opt-out) leaves the person out of the population
  the cut-offs are computed over, as the indicators leave them out of every count; case finding
  is direct care, so they stay on their own practice's and teams' lists.

Deceased people are on no list and out of the population.

"New this week": each list remembers when each of its people entered it, by the wall clock
(when the list first showed them, which is what a practice reviewing its list each week asks
about); an entry is new while that is less than ``new_within_days`` (7) ago. Someone who
leaves a list and comes back is new again. Everything else runs on the hub's clock, event
time: the assessments' as-of (the end of the newest event day seen) ends the involvement
window, as it ends the factors' windows.

Care plans: the timeline keeps each owner organisation's open plan from its latest care-plan
event (``EVENT_TYPE_CARE_PLAN``); an entry shows the list's own organisation's plan when it owns
one, so an owner sees its own review fall due, and otherwise the plan with the latest event (its
owner, when, its review date and contact role), or that none was received, which the hub cannot
tell from "no plan". A plan is **overdue** once its whole review day lies before the list's as-of,
the same event clock that ends the involvement window, so the same events give the same list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from carehub.domain.dates import day_start_ns
from carehub.domain.risk.model import RiskModel
from carehub.domain.risk.records import cutoffs_record, local_ids
from carehub.domain.risk.tiers import TierCutoffs, tier_cutoffs, tier_of
from carehub.domain.timeline import DAY_NS, ns
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import risk_pb2 as rk

PRACTICE = "registered_practice"
TEAM_ROLES = {ce.SECTOR_COMMUNITY: "community", ce.SECTOR_SOCIAL_CARE: "social_care"}  # risk.records.TEAM_SECTORS
DEFAULT_TIERS = 2
NEW_WITHIN_DAYS = 7

Key = tuple[str, str]  # (organisation, its local record id)


@dataclass(frozen=True, slots=True)
class Membership:
    org: str
    role: str
    local_id: str


def counted(record: rk.RiskAssessment) -> bool:
    """In the population the cut-offs are made over: alive, and no planning opt-out."""
    return not record.deceased and not record.planning_opt_out


def listable(record: rk.RiskAssessment) -> bool:
    """May be on a case list at all: alive, and no direct-care opt-out."""
    return not record.deceased and not record.direct_care_opt_out


def memberships(record: rk.RiskAssessment, clock_ns: int, involved_within_days: int) -> list[Membership]:
    """The lists the person belongs on when in a listed tier: their practice's, their teams'."""
    if not listable(record):
        return []
    ids = local_ids(record.local_records)
    out: list[Membership] = []
    practice = record.registered_practice
    if practice and practice in ids:
        out.append(Membership(practice, PRACTICE, ids[practice]))
    since = clock_ns - involved_within_days * DAY_NS
    for org, involvement in sorted(record.involvement.items()):
        role = TEAM_ROLES.get(involvement.sector)
        if (role is None or org == practice or org not in ids or not involvement.HasField("last_event_at")
                or ns(involvement.last_event_at) < since):
            continue
        out.append(Membership(org, role, ids[org]))
    return out


def care_plan_status(record: rk.RiskAssessment, clock_ns: int, org: str = "") -> rk.CarePlanStatus:
    """``org``'s own open plan, else the open plan with the latest care-plan event, else UNKNOWN;
    with its review date, overdue when that whole day is before ``clock_ns`` (the hub's event
    clock, never the wall clock)."""
    open_plans = [(owner, plan) for owner, plan in record.care_plans.items() if not plan.closed]
    if not open_plans:
        return rk.CarePlanStatus(presence=rk.CARE_PLAN_PRESENCE_UNKNOWN)
    owner, plan = max(open_plans, key=lambda kv: (kv[0] == org, ns(kv[1].at), kv[0]))
    out = rk.CarePlanStatus(presence=rk.CARE_PLAN_PRESENCE_RECORDED, org=owner, contact_role=plan.contact_role,
                            segment=plan.segment)
    out.recorded_at.CopyFrom(plan.at)
    due_ns = day_start_ns(plan.review_due)
    if due_ns is not None:
        out.due.FromNanoseconds(due_ns)
        out.overdue = clock_ns >= due_ns + DAY_NS
    return out


def is_new(listed_since_ns: int, now_ns: int, new_within_days: int = NEW_WITHIN_DAYS) -> bool:
    """Entered the list less than ``new_within_days`` before ``now_ns``."""
    return now_ns - listed_since_ns < new_within_days * DAY_NS


def listed_tiers(model: RiskModel, tiers: int = DEFAULT_TIERS) -> tuple[str, ...]:
    """The names of the model's top ``tiers`` tiers (never the last, which takes everyone left)."""
    names = tuple(t.name for t in model.tiers)
    return names[: max(0, min(tiers, len(names) - 1))]


class CaseBook:
    """Everyone's latest assessment, the population cut-offs, and when each listed person entered each list.

    ``put`` every published assessment (None: the person is gone), ``recompute_cutoffs`` on a
    schedule, and ``lists`` for the case lists now. Assessments made with another model (label
    or digest) are kept out: their scores are not comparable. ``next_flip_ns`` says when an
    entry stops being new, so the lists change then even if no assessment does.
    """

    def __init__(self, model: RiskModel, tiers: int = DEFAULT_TIERS, involved_within_days: int = 365,
                 new_within_days: int = NEW_WITHIN_DAYS) -> None:
        self.model = model
        self.tiers = listed_tiers(model, tiers)
        self.involved_within_days = involved_within_days
        self.new_within_days = new_within_days
        self.people: dict[str, rk.RiskAssessment] = {}
        self.other_model = 0  # assessments kept out, made with another model
        self.since: dict[Key, int] = {}
        self.cutoffs: TierCutoffs | None = None
        self.cutoffs_as_of: int | None = None
        self.clock_ns = 0  # the hub's clock: the newest as-of among the assessments taken (0 before any)
        self.next_flip_ns: int | None = None  # when the earliest "new" entry stops being new

    # -- assessments ------------------------------------------------------------------------
    def put(self, person_id: str, record: rk.RiskAssessment | None) -> None:
        if record is not None and (record.model, record.digest) != (self.model.label, self.model.digest):
            self.other_model += 1
            record = None
        if record is None:
            self.people.pop(person_id, None)
        else:
            self.people[person_id] = record
            self.clock_ns = max(self.clock_ns, record.as_of.ToNanoseconds())

    def seed(self, published: Iterable[rk.CaseList]) -> None:
        """Take over when each person entered each list from lists already published (a restart)."""
        for case_list in published:
            for entry in case_list.entries:
                self.since[(case_list.org, entry.local_id)] = entry.listed_since.ToNanoseconds()

    # -- cut-offs ---------------------------------------------------------------------------
    def recompute_cutoffs(self) -> TierCutoffs:
        """The tier cut-offs over the counted population's scores (alive, no planning opt-out)."""
        population = [r for r in self.people.values() if counted(r)]
        self.cutoffs = tier_cutoffs((r.score for r in population), self.model)
        self.cutoffs_as_of = max((r.as_of.ToNanoseconds() for r in population), default=None)
        return self.cutoffs

    def cutoffs_record(self, computed_at: datetime) -> rk.RiskCutoffs | None:
        if self.cutoffs is None:
            return None
        return cutoffs_record(self.cutoffs, self.cutoffs_as_of, computed_at)

    # -- lists ------------------------------------------------------------------------------
    def lists(self, computed_at: datetime) -> dict[str, rk.CaseList]:
        """Every organisation's list at ``computed_at`` (organisations with nobody listed are left out).

        Entries are ordered by score, highest first, then record id. Entering and leaving are
        noted here: the first call that lists a person for an organisation sets their
        ``listed_since`` to ``computed_at``.
        """
        cutoffs = self.cutoffs if self.cutoffs is not None else self.recompute_cutoffs()
        clock = self.clock_ns
        now = int(computed_at.timestamp() * 1e9)
        new_ns = self.new_within_days * DAY_NS
        flips: list[int] = []
        listed = set(self.tiers)
        entries: dict[str, list[rk.CaseListEntry]] = {}
        now_listed: set[Key] = set()
        for record in self.people.values():
            tier = tier_of(record.score, cutoffs)
            if tier not in listed:
                continue
            for m in memberships(record, clock, self.involved_within_days):
                key = (m.org, m.local_id)
                if key in now_listed:  # one record id of one organisation: listed once
                    continue
                now_listed.add(key)
                since = self.since.setdefault(key, now)
                new = is_new(since, now, self.new_within_days)
                if new:
                    flips.append(since + new_ns)
                entry = rk.CaseListEntry(local_id=m.local_id, role=m.role, score=record.score, risk=record.risk,
                                         tier=tier, segment=record.segment, factors=record.factors,
                                         new_this_week=new, care_plan=care_plan_status(record, clock, m.org))
                entry.listed_since.FromNanoseconds(since)
                entry.assessed_as_of.CopyFrom(record.as_of)
                entries.setdefault(m.org, []).append(entry)
        for key in [k for k in self.since if k not in now_listed]:
            del self.since[key]
        self.next_flip_ns = min(flips, default=None)
        cutoffs_out = cutoffs_record(cutoffs, self.cutoffs_as_of, computed_at)
        out: dict[str, rk.CaseList] = {}
        for org, rows in entries.items():
            rows.sort(key=lambda e: (-e.score, e.local_id))
            out[org] = self.case_list(org, rows, cutoffs_out, clock, computed_at)
        return out

    def case_list(self, org: str, rows: Iterable[rk.CaseListEntry], cutoffs: rk.RiskCutoffs | None, clock_ns: int,
                  computed_at: datetime) -> rk.CaseList:
        rows = list(rows)
        out = rk.CaseList(org=org, model=self.model.label, digest=self.model.digest, tiers=self.tiers, entries=rows,
                          new_this_week=sum(e.new_this_week for e in rows))
        if cutoffs is not None:
            out.cutoffs.CopyFrom(cutoffs)
        if clock_ns:
            out.as_of.FromNanoseconds(clock_ns)
        out.computed_at.FromDatetime(computed_at)
        return out


def without_time(case_list: rk.CaseList) -> bytes:
    """A list's content without the moments it was computed: equal bytes need not be published again."""
    copy = rk.CaseList()
    copy.CopyFrom(case_list)
    copy.ClearField("computed_at")
    copy.cutoffs.ClearField("computed_at")
    return copy.SerializeToString(deterministic=True)


def only_new(case_list: rk.CaseList) -> rk.CaseList:
    """The list with only the entries new this week (CaseListRequest.new_only)."""
    out = rk.CaseList()
    out.CopyFrom(case_list)
    del out.entries[:]
    out.entries.extend(e for e in case_list.entries if e.new_this_week)
    return out


def by_org(lists: Mapping[str, rk.CaseList], org: str) -> rk.CaseList:
    """``org``'s list, or an empty one naming it."""
    return lists.get(org) or rk.CaseList(org=org)
