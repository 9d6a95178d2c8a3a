"""Indicator definitions as data: the files under ``carehub/domain/data`` and what each word means.

An indicator is one TOML file in ``data/indicators/`` naming its fact, filter, numerator,
measure, units and windows; code lists live in ``data/codelists/``. A new indicator that fits
these words is a new file, not new code. The words are explained in
``docs/indicator-semantics.md`` ("Facts" and "Definition words"). The file shape is
:class:`IndicatorFile`, read by the domain loader (carehub/domain/loader.py): loading checks
every word, including which words fit which fact, and fails with the file and entry at fault,
so a worker never starts on a definition it would misread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import Field, ValidationInfo, model_validator

from carehub.domain.codelists import CodeList, load_codelists, reference_problems
from carehub.domain.loader import (
    Count,
    Definition,
    DefinitionError,
    Loc,
    Reader,
    Text,
    Version,
    check_unique,
    fail_on,
    validate,
)
from carehub.v1 import care_event_pb2 as ce

PACKAGED = Path(__file__).resolve().parent / "data"
Fact = Literal["admission", "discharge", "open_spell", "ed_attendance"]
Measure = Literal["rate", "proportion", "count"]
Unit = Literal["practice", "locality", "provider", "sector", "region"]
Window = Literal["30d", "12m", "month", "now"]
Method = Literal["emergency", "elective", "maternity", "transfer"]
FACTS: tuple[str, ...] = get_args(Fact)
MEASURES: tuple[str, ...] = get_args(Measure)
UNITS: tuple[str, ...] = get_args(Unit)
POPULATION_UNITS = ("practice", "locality", "region")
WINDOWS: tuple[str, ...] = get_args(Window)
METHODS = {
    "emergency": ce.ADMISSION_METHOD_EMERGENCY,
    "elective": ce.ADMISSION_METHOD_ELECTIVE,
    "maternity": ce.ADMISSION_METHOD_MATERNITY,
    "transfer": ce.ADMISSION_METHOD_TRANSFER,
}
SPELL_FACTS = ("admission", "discharge", "open_spell")
# Which facts a [filter] / [numerator] word can be asked of (docs/indicator-semantics.md, "Facts"):
# the others have no admission method, diagnoses, discharge or prior attendances to look at.
APPLIES_TO: dict[Loc, tuple[tuple[str, ...], str]] = {
    ("filter", "admission_method"): (SPELL_FACTS, "spells"),
    ("filter", "min_age"): (SPELL_FACTS, "spells"),
    ("filter", "max_age"): (SPELL_FACTS, "spells"),
    ("filter", "exclude_died"): (("discharge",), "discharges"),
    ("filter", "exclude_codelist"): (SPELL_FACTS, "spells"),
    ("filter", "exclude_groups"): (SPELL_FACTS, "spells"),
    ("numerator", "codelist"): (SPELL_FACTS, "spells"),
    ("numerator", "admission_source"): (SPELL_FACTS, "spells"),
    ("numerator", "readmission_max_days"): (("discharge",), "discharges"),
    ("numerator", "followed_up_within_days"): (("discharge",), "discharges"),
    ("numerator", "prior_ed_attendances_min"): (("ed_attendance",), "ED attendances"),
}


class FilterTable(Definition):
    """``[filter]``: applies to numerator and denominator."""

    admission_method: list[Method] = Field(default_factory=list)
    min_age: Count | None = None
    max_age: Count | None = None
    exclude_died: bool = False
    # spells some condition of these groups matches are left out (NHS OF 3b's cancer exclusion)
    exclude_codelist: Text | None = None
    exclude_groups: list[Text] | None = None


class NumeratorTable(Definition):
    """``[numerator]``: all of its conditions must hold."""

    codelist: Text | None = None
    groups: list[Text] | None = None
    admission_source: list[Text] = Field(default_factory=list)
    readmission_max_days: Count | None = None
    followed_up_within_days: Count | None = None
    followed_up: bool = True
    prior_ed_attendances_min: Count | None = None


class IndicatorFile(Definition):
    """A whole indicator definition file.

    Validated with ``context={"codelists": {id: CodeList}}``: the code list and groups it names
    must exist.
    """

    id: Text
    version: Version
    title: Text
    source: Text
    fact: Fact
    measure: Measure
    per: Annotated[float, Field(gt=0)] = 100_000.0
    units: list[Unit] = Field(min_length=1)
    windows: list[Window] = Field(min_length=1)
    lag_days: Count = 0
    population_min_age: Count = 0
    filter: FilterTable = FilterTable()
    numerator: NumeratorTable = NumeratorTable()

    @model_validator(mode="after")
    def _words_fit(self, info: ValidationInfo) -> Self:
        problems: list[tuple[Loc, str]] = []
        given = {("filter", k) for k in self.filter.model_fields_set}
        given |= {("numerator", k) for k in self.numerator.model_fields_set}
        for loc, (facts, what) in APPLIES_TO.items():
            if loc in given and self.fact not in facts:
                problems.append((loc, f"applies to {what}, not to fact {self.fact!r}"))
        if ("numerator", "followed_up") in given and ("numerator", "followed_up_within_days") not in given:
            problems.append((("numerator", "followed_up"), "needs followed_up_within_days"))
        codelists: Mapping[str, CodeList] = (info.context or {}).get("codelists", {})
        problems += [(("numerator", *loc), text) for loc, text in
                     reference_problems(codelists, self.numerator.codelist, self.numerator.groups)]
        problems += [(("filter", "exclude_" + str(loc[0]), *loc[1:]), text.replace("codelist", "exclude_codelist"))
                     for loc, text in reference_problems(codelists, self.filter.exclude_codelist,
                                                         self.filter.exclude_groups)]
        if self.measure == "proportion" and not self.numerator.model_fields_set:
            problems.append((("numerator",), "must name a condition: a proportion needs a [numerator] "
                                             "narrower than its [filter]"))
        fail_on(problems)
        return self

    def build(self, codelists: Mapping[str, CodeList]) -> Indicator:
        flt, num = self.filter, self.numerator
        return Indicator(
            id=self.id, version=self.version, title=self.title, source=self.source, fact=self.fact,
            measure=self.measure, units=tuple(self.units), windows=tuple(self.windows), per=float(self.per),
            lag_days=self.lag_days, population_min_age=self.population_min_age,
            admission_methods=frozenset(METHODS[m] for m in flt.admission_method),
            min_age=flt.min_age, max_age=flt.max_age, exclude_died=flt.exclude_died,
            exclude_codelist=codelists[flt.exclude_codelist] if flt.exclude_codelist is not None else None,
            exclude_groups=frozenset(flt.exclude_groups or ()),
            codelist=codelists[num.codelist] if num.codelist is not None else None,
            groups=frozenset(num.groups or ()), admission_sources=frozenset(num.admission_source),
            readmission_max_days=num.readmission_max_days, followed_up_within_days=num.followed_up_within_days,
            followed_up=num.followed_up, prior_ed_attendances_min=num.prior_ed_attendances_min,
        )


TOP_KEYS = frozenset(IndicatorFile.model_fields)
FILTER_KEYS = frozenset(FilterTable.model_fields)
NUMERATOR_KEYS = frozenset(NumeratorTable.model_fields)


@dataclass(frozen=True)
class Indicator:
    id: str
    version: int
    title: str
    source: str
    fact: str
    measure: str
    units: tuple[str, ...]
    windows: tuple[str, ...]
    per: float = 100_000.0
    lag_days: int = 0
    population_min_age: int = 0
    admission_methods: frozenset[int] = frozenset()
    min_age: int | None = None
    max_age: int | None = None
    exclude_died: bool = False
    exclude_codelist: CodeList | None = None
    exclude_groups: frozenset[str] = frozenset()
    codelist: CodeList | None = None
    groups: frozenset[str] = frozenset()
    admission_sources: frozenset[str] = frozenset()
    readmission_max_days: int | None = None
    followed_up_within_days: int | None = None
    followed_up: bool = True
    prior_ed_attendances_min: int | None = None

    @property
    def population_key(self) -> str:
        """The population cells a rate indicator divides by."""
        return f"_population_{self.population_min_age}" if self.population_min_age else "_population"

    @property
    def uses_diagnoses(self) -> bool:
        """Whether a fact is judged on diagnoses (then provisional until the spell is coded)."""
        return self.codelist is not None or self.exclude_codelist is not None


@dataclass(frozen=True)
class Catalogue:
    indicators: tuple[Indicator, ...]
    codelists: Mapping[str, CodeList]
    digest: str  # of every definition file's bytes: which definitions a count was made with
    directory: Path = field(default=PACKAGED)

    def by_id(self, indicator_id: str) -> Indicator:
        for indicator in self.indicators:
            if indicator.id == indicator_id:
                return indicator
        raise KeyError(indicator_id)

    def population_keys(self) -> dict[str, int]:
        """Population cell name -> minimum age, for every rate indicator."""
        return {i.population_key: i.population_min_age for i in self.indicators if i.measure == "rate"}


def load_catalogue(directory: Path | None = None) -> Catalogue:
    """Read and check every definition under ``directory`` (the packaged ones by default).

    Code lists first (indicators name them), then indicators; ids are unique per kind. Raises
    DefinitionError (a ValueError) naming the file and entry at fault.
    """
    root = Path(directory) if directory is not None else PACKAGED
    reader = Reader()
    codelists = load_codelists(root / "codelists", reader)
    loaded = reader.load_all(root / "indicators", IndicatorFile, context={"codelists": codelists})
    check_unique(((item.path, item.model.id) for item in loaded), "indicator")
    if not loaded:
        raise DefinitionError(root / "indicators", "", "no indicator definitions (*.toml) here")
    indicators = tuple(item.model.build(codelists) for item in loaded)
    return Catalogue(indicators, codelists, reader.digest, root)


def parse_indicator(data: Mapping[str, Any], codelists: Mapping[str, CodeList], where: str) -> Indicator:
    """One indicator file's TOML, checked against ``codelists``; errors name ``where`` and the entry."""
    return validate(IndicatorFile, data, where, context={"codelists": codelists}).build(codelists)
