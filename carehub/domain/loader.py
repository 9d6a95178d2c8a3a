"""One loader for the domain's data files: code lists, indicator definitions and alert rules.

Why one: each kind of file under ``carehub/domain/data`` is read at start-up by a worker that
would otherwise misread a bad file quietly (a misspelt key is a condition never applied, a
``true`` where a number belongs counts as 1). Each module declares the shape of its files as
pydantic models derived from :class:`Definition`; this module reads a file, checks it against
its model and turns whatever is wrong, from TOML syntax to a code list that does not exist,
into one :class:`DefinitionError` naming the file, the entry and the problem, so that a worker
stops before it counts or alerts anything. The words of indicator definitions are explained in
``docs/indicator-semantics.md``.

Entries are named as the file spells them: ``on`` for a top-level key,
``[numerator].groups`` for a key of a table, ``[conditions.asthma].codes[2]`` for an item of a
list. A model checks what spans several of its keys in a ``model_validator`` that raises
:class:`Invalid` with entries relative to the model; what spans files (a code list named by an
indicator) is checked the same way with the other files' contents passed as validation context.
Nothing here reads anything but the files it is given.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

# Scalar shapes shared by every file kind (strict: a bool is neither an int nor a string).
Text = Annotated[str, Field(min_length=1)]
Count = Annotated[int, Field(ge=0)]
Version = Annotated[int, Field(ge=1)]


def _iana_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"must be an IANA time zone such as \"Europe/London\" (got {value!r})") from None
    return value


ZoneName = Annotated[str, Field(min_length=1), AfterValidator(_iana_zone)]


class Definition(BaseModel):
    """Base of every file-shape model: unknown keys are errors, types are not coerced.

    ``strict`` because TOML already has types: ``min_age = "65"`` or ``exclude_died = 1`` is a
    mistake in the file, not something to guess at.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DefinitionError(ValueError):
    """A data file the domain cannot use: which file, which entry in it, and what is wrong.

    A ValueError so that callers that caught the hand-written loaders' errors keep working.
    ``problems`` holds every (entry, problem) found in the file; the message has one line each.
    """

    def __init__(self, path: Path | str, entry: str, problem: str, more: Sequence[tuple[str, str]] = ()) -> None:
        self.path = str(path)
        self.problems: tuple[tuple[str, str], ...] = ((entry, problem), *more)
        self.entry, self.problem = entry, problem
        super().__init__("\n".join(f"{self.path}: {e} {p}" if e else f"{self.path}: {p}" for e, p in self.problems))


class Invalid(ValueError):
    """Raised by a model's own checks: (entry relative to the model, problem) pairs.

    pydantic hands the exception back in the error's context, so the loader can name each entry
    in full (``[numerator]`` + ``groups``) rather than only the table the check ran on.
    """

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{'.'.join(map(str, loc))} {text}" for loc, text in self.problems))


def fail_on(problems: Sequence[tuple[Loc, str]]) -> None:
    """Raise :class:`Invalid` if a model check found anything."""
    if problems:
        raise Invalid(problems)


def parse_toml(raw: bytes, path: Path | str) -> dict[str, Any]:
    """The TOML document in ``raw``; a syntax error names the file and (in tomllib's words) the line."""
    try:
        return tomllib.loads(raw.decode())
    except UnicodeDecodeError as exc:
        raise DefinitionError(path, "", f"not valid UTF-8 ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(path, "", f"not valid TOML: {exc}") from exc


def validate(model: type[M], data: Mapping[str, Any], path: Path | str,
             context: Mapping[str, Any] | None = None) -> M:
    """``data`` (one file's TOML) as ``model``, or a DefinitionError listing every problem found."""
    try:
        return model.model_validate(data, context=dict(context) if context is not None else None)
    except ValidationError as exc:
        problems = [p for error in exc.errors() for p in _explain(model, data, error)]
        raise DefinitionError(path, *problems[0], more=problems[1:]) from exc


@dataclass(frozen=True)
class Loaded(Generic[M]):
    path: Path
    model: M


class Reader:
    """Reads data files in a fixed order and hashes every file's name and bytes on the way.

    The digest says which definitions a result was made with (Catalogue.digest travels with
    indicator counts), so it covers exactly the bytes that were parsed.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def read(self, path: Path) -> dict[str, Any]:
        raw = path.read_bytes()
        self._hash.update(path.name.encode() + b"\0" + raw)
        return parse_toml(raw, path)

    def load(self, path: Path, model: type[M], context: Mapping[str, Any] | None = None) -> M:
        return validate(model, self.read(path), path, context)

    def load_all(self, directory: Path, model: type[M], context: Mapping[str, Any] | None = None) -> list[Loaded[M]]:
        """Every ``*.toml`` in ``directory``, in name order (the digest depends on the order)."""
        return [Loaded(path, self.load(path, model, context)) for path in sorted(directory.glob("*.toml"))]

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()[:16]


def check_unique(ids: Iterable[tuple[Path, str]], what: str) -> None:
    """Ids must be unique across files: a second file with an id names the first."""
    seen: dict[str, Path] = {}
    for path, ident in ids:
        if ident in seen:
            raise DefinitionError(path, "id", f"{ident!r} is already the id of the {what} in {seen[ident]}")
        seen[ident] = path


# -- turning pydantic's errors into entries and sentences ---------------------------------------

_PROBLEMS = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def _explain(model: type[BaseModel], data: Mapping[str, Any], error: ErrorDetails) -> list[tuple[str, str]]:
    loc: Loc = tuple(error["loc"])
    kind, ctx = error["type"], error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, Invalid):
        return [(_entry(data, loc + rel), text) for rel, text in cause.problems]
    if kind == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        return [(_entry(data, loc), "is an unknown key" + (f" (known: {', '.join(known)})" if known else ""))]
    if kind == "literal_error":
        problem = f"must be one of {ctx['expected']}"
    elif kind == "greater_than_equal":
        problem = f"must be >= {ctx['ge']}"
    elif kind == "greater_than":
        problem = f"must be > {ctx['gt']}"
    elif kind == "value_error" and cause is not None:
        problem = str(cause)
    else:
        problem = _PROBLEMS.get(kind, error["msg"])
    value = error.get("input")
    if kind != "missing" and not isinstance(value, Mapping):
        problem += f" (got {_show(value)})"
    return [(_entry(data, loc), problem)]


def _entry(data: Mapping[str, Any], loc: Loc) -> str:
    """``loc`` as the file spells it: leading parts that are tables in ``data`` go in brackets."""
    tables: list[str] = []
    node: Any = data
    for part in loc:
        if not isinstance(part, str) or not isinstance(node, Mapping) or not isinstance(node.get(part), Mapping):
            break
        tables.append(_key(part))
        node = node[part]
    rest = "".join(f"[{p}]" if isinstance(p, int) else f".{_key(p)}" for p in loc[len(tables):])
    if not tables:
        return rest.lstrip(".")
    return f"[{'.'.join(tables)}]{rest}"


def _key(part: str) -> str:
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)


def _known_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the model allows at ``loc`` (the table holding an unknown key)."""
    node: Any = model
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return []
            node = field.annotation
        elif get_origin(node) in (dict, list) and get_args(node):
            node = get_args(node)[-1]
        else:
            return []
    return sorted(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _show(value: object) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | list):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
