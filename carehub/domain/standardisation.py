"""Directly standardised rates (DSR): comparing areas whose people differ in age and sex.

Why: a practice with many people over 80 has more emergency admissions for heart failure than
one of students, whatever the quality of its care, so a crude rate compares populations as much
as care. Direct standardisation asks what each area's rate would be if its people had the age
and sex make-up of one fixed standard population: each stratum's own rate is weighted by the
standard's share of that stratum. NHS Outcomes Framework 2.3.i and 3a are directly age/sex
standardised, to the European Standard Population (IAP00068, the CCG version of 2.3.i, names
ESP 2013); carehub uses ESP 2013. Confidence limits
are Dobson's method on Byar's limits for the total count, as PHE's PHEindicatormethods computes
them (``phe_dsr``), and a rate on fewer than 10 events is not computed, as there. The formulas,
their sources and the choices made here are in docs/standardisation.md.

The standard is data (``data/standard_populations/esp2013.toml``), checked when it is loaded by
the domain loader (carehub/domain/loader.py), so a mistyped weight stops a worker instead of
skewing every rate. The rest is arithmetic on counts: pure, no I/O.

A stratum is ``(lower age bound of a band of the standard, sex)``, for example ``(85, "female")``.
The sexes are labels chosen by the caller (``SEXES`` by default); the standard's weights apply
to each of them (docs/standardisation.md, "Age and sex").
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from carehub.domain.loader import Count, Definition, DefinitionError, Loc, Reader, Text, Version, fail_on, validate

PACKAGED = Path(__file__).resolve().parent / "data" / "standard_populations"
ESP2013 = PACKAGED / "esp2013.toml"

Stratum = tuple[int, str]
SEXES: tuple[str, ...] = ("female", "male")
#: Below this many events in all strata together a DSR is not computed (PHE practice: not reliable).
MIN_OBSERVED = 10
#: Two-sided standard normal quantiles: 1.959964 (95%) and 3.090232 (99.8%), docs/standardisation.md.
Z95 = NormalDist().inv_cdf(0.975)
Z998 = NormalDist().inv_cdf(0.999)

Weight = Annotated[int, Field(gt=0)]


# -- the file ----------------------------------------------------------------------------------


class BandEntry(Definition):
    """One item of ``bands``: ages ``from_age`` to ``to_age`` inclusive; no ``to_age``: and over."""

    from_age: Count
    to_age: Count | None = None
    weight: Weight


class StandardPopulationFile(Definition):
    """A whole standard population file (``data/standard_populations/*.toml``).

    Checked here because a standard that skips an age, or stops at 89, would leave people out of
    every rate without a word, and a ``total`` that is not the sum of the weights is a typo in one.
    """

    id: Text
    version: Version
    title: Text
    source: Text
    total: Weight
    bands: list[BandEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _bands_cover_every_age(self) -> Self:
        problems: list[tuple[Loc, str]] = []
        expected: int | None = 0
        last = len(self.bands) - 1
        for i, band in enumerate(self.bands):
            if expected is not None and band.from_age != expected:
                problems.append((("bands", i, "from_age"), f"must be {expected}: the bands run on from age 0 "
                                                           f"without a gap or an overlap (got {band.from_age})"))
            if band.to_age is None:
                if i < last:
                    problems.append((("bands", i), "needs to_age: only the last band is open (\"and over\")"))
                expected = None
                continue
            if i == last:
                problems.append((("bands", i, "to_age"), "must be left out in the last band: it is open "
                                                         "(\"and over\"), so that every age has a band"))
            if band.to_age < band.from_age:
                problems.append((("bands", i, "to_age"), f"must be at least from_age ({band.from_age}) "
                                                         f"(got {band.to_age})"))
            expected = band.to_age + 1
        weights = sum(band.weight for band in self.bands)
        if weights != self.total:
            problems.append((("total",), f"must be the sum of the bands' weights, {weights} (got {self.total})"))
        fail_on(problems)
        return self

    def build(self, digest: str) -> StandardPopulation:
        return StandardPopulation(
            id=self.id, version=self.version, name=self.title, source=self.source,
            bands=tuple(AgeBand(b.from_age, b.to_age, b.weight) for b in self.bands), digest=digest)


# -- the standard --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgeBand:
    lower: int
    upper: int | None  # inclusive; None: open ("and over")
    weight: int

    @property
    def label(self) -> str:
        return f"{self.lower}+" if self.upper is None else f"{self.lower}-{self.upper}"


@dataclass(frozen=True)
class StandardPopulation:
    """A standard population: contiguous age bands from 0, the last open, each with its weight."""

    id: str
    version: int
    name: str
    source: str
    bands: tuple[AgeBand, ...]
    digest: str  # of the file's name and bytes: which standard a rate was made with

    @property
    def total(self) -> int:
        return sum(band.weight for band in self.bands)

    def band_for(self, age: int) -> AgeBand:
        """The band holding ``age`` (whole years). Raises ValueError for a negative (unknown) age."""
        if age < 0:
            raise ValueError(f"age must be >= 0 (got {age}); an unknown age has no band")
        return self.bands[bisect.bisect_right([b.lower for b in self.bands], age) - 1]

    def band(self, lower: int) -> AgeBand:
        """The band starting at ``lower``; ValueError if no band does."""
        for band in self.bands:
            if band.lower == lower:
                return band
        raise ValueError(f"no band of {self.id} starts at age {lower} (bands start at "
                         f"{', '.join(str(b.lower) for b in self.bands)})")

    def from_age(self, min_age: int) -> tuple[AgeBand, ...]:
        """The bands from ``min_age`` up: the standard of an indicator counting people aged ``min_age``+.

        ``min_age`` must start a band: standardising "65 and over" with a band 60-64 in it would
        weight people the indicator does not count.
        """
        self.band(min_age)
        return tuple(b for b in self.bands if b.lower >= min_age)


def load_standard_population(path: Path | None = None) -> StandardPopulation:
    """Read and check a standard population file (the packaged ESP 2013 by default).

    Raises DefinitionError (a ValueError) naming the file and the entry at fault.
    """
    file = Path(path) if path is not None else ESP2013
    if not file.exists():
        raise DefinitionError(file, "", "no standard population file here")
    reader = Reader()
    return reader.load(file, StandardPopulationFile).build(reader.digest)


def parse_standard_population(data: Mapping[str, Any], where: str) -> StandardPopulation:
    """One standard population file's TOML, checked; errors name ``where`` and the entry."""
    return validate(StandardPopulationFile, data, where).build("")


# -- counts into strata --------------------------------------------------------------------------


@dataclass(frozen=True)
class Strata:
    """Counts by stratum, and the count of rows that fit no stratum (unknown age or sex).

    ``left_out`` is kept, not dropped, so that a screen can say how many events or people the
    rate does not cover (NHS OF 3a, for one, excludes unknown sex the same way).
    """

    counts: Mapping[Stratum, int]
    left_out: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def bucket(rows: Iterable[tuple[int, str, int]], standard: StandardPopulation,
           sexes: Sequence[str] = SEXES) -> Strata:
    """Sum ``(age, sex, count)`` rows into the standard's strata.

    The same function buckets numerators (events by age and sex) and denominators (registered
    people), so the two are cut alike. A row with a negative (unknown) age or a sex not in
    ``sexes`` goes to ``left_out``. A negative count is a caller's error: ValueError.
    """
    counts: dict[Stratum, int] = {}
    left_out = 0
    for age, sex, count in rows:
        if count < 0:
            raise ValueError(f"count must be >= 0 (got {count} for age {age}, sex {sex!r})")
        if age < 0 or sex not in sexes:
            left_out += count
            continue
        key = (standard.band_for(age).lower, sex)
        counts[key] = counts.get(key, 0) + count
    return Strata(counts, left_out)


# -- the rate -----------------------------------------------------------------------------------

Reason = Literal["no_population", "events_without_population", "too_few_events"]


@dataclass(frozen=True, slots=True)
class DSR:
    """A directly standardised rate per ``per``, or why there is none.

    Either ``dsr`` and all four limits are numbers and ``reason`` is None, or they are all None
    and ``reason`` (a code) and ``not_computed`` (a sentence) say why: a small count gives no
    number at all rather than a number too unstable to compare.
    """

    observed: int
    population: int
    per: float
    dsr: float | None = None
    lower95: float | None = None
    upper95: float | None = None
    lower998: float | None = None
    upper998: float | None = None
    reason: Reason | None = None
    not_computed: str | None = None

    def __post_init__(self) -> None:
        numbers = (self.dsr, self.lower95, self.upper95, self.lower998, self.upper998)
        if self.reason is None:
            if any(n is None for n in numbers) or self.not_computed is not None:
                raise ValueError("a computed DSR has a value and all four limits, and no reason")
        elif any(n is not None for n in numbers) or not self.not_computed:
            raise ValueError("a DSR not computed has no value or limits, and says why")

    @property
    def computed(self) -> bool:
        return self.reason is None


def byar_limits(observed: int, z: float) -> tuple[float, float]:
    """Byar's approximate limits for a Poisson count ``observed`` (>= 0) at normal quantile ``z``.

    As PHE's guide and PHEindicatormethods give them; the indicators service's funnel limits use
    this same function for large counts (services/indicators/stats.py).
    """
    if observed < 0:
        raise ValueError(f"Byar's limits need a count of at least 0 (got {observed})")
    o, o1 = float(observed), float(observed + 1)
    lower = o * (1.0 - 1.0 / (9.0 * o) - z / (3.0 * math.sqrt(o))) ** 3 if observed else 0.0
    upper = o1 * (1.0 - 1.0 / (9.0 * o1) + z / (3.0 * math.sqrt(o1))) ** 3
    return max(0.0, lower), upper


def directly_standardised_rate(observed: Mapping[Stratum, int], population: Mapping[Stratum, int],
                               standard: StandardPopulation, *, sexes: Sequence[str] = SEXES,
                               min_age: int = 0, per: float = 100_000.0) -> DSR:
    """The DSR per ``per`` of ``observed`` events in ``population`` people, with Dobson limits.

    The strata are every band of ``standard`` from ``min_age`` for each of ``sexes``, each
    weighted by its band's weight; a stratum missing from both mappings has no events and no
    people. Such an empty stratum keeps its weight with a rate of 0 (PHE's own function refuses
    any zero population; docs/standardisation.md, "Empty strata", says why carehub does not).

    Not computed (a DSR with a reason, never a number) when the strata hold no one, when a
    stratum has events but no people (its rate is undefined), or when there are fewer than
    ``MIN_OBSERVED`` events in all. Population below ``min_age`` is not read; events below it,
    strata outside the standard or sexes outside ``sexes``, and negative counts are a caller's
    error (ValueError): the numerator and the standard would not describe the same people.
    """
    if per <= 0:
        raise ValueError(f"per must be > 0 (got {per})")
    bands = standard.from_age(min_age)
    _check_strata(observed, population, standard, min_age, sexes)
    strata = [(band, (band.lower, sex)) for sex in sexes for band in bands]
    events = sum(observed.get(key, 0) for _, key in strata)
    people = sum(population.get(key, 0) for _, key in strata)
    if people == 0:
        return DSR(events, people, per, reason="no_population",
                   not_computed=f"no population in the strata standardised over (ages {bands[0].lower}+)")
    empty = [(band, key) for band, key in strata if observed.get(key, 0) and not population.get(key, 0)]
    if empty:
        named = ", ".join(f"{band.label} {key[1]} ({observed[key]})" for band, key in empty)
        return DSR(events, people, per, reason="events_without_population",
                   not_computed=f"events in strata with no population, where a rate is undefined: {named}")
    if events < MIN_OBSERVED:
        return DSR(events, people, per, reason="too_few_events",
                   not_computed=f"{events} events, fewer than {MIN_OBSERVED}: too few for a reliable rate")
    weights = len(sexes) * sum(band.weight for band in bands)
    rates = [(observed.get(key, 0), band.weight / population[key]) for band, key in strata if population.get(key, 0)]
    dsr = math.fsum(x * w_n for x, w_n in rates) / weights * per
    variance = math.fsum(x * w_n * w_n for x, w_n in rates) / weights**2 * per**2
    lower95, upper95 = _dobson(dsr, variance, events, Z95)
    lower998, upper998 = _dobson(dsr, variance, events, Z998)
    return DSR(events, people, per, dsr, lower95, upper95, lower998, upper998)


def _dobson(dsr: float, variance: float, events: int, z: float) -> tuple[float, float]:
    """Dobson et al. (1991): Byar's limits for the total count, scaled to the DSR's variance."""
    lower, upper = byar_limits(events, z)
    scale = math.sqrt(variance / events)
    return dsr + scale * (lower - events), dsr + scale * (upper - events)


def _check_strata(observed: Mapping[Stratum, int], population: Mapping[Stratum, int],
                  standard: StandardPopulation, min_age: int, sexes: Sequence[str]) -> None:
    for what, counts in (("observed", observed), ("population", population)):
        for (lower, sex), count in counts.items():
            band = standard.band(lower)
            if sex not in sexes:
                raise ValueError(f"{what} stratum {band.label} {sex!r}: sex is not one of {', '.join(sexes)}")
            if count < 0:
                raise ValueError(f"{what} stratum {band.label} {sex}: count must be >= 0 (got {count})")
            if what == "observed" and count and lower < min_age:
                raise ValueError(f"observed stratum {band.label} {sex}: {count} events below min_age {min_age}, "
                                 "which the standard does not cover")
