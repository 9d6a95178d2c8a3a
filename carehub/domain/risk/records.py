"""The risk stage's records: a factor state as kept in a table, an assessment and cut-offs as published.

Why protobuf: the population stage keeps each person's :class:`FactorState` in a faust table
and publishes assessments and cut-offs on Kafka; like every other state and record in carehub
they are protobuf messages (protos/carehub/v1/risk.proto), so a reader in another process or
language reads them without this code. Conversions are exact: a state read back equals the
state written (tests/unit/test_population.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from datetime import datetime

from carehub.domain.risk.factors import as_ns
from carehub.domain.risk.model import RiskModel
from carehub.domain.risk.score import Assessment
from carehub.domain.risk.state import FactorState, SpellRecord
from carehub.domain.risk.tiers import TierCutoffs
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import risk_pb2 as rk
from carehub.v1 import timeline_pb2 as tl

# Teams whose case lists hold the people they have seen (carehub/domain/caselists.py)
TEAM_SECTORS = frozenset({ce.SECTOR_COMMUNITY, ce.SECTOR_SOCIAL_CARE})


def state_record(state: FactorState) -> rk.RiskFactorState:
    out = rk.RiskFactorState(cancelled=state.cancelled, age_years=state.age_years, care_home=state.care_home,
                             deceased=state.deceased)
    for (org, spell_id), s in state.spells.items():
        spell = out.spells.add(org=org, spell_id=spell_id, status=s.status, admission_method=s.method,
                               diagnoses=s.diagnoses, procedures=s.procedures)
        if s.admitted_ns is not None:
            spell.admitted_ns = s.admitted_ns
        if s.discharged_ns is not None:
            spell.discharged_ns = s.discharged_ns
    out.ed_attendances.extend(rk.KeyedTime(key=k, at_ns=t) for k, t in state.ed_attendances.items())
    out.contacts.extend(rk.KeyedTime(key=k, at_ns=t) for k, t in state.contacts.items())
    if state.age_at_ns is not None:
        out.age_at_ns = state.age_at_ns
    if state.social_care_last_ns is not None:
        out.social_care_last_ns = state.social_care_last_ns
    if state.newest_ns is not None:
        out.newest_ns = state.newest_ns
    return out


def state_of(record: rk.RiskFactorState) -> FactorState:
    def opt(message: rk.RiskFactorState | rk.RiskSpell, name: str) -> int | None:
        return int(getattr(message, name)) if message.HasField(name) else None  # type: ignore[arg-type]

    spells = {(s.org, s.spell_id): SpellRecord(status=s.status, admitted_ns=opt(s, "admitted_ns"),
                                               discharged_ns=opt(s, "discharged_ns"), method=s.admission_method,
                                               diagnoses=tuple(s.diagnoses), procedures=tuple(s.procedures))
              for s in record.spells}
    return FactorState(
        spells=spells,
        ed_attendances={k.key: k.at_ns for k in record.ed_attendances},
        contacts={k.key: k.at_ns for k in record.contacts},
        cancelled=tuple(record.cancelled),
        age_years=record.age_years,
        age_at_ns=opt(record, "age_at_ns"),
        care_home=record.care_home,
        deceased=record.deceased,
        social_care_last_ns=opt(record, "social_care_last_ns"),
        newest_ns=opt(record, "newest_ns"),
    )


def factor_lines(assessment: Assessment, model: RiskModel) -> list[rk.RiskFactor]:
    """The explanation as published: scored factors by points (most first), then the unscored ones."""
    lines = [rk.RiskFactor(factor=name, value=value, points=points, scored=True,
                           evidence=assessment.factors.evidence.get(name, ()))
             for name, value, points in assessment.explain()]
    scored = {c.factor for c in assessment.contributions}
    lines += [rk.RiskFactor(factor=f.name, value=assessment.factors.values[f.name], points=0.0, scored=False,
                            evidence=assessment.factors.evidence.get(f.name, ()))
              for f in model.factors if f.name not in scored]
    return lines


def assessment_record(person_id: str, assessment: Assessment, model: RiskModel, person: rk.PopulationPerson,
                      deceased: bool, tier: str, cutoffs: rk.RiskCutoffs | None) -> rk.RiskAssessment:
    """What is published for one person: the assessment, and who may list them (from ``person``).

    Only what the case lists need travels: the registered practice, the community and
    social-care teams that have seen the person (each one's last event, to the day, so that a
    contact does not make a new record every time), and those organisations' own record ids.
    A hospital's record id, or when the practice last saw the person, is not needed.
    """
    out = rk.RiskAssessment(
        person_id=person_id, model=assessment.model, digest=assessment.digest, score=assessment.score,
        risk=assessment.risk, segment=assessment.segment, tier=tier, factors=factor_lines(assessment, model),
        registered_practice=person.registered_practice, locality=person.locality,
        direct_care_opt_out=person.direct_care_opt_out, planning_opt_out=person.planning_opt_out, deceased=deceased)
    out.as_of.FromNanoseconds(as_ns(assessment.as_of))
    if cutoffs is not None and cutoffs.HasField("computed_at"):
        out.cutoffs_computed_at.CopyFrom(cutoffs.computed_at)
    listing = {person.registered_practice} if person.registered_practice else set()
    for org, involvement in sorted(person.involvement.items()):
        if involvement.sector in TEAM_SECTORS:
            listing.add(org)
            team = out.involvement[org]
            team.sector = involvement.sector
            team.last_event_at.FromSeconds(involvement.last_event_at.seconds // 86_400 * 86_400)
    out.local_records.extend(r for r in person.local_records if r.org in listing)
    for org, plan in person.care_plans.items():
        out.care_plans[org].CopyFrom(plan)
    return out


def record_digest(record: rk.RiskAssessment) -> bytes:
    """What an assessment says, without when it was made: equal digests need not be published again.

    The as-of moment moves with every day the hub sees; an assessment whose factors, score,
    tier and addressees did not change says nothing new.
    """
    copy = rk.RiskAssessment()
    copy.CopyFrom(record)
    copy.ClearField("as_of")
    copy.ClearField("assessed_at")
    copy.ClearField("cutoffs_computed_at")
    return hashlib.blake2b(copy.SerializeToString(deterministic=True), digest_size=16).digest()


def cutoffs_record(cutoffs: TierCutoffs, as_of_ns: int | None, computed_at: datetime) -> rk.RiskCutoffs:
    out = rk.RiskCutoffs(model=cutoffs.model, digest=cutoffs.digest, population=cutoffs.population)
    for name, bound in cutoffs.bounds:
        out.bounds.add(tier=name, above=math.inf if bound is None else bound, rest=bound is None)
    if as_of_ns is not None:
        out.as_of.FromNanoseconds(as_of_ns)
    out.computed_at.FromDatetime(computed_at)
    return out


def cutoffs_of(record: rk.RiskCutoffs) -> TierCutoffs:
    return TierCutoffs(model=record.model, digest=record.digest, population=record.population,
                       bounds=tuple((b.tier, None if b.rest else b.above) for b in record.bounds))


def local_ids(records: Iterable[tl.SeenRecord]) -> Mapping[str, str]:
    """Each organisation's record id for the person: the first seen, as the alerts name them."""
    out: dict[str, str] = {}
    for record in records:
        out.setdefault(record.org, record.local_id)
    return out
