"""The fault suite's plan and figures (carehub/chaos.py), held to their definitions without a hub."""

from __future__ import annotations

from collections import Counter

import pytest

from carehub.chaos import (
    CATCH_UP,
    DROP,
    KILL,
    RESUBSCRIBE,
    STALL,
    Accepted,
    Letter,
    PartnerTally,
    Report,
    account_alerts,
    account_audit,
    account_ingest,
    account_stages,
    compare_indicators,
    merges_in_force,
    schedule,
)

SERVICES = ("ingest", "identity", "timeline", "indicators", "alerts", "gateway", "mllp", "fhir")
TOPIC = "p.provider.events"


def test_every_service_is_killed_once_a_round_in_turn_with_one_stall_and_a_drop_a_round() -> None:
    faults = schedule(SERVICES, rounds=3, window_s=300, stall_s=20, drop_s=5, lead_s=30, tail_s=15)
    kills = [f.target for f in faults if f.kind == KILL]
    assert kills == list(SERVICES) * 3
    assert [f.kind for f in faults].count(STALL) == 1
    assert [f.kind for f in faults].count(DROP) == 3
    assert [f.kind for f in faults].count(RESUBSCRIBE) == 1
    times = [f.at_s for f in faults]
    assert times == sorted(times) and times[0] > 30 and times[-1] <= 300 - 15
    stall = next(f for f in faults if f.kind == STALL)
    assert stall.seconds == 20
    # nothing else happens while the broker is stopped
    assert not [f for f in faults if stall.at_s < f.at_s < stall.at_s + stall.seconds]


def test_a_short_plan_still_covers_every_service_and_a_window_too_short_is_refused() -> None:
    faults = schedule(SERVICES, rounds=1, window_s=45, stall_s=5, drop_s=2, lead_s=5, tail_s=2.5)
    assert sorted(f.target for f in faults if f.kind == KILL) == sorted(SERVICES)
    assert {f.kind for f in faults} == {KILL, STALL, DROP, RESUBSCRIBE}
    with pytest.raises(ValueError, match="no time"):
        schedule(SERVICES, rounds=1, window_s=10, stall_s=20, drop_s=2, lead_s=5, tail_s=2)


def test_ingest_accounting_tells_lost_from_dead_lettered_and_dropped() -> None:
    a, b, c, d = ("RR8", "a"), ("RR8", "b"), ("B86001", "c"), ("B86001", "d")
    accepted = [
        Accepted(a, (TOPIC, 0, 0)),
        Accepted(a, (TOPIC, 0, 0)),  # the same record again after a crash: a repeat, not a duplicate
        Accepted(b, (TOPIC, 1, 0)),
        Accepted(("RR8", "m2"), (TOPIC, 1, 3)),  # a malformed record accepted under its own id (degraded)
    ]
    letters = [
        Letter((TOPIC, 0, 2), ("B86001", "m1"), b"bad-1"),
        Letter((TOPIC, 0, 2), ("B86001", "m1"), b"bad-1"),  # written twice after a crash: one dead letter
        Letter(("mllp", 0, -1), None, b"MSH|refused"),  # a door's refusal
    ]
    # provider records: a (0:0), its resend (0:1), bad-1 (0:2), b (1:0), b's resend (1:1), bad-2 (1:2),
    # m2 (1:3), c (1:4) which was never accepted
    figures = account_ingest([a, b, c, d], [(b"bad-1", ("B86001", "m1")), (b"bad-2", None), (b"m2", ("RR8", "m2"))],
                             accepted, letters, provider_records=8, provider_topics=[TOPIC])
    assert figures.accepted == 3 and figures.accepted_records == 4
    assert figures.accepted_more_than_once == 1 and figures.duplicates_accepted_twice == 0
    assert figures.dead_lettered == 2  # one provider record, one door refusal
    assert figures.duplicates_dropped == 8 - 4  # neither accepted nor dead-lettered
    assert figures.lost == 3 and figures.malformed_lost == 1  # c, d and bad-2
    assert figures.lost_examples == ["B86001/c", "B86001/d"]
    assert figures.unexpected == 0


def test_one_event_accepted_from_two_records_is_a_duplicate_accepted_twice() -> None:
    a = ("RR8", "a")
    figures = account_ingest([a], [], [Accepted(a, (TOPIC, 0, 0)), Accepted(a, (TOPIC, 0, 5))], [], 2, [TOPIC])
    assert figures.duplicates_accepted_twice == 1 and figures.lost == 0
    valid_letter = account_ingest([a], [], [], [Letter((TOPIC, 0, 0), a, b"x")], 1, [TOPIC])
    assert valid_letter.lost == 0 and valid_letter.valid_dead_lettered == 1


