"""The shared learning: recorded outcomes' verdicts and contributory factors counted by practice,
locality and region. Pure.

Each reviewed pack (a pack with an outcome) counts once in its practice, its locality and the
region under ``reviewed``, under ``verdict:<code>`` and under each ``factor:<code>`` recorded. The
practice and locality are the pack's (the person's registration now, as for the indicators).

Small numbers are withheld by the policy the indicators apply (carehub/domain/suppression.py):
counts from 1 to ``threshold`` are withheld, and more cells so that none can be worked back from
a published total, over the groups region = its practices, region = its localities and
locality = its practices, per item. Verdicts add up to the reviewed count of their unit (each
outcome has one verdict), so the reviewed counts and the verdicts are withheld as one table with
those groups too, solved jointly (``withheld(..., joint=True)``) since a table's rows and columns
overlap. Factors do not add up to anything (an outcome names any number of them), so each is
withheld on its own hierarchy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from carehub.domain.review.taxonomy import Taxonomy
from carehub.domain.suppression import Group, withheld
from carehub.v1 import review_pb2 as rv

REGION = "region"


def _units(pack: rv.ReviewPack) -> tuple[str, str, str]:
    return (f"practice:{pack.practice}", f"locality:{pack.locality or 'unknown'}", REGION)


def learning(taxonomy: Taxonomy, packs: Iterable[rv.ReviewPack], outcomes: Mapping[str, rv.ReviewOutcome],
             threshold: int) -> list[rv.ReviewLearningCell]:
    """Every cell (unit x item), withheld ones with count 0, for the packs that have an outcome."""
    counts: dict[str, dict[str, int]] = {}  # item -> unit -> count
    practices_of: dict[str, set[str]] = {}
    units: set[str] = {REGION}
    for pack in packs:
        outcome = outcomes.get(pack.pack_id)
        if outcome is None:
            continue
        practice, locality, region = _units(pack)
        units |= {practice, locality}
        practices_of.setdefault(locality, set()).add(practice)
        items = ["reviewed", f"verdict:{outcome.verdict}", *(f"factor:{f}" for f in dict.fromkeys(outcome.factors))]
        for item in items:
            for unit in (practice, locality, region):
                counts.setdefault(item, {})[unit] = counts.setdefault(item, {}).get(unit, 0) + 1
    if not counts:
        return []
    practices = sorted(u for u in units if u.startswith("practice:"))
    localities = sorted(u for u in units if u.startswith("locality:"))
    hierarchy: list[Group] = [(REGION, practices), (REGION, localities)]
    hierarchy += [(locality, sorted(members)) for locality, members in sorted(practices_of.items())]
    hidden: set[tuple[str, str]] = set()
    # verdicts add up to the reviewed count in every unit, so they are withheld together, as one table
    table = ["reviewed", *(i for i in counts if i.startswith("verdict:"))]
    cells = {f"{item}|{unit}": counts[item].get(unit, 0) for item in table for unit in units}
    groups: list[Group] = [(f"{item}|{total}", [f"{item}|{m}" for m in members])
                           for item in table for total, members in hierarchy]
    groups += [(f"reviewed|{unit}", [f"{item}|{unit}" for item in table[1:]]) for unit in sorted(units)]
    hidden |= {tuple(cell.split("|", 1)) for cell in withheld(cells, groups, threshold, joint=True)}  # type: ignore[misc]
    for item in (i for i in counts if i.startswith("factor:")):
        one = {unit: counts[item].get(unit, 0) for unit in units}
        hidden |= {(item, unit) for unit in withheld(one, hierarchy, threshold)}
    out = []
    for item in sorted(counts, key=_order):
        title, group = _describe(taxonomy, item)
        for unit in sorted(units):
            secret = (item, unit) in hidden
            out.append(rv.ReviewLearningCell(unit=unit, item=item, title=title, group=group,
                                             count=0 if secret else counts[item].get(unit, 0), withheld=secret,
                                             reviewed=0 if ("reviewed", unit) in hidden
                                             else counts["reviewed"].get(unit, 0)))
    return out


def _order(item: str) -> tuple[int, str]:
    return ({"reviewed": 0, "verdict": 1, "factor": 2}[item.split(":", 1)[0]], item)


def _describe(taxonomy: Taxonomy, item: str) -> tuple[str, str]:
    kind, _, code = item.partition(":")
    if kind == "verdict" and code in taxonomy.verdicts:
        return taxonomy.verdicts[code].title, ""
    if kind == "factor" and code in taxonomy.factors:
        factor = taxonomy.factors[code]
        return factor.title, factor.group
    if kind == "reviewed":
        return "Admissions reviewed (an outcome recorded)", ""
    return f"{code} (not in {taxonomy.label})", ""
