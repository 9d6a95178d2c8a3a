"""The practice's page as HTML: a frame, one renderer per section, and the page shown when the gateway fails.

A section renderer takes what one gateway read returned and the page's context and gives an
HTML fragment; carehub/dashboard/sections.py pairs each with its read. Everything is rendered
on the server, with the style and the charts inline, so the page loads nothing else (it works
offline, and the server's Content-Security-Policy forbids anything else). Every text from the
hub is escaped. People appear only under the practice's own record ids, as the gateway sends
them; there is no hub person id in what the gateway sends, so none can reach the page. Pure:
tests/unit/test_dashboard_page.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from carehub.dashboard import figures
from carehub.dashboard.charts import funnel_svg, trend_svg
from carehub.display import day, moment
from carehub.display import sector as sector_words
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import review_pb2 as rv
from carehub.v1 import risk_pb2 as rk

WINDOW_NAMES = {"12m": "the last 12 months", "30d": "the last 30 days", "now": "now (open hospital stays)"}
OUTLIER_NAMES = {"high_998": "above 99.8% limit", "low_998": "below 99.8% limit",
                 "high_95": "above 95% limit", "low_95": "below 95% limit"}

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;color:#0b0c0c;background:#f3f2f1}
header{background:#005eb8;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:22px}header p{margin:4px 0 0}
nav{padding:6px 24px;background:#e8edee}nav a{margin-right:16px;color:#005eb8}
main{padding:8px 24px 24px}
section{background:#fff;margin:12px 0;padding:12px 16px;border-radius:4px}
h2{font-size:18px;margin:4px 0 8px}h3{font-size:15px;margin:0 0 4px}
.note{color:#4c6272;margin:2px 0 8px}
.indicator{display:grid;grid-template-columns:minmax(340px,1fr) 360px 360px;gap:12px;
  border-top:1px solid #d8dde0;padding:10px 0}
.figs{border-collapse:collapse}.figs th{text-align:left;font-weight:normal;padding:1px 8px 1px 0}
.figs td{padding:1px 8px 1px 0}.figs tr.mine{font-weight:bold}
.value,.ci,.counts{font-variant-numeric:tabular-nums;white-space:nowrap}.withheld{color:#768692;font-style:italic}
.flag{color:#d5281b;white-space:nowrap}.flag.low{color:#007f3b}
details{margin-top:4px}details table{border-collapse:collapse;font-size:12px}details td,details th{padding:0 6px 0 0}
svg{background:#fff;overflow:visible}
.axis{stroke:#425563;stroke-width:1}.grid{stroke:#e8edee;stroke-width:1}
.tick,.axislabel{font-size:10px;fill:#425563}
.limit{fill:none;stroke:#768692;stroke-width:1.2}.limit.l95{stroke-dasharray:5 3}.limit.l998{stroke-dasharray:1 3}
.region{stroke:#231f20;stroke-width:1.5}.trend.region{fill:none;stroke-dasharray:4 3}
.point{fill:#41b6e6;stroke:#005eb8;stroke-width:1}.point.mine{fill:#ed8b00;stroke:#8a2a2b;stroke-width:2}
.trend.mine{fill:none;stroke:#ed8b00;stroke-width:2}.band{fill:#ed8b00;opacity:.18}
.month.mine{fill:#ed8b00}.month.withheld{fill:#fff;stroke:#768692;stroke-width:1.2}
.legend{font-size:11px;color:#425563;margin:2px 0}
.key{display:inline-block;width:14px;height:3px;vertical-align:middle;margin:0 2px 0 6px;background:#231f20}
.key.mine{background:#ed8b00;height:8px;width:8px;border-radius:4px}.key.peer{background:#41b6e6;height:8px;width:8px;
  border-radius:4px}.key.l95{background:repeating-linear-gradient(90deg,#768692 0 5px,transparent 5px 8px)}
.key.l998{background:repeating-linear-gradient(90deg,#768692 0 1px,transparent 1px 4px)}
.key.withheld{width:7px;height:7px;background:#fff;border:1px solid #768692}
.nochart{color:#768692;font-style:italic}
table.caselist{border-collapse:collapse;width:100%}
.caselist th{text-align:left;border-bottom:2px solid #d8dde0;padding:4px 8px 4px 0}
.caselist td{border-bottom:1px solid #e8edee;padding:4px 8px 4px 0;vertical-align:top}
.new{color:#fff;background:#007f3b;border-radius:3px;padding:0 4px;font-size:11px;font-weight:bold}
.overdue{color:#d5281b;font-weight:bold}
.since,.local-id{white-space:nowrap}
.error{background:#fff;border-left:6px solid #d5281b;padding:12px 16px;margin:16px 0}
footer{color:#4c6272;padding:0 24px 24px;font-size:12px}
.pack{border-top:1px solid #d8dde0;padding:8px 0}
.packfigs th{text-align:left;font-weight:normal;color:#4c6272;padding:1px 12px 1px 0;vertical-align:top}
.packfigs td{padding:1px 0}.outcome{margin:4px 0}.outcome.none{color:#768692}
"""
FIGS_HEAD = "<tr><th></th><th>value</th><th>95% CI</th><th>count</th><th></th></tr>"


