"""What one person's timeline adds to every indicator: counting cells by indicator, unit and day.

The engine recomputes a person's cells from their whole ``PersonTimeline`` whenever it changes
and counts the difference, so a late discharge, a coding that arrives after discharge, a
cancellation or a merge revises what was counted before, in the day it belongs to, and a
repeated event (ignored by the timeline) changes nothing. The rules are the words of
``SEMANTICS.md``; this module is their one implementation in the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from carehub.domain.codelists import normal
from carehub.domain.definitions import Catalogue, Indicator
from carehub.domain.timeline import DAY_NS, DIED, ns
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import timeline_pb2 as tl

ED_LOOKBACK_NS = 365 * DAY_NS
REGION = "region"
# persons by (practice, locality): which practices make up a locality, for suppression
PRACTICE_LOCALITY = "_practice_locality"

Key = tuple[str, str, int]  # indicator (or population key), unit, day (days since 1970-01-01 UTC)
Cells = dict[Key, tuple[int, int, int]]  # numerator, facts (or persons), provisional


def day_of(t_ns: int) -> int:
    return t_ns // DAY_NS


def day_label(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, UTC).date().isoformat()


def sector_unit(sector: int) -> str:
    return "sector:" + ce.Sector.Name(sector).removeprefix("SECTOR_").lower()  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SpellFacts:
    """A spell read once for every indicator: its diagnoses primary first, normalised."""

    spell: tl.Spell
    admitted: int
    discharged: int | None
    diagnoses: tuple[str, ...]
    procedures: tuple[str, ...]
    provisional: bool
    units: tuple[str, ...]


def _ordered(diagnoses: Iterable[ce.Diagnosis]) -> tuple[str, ...]:
    return tuple(normal(d.code) for d in sorted(diagnoses, key=lambda d: d.position or 1 << 30))


def read_spell(spell: tl.Spell, person_units: tuple[str, ...]) -> SpellFacts | None:
    if spell.status == tl.SPELL_STATUS_CANCELLED or not spell.HasField("admitted_at"):
        return None
    coded = len(spell.coded_diagnoses) > 0
    diagnoses = _ordered(spell.coded_diagnoses if coded else spell.provisional_diagnoses)
    procedures = tuple(normal(p.code) for p in (spell.coded_procedures if coded else spell.provisional_procedures))
    closed = spell.status == tl.SPELL_STATUS_CLOSED and spell.HasField("discharged_at")
    units = (*person_units, "provider:" + spell.org, sector_unit(spell.admission_sector))
    return SpellFacts(spell, ns(spell.admitted_at), ns(spell.discharged_at) if closed else None, diagnoses,
                      procedures, not coded, units)


class PersonFacts:
    """Cells of one person for a catalogue (``cells(timeline)``)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.by_fact: dict[str, list[Indicator]] = {}
        for indicator in catalogue.indicators:
            self.by_fact.setdefault(indicator.fact, []).append(indicator)
        self.populations = sorted(catalogue.population_keys().items())

    def cells(self, timeline: tl.PersonTimeline) -> Cells:
        out: dict[Key, list[int]] = {}
        if timeline.merged_into or not timeline.HasField("newest_event_at"):
            return {}  # merged away, or no event yet (a person first seen in this batch)
        practice = "practice:" + (timeline.registered_practice or "unregistered")
        locality = "locality:" + (timeline.locality or "unknown")
        person_units = (practice, locality, REGION)
        _add(out, (PRACTICE_LOCALITY, f"{practice}|{locality}", 0), 0, 1, 0)
        alive = not timeline.HasField("died_at")
        if timeline.registered_practice and alive and not timeline.consent.planning_opt_out:
            for key, min_age in self.populations:
                if timeline.age_years >= min_age:
                    for unit in person_units:
                        _add(out, (key, unit, 0), 0, 1, 0)
        spells = [s for s in (read_spell(sp, person_units) for sp in timeline.spells) if s is not None]
        for facts in spells:
            self._spell(out, facts, spells, timeline)
        if self.by_fact.get("ed_attendance"):
            self._ed(out, timeline, person_units)
        return {k: (v[0], v[1], v[2]) for k, v in out.items()}

    def _spell(self, out: dict[Key, list[int]], f: SpellFacts, spells: Sequence[SpellFacts],
               timeline: tl.PersonTimeline) -> None:
        spell = f.spell
        kinds: list[tuple[str, int]] = []
        if not spell.admission_opted_out:
            kinds.append(("admission", day_of(f.admitted)))
            if f.discharged is None and spell.status == tl.SPELL_STATUS_OPEN:
                kinds.append(("open_spell", day_of(f.admitted)))
        if f.discharged is not None and not spell.discharge_opted_out:
            kinds.append(("discharge", day_of(f.discharged)))
        for kind, day in kinds:
            for indicator in self.by_fact.get(kind, ()):
                if not _passes(indicator, f):
                    continue
                hit, provisional = _numerator(indicator, f, spells, timeline)
                _count(out, indicator, f.units, day, hit, provisional)

    def _ed(self, out: dict[Key, list[int]], timeline: tl.PersonTimeline, person_units: tuple[str, ...]) -> None:
        times = [ns(a.at) for a in timeline.ed_attendances]
        for attendance, t in zip(timeline.ed_attendances, times, strict=True):
            if attendance.opted_out:
                continue
            prior = sum(1 for u in times if t - ED_LOOKBACK_NS <= u < t)
            units = (*person_units, "provider:" + attendance.org, sector_unit(attendance.sector))
            for indicator in self.by_fact["ed_attendance"]:
                minimum = indicator.prior_ed_attendances_min
                _count(out, indicator, units, day_of(t), minimum is None or prior >= minimum, False)


