"""Alert latency: a provider publishes an event, a partner's gRPC subscriber receives the alert.

Everything runs on this machine, bound to 127.0.0.1: the embedded broker, a hub per pass
(carehub.harness.LocalHub: its workers ingest, identity, timeline, alerts and gateway, started by
service name, each with its log in the hub's folder), a publisher process and the subscribers
(grpc.aio, in this process). The script ends only the processes it started.

1. **Paced latency.** 20 partner practices subscribe over mutual TLS. A paced stream of events
   (100 and then 1,000 events/s, 20 s each) is published through the SDK (carehub.sdk.Publisher):
   the synthetic region's records as background and, evenly spread, 10% *probes*: emergency
   admissions for an ambulatory care sensitive condition, each of a person registered with one
   of the subscribed practices (registered, and known to the alert stage, before the clock
   starts: ``hub.settle`` up to the alerts stage). Each probe raises exactly one alert, to that
   practice.
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
record carrying the probe on each stage's output topic (each topic read to its end). After a run
the bench waits until every expected alert has arrived, at most ``--drain-s``; the rest count as
not received.

Passes (``--passes``, each a fresh hub on the same broker): ``0.02/fanout`` -
CAREHUB_INGEST_BATCH_WITHIN_S=0.02 (the default 0.2 s window per stage would otherwise dominate),
with the fan-out; ``0.2`` - the default window; ``0.02:20/fanout`` - as the first, with
CAREHUB_KAFKA_FETCH_MAX_WAIT_MS=20 for every worker, a what-if: the embedded broker answers a fetch
when its wait runs out, not when a record arrives, so each hop pays up to the broker profile's
fetch wait (carehub/kafka/profile.py). ``--fetch-max-wait-ms`` sets it for the passes that do not.

    python bench/alerts_bench.py                          # all of it, about 9 minutes
    python bench/alerts_bench.py --rates 100 --seconds 10 --subscribers 100 --passes 0.02/fanout

A long run: ``--seconds 1800 --windows-s 300`` also prints each run's latency per 5 minutes of
publishing, so that a hub slowing down as its topics grow shows as growth from window to window.

Each run also reports the CPU seconds every process used per 1,000 events (the hub's workers, the
broker, the publisher, this script), from the publisher's start until the last alert arrived, and
the ceiling that allows: the machine's cores over the hub's CPU per event. ``--linger-ms`` sets
every producer's linger (CAREHUB_KAFKA_LINGER_MS for the workers, and the publisher's).
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
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import grpc.aio  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from carehub.harness import LocalHub, Worker, cpu_seconds  # noqa: E402
from carehub.kafka.broker import free_port  # noqa: E402
from carehub.kafka.profile import EMBEDDED  # noqa: E402
from carehub.kafka.read import Record  # noqa: E402
from carehub.v1 import alerts_pb2 as al  # noqa: E402
from carehub.v1 import care_event_pb2 as ce  # noqa: E402
from carehub.v1 import identity_pb2 as idn  # noqa: E402
from carehub.v1 import ingest_pb2 as ing  # noqa: E402
from carehub.v1 import partner_pb2 as pb  # noqa: E402
from carehub.v1 import partner_pb2_grpc as pb_grpc  # noqa: E402
from carehub.v1 import timeline_pb2 as tl  # noqa: E402

HOSPITAL = "RXH01"  # the probes' hospital; no synthetic organisation has this code
ACSC = ("N10", "J44.1")  # acute pyelonephritis, COPD: both on the ACSC list, both raise acsc_emergency_admission
GIVEN = ("Ada", "Bert", "Cora", "Dev", "Edna", "Farid", "Gwen", "Hamid", "Iris", "Joe", "Kaur", "Lena", "Mo",
         "Nia", "Olu", "Priya", "Quinn", "Rhys", "Sian", "Tariq")
FAMILY = ("Ashworth", "Bell", "Chaudhry", "Dobson", "Evans", "Fairclough", "Gill", "Hussain", "Ingham", "Jones",
          "Khan", "Lister", "Mensah", "Nowak", "Okafor", "Patel", "Quigley", "Rowe", "Shaw", "Turner")
PREFIX_PHASE1, PREFIX_FANOUT, PREFIX_WARMUP = "BP", "BQ", "BW"
SERVICES = ("ingest", "identity", "timeline", "alerts")
STAGES = ("provider.events", "ingest.accepted", "identity.linked", "timeline.events", "alerts")


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
    profile = EMBEDDED if spec.get("linger_ms") is None else replace(EMBEDDED, linger_ms=int(spec["linger_ms"]))
    with Publisher(spec["bootstrap"], topic=spec["topic"], profile=profile) as pub:
        started = time.perf_counter() + 0.2
        p = b = 0
        for i in range(total):
            wait = started + i / rate - time.perf_counter()
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
        "cpu_s": time.process_time(),  # the publisher's own CPU, start-up included, for the CPU table
    }))


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
    e = care_event(person, ce.EVENT_TYPE_REGISTRATION, person.practice, ce.SECTOR_PRIMARY_CARE, f"P-{person.n:06d}",
                   datetime.now(UTC) - timedelta(days=200))
    e.registered_practice, e.locality = person.practice, "L01"  # only the practice says where one is registered
    return encoded(e)


def admission(person: Person, k: int) -> tuple[bytes, bytes]:
    """An emergency ACSC admission: one alert, to the person's practice."""
    e = care_event(person, ce.EVENT_TYPE_ADMISSION, HOSPITAL, ce.SECTOR_ACUTE, f"H-{person.n:06d}",
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
        records = generate_region(RegionConfig(people=people, seed=seed)).records
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


# ---- the hub (carehub.harness) ---------------------------------------------------------------------------


def publish_now(hub: LocalHub, records: list[tuple[bytes, bytes]]) -> None:
    from carehub.sdk import Publisher

    with Publisher(hub.bootstrap, topic=hub.topic("provider.events"), linger_ms=20) as pub:
        for key, value in records:
            pub.publish_raw(value, key, "application/json")
        pub.flush()
    if pub.failed:
        raise RuntimeError(f"publishing failed: {pub.errors[:3]}")


def trace_of(traceparent: str) -> str:
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else ""


def traces(stage: str, r: Record) -> list[str]:
    """The trace ids of the events a record of a stage's output topic carries."""
    if r.value is None:
        return []
    if stage == "provider.events":
        return [trace_of(next((v.decode("latin-1") for k, v in r.headers if k == "traceparent"), ""))]
    if stage == "ingest.accepted":
        return [trace_of(e.trace_context.get("traceparent", "")) for e in ing.AcceptedBatch.FromString(r.value).events]
    if stage == "identity.linked":
        return [trace_of(e.event.trace_context.get("traceparent", ""))
                for e in idn.LinkedBatch.FromString(r.value).events]
    if stage == "timeline.events":
        return [trace_of(e.linked.event.trace_context.get("traceparent", ""))
                for e in tl.TimelineBatch.FromString(r.value).events]
    return [al.Alert.FromString(r.value).trace_id]


def stage_stamps(hub: LocalHub, trace_ids: set[str]) -> dict[str, dict[str, float]]:
    """For each stage's output topic, the Kafka timestamp (s) of the first record carrying each probe.

    Each topic is read to the end its partitions report (carehub.kafka.read), keeping only the
    records that carry a probe.
    """
    stage_of = {hub.topic(s): s for s in STAGES}
    out: dict[str, dict[str, float]] = {stage: {} for stage in STAGES}
    for r in hub.read(STAGES, timeout_s=300, keep=lambda r: bool(trace_ids.intersection(traces(stage_of[r.topic], r)))):
        seen = out[stage_of[r.topic]]
        for trace_id in trace_ids.intersection(traces(stage_of[r.topic], r)):
            seen[trace_id] = min(seen.get(trace_id, math.inf), r.timestamp_ms / 1000)
    return out


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
        """Seconds until every subscriber has had a first message (a heartbeat at least)."""
        return await until(lambda: len(self.ready) == len(self.partners.orgs), timeout_s,
                           lambda: f"only {len(self.ready)} of {len(self.partners.orgs)} subscribers got a first "
                                   f"message; errors {dict(self.errors)}")

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.channels), return_exceptions=True)


