"""Case-finding lists: who is on which organisation's list, under which record id, new or not.

Pure logic (carehub/domain/caselists.py) over published assessments: membership by registered
practice and by community or social-care involvement, consent (a direct-care opt-out keeps a
person off every list, a planning opt-out only out of the population the cut-offs are made
over), "new this week", care plans, and that an organisation's list names people only in its
own record ids.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carehub.domain.caselists import (
    CaseBook,
    care_plan_status,
    counted,
    is_new,
    listed_tiers,
    memberships,
    only_new,
    without_time,
)
from carehub.domain.risk import load_model
from carehub.domain.timeline import DAY_NS
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import risk_pb2 as rk
from carehub.v1 import timeline_pb2 as tl

MODEL = load_model()
T0 = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 1, tzinfo=UTC)
GP, GP_2, COMMUNITY, SOCIAL, HOSPITAL = "B86001", "B86002", "COM1", "LA1", "RR8"
SECTORS = {GP: ce.SECTOR_PRIMARY_CARE, GP_2: ce.SECTOR_PRIMARY_CARE, COMMUNITY: ce.SECTOR_COMMUNITY,
           SOCIAL: ce.SECTOR_SOCIAL_CARE, HOSPITAL: ce.SECTOR_ACUTE}


def ts(moment: datetime) -> int:
    return int(moment.timestamp()) * 10**9


def record(person: str, score: float, *, practice: str = GP, orgs: tuple[str, ...] = (GP,), seen: datetime = T0,
           as_of: datetime = T0, direct_care_opt_out: bool = False, planning_opt_out: bool = False,
           deceased: bool = False) -> rk.RiskAssessment:
    """An assessment as the population stage publishes it: the person known at ``orgs`` as ``<org>-<person>``."""
    out = rk.RiskAssessment(person_id=person, model=MODEL.label, digest=MODEL.digest, score=score, risk=0.1,
                            segment="complex", registered_practice=practice,
                            factors=[rk.RiskFactor(factor="emergency_admissions", value=2, points=1.5, scored=True)],
                            direct_care_opt_out=direct_care_opt_out, planning_opt_out=planning_opt_out,
                            deceased=deceased)
    out.as_of.FromDatetime(as_of)
    for org in orgs:
        out.local_records.add(org=org, local_id=f"{org}-{person}")
        involvement = out.involvement[org]
        involvement.sector = SECTORS[org]
        involvement.last_event_at.FromDatetime(seen)
    return out


def population(n: int, top: dict[str, float] | None = None, as_of: datetime = T0) -> CaseBook:
    """``n`` people scoring 0, and those of ``top`` with their scores: enough for the tiers' shares."""
    book = CaseBook(MODEL)
    for i in range(n):
        book.put(f"p{i}", record(f"p{i}", 0.0, as_of=as_of))
    for person, score in (top or {}).items():
        book.put(person, record(person, score, orgs=(GP, COMMUNITY, SOCIAL, HOSPITAL), as_of=as_of))
    return book


def test_the_top_two_tiers_are_listed_by_default_never_the_last() -> None:
    assert listed_tiers(MODEL) == ("very_high", "high")
    assert listed_tiers(MODEL, 3) == ("very_high", "high", "moderate")
    assert listed_tiers(MODEL, 9) == ("very_high", "high", "moderate")  # "low" takes everyone left


def test_a_practice_lists_its_registered_people_and_a_team_those_it_has_seen() -> None:
    person = record("p1", 5.0, orgs=(GP, COMMUNITY, SOCIAL, HOSPITAL), seen=NOW - timedelta(days=30))
    clock = ts(NOW)
    got = {(m.org, m.role, m.local_id) for m in memberships(person, clock, 365)}
    assert got == {(GP, "registered_practice", f"{GP}-p1"), (COMMUNITY, "community", f"{COMMUNITY}-p1"),
                   (SOCIAL, "social_care", f"{SOCIAL}-p1")}  # the hospital has no list
    # a team that has not seen the person within the window no longer serves them
    assert {m.org for m in memberships(person, clock + 400 * DAY_NS, 365)} == {GP}
    assert {m.org for m in memberships(person, clock, 20)} == {GP}


