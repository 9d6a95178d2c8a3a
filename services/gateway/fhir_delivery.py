"""FHIR delivery: a FHIR partner's alerts POSTed to its endpoint as notification Bundles, in order.

Partners with a ``[partners.<org>.fhir]`` table (services/gateway/partners.py) get their alerts
this way too; gRPC stays open to everyone. The Bundles are built by the pure domain module
carehub/domain/fhir/notifications.py; the rules for answers and waits are in fhir_policy.py.

**One loop per partner**, each with its own Kafka consumer group
(``<prefix>-fhir-delivery-<org>``) subscribed to ``carehub.alerts``. Alerts are keyed by
recipient, so a partner's alerts are one partition's records in order, and with several gateway
instances the group hands that partition to exactly one of them. The loop skips other partners'
records, POSTs the partner's alerts one at a time, and commits an offset only after a 2xx or
after the alert is safely in the dead-letter topic. A partner that is down holds up only its own
loop; a partner down for an hour gets its alerts when it is back, in order, from the last commit.

**Retries** (fhir_policy.py): no answer, 408, 429 or 5xx are retried with exponential back-off
and jitter (``CAREHUB_FHIR_OUT_RETRY_INITIAL_S`` .. ``_MAX_S``), honouring ``Retry-After``. While
it waits, the loop keeps polling Kafka with its partitions paused, so the group knows it is alive.
Any other answer is permanent and the alert is dead-lettered at once; an alert still undelivered
``CAREHUB_FHIR_OUT_GIVE_UP_AFTER_S`` after its first attempt is dead-lettered too
(carehub/fhir_deadletters.py: what a dead letter holds, listing, replay). Either way the loop
goes on with the next alert: it never gives up silently, and never stops for one alert.

**Nothing twice, as far as a receiver can tell**: the Bundle id is derived from the alert id,
so the one repeat a partner can see is a re-POST of the alert that was in flight when a gateway
stopped or its partition moved (its offset was not committed yet), with the same id.

Every attempt is audited (``fhir_delivered``, ``fhir_replayed``, ``fhir_retry``,
``fhir_dead_letter``) with the organisation, the alert id and a short detail. Logs carry
organisation codes, alert ids and HTTP statuses: never tokens, Bundles or a partner's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from google.protobuf.message import DecodeError

from carehub.domain.alert_rules import load_rules
from carehub.domain.fhir.notifications import moments, notification_bundle
from carehub.fhir_deadletters import GAVE_UP, REJECTED, UNREADABLE, FhirDeadLetter, replay_of
from carehub.kafka.profile import client_profile
from carehub.settings import Settings
from carehub.topics import alerts_topic, fhir_deadletter_topic
from carehub.v1 import alerts_pb2 as al

from . import metrics as m
from .audit import Audit
from .auth import _read
from .fhir_policy import Verdict, next_wait, outcome_excerpt, retry_after, verdict
from .partners import GatewayConfigError, Partners

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/fhir+json"
RESTART_AFTER_S = 5.0   # a loop that failed (Kafka unreachable, say) starts again after this
POLL_RECORDS = 500
WAIT_SLICE_S = 1.0      # while waiting to retry: poll Kafka, look at stop and the assignment this often
STOP_GRACE_S = 5.0      # on stop, how long a loop may take to finish a POST and leave its group


@dataclass(frozen=True)
class Target:
    """A FHIR partner as the delivery loop needs it; the token stays out of repr and logs."""

    org: str
    endpoint: str
    token: str | None = field(default=None, repr=False)


def targets(partners: Partners, environ: Mapping[str, str]) -> list[Target]:
    """The partners with a FHIR endpoint, with their tokens read from the environment.

    A ``token_env`` whose variable is unset or empty stops the gateway at start-up, naming the
    partner and the variable (never a value).
    """
    out = []
    for partner in partners:
        if partner.fhir is None:
            continue
        token = None
        if partner.fhir.token_env is not None:
            token = environ.get(partner.fhir.token_env, "").strip()
            if not token:
                raise GatewayConfigError(
                    f"partner {partner.org}: environment variable {partner.fhir.token_env} (partners.{partner.org}"
                    ".fhir.token_env) is not set or empty; it must hold the bearer token for its FHIR endpoint")
        out.append(Target(partner.org, partner.fhir.endpoint, token))
    return out


def client_ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS towards partners: their endpoints verified against CAREHUB_FHIR_OUT_CA (else the system's
    CAs), and the hub's client certificate for mutual TLS when CAREHUB_FHIR_OUT_CLIENT_CERT/_KEY are set."""
    ca, cert, key = settings.fhir_out_ca, settings.fhir_out_client_cert, settings.fhir_out_client_key
    if ca is not None:
        _read("CAREHUB_FHIR_OUT_CA", ca, "the CA bundle that verifies partners' FHIR endpoints")
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except ssl.SSLError as exc:
        raise GatewayConfigError(f"CAREHUB_FHIR_OUT_CA={ca}: not PEM CA certificates ({exc.reason})") from None
    if (cert is None) != (key is None):
        raise GatewayConfigError("CAREHUB_FHIR_OUT_CLIENT_CERT and CAREHUB_FHIR_OUT_CLIENT_KEY go together: set both "
                                 "(mutual TLS to partners) or neither")
    if cert is not None and key is not None:
        _read("CAREHUB_FHIR_OUT_CLIENT_CERT", cert, "the hub's client certificate for partners' FHIR endpoints")
        _read("CAREHUB_FHIR_OUT_CLIENT_KEY", key, "its private key")
        try:  # the password callback keeps OpenSSL from prompting on a terminal for an encrypted key
            context.load_cert_chain(str(cert), str(key), password=lambda: b"")
        except ssl.SSLError as exc:
            raise GatewayConfigError(
                f"CAREHUB_FHIR_OUT_CLIENT_CERT={cert} and CAREHUB_FHIR_OUT_CLIENT_KEY={key}: not a certificate and "
                f"its matching unencrypted private key ({exc.reason})") from None
    return context


