"""The organisations of a synthetic region and their codes.

Codes look like real ODS codes (trusts "RR8", practices "B86001") so that adapters and
dashboards meet the shapes they will see in production; the local-authority and care-home
codes ("LA01", "CH001") are made up because those bodies are not identified that way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from carehub.synthetic.codes import CARE_HOME_SOURCES
from carehub.synthetic.config import RegionConfig
from carehub.v1 import care_event_pb2 as pb

HOSPITAL_CODES = ("RR8", "RAE", "RCF", "RWY", "RXF", "RHQ", "RJL", "RP5", "RFR", "RCU")
COMMUNITY_CODES = ("RY6", "RYG", "RY8")
MENTAL_HEALTH_CODE = "RGD"
AMBULANCE_CODE = "RX8"
PRACTICE_PREFIXES = ("B86", "B87", "B82", "C83", "B83", "C84", "B81", "C81")


class OrgKind(StrEnum):
    PRACTICE = "practice"
    HOSPITAL = "hospital"
    SOCIAL_CARE = "social_care"
    COMMUNITY = "community"
    MENTAL_HEALTH = "mental_health"
    AMBULANCE = "ambulance"
    CARE_HOME = "care_home"


@dataclass(frozen=True, slots=True)
class Organisation:
    code: str
    kind: OrgKind
    sector: pb.Sector.ValueType
    locality: str = ""  # where the organisation sits; empty for region-wide providers
    # For care homes: the source-of-admission code a hospital records for its residents.
    admission_source: str = ""


@dataclass(frozen=True)
class Directory:
    localities: tuple[str, ...]
    practices: tuple[Organisation, ...]
    hospitals: tuple[Organisation, ...]
    social_care: tuple[Organisation, ...]  # one per locality, same order as localities
    community: tuple[Organisation, ...]
    mental_health: Organisation
    ambulance: Organisation
    care_homes: tuple[Organisation, ...]

    @property
    def all(self) -> tuple[Organisation, ...]:
        return (
            *self.practices,
            *self.hospitals,
            *self.social_care,
            *self.community,
            self.mental_health,
            self.ambulance,
            *self.care_homes,
        )

    def practices_in(self, locality: str) -> tuple[Organisation, ...]:
        return tuple(o for o in self.practices if o.locality == locality)

    def care_homes_in(self, locality: str) -> tuple[Organisation, ...]:
        local = tuple(o for o in self.care_homes if o.locality == locality)
        return local or self.care_homes

    def social_care_for(self, locality: str) -> Organisation:
        return self.social_care[self.localities.index(locality)]

    def home_hospital(self, locality: str) -> Organisation:
        """The trust most of a locality's residents use: localities are spread over the trusts."""
        return self.hospitals[self.localities.index(locality) % len(self.hospitals)]

    def community_for(self, locality: str) -> Organisation:
        return self.community[self.localities.index(locality) % len(self.community)]


def build_directory(config: RegionConfig, rng: random.Random) -> Directory:
    localities = tuple(f"LOC{i + 1:02d}" for i in range(config.localities))
    practices = tuple(
        Organisation(
            f"{PRACTICE_PREFIXES[(i // 999) % len(PRACTICE_PREFIXES)]}{i % 999 + 1:03d}",
            OrgKind.PRACTICE,
            pb.SECTOR_PRIMARY_CARE,
            localities[i % config.localities],
        )
        for i in range(config.practices)
    )
    hospitals = tuple(
        Organisation(HOSPITAL_CODES[i], OrgKind.HOSPITAL, pb.SECTOR_ACUTE, localities[i % config.localities])
        for i in range(config.hospitals)
    )
    social = tuple(
        Organisation(f"LA{i + 1:02d}", OrgKind.SOCIAL_CARE, pb.SECTOR_SOCIAL_CARE, loc)
        for i, loc in enumerate(localities)
    )
    community = tuple(
        Organisation(COMMUNITY_CODES[i], OrgKind.COMMUNITY, pb.SECTOR_COMMUNITY)
        for i in range(config.community_providers)
    )
    sources = [c for c, _ in CARE_HOME_SOURCES]
    weights = [w for _, w in CARE_HOME_SOURCES]
    homes = tuple(
        Organisation(
            f"CH{i + 1:03d}",
            OrgKind.CARE_HOME,
            pb.SECTOR_CARE_HOME,
            localities[i % config.localities],
            # every source code is present once there are three homes; the rest mostly private (85)
            sources[i] if i < len(sources) else rng.choices(sources, weights)[0],
        )
        for i in range(config.care_homes)
    )
    return Directory(
        localities=localities,
        practices=practices,
        hospitals=hospitals,
        social_care=social,
        community=community,
        mental_health=Organisation(MENTAL_HEALTH_CODE, OrgKind.MENTAL_HEALTH, pb.SECTOR_MENTAL_HEALTH),
        ambulance=Organisation(AMBULANCE_CODE, OrgKind.AMBULANCE, pb.SECTOR_AMBULANCE),
        care_homes=homes,
    )
