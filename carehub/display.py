"""How times and sectors read in what carehub prints and serves: one form for the CLI and the page.

`carehub caselist`, `carehub reviews` and the practice's dashboard page show the same timestamps
and sectors; reading them one way here keeps a date on the page the date in the terminal.
An unset timestamp reads "-".
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from carehub.v1 import care_event_pb2 as ce


def day(ts: Timestamp) -> str:
    """``YYYY-MM-DD`` (UTC), or "-" when unset."""
    if not ts.seconds and not ts.nanos:
        return "-"
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d")


def moment(ts: Timestamp) -> str:
    """``YYYY-MM-DD HH:MM UTC``, or "-" when unset."""
    if not ts.seconds and not ts.nanos:
        return "-"
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def sector(value: int) -> str:
    """A ``Sector`` in words: ``SECTOR_SOCIAL_CARE`` -> "social care"."""
    return ce.Sector.Name(value).removeprefix("SECTOR_").lower().replace("_", " ")  # type: ignore[arg-type]