def http_client(settings: Settings, target: Target, context: ssl.SSLContext) -> httpx.AsyncClient:
    headers = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    return httpx.AsyncClient(verify=context, timeout=settings.fhir_out_timeout_s, headers=headers,
                             follow_redirects=False)


@dataclass(frozen=True)
class Answer:
    status: int | None        # None: no answer (refused, timed out, TLS or protocol error)
    error: str = ""           # for the audit and the dead letter: "HTTP 503", "HTTP 400: <outcome text>", ...
    asked_wait_s: float | None = None  # Retry-After


async def post(client: httpx.AsyncClient, endpoint: str, body: bytes) -> Answer:
    try:
        response = await client.post(endpoint, content=body)
    except httpx.HTTPError as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}"[:200])
    if 200 <= response.status_code < 300:
        return Answer(response.status_code)
    excerpt = outcome_excerpt(response.content)
    return Answer(response.status_code, f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else ""),
                  retry_after(response.headers.get("retry-after"), time.time()))


class FhirDelivery:
    """Every FHIR partner's delivery loop. Built with the gateway, so a bad FHIR table, a missing
    token variable or unusable TLS files stop it before it touches Kafka."""

    def __init__(self, settings: Settings, bootstrap: str, partners: Partners,
                 environ: Mapping[str, str] = os.environ) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.targets = targets(partners, environ)
        self.context = client_ssl_context(settings) if self.targets else None
        book = load_rules(definitions=settings.indicator_definitions) if self.targets else None
        self.moments = moments(book) if book is not None else {}

    async def run(self, stop: asyncio.Event, audit: Audit, producer: AIOKafkaProducer) -> None:
        """Deliver until ``stop`` (and only then return, with or without FHIR partners)."""
        if not self.targets or self.context is None:
            await stop.wait()
            return
        clients = [http_client(self.settings, t, self.context) for t in self.targets]
        loops = [PartnerLoop(self.settings, self.bootstrap, t, c, audit, producer, self.moments)
                 for t, c in zip(self.targets, clients, strict=True)]
        log.info("gateway: FHIR delivery to %s", ", ".join(f"{t.org} ({t.endpoint})" for t in self.targets))
        tasks = [asyncio.create_task(self._supervise(loop, stop)) for loop in loops]
        try:
            await stop.wait()
            # Each loop sees stop within a poll or a wait slice and leaves its group, so that its
            # partition moves at once; one still in a POST after the grace is cancelled (the alert
            # was not committed: the next owner sends it again, with the same Bundle id).
            await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in clients:
                await client.aclose()

    @staticmethod
    async def _supervise(loop: PartnerLoop, stop: asyncio.Event) -> None:
        """Keep one partner's loop running: an error stops that partner for a few seconds, no one else."""
        while not stop.is_set():
            try:
                await loop.run(stop)
            except Exception:
                log.exception("fhir: %s: delivery loop failed; starting again in %.0f s", loop.org, RESTART_AFTER_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RESTART_AFTER_S)


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    """Counts assignment changes, so that a loop knows the alert in its hands may be another's now."""

    def __init__(self) -> None:
        self.generation = 0

    def on_partitions_revoked(self, revoked: object) -> None:
        self.generation += 1

    def on_partitions_assigned(self, assigned: object) -> None:
        self.generation += 1


