"""The page's two charts, as geometry and then as inline SVG: a funnel plot and a monthly trend.

**Funnel plot** (Spiegelhalter 2005): every practice the caller may see as a point, its size
(the denominator) on x and its value on y, the regional value as a line, and the 95% and 99.8%
control limits. The gateway publishes each unit's limits at that unit's own size only, so the
limit lines here join the published limits at the plotted practices' sizes (sorted by size)
rather than recompute them: a point is outside a drawn line exactly when the hub flagged it.
With one practice plotted, its limits are short dashes at its size.
Withheld practices have no value or size and are counted under the plot, not drawn.

**Trend**: the practice's value per calendar month over the published months, its 95%
interval as a band, and the region's value; a withheld month is a gap in the line with a
hollow marker on the axis, never a zero.

Geometry (:func:`funnel`, :func:`trend`) is plain numbers so that it is tested as such
(tests/unit/test_dashboard_charts.py); :func:`funnel_svg` and :func:`trend_svg` only draw it.
Every text put into the SVG is escaped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from carehub.dashboard.figures import IndicatorView, has_value, number, shown, unit_label
from carehub.v1 import indicators_pb2 as ind

WIDTH, HEIGHT = 360, 240
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 22, 24, 38
LIMITS = ("95_low", "95_high", "998_low", "998_high")

Point = tuple[float, float]


@dataclass(frozen=True)
class Scale:
    """A linear map from [lo, hi] (data) onto [start, end] (pixels)."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, x: float) -> float:
        if self.hi == self.lo:
            return (self.start + self.end) / 2
        return self.start + (x - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def nice_ticks(hi: float, count: int = 5, lo: float = 0.0) -> list[float]:
    """Round ticks from ``lo`` (rounded down) to at least ``hi`` (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not math.isfinite(hi) or hi <= lo:
        return [lo, lo + 1.0]
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9)
    n = math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(first, n + 1)]


def size_axis(sizes: list[int]) -> list[float]:
    """Ticks for the funnel's x axis: from 0, unless every practice is at least half the largest's size, when the
    axis starts near the smallest so that practices of similar size do not crowd into one column."""
    smallest, largest = min(sizes), max(sizes)
    if smallest < largest / 2 or smallest == largest:
        return nice_ticks(largest * 1.05)
    spread = largest - smallest
    return nice_ticks(largest + spread * 0.1, lo=max(0.0, smallest - spread * 0.1))


def tick_label(t: float, step: float, measure: str) -> str:
    """An axis tick: as few decimals as the step needs (percentages for proportions)."""
    if measure == "proportion":
        decimals = 0 if step >= 0.01 - 1e-12 else 1
        return f"{100 * t:.{decimals}f}%"
    decimals = 0 if step >= 1 - 1e-12 else 1 if step >= 0.1 - 1e-12 else 2
    return f"{t:,.{decimals}f}"


def _y_ticks(scale: Scale, ticks: list[float], measure: str) -> list[tuple[float, str]]:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    return [(scale(t), tick_label(t, step, measure)) for t in ticks]


def y_unit(view: IndicatorView) -> str:
    """What the y axis counts: "per 100,000", "%" or "count"."""
    if view.measure == "rate":
        return f"per {view.per:,.0f}"
    return "count" if view.measure == "count" else "%"


def _plot_scales(sizes: list[int], y_hi: float, width: int, height: int,
                 ) -> tuple[Scale, Scale, list[float], list[float]]:
    xt, yt = size_axis(sizes), nice_ticks(y_hi)
    x = Scale(xt[0], xt[-1], MARGIN_LEFT, width - MARGIN_RIGHT)
    y = Scale(0.0, yt[-1], height - MARGIN_BOTTOM, MARGIN_TOP)
    return x, y, xt, yt


@dataclass(frozen=True)
class FunnelPoint:
    unit: str
    x: float
    y: float
    mine: bool
    outlier: str  # as the hub flagged it: "", high_95, low_95, high_998, low_998
    note: str  # the point's tooltip


@dataclass(frozen=True)
class Funnel:
    width: int
    height: int
    points: list[FunnelPoint]
    region_y: float | None
    limits: dict[str, list[Point]]  # LIMITS -> a polyline in pixels
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    withheld: int  # practices withheld (or without a size), so not drawn
    mine_drawn: bool


def _limit(v: ind.IndicatorValue, which: str) -> float | None:
    name = f"funnel_{which}"
    return getattr(v, name) if v.HasField(name) else None  # type: ignore[arg-type]


def funnel(view: IndicatorView, width: int = WIDTH, height: int = HEIGHT) -> Funnel | None:
    """The funnel plot of one indicator's headline window; None for counts or when no practice has a value."""
    if view.measure == "count":
        return None
    drawn = [v for v in view.practices if has_value(v) and v.HasField("denominator") and v.denominator > 0]
    if not drawn:
        return None
    regional = view.region.value if view.region is not None and has_value(view.region) else None
    if regional is None:
        regional = next((v.regional_value for v in drawn if v.HasField("regional_value")), None)
    ys = [number(v) for v in drawn]
    ys += [lim for v in drawn for w in LIMITS if (lim := _limit(v, w)) is not None]
    if regional is not None:
        ys.append(regional)
    y_hi = max(ys) * 1.05 if max(ys) > 0 else 1.0
    if view.measure == "proportion":
        y_hi = min(y_hi, 1.0) if max(ys) <= 1.0 else y_hi
    x, y, xt, yt = _plot_scales([v.denominator for v in drawn], y_hi, width, height)
    mine_unit = view.mine.unit if view.mine is not None else ""
    points = [FunnelPoint(unit=v.unit, x=x(v.denominator), y=y(number(v)), mine=v.unit == mine_unit,
                          outlier=v.outlier,
                          note=f"{unit_label(v.unit)}: {shown(v)} ({v.numerator:,} of {v.denominator:,})"
                               + (f", beyond the {'99.8' if v.outlier.endswith('998') else '95'}% limit"
                                  if v.outlier else ""))
              for v in sorted(drawn, key=lambda v: (v.unit == mine_unit, v.unit))]  # the caller's on top
    limits: dict[str, list[Point]] = {}
    by_size = sorted(drawn, key=lambda v: (v.denominator, v.unit))
    for which in LIMITS:
        line = [(x(v.denominator), y(lim)) for v in by_size if (lim := _limit(v, which)) is not None]
        if len(line) == 1:  # one practice plotted: its limits as a short dash at its size
            (px, py), = line
            line = [(px - 10, py), (px + 10, py)]
        if line:
            limits[which] = line
    return Funnel(
        width=width, height=height, points=points, region_y=y(regional) if regional is not None else None,
        limits=limits, x_ticks=[(x(t), f"{t:,.0f}") for t in xt], y_ticks=_y_ticks(y, yt, view.measure),
        withheld=len(view.practices) - len(drawn), mine_drawn=any(p.mine for p in points))


@dataclass(frozen=True)
class TrendMonth:
    label: str
    x: float
    y: float | None  # None: no value this month (withheld, or not published)
    withheld: bool
    ci: tuple[float, float] | None
    region_y: float | None
    note: str


@dataclass(frozen=True)
class Trend:
    width: int
    height: int
    months: list[TrendMonth]
    mine: list[list[Point]]  # the practice's line, broken where a month has no value
    region: list[list[Point]]
    bands: list[list[Point]] = field(default_factory=list)  # the 95% interval, one polygon per unbroken run
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    baseline: float = 0.0


def _runs(points: list[Point | None]) -> list[list[Point]]:
    runs: list[list[Point]] = [[]]
    for p in points:
        if p is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(p)
    return [r for r in runs if r]


def trend(view: IndicatorView, width: int = WIDTH, height: int = HEIGHT) -> Trend | None:
    """The monthly trend of one indicator; None when no month is published."""
    months = view.months
    if not months:
        return None
    ys: list[float] = []
    for m in months:
        for v in (m.mine, m.region):
            if v is not None and has_value(v):
                ys.append(number(v))
                if v.measure != "count" and v.HasField("ci_high") and v is m.mine:
                    ys.append(v.ci_high)
    y_hi = max(ys) * 1.05 if ys and max(ys) > 0 else 1.0
    yt = nice_ticks(y_hi)
    y = Scale(0.0, yt[-1], height - MARGIN_BOTTOM, MARGIN_TOP)
    step = (width - MARGIN_LEFT - MARGIN_RIGHT) / max(1, len(months) - 1) if len(months) > 1 else 0.0
    centre = (MARGIN_LEFT + width - MARGIN_RIGHT) / 2

    def x_of(i: int) -> float:
        return MARGIN_LEFT + i * step if len(months) > 1 else centre

    out: list[TrendMonth] = []
    for i, m in enumerate(months):
        mine = m.mine
        value = y(number(mine)) if mine is not None and has_value(mine) else None
        ci = None
        if value is not None and mine is not None and mine.measure != "count" and mine.HasField("ci_low"):
            ci = (y(mine.ci_low), y(mine.ci_high))
        region = y(number(m.region)) if m.region is not None and has_value(m.region) else None
        note = f"{m.label}: {shown(mine)}" + (f" (region {shown(m.region)})" if m.region is not None else "")
        out.append(TrendMonth(label=m.label, x=x_of(i), y=value, withheld=mine is not None and mine.suppressed,
                              ci=ci, region_y=region, note=note))
    bands = []
    for run in _runs([(t.x, t.ci[0]) if t.ci else None for t in out]):
        xs = {p[0] for p in run}
        highs = [(t.x, t.ci[1]) for t in out if t.ci and t.x in xs]
        bands.append(run + list(reversed(highs)))
    return Trend(width=width, height=height, months=out,
                 mine=_runs([(t.x, t.y) if t.y is not None else None for t in out]),
                 region=_runs([(t.x, t.region_y) if t.region_y is not None else None for t in out]),
                 bands=bands,
                 y_ticks=_y_ticks(y, yt, view.measure),
                 baseline=y(0.0))


# ---- SVG ----------------------------------------------------------------------------------------


def _pts(points: list[Point]) -> str:
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in points)


