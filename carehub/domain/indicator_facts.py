"""What one person's timeline adds to every indicator: counting cells by indicator, unit and day.

The engine recomputes a person's cells from their whole ``PersonTimeline`` whenever it changes
and counts the difference, so a late discharge, a coding that arrives after discharge, a
cancellation or a merge revises what was counted before, in the day it belongs to, and a
repeated event (ignored by the timeline) changes nothing. The rules are the words of
``docs/indicator-semantics.md``; this module is their one implementation in the engine.

Rate indicators also get cells by stratum (an age band of the standard population and a sex), for
their numerators and for the registered populations, so that the indicators service can compute
directly standardised rates (carehub/domain/standardisation.py). They sit beside the other cells
under their own names (``stratum_key``) and change none of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from carehub.domain.codelists import normal
from carehub.domain.definitions import POPULATION_UNITS, Catalogue, Indicator
from carehub.domain.standardisation import StandardPopulation, load_standard_population
from carehub.domain.timeline import DAY_NS, DIED, ns
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import timeline_pb2 as tl

ED_LOOKBACK_NS = 365 * DAY_NS
REGION = "region"
# persons by (practice, locality): which practices make up a locality, for suppression
PRACTICE_LOCALITY = "_practice_locality"

# Cells by stratum: "<indicator or population key>/<stratum>", the stratum "<band's lower age>/<sex>"
# (e.g. "acsc_all/85/female") or "unknown" (age or sex unknown: fits no stratum).
STRATUM_SEPARATOR = "/"
UNKNOWN_STRATUM = "unknown"
STRATUM_SEXES: dict[int, str] = {ce.SEX_FEMALE: "female", ce.SEX_MALE: "male"}
#: Who a fact is attributed to (CAREHUB_INDICATORS_ATTRIBUTION): the practice registered now, or
#: the practice registered when the admission, discharge or attendance happened.
ATTRIBUTIONS = ("current", "at_event")
Key = tuple[str, str, int]  # indicator (or population key), unit, day (days since 1970-01-01 UTC)
Cells = dict[Key, tuple[int, int, int]]  # numerator, facts (or persons), provisional


def stratum_key(base: str, stratum: str) -> str:
    return base + STRATUM_SEPARATOR + stratum


def stratum_of(standard: StandardPopulation, age: int, sex: int) -> str:
    """The stratum of a person of ``age`` (-1 unknown) and ``sex``, or ``UNKNOWN_STRATUM``."""
    name = STRATUM_SEXES.get(sex)
    if age < 0 or name is None:
        return UNKNOWN_STRATUM
    return f"{standard.band_for(age).lower}{STRATUM_SEPARATOR}{name}"


def counting_digest(catalogue: Catalogue, attribution: str) -> str:
    """What a partition's counts were made with: the definition files, and the attribution rule."""
    return catalogue.digest if attribution == "current" else f"{catalogue.digest}+{attribution}"


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
    units: tuple[str, ...]  # as an admission (and open spell)
    discharge_units: tuple[str, ...]  # as a discharge
    stratum: str  # age at admission, sex now


def _ordered(diagnoses: Iterable[ce.Diagnosis]) -> tuple[str, ...]:
    return tuple(normal(d.code) for d in sorted(diagnoses, key=lambda d: d.position or 1 << 30))


def _person_units(practice: str, locality: str) -> tuple[str, str, str]:
    return "practice:" + (practice or "unregistered"), "locality:" + (locality or "unknown"), REGION


def read_spell(spell: tl.Spell, person_units: tuple[str, ...], at_event: bool = False,
               stratum: str = UNKNOWN_STRATUM) -> SpellFacts | None:
    if spell.status == tl.SPELL_STATUS_CANCELLED or not spell.HasField("admitted_at"):
        return None
    coded = len(spell.coded_diagnoses) > 0
    diagnoses = _ordered(spell.coded_diagnoses if coded else spell.provisional_diagnoses)
    procedures = tuple(normal(p.code) for p in (spell.coded_procedures if coded else spell.provisional_procedures))
    closed = spell.status == tl.SPELL_STATUS_CLOSED and spell.HasField("discharged_at")
    own = ("provider:" + spell.org, sector_unit(spell.admission_sector))
    units: tuple[str, ...]
    discharge_units: tuple[str, ...]
    if at_event:
        units = (*_person_units(spell.admission_practice, spell.admission_locality), *own)
        discharge_units = (*_person_units(spell.discharge_practice, spell.discharge_locality), *own)
    else:
        units = discharge_units = (*person_units, *own)
    return SpellFacts(spell, ns(spell.admitted_at), ns(spell.discharged_at) if closed else None, diagnoses,
                      procedures, not coded, units, discharge_units, stratum)