class PartnerLoop:
    def __init__(self, settings: Settings, bootstrap: str, target: Target, client: httpx.AsyncClient, audit: Audit,
                 producer: AIOKafkaProducer, moments: Mapping[str, str], rng: random.Random | None = None) -> None:
        self.settings, self.bootstrap, self.target = settings, bootstrap, target
        self.org, self.key = target.org, target.org.encode()
        self.client, self.audit, self.producer, self.moments = client, audit, producer, moments
        self.rng = rng or random.Random()
        self.group = f"{settings.topic_prefix}-fhir-delivery-{target.org}"
        self.rebalances = _Rebalances()

    def _consumer(self) -> AIOKafkaConsumer:
        profile = client_profile(self.settings)
        # Between two polls there is at most one POST (four timeouts at worst: connect, write,
        # read, pool) and two Kafka writes; the group must not think the loop is dead meanwhile.
        poll_interval_ms = max(300_000, int((4 * self.settings.fhir_out_timeout_s + 60) * 1000))
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, client_id=f"carehub-fhir-{self.org}",
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_interval_ms=poll_interval_ms,
            session_timeout_ms=int(profile.session_timeout_s * 1000),
            heartbeat_interval_ms=int(profile.heartbeat_interval_s * 1000), **profile.aiokafka_consumer())

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._consumer()
        await consumer.start()
        try:
            consumer.subscribe([alerts_topic(self.settings)], listener=self.rebalances)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=POLL_RECORDS)
                generation = self.rebalances.generation
                for tp, records in batches.items():
                    if not await self._partition(consumer, tp, records, generation, stop):
                        break  # the assignment changed or we are stopping: poll again from the commits
        finally:
            m.FHIR_LAG.labels(self.org).set(0)
            await consumer.stop()

    def _mine(self, generation: int, stop: asyncio.Event) -> bool:
        return generation == self.rebalances.generation and not stop.is_set()

    async def _partition(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord],
                         generation: int, stop: asyncio.Event) -> bool:
        """Deliver this partner's records of one fetched batch, in order; False to abandon the batch."""
        committed = None
        for record in records:
            if record.key != self.key or record.value is None:
                continue  # another partner's alert
            if not await self._deliver(consumer, record, generation, stop):
                return False
            committed = record.offset + 1
            if not await self._commit(consumer, tp, committed, generation):
                return False
        last = records[-1].offset + 1 if records else None
        if last is not None and last != committed:  # the batch ended with others' records: move past them
            return await self._commit(consumer, tp, last, generation)
        return True

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, generation: int) -> bool:
        try:
            await consumer.commit({tp: offset})
        except KafkaError as exc:  # the partition moved: its new owner goes on from the last commit
            log.warning("fhir: %s: could not commit %s[%d]@%d (%s); the partition's new owner goes on from the "
                        "last commit", self.org, tp.topic, tp.partition, offset, type(exc).__name__)
            return False
        if generation != self.rebalances.generation:
            # reassigned to us meanwhile: the fetch position went back to the older commit
            if tp in consumer.assignment():
                consumer.seek(tp, offset)
            return False
        return True

    async def _deliver(self, consumer: AIOKafkaConsumer, record: ConsumerRecord, generation: int,
                       stop: asyncio.Event) -> bool:
        """POST one alert until a 2xx or a dead letter (True), or until it is no longer ours (False)."""
        if not self._mine(generation, stop):  # the partition may be another instance's by now
            return False
        replay = replay_of(record.headers)
        try:
            alert = al.Alert.FromString(record.value)
        except DecodeError:  # kept for an operator, not retried: it would stop this partner's loop for good
            await self._dead_letter(record, al.Alert(), {}, Answer(None, "not a carehub.v1.Alert"), UNREADABLE, 0,
                                    time.time(), replay)
            return True
        if alert.recipient_org != self.org:
            log.warning("fhir: %s: alert %s at %s[%d]@%d is addressed to %r: skipped", self.org, alert.alert_id,
                        record.topic, record.partition, record.offset, alert.recipient_org)
            return True
        bundle = notification_bundle(alert, self.moments.get(alert.rule), self.target.endpoint)
        body = orjson.dumps(bundle)
        raised = alert.raised_at.ToNanoseconds() / 1e9 if alert.HasField("raised_at") else time.time()
        first = time.time()
        deadline = time.monotonic() + self.settings.fhir_out_give_up_after_s
        failures = 0
        while True:
            m.FHIR_LAG.labels(self.org).set(max(0.0, time.time() - raised))
            answer = await post(self.client, self.target.endpoint, body)
            judged = verdict(answer.status)
            m.FHIR_ATTEMPTS.labels(self.org, judged.value).inc()
            attempts = failures + 1
            if judged is Verdict.DELIVERED:
                m.FHIR_DELIVERY_SECONDS.observe(max(0.0, time.time() - raised))
                m.FHIR_LAG.labels(self.org).set(0)
                detail = f"HTTP {answer.status}, attempt {attempts}, Bundle {bundle['id']}"
                await self.audit.write(self.org, "fhir_replayed" if replay else "fhir_delivered", alert.alert_id,
                                       alert.trace_id, detail + (f", replay of {replay}" if replay else ""))
                log.info("fhir: %s: alert %s delivered (HTTP %s, attempt %d)%s", self.org, alert.alert_id,
                         answer.status, attempts, f", replay of {replay}" if replay else "")
                return True
            failures += 1
            left = deadline - time.monotonic()
            if judged is Verdict.PERMANENT or left <= 0:
                await self._dead_letter(record, alert, bundle, answer, REJECTED if judged is Verdict.PERMANENT
                                        else GAVE_UP, attempts, first, replay)
                return True
            wait = next_wait(failures, answer.asked_wait_s, self.settings.fhir_out_retry_initial_s,
                             self.settings.fhir_out_retry_max_s, left, self.rng)
            await self.audit.write(self.org, "fhir_retry", alert.alert_id, alert.trace_id,
                                   f"attempt {attempts}: {answer.error}; next in {wait:.1f} s")
            log.warning("fhir: %s: alert %s attempt %d: %s; next in %.1f s", self.org, alert.alert_id, attempts,
                        f"HTTP {answer.status}" if answer.status is not None else "no answer", wait)
            if not await self._wait(consumer, wait, generation, stop, raised):
                return False

    async def _wait(self, consumer: AIOKafkaConsumer, seconds: float, generation: int, stop: asyncio.Event,
                    raised: float) -> bool:
        """Wait before a retry, polling Kafka with this loop's partitions paused (so the group sees it
        alive and nothing new is handed out); False if the assignment changed or we are stopping."""
        paused = consumer.assignment()
        consumer.pause(*paused)
        try:
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                if not self._mine(generation, stop):
                    return False
                got = await consumer.getmany(timeout_ms=max(1, int(min(left, WAIT_SLICE_S) * 1000)))
                for tp, records in got.items():  # only after a rebalance: hand them back untouched
                    consumer.seek(tp, records[0].offset)
                m.FHIR_LAG.labels(self.org).set(max(0.0, time.time() - raised))
            return self._mine(generation, stop)
        finally:
            consumer.resume(*(tp for tp in paused if tp in consumer.assignment()))

    async def _dead_letter(self, record: ConsumerRecord, alert: al.Alert, bundle: dict[str, object], answer: Answer,
                           reason: str, attempts: int, first: float, replay: str) -> None:
        letter = FhirDeadLetter(
            org=self.org, alert_id=alert.alert_id, reason=reason, attempts=attempts, last_status=answer.status or 0,
            last_error=answer.error, first_attempt_at=first, last_attempt_at=time.time(),
            endpoint=self.target.endpoint, bundle=dict(bundle), alert=bytes(record.value),
            source=f"{record.topic}[{record.partition}]@{record.offset}", rule=alert.rule, replay_of=replay)
        # in Kafka before the offset is committed: a crash in between gives a second dead letter, never none
        await self.producer.send_and_wait(fhir_deadletter_topic(self.settings), key=self.key, value=letter.to_json())
        m.FHIR_DEAD_LETTERS.labels(self.org, reason).inc()
        m.FHIR_LAG.labels(self.org).set(0)
        await self.audit.write(self.org, "fhir_dead_letter", alert.alert_id, alert.trace_id,
                               f"{reason} after {attempts} attempts: {answer.error}"[:500])
        log.error("fhir: %s: alert %s dead-lettered (%s after %d attempts; last %s)", self.org, alert.alert_id,
                  reason, attempts, f"HTTP {answer.status}" if answer.status is not None else "no answer")
