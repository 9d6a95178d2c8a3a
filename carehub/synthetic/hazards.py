"""A harder synthetic region: the people and the record keeping that make identity linkage hard.

The default region (``generate_region``) gives every person a name, birth date and address of their
own, so no two people look alike and its linkage figures are easier than real data's. This module
builds, from the same parts and opt-in only, a region with what real registers contain:

- **twins**: twin maternities are about 1.6% of maternities in the UK, so about 3.2% of people are a
  twin; twins share surname and birth date, live together while young (and some later), are of the
  same sex two times in three, and often get similar given names (same initial letter, a rhyme, the
  male and female forms of one name);
- **households**: partners and children sharing a surname and an address, most partners taking the
  other's surname on marriage (their older records keep the maiden name);
- **common names**: given names drawn by frequency, not uniformly; namesakes sharing full name and
  birth year, surname, birth date and sex (another given name, another address), and a few sharing
  full name and birth date;
- **moves**: households that moved, some organisations still holding the old postcode and address;
- **record keeping**: day and month transposed, nicknames ("Bill" for William), mistyped NHS numbers
  (most fail the check digit, so ingest drops them; a few are another valid number), addresses left
  out, and organisations that never record an NHS number (some local authorities' social care and
  most care homes).

``generate_hazard_region(RegionConfig(people=10_000, seed=11))`` returns a :class:`HazardRegion`: a
:class:`Region` (events in publish order, ``truth`` for every local record) and what was done to
whom, so that a linkage bench can say which hazard each error came from. The default region's
output is untouched: nothing here is used unless called.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from faker import Faker
from faker.providers.person.en_GB import Provider as Names

from carehub.synthetic.config import RegionConfig
from carehub.synthetic.identity import LocalRecord, Registry
from carehub.synthetic.noise import name_typo, postcode_typo
from carehub.synthetic.orgs import Directory, Organisation, build_directory
from carehub.synthetic.population import INWARD_LETTERS, Person, build_population, synthetic_nhs_number
from carehub.synthetic.region import Region, region_of
from carehub.v1 import care_event_pb2 as pb

# Hazards of people: how each was made (person index -> labels) and the pairs that look alike.
TWIN = "twin"
PARTNER = "partner"  # lives with a partner
CHILD = "child"  # lives with a parent
MAIDEN_NAME = "maiden name"  # took a partner's surname; some records keep the old one
MOVED = "moved"  # some records keep the previous address
NAMESAKE_NAME_YEAR = "namesake: full name and birth year"
NAMESAKE_SURNAME_DOB = "namesake: surname, birth date and sex"
NAMESAKE_NAME_DOB = "namesake: full name and birth date"

# Hazards of records, (organisation, local id) -> labels.
REC_MAIDEN = "maiden name"
REC_OLD_ADDRESS = "previous address"
REC_NICKNAME = "nickname"
REC_DAY_MONTH = "day and month transposed"
REC_NHS_INVALID = "NHS number mistyped (check digit fails)"
REC_NHS_OTHER = "NHS number mistyped (another valid number)"
REC_NO_NHS_ORG = "organisation holds no NHS number"
REC_NO_ADDRESS = "address left out"

# Short forms used in records for a given name. Deliberately not the linker's own list
# (services/identity/weights/nicknames.json): records in life use some the linker does not know.
NICKNAMES: dict[str, tuple[str, ...]] = {
    "William": ("Bill", "Will", "Billy"), "Robert": ("Bob", "Rob", "Bobby"), "Richard": ("Dick", "Rick", "Richie"),
    "Margaret": ("Peggy", "Maggie", "Meg"), "Elizabeth": ("Liz", "Beth", "Betty", "Lizzie"),
    "Katherine": ("Kate", "Kathy", "Kitty"), "Catherine": ("Cathy", "Kate", "Cat"), "James": ("Jim", "Jimmy", "Jamie"),
    "John": ("Jack", "Johnny"), "Edward": ("Ted", "Eddie", "Ned"), "Thomas": ("Tom", "Tommy"),
    "Christopher": ("Chris", "Kit"), "Michael": ("Mike", "Mick", "Mikey"), "Anthony": ("Tony",),
    "Charles": ("Charlie", "Chuck"), "Henry": ("Harry", "Hal"), "Alexander": ("Alex", "Sandy"),
    "Patricia": ("Pat", "Patsy", "Trish"), "Susan": ("Sue", "Susie"), "Deborah": ("Debbie", "Deb"),
    "Rebecca": ("Becky", "Becca"), "Jennifer": ("Jenny", "Jen"), "Victoria": ("Vicky", "Tori"),
    "Samantha": ("Sam", "Sammy"), "Samuel": ("Sam", "Sammy"), "Daniel": ("Dan", "Danny"),
    "Matthew": ("Matt",), "Andrew": ("Andy", "Drew"), "Stephen": ("Steve",), "Steven": ("Steve",),
    "Joseph": ("Joe", "Joey"), "Benjamin": ("Ben", "Benny"), "Nicholas": ("Nick", "Nicky"),
    "Jonathan": ("Jon", "Jonny"), "Timothy": ("Tim",), "Peter": ("Pete",), "David": ("Dave", "Davy"),
    "Frederick": ("Fred", "Freddie"), "Gerald": ("Gerry",), "Lawrence": ("Larry", "Laurie"),
    "Leonard": ("Len", "Lenny"), "Ronald": ("Ron", "Ronnie"), "Donald": ("Don",), "Kenneth": ("Ken", "Kenny"),
    "Raymond": ("Ray",), "Dorothy": ("Dot", "Dolly", "Dottie"), "Barbara": ("Barbie", "Babs"),
    "Christine": ("Chris", "Chrissie"), "Jacqueline": ("Jackie",), "Josephine": ("Jo", "Josie"),
    "Joanne": ("Jo",), "Gillian": ("Gill", "Jill"), "Alison": ("Ali",), "Natalie": ("Nat",),
    "Abigail": ("Abby", "Abi"), "Eleanor": ("Ellie", "Nell"), "Helen": ("Nell",), "Jessica": ("Jess",),
    "Charlotte": ("Lottie", "Charlie"), "Amanda": ("Mandy",), "Kimberley": ("Kim",), "Gemma": ("Gem",),
    "Nicola": ("Nicky",), "Frances": ("Fran",), "Francis": ("Frank",), "Philip": ("Phil",),
    "Gregory": ("Greg",), "Terence": ("Terry",), "Geoffrey": ("Geoff",), "Harold": ("Harry",),
    "Leslie": ("Les",), "Douglas": ("Doug",), "Graham": ("Gray",), "Jacob": ("Jake",), "Oliver": ("Ollie",),
    "Joshua": ("Josh",), "Zachary": ("Zach",), "Nathan": ("Nate",), "Bradley": ("Brad",), "Gordon": ("Gordy",),
}  # fmt: skip

# Twins' given names that differ by a letter or two (same sex) and the male and female forms of one name.
SIMILAR_TWIN_NAMES: tuple[tuple[str, str, bool], ...] = (
    ("Ella", "Bella", True), ("Lily", "Millie", True), ("Ava", "Eva", True), ("Isla", "Ivy", True),
    ("Jack", "Jake", False), ("Aiden", "Jayden", False), ("Harry", "Harvey", False), ("Leo", "Theo", False),
    ("Amy", "Amie", True), ("Mason", "Jason", False), ("Sophie", "Sophia", True), ("Ryan", "Bryan", False),
)  # fmt: skip
TWIN_FORMS: tuple[tuple[str, str], ...] = (
    ("Daniel", "Danielle"), ("Louis", "Louise"), ("Oliver", "Olivia"), ("Francis", "Frances"),
    ("George", "Georgia"), ("Joseph", "Josephine"), ("Charles", "Charlotte"), ("Robert", "Roberta"),
    ("Samuel", "Samantha"), ("Paul", "Paula"), ("Stephen", "Stephanie"), ("Michael", "Michelle"),
)  # (male, female)  # fmt: skip


def one_name(a: str, b: str) -> bool:
    """Whether two given names are one name: the same, or forms of one name in NICKNAMES (John and Jack,
    Bill and Will)."""
    return a == b or any({a, b} <= {full, *short} for full, short in NICKNAMES.items())


@dataclass(frozen=True)
class Hazards:
    """How often each hazard happens. Shares are of people unless said otherwise."""

    given_name_zipf: float = 0.7  # given names drawn with weight 1/rank^s (Faker's lists run commonest first)
    twin_share: float = 0.032  # people who are a twin (twin maternities: ~1.6% of UK maternities)
    twins_together_age: int = 25  # twins younger than this live together; older ones...
    twins_together_older: float = 0.2  # ...share an address this often
    twin_same_sex: float = 2 / 3
    twin_same_initial: float = 0.3  # twins' given names: same initial letter,
    twin_similar_name: float = 0.08  # one or two letters apart (Ella and Bella),
    twin_name_forms: float = 0.3  # of mixed-sex twins: the two forms of one name (Louis and Louise)
    partner_share: float = 0.5  # adults 20-90 (not in a care home) living with a partner
    takes_surname: float = 0.7  # partners taking the other's surname
    child_with_parent: float = 0.85  # under-18s living with a parent
    young_adult_with_parent: float = 0.35  # 18-24s still living with a parent
    namesake_name_year: float = 0.01  # pairs sharing given name, surname, sex and birth year
    namesake_surname_dob: float = 0.005  # pairs sharing surname, birth date and sex (other given name, address)
    namesake_name_dob: float = 0.001  # pairs sharing full name, birth date and sex (another address)
    household_moved: float = 0.12  # households that moved; each of their records keeps the old address...
    old_address_record: float = 0.35  # ...this often
    maiden_name_record: float = 0.3  # records of a partner who took a surname that keep the maiden name
    nickname_record: float = 0.04  # records using a short form of the given name (when it has one)
    day_month_record: float = 0.01  # records with birth day and month transposed (when the day is 1-12)
    nhs_invalid_record: float = 0.01  # NHS number mistyped so the check digit fails (ingest drops it)
    nhs_other_record: float = 0.002  # NHS number mistyped into another valid number
    no_address_record: float = 0.02  # postcode and address left out
    social_care_without_nhs: float = 0.5  # local authorities whose social care records hold no NHS number
    care_homes_without_nhs: float = 0.7  # care homes that hold no NHS number

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if name in ("given_name_zipf", "twins_together_age"):
                continue
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.given_name_zipf < 0 or self.twins_together_age < 0:
            raise ValueError("given_name_zipf and twins_together_age must not be negative")


@dataclass
class HazardRegion:
    """A region and what makes it hard: per person and per local record, the hazards applied."""

    region: Region
    hazards: Hazards
    people_hazards: dict[int, set[str]]
    record_hazards: dict[tuple[str, str], set[str]]
    twins: list[tuple[int, int]]
    namesakes: list[tuple[int, int, str]]  # (person, namesake made from them, kind)
    orgs_without_nhs: frozenset[str]

    def counts(self) -> dict[str, int]:
        """How many people and local records carry each hazard, and how many pairs of each kind."""
        out: Counter[str] = Counter()
        for labels in self.people_hazards.values():
            out.update(f"people: {x}" for x in labels)
        for labels in self.record_hazards.values():
            out.update(f"records: {x}" for x in labels)
        out["pairs: twins"] = len(self.twins)
        for _, _, kind in self.namesakes:
            out[f"pairs: {kind}"] += 1
        out["local records"] = len(self.region.local_records)
        out["organisations holding no NHS number"] = len(self.orgs_without_nhs)
        return dict(sorted(out.items()))


@dataclass
class _Extra:
    """What the population step leaves for the record step."""

    maiden: dict[int, str] = field(default_factory=dict)  # person -> surname before marriage
    old_address: dict[int, tuple[str, str]] = field(default_factory=dict)  # person -> (postcode, address)
    labels: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))


def _age_on(born: date, day: date) -> int:
    return max(0, day.year - born.year - ((day.month, day.day) < (born.month, born.day)))


class _Population:
    """Turns independent people into families, twins and namesakes, keeping the age structure."""

    def __init__(self, config: RegionConfig, directory: Directory, hazards: Hazards, people: list[Person]) -> None:
        self.config, self.directory, self.hz, self.people = config, directory, hazards, people
        self.rng = random.Random(f"{config.seed}/hazards/people")
        self.extra = _Extra()
        self.touched: set[int] = set()  # people given a role, so later steps leave them alone
        self.by_age: dict[int, list[int]] = defaultdict(list)
        for p in people:
            self.by_age[p.age].append(p.index)
        fake = Faker("en_GB")
        fake.seed_instance(f"{config.seed}/hazards/names")
        self.fake = fake
        self.male: tuple[str, ...] = tuple(Names.first_names_male)
        self.female: tuple[str, ...] = tuple(Names.first_names_female)
        s = hazards.given_name_zipf
        self.male_w = [1 / (r + 1) ** s for r in range(len(self.male))]
        self.female_w = [1 / (r + 1) ** s for r in range(len(self.female))]
        self.twins: list[tuple[int, int]] = []
        self.namesakes: list[tuple[int, int, str]] = []

    # ---- helpers
    def given(self, sex: pb.Sex.ValueType, initial: str = "") -> str:
        names, weights = (self.female, self.female_w) if sex == pb.SEX_FEMALE else (self.male, self.male_w)
        if initial:
            pool = [(n, w) for n, w in zip(names, weights, strict=True) if n[0] == initial]
            if pool:
                return self.rng.choices([n for n, _ in pool], [w for _, w in pool])[0]
        return self.rng.choices(names, weights)[0]

    def home_of(self, target: Person, anchor: Person) -> None:
        target.postcode, target.address_line = anchor.postcode, anchor.address_line
        target.locality, target.practice, target.hospital = anchor.locality, anchor.practice, anchor.hospital

    def set_birth(self, person: Person, born: date) -> None:
        person.birth_date = born
        person.age = _age_on(born, self.config.start_date)

    def pick(self, ages: Sequence[int], *, sex: pb.Sex.ValueType | None = None, exclude: int = -1,
             single: bool = True) -> Person | None:
        """Someone of one of ``ages`` not yet given a role (and of ``sex``), not in a care home."""
        pool = [i for a in ages for i in self.by_age.get(a, ()) if i != exclude and not self.people[i].care_home
                and (not single or i not in self.touched) and (sex is None or self.people[i].sex == sex)]
        return self.people[self.rng.choice(pool)] if pool else None

    # ---- steps
    def build(self) -> None:
        for p in self.people:  # common names are common
            p.given_name = self.given(p.sex)
        self.households()
        self.twin_pairs()
        self.namesake_pairs()
        self.moves()

    def households(self) -> None:
        rng, hz = self.rng, self.hz
        adults = [p for p in self.people if 20 <= p.age <= 90 and not p.care_home]
        rng.shuffle(adults)
        taken: set[int] = set()
        parents: list[Person] = []
        for a in adults:
            if a.index in taken or rng.random() >= hz.partner_share / 2:  # each couple takes two adults
                continue
            want = pb.SEX_FEMALE if a.sex == pb.SEX_MALE else pb.SEX_MALE
            ages = [a.age + d for d in range(-6, 7)]
            pool = [i for x in ages for i in self.by_age.get(x, ())
                    if i not in taken and i != a.index and self.people[i].sex == want and not self.people[i].care_home]
            if not pool:
                continue
            b = self.people[rng.choice(pool)]
            taken.update((a.index, b.index))
            self.home_of(b, a)
            mover, other = (b, a) if b.sex == pb.SEX_FEMALE else (a, b)
            if rng.random() < hz.takes_surname and mover.family_name != other.family_name:
                self.extra.maiden[mover.index] = mover.family_name
                mover.family_name = other.family_name
                self.extra.labels[mover.index].add(MAIDEN_NAME)
            for p in (a, b):
                self.extra.labels[p.index].add(PARTNER)
            parents.append(a)
        self.touched |= taken
        parents_by_age: dict[int, list[Person]] = defaultdict(list)
        for anchor in parents:
            parents_by_age[anchor.age].append(anchor)
        for c in self.people:
            share = hz.child_with_parent if c.age < 18 else hz.young_adult_with_parent if c.age < 25 else 0.0
            if c.index in self.touched or c.care_home or rng.random() >= share:
                continue
            candidates = [x for gap in range(18, 46) for x in parents_by_age.get(c.age + gap, ())]
            if not candidates:
                continue
            parent = rng.choice(candidates)
            self.home_of(c, parent)
            c.family_name = self.extra.maiden.get(parent.index, parent.family_name) if rng.random() < 0.1 else (
                parent.family_name)
            self.extra.labels[c.index].add(CHILD)
            self.touched.add(c.index)

    def twin_pairs(self) -> None:
        rng, hz = self.rng, self.hz
        wanted = round(len(self.people) * hz.twin_share / 2)
        candidates = [p for p in self.people if not p.care_home and TWIN not in self.extra.labels[p.index]]
        rng.shuffle(candidates)
        for a in candidates:
            if len(self.twins) >= wanted:
                break
            if TWIN in self.extra.labels[a.index] or a.index in self.extra.maiden:
                continue
            same_sex = rng.random() < hz.twin_same_sex
            sex = a.sex if same_sex else (pb.SEX_FEMALE if a.sex == pb.SEX_MALE else pb.SEX_MALE)
            b = self.pick([a.age], sex=sex, exclude=a.index)
            if b is None:
                continue
            self.touched.update((a.index, b.index))
            self.set_birth(b, a.birth_date)
            b.family_name = a.family_name
            if a.age < hz.twins_together_age or rng.random() < hz.twins_together_older:
                self.home_of(b, a)
            roll = rng.random()
            if not same_sex and roll < hz.twin_name_forms:
                male, female = rng.choice(TWIN_FORMS)
                a.given_name, b.given_name = (male, female) if a.sex == pb.SEX_MALE else (female, male)
            elif same_sex and roll < hz.twin_similar_name:
                pairs = [x for x in SIMILAR_TWIN_NAMES if x[2] == (a.sex == pb.SEX_FEMALE)]
                a.given_name, b.given_name = rng.choice(pairs)[:2]
            elif roll < hz.twin_similar_name + hz.twin_same_initial:
                b.given_name = self.given(b.sex, initial=a.given_name[0])
            else:
                b.given_name = self.given(b.sex)
            for _ in range(10):  # twins are not given one name, nor one name and its short form (John and Jack)
                if not one_name(a.given_name, b.given_name):
                    break
                b.given_name = self.given(b.sex)
            self.twins.append((a.index, b.index))
            for p in (a, b):
                self.extra.labels[p.index].add(TWIN)

    def namesake_pairs(self) -> None:
        rng, hz, n = self.rng, self.hz, len(self.people)
        plan = ((NAMESAKE_NAME_YEAR, hz.namesake_name_year), (NAMESAKE_SURNAME_DOB, hz.namesake_surname_dob),
                (NAMESAKE_NAME_DOB, hz.namesake_name_dob))
        for kind, share in plan:
            wanted, tries = round(n * share), 0
            made = 0
            while made < wanted and tries < 20 * max(wanted, 1):
                tries += 1
                a = self.people[rng.randrange(n)]
                b = self.pick([a.age - 1, a.age, a.age + 1], sex=a.sex, exclude=a.index)
                if b is None or b.postcode == a.postcode:
                    continue
                self.touched.add(b.index)
                if kind == NAMESAKE_NAME_YEAR:
                    start, end = date(a.birth_date.year, 1, 1), date(a.birth_date.year, 12, 31)
                    born = start + timedelta(days=rng.randrange((end - start).days + 1))
                    while born == a.birth_date:
                        born = start + timedelta(days=rng.randrange((end - start).days + 1))
                    self.set_birth(b, born)
                    b.given_name, b.family_name = a.given_name, a.family_name
                elif kind == NAMESAKE_SURNAME_DOB:
                    self.set_birth(b, a.birth_date)
                    b.family_name = a.family_name
                    while b.given_name == a.given_name:
                        b.given_name = self.given(b.sex)
                else:
                    self.set_birth(b, a.birth_date)
                    b.given_name, b.family_name = a.given_name, a.family_name
                self.namesakes.append((a.index, b.index, kind))
                self.extra.labels[b.index].add(kind)
                made += 1

    def moves(self) -> None:
        """Some households moved (within the region mostly); their old address lives on in some records."""
        rng, hz = self.rng, self.hz
        homes: dict[tuple[str, str], list[int]] = defaultdict(list)
        for p in self.people:
            if not p.care_home:
                homes[(p.postcode, p.address_line)].append(p.index)
        districts = sorted({p.postcode.split()[0] for p in self.people})
        for key in sorted(homes):
            if rng.random() >= hz.household_moved:
                continue
            district = key[0].split()[0] if rng.random() < 0.4 else rng.choice(districts)
            old_postcode = (f"{district} {rng.randrange(10)}{rng.choice(INWARD_LETTERS)}"
                            f"{rng.choice(INWARD_LETTERS)}")
            old_address = str(self.fake.street_address()).split("\n")[0]
            for i in homes[key]:
                self.extra.old_address[i] = (old_postcode, old_address)
                self.extra.labels[i].add(MOVED)


def _mistype_digit(rng: random.Random, number: str) -> str:
    """One digit changed: the NHS number's mod-11 check digit catches every such error."""
    i = rng.randrange(len(number))
    return number[:i] + rng.choice([d for d in "0123456789" if d != number[i]]) + number[i + 1 :]


