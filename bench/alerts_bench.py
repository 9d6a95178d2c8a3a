"""Alert latency: a provider publishes an event, a partner's gRPC subscriber receives the alert.

Everything runs on this machine, bound to 127.0.0.1: the embedded broker, the five services as
processes (python -m services.ingest, .identity, .timeline, .alerts, .gateway, as in
tests/integration/test_gateway.py), a publisher process and the subscribers (grpc.aio, in this
process). The script starts and stops all of them itself and ends only the processes it started.

1. **Paced latency.** 20 partner practices subscribe over mutual TLS. A paced stream of events
   (100 and then 1,000 events/s, 20 s each) is published through the SDK (carehub.sdk.Publisher):
   the synthetic region's records as background and, evenly spread, 10% *probes*: emergency
   admissions for an ambulatory care sensitive condition, each of a person registered with one
   of the subscribed practices (registered, and on the timeline, before the clock starts). Each
   probe raises exactly one alert, to that practice.
2. **Fan-out.** 1,000 partner practices (1,000 client certificates; bearer tokens with
   ``--fanout-auth token``) subscribe at once from this process, one channel each; probes for
   persons registered with all of them are published (100 events/s with 50% probes: 1,000
   alerts, one per practice; then 1,000 events/s with 10%: 2,000 alerts). Every alert a
   subscriber receives must be addressed to its own organisation (violations are counted).

Latency: the publisher wraps each probe's ``publish`` in a span of its own, so the W3C
``traceparent`` the SDK writes into the Kafka headers carries a trace id the publisher knows; it
notes the wall-clock time just before the call. The hub carries the trace context through to the
alert (``Alert.trace_id``); the subscriber notes the wall-clock time at which the message came out
of its gRPC stream. Latency = received - published (one machine, one clock). It is split at
``Alert.raised_at`` (the alert worker's clock) and, afterwards, at the Kafka timestamp of the
record carrying the probe on each stage's output topic.

Passes (``--passes``, each a fresh set of services on the same broker):
``0.02/fanout`` - CAREHUB_INGEST_BATCH_WITHIN_S=0.02 (the default 0.2 s window per stage would
otherwise dominate), with the fan-out; ``0.2`` - the default window; ``0.02:20/fanout`` - as the
first, but with every Kafka consumer's fetch_max_wait_ms capped at 20 ms, a what-if run through a
wrapper (``--service-child``): the embedded broker answers a fetch when its wait runs out, not when
a record arrives, and faust waits 1,500 ms (aiokafka's default, the gateway's, 500 ms).

    python bench/alerts_bench.py                          # all of it, about 9 minutes
    python bench/alerts_bench.py --rates 100 --seconds 10 --subscribers 100 --passes 0.02/fanout
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pickle
import random
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import grpc.aio  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from carehub.v1 import care_event_pb2 as ce  # noqa: E402
from carehub.v1 import partner_pb2 as pb  # noqa: E402
from carehub.v1 import partner_pb2_grpc as pb_grpc  # noqa: E402

HOSPITAL = "RXH01"  # the probes' hospital; no synthetic organisation has this code
ACSC = ("N10", "J44.1")  # acute pyelonephritis, COPD: both on the ACSC list, both raise acsc_emergency_admission
GIVEN = ("Ada", "Bert", "Cora", "Dev", "Edna", "Farid", "Gwen", "Hamid", "Iris", "Joe", "Kaur", "Lena", "Mo",
         "Nia", "Olu", "Priya", "Quinn", "Rhys", "Sian", "Tariq")
FAMILY = ("Ashworth", "Bell", "Chaudhry", "Dobson", "Evans", "Fairclough", "Gill", "Hussain", "Ingham", "Jones",
          "Khan", "Lister", "Mensah", "Nowak", "Okafor", "Patel", "Quigley", "Rowe", "Shaw", "Turner")
PREFIX_PHASE1, PREFIX_FANOUT, PREFIX_WARMUP = "BP", "BQ", "BW"
SERVICES = ("ingest", "identity", "timeline", "alerts")


# ---- the publisher child: `alerts_bench.py --publish-child SPEC` ---------------------------------------


def publish_child(spec_path: Path) -> None:
    """Publish the spec's events at its rate; write each probe's trace id and publish time."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from carehub.sdk import Publisher

    spec = pickle.loads(spec_path.read_bytes())
    trace.set_tracer_provider(TracerProvider())  # real trace ids, exported nowhere
    tracer = trace.get_tracer("carehub.bench")
    probes: list[tuple[bytes, bytes]] = spec["probes"]
    background: list[tuple[bytes, bytes, str]] = spec["background"]
    rate, total, share = float(spec["rate"]), int(spec["total"]), float(spec["share"])
    out: list[tuple[str, float]] = []
    late = 0
    max_lag = 0.0
    with Publisher(spec["bootstrap"], topic=spec["topic"]) as pub:
        started = time.perf_counter() + 0.2
        p = b = 0
        for i in range(total):
            due = started + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:
                late += wait < -0.005
                max_lag = max(max_lag, -wait)
            if is_probe(i, share) and p < len(probes):
                key, value = probes[p]
                p += 1
                with tracer.start_as_current_span("bench publish") as span:
                    t = time.time()
                    pub.publish_raw(value, key, "application/json")
                out.append((format(span.get_span_context().trace_id, "032x"), t))
            else:
                key, value, content_type = background[b % len(background)]
                b += 1
                pub.publish_raw(value, key, content_type)
        elapsed = time.perf_counter() - started
        pub.flush()
    Path(spec["out"]).write_text(json.dumps({
        "probes": out, "published": total, "sent": pub.sent, "failed": pub.failed, "errors": pub.errors[:3],
        "seconds": elapsed, "late": late, "max_lag_s": max_lag,
    }))


