"""The synthetic region: determinism, contract conformance, ground truth and realistic shape.

The ACSC check below uses its own copy of the Purdy list (docs/indicators-reference.md,
section 2) rather than the generator's, so a wrong generator list cannot vouch for itself.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest
from google.protobuf import json_format
from nhs_number.validate import is_valid

from carehub.synthetic import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    MALFORMED_KINDS,
    Region,
    RegionConfig,
    codes,
    decode,
    generate_region,
    iter_records,
    write_jsonl,
)
from carehub.v1 import care_event_pb2 as pb
from services.ingest.validation import Limits, validate

ICD10_SHAPE = re.compile(r"^[A-Z][0-9]{2}(\.?[0-9A-Z]{1,4})?$")
DAY = 86_400

# Purdy et al. 2009 as listed in docs/indicators-reference.md section 2 (primary-position rules).
PURDY = (
    "I20", "I24.0", "I24.8", "I24.9",  # angina
    "J45", "J46",  # asthma
    "L03", "L04", "L08.0", "L08.8", "L08.9", "L88", "L98.0",  # cellulitis
    "I11.0", "I50", "J81",  # congestive heart failure
    "G40", "G41", "R56", "O15",  # convulsions and epilepsy
    "J41", "J42", "J43", "J44", "J47",  # COPD
    "E86", "K52.2", "K52.8", "K52.9",  # dehydration and gastroenteritis
    "A69.0", "K02", "K03", "K04", "K05", "K06", "K08", "K09.8", "K09.9", "K12", "K13",  # dental
    "H66", "H67", "J02", "J03", "J06", "J31.2",  # ENT infections
    "R02",  # gangrene
    "I10", "I11.9",  # hypertension
    "J10", "J11", "J13", "J14", "J15.3", "J15.4", "J15.7", "J15.9", "J16.8", "J18.1", "J18.8",  # influenza
    "D50.1", "D50.8", "D50.9",  # iron-deficiency anaemia
    "E40", "E41", "E42", "E43", "E55.0", "E64.3",  # nutritional deficiency
    "A35", "A36", "A37", "A80", "B05", "B06", "B16.1", "B16.9", "B18.0", "B18.1", "B26", "G00.0", "M01.4",
    "N70", "N73", "N74",  # pelvic inflammatory disease
    "N10", "N11", "N12", "N13.6",  # pyelonephritis
)  # fmt: skip
# The rows counted in any diagnosis position: influenza/pneumonia, gangrene, vaccine-preventable.
ANY_POSITION = (
    "J10", "J11", "J13", "J14", "J15.3", "J15.4", "J15.7", "J15.9", "J16.8", "J18.1", "J18.8", "R02",
    "A35", "A36", "A37", "A80", "B05", "B06", "B16.1", "B16.9", "B18.0", "B18.1", "B26", "G00.0", "M01.4",
)  # fmt: skip


def purdy(code: str, *, primary: bool = True) -> bool:
    if re.match(r"^E1[0-4]\.[0-8]", code):
        return True  # diabetes complications count in any position
    if primary and re.match(r"^K2[5-8]\.[0-24-6]", code):
        return True
    return code.startswith(PURDY if primary else ANY_POSITION)


@pytest.fixture(scope="module")
def region() -> Region:
    # More cancellations than the default 0.5% so that a small region is sure to have some.
    return generate_region(RegionConfig(people=1500, seed=7, cancellation_share=0.03))


@pytest.fixture(scope="module")
def events(region: Region) -> list[tuple[str, pb.CareEvent]]:
    """(kind, event) for every valid and duplicate record, in publish order."""
    out = []
    for record in region.records:
        if record.kind in ("valid", "duplicate"):
            if record.content_type == CONTENT_TYPE_JSON:
                event = json_format.Parse(record.value, pb.CareEvent())  # strict: unknown fields fail
            else:
                event = pb.CareEvent.FromString(record.value)
            out.append((record.kind, event))
    return out


@pytest.fixture(scope="module")
def valid(events: list[tuple[str, pb.CareEvent]]) -> list[pb.CareEvent]:
    return [e for kind, e in events if kind == "valid"]


def _person(region: Region, event: pb.CareEvent) -> int:
    return region.truth[(event.source_org, event.person.local_id)]


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    small = RegionConfig(people=300, seed=11)
    a, b = generate_region(small), generate_region(small)
    assert [(r.value, r.key, r.content_type, r.kind, r.publish_time) for r in a.records] == [
        (r.value, r.key, r.content_type, r.kind, r.publish_time) for r in b.records
    ]
    write_jsonl(a, tmp_path / "a.jsonl")
    write_jsonl(b, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    other = generate_region(RegionConfig(people=300, seed=12))
    assert [r.value for r in other.records] != [r.value for r in a.records]


def test_every_valid_record_is_a_well_formed_care_event(region: Region, valid: list[pb.CareEvent]) -> None:
    start, end = region.config.window_start, region.config.window_end
    assert len(valid) == region.counts()["valid"]
    for e in valid:
        assert e.schema_version == 1 and e.event_id and e.person.local_id
        assert e.event_type != pb.EVENT_TYPE_UNSPECIFIED and e.source_sector != pb.SECTOR_UNSPECIFIED
        assert start <= e.event_time.seconds < end
        assert e.recorded_time.seconds >= e.event_time.seconds
        if e.person.national_id:
            assert is_valid(e.person.national_id) and e.person.national_id.startswith("9")
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", e.person.birth_date)
        for d in e.clinical.diagnoses:
            assert ICD10_SHAPE.match(d.code), d.code


def test_keys_content_types_and_publish_order(region: Region) -> None:
    for record in region.records:
        if record.kind.startswith("malformed:") and record.kind != "malformed:bad_nhs_number":
            continue
        doc = orjson.loads(record.value) if record.content_type == CONTENT_TYPE_JSON else None
        if doc is not None:
            assert record.key == f"{doc['sourceOrg']}/{doc['person']['localId']}".encode()
    times = [r.publish_time for r in region.records]
    assert times == sorted(times)
    types = Counter(r.content_type for r in region.records if r.kind == "valid")
    assert 0.05 < types[CONTENT_TYPE_PROTOBUF] / sum(types.values()) < 0.15
    for record in region.records:
        if record.kind == "valid":
            assert record.publish_time == decode(record).recorded_time.ToDatetime(UTC)


def test_event_ids_unique_per_org_and_duplicates_are_exact_resends(region: Region) -> None:
    originals: dict[tuple[str, str], tuple[bytes, datetime]] = {}
    for record in region.records:
        if record.kind == "valid":
            e = decode(record)
            key = (e.source_org, e.event_id)
            assert key not in originals, key
            originals[key] = (record.value, record.publish_time)
    duplicates = [r for r in region.records if r.kind == "duplicate"]
    assert 0.005 < len(duplicates) / len(originals) < 0.02
    for record in duplicates:
        e = decode(record)
        value, published = originals[(e.source_org, e.event_id)]
        assert record.value == value and record.publish_time > published


def test_local_ids_are_per_organisation_and_truth_is_consistent(region: Region, valid: list[pb.CareEvent]) -> None:
    ids_by_person: dict[int, dict[str, str]] = defaultdict(dict)
    for rec in region.local_records:
        if not rec.duplicate:
            assert rec.org not in ids_by_person[rec.person]
            ids_by_person[rec.person][rec.org] = rec.local_id
    multi = 0
    for orgs in ids_by_person.values():
        assert len(set(orgs.values())) == len(orgs)  # a different id at each organisation
        multi += len(orgs) > 1
    assert multi > len(region.people) / 3
    missing = 0
    for e in valid:
        person = region.people[_person(region, e)]
        if e.person.national_id:
            assert e.person.national_id == person.nhs_number  # truth points at the right person
        else:
            missing += 1
        assert e.person.birth_date == person.birth_date.isoformat()
    assert 0.05 < missing / len(valid) < 0.15
    typos = sum(bool(r.typo) for r in region.local_records) / len(region.local_records)
    assert 0.02 < typos < 0.09


def test_addresses_are_present_and_mostly_as_the_person_has_them(region: Region, valid: list[pb.CareEvent]) -> None:
    assert all(p.address_line and "\n" not in p.address_line for p in region.people)
    assert len({p.address_line for p in region.people}) > len(region.people) / 2
    exact = 0
    for e in valid:
        assert e.person.address_line and len(e.person.address_line) <= 200
        exact += e.person.address_line == region.people[_person(region, e)].address_line
    assert 0.9 < exact / len(valid) < 1.0  # a few carry a keying error, as names do
    assert any(r.typo == "address_line" for r in region.local_records)


def test_acsc_share_of_emergency_admissions_is_plausible(region: Region, valid: list[pb.CareEvent]) -> None:
    coded = [
        e
        for e in valid
        if e.event_type == pb.EVENT_TYPE_DIAGNOSIS_CODED
        and e.source_sector == pb.SECTOR_ACUTE
        and e.clinical.admission_method == pb.ADMISSION_METHOD_EMERGENCY
    ]
    assert len(coded) > 100
    primaries = [next(d.code for d in e.clinical.diagnoses if d.position == 1) for e in coded]
    share = sum(purdy(c) for c in primaries) / len(primaries)
    assert 0.12 <= share <= 0.25, share
    for e in coded:  # no "non-ACSC" admission qualifies through an any-position secondary
        primary = next(d.code for d in e.clinical.diagnoses if d.position == 1)
        if not purdy(primary):
            assert not any(purdy(d.code, primary=False) for d in e.clinical.diagnoses if d.position > 1)
    truth = {s.spell_id: s.acsc for s in region.spells}
    for e, code in zip(coded, primaries, strict=True):
        assert truth[e.clinical.spell_id] == purdy(code)


def test_generator_code_lists_agree_with_the_reference() -> None:
    assert all(purdy(d.code) for d in codes.ACSC_EMERGENCY)
    for table in (codes.NON_ACSC_EMERGENCY, codes.FALL_INJURIES, codes.ELECTIVE, codes.MATERNITY):
        assert not any(purdy(d.code) for d in table), table
    for code, _ in codes.SECONDARY_OLDER + codes.SECONDARY_YOUNGER:
        assert not purdy(code, primary=False)
    assert not purdy("N39.0") and purdy("N13.6") and purdy("E11.5") and not purdy("E11.9")


def _reject(value: bytes) -> str | None:
    """A minimal stand-in for ingest validation: which rule a record breaks, if any."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "truncated_json"
    try:
        e = json_format.Parse(value, pb.CareEvent())
    except json_format.ParseError:
        return "unknown_enum"
    if e.person.national_id and not is_valid(e.person.national_id):
        return "bad_nhs_number"
    if e.event_time.ToDatetime(UTC).year >= 2099:
        return "future_timestamp"
    if any(not ICD10_SHAPE.match(d.code) for d in e.clinical.diagnoses):
        return "invalid_icd10"
    assert doc
    return None


