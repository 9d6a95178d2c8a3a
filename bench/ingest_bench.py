"""Carehub throughput on one broker and one set of events, against faust's own baselines.

Prints events/s for: raw aiokafka consume, a do-nothing faust agent (faust's ceiling
here), the same taking events in batches as ingest does, a naive faust agent (one await
and one table update per event), carehub ingest, carehub identity over what ingest
accepted, carehub timeline over what identity linked, and the full path; and each one's
ratio to the do-nothing agent (goal: carehub ingest and the full path >= 0.5 of it).
Each stage variant runs in its own process with a fresh consumer group over the same
topic; the clock runs from its first event to its last, so start-up and group joins are out.

carehub-full runs the four services as `make run` does (ingest, identity, timeline,
indicators; one worker each, all at once, started by carehub.harness.LocalHub) over their own
topics, with the events published before they start. A thread scrapes their metrics every
0.2s while the bench waits for the pipeline to finish: ingest has read every record, then each
stage has committed its input to the end (``hub.settle``: its output is then in its topics and
its counters final), then the indicators service has applied every record the timeline wrote
to indicators.partials and published values whose as_of is the newest event day. The clock runs
from the last scrape at which ingest had read nothing to the first at which the timeline had
applied every event; the per-stage rates come from the same scrapes.

    make bench                               # embedded broker, 100k events (the full path too)
    python bench/ingest_bench.py --events 20000
    python bench/ingest_bench.py --variants faust-do-nothing,carehub-full --full-events 50000

``--workers identity=2`` starts two identity workers (in one consumer group) instead of one, and
so for any service; the rates then count the workers of a service together.

Flame graphs: ``--profile identity,timeline`` attaches py-spy (the ``bench`` extra) to those
carehub-full workers from just after they start until the pipeline has finished, sampling 100
times a second, and writes one SVG per worker (``--profile-dir``, default /tmp/carehub-bench).
py-spy reads the worker's memory from outside (ptrace); the worker runs unchanged, a few percent
slower while sampled.

    python bench/ingest_bench.py --variants carehub-full --events 20000 --profile identity
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from carehub.harness import LocalHub, cpu_seconds, eventually  # noqa: E402
from carehub.harness import Worker as HubWorker  # noqa: E402
from carehub.kafka.read import ReadTimeout, Record, fetch_ends, read_to_end  # noqa: E402

VARIANTS = ("raw-aiokafka", "faust-do-nothing", "faust-take-nothing", "faust-naive", "carehub-ingest",
            "carehub-identity", "carehub-timeline", "carehub-full")
STAGE_VARIANTS = ("carehub-ingest", "carehub-identity", "carehub-timeline")
SERVICES = ("ingest", "identity", "timeline", "indicators")
BENCH_DIR = Path("/tmp/carehub-bench")


def make_events(n: int, seed: int) -> list[tuple[bytes, bytes, str, str]]:
    """(key, value, content type, kind) of ``n`` provider records from the synthetic region."""
    from carehub.synthetic import RegionConfig, generate_region

    people = 1000
    records: list[Any] = []
    while len(records) < n:
        people *= 2
        records = list(generate_region(RegionConfig(people=people, seed=seed)).records)
    return [(r.key, r.value, r.content_type, r.kind) for r in records[:n]]


async def publish(bootstrap: str, topic: str, events: list[tuple[bytes, bytes, str, str]]) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [
            await producer.send(topic, value=v, key=k, headers=[("content-type", ct.encode())])
            for k, v, ct, _ in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(events) / (time.perf_counter() - started)


# ---- variants, each run in a child process: `bench/ingest_bench.py --variant NAME` -----------------

class Clock:
    def __init__(self, target: int, out: Path) -> None:
        self.target, self.out = target, out
        self.count = 0
        self.first = 0.0
        self.done = False

    def start(self) -> None:
        if not self.first:
            self.first = time.perf_counter()

    def tick(self, n: int = 1) -> bool:
        """Count ``n`` processed events; True exactly once, when the target is reached."""
        self.start()
        self.count += n
        if self.count >= self.target and not self.done:
            self.done = True
            elapsed = time.perf_counter() - self.first
            self.out.write_text(json.dumps({"events": self.count, "seconds": elapsed}))
            return True
        return False


async def raw_consume(bootstrap: str, topic: str, clock: Clock) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-raw-{uuid.uuid4().hex}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                if clock.tick(len(records)):
                    return
    finally:
        await consumer.stop()


def run_faust_variant(variant: str, bootstrap: str, topic: str, clock: Clock, prefix: str) -> None:
    import uvloop
    from faust.worker import Worker

    from carehub.runtime.app import faust_app
    from carehub.runtime.stage import Batch
    from carehub.settings import load_settings

    uvloop.install()
    settings = load_settings(profile="demo", topic_prefix=prefix, data_dir=Path(f"/tmp/carehub-bench/{prefix}"),
                             kafka_bootstrap=bootstrap, web_port=6070, metrics_port=0)

    def stop() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    if variant in STAGE_VARIANTS:
        from carehub.kafka.broker import create_topics
        from carehub.topics import linked_topic, topic_specs
        from carehub.v1 import identity_pb2 as idn
        from carehub.v1 import ingest_pb2 as ing

        source_prefix, _, source_name = topic.partition(".")
        settings = settings.model_copy(update={"topic_prefix": source_prefix, "provider_topics": [source_name]})
        create_topics(bootstrap, topic_specs(settings))
        if variant == "carehub-ingest":
            from services.ingest.app import build_app as build_ingest

            app = build_ingest(settings, bootstrap)
            stage = app.carehub_ingest  # type: ignore[attr-defined]

            def count(batch: Batch) -> int:
                return len(batch)
        elif variant == "carehub-identity":  # reads what the carehub-ingest variant accepted, so it runs after it
            from services.identity.app import build_app as build_identity

            app = build_identity(settings, bootstrap)
            stage = app.carehub_identity  # type: ignore[attr-defined]

            def count(batch: Batch) -> int:
                return sum(len(ing.AcceptedBatch.FromString(r.value).events) for r in batch)
        else:  # reads what the carehub-identity variant linked, so it runs after it
            from services.timeline.app import build_app as build_timeline

            app = build_timeline(settings, bootstrap)
            stage = app.carehub_timeline  # type: ignore[attr-defined]
            linked = linked_topic(settings)

            def count(batch: Batch) -> int:  # linked events; handovers (its own output) are not counted
                return sum(len(idn.LinkedBatch.FromString(r.value).events) for r in batch if r.topic == linked)

        inner = stage.process_batch

        async def timed(batch: Batch) -> None:
            clock.start()
            await inner(batch)
            if clock.tick(count(batch)):
                stop()

        stage.process_batch = timed
    else:
        app = faust_app(f"{prefix}-{variant}", settings, bootstrap)
        source = app.topic(topic, key_serializer="raw", value_serializer="raw")
        if variant == "faust-do-nothing":
            @app.agent(source)
            async def nothing(stream: Any) -> None:
                async for _ in stream:
                    if clock.tick():
                        stop()
        elif variant == "faust-take-nothing":  # batching alone, as carehub ingest takes events
            @app.agent(source)
            async def take_nothing(stream: Any) -> None:
                async for events in stream.take_events(settings.ingest_batch_size, settings.ingest_batch_within_s):
                    if clock.tick(len(events)):
                        stop()
        else:
            table = app.Table("naive-counts", default=int, partitions=settings.partitions)

            @app.agent(source)
            async def naive(stream: Any) -> None:
                async for event in stream.events():
                    table[event.key.decode()] += 1
                    if clock.tick():
                        stop()

    Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


def child(args: argparse.Namespace) -> None:
    out = Path(args.out)
    clock = Clock(args.events, out)
    if args.variant == "raw-aiokafka":
        asyncio.run(raw_consume(args.bootstrap, args.topic, clock))
    else:
        run_faust_variant(args.variant, args.bootstrap, args.topic, clock, args.prefix)


# ---- the orchestrating parent ----------------------------------------------------------------------

@dataclass
class Result:
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def run_variant(variant: str, bootstrap: str, topic: str, prefix: str, target: int,
                args: argparse.Namespace) -> Result | None:
    out = BENCH_DIR / f"{prefix}-{variant}.json"
    env = dict(os.environ, CAREHUB_PSEUDONYM_KEY=secrets.token_hex(32),
               CAREHUB_PARTITIONS=str(args.partitions), CAREHUB_KAFKA_BOOTSTRAP=bootstrap)
    cmd = [sys.executable, __file__, "--variant", variant, "--bootstrap", bootstrap, "--topic", topic,
           "--events", str(target), "--out", str(out), "--prefix", f"{prefix}{variant[:5]}"]
    log = out.with_suffix(".log")
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not out.exists():
        print(f"{variant:18} did not finish (exit code {proc.returncode}; limit {args.timeout:.0f}s); "
              f"its log: {log}", flush=True)
        return None
    r = json.loads(out.read_text())
    return Result(r["events"], r["seconds"])


def count_linked(bootstrap: str, topic: str) -> int:
    """LinkedEvents in ``topic``'s LinkedBatch records, from the start to its end (nothing writes it now)."""
    from carehub.v1 import identity_pb2 as idn

    total = 0

    def count(r: Record) -> bool:  # counted while reading, nothing kept
        nonlocal total
        total += len(idn.LinkedBatch.FromString(r.value).events) if r.value else 0
        return False

    read_to_end(bootstrap, topic, timeout_s=120, keep=count)
    return total


