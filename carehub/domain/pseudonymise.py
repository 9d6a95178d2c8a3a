"""Keyed encodings of a person's identifiers, made at the edge so raw values go no further.

Methods follow docs/linkage.md: a keyed hash (HMAC-SHA256) for the NHS number,
whose ~10^9 values make a plain hash reversible by enumeration; keyed field-level Bloom
filters of name and postcode bigrams (Dice similarity survives typos); keyed phonetic
codes and keyed date parts for blocking and partial agreement. Without the key none of
these can be recomputed from a guessed identity.

Given and family names are encoded under one shared tag (NAME_TAG), and birth month and day
under another (DAY_MONTH_TAG), so that a given name can be compared with a family name and a
month with a day: that is how the linker sees names swapped between the two fields, and day
and month transposed, which are common keying errors. The cost is that the identity service
can tell when one record's given name equals another's family name, or a month equals a day;
nothing more about the values. Records encoded before this change (separate tags) do not
compare with records encoded after it on names and day/month.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from datetime import date

import jellyfish

from carehub.domain.fifo import FifoCache
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing

BLOOM_BITS = 256  # names and postcodes: ~8 bigrams x 10 bits fill about a quarter
BLOOM_BITS_BY_FIELD = {"address": 1024}  # ~20 bigrams would saturate 256 bits
BLOOM_HASHES = 10
SHORT_HASH_BYTES = 8
NAME_TAG = "name"  # given and family names alike, so a swap between them can be seen
DAY_MONTH_TAG = "daymonth"  # birth month and day alike, so a day/month transposition can be seen
CACHE_SIZE = 200_000  # distinct identities whose encodings are kept; ~0.3 KB each

_NON_LETTERS = re.compile(r"[^A-Z]")
_NON_ALNUM = re.compile(r"[^A-Z0-9]")
_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")


def normalise_name(value: str) -> str:
    """Upper-case ASCII letters only: 'O'Brien-Smith ' and 'obrien smith' encode alike."""
    ascii_only = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return _NON_LETTERS.sub("", ascii_only.upper())


def normalise_address(value: str) -> str:
    """Upper-case letters and digits: '12, Pinkerton Circuit' and '12 pinkerton circuit' encode alike."""
    ascii_only = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return _NON_ALNUM.sub("", ascii_only.upper())


def normalise_postcode(value: str) -> str:
    return re.sub(r"\s+", "", value).upper()


def postcode_parts(normalised: str) -> tuple[str, str] | None:
    """(district, sector) of a UK postcode, e.g. LS14AP -> ('LS1', 'LS1 4'); None if not a postcode."""
    m = _POSTCODE.match(normalised)
    if m is None:
        return None
    return m.group(1), f"{m.group(1)} {m.group(2)[0]}"


def normalise_nhs_number(value: str) -> str:
    return re.sub(r"[\s-]", "", value)


