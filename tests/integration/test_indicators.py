"""The indicators engine through the real broker, against the batch reference.

The synthetic region (10,000 people, a year, with late, duplicated, malformed, cancelled and
merged events) goes through ingest, identity, timeline and the indicators service as worker
processes; the timeline worker and the indicators service are restarted mid-stream. The batch
reference (tests/reference/indicators.py) reads the same linked events
from ``identity.linked`` and computes every indicator its own way; every published value must
equal it, with suppression off so that every count is compared.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from kafka import KafkaProducer

from carehub.domain.definitions import PACKAGED, load_catalogue
from carehub.domain.indicator_facts import STRATUM_SEPARATOR
from carehub.harness import eventually
from carehub.indicator_report import read_values
from carehub.sdk import Publisher
from carehub.synthetic import RegionConfig, generate_region
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import indicators_pb2 as ind
from services.indicators.aggregate import Aggregate
from tests.integration.conftest import ROOT, Hub
from tests.reference.indicators import Standardised, as_of, reference

pytestmark = pytest.mark.integration

PEOPLE = 10_000


Cell = tuple[int, int | None, int]  # numerator, denominator, provisional


def cells(values: dict[str, ind.IndicatorValue]) -> dict[tuple[str, str, str], Cell]:
    return {(v.indicator, v.unit, v.window): (v.numerator, v.denominator if v.HasField("denominator") else None,
                                              v.provisional) for v in values.values()}


def wait_for_reference(hub: Hub, expected: dict[tuple[str, str, str], Cell], timeout_s: float = 300.0,
                       ) -> dict[str, ind.IndicatorValue]:
    """The published values once they equal the reference; else the difference, when time is up.

    Called after the timeline stage has committed all its input, so the partials are complete and
    the values can only move towards their final state.
    """
    last: dict[str, ind.IndicatorValue] = {}

    def equal() -> dict[str, ind.IndicatorValue] | None:
        hub.assert_running()
        last.clear()
        last.update(read_values(hub.bootstrap, hub.settings()))
        return dict(last) if last and cells(last) == expected else None

    try:
        return eventually(equal, timeout_s, "published indicator values equal the batch reference", 1.0)
    except AssertionError:
        got = cells(last)
        missing = sorted(set(expected) - set(got))[:20]
        extra = sorted(set(got) - set(expected))[:20]
        wrong = sorted((k, got[k], expected[k]) for k in set(got) & set(expected) if got[k] != expected[k])
        raise AssertionError(f"{len(wrong)} values differ (engine, reference): {wrong[:20]}\nmissing: {missing}\n"
                             f"extra: {extra}\n" + hub.log_text()[-4000:]) from None


@pytest.mark.timeout(900)  # a year of a 10,000-person region through four workers: ~2-3 minutes here
@pytest.mark.parametrize("attribution", ["current", "at_event"])
def test_streaming_indicators_equal_the_batch_reference(hub: Hub, attribution: str) -> None:
    """Either attribution rule, set for the timeline workers and the indicators service alike. (The
    synthetic people never change practice, so the two give the same values here: the at_event run
    checks the rule reaches every worker, and that it changes nothing it should not.)"""
    for service in ("ingest", "identity"):
        hub.start(service)
    rule = {"CAREHUB_INDICATORS_ATTRIBUTION": attribution}
    timeline = hub.start("timeline", **rule)
    engine_env = {"CAREHUB_SUPPRESSION_MAX": "0", "CAREHUB_INDICATORS_PUBLISH_INTERVAL_S": "0.5", **rule}
    indicators = hub.start("indicators", **engine_env)

    region = generate_region(RegionConfig(people=PEOPLE, seed=11))
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for record in region.records:
            pub.publish_raw(record.value, record.key, record.content_type)
        pub.flush()
    assert pub.failed == 0

    hub.wait_values("identity.linked", bool, timeout_s=180)
    # mid-stream, both engine stages restart: the new timeline worker counts its partitions from
    # the recovered table and sends snapshots; the new indicators service reads the partials again
    hub.wait_values("indicators.partials", lambda v: len(v) >= 3, timeout_s=180)
    hub.stop(timeline)
    hub.stop(indicators)
    hub.start("timeline", **rule)
    hub.start("indicators", **engine_env)
    hub.settle("ingest", "identity", "timeline", timeout_s=600)
    linked = [e for v in hub.values("identity.linked") for e in idn.LinkedBatch.FromString(v).events]
    assert len(linked) > 50_000

    started = time.perf_counter()
    ref = reference(linked, PACKAGED, attribution)
    expected = ref.values
    expected_as_of = as_of(linked).isoformat()
    print(f"reference: {len(expected)} values from {len(linked)} linked events in "
          f"{time.perf_counter() - started:.1f}s, as of {expected_as_of}")

    values = wait_for_reference(hub, expected)
    got = cells(values)
    assert not any(v.suppressed for v in values.values())
    assert all(v.as_of == expected_as_of for v in values.values())

    # the region's figures are not trivially empty: every indicator has region values with counts
    region_12m = {k[0]: got[k] for k in got if k[1] == "region" and k[2] in ("12m", "now")}
    assert set(region_12m) == {k[0] for k in expected}
    assert sum(1 for num, _, _ in region_12m.values() if num > 0) >= len(region_12m) - 1, region_12m
    assert any(prov for _, _, prov in got.values()), "some admissions are still awaiting coding"

    # the table a person reads: `carehub indicators`, as a user runs it
    out = subprocess.run([sys.executable, "-m", "carehub", "indicators", "--indicator", "readmission_30d",
                          "--unit", "provider:RR8"], cwd=ROOT, env=hub.env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    listed, notes = out.stdout.split("\n\n", 1)
    rows = {line.split()[2]: line.split() for line in listed.splitlines()[2:]}
    assert set(rows) <= {"region", "provider:RR8"} and "region" in rows
    num, den, _ = got[("readmission_30d", "region", "12m")]
    assert rows["region"][3:5] == [str(num), str(den)]
    readmissions = next(v for v in values.values()
                        if (v.indicator, v.unit, v.window) == ("readmission_30d", "region", "12m"))
    assert readmissions.national_reference == "nhsof_3b_2017_18"
    assert readmissions.national_value == pytest.approx(0.138)
    assert "  readmission_30d: 13.8% (England 2017/18, definition differs; NHS Digital 2019)" in notes.splitlines()

    assert_standardised_rates_equal(values, ref.standardised)
    assert "counted with other definitions" not in hub.log_text()  # every worker counted by the same rule
    for indicator in ("acsc_chronic", "acsc_acute", "acsc_all", "falls_65plus"):
        v = next(v for v in values.values() if (v.indicator, v.unit, v.window) == (indicator, "region", "12m"))
        print(f"{indicator} region 12m: crude {v.value:.1f} ({v.ci_low:.1f}-{v.ci_high:.1f}), "
              f"DSR {v.dsr:.1f} ({v.dsr_ci_low:.1f}-{v.dsr_ci_high:.1f}) per 100,000; "
              f"unstratified {v.unstratified_events} events, {v.unstratified_population} people")
    print_costs(hub)


def assert_standardised_rates_equal(values: dict[str, ind.IndicatorValue], expected: Standardised) -> None:
    """Every DSR (or its reason for not being computed) and the counts outside the strata equal the
    reference's, which buckets its own counts and computes the DSR from docs/standardisation.md."""
    by_key = {(v.indicator, v.unit, v.window): v for v in values.values()}
    assert set(expected) == {k for k, v in by_key.items() if v.standard_population}
    computed = 0
    for key, (rate, reason, events_out, people_out) in sorted(expected.items()):
        v = by_key[key]
        assert v.standard_population == "European Standard Population 2013"
        assert (v.dsr_not_computed, v.unstratified_events, v.unstratified_population) == \
            (reason, events_out, people_out), key
        if rate is None:
            assert not v.HasField("dsr"), key
            continue
        computed += 1
        got = (v.dsr, v.dsr_ci_low, v.dsr_ci_high)
        assert all(abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in zip(got, rate, strict=True)), (key, got, rate)
    assert computed >= 20, f"only {computed} DSRs computed"
    print(f"standardised: {len(expected)} values, {computed} with a DSR; reasons: "
          f"{sorted({r for _, r, _, _ in expected.values() if r})}")


