"""An ED attendance sent again under a new event id (a corrected record) is one attendance.

A provider that fixes a record (an NHS number with a wrong check digit, say) and sends it again
under a new event id reports the same attendance twice. The timeline takes an attendance of the
same organisation and encounter id as a repeat: not counted, not alerted, not a risk factor, and
the indicators engine agrees with the batch reference (docs/indicator-semantics.md, Facts).
"""

from __future__ import annotations

from datetime import timedelta

from carehub.domain.definitions import PACKAGED
from carehub.domain.timeline import apply
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import timeline_pb2 as tl
from tests.reference.indicators import reference
from tests.unit.test_alert_rules import GP, HOSPITAL, OCT, Person
from tests.unit.test_indicator_standardisation import SENT, F, event, values_of
from tests.unit.test_timeline_state import Feed

DAY = timedelta(days=1)
RULE = "frequent_ed_attender"


def attend(p: Person, days_ago: int, encounter: str, *, org: str = HOSPITAL,
           event_id: str | None = None) -> tuple[tl.TimelineEvent, list[str]]:
    linked = p.event(ce.EVENT_TYPE_ED_ATTENDANCE, OCT - days_ago * DAY, org=org, spell=encounter,
                     sector=ce.SECTOR_EMERGENCY, **({"event_id": event_id} if event_id else {}))
    out = apply(p.feed.state, linked)
    assert out is not None
    alerts = p.engine.on_event(p.state, p.person_id, out, 0)
    return out, [a.rule for a in alerts]


def test_a_corrected_attendance_under_a_new_event_id_is_not_counted_or_alerted_again() -> None:
    p = Person()
    p.known()
    for i, days_ago in enumerate((200, 150, 100)):
        attend(p, days_ago, f"A-{i}")
    first, rules = attend(p, 10, "A-9")
    assert set(rules) == {RULE} and first.view.prior_ed_attendances_365d == 3
    again, rules = attend(p, 10, "A-9")  # the same attendance, corrected, under a new event id
    assert rules == [] and again.view.repeated_attendance and again.view.prior_ed_attendances_365d == -1
    assert len(p.feed.timeline.ed_attendances) == 4
    other_org, rules = attend(p, 5, "A-9", org="RCF")  # another trust's encounter of the same id
    assert not other_org.view.repeated_attendance and other_org.view.prior_ed_attendances_365d == 4
    assert rules == []  # the 5th: the rule asks for exactly 3 before


def test_without_an_encounter_id_nothing_is_a_repeat_and_a_cancelled_first_leaves_room() -> None:
    p = Person("p2")
    p.known()
    attend(p, 30, "")
    second, _ = attend(p, 30, "")
    assert not second.view.repeated_attendance and len(p.feed.timeline.ed_attendances) == 2
    q = Person("q2")
    q.known()
    attend(q, 30, "A-1", event_id="first")
    cancel = q.event(ce.EVENT_TYPE_CANCELLATION, OCT - 29 * DAY, spell="")
    cancel.event.target_event_id = "first"
    assert apply(q.feed.state, cancel) is not None
    resent, _ = attend(q, 30, "A-1", event_id="resent")  # after the cancellation: the attendance again
    assert not resent.view.repeated_attendance and [a.event_id for a in q.feed.timeline.ed_attendances] == ["resent"]


def test_the_engine_and_the_batch_reference_count_a_repeat_once() -> None:
    f = Feed(person_id="attender")
    SENT.pop("attender", None)
    event(f, ce.EVENT_TYPE_REGISTRATION, OCT - 300 * DAY, 80, F, "P01", org=GP)
    for days_ago in (200, 150, 100, 10):
        event(f, ce.EVENT_TYPE_ED_ATTENDANCE, OCT - days_ago * DAY, 80, F, "", "", spell=f"A-{days_ago}")
    event(f, ce.EVENT_TYPE_ED_ATTENDANCE, OCT - 10 * DAY, 80, F, "", "", spell="A-10")  # sent again
    event(f, ce.EVENT_TYPE_ED_ATTENDANCE, OCT - 5 * DAY, 80, F, "", "", spell="A-5")
    first = SENT["attender"][-1].event.event_id
    event(f, ce.EVENT_TYPE_ED_ATTENDANCE, OCT - 5 * DAY, 80, F, "", "", spell="A-5")  # repeat, before ...
    cancel = f.linked(ce.EVENT_TYPE_CANCELLATION, OCT - 4 * DAY, spell="")
    cancel.event.target_event_id = first  # ... the first is cancelled: neither counts
    assert apply(f.state, cancel) is not None
    SENT["attender"].append(cancel)
    linked: list[idn.LinkedEvent] = SENT["attender"]
    got = values_of([f])
    expected = reference(linked, PACKAGED, "current")
    assert {k: (v.numerator, v.denominator if v.HasField("denominator") else None, v.provisional)
            for k, v in got.items()} == expected.values
    assert expected.values[("frequent_ed_attenders", "region", "12m")] == (1, 4, 0)  # A-10 once, the 4th