class HazardRegistry(Registry):
    """Each organisation's copy of a person's details, with the record keeping of real registers."""

    def __init__(self, config: RegionConfig, hazards: Hazards, extra: _Extra, without_nhs: frozenset[str]) -> None:
        super().__init__(config)
        self._hz, self._extra, self._without_nhs = hazards, extra, without_nhs
        self.record_hazards: dict[tuple[str, str], set[str]] = {}

    def _make(self, person: Person, org: Organisation, *, duplicate: bool) -> LocalRecord:
        rng = self._rng(org.code)
        local_id = self._new_id(org, person.index)
        hz, extra = self._hz, self._extra
        own = random.Random(f"{self._config.seed}/hazards/record/{org.code}/{local_id}")
        labels: set[str] = set()
        missing_share = 0.7 if duplicate else self._config.missing_national_id_share
        nhs = "" if rng.random() < missing_share else person.nhs_number
        if org.code in self._without_nhs:
            nhs = ""
            labels.add(REC_NO_NHS_ORG)
        elif nhs:
            roll = own.random()
            if roll < hz.nhs_invalid_record:
                nhs = _mistype_digit(own, nhs)
                labels.add(REC_NHS_INVALID)
            elif roll < hz.nhs_invalid_record + hz.nhs_other_record:
                other = synthetic_nhs_number(own)
                while other == nhs:
                    other = synthetic_nhs_number(own)
                nhs = other
                labels.add(REC_NHS_OTHER)
        given, family, born = person.given_name, person.family_name, person.birth_date
        postcode, address = person.postcode, person.address_line
        if person.index in extra.maiden and own.random() < hz.maiden_name_record:
            family = extra.maiden[person.index]
            labels.add(REC_MAIDEN)
        if person.index in extra.old_address and own.random() < hz.old_address_record:
            postcode, address = extra.old_address[person.index]
            labels.add(REC_OLD_ADDRESS)
        if given in NICKNAMES and own.random() < hz.nickname_record:
            given = own.choice(NICKNAMES[given])
            labels.add(REC_NICKNAME)
        if born.day <= 12 and born.day != born.month and own.random() < hz.day_month_record:
            born = born.replace(month=born.day, day=born.month)
            labels.add(REC_DAY_MONTH)
        if own.random() < hz.no_address_record:
            postcode = address = ""
            labels.add(REC_NO_ADDRESS)
        msg = pb.Person(local_id=local_id, national_id=nhs, given_name=given, family_name=family,
                        birth_date=born.isoformat(), sex=person.sex, postcode=postcode, address_line=address)
        typo = ""
        if rng.random() < self._config.typo_share:
            typo = rng.choices(("given_name", "family_name", "postcode", "address_line"), (4, 4, 2, 2))[0]
            if not getattr(msg, typo):
                typo = ""
            elif typo == "postcode":
                msg.postcode = postcode_typo(rng, msg.postcode)
            else:
                setattr(msg, typo, name_typo(rng, getattr(msg, typo)))
        self.truth[(org.code, local_id)] = person.index
        if labels:
            self.record_hazards[(org.code, local_id)] = labels
        return LocalRecord(org.code, local_id, person.index, msg, typo, duplicate)