def print_costs(hub: Hub) -> None:
    """What the cells by stratum cost: the aggregator's cells, the partials log and the time to compute
    every value, with and without them."""
    records = hub.values("indicators.partials")
    aggregate = Aggregate(load_catalogue())
    for record in records:
        aggregate.apply(ind.IndicatorPartials.FromString(record))
    cells = [(key, value) for p in aggregate.partitions.values() for key, value in p.items()]

    def size(chosen: list[tuple[tuple[str, str, int], tuple[int, int, int]]]) -> int:
        return sum(ind.IndicatorCell(indicator=k[0], unit=k[1], day=k[2], numerator=v[0], denominator=v[1],
                                     provisional=v[2]).ByteSize() + 2 for k, v in chosen)

    stratified = [c for c in cells if STRATUM_SEPARATOR in c[0][0]]
    log_cells = [c for r in records for c in ind.IndicatorPartials.FromString(r).cells]
    log_stratified = sum(c.ByteSize() + 2 for c in log_cells if STRATUM_SEPARATOR in c.indicator)
    print(f"cells held: {len(cells)} ({size(cells)} bytes as IndicatorCell), of which by stratum "
          f"{len(stratified)} ({size(stratified)} bytes); partials log: {len(records)} records, "
          f"{sum(len(r) for r in records)} bytes, of which cells by stratum {log_stratified} bytes")
    without = Aggregate(load_catalogue())
    for p, held in aggregate.partitions.items():
        without.partitions[p] = {k: v for k, v in held.items() if STRATUM_SEPARATOR not in k[0]}
    without.newest, without.digests = aggregate.newest, aggregate.digests
    took: dict[str, list[float]] = {"with strata": [], "without strata": []}
    for _ in range(3):  # interleaved, the fastest of three: the machine is shared
        for name, chosen in (("with strata", aggregate), ("without strata", without)):
            started = time.perf_counter()
            count = sum(1 for _ in chosen.values(threshold=7))
            took[name].append(time.perf_counter() - started)
    print(", ".join(f"values {name}: {count} in {min(times):.3f}s (fastest of 3)" for name, times in took.items()))


def test_a_restarted_service_withdraws_what_its_predecessor_published_and_nothing_produces(hub: Hub) -> None:
    """A value published by a previous instance that no partial produces any longer (here: a unit
    no timeline partition counts) is withdrawn by the next instance's first publication."""
    stale = ind.IndicatorValue(indicator="acsc_acute", unit="practice:Z99999", window="12m", numerator=3)
    producer = KafkaProducer(bootstrap_servers=hub.bootstrap)
    producer.send(hub.topic("indicators"), key=b"acsc_acute|practice:Z99999|12m", value=stale.SerializeToString())
    producer.flush()
    producer.close()
    assert set(read_values(hub.bootstrap, hub.settings())) == {"acsc_acute|practice:Z99999|12m"}
    hub.start("indicators", CAREHUB_INDICATORS_PUBLISH_INTERVAL_S="0.5")
    eventually(lambda: not read_values(hub.bootstrap, hub.settings()) or None, 120,
               "the stale value is withdrawn")
    hub.assert_running()
