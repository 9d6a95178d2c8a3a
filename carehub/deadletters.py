"""Reading and replaying the dead-letter topic (`carehub dlq`).

Reads go to the end each partition's Fetch response reports (carehub.kafka.read), which is
right on every broker, unlike the embedded broker's ListOffsets (docs/embedded-broker.md).
Replays are recorded in a compacted topic keyed by the dead letter's position, so each
dead letter is replayed at most once; one rejected again lands anew in the topic.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kafka import KafkaProducer

from carehub.kafka.profile import EMBEDDED, ClientProfile
from carehub.kafka.read import read_to_end
from carehub.sdk import Publisher
from carehub.v1 import ingest_pb2 as ing

REPLAY_HEADER = "carehub-replay-of"
HL7_CONTENT_TYPE = b"x-application/hl7-v2+er7"  # as services/mllp writes it
FHIR_CONTENT_TYPE = b"application/fhir+json"     # as services/fhir writes it
# what the MLLP and FHIR doors refused: answered to the sender at once, nothing to re-publish
DOOR_CONTENT_TYPES = (HL7_CONTENT_TYPE, FHIR_CONTENT_TYPE)


@dataclass(frozen=True)
class Stored:
    partition: int
    offset: int
    letter: ing.DeadLetter

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


def read_topic(bootstrap: str, topic: str) -> Iterator[tuple[int, int, bytes | None, bytes]]:
    """(partition, offset, key, value) of every record now in ``topic``."""
    for r in read_to_end(bootstrap, topic):
        if r.value is not None:
            yield r.partition, r.offset, r.key, r.value


def read_dead_letters(bootstrap: str, topic: str, reason: str | None = None) -> list[Stored]:
    wanted = _reason_number(reason) if reason else None
    out = []
    for partition, offset, _, value in read_topic(bootstrap, topic):
        letter = ing.DeadLetter.FromString(value)
        if wanted is None or letter.reason == wanted:
            out.append(Stored(partition, offset, letter))
    return out


def summarise(letters: list[Stored]) -> Counter[str]:
    return Counter(ing.RejectReason.Name(s.letter.reason) for s in letters)


def _reason_number(reason: str) -> int:
    name = reason.upper()
    if not name.startswith("REJECT_REASON_"):
        name = f"REJECT_REASON_{name}"
    try:
        return ing.RejectReason.Value(name)
    except ValueError:
        known = ", ".join(n.removeprefix("REJECT_REASON_").lower() for n in ing.RejectReason.keys()[1:])
        raise SystemExit(f"carehub dlq: unknown reason {reason!r}; one of: {known}") from None


def replayable(letter: ing.DeadLetter) -> bool:
    """Whether a dead letter came from a Kafka topic it can be published back to."""
    return letter.original_headers.get("content-type", b"") not in DOOR_CONTENT_TYPES


def replayed_positions(bootstrap: str, replayed_topic: str) -> set[str]:
    return {key.decode() for _, _, key, value in read_topic(bootstrap, replayed_topic) if key and value}


def replay(bootstrap: str, deadletter_topic: str, replayed_topic: str, reason: str | None,
           dry_run: bool = False, progress: Callable[[int], None] | None = None,
           profile: ClientProfile = EMBEDDED) -> tuple[int, int]:
    """Re-publish dead letters to their source topics; returns (replayed, skipped as already replayed)."""
    done = replayed_positions(bootstrap, replayed_topic)
    letters = read_dead_letters(bootstrap, deadletter_topic, reason)
    # HL7 v2 or FHIR refused at its door has no topic to go back to: its sender fixes and resends it
    todo = [s for s in letters if s.position not in done and replayable(s.letter)]
    if dry_run or not todo:
        return len(todo), len(letters) - len(todo)
    publishers: dict[str, Publisher] = {}
    marker = KafkaProducer(bootstrap_servers=bootstrap, client_id="carehub-dlq-replay",
                           **profile.kafka_python_producer())
    try:
        for i, s in enumerate(todo, 1):
            letter = s.letter
            pub = publishers.get(letter.source.topic)
            if pub is None:
                pub = publishers[letter.source.topic] = Publisher(bootstrap, topic=letter.source.topic,
                                                                  profile=profile)
            headers = [(k, v) for k, v in letter.original_headers.items() if k not in ("traceparent", "tracestate")]
            content_type = dict(headers).pop("content-type", None)
            headers = [(k, v) for k, v in headers if k != "content-type"]
            headers.append((REPLAY_HEADER, f"{deadletter_topic}:{s.position}".encode()))
            pub.publish_raw(letter.original_value, letter.original_key or None,
                            content_type.decode() if content_type else None, extra_headers=headers)
            pub.flush()
            marker.send(replayed_topic, key=s.position.encode(), value=str(time.time()).encode()).get(30)
            if progress:
                progress(i)
    finally:
        for pub in publishers.values():
            pub.close()
        marker.close()
    return len(todo), len(letters) - len(todo)
