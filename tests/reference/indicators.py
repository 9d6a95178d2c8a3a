"""A batch reference for the indicator values of docs/indicator-semantics.md.

Written from the contract alone, without the streaming engine's code, so that an integration
test can require the engine's values to equal these exactly. Simple over fast: the whole linked
log is read into per-person event lists, and every fact is derived at the end.

    values = reference_values(linked_events, Path("carehub/domain/data"))
    values[("acsc_all", "region", "12m")]  # (numerator, denominator or None, provisional)

Keys emitted, per indicator (only for the unit kinds in its ``units``):
- every unit of at least one *fact* of the indicator: a fact of its ``fact`` type, not cancelled,
  not left out by the planning opt-out, passing its ``filter``, on any day (also days the lag or
  the windows leave out). A fact's units: ``region``, ``practice:<code>`` (or
  ``practice:unregistered``) and ``locality:<code>`` (or ``locality:unknown``) of the person's
  registration now, ``provider:<org>`` and ``sector:<name>`` of the fact;
- for ``rate`` indicators also ``region`` and every ``practice:``/``locality:`` unit whose
  registered population (with the indicator's ``population_min_age``) is above 0;
- for each such unit, every window of the indicator: ``30d``, ``12m``, ``now`` and, for
  ``month``, one ``YYYY-MM`` per calendar month overlapping the 12m window.
Values: (numerator, denominator, provisional numerator facts). The denominator is the number of
facts in the window for ``proportion``, the registered population (the same in every window)
for ``rate`` on region/practice/locality, and None for ``count`` and for ``rate`` on
provider/sector.

Readings of the contract where it leaves room (each one the engine must share):
- Link order: events are applied sorted (stably) by ``link_sequence``. A repeat of
  ``(source_org, event_id)`` is dropped when the person it is linked to already holds that key
  (after merges, the survivor holds the absorbed person's keys; an absorbed event whose key the
  survivor already holds is dropped at the merge).
- Merges: of the two copies (same ``(source_org, event_id)``) the first seen acts, the other is
  ignored. The absorbed person's events move to the survivor, then the merge event itself is
  applied to the survivor (``into_person_id``) as an ordinary event (its registration and age
  take part). A ``merge`` copy without ``PersonMerge`` set is an ordinary event.
- Un-merges: the survivor's events whose ``(source_org, person.local_id)`` is one of
  ``moved_records`` go to the restored person; both persons' registration, age and consent are
  rebuilt by re-applying their remaining events in link order (the opt-out flags taken when each
  event was first applied are kept). The un-merge event itself is an ordinary event of the
  person holding its record afterwards: the survivor, or the restored person when it was sent
  under one of the records that go back.
- Every applied event (cancellations, merges, cancelled events too) counts for as-of,
  registration (when it carries ``registered_practice``) and age now.
- Registration is kept incrementally: an event with practice P at time t replaces the current
  one when there is none or t >= its time; its locality is the event's, or, when the event has
  none, the current locality if the current practice is P, else unknown.
- Cancellation: a CANCELLATION cancels ``(its source_org, target_event_id)`` among the events of
  the person it is linked to (and of whoever that person is merged with), whichever arrives
  first. A cancelled ADMISSION cancels its spell (the spell then counts nowhere, not even as a
  death by destination 79); a cancelled DISCHARGE or DIAGNOSIS_CODED is as if never applied (a
  spell's discharge is its last applied discharge not cancelled, so cancelling the only
  discharge reopens it); a cancelled ED_ATTENDANCE, DEATH or GP_CONTACT is removed. A
  cancellation cannot be undone.
- A spell is coded when its winning DIAGNOSIS_CODED (latest ``event_time``, on a tie the one
  applied last) has at least one diagnosis. Primary diagnosis: lowest position, 0 last, on a
  tie the first in the message.
- Sector of a fact: the ``source_sector`` of the event it comes from (the admission event for
  all three spell facts, the attendance for ``ed_attendance``): the synthetic hospitals send
  admissions as ACUTE and ED attendances as EMERGENCY, so "an organisation has one sector"
  does not hold for them.
- The planning opt-out leaves out *facts* only (the admission, discharge or attendance event
  applied while it is in force). The things numerator conditions look at (the readmitting
  spell, the follow-up contact, prior ED attendances) count whatever the opt-out was when
  they were applied.
- Filters on ``ed_attendance`` facts: ``admission_method`` fails (no method), ages are the
  attendance's. Filters on spell facts use the admission's method and age and the spell's
  current discharge destination, and ``exclude_codelist`` + ``exclude_groups`` the spell's
  current diagnoses and procedures (coded, else working), matched as a numerator code list is;
  a numerator fact of an indicator with such an exclusion is provisional when its spell is not
  coded.
- Month windows start on the month's first day even before the 12m window (only the end is
  clipped, to as-of minus the lag).
- Sex now is ``person.sex`` of the same event as age now (latest ``event_time``, on a tie the
  one applied last; on a merge the later of the two persons', the survivor's on a tie).
- Attribution ``at_event``: the registration at an event is taken when the event is first
  applied (like the opt-out flag), after the event's own registration is noted: the practice it
  names, with its locality, or the person's locality when it names none and the person's
  practice (after noting) is that one, or unknown; an event naming no practice takes the
  person's registration then. Facts: the admission's for ``admission`` and ``open_spell``, the
  discharge's for ``discharge``, the attendance's for ``ed_attendance``.

Standardised rates (``reference(...).standardised``): for ``rate`` indicators on spell facts, per
region/practice/locality unit and window, the numerator facts by stratum (the ESP 2013 band of
the age at admission, the sex now) and the registered population by stratum (the band of the
age now, the sex now), and from them the DSR with Dobson's 95% limits, written here from
docs/standardisation.md.
"""