class Pseudonymiser:
    """Holds per-purpose subkeys derived from the hub key, so one encoding never reveals another."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("pseudonymisation key must be at least 32 bytes")
        self._keys = {
            purpose: hmac.new(key, purpose.encode(), hashlib.sha256).digest()
            for purpose in ("national_id", "name", "phonetic", "birth", "sex", "postcode", "bloom")
        }

        # bigram -> its Bloom bit mask; bigrams are few (~2k), so this bounds itself
        self._bigram_masks: dict[str, int] = {}
        self._cache: FifoCache[tuple[str, ...], bytes] = FifoCache(CACHE_SIZE)

    def _mac(self, purpose: str, field: str, value: str, size: int = 32) -> bytes:
        return hmac.digest(self._keys[purpose], f"{field}\x1f{value}".encode(), "sha256")[:size]

    def _bigram_mask(self, field: str, bigram: str, size: int) -> int:
        tag = f"{field}\x1f{bigram}"
        mask = self._bigram_masks.get(tag)
        if mask is None:
            d = hmac.digest(self._keys["bloom"], tag.encode(), "sha256")
            h1 = int.from_bytes(d[:8], "big")
            h2 = int.from_bytes(d[8:16], "big") | 1
            mask = 0
            for k in range(BLOOM_HASHES):
                mask |= 1 << ((h1 + k * h2) % size)
            self._bigram_masks[tag] = mask
        return mask

    def national_id(self, value: str) -> bytes:
        return self._mac("national_id", "nhs", normalise_nhs_number(value))

    def bloom(self, field: str, normalised: str) -> bytes:
        """Field-level Bloom filter of padded bigrams, bit positions from a keyed double hash."""
        size = BLOOM_BITS_BY_FIELD.get(field, BLOOM_BITS)
        bits = 0
        padded = f"_{normalised}_"
        for i in range(len(padded) - 1):
            bits |= self._bigram_mask(field, padded[i : i + 2], size)
        return bits.to_bytes(size // 8, "big")

    def encode(self, person: ce.Person, event_day: date) -> ing.PseudonymisedPerson:
        """The pseudonymised form of an already validated person.

        A person's events repeat the same identifiers, so the keyed encodings are cached
        (in this process's memory only, bounded) by the raw values they replace.
        """
        out = ing.PseudonymisedPerson(local_id=person.local_id, sex=person.sex, age_years=-1)
        raw = (person.national_id, person.given_name, person.family_name, person.birth_date, person.postcode,
               person.address_line)
        encoded = self._cache.get(raw)
        if encoded is None:
            encoded = self._encode_identifiers(person).SerializeToString()
            self._cache.put(raw, encoded)
        out.MergeFromString(encoded)
        if person.birth_date:
            out.age_years = age_on(date.fromisoformat(person.birth_date), event_day)
        return out

    def _encode_identifiers(self, person: ce.Person) -> ing.PseudonymisedPerson:
        out = ing.PseudonymisedPerson()
        if person.national_id:
            out.national_id_hash = self.national_id(person.national_id)
        for field, raw in (("given", person.given_name), ("family", person.family_name)):
            name = normalise_name(raw)
            if not name:
                continue
            bloom = self.bloom(NAME_TAG, name)
            phonetic = self._mac("phonetic", NAME_TAG, jellyfish.metaphone(name), SHORT_HASH_BYTES)
            if field == "given":
                out.given_name_bloom, out.given_name_phonetic = bloom, phonetic
            else:
                out.family_name_bloom, out.family_name_phonetic = bloom, phonetic
        if person.birth_date:
            born = date.fromisoformat(person.birth_date)
            out.birth_date_hash = self._mac("birth", "date", born.isoformat(), SHORT_HASH_BYTES)
            out.birth_year_hash = self._mac("birth", "year", str(born.year), SHORT_HASH_BYTES)
            out.birth_month_hash = self._mac("birth", DAY_MONTH_TAG, str(born.month), SHORT_HASH_BYTES)
            out.birth_day_hash = self._mac("birth", DAY_MONTH_TAG, str(born.day), SHORT_HASH_BYTES)
        address = normalise_address(person.address_line)
        if address:
            out.address_bloom = self.bloom("address", address)
        if person.postcode:
            pc = normalise_postcode(person.postcode)
            out.postcode_hash = self._mac("postcode", "full", pc, SHORT_HASH_BYTES)
            out.postcode_bloom = self.bloom("postcode", pc)
            parts = postcode_parts(pc)
            if parts:
                out.postcode_district_hash = self._mac("postcode", "district", parts[0], SHORT_HASH_BYTES)
                out.postcode_sector_hash = self._mac("postcode", "sector", parts[1], SHORT_HASH_BYTES)
        return out


def age_on(born: date, day: date) -> int:
    return max(0, day.year - born.year - ((day.month, day.day) < (born.month, born.day)))


def dice(a: bytes, b: bytes) -> float:
    """Dice coefficient of two Bloom filters: 2|A∩B| / (|A|+|B|)."""
    x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    total = x.bit_count() + y.bit_count()
    return 2 * (x & y).bit_count() / total if total else 0.0
