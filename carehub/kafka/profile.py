"""What every Kafka client of carehub uses, per broker profile, in one place.

carehub talks to Kafka through three clients: faust (over aiokafka) in the stream workers,
aiokafka directly in the gateway and the indicators service, and kafka-python in the provider
SDK, the CLI, the harness and admin. Each used to carry its own fetch wait, batching and acks;
they now all take them from a :class:`ClientProfile`, chosen by ``CAREHUB_BROKER_PROFILE``.

The embedded broker (Tansu) has two defects that shape its profile (docs/embedded-broker.md):
- ListOffsets(latest) is wrong after a multi-record produce batch. faust's table recovery relied
  on it; carehub's transport checks its ends against the Fetch high watermark
  (carehub/kafka/ends.py), and readers go to that high watermark too (carehub.kafka.read), so
  every producer, faust's included, batches as usual;
- a fetch is answered only when data is found on one of its polls or its wait expires, never
  woken by a produce, so every hop of the pipeline pays up to the fetch wait: the wait is short.
Nothing else in carehub may special-case the embedded broker: it asks its profile.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from carehub.settings import BrokerProfile, Settings

# The largest record a stream worker may write (faust's default is 1,000,000 bytes). A dead
# letter carries the rejected record whole, and a provider's record may itself be up to 1 MiB
# (the SDK's and Kafka's default limit), so a dead letter needs more than the default; the
# topics that hold dead letters allow as much (carehub/topics.py).
MAX_RECORD_BYTES = 2 * 1024 * 1024
# What a dead letter copies of a rejected record at most; a bigger one is left at its source
# position (a provider topic that allows records this large is not one carehub creates).
MAX_DEADLETTER_ORIGINAL_BYTES = MAX_RECORD_BYTES - 64 * 1024


@dataclass(frozen=True)
class ClientProfile:
    name: str
    # Longest time a fetch may wait for data. On Kafka it is a long poll woken by a produce; on
    # the embedded broker it is also the latency each hop adds when the stream is sparse.
    fetch_max_wait_ms: int
    # Producer batching: linger and the largest batch in bytes, for faust (its changelogs and
    # outputs) and for every other producer.
    linger_ms: int
    faust_max_batch_bytes: int
    max_batch_bytes: int
    acks: str
    idempotence: bool
    request_timeout_ms: int
    # Consumer-group timings for faust workers (the embedded broker holds a join for session/2).
    session_timeout_s: float
    heartbeat_interval_s: float
    # How often faust commits what its stages have done (and flushes their output first).
    commit_interval_s: float

    # ---- per client ------------------------------------------------------------------------
    def faust_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``faust.App`` (the fetch wait goes through carehub's transport)."""
        return {
            "producer_max_batch_size": self.faust_max_batch_bytes,
            "producer_max_request_size": MAX_RECORD_BYTES,
            "producer_linger": self.linger_ms / 1000.0,
            "producer_acks": -1 if self.acks == "all" else int(self.acks),
            # faust's own request timeouts stay (20 min producer, 90 s broker): it retries internally
            "broker_session_timeout": self.session_timeout_s,
            "broker_heartbeat_interval": self.heartbeat_interval_s,
            "broker_commit_interval": self.commit_interval_s,
            "topic_disable_leader": True,
        }

    def aiokafka_consumer(self) -> dict[str, Any]:
        return {"fetch_max_wait_ms": self.fetch_max_wait_ms, "request_timeout_ms": self.request_timeout_ms}

    def aiokafka_producer(self) -> dict[str, Any]:
        return {"linger_ms": self.linger_ms, "max_batch_size": self.max_batch_bytes, "acks": self.acks,
                "enable_idempotence": self.idempotence, "request_timeout_ms": self.request_timeout_ms}

    def kafka_python_consumer(self) -> dict[str, Any]:
        return {"fetch_max_wait_ms": self.fetch_max_wait_ms, "request_timeout_ms": self.request_timeout_ms}

    def kafka_python_producer(self) -> dict[str, Any]:
        return {"linger_ms": self.linger_ms, "batch_size": self.max_batch_bytes, "acks": self.acks,
                "enable_idempotence": self.idempotence, "request_timeout_ms": self.request_timeout_ms}


EMBEDDED = ClientProfile(
    name="embedded",
    fetch_max_wait_ms=100,       # one hop: ~7 ms p50 at 20 ms, ~76 ms at 500 ms (docs/embedded-broker.md)
    linger_ms=0,                 # a hop already waits for its fetch: send at once
    faust_max_batch_bytes=16_384,  # the clients' default: table recovery reads to the Fetch high watermark
    max_batch_bytes=16_384,
    acks="all",
    idempotence=False,           # not checked against Tansu's InitProducerId
    request_timeout_ms=40_000,   # longer than a 20 s broker stall
    session_timeout_s=10.0,      # Tansu holds a join for session/2: ~5 s joins
    heartbeat_interval_s=1.0,
    commit_interval_s=1.0,       # local use: less to redo after a kill, and "caught up" shows sooner
)

KAFKA = ClientProfile(
    name="kafka",
    fetch_max_wait_ms=500,       # Kafka's default; a produce ends the wait early
    linger_ms=5,
    faust_max_batch_bytes=16_384,  # the clients' default batch size
    max_batch_bytes=16_384,
    acks="all",
    idempotence=True,
    request_timeout_ms=40_000,
    session_timeout_s=60.0,      # faust's defaults
    heartbeat_interval_s=3.0,
    commit_interval_s=2.8,
)

PROFILES = {BrokerProfile.EMBEDDED: EMBEDDED, BrokerProfile.KAFKA: KAFKA}


def client_profile(settings: Settings) -> ClientProfile:
    """The profile ``settings`` select, with ``CAREHUB_KAFKA_FETCH_MAX_WAIT_MS`` and
    ``CAREHUB_KAFKA_LINGER_MS`` applied if set."""
    profile = PROFILES[settings.broker_profile]
    if settings.kafka_fetch_max_wait_ms is not None:
        profile = replace(profile, fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    if settings.kafka_linger_ms is not None:
        profile = replace(profile, linger_ms=settings.kafka_linger_ms)
    return profile