from __future__ import annotations

import bisect
import math
import tomllib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from statistics import NormalDist
from typing import Any

from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import ingest_pb2 as ing

DAY_NS = 86_400 * 10**9
YEAR_NS = 365 * DAY_NS
EPOCH = date(1970, 1, 1)
DIED = "79"
FOLLOW_UP_SECTORS = frozenset({ce.SECTOR_PRIMARY_CARE, ce.SECTOR_COMMUNITY})
POPULATION_UNITS = frozenset({"region", "practice", "locality"})

Values = dict[tuple[str, str, str], tuple[int, int | None, int]]
EventKey = tuple[str, str]


# ---------------------------------------------------------------- definitions


@dataclass(frozen=True)
class Condition:
    name: str
    group: str
    position: str  # "primary" or "any"
    codes: tuple[str, ...]
    exclude_procedures: tuple[str, ...] = ()
    exclude_secondary: tuple[str, ...] = ()
    with_secondary_codes: tuple[str, ...] = ()
    with_secondary: tuple[str, ...] = ()
    require_secondary: tuple[str, ...] = ()


@dataclass(frozen=True)
class Codelist:
    id: str
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class Indicator:
    id: str
    fact: str  # admission, discharge, open_spell, ed_attendance
    measure: str  # rate, proportion, count
    units: tuple[str, ...]
    windows: tuple[str, ...]
    per: int | None = None
    population_min_age: int | None = None
    lag_days: int = 0
    # filter
    admission_method: tuple[str, ...] | None = None
    min_age: int | None = None
    max_age: int | None = None
    exclude_died: bool = False
    exclude_codelist: str | None = None
    exclude_groups: tuple[str, ...] = ()
    # numerator
    codelist: str | None = None
    groups: tuple[str, ...] = ()
    admission_source: tuple[str, ...] | None = None
    readmission_max_days: int | None = None
    followed_up_within_days: int | None = None
    followed_up: bool = True
    prior_ed_attendances_min: int | None = None


@dataclass(frozen=True)
class Definitions:
    indicators: tuple[Indicator, ...]
    codelists: dict[str, Codelist]


FACTS = ("admission", "discharge", "open_spell", "ed_attendance")
MEASURES = ("rate", "proportion", "count")
UNIT_KINDS = ("practice", "locality", "provider", "sector", "region")
WINDOW_KINDS = ("30d", "12m", "month", "now")
INDICATOR_KEYS = {"id", "version", "title", "source", "fact", "measure", "per", "population_min_age", "units",
                  "windows", "lag_days", "filter", "numerator"}
FILTER_KEYS = {"admission_method", "min_age", "max_age", "exclude_died", "exclude_codelist", "exclude_groups"}
NUMERATOR_KEYS = {"codelist", "groups", "admission_source", "readmission_max_days", "followed_up_within_days",
                  "followed_up", "prior_ed_attendances_min"}
CONDITION_KEYS = {"group", "position", "codes", "exclude_procedures", "exclude_secondary", "with_secondary_codes",
                  "with_secondary", "require_secondary"}


def _check_keys(where: str, got: Iterable[str], allowed: set[str]) -> None:
    unknown = set(got) - allowed
    if unknown:
        raise ValueError(f"{where}: words the reference does not know: {sorted(unknown)}")


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


def _norm(code: str) -> str:
    return code.upper().replace(".", "")


def load_codelist(path: Path) -> Codelist:
    raw = tomllib.loads(path.read_text())
    _check_keys(str(path), raw, {"id", "version", "title", "source", "conditions"})
    conditions = []
    for name, c in raw["conditions"].items():
        _check_keys(f"{path} {name}", c, CONDITION_KEYS)
        if c["position"] not in ("primary", "any"):
            raise ValueError(f"{path} {name}: position {c['position']!r}")
        conditions.append(Condition(
            name=name, group=c["group"], position=c["position"],
            **{k: tuple(_norm(x) for x in c.get(k, ())) for k in CONDITION_KEYS - {"group", "position"}},
        ))
    return Codelist(raw["id"], tuple(conditions))