def service_child(service: str, fetch_wait_ms: int) -> None:
    """Run ``services.<service>`` with every aiokafka consumer's fetch_max_wait_ms capped (a what-if).

    The embedded broker answers a fetch when its wait runs out, not when a record arrives, so the
    wait (1,500 ms in faust's consumer, 500 ms in aiokafka's default, the gateway's) is latency.
    """
    import runpy

    import aiokafka

    original = aiokafka.AIOKafkaConsumer.__init__

    def capped(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["fetch_max_wait_ms"] = min(int(kwargs.get("fetch_max_wait_ms", 500)), fetch_wait_ms)
        original(self, *args, **kwargs)

    setattr(aiokafka.AIOKafkaConsumer, "__init__", capped)  # noqa: B010
    sys.argv = [f"services.{service}"]  # faust's worker reads the command line
    runpy.run_module(f"services.{service}", run_name="__main__", alter_sys=True)


def is_probe(i: int, share: float) -> bool:
    """Whether event ``i`` of a run is a probe: evenly spread, ``share`` of them."""
    return math.floor((i + 1) * share) > math.floor(i * share)


# ---- people, events, partners ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    n: int
    nhs: str
    given: str
    family: str
    birth_date: str
    postcode: str
    practice: str

    @property
    def practice_id(self) -> str:
        return f"P-{self.n:06d}"

    @property
    def hospital_id(self) -> str:
        return f"H-{self.n:06d}"


def make_people(count: int, practices: list[str], start: int, rng: random.Random, taken: set[str]) -> list[Person]:
    from carehub.synthetic.population import synthetic_nhs_number

    people = []
    for i in range(count):
        nhs = synthetic_nhs_number(rng)
        while nhs in taken:
            nhs = synthetic_nhs_number(rng)
        taken.add(nhs)
        born = datetime(1930, 1, 1) + timedelta(days=rng.randrange(365 * 60))
        people.append(Person(start + i, nhs, rng.choice(GIVEN), rng.choice(FAMILY), born.strftime("%Y-%m-%d"),
                             f"LS{rng.randrange(1, 29)} {rng.randrange(1, 9)}{rng.choice('ABDEFGHJ')}"
                             f"{rng.choice('LNPQRSTU')}", practices[i % len(practices)]))
    return people


def care_event(person: Person, kind: ce.EventType.ValueType, org: str, sector: ce.Sector.ValueType, local_id: str,
               when: datetime) -> ce.CareEvent:
    event = ce.CareEvent(
        event_id=str(uuid.uuid4()), schema_version=1, source_org=org, source_sector=sector, event_type=kind,
        person=ce.Person(local_id=local_id, national_id=person.nhs, given_name=person.given,
                         family_name=person.family, birth_date=person.birth_date, sex=ce.SEX_FEMALE,
                         postcode=person.postcode, address_line="1 Bench Street"),
    )
    event.event_time.FromDatetime(when)
    event.recorded_time.FromDatetime(min(datetime.now(UTC), when + timedelta(hours=1)))
    return event


def registration(person: Person) -> tuple[bytes, bytes]:
    e = care_event(person, ce.EVENT_TYPE_REGISTRATION, person.practice, ce.SECTOR_PRIMARY_CARE, person.practice_id,
                   datetime.now(UTC) - timedelta(days=200))
    e.registered_practice, e.locality = person.practice, "L01"  # only the practice says where one is registered
    return encoded(e)


def admission(person: Person, k: int) -> tuple[bytes, bytes]:
    """An emergency ACSC admission: one alert, to the person's practice."""
    e = care_event(person, ce.EVENT_TYPE_ADMISSION, HOSPITAL, ce.SECTOR_ACUTE, person.hospital_id,
                   datetime.now(UTC) - timedelta(hours=2))
    e.clinical.spell_id = f"S-{person.n}-{k}"
    e.clinical.admission_method = ce.ADMISSION_METHOD_EMERGENCY
    e.clinical.admission_source = "19"
    e.clinical.diagnoses.add(code=ACSC[person.n % 2], position=1, provisional=True)
    return encoded(e)


def encoded(event: ce.CareEvent) -> tuple[bytes, bytes]:
    from carehub.sdk import encode

    value, _ = encode(event)
    return f"{event.source_org}/{event.person.local_id}".encode(), value


def background_records(count: int, seed: int) -> list[tuple[bytes, bytes, str]]:
    """The first ``count`` records of a synthetic region (valid ones and its share of mess)."""
    from carehub.synthetic import RegionConfig, generate_region

    people = max(1000, count // 6)
    while True:
        records = generate_region(RegionConfig(people=people, seed=11)).records
        if len(records) >= count:
            return [(r.key, r.value, r.content_type) for r in records[:count]]
        people *= 2


@dataclass
class PartnerSet:
    orgs: list[str]
    auth: str  # "mtls" or "token"
    ca: Path
    certs: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        from services.gateway.partners import hash_token

        lines = []
        for org in self.orgs:
            lines.append(f'[partners.{org}]\nname = "Bench practice {org}"\n')
            if org in self.tokens:
                lines.append(f'tokens_sha256 = ["{hash_token(self.tokens[org])}"]\n')
        path.write_text("".join(lines))
        return path

    def channel(self, target: str, org: str) -> grpc.aio.Channel:
        from services.gateway.auth import client_channel

        if self.auth == "token":
            return client_channel(target, self.ca, token=self.tokens[org])
        cert, key = self.certs[org]
        return client_channel(target, self.ca, cert, key)


def partner_set(pki_dir: Path, orgs: list[str], auth: str) -> tuple[PartnerSet, Path, Path]:
    """Partners with client certificates (or tokens); also returns the server's certificate and key."""
    from carehub.tlsgen import make_demo_pki

    pki = make_demo_pki(pki_dir, orgs if auth == "mtls" else [])
    ps = PartnerSet(orgs, auth, pki.ca.cert)
    if auth == "mtls":
        ps.certs = {org: (pki.clients[org].cert, pki.clients[org].key) for org in orgs}
    else:
        ps.tokens = {org: secrets.token_urlsafe(32) for org in orgs}
    return ps, pki.server.cert, pki.server.key


# ---- the hub: broker and services as processes -------------------------------------------------------


def free_port() -> int:
    from carehub.kafka.broker import free_port as fp

    return fp("127.0.0.1")


@dataclass
class Hub:
    bootstrap: str
    work: Path
    batch_within: float
    partitions: int
    fetch_wait_ms: int | None = None  # cap every consumer's fetch_max_wait_ms (a what-if), or leave it
    prefix: str = field(default_factory=lambda: f"ab{uuid.uuid4().hex[:8]}")
    key: str = field(default_factory=lambda: secrets.token_hex(32))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAREHUB_", "OTEL_"))}
        env.update(
            CAREHUB_KAFKA_BOOTSTRAP=self.bootstrap, CAREHUB_PSEUDONYM_KEY=self.key, CAREHUB_TOPIC_PREFIX=self.prefix,
            CAREHUB_DATA_DIR=str(self.work / self.prefix), CAREHUB_METRICS_PORT="0",
            CAREHUB_PARTITIONS=str(self.partitions), CAREHUB_INGEST_BATCH_WITHIN_S=str(self.batch_within),
            CAREHUB_LOG_LEVEL="warning", CAREHUB_WEB_PORT=str(free_port()),
            CAREHUB_WORKER_NAME=f"w{len(self.procs) + 1}", **extra,
        )
        return env

    def create_topics(self) -> None:
        from carehub.kafka.broker import create_topics
        from carehub.settings import load_settings
        from carehub.topics import topic_specs

        settings = load_settings(kafka_bootstrap=self.bootstrap, pseudonym_key=self.key, topic_prefix=self.prefix,
                                 data_dir=self.work / self.prefix, partitions=self.partitions)
        create_topics(self.bootstrap, topic_specs(settings))

    def start(self, service: str, **extra: str) -> subprocess.Popen[bytes]:
        (self.work / self.prefix).mkdir(parents=True, exist_ok=True)
        log = (self.work / self.prefix / f"{service}-{len(self.procs) + 1}.log").open("ab")
        command = [sys.executable, "-m", f"services.{service}"]
        if self.fetch_wait_ms is not None:
            command = [sys.executable, __file__, "--service-child", service, "--fetch-wait-ms", str(self.fetch_wait_ms)]
        proc = subprocess.Popen(command, cwd=ROOT, env=self.env(**extra), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{shlex.join(proc.args)} (pid {proc.pid}) exited with {proc.returncode}; "  # type: ignore[arg-type]
                                   f"see {self.work / self.prefix}")

    def publish_now(self, records: list[tuple[bytes, bytes]]) -> None:
        from carehub.sdk import Publisher

        with Publisher(self.bootstrap, topic=self.topic("provider.events"), linger_ms=20) as pub:
            for key, value in records:
                pub.publish_raw(value, key, "application/json")
            pub.flush()
        if pub.failed:
            raise RuntimeError(f"publishing failed: {pub.errors[:3]}")

    def wait_timeline(self, count: int, timeout_s: float) -> float:
        """Seconds until the timeline has written ``count`` events (the pre-registrations)."""
        from kafka import KafkaConsumer, TopicPartition

        from carehub.v1 import timeline_pb2 as tl

        started = time.monotonic()
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            topic = self.topic("timeline.events")
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            seen = 0
            while seen < count:
                if time.monotonic() - started > timeout_s:
                    raise RuntimeError(f"the timeline wrote {seen} of {count} registrations in {timeout_s:.0f} s")
                self.check_alive()
                for records in consumer.poll(timeout_ms=200).values():
                    seen += sum(len(tl.TimelineBatch.FromString(r.value).events) for r in records)
            return time.monotonic() - started
        finally:
            consumer.close()


STAGES = ("provider.events", "ingest.accepted", "identity.linked", "timeline.events", "alerts")


def trace_of(context: Any) -> str:
    parts = context.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else ""


def stage_stamps(hub: Hub, trace_ids: set[str], idle_s: float = 3.0) -> dict[str, dict[str, float]]:
    """For each stage's output topic, the Kafka timestamp (s) of the first record carrying each probe."""
    from kafka import KafkaConsumer, TopicPartition

    from carehub.v1 import alerts_pb2 as al
    from carehub.v1 import identity_pb2 as idn
    from carehub.v1 import ingest_pb2 as ing
    from carehub.v1 import timeline_pb2 as tl

    def provider(value: bytes, headers: list[tuple[str, bytes]]) -> list[str]:
        return [trace_of({k: v.decode("latin-1") for k, v in headers})]

    readers: dict[str, Callable[[bytes, list[tuple[str, bytes]]], list[str]]] = {
        "provider.events": provider,
        "ingest.accepted": lambda v, h: [trace_of(e.trace_context) for e in ing.AcceptedBatch.FromString(v).events],
        "identity.linked": lambda v, h: [trace_of(e.event.trace_context) for e in idn.LinkedBatch.FromString(v).events],
        "timeline.events": lambda v, h: [trace_of(e.linked.event.trace_context)
                                         for e in tl.TimelineBatch.FromString(v).events],
        "alerts": lambda v, h: [al.Alert.FromString(v).trace_id],
    }
    out: dict[str, dict[str, float]] = {stage: {} for stage in STAGES}
    consumer = KafkaConsumer(bootstrap_servers=hub.bootstrap, enable_auto_commit=False, max_poll_records=5000)
    try:
        tps = [TopicPartition(hub.topic(s), p) for s in STAGES
               for p in sorted(consumer.partitions_for_topic(hub.topic(s)) or ())]
        by_topic = {hub.topic(s): s for s in STAGES}
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            for tp, records in consumer.poll(timeout_ms=300).items():
                last = time.monotonic()
                stage = by_topic[tp.topic]
                seen = out[stage]
                for r in records:
                    if r.value is None:
                        continue
                    for trace_id in readers[stage](r.value, list(r.headers or ())):
                        if trace_id in trace_ids:
                            seen[trace_id] = min(seen.get(trace_id, math.inf), r.timestamp / 1000)
        return out
    finally:
        consumer.close()


# ---- subscribers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    org: str  # the subscriber's organisation
    recipient_org: str
    trace_id: str
    received: float  # wall clock, s
    raised: float  # Alert.raised_at, s


@dataclass
class Subscribers:
    target: str
    partners: PartnerSet
    received: dict[str, list[Received]] = field(default_factory=dict)  # by trace id
    ready: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    resumes: int = 0
    violations: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def start(self) -> None:
        for org in self.partners.orgs:
            channel = self.partners.channel(self.target, org)
            self.channels.append(channel)
            self.tasks.append(asyncio.create_task(self._run(org, channel)))

    async def _run(self, org: str, channel: grpc.aio.Channel) -> None:
        stub = pb_grpc.PartnerGatewayStub(channel)
        cursor = ""
        while True:
            call = stub.SubscribeAlerts(pb.SubscribeAlertsRequest(cursor=cursor))
            try:
                async for message in call:
                    now = time.time()
                    self.ready.add(org)
                    cursor = message.cursor or cursor
                    if message.HasField("alert"):
                        alert = message.alert
                        if alert.recipient_org != org:
                            self.violations += 1
                        self.received.setdefault(alert.trace_id, []).append(Received(
                            org, alert.recipient_org, alert.trace_id, now, alert.raised_at.ToNanoseconds() / 1e9))
                    elif message.HasField("resume"):
                        self.resumes += 1
                        break
            except grpc.aio.AioRpcError as exc:
                self.errors[exc.code().name] += 1
                await asyncio.sleep(0.5)

    async def wait_ready(self, timeout_s: float) -> float:
        started = time.monotonic()
        while len(self.ready) < len(self.partners.orgs):
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"only {len(self.ready)} of {len(self.partners.orgs)} subscribers got a first "
                                   f"message in {timeout_s:.0f} s; errors {dict(self.errors)}")
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.channels), return_exceptions=True)


