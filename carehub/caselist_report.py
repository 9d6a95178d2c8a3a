"""Reading the case lists and tier cut-offs back: `carehub caselist`, the population stage and the tests.

Both topics are compacted and read to the end the broker reports (carehub.kafka.read).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from google.protobuf import json_format

from carehub.display import day, moment
from carehub.kafka.profile import client_profile
from carehub.kafka.read import latest_by_key, read_to_end
from carehub.settings import Settings
from carehub.topics import caselists_topic, risk_cutoffs_topic
from carehub.v1 import risk_pb2 as rk


def read_lists(bootstrap: str, settings: Settings, timeout_s: float = 60.0) -> dict[str, rk.CaseList]:
    """Every organisation's latest published case list, by organisation."""
    records = read_to_end(bootstrap, caselists_topic(settings), timeout_s=timeout_s, profile=client_profile(settings))
    return {key.decode(): rk.CaseList.FromString(r.value) for key, r in latest_by_key(records).items() if r.value}


def read_cutoffs(bootstrap: str, settings: Settings, model_id: str, timeout_s: float = 60.0) -> rk.RiskCutoffs | None:
    """The latest tier cut-offs published for the risk model ``model_id`` (None: none yet)."""
    records = read_to_end(bootstrap, risk_cutoffs_topic(settings), timeout_s=timeout_s,
                          profile=client_profile(settings), keep=lambda r: r.key == model_id.encode())
    latest = latest_by_key(records).get(model_id.encode())
    return rk.RiskCutoffs.FromString(latest.value) if latest is not None and latest.value else None


def as_json(case_list: rk.CaseList) -> str:
    return json.dumps(json_format.MessageToDict(case_list, preserving_proto_field_name=True), indent=2,
                      sort_keys=True)




def _care_plan(status: rk.CarePlanStatus) -> str:
    """Owner (contact role), latest event, and the review: its date, OVERDUE once passed, or unknown."""
    if status.presence != rk.CARE_PLAN_PRESENCE_RECORDED:
        return "none received"
    if not status.HasField("due"):
        review = "due unknown"
    elif status.overdue:
        review = f"OVERDUE (due {day(status.due)})"
    else:
        review = f"due {day(status.due)}"
    contact = f" ({status.contact_role})" if status.contact_role else ""
    return f"{status.org}{contact} {day(status.recorded_at)}, {review}"


def _factors(factors: Iterable[rk.RiskFactor], limit: int = 4) -> str:
    shown = []
    for f in factors:
        if not f.scored or f.points <= 0:
            continue
        value = f"{f.value:g}" if f.factor != "frailty" else f"{f.value:.2f}"
        evidence = f" ({', '.join(f.evidence)})" if f.evidence else ""
        shown.append(f"{f.factor} {value}{evidence} +{f.points:g}")
        if len(shown) == limit:
            break
    return "; ".join(shown) or "-"


def table(case_list: rk.CaseList) -> str:
    """A plain text list for a person at the practice or team to read."""
    org = case_list.org
    if not case_list.entries:
        if not case_list.HasField("as_of"):
            return (f"{org}: no case list yet (is the population stage and the case-list service running, and "
                    "have events arrived?)")
        return f"{org}: nobody in the listed tiers ({', '.join(case_list.tiers)}) as of {moment(case_list.as_of)}"
    head = ("your record", "tier", "score", "risk", "segment", "listed since", "", "care plan", "factors behind it")
    rows = [head]
    for e in case_list.entries:
        rows.append((e.local_id, e.tier, f"{e.score:.2f}", f"{100 * e.risk:.1f}%", e.segment, day(e.listed_since),
                     "NEW" if e.new_this_week else "", _care_plan(e.care_plan), _factors(e.factors)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    population = case_list.cutoffs.population if case_list.HasField("cutoffs") else 0
    n = len(case_list.entries)
    first = (f"case list of {org}: {n} {'person' if n == 1 else 'people'} in tiers {', '.join(case_list.tiers)} "
             f"({case_list.new_this_week} new this week), as of {moment(case_list.as_of)}; model {case_list.model}; "
             f"tiers over {population:,} people")
    note = ("risk: the model's 90-day emergency admission risk, a ranking more than a probability (docs/risk.md); "
            "care plan: its owner (contact role), latest event and review date, OVERDUE once that day is before "
            "the as-of; 'none received' is not 'no plan'")
    return "\n".join([first, *lines, note])
