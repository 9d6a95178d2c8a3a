"""How well the risk model predicts an emergency admission in the next 90 days: a script, not a test.

    python bench/risk_eval.py                          # 50,000 people, seed 42
    python bench/risk_eval.py --seed 7 --people 10000

Prints the command line, then the AUC (Mann-Whitney) with its 95% interval, the AUC of two
one-factor baselines, a calibration table by tier and one by segment. Reference figures:
docs/risk.md. Nothing here tunes the model: the packaged model is loaded as shipped.

Definitions.
- The synthetic region is generated for one year plus the model's horizon (455 days for 90);
  the cut-off is the first instant after the first year, so every person has a full year of
  history before it.
- Factors: from the events a hub would hold at the cut-off (recorded and happened before it),
  linked by the region's true identities, applied in publish order to each person's timeline
  (carehub/domain/timeline.py). Each enriched event also updates the person's factor state
  incrementally (carehub/domain/risk/state.py ``advance``); the script checks that this equals
  the state projected from the final timeline and reports the count of differences.
- Population: everyone the hub knows and does not know to have died at the cut-off.
- Outcome: an emergency admission (admission method emergency, not cancelled, any provider)
  in the region's ground truth, admitted in the horizon after the cut-off.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from carehub.domain.pseudonymise import age_on  # noqa: E402
from carehub.domain.risk import (  # noqa: E402
    Assessment,
    FactorState,
    advance,
    assess,
    auc,
    auc_interval,
    calibration,
    calibration_line,
    factor_state,
    load_model,
    tier_cutoffs,
    tier_of,
)
from carehub.domain.timeline import PersonState, apply  # noqa: E402
from carehub.synthetic import KIND_VALID, Region, RegionConfig, decode, generate_region  # noqa: E402
from carehub.v1 import care_event_pb2 as ce  # noqa: E402
from carehub.v1 import identity_pb2 as idn  # noqa: E402
from carehub.v1 import ingest_pb2 as ing  # noqa: E402

HISTORY_DAYS = 365


def accepted(event: ce.CareEvent) -> ing.AcceptedEvent:
    """The event as ingest would pass it on: same fields, the person reduced to local id, age and sex."""
    person = event.person
    bare = ce.CareEvent()
    bare.CopyFrom(event)
    bare.ClearField("person")
    out = ing.AcceptedEvent.FromString(bare.SerializeToString())  # fields 1-14 and 20 share numbers and types
    out.person.local_id, out.person.sex = person.local_id, person.sex
    day = datetime.fromtimestamp(event.event_time.seconds, UTC).date()
    out.person.age_years = age_on(datetime.fromisoformat(person.birth_date).date(), day) if person.birth_date else -1
    return out


def timelines(region: Region, cutoff: datetime) -> tuple[dict[str, PersonState], dict[str, FactorState], int]:
    """Every person's timeline and incrementally kept factor state from the events known at ``cutoff``."""
    states: dict[str, PersonState] = {}
    factors: dict[str, FactorState] = defaultdict(FactorState)
    limit = int(cutoff.timestamp())
    used = 0
    for sequence, record in enumerate(region.records):
        if record.kind != KIND_VALID or record.publish_time >= cutoff:
            continue
        event = decode(record)
        if event.event_time.seconds >= limit:
            continue
        person_id = str(region.truth[(event.source_org, event.person.local_id)])
        linked = idn.LinkedEvent(person_id=person_id, link_sequence=sequence)
        linked.event.CopyFrom(accepted(event))
        state = states.get(person_id)
        if state is None:
            state = states[person_id] = PersonState.new(person_id)
        out = apply(state, linked)
        used += 1
        if out is not None:
            updated = advance(factors[person_id], out)
            factors[person_id] = updated if updated is not None else factor_state(state.timeline)
    return states, dict(factors), used