@dataclass(frozen=True)
class PageContext:
    """Who the page is for and where its figures came from."""

    org: str  # the organisation code in the client certificate
    name: str  # how the page names it (the code unless told otherwise)
    gateway: str  # host:port of the partner gateway
    read_at: datetime  # when the figures were read from the gateway




# ---- indicators ---------------------------------------------------------------------------------


def _figure_cells(v: ind.IndicatorValue | None) -> str:
    text = figures.shown(v)
    cls = "value" if figures.has_value(v) else "value withheld"
    ci = figures.interval(v)
    counts = ""
    if v is not None and figures.has_value(v) and v.measure != "count" and v.HasField("denominator"):
        counts = f"{v.numerator:,} / {v.denominator:,}"
    flag = ""
    if v is not None and v.outlier in OUTLIER_NAMES:
        low = " low" if v.outlier.startswith("low") else ""
        flag = f'<span class="flag{low}">{escape(OUTLIER_NAMES[v.outlier])}</span>'
    return (f'<td class="{cls}">{escape(text)}</td><td class="ci">{escape(f"({ci})" if ci else "")}</td>'
            f'<td class="counts">{escape(counts)}</td><td>{flag}</td>')


def _window_text(view: figures.IndicatorView) -> str:
    first = view.mine or view.region
    name = WINDOW_NAMES.get(view.window, view.window)
    if first is not None and first.window_start and first.window_end:
        name += f" ({first.window_start} to {first.window_end})"
    elif first is not None and first.window_end:
        name += f" (on {first.window_end})"
    if view.measure == "rate":
        name += f"; per {view.per:,.0f} registered"
    return name


COMPARISON_WORDS = {"same_definition": "same definition", "definition_differs": "the definition differs",
                    "context_only": "context only, another measure"}


def _national_rows(view: figures.IndicatorView, references: Sequence[ind.ReferenceValue]) -> str:
    """The nation beside the region: each national reference value of the indicator, or that none was found."""
    rows = []
    for ref in references:
        period = f"{ref.area or 'national'}, {ref.period}" if ref.period else (ref.area or "national")
        if ref.status != "published" or not ref.HasField("value"):
            text = f"no national value ({ref.title}: not found)"
            rows.append(f'<tr class="national none" data-reference="{escape(ref.name)}"><th>nation</th>'
                        f'<td class="value withheld" colspan="4">{escape(text)}</td></tr>')
            continue
        unit = "%" if ref.unit == "percent" else " per 100,000" if ref.unit == "per_100000" else f" {ref.unit}"
        words = COMPARISON_WORDS.get(ref.comparison, ref.comparison)
        rows.append(f'<tr class="national" data-reference="{escape(ref.name)}"><th>nation ({escape(period)})</th>'
                    f'<td class="value">{ref.value:,.1f}{escape(unit)}</td>'
                    f'<td class="ci" colspan="3">{escape(words)}; {escape(ref.source_publisher)}</td></tr>')
    return "".join(rows)