def newest_event_day(events: list[tuple[bytes, bytes, str, str]]) -> int:
    """Days since 1970 of the newest event_time among the valid records: the as_of indicators should reach."""
    import orjson

    from carehub.synthetic import CONTENT_TYPE_PROTOBUF
    from carehub.v1 import care_event_pb2 as ce

    newest = 0
    for _, value, content_type, kind in events:
        if kind != "valid":
            continue
        if content_type == CONTENT_TYPE_PROTOBUF:
            seconds = ce.CareEvent.FromString(value).event_time.seconds
        else:
            seconds = int(datetime.fromisoformat(orjson.loads(value)["eventTime"]).timestamp())
        newest = max(newest, seconds)
    return newest // 86_400


RECEIVED = "carehub_ingest_received_total"
LINKED = "carehub_identity_linked_total"
TIMELINE = "carehub_timeline_events_total"
PARTIALS = "carehub_indicators_partials_total"
AS_OF = "carehub_indicators_as_of_timestamp_seconds"
PUBLISHED = "carehub_indicators_values_published_total"
POLL_S = 0.2
SETTLE_POLL_S = 1.0  # each look at a stage's committed offsets costs two Kafka clients: not every scrape
AS_OF_WAIT_S = 30.0  # indicators publish every second once they have news; a deadline, not a guess
Sample = tuple[float, dict[str, float]]