def test_every_malformed_kind_is_present_and_breaks_its_rule(region: Region) -> None:
    kinds = Counter(r.kind for r in region.records if r.kind.startswith("malformed:"))
    assert set(kinds) == {f"malformed:{k}" for k in MALFORMED_KINDS}
    for record in region.records:
        if record.kind.startswith("malformed:"):
            assert record.content_type == CONTENT_TYPE_JSON
            assert _reject(record.value) == record.kind.removeprefix("malformed:")
        elif record.content_type == CONTENT_TYPE_JSON:
            assert _reject(record.value) is None


def test_spells_are_ordered_and_complete(region: Region, valid: list[pb.CareEvent]) -> None:
    admitted: dict[tuple[str, str], int] = {}
    for e in valid:
        if e.event_type == pb.EVENT_TYPE_ADMISSION:
            c = e.clinical
            assert c.spell_id and c.admission_method != pb.ADMISSION_METHOD_UNSPECIFIED
            assert [d.provisional for d in c.diagnoses] == [True]
            admitted[(e.source_org, c.spell_id)] = e.event_time.seconds
    later = (pb.EVENT_TYPE_TRANSFER, pb.EVENT_TYPE_DISCHARGE, pb.EVENT_TYPE_DIAGNOSIS_CODED)
    discharges = 0
    for e in valid:
        if e.event_type in later:
            start = admitted[(e.source_org, e.clinical.spell_id)]
            assert e.event_time.seconds > start
            discharges += e.event_type == pb.EVENT_TYPE_DISCHARGE
        if e.event_type == pb.EVENT_TYPE_DIAGNOSIS_CODED:
            positions = [d.position for d in e.clinical.diagnoses]
            assert positions == list(range(1, len(positions) + 1))
            assert not any(d.provisional for d in e.clinical.diagnoses)
    assert discharges > 0.9 * len(admitted)
    spells = [s for s in region.spells if not s.cancelled and s.sector == pb.SECTOR_ACUTE]
    stays = [(s.discharged - s.admitted) / DAY for s in spells if s.discharged is not None]
    assert any(d >= 21 for d in stays) and sum(d <= 10 for d in stays) / len(stays) > 0.8
    assert any(s.discharged is None for s in region.spells)  # some still open at the end


