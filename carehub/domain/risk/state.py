"""What the risk factors are computed from: a small per-person state, kept up to date event by event.

Why a state of its own: a risk stage consumes the timeline's enriched events
(``TimelineEvent``) and must update a person's factors as each one arrives, without the
whole ``PersonTimeline``. :class:`FactorState` is the part of the timeline the factors read
(spells with their diagnoses, ED attendances, care-home residence, social-care involvement,
death, age), and two functions produce it:

- :func:`factor_state` projects it from a ``PersonTimeline`` (recomputation from scratch);
- :func:`advance` updates it from the previous state and one ``TimelineEvent``.

Both must give the same state for the same events (tests/unit/test_risk_state.py checks this
on random event sequences), so :func:`advance` follows carehub/domain/timeline.py's rules where
the event's view does not already carry the answer: ED attendances cancelled before they
arrive, cancellations that name nothing yet, the two-year history kept and the bound on spells.
Spells are read from the event's ``SpellView`` (the same projection ``factor_state`` applies to
each spell), and care-home residence, death and social-care involvement from the view.

An identity merge or un-merge moves history between persons that no single event carries:
:func:`advance` returns None for those, and the stage recomputes with :func:`factor_state`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from carehub.domain.codelists import normal
from carehub.domain.timeline import (
    FOLLOW_UP_SECTORS,
    HISTORY_NS,
    MAX_CANCELLED,
    MAX_SPELLS,
    event_key,
    is_merge,
    ns,
    spell_view,
)
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import timeline_pb2 as tl

SpellKey = tuple[str, str]  # (organisation, spell id)


@dataclass(frozen=True, slots=True)
class SpellRecord:
    """A spell as the factors read it: from a ``SpellView`` (coded diagnoses once coded, else working ones)."""

    status: int  # tl.SpellStatus
    admitted_ns: int | None
    discharged_ns: int | None
    method: int  # ce.AdmissionMethod
    diagnoses: tuple[str, ...]  # normalised (upper case, no dot), primary first
    procedures: tuple[str, ...]

    @classmethod
    def of(cls, view: tl.SpellView) -> SpellRecord:
        return cls(
            status=view.status,
            admitted_ns=ns(view.admitted_at) if view.HasField("admitted_at") else None,
            discharged_ns=ns(view.discharged_at) if view.HasField("discharged_at") else None,
            method=view.admission_method,
            diagnoses=tuple(normal(d.code) for d in view.diagnoses),
            procedures=tuple(normal(p.code) for p in view.procedures),
        )

    @property
    def cancelled(self) -> bool:
        return self.status == tl.SPELL_STATUS_CANCELLED

    def _age(self) -> int:
        """What the timeline prunes the oldest spells by (``_prune_spells``)."""
        if self.discharged_ns is not None:
            return self.discharged_ns
        return self.admitted_ns if self.admitted_ns is not None else 0


@dataclass(frozen=True)
class FactorState:
    """One person's risk inputs. Immutable: :func:`advance` returns a new one."""

    spells: Mapping[SpellKey, SpellRecord] = field(default_factory=dict)  # in the order first seen
    ed_attendances: Mapping[str, int] = field(default_factory=dict)  # "org/event_id" -> event time (ns)
    # GP and community contacts, kept only to know which cancellations the timeline forgets
    contacts: Mapping[str, int] = field(default_factory=dict)
    cancelled: tuple[str, ...] = ()  # "org/event_id" cancelled before it arrived, oldest first
    age_years: int = -1  # of the event with the latest event time; -1 unknown
    age_at_ns: int | None = None
    care_home: bool = False
    deceased: bool = False
    social_care_last_ns: int | None = None  # latest event of an organisation in the social-care sector
    newest_ns: int | None = None