class PersonFacts:
    """Cells of one person for a catalogue (``cells(timeline)``)."""

    def __init__(self, catalogue: Catalogue, attribution: str = "current",
                 standard: StandardPopulation | None = None) -> None:
        if attribution not in ATTRIBUTIONS:
            raise ValueError(f"attribution must be one of {', '.join(ATTRIBUTIONS)} (got {attribution!r})")
        self.catalogue = catalogue
        self.attribution = attribution
        self.digest = counting_digest(catalogue, attribution)
        self.standard = standard or load_standard_population()
        # the band of each age up to 120, looked up for every spell of every person recounted
        self.bands = [self.standard.band_for(age).lower for age in range(121)]
        self.by_fact: dict[str, list[Indicator]] = {}
        for indicator in catalogue.indicators:
            self.by_fact.setdefault(indicator.fact, []).append(indicator)
        self.populations = sorted(catalogue.population_keys().items())

    def cells(self, timeline: tl.PersonTimeline) -> Cells:
        out: dict[Key, list[int]] = {}
        if timeline.merged_into or not timeline.HasField("newest_event_at"):
            return {}  # merged away, or no event yet (a person first seen in this batch)
        person_units = _person_units(timeline.registered_practice, timeline.locality)
        practice, locality = person_units[0], person_units[1]
        _add(out, (PRACTICE_LOCALITY, f"{practice}|{locality}", 0), 0, 1, 0)
        alive = not timeline.HasField("died_at")
        if timeline.registered_practice and alive and not timeline.consent.planning_opt_out:
            stratum = self.stratum(timeline.age_years, timeline.sex)
            for key, min_age in self.populations:
                if timeline.age_years >= min_age:
                    for unit in person_units:
                        _add(out, (key, unit, 0), 0, 1, 0)
                        _add(out, (stratum_key(key, stratum), unit, 0), 0, 1, 0)
        at_event = self.attribution == "at_event"
        spells = [s for s in (read_spell(sp, person_units, at_event,
                                         self.stratum(sp.age_at_admission, timeline.sex))
                              for sp in timeline.spells) if s is not None]
        for facts in spells:
            self._spell(out, facts, spells, timeline)
        if self.by_fact.get("ed_attendance"):
            self._ed(out, timeline, person_units)
        return {k: (v[0], v[1], v[2]) for k, v in out.items()}

    def stratum(self, age: int, sex: int) -> str:
        """``stratum_of`` this catalogue's standard, with the bands of ages up to 120 looked up."""
        name = STRATUM_SEXES.get(sex)
        if age < 0 or name is None:
            return UNKNOWN_STRATUM
        lower = self.bands[age] if age < len(self.bands) else self.standard.band_for(age).lower
        return f"{lower}{STRATUM_SEPARATOR}{name}"

    def _spell(self, out: dict[Key, list[int]], f: SpellFacts, spells: Sequence[SpellFacts],
               timeline: tl.PersonTimeline) -> None:
        spell = f.spell
        kinds: list[tuple[str, int, tuple[str, ...]]] = []
        if not spell.admission_opted_out:
            kinds.append(("admission", day_of(f.admitted), f.units))
            if f.discharged is None and spell.status == tl.SPELL_STATUS_OPEN:
                kinds.append(("open_spell", day_of(f.admitted), f.units))
        if f.discharged is not None and not spell.discharge_opted_out:
            kinds.append(("discharge", day_of(f.discharged), f.discharge_units))
        for kind, day, units in kinds:
            for indicator in self.by_fact.get(kind, ()):
                if not _passes(indicator, f):
                    continue
                hit, provisional = _numerator(indicator, f, spells, timeline)
                _count(out, indicator, units, day, hit, provisional)
                if hit and indicator.measure == "rate":
                    _count_stratum(out, indicator, units, day, f.stratum, provisional)

    def _ed(self, out: dict[Key, list[int]], timeline: tl.PersonTimeline, person_units: tuple[str, ...]) -> None:
        times = [ns(a.at) for a in timeline.ed_attendances]
        for attendance, t in zip(timeline.ed_attendances, times, strict=True):
            if attendance.opted_out:
                continue
            prior = sum(1 for u in times if t - ED_LOOKBACK_NS <= u < t)
            mine = _person_units(attendance.practice, attendance.locality) \
                if self.attribution == "at_event" else person_units
            units = (*mine, "provider:" + attendance.org, sector_unit(attendance.sector))
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


def _count_stratum(out: dict[Key, list[int]], indicator: Indicator, units: Sequence[str], day: int, stratum: str,
                   provisional: bool) -> None:
    """A numerator fact of a rate indicator, by stratum, for the units that have a population."""
    key = stratum_key(indicator.id, stratum)
    for unit in units:
        kind = unit.split(":", 1)[0]
        if kind in indicator.units and kind in POPULATION_UNITS:
            _add(out, (key, unit, day), 1, 0, int(provisional))


def _passes(indicator: Indicator, f: SpellFacts) -> bool:
    spell = f.spell
    if indicator.admission_methods and spell.admission_method not in indicator.admission_methods:
        return False
    if indicator.min_age is not None and spell.age_at_admission < indicator.min_age:
        return False
    if indicator.max_age is not None and spell.age_at_admission > indicator.max_age:
        return False
    if indicator.exclude_codelist is not None and indicator.exclude_codelist.matches(
            indicator.exclude_groups, f.diagnoses, f.procedures):
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