@dataclass
class Sampler:
    """Scrapes the workers every POLL_S in a thread of its own, while the bench waits for conditions.

    Each sample also holds the CPU seconds used so far by each service (``cpu:NAME``), the
    broker when it is ours, and this process (the scraping and the waiting).
    """

    workers: dict[str, HubWorker]
    broker_pid: int | None
    samples: list[Sample] = field(default_factory=list)
    halt: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        current: dict[str, float] = {}
        scraped: dict[str, dict[str, float]] = {}  # each worker's last good scrape
        while True:
            for name, worker in self.workers.items():
                with contextlib.suppress(OSError):  # counters only grow: keep the last value if a scrape fails
                    scraped[name] = worker.metrics()
                current[f"cpu:{name}"] = cpu_seconds(worker.pid)
            totals: dict[str, float] = {}  # a service's workers together (--workers SERVICE=N)
            for values in scraped.values():
                for key, value in values.items():
                    totals[key] = totals.get(key, 0.0) + value
            current.update(totals)
            if self.broker_pid:
                current["cpu:broker"] = cpu_seconds(self.broker_pid)
            current["cpu:bench"] = time.process_time()
            self.samples.append((time.perf_counter(), dict(current)))
            if self.halt.wait(POLL_S):
                return

    def last(self, key: str) -> float:
        return self.samples[-1][1].get(key, 0.0) if self.samples else 0.0


