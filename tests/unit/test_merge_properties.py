"""Random merge and un-merge sequences over the identity tables equal a replay from scratch.

The log: records arriving (each a new person; before any merge, also records at another
organisation linked to the person of an RR8 record), A40 merges (the person of the prior record
joined into the person of the surviving record, as they are when the A40 comes) and un-merges,
chained and in any order, including merges of two records of one person and un-merges of what
was never merged or is undone already (both change nothing). After every step, whether the step
acted, the (org, local id) -> person assignment, each person's members and the redirects must
equal those of ``Reference``: every record with the person it arrived with, redirected by the
joins still in force. So an un-merge undoes exactly its own merge, whatever came between.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.identity.merges import merge, unmerge
from services.identity.table_store import TABLES, TableStore

ORG = "RR8"
RECORDS = [f"H-{i}" for i in range(4)]  # at RR8, where the merges are
OTHER_ORG = "LA01"  # records linked to an RR8 record's person before any merge


@dataclass(frozen=True)
class Op:
    kind: str  # "arrive", "link" (an OTHER_ORG record joining the person of an RR8 record), "merge", "unmerge"
    record: str  # the arriving record, or the surviving record of a merge
    other: str = ""  # the prior (retired) record of a merge, or the RR8 record a linked record joins


def fresh_person(org: str, local_id: str) -> str:
    return f"p-{org}-{local_id}"


class Reference:
    """The meaning of the log, from scratch: each record keeps the person it arrived with, and the
    joins in force (absorbed person -> survivor, the latest under each prior record undone first)
    redirect persons. Nothing is moved; a record's person is where its own person's joins lead."""

    def __init__(self) -> None:
        self.origin: dict[str, str] = {}
        self.joins: dict[str, list[tuple[str, str]]] = {}  # prior record -> [(absorbed, survivor)], in force

    def resolve(self, person: str) -> str:
        into = {absorbed: survivor for stack in self.joins.values() for absorbed, survivor in stack}
        while person in into:
            person = into[person]
        return person

    def person(self, record: str) -> str | None:
        origin = self.origin.get(record)
        return None if origin is None else self.resolve(origin)

    def step(self, op: Op) -> bool:
        if op.kind == "arrive":
            self.origin.setdefault(f"{ORG}/{op.record}", fresh_person(ORG, op.record))
            return False
        if op.kind == "link":
            person = self.person(f"{ORG}/{op.other}")
            if person is not None:
                self.origin.setdefault(f"{OTHER_ORG}/{op.record}", person)
            return False
        survivor, prior = self.person(f"{ORG}/{op.record}"), self.person(f"{ORG}/{op.other}")
        if survivor is None or prior is None:
            return False
        stack = self.joins.setdefault(op.other, [])
        if op.kind == "merge":
            if prior == survivor:
                return False
            stack.append((prior, survivor))
            return True
        if not stack or self.resolve(stack[-1][1]) != survivor:
            return False
        stack.pop()
        return True

    def assignment(self) -> dict[str, str]:
        return {record: self.resolve(origin) for record, origin in self.origin.items()}


SEQUENCE = itertools.count()  # each un-merge's position in the linkage log, under which it is journalled


def step(store: TableStore, op: Op) -> bool:
    """Apply one step of the log to the identity tables; whether a merge or un-merge acted."""
    if op.kind == "arrive":
        if store.local_person(ORG, op.record) is None:
            store.set_local_person(ORG, op.record, fresh_person(ORG, op.record))
        return False
    if op.kind == "link":
        person = store.local_person(ORG, op.other)
        if person is not None and store.local_person(OTHER_ORG, op.record) is None:
            store.set_local_person(OTHER_ORG, op.record, store.resolve(person))
        return False
    survivor = store.local_person(ORG, op.record)
    if survivor is None or store.local_person(ORG, op.other) is None:
        return False  # a merge naming an unknown prior record is not generated (see the README)
    if op.kind == "unmerge":
        return unmerge(store, ORG, survivor, op.other, next(SEQUENCE)).merge is not None
    return merge(store, ORG, survivor, op.other).merge is not None


def assignment(store: TableStore, records: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for record in records:
        person = store.local_person(*record.split("/", 1))
        assert person is not None
        out[record] = person
    return out


links = st.builds(Op, st.just("link"), st.sampled_from([f"C-{i}" for i in range(4)]), st.sampled_from(RECORDS))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.sampled_from(RECORDS)), st.lists(links, max_size=4), st.data())
def test_random_merges_and_unmerges_equal_a_replay_from_scratch(
        late: set[str], linked: list[Op], data: st.DataObject) -> None:
    store, reference = TableStore({name: {} for name in TABLES}), Reference()
    first = [Op("arrive", record) for record in RECORDS if record not in late]  # the others arrive later
    merged: list[str] = []  # prior records of the merges so far: un-merges mostly name one of them
    for n in range(len(first) + len(linked) + data.draw(st.integers(0, 30))):
        if n < len(first) + len(linked):
            op = (first + linked)[n]
        else:
            kind = data.draw(st.sampled_from(["arrive", "merge", "merge", "unmerge", "unmerge"]))
            prior = data.draw(st.sampled_from(merged if kind == "unmerge" and merged else RECORDS))
            op = Op(kind, data.draw(st.sampled_from(RECORDS)), prior)
            merged += [prior] if kind == "merge" else []
        assert step(store, op) == reference.step(op), (n, op)
        want = reference.assignment()
        assert assignment(store, want) == want, (n, op)
        persons = {fresh_person(*record.split("/", 1)) for record in want if record.startswith(ORG)}
        assert {p: store.resolve(p) for p in persons} == {p: reference.resolve(p) for p in persons}
        for person in set(want.values()):
            assert sorted(store.members(person)) == sorted(r for r, p in want.items() if p == person)


def test_chained_merges_undone_in_any_order() -> None:
    log = [Op("arrive", "H-0"), Op("arrive", "H-1"), Op("arrive", "H-2"),
           Op("merge", "H-1", "H-0"), Op("merge", "H-2", "H-1")]  # A into B, then B into C
    for order in ([Op("unmerge", "H-1", "H-0"), Op("unmerge", "H-2", "H-1")],
                  [Op("unmerge", "H-2", "H-1"), Op("unmerge", "H-1", "H-0")]):
        store = TableStore({name: {} for name in TABLES})
        assert [step(store, op) for op in log + order] == [False] * 3 + [True] * 4
        assert [store.local_person(ORG, r) for r in RECORDS[:3]] == [fresh_person(ORG, r) for r in RECORDS[:3]]
        assert not any(store.merge_record(key) for key in (f"{ORG}/H-0", f"{ORG}/H-1", "~p-RR8-H-0", "~p-RR8-H-1"))