def test_cancellations_target_an_admission_of_the_same_org(valid: list[pb.CareEvent]) -> None:
    admissions = {(e.source_org, e.event_id) for e in valid if e.event_type == pb.EVENT_TYPE_ADMISSION}
    cancels = [e for e in valid if e.event_type == pb.EVENT_TYPE_CANCELLATION]
    assert cancels
    for e in cancels:
        assert (e.source_org, e.target_event_id) in admissions


def test_care_home_residents_are_admitted_from_care_homes(region: Region) -> None:
    residents = [s for s in region.spells if region.people[s.person].care_home_at(s.admitted)]
    assert residents
    assert {s.admission_source for s in residents} <= {"54", "65", "85"}
    others = [s for s in region.spells if not region.people[s.person].care_home_at(s.admitted)]
    assert {s.admission_source for s in others} == {"19"}
    share = sum(bool(p.care_home) for p in region.people) / len(region.people)
    assert 0.01 <= share <= 0.02
    assert all(p.age >= 65 for p in region.people if p.care_home)


def test_no_events_after_death_and_one_death_each(region: Region, valid: list[pb.CareEvent]) -> None:
    deaths: Counter[int] = Counter()
    for e in valid:
        person = region.people[_person(region, e)]
        if person.death_time is not None:
            assert e.event_time.seconds <= person.death_time
        if e.event_type == pb.EVENT_TYPE_DEATH:
            assert e.event_time.seconds == person.death_time
            deaths[person.index] += 1
    dead = [p.index for p in region.people if p.death_time is not None]
    assert dead and sorted(deaths) == dead and set(deaths.values()) == {1}
    assert 0.004 < len(dead) / len(region.people) < 0.02


