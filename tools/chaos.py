"""`make chaos`: the hub under faults at a steady 1,000 events/s, and what it lost (nothing, it must be).

Everything runs on this machine, bound to 127.0.0.1: a fresh embedded broker (its own, since it is
stalled), a hub (carehub.harness.LocalHub) with one worker of every service (ingest, identity,
timeline, indicators, alerts, population, caselists, reviews, the partner gateway, the MLLP and FHIR doors)
started by name, each with its log under the work folder, and, in this process, the senders and the
partners. The script ends only the processes it started, by their process ids.

1. **Load.** The synthetic region (carehub.synthetic) is sent on a steady clock (``--rate``
   records a second, each at its own planned time) through all three doors as ``make run`` sends
   it (carehub/synthetic/doors.py): most records through the SDK, one hospital spell in ten as HL7
   v2 over MLLP, another as FHIR over mutual TLS. Door senders resend what was not acknowledged
   (a killed door, a stalled broker), as hospital systems do; resends of door events in the
   region are not repeated, as in ``make run``.
2. **Partners.** Every organisation of the region subscribes to its alerts with the partner client
   (carehub.partner.PartnerClient) through a TCP relay in this process, so that their connections
   can be dropped; each keeps the cursor its client last received.
3. **Faults** (carehub.chaos.schedule), while publishing: each worker and the gateway SIGKILLed in
   turn and restarted at once (``--rounds`` times each; kills of different services do not wait
   for each other's recovery, a service is not killed again before its last restart is ready),
   the broker stopped with SIGSTOP for ``--stall-s`` and continued, the partners' connections
   dropped and refused for a few seconds in every round, and once every partner's stream ended
   and resumed from its cursor. A worker that exits by itself is restarted and reported.
4. **Catch-up.** From the end of publishing and faults, the time until each stage has done all
   its input: a stage's consumer group has committed its input topics to the end the broker's
   Fetch responses report (carehub.harness); the indicator values equal the batch reference
   (tests/reference/indicators.py over ``identity.linked``, suppression off), or, when they
   differ, the indicators service has published all the timeline sent it (then it stops waiting
   for them); every partner has every alert addressed to it.
5. **Figures.** Every topic read to its end (carehub.kafka.read) and accounted for as
   carehub/chaos.py defines: published, accepted, dead-lettered, duplicates dropped, lost; alerts
   delivered, delivered twice (by id, and as one situation under two ids); events linked to two
   hub persons; indicator values equal to the reference. Exits 1 when any of those fails or a
   stage did not catch up within ``--catch-up-s``; the work folder (logs, and the topics behind
   the indicators when they differ) is then kept.

    python tools/chaos.py             # 3 rounds, a 20 s stall, 5 minutes of publishing: 12-16 minutes here
    python tools/chaos.py --short     # 1 round, a 5 s stall, 45 s of publishing: about 2.5 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import queue
import random
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from kafka.errors import KafkaError  # noqa: E402

from carehub import fhir_client  # noqa: E402
from carehub.chaos import (  # noqa: E402
    CATCH_UP,
    DROP,
    KILL,
    RESUBSCRIBE,
    STALL,
    Accepted,
    Cell,
    CellKey,
    EventId,
    Fault,
    Letter,
    PartnerTally,
    Report,
    account_alerts,
    account_audit,
    account_ingest,
    account_stages,
    compare_indicators,
    merges_in_force,
    schedule,
)
from carehub.demo import demo_partners  # noqa: E402
from carehub.domain.definitions import PACKAGED  # noqa: E402
from carehub.domain.fhir.mapping import load_fhir_mapping, map_bundle  # noqa: E402
from carehub.domain.fhir.senders import load_senders  # noqa: E402
from carehub.domain.hl7v2.mapping import load_adt_mapping, map_message  # noqa: E402
from carehub.harness import STAGE_INPUTS, LocalHub, Worker, paused  # noqa: E402
from carehub.hl7_client import describe  # noqa: E402
from carehub.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from carehub.kafka.profile import EMBEDDED  # noqa: E402
from carehub.kafka.read import fetch_ends  # noqa: E402
from carehub.partner import PartnerClient, PartnerError  # noqa: E402
from carehub.sdk import Publisher  # noqa: E402
from carehub.synthetic import KIND_DUPLICATE, MALFORMED_PREFIX, RegionConfig, decode, generate_region  # noqa: E402
from carehub.synthetic.doors import (  # noqa: E402
    DOOR_EVENT_TYPES,
    HOSPITAL_SECTORS,
    Door,
    DoorMessage,
    Router,
    facilities_by_org,
    translate,
)
from carehub.synthetic.orgs import build_directory  # noqa: E402
from carehub.synthetic.region import CONTENT_TYPE_PROTOBUF, SyntheticRecord  # noqa: E402
from carehub.v1 import alerts_pb2 as al  # noqa: E402
from carehub.v1 import care_event_pb2 as ce  # noqa: E402
from carehub.v1 import identity_pb2 as idn  # noqa: E402
from carehub.v1 import indicators_pb2 as ind  # noqa: E402
from carehub.v1 import ingest_pb2 as ing  # noqa: E402
from carehub.v1 import timeline_pb2 as tl  # noqa: E402
from tests.reference.indicators import reference_values  # noqa: E402

# Killed in this order in every round: the pipeline from the front, then the gateway and the doors.
KILLED = ("ingest", "identity", "timeline", "indicators", "alerts", "population", "caselists", "reviews", "gateway",
          "mllp", "fhir")
RECORDS_PER_PERSON = 7.0  # the synthetic region gives ~7.5 records per person and year: a little more than needed
MLLP_START, MLLP_END = b"\x0b", b"\x1c\x0d"
PUBLISH_INTERVAL_S = 1.0  # CAREHUB_INDICATORS_PUBLISH_INTERVAL_S of the indicators service (its default)
STARTED = time.monotonic()
logging.getLogger("carehub.partner").setLevel(logging.ERROR)  # reconnects are counted, not logged


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f} s] {message}", flush=True)


# ---- the feed: the region's records on a steady clock, through three doors ----------------------


@dataclass(frozen=True)
class SdkItem:
    record: SyntheticRecord


Item = SdkItem | DoorMessage


@dataclass
class Feed:
    items: list[Item]
    sdk_ids: set[EventId]  # valid and resent events sent through the SDK
    malformed: list[tuple[bytes, EventId | None]]
    door_resends_skipped: int = 0


def _header(record: SyntheticRecord) -> tuple[str, str, int, int, str]:
    """(source_org, event_id, event type, sector, spell id) without a full JSON parse."""
    if record.content_type == CONTENT_TYPE_PROTOBUF:
        e = ce.CareEvent.FromString(record.value)
        return e.source_org, e.event_id, e.event_type, e.source_sector, e.clinical.spell_id
    doc: dict[str, Any] = orjson.loads(record.value)
    clinical: dict[str, Any] = doc.get("clinical") or {}
    return (str(doc["sourceOrg"]), str(doc["eventId"]), ce.EventType.Value(doc["eventType"]),
            ce.Sector.Value(doc["sourceSector"]), str(clinical.get("spellId", "")))


def _malformed_id(value: bytes) -> EventId | None:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("sourceOrg"), str) and isinstance(doc.get("eventId"), str):
        return str(doc["sourceOrg"]), str(doc["eventId"])
    return None


def build_feed(records: list[SyntheticRecord], hospitals: set[str], facilities: dict[str, str]) -> Feed:
    """Which door each record takes (as carehub/demo.py routes them), in publish order."""
    router = Router(hospitals, facilities)
    feed = Feed([], set(), [])
    for record in records:
        if record.kind.startswith(MALFORMED_PREFIX):
            feed.items.append(SdkItem(record))
            feed.malformed.append((record.value, _malformed_id(record.value)))
            continue
        org, event_id, kind, sector, spell = _header(record)
        door = Door.SDK
        if kind in DOOR_EVENT_TYPES and sector in HOSPITAL_SECTORS:
            door = router.spell_door(org, spell)
        if door == Door.SDK:
            feed.items.append(SdkItem(record))
            feed.sdk_ids.add((org, event_id))
        elif record.kind == KIND_DUPLICATE:
            feed.door_resends_skipped += 1
        else:
            feed.items.append(translate(decode(record), door, facilities))
    return feed


class DoorSender:
    """One thread per door sending its queue in order; a message is resent until its door
    acknowledges it (or refuses it for good), as a hospital's interface engine does."""

    def __init__(self, door: Door, send_one: Callable[[DoorMessage], str]) -> None:
        self.door = door
        self._send_one = send_one  # "ok", "retry", or why it was refused; raises OSError/httpx.HTTPError to retry
        self.queue: queue.Queue[DoorMessage | None] = queue.Queue()
        self.acked: list[DoorMessage] = []
        self.refused: list[str] = []
        self.retries = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"chaos-{door}", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        """Messages queued or being sent."""
        return self.queue.unfinished_tasks

    def _run(self) -> None:
        while (message := self.queue.get()) is not None:
            delay = 0.2
            while not self._closed.is_set():
                try:
                    outcome = self._send_one(message)
                except (OSError, httpx.HTTPError, EOFError):
                    outcome = "retry"
                if outcome != "retry":
                    break
                self.retries += 1
                self._closed.wait(delay)
                delay = min(2 * delay, 2.0)
            else:
                return
            if outcome == "ok":
                self.acked.append(message)
            else:
                self.refused.append(f"{message.source}: {outcome}")
            self.queue.task_done()

    def close(self) -> None:
        self._closed.set()
        self.queue.put(None)
        self._thread.join(timeout=10)