def _add(out: dict[Key, list[int]], key: Key, num: int, den: int, prov: int) -> None:
    cell = out.get(key)
    if cell is None:
        out[key] = [num, den, prov]
    else:
        cell[0] += num
        cell[1] += den
        cell[2] += prov


def _count(out: dict[Key, list[int]], indicator: Indicator, units: Sequence[str], day: int, hit: bool,
           provisional: bool) -> None:
    """One fact that passed the filter: counted as a fact, and in the numerator when ``hit``."""
    num, prov = int(hit), int(hit and provisional)
    for unit in units:
        if unit.split(":", 1)[0] in indicator.units:
            _add(out, (indicator.id, unit, day), num, 1, prov)


def _passes(indicator: Indicator, f: SpellFacts) -> bool:
    spell = f.spell
    if indicator.admission_methods and spell.admission_method not in indicator.admission_methods:
        return False
    if indicator.min_age is not None and spell.age_at_admission < indicator.min_age:
        return False
    if indicator.max_age is not None and spell.age_at_admission > indicator.max_age:
        return False
    return not (indicator.exclude_died and spell.discharge_destination == DIED)


def _numerator(indicator: Indicator, f: SpellFacts, spells: Sequence[SpellFacts],
               timeline: tl.PersonTimeline) -> tuple[bool, bool]:
    """Whether the fact is in the numerator, and whether that was judged on working diagnoses."""
    spell = f.spell
    if indicator.codelist is not None and not indicator.codelist.matches(indicator.groups, f.diagnoses, f.procedures):
        return False, False
    if indicator.admission_sources and spell.admission_source not in indicator.admission_sources:
        return False, False
    if indicator.readmission_max_days is not None:
        assert f.discharged is not None
        if not _readmitted(f, spells, indicator.readmission_max_days):
            return False, False
    if indicator.followed_up_within_days is not None:
        assert f.discharged is not None
        if _followed_up(timeline, f.discharged, indicator.followed_up_within_days) != indicator.followed_up:
            return False, False
    return True, indicator.uses_diagnoses and f.provisional


def _readmitted(f: SpellFacts, spells: Sequence[SpellFacts], max_days: int) -> bool:
    assert f.discharged is not None
    for other in spells:
        if other is f or other.spell.admission_method != ce.ADMISSION_METHOD_EMERGENCY:
            continue
        if other.admitted >= f.discharged and day_of(other.admitted) - day_of(f.discharged) <= max_days:
            return True
    return False


def _followed_up(timeline: tl.PersonTimeline, discharged: int, within_days: int) -> bool:
    day = day_of(discharged)
    return any(1 <= day_of(ns(c.at)) - day <= within_days for c in timeline.contacts)


def diff(old: Cells, new: Cells) -> Cells:
    """``new`` - ``old``, cell by cell (cells that do not change are left out)."""
    out: Cells = {}
    for key, value in new.items():
        before = old.get(key)
        if before is None:
            out[key] = value
        elif before != value:
            out[key] = (value[0] - before[0], value[1] - before[1], value[2] - before[2])
    for key, before in old.items():
        if key not in new:
            out[key] = (-before[0], -before[1], -before[2])
    return out


def admission_counted_in(catalogue: Catalogue, admission: tl.Spell, earlier: Sequence[tl.Spell] = (),
                         ) -> list[tuple[Indicator, bool, tl.Spell | None]]:
    """The indicators an admission counts in (a review pack says which), by the same rules as the counts.

    Each is (indicator, judged on working diagnoses, the earlier spell whose discharge it makes a
    readmission, or None when the admission itself is in the numerator). ``earlier``: the person's
    other spells, for the readmission indicators. A planning opt-out at the admission counts it in none.
    """
    facts = read_spell(admission, ())
    if facts is None:
        return []
    out: list[tuple[Indicator, bool, tl.Spell | None]] = []
    if not admission.admission_opted_out:
        for indicator in catalogue.indicators:
            if indicator.fact == "admission" and _passes(indicator, facts):
                hit, provisional = _numerator(indicator, facts, [facts], tl.PersonTimeline())
                if hit:
                    out.append((indicator, provisional, None))
    readmissions = [i for i in catalogue.indicators if i.fact == "discharge" and i.readmission_max_days is not None]
    for spell in earlier:
        before = read_spell(spell, ())
        if (before is None or before.discharged is None or spell.discharge_opted_out
                or before.discharged > facts.admitted):
            continue
        for indicator in readmissions:
            if _passes(indicator, before) and _numerator(indicator, before, [before, facts], tl.PersonTimeline())[0]:
                out.append((indicator, False, spell))
    return out