def wait_finished(hub: LocalHub, sampler: Sampler, sent: int, as_of_s: float, timeout_s: float) -> None:
    """Wait until the pipeline has done everything with the ``sent`` records, each step a condition.

    AssertionError if a worker exits or a step is not reached by the deadline; only the as_of the
    indicators publish may fall short (the report says so).
    """
    deadline = time.monotonic() + timeout_s

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    def reached(key: str, value: float) -> bool:
        hub.assert_running()
        return sampler.last(key) >= value

    eventually(lambda: reached(RECEIVED, sent), left(), f"ingest read all {sent} records")
    for stage in ("ingest", "identity", "timeline"):  # each has committed its input to the end
        hub.settle(stage, timeout_s=left(), interval_s=SETTLE_POLL_S)
    partials = sum(fetch_ends(hub.bootstrap, [hub.topic("indicators.partials")]).values())
    eventually(lambda: reached(PARTIALS, partials), left(), f"indicators applied all {partials} partials")
    with contextlib.suppress(AssertionError):
        eventually(lambda: sampler.last(AS_OF) >= as_of_s, min(left(), AS_OF_WAIT_S), "indicators' as_of")


def span(samples: list[Sample], key: str, final: float) -> tuple[float, float]:
    """(last scrape with ``key`` at 0, first with it at ``final``): the stage's clock, never shorter than it ran."""
    start = max((t for t, m in samples if not m.get(key, 0)), default=samples[0][0])
    end = next(t for t, m in samples if m.get(key, 0) >= final)
    return start, end


