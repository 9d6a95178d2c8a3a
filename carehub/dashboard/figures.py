"""What one indicator shows on a practice's page, sorted out of the indicator values the gateway sent.

The gateway answers a partner with the units it is entitled to: its own practice and the region
by default, and whatever else its partner entry lists (localities, other practices). This module
puts them in their places for one practice: its own figure, the figures it is compared with
(the region, localities), its peers (the other practices it may see) and the monthly series for
the trend. It never makes a value up: a withheld figure stays withheld (not zero), a missing one
missing. Pure: no I/O, tested in tests/unit/test_dashboard_figures.py.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from carehub.v1 import indicators_pb2 as ind

# The headline window of an indicator: the first of these it is published for.
HEADLINE_WINDOWS = ("12m", "now", "30d")
MONTH = re.compile(r"\d{4}-\d{2}")
REGION = "region"


@dataclass(frozen=True)
class Month:
    """One calendar month of the trend: the practice's figure and the region's (None: not published)."""

    label: str
    mine: ind.IndicatorValue | None
    region: ind.IndicatorValue | None


@dataclass(frozen=True)
class IndicatorView:
    """One indicator for one practice, in its headline window, with its monthly series."""

    indicator: str
    title: str
    measure: str  # rate, proportion or count
    per: float
    window: str
    mine: ind.IndicatorValue | None
    region: ind.IndicatorValue | None
    localities: tuple[ind.IndicatorValue, ...]
    peers: tuple[ind.IndicatorValue, ...]  # the other practices the caller may see, by unit
    months: tuple[Month, ...]  # oldest first

    @property
    def practices(self) -> list[ind.IndicatorValue]:
        """The practice's own figure (when there is one) and its peers': the funnel's points."""
        return ([self.mine] if self.mine is not None else []) + list(self.peers)


def has_value(v: ind.IndicatorValue | None) -> bool:
    """A figure with a number to show (not withheld, and with a denominator for rates and proportions)."""
    if v is None or v.suppressed or not v.HasField("numerator"):
        return False
    return v.measure == "count" or v.HasField("value")


def number(v: ind.IndicatorValue) -> float:
    """The figure's number: the value for rates and proportions, the count for counts."""
    return float(v.numerator) if v.measure == "count" else v.value


def fmt(x: float, measure: str) -> str:
    """1,234.5 for a rate, 12.3% for a proportion, 7 for a count."""
    if measure == "proportion":
        return f"{100 * x:.1f}%"
    if measure == "count":
        return f"{x:,.0f}"
    return f"{x:,.1f}"


def shown(v: ind.IndicatorValue | None) -> str:
    """How a figure reads on the page: its number, "withheld", "no value" (no denominator) or "not published"."""
    if v is None:
        return "not published"
    if v.suppressed:
        return "withheld"
    if not has_value(v):
        return "no value"
    return fmt(number(v), v.measure)


def interval(v: ind.IndicatorValue | None) -> str:
    """The 95% confidence interval as "a to b" (with an en dash), or "" when there is none."""
    if v is None or v.suppressed or not v.HasField("ci_low") or not v.HasField("ci_high"):
        return ""
    return f"{fmt(v.ci_low, v.measure)}\u2013{fmt(v.ci_high, v.measure)}"


def unit_label(unit: str) -> str:
    """'practice:B86001' -> 'B86001', 'locality:LOC01' -> 'locality LOC01', 'region' -> 'region'."""
    kind, _, code = unit.partition(":")
    if not code:
        return unit
    return code if kind == "practice" else f"{kind} {code}"


def comparators(view: IndicatorView) -> list[tuple[str, ind.IndicatorValue]]:
    """What the practice's figure is shown beside, in order: the region, then its localities."""
    out: list[tuple[str, ind.IndicatorValue]] = []
    if view.region is not None:
        out.append(("region", view.region))
    out.extend((unit_label(v.unit), v) for v in view.localities)
    return out


def peer_summary(view: IndicatorView) -> str:
    """"11 practices: median 1,234.5, range 800.0 to 2,000.0 (2 withheld)", or "" without peers."""
    if not view.peers:
        return ""
    numbers = [number(v) for v in view.peers if has_value(v)]
    withheld = sum(v.suppressed for v in view.peers)
    n = len(view.peers)
    text = f"{n} other practice{'s' if n != 1 else ''}"
    if numbers:
        text += (f": median {fmt(statistics.median(numbers), view.measure)}, range "
                 f"{fmt(min(numbers), view.measure)} to {fmt(max(numbers), view.measure)}")
    if withheld:
        text += f" ({withheld} withheld)"
    return text


def headline_window(windows: Iterable[str]) -> str | None:
    present = set(windows)
    return next((w for w in HEADLINE_WINDOWS if w in present), None)


def build(org: str, values: Iterable[ind.IndicatorValue]) -> list[IndicatorView]:
    """Each indicator's view for practice ``org`` from the values the gateway sent, by indicator id."""
    mine_unit = f"practice:{org}"
    by_indicator: dict[str, list[ind.IndicatorValue]] = {}
    for v in values:
        by_indicator.setdefault(v.indicator, []).append(v)
    views: list[IndicatorView] = []
    for indicator in sorted(by_indicator):
        got = by_indicator[indicator]
        window = headline_window(v.window for v in got)
        if window is None:
            continue
        headline = sorted((v for v in got if v.window == window), key=lambda v: v.unit)
        mine = next((v for v in headline if v.unit == mine_unit), None)
        region = next((v for v in headline if v.unit == REGION), None)
        first = mine or region or headline[0]
        months: dict[str, dict[str, ind.IndicatorValue]] = {}
        for v in got:
            if MONTH.fullmatch(v.window) and v.unit in (mine_unit, REGION):
                months.setdefault(v.window, {})[v.unit] = v
        views.append(IndicatorView(
            indicator=indicator, title=first.title or indicator, measure=first.measure, per=first.per, window=window,
            mine=mine, region=region,
            localities=tuple(v for v in headline if v.unit.startswith("locality:")),
            peers=tuple(v for v in headline if v.unit.startswith("practice:") and v.unit != mine_unit),
            months=tuple(Month(label, m.get(mine_unit), m.get(REGION)) for label, m in sorted(months.items())),
        ))
    return views


def as_of(values: Iterable[ind.IndicatorValue]) -> str:
    """The newest as-of day among the values (the hub's event clock), or ""."""
    return max((v.as_of for v in values), default="")
