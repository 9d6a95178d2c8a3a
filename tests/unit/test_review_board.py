"""The gateway's review board: a practice gets its own packs only, with their latest outcome, and
a change reaches the watchers of the practice it concerns and no other (random boards)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from carehub.v1 import review_pb2 as rv
from services.gateway.logs import ReviewBoard

PRACTICES = ("B86001", "B86002", "B86003")
packs = st.lists(st.tuples(st.integers(0, 30), st.sampled_from(PRACTICES), st.booleans(), st.integers(0, 5)),
                 max_size=60)


@settings(max_examples=150, deadline=None)
@given(packs)
def test_a_practice_reads_and_is_told_of_its_own_packs_only(items: list[tuple[int, str, bool, int]]) -> None:
    board = ReviewBoard()
    queues = {org: board.watch(org) for org in PRACTICES}
    practice_of: dict[str, str] = {}
    for n, practice, record, when in items:
        pid = f"pk{n}"
        for queue in queues.values():
            while not queue.empty():
                queue.get_nowait()
        before = practice_of.get(pid)
        board.put_pack(pid, rv.ReviewPack(pack_id=pid, practice=practice))
        practice_of[pid] = practice
        told = {org for org, queue in queues.items() if not queue.empty()}
        assert told == {practice} | ({before} if before else set())
        if record:
            outcome = rv.ReviewOutcome(pack_id=pid, practice=practice, verdict=f"v{when}")
            outcome.recorded_at.FromSeconds(when)
            board.put_outcome(outcome)
    for org in PRACTICES:
        mine = board.of(org)
        assert {p.pack_id for p in mine} == {pid for pid, practice in practice_of.items() if practice == org}
        assert all(p.practice == org for p in mine)
        for pack in mine:
            held = board.outcomes.get(pack.pack_id)
            assert pack.HasField("outcome") == (held is not None)
            assert not pack.HasField("outcome") or pack.outcome.verdict == held.verdict  # type: ignore[union-attr]
        assert all(not p.HasField("outcome") for p in board.of(org, without_outcome=True))


def test_the_latest_outcome_wins_and_a_withdrawn_pack_is_gone() -> None:
    board = ReviewBoard()
    board.put_pack("pk", rv.ReviewPack(pack_id="pk", practice="B86001"))
    for seconds, verdict in ((20, "avoidable"), (10, "anticipated")):  # the older one arrives last
        outcome = rv.ReviewOutcome(pack_id="pk", verdict=verdict)
        outcome.recorded_at.FromSeconds(seconds)
        board.put_outcome(outcome)
    assert board.of("B86001")[0].outcome.verdict == "avoidable"
    board.put_pack("pk", None)
    assert board.of("B86001") == []
