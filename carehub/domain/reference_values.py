"""National reference values: England's published figure for what a carehub indicator counts.

Why data, and why so many words per value: a screen that puts a local figure beside a national
one must also say which year the national one is for, who published it, and how its definition
differs from carehub's, or the comparison misleads. Where no national value was found the file
still has an entry, with no ``value`` and ``status = "not_found"`` saying what was looked for,
so a screen shows "no national value" rather than nothing or an old number passed off as
current. The values, their sources and periods are in docs/standardisation.md ("National
reference values").

The file shape is :class:`ReferenceFile`, read by the domain loader (carehub/domain/loader.py)
with the indicator catalogue as context: each entry must name an indicator carehub has, and an
entry meant to stand beside the indicator's value must be in its units (a percentage beside a
proportion, per 100,000 beside a rate per 100,000). Loading fails with the file and the entry at
fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, ValidationInfo, model_validator

from carehub.domain.definitions import Indicator, load_catalogue
from carehub.domain.loader import Definition, DefinitionError, Loc, Reader, Text, Version, fail_on, validate

PACKAGED = Path(__file__).resolve().parent / "data" / "reference" / "national.toml"

# published: ``value`` is the publisher's figure. not_found: no value was found; ``note`` says
# what was looked for and where.
Status = Literal["published", "not_found"]
# How the value may be shown with carehub's: same_definition and definition_differs go beside it
# (the latter with ``differences`` shown); context_only is another measure, a sense of scale.
Comparison = Literal["same_definition", "definition_differs", "context_only"]
Unit = Literal["percent", "per_100000"]
# The unit a value must have to stand beside an indicator of each measure (``per`` 100,000 for rates).
UNIT_OF_MEASURE: dict[str, Unit] = {"proportion": "percent", "rate": "per_100000"}


def _https(value: str) -> str:
    if not value.startswith("https://"):
        raise ValueError(f"must be an https:// address (got {value!r})")
    return value


Url = Annotated[str, AfterValidator(_https)]


class SourceTable(Definition):
    """Who published the value, in what, and when."""

    publisher: Text
    title: Text
    year: Annotated[int, Field(ge=1900)]
    url: Url | None = None


class ValueTable(Definition):
    """One ``[values.<name>]`` table."""

    indicator: Text
    title: Text
    area: Text
    period: Text
    status: Status
    value: Annotated[float, Field(ge=0)] | None = None
    unit: Unit
    comparison: Comparison
    definition: Text
    differences: Text
    note: Text | None = None
    source: SourceTable

    @model_validator(mode="after")
    def _fits(self, info: ValidationInfo) -> Self:
        problems: list[tuple[Loc, str]] = []
        indicators: Mapping[str, Indicator] = (info.context or {}).get("indicators", {})
        indicator = indicators.get(self.indicator)
        if indicator is None:
            problems.append((("indicator",), f"names no carehub indicator: {self.indicator!r} "
                                             f"(have: {', '.join(sorted(indicators))})"))
        elif self.comparison != "context_only":
            problems += _unit_problems(self.unit, indicator)
        if self.status == "published" and self.value is None:
            problems.append((("value",), "is required with status = 'published'"))
        if self.status == "not_found":
            if self.value is not None:
                problems.append((("value",), "must be left out with status = 'not_found' (no value was found)"))
            if self.note is None:
                problems.append((("note",), "is required with status = 'not_found': what was looked for, and where"))
        if self.unit == "percent" and self.value is not None and self.value > 100:
            problems.append((("value",), f"must be at most 100 with unit = 'percent' (got {self.value:g})"))
        fail_on(problems)
        return self

    def build(self, name: str) -> ReferenceValue:
        s = self.source
        return ReferenceValue(
            name=name, indicator=self.indicator, title=self.title, area=self.area, period=self.period,
            status=self.status, value=None if self.value is None else float(self.value), unit=self.unit,
            comparison=self.comparison, definition=self.definition, differences=self.differences, note=self.note,
            source=Source(s.publisher, s.title, s.year, s.url))


def _unit_problems(unit: str, indicator: Indicator) -> list[tuple[Loc, str]]:
    """A value shown beside an indicator's must be in its units; otherwise it is context only."""
    wanted = UNIT_OF_MEASURE.get(indicator.measure)
    if wanted is None:
        return [(("comparison",), f"must be 'context_only': indicator {indicator.id!r} is a {indicator.measure}, "
                                  "which no national value can stand beside")]
    if unit != wanted or (indicator.measure == "rate" and indicator.per != 100_000):
        return [(("unit",), f"must be {wanted!r} to stand beside indicator {indicator.id!r} (a {indicator.measure}"
                            f"{f' per {indicator.per:g}' if indicator.measure == 'rate' else ''}; got {unit!r}); "
                            "a value in other units has comparison = 'context_only'")]
    return []


class ReferenceFile(Definition):
    """The whole reference file; validated with ``context={"indicators": {id: Indicator}}``."""

    id: Text
    version: Version
    title: Text
    values: dict[str, ValueTable] = Field(min_length=1)

    def build(self, digest: str) -> ReferenceValues:
        return ReferenceValues(tuple(entry.build(name) for name, entry in self.values.items()), digest)


# -- what the file is built into ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    publisher: str
    title: str
    year: int
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    name: str  # the entry's name in the file
    indicator: str  # the carehub indicator it compares with
    title: str  # the publisher's name for what was measured
    area: str
    period: str
    status: str
    value: float | None
    unit: str
    comparison: str
    definition: str  # the publisher's definition
    differences: str  # how it differs from carehub's
    note: str | None
    source: Source

    @property
    def found(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class ReferenceValues:
    values: tuple[ReferenceValue, ...]
    digest: str  # of the file's name and bytes: which reference values a screen showed

    def for_indicator(self, indicator_id: str) -> tuple[ReferenceValue, ...]:
        """The entries for ``indicator_id``, in file order; empty when the file has none for it."""
        return tuple(v for v in self.values if v.indicator == indicator_id)


def load_reference_values(path: Path | None = None, definitions: Path | None = None) -> ReferenceValues:
    """Read and check the reference file (the packaged ``national.toml`` by default).

    Checked against the indicators under ``definitions`` (the packaged ones by default). Raises
    DefinitionError (a ValueError) naming the file and the entry at fault.
    """
    file = Path(path) if path is not None else PACKAGED
    indicators = {indicator.id: indicator for indicator in load_catalogue(definitions).indicators}
    if not file.exists():
        raise DefinitionError(file, "", "no reference values file here")
    reader = Reader()
    return reader.load(file, ReferenceFile, context={"indicators": indicators}).build(reader.digest)


def parse_reference_values(data: Mapping[str, Any], indicators: Mapping[str, Indicator],
                           where: str) -> ReferenceValues:
    """One reference file's TOML, checked against ``indicators``; errors name ``where`` and the entry."""
    return validate(ReferenceFile, data, where, context={"indicators": indicators}).build("")