def records_written(hub: LocalHub) -> dict[str, int]:
    """Records in the topics of the faust workers ingest, identity and timeline (outputs and table
    changelogs), each topic's end as a Fetch response reports it (carehub.kafka.read.fetch_ends)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=hub.bootstrap, client_id="carehub-bench")
    try:
        topics = sorted(consumer.topics())
    finally:
        consumer.close()
    written: dict[str, int] = {}
    for topic in topics:
        service = next((s for s in SERVICES[:3] if topic.startswith((f"{hub.prefix}.{s}.", f"{hub.prefix}-{s}-"))),
                       None)
        if topic == hub.topic("indicators.partials"):
            service = "timeline"
        if service is not None:
            written[service] = written.get(service, 0) + sum(fetch_ends(hub.bootstrap, [topic]).values())
    return written


def run_full(bootstrap: str, prefix: str, events: list[tuple[bytes, bytes, str, str]], args: argparse.Namespace,
             results: dict[str, Result], notes: list[str], broker_pid: int | None) -> None:
    """The four services at once over their own topics; adds carehub-full and its stages to ``results``."""
    from carehub.settings import Settings

    full_prefix = f"{prefix}full"
    # the settings' own batching window (the harness's default is shorter, for tests)
    window = str(Settings.model_fields["ingest_batch_within_s"].default)
    hub = LocalHub(bootstrap, BENCH_DIR / full_prefix, prefix=full_prefix, partitions=args.partitions,
                   base_env={"CAREHUB_INGEST_BATCH_WITHIN_S": window, "CAREHUB_LOG_LEVEL": "info"})
    hub.create_topics()
    rate = asyncio.run(publish(bootstrap, hub.topic("provider.events"), events))
    newest = newest_event_day(events)
    print(f"carehub-full: published {len(events)} records to {hub.topic('provider.events')} at {rate:,.0f}/s; "
          f"newest event day {datetime.fromtimestamp(newest * 86_400).date()}; starting the four services",
          flush=True)
    sampler = Sampler({}, broker_pid)
    thread = threading.Thread(target=sampler.run, name="bench-scrape", daemon=True)
    failure = ""
    profilers: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for service in SERVICES:
            sampler.workers[service] = hub.start_with_metrics(service)
            for k in range(2, args.workers.get(service, 1) + 1):
                sampler.workers[f"{service}-{k}"] = hub.start_with_metrics(service)
        for service in args.profile:
            profilers.append(start_profiler(sampler.workers[service].pid, service, args.profile_dir))
        thread.start()
        wait_finished(hub, sampler, len(events), newest * 86_400, args.timeout)
    except (AssertionError, ReadTimeout) as exc:
        failure = str(exc).splitlines()[0]
    finally:
        for proc, svg in profilers:
            notes.append(stop_profiler(proc, svg))
        sampler.halt.set()
        if thread.is_alive():
            thread.join()
        hub.stop_all()
    samples = sampler.samples
    written = {}
    with contextlib.suppress(Exception):  # a diagnostic only
        written = records_written(hub)
    last = samples[-1][1] if samples else {}
    if failure or not last.get(TIMELINE):
        print(f"carehub-full       did not finish ({failure}); logs in {hub.data_dir}", flush=True)
        return
    final = {k: last[k] for k in (RECEIVED, LINKED, TIMELINE)}
    (start, _), (_, end) = span(samples, RECEIVED, final[RECEIVED]), span(samples, TIMELINE, final[TIMELINE])
    results["carehub-full"] = full = Result(len(events), end - start)
    print(f"{'carehub-full':18} {full.rate:>10,.0f} events/s  ({full.events} provider records in {full.seconds:.2f}s, "
          f"through ingest, identity and timeline)", flush=True)
    for service, metric in (("ingest", RECEIVED), ("identity", LINKED), ("timeline", TIMELINE)):
        s, e = span(samples, metric, final[metric])
        results[f"  full: {service}"] = stage = Result(int(final[metric]), e - s)
        print(f"{'  full: ' + service:18} {stage.rate:>10,.0f} events/s  ({stage.events} in {stage.seconds:.2f}s)",
              flush=True)
    reached = next((t for t, m in samples if m.get(AS_OF, 0) >= newest * 86_400), None)
    day = datetime.fromtimestamp(newest * 86_400).date()
    if reached is None:
        as_of = last.get(AS_OF)
        notes.append(f"full: indicators never published as_of {day} (last as_of "
                     f"{datetime.fromtimestamp(as_of).date() if as_of else 'none'})")
    else:
        notes.append(f"full: indicators published values with as_of {day} (the newest event day) "
                     f"{reached - start:.1f}s after ingest's first batch, {reached - end:+.1f}s from the timeline's "
                     f"last event")
    applied = next(t for t, m in samples if m.get(PARTIALS, 0) >= last.get(PARTIALS, 0))
    notes.append(f"full: indicators applied all {int(last.get(PARTIALS, 0))} records of indicators.partials "
                 f"{applied - end:+.1f}s from the timeline's last event")
    if last.get(PUBLISHED):
        settled = next(t for t, m in samples if m.get(PUBLISHED, 0) >= last[PUBLISHED])
        notes.append(f"full: indicators' last publication seen by then {settled - end:+.1f}s from the timeline's "
                     f"last event ({int(last[PUBLISHED])} values written, "
                     f"{int(last.get('carehub_indicators_values', 0))} held)")
    notes.append(f"full: {int(final[RECEIVED])} records read by ingest, {int(final[LINKED])} events linked, "
                 f"{int(final[TIMELINE])} on timelines; clocks from metric scrapes every {POLL_S}s")
    if written:
        notes.append("full: records written (outputs and table changelogs) per provider record: "
                     + ", ".join(f"{k} {written[k] / len(events):.2f}" for k in SERVICES if k in written))
    at_start = next(m for t, m in samples if t >= start)
    at_end = next(m for t, m in samples if t >= end)
    used = {k.removeprefix("cpu:"): at_end[k] - at_start.get(k, 0.0) for k in at_end if k.startswith("cpu:")}
    notes.append(f"full: CPU seconds in those {full.seconds:.1f}s ({os.cpu_count()} cores): "
                 + ", ".join(f"{k} {v:.1f}" for k, v in used.items())
                 + f"; total {sum(used.values()):.1f}")


def worker_counts(text: str) -> dict[str, int]:
    """``identity=2,timeline=2`` -> workers per service for carehub-full."""
    counts: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        service, _, n = part.partition("=")
        if service not in SERVICES or not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"{part!r}: want SERVICE=N with SERVICE one of {', '.join(SERVICES)}")
        counts[service] = int(n)
    return counts


def start_profiler(pid: int, service: str, out_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """py-spy sampling one worker (by its pid) into a flame graph; written when it is stopped."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise SystemExit("--profile needs py-spy: pip install -e '.[bench]'")
    out_dir.mkdir(parents=True, exist_ok=True)
    svg = out_dir / f"flame-{service}.svg"
    command = [str(spy), "record", "--pid", str(pid), "--rate", "100", "--format", "flamegraph",
               "--output", str(svg), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), svg


