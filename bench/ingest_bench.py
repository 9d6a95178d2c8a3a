"""Ingest throughput on one broker and one set of events, against faust's own baselines.

Prints events/s for: raw aiokafka consume, a do-nothing faust agent (faust's ceiling
here), the same taking events in batches as ingest does, a naive faust agent (one await
and one table update per event), carehub ingest, and carehub identity over what ingest
accepted; and each one's ratio to the do-nothing agent (carehub ingest / do-nothing faust
is the figure we steer by: aim >= 0.5).
Each variant runs in its own process with a fresh consumer group over the same topic;
the clock runs from its first event to its last, so start-up and group joins are out.

    make bench                               # embedded broker, 100k events
    python bench/ingest_bench.py --events 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = ("raw-aiokafka", "faust-do-nothing", "faust-take-nothing", "faust-naive", "carehub-ingest",
            "carehub-identity")


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

    from carehub.faust_profile import faust_app
    from carehub.settings import load_settings

    uvloop.install()
    settings = load_settings(profile="demo", topic_prefix=prefix, data_dir=Path(f"/tmp/carehub-bench/{prefix}"),
                             kafka_bootstrap=bootstrap, web_port=6070, metrics_port=0)

    def stop() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    if variant in ("carehub-ingest", "carehub-identity"):
        from carehub.broker import create_topics
        from carehub.topics import topic_specs
        from carehub.v1 import ingest_pb2 as ing

        source_prefix, _, source_name = topic.partition(".")
        settings = settings.model_copy(update={"topic_prefix": source_prefix, "provider_topics": [source_name]})
        create_topics(bootstrap, topic_specs(settings))
        if variant == "carehub-ingest":
            from services.ingest.app import build_app as build_ingest

            app = build_ingest(settings, bootstrap)
            stage = app.carehub_ingest  # type: ignore[attr-defined]

            def count(events: list[Any]) -> int:
                return len(events)
        else:  # reads what the carehub-ingest variant accepted, so it runs after it
            from services.identity.app import build_app as build_identity

            app = build_identity(settings, bootstrap)
            stage = app.carehub_identity  # type: ignore[attr-defined]

            def count(events: list[Any]) -> int:
                return sum(len(ing.AcceptedBatch.FromString(e.message.value).events) for e in events)

        inner = stage.process_batch

        async def timed(stream: Any, events: list[Any]) -> None:
            clock.start()
            await inner(stream, events)
            if clock.tick(count(events)):
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

def parent(args: argparse.Namespace) -> None:
    from carehub.broker import EmbeddedBroker, create_topics
    from carehub.topics import TopicSpec

    broker = None
    bootstrap = os.environ.get("CAREHUB_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        topic = f"{prefix}.provider.events"
        create_topics(bootstrap, [TopicSpec(topic, args.partitions)])
        print(f"broker {bootstrap}{' (embedded Tansu)' if broker else ''}; {args.events} events, "
              f"{args.partitions} partitions, {os.cpu_count()} cores", flush=True)
        t = time.perf_counter()
        events = make_events(args.events, args.seed)
        accepted = sum(kind == "valid" for *_, kind in events)
        print(f"generated {len(events)} synthetic-region records in {time.perf_counter() - t:.1f}s "
              f"(avg {sum(len(v) for _, v, _, _ in events) / len(events):.0f} bytes; {accepted} valid, "
              "the rest duplicates or malformed)", flush=True)
        rate = asyncio.run(publish(bootstrap, topic, events))
        print(f"published at {rate:,.0f} records/s (aiokafka)", flush=True)
        results: dict[str, float] = {}
        for variant in args.variants.split(","):
            out = Path(f"/tmp/carehub-bench/{prefix}-{variant}.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ, CAREHUB_PSEUDONYM_KEY=secrets.token_hex(32),
                       CAREHUB_PARTITIONS=str(args.partitions), CAREHUB_KAFKA_BOOTSTRAP=bootstrap)
            target = accepted if variant == "carehub-identity" else args.events
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
                      f"its log: {log}")
                continue
            r = json.loads(out.read_text())
            results[variant] = r["events"] / r["seconds"]
            print(f"{variant:18} {results[variant]:>10,.0f} events/s  ({r['events']} in {r['seconds']:.2f}s)",
                  flush=True)
        base = results.get("faust-do-nothing")
        if base:
            for variant, rate in results.items():
                print(f"  {variant:18} / faust-do-nothing = {rate / base:.2f}")
    finally:
        if broker:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per variant")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
