"""The risk model as data: ``data/risk/model.toml`` and the code lists beside it, checked at start-up.

Why data: which factors count, their points, the tier cut-offs and the segment rules are
clinical and local choices that must be read, reviewed and versioned like the indicator
definitions, not buried in code. The file shapes are pydantic models on the domain loader
(carehub/domain/loader.py), so a misspelt key, a factor naming a code list group that does
not exist or a segment naming an unknown factor stops the loading with one
:class:`~carehub.domain.loader.DefinitionError` naming the file and the entry, before any
person is scored. What the model is built into is plain frozen dataclasses, because
:func:`carehub.domain.risk.factors.compute_factors` and :func:`carehub.domain.risk.score.assess`
run for every person. Every word is explained in docs/risk.md ("The model file").

Code lists: the model may name any code list in ``data/codelists/`` (those of the indicators)
or in ``data/risk/`` (every ``*.toml`` there except ``model.toml``); ids are unique across both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import Field, ValidationInfo, model_validator

from carehub.domain.codelists import CodeList, CodeListFile, Condition, load_codelists, reference_problems
from carehub.domain.loader import (
    Count,
    Definition,
    DefinitionError,
    Loc,
    Reader,
    Text,
    check_unique,
    fail_on,
    validate,
)

PACKAGED = Path(__file__).resolve().parent.parent / "data"
MODEL_FILE = "model.toml"

Kind = Literal["emergency_admissions", "ed_attendances", "conditions", "deficits", "age", "care_home", "social_care"]
KINDS: tuple[str, ...] = get_args(Kind)
Op = Literal["at_least", "above", "below"]
OPS: tuple[str, ...] = get_args(Op)
Days = Annotated[int, Field(gt=0)]
Share = Annotated[float, Field(gt=0, le=1)]

# Which optional keys of a [factors.<name>] table each kind needs (required) or allows.
KIND_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "emergency_admissions": (frozenset({"window_days"}), frozenset()),
    "ed_attendances": (frozenset({"window_days"}), frozenset()),
    "social_care": (frozenset({"window_days"}), frozenset()),
    "conditions": (frozenset({"codelist", "groups"}), frozenset()),
    "deficits": (frozenset({"codelist", "groups", "denominator"}), frozenset({"min_age"})),
    "age": (frozenset(), frozenset()),
    "care_home": (frozenset(), frozenset()),
}
KIND_OPTIONAL = ("window_days", "codelist", "groups", "denominator", "min_age")


class ThresholdTable(Definition):
    """A test of a factor's value: exactly one of ``at_least``, ``above`` (strictly) or ``below``."""

    at_least: float | None = None
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Self:
        given = [op for op in OPS if getattr(self, op) is not None]
        if len(given) != 1:
            fail_on([((), f"needs exactly one of {', '.join(OPS)}" + (f" (got {', '.join(given)})" if given else ""))])
        return self

    def test(self) -> Test:
        for op in OPS:
            value = getattr(self, op)
            if value is not None:
                return Test(op, float(value))
        raise AssertionError("checked by _one_test")


class BandTable(ThresholdTable):
    """One item of a factor's ``points``: the points given when the test holds."""

    points: float


class RuleTable(ThresholdTable):
    """One item of a segment's ``all_of`` / ``any_of``: a factor and a test of its value."""

    factor: Text


class FactorTable(Definition):
    """One ``[factors.<name>]`` table; which keys fit which kind: ``KIND_KEYS``."""

    kind: Kind
    title: Text
    window_days: Days | None = None
    codelist: Text | None = None
    groups: list[Text] | None = None
    denominator: Days | None = None
    min_age: Count | None = None
    points: list[BandTable] = Field(default_factory=list)

    @model_validator(mode="after")
    def _keys_fit_kind(self) -> Self:
        required, optional = KIND_KEYS[self.kind]
        problems: list[tuple[Loc, str]] = []
        for key in KIND_OPTIONAL:
            given = getattr(self, key) is not None
            if key in required and not given:
                problems.append(((key,), f"is required for kind {self.kind!r}"))
            elif given and key not in required | optional:
                problems.append(((key,), f"does not apply to kind {self.kind!r}"))
        fail_on(problems)
        return self


class ScoreTable(Definition):
    """``[score]``: what is predicted, over how long, and the logistic intercept."""

    outcome: Text
    horizon_days: Days
    intercept: float


