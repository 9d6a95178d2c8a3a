"""What weights v2 and its comparison levels add: name swaps, day/month transpositions, older weights files."""

from __future__ import annotations

import os
from datetime import date

from carehub.domain.pseudonymise import Pseudonymiser
from carehub.v1 import care_event_pb2 as ce
from services.identity.linkage import Encoding, Linker, MemoryStore, Outcome, compare, load_model
from services.identity.linkage.features import DOB, SWAP

DAY = date(2026, 10, 1)


def raw(**kw: object) -> ce.Person:
    base: dict[str, object] = dict(
        local_id="H-1", national_id="", given_name="Margaret", family_name="Whitfield", birth_date="1941-03-17",
        sex=ce.SEX_FEMALE, postcode="LS1 4AP", address_line="12 Pinkerton Circuit",
    )  # fmt: skip
    base.update(kw)
    return ce.Person(**base)  # type: ignore[arg-type]


def test_names_swapped_between_fields_still_link() -> None:
    pz, linker = Pseudonymiser(os.urandom(32)), Linker(load_model(), MemoryStore())
    linker.remember("RR8", pz.encode(raw(), DAY), "person-a")
    swapped = pz.encode(raw(local_id="X-1", given_name="Whitfield", family_name="Margaret"), DAY)
    d = linker.decide("SC01", swapped)
    assert d.outcome is Outcome.LINK and d.person_id == "person-a" and d.reason.endswith("names swapped")


def test_day_and_month_transposed_is_its_own_level() -> None:
    pz = Pseudonymiser(os.urandom(32))
    a = Encoding.of(pz.encode(raw(), DAY))
    assert compare(a, Encoding.of(pz.encode(raw(local_id="H-2"), DAY)))[DOB] == 0
    b = Encoding.of(pz.encode(raw(birth_date="1941-05-03"), DAY))
    c = Encoding.of(pz.encode(raw(birth_date="1941-03-05"), DAY))
    assert compare(b, c)[DOB] == 1 and compare(a, b)[DOB] > 1
    assert compare(a, a)[SWAP] == -1  # names agree in their own fields: no swap evidence either way


def test_national_id_alone_still_goes_to_review() -> None:
    pz, linker = Pseudonymiser(os.urandom(32)), Linker(load_model(), MemoryStore())
    linker.remember("RR8", pz.encode(raw(national_id="9434765919"), DAY), "person-a")
    stranger = raw(local_id="H-7", national_id="9434765919", given_name="Okonkwo", family_name="Adebayo",
                   birth_date="1990-11-02", sex=ce.SEX_MALE)
    d = linker.decide("RR9", pz.encode(stranger, DAY))
    assert d.outcome is Outcome.REVIEW and "national id" in d.reason


def test_v1_weights_still_load_and_add_nothing_for_new_fields() -> None:
    v1, v2 = load_model("v1"), load_model("v2")
    assert v2.version == "v2" and v1.version == "v1"
    assert set(v1.weights[SWAP]) == {0.0}
    assert v1.weights[DOB][1] == v1.weights[DOB][4]  # day/month swapped scored as "year only", as v1 did
