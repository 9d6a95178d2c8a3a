"""From counts to published values: windows, rates, intervals, the regional average, funnel limits
and small-number suppression.

Pure: ``Aggregate`` holds the absolute counts of every timeline partition (from
``IndicatorPartials``) and ``values()`` turns their sum into ``IndicatorValue`` messages. Windows
are relative to the as-of day, the newest event day any partition has seen (SEMANTICS.md), so
the same events give the same values whenever they are computed.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from carehub.domain.definitions import POPULATION_UNITS, Catalogue, Indicator
from carehub.domain.indicator_facts import PRACTICE_LOCALITY, REGION, Key
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
class Raw:
    """A value before publication rules: numerator, denominator (None: a count), provisional."""

    numerator: int
    denominator: int | None
    provisional: int


class Aggregate:
    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
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
        """Partitions counted with other definition files than this aggregator's."""
        return sorted(p for p, d in self.digests.items() if d != self.catalogue.digest)

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
        out: dict[tuple[str, str, str], Raw] = {}
        for indicator in self.catalogue.indicators:
            series = {unit: Series(by_day) for unit, by_day in summed.get(indicator.id, {}).items()}
            population: dict[str, int] = {}
            if indicator.measure == "rate":
                population = {u: v[0][1] for u, v in summed.get(indicator.population_key, {}).items()
                              if v.get(0, [0, 0])[1] > 0}
            units = sorted(set(series) | set(population))
            for window in windows(indicator, as_of):
                for unit in units:
                    s = series.get(unit)
                    num, facts, prov = s.total(window) if s is not None else (0, 0, 0)
                    if indicator.measure == "proportion":
                        den: int | None = facts
                    elif indicator.measure == "rate" and unit.split(":", 1)[0] in POPULATION_UNITS:
                        den = population.get(unit, 0)
                    else:
                        den = None
                    out[(indicator.id, unit, window.label)] = Raw(num, den, prov)
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
                withheld = suppression.withheld({u: v.numerator for u, v in cells.items()},
                                                groups(cells, localities), threshold)
                regional = cells.get(REGION)
                regional_value = _value(indicator, regional) if regional is not None else None
                for unit in sorted(cells):
                    yield self._value(indicator, unit, window, as_of, cells[unit], unit in withheld,
                                      regional_value, computed_at_s)

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
        if indicator.measure == "rate":
            l95 = stats.funnel_limits_rate(regional_value, raw.denominator, indicator.per, FUNNEL_95)
            l998 = stats.funnel_limits_rate(regional_value, raw.denominator, indicator.per, FUNNEL_998)
        else:
            l95 = stats.funnel_limits_proportion(regional_value, raw.denominator, FUNNEL_95)
            l998 = stats.funnel_limits_proportion(regional_value, raw.denominator, FUNNEL_998)
        v.funnel_95_low, v.funnel_95_high = l95
        v.funnel_998_low, v.funnel_998_high = l998
        v.outlier = stats.outlier(value, l95, l998)
        return v


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