class MllpLink:
    """One MLLP connection (reconnected when it breaks); an answer is read for each frame."""

    def __init__(self, port: int, ack_timeout_s: float = 60.0) -> None:
        self.port = port
        self.ack_timeout_s = ack_timeout_s
        self._sock: socket.socket | None = None

    def send(self, message: DoorMessage) -> str:
        try:
            if self._sock is None:
                self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                self._sock.settimeout(self.ack_timeout_s)
            self._sock.sendall(MLLP_START + message.body + MLLP_END)
            answer = b""
            while not answer.endswith(MLLP_END):
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise EOFError("the MLLP service closed the connection without an answer")
                answer += chunk
        except (OSError, EOFError):
            self.close()
            raise
        code, text = describe(answer.strip(MLLP_START + MLLP_END))
        if code in ("AA", "CA"):
            return "ok"
        return "retry" if code in ("AE", "CE") else f"{code} {text}"

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


class FhirLink:
    """FHIR notifications, each hospital with its own client certificate (mutual TLS)."""

    def __init__(self, port: int, pki: Path) -> None:
        self.base = f"https://127.0.0.1:{port}/fhir"
        self.pki = pki
        self._clients: dict[str, httpx.Client] = {}

    def send(self, message: DoorMessage) -> str:
        http = self._clients.get(message.org)
        if http is None:
            http = self._clients[message.org] = fhir_client.client(
                self.pki / "ca.pem", self.pki / f"{message.org}.pem", self.pki / f"{message.org}.key", None, 60.0)
        answer = fhir_client.send(http, self.base, message.source, message.body, retries=0)
        if answer.accepted:
            return "ok"
        return "retry" if answer.status == 503 else f"HTTP {answer.status} {'; '.join(answer.issues)[:300]}"

    def close(self) -> None:
        for http in self._clients.values():
            http.close()