async def until(condition: Callable[[], bool], timeout_s: float, failure: Callable[[], str] | None = None,
                interval_s: float = 0.1) -> float:
    """Seconds until ``condition()`` holds, polled on this event loop; RuntimeError after ``timeout_s``.

    Without ``failure`` a timeout is not an error: the caller counts what is missing.
    """
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            if failure is None:
                break
            raise RuntimeError(f"not within {timeout_s:.0f} s: {failure()}")
        await asyncio.sleep(interval_s)
    return time.monotonic() - started


async def wait_serving(target: str, partners: PartnerSet, timeout_s: float = 90.0) -> float:
    """Seconds until the gateway's health service says SERVING."""
    started = time.monotonic()
    channel = partners.channel(target, partners.orgs[0])
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="carehub.v1.PartnerGateway")
    try:
        while time.monotonic() - started < timeout_s:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(request, timeout=5)  # type: ignore[attr-defined]
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - started
            await asyncio.sleep(0.3)
        raise RuntimeError(f"the gateway at {target} did not serve within {timeout_s:.0f} s")
    finally:
        await channel.close()


def start_gateway(hub: LocalHub, partners: PartnerSet, server: tuple[Path, Path], heartbeat_s: float,
                  ) -> tuple[Worker, str]:
    port = free_port()
    path = partners.write(hub.data_dir / f"partners-{partners.orgs[0]}-{len(partners.orgs)}.toml")
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
    # per probe: (publish time, latency in ms, or None when not received), for --windows-s
    timeline: list[tuple[float, float | None]] = field(default_factory=list)
    # CPU seconds each process used from the publisher's start until every alert arrived (or the drain
    # ended): the hub's workers by service, "broker", "publisher" and "bench" (subscribers and this script)
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_wall_s: float = 0.0
    events: int = 0  # events published in the run, probes included