def test_an_organisation_without_its_own_record_for_the_person_does_not_list_them() -> None:
    person = record("p1", 5.0, practice=GP_2, orgs=(GP, SOCIAL))  # registered at GP_2, known only to GP
    assert {m.org for m in memberships(person, ts(T0), 365)} == {SOCIAL}


def test_a_direct_care_opt_out_or_a_death_keeps_a_person_off_every_list() -> None:
    for opted_out, died in ((True, False), (False, True)):
        person = record("p1", 9.0, orgs=(GP, COMMUNITY, SOCIAL), direct_care_opt_out=opted_out, deceased=died)
        assert memberships(person, ts(T0), 365) == []
        book = population(100, {"p1": 9.0})
        book.put("p1", person)
        assert book.lists(NOW) == {}


def test_a_planning_opt_out_leaves_the_population_figures_but_not_the_practice_list() -> None:
    book = population(100, {"top": 9.0, "private": 6.0})
    book.put("private", record("private", 6.0, orgs=(GP,), planning_opt_out=True))
    assert not counted(book.people["private"])
    cutoffs = book.recompute_cutoffs()
    assert cutoffs.population == 101  # everyone but her
    lists = book.lists(NOW)
    assert [e.local_id for e in lists[GP].entries] == [f"{GP}-top", f"{GP}-private"]


def test_lists_hold_the_top_tiers_highest_score_first_with_the_factors_behind_each() -> None:
    # 200 people: the very high tier holds 1 (0.5%), very high and high together 10 (5%)
    scores = {f"t{i}": 10.0 - i * 0.5 for i in range(12)}
    book = population(188, scores)
    lists = book.lists(NOW)
    assert set(lists) == {GP, COMMUNITY, SOCIAL}
    practice = lists[GP]
    assert practice.tiers == ["very_high", "high"]
    assert [e.local_id for e in practice.entries] == [f"{GP}-t{i}" for i in range(10)]
    assert [e.tier for e in practice.entries] == ["very_high"] + ["high"] * 9
    assert [e.score for e in practice.entries] == sorted((e.score for e in practice.entries), reverse=True)
    first = practice.entries[0]
    assert (first.role, first.segment, first.factors[0].factor) == ("registered_practice", "complex",
                                                                     "emergency_admissions")
    assert practice.cutoffs.population == 200 and practice.model == MODEL.label
    assert [e.role for e in lists[SOCIAL].entries] == ["social_care"] * 10
    assert all(e.local_id.startswith(f"{SOCIAL}-") for e in lists[SOCIAL].entries)


def test_new_this_week_counts_from_when_a_person_entered_the_list() -> None:
    assert is_new(ts(NOW), ts(NOW)) and is_new(ts(NOW - timedelta(days=6, hours=23)), ts(NOW))
    assert not is_new(ts(NOW - timedelta(days=7)), ts(NOW))
    book = population(100, {"a": 9.0}, as_of=T0)
    [entry] = book.lists(NOW)[GP].entries
    assert entry.new_this_week and entry.listed_since.ToDatetime(tzinfo=UTC) == NOW  # when the list first showed a
    assert book.next_flip_ns == ts(NOW + timedelta(days=7))
    later = NOW + timedelta(days=8)
    book.put("b", record("b", 8.0, as_of=T0 + timedelta(days=8)))  # b enters a week and a day later
    lists = book.lists(later)
    assert [(e.local_id, e.new_this_week) for e in lists[GP].entries] == [(f"{GP}-a", False), (f"{GP}-b", True)]
    assert lists[GP].new_this_week == 1 and book.next_flip_ns == ts(later + timedelta(days=7))
    assert [e.local_id for e in only_new(lists[GP]).entries] == [f"{GP}-b"]
    # a leaves the list and comes back: new again, from its return
    book.put("a", record("a", 0.0, as_of=T0 + timedelta(days=8)))
    assert [e.local_id for e in book.lists(later)[GP].entries] == [f"{GP}-b"]
    book.put("a", record("a", 9.0, as_of=T0 + timedelta(days=9)))
    back = later + timedelta(days=1)
    again = {e.local_id: e for e in book.lists(back)[GP].entries}[f"{GP}-a"]
    assert again.new_this_week and again.listed_since.ToDatetime(tzinfo=UTC) == back


