"""Alert rules as data: the files under ``rules/`` and what each word means.

A rule names the moment it looks at (``on``), the conditions (``[when]``) and who receives the
alert (``recipients``, by role). Conditions on diagnoses use the indicators' code lists
(carehub/domain/data/codelists), so an alert and the indicator it anticipates judge
a spell the same way. Loading checks every word and fails with the file and key at fault.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carehub.domain.codelists import CodeList
from carehub.domain.definitions import METHODS, load_catalogue
from carehub.v1 import alerts_pb2 as al

PACKAGED = Path(__file__).resolve().parent / "data" / "alert_rules"
ON = ("admission", "discharge", "ed_attendance", "death", "followup_overdue", "indicator_outlier")
ROLES = ("registered_practice", "social_care", "community", "care_home", "admitting_hospital",
         "discharging_hospital", "source", "unit")
SEVERITIES = {"info": al.SEVERITY_INFO, "warning": al.SEVERITY_WARNING, "urgent": al.SEVERITY_URGENT}
TOP_KEYS = {"id", "version", "title", "source", "severity", "on", "recipients", "when"}
WHEN_KEYS = {"admission_method", "codelist", "groups", "readmission_max_days", "admission_source",
             "prior_ed_attendances_exactly", "exclude_died", "after_days", "outlier"}
SPELL_ON = ("admission", "discharge", "followup_overdue")


@dataclass(frozen=True)
class Rule:
    id: str
    version: int
    title: str
    source: str
    severity: int
    on: str
    recipients: tuple[str, ...]
    admission_methods: frozenset[int] = frozenset()
    codelist: CodeList | None = None
    groups: frozenset[str] = frozenset()
    readmission_max_days: int | None = None
    admission_sources: frozenset[str] = frozenset()
    prior_ed_attendances_exactly: int | None = None
    exclude_died: bool = False
    after_days: int = 7
    outliers: frozenset[str] = frozenset()

    @property
    def definition(self) -> str:
        return f"{self.id} v{self.version}"


@dataclass(frozen=True)
class RuleBook:
    rules: tuple[Rule, ...]
    digest: str

    def on(self, moment: str) -> list[Rule]:
        return [r for r in self.rules if r.on == moment]


def load_rules(directory: Path | None = None, definitions: Path | None = None) -> RuleBook:
    root = Path(directory) if directory is not None else PACKAGED
    codelists = load_catalogue(definitions).codelists
    digest = hashlib.sha256()
    rules: list[Rule] = []
    for path in sorted(root.glob("*.toml")):
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + raw)
        try:
            data = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from exc
        rule = parse_rule(data, codelists, str(path))
        if any(r.id == rule.id for r in rules):
            raise ValueError(f"{path}: rule id {rule.id!r} is used twice")
        rules.append(rule)
    if not rules:
        raise ValueError(f"{root}: no alert rules")
    return RuleBook(tuple(rules), digest.hexdigest()[:16])


def parse_rule(data: Mapping[str, Any], codelists: Mapping[str, CodeList], where: str) -> Rule:
    def bad(message: str) -> ValueError:
        return ValueError(f"{where}: {message}")

    unknown = set(data) - TOP_KEYS
    if unknown:
        raise bad(f"unknown keys {sorted(unknown)} (known: {sorted(TOP_KEYS)})")
    when = data.get("when", {})
    if not isinstance(when, dict):
        raise bad("[when] must be a table")
    unknown = set(when) - WHEN_KEYS
    if unknown:
        raise bad(f"unknown keys in [when]: {sorted(unknown)} (known: {sorted(WHEN_KEYS)})")
    for key in ("id", "title", "source", "severity", "on"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise bad(f"'{key}' is required")
    if not isinstance(data.get("version"), int) or data["version"] < 1:
        raise bad("'version' must be a positive integer")
    if data["severity"] not in SEVERITIES:
        raise bad(f"severity must be one of {sorted(SEVERITIES)}")
    on = data["on"]
    if on not in ON:
        raise bad(f"on must be one of {ON}")
    recipients = data.get("recipients")
    if not isinstance(recipients, list) or not recipients or any(r not in ROLES for r in recipients):
        raise bad(f"recipients must be a non-empty list of {ROLES}")
    if ("unit" in recipients) != (on == "indicator_outlier"):
        raise bad("recipient 'unit' goes with on = 'indicator_outlier', and only with it")

    spell_words = {"admission_method", "codelist", "readmission_max_days", "admission_source", "exclude_died"}
    if spell_words & set(when) and on not in SPELL_ON:
        raise bad(f"{sorted(spell_words & set(when))} apply to spells, not to on = {on!r}")
    if "readmission_max_days" in when and on != "admission":
        raise bad("readmission_max_days applies to admissions")
    if "prior_ed_attendances_exactly" in when and on != "ed_attendance":
        raise bad("prior_ed_attendances_exactly applies to ED attendances")
    if "after_days" in when and on != "followup_overdue":
        raise bad("after_days applies to followup_overdue")
    if "outlier" in when and on != "indicator_outlier":
        raise bad("outlier applies to indicator_outlier")

    methods = when.get("admission_method", [])
    if not isinstance(methods, list) or any(m not in METHODS for m in methods):
        raise bad(f"admission_method values must be among {sorted(METHODS)}")
    codelist = None
    groups: frozenset[str] = frozenset()
    if "codelist" in when:
        if when["codelist"] not in codelists:
            raise bad(f"code list {when['codelist']!r} not found (have {sorted(codelists)})")
        codelist = codelists[when["codelist"]]
        groups = frozenset(when.get("groups", []))
        if not groups or not groups <= codelist.groups():
            raise bad(f"'groups' must name groups of code list {codelist.id!r}: {sorted(codelist.groups())}")
    elif "groups" in when:
        raise bad("'groups' needs 'codelist'")

    def number(key: str) -> int | None:
        value = when.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise bad(f"'{key}' must be an integer >= 0")
        return value

    outliers = when.get("outlier", [])
    if not isinstance(outliers, list) or any(o not in ("high_998", "low_998", "high_95", "low_95") for o in outliers):
        raise bad("outlier values must be among high_998, low_998, high_95, low_95")
    if on == "followup_overdue" and number("after_days") is None:
        raise bad("followup_overdue needs after_days")
    return Rule(
        id=data["id"], version=data["version"], title=data["title"], source=data["source"],
        severity=SEVERITIES[data["severity"]], on=on, recipients=tuple(recipients),
        admission_methods=frozenset(METHODS[m] for m in methods), codelist=codelist, groups=groups,
        readmission_max_days=number("readmission_max_days"),
        admission_sources=frozenset(str(s) for s in when.get("admission_source", [])),
        prior_ed_attendances_exactly=number("prior_ed_attendances_exactly"),
        exclude_died=bool(when.get("exclude_died", False)), after_days=number("after_days") or 7,
        outliers=frozenset(outliers),
    )
