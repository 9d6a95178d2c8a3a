"""The identity stage's per-event work at scale: a script, not a test.

    python bench/identity_scale.py                               # 100k, 1M and 2M known persons
    python bench/identity_scale.py --sizes 100000 --queries 2000  # a quick look

What is timed is ``Identity.link_one``, the whole per-event decision of the identity worker
(services/identity/app.py) over its table store, with plain dicts standing in for the faust
tables: known-record fast path or resolver, the registry and review entries, remembering the
record. Not timed: reading and writing Kafka, the batch's table write-back (``flush``, one
changelog record per touched key), faust. So this is the stage's own CPU per event, which bounds
how many events one identity worker can link per second, not the latency an event sees end to end
(bench/alerts_bench.py measures that).

Persons are drawn from Faker's en_GB name pools (as bench/identity_accuracy.py does), pseudonymised
with a random key, one local record each at organisation GP. The store is grown to each size by
the worker's own ``remember`` (not by ``link_one``: at 2M persons that would take an hour of
resolver calls that are measured at the smaller sizes anyway). At each size, ``--queries`` events
of each kind are linked, interleaved:

- known, unchanged: an event for a record the hub holds, demographics as held (most events);
- known, changed: the same record with a new address and postcode (a move);
- new record, known person: another organisation's record of a known person, one field mistyped
  or missing;
- new person: someone the hub has not seen.

Prints the command, then per size and kind the median, p99 and max in microseconds and the
outcomes, and the store's size; the goal (link p99 < 2 ms at 2M persons) with the ratio to it; and
how long a worker that has just recovered these tables takes to build its in-memory blocking index
and its map of each person's local records (over dicts: faust's table iteration is not in it).
Wall-clock times on a machine where other work may run: read the p99 as an upper figure.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from carehub.domain.pseudonymise import Pseudonymiser  # noqa: E402
from carehub.settings import load_settings  # noqa: E402
from carehub.v1 import care_event_pb2 as ce  # noqa: E402
from carehub.v1 import identity_pb2 as idn  # noqa: E402
from carehub.v1 import ingest_pb2 as ing  # noqa: E402
from services.identity.app import Identity  # noqa: E402
from services.identity.table_store import TABLES, TableStore  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from identity_accuracy import EVENT_DAY, PersonPool, _transpose, percentile  # noqa: E402

POOL_SEED = 20261205
GOAL_P99_US = 2_000.0  # issue: link p99 < 2 ms at 2M persons
KINDS = ("known, unchanged", "known, changed", "new record, known person", "new person")
OUTCOME_NAMES = {v: k.removeprefix("LINK_OUTCOME_").lower() for k, v in idn.LinkOutcome.items()}


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def event(org: str, person: ing.PseudonymisedPerson, n: int) -> ing.AcceptedEvent:
    return ing.AcceptedEvent(event_id=f"E{n}", source_org=org, event_type=ce.EVENT_TYPE_ED_ATTENDANCE, person=person)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", default="100000,1000000,2000000", help="known persons, comma-separated, ascending")
    ap.add_argument("--queries", type=int, default=5_000, help="events of each kind linked per size")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    print("$ " + shlex.join(["python", "bench/identity_scale.py", *sys.argv[1:]]), flush=True)
    key = os.urandom(32)
    settings = load_settings(pseudonym_key=key.hex())
    tables: dict[str, dict[str, object]] = {name: {} for name in (*TABLES, "dedupe", "reviews")}
    identity = Identity(settings, tables, linked=None, review=None, registry=None)
    store, linker = identity.store, identity.linker
    pool = PersonPool(POOL_SEED)
    rng = random.Random(POOL_SEED)
    known, n = 0, 0
    for size in sizes:
        t0 = time.perf_counter()
        while known < size:
            if known % 50_000 == 0:
                pz = Pseudonymiser(key)  # its bounded cache would otherwise fill with one-off persons
                print(f"  growing the store: {known:,} of {size:,} persons, {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr, flush=True)
            linker.remember("GP", pz.encode(pool.person(known, f"P{known}"), EVENT_DAY), f"person-{known}")
            known += 1
            if known % 10_000 == 0:
                store.flush()
        store.flush()
        build = time.perf_counter() - t0
        qpz = Pseudonymiser(key)
        batch: list[tuple[str, str, ing.PseudonymisedPerson]] = []
        for q in range(args.queries):
            i = rng.randrange(known)
            batch.append((KINDS[0], "GP", qpz.encode(pool.person(i, f"P{i}"), EVENT_DAY)))
            moved = pool.person(rng.randrange(known), f"P{i}")
            raw = pool.person(i, f"P{i}")
            raw.postcode, raw.address_line = moved.postcode, moved.address_line
            batch.append((KINDS[1], "GP", qpz.encode(raw, EVENT_DAY)))
            raw = pool.person(rng.randrange(known), f"H{size}-{q}")
            field = rng.choice(("given_name", "family_name", "address_line", "national_id"))
            setattr(raw, field, "" if field == "national_id" else _transpose(rng, getattr(raw, field)))
            batch.append((KINDS[2], "ED", qpz.encode(raw, EVENT_DAY)))
            batch.append((KINDS[3], "ED", qpz.encode(pool.person(90_000_000 + size + q, f"N{size}-{q}"), EVENT_DAY)))
        gc.collect()
        gc.freeze()  # the store is long-lived: out of the cyclic collector's way, as in the service
        times: dict[str, list[int]] = {k: [] for k in KINDS}
        outcomes: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
        for j, (kind, org, person) in enumerate(batch):
            n += 1
            ev = event(org, person, n)
            t1 = time.perf_counter_ns()
            linked, _review, _registry = identity.link_one(ev, n, n, 0)
            times[kind].append(time.perf_counter_ns() - t1)
            outcomes[kind][OUTCOME_NAMES[linked[0].outcome]] += 1
            if j % 400 == 399:
                store.flush()  # as the worker does once per batch
        store.flush()
        gc.unfreeze()
        print(f"{known:,} known persons (store grown in {build:.0f} s, process RSS {rss_gib():.1f} GiB):")
        for kind in KINDS:
            t = sorted(times[kind])
            tally = ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes[kind].items()))
            print(f"  {kind:<26} median {percentile(t, 0.5) / 1e3:7.1f} us  p99 {percentile(t, 0.99) / 1e3:7.1f} us"
                  f"  max {t[-1] / 1e3:8.1f} us   ({tally})")
        every = sorted(x for kind in KINDS for x in times[kind])
        p99 = percentile(every, 0.99) / 1e3
        print(f"  all kinds together: p99 {p99:.0f} us; goal p99 < {GOAL_P99_US:,.0f} us at 2M persons: "
              f"ratio {p99 / GOAL_P99_US:.2f} of the goal", flush=True)
        # what a worker does after recovering its tables, before its first decision: the blocking index
        # and each person's local records, built in memory from the keys and local tables
        fresh = TableStore({name: tables[name] for name in TABLES})
        t2 = time.perf_counter()
        fresh.block("")
        t3 = time.perf_counter()
        fresh.members("")
        t4 = time.perf_counter()
        print(f"  start-up: blocking index built in {t3 - t2:.1f} s, local records by person in {t4 - t3:.1f} s "
              f"(over dicts; faust tables add their own iteration), process RSS {rss_gib():.1f} GiB", flush=True)
        del fresh
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
