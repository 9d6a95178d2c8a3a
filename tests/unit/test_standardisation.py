"""Directly standardised rates (carehub/domain/standardisation.py) and the ESP 2013 file.

The expected numbers are worked out here from the formulas in docs/standardisation.md, with
exact fractions where they can be, not by calling the code under test; the broken copies of the
standard's file must fail naming the file and the entry, as tests/unit/test_domain_loader.py
checks for the other data files.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carehub.domain.loader import DefinitionError
from carehub.domain.standardisation import (
    DSR,
    ESP2013,
    MIN_OBSERVED,
    StandardPopulation,
    Stratum,
    bucket,
    byar_limits,
    directly_standardised_rate,
    load_standard_population,
    parse_standard_population,
)
from tests.unit.broken_copies import assert_broken_copy_refused

# The quantiles as docs/standardisation.md gives them (6 decimals): the code derives its own.
Z95, Z998 = 1.959964, 3.090232
ESP_WEIGHTS = [5000, 5500, 5500, 5500, 6000, 6000, 6500, 7000, 7000, 7000, 7000, 6500, 6000, 5500, 5000, 4000,
               2500, 1500, 1000]

# A small standard (three bands) so that the hand computation below stays short.
SMALL = parse_standard_population({
    "id": "small", "version": 1, "title": "Three bands", "source": "this test", "total": 100_000,
    "bands": [{"from_age": 0, "to_age": 39, "weight": 50_000}, {"from_age": 40, "to_age": 69, "weight": 35_000},
              {"from_age": 70, "weight": 15_000}],
}, "small")
# (band, sex): (observed events, population)
TABLE: dict[Stratum, tuple[int, int]] = {
    (0, "female"): (2, 1000), (40, "female"): (6, 800), (70, "female"): (12, 200),
    (0, "male"): (1, 1100), (40, "male"): (5, 700), (70, "male"): (9, 150),
}


def split(table: dict[Stratum, tuple[int, int]]) -> tuple[dict[Stratum, int], dict[Stratum, int]]:
    return {k: x for k, (x, _) in table.items()}, {k: n for k, (_, n) in table.items()}


@pytest.fixture(scope="module")
def esp() -> StandardPopulation:
    return load_standard_population()


def test_a_dsr_equals_the_hand_computation() -> None:
    """Weights w: 50,000 (0-39), 35,000 (40-69), 15,000 (70+), applied to each sex: sum of w = 200,000.

    x * w / n per stratum:
        female 0-39:  2 * 50,000 / 1,000 = 100
        female 40-69: 6 * 35,000 / 800   = 262.5
        female 70+:  12 * 15,000 / 200   = 900
        male 0-39:    1 * 50,000 / 1,100 = 500/11 (45.4545...)
        male 40-69:   5 * 35,000 / 700   = 250
        male 70+:     9 * 15,000 / 150   = 900
        sum = 2412.5 + 500/11 = 54075/22 (2457.9545...)
    DSR = (54075/22) / 200,000 * 100,000 = 54075/44 = 1228.977... per 100,000
    (the crude rate, 35 / 3,950 * 100,000 = 886.1, is lower: this population is young.)

    x * (w / n)^2 per stratum: 2 * 50^2 = 5,000; 6 * 43.75^2 = 11,484.375; 12 * 75^2 = 67,500;
        1 * (500/11)^2 = 250,000/121; 5 * 50^2 = 12,500; 9 * 100^2 = 90,000;
        sum = 186,484.375 + 250,000/121 = 182516875/968 (188,550.49...)
    var (per 100,000) = sum / 200,000^2 * 100,000^2 = 182516875/3872 (47,137.62...)
    O = 35; Byar at z = 1.959964: O_L = 24.37521, O_U = 48.67801; at z = 3.090232: 19.48988, 57.45033.
    Dobson: DSR + sqrt(var / O) * (O_L - O) etc.: 95% 839.062 to 1730.941; 99.8% 659.777 to 2052.873.
    """
    weight = {0: 50_000, 40: 35_000, 70: 15_000}
    weighted = sum(Fraction(x * weight[band], n) for (band, _), (x, n) in TABLE.items())
    assert weighted == Fraction(54075, 22)
    expected = weighted / 200_000 * 100_000
    assert expected == Fraction(54075, 44)
    variance = sum(x * Fraction(weight[band], n) ** 2 for (band, _), (x, n) in TABLE.items()) / 200_000**2 * 10**10
    assert variance == Fraction(182516875, 3872)

    got = directly_standardised_rate(*split(TABLE), SMALL)
    assert got.computed and got.reason is None and got.not_computed is None
    assert (got.observed, got.population, got.per) == (35, 3950, 100_000)
    assert got.dsr == pytest.approx(float(expected), rel=1e-12)
    assert got.dsr == pytest.approx(1228.977, abs=1e-3)

    scale = math.sqrt(float(variance) / 35)
    for z, lower, upper, written in ((Z95, got.lower95, got.upper95, (839.062, 1730.941)),
                                     (Z998, got.lower998, got.upper998, (659.777, 2052.873))):
        o_lower = 35 * (1 - 1 / (9 * 35) - z / (3 * math.sqrt(35))) ** 3
        o_upper = 36 * (1 - 1 / (9 * 36) + z / (3 * math.sqrt(36))) ** 3
        assert lower == pytest.approx(float(expected) + scale * (o_lower - 35), rel=1e-6)
        assert upper == pytest.approx(float(expected) + scale * (o_upper - 35), rel=1e-6)
        assert (lower, upper) == pytest.approx(written, abs=2e-3)


def test_limits_bracket_the_rate_and_the_998_interval_is_wider() -> None:
    got = directly_standardised_rate(*split(TABLE), SMALL)
    assert got.lower998 is not None and got.lower95 is not None and got.dsr is not None
    assert got.upper95 is not None and got.upper998 is not None
    assert 0 < got.lower998 < got.lower95 < got.dsr < got.upper95 < got.upper998


def test_byar_limits_match_the_formula() -> None:
    for count in (10, 35, 1000):
        for z in (Z95, Z998):
            lower, upper = byar_limits(count, z)
            assert lower == pytest.approx(count * (1 - 1 / (9 * count) - z / (3 * math.sqrt(count))) ** 3, rel=1e-6)
            assert upper == pytest.approx(
                (count + 1) * (1 - 1 / (9 * (count + 1)) + z / (3 * math.sqrt(count + 1))) ** 3, rel=1e-6)
    none_lower, none_upper = byar_limits(0, Z95)  # no events: the lower limit is 0
    assert none_lower == 0.0 and none_upper == pytest.approx((1 - 1 / 9 + Z95 / 3) ** 3)
    with pytest.raises(ValueError, match="at least 0"):
        byar_limits(-1, Z95)


def test_fewer_than_ten_events_is_not_computed() -> None:
    observed = {(0, "female"): 4, (70, "male"): 5}
    population = {(0, "female"): 1000, (70, "male"): 100}
    got = directly_standardised_rate(observed, population, SMALL)
    assert MIN_OBSERVED == 10
    assert not got.computed and got.reason == "too_few_events"
    assert got.dsr is None and got.lower95 is None and got.upper998 is None
    assert (got.observed, got.population) == (9, 1100)
    assert got.not_computed == "9 events, fewer than 10: too few for a reliable rate"
    observed[(40, "male")] = 1
    assert directly_standardised_rate(observed, population | {(40, "male"): 50}, SMALL).computed


def test_events_in_a_stratum_with_no_population_are_refused() -> None:
    observed, population = split(TABLE)
    population[(70, "male")] = 0
    got = directly_standardised_rate(observed, population, SMALL)
    assert not got.computed and got.reason == "events_without_population" and got.dsr is None
    assert got.not_computed is not None and "70+ male (9)" in got.not_computed
    del population[(70, "male")]  # a stratum missing from the population is the same as 0 people
    assert directly_standardised_rate(observed, population, SMALL).reason == "events_without_population"


def test_no_population_at_all_is_not_computed() -> None:
    got = directly_standardised_rate({}, {}, SMALL)
    assert got.reason == "no_population" and got.observed == 0 and got.population == 0


def test_an_empty_stratum_keeps_its_weight_with_a_rate_of_zero() -> None:
    """No one aged 70+ (male) and no events there: the stratum counts as a rate of 0, weight 15,000."""
    observed, population = split(TABLE)
    del observed[(70, "male")], population[(70, "male")]
    got = directly_standardised_rate(observed, population, SMALL)
    weight = {0: 50_000, 40: 35_000, 70: 15_000}
    expected = sum(Fraction(x * weight[b], n) for (b, s), (x, n) in TABLE.items() if (b, s) != (70, "male"))
    assert got.dsr == pytest.approx(float(expected / 200_000 * 100_000), rel=1e-12)


def test_strata_the_standard_does_not_have_are_a_callers_error() -> None:
    observed, population = split(TABLE)
    with pytest.raises(ValueError, match="no band of small starts at age 35"):
        directly_standardised_rate(observed | {(35, "female"): 1}, population, SMALL)
    with pytest.raises(ValueError, match="sex is not one of female, male"):
        directly_standardised_rate(observed, population | {(0, "unknown"): 10}, SMALL)
    with pytest.raises(ValueError, match="count must be >= 0"):
        directly_standardised_rate(observed | {(0, "male"): -1}, population, SMALL)
    with pytest.raises(ValueError, match="per must be > 0"):
        directly_standardised_rate(observed, population, SMALL, per=0)


def test_min_age_standardises_over_the_bands_from_it(esp: StandardPopulation) -> None:
    """A 65+ indicator: the bands 65-69 .. 90+ only (weights 5,500 .. 1,000, 19,500 a sex)."""
    observed = {(65, "female"): 10, (90, "male"): 5}
    population = {(65, "female"): 2000, (90, "male"): 100, (0, "female"): 5000}  # under 65: not read
    got = directly_standardised_rate(observed, population, esp, min_age=65)
    expected = (Fraction(10 * 5500, 2000) + Fraction(5 * 1000, 100)) / (2 * 19_500) * 100_000
    assert got.dsr == pytest.approx(float(expected), rel=1e-12) and got.population == 2100
    with pytest.raises(ValueError, match="below min_age 65"):
        directly_standardised_rate(observed | {(60, "male"): 1}, population, esp, min_age=65)
    with pytest.raises(ValueError, match="no band of esp2013 starts at age 66"):
        directly_standardised_rate(observed, population, esp, min_age=66)


def test_bucket_sums_rows_into_the_standards_strata_and_counts_what_fits_none(esp: StandardPopulation) -> None:
    rows = [(0, "female", 3), (4, "female", 2), (5, "female", 7), (89, "male", 1), (90, "male", 4),
            (107, "male", 6), (-1, "female", 8), (40, "unknown", 9)]
    strata = bucket(rows, esp)
    assert strata.counts == {(0, "female"): 5, (5, "female"): 7, (85, "male"): 1, (90, "male"): 10}
    assert strata.left_out == 17 and strata.total == 23
    with pytest.raises(ValueError, match="count must be >= 0"):
        bucket([(3, "male", -2)], esp)
    persons = bucket([(33, "all", 5)], esp, sexes=("all",))
    assert persons.counts == {(30, "all"): 5} and persons.left_out == 0


# -- properties ----------------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=400)


@settings(max_examples=60, deadline=None)
@given(st.lists(counts, min_size=38, max_size=38), st.integers(min_value=1, max_value=20))
def test_a_population_shaped_like_the_standard_has_its_crude_rate_as_dsr(events: list[int], k: int) -> None:
    """n = k * w in every stratum: sum(x * w / (k * w)) / sum(w) = O / (k * sum(w)) = the crude rate."""
    esp = load_standard_population()
    keys = [(band.lower, sex) for sex in ("female", "male") for band in esp.bands]
    observed = dict(zip(keys, events, strict=True))
    population = {key: k * esp.band(key[0]).weight for key in keys}
    got = directly_standardised_rate(observed, population, esp)
    total = sum(events)
    if total < MIN_OBSERVED:
        assert got.reason == "too_few_events"
        return
    assert got.dsr == pytest.approx(total / sum(population.values()) * 100_000, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(counts, st.integers(min_value=1, max_value=5000)), min_size=6, max_size=6),
       st.integers(min_value=2, max_value=50))
def test_scaling_events_and_people_alike_leaves_the_dsr_and_narrows_the_interval(
        table: list[tuple[int, int]], k: int) -> None:
    """Multiply every x and n by k: every x/n, so the DSR, stays; more events, so a narrower interval.

    (Scaling the populations alone divides the DSR by k, which is checked too.)
    """
    keys = list(TABLE)
    observed = {key: x for key, (x, _) in zip(keys, table, strict=True)}
    population = {key: n for key, (_, n) in zip(keys, table, strict=True)}
    base = directly_standardised_rate(observed, population, SMALL)
    scaled = directly_standardised_rate({key: k * x for key, x in observed.items()},
                                        {key: k * n for key, n in population.items()}, SMALL)
    fewer = directly_standardised_rate(observed, {key: k * n for key, n in population.items()}, SMALL)
    if not base.computed:
        return
    assert base.dsr is not None and scaled.dsr is not None and fewer.dsr is not None
    assert scaled.dsr == pytest.approx(base.dsr, rel=1e-9)
    assert fewer.dsr == pytest.approx(base.dsr / k, rel=1e-9)
    assert base.upper95 is not None and base.lower95 is not None
    assert scaled.upper95 is not None and scaled.lower95 is not None
    assert scaled.upper95 - scaled.lower95 < base.upper95 - base.lower95


def test_a_dsr_is_either_a_value_with_limits_or_a_reason() -> None:
    with pytest.raises(ValueError):
        DSR(5, 100, 100_000.0, dsr=5.0)
    with pytest.raises(ValueError):
        DSR(5, 100, 100_000.0, reason="too_few_events")


# -- the ESP 2013 file ---------------------------------------------------------------------------


def test_the_packaged_esp2013_has_its_19_bands_and_weights_summing_to_100000(esp: StandardPopulation) -> None:
    assert esp.id == "esp2013" and esp.name == "European Standard Population 2013"
    assert [b.weight for b in esp.bands] == ESP_WEIGHTS
    assert sum(ESP_WEIGHTS) == esp.total == 100_000
    assert [b.lower for b in esp.bands] == list(range(0, 95, 5))
    assert [b.label for b in esp.bands][:2] == ["0-4", "5-9"] and esp.bands[-1].label == "90+"
    assert esp.band_for(0).label == "0-4" and esp.band_for(64).label == "60-64" and esp.band_for(104).label == "90+"
    assert len(esp.digest) == 16
    with pytest.raises(ValueError, match="unknown age"):
        esp.band_for(-1)


BAND = "{ from_age = 40, to_age = 44, weight = 7000 }"
BROKEN = [
    (BAND, "{ from_age = 40, to_age = 44, weight = 0 }", r"bands\[8\]\.weight must be > 0"),
    (BAND, "{ from_age = 40, to_age = 44, weight = 7000.0 }", r"bands\[8\]\.weight must be an integer"),
    (BAND, "{ from_age = 41, to_age = 44, weight = 7000 }",
     r"bands\[8\]\.from_age must be 40: the bands run on from age 0 without a gap or an overlap \(got 41\)"),
    (BAND, "{ from_age = 40, to_age = 45, weight = 7000 }", r"bands\[9\]\.from_age must be 46"),
    (BAND, "{ from_age = 40, weight = 7000 }", r"bands\[8\] needs to_age: only the last band is open"),
    ("{ from_age = 0, to_age = 4,", "{ from_age = 1, to_age = 4,", r"bands\[0\]\.from_age must be 0"),
    ("{ from_age = 90, weight = 1000 }", "{ from_age = 90, to_age = 120, weight = 1000 }",
     r"bands\[18\]\.to_age must be left out in the last band"),
    (BAND, "{ from_age = 40, to_age = 44, weight = 7000, weigth = 1 }", r"bands\[8\]\.weigth is an unknown key"),
    ("total = 100000", "total = 100500", r"total must be the sum of the bands' weights, 100000 \(got 100500\)"),
    ('title = "European Standard Population 2013"\n', "", "title is required"),
    ("total = 100000", "total = ", "not valid TOML"),
]


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN, ids=[c[2][:40] for c in BROKEN])
def test_a_broken_copy_of_the_esp_file_is_refused_naming_the_file_and_entry(
        tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert_broken_copy_refused(ESP2013, tmp_path / "esp2013.toml", load_standard_population, old, new, expected)


def test_a_missing_standard_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="no standard population file here"):
        load_standard_population(tmp_path / "nope.toml")