def outcomes(region: Region, cutoff: datetime, horizon_days: int) -> set[str]:
    start = int(cutoff.timestamp())
    end = start + horizon_days * 86_400
    return {str(s.person) for s in region.spells
            if s.method == ce.ADMISSION_METHOD_EMERGENCY and not s.cancelled and start <= s.admitted < end}


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--people", type=int, default=50_000)
    args = parser.parse_args()
    print("$ " + shlex.join(["python", "bench/risk_eval.py", *sys.argv[1:]]))
    t0 = time.perf_counter()
    model = load_model()
    horizon = model.horizon_days
    config = RegionConfig(people=args.people, seed=args.seed, days=HISTORY_DAYS + horizon)
    region = generate_region(config)
    cutoff = datetime.combine(config.start_date, datetime.min.time(), UTC) + timedelta(days=HISTORY_DAYS)
    states, incremental, used = timelines(region, cutoff)
    differ = sum(1 for pid, state in states.items() if incremental[pid] != factor_state(state.timeline))
    admitted = outcomes(region, cutoff, horizon)

    assessed: dict[str, Assessment] = {}
    for pid, state in states.items():
        if state.timeline.HasField("died_at"):
            continue
        assessed[pid] = assess(incremental[pid], cutoff, model)
    ids = sorted(assessed, key=int)
    risks = [assessed[p].risk for p in ids]
    outcome = [p in admitted for p in ids]
    positives = sum(outcome)
    cutoffs = tier_cutoffs((assessed[p].score for p in ids), model)
    tiers = {p: tier_of(assessed[p].score, cutoffs) for p in ids}

    print(f"model {model.label} (digest {model.digest}); outcome: {model.outcome} within {horizon} days")
    print(f"synthetic region: {args.people:,} people, seed {args.seed}, {config.days} days from {config.start_date}; "
          f"cut-off {cutoff.date()} ({HISTORY_DAYS} days of history before it)")
    print(f"  {used:,} events known at the cut-off applied to {len(states):,} timelines; incremental factor state "
          f"differs from recomputation for {differ} persons")
    print(f"  population: {len(ids):,} people alive at the cut-off; {positives:,} ({percent(positives / len(ids))}) "
          f"had an emergency admission in the {horizon} days after it")
    value = auc(risks, outcome)
    low, high = auc_interval(value, positives, len(ids) - positives)
    print(f"AUC {value:.3f} (95% CI {low:.3f}-{high:.3f}, Hanley-McNeil)")
    for factor in ("age", "emergency_admissions"):
        alone = auc([assessed[p].factors.values[factor] for p in ids], outcome)
        print(f"  baseline, {factor} alone: AUC {alone:.3f}")
    mean_risk = sum(risks) / len(risks)
    print(f"calibration in the large: mean predicted {percent(mean_risk)}, observed {percent(positives / len(ids))}")
    intercept, slope = calibration_line(risks, outcome)
    print(f"calibration line (logit of outcome on logit of predicted risk): intercept {intercept:.2f}, "
          f"slope {slope:.2f} (perfect: 0, 1)")

    print(f"\nby tier (cut-offs over {cutoffs.population:,} scores):")
    print(f"  {'tier':<10} {'score >':>8} {'people':>8} {'predicted':>10} {'observed':>9} {'rate':>7} {'of all':>7}")
    bounds = dict(cutoffs.bounds)
    for row in calibration(((tiers[p], assessed[p].risk, p in admitted) for p in ids), [t.name for t in model.tiers]):
        bound = bounds[row.group]
        print(f"  {row.group:<10} {('-' if bound is None else f'{bound:.2f}'):>8} {row.people:>8,} "
              f"{percent(row.predicted):>10} {row.observed:>9,} {percent(row.observed_rate):>7} "
              f"{percent(row.share_of_outcomes):>7}")
    print("\nby segment:")
    print(f"  {'segment':<21} {'people':>8} {'predicted':>10} {'observed':>9} {'rate':>7} {'of all':>7}")
    for row in calibration(((assessed[p].segment, assessed[p].risk, p in admitted) for p in ids),
                           [s.name for s in model.segments]):
        print(f"  {row.group:<21} {row.people:>8,} {percent(row.predicted):>10} {row.observed:>9,} "
              f"{percent(row.observed_rate):>7} {percent(row.share_of_outcomes):>7}")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