def _axes(width: int, height: int, y_ticks: list[tuple[float, str]], unit: str) -> list[str]:
    out = [f'<text class="axislabel" x="2" y="10">{escape(unit)}</text>',
           f'<line class="axis" x1="{MARGIN_LEFT}" y1="{height - MARGIN_BOTTOM}" x2="{width - MARGIN_RIGHT}" '
           f'y2="{height - MARGIN_BOTTOM}"/>',
           f'<line class="axis" x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" '
           f'y2="{height - MARGIN_BOTTOM}"/>']
    for py, label in y_ticks:
        out.append(f'<line class="grid" x1="{MARGIN_LEFT}" y1="{py:.1f}" x2="{width - MARGIN_RIGHT}" y2="{py:.1f}"/>')
        out.append(f'<text class="tick" x="{MARGIN_LEFT - 4}" y="{py + 3:.1f}" text-anchor="end">{escape(label)}'
                   "</text>")
    return out


def funnel_svg(view: IndicatorView) -> str:
    """The funnel plot as inline SVG, or a sentence saying why there is none."""
    f = funnel(view)
    if f is None:
        why = "a count: no funnel plot" if view.measure == "count" else "no practice has a value to plot"
        return f'<p class="nochart">{escape(why)}</p>'
    title = f"Funnel plot of {view.title} ({view.window}): each practice's value against its size"
    out = [f'<svg class="funnel" role="img" viewBox="0 0 {f.width} {f.height}" width="{f.width}" '
           f'height="{f.height}" data-indicator="{escape(view.indicator)}"><title>{escape(title)}</title>']
    out += _axes(f.width, f.height, f.y_ticks, y_unit(view))
    for px, label in f.x_ticks:
        out.append(f'<text class="tick" x="{px:.1f}" y="{f.height - MARGIN_BOTTOM + 13}" text-anchor="middle">'
                   f"{escape(label)}</text>")
    out.append(f'<text class="axislabel" x="{(MARGIN_LEFT + f.width - MARGIN_RIGHT) / 2:.1f}" y="{f.height - 6}" '
               'text-anchor="middle">size (denominator)</text>')
    for which, line in f.limits.items():
        level = "l998" if which.startswith("998") else "l95"
        out.append(f'<polyline class="limit {level}" data-limit="{which}" points="{_pts(line)}"/>')
    if f.region_y is not None:
        out.append(f'<line class="region" x1="{MARGIN_LEFT}" y1="{f.region_y:.1f}" x2="{f.width - MARGIN_RIGHT}" '
                   f'y2="{f.region_y:.1f}"><title>region</title></line>')
    for p in f.points:
        cls = "point mine" if p.mine else "point"
        if p.outlier:
            cls += " outlier"
        radius = 6 if p.mine else 4
        out.append(f'<circle class="{cls}" data-unit="{escape(p.unit)}" cx="{p.x:.1f}" cy="{p.y:.1f}" r="{radius}">'
                   f"<title>{escape(p.note)}</title></circle>")
    out.append("</svg>")
    legend = ['<p class="legend"><span class="key mine"></span> you <span class="key peer"></span> other practices '
              '<span class="key region"></span> region <span class="key l95"></span> 95% '
              '<span class="key l998"></span> 99.8% limits']
    if f.withheld:
        legend.append(f"; {f.withheld} practice{'s' if f.withheld != 1 else ''} withheld, not drawn")
    if view.mine is not None and not f.mine_drawn:
        legend.append(f"; yours is {escape(shown(view.mine))}")
    legend.append("</p>")
    return "".join(out) + "".join(legend)


