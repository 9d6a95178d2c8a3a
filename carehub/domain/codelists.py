"""Code lists: which conditions a spell's diagnoses and procedures meet.

A code list file (``carehub/domain/data/codelists/*.toml``) names conditions, each with a group
and matching rules; the rules are explained in the header of ``codelists/acsc.toml`` and, for
the indicators that use them, in docs/indicator-semantics.md ("Definition words"). Codes are
compared upper-cased and without their dot, by prefix, so "J45" covers "J45.9".

The file shape is :class:`CodeListFile`, checked by the domain loader (carehub/domain/loader.py);
what the engine matches with is the frozen :class:`Condition` built from it, kept a plain
dataclass of prefix tuples because ``Condition.matches`` runs for every spell of every person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import AfterValidator, Field, model_validator

from carehub.domain.loader import Definition, Loc, Reader, Text, Version, check_unique, fail_on, validate

Position = Literal["primary", "any"]
POSITIONS: tuple[str, ...] = get_args(Position)


def normal(code: str) -> str:
    return code.replace(".", "").strip().upper()


def _prefixes(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(normal(v) for v in values)


def _code(value: str) -> str:
    # An entry that normalises to "" would be a prefix of every code: a condition met by anything.
    if not normal(value):
        raise ValueError("must be a code such as \"J45\" or \"J45.9\"")
    return value


Code = Annotated[str, AfterValidator(_code)]


class ConditionEntry(Definition):
    """One ``[conditions.<name>]`` table (matching rules: header of codelists/acsc.toml)."""

    group: Text
    position: Position = "primary"
    codes: list[Code] = Field(min_length=1)
    with_secondary_codes: list[Code] = Field(default_factory=list)
    with_secondary: list[Code] = Field(default_factory=list)
    exclude_secondary: list[Code] = Field(default_factory=list)
    require_secondary: list[Code] = Field(default_factory=list)
    exclude_procedures: list[Code] = Field(default_factory=list)

    @model_validator(mode="after")
    def _secondary_pair(self) -> Self:
        # A primary code "with a secondary" means nothing without the secondary codes, and the
        # reverse would be silently ignored.
        if bool(self.with_secondary_codes) != bool(self.with_secondary):
            missing, given = (("with_secondary", "with_secondary_codes") if self.with_secondary_codes
                              else ("with_secondary_codes", "with_secondary"))
            fail_on([((missing,), f"is required (not empty) with {given}: "
                                  "with_secondary_codes and with_secondary go together")])
        return self

    def build(self, name: str) -> Condition:
        return Condition(
            name=name, group=self.group, position=self.position, codes=_prefixes(self.codes),
            with_secondary_codes=_prefixes(self.with_secondary_codes), with_secondary=_prefixes(self.with_secondary),
            exclude_secondary=_prefixes(self.exclude_secondary), require_secondary=_prefixes(self.require_secondary),
            exclude_procedures=_prefixes(self.exclude_procedures))


class CodeListFile(Definition):
    """A whole code list file."""

    id: Text
    version: Version
    title: Text
    source: Text
    conditions: dict[str, ConditionEntry]

    def build(self) -> CodeList:
        return CodeList(id=self.id, version=self.version, title=self.title, source=self.source,
                        conditions=tuple(entry.build(name) for name, entry in self.conditions.items()))


CONDITION_KEYS = frozenset(ConditionEntry.model_fields)


@dataclass(frozen=True)
class Condition:
    name: str
    group: str
    position: str
    codes: tuple[str, ...]
    with_secondary_codes: tuple[str, ...] = ()
    with_secondary: tuple[str, ...] = ()
    exclude_secondary: tuple[str, ...] = ()
    require_secondary: tuple[str, ...] = ()
    exclude_procedures: tuple[str, ...] = ()

    def matches(self, diagnoses: Sequence[str], procedures: Sequence[str]) -> bool:
        """``diagnoses`` normalised, primary first; ``procedures`` normalised."""
        if not diagnoses:
            return False
        primary, secondary = diagnoses[0], diagnoses[1:]
        if self.position == "primary":
            hit = primary.startswith(self.codes) or (
                bool(self.with_secondary_codes) and primary.startswith(self.with_secondary_codes)
                and any(d.startswith(self.with_secondary) for d in secondary))
        else:
            hit = any(d.startswith(self.codes) for d in diagnoses)
        if not hit:
            return False
        if self.require_secondary and not any(d.startswith(self.require_secondary) for d in secondary):
            return False
        if self.exclude_secondary and any(d.startswith(self.exclude_secondary) for d in secondary):
            return False
        return not (self.exclude_procedures and any(p.startswith(self.exclude_procedures) for p in procedures))


@dataclass(frozen=True)
class CodeList:
    id: str
    version: int
    title: str
    source: str
    conditions: tuple[Condition, ...]

    def groups(self) -> set[str]:
        return {c.group for c in self.conditions}

    def matches(self, groups: frozenset[str], diagnoses: Sequence[str], procedures: Sequence[str]) -> bool:
        return any(c.group in groups and c.matches(diagnoses, procedures) for c in self.conditions)


def parse_codelist(data: Mapping[str, Any], where: str) -> CodeList:
    """One code list file's TOML, checked; errors name ``where`` (the file) and the entry."""
    return validate(CodeListFile, data, where).build()


def load_codelists(directory: Path, reader: Reader) -> dict[str, CodeList]:
    """Every code list under ``directory`` by id; ``reader`` hashes the files for the caller's digest."""
    loaded = reader.load_all(directory, CodeListFile)
    check_unique(((item.path, item.model.id) for item in loaded), "code list")
    return {item.model.id: item.model.build() for item in loaded}


def reference_problems(codelists: Mapping[str, CodeList], codelist: str | None,
                       groups: Sequence[str] | None) -> list[tuple[Loc, str]]:
    """What is wrong with a ``codelist`` + ``groups`` pair (an indicator's [numerator], a rule's [when]).

    Both must name what exists: a misspelt group would match nothing, and an indicator or an
    alert would quietly never fire (docs/indicator-semantics.md, "codelist + groups").
    """
    if codelist is None:
        return [(("groups",), "needs codelist")] if groups is not None else []
    found = codelists.get(codelist)
    if found is None:
        return [(("codelist",), f"names no known code list: {codelist!r} (have: {', '.join(sorted(codelists))})")]
    have = sorted(found.groups())
    if not groups:
        return [(("groups",), f"is required with codelist: groups of code list {codelist!r} ({', '.join(have)})")]
    unknown = [g for g in groups if g not in have]
    if unknown:
        return [(("groups",), f"must name groups of code list {codelist!r} ({', '.join(have)}); "
                              f"not groups of it: {', '.join(map(repr, unknown))}")]
    return []
