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

from functools import lru_cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from carehub.domain.fhir.outcome import Issue, error

MAX_ISSUES = 50  # an outcome names at most this many problems (then says how many more)
MAX_DEPTH = 64  # JSON objects and arrays inside each other; a notification Bundle needs about 10


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
    if _deeper_than(data, MAX_DEPTH):  # the model library recurses per level: a deep one exhausts the stack
        raise BundleRejected([error("too-costly", "Bundle", f"nested deeper than {MAX_DEPTH} levels")])
    unknown = _unknown_resource_types(data)
    if unknown:
        raise BundleRejected(unknown)
    try:
        Bundle.model_validate(data)
    except ValidationError as exc:
        raise BundleRejected(_issues(exc)) from None
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        # the library fails this way on some values of the wrong type (a number where it wants a
        # URL, say) rather than reporting them: the Bundle is still not one it can read
        problem = f"not a FHIR R4 Bundle that can be read ({type(exc).__name__} in the FHIR model library)"
        raise BundleRejected([error("structure", "Bundle", problem)]) from None
    if data.get("type") not in expect:
        raise BundleRejected([error("value", "Bundle.type", f"expected Bundle.type {' or '.join(expect)}, "
                                                           f"got {_shown(data.get('type'))}")])
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    """Is any value of ``data`` nested more than ``limit`` objects and arrays deep? (No recursion.)"""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return False


def _unknown_resource_types(data: dict[str, Any]) -> list[Issue]:
    """An issue for each entry (or contained) resource whose resourceType is not a FHIR resource:
    the model library looks the name up and fails with a KeyError or TypeError, not a validation
    error, so these are checked first."""
    found = []
    entries = data.get("entry")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        where = f"Bundle.entry[{i}].resource"
        contained = resource.get("contained")
        inner = [(f"{where}.contained[{j}]", c) for j, c in enumerate(contained if isinstance(contained, list) else [])
                 if isinstance(c, dict)]
        for path, item in [(where, resource), *inner]:
            kind = item.get("resourceType")
            if not (isinstance(kind, str) and _is_resource_type(kind)):
                found.append(error("structure", f"{path}.resourceType", f"not a FHIR resource type: {_shown(kind)}"))
    return found


@lru_cache(maxsize=512)
def _is_resource_type(name: str) -> bool:
    try:
        return issubclass(get_fhir_model_class(name), Resource)
    except ValueError:
        return False


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
