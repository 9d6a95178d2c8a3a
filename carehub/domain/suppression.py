"""Small-number suppression that also withholds enough other cells that a withheld count cannot be recovered.

Why: NHS England's statistical disclosure rule withholds counts of 1-7 so that individuals cannot be identified
(zero reveals no one, so it is published). Withholding only those cells (primary suppression) is not enough when
published figures add up: with a region total of 120 and every practice but one published, the missing practice is
120 minus the rest. So whenever a published total has exactly one withheld member, a second member is withheld
too (secondary suppression), and a withheld total always has at least one withheld member.

The guarantee, checked by :func:`recoverable`: for every group with a published total, either no member or at least
two members are withheld; for every group with a withheld total, at least one member is withheld. So no withheld
unit can be found by a subtraction (or a sum) from one group, nor by a chain of them. Groups are assumed exactly
additive; if they are not, differencing is harder, so the protection only errs on the safe side. The rule does not
reason about bounds (counts are >= 0). Solving many groups together (e.g. differencing two overlapping totals) can
defeat the one-group rule when groups overlap other than as a hierarchy; ``withheld(..., joint=True)`` also closes
that. For nested hierarchies (region -> localities -> practices) the tests show the one-group rule already suffices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

__all__ = ["DEFAULT_THRESHOLD", "Group", "determined", "recoverable", "withheld"]

#: Counts from 1 to this are withheld (NHS England small-number rule).
DEFAULT_THRESHOLD = 7

#: (total_unit, member_units): count(total_unit) == sum(count(m) for m in member_units).
Group = tuple[str, Sequence[str]]


def _checked_groups(cells: Mapping[str, int], groups: Sequence[Group]) -> list[tuple[str, list[str]]]:
    """Validate the groups and return them with duplicate members removed (order kept, for determinism)."""
    out: list[tuple[str, list[str]]] = []
    for total, members in groups:
        unique = list(dict.fromkeys(members))
        if not unique:
            raise ValueError(f"group {total!r} has no members; an empty group would publish its total as 0")
        if total in unique:
            raise ValueError(f"group {total!r} lists its total among its members")
        missing = [u for u in (total, *unique) if u not in cells]
        if missing:
            raise ValueError(f"group {total!r} refers to units with no count: {missing}")
        out.append((total, unique))
    return out


def _second_cell(cells: Mapping[str, int], members: Sequence[str], hidden: set[str]) -> str | None:
    """The published member whose withholding loses least: the smallest non-zero count, then a zero; ties by name.

    Why non-zero first: a withheld zero protects poorly, since the withheld pair then sums to the small count itself
    and zeros are often known anyway (a practice without the service); a larger partner widens what the pair hides.
    """
    published = [m for m in members if m not in hidden]
    nonzero = [m for m in published if cells[m] > 0]
    if nonzero:
        return min(nonzero, key=lambda m: (cells[m], m))
    return min(published) if published else None


def withheld(
    cells: Mapping[str, int], groups: Sequence[Group], threshold: int = DEFAULT_THRESHOLD, *, joint: bool = False
) -> set[str]:
    """Units to withhold from ``cells`` (unit -> count) so small counts are neither published nor recoverable.

    Primary: every unit with 1 <= count <= ``threshold`` (``threshold`` 0 disables suppression). Secondary, repeated
    until nothing changes (it only ever adds units, so it stops):

    * a group whose total is published and exactly one member withheld also withholds the published member with the
      smallest non-zero count (ties by unit name), else the published zero member first by name, and if the group
      has no other member (total == that one member) the total itself;
    * a group whose total is withheld and every member published withholds that same choice of member (the total
      is then one of two or more unknowns; the first rule supplies a second member if another group needs one).

    ``joint=True`` also guards against solving several groups together, e.g. the difference of two overlapping
    totals (a region and a primary-care network spanning localities): while some withheld unit is fixed by the
    groups' equations jointly (see :func:`determined`), withhold the smallest published unit that stops that, then
    re-apply the rules above. Not needed for a strict hierarchy, where the rules above already suffice.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    negative = sorted(u for u, c in cells.items() if c < 0)
    if negative:
        raise ValueError(f"counts must be >= 0; negative for {negative}")
    checked = _checked_groups(cells, groups)
    if threshold == 0:
        return set()
    hidden = {u for u, c in cells.items() if 1 <= c <= threshold}
    while True:
        _close_one_group_leaks(cells, checked, hidden)
        if not joint or not hidden:
            return hidden
        extra = _joint_fix(cells, checked, hidden)
        if extra is None:
            return hidden
        hidden.add(extra)


def _close_one_group_leaks(cells: Mapping[str, int], groups: Sequence[tuple[str, list[str]]], hidden: set[str]) -> None:
    """Apply the two secondary rules of :func:`withheld` to ``hidden`` in place until nothing changes."""
    changed = True
    while changed:
        changed = False
        for total, members in groups:
            n_hidden = sum(1 for m in members if m in hidden)
            if total not in hidden and n_hidden == 1:
                hidden.add(_second_cell(cells, members, hidden) or total)
                changed = True
            elif total in hidden and n_hidden == 0:
                extra = _second_cell(cells, members, hidden)
                assert extra is not None  # members is non-empty and none is hidden
                hidden.add(extra)
                changed = True


