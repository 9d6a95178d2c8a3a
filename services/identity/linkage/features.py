"""Comparison levels: how far two pseudonymised records agree, field by field.

Fellegi-Sunter scoring (docs/linkage.md) needs each field's agreement reduced to a
few ordered levels whose m/u probabilities can be estimated. Only keyed encodings are compared:
equality of keyed hashes, and the Dice coefficient of keyed Bloom filters, which survives typos.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from carehub.domain.pseudonymise import BLOOM_HASHES
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing

MISSING: Final = -1  # either side lacks the field: contributes no evidence

# Fields in comparison order, each with its levels from the strongest agreement to none.
FIELDS: Final[tuple[str, ...]] = (
    "national_id", "given_name", "family_name", "birth_date", "postcode", "address", "sex", "name_swap",
)  # fmt: skip
LEVELS: Final[dict[str, tuple[str, ...]]] = {
    "national_id": ("agree", "disagree"),
    "given_name": ("exact", "dice>=0.85", "dice>=0.7", "phonetic", "dice>=0.5", "else"),
    "family_name": ("exact", "dice>=0.85", "dice>=0.7", "phonetic", "dice>=0.5", "else"),
    # "year and month" apart from the other pairs of parts: a day mistyped leaves year and month, which
    # strangers share about 1 time in 1,200; month and day (a year mistyped) strangers share 1 in 365.
    "birth_date": ("exact", "day/month swapped", "year and month", "two parts", "year only", "else"),
    "postcode": ("full", "sector", "district", "dice>=0.5", "dice>=0.4", "else"),
    "address": ("exact", "dice>=0.85", "dice>=0.65", "else"),
    "sex": ("agree", "disagree"),
    # Only when no name agrees in its own field (each at "phonetic" or worse, or missing): does each agree with
    # the other record's other name? Scored on those pairs alone, so its weight is P(level | names fail)
    # for matches over non-matches, a factor of its own and not a second count of the name evidence.
    "name_swap": ("both crosswise", "one crosswise", "neither"),
}
# Levels added since weights v1, each with the older level that scored such a pair then, so an older
# weights file still loads and scores as it was trained (model.py); a field it lacks adds nothing.
ADDED_LEVELS: Final[dict[str, dict[str, str]]] = {
    "given_name": {"dice>=0.5": "else"},
    "family_name": {"dice>=0.5": "else"},
    "birth_date": {"day/month swapped": "year only", "year and month": "two parts"},
    "postcode": {"dice>=0.4": "else"},
}
# Index of each field in a comparison vector.
NID, GIVEN, FAMILY, DOB, POSTCODE, ADDRESS, SEX, SWAP = range(len(FIELDS))
NAME_HIGH, NAME_LOW, NAME_SOME = 0.85, 0.7, 0.5  # short names: one typo can leave Dice near 0.5
# A name agrees crosswise at "phonetic" or better; name_swap is looked at only when neither name agrees
# in its own field better than "phonetic" (a swap rarely leaves a close same-field match behind).
NAME_CROSS_AGREES: Final = 3
POSTCODE_SIMILAR, POSTCODE_SOME = 0.5, 0.4  # two digits transposed in a short code: Dice 0.44-0.69
ADDRESS_HIGH, ADDRESS_LOW = 0.85, 0.65
# One keying error (a letter changed, added, dropped, or two swapped) changes at most three of a name's
# padded bigrams and brings in at most three others; each bigram sets BLOOM_HASHES bits of the filter.
ONE_ERROR_BITS: Final = 3 * BLOOM_HASHES
_NO_SEX = (ce.SEX_UNSPECIFIED, ce.SEX_UNKNOWN)

Levels = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Encoding:
    """One variant of a person's keyed encodings, ready for fast comparison.

    Bloom filters are kept as ints with their bit counts, so Dice is two ANDs and popcounts;
    0 means the field was absent. Hashes are the bytes ingest made; b"" means absent.
    """

    national_id: bytes
    given: int
    given_phonetic: bytes
    family: int
    family_phonetic: bytes
    birth_date: bytes
    birth_year: bytes
    birth_month: bytes
    birth_day: bytes
    postcode: bytes
    postcode_sector: bytes
    postcode_district: bytes
    postcode_bloom: int
    address: int
    sex: int  # ce.Sex value; unspecified/unknown count as missing

    @classmethod
    def of(cls, p: ing.PseudonymisedPerson) -> Encoding:
        return cls(
            national_id=p.national_id_hash,
            given=int.from_bytes(p.given_name_bloom, "big"),
            given_phonetic=p.given_name_phonetic,
            family=int.from_bytes(p.family_name_bloom, "big"),
            family_phonetic=p.family_name_phonetic,
            birth_date=p.birth_date_hash,
            birth_year=p.birth_year_hash,
            birth_month=p.birth_month_hash,
            birth_day=p.birth_day_hash,
            postcode=p.postcode_hash,
            postcode_sector=p.postcode_sector_hash,
            postcode_district=p.postcode_district_hash,
            postcode_bloom=int.from_bytes(p.postcode_bloom, "big"),
            address=int.from_bytes(p.address_bloom, "big"),
            sex=int(p.sex),
        )

    def to_bytes(self) -> bytes:
        """Length-prefixed fields in declaration order (Bloom ints in their shortest big-endian form)."""
        out = bytearray()
        for value in self._parts():
            if len(value) > 255:
                raise ValueError("encoding field longer than 255 bytes")
            out.append(len(value))
            out += value
        return bytes(out)

    @classmethod
    def read(cls, data: bytes | memoryview, pos: int) -> tuple[Encoding, int]:
        """Parse one encoding at ``pos``; returns it and the position after it."""
        parts: list[bytes] = []
        for _ in range(_N_PARTS):
            size = data[pos]
            parts.append(bytes(data[pos + 1 : pos + 1 + size]))
            pos += 1 + size
        if pos > len(data):
            raise ValueError("truncated encoding")
        nid, given, gph, family, fph, dob, year, month, day, pc, sector, district, pcb, address, sex = parts
        num = int.from_bytes
        enc = cls(
            nid, num(given, "big"), gph, num(family, "big"), fph, dob, year, month, day,
            pc, sector, district, num(pcb, "big"), num(address, "big"), num(sex, "big"),
        )  # fmt: skip
        return enc, pos

    def _parts(self) -> tuple[bytes, ...]:
        def b(x: int) -> bytes:
            return x.to_bytes((x.bit_length() + 7) // 8, "big")

        return (
            self.national_id, b(self.given), self.given_phonetic, b(self.family), self.family_phonetic,
            self.birth_date, self.birth_year, self.birth_month, self.birth_day, self.postcode,
            self.postcode_sector, self.postcode_district, b(self.postcode_bloom), b(self.address), b(self.sex),
        )  # fmt: skip


_N_PARTS: Final = 15


def _dice(x: int, y: int) -> float:
    """Dice coefficient of two Bloom filters held as ints: 2|A∩B| / (|A|+|B|)."""
    return 2 * (x & y).bit_count() / (x.bit_count() + y.bit_count())


def one_keying_error(x: int, y: int) -> bool:
    """Whether two names' Bloom filters (as ints, both present) can be one keying error apart.

    Neither filter may have more than ONE_ERROR_BITS bits the other lacks. Dice alone cannot say this
    for short names: "Ian" keyed "Ina" keeps one bigram of four (Dice 0.25-0.35) yet is one error.
    Measured over the synthetic region's given names: every single error passes, and about 1 pair
    of different names in 100 (7 in 100 when they share the initial letter) passes too.
    """
    return (x & ~y).bit_count() <= ONE_ERROR_BITS and (y & ~x).bit_count() <= ONE_ERROR_BITS


def _name(x: int, xph: bytes, y: int, yph: bytes) -> int:
    if not x or not y:
        return MISSING
    if x == y:
        return 0
    d = _dice(x, y)
    if d >= NAME_HIGH:
        return 1
    if d >= NAME_LOW:
        return 2
    if xph == yph:
        return 3
    return 4 if d >= NAME_SOME else 5


def _swap(a: Encoding, b: Encoding, given: int, family: int) -> int:
    """The name_swap level: only when no name agrees in its own field and a crosswise comparison exists."""
    if 0 <= given < 3 or 0 <= family < 3 or given == family == MISSING:  # a name agrees, or none to compare
        return MISSING
    g_f = _name(a.given, a.given_phonetic, b.family, b.family_phonetic)
    f_g = _name(a.family, a.family_phonetic, b.given, b.given_phonetic)
    if g_f == f_g == MISSING:
        return MISSING
    return 2 - (0 <= g_f <= NAME_CROSS_AGREES) - (0 <= f_g <= NAME_CROSS_AGREES)


def _birth_date(a: Encoding, b: Encoding) -> int:
    if not a.birth_date or not b.birth_date:
        return MISSING
    if a.birth_date == b.birth_date:
        return 0
    year = a.birth_year == b.birth_year
    if year and a.birth_month == b.birth_day and a.birth_day == b.birth_month:
        return 1  # month and day share a keyed tag at ingest, so a transposition shows
    month = a.birth_month == b.birth_month
    if year and month:
        return 2
    return 3 if year + month + (a.birth_day == b.birth_day) >= 2 else 4 if year else 5


def compare(a: Encoding, b: Encoding) -> Levels:
    """The comparison vector of two encodings: one level index (or MISSING) per field of FIELDS."""
    nid = MISSING if not a.national_id or not b.national_id else (0 if a.national_id == b.national_id else 1)
    given = _name(a.given, a.given_phonetic, b.given, b.given_phonetic)
    family = _name(a.family, a.family_phonetic, b.family, b.family_phonetic)
    if not a.postcode or not b.postcode:
        postcode = MISSING
    elif a.postcode == b.postcode:
        postcode = 0
    elif a.postcode_sector and a.postcode_sector == b.postcode_sector:
        postcode = 1
    elif a.postcode_district and a.postcode_district == b.postcode_district:
        postcode = 2
    else:
        d = _dice(a.postcode_bloom, b.postcode_bloom)
        postcode = 3 if d >= POSTCODE_SIMILAR else 4 if d >= POSTCODE_SOME else 5
    if not a.address or not b.address:
        address = MISSING
    elif a.address == b.address:
        address = 0
    else:
        d = _dice(a.address, b.address)
        address = 1 if d >= ADDRESS_HIGH else 2 if d >= ADDRESS_LOW else 3
    sex = MISSING if a.sex in _NO_SEX or b.sex in _NO_SEX else 0 if a.sex == b.sex else 1
    return (nid, given, family, _birth_date(a, b), postcode, address, sex, _swap(a, b, given, family))


def describe(levels: Levels) -> dict[str, str]:
    """Level names of a comparison vector, for explanations and training reports."""
    return {f: ("missing" if lv == MISSING else LEVELS[f][lv]) for f, lv in zip(FIELDS, levels, strict=True)}


def demographics_fingerprint(person: ing.PseudonymisedPerson) -> bytes:
    """8 bytes that change when any keyed encoding of the record changes, and only then.

    The local id (the record's key) and the age (which moves with each event's date) are left
    out, so every event of an unchanged record gives the same fingerprint. Computed from the
    deterministic serialisation: stable across processes and restarts, which a stored
    fingerprint needs (Python's ``hash`` of bytes is salted per process).
    """
    copy = ing.PseudonymisedPerson()
    copy.CopyFrom(person)
    copy.ClearField("local_id")
    copy.ClearField("age_years")
    return hashlib.blake2b(copy.SerializeToString(deterministic=True), digest_size=8).digest()