def test_a_restarted_service_keeps_when_each_person_entered_from_the_published_lists() -> None:
    book = population(100, {"a": 9.0}, as_of=T0)
    published = book.lists(NOW)
    restarted = population(100, {"a": 9.0}, as_of=T0 + timedelta(days=10))
    restarted.seed(published.values())
    [entry] = restarted.lists(NOW + timedelta(days=10))[GP].entries
    assert entry.listed_since.ToDatetime(tzinfo=UTC) == NOW and not entry.new_this_week


def plan(person: rk.RiskAssessment, owner: str, day: int, review_due: str = "", **kw: object) -> None:
    """``owner``'s plan for the person, its latest event ``day`` days after T0."""
    person.care_plans[owner].CopyFrom(tl.CarePlan(event_id=f"cp-{owner}", owner_org=owner, source_org=owner,
                                                  review_due=review_due, **kw))  # type: ignore[arg-type]
    person.care_plans[owner].at.FromDatetime(T0 + timedelta(days=day))


def test_care_plans_are_recorded_or_unknown_the_latest_shown() -> None:
    person = record("p1", 9.0)
    assert care_plan_status(person, ts(NOW)).presence == rk.CARE_PLAN_PRESENCE_UNKNOWN
    for org, day in ((SOCIAL, 3), (COMMUNITY, 9), (GP, 5)):
        plan(person, org, day)
    status = care_plan_status(person, ts(NOW))
    assert (status.presence, status.org) == (rk.CARE_PLAN_PRESENCE_RECORDED, COMMUNITY)
    assert status.recorded_at.ToDatetime(tzinfo=UTC) == T0 + timedelta(days=9)
    assert not status.HasField("due") and not status.overdue  # no review date sent: due unknown


def test_the_due_date_comes_from_the_plan_and_it_is_overdue_once_that_day_has_passed() -> None:
    person = record("p1", 9.0)
    plan(person, SOCIAL, 3, "2026-12-01", contact_role="care coordinator", segment="frail")
    status = care_plan_status(person, ts(datetime(2026, 12, 1, 23, 59, tzinfo=UTC)))
    assert status.due.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 1, tzinfo=UTC) and not status.overdue  # due today
    assert (status.org, status.contact_role, status.segment) == (SOCIAL, "care coordinator", "frail")
    assert care_plan_status(person, ts(datetime(2026, 12, 2, tzinfo=UTC))).overdue  # the whole day has passed
    for kept in ("not a date", "2026-02-30", "2026-W48-1"):  # past ingest somehow: due unknown, no failure
        plan(person, SOCIAL, 3, kept)
        assert not care_plan_status(person, ts(NOW)).HasField("due")


def test_an_owner_sees_its_own_plan_on_its_list_even_when_another_is_newer() -> None:
    person = record("p1", 9.0)
    plan(person, SOCIAL, 3, "2026-11-01")
    plan(person, COMMUNITY, 9, "2027-03-01")
    assert care_plan_status(person, ts(NOW)).org == COMMUNITY  # no plan of its own: the latest
    own = care_plan_status(person, ts(NOW), SOCIAL)
    assert (own.org, own.overdue) == (SOCIAL, True)  # the owner's own review, overdue, not hidden by a newer plan
    assert care_plan_status(person, ts(NOW), GP).org == COMMUNITY


def test_a_closed_plan_is_never_shown() -> None:
    person = record("p1", 9.0)
    plan(person, SOCIAL, 9, "2026-11-01", closed=True)
    assert care_plan_status(person, ts(NOW)).presence == rk.CARE_PLAN_PRESENCE_UNKNOWN
    plan(person, COMMUNITY, 3, "2027-01-01")
    assert care_plan_status(person, ts(NOW)).org == COMMUNITY


def test_the_list_marks_overdue_plans_by_its_own_as_of_not_the_wall_clock() -> None:
    book = population(100, {"a": 9.0, "b": 8.0}, as_of=datetime(2026, 11, 15, tzinfo=UTC))
    plan(book.people["a"], SOCIAL, 3, "2026-11-10")
    plan(book.people["b"], SOCIAL, 3, "2026-11-20")
    for computed_at in (NOW, NOW + timedelta(days=365)):  # wall clock: no difference
        entries = {e.local_id: e.care_plan for e in book.lists(computed_at)[GP].entries}
        assert entries[f"{GP}-a"].overdue and not entries[f"{GP}-b"].overdue
    book.put("c", record("c", 0.0, as_of=datetime(2026, 11, 22, tzinfo=UTC)))  # the hub's clock moves on
    assert all(e.care_plan.overdue for e in book.lists(NOW)[GP].entries)


