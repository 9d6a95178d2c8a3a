"""Code lists: which conditions a spell's diagnoses and procedures meet.

A code list file (``definitions/codelists/*.toml``) names conditions, each with a group and
matching rules; the rules are explained in the header of ``codelists/acsc.toml``. Codes are
compared upper-cased and without their dot, by prefix, so "J45" covers "J45.9".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

POSITIONS = ("primary", "any")
CONDITION_KEYS = {
    "group", "position", "codes", "with_secondary_codes", "with_secondary", "exclude_secondary",
    "require_secondary", "exclude_procedures",
}


def normal(code: str) -> str:
    return code.replace(".", "").strip().upper()


def _prefixes(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(normal(v) for v in values)


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
    def need(key: str, kind: type) -> Any:
        value = data.get(key)
        if not isinstance(value, kind):
            raise ValueError(f"{where}: '{key}' must be a {kind.__name__}")
        return value

    conditions = []
    for name, raw in need("conditions", dict).items():
        unknown = set(raw) - CONDITION_KEYS
        if unknown:
            raise ValueError(f"{where}: condition {name}: unknown keys {sorted(unknown)}")
        position = raw.get("position", "primary")
        if position not in POSITIONS:
            raise ValueError(f"{where}: condition {name}: position must be one of {POSITIONS}")
        lists = {k: raw.get(k, []) for k in CONDITION_KEYS - {"group", "position"}}
        for key, value in lists.items():
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(f"{where}: condition {name}: '{key}' must be a list of codes")
        if not lists["codes"]:
            raise ValueError(f"{where}: condition {name}: 'codes' is empty")
        if bool(lists["with_secondary_codes"]) != bool(lists["with_secondary"]):
            raise ValueError(f"{where}: condition {name}: with_secondary_codes and with_secondary go together")
        group = raw.get("group")
        if not isinstance(group, str) or not group:
            raise ValueError(f"{where}: condition {name}: 'group' is required")
        conditions.append(Condition(name=name, group=group, position=position,
                                    **{k: _prefixes(v) for k, v in lists.items()}))
    return CodeList(id=need("id", str), version=need("version", int), title=need("title", str),
                    source=need("source", str), conditions=tuple(conditions))