def load_indicator(path: Path) -> Indicator:
    raw = tomllib.loads(path.read_text())
    _check_keys(str(path), raw, INDICATOR_KEYS)
    filt = raw.get("filter", {})
    num = raw.get("numerator", {})
    _check_keys(f"{path} [filter]", filt, FILTER_KEYS)
    _check_keys(f"{path} [numerator]", num, NUMERATOR_KEYS)
    ind = Indicator(
        id=raw["id"], fact=raw["fact"], measure=raw["measure"], units=_strings(raw["units"]),
        windows=_strings(raw["windows"]), per=raw.get("per"), population_min_age=raw.get("population_min_age"),
        lag_days=int(raw.get("lag_days", 0)),
        admission_method=_strings(filt["admission_method"]) if "admission_method" in filt else None,
        min_age=filt.get("min_age"), max_age=filt.get("max_age"), exclude_died=bool(filt.get("exclude_died", False)),
        exclude_codelist=filt.get("exclude_codelist"), exclude_groups=_strings(filt.get("exclude_groups", ())),
        codelist=num.get("codelist"), groups=_strings(num.get("groups", ())),
        admission_source=_strings(num["admission_source"]) if "admission_source" in num else None,
        readmission_max_days=num.get("readmission_max_days"),
        followed_up_within_days=num.get("followed_up_within_days"), followed_up=bool(num.get("followed_up", True)),
        prior_ed_attendances_min=num.get("prior_ed_attendances_min"),
    )
    if ind.fact not in FACTS or ind.measure not in MEASURES:
        raise ValueError(f"{path}: fact {ind.fact!r} / measure {ind.measure!r}")
    if not set(ind.units) <= set(UNIT_KINDS) or not set(ind.windows) <= set(WINDOW_KINDS):
        raise ValueError(f"{path}: units {ind.units} / windows {ind.windows}")
    return ind


def load_definitions(definitions_dir: Path) -> Definitions:
    """Every indicator (sorted by id) and code list under ``definitions_dir``."""
    codelists = {c.id: c for c in map(load_codelist, sorted((definitions_dir / "codelists").glob("*.toml")))}
    indicators = tuple(sorted(map(load_indicator, (definitions_dir / "indicators").glob("*.toml")),
                              key=lambda i: i.id))
    for ind in indicators:
        for name in (ind.codelist, ind.exclude_codelist):
            if name is not None and name not in codelists:
                raise ValueError(f"{ind.id}: no code list {name!r}")
    return Definitions(indicators, codelists)


# ---------------------------------------------------------------- code list matching


def _any_in(codes: Iterable[str], entries: tuple[str, ...]) -> bool:
    return any(_norm(code).startswith(entries) for code in codes) if entries else False


def condition_matches(cond: Condition, diagnoses: list[tuple[str, int]], procedures: list[str]) -> bool:
    """``diagnoses`` as (code, position) in message order; ``procedures`` as codes."""
    if not diagnoses:
        return False
    primary_at = min(range(len(diagnoses)), key=lambda i: (diagnoses[i][1] == 0, diagnoses[i][1]))
    primary = diagnoses[primary_at][0]
    others = [code for i, (code, _) in enumerate(diagnoses) if i != primary_at]
    if cond.position == "primary":
        ok = _any_in([primary], cond.codes)
    else:
        ok = _any_in([code for code, _ in diagnoses], cond.codes)
    if not ok and cond.with_secondary_codes:
        ok = _any_in([primary], cond.with_secondary_codes) and _any_in(others, cond.with_secondary)
    if ok and cond.require_secondary:
        ok = _any_in(others, cond.require_secondary)
    if ok and cond.exclude_secondary:
        ok = not _any_in(others, cond.exclude_secondary)
    if ok and cond.exclude_procedures:
        ok = not _any_in(procedures, cond.exclude_procedures)
    return ok


# ---------------------------------------------------------------- applying the linked log


def ns(ts: Any) -> int:
    return int(ts.seconds) * 10**9 + int(ts.nanos)


def day_of(t_ns: int) -> int:
    """Days since 1970-01-01 (UTC) of a time in nanoseconds."""
    return t_ns // DAY_NS


@dataclass
class Applied:
    order: int  # position in the order events were applied
    link_sequence: int
    event: ing.AcceptedEvent
    opted_out: bool  # planning opt-out in force when the event was applied
    registration: tuple[str, str] = ("", "")  # (practice, locality) at the event, when first applied

    @property
    def key(self) -> EventKey:
        return (self.event.source_org, self.event.event_id)