class TierTable(Definition):
    """One ``[[tiers]]`` item, highest first."""

    name: Text
    title: Text
    top_share: Share


class SegmentTable(Definition):
    """One ``[[segments]]`` item, in the order they are tried."""

    name: Text
    title: Text
    all_of: list[RuleTable] = Field(default_factory=list)
    any_of: list[RuleTable] = Field(default_factory=list)


class RiskModelFile(Definition):
    """The whole ``model.toml``.

    Validated with ``context={"codelists": {id: CodeList}}``: the code lists and groups its
    factors name must exist.
    """

    id: Text
    version: Text
    title: Text
    source: Text
    score: ScoreTable
    factors: dict[str, FactorTable] = Field(min_length=1)
    tiers: list[TierTable] = Field(min_length=1)
    segments: list[SegmentTable] = Field(min_length=1)

    @model_validator(mode="after")
    def _fits_together(self, info: ValidationInfo) -> Self:
        codelists: Mapping[str, CodeList] = (info.context or {}).get("codelists", {})
        problems: list[tuple[Loc, str]] = []
        for name, factor in self.factors.items():
            if factor.codelist is not None:
                problems += [(("factors", name, *loc), text) for loc, text in
                             reference_problems(codelists, factor.codelist, factor.groups)]
        problems += _tier_problems(self.tiers)
        problems += _segment_problems(self.segments, self.factors)
        fail_on(problems)
        return self

    def build(self, codelists: Mapping[str, CodeList], digest: str) -> RiskModel:
        factors = []
        for name, f in self.factors.items():
            conditions: tuple[Condition, ...] = ()
            if f.codelist is not None:
                groups = set(f.groups or ())
                conditions = tuple(c for c in codelists[f.codelist].conditions if c.group in groups)
            factors.append(Factor(
                name=name, kind=f.kind, title=f.title, window_days=f.window_days, conditions=conditions,
                denominator=f.denominator, min_age=f.min_age,
                bands=tuple(Band(b.test(), float(b.points)) for b in f.points)))
        return RiskModel(
            id=self.id, version=self.version, title=self.title, source=self.source, outcome=self.score.outcome,
            horizon_days=self.score.horizon_days, intercept=float(self.score.intercept), factors=tuple(factors),
            tiers=tuple(Tier(t.name, t.title, float(t.top_share)) for t in self.tiers),
            segments=tuple(Segment(s.name, s.title, tuple(Rule(r.factor, r.test()) for r in s.all_of),
                                   tuple(Rule(r.factor, r.test()) for r in s.any_of)) for s in self.segments),
            digest=digest)


def _tier_problems(tiers: Sequence[TierTable]) -> list[tuple[Loc, str]]:
    """Shares rise strictly, the last is 1 (everyone has a tier), names are unique."""
    problems: list[tuple[Loc, str]] = []
    seen: set[str] = set()
    for i, tier in enumerate(tiers):
        if tier.name in seen:
            problems.append((("tiers", i, "name"), f"{tier.name!r} is already the name of a tier above"))
        seen.add(tier.name)
        if i and tier.top_share <= tiers[i - 1].top_share:
            problems.append((("tiers", i, "top_share"), f"must be more than the tier above's "
                                                        f"({tiers[i - 1].top_share:g}): shares are cumulative"))
    if tiers and tiers[-1].top_share != 1:
        problems.append((("tiers", len(tiers) - 1, "top_share"), "must be 1 in the last tier, so everyone has a tier"))
    return problems


def _segment_problems(segments: Sequence[SegmentTable], factors: Mapping[str, FactorTable]) -> list[tuple[Loc, str]]:
    """Rules name known factors; only the last segment, and it always, has no rules; names are unique."""
    problems: list[tuple[Loc, str]] = []
    seen: set[str] = set()
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if segment.name in seen:
            problems.append((("segments", i, "name"), f"{segment.name!r} is already the name of a segment above"))
        seen.add(segment.name)
        for key in ("all_of", "any_of"):
            for j, rule in enumerate(getattr(segment, key)):
                if rule.factor not in factors:
                    problems.append((("segments", i, key, j, "factor"),
                                     f"names no factor of this model: {rule.factor!r} "
                                     f"(have: {', '.join(sorted(factors))})"))
        ruled = bool(segment.all_of or segment.any_of)
        if i < last and not ruled:
            problems.append((("segments", i), "needs all_of or any_of: only the last segment takes everyone"))
        if i == last and ruled:
            problems.append((("segments", i), "must have no rules: the last segment takes everyone else"))
    return problems


