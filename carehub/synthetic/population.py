"""The people of a synthetic region: who they really are, as opposed to how each organisation records them.

Age and sex follow England's shape (ONS mid-year estimates, 5-year bands) because
admission, death and care-home rates all hinge on age, and an indicator tested on a
flat age structure would look nothing like production.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from faker import Faker
from nhs_number.validate import calculate_checksum

from carehub.synthetic.config import DAY, RegionConfig
from carehub.synthetic.orgs import Directory
from carehub.v1 import care_event_pb2 as pb

# (lowest age, highest age, percent of England's population), ONS mid-2021 rounded.
AGE_BANDS: tuple[tuple[int, int, float], ...] = (
    (0, 4, 5.4), (5, 9, 5.9), (10, 14, 6.0), (15, 19, 5.6), (20, 24, 6.0), (25, 29, 6.6),
    (30, 34, 6.9), (35, 39, 6.7), (40, 44, 6.3), (45, 49, 6.4), (50, 54, 6.9), (55, 59, 6.7),
    (60, 64, 5.8), (65, 69, 5.0), (70, 74, 5.1), (75, 79, 3.8), (80, 84, 2.6), (85, 89, 1.6),
    (90, 100, 0.9),
)  # fmt: skip

# Annual probability of death by age (upper bound exclusive), roughly England's life tables;
# together with the age bands this gives close to 1% a year.
DEATH_RATE: tuple[tuple[int, float], ...] = (
    (1, 0.004), (15, 0.0001), (45, 0.0007), (65, 0.004), (75, 0.015), (85, 0.045), (90, 0.12), (200, 0.25),
)  # fmt: skip

INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # the letters Royal Mail uses in inward codes
DISTRICTS_PER_LOCALITY = 5
SYNTHETIC_NHS_LOW = 900_000_000  # first nine digits of 9000000000, the range kept for test patients


def by_age(table: tuple[tuple[int, float], ...], age: int) -> float:
    """Look a rate up in a table of (upper age bound exclusive, value) rows."""
    for upper, value in table:
        if age < upper:
            return value
    return table[-1][1]


@dataclass(slots=True)
class Person:
    index: int
    nhs_number: str
    given_name: str
    family_name: str
    birth_date: date
    age: int  # at the start of the window
    sex: pb.Sex.ValueType
    postcode: str
    locality: str
    practice: str
    hospital: str  # the acute trust they usually use
    frailty: float  # multiplies their use of urgent care; mean 1, long right tail
    address_line: str = ""  # first line of the address, e.g. "12 Pinkerton Circuit"
    frequent_ed: bool = False
    care_home: str = ""  # care home they live in at the start of the window
    death_time: int | None = None  # epoch seconds, when they die inside the window
    # (epoch seconds, care home code): moves into a care home during the window.
    care_home_moves: list[tuple[int, str]] = field(default_factory=list)

    def care_home_at(self, t: int) -> str:
        home = self.care_home
        for when, code in self.care_home_moves:
            if when <= t:
                home = code
        return home


def synthetic_nhs_number(rng: random.Random) -> str:
    """A valid number in the 9000000000-9999999999 test range, drawn from our own Random.

    ``nhs_number.generate`` uses the global random module, which would break determinism.
    """
    while True:
        stem = str(rng.randrange(SYNTHETIC_NHS_LOW, 1_000_000_000))
        check = calculate_checksum(stem)
        if check is not None and check < 10:
            return stem + str(check)


def _birth_date(rng: random.Random, start: date, age: int) -> date:
    try:
        latest = start.replace(year=start.year - age)
    except ValueError:  # 29 February
        latest = start.replace(year=start.year - age, day=28)
    return latest - timedelta(days=rng.randrange(365))


def _age(rng: random.Random) -> int:
    low, high, _ = rng.choices(AGE_BANDS, [w for _, _, w in AGE_BANDS])[0]
    if low >= 90:
        return min(high, low + int(rng.expovariate(1 / 3.5)))
    return rng.randint(low, high)


def _female_share(age: int) -> float:
    if age < 60:
        return 0.5
    if age < 75:
        return 0.52
    if age < 85:
        return 0.55
    return 0.63


def _districts(fake: Faker, localities: tuple[str, ...]) -> dict[str, list[str]]:
    """Postcode districts per locality, so neighbours share outward codes as they do in life."""
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for loc in localities:
        out[loc] = []
        while len(out[loc]) < DISTRICTS_PER_LOCALITY:
            district = str(fake.postcode()).split()[0]
            if district not in seen:
                seen.add(district)
                out[loc].append(district)
    return out


def build_population(config: RegionConfig, directory: Directory) -> list[Person]:
    rng = random.Random(f"{config.seed}/population")
    fake = Faker("en_GB")
    fake.seed_instance(config.seed)
    # Addresses come from a Faker of their own, so adding them left every name and postcode as it was.
    streets = Faker("en_GB")
    streets.seed_instance(f"{config.seed}/addresses")
    districts = _districts(fake, directory.localities)
    practices = {loc: directory.practices_in(loc) for loc in directory.localities}
    start = config.start_date
    used_nhs: set[str] = set()
    people: list[Person] = []
    for i in range(config.people):
        age = _age(rng)
        female = rng.random() < _female_share(age)
        given = str(fake.first_name_female() if female else fake.first_name_male())
        family = str(fake.last_name())
        locality = rng.choice(directory.localities)
        postcode = (
            f"{rng.choice(districts[locality])} {rng.randrange(10)}"
            f"{rng.choice(INWARD_LETTERS)}{rng.choice(INWARD_LETTERS)}"
        )
        number = synthetic_nhs_number(rng)
        while number in used_nhs:
            number = synthetic_nhs_number(rng)
        used_nhs.add(number)
        home = directory.home_hospital(locality)
        hospital = home if rng.random() < 0.85 or len(directory.hospitals) == 1 else rng.choice(directory.hospitals)
        people.append(
            Person(
                index=i,
                nhs_number=number,
                given_name=given,
                family_name=family,
                birth_date=_birth_date(rng, start, age),
                age=age,
                sex=pb.SEX_FEMALE if female else pb.SEX_MALE,
                postcode=postcode,
                locality=locality,
                practice=rng.choice(practices[locality]).code,
                hospital=hospital.code,
                frailty=rng.gammavariate(0.8, 1 / 0.8),
                frequent_ed=16 <= age <= 80 and rng.random() < 0.004,
                address_line=str(streets.street_address()).split("\n")[0],
            )
        )
    _place_in_care_homes(config, directory, people, rng)
    _schedule_deaths(config, people, rng)
    return people


def _place_in_care_homes(config: RegionConfig, directory: Directory, people: list[Person], rng: random.Random) -> None:
    """Choose residents among the old, weighted by age (weighted sampling without replacement)."""
    if not directory.care_homes:
        return
    target = round(config.people * config.care_home_resident_share)
    weights = {p.index: 30.0 if p.age >= 85 else 6.0 if p.age >= 75 else 1.0 for p in people if p.age >= 65}
    keyed = sorted(weights, key=lambda i: rng.random() ** (1 / weights[i]), reverse=True)
    for i in keyed[:target]:
        people[i].care_home = rng.choice(directory.care_homes_in(people[i].locality)).code


def _schedule_deaths(config: RegionConfig, people: list[Person], rng: random.Random) -> None:
    if config.days < 2:
        return
    years = config.days / 365
    for p in people:
        hazard = by_age(DEATH_RATE, p.age) * (2.5 if p.care_home else 1.0) * (0.6 + 0.4 * min(p.frailty, 4.0))
        if rng.random() < 1 - math.exp(-hazard * years):
            # not on the first day, so every person is registered before they die
            p.death_time = config.window_start + DAY + rng.randrange((config.days - 1) * DAY)
