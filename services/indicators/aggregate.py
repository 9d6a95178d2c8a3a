"""From counts to published values: windows, rates, intervals, directly standardised rates, the
regional average, national reference values, funnel limits and small-number suppression.

Pure: ``Aggregate`` holds the absolute counts of every timeline partition (from
``IndicatorPartials``) and ``values()`` turns their sum into ``IndicatorValue`` messages. Windows
are relative to the as-of day, the newest event day any partition has seen (SEMANTICS.md), so
the same events give the same values whenever they are computed.

Rate indicators on spell facts also get a directly age/sex-standardised rate (ESP 2013, Dobson
limits; carehub/domain/standardisation.py) from the cells by stratum, beside the crude rate.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from carehub.domain.definitions import POPULATION_UNITS, SPELL_FACTS, Catalogue, Indicator
from carehub.domain.indicator_facts import (
    PRACTICE_LOCALITY,
    REGION,
    STRATUM_SEPARATOR,
    UNKNOWN_STRATUM,
    Key,
    counting_digest,
)
from carehub.domain.reference_values import ReferenceValue, ReferenceValues
from carehub.domain.standardisation import (
    SEXES,
    StandardPopulation,
    Stratum,
    directly_standardised_rate,
    load_standard_population,
)
from carehub.v1 import indicators_pb2 as ind

from . import stats, suppression

EPOCH = date(1970, 1, 1)
FUNNEL_95, FUNNEL_998 = 0.95, 0.998


@dataclass(frozen=True)
class Window:
    label: str
    first: int | None  # day numbers, inclusive; None: no lower bound
    last: int


def windows(indicator: Indicator, as_of: int) -> list[Window]:
    end = as_of - indicator.lag_days
    out: list[Window] = []
    for kind in indicator.windows:
        if kind == "30d":
            out.append(Window("30d", end - 29, end))
        elif kind == "12m":
            out.append(Window("12m", end - 364, end))
        elif kind == "now":
            out.append(Window("now", None, end))
        else:  # calendar months overlapping the 12 months
            first, last = EPOCH + timedelta(days=end - 364), EPOCH + timedelta(days=end)
            month = date(first.year, first.month, 1)
            while month <= last:
                following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
                out.append(Window(month.strftime("%Y-%m"), (month - EPOCH).days,
                                  min((following - EPOCH).days - 1, end)))
                month = following
    return out


class Series:
    """One indicator x unit: counts by day, with running sums for window totals."""

    def __init__(self, by_day: dict[int, list[int]]) -> None:
        self.days = sorted(by_day)
        sums = [0, 0, 0]
        self.cumulative: list[tuple[int, int, int]] = [(0, 0, 0)]
        for day in self.days:
            for i, v in enumerate(by_day[day]):
                sums[i] += v
            self.cumulative.append((sums[0], sums[1], sums[2]))

    def total(self, window: Window) -> tuple[int, int, int]:
        lo = 0 if window.first is None else bisect.bisect_left(self.days, window.first)
        hi = bisect.bisect_right(self.days, window.last)
        if hi <= lo:
            return 0, 0, 0
        a, b = self.cumulative[lo], self.cumulative[hi]
        return b[0] - a[0], b[1] - a[1], b[2] - a[2]


@dataclass
class Strata:
    """A rate's counts by stratum (age band's lower bound, sex), and what fits no stratum."""

    events: dict[Stratum, int]
    population: dict[Stratum, int]
    unstratified_events: int
    unstratified_population: int


@dataclass
class Raw:
    """A value before publication rules: numerator, denominator (None: a count), provisional."""

    numerator: int
    denominator: int | None
    provisional: int
    strata: Strata | None = None


def standardised(indicator: Indicator) -> bool:
    """Whether an indicator gets a DSR: a rate counting spell facts (their age at admission)."""
    return indicator.measure == "rate" and indicator.fact in SPELL_FACTS


def _stratum(name: str, min_age: int) -> Stratum | None:
    """A stratum cell's name as a stratum; None when it fits no stratum of the standard from ``min_age``
    (unknown age or sex, or a band below ``min_age``)."""
    if name == UNKNOWN_STRATUM:
        return None
    lower, sex = name.split(STRATUM_SEPARATOR, 1)
    return (int(lower), sex) if int(lower) >= min_age else None


def national(references: ReferenceValues | None, indicator: Indicator) -> tuple[ReferenceValue, float] | None:
    """The national value funnel limits are drawn around, on the scale of the indicator's values:
    the first entry for it (file order) that is published and in its units (not context only)."""
    if references is None or indicator.measure not in ("rate", "proportion"):
        return None
    for ref in references.for_indicator(indicator.id):
        if ref.value is None or ref.status != "published" or ref.comparison == "context_only":
            continue
        if indicator.measure == "proportion" and ref.unit == "percent":
            return ref, ref.value / 100.0
        if indicator.measure == "rate" and ref.unit == "per_100000":
            return ref, ref.value * indicator.per / 100_000.0
    return None


class Aggregate:
    def __init__(self, catalogue: Catalogue, attribution: str = "current",
                 standard: StandardPopulation | None = None, references: ReferenceValues | None = None) -> None:
        self.catalogue = catalogue
        self.digest = counting_digest(catalogue, attribution)
        self.standard = standard or load_standard_population()
        self.references = references
        self.partitions: dict[int, dict[Key, tuple[int, int, int]]] = {}
        self.newest: dict[int, int] = {}
        self.digests: dict[int, str] = {}

    def apply(self, partials: ind.IndicatorPartials) -> None:
        p = partials.source_partition
        if partials.replace or p not in self.partitions:
            self.partitions[p] = {}
        cells = self.partitions[p]
        for c in partials.cells:
            key = (c.indicator, c.unit, c.day)
            if c.numerator or c.denominator or c.provisional:
                cells[key] = (c.numerator, c.denominator, c.provisional)
            else:
                cells.pop(key, None)
        self.newest[p] = partials.newest_day
        self.digests[p] = partials.definitions_digest

    @property
    def as_of(self) -> int | None:
        return max(self.newest.values()) if self.newest else None

    def stale_partitions(self) -> list[int]:
        """Partitions counted with other definition files (or attribution) than this aggregator's."""
        return sorted(p for p, d in self.digests.items() if d != self.digest)

    def _summed(self) -> dict[str, dict[str, dict[int, list[int]]]]:
        out: dict[str, dict[str, dict[int, list[int]]]] = {}
        for cells in self.partitions.values():
            for (indicator, unit, day), value in cells.items():
                cell = out.setdefault(indicator, {}).setdefault(unit, {}).setdefault(day, [0, 0, 0])
                for i in range(3):
                    cell[i] += value[i]
        return out

    def raw(self) -> dict[tuple[str, str, str], Raw]:
        """Every (indicator, unit, window) before publication rules (SEMANTICS.md, "Values")."""
        as_of = self.as_of
        if as_of is None:
            return {}
        summed = self._summed()
        by_stratum: dict[str, dict[str, dict[str, dict[int, list[int]]]]] = {}  # base, stratum, unit, day
        for name, by_unit in summed.items():
            base, separator, stratum = name.partition(STRATUM_SEPARATOR)
            if separator:
                by_stratum.setdefault(base, {})[stratum] = by_unit
        out: dict[tuple[str, str, str], Raw] = {}
        for indicator in self.catalogue.indicators:
            series = {unit: Series(by_day) for unit, by_day in summed.get(indicator.id, {}).items()}
            population: dict[str, int] = {}
            if indicator.measure == "rate":
                population = {u: v[0][1] for u, v in summed.get(indicator.population_key, {}).items()
                              if v.get(0, [0, 0])[1] > 0}
            strata = by_stratum.get(indicator.id, {}) if standardised(indicator) else {}
            min_age = indicator.population_min_age
            # by unit: each stratum's events as a series (None: fits no stratum), and its people
            stratum_series: dict[str, list[tuple[Stratum | None, Series]]] = {}
            for name, by_unit in strata.items():
                key = _stratum(name, min_age)
                for unit, by_day in by_unit.items():
                    stratum_series.setdefault(unit, []).append((key, Series(by_day)))
            stratum_population: dict[str, tuple[dict[Stratum, int], int]] = {}
            for name, by_unit in by_stratum.get(indicator.population_key, {}).items():
                key = _stratum(name, min_age)
                for unit, by_day in by_unit.items():
                    people, unknown = stratum_population.setdefault(unit, ({}, 0))
                    count = by_day[0][1] if 0 in by_day else 0
                    if key is None:
                        stratum_population[unit] = (people, unknown + count)
                    elif count:
                        people[key] = count
            units = sorted(set(series) | set(population))
            for window in windows(indicator, as_of):
                for unit in units:
                    s = series.get(unit)
                    num, facts, prov = s.total(window) if s is not None else (0, 0, 0)
                    counted: Strata | None = None
                    if indicator.measure == "proportion":
                        den: int | None = facts
                    elif indicator.measure == "rate" and unit.split(":", 1)[0] in POPULATION_UNITS:
                        den = population.get(unit, 0)
                        if standardised(indicator):
                            counted = _strata(stratum_series.get(unit, []),
                                              stratum_population.get(unit, ({}, 0)), window)
                    else:
                        den = None
                    out[(indicator.id, unit, window.label)] = Raw(num, den, prov, counted)
        return out

    def practice_localities(self) -> dict[str, str]:
        """Each practice unit's locality unit: the one most of its persons are in."""
        persons: Counter[tuple[str, str]] = Counter()
        for cells in self.partitions.values():
            for (indicator, unit, _), value in cells.items():
                if indicator == PRACTICE_LOCALITY:
                    practice, locality = unit.split("|", 1)
                    persons[(practice, locality)] += value[1]
        best: dict[str, tuple[int, str]] = {}
        for (practice, locality), n in sorted(persons.items()):
            if practice not in best or n > best[practice][0]:
                best[practice] = (n, locality)
        return {p: loc for p, (_, loc) in best.items()}

    def values(self, threshold: int, computed_at_s: float = 0.0) -> Iterator[ind.IndicatorValue]:
        """Published values, publication rules applied, in a stable order."""
        as_of = self.as_of
        if as_of is None:
            return
        raw = self.raw()
        localities = self.practice_localities()
        by_window: dict[tuple[str, str], dict[str, Raw]] = {}
        for (indicator_id, unit, label), value in raw.items():
            by_window.setdefault((indicator_id, label), {})[unit] = value
        for indicator in self.catalogue.indicators:
            spans = {w.label: w for w in windows(indicator, as_of)}
            for label, window in spans.items():
                cells = by_window.get((indicator.id, label), {})
                grouped = groups(cells, localities)
                withheld = suppression.withheld({u: v.numerator for u, v in cells.items()}, grouped, threshold)
                # counts of people and events outside the strata are small counts too
                hidden_events = suppression.withheld(
                    {u: v.strata.unstratified_events if v.strata else 0 for u, v in cells.items()}, grouped, threshold)
                hidden_people = suppression.withheld(
                    {u: v.strata.unstratified_population if v.strata else 0 for u, v in cells.items()}, grouped,
                    threshold)
                regional = cells.get(REGION)
                regional_value = _value(indicator, regional) if regional is not None else None
                for unit in sorted(cells):
                    v = self._value(indicator, unit, window, as_of, cells[unit], unit in withheld,
                                    regional_value, computed_at_s)
                    if not v.suppressed:
                        self._standardised(v, indicator, cells[unit], unit in hidden_events, unit in hidden_people)
                        self._national(v, indicator)
                    yield v

    def _standardised(self, v: ind.IndicatorValue, indicator: Indicator, raw: Raw, events_hidden: bool,
                      people_hidden: bool) -> None:
        """The DSR beside the crude rate (docs/standardisation.md); a withheld value has none."""
        strata = raw.strata
        if strata is None:
            return
        v.standard_population = self.standard.name
        if not events_hidden:
            v.unstratified_events = strata.unstratified_events
        if not people_hidden:
            v.unstratified_population = strata.unstratified_population
        min_age = indicator.population_min_age
        if min_age not in {band.lower for band in self.standard.bands}:
            v.dsr_not_computed = "min_age_not_a_band"
            return
        dsr = directly_standardised_rate(strata.events, strata.population, self.standard, sexes=SEXES,
                                         min_age=min_age, per=indicator.per)
        if dsr.reason is not None:
            v.dsr_not_computed = dsr.reason
            return
        assert dsr.dsr is not None and dsr.lower95 is not None and dsr.upper95 is not None
        v.dsr, v.dsr_ci_low, v.dsr_ci_high = dsr.dsr, dsr.lower95, dsr.upper95

    def _national(self, v: ind.IndicatorValue, indicator: Indicator) -> None:
        """Funnel limits around the national value for the unit's size, where one is comparable."""
        found = national(self.references, indicator)
        if found is None or not v.HasField("value"):
            return
        ref, value = found
        v.national_reference, v.national_value = ref.name, value
        l95, l998 = _funnel(indicator, value, v.denominator)
        v.national_funnel_95_low, v.national_funnel_95_high = l95
        v.national_funnel_998_low, v.national_funnel_998_high = l998

    def _value(self, indicator: Indicator, unit: str, window: Window, as_of: int, raw: Raw, withheld: bool,
               regional_value: float | None, computed_at_s: float) -> ind.IndicatorValue:
        first = window.first
        v = ind.IndicatorValue(
            indicator=indicator.id, definition_version=indicator.version, title=indicator.title, unit=unit,
            window=window.label, as_of=_iso(as_of), window_start=_iso(first) if first is not None else "",
            window_end=_iso(window.last), measure=indicator.measure, per=indicator.per if indicator.measure ==
            "rate" else 0.0, suppressed=withheld)
        if computed_at_s:
            v.computed_at.FromNanoseconds(int(computed_at_s * 1e9))
        if withheld:
            return v
        v.numerator = raw.numerator
        v.provisional = raw.provisional
        if raw.denominator is None:
            return v
        v.denominator = raw.denominator
        value = _value(indicator, raw)
        if value is None:
            return v
        v.value = value
        if indicator.measure == "rate":
            v.ci_low, v.ci_high = stats.rate_ci(raw.numerator, raw.denominator, indicator.per)
        else:
            v.ci_low, v.ci_high = stats.proportion_ci(raw.numerator, raw.denominator)
        if regional_value is None or unit == REGION:
            return v
        v.regional_value = regional_value
        l95, l998 = _funnel(indicator, regional_value, raw.denominator)
        v.funnel_95_low, v.funnel_95_high = l95
        v.funnel_998_low, v.funnel_998_high = l998
        v.outlier = stats.outlier(value, l95, l998)
        return v