@dataclass
class Registration:
    time: int
    practice: str
    locality: str


@dataclass
class Person:
    events: list[Applied] = field(default_factory=list)
    keys: set[EventKey] = field(default_factory=set)
    registration: Registration | None = None
    age: tuple[int, int, int] | None = None  # (event time, age_years, sex)
    consent: tuple[int, bool] | None = None  # (link_sequence, planning opt-out) of the latest change

    @property
    def opted_out(self) -> bool:
        return self.consent is not None and self.consent[1]

    def note(self, applied: Applied) -> None:
        """Registration, age and consent after ``applied`` (already in ``events``)."""
        e = applied.event
        t = ns(e.event_time)
        if e.registered_practice:
            reg = self.registration
            if reg is None or t >= reg.time:
                locality = e.locality or (reg.locality if reg is not None and reg.practice == e.registered_practice
                                          else "")
                self.registration = Registration(t, e.registered_practice, locality)
        if self.age is None or t >= self.age[0]:
            self.age = (t, e.person.age_years, e.person.sex)
        if e.event_type == ce.EVENT_TYPE_CONSENT_CHANGE:
            self.consent = (applied.link_sequence, e.consent.planning_opt_out)

    def apply(self, applied: Applied) -> None:
        self.events.append(applied)
        self.keys.add(applied.key)
        self.note(applied)

    def registration_at(self, e: ing.AcceptedEvent) -> tuple[str, str]:
        """After ``note``: the practice and locality at ``e`` (see "Attribution at_event" above)."""
        reg = self.registration
        if not e.registered_practice:
            return (reg.practice, reg.locality) if reg is not None else ("", "")
        if e.locality:
            return e.registered_practice, e.locality
        return e.registered_practice, reg.locality if reg is not None and reg.practice == e.registered_practice else ""

    @classmethod
    def rebuilt(cls, events: Iterable[Applied]) -> Person:
        person = cls()
        for applied in sorted(events, key=lambda a: a.order):
            person.apply(applied)
        return person


@dataclass
class State:
    persons: dict[str, Person]
    as_of: date


def _merge(persons: dict[str, Person], absorbed_id: str, survivor_id: str) -> None:
    if absorbed_id == survivor_id:
        return
    absorbed = persons.pop(absorbed_id, None)
    survivor = persons.setdefault(survivor_id, Person())
    if absorbed is None:
        return
    moved = [a for a in absorbed.events if a.key not in survivor.keys]
    survivor.events = sorted(survivor.events + moved, key=lambda a: a.order)
    survivor.keys |= absorbed.keys
    if absorbed.registration is not None and (
        survivor.registration is None or absorbed.registration.time > survivor.registration.time
    ):
        survivor.registration = absorbed.registration
    if absorbed.age is not None and (survivor.age is None or absorbed.age[0] > survivor.age[0]):
        survivor.age = absorbed.age
    if absorbed.consent is not None and (survivor.consent is None or absorbed.consent[0] > survivor.consent[0]):
        survivor.consent = absorbed.consent


def _unmerge(persons: dict[str, Person], merge: idn.PersonMerge) -> None:
    survivor = persons.setdefault(merge.into_person_id, Person())
    moved = {(r.source_org, r.local_id) for r in merge.moved_records}
    back = [a for a in survivor.events if (a.event.source_org, a.event.person.local_id) in moved]
    kept = [a for a in survivor.events if (a.event.source_org, a.event.person.local_id) not in moved]
    restored = persons.get(merge.from_person_id, Person())
    persons[merge.into_person_id] = Person.rebuilt(kept)
    persons[merge.from_person_id] = Person.rebuilt(restored.events + back)


def build_state(linked: Iterable[idn.LinkedEvent]) -> State:
    """Apply the linked log in link order: each person's applied events, registration, age, consent."""
    persons: dict[str, Person] = {}
    merges_done: set[EventKey] = set()
    newest: int | None = None
    order = 0
    for le in sorted(linked, key=lambda x: x.link_sequence):
        e = le.event
        key = (e.source_org, e.event_id)
        person_id = le.person_id
        if le.HasField("merge"):
            if key in merges_done:
                continue  # the other copy of a merge already acted
            merges_done.add(key)
            if le.merge.unmerge:
                _unmerge(persons, le.merge)
            else:
                _merge(persons, le.merge.from_person_id, le.merge.into_person_id)
            person_id = le.merge.into_person_id
            if le.merge.unmerge and (e.source_org, e.person.local_id) in {
                    (r.source_org, r.local_id) for r in le.merge.moved_records}:
                person_id = le.merge.from_person_id  # sent under a record that goes back
        person = persons.setdefault(person_id, Person())
        if key in person.keys:
            continue
        applied = Applied(order, le.link_sequence, e, person.opted_out)
        person.apply(applied)
        applied.registration = person.registration_at(e)
        order += 1
        t = ns(e.event_time)
        newest = t if newest is None else max(newest, t)
    if newest is None:
        raise ValueError("no events")
    return State(persons, EPOCH + timedelta(days=day_of(newest)))


