"""Indicator values and a case list as the gateway sends them, for the dashboard's unit tests.

Values carry what services/indicators publishes: a withheld one only its identifying fields,
a published one its counts, value, interval, regional value and funnel limits (given here, not
computed: the dashboard draws what it is sent).
"""

from __future__ import annotations

from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import risk_pb2 as rk

ORG = "B86001"
TITLE = "Emergency admissions for ambulatory care sensitive conditions (all 19)"


def value(unit: str, window: str = "12m", numerator: int | None = 10, denominator: int | None = 1000, *,
          indicator: str = "acsc_all", measure: str = "rate", per: float = 100_000.0, withheld: bool = False,
          regional: float | None = 800.0, limits: tuple[float, float, float, float] | None = (300, 1500, 100, 2000),
          outlier: str = "", ci: tuple[float, float] | None = None, as_of: str = "2026-11-30") -> ind.IndicatorValue:
    v = ind.IndicatorValue(indicator=indicator, definition_version=1, title=TITLE if indicator == "acsc_all"
                           else indicator, unit=unit, window=window, as_of=as_of, measure=measure,
                           per=per if measure == "rate" else 0.0, suppressed=withheld,
                           window_start="2025-12-01" if window == "12m" else "", window_end="2026-11-30")
    if withheld:
        return v
    assert numerator is not None
    v.numerator = numerator
    v.provisional = 0
    if denominator is None:
        return v
    v.denominator = denominator
    v.value = numerator / denominator * (per if measure == "rate" else 1.0)
    low, high = ci if ci is not None else (v.value * 0.5, v.value * 1.5)
    v.ci_low, v.ci_high = low, high
    if unit == "region" or regional is None:
        return v
    v.regional_value = regional
    if limits is not None:
        v.funnel_95_low, v.funnel_95_high, v.funnel_998_low, v.funnel_998_high = limits
    v.outlier = outlier
    return v


def region_values() -> list[ind.IndicatorValue]:
    """The caller's practice, two peers (one withheld), the region and its locality, with three months."""
    return [
        value(f"practice:{ORG}", numerator=12, denominator=1000, outlier="high_95", limits=(400, 1150, 300, 1400)),
        value("practice:B86002", numerator=8, denominator=2000, limits=(550, 1100, 450, 1250)),
        value("practice:B86003", withheld=True),
        value("locality:LOC01", numerator=20, denominator=3000, regional=800.0, limits=(600, 1000, 500, 1100)),
        value("region", numerator=40, denominator=5000),
        value(f"practice:{ORG}", "2026-09", 9, 1000),
        value(f"practice:{ORG}", "2026-10", withheld=True),
        value(f"practice:{ORG}", "2026-11", 8, 1000),
        value("region", "2026-09", 20, 5000),
        value("region", "2026-10", 15, 5000),
        value("region", "2026-11", 12, 5000),
        value("practice:B86002", "2026-09", 11, 2000),  # a peer's month: not on the caller's trend
    ]


def case_list() -> rk.CaseList:
    cl = rk.CaseList(org=ORG, model="carehub-risk 1.0.0", tiers=["very_high", "high"], new_this_week=1)
    cl.as_of.FromSeconds(1_764_460_800)
    cl.cutoffs.population = 60
    entry = cl.entries.add(local_id="P-0000", role="registered_practice", score=3.6, risk=0.31, tier="high",
                           segment="complex", new_this_week=True)
    entry.listed_since.FromSeconds(1_764_900_000)
    entry.factors.add(factor="emergency_admissions", value=2, points=1.5, scored=True)
    entry.factors.add(factor="long_term_conditions", value=1, points=0.3, scored=True, evidence=["heart_failure"])
    entry.factors.add(factor="segment_hint", value=1, points=0, scored=False)
    entry.care_plan.presence = rk.CARE_PLAN_PRESENCE_RECORDED
    entry.care_plan.org = "SC001"
    entry.care_plan.contact_role = "social worker"
    entry.care_plan.recorded_at.FromSeconds(1_762_000_000)
    entry.care_plan.due.FromSeconds(1_760_000_000)
    entry.care_plan.overdue = True
    other = cl.entries.add(local_id="P-0007", role="registered_practice", score=3.1, risk=0.2, tier="high",
                           segment="frail")
    other.care_plan.presence = rk.CARE_PLAN_PRESENCE_UNKNOWN
    return cl