def orgs_without_nhs(directory: Directory, hazards: Hazards, seed: int) -> frozenset[str]:
    """The organisations that never record an NHS number: some local authorities, most care homes."""
    rng = random.Random(f"{seed}/hazards/orgs")
    out = {o.code for o in directory.social_care if rng.random() < hazards.social_care_without_nhs}
    out |= {o.code for o in directory.care_homes if rng.random() < hazards.care_homes_without_nhs}
    return frozenset(out)


def generate_hazard_region(config: RegionConfig | None = None, hazards: Hazards | None = None) -> HazardRegion:
    """The region of ``config`` with the hazards of real registers; the same arguments give the same bytes.

    Events are made exactly as ``generate_region`` makes them (activity, delays, resends, malformed
    copies), from a population and a registry that carry the hazards.
    """
    config = config or RegionConfig()
    hazards = hazards or Hazards()
    directory = build_directory(config, random.Random(f"{config.seed}/orgs"))
    people = build_population(config, directory)
    pop = _Population(config, directory, hazards, people)
    pop.build()
    without_nhs = orgs_without_nhs(directory, hazards, config.seed)
    registry = HazardRegistry(config, hazards, pop.extra, without_nhs)
    region = region_of(config, directory, people, registry)
    labels = {i: set(v) for i, v in pop.extra.labels.items() if v}
    return HazardRegion(region=region, hazards=hazards, people_hazards=labels,
                        record_hazards=registry.record_hazards, twins=pop.twins, namesakes=pop.namesakes,
                        orgs_without_nhs=without_nhs)


