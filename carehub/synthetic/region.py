"""Assemble a synthetic region: people, their events as provider records, and the ground truth.

Records come out in publish order (recorded_time, not event_time), the order a broker
would see them, so late events really do arrive late and resends arrive after the original.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from google.protobuf import json_format

from carehub.synthetic.activity import Draft, Spell, World, mark_readmissions, simulate
from carehub.synthetic.config import DAY, RegionConfig
from carehub.synthetic.identity import LocalRecord, Registry
from carehub.synthetic.noise import MALFORMED_KINDS, malform, recorded_delay
from carehub.synthetic.orgs import Directory, OrgKind, build_directory
from carehub.synthetic.population import Person, build_population
from carehub.v1 import care_event_pb2 as pb

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_PROTOBUF = "application/x-protobuf"
KIND_VALID = "valid"
KIND_DUPLICATE = "duplicate"
MALFORMED_PREFIX = "malformed:"

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class SyntheticRecord:
    """One Kafka record as a provider would publish it; ``kind`` is the label to score ingest against."""

    value: bytes
    key: bytes  # b"<source_org>/<local_id>"
    content_type: str
    kind: str  # "valid", "duplicate" or "malformed:<reason>"
    publish_time: datetime  # when the provider publishes it (recorded_time, later for resends)

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [("content-type", self.content_type.encode())]


@dataclass
class Region:
    config: RegionConfig
    directory: Directory
    people: list[Person]
    # (source_org, local_id) -> index into people: the true identity behind every local record.
    truth: dict[tuple[str, str], int]
    local_records: list[LocalRecord]
    spells: list[Spell]
    records: list[SyntheticRecord]

    def counts(self) -> Counter[str]:
        return Counter(r.kind for r in self.records)


def decode(record: SyntheticRecord) -> pb.CareEvent:
    """Parse a valid or duplicate record back into a CareEvent (raises on malformed ones)."""
    if record.content_type == CONTENT_TYPE_PROTOBUF:
        return pb.CareEvent.FromString(record.value)
    return json_format.Parse(record.value, pb.CareEvent())


def json_line(record: SyntheticRecord) -> bytes:
    """The record as one line of canonical JSON; malformed records are returned as they are."""
    if record.content_type == CONTENT_TYPE_PROTOBUF:
        return orjson.dumps(json_format.MessageToDict(pb.CareEvent.FromString(record.value)))
    return record.value


def _message(draft: Draft, record: LocalRecord, person: Person, recorded: int) -> pb.CareEvent:
    msg = pb.CareEvent(
        event_id=draft.event_id,
        schema_version=1,
        source_org=draft.org.code,
        source_sector=draft.sector,
        event_type=draft.event_type,
        target_event_id=draft.target_event_id,
    )
    msg.event_time.seconds = draft.time
    msg.recorded_time.seconds = recorded
    msg.person.CopyFrom(record.message)
    if draft.clinical is not None:
        msg.clinical.CopyFrom(draft.clinical)
    kind = draft.org.kind
    if kind in (OrgKind.PRACTICE, OrgKind.HOSPITAL):
        msg.registered_practice = person.practice
        msg.locality = person.locality
    elif kind in (OrgKind.SOCIAL_CARE, OrgKind.COMMUNITY):
        msg.locality = person.locality
    if draft.consent is not None:
        msg.consent.SetInParent()  # present even when both flags are off (an opt-out withdrawn)
        msg.consent.direct_care_opt_out, msg.consent.planning_opt_out = draft.consent
    if draft.merge_prior:
        msg.merge.prior_local_id = draft.merge_prior
    if draft.care_plan is not None:
        msg.care_plan.CopyFrom(draft.care_plan)
    return msg


def generate_region(config: RegionConfig | None = None, progress: Progress | None = None) -> Region:
    """Build the whole region in memory; the same config always gives byte-identical records."""
    config = config or RegionConfig()
    directory = build_directory(config, random.Random(f"{config.seed}/orgs"))
    people = build_population(config, directory)
    return region_of(config, directory, people, Registry(config), progress)


def region_of(config: RegionConfig, directory: Directory, people: list[Person], registry: Registry,
              progress: Progress | None = None) -> Region:
    """The region's events for ``people``, whose local records ``registry`` keeps (the hazard region
    passes a registry of its own): activity, delays, resends and malformed copies, in publish order."""
    world = World(config, directory, registry)
    pending: list[tuple[int, int, bytes, bytes, str, str]] = []  # (publish, seq, value, key, type, kind)
    json_valid: list[int] = []  # positions in pending of valid JSON records, to corrupt copies of
    step = max(1, len(people) // 100)
    for person in people:
        rng = random.Random(f"{config.seed}/person/{person.index}")
        for draft in simulate(person, rng, world):
            record = draft.record or registry.record(person, draft.org)
            recorded = draft.time + recorded_delay(rng, config.late_share)
            msg = _message(draft, record, person, recorded)
            key = f"{draft.org.code}/{record.local_id}".encode()
            if rng.random() < config.protobuf_share:
                value, content_type = msg.SerializeToString(), CONTENT_TYPE_PROTOBUF
            else:
                value, content_type = orjson.dumps(json_format.MessageToDict(msg)), CONTENT_TYPE_JSON
                json_valid.append(len(pending))
            pending.append((recorded, len(pending), value, key, content_type, KIND_VALID))
            if rng.random() < config.duplicate_share:
                resent = recorded + rng.randint(60, 2 * DAY)
                pending.append((resent, len(pending), value, key, content_type, KIND_DUPLICATE))
        if progress is not None and ((person.index + 1) % step == 0 or person.index + 1 == len(people)):
            progress(person.index + 1, len(people))
    pending.extend(_malformed(config, pending, json_valid))
    pending.sort(key=lambda item: (item[0], item[1]))
    mark_readmissions(world.spells)
    records = [
        SyntheticRecord(value, key, content_type, kind, datetime.fromtimestamp(publish, UTC))
        for publish, _, value, key, content_type, kind in pending
    ]
    return Region(
        config=config,
        directory=directory,
        people=people,
        truth=dict(registry.truth),
        local_records=registry.records(),
        spells=world.spells,
        records=records,
    )


def _malformed(
    config: RegionConfig, pending: list[tuple[int, int, bytes, bytes, str, str]], json_valid: list[int]
) -> list[tuple[int, int, bytes, bytes, str, str]]:
    """Corrupted copies of valid JSON records, every kind represented whenever the share is above zero."""
    if config.malformed_share <= 0 or not json_valid:
        return []
    rng = random.Random(f"{config.seed}/malformed")
    wanted = max(len(MALFORMED_KINDS), round(len(pending) * config.malformed_share))
    bases = rng.sample(json_valid, min(wanted, len(json_valid)))
    out = []
    for i, base in enumerate(bases):
        publish, _, value, key, _, _ = pending[base]
        kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
        bad = malform(kind, value, rng, str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        out.append((publish + 1, len(pending) + i, bad, key, CONTENT_TYPE_JSON, MALFORMED_PREFIX + kind))
    return out


def iter_records(region: Region, *, duplicates: bool = True, malformed: bool = True) -> Iterator[SyntheticRecord]:
    """Records in publish order, for a producer to send as they are (value, key, content-type header)."""
    for record in region.records:
        if (record.kind == KIND_DUPLICATE and not duplicates) or (
            record.kind.startswith(MALFORMED_PREFIX) and not malformed
        ):
            continue
        yield record


def write_jsonl(region: Region, path: str | Path) -> int:
    """Write every record as one JSON line (protobuf ones converted); returns the number of lines."""
    count = 0
    with Path(path).open("wb") as out:
        for record in region.records:
            out.write(json_line(record))
            out.write(b"\n")
            count += 1
    return count