def test_events_lost_after_ingest() -> None:
    figures = account_ingest([("RR8", "a")], [], [], [], 0, [TOPIC])
    a, b, c, m = ("RR8", "a"), ("RR8", "b"), ("RR8", "c"), ("RR8", "merge")
    linked = [(a, "P1", False), (a, "P2", False), (c, "P1", False), (m, "P1", True), (m, "P3", True)]
    account_stages(figures, accepted=[a, b, m], linked=linked, timeline=[a, m])
    assert (figures.lost_at_identity, figures.lost_at_timeline, figures.linked_repeats) == (1, 1, 2)
    assert figures.lost_after_ingest == 2
    assert figures.linked_to_two_persons == 1  # a, linked again after a crash to another person
    assert figures.two_persons_examples == ["RR8/a"]
    # P2 absorbed by P1 (and a merge of P3 undone): a's two persons are one now; c's are not
    merged = merges_in_force([("P2", "P1", False), ("P3", "P1", False), ("P3", "P1", True)])
    assert merged == {"P2": "P1"}
    account_stages(figures, accepted=[a, c], linked=[*linked, (c, "P3", False)], timeline=[a, c], merged=merged)
    assert (figures.linked_to_two_persons, figures.two_persons_examples) == (1, ["RR8/c"])


def test_alert_accounting_counts_twice_after_dedupe_raw_repeats_and_topic_repeats_apart() -> None:
    topic = [("GP1", "x", "admission|P-1"), ("GP1", "y", ""), ("GP1", "y", ""), ("SC1", "z", ""),
             ("NOT-SUBSCRIBED", "w", "")]
    tallies = {
        # y written twice: both positions delivered, the client dropped the second
        "GP1": PartnerTally(Counter({"x": 1, "y": 1}), dropped_by_client=1),
        # z handed over twice (the client lost its memory), and an alert meant for GP1
        "SC1": PartnerTally(Counter({"z": 2, "x": 1})),
        "CH1": PartnerTally(),
    }
    f = account_alerts(topic, tallies)
    assert (f.partners, f.in_topic, f.positions) == (3, 3, 4)
    assert (f.delivered, f.missing, f.wrong_partner, f.delivered_twice) == (3, 0, 1, 1)
    assert (f.raw_receipts, f.dropped_by_client, f.written_twice) == (6, 1, 1)
    assert f.positions_delivered_twice == 3 - 1  # SC1: 3 raw receipts for 1 position
    assert f.same_situation_twice == 0
    # the same admission of the same person record under a second alert id (a second hub person)
    split = account_alerts([*topic, ("GP1", "x2", "admission|P-1")], {"GP1": PartnerTally(Counter({"x": 1}))})
    assert split.same_situation_twice == 1
    assert split.same_situation_examples == ["GP1 admission|P-1: x, x2"]
    missed = account_alerts(topic, {"GP1": PartnerTally(Counter({"x": 1}))})
    assert missed.missing == 1 and missed.missing_examples == ["GP1: y"]


def test_a_delivery_without_its_audit_record_is_counted_and_fails_the_report() -> None:
    tallies = {"GP1": PartnerTally(Counter({"x": 1, "y": 2})), "SC1": PartnerTally(Counter({"z": 1}))}
    figures = account_alerts([("GP1", "x", ""), ("GP1", "y", ""), ("SC1", "z", "")], tallies)
    account_audit(figures, [("GP1", "x"), ("GP1", "y"), ("GP1", "z")], tallies)  # z audited for the wrong partner
    assert (figures.unaudited, figures.unaudited_examples) == (1, ["SC1: z"])
    report = Report("x")
    report.alerts = figures
    assert any("1 deliveries with no audit record (SC1: z)" in p for p in report.problems())
    account_audit(figures, [("GP1", "x"), ("GP1", "y"), ("SC1", "z")], tallies)
    assert figures.unaudited == 0


def test_indicator_comparison_counts_differing_missing_and_extra_values() -> None:
    twelve, thirty, now, month = ("a", "region", "12m"), ("a", "region", "30d"), ("b", "region", "now"), \
        ("a", "region", "2024-12")
    ref: dict[tuple[str, str, str], tuple[int, int | None, int]] = {twelve: (1, 10, 0), thirty: (0, 10, 0),
                                                                    now: (2, None, 0)}
    got = {twelve: (1, 10, 0), thirty: (1, 10, 0), month: (0, 9, 0)}
    f = compare_indicators(got, ref)
    assert (f.reference, f.equal, f.differ, f.missing, f.extra, f.mismatches) == (3, 1, 1, 1, 1, 3)
    assert f.examples[0] == "a|region|30d: published (1, 10, 0), reference (0, 10, 0)"
    assert compare_indicators(ref, ref).mismatches == 0


def test_the_report_fails_on_loss_repeats_mismatches_and_stages_that_did_not_catch_up() -> None:
    report = Report("python tools/chaos.py --short")
    report.indicators = compare_indicators({("a", "region", "12m"): (1, 1, 0)}, {("a", "region", "12m"): (1, 1, 0)})
    report.catch_up_s = {stage: 1.0 for stage, _ in CATCH_UP}
    assert report.problems() == []
    table = report.table()
    assert "lost" in table and "delivered twice" in table and "1 of 1" in table and "caught up: partners" in table
    report.ingest.lost, report.alerts.delivered_twice, report.catch_up_s["timeline"] = 2, 1, None
    report.indicators.extra = 4
    report.ingest.linked_to_two_persons, report.alerts.same_situation_twice = 3, 5
    problems = " | ".join(report.problems())
    assert "3 events linked to two hub persons" in problems and "5 alerts repeat a situation" in problems
    assert "2 events lost" in problems and "1 alerts delivered twice" in problems
    assert "4 extra" in problems and "not caught up within the deadline: timeline" in problems
    assert Report("x").problems()  # no indicator values compared is not a pass
