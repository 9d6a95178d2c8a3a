"""Blocking, candidate scoring and the link / review / new decision for one record at a time.

An in-process scorer over in-memory blocking indexes, with weights trained offline, matches a
record in well under a millisecond (docs/linkage.md), which is what a per-event stream
stage needs. Blocking keys are keyed hashes of combinations of encodings, so neither the store
nor a key reveals an identifier.

Fellegi-Sunter treats fields as independent, which a family breaks: surname, postcode and address
(and for twins the birth date) are one shared fact. The family rules (``given_name_hazard`` and
``family_hazard``) put that right: within a family, the given name, the birth date and the sex tell
people apart. Only would-be links that a national id contradicts are queued for a person
(docs/linkage.md, "Families, twins and namesakes" and "The review queue").
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from enum import IntEnum, StrEnum
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
    one_keying_error,
)
from .model import LinkageModel
from .nicknames import KeyedNicknames
from .store import IdentityStore, Profile

# A block bigger than this is skipped when deciding (a placeholder value shared by thousands of
# records says nothing and would make one decision slow); the other keys still find the person.
MAX_BLOCK: Final = 2_000
_NAME_AGREES: Final = (0, 1, 2, 3)  # exact, close by Dice, or same phonetic code (not "dice>=0.5")
_DOB_AGREES: Final = (0, 1, 2, 3)  # exact, day and month transposed, or two of year/month/day
_PLACE_AGREES: Final = ((0, 1, 3), (0, 1))  # postcode full/sector/Dice>=0.5 (a typo); address Dice>=0.85
_SWAP_AGREES: Final = (0, 1)  # at least one name agrees with the other record's other name
_NAME_PHONETIC: Final = 3  # the given-name level a known nickname scores at
_DOB_SAME: Final = (0, 1)  # exact, or day and month transposed
_DOB_ONE_ERROR: Final = 3  # birth date levels up to "two parts" are one keying error away
_HOME: Final = ((0,), (0, 1))  # one home: the same full postcode, or addresses alike (Dice >= 0.85)
# The weight, in bits, of the family rules below: more than every field but the national id can add
# together (about 37 bits with the prior), so such a pair can neither link nor reach review.
HAZARD_WEIGHT: Final = -64.0
PLACES_DIFFER: Final = "postcode and address differ, no national id"


class Given(IntEnum):
    """How two given names compare, for the family rules (the match weight uses the levels of features.py)."""

    MISSING = -1
    SAME = 0  # identical encodings
    NICKNAME = 1  # a known nickname (nicknames.py): one name written two ways
    NEAR = 2  # within typo distance: Dice >= 0.7, the same phonetic code, or one keying error apart
    DIFFERENT = 3  # beyond typo distance and not a known nickname: another name


def given_name_hazard(levels: Levels, given: Given) -> bool:
    """The given-name hazard rule: a given name that disagrees where the surname agrees means two people.

    True when both records have a given name and the names disagree beyond typo distance and are not
    known nicknames of each other (``Given.DIFFERENT``), the family names agree (exact, Dice >= 0.7 or
    the same phonetic code), and the national ids do not agree (missing on a side, or different).

    Twins, brothers and sisters, parents and children share a surname, and usually an address and a
    postcode; twins share the birth date too, and so do some namesakes. Fellegi-Sunter adds each of
    those agreements as independent evidence, but within a family they are one fact, and the given name
    is what tells its members apart. Such a pair gets HAZARD_WEIGHT: a new person, and no work for a
    reviewer. The birth date need not agree: with it different too the pair is a parent and child or
    a brother and sister, which is no more one person. An agreeing national id overrides the rule
    (a nickname the list lacks, a middle name in use).
    """
    return given is Given.DIFFERENT and 0 <= levels[FAMILY] <= _NAME_PHONETIC and levels[NID] != 0


def family_hazard(levels: Levels, given: Given) -> str:
    """The family rules, of which the given-name hazard rule is the first: why a pair is two people, or "".

    They apply when the national ids do not agree and the pair shares a surname (agreeing as in
    given_name_hazard) or a home (the same full postcode, or addresses with Dice >= 0.85). Within a
    family the surname, the postcode and the address are one fact shared by every member; what tells
    members apart is the given name, the birth date and the sex, so each of these means two people:

    - "given name": given_name_hazard, or the same with only the home shared (partners who kept their
      own surnames); names swapped between the two fields are not a disagreement;
    - "birth date": birth dates more than one keying error apart (only the year agrees, or less): a
      father and a son of one name, a mother and a daughter;
    - "two differences": two of these three differ, each by what could be one keying error: the given
      name (a near name or a nickname), the birth date (two of its parts agree, or day and month are
      transposed), the sex. One keying error is a typo; two at once, within a family, are two people
      (a father and a son of one name born on one day of the year; twins Louis and Louise);
    - "twin": the surnames and birth dates agree and the given names are near but not the same (Ella
      and Bella; a typo looks alike): twins with similar names, whom nothing but a national id can
      tell from one person with a mistyped name. A known nickname is one name, not a near one
      (twins are not named John and Jack).

    A true match with such errors and no national id is lost (a new person, not a review): the price
    of never joining two members of one family.
    """
    if levels[NID] == 0:
        return ""
    family = 0 <= levels[FAMILY] <= _NAME_PHONETIC
    if not family and levels[POSTCODE] not in _HOME[0] and levels[ADDRESS] not in _HOME[1]:
        return ""
    if given_name_hazard(levels, given) or (given is Given.DIFFERENT and levels[SWAP] not in _SWAP_AGREES):
        return "given name"  # the hazard rule; or another given name at one home (names not swapped)
    dob = levels[DOB]
    if dob > _DOB_ONE_ERROR:
        return "birth date"
    if (given in (Given.NEAR, Given.NICKNAME)) + (dob > 0) + (levels[SEX] == 1) >= 2:
        return "two differences"
    if given is Given.NEAR and family and dob == 0:
        return "twin"
    return ""


def given_agreement(level: int, a: Encoding, b: Encoding, nicknames: KeyedNicknames | None) -> Given:
    """The ``Given`` class of two encodings whose given_name level (features.py) is ``level``."""
    if level == MISSING:
        return Given.MISSING
    if level == 0:
        return Given.SAME
    if nicknames is not None and nicknames.known(a.given, b.given):
        return Given.NICKNAME
    if level <= _NAME_PHONETIC or one_keying_error(a.given, b.given):
        return Given.NEAR
    return Given.DIFFERENT


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
    # The best candidate's comparison levels (features.FIELDS order), for a reviewer; None without one.
    levels: Levels | None = None


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

    def __init__(self, model: LinkageModel, store: IdentityStore, *, national_id_checked: bool = True,
                 nicknames: KeyedNicknames | None = None) -> None:
        """``national_id_checked``: national ids are NHS numbers that passed the mod-11 check at ingest,
        so two different ones are two registrations and never link without a person (twins at one
        address look alike otherwise). Set False for an id without a check digit, where typos pass.

        ``nicknames``: known nicknames keyed with the records' key (``nicknames.keyed_nicknames``); a
        given name that is a known nickname of the candidate's then agrees at the phonetic level.
        Without it, a nickname counts as a given name that disagrees.
        """
        self._model = model
        self._store = store
        self._veto_on_id_mismatch = national_id_checked
        self._nicknames = nicknames

    def blocking_keys(self, person: ing.PseudonymisedPerson) -> list[str]:
        return blocking_keys_of(Encoding.of(person))

    def decide(self, org: str, person: ing.PseudonymisedPerson) -> Decision:
        """The decision for one record; reads the store and changes nothing.

        Each variant of each candidate is scored (a known nickname counting as a phonetic agreement),
        and a pair the family rules call two people gets HAZARD_WEIGHT, so another candidate may win.
        """
        store, model = self._store, self._model
        known = store.local_person(org, person.local_id)
        if known is not None:
            return Decision(Outcome.LINK, known, math.inf, "known local record", 0)
        query = Encoding.of(person)
        candidates: dict[str, None] = {}
        for key in blocking_keys_of(query):
            ids = store.block(key)
            if len(ids) <= MAX_BLOCK:
                candidates.update(dict.fromkeys(ids))
        best, best_id, best_levels = -math.inf, None, None
        w, prior = model.weights, model.prior_log2
        w0, w1, w2, w3, w4, w5, w6, w7 = w
        nicknames = self._nicknames
        held_apart, held_rule = -math.inf, ""  # the best pair a family rule kept apart, and which rule
        for person_id in candidates:
            profile = store.profile(person_id)
            if profile is None:
                continue
            for variant in profile.variants:
                lv = compare(query, variant)
                given = given_agreement(lv[GIVEN], query, variant, nicknames)
                if given is Given.NICKNAME and lv[GIVEN] > _NAME_PHONETIC:
                    lv = (lv[0], _NAME_PHONETIC, *lv[2:])
                s = (prior + w0[lv[0]] + w1[lv[1]] + w2[lv[2]] + w3[lv[3]] + w4[lv[4]] + w5[lv[5]] + w6[lv[6]]
                     + w7[lv[7]])
                rule = family_hazard(lv, given) if lv[NID] != 0 else ""
                if rule:
                    if s > held_apart:
                        held_apart, held_rule = s, rule
                    s += HAZARD_WEIGHT
                # An exact tie (one person held twice, as two ids) goes to the smaller id: the same
                # choice whatever order the blocking index lists its people in.
                if s > best or (s == best and best_id is not None and person_id < best_id):
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
            return Decision(Outcome.REVIEW, best_id, best, "national id agrees but birth date and names do not", n,
                            best_levels)
        if best >= model.link_threshold:
            # Household members agree on everything fields share (surname, postcode, address; twins the
            # birth date too), which Fellegi-Sunter counts as independent evidence; these contradictions
            # are what tells them apart, so a person decides.
            if best_levels[NID] == 1 and self._veto_on_id_mismatch:
                if best_levels[GIVEN] == 0 and best_levels[DOB] in _DOB_SAME:
                    return Decision(Outcome.REVIEW, best_id, best, "national ids differ", n, best_levels)
                # Two valid NHS numbers and a given name or birth date not quite alike: twins with similar names.
                return Decision(Outcome.NEW, None, best, "national ids differ and given name or birth date too", n,
                                best_levels)
            if best_levels[NID] != 0 and best_levels[POSTCODE] not in _PLACE_AGREES[0] and (
                    best_levels[ADDRESS] not in _PLACE_AGREES[1]) and MISSING not in best_levels[POSTCODE:SEX]:
                # Namesakes born the same day look like one person who moved: both places known and different.
                # Uncertain, so reviewed only when the review threshold reaches below the link threshold.
                if model.review_threshold < model.link_threshold:
                    return Decision(Outcome.REVIEW, best_id, best, PLACES_DIFFER, n, best_levels)
                return Decision(Outcome.NEW, None, best, f"{PLACES_DIFFER}: namesakes or a move", n, best_levels)
            if (best_levels[SEX] == 1 and best_levels[GIVEN] not in _NAME_AGREES and best_levels[GIVEN] != MISSING
                    and best_levels[SWAP] != 0):
                return Decision(Outcome.REVIEW, best_id, best, "given name and sex differ", n, best_levels)
            return Decision(Outcome.LINK, best_id, best, _agreement(best_levels), n, best_levels)
        if best >= model.review_threshold and not (best_levels[NID] == 1 and self._veto_on_id_mismatch):
            # Below the link threshold, two check-digit-valid national ids that differ settle it: two people.
            return Decision(Outcome.REVIEW, best_id, best, f"between thresholds: {_agreement(best_levels)}", n,
                            best_levels)
        if best_levels[NID] == 0:
            return Decision(Outcome.REVIEW, best_id, best, "national id agrees but little else does", n, best_levels)
        if held_apart >= model.review_threshold:
            return Decision(Outcome.NEW, None, best, f"family rule ({held_rule}): two people", n, best_levels)
        return Decision(Outcome.NEW, None, best, "best candidate below review threshold", n, best_levels)

    def remember(self, org: str, person: ing.PseudonymisedPerson, person_id: str, repair: bool = False) -> None:
        """Record that this record is ``person_id``: its local id, its encodings, its blocking keys.

        ``repair``: index the blocking keys even when the profile holds the variant already (after
        a crash, the profile may have reached its changelog and the blocking keys not).
        """
        store = self._store
        if store.local_person(org, person.local_id) != person_id:
            store.set_local_person(org, person.local_id, person_id)
        encoding = Encoding.of(person)
        profile = store.profile(person_id) or Profile()
        updated = profile.with_variant(encoding)
        if updated is profile and not repair:
            return  # a variant already held: its keys are indexed
        if updated is not profile:
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
