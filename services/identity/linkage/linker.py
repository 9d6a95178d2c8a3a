"""Blocking, candidate scoring and the link / review / new decision for one record at a time.

An in-process scorer over in-memory blocking indexes, with weights trained offline, matches a
record in well under a millisecond (docs/linkage.md), which is what a per-event stream
stage needs. Blocking keys are keyed hashes of combinations of encodings, so neither the store
nor a key reveals an identifier.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from carehub.v1 import ingest_pb2 as ing

from .features import (
    ADDRESS,
    DOB,
    FAMILY,
    GIVEN,
    MISSING,
    NID,
    POSTCODE,
    SEX,
    SWAP,
    Encoding,
    Levels,
    compare,
)
from .model import LinkageModel
from .store import IdentityStore, Profile

# A block bigger than this is skipped when deciding (a placeholder value shared by thousands of
# records says nothing and would make one decision slow); the other keys still find the person.
MAX_BLOCK: Final = 2_000
_NAME_AGREES: Final = (0, 1, 2, 3)  # exact, close by Dice, or same phonetic code (not "dice>=0.5")
_DOB_AGREES: Final = (0, 1, 2, 3)  # exact, day and month transposed, or two of year/month/day
_PLACE_AGREES: Final = ((0, 1, 2, 3), (0, 1, 2))  # postcode full/sector/district/Dice>=0.5; address to Dice>=0.65
_SWAP_AGREES: Final = (0, 1)  # at least one name agrees with the other record's other name


class Outcome(StrEnum):
    LINK = "link"
    NEW = "new"
    REVIEW = "review"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    person_id: str | None  # LINK: the person linked to; REVIEW: the best candidate; NEW: None
    score: float  # match weight (log2, prior included) of the best candidate; inf for a known record
    reason: str  # short and free of identifier values
    candidates: int  # candidates scored


def _key(tag: str, *parts: bytes) -> str | None:
    """A blocking key from keyed hashes; None when any part is absent. Short, to keep indexes small."""
    if not all(parts):
        return None
    return tag + hashlib.blake2b(b"\x1f".join(parts), digest_size=8).hexdigest()


def _bloom_bytes(x: int) -> bytes:
    return x.to_bytes((x.bit_length() + 7) // 8, "big")


def blocking_keys_of(e: Encoding) -> list[str]:
    """Keys under which a record is indexed and looked up; a pair sharing any one is compared.

    Each key survives errors in the fields it leaves out: the national id (when present); the
    birth date; the full postcode; both names exactly, in either order; and the address exactly
    with either name's phonetic code. Given and family names share their keyed encodings, so the
    name keys ignore which field a name was in: a record with the names swapped still meets
    the person's. The address with the birth year finds a record whose names, full birth date and
    postcode all carry typos. Chosen for blocking recall >= 0.995 on FEBRL4 and the synthetic
    region with a few candidates per record (bench/identity_accuracy.py prints both); a dozen
    people share a birth date or a postcode per 500,000, so blocks stay small at scale.
    """
    names = sorted((_bloom_bytes(e.given), _bloom_bytes(e.family)))
    address = _bloom_bytes(e.address)
    keys = (
        _key("n:", e.national_id),
        _key("d:", e.birth_date),
        _key("p:", e.postcode),
        _key("gf:", *names),
        _key("an:", address, e.given_phonetic),
        _key("an:", address, e.family_phonetic),
        _key("ay:", address, e.birth_year),
    )
    return list(dict.fromkeys(k for k in keys if k is not None))


class Linker:
    """Decides which known person a pseudonymised record belongs to, and remembers the answer."""

    def __init__(self, model: LinkageModel, store: IdentityStore, *, national_id_checked: bool = True) -> None:
        """``national_id_checked``: national ids are NHS numbers that passed the mod-11 check at ingest,
        so two different ones are two registrations and never link without a person (twins at one
        address look alike otherwise). Set False for an id without a check digit, where typos pass.
        """
        self._model = model
        self._store = store
        self._veto_on_id_mismatch = national_id_checked

    def blocking_keys(self, person: ing.PseudonymisedPerson) -> list[str]:
        return blocking_keys_of(Encoding.of(person))

    def decide(self, org: str, person: ing.PseudonymisedPerson) -> Decision:
        """The decision for one record; reads the store and changes nothing."""
        store, model = self._store, self._model
        known = store.local_person(org, person.local_id)
        if known is not None:
            return Decision(Outcome.LINK, known, math.inf, "known local record", 0)
        query = Encoding.of(person)
        candidates: dict[str, None] = {}  # insertion-ordered, so ties break the same way every run
        for key in blocking_keys_of(query):
            ids = store.block(key)
            if len(ids) <= MAX_BLOCK:
                candidates.update(dict.fromkeys(ids))
        best, best_id, best_levels = -math.inf, None, None
        w, prior = model.weights, model.prior_log2
        w0, w1, w2, w3, w4, w5, w6, w7 = w
        for person_id in candidates:
            profile = store.profile(person_id)
            if profile is None:
                continue
            for variant in profile.variants:
                lv = compare(query, variant)
                s = (prior + w0[lv[0]] + w1[lv[1]] + w2[lv[2]] + w3[lv[3]] + w4[lv[4]] + w5[lv[5]] + w6[lv[6]]
                     + w7[lv[7]])
                if s > best:
                    best, best_id, best_levels = s, person_id, lv
        n = len(candidates)
        if best_id is None or best_levels is None:
            return Decision(Outcome.NEW, None, -math.inf, "no candidate", n)
        nid_only = (
            best_levels[NID] == 0
            and best_levels[DOB] not in _DOB_AGREES
            and best_levels[GIVEN] not in _NAME_AGREES
            and best_levels[FAMILY] not in _NAME_AGREES
            and best_levels[SWAP] not in _SWAP_AGREES
        )
        if nid_only:
            return Decision(Outcome.REVIEW, best_id, best, "national id agrees but birth date and names do not", n)
        if best >= model.link_threshold:
            # Household members agree on everything fields share (surname, postcode, address; twins the
            # birth date too), which Fellegi-Sunter counts as independent evidence; these contradictions
            # are what tells them apart, so a person decides.
            if best_levels[NID] == 1 and self._veto_on_id_mismatch:
                return Decision(Outcome.REVIEW, best_id, best, "national ids differ", n)
            if best_levels[NID] != 0 and best_levels[POSTCODE] not in _PLACE_AGREES[0] and (
                    best_levels[ADDRESS] not in _PLACE_AGREES[1]) and MISSING not in best_levels[POSTCODE:SEX]:
                # Namesakes born the same day look like one person who moved: both places known and different.
                return Decision(Outcome.REVIEW, best_id, best, "postcode and address differ, no national id", n)
            if (best_levels[SEX] == 1 and best_levels[GIVEN] not in _NAME_AGREES and best_levels[GIVEN] != MISSING
                    and best_levels[SWAP] != 0):
                return Decision(Outcome.REVIEW, best_id, best, "given name and sex differ", n)
            return Decision(Outcome.LINK, best_id, best, _agreement(best_levels), n)
        if best >= model.review_threshold and not (best_levels[NID] == 1 and self._veto_on_id_mismatch):
            # Below the link threshold, two check-digit-valid national ids that differ settle it: two people.
            return Decision(Outcome.REVIEW, best_id, best, f"between thresholds: {_agreement(best_levels)}", n)
        if best_levels[NID] == 0:
            return Decision(Outcome.REVIEW, best_id, best, "national id agrees but little else does", n)
        return Decision(Outcome.NEW, None, best, "best candidate below review threshold", n)

    def remember(self, org: str, person: ing.PseudonymisedPerson, person_id: str) -> None:
        """Record that this record is ``person_id``: its local id, its encodings, its blocking keys."""
        store = self._store
        if store.local_person(org, person.local_id) != person_id:
            store.set_local_person(org, person.local_id, person_id)
        encoding = Encoding.of(person)
        profile = store.profile(person_id) or Profile()
        updated = profile.with_variant(encoding)
        if updated is profile:
            return  # a variant already held: its keys are indexed
        store.set_profile(person_id, updated)
        for key in blocking_keys_of(encoding):
            store.add_to_block(key, person_id)


def _agreement(levels: Levels) -> str:
    """E.g. 'national id + 4 of 6 fields agree': which evidence carried the score, without values."""
    close = {GIVEN: (0, 1, 2), FAMILY: (0, 1, 2), DOB: (0, 1, 2, 3), POSTCODE: (0, 1), ADDRESS: (0, 1), SEX: (0,)}
    present = [i for i in close if levels[i] != MISSING]
    agree = sum(levels[i] in close[i] for i in present)
    head = "national id + " if levels[NID] == 0 else "no national id match, " if levels[NID] == 1 else ""
    tail = "; names swapped" if levels[SWAP] == 0 else "; one name in the other field" if levels[SWAP] == 1 else ""
    return f"{head}{agree} of {len(present)} fields agree{tail}"