def as_of(linked: Iterable[idn.LinkedEvent]) -> date:
    """The day of the newest event_time among the applied events."""
    return build_state(linked).as_of


# ---------------------------------------------------------------- facts


@dataclass
class Spell:
    org: str
    admitted: int | None = None  # ns
    admission_sector: int = 0
    method: int = 0
    source: str = ""
    working_dx: list[tuple[str, int]] = field(default_factory=list)
    working_proc: list[str] = field(default_factory=list)
    admission_opted_out: bool = False
    admission_age: int = -1
    discharged: int | None = None
    destination: str = ""
    discharge_opted_out: bool = False
    coded_time: int | None = None
    coded_dx: list[tuple[str, int]] = field(default_factory=list)
    coded_proc: list[str] = field(default_factory=list)
    cancelled: bool = False
    admission_reg: tuple[str, str] = ("", "")
    discharge_reg: tuple[str, str] = ("", "")

    @property
    def coded(self) -> bool:
        return bool(self.coded_dx)

    @property
    def diagnoses(self) -> list[tuple[str, int]]:
        return self.coded_dx if self.coded else self.working_dx

    @property
    def procedures(self) -> list[str]:
        return self.coded_proc if self.coded else self.working_proc


@dataclass
class EdAttendance:
    org: str
    sector: int
    time: int
    age: int
    opted_out: bool
    reg: tuple[str, str] = ("", "")


@dataclass
class PersonFacts:
    practice: str  # "" when unregistered
    locality: str  # "" when unknown
    age_now: int
    sex_now: int
    dead: bool
    opted_out_now: bool
    spells: list[Spell]
    ed: list[EdAttendance]
    ed_times: list[int]  # sorted
    contact_days: list[int]  # sorted days of follow-up contacts


def _dx(clinical: ce.ClinicalDetail) -> list[tuple[str, int]]:
    return [(d.code, d.position) for d in clinical.diagnoses]


def person_facts(person: Person) -> PersonFacts:
    events = person.events
    cancelled = {(a.event.source_org, a.event.target_event_id) for a in events
                 if a.event.event_type == ce.EVENT_TYPE_CANCELLATION and a.event.target_event_id}
    spells: dict[tuple[str, str], Spell] = {}
    ed: list[EdAttendance] = []
    contact_days: list[int] = []
    dead = False
    # attendances on the timeline by (org, encounter id), as link order has them: a later one of the
    # same organisation and encounter is a repeat (SEMANTICS, Facts)
    attended: dict[tuple[str, str], tuple[str, str]] = {}
    cancels_so_far: set[tuple[str, str]] = set()
    for a in events:
        e = a.event
        kind = e.event_type
        is_cancelled = a.key in cancelled
        t = ns(e.event_time)
        if kind == ce.EVENT_TYPE_CANCELLATION and e.target_event_id:
            target = (e.source_org, e.target_event_id)
            cancels_so_far.add(target)
            attended = {k: v for k, v in attended.items() if v != target}
        if kind == ce.EVENT_TYPE_ED_ATTENDANCE and e.clinical.spell_id and a.key not in cancels_so_far:
            encounter = (e.source_org, e.clinical.spell_id)
            if encounter in attended:
                continue  # the same attendance sent again under another event id
            attended[encounter] = a.key
        if kind in (ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_DISCHARGE, ce.EVENT_TYPE_DIAGNOSIS_CODED):
            spell = spells.setdefault((e.source_org, e.clinical.spell_id), Spell(e.source_org))
            if kind == ce.EVENT_TYPE_ADMISSION:
                if is_cancelled:
                    spell.cancelled = True
                else:
                    spell.admitted, spell.admission_sector = t, e.source_sector
                    spell.method, spell.source = e.clinical.admission_method, e.clinical.admission_source
                    spell.working_dx = _dx(e.clinical)
                    spell.working_proc = [p.code for p in e.clinical.procedures]
                    spell.admission_opted_out, spell.admission_age = a.opted_out, e.person.age_years
                    spell.admission_reg = a.registration
            elif is_cancelled:
                pass
            elif kind == ce.EVENT_TYPE_DISCHARGE:
                spell.discharged, spell.destination = t, e.clinical.discharge_destination
                spell.discharge_opted_out = a.opted_out
                spell.discharge_reg = a.registration
            elif spell.coded_time is None or t >= spell.coded_time:
                spell.coded_time = t
                spell.coded_dx = _dx(e.clinical)
                spell.coded_proc = [p.code for p in e.clinical.procedures]
        elif is_cancelled:
            continue
        elif kind == ce.EVENT_TYPE_ED_ATTENDANCE:
            ed.append(EdAttendance(e.source_org, e.source_sector, t, e.person.age_years, a.opted_out, a.registration))
        elif kind == ce.EVENT_TYPE_GP_CONTACT and e.source_sector in FOLLOW_UP_SECTORS:
            contact_days.append(day_of(t))
        elif kind == ce.EVENT_TYPE_DEATH:
            dead = True
    live = [s for s in spells.values() if not s.cancelled]
    dead = dead or any(s.discharged is not None and s.destination == DIED for s in live)
    reg = person.registration
    return PersonFacts(
        practice=reg.practice if reg else "", locality=reg.locality if reg else "",
        age_now=person.age[1] if person.age else -1, sex_now=person.age[2] if person.age else 0,
        dead=dead, opted_out_now=person.opted_out,
        spells=live, ed=ed, ed_times=sorted(x.time for x in ed), contact_days=sorted(contact_days),
    )


