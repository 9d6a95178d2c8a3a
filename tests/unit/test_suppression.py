from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from fractions import Fraction

import pytest

from services.indicators import suppression
from services.indicators.suppression import Group, determined, recoverable, withheld


def test_small_counts_are_withheld_and_a_second_member_protects_them() -> None:
    cells = {"region": 120, "practice:A": 5, "practice:B": 50, "practice:C": 65}
    groups: list[Group] = [("region", ["practice:A", "practice:B", "practice:C"])]
    assert recoverable(cells, groups, {"practice:A"}) == {"practice:A"}  # primary alone leaks: 120 - 50 - 65
    hidden = withheld(cells, groups)
    assert hidden == {"practice:A", "practice:B"}  # B: the smallest other non-zero member
    assert recoverable(cells, groups, hidden) == set()


def test_ties_are_broken_by_unit_name_and_order_of_input_does_not_matter() -> None:
    cells = {"T": 105, "c": 50, "b": 50, "a": 5}
    groups: list[Group] = [("T", ["c", "b", "a"])]
    assert withheld(cells, groups) == {"a", "b"}
    assert withheld(dict(reversed(cells.items())), [("T", ["a", "b", "c"])]) == {"a", "b"}


def test_zero_is_never_primary_and_threshold_bounds_are_inclusive() -> None:
    cells = {"T": 7 + 8 + 0 + 1, "a": 7, "b": 8, "z": 0, "one": 1}
    groups: list[Group] = [("T", ["a", "b", "z", "one"])]
    assert withheld(cells, groups) == {"a", "one"}  # two withheld members already: no secondary needed
    assert withheld(cells, groups, threshold=8) == {"a", "b", "one"}
    assert withheld(cells, groups, threshold=0) == set()  # 0 disables suppression entirely
    assert withheld({"T": 0, "a": 0, "b": 0}, [("T", ["a", "b"])]) == set()


def test_zero_member_is_used_only_when_no_published_member_is_non_zero() -> None:
    # A (55) is withheld to protect S in G1; in G2 the only other member is a zero, so the zero is withheld.
    cells = {"T1": 60, "S": 5, "A": 55, "T2": 55, "Z": 0}
    groups: list[Group] = [("T1", ["S", "A"]), ("T2", ["A", "Z"])]
    assert withheld(cells, groups) == {"S", "A", "Z"}


def test_single_member_group_withholds_its_total() -> None:
    cells = {"T1": 60, "S": 5, "A": 55, "T2": 55}
    groups: list[Group] = [("T1", ["S", "A"]), ("T2", ["A"])]
    assert withheld(cells, groups) == {"S", "A", "T2"}


def test_withheld_total_with_all_members_published_gets_a_withheld_member() -> None:
    # L1 is small; protecting it in the region withholds L2, whose practices would add up to it, so P3 goes too.
    cells = {"region": 100, "L1": 5, "L2": 95, "P3": 40, "P4": 55}
    groups: list[Group] = [("region", ["L1", "L2"]), ("L2", ["P3", "P4"])]
    assert recoverable(cells, groups, {"L1", "L2"}) == {"L1", "L2"}  # L2 = P3 + P4, then L1 = region - L2
    hidden = withheld(cells, groups)
    assert hidden == {"L1", "L2", "P3"}
    assert recoverable(cells, groups, hidden) == set()


def test_recoverable_one_step_rules() -> None:
    cells = {"T": 10, "a": 3, "b": 3, "c": 4}
    groups: list[Group] = [("T", ["a", "b", "c"])]
    assert recoverable(cells, groups, {"a"}) == {"a"}
    assert recoverable(cells, groups, {"a", "b"}) == set()
    assert recoverable(cells, groups, {"T"}) == {"T"}
    assert recoverable(cells, groups, {"T", "a"}) == set()
    assert recoverable(cells, groups, set()) == set()