def stop_profiler(proc: subprocess.Popen[bytes], svg: Path) -> str:
    """Stop py-spy as Ctrl-C would (it then writes the graph); the note says where it went."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # py-spy, started by this script, by its pid
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if svg.exists():
        return f"full: flame graph of the {svg.stem.removeprefix('flame-')} worker: {svg}"
    return f"full: no flame graph for {svg.stem} (py-spy: {err.decode(errors='replace').strip()[-300:]})"


def print_summary(results: dict[str, Result], notes: list[str]) -> None:
    base = results.get("faust-do-nothing")
    print("\nsummary (one broker, one run; ratio to faust-do-nothing in this run)")
    print(f"{'variant':20} {'events':>8} {'seconds':>8} {'events/s':>10} {'/ do-nothing':>13}")
    for name, r in results.items():
        ratio = f"{r.rate / base.rate:.2f}" if base else "-"
        print(f"{name:20} {r.events:>8} {r.seconds:>8.2f} {r.rate:>10,.0f} {ratio:>13}")
    for note in notes:
        print(note)
    sys.stdout.flush()


def parent(args: argparse.Namespace) -> None:
    from carehub.kafka.broker import EmbeddedBroker, create_topics
    from carehub.topics import TopicSpec

    broker = None
    bootstrap = os.environ.get("CAREHUB_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    started, load = time.perf_counter(), os.getloadavg()[0]
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        topic = f"{prefix}.provider.events"
        create_topics(bootstrap, [TopicSpec(topic, args.partitions)])
        variants = args.variants.split(",")
        full_events = min(args.full_events or args.events, args.events)
        print(f"broker {bootstrap}{' (embedded Tansu)' if broker else ''}; {args.events} events "
              f"({full_events} for carehub-full), {args.partitions} partitions, {os.cpu_count()} cores", flush=True)
        t = time.perf_counter()
        events = make_events(args.events, args.seed)
        accepted = sum(kind == "valid" for *_, kind in events)
        print(f"generated {len(events)} synthetic-region records in {time.perf_counter() - t:.1f}s "
              f"(avg {sum(len(v) for _, v, _, _ in events) / len(events):.0f} bytes; {accepted} valid, "
              "the rest duplicates or malformed)", flush=True)
        if set(variants) - {"carehub-full"}:
            rate = asyncio.run(publish(bootstrap, topic, events))
            print(f"published at {rate:,.0f} records/s (aiokafka)", flush=True)
        results: dict[str, Result] = {}
        notes: list[str] = []
        for variant in variants:
            if variant == "carehub-full":
                run_full(bootstrap, prefix, events[:full_events], args, results, notes, broker.pid if broker else None)
                continue
            target = args.events
            if variant == "carehub-identity":
                target = accepted
            elif variant == "carehub-timeline":
                target = count_linked(bootstrap, f"{prefix}.identity.linked")
                if not target:
                    print(f"{variant:18} skipped: it reads what carehub-identity linked earlier in the run", flush=True)
                    continue
            result = run_variant(variant, bootstrap, topic, prefix, target, args)
            if result is not None:
                results[variant] = result
                print(f"{variant:18} {result.rate:>10,.0f} events/s  ({result.events} in {result.seconds:.2f}s)",
                      flush=True)
        notes.append(f"whole run {time.perf_counter() - started:.0f}s; load average {load:.2f} before it, "
                     f"{os.getloadavg()[0]:.2f} after (other work on the machine skews the figures); "
                     f"child logs in {BENCH_DIR}/{prefix}-*.log and {BENCH_DIR}/{prefix}full/")
        print_summary(results, notes)
    finally:
        if broker:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--full-events", type=int, default=0,
                        help="records for carehub-full: the first N of --events (default: all of them)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per variant")
    parser.add_argument("--workers", type=worker_counts, default={},
                        help="carehub-full workers per service, e.g. identity=2 (default one each)")
    parser.add_argument("--profile", type=lambda v: [x for x in v.split(",") if x], default=[],
                        help=f"carehub-full workers to sample with py-spy into flame graphs ({', '.join(SERVICES)})")
    parser.add_argument("--profile-dir", type=Path, default=BENCH_DIR, help="where the flame graphs go")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if unknown := set(args.profile) - set(SERVICES):
        parser.error(f"--profile: no carehub-full worker {', '.join(sorted(unknown))} (workers: {', '.join(SERVICES)})")
    if args.variant:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