@dataclass(frozen=True)
class Fact:
    day: int
    units: tuple[str, ...]
    numerator: bool
    provisional: bool
    age: int = -1  # at the admission (spell facts) or attendance
    sex: int = 0  # the person's sex now


def _sector_unit(sector: int) -> str:
    return "sector:" + ce.Sector.Name(sector).removeprefix("SECTOR_").lower()  # type: ignore[arg-type]


def _method_name(method: int) -> str:
    return ce.AdmissionMethod.Name(method).removeprefix("ADMISSION_METHOD_").lower()  # type: ignore[arg-type]


def _person_units(p: PersonFacts) -> tuple[str, str, str]:
    return _units_of(p.practice, p.locality)


def _units_of(practice: str, locality: str) -> tuple[str, str, str]:
    return ("region", f"practice:{practice or 'unregistered'}", f"locality:{locality or 'unknown'}")


def _age_ok(ind: Indicator, age: int) -> bool:
    if ind.min_age is not None and (age < 0 or age < ind.min_age):
        return False
    return not (ind.max_age is not None and age > ind.max_age)


def _readmitted(p: PersonFacts, index: Spell, max_days: int) -> bool:
    assert index.discharged is not None
    out_day = day_of(index.discharged)
    for s in p.spells:
        if s is index or s.admitted is None or s.method != ce.ADMISSION_METHOD_EMERGENCY:
            continue
        if s.admitted >= index.discharged and day_of(s.admitted) - out_day <= max_days:
            return True
    return False


def _followed_up(p: PersonFacts, discharged: int, days: int) -> bool:
    out_day = day_of(discharged)
    i = bisect.bisect_left(p.contact_days, out_day + 1)
    return i < len(p.contact_days) and p.contact_days[i] <= out_day + days


def _prior_ed(p: PersonFacts, t: int) -> int:
    return bisect.bisect_left(p.ed_times, t) - bisect.bisect_left(p.ed_times, t - YEAR_NS)


def _spell_numerator(ind: Indicator, defs: Definitions, p: PersonFacts, s: Spell) -> tuple[bool, bool]:
    """(numerator, provisional) for a spell fact that passed the filter."""
    provisional = ind.exclude_codelist is not None and not s.coded  # the exclusion was judged on working dx
    if ind.codelist is not None:
        conditions = [c for c in defs.codelists[ind.codelist].conditions if c.group in ind.groups]
        if not any(condition_matches(c, s.diagnoses, s.procedures) for c in conditions):
            return False, False
        provisional = not s.coded
    if ind.admission_source is not None and s.source not in ind.admission_source:
        return False, False
    if ind.readmission_max_days is not None and (
        s.discharged is None or not _readmitted(p, s, ind.readmission_max_days)
    ):
        return False, False
    if ind.followed_up_within_days is not None:
        if s.discharged is None:
            return False, False
        if _followed_up(p, s.discharged, ind.followed_up_within_days) != ind.followed_up:
            return False, False
    if ind.prior_ed_attendances_min is not None:
        return False, False  # an ED condition on a spell fact: never met
    return True, provisional


