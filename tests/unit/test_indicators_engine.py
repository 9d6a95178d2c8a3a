"""The indicators engine without Kafka: definition files, a person's cells, partition counts, values."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from carehub.domain.definitions import PACKAGED, load_catalogue
from carehub.domain.indicator_counts import PartitionCounts
from carehub.domain.indicator_facts import PersonFacts, day_of
from carehub.settings import load_settings
from carehub.topics import linked_topic
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import indicators_pb2 as ind
from services.indicators.aggregate import Aggregate, windows
from services.indicators.app import Publisher
from services.timeline.app import Timeline
from tests.unit.test_timeline_state import Feed

OCT = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
DX = ce.Diagnosis


def admitted(f: Feed, when: datetime, code: str, *, spell: str = "S-1", coded: str | None = None,
             discharged: datetime | None = None, practice: str = "P01") -> None:
    link = f.linked(ce.EVENT_TYPE_ADMISSION, when, spell=spell, admission_method=ce.ADMISSION_METHOD_EMERGENCY,
                    diagnoses=[DX(code=code, position=1, provisional=True)])
    link.event.registered_practice, link.event.locality = practice, "L1"
    from carehub.domain.timeline import apply

    apply(f.state, link)
    if discharged is not None:
        f.send(ce.EVENT_TYPE_DISCHARGE, discharged, spell=spell, discharge_destination="19")
    if coded is not None:
        f.send(ce.EVENT_TYPE_DIAGNOSIS_CODED, (discharged or when) + timedelta(days=3), spell=spell,
               diagnoses=[DX(code=coded, position=1)])


def test_packaged_definitions_load_and_every_file_is_checked(tmp_path: Path) -> None:
    catalogue = load_catalogue()
    assert {"acsc_chronic", "acsc_acute", "readmission_30d", "readmission_28d", "frequent_ed_attenders",
            "followup_7d", "followup_overdue", "care_home_admissions", "falls_65plus", "long_stay_7d",
            "long_stay_21d"} <= {i.id for i in catalogue.indicators}
    assert all(i.source for i in catalogue.indicators)  # every definition cites where it comes from
    assert len(catalogue.codelists["acsc"].conditions) == 19

    broken = tmp_path / "defs"
    shutil.copytree(PACKAGED, broken)
    path = broken / "indicators" / "acsc_chronic.toml"
    path.write_text(path.read_text().replace('groups = ["chronic"]', 'groups = ["chronik"]'))
    with pytest.raises(ValueError, match=r"acsc_chronic\.toml.*groups"):
        load_catalogue(broken)
    path.write_text(path.read_text().replace('groups = ["chronik"]', 'groups = ["chronic"]\nnumerater = 1'))
    with pytest.raises(ValueError, match=r"acsc_chronic\.toml: \[numerator\]\.numerater is an unknown key"):
        load_catalogue(broken)


def test_a_code_list_file_changes_results_without_code_changes(tmp_path: Path) -> None:
    f = Feed()
    admitted(f, OCT, "N10", discharged=OCT + timedelta(days=2), coded="N10")  # pyelonephritis: acute ACSC
    packaged = PersonFacts(load_catalogue())
    assert packaged.cells(f.timeline)[("acsc_acute", "practice:P01", day_of(int(OCT.timestamp()) * 10**9))][0] == 1

    edited = tmp_path / "defs"
    shutil.copytree(PACKAGED, edited)
    acsc = edited / "codelists" / "acsc.toml"
    acsc.write_text(acsc.read_text().replace('codes = ["N10", "N11", "N12", "N13.6"]', 'codes = ["N11", "N12"]'))
    catalogue = load_catalogue(edited)
    assert catalogue.digest != load_catalogue().digest  # counts say which definitions made them
    cells = PersonFacts(catalogue).cells(f.timeline)
    assert cells[("acsc_acute", "practice:P01", day_of(int(OCT.timestamp()) * 10**9))][0] == 0


def test_coding_revises_a_provisional_classification_and_cancellation_retracts() -> None:
    facts = PersonFacts(load_catalogue())
    day = day_of(int(OCT.timestamp()) * 10**9)
    f = Feed()
    admitted(f, OCT, "J18.1")  # working diagnosis: pneumonia, an acute ACSC
    assert facts.cells(f.timeline)[("acsc_acute", "region", day)] == (1, 1, 1)  # counted, provisional
    f.send(ce.EVENT_TYPE_DIAGNOSIS_CODED, OCT + timedelta(days=5), spell="S-1", diagnoses=[DX(code="R07.4")])
    assert facts.cells(f.timeline)[("acsc_acute", "region", day)] == (0, 1, 0)  # coded: chest pain, not ACSC
    cancel = f.linked(ce.EVENT_TYPE_CANCELLATION, OCT + timedelta(days=6), spell="")
    cancel.event.target_event_id = f.timeline.spells[0].admission_event_id
    from carehub.domain.timeline import apply

    apply(f.state, cancel)
    assert not [k for k in facts.cells(f.timeline) if k[0] == "acsc_acute"]


def test_late_discharge_makes_a_readmission_and_opt_out_leaves_later_events_out() -> None:
    facts = PersonFacts(load_catalogue())
    f = Feed()
    admitted(f, OCT, "I21.9", spell="S-1")
    admitted(f, OCT + timedelta(days=20), "I21.9", spell="S-2")
    key = ("readmission_30d", "region", day_of(int((OCT + timedelta(days=4)).timestamp()) * 10**9))
    assert key not in facts.cells(f.timeline)
    f.send(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=4), spell="S-1")  # late: 16 days before S-2
    assert facts.cells(f.timeline)[key] == (1, 1, 1)  # provisional: S-1 is not coded (cancer exclusion)

    opt_out = f.linked(ce.EVENT_TYPE_CONSENT_CHANGE, OCT + timedelta(days=21), spell="")
    opt_out.event.consent.planning_opt_out = True
    from carehub.domain.timeline import apply

    apply(f.state, opt_out)
    before = facts.cells(f.timeline)
    f.send(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=22), spell="S-2")  # after the opt-out: not a discharge
    after = facts.cells(f.timeline)
    assert not [k for k in after if k[0] == "readmission_30d" and k not in before]
    assert ("_population", "region", 0) not in after  # no longer in the registered population


def test_partition_counts_follow_person_changes_and_snapshot_equals_rebuild() -> None:
    facts = PersonFacts(load_catalogue())
    counts = PartitionCounts(facts)
    a, b = Feed(person_id="a"), Feed(person_id="b")
    counts.rebuild(0, [])
    for feed, code in ((a, "J18.1"), (b, "N10")):
        before = facts.cells(feed.timeline)
        admitted(feed, OCT, code, discharged=OCT + timedelta(days=1))
        counts.update(0, before, feed.timeline)
    changed = ind.IndicatorPartials.FromString(counts.changed_records(0)[0])
    assert not changed.replace and changed.cells
    rebuilt = PartitionCounts(facts)
    rebuilt.rebuild(0, [a.timeline, b.timeline])
    assert rebuilt.counts[0] == counts.counts[0]

    aggregate = Aggregate(facts.catalogue)
    for record in counts.snapshot_records(0):
        aggregate.apply(ind.IndicatorPartials.FromString(record))
    raw = aggregate.raw()
    assert raw[("acsc_acute", "region", "12m")].numerator == 2
    assert raw[("acsc_acute", "region", "12m")].denominator == 2  # two registered persons
    assert raw[("acsc_acute", "provider:RR8", "12m")].denominator is None  # no population for a provider


def test_windows_are_relative_to_the_newest_event_day() -> None:
    catalogue = load_catalogue()
    as_of = day_of(int(datetime(2026, 10, 31, tzinfo=UTC).timestamp()) * 10**9)
    spans = {w.label: w for w in windows(catalogue.by_id("followup_7d"), as_of)}
    assert spans["30d"].last == as_of - 7 and spans["30d"].first == as_of - 36
    assert "2025-10" in spans and "2026-10" in spans and spans["2026-10"].last == as_of - 7
    now = windows(catalogue.by_id("long_stay_21d"), as_of)
    assert [(w.label, w.first, w.last) for w in now] == [("now", None, as_of - 21)]


def test_small_counts_are_withheld_and_only_changes_are_republished() -> None:
    facts = PersonFacts(load_catalogue())
    counts = PartitionCounts(facts)
    feeds = []
    for i in range(12):
        f = Feed(person_id=f"p{i}")
        admitted(f, OCT, "J18.1", practice="P01" if i < 9 else "P02")
        feeds.append(f)
    counts.rebuild(0, [f.timeline for f in feeds])
    aggregate = Aggregate(facts.catalogue)
    for record in counts.snapshot_records(0):
        aggregate.apply(ind.IndicatorPartials.FromString(record))
    values = {(v.indicator, v.unit, v.window): v for v in aggregate.values(threshold=7)}
    p1, p2 = values[("acsc_acute", "practice:P01", "12m")], values[("acsc_acute", "practice:P02", "12m")]
    assert p2.suppressed and not p2.HasField("numerator")  # 3 admissions
    assert p1.suppressed  # 9, but region (12) - P01 would give P02 away
    region = values[("acsc_acute", "region", "12m")]
    assert not region.suppressed and region.numerator == 12 and region.ci_low < region.value < region.ci_high

    publisher = Publisher()
    first, _, _ = publisher.changes(aggregate.values(threshold=7, computed_at_s=1.0))
    again, gone, _ = publisher.changes(aggregate.values(threshold=7, computed_at_s=2.0))
    assert first and not again and not gone
    shown = {(v.indicator, v.unit, v.window): v for v in aggregate.values(threshold=0)}
    assert shown[("acsc_acute", "practice:P02", "12m")].numerator == 3
    assert shown[("acsc_acute", "practice:P02", "12m")].denominator == 3  # its registered population


def test_a_restarted_publisher_changes_only_what_its_predecessor_left_wrong() -> None:
    """Seeded with what a previous instance published: equal values are not written again, values
    nothing produces now are withdrawn, and an outlier already signalled is not signalled twice."""
    def value(unit: str, numerator: int, outlier: str = "") -> ind.IndicatorValue:
        return ind.IndicatorValue(indicator="acsc_acute", unit=unit, window="12m", numerator=numerator,
                                  outlier=outlier, computed_at=Timestamp(seconds=1))

    before = [value("practice:P01", 4, "high_998"), value("practice:P02", 5), value("practice:P03", 6)]
    publisher = Publisher()
    publisher.seed(before)
    now = [value("practice:P01", 4, "high_998"), value("practice:P02", 7), value("practice:P04", 1, "high_998")]
    for v in now:
        v.computed_at.seconds = 99  # a later computation of the same figures is not a change
    changed, gone, signals = publisher.changes(now)
    assert [v.unit for v in changed] == ["practice:P02", "practice:P04"]
    assert gone == [b"acsc_acute|practice:P03|12m"]
    assert [v.unit for v in signals] == ["practice:P04"]
    assert publisher.changes(now) == ([], [], [])


class RecordingTopic:
    """The partials topic as the timeline worker uses it (collaborator: records what is sent)."""

    def __init__(self) -> None:
        self.sent: list[ind.IndicatorPartials] = []

    async def send(self, value: bytes, **_: object) -> asyncio.Future[None]:
        self.sent.append(ind.IndicatorPartials.FromString(value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_every_assigned_partition_is_snapshot_after_recovery_even_without_new_input() -> None:
    """A partition whose input is all done still gets its counts sent after a restart: the last
    batch before a stop may have reached the table without its changes reaching the partials."""
    settings = load_settings(partitions=2)
    persons: dict[str, bytes] = {}
    for i in range(6):
        f = Feed(person_id=f"person-{i}")
        admitted(f, OCT, "J18.1")
        persons[f.person_id] = f.state.to_bytes()
    topic = RecordingTopic()
    timeline = Timeline(settings, persons, out=None, counts=PartitionCounts(PersonFacts(load_catalogue())),
                        partials=topic)
    recovered = False
    linked = linked_topic(settings)
    # what the stage runtime answers (carehub/runtime/stage.py StageRuntime.recovered and .assigned)
    runtime = SimpleNamespace(recovered=lambda: recovered,
                              assigned=lambda t: {0, 1} if t == linked else set())

    async def run() -> None:
        nonlocal recovered
        await timeline.snapshot_assigned(runtime)  # type: ignore[arg-type]
        assert topic.sent == []  # tables not recovered yet: nothing counted from half a table
        recovered = True
        await timeline.snapshot_assigned(runtime)  # type: ignore[arg-type]
        await timeline.snapshot_assigned(runtime)  # type: ignore[arg-type]

    asyncio.run(run())
    assert sorted(p.source_partition for p in topic.sent if p.replace) == [0, 1]  # one snapshot each, once
    aggregate = Aggregate(load_catalogue())
    for record in topic.sent:
        aggregate.apply(record)
    assert aggregate.raw()[("acsc_acute", "region", "12m")].numerator == 6
