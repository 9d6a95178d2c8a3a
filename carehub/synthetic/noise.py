"""The imperfections of real feeds: typos, late recording, resends and malformed messages.

Each imperfection exercises a part of carehub: typos and missing NHS numbers the
probabilistic linkage, late and duplicate events the idempotent, order-tolerant stream,
malformed ones the validator and dead-letter path.
"""

from __future__ import annotations

import random
import string
from typing import Any

import orjson

from carehub.synthetic.config import DAY, HOUR
from carehub.synthetic.population import INWARD_LETTERS, synthetic_nhs_number

# The labels of malformed records ("malformed:<kind>"); each must be rejected by ingest validation.
MALFORMED_KINDS: tuple[str, ...] = (
    "truncated_json",  # not parseable as JSON
    "unknown_enum",  # eventType the contract does not define
    "bad_nhs_number",  # wrong mod-11 check digit
    "future_timestamp",  # event_time in 2099: far future whatever the wall clock says
    "invalid_icd10",  # diagnosis code of the wrong shape
)
FUTURE_YEAR = "2099"
UNKNOWN_EVENT_TYPE = "EVENT_TYPE_TELEPATHY"
INVALID_ICD10 = "XYZ"


def name_typo(rng: random.Random, name: str) -> str:
    """A keying error: adjacent letters swapped, a letter dropped or a letter replaced."""
    for _ in range(10):
        i = rng.randrange(len(name))
        op = rng.randrange(3)
        if op == 0 and i + 1 < len(name) and name[i].isalpha() and name[i + 1].isalpha():
            out = name[:i] + name[i + 1] + name[i] + name[i + 2 :]
            if i == 0 and name[0].isupper():  # "Stevenson" -> "Tsevenson", not "tSevenson"
                out = out[0].upper() + out[1].lower() + out[2:]
        elif op == 1 and len(name) > 3 and name[i].isalpha():
            out = name[:i] + name[i + 1 :]
        elif name[i].isalpha():
            c = rng.choice(string.ascii_lowercase)
            out = name[:i] + (c.upper() if name[i].isupper() else c) + name[i + 1 :]
        else:
            continue
        if out != name:
            return out
    return name


def postcode_typo(rng: random.Random, postcode: str) -> str:
    """A wrong letter or digit that keeps the postcode's shape, so it is a typo and not a rejectable field."""
    chars = list(postcode)
    positions = [i for i, c in enumerate(chars) if c.isalnum()]
    for _ in range(10):
        i = rng.choice(positions)
        if chars[i].isdigit():
            chars[i] = rng.choice([d for d in string.digits if d != chars[i]])
        elif i >= len(chars) - 2:
            chars[i] = rng.choice([c for c in INWARD_LETTERS if c != chars[i]])
        else:
            chars[i] = rng.choice([c for c in string.ascii_uppercase if c != chars[i]])
        out = "".join(chars)
        if out != postcode:
            return out
    return postcode


def recorded_delay(rng: random.Random, late_share: float) -> int:
    """Seconds from event_time to recorded_time: minutes usually, hours to days for late ones."""
    if rng.random() < late_share:
        return rng.randint(2 * HOUR, 5 * DAY)
    return 20 + min(int(rng.expovariate(1 / 300)), 50 * 60)


def wrong_check_digit(number: str, rng: random.Random) -> str:
    good = int(number[-1])
    return number[:-1] + str((good + rng.randint(1, 9)) % 10)


def malform(kind: str, value: bytes, rng: random.Random, event_id: str) -> bytes:
    """Corrupt a valid JSON event one way; a fresh event_id keeps it apart from the original."""
    if kind == "truncated_json":
        # Any proper prefix of a JSON object is invalid JSON.
        return value[: rng.randint(len(value) // 4, (3 * len(value)) // 4)]
    doc: dict[str, Any] = orjson.loads(value)
    doc["eventId"] = event_id
    if kind == "unknown_enum":
        doc["eventType"] = UNKNOWN_EVENT_TYPE
    elif kind == "bad_nhs_number":
        person = doc.setdefault("person", {})
        person["nationalId"] = wrong_check_digit(person.get("nationalId") or synthetic_nhs_number(rng), rng)
    elif kind == "future_timestamp":
        when = str(doc["eventTime"])
        month_day = "02-28" if when[5:10] == "02-29" else when[5:10]
        doc["eventTime"] = f"{FUTURE_YEAR}-{month_day}{when[10:]}"
    elif kind == "invalid_icd10":
        clinical = doc.setdefault("clinical", {})
        diagnoses = clinical.get("diagnoses") or [{"position": 1}]
        diagnoses[0]["code"] = INVALID_ICD10
        clinical["diagnoses"] = diagnoses
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return orjson.dumps(doc)