@dataclass
class Clock:
    """Publishing on a steady clock: item i at start + i / rate."""

    planned: int = 0
    sent: int = 0  # items handed over (SDK records to the producer, door messages to their sender)
    late: int = 0  # handed over more than 50 ms after their planned time
    max_lag_s: float = 0.0
    acked: int = 0  # SDK records the broker acknowledged
    retried: int = 0  # SDK records whose send failed and were sent again
    started: float = 0.0
    ended: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


def publish(feed: Feed, rate: float, pub: Publisher, doors: dict[Door, DoorSender], clock: Clock,
            stop: threading.Event) -> None:
    retry: deque[SyntheticRecord] = deque()
    lock = threading.Lock()

    def send(record: SyntheticRecord) -> None:
        def done(ok: bool) -> None:
            with lock:
                if ok:
                    clock.acked += 1
                else:  # a provider resends what the broker did not acknowledge
                    retry.append(record)
                    clock.retried += 1
        pub.publish_raw(record.value, record.key, record.content_type, on_done=done)

    clock.planned = len(feed.items)
    clock.started = time.monotonic()
    for i, item in enumerate(feed.items):
        if stop.is_set():
            break
        wait = clock.started + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.05:
            clock.late += 1
            clock.max_lag_s = max(clock.max_lag_s, -wait)
        if isinstance(item, SdkItem):
            send(item.record)
        else:
            doors[item.door].queue.put(item)
        clock.sent += 1
        while retry:
            with lock:
                again = retry.popleft()
            send(again)
    clock.ended = time.monotonic()
    pub.flush()
    while retry and not stop.is_set():  # failures reported by the flush
        with lock:
            again = retry.popleft()
        send(again)
        pub.flush()
    clock.done.set()


# ---- partners -------------------------------------------------------------------------------------


