"""The review taxonomy: every entry loads, has a title, group and source, and can be recorded; broken copies
are refused naming the file and the entry; outcomes are checked against it; the learning counts are withheld
by the indicators' small-number rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from carehub.domain.review.learning import learning
from carehub.domain.review.outcomes import outcome_problems, outcome_record
from carehub.domain.review.taxonomy import PACKAGED, load_taxonomy
from carehub.domain.suppression import recoverable
from carehub.v1 import review_pb2 as rv
from tests.unit.broken_copies import assert_broken_copy_refused

TAXONOMY = load_taxonomy()
FACTORS = sorted(TAXONOMY.factors)
VERDICTS = sorted(TAXONOMY.verdicts)


def test_the_taxonomy_is_versioned_and_has_the_frameworks_groups() -> None:
    assert TAXONOMY.label == "carehub-review v1" and len(TAXONOMY.digest) == 16
    assert set(TAXONOMY.groups) == {"patient", "task", "individual", "team", "work_environment", "organisation",
                                    "institutional"}  # the London Protocol's seven
    framework = [f for f in TAXONOMY.factors.values() if f.source.startswith("Primary-care contributory factors")]
    assert len(framework) == 13


@pytest.mark.parametrize("code", FACTORS)
def test_each_contributory_factor_has_a_title_a_group_and_a_source_and_can_be_recorded(code: str) -> None:
    factor = TAXONOMY.factors[code]
    assert factor.code == code and factor.title and factor.source and factor.group in TAXONOMY.groups
    assert outcome_problems(TAXONOMY, "avoidable", [code], [], "2026-12-01") == []
    pack = rv.ReviewPack(pack_id="p", practice="B86001", locality="L01")
    recorded = outcome_record(TAXONOMY, pack, "avoidable", [code], [], "2026-12-01", "", 1)
    assert list(recorded.factors) == [code] and recorded.taxonomy_version == TAXONOMY.label


@pytest.mark.parametrize("code", VERDICTS)
def test_each_verdict_has_a_title_and_a_source_and_can_be_recorded(code: str) -> None:
    verdict = TAXONOMY.verdicts[code]
    assert verdict.title and verdict.source and verdict.code == code
    factors = ["access"] if verdict.avoidable else []
    assert outcome_problems(TAXONOMY, code, factors, [], "2026-12-01") == []


def test_only_avoidable_counts_as_avoidable() -> None:
    assert [c for c, v in TAXONOMY.verdicts.items() if v.avoidable] == ["avoidable"]


def test_an_outcome_names_what_is_wrong_with_it() -> None:
    problems = outcome_problems(TAXONOMY, "maybe", ["access", "bad_luck", "access"],
                                [rv.ReviewAction(text="", owner_org="B86001", due="2026-13-01"),
                                 rv.ReviewAction(text="Review inhaler technique", owner_org="")], "01/12/2026")
    text = "\n".join(problems)
    assert "unknown verdict 'maybe'" in text and "unknown contributory factor 'bad_luck'" in text
    assert "factors named twice: access" in text and "action 1 has no text" in text
    assert "action 1 due date '2026-13-01' is not a date" in text and "action 2 has no owner organisation" in text
    assert "conference date '01/12/2026' is not a date" in text
    assert outcome_problems(TAXONOMY, "avoidable", [], [], "2026-12-01") == [
        "an avoidable verdict needs at least one contributory factor"]


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('group = "team"\nsource = "Primary-care contributory factors framework: communication"',
     'group = "teamwork"\nsource = "Primary-care contributory factors framework: communication"',
     r"\[factors\.communication\]\.group names 'teamwork', which is not a group"),
    ('title = "Continuity of care"\n', '', r"\[factors\.continuity\]\.title is required"),
    ("[factors.medicines]", "[factors.Medicines]", r"\[factors\.Medicines\] is not a code"),
    ("avoidable = true", 'avoidable = "yes"', r"\[verdicts\.avoidable\]\.avoidable must be true or false"),
    ("version = 1", "version = 0", "version must be >= 1"),
    ('[groups.patient]\ntitle = "Patient factors"', '[groups.patient]\ntitle = "Patient factors"\ncolour = "red"',
     r"\[groups\.patient\]\.colour is an unknown key"),
])
def test_a_broken_copy_is_refused_naming_the_file_and_the_entry(tmp_path: Path, old: str, new: str,
                                                                 expected: str) -> None:
    assert_broken_copy_refused(PACKAGED, tmp_path / "taxonomy.toml", load_taxonomy, old, new, expected)


def reviewed(n: int, practice: str, locality: str, verdict: str, factors: list[str],
             ) -> tuple[list[rv.ReviewPack], dict[str, rv.ReviewOutcome]]:
    packs, outcomes = [], {}
    for i in range(n):
        pid = f"{practice}-{verdict}-{i}"
        packs.append(rv.ReviewPack(pack_id=pid, practice=practice, locality=locality))
        outcomes[pid] = rv.ReviewOutcome(pack_id=pid, verdict=verdict, factors=factors)
    return packs, outcomes


def test_learning_counts_factors_by_practice_locality_and_region_with_small_numbers_withheld() -> None:
    packs: list[rv.ReviewPack] = []
    outcomes: dict[str, rv.ReviewOutcome] = {}
    for n, practice, locality, verdict, factors in [(12, "A", "L1", "avoidable", ["access", "continuity"]),
                                                    (9, "B", "L1", "avoidable", ["access"]),
                                                    (3, "C", "L2", "anticipated", []),
                                                    (10, "D", "L2", "avoidable", ["access"])]:
        more_packs, more = reviewed(n, practice, locality, verdict, factors)
        packs += more_packs
        outcomes |= more
    packs.append(rv.ReviewPack(pack_id="no-outcome", practice="A", locality="L1"))  # not reviewed: not counted
    cells = {(c.unit, c.item): c for c in learning(TAXONOMY, packs, outcomes, 7)}
    assert cells[("region", "reviewed")].count == 34 and cells[("region", "factor:access")].count == 31
    assert cells[("practice:A", "factor:access")].count == 12 and cells[("locality:L1", "factor:access")].count == 21
    assert cells[("practice:A", "factor:continuity")].group == "organisation"
    # C's 3 reviews are withheld, and more cells so that they cannot be worked out from the totals
    assert cells[("practice:C", "reviewed")].withheld and cells[("practice:C", "verdict:anticipated")].withheld
    assert cells[("practice:C", "reviewed")].count == 0 and cells[("practice:C", "factor:access")].count == 0
    hierarchy = [("region", ["practice:A", "practice:B", "practice:C", "practice:D"]),
                 ("region", ["locality:L1", "locality:L2"]), ("locality:L1", ["practice:A", "practice:B"]),
                 ("locality:L2", ["practice:C", "practice:D"])]
    truth = {f"{i}|{u}": sum(1 for p in packs if p.pack_id in outcomes and _counted(p, outcomes[p.pack_id], u, i))
             for (u, i) in cells}
    hidden = {f"{i}|{u}" for (u, i), c in cells.items() if c.withheld}
    assert all(truth[f"{i}|{u}"] == c.count for (u, i), c in cells.items() if not c.withheld)
    verdicts = ["reviewed", *sorted({i for _, i in cells if i.startswith("verdict:")})]
    units = sorted({u for u, _ in cells})
    groups = [(f"{i}|{t}", [f"{i}|{m}" for m in ms]) for i in {i for _, i in cells} for t, ms in hierarchy]
    groups += [(f"reviewed|{u}", [f"{v}|{u}" for v in verdicts[1:]]) for u in units]
    assert not recoverable(truth, groups, hidden)
    assert learning(TAXONOMY, packs, {}, 7) == []


def _counted(pack: rv.ReviewPack, outcome: rv.ReviewOutcome, unit: str, item: str) -> bool:
    if unit not in ("region", f"practice:{pack.practice}", f"locality:{pack.locality}"):
        return False
    kind, _, code = item.partition(":")
    return kind == "reviewed" or (kind == "verdict" and outcome.verdict == code) or (
        kind == "factor" and code in outcome.factors)
