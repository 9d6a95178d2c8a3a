"""The review taxonomy as data: verdicts, contributory factors and their groups (data/review/taxonomy.toml).

Why a fixed, versioned file: the shared learning counts what conferences record, so every
practice must choose from the same codes, and a count must say which codes it was made with.
Loading checks every entry and fails with the file and the entry at fault (carehub/domain/loader.py);
:meth:`Taxonomy.problems` checks a recorded outcome against it. The frameworks behind the codes
are in docs/review-packs.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from carehub.domain.loader import Definition, DefinitionError, Loc, Reader, Text, Version, fail_on

PACKAGED = Path(__file__).resolve().parents[1] / "data" / "review" / "taxonomy.toml"
CODE = re.compile(r"[a-z][a-z0-9_]*")




class VerdictEntry(Definition):
    title: Text
    avoidable: bool
    source: Text


class GroupEntry(Definition):
    title: Text
    source: Text


class FactorEntry(Definition):
    title: Text
    group: Text
    source: Text


class TaxonomyFile(Definition):
    id: Text
    version: Version
    title: Text
    source: Text
    verdicts: dict[str, VerdictEntry] = Field(min_length=1)
    groups: dict[str, GroupEntry] = Field(min_length=1)
    factors: dict[str, FactorEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _groups_exist(self) -> Self:
        problems: list[tuple[Loc, str]] = []
        for table in ("verdicts", "groups", "factors"):
            for code in getattr(self, table):
                if not CODE.fullmatch(code):
                    problems.append(((table, code), "is not a code: lower-case letters, digits and _ only"))
        for code, factor in self.factors.items():
            if factor.group not in self.groups:
                problems.append((("factors", code, "group"), f"names {factor.group!r}, which is not a group "
                                                            f"(groups: {', '.join(sorted(self.groups))})"))
        for code in self.factors:
            if code in self.verdicts:
                problems.append((("factors", code), "is also a verdict code: a code means one thing"))
        fail_on(problems)
        return self


@dataclass(frozen=True)
class Verdict:
    code: str
    title: str
    avoidable: bool
    source: str


@dataclass(frozen=True)
class Factor:
    code: str
    title: str
    group: str
    source: str


@dataclass(frozen=True)
class Taxonomy:
    id: str
    version: int
    verdicts: Mapping[str, Verdict]
    groups: Mapping[str, str]  # code -> title
    factors: Mapping[str, Factor]
    digest: str

    @property
    def label(self) -> str:
        return f"{self.id} v{self.version}"

    def problems(self, verdict: str, factors: Sequence[str]) -> list[str]:
        """What is wrong with an outcome's verdict and factors (empty: nothing), each naming the code."""
        out = []
        if verdict not in self.verdicts:
            out.append(f"unknown verdict {verdict!r} (verdicts: {', '.join(self.verdicts)})")
        for code in factors:
            if code not in self.factors:
                out.append(f"unknown contributory factor {code!r} (not in {self.label})")
        repeated = sorted({c for c in factors if list(factors).count(c) > 1})
        if repeated:
            out.append(f"factors named twice: {', '.join(repeated)}")
        return out


def load_taxonomy(path: Path | None = None) -> Taxonomy:
    """Read and check the taxonomy file (the packaged one by default); DefinitionError names the file and entry."""
    path = Path(path) if path is not None else PACKAGED
    reader = Reader()
    try:
        model = reader.load(path, TaxonomyFile)
    except FileNotFoundError:
        raise DefinitionError(path, "", "no review taxonomy here") from None
    return Taxonomy(
        id=model.id, version=model.version,
        verdicts={c: Verdict(c, v.title, v.avoidable, v.source) for c, v in model.verdicts.items()},
        groups={c: g.title for c, g in model.groups.items()},
        factors={c: Factor(c, f.title, f.group, f.source) for c, f in model.factors.items()},
        digest=reader.digest,
    )