def _strata(events: list[tuple[Stratum | None, Series]], population: tuple[dict[Stratum, int], int],
            window: Window) -> Strata:
    """One unit's counts by stratum in a window: events by age at admission, people by age now
    (``None``: fits no stratum)."""
    observed: dict[Stratum, int] = {}
    unknown = 0
    for key, series in events:
        count = series.total(window)[0]
        if key is None:
            unknown += count
        elif count:
            observed[key] = observed.get(key, 0) + count
    return Strata(observed, population[0], unknown, population[1])


def _value(indicator: Indicator, raw: Raw) -> float | None:
    if raw.denominator is None or raw.denominator <= 0:
        return None
    if indicator.measure == "rate":
        return raw.numerator / raw.denominator * indicator.per
    return raw.numerator / raw.denominator


def _iso(day: int) -> str:
    return (EPOCH + timedelta(days=day)).isoformat()


def groups(cells: dict[str, Raw], localities: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Additive groups among published units: the region is the sum of each unit kind, and a
    locality the sum of its practices (when every person of those practices is in it)."""
    out: list[tuple[str, list[str]]] = []
    if REGION in cells:
        kinds = sorted({u.split(":", 1)[0] for u in cells if u != REGION})
        for kind in kinds:
            out.append((REGION, sorted(u for u in cells if u.startswith(kind + ":"))))
    by_locality = sorted((loc, p) for p, loc in localities.items() if p in cells)
    for locality, members in itertools.groupby(by_locality, key=lambda x: x[0]):
        if locality in cells:
            out.append((locality, [p for _, p in members]))
    return out


def _funnel(indicator: Indicator, centre: float, denominator: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """The 95% and 99.8% funnel limits around ``centre`` (regional or national) for a unit of ``denominator``."""
    if indicator.measure == "rate":
        return (stats.funnel_limits_rate(centre, denominator, indicator.per, FUNNEL_95),
                stats.funnel_limits_rate(centre, denominator, indicator.per, FUNNEL_998))
    return (stats.funnel_limits_proportion(centre, denominator, FUNNEL_95),
            stats.funnel_limits_proportion(centre, denominator, FUNNEL_998))
