from __future__ import annotations

import os
from datetime import date

from carehub.domain.pseudonymise import Pseudonymiser, age_on, dice, normalise_name, postcode_parts
from carehub.v1 import care_event_pb2 as ce

KEY = bytes(range(32))


def person(**kw: object) -> ce.Person:
    base: dict[str, object] = dict(local_id="H-1", national_id="9434765919", given_name="Margaret",
                                   family_name="Whitfield", birth_date="1941-03-17", sex=ce.SEX_FEMALE,
                                   postcode="LS1 4AP", address_line="12 Pinkerton Circuit")
    base.update(kw)
    return ce.Person(**base)  # type: ignore[arg-type]


def test_no_raw_value_survives() -> None:
    out = Pseudonymiser(KEY).encode(person(), date(2026, 1, 1)).SerializeToString()
    for raw in (b"9434765919", b"Margaret", b"MARGARET", b"Whitfield", b"WHITFIELD", b"1941", b"LS1", b"4AP",
                b"Pinkerton", b"PINKERTON"):
        assert raw not in out


def test_same_key_same_codes_other_key_other_codes() -> None:
    a = Pseudonymiser(KEY).encode(person(), date(2026, 1, 1))
    b = Pseudonymiser(KEY).encode(person(), date(2026, 1, 1))
    c = Pseudonymiser(os.urandom(32)).encode(person(), date(2026, 1, 1))
    assert a == b
    assert a.national_id_hash != c.national_id_hash
    assert a.family_name_bloom != c.family_name_bloom
    assert a.birth_date_hash != c.birth_date_hash


def test_nhs_number_formatting_does_not_matter() -> None:
    p = Pseudonymiser(KEY)
    assert p.national_id("943 476 5919") == p.national_id("9434765919") == p.national_id("943-476-5919")


def test_bloom_similarity_survives_typos_but_separates_names() -> None:
    p = Pseudonymiser(KEY)
    whitfield = p.bloom("family", "WHITFIELD")
    assert dice(whitfield, p.bloom("family", "WHITFEILD")) > 0.7
    assert dice(whitfield, p.bloom("family", "WHITFIELD")) == 1.0
    assert dice(whitfield, p.bloom("family", "OKONKWO")) < 0.4


def test_address_encoded_for_similarity() -> None:
    p = Pseudonymiser(KEY)
    a = p.encode(person(address_line="12 Pinkerton Circuit"), date(2026, 1, 1)).address_bloom
    b = p.encode(person(address_line="12, pinkerton circuit"), date(2026, 1, 1)).address_bloom
    c = p.encode(person(address_line="12 Pinkerton Circiut"), date(2026, 1, 1)).address_bloom
    d = p.encode(person(address_line="7 Salkauskas Crescent"), date(2026, 1, 1)).address_bloom
    assert a == b and len(a) == 128
    assert dice(a, c) > 0.75 > 0.4 > dice(a, d)


def test_names_normalised_before_encoding() -> None:
    assert normalise_name("O'Brien-Smith ") == normalise_name("obrien smith") == "OBRIENSMITH"
    assert normalise_name("Zoë") == "ZOE"


def test_phonetic_codes_match_sound_alikes() -> None:
    p = Pseudonymiser(KEY)
    a = p.encode(person(family_name="Smith"), date(2026, 1, 1))
    b = p.encode(person(family_name="Smyth"), date(2026, 1, 1))
    assert a.family_name_phonetic == b.family_name_phonetic
    assert a.family_name_bloom != b.family_name_bloom


def test_birth_date_parts_allow_partial_agreement() -> None:
    p = Pseudonymiser(KEY)
    a = p.encode(person(birth_date="1941-03-17"), date(2026, 1, 1))
    b = p.encode(person(birth_date="1941-03-18"), date(2026, 1, 1))
    assert a.birth_year_hash == b.birth_year_hash and a.birth_month_hash == b.birth_month_hash
    assert a.birth_day_hash != b.birth_day_hash and a.birth_date_hash != b.birth_date_hash


def test_postcode_parts() -> None:
    assert postcode_parts("LS14AP") == ("LS1", "LS1 4")
    assert postcode_parts("SW1A1AA") == ("SW1A", "SW1A 1")
    assert postcode_parts("NOTAPC") is None
    p = Pseudonymiser(KEY)
    a = p.encode(person(postcode="ls1 4ap"), date(2026, 1, 1))
    b = p.encode(person(postcode="LS14AP"), date(2026, 1, 1))
    c = p.encode(person(postcode="LS1 4AQ"), date(2026, 1, 1))
    assert a.postcode_hash == b.postcode_hash != c.postcode_hash
    assert a.postcode_sector_hash == c.postcode_sector_hash


def test_age_at_event() -> None:
    assert age_on(date(1941, 3, 17), date(2026, 3, 16)) == 84
    assert age_on(date(1941, 3, 17), date(2026, 3, 17)) == 85
    out = Pseudonymiser(KEY).encode(person(birth_date=""), date(2026, 1, 1))
    assert out.age_years == -1 and not out.birth_date_hash


def test_short_key_refused() -> None:
    import pytest

    with pytest.raises(ValueError):
        Pseudonymiser(b"short")
