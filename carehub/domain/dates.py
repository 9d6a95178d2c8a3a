"""Calendar dates as the contract writes them (``YYYY-MM-DD``): one reading for every stage.

Ingest uses it to leave out a birth or review date that is no date; the case lists and the alert
stage use it to find the day a care plan's review falls due. A date that got past ingest but is
not one (from an older hub, a hand-written record) reads as None, never as an error, so a bad
date makes a due day unknown rather than a failed list or a stopped stage.
"""

from __future__ import annotations

import re
from datetime import date

from carehub.domain.timeline import DAY_NS

ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
EPOCH_DAY = date(1970, 1, 1)


def calendar_date(text: str) -> date | None:
    """``YYYY-MM-DD`` as a date; None for anything else, an impossible day (2026-02-30) included."""
    if not ISO_DATE.match(text):  # fromisoformat also takes 19410317 and week dates (1941-W11-1)
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def day_start_ns(text: str) -> int | None:
    """00:00 UTC of the ``YYYY-MM-DD`` day ``text`` (ns since the epoch); None when it is no date."""
    day = calendar_date(text)
    return None if day is None else (day - EPOCH_DAY).days * DAY_NS