def trend_svg(view: IndicatorView) -> str:
    """The monthly trend as inline SVG, or a sentence saying why there is none."""
    t = trend(view)
    if t is None:
        return '<p class="nochart">no monthly figures</p>'
    title = f"{view.title}: your value per month with its 95% interval, and the region's"
    out = [f'<svg class="trend" role="img" viewBox="0 0 {t.width} {t.height}" width="{t.width}" '
           f'height="{t.height}" data-indicator="{escape(view.indicator)}"><title>{escape(title)}</title>']
    out += _axes(t.width, t.height, t.y_ticks, y_unit(view))
    for band in t.bands:
        out.append(f'<polygon class="band" points="{_pts(band)}"/>')
    for run in t.region:
        out.append(f'<polyline class="trend region" points="{_pts(run)}"/>')
    for run in t.mine:
        out.append(f'<polyline class="trend mine" points="{_pts(run)}"/>')
    every = max(1, math.ceil(len(t.months) / 6))
    last = len(t.months) - 1
    for i, m in enumerate(t.months):
        if (last - i) % every == 0:  # counted back from the newest month, which is always labelled
            out.append(f'<text class="tick" x="{m.x:.1f}" y="{t.height - MARGIN_BOTTOM + 13}" text-anchor="middle">'
                       f"{escape(m.label)}</text>")
        if m.y is not None:
            out.append(f'<circle class="month mine" data-month="{escape(m.label)}" cx="{m.x:.1f}" cy="{m.y:.1f}" '
                       f'r="3"><title>{escape(m.note)}</title></circle>')
        elif m.withheld:
            out.append(f'<rect class="month withheld" data-month="{escape(m.label)}" x="{m.x - 3.5:.1f}" '
                       f'y="{t.baseline - 3.5:.1f}" width="7" height="7"><title>{escape(m.note)}</title></rect>')
    out.append("</svg>")
    withheld = sum(m.withheld for m in t.months)
    legend = ('<p class="legend"><span class="key mine"></span> you (band: 95% interval) '
              '<span class="key region"></span> region')
    if withheld:
        legend += (f' <span class="key withheld"></span> withheld month{"s" if withheld != 1 else ""} '
                   f"({withheld}): a gap, not a zero")
    return "".join(out) + legend + "</p>"
