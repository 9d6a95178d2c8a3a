"""The Fellegi-Sunter model: per-field level probabilities, the prior, and the decision thresholds.

A pair's match weight is log2 of the prior odds that two random records are one person plus,
for each field compared, log2(m/u): m = P(level | same person), u = P(level | different people)
(Fellegi and Sunter 1969; as in Splink, docs/linkage.md). m and u come from
``train.py`` (EM without labels) and live in a versioned weights file next to this package.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .features import ADDED_LEVELS, FIELDS, LEVELS, Levels

# The weights the service loads unless told otherwise. v2 scores name swaps and day/month
# transpositions, and was trained on FEBRL3 as well as the synthetic region (see the file); v3 is
# v2's m, u and prior with the review threshold raised to the link threshold, so that only a would-be
# link that a national id contradicts is queued for a person (docs/linkage.md, review queue).
DEFAULT_VERSION = "v3"
_VERSION = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")


@dataclass(frozen=True)
class LinkageModel:
    version: str
    prior_log2: float  # log2 odds that two random records are the same person
    m: dict[str, tuple[float, ...]]
    u: dict[str, tuple[float, ...]]
    link_threshold: float  # match weight at or above which a record is linked
    review_threshold: float  # at or above (and below link): a person decides
    metadata: dict[str, Any] = field(default_factory=dict)
    # weights[i][level] = log2(m/u) of FIELDS[i]; one extra 0.0 at the end, so MISSING (-1) adds nothing.
    weights: tuple[tuple[float, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        table = []
        for name in FIELDS:
            m, u = self.m[name], self.u[name]
            if not len(m) == len(u) == len(LEVELS[name]):
                raise ValueError(f"{name}: expected {len(LEVELS[name])} levels")
            if any(not 0.0 < p <= 1.0 for p in (*m, *u)):
                raise ValueError(f"{name}: probabilities must be in (0, 1]")
            table.append((*(math.log2(a / b) for a, b in zip(m, u, strict=True)), 0.0))
        if self.review_threshold > self.link_threshold:
            raise ValueError("review threshold above link threshold")
        object.__setattr__(self, "weights", tuple(table))

    def score(self, levels: Levels) -> float:
        """Match weight of a comparison vector (prior included)."""
        w = self.weights
        return self.prior_log2 + sum(w[i][lv] for i, lv in enumerate(levels))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            **self.metadata,
            "prior": {
                "log2_odds": self.prior_log2,
                "probability_two_random_records_match": 2**self.prior_log2 / (1 + 2**self.prior_log2),
            },
            "thresholds": {"link": self.link_threshold, "review": self.review_threshold},
            "fields": {
                name: {
                    "levels": list(LEVELS[name]),
                    "m": list(self.m[name]),
                    "u": list(self.u[name]),
                    "weight_log2": [round(w, 3) for w in self.weights[i][:-1]],
                }
                for i, name in enumerate(FIELDS)
            },
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LinkageModel:
        fields = {name: _current_levels(name, doc["fields"].get(name)) for name in FIELDS}
        metadata = {k: v for k, v in doc.items() if k not in ("version", "prior", "thresholds", "fields")}
        return cls(
            version=str(doc["version"]),
            prior_log2=float(doc["prior"]["log2_odds"]),
            m={name: tuple(float(x) for x in fields[name]["m"]) for name in FIELDS},
            u={name: tuple(float(x) for x in fields[name]["u"]) for name in FIELDS},
            link_threshold=float(doc["thresholds"]["link"]),
            review_threshold=float(doc["thresholds"]["review"]),
            metadata=metadata,
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def _current_levels(name: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    """A field's m and u in this code's levels. An older file lacking a field gets m = u (no evidence);
    a level added since takes the m and u of the level that scored such pairs before (ADDED_LEVELS)."""
    levels = LEVELS[name]
    if spec is None:
        return {"levels": list(levels), "m": [1.0] * len(levels), "u": [1.0] * len(levels)}
    if list(spec["levels"]) == list(levels):
        return spec
    added = ADDED_LEVELS.get(name, {})
    index = {lv: i for i, lv in enumerate(spec["levels"])}
    try:
        at = [index[added.get(lv, lv)] for lv in levels]
    except KeyError:
        raise ValueError(f"weights file levels for {name} do not match this code's") from None
    if len(set(spec["levels"]) - set(levels)) or len(index) != len(spec["levels"]):
        raise ValueError(f"weights file levels for {name} do not match this code's")
    return {"levels": list(levels), "m": [spec["m"][i] for i in at], "u": [spec["u"][i] for i in at]}


def load_model(version: str = DEFAULT_VERSION) -> LinkageModel:
    """Read services/identity/weights/<version>.json, shipped with the package."""
    if not _VERSION.match(version):
        raise ValueError("weights version must be a short lower-case name such as 'v2'")
    # the service package is ``services.identity`` in the source tree and ``carehub.services.identity`` installed
    service_package = __name__.rsplit(".linkage", 1)[0]
    text = resources.files(service_package).joinpath("weights", f"{version}.json").read_text(encoding="utf-8")
    return LinkageModel.from_json(json.loads(text))


def load_model_file(path: str | Path) -> LinkageModel:
    """A weights file outside the package (e.g. one just trained)."""
    return LinkageModel.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
