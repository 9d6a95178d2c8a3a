"""Alert rules as data: the files under ``data/alert_rules/`` and what each word means.

A rule names the moment it looks at (``on``), the conditions (``[when]``) and who receives the
alert (``recipients``, by role: ``care_plan_owner`` is every organisation that owns one of the
person's open care plans, recorded at or before the moment, so each plan's coordinator hears;
for ``care_plan_review_overdue``, the one owner whose plan's review date has passed).
Conditions on diagnoses use the indicators' code lists (carehub/domain/data/codelists), and the
words shared with indicator definitions (``admission_method``, ``codelist`` + ``groups``,
``admission_source``, ``exclude_died``) mean what docs/indicator-semantics.md says, so an alert
and the indicator it anticipates judge a spell the same way. The file shape is
:class:`RuleFile`, read by the domain loader (carehub/domain/loader.py): loading checks every
word and fails with the file and entry at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, get_args

from pydantic import Field, ValidationInfo, model_validator

from carehub.domain.codelists import CodeList, reference_problems
from carehub.domain.definitions import METHODS, Method, load_catalogue
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
from carehub.v1 import alerts_pb2 as al

PACKAGED = Path(__file__).resolve().parent / "data" / "alert_rules"
On = Literal["admission", "discharge", "ed_attendance", "death", "followup_overdue", "care_plan_review_overdue",
             "indicator_outlier"]
Role = Literal["registered_practice", "social_care", "community", "care_home", "admitting_hospital",
               "discharging_hospital", "source", "care_plan_owner", "unit"]
Severity = Literal["info", "warning", "urgent"]
Outlier = Literal["high_998", "low_998", "high_95", "low_95"]
ON: tuple[str, ...] = get_args(On)
ROLES: tuple[str, ...] = get_args(Role)
SEVERITIES = {"info": al.SEVERITY_INFO, "warning": al.SEVERITY_WARNING, "urgent": al.SEVERITY_URGENT}
SPELL_ON = ("admission", "discharge", "followup_overdue")
CLOCK_ON = ("followup_overdue", "care_plan_review_overdue")  # moments that come when event time passes a day
# Which moments a [when] word can be asked of: the others carry no spell, discharge gap, prior
# attendances, overdue clock or outlier signal to look at. ``after_days`` counts the days after a
# discharge (followup_overdue) or after a care plan's review day (care_plan_review_overdue).
APPLIES_TO: dict[str, tuple[tuple[str, ...], str]] = {
    "admission_method": (SPELL_ON, "spells"),
    "codelist": (SPELL_ON, "spells"),
    "admission_source": (SPELL_ON, "spells"),
    "exclude_died": (SPELL_ON, "spells"),
    "readmission_max_days": (("admission",), "admissions"),
    "prior_ed_attendances_exactly": (("ed_attendance",), "ED attendances"),
    "after_days": (("followup_overdue", "care_plan_review_overdue"), "followup_overdue, care_plan_review_overdue"),
    "outlier": (("indicator_outlier",), "indicator_outlier"),
}


class WhenTable(Definition):
    """``[when]``: all of its conditions must hold."""

    admission_method: list[Method] = Field(default_factory=list)
    codelist: Text | None = None
    groups: list[Text] | None = None
    readmission_max_days: Count | None = None
    admission_source: list[Text] = Field(default_factory=list)
    prior_ed_attendances_exactly: Count | None = None
    exclude_died: bool = False
    after_days: Count | None = None
    outlier: list[Outlier] = Field(default_factory=list)


class RuleFile(Definition):
    """A whole alert rule file; validated with ``context={"codelists": {id: CodeList}}``."""

    id: Text
    version: Version
    title: Text
    source: Text
    severity: Severity
    on: On
    recipients: list[Role] = Field(min_length=1)
    when: WhenTable = WhenTable()

    @model_validator(mode="after")
    def _words_fit(self, info: ValidationInfo) -> Self:
        problems: list[tuple[Loc, str]] = []
        # The unit of an outlier signal is no person's organisation; no other alert has a unit.
        if "unit" in self.recipients and self.on != "indicator_outlier":
            problems.append((("recipients",), f"name 'unit', which goes with on = 'indicator_outlier' only, "
                                              f"not with on = {self.on!r}"))
        elif "unit" not in self.recipients and self.on == "indicator_outlier":
            problems.append((("recipients",), "must be ['unit'] for on = 'indicator_outlier' "
                                              "(recipient 'unit' goes with it, and only with it)"))
        elif self.on == "indicator_outlier" and len(set(self.recipients)) > 1:
            # a signal is about a unit, not a person: no practice, team or care-plan owner to find
            others = sorted(set(self.recipients) - {"unit"})
            problems.append((("recipients",), f"name {others}, a person's organisations, which an indicator "
                                              "signal has none of: must be ['unit']"))
        for key in sorted(self.when.model_fields_set):
            moments, what = APPLIES_TO.get(key, (ON, ""))
            if self.on not in moments:
                problems.append((("when", key), f"applies to {what}, not to on = {self.on!r}"))
        if self.on in CLOCK_ON and self.when.after_days is None:
            problems.append((("when", "after_days"), f"is required with on = {self.on!r}"))
        if self.on == "care_plan_review_overdue" and set(self.recipients) != {"care_plan_owner"}:
            # the review is the owner's to hold: nobody else is asked to act on its date
            problems.append((("recipients",), "must be ['care_plan_owner'] for on = 'care_plan_review_overdue'"))
        codelists: Mapping[str, CodeList] = (info.context or {}).get("codelists", {})
        problems += [(("when", *loc), text) for loc, text in
                     reference_problems(codelists, self.when.codelist, self.when.groups)]
        fail_on(problems)
        return self

    def build(self, codelists: Mapping[str, CodeList]) -> Rule:
        when = self.when
        return Rule(
            id=self.id, version=self.version, title=self.title, source=self.source,
            severity=SEVERITIES[self.severity], on=self.on, recipients=tuple(self.recipients),
            admission_methods=frozenset(METHODS[m] for m in when.admission_method),
            codelist=codelists[when.codelist] if when.codelist is not None else None,
            groups=frozenset(when.groups or ()), readmission_max_days=when.readmission_max_days,
            admission_sources=frozenset(when.admission_source),
            prior_ed_attendances_exactly=when.prior_ed_attendances_exactly, exclude_died=when.exclude_died,
            after_days=7 if when.after_days is None else when.after_days, outliers=frozenset(when.outlier),
        )


TOP_KEYS = frozenset(RuleFile.model_fields)
WHEN_KEYS = frozenset(WhenTable.model_fields)


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
    """Read and check every rule under ``directory`` against the code lists of ``definitions``.

    Raises DefinitionError (a ValueError) naming the file and entry at fault.
    """
    root = Path(directory) if directory is not None else PACKAGED
    codelists = load_catalogue(definitions).codelists
    reader = Reader()
    loaded = reader.load_all(root, RuleFile, context={"codelists": codelists})
    check_unique(((item.path, item.model.id) for item in loaded), "alert rule")
    if not loaded:
        raise DefinitionError(root, "", "no alert rules (*.toml) here")
    return RuleBook(tuple(item.model.build(codelists) for item in loaded), reader.digest)


def parse_rule(data: Mapping[str, Any], codelists: Mapping[str, CodeList], where: str) -> Rule:
    """One rule file's TOML, checked against ``codelists``; errors name ``where`` and the entry."""
    return validate(RuleFile, data, where, context={"codelists": codelists}).build(codelists)
