"""The inputs of a fuzzing run: valid messages of each wire form, and malformed ones made from them.

:func:`generate` yields, for one form, ``count`` malformed inputs with a valid one after every
``valid_every`` of them. Input ``i`` of a run depends only on the seed, the form and ``i``
(each has its own ``Random``), so the same seed gives the same inputs, and one input can be
made again on its own (:func:`make`).

Valid messages are care events of every type the contract has (provider records, protobuf and
JSON) or hospital visit events as the doors receive them (HL7 v2 ADT and FHIR notification
Bundles, written by carehub.synthetic.doors for the organisation RR8, whose sending facilities
the packaged facilities.toml and senders.toml list). They happen in 2025, so that they are valid on
any machine whose clock is later than that. A malformed input starts from a valid message of its
own, never from a valid input's: its ids (event id, MSH-10, visit, Bundle id) are its own, so a
malformed input can never make a valid one a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Literal

import orjson
from google.protobuf import json_format

from carehub.fuzz.fhir import FHIR_JSON, MESSAGE_PATH, mutate_fhir
from carehub.fuzz.hl7 import frame, mutate_hl7
from carehub.fuzz.mutators import mutate_bytes, mutate_json
from carehub.fuzz.protobuf import mutate_protobuf
from carehub.synthetic import doors
from carehub.synthetic.population import synthetic_nhs_number
from carehub.v1 import care_event_pb2 as ce

Form = Literal["protobuf", "json", "hl7", "fhir"]
FORMS: tuple[Form, ...] = ("protobuf", "json", "hl7", "fhir")
JSON, PROTOBUF = "application/json", "application/x-protobuf"
ANCHOR = datetime(2025, 1, 1, tzinfo=UTC)
DOOR_ORG = "RR8"
FACILITIES = ("RR8", "LTHT_ED")  # RR8's sending facilities in the packaged facilities.toml
KAFKA_LIMIT = 1_000_000  # bytes: a record the SDK's producer takes (its max_request_size is 1 MiB)

GIVEN = ("Margaret", "Ann", "Zoë", "Siân", "Łukasz", "Mohammed", "Aoife", "José", "Chloé", "Li", "O'Neil")
FAMILY = ("Whitfield", "O'Brien", "Smith-Jones", "Nowak", "Khan", "Ní Bhriain", "Okafor", "Brown", "Ó Súilleabháin")
POSTCODES = ("LS1 4AP", "LS6 2QF", "BD7 1DP", "HG1 2AB", "WF1 1AA", "ls12 3ab", "LS11  5DT")
STREETS = ("Pinkerton Circuit", "High Street", "Chapel Allerton Road", "Rue de l'Église")
PRACTICES = ("B86001", "B86002", "B82005", "Y02494")
ICD10 = ("J18.1", "N39.0", "I50.9", "J44.1", "E11.65", "S72.0", "R55", "A41.9")
OPCS = ("W37.1", "K40.1", "H01.1")
WARDS = ("Ward 12", "AMU", "Ward 7 (Respiratory)", "ICU")
# sector -> organisations that send its events
ORGS: dict[ce.Sector.ValueType, tuple[str, ...]] = {
    ce.SECTOR_PRIMARY_CARE: PRACTICES, ce.SECTOR_ACUTE: ("RR8", "RAE"), ce.SECTOR_EMERGENCY: ("RR8",),
    ce.SECTOR_MENTAL_HEALTH: ("RGD",), ce.SECTOR_COMMUNITY: ("RY6",), ce.SECTOR_SOCIAL_CARE: ("00C", "LEEDS-ASC"),
    ce.SECTOR_AMBULANCE: ("RX8",), ce.SECTOR_PHARMACY: ("FA123",), ce.SECTOR_CARE_HOME: ("VM1AB",),
}
# event type -> the sectors that send it
SECTORS: dict[ce.EventType.ValueType, tuple[ce.Sector.ValueType, ...]] = {
    ce.EVENT_TYPE_REGISTRATION: (ce.SECTOR_PRIMARY_CARE,),
    ce.EVENT_TYPE_GP_CONTACT: (ce.SECTOR_PRIMARY_CARE, ce.SECTOR_COMMUNITY),
    ce.EVENT_TYPE_ED_ATTENDANCE: (ce.SECTOR_EMERGENCY, ce.SECTOR_ACUTE),
    ce.EVENT_TYPE_ADMISSION: (ce.SECTOR_ACUTE, ce.SECTOR_MENTAL_HEALTH),
    ce.EVENT_TYPE_TRANSFER: (ce.SECTOR_ACUTE,), ce.EVENT_TYPE_DISCHARGE: (ce.SECTOR_ACUTE, ce.SECTOR_MENTAL_HEALTH),
    ce.EVENT_TYPE_CANCELLATION: (ce.SECTOR_ACUTE,), ce.EVENT_TYPE_DIAGNOSIS_CODED: (ce.SECTOR_ACUTE,),
    ce.EVENT_TYPE_REFERRAL: (ce.SECTOR_PRIMARY_CARE, ce.SECTOR_COMMUNITY),
    ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT: (ce.SECTOR_SOCIAL_CARE,), ce.EVENT_TYPE_CARE_PLAN: (ce.SECTOR_SOCIAL_CARE,),
    ce.EVENT_TYPE_CARE_HOME_ADMISSION: (ce.SECTOR_CARE_HOME, ce.SECTOR_SOCIAL_CARE),
    ce.EVENT_TYPE_DEATH: (ce.SECTOR_ACUTE, ce.SECTOR_PRIMARY_CARE),
    ce.EVENT_TYPE_CONSENT_CHANGE: (ce.SECTOR_PRIMARY_CARE,), ce.EVENT_TYPE_IDENTITY_MERGE: (ce.SECTOR_ACUTE,),
}
DOOR_TYPES = (ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_ED_ATTENDANCE, ce.EVENT_TYPE_TRANSFER,
              ce.EVENT_TYPE_DISCHARGE, ce.EVENT_TYPE_CANCELLATION)


@dataclass(frozen=True)
class FuzzInput:
    """One input of a run: a Kafka record value, the bytes of one MLLP connection, or an HTTP body."""

    form: Form
    index: int  # place in the form's sequence, valid inputs included
    valid: bool
    payload: bytes
    mutations: tuple[str, ...] = ()
    content_type: str | None = None  # the record's content-type header, or the request's Content-Type
    key: bytes | None = None  # Kafka record key
    path: str = ""  # FHIR: where under the base it is POSTed
    mark: str = ""  # valid inputs: "org/event_id" (Kafka), MSH-10 (HL7 v2), the Bundle's key (FHIR)


def _when(rng: Random) -> datetime:
    return ANCHOR + timedelta(seconds=rng.randrange(300 * 86400))


def care_event(rng: Random, event_id: str, local_id: str, kind: ce.EventType.ValueType | None = None,
               org: str | None = None) -> ce.CareEvent:
    """A valid CareEvent of type ``kind`` (any type if None) with every field its type needs."""
    kind = kind if kind is not None else rng.choice(sorted(SECTORS))
    sector = rng.choice(SECTORS[kind])
    source = org or rng.choice(ORGS[sector])
    when = _when(rng)
    event = ce.CareEvent(event_id=event_id, schema_version=1, source_org=source, source_sector=sector,
                         event_type=kind, registered_practice=rng.choice(PRACTICES),
                         locality=rng.choice(("Leeds North", "Leeds South", "")))
    event.event_time.FromDatetime(when)
    if rng.random() < 0.8:
        event.recorded_time.FromDatetime(when + timedelta(seconds=rng.randrange(3600)))
    person = event.person
    person.local_id = local_id
    if rng.random() < 0.9:
        person.national_id = synthetic_nhs_number(rng)
    person.given_name, person.family_name = rng.choice(GIVEN), rng.choice(FAMILY)
    person.birth_date = (datetime(1920, 1, 1) + timedelta(days=rng.randrange(100 * 365))).date().isoformat()
    person.sex = rng.choice((ce.SEX_MALE, ce.SEX_FEMALE, ce.SEX_OTHER, ce.SEX_UNKNOWN))
    person.postcode = rng.choice(POSTCODES)
    person.address_line = f"{rng.randint(1, 200)} {rng.choice(STREETS)}"
    clinical = event.clinical
    spell = f"S-{event_id}"
    if kind in (ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_ED_ATTENDANCE, ce.EVENT_TYPE_TRANSFER, ce.EVENT_TYPE_DISCHARGE,
                ce.EVENT_TYPE_DIAGNOSIS_CODED, ce.EVENT_TYPE_CANCELLATION):
        clinical.spell_id = spell
        clinical.location = rng.choice(WARDS)
    if kind == ce.EVENT_TYPE_ADMISSION:
        clinical.admission_method = rng.choice((ce.ADMISSION_METHOD_EMERGENCY, ce.ADMISSION_METHOD_ELECTIVE,
                                                ce.ADMISSION_METHOD_MATERNITY, ce.ADMISSION_METHOD_TRANSFER))
        clinical.admission_source = rng.choice(("19", "54", "65", "85"))
    if kind in (ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_ED_ATTENDANCE, ce.EVENT_TYPE_DIAGNOSIS_CODED):
        for position in range(1, rng.randint(1, 3) + 1):
            clinical.diagnoses.add(code=rng.choice(ICD10), position=position,
                                   provisional=kind != ce.EVENT_TYPE_DIAGNOSIS_CODED)
    if kind == ce.EVENT_TYPE_DIAGNOSIS_CODED:
        clinical.procedures.add(code=rng.choice(OPCS), position=1)
    if kind == ce.EVENT_TYPE_DISCHARGE:
        clinical.discharge_destination = rng.choice(("19", "54", "79"))
    if kind == ce.EVENT_TYPE_REFERRAL:
        clinical.referred_to_org = rng.choice(("RR8", "RY6", "RGD"))
    if kind == ce.EVENT_TYPE_CANCELLATION:
        event.target_event_id = f"{event_id}-admission"
    if kind == ce.EVENT_TYPE_CONSENT_CHANGE:
        event.consent.direct_care_opt_out = rng.random() < 0.1
        event.consent.planning_opt_out = rng.random() < 0.5
    if kind == ce.EVENT_TYPE_IDENTITY_MERGE:
        event.merge.prior_local_id = f"{local_id}-old"
    return event


def _ids(form: Form, seed: int, index: int, valid: bool) -> tuple[str, str]:
    """(event id, local id): valid and malformed inputs never share one, nor do two forms."""
    tag = f"{'ok' if valid else 'fz'}-{form[:2]}"
    return f"{tag}-{seed}-{index}", f"{tag.upper()}{seed}-{index}"


def _kafka(form: Form, seed: int, index: int, valid: bool, rng: Random) -> FuzzInput:
    event_id, local_id = _ids(form, seed, index, valid)
    event = care_event(rng, event_id, local_id)
    key = f"{event.source_org}/{local_id}".encode()
    fmt = "protobuf" if form == "protobuf" else "json"
    content_type: str | None = PROTOBUF if fmt == "protobuf" else JSON
    if valid:
        value = event.SerializeToString() if fmt == "protobuf" else \
            json_format.MessageToJson(event, indent=None).encode()
        return FuzzInput(form, index, True, value, content_type=content_type, key=key,
                         mark=f"{event.source_org}/{event_id}")
    if fmt == "protobuf":
        value, names = mutate_protobuf(event, rng)
    else:
        value, names = mutate_json(json_format.MessageToDict(event), rng, rng.choice((1, 1, 1, 2, 3)))
        if rng.random() < 0.1:
            value, more = mutate_bytes(value, rng)
            names += more
    if len(value) > KAFKA_LIMIT:  # the SDK would refuse to send it: cut, and still malformed
        value = value[:KAFKA_LIMIT]
        names.append("cut to what the SDK sends")
    roll = rng.random()
    if roll < 0.1:
        content_type = None  # ingest tells the form from the first byte
        names.append("kafka.no content-type")
    elif roll < 0.15:
        content_type = rng.choice((JSON, PROTOBUF, "text/plain", "application/json; charset=utf-8", "\xff"))
        names.append(f"kafka.content-type {content_type!r}")
    return FuzzInput(form, index, False, value, tuple(names), content_type, key)


def door_event(rng: Random, event_id: str, local_id: str) -> ce.CareEvent:
    """A hospital visit event of RR8 that both doors can carry."""
    return care_event(rng, event_id, local_id, rng.choice(DOOR_TYPES), DOOR_ORG)


def _hl7(seed: int, index: int, valid: bool, rng: Random) -> FuzzInput:
    event = door_event(rng, *_ids("hl7", seed, index, valid))
    message = doors.to_hl7(event, rng.choice(FACILITIES)).body
    if valid:
        return FuzzInput("hl7", index, True, frame(message), mark=doors.control_id(event))
    stream, names = mutate_hl7(message, rng)
    return FuzzInput("hl7", index, False, stream, tuple(names))


def _fhir(seed: int, index: int, valid: bool, rng: Random) -> FuzzInput:
    event = door_event(rng, *_ids("fhir", seed, index, valid))
    body = doors.to_fhir(event).body
    if valid:
        return FuzzInput("fhir", index, True, body, content_type=FHIR_JSON, path=MESSAGE_PATH,
                         mark=f"id:{orjson.loads(body)['id']}")
    payload, content_type, path, names = mutate_fhir(orjson.loads(body), rng)
    return FuzzInput("fhir", index, False, payload, tuple(names), content_type, path=path)


def make(form: Form, seed: int, index: int, valid: bool) -> FuzzInput:
    """Input ``index`` of ``form`` in the run with ``seed`` (``valid`` as :func:`generate` decides)."""
    rng = Random(f"carehub.fuzz/{seed}/{form}/{index}")
    if form in ("protobuf", "json"):
        return _kafka(form, seed, index, valid, rng)
    if form == "hl7":
        return _hl7(seed, index, valid, rng)
    if form == "fhir":
        return _fhir(seed, index, valid, rng)
    raise ValueError(f"no form {form!r} (forms: {', '.join(FORMS)})")


def _valid_before(n: int, valid_every: int) -> int:
    """How many valid inputs come before the ``n``-th malformed one."""
    return n // valid_every if valid_every else 0


def total(count: int, valid_every: int, first: int = 0) -> int:
    """How many inputs :func:`generate` yields for ``count`` malformed ones from the ``first``."""
    return count + _valid_before(first + count, valid_every) - _valid_before(first, valid_every)


def generate(form: Form, seed: int, count: int, valid_every: int = 10, first: int = 0) -> Iterator[FuzzInput]:
    """``count`` malformed inputs of ``form``, and a valid one after every ``valid_every`` of them.

    ``first`` starts at a later malformed input (by its number among the malformed ones), so that a
    run can be sent in parts: each part's inputs are those the whole run has at their places.
    """
    index = first + _valid_before(first, valid_every)
    for n in range(first, first + count):
        yield make(form, seed, index, False)
        index += 1
        if valid_every and (n + 1) % valid_every == 0:
            yield make(form, seed, index, True)
            index += 1
