"""Indicator definitions as data: the files under ``definitions/`` and what each word means.

An indicator is one TOML file in ``definitions/indicators/`` naming its fact, filter, numerator,
measure, units and windows; code lists live in ``definitions/codelists/``. A new indicator that
fits these words is a new file, not new code. The words are explained in
``docs/indicator-semantics.md`` (and the README). Loading checks every word and fails with
the file and key at fault, so a worker never starts on a definition it would misread.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carehub.domain.codelists import CodeList, parse_codelist
from carehub.v1 import care_event_pb2 as ce

PACKAGED = Path(__file__).resolve().parent / "data"
FACTS = ("admission", "discharge", "open_spell", "ed_attendance")
MEASURES = ("rate", "proportion", "count")
UNITS = ("practice", "locality", "provider", "sector", "region")
POPULATION_UNITS = ("practice", "locality", "region")
WINDOWS = ("30d", "12m", "month", "now")
METHODS = {
    "emergency": ce.ADMISSION_METHOD_EMERGENCY,
    "elective": ce.ADMISSION_METHOD_ELECTIVE,
    "maternity": ce.ADMISSION_METHOD_MATERNITY,
    "transfer": ce.ADMISSION_METHOD_TRANSFER,
}
TOP_KEYS = {"id", "version", "title", "source", "fact", "measure", "per", "units", "windows", "lag_days",
            "population_min_age", "filter", "numerator"}
FILTER_KEYS = {"admission_method", "min_age", "max_age", "exclude_died"}
NUMERATOR_KEYS = {"codelist", "groups", "admission_source", "readmission_max_days", "followed_up_within_days",
                  "followed_up", "prior_ed_attendances_min"}
SPELL_FACTS = ("admission", "discharge", "open_spell")


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
        return self.codelist is not None


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
    """Read and check every definition under ``directory`` (the packaged ones by default)."""
    root = Path(directory) if directory is not None else PACKAGED
    digest = hashlib.sha256()
    codelists: dict[str, CodeList] = {}
    for path in sorted((root / "codelists").glob("*.toml")):
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + raw)
        codelist = parse_codelist(_toml(path, raw), str(path))
        if codelist.id in codelists:
            raise ValueError(f"{path}: code list id {codelist.id!r} is used twice")
        codelists[codelist.id] = codelist
    indicators: list[Indicator] = []
    for path in sorted((root / "indicators").glob("*.toml")):
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + raw)
        indicator = parse_indicator(_toml(path, raw), codelists, str(path))
        if any(i.id == indicator.id for i in indicators):
            raise ValueError(f"{path}: indicator id {indicator.id!r} is used twice")
        indicators.append(indicator)
    if not indicators:
        raise ValueError(f"{root}: no indicator definitions in {root / 'indicators'}")
    return Catalogue(tuple(indicators), codelists, digest.hexdigest()[:16], root)


def _toml(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc


def parse_indicator(data: Mapping[str, Any], codelists: Mapping[str, CodeList], where: str) -> Indicator:
    def bad(message: str) -> ValueError:
        return ValueError(f"{where}: {message}")

    def get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = table.get(key, default)
        if value is default:
            return value
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise bad(f"'{key}' has the wrong type ({type(value).__name__})")
        return value

    def choice_list(key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        values = get(data, key, list, [])
        if not values or any(v not in allowed for v in values):
            raise bad(f"'{key}' must be a non-empty list of {allowed}")
        return tuple(values)

    for table, allowed, name in ((data, TOP_KEYS, "top level"), (data.get("filter", {}), FILTER_KEYS, "[filter]"),
                                 (data.get("numerator", {}), NUMERATOR_KEYS, "[numerator]")):
        if not isinstance(table, dict):
            raise bad(f"{name} must be a table")
        unknown = set(table) - allowed
        if unknown:
            raise bad(f"unknown keys in {name}: {sorted(unknown)} (known: {sorted(allowed)})")
    for key in ("id", "title", "source", "fact", "measure"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise bad(f"'{key}' is required")
    if not isinstance(data.get("version"), int) or data["version"] < 1:
        raise bad("'version' must be a positive integer")
    fact, measure = data["fact"], data["measure"]
    if fact not in FACTS:
        raise bad(f"fact must be one of {FACTS}")
    if measure not in MEASURES:
        raise bad(f"measure must be one of {MEASURES}")
    flt: dict[str, Any] = data.get("filter", {})
    num: dict[str, Any] = data.get("numerator", {})

    methods = get(flt, "admission_method", list, [])
    if any(m not in METHODS for m in methods):
        raise bad(f"admission_method values must be among {sorted(METHODS)}")
    spell_words: list[str] = [k for k in ("admission_method", "min_age", "max_age", "exclude_died") if k in flt]
    spell_words += [k for k in ("codelist", "admission_source", "readmission_max_days", "followed_up_within_days")
                    if k in num]
    if spell_words and fact not in SPELL_FACTS:
        raise bad(f"{spell_words} apply to spells, not to fact {fact!r}")
    if "exclude_died" in flt and fact != "discharge":
        raise bad("exclude_died applies to discharges")
    for key in ("readmission_max_days", "followed_up_within_days"):
        if key in num and fact != "discharge":
            raise bad(f"{key} applies to discharges")
    if "prior_ed_attendances_min" in num and fact != "ed_attendance":
        raise bad("prior_ed_attendances_min applies to ED attendances")
    if "followed_up" in num and "followed_up_within_days" not in num:
        raise bad("followed_up needs followed_up_within_days")

    codelist = None
    groups: frozenset[str] = frozenset()
    if "codelist" in num:
        name = get(num, "codelist", str)
        if name not in codelists:
            raise bad(f"code list {name!r} not found (have {sorted(codelists)})")
        codelist = codelists[name]
        groups = frozenset(get(num, "groups", list, []))
        if not groups or not groups <= codelist.groups():
            raise bad(f"'groups' must name groups of code list {name!r}: {sorted(codelist.groups())}")
    elif "groups" in num:
        raise bad("'groups' needs 'codelist'")
    if measure == "proportion" and not num:
        raise bad("a proportion needs a [numerator] narrower than its [filter]")

    def non_negative(table: Mapping[str, Any], key: str) -> int | None:
        value = get(table, key, int)
        if value is not None and value < 0:
            raise bad(f"'{key}' must be >= 0")
        return value  # type: ignore[no-any-return]

    per = float(get(data, "per", (int, float), 100_000))
    if per <= 0:
        raise bad("'per' must be positive")
    return Indicator(
        id=data["id"], version=data["version"], title=data["title"], source=data["source"], fact=fact,
        measure=measure, units=choice_list("units", UNITS), windows=choice_list("windows", WINDOWS), per=per,
        lag_days=non_negative(data, "lag_days") or 0,
        population_min_age=non_negative(data, "population_min_age") or 0,
        admission_methods=frozenset(METHODS[m] for m in methods),
        min_age=non_negative(flt, "min_age"), max_age=non_negative(flt, "max_age"),
        exclude_died=bool(get(flt, "exclude_died", bool, False)),
        codelist=codelist, groups=groups,
        admission_sources=frozenset(get(num, "admission_source", list, [])),
        readmission_max_days=non_negative(num, "readmission_max_days"),
        followed_up_within_days=non_negative(num, "followed_up_within_days"),
        followed_up=bool(get(num, "followed_up", bool, True)),
        prior_ed_attendances_min=non_negative(num, "prior_ed_attendances_min"),
    )