class Relay:
    """A TCP relay to the gateway whose connections can be dropped (and refused for a while)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._down_until = 0.0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="chaos-relay", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if time.monotonic() < self._down_until:
                conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._open.update((conn, upstream))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
                with self._lock:
                    self._open.discard(s)

    def drop(self, seconds: float) -> int:
        """Cut every open connection and refuse new ones for ``seconds``; how many were cut."""
        self._down_until = time.monotonic() + seconds
        with self._lock:
            cut = list(self._open)
        for s in cut:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        return len(cut) // 2

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop(0)


class Partner:
    """One organisation's subscriber: the partner client's alerts, counted; its cursor kept."""

    def __init__(self, org: str, target: str, pki: Path) -> None:
        self.org = org
        self.client = PartnerClient(target, ca_file=pki / "ca.pem", cert_file=pki / f"{org}.pem",
                                    key_file=pki / f"{org}.key", backoff_initial=0.2, backoff_max=3.0,
                                    idle_timeout=20.0)
        self.tally = PartnerTally()
        self.errors: list[str] = []
        self.resumes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"chaos-partner-{org}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._stop = stop = threading.Event()
            try:
                for got in self.client.alerts(self.client.cursor, stop=stop):
                    with self._lock:
                        self.tally.received[got.alert.alert_id] += 1
            except PartnerError as exc:
                self.errors.append(str(exc)[:200])
                time.sleep(1.0)

    def resubscribe(self) -> None:
        """End the stream as the partner would; it subscribes again from the last cursor it received."""
        self.resumes += 1
        self._stop.set()

    def snapshot(self) -> PartnerTally:
        with self._lock:
            return PartnerTally(self.tally.received.copy(), self.client.duplicates)

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()


class Tail:
    """The newest value per key of a compacted topic, read as it grows (the embedded broker never
    compacts, so reading the whole topic at every look would take longer and longer)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._latest: dict[bytes, bytes] = {}
        self._next: dict[int, int] = {}  # partition -> offset after the last record taken
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                       client_id="carehub-chaos-tail", **EMBEDDED.kafka_python_consumer())
        self._thread = threading.Thread(target=self._run, name="chaos-tail", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tps = [TopicPartition(self.topic, p) for p in sorted(self._consumer.partitions_for_topic(self.topic) or ())]
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)
        while not self._stop.is_set():
            for tp, records in self._consumer.poll(timeout_ms=200, max_records=20_000).items():
                with self._lock:
                    for r in records:
                        if r.key is not None:
                            if r.value is None:
                                self._latest.pop(r.key, None)
                            else:
                                self._latest[r.key] = r.value
                    self._next[tp.partition] = records[-1].offset + 1
        self._consumer.close()

    def read(self, timeout_s: float = 120.0) -> dict[bytes, bytes]:
        """The newest value per key up to the end the topic has now (as a Fetch reports it)."""
        ends = fetch_ends(self.bootstrap, [self.topic])
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if all(self._next.get(tp.partition, 0) >= end for tp, end in ends.items()):
                    return dict(self._latest)
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise TimeoutError(f"{self.topic}: not read to its end within {timeout_s:.0f} s")
            time.sleep(0.1)

    def values(self) -> dict[str, ind.IndicatorValue]:
        return {k.decode(): ind.IndicatorValue.FromString(v) for k, v in self.read().items()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# ---- the run -----------------------------------------------------------------------------------------


@dataclass
class Options:
    short: bool
    minutes: float
    rate: float
    people: int | None
    seed: int
    rounds: int
    stall_s: float
    drop_s: float
    partitions: int
    catch_up_s: float
    report: Path | None
    keep: bool


class Suite:
    def __init__(self, s: Options, work: Path) -> None:
        self.s = s
        self.work = work
        self.report = Report(command=shlex.join([Path(sys.executable).name, *sys.argv]))
        self.broker: EmbeddedBroker | None = None
        self.hub: LocalHub | None = None
        self.relay: Relay | None = None
        self.values: Tail | None = None
        self.partners: list[Partner] = []
        self.doors: dict[Door, DoorSender] = {}
        self.links: list[MllpLink | FhirLink] = []
        self.unplanned: list[str] = []
        self.stop = threading.Event()
        self.since_wall = 0.0  # wall clock at the end of publishing and faults
        self.linked_raw: list[bytes] = []  # identity.linked as the reference read it

    # -- set-up
    def region(self) -> tuple[list[SyntheticRecord], RegionConfig]:
        wanted = int(self.s.rate * self.s.minutes * 60)
        people = self.s.people or max(200, math.ceil(wanted / RECORDS_PER_PERSON))
        config = RegionConfig(people=people, seed=self.s.seed)
        t = time.monotonic()
        records = generate_region(config).records
        if not self.s.people:
            records = records[:wanted]
        say(f"synthetic region: {people:,} people, seed {self.s.seed}: {len(records):,} records "
            f"({time.monotonic() - t:.1f} s)")
        return records, config

    def start_hub(self, config: RegionConfig) -> tuple[LocalHub, dict[str, str], int, int, int]:
        self.broker = EmbeddedBroker(log_path=self.work / "tansu.log").start()
        say(f"embedded broker on {self.broker.bootstrap} (pid {self.broker.pid})")
        hub = self.hub = LocalHub(self.broker.bootstrap, self.work / "hub", partitions=self.s.partitions)
        hub.create_topics()
        shared = demo_partners(hub.settings(), config.people, config.seed)
        gateway_port, mllp_port, fhir_port = free_port(), free_port(), free_port()
        extra: dict[str, dict[str, str]] = {
            # every count compared with the reference
            "indicators": {"CAREHUB_SUPPRESSION_MAX": "0",
                           "CAREHUB_INDICATORS_PUBLISH_INTERVAL_S": f"{PUBLISH_INTERVAL_S:g}"},
            "gateway": {**shared, "CAREHUB_GATEWAY_PORT": str(gateway_port), "CAREHUB_GATEWAY_HEARTBEAT_S": "2"},
            "mllp": {**shared, "CAREHUB_MLLP_PORT": str(mllp_port)},
            "fhir": {**shared, "CAREHUB_FHIR_PORT": str(fhir_port)},
        }
        workers = [hub.start_with_metrics(service, **extra.get(service, {})) for service in KILLED]
        for worker in workers:
            self.wait_ready(worker, 180)
        say("workers ready: " + ", ".join(f"{w.service} (pid {w.pid})" for w in workers))
        return hub, shared, gateway_port, mllp_port, fhir_port

    def wait_ready(self, worker: Worker, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.supervise()
            if not worker.running:
                return False
            if worker.ready():
                return True
            time.sleep(0.5)
        return False

    def supervise(self) -> None:
        """A worker that exited by itself is restarted (as a supervisor would) and reported."""
        hub = self.hub
        if hub is None:
            return
        for w in list(hub.workers):
            if not w.running and not w.killed and not any(x.service == w.service and x.running for x in hub.workers):
                w.killed = True  # handled: its exit is reported here, not a harness failure
                note = f"{w.service} (pid {w.pid}) exited by itself with code {w.proc.returncode}; restarted"
                self.unplanned.append(note)
                say(note)
                hub.restart(w)

    # -- faults
    def run_faults(self, faults: list[Fault], start: float) -> None:
        """Each fault at its time. Kills do not wait for the previous restart to be ready (recoveries
        may overlap), except that a service is not killed again before its last restart is ready."""
        hub, broker, relay = self.hub, self.broker, self.relay
        assert hub is not None and broker is not None and broker.pid is not None and relay is not None
        restarted: dict[str, Worker] = {}
        for fault in faults:
            while time.monotonic() < start + fault.at_s:
                self.supervise()
                time.sleep(0.1)
            if fault.kind == KILL:
                previous = restarted.get(fault.target)
                if previous is not None and not self.wait_ready(previous, 120):
                    say(f"  (the restarted {previous.service} was not ready within 120 s; going on)")
                old = hub.live(fault.target)
                hub.kill(old)
                restarted[fault.target] = hub.restart(old)
                self.log_fault(start, f"SIGKILL {old.service} (pid {old.pid}); restarted as pid "
                                      f"{restarted[fault.target].pid}")
            elif fault.kind == STALL:
                self.log_fault(start, f"SIGSTOP the broker (pid {broker.pid}) for {fault.seconds:g} s")
                with paused(broker.pid):
                    time.sleep(fault.seconds)
                self.log_fault(start, "SIGCONT the broker")
            elif fault.kind == DROP:
                cut = relay.drop(fault.seconds)
                self.log_fault(start, f"partners' connections dropped ({cut} open), refused for {fault.seconds:g} s")
            elif fault.kind == RESUBSCRIBE:
                for partner in self.partners:
                    partner.resubscribe()
                self.log_fault(start, f"{len(self.partners)} partners ended their streams; resuming from their "
                                      "cursors")

    def log_fault(self, start: float, what: str) -> None:
        line = f"{time.monotonic() - start:6.1f} s: {what}"
        self.report.faults.append(line)
        say("fault at " + line)

    # -- catch-up
    def catch_up(self, since: float, clock: Clock) -> tuple[dict[CellKey, Cell], list[idn.LinkedEvent]]:
        """Time from ``since`` until each stage has done all its input (carehub/chaos.py CATCH_UP).

        Stages are judged in pipeline order: a stage is done when it has caught up after the one
        before it was done (its input then no longer grows). The batch reference is computed in a
        thread once identity is done; the indicators are done when the published values equal it.
        """
        hub = self.hub
        assert hub is not None
        done: dict[str, float] = {}
        deadline = since + self.s.catch_up_s
        pool = ThreadPoolExecutor(1)
        future: Future[tuple[dict[CellKey, Cell], list[idn.LinkedEvent]]] | None = None
        next_values = next_say = next_partners = 0.0
        settled = Settled(self)
        differ = False  # the indicator values are final and not the reference's: no use waiting

        def mark(stage: str) -> None:
            done[stage] = time.monotonic() - since
            say(f"caught up: {stage} after {done[stage]:.1f} s")

        def caught_up(stage: str) -> bool:
            try:
                return hub.caught_up(stage, STAGE_INPUTS[stage])
            except (TimeoutError, LookupError, KafkaError):
                return False

        try:
            while time.monotonic() < deadline and len(done) + differ < len(CATCH_UP):
                self.supervise()
                if "doors" not in done and clock.done.is_set() and all(d.backlog == 0 for d in self.doors.values()):
                    mark("doors")
                for prior, stage in (("doors", "ingest"), ("ingest", "identity"), ("identity", "timeline")):
                    if stage not in done and prior in done and caught_up(stage):
                        mark(stage)
                if future is None and "identity" in done:
                    future = pool.submit(self.reference)
                if ("indicators" not in done and "timeline" in done and future is not None and future.done()
                        and time.monotonic() > next_values):
                    next_values = time.monotonic() + 2.0
                    assert self.values is not None
                    got = cells(self.values.values())
                    if all(got.get(key) == cell for key, cell in future.result()[0].items()):
                        mark("indicators")  # values beyond the reference's are counted in the figures
                    elif not differ and settled.final():
                        differ = True
                        say("indicator values are final and differ from the reference: not waiting for them")
                if "alerts" not in done and "timeline" in done and caught_up("alerts"):
                    mark("alerts")
                for stage in ("population", "reviews"):
                    if stage not in done and "timeline" in done and caught_up(stage):
                        mark(stage)
                if "partners" not in done and "alerts" in done and time.monotonic() > next_partners:
                    next_partners = time.monotonic() + 2.0  # a look reads the alerts topic
                    if self.partners_have_all(alert_records(hub)):
                        mark("partners")
                if time.monotonic() > next_say:
                    next_say = time.monotonic() + 15.0
                    say(f"catching up: done {', '.join(done) or 'nothing yet'}")
                time.sleep(0.5)
            self.report.catch_up_s = {stage: done.get(stage) for stage, _ in CATCH_UP}
            for stage in STAGE_INPUTS:
                if stage not in done:
                    self.report.notes.append(self.why_behind(stage))
            if future is None:  # identity never caught up: compare with what it linked so far
                future = pool.submit(self.reference)
            return future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def why_behind(self, stage: str) -> str:
        """A stage that did not catch up: its committed offsets against the ends, and its worker's /ready."""
        hub = self.hub
        assert hub is not None
        try:
            ends = fetch_ends(hub.bootstrap, [hub.topic(n) for n in STAGE_INPUTS[stage]])
            committed = hub.committed(stage, list(ends))
            behind = ", ".join(f"{tp.topic.removeprefix(hub.prefix + '.')}[{tp.partition}] {committed.get(tp, 0)}/"
                               f"{end}" for tp, end in sorted(ends.items()) if committed.get(tp, 0) < end)
            _, ready = hub.live(stage).readiness()
        except (OSError, LookupError, TimeoutError, KafkaError) as exc:
            return f"{stage} did not catch up ({type(exc).__name__}: {exc})"
        return f"{stage} did not catch up: committed/end {behind or 'none behind now'}; /ready {ready[:600]}"

    def reference(self) -> tuple[dict[CellKey, Cell], list[idn.LinkedEvent]]:
        hub = self.hub
        assert hub is not None
        t = time.monotonic()
        self.linked_raw = hub.values("identity.linked", timeout_s=300)
        linked = [e for v in self.linked_raw for e in idn.LinkedBatch.FromString(v).events]
        values: dict[CellKey, Cell] = reference_values(linked, PACKAGED)
        say(f"batch reference: {len(values):,} values from {len(linked):,} linked events "
            f"({time.monotonic() - t:.1f} s)")
        return values, linked

    def partners_have_all(self, records: Iterable[tuple[str, str, str]]) -> bool:
        wanted: dict[str, set[str]] = {p.org: set() for p in self.partners}
        for org, alert_id, _ in records:
            if org in wanted:
                wanted[org].add(alert_id)
        return all(wanted[p.org] <= set(p.snapshot().received) for p in self.partners)

    # -- figures
    def account(self, feed: Feed, clock: Clock, reference: dict[CellKey, Cell],
                linked: list[idn.LinkedEvent]) -> None:
        hub = self.hub
        assert hub is not None
        t = time.monotonic()
        settings = hub.settings()
        door_ids, door_events = door_event_ids([m for d in self.doors.values() for m in d.acked], hub.data_dir)
        provider_topics = list(settings.source_topics)
        provider_records = sum(fetch_ends(hub.bootstrap, provider_topics).values())
        records = [r for r in hub.read("ingest.accepted", timeout_s=300) if r.value is not None]
        accepted = [Accepted((e.source_org, e.event_id), (e.source.topic, e.source.partition, e.source.offset))
                    for r in records for e in ing.AcceptedBatch.FromString(r.value or b"").events]
        if records:  # when ingest wrote its last events, beside when its group committed them (catch-up)
            last = max(r.timestamp_ms for r in records) / 1000 - self.since_wall
            self.report.notes.append(f"ingest wrote its last accepted events {last:.1f} s after publishing and "
                                     "faults were over")
        letters = []
        for v in hub.values("ingest.deadletter", timeout_s=300):
            d = ing.DeadLetter.FromString(v)
            letters.append(Letter((d.source.topic, d.source.partition, d.source.offset),
                                  (d.source_org, d.event_id) if d.event_id and d.source_org else None,
                                  d.original_value))
        figures = account_ingest(feed.sdk_ids | door_ids, feed.malformed, accepted, letters, provider_records,
                                 provider_topics)
        figures.published_records = clock.acked
        figures.door_messages = sum(len(d.acked) for d in self.doors.values())
        timeline_ids = {(e.linked.event.source_org, e.linked.event.event_id)
                        for v in hub.values("timeline.events", timeout_s=300)
                        for e in tl.TimelineBatch.FromString(v).events}
        merged = merges_in_force((e.merge.from_person_id, e.merge.into_person_id, e.merge.unmerge)
                                 for e in sorted(linked, key=lambda e: e.link_sequence) if e.HasField("merge"))
        account_stages(figures, (a.event for a in accepted),
                       [((e.event.source_org, e.event.event_id), e.person_id, e.HasField("merge")) for e in linked],
                       timeline_ids, merged)
        for example in figures.two_persons_examples:  # how each link of it was made, in the log's order
            links = [f"{idn.LinkOutcome.Name(e.outcome).removeprefix('LINK_OUTCOME_').lower()} "
                     f"(sequence {e.link_sequence}, person {e.person_id[:8]})"
                     for e in linked if f"{e.event.source_org}/{e.event.event_id}" == example]
            self.report.notes.append(f"linked to two persons: {example}: {'; '.join(links)}")
        self.report.ingest = figures
        tallies = {p.org: p.snapshot() for p in self.partners}
        self.report.alerts = account_alerts(alert_records(hub), tallies)
        account_audit(self.report.alerts, audited_deliveries(hub), tallies)
        assert self.values is not None
        values = self.values.values()
        self.report.indicators = compare_indicators(cells(values), reference)
        n = self.report.notes
        if self.report.indicators.mismatches:
            self.dump(values, reference)
        extra = Counter(v.as_of for v in values.values() if (v.indicator, v.unit, v.window) not in reference)
        if extra:
            n.append("indicator values published beyond the reference, by their as-of day: "
                     + ", ".join(f"{day} {count:,}" for day, count in sorted(extra.items())))
        n.append(f"publishing: {clock.sent:,} of {clock.planned:,} items at {self.s.rate:g}/s over "
                 f"{clock.ended - clock.started:.1f} s; {clock.late:,} handed over more than 50 ms late (at most "
                 f"{clock.max_lag_s * 1000:.0f} ms); {clock.retried:,} SDK sends failed and were sent again")
        for door, sender in self.doors.items():
            n.append(f"{door}: {len(sender.acked):,} messages acknowledged ({door_events[door]:,} events), "
                     f"{sender.retries:,} resends, {len(sender.refused)} refused"
                     + (f" (first: {sender.refused[0]})" if sender.refused else ""))
        n.append(f"resends of door events in the region not repeated (as make run): {feed.door_resends_skipped:,}")
        n.append(f"partners: {len(self.partners)} subscribed; stream resumes asked "
                 f"{sum(p.resumes for p in self.partners)}; client reconnects "
                 f"{sum(p.client.reconnects for p in self.partners)}; errors "
                 f"{sum(len(p.errors) for p in self.partners)}"
                 + (f" (first: {next(e for p in self.partners for e in p.errors)})"
                    if any(p.errors for p in self.partners) else ""))
        n.append("workers that exited by themselves: " + ("; ".join(self.unplanned) if self.unplanned else "none"))
        say(f"figures read from the topics in {time.monotonic() - t:.1f} s")

    def dump(self, values: dict[str, ind.IndicatorValue], reference: dict[CellKey, Cell]) -> None:
        """For a look afterwards (the broker's memory goes with it): what the indicators come from
        (the linked events the reference read, the timeline's partials), the published values and
        the reference, under the work folder."""
        hub = self.hub
        assert hub is not None
        folder = self.work / "dump"
        folder.mkdir(exist_ok=True)
        (folder / "identity.linked.pickle").write_bytes(pickle.dumps(self.linked_raw))
        partials = [(r.partition, r.offset, r.value) for r in hub.read("indicators.partials", timeout_s=300)]
        (folder / "indicators.partials.pickle").write_bytes(pickle.dumps(partials))
        (folder / "values.pickle").write_bytes(pickle.dumps({k: v.SerializeToString() for k, v in values.items()}))
        (folder / "reference.pickle").write_bytes(pickle.dumps(reference))
        self.report.notes.append(f"indicator values differ: the topics they come from are in {folder}")

    # -- the whole thing
    def run(self) -> int:
        s = self.s
        records, config = self.region()
        window_s = len(records) / s.rate
        lead = max(5.0, 0.1 * window_s)
        faults = schedule(KILLED, s.rounds, window_s, s.stall_s, s.drop_s, lead_s=lead, tail_s=lead / 2)
        say(f"plan: {len(records):,} records at {s.rate:g}/s ({window_s:.0f} s); {len(faults)} faults: "
            f"{s.rounds} round(s) of SIGKILL on {', '.join(KILLED)}; a {s.stall_s:g} s broker stall; "
            f"partner drops of {s.drop_s:g} s")
        hub, shared, gateway_port, mllp_port, fhir_port = self.start_hub(config)
        directory = build_directory(config, random.Random(f"{config.seed}/orgs"))
        hospitals = {org.code for org in directory.hospitals}
        facilities = facilities_by_org(load_adt_mapping(None, shared["CAREHUB_HL7_FACILITIES"]).facilities)
        feed = build_feed(records, hospitals, facilities)
        by_door = {door: sum(1 for i in feed.items if isinstance(i, DoorMessage) and i.door == door)
                   for door in (Door.MLLP, Door.FHIR)}
        say(f"feed: {len(feed.items) - sum(by_door.values()):,} SDK records, {by_door[Door.MLLP]:,} HL7 v2 messages, "
            f"{by_door[Door.FHIR]:,} FHIR Bundles")
        pki = hub.data_dir / "pki"
        mllp, fhir = MllpLink(mllp_port), FhirLink(fhir_port, pki)
        self.links = [mllp, fhir]
        self.doors = {Door.MLLP: DoorSender(Door.MLLP, mllp.send), Door.FHIR: DoorSender(Door.FHIR, fhir.send)}
        self.relay = Relay(gateway_port)
        self.values = Tail(hub.bootstrap, hub.topic("indicators"))
        self.partners = [Partner(org.code, f"127.0.0.1:{self.relay.port}", pki) for org in directory.all]
        for partner in self.partners:
            partner.client.wait_ready(60)
        say(f"{len(self.partners)} partners subscribed (mutual TLS, through a relay on port {self.relay.port})")

        clock = Clock()
        with Publisher(hub.bootstrap, topic=hub.topic("provider.events"), linger_ms=20) as pub:
            publisher = threading.Thread(target=publish, args=(feed, s.rate, pub, self.doors, clock, self.stop),
                                         name="chaos-publisher", daemon=True)
            start = time.monotonic()
            publisher.start()
            progress = threading.Thread(target=self.progress, args=(clock, start), daemon=True)
            progress.start()
            self.run_faults(faults, start)
            while not clock.done.wait(1.0):
                self.supervise()
        since, self.since_wall = time.monotonic(), time.time()
        say(f"publishing and faults over ({since - start:.1f} s after the first record); waiting for every stage "
            f"(at most {s.catch_up_s:g} s)")
        reference, linked = self.catch_up(since, clock)
        self.account(feed, clock, reference, linked)
        return 0

    def progress(self, clock: Clock, start: float) -> None:
        while not clock.done.wait(15.0):
            received = sum(sum(p.snapshot().received.values()) for p in self.partners)
            say(f"published {clock.sent:,}/{clock.planned:,} ({clock.late:,} late), door backlog "
                f"{self.doors[Door.MLLP].backlog}/{self.doors[Door.FHIR].backlog}, alerts received {received:,}")

    def close(self) -> None:
        self.stop.set()
        for partner in self.partners:
            partner.close()
        if self.relay is not None:
            self.relay.close()
        if self.values is not None:
            self.values.close()
        for sender in self.doors.values():
            sender.close()
        for link in self.links:
            link.close()
        if self.hub is not None:
            self.hub.stop_all()
        if self.broker is not None:
            self.broker.stop()


class Settled:
    """Whether the indicators service has published everything the timeline sent it.

    Once the timeline stage has committed all its input, the partials topic is final. The service
    (one loop: read partials, publish when some arrived and its interval has passed) has then
    published its last values when it has applied every partial record (its own counter, from
    the start of the topic at its start) and either published after that or let more than its
    publish interval and a slow computation pass without needing to.
    """

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.end: int | None = None
        self.read_all_at: float | None = None
        self.publishes = 0.0

    def final(self) -> bool:
        hub = self.suite.hub
        assert hub is not None
        try:
            if self.end is None:
                self.end = sum(fetch_ends(hub.bootstrap, [hub.topic("indicators.partials")]).values())
            metrics = hub.live("indicators").metrics()
        except (LookupError, OSError, TimeoutError, KafkaError):
            self.read_all_at = None
            return False
        if metrics.get("carehub_indicators_partials_total", 0.0) < self.end:
            self.read_all_at = None
            return False
        publishes = metrics.get("carehub_indicators_compute_seconds_count", 0.0)
        if self.read_all_at is None:
            self.read_all_at, self.publishes = time.monotonic(), publishes
            return False
        return publishes > self.publishes or time.monotonic() - self.read_all_at > PUBLISH_INTERVAL_S + 10.0


def cells(values: dict[str, Any]) -> dict[CellKey, Cell]:
    return {(v.indicator, v.unit, v.window): (v.numerator, v.denominator if v.HasField("denominator") else None,
                                              v.provisional) for v in values.values()}


def alert_records(hub: LocalHub) -> Iterator[tuple[str, str, str]]:
    """(recipient, alert id, situation) of every alert; see carehub.chaos.account_alerts."""
    for v in hub.values("alerts", timeout_s=300):
        a = al.Alert.FromString(v)
        situation = ""
        if a.kind == al.ALERT_KIND_NEW and a.local_id:
            situation = f"{a.rule}|{a.recipient_role}|{a.local_id}|{a.source_org}|{a.event_time.seconds}"
        yield a.recipient_org, a.alert_id, situation


def audited_deliveries(hub: LocalHub) -> Iterator[tuple[str, str]]:
    """(organisation, alert id) of every gRPC delivery the gateway audited."""
    for v in hub.values("audit", timeout_s=300):
        record = al.AuditRecord.FromString(v)
        if record.action == "deliver":
            yield record.org, record.alert_id


def door_event_ids(messages: list[DoorMessage], data_dir: Path) -> tuple[set[EventId], dict[Door, int]]:
    """The event ids each door makes of the messages it acknowledged, by the door's own mapping."""
    adt = load_adt_mapping(None, data_dir / "hl7-facilities.toml")
    fhir_mapping = load_fhir_mapping(None)
    senders = load_senders(data_dir / "fhir-senders.toml")
    ids: set[EventId] = set()
    events = {Door.MLLP: 0, Door.FHIR: 0}
    for m in messages:
        if m.door == Door.MLLP:
            made = map_message(m.body.decode("ascii"), adt).events
        else:
            sender = senders.by_org(m.org)
            assert sender is not None, m.org
            made = map_bundle(orjson.loads(m.body), m.body, sender, fhir_mapping).events
        events[m.door] += len(made)
        ids.update((e.source_org, e.event_id) for e in made)
    return ids, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--short", action="store_true",
                        help="the make test variant: 1 round, a 5 s stall, 45 s of publishing (about 2.5 minutes)")
    parser.add_argument("--minutes", type=float, help="minutes of publishing (default 5; --short 0.75)")
    parser.add_argument("--rate", type=float, default=1000.0, help="records a second (default 1000)")
    parser.add_argument("--people", type=int,
                        help="people in the region (default: enough for --minutes at --rate; given, all its records "
                             "are sent, however long that takes)")
    parser.add_argument("--seed", type=int, default=11, help="the region's seed (default 11)")
    parser.add_argument("--rounds", type=int, help="times each worker is killed (default 3; --short 1)")
    parser.add_argument("--stall-s", type=float, help="seconds the broker is stopped (default 20; --short 5)")
    parser.add_argument("--drop-s", type=float, help="seconds partners' connections are refused (default 5; "
                                                     "--short 2)")
    parser.add_argument("--partitions", type=int, default=4, help="CAREHUB_PARTITIONS (default 4)")
    parser.add_argument("--catch-up-s", type=float,
                        help="how long every stage may take to catch up after publishing (default 600; --short 300)")
    parser.add_argument("--report", type=Path, help="also write the figures here, as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) after a run that passed too")
    a = parser.parse_args()
    short = a.short
    s = Options(short=short, minutes=a.minutes or (0.75 if short else 5.0), rate=a.rate, people=a.people,
                 seed=a.seed, rounds=a.rounds or (1 if short else 3),
                 stall_s=a.stall_s if a.stall_s is not None else (5.0 if short else 20.0),
                 drop_s=a.drop_s if a.drop_s is not None else (2.0 if short else 5.0), partitions=a.partitions,
                 catch_up_s=a.catch_up_s or (300.0 if short else 600.0), report=a.report, keep=a.keep)
    work = Path(tempfile.mkdtemp(prefix="carehub-chaos-"))
    suite = Suite(s, work)
    print("$ " + suite.report.command, flush=True)
    print(f"{os.cpu_count()} CPUs; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; work folder {work}",
          flush=True)
    failure = ""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM stops it as Ctrl-C does, cleaning up
    try:
        suite.run()
    except KeyboardInterrupt:
        failure = "interrupted"
    except Exception:
        failure = "the suite itself failed:\n" + traceback.format_exc()
    finally:
        suite.close()
    r = suite.report
    r.seconds = time.monotonic() - STARTED
    print("\nfaults (seconds after the first record):")
    for line in r.faults:
        print(f"  {line}")
    print()
    print(r.table())
    for note in r.notes:
        print(f"- {note}")
    problems = ([failure] if failure else []) + r.problems()
    print("\nresult: " + ("FAIL" if problems else "PASS"))
    for problem in problems:
        print(f"  - {problem}")
    if s.report is not None:
        s.report.write_text(json.dumps({**dataclasses.asdict(r), "problems": problems}, indent=2))
    if problems or s.keep:
        where = f"logs in {work}"
    else:
        shutil.rmtree(work, ignore_errors=True)
        where = "work folder removed (--keep keeps it)"
    print(f"\nwall time {r.seconds:.0f} s; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; {where}",
          flush=True)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
