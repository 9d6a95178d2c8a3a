"""FHIR OperationOutcome: how the FHIR door tells a sender what was wrong, one issue per problem.

Each :class:`Issue` names the element (a FHIRPath expression such as
``Bundle.entry[2].resource.birthDate``) and says what is wrong in words; values of personal
fields are never echoed, so an outcome can be logged and returned without leaking what it is about.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

Severity = Literal["fatal", "error", "warning", "information"]
# FHIR issue-type codes carehub uses (http://hl7.org/fhir/issue-type)
IssueCode = Literal["structure", "required", "value", "invalid", "not-supported", "business-rule", "security",
                    "login", "forbidden", "too-costly", "throttled", "transient", "duplicate", "informational",
                    "processing"]


class Issue(NamedTuple):
    severity: Severity
    code: IssueCode
    expression: str
    diagnostics: str


def error(code: IssueCode, expression: str, diagnostics: str) -> Issue:
    return Issue("error", code, expression, diagnostics)


def warning(expression: str, diagnostics: str) -> Issue:
    return Issue("warning", "value", expression, diagnostics)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource (FHIR R4 JSON) with one issue per entry; an empty list gives
    one ``information`` issue, since an OperationOutcome must hold at least one."""
    shown = issues or [Issue("information", "informational", "", "all well")]
    out = []
    for issue in shown:
        entry: dict[str, Any] = {"severity": issue.severity, "code": issue.code, "diagnostics": issue.diagnostics}
        if issue.expression:
            entry["expression"] = [issue.expression]
        out.append(entry)
    return {"resourceType": "OperationOutcome", "issue": out}