def _standardised(v: ind.IndicatorValue | None) -> str:
    """The practice's directly age/sex-standardised rate beside its crude one, or why there is none."""
    if v is None or v.measure != "rate" or v.suppressed or not (v.HasField("dsr") or v.dsr_not_computed):
        return ""
    if v.HasField("dsr"):
        text = (f"age/sex standardised: {v.dsr:,.1f} ({v.dsr_ci_low:,.1f}-{v.dsr_ci_high:,.1f}), "
                f"{v.standard_population}")
    else:
        text = f"age/sex standardised: not computed ({v.dsr_not_computed.replace('_', ' ')})"
    return f'<p class="note dsr">{escape(text)}</p>'


def render_indicator(view: figures.IndicatorView, ctx: PageContext,
                     references: Sequence[ind.ReferenceValue] = ()) -> str:
    """One indicator: the figures beside the region, the nation and peers, the funnel plot and the trend."""
    rows = [f'<tr class="mine" data-unit="practice:{escape(ctx.org)}"><th>you ({escape(ctx.org)})</th>'
            f"{_figure_cells(view.mine)}</tr>"]
    for label, v in figures.comparators(view):
        rows.append(f'<tr class="comparator" data-unit="{escape(v.unit)}"><th>{escape(label)}</th>'
                    f"{_figure_cells(v)}</tr>")
    rows.append(_national_rows(view, references))
    peers = ""
    if view.peers:
        peer_rows = "".join(
            f'<tr data-unit="{escape(v.unit)}"><th>{escape(figures.unit_label(v.unit))}</th>{_figure_cells(v)}</tr>'
            for v in view.peers)
        peers = (f'<p class="peers">{escape(figures.peer_summary(view))}</p>'
                 f"<details><summary>the other practices' figures</summary><table>{peer_rows}</table></details>")
    provisional = ""
    if view.mine is not None and view.mine.provisional:
        provisional = (f'<p class="note">{view.mine.provisional} of your count judged on working diagnoses, not yet '
                       "coded</p>")
    return (f'<div class="indicator" id="ind-{escape(view.indicator)}" data-indicator="{escape(view.indicator)}">'
            f'<div class="figures"><h3>{escape(view.title)}</h3><p class="note">{escape(_window_text(view))}</p>'
            f'<table class="figs">{FIGS_HEAD}{"".join(rows)}</table>{_standardised(view.mine)}{peers}'
            f"{provisional}</div>"
            f'<div class="chart">{funnel_svg(view)}</div><div class="chart">{trend_svg(view)}</div></div>')


def render_indicators(values: Sequence[ind.IndicatorValue], ctx: PageContext,
                      references: Sequence[ind.ReferenceValue] = ()) -> str:
    """The indicators section: every indicator the practice may see, its own figure first, and the
    national reference values the gateway sent beside them."""
    views = figures.build(ctx.org, values)
    if not views:
        return ('<p class="note">No indicator values yet: the hub has published none this practice may see '
                "(is the indicators service running, and have events arrived?)</p>")
    as_of = figures.as_of(values)
    head = (f'<p class="note">As of {escape(as_of)}, the newest event day the hub has seen. Counts from 1 to the '
            "hub's small-number threshold are withheld, and so are figures that would let one be worked out: "
            "they read <i>withheld</i>, never zero.</p>")
    by_indicator: dict[str, list[ind.ReferenceValue]] = {}
    for ref in references:
        by_indicator.setdefault(ref.indicator, []).append(ref)
    return head + "".join(render_indicator(v, ctx, by_indicator.get(v.indicator, ())) for v in views)


def render_indicators_answer(answer: pb.IndicatorsResponse, ctx: PageContext) -> str:
    """The indicators section from a whole GetIndicators answer: values and national reference values."""
    return render_indicators(answer.values, ctx, answer.references)


# ---- case list ----------------------------------------------------------------------------------


def _care_plan(status: rk.CarePlanStatus) -> str:
    if status.presence != rk.CARE_PLAN_PRESENCE_RECORDED:
        return "none received"
    contact = f" ({escape(status.contact_role)})" if status.contact_role else ""
    if not status.HasField("due"):
        review = "review due unknown"
    elif status.overdue:
        review = f'<span class="overdue">OVERDUE (due {day(status.due)})</span>'
    else:
        review = f"review due {day(status.due)}"
    return f"{escape(status.org)}{contact}, {day(status.recorded_at)}; {review}"