def cpu_now(hub: LocalHub, pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each running worker of ``hub`` (summed per service), by ``pids``, and
    by this process ("bench")."""
    used: dict[str, float] = {"bench": time.process_time()}
    for worker in hub.workers:
        if worker.running:
            used[worker.service] = used.get(worker.service, 0.0) + cpu_seconds(worker.pid)
    for name, pid in pids.items():
        used[name] = cpu_seconds(pid)
    return used


async def paced_run(label: str, hub: LocalHub, subs: Subscribers, probes: list[tuple[Person, tuple[bytes, bytes]]],
                    background: list[tuple[bytes, bytes, str]], rate: float, seconds: float, share: float,
                    drain_s: float, pids: dict[str, int] | None = None) -> RunResult:
    """``pids``: other processes whose CPU the run reports (the broker), besides the hub's and its own."""
    total = int(rate * seconds)
    n_probes = sum(is_probe(i, share) for i in range(total))
    if n_probes > len(probes):
        raise RuntimeError(f"{label}: {n_probes} probes wanted, {len(probes)} people prepared")
    spec = hub.data_dir / f"spec-{uuid.uuid4().hex[:6]}.pickle"
    out = spec.with_suffix(".json")
    spec.write_bytes(pickle.dumps({
        "bootstrap": hub.bootstrap, "topic": hub.topic("provider.events"), "rate": rate, "total": total,
        "share": share, "probes": [p[1] for p in probes[:n_probes]], "background": background, "out": str(out),
        "linger_ms": hub.base_env.get(LINGER_ENV),  # the publisher batches as the hub's producers do
    }))
    load_before = os.getloadavg()[0]
    child = await asyncio.create_subprocess_exec(sys.executable, __file__, "--publish-child", str(spec), cwd=ROOT)
    cpu_start, wall_start = cpu_now(hub, pids or {}), time.monotonic()
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

    def all_received() -> bool:  # a backlog drains; "not received" means not within drain_s
        hub.assert_running()
        return all(t in subs.received for t in published)

    await until(all_received, drain_s, interval_s=0.2)
    cpu_end, wall = cpu_now(hub, pids or {}), time.monotonic() - wall_start
    cpu = {k: v - cpu_start.get(k, 0.0) for k, v in cpu_end.items()}
    cpu["publisher"] = result["cpu_s"]
    latencies, to_raised, to_received, second_half = [], [], [], []
    missing = duplicates = wrong = 0
    half = min((t for t, _ in published.values()), default=0.0) + seconds / 2
    timeline: list[tuple[float, float | None]] = []
    for trace_id, (t, org) in published.items():
        got = subs.received.get(trace_id, [])
        if not got:
            missing += 1
            timeline.append((t, None))
            continue
        duplicates += len(got) - 1
        wrong += sum(r.org != org or r.recipient_org != org for r in got)
        first = min(got, key=lambda r: r.received)
        latencies.append((first.received - t) * 1000)
        timeline.append((t, latencies[-1]))
        if t >= half:
            second_half.append(latencies[-1])
        to_raised.append((first.raised - t) * 1000)
        to_received.append((first.received - first.raised) * 1000)
    return RunResult(label, rate, seconds, result["published"] / result["seconds"], len(subs.partners.orgs),
                     len(published), latencies, to_raised, to_received, missing, duplicates, wrong,
                     result["max_lag_s"] * 1000, result["late"], (load_before, os.getloadavg()[0]), second_half,
                     {k: v[0] for k, v in published.items()}, timeline=timeline, cpu_s=cpu, cpu_wall_s=wall,
                     events=result["published"])


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


def windows_table(results: list[RunResult], window_s: float) -> str:
    """Latency by when the probe was published, one row per ``window_s`` of each run: growth shows."""
    rows = ["| run | window (s after the first probe) | alerts | p50 ms | p99 ms | max ms |", "|" + "---|" * 6]
    for r in results:
        if not r.timeline or r.seconds <= window_s:
            continue
        start = min(t for t, _ in r.timeline)
        for k in range(math.ceil(r.seconds / window_s)):
            inside = [ms for t, ms in r.timeline if k * window_s <= t - start < (k + 1) * window_s]
            got = [ms for ms in inside if ms is not None]
            rows.append(f"| {r.label} | {k * window_s:g}-{(k + 1) * window_s:g} | {len(got):,}/{len(inside):,} "
                        f"| {pct(got, 50):.0f} | {pct(got, 99):.0f} | {max(got, default=math.nan):.0f} |")
    return "\n".join(rows)


LINGER_ENV = "CAREHUB_KAFKA_LINGER_MS"
HUB_PROCESSES = ("ingest", "identity", "timeline", "alerts", "gateway", "broker")


def cpu_table(results: list[RunResult]) -> str:
    """What each process spent per 1,000 events, and what that allows: the hub's CPU per event (broker
    included, publisher and subscribers not) against the machine's cores, a ceiling on the sustained rate."""
    cores = os.cpu_count() or 1
    head = ("| run | events | seconds | " + " | ".join(HUB_PROCESSES)
            + " | hub total | publisher | bench | hub's ceiling on this machine |")
    rows = [head, "|" + "---|" * (len(HUB_PROCESSES) + 7)]
    for r in results:
        if not r.events or not r.cpu_s:
            continue
        per_k = {k: v * 1000 / r.events for k, v in r.cpu_s.items()}
        hub = sum(per_k.get(k, 0.0) for k in HUB_PROCESSES)
        ceiling = cores * 1000 / hub if hub > 0 else math.inf
        rows.append(f"| {r.label} | {r.events:,} | {r.cpu_wall_s:.0f} | "
                    + " | ".join(f"{per_k.get(k, 0.0):.2f}" for k in HUB_PROCESSES)
                    + f" | {hub:.2f} | {per_k.get('publisher', 0.0):.2f} | {per_k.get('bench', 0.0):.2f} "
                    f"| {ceiling:,.0f} events/s |")
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
    pids: dict[str, int] = field(default_factory=dict)  # processes besides the hub's whose CPU runs report


@dataclass(frozen=True)
class Pass:
    batch_within: float
    fetch_wait_ms: int | None  # CAREHUB_KAFKA_FETCH_MAX_WAIT_MS for every worker (a what-if); None: the profile's
    fanout: bool
    linger_ms: int | None = None  # CAREHUB_KAFKA_LINGER_MS for every worker and the publisher; None: the profile's

    @classmethod
    def parse(cls, text: str, fetch_wait_ms: int | None = None, linger_ms: int | None = None) -> Pass:
        """``WINDOW[:FETCH_MS][/fanout]``, e.g. ``0.02/fanout``, ``0.2``, ``0.02:20/fanout``."""
        spec, _, flag = text.partition("/")
        window, _, fetch = spec.partition(":")
        if flag not in ("", "fanout"):
            raise argparse.ArgumentTypeError(f"{text!r}: expected WINDOW[:FETCH_MS][/fanout]")
        return cls(float(window), int(fetch) if fetch else fetch_wait_ms, flag == "fanout", linger_ms)

    @property
    def tag(self) -> str:
        fetch = f", fetch wait {self.fetch_wait_ms} ms" if self.fetch_wait_ms is not None else ""
        linger = f", linger {self.linger_ms} ms" if self.linger_ms is not None else ""
        return f"window {self.batch_within:g} s{fetch}{linger}"

    def hub(self, bootstrap: str, work: Path, partitions: int) -> LocalHub:
        prefix = f"ab{uuid.uuid4().hex[:8]}"
        env = {"CAREHUB_INGEST_BATCH_WITHIN_S": str(self.batch_within), "CAREHUB_LOG_LEVEL": "warning"}
        if self.fetch_wait_ms is not None:
            env["CAREHUB_KAFKA_FETCH_MAX_WAIT_MS"] = str(self.fetch_wait_ms)
        if self.linger_ms is not None:
            env[LINGER_ENV] = str(self.linger_ms)
        return LocalHub(bootstrap, work / prefix, prefix=prefix, partitions=partitions, base_env=env)


async def fan_out(plan: Plan, hub: LocalHub, gateway: Worker, spec: Pass, fan_orgs: list[str],
                  fan_runs: list[tuple[float, float, list[Person]]], background: list[tuple[bytes, bytes, str]],
                  ) -> None:
    """A gateway for 1,000 partners, all subscribed at once; probes spread over all of them."""
    a, tag, offset = plan.args, spec.tag, 0
    subs: Subscribers | None = None
    try:
        await asyncio.to_thread(hub.stop, gateway)
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
                                [(p, admission(p, 1)) for p in people], bg, rate, a.seconds, share, a.drain_s,
                                plan.pids)
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
    hub = spec.hub(bootstrap, plan.work, a.partitions)
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
        await asyncio.to_thread(hub.create_topics)
        for service in SERVICES:
            hub.start(service)
        p1, server_cert, server_key = partner_set(plan.work / "pki", warm_orgs + phase1_orgs, "mtls")
        gateway, target = start_gateway(hub, p1, (server_cert, server_key), a.heartbeat_s)
        t0 = time.monotonic()
        await asyncio.to_thread(publish_now, hub, [registration(p) for p in everyone])
        t1 = time.monotonic()
        # registered before the clock starts: every stage up to alerts has committed its input to the end
        await asyncio.to_thread(hub.settle, *SERVICES, timeout_s=240)
        say(f"{tag}: {len(everyone):,} people registered, through every stage up to alerts "
            f"{time.monotonic() - t0:.1f} s after the workers started ({time.monotonic() - t1:.1f} s waiting)")
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
                                rate, a.seconds, a.share, a.drain_s, plan.pids)
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
    if completed and not plan.args.no_breakdown:  # where the time went, from the topics; the figures stand without it
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
    fan_rates = sum(a.fanout_rates) if a.subscribers > 0 else 0  # no fan-out: no background for it
    per_pass = int(a.warmup_rate * a.warmup_s * a.warmup_rounds + (sum(a.rates) + fan_rates) * a.seconds)
    t = time.monotonic()
    background = background_records(per_pass, seed=11)
    say(f"{len(background):,} background records from the synthetic region in {time.monotonic() - t:.1f} s")
    broker = EmbeddedBroker(log_path=plan.work / "tansu.log")
    await asyncio.to_thread(broker.start)
    say(f"embedded broker on {broker.bootstrap} (pid {broker.pid})")
    if broker.pid is not None:
        plan.pids["broker"] = broker.pid
    try:
        for spec in a.passes:
            await one_pass(plan, broker.bootstrap, spec, background)
    finally:
        await asyncio.to_thread(broker.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--publish-child", type=Path, help=argparse.SUPPRESS)
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
                             "optionally CAREHUB_KAFKA_FETCH_MAX_WAIT_MS for every worker (a what-if), and whether "
                             "the fan-out runs (default 0.02/fanout,0.2,0.02:20/fanout)")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=None,
                        help="CAREHUB_KAFKA_FETCH_MAX_WAIT_MS for the passes that give no FETCH_MS (default: the "
                             f"broker profile's, {EMBEDDED.fetch_max_wait_ms} ms)")
    parser.add_argument("--linger-ms", type=int, default=None,
                        help=f"{LINGER_ENV} for every worker, and the publisher's linger (default: the broker "
                             f"profile's, {EMBEDDED.linger_ms} ms): fewer, larger batches")
    parser.add_argument("--partitions", type=int, default=4, help="CAREHUB_PARTITIONS (default 4)")
    parser.add_argument("--heartbeat-s", type=float, default=5.0, help="CAREHUB_GATEWAY_HEARTBEAT_S")
    parser.add_argument("--warmup-rate", type=float, default=50.0, help="events/s while warming up (default 50)")
    parser.add_argument("--warmup-s", type=float, default=4.0, help="length of a warm-up round (default 4)")
    parser.add_argument("--warmup-rounds", type=int, default=6,
                        help="warm-up rounds at most; they stop once the p50 improves by less than 20%%")
    parser.add_argument("--windows-s", type=float, default=0.0,
                        help="also print each paced run's latency per window of this many seconds of publishing "
                             "(a long run: --rates 300 --seconds 1800 --windows-s 300)")
    parser.add_argument("--drain-s", type=float, default=60.0,
                        help="after a run, wait at most this long for the alerts not yet received (default 60)")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the per-stage breakdown, which reads every stage's topic to its end after the "
                             "run (minutes on a long run's topics)")
    args = parser.parse_args()
    if args.publish_child:
        publish_child(args.publish_child)
        return
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.fanout_rates = [float(r) for r in args.fanout_rates.split(",") if r]
    args.fanout_shares = [float(r) for r in args.fanout_shares.split(",") if r]
    if len(args.fanout_rates) != len(args.fanout_shares):
        parser.error("--fanout-rates and --fanout-shares need as many values each")
    args.passes = [Pass.parse(p, args.fetch_max_wait_ms, args.linger_ms) for p in args.passes.split(",") if p]
    work = Path(tempfile.mkdtemp(prefix="carehub-alerts-bench-"))
    plan = Plan(args, work)
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"settings: rates {args.rates} events/s x {args.seconds:g} s, probe share {args.share:g}, "
          f"{args.partners} partners (mutual TLS); fan-out {args.subscribers} subscribers ({args.fanout_auth}) at "
          f"{args.fanout_rates} events/s, probe shares {args.fanout_shares}; passes "
          f"{[p.tag + (' + fan-out' if p.fanout else '') for p in args.passes]}; fetch wait "
          f"{EMBEDDED.fetch_max_wait_ms} ms (the broker profile's) unless a pass gives one; "
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
                if args.windows_s:
                    print(f"\nlatency by publish time, windows of {args.windows_s:g} s:\n")
                    print(windows_table(plan.results, args.windows_s))
                print(f"\nCPU seconds per 1,000 events, from the publisher's start until the last alert arrived; the "
                      f"ceiling is {os.cpu_count()} cores over the hub's CPU per event (broker included), an upper "
                      "bound on the sustained rate:\n")
                print(cpu_table(plan.results))
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
