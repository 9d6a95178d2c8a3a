"""Overload: one provider floods at ten times its rate; what happens to it and to everyone else.

Everything runs on this machine, bound to 127.0.0.1: the embedded broker and the real `ingest`
and `mllp` services (carehub.harness.LocalHub), the senders in this process. The script ends only
the processes it started.

1. **Kafka door.** A quiet provider (B86001) publishes ``--base`` events/s through the SDK for
   ``--seconds``; the same again while a flooding provider (RR8) publishes ten times that.
   For each run: what was published and accepted by each provider (lost must be 0), and the quiet
   provider's delay from its publish (the record's Kafka timestamp) to ingest's acceptance
   (``AcceptedEvent.published_time`` -> ``accepted_time``), p50/p99/max, quiet and flooded.
2. **MLLP door.** A quiet facility sends ``--mllp-rate`` messages/s on one connection, alone and
   while a flooding facility sends back to back on 10 connections; the quiet one's ACK latency
   p50/p99/max each time, and both facilities' ACK codes (every message gets AA or a clear
   refusal; a connection dropped without an ACK would count as lost).

    python bench/overload_bench.py              # about two minutes
    python bench/overload_bench.py --seconds 10 --base 100

Not measured here: the FHIR door (uvicorn caps concurrent requests, CAREHUB_FHIR's 512, and
answers 503 beyond), floods longer than ``--seconds``, and the later stages behind ingest.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hl7.mllp  # noqa: E402

from carehub.harness import LocalHub  # noqa: E402
from carehub.hl7_client import describe  # noqa: E402
from carehub.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from carehub.sdk import Publisher  # noqa: E402
from carehub.v1 import ingest_pb2 as ing  # noqa: E402
from tests.factories import care_event  # noqa: E402
from tests.hl7v2_messages import PV1_INPATIENT, adt  # noqa: E402

QUIET, FLOOD = "B86001", "RR8"


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    pick = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.99)]
    return f"p50 {pick[0] * 1000:.0f} ms, p99 {pick[1] * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"


def paced(pub: Publisher, org: str, rate: float, seconds: float, tag: str, sent: list[str]) -> None:
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        event = care_event(when=datetime.now(UTC), source_org=org, local_id=f"{tag}-{i}")
        event.event_id = f"{tag}-{uuid.uuid4()}"
        pub.publish(event, "protobuf")
        sent.append(event.event_id)


def kafka_run(hub: LocalHub, base: float, seconds: float, flood: bool, tag: str) -> dict[str, object]:
    quiet_sent: list[str] = []
    flood_sent: list[str] = []
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as quiet_pub, \
            Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as flood_pub:
        threads = [threading.Thread(target=paced, args=(quiet_pub, QUIET, base, seconds, f"{tag}-q", quiet_sent))]
        if flood:
            threads.append(threading.Thread(target=paced, args=(flood_pub, FLOOD, 10 * base, seconds, f"{tag}-f",
                                                                 flood_sent)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        quiet_pub.flush()
        flood_pub.flush()
    hub.wait_caught_up("ingest", ["provider.events"], timeout_s=600)
    accepted = {e.event_id: e for v in hub.values("ingest.accepted", timeout_s=120)
                for e in ing.AcceptedBatch.FromString(v).events if e.event_id.startswith(tag)}
    delays = [(accepted[i].accepted_time.ToNanoseconds() - accepted[i].published_time.ToNanoseconds()) / 1e9
              for i in quiet_sent if i in accepted]
    return {"quiet_sent": len(quiet_sent), "quiet_lost": sum(i not in accepted for i in quiet_sent),
            "flood_sent": len(flood_sent), "flood_lost": sum(i not in accepted for i in flood_sent),
            "delays": delays, "unacknowledged": quiet_pub.failed + flood_pub.failed}


async def mllp_quiet(port: int, rate: float, seconds: float, tag: str) -> tuple[list[float], dict[str, int]]:
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
    latencies: list[float] = []
    codes: dict[str, int] = {}
    start = time.perf_counter()
    try:
        for i in range(int(rate * seconds)):
            planned = start + i / rate
            delay = planned - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.writeblock(adt("A01", f"{tag}-{i}", msh_fields={"f4": "RAE"},
                                  pv1={**PV1_INPATIENT, 19: f"{tag}-{i}"}).encode())
            await writer.drain()
            code, _ = describe(await reader.readblock())
            latencies.append(time.perf_counter() - planned)
            codes[code] = codes.get(code, 0) + 1
    finally:
        writer.close()
    return latencies, codes


async def mllp_flood(port: int, stop: asyncio.Event, tag: str, codes: dict[str, int]) -> None:
    async def one(c: int) -> None:
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
        n = 0
        try:
            while not stop.is_set():
                writer.writeblock(adt("A01", f"{tag}-{c}-{n}", pv1={**PV1_INPATIENT, 19: f"{tag}-{c}-{n}"}).encode())
                await writer.drain()
                code, _ = describe(await reader.readblock())
                codes[code] = codes.get(code, 0) + 1
                n += 1
        finally:
            writer.close()

    await asyncio.gather(*(one(c) for c in range(10)))


async def mllp_run(port: int, rate: float, seconds: float, flood: bool, tag: str,
                   ) -> tuple[list[float], dict[str, int], dict[str, int]]:
    stop = asyncio.Event()
    flood_codes: dict[str, int] = {}
    flooding = asyncio.create_task(mllp_flood(port, stop, f"{tag}-f", flood_codes)) if flood else None
    try:
        latencies, codes = await mllp_quiet(port, rate, seconds, f"{tag}-q")
    finally:
        stop.set()
        if flooding is not None:
            await flooding
    return latencies, codes, flood_codes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--base", type=float, default=100.0, help="the quiet provider's events/s (flood: 10x)")
    parser.add_argument("--mllp-rate", type=float, default=10.0, help="the quiet facility's messages/s")
    args = parser.parse_args()
    print("command: " + shlex.join([sys.executable, *sys.argv]), flush=True)
    with tempfile.TemporaryDirectory(prefix="carehub-overload-") as tmp, \
            EmbeddedBroker(log_path=Path(tmp) / "tansu.log") as broker:
        hub = LocalHub(broker.bootstrap, Path(tmp) / "hub")
        hub.create_topics()
        facilities = Path(tmp) / "facilities.toml"
        facilities.write_text("version = 1\n" + "".join(
            f'[[facilities]]\nfacility = "{f}"\norg = "{f}"\nsector = "acute"\n' for f in ("RR8", "RAE")))
        port = free_port()
        try:
            hub.start("ingest", CAREHUB_LOG_LEVEL="warning")
            hub.start("mllp", CAREHUB_MLLP_PORT=str(port), CAREHUB_HL7_FACILITIES=str(facilities),
                      CAREHUB_LOG_LEVEL="warning")
            hub.wait_listening(port)
            kafka_run(hub, args.base, 1.0, False, "warm")  # ingest joined its group and warmed up: not reported
            for flood in (False, True):
                r = kafka_run(hub, args.base, args.seconds, flood, f"k{int(flood)}")
                print(f"\nKafka door, {'with' if flood else 'without'} a flood "
                      f"({10 * args.base:.0f}/s from {FLOOD}): quiet {QUIET} at {args.base:.0f}/s sent "
                      f"{r['quiet_sent']}, lost {r['quiet_lost']}; flooding sent {r['flood_sent']}, lost "
                      f"{r['flood_lost']} (sends the broker did not acknowledge, counted in lost: "
                      f"{r['unacknowledged']}); quiet provider's publish-to-accept delay "
                      f"{percentiles(r['delays'])}", flush=True)  # type: ignore[arg-type]
            for flood in (False, True):
                latencies, codes, flood_codes = asyncio.run(mllp_run(port, args.mllp_rate, args.seconds, flood,
                                                                     f"m{int(flood)}"))
                print(f"MLLP door, {'with' if flood else 'without'} a flood (10 connections back to back from RR8): "
                      f"quiet RAE at {args.mllp_rate:.0f}/s ACK codes {codes}, ACK latency {percentiles(latencies)}"
                      + (f"; flooding ACK codes {flood_codes}" if flood else ""), flush=True)
        finally:
            hub.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
