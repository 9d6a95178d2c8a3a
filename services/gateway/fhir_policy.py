"""How FHIR delivery judges an answer and how long it waits: pure rules, kept apart to be tested.

- **2xx**: delivered.
- **408, 429, 5xx, or no answer** (refused connection, timeout, TLS or protocol error):
  transient. The same Bundle is sent again after an exponential back-off with jitter: after the
  n-th failure, a random wait between half and all of ``min(max, initial * 2**(n-1))``; the
  jitter keeps a recovering endpoint from being hit in lock-step. A ``Retry-After`` (seconds or
  an HTTP date) replaces the back-off for that wait; every wait ends by the give-up time.
- **Anything else** (other 4xx, 3xx: httpx follows no redirect): permanent. Sending the same
  Bundle again cannot help, so it is dead-lettered at once with the status and the start of the
  partner's OperationOutcome text, for an operator to look at and replay.
"""

from __future__ import annotations

import email.utils
import random
from enum import StrEnum
from typing import Any

import orjson

TRANSIENT_STATUSES = frozenset({408, 429})
EXCERPT_CHARS = 200


class Verdict(StrEnum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


def verdict(status: int | None) -> Verdict:
    """What an HTTP status (None: no answer at all) means for the alert that was sent."""
    if status is None:
        return Verdict.TRANSIENT
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in TRANSIENT_STATUSES or 500 <= status < 600:
        return Verdict.TRANSIENT
    return Verdict.PERMANENT


def backoff_ceiling(failures: int, initial_s: float, max_s: float) -> float:
    """The longest wait after the ``failures``-th failure in a row (1, 2, ...)."""
    exponent = min(max(failures, 1) - 1, 64)  # beyond 2**64 every ceiling is max_s anyway
    return float(min(max_s, initial_s * 2.0 ** exponent))


def backoff(failures: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """The wait after the ``failures``-th failure: uniform between half and all of its ceiling."""
    ceiling = backoff_ceiling(failures, initial_s, max_s)
    return rng.uniform(ceiling / 2, ceiling)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or HTTP date), or None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; one without a zone is not one, but read it as such
        return None
    return max(0.0, when.timestamp() - now)


def next_wait(failures: int, asked_s: float | None, initial_s: float, max_s: float, left_s: float,
              rng: random.Random) -> float:
    """How long to wait before the next attempt: what the partner asked, else the back-off; never
    past the give-up time (``left_s`` from now)."""
    wait = asked_s if asked_s is not None else backoff(failures, initial_s, max_s, rng)
    return max(0.0, min(wait, left_s))


def outcome_excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line excerpt of a refusal: the OperationOutcome's issue texts if it is one,
    else the start of the body as text."""
    text = ""
    try:
        data: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and data.get("resourceType") == "OperationOutcome":
        texts = []
        for issue in data.get("issue") or ():
            if not isinstance(issue, dict):
                continue
            details = issue.get("details")
            said = (issue.get("diagnostics") or (details.get("text") if isinstance(details, dict) else None)
                    or issue.get("code"))
            if isinstance(said, str) and said:
                texts.append(said)
        text = "; ".join(texts)
    elif body:
        text = body[: limit * 4].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
