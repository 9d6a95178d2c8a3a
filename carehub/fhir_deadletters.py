"""FHIR delivery's dead letters: what they hold, and listing and replaying them (`carehub fhir-dlq`).

The gateway's FHIR delivery (services/gateway/fhir_delivery.py) writes one record here for an
alert a partner refused for good (a 4xx other than 408/429) or that was still undelivered
``CAREHUB_FHIR_OUT_GIVE_UP_AFTER_S`` after its first attempt, and then carries on with the next
alert. The record is JSON, keyed by the partner's organisation code: the partner, the alert id,
the alert itself, the Bundle that was sent, how many attempts, the last answer or error, and the
first and last attempt times. It is read by operators (the alert and the Bundle name the person
by the partner's own record id, as the alerts topic does) and kept as long as the alerts.

**Replay** re-publishes the dead-lettered alert to the alerts topic, keyed by its partner (so to
the same partition as the partner's other alerts), with a ``carehub-replay-of`` header naming
the dead letter. The partner's delivery loop then sends it in its turn, with the same retries,
audit and dead-lettering as any alert, and the same Bundle id, so a receiver that already has it
drops it. The gRPC side of the gateway ignores replayed records: gRPC subscribers had the alert
the first time. As for ingest (carehub/deadletters.py), each replay is recorded in a compacted
topic keyed by the dead letter's position, so each dead letter is replayed once; one that fails
again lands anew in the dead-letter topic and can be replayed in its turn.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import KafkaProducer

from carehub.deadletters import REPLAY_HEADER, read_topic, replayed_positions
from carehub.kafka.profile import client_profile
from carehub.settings import Settings
from carehub.topics import alerts_topic, fhir_deadletter_topic, fhir_replayed_topic

REJECTED = "rejected"  # the partner answered 4xx (not 408/429): sending again as it is cannot help
GAVE_UP = "gave_up"    # still undelivered CAREHUB_FHIR_OUT_GIVE_UP_AFTER_S after the first attempt
UNREADABLE = "unreadable"  # the alerts-topic record is not an Alert: nothing could be sent
FORMAT = 1


@dataclass(frozen=True)
class FhirDeadLetter:
    org: str
    alert_id: str
    reason: str
    attempts: int
    last_status: int            # the last HTTP status; 0 when the last attempt got no answer
    last_error: str             # the last answer's status and OperationOutcome text, or the transport error
    first_attempt_at: float     # seconds since the epoch
    last_attempt_at: float
    endpoint: str
    bundle: dict[str, Any]
    alert: bytes                # the carehub.v1.Alert as it was on the alerts topic
    source: str                 # alerts topic[partition]@offset it was read from
    rule: str = ""
    replay_of: str = ""         # the dead letter this alert was a replay of, if it was one
    format: int = field(default=FORMAT)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["alert"] = base64.b64encode(self.alert).decode()
        data["first_attempt_at"] = _iso(self.first_attempt_at)
        data["last_attempt_at"] = _iso(self.last_attempt_at)
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes) -> FhirDeadLetter:
        data = orjson.loads(raw)
        data["alert"] = base64.b64decode(data["alert"])
        data["first_attempt_at"] = datetime.fromisoformat(data["first_attempt_at"]).timestamp()
        data["last_attempt_at"] = datetime.fromisoformat(data["last_attempt_at"]).timestamp()
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class StoredLetter:
    partition: int
    offset: int
    letter: FhirDeadLetter

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


def read_fhir_dead_letters(bootstrap: str, topic: str, partner: str | None = None) -> list[StoredLetter]:
    """Every FHIR dead letter now in ``topic`` (only ``partner``'s if given), in topic order."""
    out = []
    for partition, offset, key, value in read_topic(bootstrap, topic):
        if partner is not None and key != partner.encode():
            continue
        out.append(StoredLetter(partition, offset, FhirDeadLetter.from_json(value)))
    return out


def summarise(letters: Sequence[StoredLetter]) -> Counter[tuple[str, str]]:
    """How many dead letters per (partner, reason)."""
    return Counter((s.letter.org, s.letter.reason) for s in letters)


def list_lines(settings: Settings, partner: str | None = None, *, bootstrap: str | None = None,
               each: bool = False) -> list[str]:
    """`carehub fhir-dlq list`: counts per partner and reason, replayed or not; ``each``: one line per letter.

    Lines name positions, organisations, alert ids, statuses and times, never the Bundle.
    """
    address = _address(settings, bootstrap)
    topic = fhir_deadletter_topic(settings)
    letters = read_fhir_dead_letters(address, topic, partner)
    done = replayed_positions(address, fhir_replayed_topic(settings))
    waiting = summarise([s for s in letters if s.position not in done])
    lines = [f"{len(letters)} FHIR dead letters in {topic}, {sum(waiting.values())} not replayed yet"]
    for (org, reason), n in sorted(summarise(letters).items()):
        lines.append(f"  {org:12} {reason:9} {n:7}  ({waiting[(org, reason)]} not replayed)")
    if each:
        for s in letters:
            d = s.letter
            state = "replayed" if s.position in done else "waiting"
            lines.append(f"  {s.position:>8}  {d.org}  {d.alert_id}  {d.reason}  {d.attempts} attempts  "
                         f"last {_iso(d.last_attempt_at)}: {d.last_error[:120]}  [{state}]")
    return lines


def replay(settings: Settings, partner: str | None = None, dry_run: bool = False, *,
           bootstrap: str | None = None) -> tuple[int, int]:
    """Re-publish dead-lettered alerts for their delivery loop to send again, each dead letter once.

    Returns (replayed, or to replay with ``dry_run``; skipped because replayed before). The
    alert goes back to the alerts topic with its partner as key and a replay header; the
    gateway's delivery loop for that partner then delivers it (or dead-letters it anew).
    """
    address = _address(settings, bootstrap)
    topic = fhir_deadletter_topic(settings)
    done = replayed_positions(address, fhir_replayed_topic(settings))
    letters = read_fhir_dead_letters(address, topic, partner)
    todo = [s for s in letters if s.position not in done]
    if dry_run or not todo:
        return len(todo), len(letters) - len(todo)
    producer = KafkaProducer(bootstrap_servers=address, client_id="carehub-fhir-dlq-replay",
                             **client_profile(settings).kafka_python_producer())
    try:
        for s in todo:
            marker = f"{topic}:{s.position}".encode()
            producer.send(alerts_topic(settings), key=s.letter.org.encode(), value=s.letter.alert,
                          headers=[(REPLAY_HEADER, marker)]).get(30)
            producer.send(fhir_replayed_topic(settings), key=s.position.encode(),
                          value=str(time.time()).encode()).get(30)
    finally:
        producer.close()
    return len(todo), len(letters) - len(todo)


def replay_of(headers: Sequence[tuple[str, bytes]] | None) -> str:
    """The dead letter an alerts-topic record replays (``topic:partition:offset``), or ``""``."""
    for key, value in headers or ():
        if key == REPLAY_HEADER:
            return value.decode(errors="replace")
    return ""


def _address(settings: Settings, bootstrap: str | None) -> str:
    address = bootstrap or settings.kafka_bootstrap
    if not address:
        raise SystemExit("carehub fhir-dlq: set CAREHUB_KAFKA_BOOTSTRAP or pass --bootstrap host:port")
    return address


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
