"""The provider doors: HL7 v2 over MLLP and FHIR R4 over HTTPS, to the durable write.

Everything runs on this machine, bound to 127.0.0.1: the embedded broker, the real `mllp` and
`fhir` services (carehub.harness.LocalHub starts them by name, each in its own process with its
log in the hub's folder) and the clients in this process. Nothing downstream runs: an ACK or a
200 means the message and its events were acknowledged by the broker (acks=all), which is what
the door promises. The script ends only the processes it started.

1. **MLLP throughput**: 10 connections send ADT^A01 messages back to back (each waits for its
   ACK, as MLLP senders do) for ``--seconds``; messages/s, and messages per CPU-second of the
   mllp process (its user + system time from /proc: the "per core" figure, since the service is
   one asyncio process).
2. **MLLP ACK latency, paced**: 100 and 1,000 messages/s spread over 10 connections for
   ``--seconds`` each. Each message has a planned send time; latency is ACK received - planned
   time, so a sender that falls behind is charged for it (no coordinated omission).
3. **FHIR `$process-message`**: Da Vinci admit notifications over mutual TLS, paced at
   ``--fhir-rate`` per second on one keep-alive connection; latency from planned time to the
   200 received; then 10 concurrent connections back to back for the throughput.

    python bench/doors_bench.py                 # about a minute and a half
    python bench/doors_bench.py --seconds 5 --rates 100

Not measured here: the hub beyond the provider topic (ingest and later stages), MLLP over TLS
(the service has none), other message types, and a machine other than this one. The clients
share the machine's two cores with the services and the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hl7.mllp  # noqa: E402
import httpx  # noqa: E402

from carehub import tlsgen  # noqa: E402
from carehub.domain.fhir.senders import hash_token  # noqa: E402
from carehub.fhir_client import tls_context  # noqa: E402
from carehub.harness import LocalHub, Worker  # noqa: E402
from carehub.hl7_client import describe  # noqa: E402
from carehub.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from tests.fhir_bundles import body, notification  # noqa: E402
from tests.hl7v2_messages import PV1_INPATIENT, adt  # noqa: E402

CONNECTIONS = 10


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def message(n: int) -> bytes:
    return adt("A01", f"B-{n}", pv1={**PV1_INPATIENT, 19: f"S-B-{n}"}).encode()


async def mllp_connection(port: int, first: int, count: int, interval: float | None, start: float,
                          latencies: list[float], codes: dict[str, int], deadline: float) -> int:
    """Send ``count`` messages on one connection (paced by ``interval`` s, or back to back)."""
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
    sent = 0
    try:
        for i in range(count):
            planned = start + i * interval if interval else time.perf_counter()
            if interval:
                delay = planned - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if time.perf_counter() > deadline:
                break
            writer.writeblock(message(first + i))
            await writer.drain()
            code, _ = describe(await reader.readblock())
            latencies.append(time.perf_counter() - planned)
            codes[code] = codes.get(code, 0) + 1
            sent += 1
    finally:
        writer.close()
    return sent


async def mllp_run(port: int, total_rate: float | None, seconds: float, first: int,
                   ) -> tuple[int, float, list[float], dict[str, int]]:
    latencies: list[float] = []
    codes: dict[str, int] = {}
    start = time.perf_counter() + 0.2
    per_connection = int(total_rate * seconds / CONNECTIONS) if total_rate else 10**9
    interval = CONNECTIONS / total_rate if total_rate else None
    deadline = start + seconds + (5.0 if total_rate else 0.0)
    counts = await asyncio.gather(*(
        mllp_connection(port, first + c * 10**6, per_connection, interval, start, latencies, codes, deadline)
        for c in range(CONNECTIONS)))
    return sum(counts), time.perf_counter() - start, latencies, codes


def fhir_paced(base: str, pki: tlsgen.DemoPki, rate: float, seconds: float) -> tuple[list[float], dict[int, int]]:
    client = pki.clients["RR8"]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    with httpx.Client(verify=tls_context(pki.ca.cert, client.cert, client.key), timeout=30,
                      headers={"Content-Type": "application/fhir+json"}) as http:
        start = time.perf_counter() + 0.2
        for i in range(int(rate * seconds)):
            planned = start + i / rate
            delay = planned - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            response = http.post(f"{base}/$process-message",
                                 content=body(notification(bundle_id=f"bench-{i}", visit=f"FV-{i}")))
            latencies.append(time.perf_counter() - planned)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    return latencies, statuses


async def fhir_flood(base: str, pki: tlsgen.DemoPki, seconds: float) -> tuple[int, float, dict[int, int]]:
    client = pki.clients["RR8"]
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def one(c: int) -> int:
        done = 0
        async with httpx.AsyncClient(verify=tls_context(pki.ca.cert, client.cert, client.key), timeout=30,
                                     headers={"Content-Type": "application/fhir+json"}) as http:
            while time.perf_counter() < deadline:
                response = await http.post(f"{base}/$process-message", content=body(
                    notification(bundle_id=f"flood-{c}-{done}", visit=f"FF-{c}-{done}")))
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                done += 1
        return done

    start = time.perf_counter()
    total = sum(await asyncio.gather(*(one(c) for c in range(CONNECTIONS))))
    return total, time.perf_counter() - start, statuses


def measured(worker: Worker, run: Callable[[], tuple[int, float]]) -> tuple[int, float, float]:
    before = cpu_seconds(worker.pid)
    count, elapsed = run()
    return count, elapsed, cpu_seconds(worker.pid) - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--rates", default="100,1000", help="paced MLLP rates, messages/s over 10 connections")
    parser.add_argument("--fhir-rate", type=float, default=50.0, help="paced FHIR notifications per second")
    args = parser.parse_args()
    print("command: " + shlex.join([sys.executable, *sys.argv]), flush=True)

    with tempfile.TemporaryDirectory(prefix="carehub-doors-") as tmp, \
            EmbeddedBroker(log_path=Path(tmp) / "tansu.log") as broker:
        hub = LocalHub(broker.bootstrap, Path(tmp) / "hub")
        hub.create_topics()
        pki = tlsgen.make_demo_pki(Path(tmp) / "pki", ["RR8"])
        senders = Path(tmp) / "senders.toml"
        senders.write_text(f'version = 1\n[senders.RR8]\nsector = "acute"\ntoken_sha256 = ["{hash_token("x")}"]\n')
        mllp_port, fhir_port = free_port(), free_port()
        try:
            mllp = hub.start("mllp", CAREHUB_MLLP_PORT=str(mllp_port), CAREHUB_LOG_LEVEL="warning")
            fhir = hub.start("fhir", CAREHUB_FHIR_PORT=str(fhir_port), CAREHUB_FHIR_TLS_CERT=str(pki.server.cert),
                             CAREHUB_FHIR_TLS_KEY=str(pki.server.key), CAREHUB_FHIR_CLIENT_CA=str(pki.ca.cert),
                             CAREHUB_FHIR_SENDERS_FILE=str(senders), CAREHUB_LOG_LEVEL="warning")
            hub.wait_listening(mllp_port)
            hub.wait_listening(fhir_port)
            asyncio.run(mllp_run(mllp_port, 200, 1.0, 9 * 10**8))  # warm-up: connections, producer, metadata

            def flood() -> tuple[int, float]:
                count, elapsed, _, codes = asyncio.run(mllp_run(mllp_port, None, args.seconds, 0))
                assert set(codes) <= {"AA"}, codes
                return count, elapsed

            count, elapsed, cpu = measured(mllp, flood)
            print(f"\nMLLP back to back, {CONNECTIONS} connections, {args.seconds:.0f} s: {count} ADT^A01 ACKed AA, "
                  f"{count / elapsed:,.0f} messages/s; mllp process CPU {cpu:.1f} s = "
                  f"{count / cpu:,.0f} messages per CPU-second", flush=True)

            for n, rate in enumerate(float(r) for r in args.rates.split(",")):
                sent, elapsed, latencies, codes = asyncio.run(mllp_run(mllp_port, rate, args.seconds,
                                                                       (n + 1) * 10**8))
                ms = [x * 1000 for x in latencies]
                print(f"MLLP paced {rate:,.0f}/s over {CONNECTIONS} connections, {args.seconds:.0f} s: {sent} sent "
                      f"({sent / elapsed:,.0f}/s achieved), ACK codes {codes}; ACK latency p50 "
                      f"{percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms",
                      flush=True)

            base = f"https://127.0.0.1:{fhir_port}/fhir"
            latencies, statuses = fhir_paced(base, pki, args.fhir_rate, args.seconds)
            ms = [x * 1000 for x in latencies]
            print(f"\nFHIR $process-message paced {args.fhir_rate:.0f}/s, one keep-alive mTLS connection, "
                  f"{args.seconds:.0f} s: statuses {statuses}; latency p50 {percentile(ms, 0.5):.1f} ms, "
                  f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms",
                  flush=True)
            before = cpu_seconds(fhir.pid)
            total, elapsed, statuses = asyncio.run(fhir_flood(base, pki, args.seconds))
            cpu = cpu_seconds(fhir.pid) - before
            print(f"FHIR $process-message back to back, {CONNECTIONS} connections, {args.seconds:.0f} s: "
                  f"statuses {statuses}; {total / elapsed:,.0f} Bundles/s; fhir process CPU {cpu:.1f} s = "
                  f"{total / cpu:,.0f} Bundles per CPU-second", flush=True)
        finally:
            hub.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
