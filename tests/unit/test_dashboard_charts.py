"""The dashboard's figures and chart geometry: which value goes where, and where it is drawn.

No server and no browser: carehub/dashboard/figures.py and charts.py are pure. The values are
shaped as services/indicators publishes them (tests/dashboard_values.py).
"""

from __future__ import annotations

import pytest

from carehub.dashboard import charts, figures
from tests.dashboard_values import ORG, region_values, value

MINE = f"practice:{ORG}"


def acsc_all() -> figures.IndicatorView:
    [view] = figures.build(ORG, region_values())
    return view


def test_the_practice_its_comparators_peers_and_months_are_sorted_out() -> None:
    view = acsc_all()
    assert view.window == "12m" and view.measure == "rate" and view.per == 100_000
    assert view.mine is not None and view.mine.unit == MINE
    assert view.region is not None and view.region.unit == "region"
    assert [v.unit for v in view.localities] == ["locality:LOC01"]
    assert [v.unit for v in view.peers] == ["practice:B86002", "practice:B86003"]
    assert [label for label, _ in figures.comparators(view)] == ["region", "locality LOC01"]
    # the trend is the caller's and the region's months only, oldest first; a peer's month is not on it
    assert [m.label for m in view.months] == ["2026-09", "2026-10", "2026-11"]
    assert all(m.mine is None or m.mine.unit == MINE for m in view.months)
    assert view.months[1].mine is not None and view.months[1].mine.suppressed


def test_withheld_is_withheld_not_zero_and_absent_is_not_published() -> None:
    withheld = value("practice:B86003", withheld=True)
    assert not figures.has_value(withheld)
    assert figures.shown(withheld) == "withheld" and figures.interval(withheld) == ""
    assert figures.shown(None) == "not published"
    assert figures.shown(value(MINE, numerator=0, denominator=None)) == "no value"
    zero = value(MINE, numerator=0, denominator=500, ci=(0.0, 737.8))
    assert figures.shown(zero) == "0.0" and figures.interval(zero) == "0.0\u2013737.8"
    assert figures.peer_summary(acsc_all()) == "2 other practices: median 400.0, range 400.0 to 400.0 (1 withheld)"


def test_headline_window_counts_and_proportions() -> None:
    views = figures.build(ORG, [
        value(MINE, "now", 9, None, indicator="long_stay_7d", measure="count"),
        value("region", "now", 40, None, indicator="long_stay_7d", measure="count"),
        value(MINE, "30d", 3, 30, indicator="readmission_30d", measure="proportion", regional=0.1),
        value(MINE, "12m", 12, 120, indicator="readmission_30d", measure="proportion", regional=0.1),
    ])
    assert [(v.indicator, v.window) for v in views] == [("long_stay_7d", "now"), ("readmission_30d", "12m")]
    long_stay, readmission = views
    assert figures.shown(long_stay.mine) == "9" and figures.number(long_stay.mine) == 9.0  # type: ignore[arg-type]
    assert figures.shown(readmission.mine) == "10.0%"
    assert charts.funnel(long_stay) is None  # a count has no funnel
    assert figures.as_of(region_values()) == "2026-11-30"


@pytest.mark.parametrize(("hi", "expected"), [(1.0, [0.0, 0.25, 0.5, 0.75, 1.0]),
                                               (1234.0, [0.0, 500.0, 1000.0, 1500.0]),
                                               (0.0, [0.0, 1.0]), (7.0, [0.0, 2.0, 4.0, 6.0, 8.0])])
def test_ticks_are_round_and_cover_the_data(hi: float, expected: list[float]) -> None:
    assert charts.nice_ticks(hi) == expected


def test_the_funnel_draws_each_practice_at_its_size_and_value_with_the_callers_highlighted() -> None:
    view = acsc_all()
    f = charts.funnel(view)
    assert f is not None
    assert [(p.unit, p.mine) for p in f.points] == [("practice:B86002", False), (MINE, True)]  # the caller's on top
    assert f.withheld == 1 and f.mine_drawn
    peer, mine = f.points
    # bigger practices further right, higher values further up (smaller y)
    assert peer.x > mine.x and mine.y < peer.y
    assert mine.outlier == "high_95" and "beyond the 95% limit" in mine.note
    assert f.region_y is not None and peer.y > f.region_y > mine.y  # region 800: between B86002 (400) and 1,200
    # the limit lines pass through each practice's published limits, in order of size
    assert set(f.limits) == set(charts.LIMITS)
    assert [x for x, _ in f.limits["95_high"]] == [mine.x, peer.x]
    high_at_mine = dict(f.limits["95_high"])[mine.x]
    high_998_at_mine = dict(f.limits["998_high"])[mine.x]
    # flagged above the 95% limit and within 99.8%: drawn between the two lines at its own size (y grows down)
    assert high_998_at_mine < mine.y < high_at_mine


def test_the_funnel_has_no_point_without_a_value_and_none_when_nothing_is_published() -> None:
    only_withheld = figures.build(ORG, [value(MINE, withheld=True), value("region", numerator=40, denominator=5000)])
    assert charts.funnel(only_withheld[0]) is None
    svg = charts.funnel_svg(only_withheld[0])
    assert "<svg" not in svg and "no practice has a value to plot" in svg


def test_the_trend_leaves_a_gap_at_a_withheld_month_not_a_zero() -> None:
    t = charts.trend(acsc_all())
    assert t is not None
    assert [(m.label, m.withheld, m.y is None) for m in t.months] == [
        ("2026-09", False, False), ("2026-10", True, True), ("2026-11", False, False)]
    assert [len(run) for run in t.mine] == [1, 1]  # broken at the withheld month
    assert [len(run) for run in t.region] == [3]
    assert all(m.region_y is not None for m in t.months)
    assert len(t.bands) == 2
    x_of = [m.x for m in t.months]
    assert x_of == sorted(x_of) and len(set(x_of)) == 3
    svg = charts.trend_svg(acsc_all())
    assert svg.count('class="month withheld"') == 1 and 'data-month="2026-10"' in svg
    assert "withheld month (1): a gap, not a zero" in svg


def test_svg_text_is_escaped() -> None:
    bad = '"><script>alert(1)</script>'
    view = figures.build(ORG, [value(MINE, indicator=f"x{bad}"), value(f"practice:Z{bad}"),
                               value("region", numerator=40, denominator=5000)])[0]
    svg = charts.funnel_svg(view) + charts.trend_svg(view)
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_the_size_axis_starts_at_zero_unless_the_practices_are_of_similar_size() -> None:
    assert charts.size_axis([120, 800, 950])[0] == 0.0
    similar = charts.size_axis([780, 810, 830, 905])
    assert 0.0 < similar[0] <= 780 and similar[-1] >= 905
    assert charts.size_axis([500])[0] == 0.0


def test_the_newest_month_is_always_labelled() -> None:
    months = [value(MINE, f"2026-{m:02d}", 9, 1000) for m in range(1, 13)]
    view = figures.build(ORG, [value(MINE), *months])[0]
    svg = charts.trend_svg(view)
    labels = [part.split("<")[0] for part in svg.split('text-anchor="middle">')[1:]]
    assert labels[-1] == "2026-12" and len(labels) == 6 and "2026-11" not in labels


def test_one_plotted_practice_shows_its_limits_as_dashes_at_its_size() -> None:
    view = figures.build(ORG, [value(MINE), value("region", numerator=40, denominator=5000)])[0]
    f = charts.funnel(view)
    assert f is not None and [p.unit for p in f.points] == [MINE]
    (left, y_left), (right, y_right) = f.limits["95_high"]
    assert left < f.points[0].x < right and y_left == y_right