def _joint_fix(cells: Mapping[str, int], groups: Sequence[tuple[str, list[str]]], hidden: set[str]) -> str | None:
    """A published unit to withhold next because some withheld unit is jointly determined; None if none is.

    Greedy, not optimal (optimal cell suppression is NP-hard): for the first determined unit by name, the published
    unit with the smallest count (non-zero first, ties by name) whose withholding stops it being determined; if no
    single unit does, the smallest published unit sharing a group with it, else the smallest published unit of all.
    Each call adds a unit, so :func:`withheld` terminates.
    """
    system = _System(groups, hidden)
    fixed = sorted(u for u in hidden if system.solution(u) is not None)
    if not fixed:
        return None
    unit = fixed[0]
    weights = system.solution(unit)
    assert weights is not None
    in_groups = {u for total, members in groups for u in (total, *members)}
    candidates = sorted(in_groups - hidden, key=lambda u: (cells[u] == 0, cells[u], u))
    for candidate in candidates:
        if system.breaks(weights, candidate):
            return candidate
    near = {u for total, members in groups if unit == total or unit in members for u in (total, *members)}
    return next((u for u in candidates if u in near), candidates[0] if candidates else None)


class _System:
    """The groups' equations total - sum(members) = 0 restricted to the withheld units, in reduced row echelon form.

    Published units only move the right-hand side, so a withheld unit u is fixed iff e_u = y·A for some weights y on
    the equations (rows of A). Each reduced row remembers its weights, and equations that reduce to nothing give the
    left null space; exact rational arithmetic throughout.
    """

    def __init__(self, groups: Sequence[tuple[str, Sequence[str]]], hidden: set[str]) -> None:
        self.groups = groups
        names = sorted(hidden)
        self.col = {u: i for i, u in enumerate(names)}
        m = len(groups)
        self.basis: list[tuple[int, list[Fraction], list[Fraction]]] = []  # (pivot column, row, weights)
        self.null: list[list[Fraction]] = []  # weight vectors z with z·A = 0
        for i in range(m):
            row = [Fraction(0)] * len(names)
            for unit, coefficient in self._coefficients(i).items():
                if unit in self.col:
                    row[self.col[unit]] = Fraction(coefficient)
            weights = [Fraction(int(j == i)) for j in range(m)]
            row, weights = self._eliminate(row, weights)
            lead = next((j for j, x in enumerate(row) if x), None)
            if lead is None:
                self.null.append(weights)
                continue
            scale = row[lead]
            row, weights = [x / scale for x in row], [w / scale for w in weights]
            self.basis = [
                (p, _axpy(-prow[lead], row, prow), _axpy(-prow[lead], weights, pw)) for p, prow, pw in self.basis
            ]
            self.basis.append((lead, row, weights))

    def _coefficients(self, i: int) -> dict[str, int]:
        total, members = self.groups[i]
        out = dict.fromkeys(dict.fromkeys(members), -1)
        out[total] = 1
        return out

    def _eliminate(self, row: list[Fraction], weights: list[Fraction]) -> tuple[list[Fraction], list[Fraction]]:
        for pivot, prow, pweights in self.basis:
            if row[pivot]:
                factor = row[pivot]
                row, weights = _axpy(-factor, prow, row), _axpy(-factor, pweights, weights)
        return row, weights

    def solution(self, unit: str) -> list[Fraction] | None:
        """Weights y with y·A = e_unit if the withheld ``unit`` is determined, else None."""
        e = [Fraction(0)] * len(self.col)
        e[self.col[unit]] = Fraction(1)
        y = [Fraction(0)] * len(self.groups)
        for pivot, prow, pweights in self.basis:
            if e[pivot]:
                factor = e[pivot]
                e, y = _axpy(-factor, prow, e), _axpy(factor, pweights, y)
        return None if any(e) else y

    def breaks(self, weights: list[Fraction], candidate: str) -> bool:
        """Whether also withholding the published ``candidate`` leaves the unit solved by ``weights`` undetermined.

        The new column a holds the candidate's coefficient in each equation. The unit stays determined iff some
        solution y + z (z in the left null space) has (y + z)·a = 0, which is possible unless y·a != 0 and z·a = 0
        for every z.
        """
        a = [Fraction(self._coefficients(i).get(candidate, 0)) for i in range(len(self.groups))]
        return _dot(weights, a) != 0 and all(_dot(z, a) == 0 for z in self.null)


def _dot(x: list[Fraction], y: list[Fraction]) -> Fraction:
    return sum((xi * yi for xi, yi in zip(x, y, strict=True)), Fraction(0))


def _axpy(factor: Fraction, x: list[Fraction], y: list[Fraction]) -> list[Fraction]:
    """factor * x + y."""
    return [factor * xi + yi for xi, yi in zip(x, y, strict=True)]


def determined(groups: Sequence[Group], hidden: set[str]) -> set[str]:
    """Withheld units whose value follows from all the groups' equations solved together (exact linear algebra).

    Stronger than :func:`recoverable`, which follows one group at a time. Bounds from counts being >= 0 are not
    considered.
    """
    system = _System([(total, list(members)) for total, members in groups], hidden)
    return {u for u in hidden if system.solution(u) is not None}


def recoverable(cells: Mapping[str, int], groups: Sequence[Group], withheld: set[str]) -> set[str]:
    """Withheld units a reader could work out exactly from the published figures, one group at a time.

    A member is recoverable when its group's total is known and it is the only unknown member (total minus the
    rest); a total is recoverable when all its members are known (their sum). Recovered units count as known for
    further groups, so chains of such steps are followed to the end.
    """
    checked = _checked_groups(cells, groups)
    unknown = set(withheld)
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for total, members in checked:
            hidden = [m for m in members if m in unknown]
            target: str | None = None
            if total not in unknown and len(hidden) == 1:
                target = hidden[0]  # total minus the published members
            elif total in unknown and not hidden:
                target = total  # sum of the members
            if target is not None:
                unknown.discard(target)
                found.add(target)
                changed = True
    return found