def factor_state(timeline: tl.PersonTimeline) -> FactorState:
    """The state of a person from their whole timeline (recomputation from scratch)."""
    return FactorState(
        spells={(s.org, s.spell_id): SpellRecord.of(spell_view(s)) for s in timeline.spells},
        ed_attendances={event_key(a.org, a.event_id): ns(a.at) for a in timeline.ed_attendances},
        contacts={event_key(c.org, c.event_id): ns(c.at) for c in timeline.contacts},
        cancelled=tuple(timeline.cancelled_event_keys),
        age_years=timeline.age_years if timeline.HasField("age_at") else -1,
        age_at_ns=ns(timeline.age_at) if timeline.HasField("age_at") else None,
        care_home=timeline.HasField("care_home"),
        deceased=timeline.HasField("died_at"),
        social_care_last_ns=_social_care_last(timeline.involvement),
        newest_ns=ns(timeline.newest_event_at) if timeline.HasField("newest_event_at") else None,
    )


def advance(state: FactorState, event: tl.TimelineEvent) -> FactorState | None:
    """``state`` after one enriched event from the timeline; None for a merge or un-merge (recompute)."""
    linked = event.linked
    if is_merge(linked):
        return None
    e, view = linked.event, event.view
    t = ns(e.event_time)
    key = event_key(e.source_org, e.event_id)
    spells = dict(state.spells)
    ed = dict(state.ed_attendances)
    contacts = dict(state.contacts)
    cancelled = state.cancelled
    kind = e.event_type
    if view.HasField("spell"):
        spells[(view.spell.org, view.spell.spell_id)] = SpellRecord.of(view.spell)
    if kind == ce.EVENT_TYPE_ED_ATTENDANCE:
        if key not in cancelled and not view.repeated_attendance:  # a repeat is the attendance already held
            ed[key] = t
    elif kind == ce.EVENT_TYPE_GP_CONTACT:
        if e.source_sector in FOLLOW_UP_SECTORS and key not in cancelled:
            contacts[key] = t
    elif kind == ce.EVENT_TYPE_CANCELLATION:
        target = event_key(e.source_org, e.target_event_id)
        attended = ed.pop(target, None) is not None
        attended = contacts.pop(target, None) is not None or attended
        found = view.HasField("spell")
        death_undone = state.deceased and not view.deceased  # the cancelled event recorded the death
        if not (found or attended or death_undone):
            cancelled = (*cancelled, target)[-MAX_CANCELLED:]
    age_years, age_at = state.age_years, state.age_at_ns
    if age_at is None or t >= age_at:
        age_years, age_at = e.person.age_years, t
    newest = t if state.newest_ns is None else max(state.newest_ns, t)
    horizon = newest - HISTORY_NS
    return FactorState(
        spells=_bounded(spells),
        ed_attendances={k: at for k, at in ed.items() if at >= horizon},
        contacts={k: at for k, at in contacts.items() if at >= horizon},
        cancelled=cancelled,
        age_years=age_years,
        age_at_ns=age_at,
        care_home=view.care_home_resident,
        deceased=view.deceased,
        social_care_last_ns=_social_care_last(view.involvement),
        newest_ns=newest,
    )


def _social_care_last(involvement: Mapping[str, tl.Involvement]) -> int | None:
    times = [ns(i.last_event_at) for i in involvement.values()
             if i.sector == ce.SECTOR_SOCIAL_CARE and i.HasField("last_event_at")]
    return max(times) if times else None


def _bounded(spells: dict[SpellKey, SpellRecord]) -> dict[SpellKey, SpellRecord]:
    """At most MAX_SPELLS spells: the oldest that are not open go first, as in the timeline."""
    excess = len(spells) - MAX_SPELLS
    if excess <= 0:
        return spells
    items = list(spells.items())
    done = [i for i, (_, s) in enumerate(items) if s.status != tl.SPELL_STATUS_OPEN]
    dropped = set(sorted(done, key=lambda i: items[i][1]._age())[:excess])
    return {k: s for i, (k, s) in enumerate(items) if i not in dropped}
