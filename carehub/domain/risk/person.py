"""One person as the population stage keeps them: factor state and addressees, event by event.

Pure: a ``PopulationPerson`` (protos/carehub/v1/risk.proto) and one enriched timeline event
in, the same person after it; a person and a moment in, the assessment to publish. The stage
(services/population) owns the table, the clocks and the sending.

Merges: :func:`~carehub.domain.risk.state.advance` cannot follow an identity merge or
un-merge, which moves history between persons that no single event carries. The timeline
therefore sends its merge and un-merge events with the person's whole timeline after them
(``TimelineEvent.timeline``), and the state is recomputed from it with
:func:`~carehub.domain.risk.state.factor_state`. A consumer of the timeline topic has no other
way to the full timeline: the timeline's table is another service's state. An event without
it (from a timeline worker older than this field) leaves the state as it was and says so
(:data:`UNRESOLVED`).
"""

from __future__ import annotations

from datetime import datetime

from carehub.domain.risk.model import RiskModel
from carehub.domain.risk.records import assessment_record, cutoffs_of, record_digest, state_of, state_record
from carehub.domain.risk.score import assess
from carehub.domain.risk.state import FactorState, advance, factor_state
from carehub.domain.risk.tiers import tier_of
from carehub.v1 import risk_pb2 as rk
from carehub.v1 import timeline_pb2 as tl

# What taking one event did to the factor state
APPLIED = "applied"            # advanced by the event
RECOMPUTED = "recomputed"      # a merge or un-merge: recomputed from the timeline it carried
ABSORBED = "absorbed"          # merged into another person: nothing more is published for this one
UNRESOLVED = "unresolved"      # a merge without the timeline: the state is left as it was


def take(person: rk.PopulationPerson, event: tl.TimelineEvent, state: FactorState | None = None,
         ) -> tuple[str, FactorState]:
    """Apply one enriched timeline event to ``person`` (in place): which of the outcomes above, and the state.

    ``state`` is the person's factor state if the caller holds it already (``person.factors``
    read back); the new one is written to ``person.factors`` only by :func:`keep`, so a stage
    taking several events of one person converts it once.
    """
    state = state if state is not None else state_of(person.factors)
    updated = advance(state, event)
    outcome = APPLIED
    if updated is None:
        if not event.HasField("timeline"):
            updated, outcome = state, UNRESOLVED
        elif event.timeline.merged_into:
            person.merged_into = event.timeline.merged_into
            return ABSORBED, FactorState()
        else:
            updated, outcome = factor_state(event.timeline), RECOMPUTED
    person.merged_into = ""
    view = event.view
    person.registered_practice = view.registered_practice
    person.locality = view.locality
    del person.local_records[:]
    person.local_records.extend(view.local_records)
    person.involvement.clear()
    for org, involvement in view.involvement.items():
        person.involvement[org].CopyFrom(involvement)
    person.care_plans.clear()
    for org, plan in view.care_plans.items():
        person.care_plans[org].CopyFrom(plan)
    person.direct_care_opt_out = view.direct_care_opt_out
    person.planning_opt_out = view.planning_opt_out
    return outcome, updated


def keep(person: rk.PopulationPerson, state: FactorState) -> rk.PopulationPerson:
    """``person`` with ``state`` as its factor state (in place), ready to be written."""
    person.factors.CopyFrom(state_record(state))
    return person


def made_with(cutoffs: rk.RiskCutoffs | None, model: RiskModel) -> bool:
    """Were ``cutoffs`` computed over scores of ``model`` (label and digest)? Others place nothing."""
    return (cutoffs is not None and bool(cutoffs.bounds)
            and (cutoffs.model, cutoffs.digest) == (model.label, model.digest))


def placed(score: float, model: RiskModel, cutoffs: rk.RiskCutoffs | None) -> str:
    """The tier of ``score`` against ``cutoffs``; "" when there are none made with this model."""
    if cutoffs is None or not made_with(cutoffs, model):
        return ""
    return tier_of(score, cutoffs_of(cutoffs))


def assessment(person_id: str, person: rk.PopulationPerson, as_of: datetime, model: RiskModel,
               cutoffs: rk.RiskCutoffs | None, state: FactorState | None = None) -> rk.RiskAssessment | None:
    """The person's assessment as of ``as_of``, as published; None for a person merged into another.

    ``state``: the person's factor state when the caller holds it (else ``person.factors``).
    """
    if person.merged_into:
        return None
    state = state if state is not None else state_of(person.factors)
    made = assess(state, as_of, model)
    return assessment_record(person_id, made, model, person, state.deceased, placed(made.score, model, cutoffs),
                             cutoffs)


def changed(person: rk.PopulationPerson, record: rk.RiskAssessment | None) -> bool:
    """Does ``record`` say something the last publication for ``person`` did not?"""
    if record is None:
        return bool(person.published)  # a tombstone, once
    return record_digest(record) != person.published


def note_published(person: rk.PopulationPerson, record: rk.RiskAssessment | None) -> None:
    if record is None:
        person.published, person.score, person.tier, person.as_of_ns = b"", 0.0, "", 0
        return
    person.published = record_digest(record)
    person.score, person.tier = record.score, record.tier
    person.as_of_ns = record.as_of.ToNanoseconds()
