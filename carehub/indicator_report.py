"""Reading the published indicator values back: `carehub indicators` and the tests.

The table puts each value beside the region's and beside the national reference value
(carehub/domain/data/reference/national.toml), saying "no national value" where none was found,
so that nobody takes a missing national figure for a good local one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from google.protobuf import json_format

from carehub.domain.reference_values import ReferenceValue, ReferenceValues
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


def reference_message(ref: ReferenceValue) -> ind.ReferenceValue:
    message = ind.ReferenceValue(
        name=ref.name, indicator=ref.indicator, title=ref.title, area=ref.area, period=ref.period, status=ref.status,
        unit=ref.unit, comparison=ref.comparison, definition=ref.definition, differences=ref.differences,
        note=ref.note or "", source_publisher=ref.source.publisher, source_title=ref.source.title,
        source_year=ref.source.year, source_url=ref.source.url or "")
    if ref.value is not None:
        message.value = ref.value
    return message


def references_for(references: ReferenceValues, indicators: Iterable[str]) -> list[ind.ReferenceValue]:
    """The reference values of ``indicators``, in file order."""
    wanted = set(indicators)
    return [reference_message(r) for r in references.values if r.indicator in wanted]


def as_json(values: Iterable[ind.IndicatorValue]) -> str:
    return "\n".join(json.dumps(json_format.MessageToDict(v), sort_keys=True) for v in values)


def _fmt(x: float, measure: str) -> str:
    return f"{x:,.1f}" if measure == "rate" else f"{100 * x:.1f}%"


def _dsr(v: ind.IndicatorValue) -> tuple[str, str]:
    """The DSR and its interval, or why there is none ("" for an indicator without one)."""
    if v.HasField("dsr"):
        return _fmt(v.dsr, v.measure), f"{_fmt(v.dsr_ci_low, v.measure)}-{_fmt(v.dsr_ci_high, v.measure)}"
    return (f"({v.dsr_not_computed})", "") if v.dsr_not_computed else ("", "")


def table(values: list[ind.IndicatorValue], references: Sequence[ind.ReferenceValue] = ()) -> str:
    """A plain text table: withheld counts show as '*'; national reference values beside and below."""
    if not values:
        return "no indicator values yet (is the indicators service running, and have events arrived?)"
    head = ("indicator", "window", "unit", "count", "denominator", "value", "95% CI", "DSR", "DSR 95% CI", "region",
            "national", "flag", "prov.")
    rows = [head]
    for v in values:
        if v.suppressed:
            rows.append((v.indicator, v.window, v.unit, "*", "*", "*", "", "", "", "", "", "", ""))
            continue
        value = _fmt(v.value, v.measure) if v.HasField("value") else ""
        interval = f"{_fmt(v.ci_low, v.measure)}-{_fmt(v.ci_high, v.measure)}" if v.HasField("ci_low") else ""
        regional = _fmt(v.regional_value, v.measure) if v.HasField("regional_value") else ""
        national = _fmt(v.national_value, v.measure) if v.HasField("national_value") else ""
        rows.append((v.indicator, v.window, v.unit, str(v.numerator),
                     str(v.denominator) if v.HasField("denominator") else "", value, interval, *_dsr(v), regional,
                     national, v.outlier, str(v.provisional) if v.provisional else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    first = values[0]
    standard = next((v.standard_population for v in values if v.standard_population), "")
    notes = [f"DSR: directly age/sex-standardised rate ({standard}); in brackets, why there is none"
             ] if standard else []
    return (f"as of {first.as_of} (newest event day seen); counts 1-threshold withheld as *\n" + "\n".join(lines)
            + "\n\n" + "\n".join([*notes, *national_lines(values, references)]))


def national_lines(values: list[ind.IndicatorValue], references: Sequence[ind.ReferenceValue]) -> list[str]:
    """One line per national reference entry of the indicators shown: the value, or "no national
    value" with what was looked for; "no national value" for an indicator with no entry at all."""
    out = ["national reference values:"]
    for indicator in sorted({v.indicator for v in values}):
        mine = [r for r in references if r.indicator == indicator]
        if not mine:
            out.append(f"  {indicator}: no national value")
        for r in mine:
            if not r.HasField("value"):
                out.append(f"  {indicator}: no national value ({r.title}, {r.period}: not found)")
                continue
            unit = "%" if r.unit == "percent" else " per 100,000"
            kind = r.comparison.replace("_", " ")
            out.append(f"  {indicator}: {r.value:g}{unit} ({r.area} {r.period}, {kind}; {r.source_publisher} "
                       f"{r.source_year})")
    return out