def _factors(factors: Sequence[rk.RiskFactor]) -> str:
    shown = []
    for f in factors:
        if not f.scored or f.points <= 0:
            continue
        value = f"{f.value:.2f}" if f.factor == "frailty" else f"{f.value:g}"
        evidence = f" ({', '.join(e.replace('_', ' ') for e in f.evidence)})" if f.evidence else ""
        shown.append(escape(f"{f.factor.replace('_', ' ')} {value}{evidence} +{f.points:g}"))
    return "; ".join(shown) or "-"


def render_caselist(case_list: rk.CaseList, ctx: PageContext) -> str:
    """The case-finding list: the practice's people in the top risk tiers, under its own record ids."""
    if not case_list.entries:
        if not case_list.HasField("as_of"):
            return ('<p class="note">No case list yet (are the population and case-list services running, and have '
                    "events arrived?)</p>")
        return (f'<p class="note">Nobody in the listed tiers ({escape(", ".join(case_list.tiers))}) as of '
                f"{moment(case_list.as_of)}.</p>")
    n = len(case_list.entries)
    population = case_list.cutoffs.population if case_list.HasField("cutoffs") else 0
    head = (f'<p class="note">{n} {"person" if n == 1 else "people"} in tiers {escape(", ".join(case_list.tiers))} '
            f"({case_list.new_this_week} new this week), as of {moment(case_list.as_of)}; model "
            f"{escape(case_list.model)}; tiers over {population:,} people. Risk is the model's 90-day emergency "
            "admission risk, a ranking more than a probability. A care plan is the one with the latest event; "
            "<i>none received</i> is not <i>no plan</i>.</p>")
    rows = []
    for e in case_list.entries:
        new = '<span class="new">NEW</span>' if e.new_this_week else ""
        rows.append(f'<tr data-local-id="{escape(e.local_id)}"><td class="local-id">{escape(e.local_id)}</td>'
                    f"<td>{escape(e.tier.replace('_', ' '))}</td><td>{e.score:.2f}</td><td>{100 * e.risk:.1f}%</td>"
                    f'<td>{escape(e.segment.replace("_", " "))}</td><td class="since">{day(e.listed_since)} {new}</td>'
                    f"<td>{_care_plan(e.care_plan)}</td><td>{_factors(e.factors)}</td></tr>")
    table = ('<table class="caselist"><thead><tr><th>your record</th><th>tier</th><th>score</th><th>risk</th>'
             "<th>segment</th><th>listed since</th><th>care plan</th><th>factors behind the score</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    return head + table


# ---- review packs -------------------------------------------------------------------------------

FOLLOW_UP_WORDS = {rv.FOLLOW_UP_DONE: "followed up", rv.FOLLOW_UP_MISSED: "<b>missed follow-up</b>",
                   rv.FOLLOW_UP_INTERRUPTED: "readmitted before follow-up", rv.FOLLOW_UP_NOT_DUE: "died"}



def _pack_summary(pack: rv.ReviewPack) -> str:
    contacts = ", ".join(f"{escape(sector_words(c.sector))} {c.contacts}" for c in pack.contacts_by_sector) or "none"
    discharges = "; ".join(f"{day(d.discharged_at)} {escape(d.org)}: {FOLLOW_UP_WORDS.get(d.follow_up, '?')}"
                           for d in pack.discharges) or "none"
    moves = "; ".join(f"{day(m.at)} {escape(m.what)}" for m in pack.care_home_moves) or "none"
    if pack.care_plan_known:
        plans = "; ".join(f"{escape(p.owner_org)} ({escape(p.contact_role or 'no contact role')}), "
                          f"due {escape(p.review_due or 'unknown')}"
                          + (' <span class="overdue">OVERDUE at admission</span>' if p.overdue else "")
                          for p in pack.care_plans)
    else:
        plans = "none known (not <i>no plan</i>)"
    counts = ", ".join(escape(c.indicator + (" (provisional)" if c.provisional else "")) for c in pack.counts_in)
    rows = [("contacts by sector", contacts), ("ED attendances", str(len(pack.ed_attendances))),
            ("discharges", discharges), ("care-home moves", moves),
            ("social care", f"{len(pack.social_care)} events"), ("care plan", plans), ("counts in", counts or "none")]
    return "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)


def _outcome(pack: rv.ReviewPack) -> str:
    if not pack.HasField("outcome"):
        return '<p class="outcome none">Outcome: not recorded yet.</p>'
    o = pack.outcome
    actions = "".join(f"<li>{escape(a.text)} (owner {escape(a.owner_org)}{', due ' + escape(a.due) if a.due else ''})"
                      "</li>" for a in o.actions)
    return (f'<p class="outcome">Outcome of {escape(o.conference_date or "the conference")}: '
            f"<b>{escape(o.verdict.replace('_', ' '))}</b>; contributory factors: "
            f"{escape(', '.join(f.replace('_', ' ') for f in o.factors) or 'none')}</p>"
            + (f"<ul class=\"actions\">{actions}</ul>" if actions else ""))


def render_review_packs(packs: pb.ReviewPacks, ctx: PageContext) -> str:
    """The practice's avoidable-admission review packs, newest admission first, under its own record ids."""
    if not packs.packs:
        return ('<p class="note">No review packs: none of your registered people has had an emergency admission '
                "for an ambulatory care sensitive condition that was selected for review.</p>")
    waiting = sum(not p.HasField("outcome") for p in packs.packs)
    head = (f'<p class="note">{len(packs.packs)} packs ({waiting} without an outcome). Each covers the 90 days '
            "before an emergency admission for an ambulatory care sensitive condition, across every organisation "
            "that reported to the hub; the case conference records its verdict, contributory factors and actions "
            "back with <code>carehub review-outcome</code>.</p>")
    cards = []
    for pack in packs.packs:
        a = pack.admission
        coded = "working diagnosis, provisional" if a.provisional else "coded"
        title = (f"your record {escape(pack.local_id)}: admitted {day(a.admitted_at)} to {escape(a.org)}, "
                 f"{escape(a.primary_diagnosis)} {escape(a.condition.replace('_', ' '))} ({coded})")
        cards.append(f'<div class="pack" data-local-id="{escape(pack.local_id)}"><h3>{title}</h3>'
                     f'<table class="packfigs">{_pack_summary(pack)}</table>{_outcome(pack)}</div>')
    return head + "".join(cards)


# ---- the page -----------------------------------------------------------------------------------


def _frame(ctx: PageContext, body: str, nav: str = "") -> str:
    title = ctx.name if ctx.name == ctx.org else f"{ctx.name} ({ctx.org})"
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}: practice dashboard</title><style>{STYLE}</style></head><body>"
            f'<header><h1 class="practice">{escape(title)}</h1>'
            "<p>Your practice against its peers and the region, your case-finding list and review packs, from the "
            f"care hub's partner gateway ({escape(ctx.gateway)}), read at "
            f"{ctx.read_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC."
            "</p></header>"
            f"{nav}<main>{body}</main>"
            "<footer>Every read is the practice's own gRPC call to the gateway, which audits it. People are named only "
            "by the practice's own record ids. Reload the page for newer figures.</footer></body></html>\n")


def render_page(ctx: PageContext, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole page from (id, title, HTML) of each section, in order."""
    nav = "<nav>" + "".join(f'<a href="#{escape(sid)}">{escape(title)}</a>' for sid, title, _ in sections) + "</nav>"
    body = "".join(f'<section id="{escape(sid)}"><h2>{escape(title)}</h2>{html}</section>'
                   for sid, title, html in sections)
    return _frame(ctx, body, nav)


def render_error(ctx: PageContext, message: str, unavailable: bool) -> str:
    """The page when the gateway cannot be read: what failed, in words, and no figures."""
    head = ("The hub's partner gateway is unavailable" if unavailable
            else "The hub's partner gateway refused or failed the request")
    body = (f'<div class="error" role="alert"><h2>{escape(head)}</h2><p>{escape(message)}</p>'
            "<p>No figures are shown rather than old ones. Reload the page to try again.</p></div>")
    return _frame(ctx, body)
