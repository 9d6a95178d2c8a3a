"""Reading the published indicator values back: `carehub indicators` and the tests."""

from __future__ import annotations

import json
from collections.abc import Iterable

from google.protobuf import json_format

from carehub.kafka.read import latest_by_key, read_to_end
from carehub.settings import Settings
from carehub.topics import indicators_topic
from carehub.v1 import indicators_pb2 as ind


def read_values(bootstrap: str, settings: Settings, timeout_s: float = 60.0) -> dict[str, ind.IndicatorValue]:
    """The latest value per key in the compacted topic, read to its end (carehub.kafka.read)."""
    latest = latest_by_key(read_to_end(bootstrap, indicators_topic(settings), timeout_s=timeout_s))
    return {key.decode(): ind.IndicatorValue.FromString(r.value) for key, r in latest.items() if r.value}


def select(values: Iterable[ind.IndicatorValue], unit: str | None = None, indicator: str | None = None,
           window: str | None = None) -> list[ind.IndicatorValue]:
    chosen = [v for v in values if (unit is None or v.unit in (unit, "region"))
              and (indicator is None or v.indicator == indicator) and (window is None or v.window == window)]
    return sorted(chosen, key=lambda v: (v.indicator, v.window, v.unit != "region", v.unit))


def as_json(values: Iterable[ind.IndicatorValue]) -> str:
    return "\n".join(json.dumps(json_format.MessageToDict(v), sort_keys=True) for v in values)


def _fmt(x: float, measure: str) -> str:
    return f"{x:,.1f}" if measure == "rate" else f"{100 * x:.1f}%"


def table(values: list[ind.IndicatorValue]) -> str:
    """A plain text table: withheld counts show as '*'."""
    if not values:
        return "no indicator values yet (is the indicators service running, and have events arrived?)"
    head = ("indicator", "window", "unit", "count", "denominator", "value", "95% CI", "region", "flag", "prov.")
    rows = [head]
    for v in values:
        if v.suppressed:
            rows.append((v.indicator, v.window, v.unit, "*", "*", "*", "", "", "", ""))
            continue
        value = _fmt(v.value, v.measure) if v.HasField("value") else ""
        interval = f"{_fmt(v.ci_low, v.measure)}-{_fmt(v.ci_high, v.measure)}" if v.HasField("ci_low") else ""
        regional = _fmt(v.regional_value, v.measure) if v.HasField("regional_value") else ""
        rows.append((v.indicator, v.window, v.unit, str(v.numerator),
                     str(v.denominator) if v.HasField("denominator") else "", value, interval, regional,
                     v.outlier, str(v.provisional) if v.provisional else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    first = values[0]
    return f"as of {first.as_of} (newest event day seen); counts 1-threshold withheld as *\n" + "\n".join(lines)