def indicator_facts(ind: Indicator, defs: Definitions, people: list[PersonFacts],
                    attribution: str = "current") -> list[Fact]:
    at_event = attribution == "at_event"
    facts: list[Fact] = []
    for p in people:
        base = _person_units(p)
        if ind.fact == "ed_attendance":
            for a in p.ed:
                if a.opted_out or ind.admission_method is not None or not _age_ok(ind, a.age):
                    continue
                num = True
                if ind.codelist is not None or ind.admission_source is not None or (
                    ind.readmission_max_days is not None or ind.followed_up_within_days is not None
                ):
                    num = False  # spell conditions on an attendance: never met
                if ind.prior_ed_attendances_min is not None:
                    num = num and _prior_ed(p, a.time) >= ind.prior_ed_attendances_min
                mine = _units_of(*a.reg) if at_event else base
                facts.append(Fact(day_of(a.time), (*mine, f"provider:{a.org}", _sector_unit(a.sector)), num, False,
                                  a.age, p.sex_now))
            continue
        for s in p.spells:
            if s.admitted is None:
                continue
            if ind.fact == "admission":
                when, opted_out, reg = s.admitted, s.admission_opted_out, s.admission_reg
            elif ind.fact == "discharge":
                if s.discharged is None:
                    continue
                when, opted_out, reg = s.discharged, s.discharge_opted_out, s.discharge_reg
            else:  # open_spell
                if s.discharged is not None:
                    continue
                when, opted_out, reg = s.admitted, s.admission_opted_out, s.admission_reg
            if opted_out:
                continue
            if ind.admission_method is not None and _method_name(s.method) not in ind.admission_method:
                continue
            if not _age_ok(ind, s.admission_age):
                continue
            if ind.exclude_died and s.discharged is not None and s.destination == DIED:
                continue
            if ind.exclude_codelist is not None and any(
                    condition_matches(c, s.diagnoses, s.procedures)
                    for c in defs.codelists[ind.exclude_codelist].conditions if c.group in ind.exclude_groups):
                continue
            num, provisional = _spell_numerator(ind, defs, p, s)
            units = (*(_units_of(*reg) if at_event else base), f"provider:{s.org}", _sector_unit(s.admission_sector))
            facts.append(Fact(day_of(when), units, num, provisional, s.admission_age, p.sex_now))
    return facts


# ---------------------------------------------------------------- windows and values


def windows(ind: Indicator, as_of_day: date) -> list[tuple[str, int | None, int]]:
    """(label, first day or None for no start, last day) of each window, days since 1970-01-01."""
    end = (as_of_day - EPOCH).days - ind.lag_days
    out: list[tuple[str, int | None, int]] = []
    for kind in ind.windows:
        if kind == "30d":
            out.append(("30d", end - 29, end))
        elif kind == "12m":
            out.append(("12m", end - 364, end))
        elif kind == "now":
            out.append(("now", None, end))
        else:
            first, last = EPOCH + timedelta(days=end - 364), EPOCH + timedelta(days=end)
            y, m = first.year, first.month
            while (y, m) <= (last.year, last.month):
                start = date(y, m, 1)
                nxt = date(y + (m == 12), m % 12 + 1, 1)
                out.append((f"{y:04d}-{m:02d}", (start - EPOCH).days, min((nxt - EPOCH).days - 1, end)))
                y, m = nxt.year, nxt.month
    return out


def populations(people: list[PersonFacts], min_age: int | None) -> dict[str, int]:
    """Registered population of every region/practice/locality unit that has one."""
    pop: dict[str, int] = defaultdict(int)
    for p in people:
        if not p.practice or p.dead or p.opted_out_now:
            continue
        if min_age is not None and (p.age_now < 0 or p.age_now < min_age):
            continue
        for unit in _person_units(p):
            pop[unit] += 1
    return dict(pop)


def _unit_kind(unit: str) -> str:
    return unit.split(":", 1)[0]


# ---------------------------------------------------------------- standardisation

SEX_NAMES: dict[int, str] = {ce.SEX_FEMALE: "female", ce.SEX_MALE: "male"}
Z95 = NormalDist().inv_cdf(0.975)
Stratum = tuple[int, str]  # (lower age of the band, sex)
# (DSR, lower 95%, upper 95%) or None, the reason when None, events and people outside the strata
Standardised = dict[tuple[str, str, str], tuple[tuple[float, float, float] | None, str, int, int]]


@dataclass(frozen=True)
class Standard:
    name: str
    bands: tuple[tuple[int, int], ...]  # (lower age, weight), ascending; the last band is open

    def stratum(self, age: int, sex: int) -> Stratum | None:
        if age < 0 or sex not in SEX_NAMES:
            return None
        lower = max(lo for lo, _ in self.bands if lo <= age)
        return lower, SEX_NAMES[sex]


def load_standard(path: Path) -> Standard:
    raw = tomllib.loads(path.read_text())
    return Standard(raw["title"], tuple((b["from_age"], b["weight"]) for b in raw["bands"]))


