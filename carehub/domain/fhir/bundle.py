"""Reading a Bundle off the wire: JSON, then the FHIR model library, then carehub's own checks.

Validation uses ``fhir.resources``' R4B models (FHIR 4.3.0). Its 8.x line, the maintained one
(pydantic v2), models R5 and R4B; true R4 (4.0.1) models exist only in its 6.x line on pydantic
v1, which cannot sit beside carehub's pydantic v2. The resources carehub reads (Bundle,
MessageHeader, Patient, Encounter, Condition, Organization, Location) have the same elements in
R4 and R4B (docs/fhir.md, "R4 input, R4B models", lists how that was checked), so an R4 Bundle
that uses them validates as written. Unknown elements are errors, as in FHIR's JSON rules.

Every problem becomes an :class:`~carehub.domain.fhir.outcome.Issue` with a FHIRPath
expression, so that a sender is told each thing to fix in one answer. Nothing here echoes a
value: the library's messages name the element and the rule only.
"""

from __future__ import annotations

from typing import Any

import orjson
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from carehub.domain.fhir.outcome import Issue, error

MAX_ISSUES = 50  # an outcome names at most this many problems (then says how many more)


class BundleRejected(Exception):
    """The body is not a Bundle carehub can read: answer 400 with these issues."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("; ".join(f"{i.expression}: {i.diagnostics}" for i in issues[:3]))
        self.issues = issues


def parse_bundle(body: bytes, expect: tuple[str, ...]) -> dict[str, Any]:
    """The Bundle in ``body`` as JSON data, after validation; ``expect`` are the Bundle.type values
    this endpoint takes. Raises :class:`BundleRejected` naming every problem found."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BundleRejected([error("structure", "", f"not JSON: {exc.msg} at position {exc.pos}")]) from None
    if not isinstance(data, dict):
        raise BundleRejected([error("structure", "", "the body must be a JSON object (a FHIR resource)")])
    kind = data.get("resourceType")
    if kind != "Bundle":
        raise BundleRejected([error("structure", "resourceType", f"expected a Bundle, got {_shown(kind)}")])
    try:
        Bundle.model_validate(data)
    except ValidationError as exc:
        raise BundleRejected(_issues(exc)) from None
    if data.get("type") not in expect:
        raise BundleRejected([error("value", "Bundle.type", f"expected Bundle.type {' or '.join(expect)}, "
                                                           f"got {_shown(data.get('type'))}")])
    return data


def _issues(exc: ValidationError) -> list[Issue]:
    found = []
    for e in exc.errors(include_input=False, include_url=False):
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            message = "not an element of this resource in FHIR R4"
        found.append(error("structure" if e.get("type") == "extra_forbidden" else "value",
                           expression(e.get("loc", ())), message))
    if len(found) > MAX_ISSUES:
        more = len(found) - MAX_ISSUES
        found = [*found[:MAX_ISSUES], error("too-costly", "Bundle", f"and {more} more problems")]
    return found


def expression(loc: tuple[str | int, ...] | list[str | int]) -> str:
    """pydantic's error location as FHIRPath: ('entry', 1, 'resource', 'birthDate') ->
    Bundle.entry[1].resource.birthDate (the library's ``__ext`` suffix means the ``_x`` twin)."""
    out = "Bundle"
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part)
            out += "._" + name[: -len("__ext")] if name.endswith("__ext") else "." + name
    return out


def _shown(value: object) -> str:
    """A type word or a short code, never a long or personal value."""
    if isinstance(value, str) and len(value) <= 40 and value.replace("-", "").isalnum():
        return repr(value)
    return "nothing" if value is None else f"a {type(value).__name__}"