@pytest.mark.parametrize(
    ("cells", "groups", "threshold", "message"),
    [
        ({"T": 3, "a": 3}, [("T", ["a"])], -1, "threshold"),
        ({"T": 3, "a": -3}, [("T", ["a"])], 7, "negative"),
        ({"T": 3}, [("T", ["a"])], 7, "no count"),
        ({"T": 3}, [("T", [])], 7, "no members"),
        ({"T": 3, "a": 3}, [("T", ["a", "T"])], 7, "its total"),
    ],
)
def test_invalid_input_raises(cells: dict[str, int], groups: list[Group], threshold: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        withheld(cells, groups, threshold)


def random_hierarchy(rng: random.Random) -> tuple[dict[str, int], list[Group], list[str]]:
    """region -> localities -> practices with many small counts and some zeros; groups as the brief describes."""
    cells: dict[str, int] = {}
    localities: list[str] = []
    practices: list[str] = []
    by_locality: dict[str, list[str]] = {}
    for li in range(rng.randint(1, 6)):
        loc = f"locality:L{li}"
        localities.append(loc)
        members = [f"practice:L{li}P{pi}" for pi in range(rng.randint(1, 7))]
        for p in members:
            roll = rng.random()
            cells[p] = 0 if roll < 0.15 else rng.randint(1, 9) if roll < 0.6 else rng.randint(10, 400)
        by_locality[loc] = members
        cells[loc] = sum(cells[p] for p in members)
        practices.extend(members)
    cells["region"] = sum(cells[loc] for loc in localities)
    groups: list[Group] = [("region", practices), ("region", localities)]
    groups.extend((loc, by_locality[loc]) for loc in localities)
    return cells, groups, practices


def linearly_determined(groups: Sequence[Group], hidden: set[str]) -> set[str]:
    """Withheld units fixed by solving all the groups' equations together (exact rational Gaussian elimination).

    Stronger than ``recoverable``: unit u is determined iff e_u lies in the row space of the equations restricted
    to the withheld units (published units only move the right-hand side).
    """
    names = sorted(hidden)
    col = {u: i for i, u in enumerate(names)}
    rows: list[list[Fraction]] = []
    for total, members in groups:
        row = [Fraction(0)] * len(names)
        if total in hidden:
            row[col[total]] += 1
        for m in members:
            if m in hidden:
                row[col[m]] -= 1
        if any(row):
            rows.append(row)
    pivots: list[tuple[int, list[Fraction]]] = []  # reduced rows, each with a leading 1 in its pivot column
    for row in rows:
        for c, prow in pivots:
            if row[c]:
                factor = row[c]
                row = [x - factor * y for x, y in zip(row, prow, strict=True)]
        lead = next((i for i, x in enumerate(row) if x), None)
        if lead is not None:
            scale = row[lead]
            row = [x / scale for x in row]
            pivots = [(c, [x - p[lead] * y for x, y in zip(p, row, strict=True)]) for c, p in pivots]
            pivots.append((lead, row))
    found: set[str] = set()
    for u in names:
        v = [Fraction(0)] * len(names)
        v[col[u]] = Fraction(1)
        for c, prow in pivots:
            if v[c]:
                factor = v[c]
                v = [x - factor * y for x, y in zip(v, prow, strict=True)]
        if not any(v):
            found.add(u)
    return found


def test_linear_audit_detects_what_it_should() -> None:
    groups: list[Group] = [("T", ["a", "b"]), ("U", ["a", "c"]), ("V", ["b", "c"])]
    assert linearly_determined(groups, {"a", "b", "c"}) == {"a", "b", "c"}  # three equations, three unknowns
    assert linearly_determined([("T", ["a", "b"])], {"a", "b"}) == set()
    assert linearly_determined([("T", ["a", "b"]), ("a", ["c", "d"])], {"T", "a", "c"}) == set()


def assert_protected(cells: Mapping[str, int], groups: Sequence[Group], hidden: set[str], threshold: int) -> None:
    assert hidden <= set(cells)
    assert recoverable(cells, groups, hidden) == set()
    if threshold:
        assert not [u for u, c in cells.items() if 1 <= c <= threshold and u not in hidden]


@pytest.mark.parametrize("threshold", [7, 3, 10])
def test_random_hierarchies_leak_nothing(threshold: int) -> None:
    suppressed = 0
    for seed in range(500):
        rng = random.Random(seed * 31 + threshold)
        cells, groups, _ = random_hierarchy(rng)
        hidden = withheld(cells, groups, threshold)
        assert_protected(cells, groups, hidden, threshold)
        # Nested hierarchies are also safe against solving all the equations together.
        assert linearly_determined(groups, hidden) == set(), (seed, cells, sorted(hidden))
        reordered = list(reversed(groups))  # the choice of secondaries may depend on order; the guarantee must not
        assert_protected(cells, reordered, withheld(cells, reordered, threshold), threshold)
        suppressed += bool(hidden - {u for u, c in cells.items() if 1 <= c <= threshold})
    assert suppressed > 100  # the secondary rules were really exercised


def test_random_overlapping_groups_have_no_one_step_leak() -> None:
    # Add cross-cutting groups (e.g. primary-care networks spanning localities): the one-group guarantee still holds.
    for seed in range(500):
        rng = random.Random(10_000 + seed)
        cells, groups, practices = random_hierarchy(rng)
        for k in range(rng.randint(0, 3)):
            members = rng.sample(practices, rng.randint(1, len(practices)))
            cells[f"pcn:N{k}"] = sum(cells[p] for p in members)
            groups.append((f"pcn:N{k}", members))
        assert_protected(cells, groups, withheld(cells, groups), 7)


def test_joint_mode_closes_a_difference_between_overlapping_totals() -> None:
    # pcn covers A, B, C of the region's A..D. The one-group rule hides A (3), then D (smallest in the region) and B
    # (smallest in the pcn) -- but region - pcn = D, so D is exposed by a difference of two published totals.
    cells = {"region": 153, "pcn": 113, "A": 3, "B": 50, "C": 60, "D": 40}
    groups: list[Group] = [("region", ["A", "B", "C", "D"]), ("pcn", ["A", "B", "C"])]
    simple = withheld(cells, groups)
    assert simple == {"A", "B", "D"} and recoverable(cells, groups, simple) == set()
    assert determined(groups, simple) == linearly_determined(groups, simple) == {"D"}
    joint = withheld(cells, groups, joint=True)
    assert joint == {"A", "B", "D", "pcn"}  # C would not help (it is in both totals); withholding pcn does
    assert determined(groups, joint) == linearly_determined(groups, joint) == set()


def test_joint_mode_leaves_random_overlapping_groups_with_nothing_determined() -> None:
    leaks_without_joint = 0
    for seed in range(200):
        rng = random.Random(20_000 + seed)
        cells, groups, practices = random_hierarchy(rng)
        for k in range(rng.randint(1, 3)):
            members = rng.sample(practices, rng.randint(1, len(practices)))
            cells[f"pcn:N{k}"] = sum(cells[p] for p in members)
            groups.append((f"pcn:N{k}", members))
        simple = withheld(cells, groups)
        leaks_without_joint += bool(linearly_determined(groups, simple))
        joint = withheld(cells, groups, joint=True)
        assert joint >= simple
        assert_protected(cells, groups, joint, 7)
        assert linearly_determined(groups, joint) == set(), (seed, cells, sorted(joint))
    assert leaks_without_joint > 20  # the overlapping case is real, so the joint mode is doing work


def test_joint_mode_candidate_test_matches_brute_force() -> None:
    # _System.breaks decides, without re-solving, whether withholding one more unit un-determines a unit.
    checks = 0
    for seed in range(60):
        rng = random.Random(30_000 + seed)
        cells, groups, practices = random_hierarchy(rng)
        for k in range(rng.randint(1, 3)):
            members = rng.sample(practices, rng.randint(1, len(practices)))
            cells[f"pcn:N{k}"] = sum(cells[p] for p in members)
            groups.append((f"pcn:N{k}", members))
        hidden = withheld(cells, groups)
        system = suppression._System(groups, hidden)
        for unit in sorted(linearly_determined(groups, hidden)):
            weights = system.solution(unit)
            assert weights is not None
            for candidate in sorted(set(cells) - hidden):
                checks += 1
                expected = unit not in linearly_determined(groups, hidden | {candidate})
                assert system.breaks(weights, candidate) == expected, (seed, unit, candidate)
    assert checks > 100


def test_threshold_zero_publishes_everything_in_random_hierarchies() -> None:
    for seed in range(50):
        cells, groups, _ = random_hierarchy(random.Random(seed))
        assert withheld(cells, groups, 0) == set()