def dsr(standard: Standard, events: dict[Stratum, int], people: dict[Stratum, int], min_age: int,
        per: float) -> tuple[tuple[float, float, float] | None, str]:
    """docs/standardisation.md: the DSR over the bands from ``min_age``, both sexes, Dobson's limits."""
    strata = [((lo, sex), w) for sex in ("female", "male") for lo, w in standard.bands if lo >= min_age]
    total_w = sum(w for _, w in strata)
    o = sum(events.get(k, 0) for k, _ in strata)
    if sum(people.get(k, 0) for k, _ in strata) == 0:
        return None, "no_population"
    if any(events.get(k, 0) > 0 and people.get(k, 0) == 0 for k, _ in strata):
        return None, "events_without_population"
    if o < 10:
        return None, "too_few_events"
    terms = [(events.get(k, 0), w / people[k]) for k, w in strata if people.get(k, 0)]
    rate = sum(x * r for x, r in terms) / total_w * per
    var = sum(x * r * r for x, r in terms) / total_w**2 * per**2
    o_low = o * (1 - 1 / (9 * o) - Z95 / (3 * math.sqrt(o))) ** 3
    o_high = (o + 1) * (1 - 1 / (9 * (o + 1)) + Z95 / (3 * math.sqrt(o + 1))) ** 3
    scale = math.sqrt(var / o)
    return (rate, rate + scale * (o_low - o), rate + scale * (o_high - o)), ""


@dataclass
class Reference:
    values: Values
    standardised: Standardised


def reference_values(linked: Iterable[idn.LinkedEvent], definitions_dir: Path) -> Values:
    """Every (indicator id, unit, window label) -> (numerator, denominator or None, provisional)."""
    return reference(linked, definitions_dir).values


def reference(linked: Iterable[idn.LinkedEvent], definitions_dir: Path, attribution: str = "current") -> Reference:
    """The values, and the standardised rates of rate indicators on spell facts."""
    defs = load_definitions(definitions_dir)
    standard = load_standard(definitions_dir / "standard_populations" / "esp2013.toml")
    state = build_state(linked)
    people = [person_facts(p) for p in state.persons.values()]
    pops: dict[int | None, dict[str, int]] = {}
    values: Values = {}
    standardised: Standardised = {}
    for ind in defs.indicators:
        facts = indicator_facts(ind, defs, people, attribution)
        kinds = set(ind.units)
        units = {u for f in facts for u in f.units if _unit_kind(u) in kinds}
        pop: dict[str, int] = {}
        by_stratum: dict[str, dict[Stratum | None, int]] = {}
        with_dsr = ind.measure == "rate" and ind.fact != "ed_attendance"
        min_age = ind.population_min_age or 0
        if ind.measure == "rate":
            if ind.population_min_age not in pops:
                pops[ind.population_min_age] = populations(people, ind.population_min_age)
            pop = pops[ind.population_min_age]
            units |= {u for u, n in pop.items() if n > 0 and _unit_kind(u) in kinds}
            by_stratum = population_strata(people, ind.population_min_age, standard)
        for label, first, last in windows(ind, state.as_of):
            num: dict[str, int] = defaultdict(int)
            den: dict[str, int] = defaultdict(int)
            prov: dict[str, int] = defaultdict(int)
            strata: dict[str, dict[Stratum | None, int]] = defaultdict(lambda: defaultdict(int))
            for f in facts:
                if f.day > last or (first is not None and f.day < first):
                    continue
                for u in f.units:
                    den[u] += 1
                    if f.numerator:
                        num[u] += 1
                        prov[u] += f.provisional
                        if with_dsr:
                            key = standard.stratum(f.age, f.sex)
                            strata[u][key if key is None or key[0] >= min_age else None] += 1
            for u in units:
                denominator: int | None
                if ind.measure == "proportion":
                    denominator = den[u]
                elif ind.measure == "rate" and _unit_kind(u) in POPULATION_UNITS:
                    denominator = pop.get(u, 0)
                    if with_dsr:
                        events = {k: n for k, n in strata[u].items() if k is not None}
                        persons = {k: n for k, n in by_stratum.get(u, {}).items() if k is not None}
                        rate, reason = dsr(standard, events, persons, min_age, float(ind.per or 100_000))
                        standardised[(ind.id, u, label)] = (rate, reason, strata[u].get(None, 0),
                                                            by_stratum.get(u, {}).get(None, 0))
                else:
                    denominator = None
                values[(ind.id, u, label)] = (num[u], denominator, prov[u])
    return Reference(values, standardised)


def population_strata(people: list[PersonFacts], min_age: int | None, standard: Standard,
                      ) -> dict[str, dict[Stratum | None, int]]:
    """The registered population of each region/practice/locality by stratum (None: unknown age or sex):
    the persons ``populations`` counts."""
    out: dict[str, dict[Stratum | None, int]] = defaultdict(lambda: defaultdict(int))
    for p in people:
        if not p.practice or p.dead or p.opted_out_now:
            continue
        if min_age is not None and (p.age_now < 0 or p.age_now < min_age):
            continue
        for unit in _person_units(p):
            out[unit][standard.stratum(p.age_now, p.sex_now)] += 1
    return out
