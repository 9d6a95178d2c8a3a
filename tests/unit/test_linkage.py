"""The identity linker on real keyed encodings: who is joined, who is kept apart, what needs a person.

Uses the shipped default weights (services/identity/weights/v3.json) and a random pseudonymisation key,
as production would: nothing here depends on a particular key.
"""

from __future__ import annotations

import math
import os
from datetime import date

import pytest

from carehub.domain.pseudonymise import Pseudonymiser
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing
from services.identity.linkage import (
    PROFILE_CAP,
    Decision,
    Encoding,
    LinkageModel,
    Linker,
    MemoryStore,
    Outcome,
    Profile,
    load_model,
)

DAY = date(2026, 10, 1)
NHS = "9434765919"
OTHER_NHS = "9434765870"


def raw(**kw: object) -> ce.Person:
    base: dict[str, object] = dict(
        local_id="H-1", national_id=NHS, given_name="Margaret", family_name="Whitfield", birth_date="1941-03-17",
        sex=ce.SEX_FEMALE, postcode="LS1 4AP", address_line="12 Pinkerton Circuit",
    )  # fmt: skip
    base.update(kw)
    return ce.Person(**base)  # type: ignore[arg-type]


class CountingStore(MemoryStore):
    """A MemoryStore that counts writes, to prove decide() makes none."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def set_local_person(self, org: str, local_id: str, person_id: str) -> None:
        self.writes += 1
        super().set_local_person(org, local_id, person_id)

    def add_to_block(self, key: str, person_id: str) -> None:
        self.writes += 1
        super().add_to_block(key, person_id)

    def set_profile(self, person_id: str, profile: Profile) -> None:
        self.writes += 1
        super().set_profile(person_id, profile)


@pytest.fixture(scope="module")
def model() -> LinkageModel:
    return load_model()


@pytest.fixture
def pz() -> Pseudonymiser:
    return Pseudonymiser(os.urandom(32))


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def linker(model: LinkageModel, store: CountingStore) -> Linker:
    return Linker(model, store)


def link(linker: Linker, org: str, person: ing.PseudonymisedPerson, new_id: str) -> Decision:
    """What the service will do: decide, then remember under the linked id or a new one."""
    d = linker.decide(org, person)
    linker.remember(org, person, d.person_id if d.outcome is Outcome.LINK and d.person_id else new_id)
    return d


def test_weights_file_loads_with_its_version_and_provenance(model: LinkageModel) -> None:
    assert model.version == "v3"
    assert model.review_threshold == model.link_threshold  # only would-be links a national id contradicts
    assert model.metadata["derived_from"]["version"] == "v2"
    assert model.metadata["trained_on"]["labels_used"] is False
    assert "train" in model.metadata["command"]
    assert model.prior_log2 < -5  # two random records are rarely one person
    for field_weights in model.weights:
        assert field_weights[0] > 0 > min(field_weights)  # top agreement is evidence for, disagreement against
    with pytest.raises(ValueError):
        load_model("../v1")


def test_same_person_from_three_organisations_is_one_person(linker: Linker, pz: Pseudonymiser) -> None:
    gp = link(linker, "B86001", pz.encode(raw(local_id="1234567"), DAY), "person-a")
    hospital = link(linker, "RR8", pz.encode(raw(local_id="H-99812", family_name="Whitfeild"), DAY), "person-b")
    social = link(linker, "SC01", pz.encode(raw(local_id="SC123456", national_id=""), DAY), "person-c")
    assert gp.outcome is Outcome.NEW and gp.person_id is None and gp.candidates == 0
    assert hospital.outcome is Outcome.LINK and hospital.person_id == "person-a"
    assert social.outcome is Outcome.LINK and social.person_id == "person-a"
    assert social.score >= load_model().link_threshold
    assert hospital.reason.startswith("national id + ") and "agree" in social.reason


def test_namesakes_born_the_same_day_in_other_postcodes_are_not_linked(linker: Linker, pz: Pseudonymiser) -> None:
    """Same name and birth date, different postcode and address, no national ids: never LINK.

    The encodings cannot tell two namesakes from one person who moved house. With the shipped review
    threshold (at the link threshold) that is a new person; with v2's (0) a person decides.
    """
    link(linker, "RR8", pz.encode(raw(local_id="H-1", national_id=""), DAY), "person-a")
    # The same postcode district (LS1), another sector and street: enough weight to link on scores alone.
    other = pz.encode(raw(local_id="H-2", national_id="", postcode="LS1 9QT", address_line="7 Salkauskas Crescent"),
                      DAY)
    d = linker.decide("RR8", other)
    assert d.outcome is Outcome.NEW and d.person_id is None and d.reason.endswith("namesakes or a move")
    assert d.score >= load_model().link_threshold  # the scores alone would have joined them
    far = pz.encode(raw(local_id="H-3", national_id="", postcode="M14 6QT", address_line="7 Salkauskas Crescent"), DAY)
    assert linker.decide("RR8", far).outcome is Outcome.NEW
    older = Linker(load_model("v2"), MemoryStore())
    older.remember("RR8", pz.encode(raw(local_id="H-1", national_id=""), DAY), "person-a")
    for record in (other, far):
        d = older.decide("RR8", record)
        assert d.outcome is Outcome.REVIEW and d.person_id == "person-a"



def test_namesakes_with_different_national_ids_are_new(linker: Linker, pz: Pseudonymiser) -> None:
    link(linker, "RR8", pz.encode(raw(local_id="H-1"), DAY), "person-a")
    other = raw(local_id="H-2", national_id=OTHER_NHS, postcode="M14 6QT", address_line="7 Salkauskas Crescent")
    d = linker.decide("RR8", pz.encode(other, DAY))
    assert d.outcome is Outcome.NEW and d.person_id is None and d.candidates == 1
    assert d.reason == "best candidate below review threshold"


def test_national_id_alone_is_not_trusted(linker: Linker, pz: Pseudonymiser) -> None:
    link(linker, "RR8", pz.encode(raw(), DAY), "person-a")
    stranger = raw(local_id="H-7", given_name="Okonkwo", family_name="Adebayo", birth_date="1990-11-02",
                   sex=ce.SEX_MALE)  # same NHS number, postcode and address; nothing else
    d = linker.decide("RR8", pz.encode(stranger, DAY))
    assert d.outcome is Outcome.REVIEW and d.person_id == "person-a"
    assert "national id" in d.reason


def test_twins_at_one_address_are_never_joined(linker: Linker, pz: Pseudonymiser) -> None:
    """Household members share surname, postcode and address (twins the birth date too): enough weight to
    link, so the given name that tells them apart keeps them apart: a new person, and no work for a person."""
    link(linker, "RR8", pz.encode(raw(), DAY), "person-a")
    brother = raw(local_id="H-2", national_id=OTHER_NHS, given_name="Peter", sex=ce.SEX_MALE)
    d = linker.decide("RR8", pz.encode(brother, DAY))
    assert d.outcome is Outcome.NEW and d.reason == "family rule (given name): two people"
    d = linker.decide("RR8", pz.encode(raw(local_id="H-3", national_id="", given_name="Peter", sex=ce.SEX_MALE),
                                       DAY))
    assert d.outcome is Outcome.NEW and d.reason == "family rule (given name): two people"
    same_id_other_name = raw(local_id="H-4", given_name="Peggy")  # a nickname, same NHS number: one person
    assert linker.decide("RR9", pz.encode(same_id_other_name, DAY)).outcome is Outcome.LINK


def test_known_local_record_links_without_scoring(linker: Linker, pz: Pseudonymiser) -> None:
    linker.remember("RR8", pz.encode(raw(), DAY), "person-a")
    d = linker.decide("RR8", pz.encode(raw(given_name="Someone", family_name="Else"), DAY))
    assert d == Decision(Outcome.LINK, "person-a", math.inf, "known local record", 0)
    assert linker.decide("RR9", pz.encode(raw(given_name="Someone", family_name="Else"), DAY)).reason != (
        "known local record"
    )


def test_decide_reads_the_store_only(linker: Linker, store: CountingStore, pz: Pseudonymiser) -> None:
    link(linker, "RR8", pz.encode(raw(), DAY), "person-a")
    twin = raw(local_id="H-2", national_id=OTHER_NHS, given_name="Peter", sex=ce.SEX_MALE)
    assert link(linker, "RR8", pz.encode(twin, DAY), "person-b").outcome is Outcome.NEW
    before_writes, before_profile = store.writes, store.profile("person-a")
    assert before_writes > 0 and before_profile is not None
    for record in (raw(local_id="H-9"), raw(local_id="H-10", national_id=""), raw(local_id="H-1")):
        linker.decide("RR1", pz.encode(record, DAY))
    assert store.writes == before_writes
    assert store.profile("person-a") is before_profile and len(store) == 2
    assert store.local_person("RR1", "H-9") is None


def test_profile_keeps_distinct_variants_capped_and_round_trips(pz: Pseudonymiser) -> None:
    full = Encoding.of(pz.encode(raw(), DAY))
    sparse = Encoding.of(pz.encode(ce.Person(local_id="X", given_name="Margaret"), DAY))
    profile = Profile().with_variant(full).with_variant(sparse).with_variant(full)
    assert profile.variants == (full, sparse)
    assert Profile.from_bytes(profile.to_bytes()) == profile
    assert Profile.from_bytes(Profile().to_bytes()) == Profile()
    for i in range(PROFILE_CAP + 3):
        profile = profile.with_variant(Encoding.of(pz.encode(raw(postcode=f"LS{i + 2} 4AP"), DAY)))
    assert len(profile.variants) == PROFILE_CAP and profile.variants[0] == full
    assert Profile.from_bytes(profile.to_bytes()) == profile
    data = profile.to_bytes()
    for bad in (b"", b"\x09\x00", data[:-1], data + b"\x00"):
        with pytest.raises((ValueError, IndexError)):
            Profile.from_bytes(bad)


def test_nothing_the_linker_gives_out_carries_an_identifier(linker: Linker, pz: Pseudonymiser) -> None:
    person = pz.encode(raw(), DAY)
    link(linker, "RR8", person, "person-a")
    d = linker.decide("RR9", pz.encode(raw(local_id="H-5"), DAY))
    keys = linker.blocking_keys(person)
    assert len(keys) == len(set(keys)) >= 5
    text = " ".join([d.reason, *keys]).upper()
    for value in ("9434765919", "MARGARET", "WHITFIELD", "1941", "LS1", "PINKERTON"):
        assert value not in text