# -- what the model is built into ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Test:
    """``op`` (at_least, above, below) against ``value``."""

    op: str
    value: float

    def holds(self, x: float) -> bool:
        if self.op == "at_least":
            return x >= self.value
        if self.op == "above":
            return x > self.value
        return x < self.value

    def __str__(self) -> str:
        return f"{self.op.replace('_', ' ')} {self.value:g}"


@dataclass(frozen=True, slots=True)
class Band:
    test: Test
    points: float


@dataclass(frozen=True, slots=True)
class Factor:
    """One factor: how its value is computed (``kind`` and parameters) and its points."""

    name: str
    kind: str
    title: str
    window_days: int | None = None
    conditions: tuple[Condition, ...] = ()  # of the named code list, in the named groups
    denominator: int | None = None
    min_age: int | None = None
    bands: tuple[Band, ...] = ()

    def points(self, value: float) -> float:
        """The points of the first band whose test holds; 0 when none does."""
        for band in self.bands:
            if band.test.holds(value):
                return band.points
        return 0.0

    @property
    def scored(self) -> bool:
        return bool(self.bands)


@dataclass(frozen=True, slots=True)
class Rule:
    factor: str
    test: Test

    def holds(self, values: Mapping[str, float]) -> bool:
        return self.test.holds(values[self.factor])


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    title: str
    all_of: tuple[Rule, ...] = ()
    any_of: tuple[Rule, ...] = ()

    def matches(self, values: Mapping[str, float]) -> bool:
        if not all(rule.holds(values) for rule in self.all_of):
            return False
        return not self.any_of or any(rule.holds(values) for rule in self.any_of)


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    title: str
    top_share: float


@dataclass(frozen=True)
class RiskModel:
    id: str
    version: str
    title: str
    source: str
    outcome: str
    horizon_days: int
    intercept: float
    factors: tuple[Factor, ...]
    tiers: tuple[Tier, ...]
    segments: tuple[Segment, ...]
    digest: str  # of every file read to build it: which definitions an assessment was made with

    @property
    def label(self) -> str:
        """What every output carries: ``"<id> <version>"``."""
        return f"{self.id} {self.version}"

    def factor(self, name: str) -> Factor:
        for factor in self.factors:
            if factor.name == name:
                return factor
        raise KeyError(name)

    def risk(self, score: float) -> float:
        """The predicted probability of the outcome within the horizon for a score (sum of points)."""
        z = self.intercept + score
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


def risk_codelist_paths(directory: Path) -> list[Path]:
    """The code list files of ``directory`` (a ``data/risk`` folder): every ``*.toml`` but the model."""
    return sorted(p for p in directory.glob("*.toml") if p.name != MODEL_FILE)


def load_model(directory: Path | None = None) -> RiskModel:
    """Read and check the risk model under ``directory`` (a ``data`` folder; the packaged one by default).

    Code lists of ``codelists/`` and ``risk/`` first (the model names them), then
    ``risk/model.toml``. Raises DefinitionError (a ValueError) naming the file and entry at fault.
    """
    root = Path(directory) if directory is not None else PACKAGED
    reader = Reader()
    codelists = load_codelists(root / "codelists", reader)
    own = [(path, reader.load(path, CodeListFile)) for path in risk_codelist_paths(root / "risk")]
    check_unique(((p, m.id) for p, m in own), "code list")
    for p, m in own:
        if m.id in codelists:
            raise DefinitionError(p, "id", f"{m.id!r} is already the id of a code list in {root / 'codelists'}")
    codelists.update({m.id: m.build() for _, m in own})
    path = root / "risk" / MODEL_FILE
    if not path.exists():
        raise DefinitionError(path, "", "no risk model here")
    model = reader.load(path, RiskModelFile, context={"codelists": codelists})
    return model.build(codelists, reader.digest)


def parse_model(data: Mapping[str, Any], codelists: Mapping[str, CodeList], where: str) -> RiskModel:
    """One model file's TOML, checked against ``codelists``; errors name ``where`` and the entry."""
    return validate(RiskModelFile, data, where, context={"codelists": codelists}).build(codelists, "")
