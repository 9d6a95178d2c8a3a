"""Reading review packs and outcomes back, and printing them: `carehub reviews` and the tests.

Operators read the topics (compacted packs, outcomes: the latest per pack wins); a practice
reads its own over the gateway (carehub/partner_cli.py). One printed form for both, so a pack
reads the same whichever way it came.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from google.protobuf import json_format

from carehub.display import day
from carehub.display import sector as sector_words
from carehub.kafka.profile import client_profile
from carehub.kafka.read import latest_by_key, read_to_end
from carehub.settings import Settings
from carehub.topics import review_outcomes_topic, review_packs_topic
from carehub.v1 import review_pb2 as rv

FOLLOW_UP = {rv.FOLLOW_UP_DONE: "followed up", rv.FOLLOW_UP_MISSED: "MISSED follow-up",
             rv.FOLLOW_UP_INTERRUPTED: "readmitted before the follow-up was due", rv.FOLLOW_UP_NOT_DUE: "died"}


def read_packs(bootstrap: str, settings: Settings, timeout_s: float = 60.0) -> dict[str, rv.ReviewPack]:
    """Every current pack, by pack id."""
    records = read_to_end(bootstrap, review_packs_topic(settings), timeout_s=timeout_s,
                          profile=client_profile(settings))
    return {key.decode(): rv.ReviewPack.FromString(r.value) for key, r in latest_by_key(records).items() if r.value}


def read_outcomes(bootstrap: str, settings: Settings, timeout_s: float = 60.0) -> dict[str, rv.ReviewOutcome]:
    """The latest outcome recorded for each pack, by pack id."""
    records = read_to_end(bootstrap, review_outcomes_topic(settings), timeout_s=timeout_s,
                          profile=client_profile(settings))
    out: dict[str, rv.ReviewOutcome] = {}
    for record in records:
        if record.value:
            outcome = rv.ReviewOutcome.FromString(record.value)
            held = out.get(outcome.pack_id)
            if held is None or outcome.recorded_at.ToNanoseconds() >= held.recorded_at.ToNanoseconds():
                out[outcome.pack_id] = outcome
    return out


def packs_of(packs: Mapping[str, rv.ReviewPack], outcomes: Mapping[str, rv.ReviewOutcome], org: str,
             ) -> list[rv.ReviewPack]:
    """``org``'s packs, newest admission first, each with its latest outcome (as the gateway serves them)."""
    out = []
    for pack in packs.values():
        if pack.practice == org:
            served = rv.ReviewPack()
            served.CopyFrom(pack)
            if pack.pack_id in outcomes:
                served.outcome.CopyFrom(outcomes[pack.pack_id])
            out.append(served)
    return sorted(out, key=lambda p: (-p.admission.admitted_at.ToNanoseconds(), p.pack_id))


def as_json(org: str, packs: Iterable[rv.ReviewPack]) -> str:
    return json.dumps({"org": org, "packs": [json_format.MessageToDict(p, preserving_proto_field_name=True)
                                             for p in packs]}, indent=2, sort_keys=True)




def pack_text(pack: rv.ReviewPack) -> str:
    a = pack.admission
    coded = "working diagnosis, provisional" if a.provisional else "coded"
    lines = [f"pack {pack.pack_id}  your record {pack.local_id}  admitted {day(a.admitted_at)} to {a.org} "
             f"(emergency), {a.primary_diagnosis} {a.condition.replace('_', ' ')} ({coded})"
             + (f", discharged {day(a.discharged_at)}" if a.discharged_at.seconds else ", in hospital")
             + (", died" if pack.deceased else "")]
    lines.append(f"  90 days from {day(pack.window_start)}: "
                 + (", ".join(f"{sector_words(s.sector)} {s.contacts} ({s.organisations} org)"
                              for s in pack.contacts_by_sector) or "no contacts recorded"))
    for c in pack.contacts:
        lines.append(f"    {day(c.at)}  {c.org:8} {sector_words(c.sector):13} {c.what}")
    lines.append(f"  ED attendances: {len(pack.ed_attendances)}"
                 + "".join(f"; {day(e.at)} {e.org}" for e in pack.ed_attendances))
    for d in pack.discharges:
        lines.append(f"  discharged {day(d.discharged_at)} by {d.org}: {FOLLOW_UP.get(d.follow_up, '?')}"
                     + (f" ({day(d.followed_up_at)} by {d.followed_up_by})" if d.followed_up_by else "")
                     + f" within {d.within_days} days")
    for move in pack.care_home_moves:
        lines.append(f"  care home: {day(move.at)} {move.org} {move.what}")
    lines.append(f"  social care: {len(pack.social_care)} events"
                 + "".join(f"; {day(s.at)} {s.org} {s.what}" for s in pack.social_care))
    if pack.care_plan_known:
        for plan in pack.care_plans:
            due = f"due {plan.review_due}" if plan.review_due else "due unknown"
            lines.append(f"  care plan: {plan.owner_org} ({plan.contact_role or 'no contact role'}) "
                         f"{day(plan.recorded_at)}, {due}{' OVERDUE at admission' if plan.overdue else ''}")
    else:
        lines.append("  care plan: none known (not 'no plan')")
    lines.append("  counts in: " + (", ".join(f"{c.indicator}{' (provisional)' if c.provisional else ''}"
                                              + ("" if c.how == "numerator" else f" [{c.how}]")
                                              for c in pack.counts_in) or "none"))
    lines.append(f"  selected: {pack.selection}")
    if pack.HasField("outcome"):
        o = pack.outcome
        lines.append(f"  OUTCOME {o.conference_date}: {o.verdict}; factors {', '.join(o.factors) or 'none'}"
                     + "".join(f"; action '{x.text}' owner {x.owner_org}{' due ' + x.due if x.due else ''}"
                               for x in o.actions))
    else:
        lines.append("  outcome: not recorded yet")
    return "\n".join(lines)


def table(org: str, packs: list[rv.ReviewPack]) -> str:
    head = f"review packs of {org}: {len(packs)} ({sum(not p.HasField('outcome') for p in packs)} without outcome)"
    return "\n\n".join([head, *(pack_text(p) for p in packs)])


def parse_action(text: str) -> rv.ReviewAction:
    """``TEXT@OWNER`` or ``TEXT@OWNER@YYYY-MM-DD`` as an agreed action."""
    parts = text.rsplit("@", 2)
    if len(parts) == 3 and len(parts[2]) == 10 and parts[2][4] == "-":
        return rv.ReviewAction(text=parts[0], owner_org=parts[1], due=parts[2])
    body, _, owner = text.rpartition("@")
    if not body:
        raise ValueError(f"an action is TEXT@OWNER[@YYYY-MM-DD], got {text!r}")
    return rv.ReviewAction(text=body, owner_org=owner)


def learning_table(learning: rv.ReviewLearning) -> str:
    lines = [f"shared learning ({learning.taxonomy_version}); counts 1-{learning.suppression_max} withheld as *"]
    for cell in learning.cells:
        count = "*" if cell.withheld else str(cell.count)
        lines.append(f"  {cell.unit:18} {cell.item:32} {count:>5} of {cell.reviewed or '*'} reviewed  {cell.title}")
    return "\n".join(lines)