def test_every_person_registers_once_with_their_practice(region: Region, valid: list[pb.CareEvent]) -> None:
    regs = [e for e in valid if e.event_type == pb.EVENT_TYPE_REGISTRATION]
    assert sorted(_person(region, e) for e in regs) == list(range(len(region.people)))
    for e in regs:
        assert e.source_org == e.registered_practice == region.people[_person(region, e)].practice


def test_identity_merges_join_two_records_of_one_person(region: Region, valid: list[pb.CareEvent]) -> None:
    merges = [e for e in valid if e.event_type == pb.EVENT_TYPE_IDENTITY_MERGE]
    assert merges
    for e in merges:
        prior = region.truth[(e.source_org, e.merge.prior_local_id)]
        assert prior == _person(region, e) and e.merge.prior_local_id != e.person.local_id


def test_rates_are_roughly_english(region: Region, valid: list[pb.CareEvent]) -> None:
    n = len(region.people)
    types = Counter((e.event_type, e.source_sector) for e in valid)
    assert 3.5 < types[(pb.EVENT_TYPE_GP_CONTACT, pb.SECTOR_PRIMARY_CARE)] / n < 7
    assert 0.25 < types[(pb.EVENT_TYPE_ED_ATTENDANCE, pb.SECTOR_EMERGENCY)] / n < 0.6
    emergency = [s for s in region.spells if s.method == pb.ADMISSION_METHOD_EMERGENCY and not s.cancelled]
    assert 0.06 < len(emergency) / n < 0.16
    discharged = [s for s in emergency if s.discharged is not None and s.discharge_destination != "79"]
    readmitted = sum(s.readmission for s in emergency)
    assert 0.06 < readmitted / len(discharged) < 0.2
    falls = {s.spell_id for s in region.spells if s.fall}
    assert falls and all(region.people[s.person].age >= 65 for s in region.spells if s.fall)
    for e in valid:  # PHOF 22401 shape: an injury primary with a W00-W19 secondary
        if e.event_type == pb.EVENT_TYPE_DIAGNOSIS_CODED and e.clinical.spell_id in falls:
            assert e.clinical.diagnoses[0].code.startswith("S")
            assert re.match(r"^W(0\d|1[0-9])", e.clinical.diagnoses[1].code)
    assert types[(pb.EVENT_TYPE_GP_CONTACT, pb.SECTOR_COMMUNITY)] > 0
    assert types[(pb.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, pb.SECTOR_SOCIAL_CARE)] > 0
    assert types[(pb.EVENT_TYPE_CONSENT_CHANGE, pb.SECTOR_PRIMARY_CARE)] > 0


