"""The hard region (carehub.synthetic.hazards): what it promises, checked against its own ground truth.

The default region must not change: it is generated here before and after a hard region and compared.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import date

import pytest
from nhs_number.validate import is_valid

from carehub.synthetic import Region, RegionConfig, decode, generate_region, iter_records
from carehub.synthetic.hazards import (
    NAMESAKE_NAME_DOB,
    NAMESAKE_NAME_YEAR,
    NAMESAKE_SURNAME_DOB,
    NICKNAMES,
    REC_DAY_MONTH,
    REC_MAIDEN,
    REC_NHS_INVALID,
    REC_NHS_OTHER,
    REC_NICKNAME,
    REC_NO_NHS_ORG,
    REC_OLD_ADDRESS,
    TWIN,
    HazardRegion,
    Hazards,
    generate_hazard_region,
    one_name,
)
from carehub.v1 import care_event_pb2 as pb

PEOPLE = 2_000


@pytest.fixture(scope="module")
def hard() -> HazardRegion:
    return generate_hazard_region(RegionConfig(people=PEOPLE, seed=5))


def digest(region: Region) -> str:
    h = hashlib.sha256()
    for record in region.records:
        h.update(record.key + record.value)
    return h.hexdigest()


def test_the_default_region_is_untouched_and_the_hard_one_is_deterministic() -> None:
    small = RegionConfig(people=300, seed=3)
    before = digest(generate_region(small))
    one = generate_hazard_region(small)
    assert digest(generate_region(small)) == before  # nothing global moved
    again = generate_hazard_region(small)
    assert digest(one.region) == digest(again.region) != before
    assert one.counts() == again.counts()
    assert digest(generate_hazard_region(RegionConfig(people=300, seed=4)).region) != digest(one.region)


def test_twins_share_surname_and_birth_date_but_never_one_name(hard: HazardRegion) -> None:
    people = hard.region.people
    assert len(hard.twins) == round(PEOPLE * Hazards().twin_share / 2)
    same_sex = together = 0
    for a, b in hard.twins:
        pa, pb_ = people[a], people[b]
        assert (pa.family_name, pa.birth_date, pa.age) == (pb_.family_name, pb_.birth_date, pb_.age)
        assert not one_name(pa.given_name, pb_.given_name)
        same_sex += pa.sex == pb_.sex
        at_home = (pa.postcode, pa.address_line) == (pb_.postcode, pb_.address_line)
        together += at_home
        if pa.age < Hazards().twins_together_age:
            assert at_home
        assert TWIN in hard.people_hazards[a] and TWIN in hard.people_hazards[b]
    assert 0.45 < same_sex / len(hard.twins) < 0.9
    assert together > len(hard.twins) / 4
    assert one_name("John", "Jack") and one_name("Bill", "Will") and not one_name("Ella", "Bella")


def test_households_namesakes_and_common_names(hard: HazardRegion) -> None:
    people = hard.region.people
    homes = Counter((p.postcode, p.address_line) for p in people)
    shared = sum(n for n in homes.values() if n > 1)
    assert shared > PEOPLE / 3  # most people live with someone
    surnames_at_home = Counter((p.postcode, p.address_line, p.family_name) for p in people)
    assert sum(n for n in surnames_at_home.values() if n > 1) > PEOPLE / 4
    kinds = Counter(kind for _, _, kind in hard.namesakes)
    assert kinds[NAMESAKE_NAME_YEAR] == round(PEOPLE * Hazards().namesake_name_year)
    assert kinds[NAMESAKE_SURNAME_DOB] == round(PEOPLE * Hazards().namesake_surname_dob)
    assert kinds[NAMESAKE_NAME_DOB] == round(PEOPLE * Hazards().namesake_name_dob)
    for a, b, kind in hard.namesakes:
        pa, pb_ = people[a], people[b]
        assert pa.postcode != pb_.postcode and pa.sex == pb_.sex and pa.family_name == pb_.family_name
        if kind == NAMESAKE_NAME_YEAR:
            assert pa.given_name == pb_.given_name and pa.birth_date.year == pb_.birth_date.year
            assert pa.birth_date != pb_.birth_date
        elif kind == NAMESAKE_SURNAME_DOB:
            assert pa.given_name != pb_.given_name and pa.birth_date == pb_.birth_date
        else:
            assert pa.given_name == pb_.given_name and pa.birth_date == pb_.birth_date
    given = Counter(p.given_name for p in people)
    assert given.most_common(1)[0][1] > 4 * PEOPLE / len(given)  # common names are common


def test_record_hazards_are_what_their_labels_say(hard: HazardRegion) -> None:
    region, people = hard.region, hard.region.people
    by_label: Counter[str] = Counter()
    checked = 0
    for rec in region.local_records:
        labels = hard.record_hazards.get((rec.org, rec.local_id), set())
        by_label.update(labels)
        person, msg = people[rec.person], rec.message
        if rec.org in hard.orgs_without_nhs:
            assert msg.national_id == "" and REC_NO_NHS_ORG in labels
        if REC_NHS_INVALID in labels:
            assert msg.national_id != person.nhs_number and not is_valid(msg.national_id)
        if REC_NHS_OTHER in labels:
            assert msg.national_id != person.nhs_number and is_valid(msg.national_id)
        if msg.national_id and not labels & {REC_NHS_INVALID, REC_NHS_OTHER}:
            assert msg.national_id == person.nhs_number
        if REC_DAY_MONTH in labels:
            born = date.fromisoformat(msg.birth_date)
            assert (born.month, born.day) == (person.birth_date.day, person.birth_date.month)
        elif not rec.typo:
            assert msg.birth_date == person.birth_date.isoformat()
        if REC_NICKNAME in labels and rec.typo != "given_name":
            assert msg.given_name in NICKNAMES[person.given_name]
        if REC_MAIDEN in labels and rec.typo != "family_name":
            assert msg.family_name != person.family_name
        if REC_OLD_ADDRESS in labels and rec.typo not in ("postcode", "address_line"):
            assert (msg.postcode, msg.address_line) != (person.postcode, person.address_line)
        checked += 1
    assert checked == len(region.local_records) > PEOPLE
    for label in (REC_NO_NHS_ORG, REC_NHS_INVALID, REC_NICKNAME, REC_MAIDEN, REC_OLD_ADDRESS, REC_DAY_MONTH):
        assert by_label[label] > 0, label
    assert hard.orgs_without_nhs and all(o.startswith(("LA", "CH")) for o in hard.orgs_without_nhs)


def test_every_valid_event_belongs_to_a_known_record(hard: HazardRegion) -> None:
    seen = 0
    for record in iter_records(hard.region, duplicates=False, malformed=False):
        event = decode(record)
        assert (event.source_org, event.person.local_id) in hard.region.truth
        assert event.event_type != pb.EVENT_TYPE_UNSPECIFIED
        seen += 1
    assert seen > PEOPLE


def test_hazard_shares_are_checked() -> None:
    with pytest.raises(ValueError, match="twin_share"):
        Hazards(twin_share=1.5)
    with pytest.raises(ValueError, match="must not be negative"):
        Hazards(given_name_zipf=-1)
