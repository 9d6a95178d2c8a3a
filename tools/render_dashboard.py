"""Render panels of a Grafana dashboard to a PNG, from a running Prometheus, with matplotlib.

The picture in the README (docs/img/pipeline.png) is made this way from a real run: the demo
(`carehub run`) with a local Prometheus scraping its six /metrics endpoints. The panels'
queries are read from the dashboard's JSON, so the picture shows what the dashboard shows;
Grafana's $__rate_interval and $__range are replaced by --rate-interval and the time range.

    python tools/render_dashboard.py --prometheus http://127.0.0.1:9090 --last 20 \\
        --out docs/img/pipeline.png

Needs matplotlib (the `docs` extra). Only time-series panels are drawn.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DASHBOARD = ROOT / "deploy/grafana/dashboards/pipeline.json"
DEFAULT_PANELS = (
    "Events per second, per stage",
    "Lag per stage (seconds behind its input)",
    "Batch processing time p99, per stage",
    "Dead letters per second, by reason",
    "Linkage decisions per second, by outcome",
    "Repeats dropped per second, per stage",
)
UNIT_LABELS = {"reqps": "per second", "s": "seconds", "percentunit": "share", "short": ""}
LEGEND_VAR = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass
class Series:
    label: str
    times: list[datetime]
    values: list[float]


@dataclass
class Panel:
    title: str
    unit: str
    targets: list[tuple[str, str]]  # (expr, legendFormat)


def load_panels(dashboard: Path, titles: list[str]) -> list[Panel]:
    board = json.loads(dashboard.read_text())
    found: dict[str, Panel] = {}
    stack = list(board["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        if panel.get("type") == "timeseries":
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
            found[panel["title"]] = Panel(panel["title"], unit,
                                          [(t["expr"], t.get("legendFormat", "")) for t in panel["targets"]])
    missing = [t for t in titles if t not in found]
    if missing:
        raise SystemExit(f"{dashboard.name} has no time-series panel {missing}; it has {sorted(found)}")
    return [found[t] for t in titles]


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus.rstrip('/')}/api/v1/query_range?{params}", timeout=30) as resp:
        answer = json.load(resp)
    if answer.get("status") != "success":
        raise SystemExit(f"{expr}: {answer.get('error')}")
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"
    return LEGEND_VAR.sub(lambda m: labels.get(m.group(1), ""), fmt)


def fetch(prometheus: str, panel: Panel, start: float, end: float, step: float, rate_interval: str,
          ) -> list[Series]:
    out: list[Series] = []
    range_s = f"{max(1, round(end - start))}s"
    for expr, fmt in panel.targets:
        concrete = expr.replace("$__rate_interval", rate_interval).replace("$__range", range_s)
        for item in query_range(prometheus, concrete, start, end, step):
            times = [datetime.fromtimestamp(float(t), UTC) for t, _ in item["values"]]
            values = [float(v) for _, v in item["values"]]  # "NaN" becomes nan: a gap in the line
            out.append(Series(legend(fmt, item["metric"]), times, values))
    return out


def render(panels: list[tuple[Panel, list[Series]]], title: str, subtitle: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(14, 3.6 * rows), squeeze=False, sharex=True)
    fig.patch.set_facecolor("#111217")
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, (panel, series) in zip(axes.flat, panels, strict=False):
        ax.set_visible(True)
        ax.set_facecolor("#181b1f")
        ax.set_title(panel.title, color="#d8d9da", fontsize=11, loc="left")
        ax.tick_params(colors="#9fa7b3", labelsize=8)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.grid(True, color="#2c3235", linewidth=0.6)
        ax.set_ylabel(UNIT_LABELS.get(panel.unit, panel.unit), color="#9fa7b3", fontsize=8)
        for s in sorted(series, key=lambda s: s.label):
            ax.plot(s.times, s.values, linewidth=1.3, label=s.label)
        if series:
            ax.legend(fontsize=7, loc="upper right", facecolor="#181b1f", edgecolor="#2c3235", labelcolor="#d8d9da",
                      ncol=2 if len(series) > 4 else 1)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="#9fa7b3")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))  # type: ignore[no-untyped-call]
        ax.set_ylim(bottom=0)
    fig.suptitle(title, color="#d8d9da", fontsize=14, x=0.01, ha="left")
    lines = textwrap.wrap(subtitle, 190)
    fig.text(0.01, 0.005, "\n".join(lines), color="#9fa7b3", fontsize=8, va="bottom")
    fig.tight_layout(rect=(0, 0.012 * (len(lines) + 1), 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, facecolor=fig.get_facecolor())
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    p.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD, help="Grafana dashboard JSON")
    p.add_argument("--panel", action="append", dest="panels", help="panel title (repeat); default: six of Pipeline")
    p.add_argument("--last", type=float, default=15.0, help="minutes up to --end (default 15)")
    p.add_argument("--start", type=float, help="Unix time of the start (instead of --last)")
    p.add_argument("--end", type=float, help="Unix time of the end (default now)")
    p.add_argument("--step", type=float, help="seconds between points (default: range / 240, at least 1)")
    p.add_argument("--rate-interval", default="30s", help="what $__rate_interval stands for (default 30s)")
    p.add_argument("--note", default="", help="text added to the caption, e.g. what was running")
    p.add_argument("--out", type=Path, default=ROOT / "docs/img/pipeline.png")
    args = p.parse_args(argv)

    end = args.end or time.time()
    start = args.start or end - args.last * 60
    step = args.step or max(1.0, (end - start) / 240)
    panels = load_panels(args.dashboard, args.panels or list(DEFAULT_PANELS))
    data = [(panel, fetch(args.prometheus, panel, start, end, step, args.rate_interval)) for panel in panels]
    board = json.loads(args.dashboard.read_text())
    span = f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M}-{datetime.fromtimestamp(end, UTC):%H:%M} UTC"
    subtitle = (f"Rendered by tools/render_dashboard.py from Prometheus range queries ({span}, step {step:.0f} s, "
                f"$__rate_interval={args.rate_interval}); the queries are the dashboard's own."
                + (f" {args.note}" if args.note else ""))
    render(data, board["title"], subtitle, args.out)
    points = sum(len(s.values) for _, series in data for s in series)
    print(f"wrote {args.out}: {len(data)} panels, {sum(len(s) for _, s in data)} series, {points} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