async def wait_serving(target: str, partners: PartnerSet, timeout_s: float = 90.0) -> float:
    started = time.monotonic()
    channel = partners.channel(target, partners.orgs[0])
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                request = health_pb2.HealthCheckRequest(service="carehub.v1.PartnerGateway")
                reply = await stub.Check(request, timeout=5)  # type: ignore[attr-defined]
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise RuntimeError("the gateway did not come up")
            await asyncio.sleep(0.3)
    finally:
        await channel.close()


def start_gateway(hub: Hub, partners: PartnerSet, server: tuple[Path, Path], heartbeat_s: float,
                  ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    path = partners.write(hub.work / f"partners-{hub.prefix}-{partners.orgs[0]}-{len(partners.orgs)}.toml")
    env = dict(CAREHUB_GATEWAY_HOST="127.0.0.1", CAREHUB_GATEWAY_PORT=str(port),
               CAREHUB_GATEWAY_TLS_CERT=str(server[0]), CAREHUB_GATEWAY_TLS_KEY=str(server[1]),
               CAREHUB_GATEWAY_PARTNERS_FILE=str(path), CAREHUB_GATEWAY_HEARTBEAT_S=str(heartbeat_s))
    if partners.auth == "mtls":
        env["CAREHUB_GATEWAY_CLIENT_CA"] = str(partners.ca)
    else:
        env["CAREHUB_GATEWAY_REQUIRE_CLIENT_CERT"] = "false"
    return hub.start("gateway", **env), f"127.0.0.1:{port}"


# ---- one paced run ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    label: str
    rate: float
    seconds: float
    achieved_rate: float
    subscribers: int
    probes: int
    latencies_ms: list[float]
    to_raised_ms: list[float]
    raised_to_received_ms: list[float]
    missing: int
    duplicates: int
    wrong_org: int
    max_lag_ms: float
    late: int
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and at the end of the run
    second_half_ms: list[float] = field(default_factory=list)  # latencies of probes published in the 2nd half
    published: dict[str, float] = field(default_factory=dict)  # probe trace id -> publish time
    stages: dict[str, list[float]] = field(default_factory=dict)  # stage -> ms after publish, per probe


async def paced_run(label: str, hub: Hub, subs: Subscribers, probes: list[tuple[Person, tuple[bytes, bytes]]],
                    background: list[tuple[bytes, bytes, str]], rate: float, seconds: float, share: float,
                    drain_s: float) -> RunResult:
    total = int(rate * seconds)
    n_probes = sum(is_probe(i, share) for i in range(total))
    if n_probes > len(probes):
        raise RuntimeError(f"{label}: {n_probes} probes wanted, {len(probes)} people prepared")
    spec = hub.work / f"spec-{uuid.uuid4().hex[:6]}.pickle"
    out = spec.with_suffix(".json")
    spec.write_bytes(pickle.dumps({
        "bootstrap": hub.bootstrap, "topic": hub.topic("provider.events"), "rate": rate, "total": total,
        "share": share, "probes": [p[1] for p in probes[:n_probes]], "background": background, "out": str(out),
    }))
    load_before = os.getloadavg()[0]
    child = await asyncio.create_subprocess_exec(sys.executable, __file__, "--publish-child", str(spec), cwd=ROOT)
    try:
        rc = await asyncio.wait_for(child.wait(), seconds * 3 + 60)
    except BaseException:
        if child.returncode is None:
            child.kill()  # by its pid: the publisher this script started
            await child.wait()
        raise
    if rc != 0:
        raise RuntimeError(f"{label}: the publisher exited with {rc}")
    result = json.loads(out.read_text())
    if result["failed"]:
        raise RuntimeError(f"{label}: {result['failed']} publishes failed: {result['errors']}")
    published = {trace_id: (t, probes[i][0].practice) for i, (trace_id, t) in enumerate(result["probes"])}
    deadline = time.monotonic() + drain_s  # a backlog drains; "not received" means not within drain_s
    while time.monotonic() < deadline and any(t not in subs.received for t in published):
        hub.check_alive()
        await asyncio.sleep(0.2)
    latencies, to_raised, to_received, second_half = [], [], [], []
    missing = duplicates = wrong = 0
    half = min((t for t, _ in published.values()), default=0.0) + seconds / 2
    for trace_id, (t, org) in published.items():
        got = subs.received.get(trace_id, [])
        if not got:
            missing += 1
            continue
        duplicates += len(got) - 1
        wrong += sum(r.org != org or r.recipient_org != org for r in got)
        first = min(got, key=lambda r: r.received)
        latencies.append((first.received - t) * 1000)
        if t >= half:
            second_half.append(latencies[-1])
        to_raised.append((first.raised - t) * 1000)
        to_received.append((first.received - first.raised) * 1000)
    return RunResult(label, rate, seconds, result["published"] / result["seconds"], len(subs.partners.orgs),
                     len(published), latencies, to_raised, to_received, missing, duplicates, wrong,
                     result["max_lag_s"] * 1000, result["late"], (load_before, os.getloadavg()[0]), second_half,
                     {k: v[0] for k, v in published.items()})


# ---- reporting ----------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def table(results: list[RunResult]) -> str:
    head = ("| run | events/s (achieved) | subscribers | alerts | p50 ms | p95 ms | p99 ms | max ms "
            "| p99 ms, 2nd half | not received | dup | wrong org | publish→raised p50/p99 ms "
            "| raised→received p50/p99 ms | load avg |")
    rows = [head, "|" + "---|" * 15]
    for r in results:
        lat = r.latencies_ms
        rows.append(
            f"| {r.label} | {r.rate:,.0f} ({r.achieved_rate:,.0f}) | {r.subscribers:,} | {len(lat):,}/{r.probes:,} "
            f"| {pct(lat, 50):.0f} | {pct(lat, 95):.0f} | {pct(lat, 99):.0f} | {max(lat, default=math.nan):.0f} "
            f"| {pct(r.second_half_ms, 99):.0f} "
            f"| {r.missing} | {r.duplicates} | {r.wrong_org} "
            f"| {pct(r.to_raised_ms, 50):.0f} / {pct(r.to_raised_ms, 99):.0f} "
            f"| {pct(r.raised_to_received_ms, 50):.0f} / {pct(r.raised_to_received_ms, 99):.0f} "
            f"| {r.load[0]:.1f}-{r.load[1]:.1f} |")
    return "\n".join(rows)


def stage_table(results: list[RunResult]) -> str:
    """Where the time goes: per probe, each stage's output record's Kafka timestamp after the publish call."""
    cols = [*STAGES, "received"]
    rows = ["| run | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for r in results:
        cells = []
        for col in cols:
            values = r.latencies_ms if col == "received" else r.stages.get(col, [])
            cells.append(f"{pct(values, 50):.0f} / {pct(values, 99):.0f}" if values else "-")
        rows.append(f"| {r.label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- the whole bench ------------------------------------------------------------------------------------


@dataclass
class Plan:
    args: argparse.Namespace
    work: Path
    results: list[RunResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Pass:
    batch_within: float
    fetch_wait_ms: int | None
    fanout: bool

    @classmethod
    def parse(cls, text: str) -> Pass:
        """``WINDOW[:FETCH_MS][/fanout]``, e.g. ``0.02/fanout``, ``0.2``, ``0.02:20/fanout``."""
        spec, _, flag = text.partition("/")
        window, _, fetch = spec.partition(":")
        if flag not in ("", "fanout"):
            raise argparse.ArgumentTypeError(f"{text!r}: expected WINDOW[:FETCH_MS][/fanout]")
        return cls(float(window), int(fetch) if fetch else None, flag == "fanout")

    @property
    def tag(self) -> str:
        fetch = f", fetch wait <= {self.fetch_wait_ms} ms" if self.fetch_wait_ms is not None else ""
        return f"window {self.batch_within:g} s{fetch}"


async def fan_out(plan: Plan, hub: Hub, gateway: subprocess.Popen[bytes], spec: Pass, fan_orgs: list[str],
                  fan_runs: list[tuple[float, float, list[Person]]], background: list[tuple[bytes, bytes, str]],
                  ) -> None:
    """A gateway for 1,000 partners, all subscribed at once; probes spread over all of them."""
    a, tag, offset = plan.args, spec.tag, 0
    subs: Subscribers | None = None
    try:
        hub.stop(gateway)
        pf, server_cert, server_key = partner_set(plan.work / "pki", fan_orgs, a.fanout_auth)
        gateway, target = start_gateway(hub, pf, (server_cert, server_key), a.heartbeat_s)
        up = await wait_serving(target, pf)
        subs = Subscribers(target, pf)
        subs.start()
        ready = await subs.wait_ready(120)
        say(f"{tag}: gateway with {len(fan_orgs):,} partners serving after {up:.1f} s; all {len(fan_orgs):,} "
            f"subscribers ({a.fanout_auth}) had a first message {ready:.1f} s after connecting")
        for rate, share, people in fan_runs:
            bg = background[offset:offset + int(rate * a.seconds)]
            offset += len(bg)
            say(f"{tag}: publishing {rate:g} events/s for {a.seconds:g} s ({len(people)} probes over "
                f"{len(fan_orgs):,} practices)")
            r = await paced_run(f"{rate:g}/s, {len(fan_orgs):,} subscribers, {tag}", hub, subs,
                                [(p, admission(p, 1)) for p in people], bg, rate, a.seconds, share, a.drain_s)
            plan.results.append(r)
            say(f"  -> {len(r.latencies_ms)}/{r.probes} alerts, p50 {pct(r.latencies_ms, 50):.0f} ms, "
                f"p99 {pct(r.latencies_ms, 99):.0f} ms, missing {r.missing}, violations {subs.violations}")
        per_org = Counter(x.org for got in subs.received.values() for x in got)
        expected = Counter(p.practice for _, _, people in fan_runs for p in people)
        plan.notes.append(
            f"{tag}, fan-out: {len(fan_orgs):,} subscribers ({a.fanout_auth}); alerts received by an organisation "
            f"they were not addressed to: {subs.violations}; organisations that received exactly the alerts meant "
            f"for them: {sum(per_org[o] == expected[o] for o in fan_orgs):,}/{len(fan_orgs):,}; resumes "
            f"{subs.resumes}; stream errors {dict(subs.errors)}")
    finally:
        if subs is not None:
            await subs.close()


async def one_pass(plan: Plan, bootstrap: str, spec: Pass, background: list[tuple[bytes, bytes, str]]) -> None:
    a = plan.args
    hub = Hub(bootstrap, plan.work, spec.batch_within, a.partitions, spec.fetch_wait_ms)
    tag = spec.tag
    fanout = spec.fanout and a.subscribers > 0
    first_result = len(plan.results)
    rng = random.Random(5)
    taken: set[str] = set()
    phase1_orgs = [f"{PREFIX_PHASE1}{i:04d}" for i in range(1, a.partners + 1)]
    fan_orgs = [f"{PREFIX_FANOUT}{i:04d}" for i in range(1, a.subscribers + 1)]
    warm_orgs = [f"{PREFIX_WARMUP}0001"]
    need = {r: sum(is_probe(i, a.share) for i in range(int(r * a.seconds))) for r in a.rates}
    per_round = sum(is_probe(i, a.share) for i in range(int(a.warmup_rate * a.warmup_s)))
    warm_people = make_people(per_round * a.warmup_rounds, warm_orgs + phase1_orgs, 0, rng, taken)
    runs_people = {r: make_people(n, phase1_orgs, 10_000 + 100_000 * k, rng, taken)
                   for k, (r, n) in enumerate(need.items())}
    fan_runs = [(rate, share, make_people(sum(is_probe(i, share) for i in range(int(rate * a.seconds))),
                                          fan_orgs, 1_000_000 * (k + 1), rng, taken))
                for k, (rate, share) in enumerate(zip(a.fanout_rates, a.fanout_shares, strict=True))] if fanout else []
    everyone = warm_people + [p for ps in runs_people.values() for p in ps] + [p for *_, ps in fan_runs for p in ps]

    subs: Subscribers | None = None
    completed = False
    try:
        hub.create_topics()
        for service in SERVICES:
            hub.start(service)
        p1, server_cert, server_key = partner_set(plan.work / "pki", warm_orgs + phase1_orgs, "mtls")
        gateway, target = start_gateway(hub, p1, (server_cert, server_key), a.heartbeat_s)
        t0 = time.monotonic()
        await asyncio.to_thread(hub.publish_now, [registration(p) for p in everyone])
        linked_s = await asyncio.to_thread(hub.wait_timeline, len(everyone), 240)
        say(f"{tag}: {len(everyone):,} people registered and on the timeline "
            f"{time.monotonic() - t0:.1f} s after the workers started ({linked_s:.1f} s waiting)")
        await wait_serving(target, p1)
        subs = Subscribers(target, p1)
        subs.start()
        await subs.wait_ready(60)
        say(f"{tag}: {len(p1.orgs)} subscribers over mutual TLS; warming up at {a.warmup_rate:g} events/s")
        warm: list[float] = []  # p50 of each round; the workers settle for a while after start-up
        per_round_bg = int(a.warmup_rate * a.warmup_s)
        for k in range(a.warmup_rounds):
            w = await paced_run("warm-up", hub, subs,
                                [(p, admission(p, 0)) for p in warm_people[k * per_round:(k + 1) * per_round]],
                                background[k * per_round_bg:(k + 1) * per_round_bg], a.warmup_rate, a.warmup_s,
                                a.share, 120)
            warm.append(pct(w.latencies_ms, 50))
            if len(warm) >= 2 and warm[-1] > 0.8 * warm[-2]:  # no longer getting better
                break
        say(f"{tag}: warm-up p50 by round: {', '.join(f'{x:.0f}' for x in warm)} ms")
        plan.notes.append(f"{tag}: warm-up rounds ({a.warmup_s:g} s at {a.warmup_rate:g} events/s), p50 ms: "
                          f"{', '.join(f'{x:.0f}' for x in warm)}")
        offset = per_round_bg * len(warm)
        for rate in a.rates:
            people = runs_people[rate]
            bg = background[offset:offset + int(rate * a.seconds)]
            offset += len(bg)
            say(f"{tag}: publishing {rate:g} events/s for {a.seconds:g} s ({len(people)} probes)")
            r = await paced_run(f"{rate:g}/s, {tag}", hub, subs, [(p, admission(p, 1)) for p in people], bg,
                                rate, a.seconds, a.share, a.drain_s)
            plan.results.append(r)
            say(f"  -> {len(r.latencies_ms)}/{r.probes} alerts, p50 {pct(r.latencies_ms, 50):.0f} ms, "
                f"p99 {pct(r.latencies_ms, 99):.0f} ms, missing {r.missing}")
        plan.notes.append(f"{tag}: phase-1 subscriber violations {subs.violations}, resumes {subs.resumes}, "
                          f"stream errors {dict(subs.errors)}")
        await subs.close()
        subs = None
        if fanout:
            await fan_out(plan, hub, gateway, spec, fan_orgs, fan_runs, background[offset:])
        completed = True
    finally:
        if subs is not None:
            await subs.close()
        await asyncio.to_thread(hub.stop_all)
    if completed:  # where the time went, from the topics (the broker still runs); the figures stand without it
        mine = plan.results[first_result:]
        try:
            stamps = await asyncio.to_thread(stage_stamps, hub, {t for r in mine for t in r.published})
        except Exception as exc:
            plan.notes.append(f"{tag}: no stage breakdown ({exc})")
            return
        for r in mine:
            for stage, seen in stamps.items():
                r.stages[stage] = [(seen[t] - p) * 1000 for t, p in r.published.items() if t in seen]


async def bench(plan: Plan) -> None:
    from carehub.kafka.broker import EmbeddedBroker

    a = plan.args
    per_pass = int(a.warmup_rate * a.warmup_s * a.warmup_rounds + (sum(a.rates) + sum(a.fanout_rates)) * a.seconds)
    t = time.monotonic()
    background = background_records(per_pass, seed=11)
    say(f"{len(background):,} background records from the synthetic region in {time.monotonic() - t:.1f} s")
    broker = EmbeddedBroker(log_path=plan.work / "tansu.log")
    await asyncio.to_thread(broker.start)
    say(f"embedded broker on {broker.bootstrap} (pid {broker.pid})")
    try:
        for spec in a.passes:
            await one_pass(plan, broker.bootstrap, spec, background)
    finally:
        await asyncio.to_thread(broker.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--publish-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--service-child", help=argparse.SUPPRESS)
    parser.add_argument("--fetch-wait-ms", type=int, default=500, help=argparse.SUPPRESS)
    parser.add_argument("--rates", default="100,1000", help="paced rates, events/s (default 100,1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each paced run (default 20)")
    parser.add_argument("--share", type=float, default=0.1, help="share of events that are probes (default 0.1)")
    parser.add_argument("--partners", type=int, default=20, help="subscribed practices in the paced runs")
    parser.add_argument("--subscribers", type=int, default=1000, help="fan-out subscribers (0: skip)")
    parser.add_argument("--fanout-rates", default="100,1000", help="events/s in the fan-out runs (default 100,1000)")
    parser.add_argument("--fanout-shares", default="0.5,0.1",
                        help="share of probes in each fan-out run (default 0.5,0.1: 1,000 and 2,000 alerts)")
    parser.add_argument("--fanout-auth", choices=("mtls", "token"), default="mtls",
                        help="fan-out partners: client certificates, or bearer tokens without them")
    parser.add_argument("--passes", default="0.02/fanout,0.2,0.02:20/fanout",
                        help="hub configurations, each WINDOW[:FETCH_MS][/fanout]: CAREHUB_INGEST_BATCH_WITHIN_S, "
                             "optionally every consumer's fetch_max_wait_ms capped (a what-if), and whether the "
                             "fan-out runs (default 0.02/fanout,0.2,0.02:20/fanout)")
    parser.add_argument("--partitions", type=int, default=4, help="CAREHUB_PARTITIONS (default 4)")
    parser.add_argument("--heartbeat-s", type=float, default=5.0, help="CAREHUB_GATEWAY_HEARTBEAT_S")
    parser.add_argument("--warmup-rate", type=float, default=50.0, help="events/s while warming up (default 50)")
    parser.add_argument("--warmup-s", type=float, default=4.0, help="length of a warm-up round (default 4)")
    parser.add_argument("--warmup-rounds", type=int, default=6,
                        help="warm-up rounds at most; they stop once the p50 improves by less than 20%%")
    parser.add_argument("--drain-s", type=float, default=60.0,
                        help="after a run, wait at most this long for the alerts not yet received (default 60)")
    args = parser.parse_args()
    if args.publish_child:
        publish_child(args.publish_child)
        return
    if args.service_child:
        service_child(args.service_child, args.fetch_wait_ms)
        return
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.fanout_rates = [float(r) for r in args.fanout_rates.split(",") if r]
    args.fanout_shares = [float(r) for r in args.fanout_shares.split(",") if r]
    if len(args.fanout_rates) != len(args.fanout_shares):
        parser.error("--fanout-rates and --fanout-shares need as many values each")
    args.passes = [Pass.parse(p) for p in args.passes.split(",") if p]
    work = Path(tempfile.mkdtemp(prefix="carehub-alerts-bench-"))
    plan = Plan(args, work)
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"settings: rates {args.rates} events/s x {args.seconds:g} s, probe share {args.share:g}, "
          f"{args.partners} partners (mutual TLS); fan-out {args.subscribers} subscribers ({args.fanout_auth}) at "
          f"{args.fanout_rates} events/s, probe shares {args.fanout_shares}; passes "
          f"{[p.tag + (' + fan-out' if p.fanout else '') for p in args.passes]}; "
          f"CAREHUB_PARTITIONS {args.partitions}; heartbeat {args.heartbeat_s:g} s; "
          f"{os.cpu_count()} CPUs; work dir {work}", flush=True)
    started = time.monotonic()
    with _sigterm_as_interrupt():
        try:
            asyncio.run(bench(plan))
        finally:
            if plan.results:
                print()
                print(table(plan.results))
                print("\nms after the publish call, p50 / p99, at which each stage wrote the probe (Kafka record "
                      "timestamps), and at which the subscriber received its alert:\n")
                print(stage_table(plan.results))
                for note in plan.notes:
                    print(f"- {note}")
            print(f"\ntotal {time.monotonic() - started:.0f} s; logs in {work}", flush=True)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous: Callable[[int, Any], Any] | int | None = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
