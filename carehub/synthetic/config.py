"""Parameters of a synthetic region.

The window ends at a fixed date rather than today so that the same seed and parameters
give byte-identical output on any day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

DAY = 86_400
HOUR = 3_600
MINUTE = 60

MAX_HOSPITALS = 10
MAX_COMMUNITY_PROVIDERS = 3


@dataclass(frozen=True)
class RegionConfig:
    people: int = 10_000
    seed: int = 42
    end_date: date = date(2026, 10, 31)  # last day of the window, inclusive
    days: int = 365
    localities: int = 4
    practices: int = 12
    hospitals: int = 3
    community_providers: int = 1
    care_homes: int = 10
    care_home_resident_share: float = 0.015
    late_share: float = 0.02
    duplicate_share: float = 0.01
    malformed_share: float = 0.005
    missing_national_id_share: float = 0.1
    typo_share: float = 0.05
    protobuf_share: float = 0.1
    cancellation_share: float = 0.005  # admissions entered in error and cancelled (HL7 A11)

    def __post_init__(self) -> None:
        if self.people < 1 or self.days < 1:
            raise ValueError("people and days must be at least 1")
        if self.localities < 1 or self.practices < self.localities:
            raise ValueError("need at least one locality and at least one practice per locality")
        if not 1 <= self.hospitals <= MAX_HOSPITALS:
            raise ValueError(f"hospitals must be between 1 and {MAX_HOSPITALS}")
        if not 1 <= self.community_providers <= MAX_COMMUNITY_PROVIDERS:
            raise ValueError(f"community_providers must be between 1 and {MAX_COMMUNITY_PROVIDERS}")
        if self.care_homes < 0 or self.localities > 99 or self.care_homes > 999:
            raise ValueError("care_homes must be 0-999 and localities at most 99")
        for name in (
            "care_home_resident_share",
            "late_share",
            "duplicate_share",
            "malformed_share",
            "missing_national_id_share",
            "typo_share",
            "protobuf_share",
            "cancellation_share",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")

    @property
    def start_date(self) -> date:
        return self.end_date + timedelta(days=1 - self.days)

    @property
    def window_start(self) -> int:
        """Epoch seconds of the first instant of the window (UTC)."""
        return int(datetime.combine(self.start_date, time(0), UTC).timestamp())

    @property
    def window_end(self) -> int:
        """Epoch seconds just after the window (midnight after end_date, UTC)."""
        return self.window_start + self.days * DAY