def test_jsonl_has_one_line_per_record(region: Region, tmp_path: Path) -> None:
    path = tmp_path / "region.jsonl"
    assert write_jsonl(region, path) == len(region.records)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == len(region.records)
    for line, record in zip(lines, region.records, strict=False):
        if not record.kind.startswith("malformed:"):
            assert json_format.Parse(line, pb.CareEvent()) == decode(record)
    clean = list(iter_records(region, duplicates=False, malformed=False))
    assert {r.kind for r in clean} == {"valid"}


def test_progress_is_reported_and_config_is_checked() -> None:
    seen: list[tuple[int, int]] = []
    generate_region(RegionConfig(people=50, seed=3), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (50, 50) and all(t == 50 for _, t in seen)
    with pytest.raises(ValueError):
        RegionConfig(late_share=1.5)
    with pytest.raises(ValueError):
        RegionConfig(localities=5, practices=4)


def test_care_plans_carry_their_owner_review_date_segment_and_contact_role(valid: list[pb.CareEvent]) -> None:
    plans = [e for e in valid if e.event_type == pb.EVENT_TYPE_CARE_PLAN]
    assert len(plans) >= 20
    for e in plans:
        plan = e.care_plan
        assert plan.owner_org == e.source_org and e.source_sector == pb.SECTOR_SOCIAL_CARE
        made = datetime.fromtimestamp(e.event_time.seconds, UTC).date()
        assert 91 <= (date.fromisoformat(plan.review_due) - made).days <= 366  # 3 to 12 months on
        assert plan.segment in ("frail", "complex", "care home") and not plan.closed
        assert plan.contact_role in ("social worker", "care coordinator")
        checked = pb.CareEvent()
        checked.CopyFrom(e)
        now = datetime.fromtimestamp(e.event_time.seconds, UTC)
        assert not any(i.field.startswith("care_plan") for i in validate(checked, now, Limits()))
    assert {e.care_plan.segment for e in plans} >= {"frail", "care home"}
    assert len({e.care_plan.contact_role for e in plans}) == 2