def test_assessments_of_another_model_are_left_out() -> None:
    book = population(100, {"a": 9.0})
    other = record("b", 9.5)
    other.digest = "another"
    book.put("b", other)
    assert book.other_model == 1 and "b" not in book.people
    assert [e.local_id for e in book.lists(NOW)[GP].entries] == [f"{GP}-a"]


def test_a_list_published_again_only_when_its_content_changes() -> None:
    book = population(100, {"a": 9.0})
    first = book.lists(NOW)[GP]
    second = book.lists(NOW + timedelta(minutes=5))[GP]  # still new: the same content
    assert first.computed_at != second.computed_at and without_time(first) == without_time(second)
    book.put("a", record("a", 9.5))
    assert without_time(book.lists(NOW)[GP]) != without_time(first)


people = st.lists(
    st.tuples(st.floats(0, 10, allow_nan=False), st.sampled_from([GP, GP_2]),
              st.lists(st.sampled_from(list(SECTORS)), unique=True, max_size=5),
              st.booleans(), st.booleans()),
    min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(people)
def test_every_entry_is_the_listing_organisations_own_record_of_a_listed_person(
        drawn: list[tuple[float, str, list[str], bool, bool]]) -> None:
    """Over random people, records and opt-outs: an organisation's list names only people it holds a
    record for, by that record, once, and never anyone who opted out of direct-care sharing."""
    book = CaseBook(MODEL, tiers=3)
    owner: dict[tuple[str, str], str] = {}
    for i, (score, practice, orgs, direct, planning) in enumerate(drawn):
        person = f"p{i}"
        book.put(person, record(person, round(score, 1), practice=practice, orgs=tuple(orgs),
                                direct_care_opt_out=direct, planning_opt_out=planning))
        owner.update({(org, f"{org}-{person}"): person for org in orgs})
    lists = book.lists(NOW)
    cutoffs = book.cutoffs
    assert cutoffs is not None and cutoffs.population == sum(1 for *_, planning in drawn if not planning)
    for org, case_list in lists.items():
        assert case_list.org == org
        ids = [e.local_id for e in case_list.entries]
        assert len(ids) == len(set(ids))
        for entry in case_list.entries:
            whose = owner.get((org, entry.local_id))
            assert whose is not None, f"{org} was given {entry.local_id!r}, not its own record id"
            assert not book.people[whose].direct_care_opt_out
            assert entry.tier in ("very_high", "high", "moderate")
            if entry.role == "registered_practice":
                assert book.people[whose].registered_practice == org


@pytest.mark.parametrize("n", [0, 1, 18])  # with "a": at most 19 people, under 1 in 20
def test_a_population_too_small_for_the_top_tiers_lists_nobody(n: int) -> None:
    book = population(n, {"a": 9.0} if n else None)
    assert book.lists(NOW) == {}


def test_the_printed_list_shows_each_person_under_the_record_id_with_why_and_the_care_plan() -> None:
    from carehub.caselist_report import table

    book = population(100, {"a": 9.0, "b": 8.0, "c": 7.0, "d": 6.0, "e": 5.0})
    plan(book.people["a"], SOCIAL, 0)
    plan(book.people["c"], SOCIAL, 0, "2026-12-24", contact_role="care coordinator")
    plan(book.people["d"], SOCIAL, 0, "2026-09-30")
    text = table(book.lists(NOW)[GP])
    assert text.startswith(f"case list of {GP}: 5 people in tiers very_high, high (5 new this week), as of 2026-10-01 "
                           "00:00 UTC")
    lines = text.splitlines()
    assert lines[2].startswith(f"{GP}-a") and "NEW" in lines[2] and f"{SOCIAL} 2026-10-01, due unknown" in lines[2]
    assert "emergency_admissions 2 +1.5" in lines[2]
    assert lines[3].startswith(f"{GP}-b") and "none received" in lines[3]
    assert f"{SOCIAL} (care coordinator) 2026-10-01, due 2026-12-24" in lines[4]
    assert f"{SOCIAL} 2026-10-01, OVERDUE (due 2026-09-30)" in lines[5]
    assert "no case list yet" in table(rk.CaseList(org=GP_2))
