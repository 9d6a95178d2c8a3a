"""The topics carehub owns, with their partition counts and configs, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from carehub.kafka.profile import MAX_RECORD_BYTES
from carehub.settings import Settings

DAY_MS = 24 * 3600 * 1000
# Linkage decides one record at a time against everyone known: one ordered log makes those
# decisions deterministic and gives consent changes a well-defined "from the next event on".
ACCEPTED_PARTITIONS = 1


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    replication: int = 1


def accepted_topic(settings: Settings) -> str:
    return settings.topic("ingest.accepted")


def deadletter_topic(settings: Settings) -> str:
    return settings.topic("ingest.deadletter")


def replayed_topic(settings: Settings) -> str:
    """Which dead letters were already replayed, so `carehub dlq replay` replays each once."""
    return settings.topic("ingest.deadletter.replayed")


def linked_topic(settings: Settings) -> str:
    return settings.topic("identity.linked")


def review_topic(settings: Settings) -> str:
    """Identity review items, keyed by review id; an item decided at the desk is written again (compacted)."""
    return settings.topic("identity.review")


def registry_topic(settings: Settings) -> str:
    return settings.topic("identity.registry")


def timeline_topic(settings: Settings) -> str:
    return settings.topic("timeline.events")


def timeline_handover_topic(settings: Settings) -> str:
    """A merged-away person's timeline, on its way to the person it joined (or back)."""
    return settings.topic("timeline.handover")


def indicator_partials_topic(settings: Settings) -> str:
    """Counts per timeline partition, absolute values (carehub/domain/indicator_counts.py)."""
    return settings.topic("indicators.partials")


def indicators_topic(settings: Settings) -> str:
    """The published indicator values: latest per indicator x unit x window (compacted)."""
    return settings.topic("indicators")


def indicator_signals_topic(settings: Settings) -> str:
    """Units outside the 99.8% funnel limits, for the alert stage."""
    return settings.topic("indicators.signals")


def risk_assessments_topic(settings: Settings) -> str:
    """Each person's current risk assessment (compacted, key = person id; services/population)."""
    return settings.topic("risk.assessments")


def risk_cutoffs_topic(settings: Settings) -> str:
    """The tier cut-offs over the population's scores (compacted, key = model id; services/caselists)."""
    return settings.topic("risk.cutoffs")


def caselists_topic(settings: Settings) -> str:
    """Each organisation's case-finding list (compacted, key = organisation; services/caselists)."""
    return settings.topic("caselists")


def review_packs_topic(settings: Settings) -> str:
    """Avoidable-admission review packs (compacted, key = pack id; services/reviews)."""
    return settings.topic("review.packs")


def review_outcomes_topic(settings: Settings) -> str:
    """Case conferences' outcomes, recorded through the gateway (key = pack id; the latest wins)."""
    return settings.topic("review.outcomes")


def alerts_topic(settings: Settings) -> str:
    """Alerts, one record each, keyed by the recipient organisation (the gateway's log)."""
    return settings.topic("alerts")


def acks_topic(settings: Settings) -> str:
    return settings.topic("alerts.acks")


def audit_topic(settings: Settings) -> str:
    """Every delivery, acknowledgement and refusal, and every identity review decision: who, what, when, trace id."""
    return settings.topic("audit")


def hl7_raw_topic(settings: Settings) -> str:
    """Every HL7 v2 message the MLLP door received, as its bytes, before the ACK (services/mllp)."""
    return settings.topic("mllp.raw")


def quality_topic(settings: Settings) -> str:
    """Data-quality increments per sending organisation and day (QualityCounts, keyed by the organisation)."""
    return settings.topic("quality")


def fhir_raw_topic(settings: Settings) -> str:
    """Every FHIR Bundle the FHIR door accepted, as its bytes, before the 2xx (services/fhir)."""
    return settings.topic("fhir.raw")


def fhir_deadletter_topic(settings: Settings) -> str:
    """Alerts whose FHIR delivery gave up, with the partner and the last error (an operator replays)."""
    return settings.topic("fhir.delivery.deadletter")


def fhir_replayed_topic(settings: Settings) -> str:
    """Which FHIR dead letters were already replayed, so each is replayed once."""
    return settings.topic("fhir.delivery.replayed")


def topic_specs(settings: Settings) -> list[TopicSpec]:
    p, r = settings.partitions, settings.topic_replication_factor
    specs = [TopicSpec(t, p, replication=r) for t in settings.source_topics]
    specs += [
        TopicSpec(accepted_topic(settings), ACCEPTED_PARTITIONS, replication=r),
        TopicSpec(linked_topic(settings), p, replication=r),
        # the review desk's items, keyed by review id: the latest record is the item's state (raised,
        # then decided), kept while open however long a reviewer takes
        TopicSpec(review_topic(settings), 1, {"cleanup.policy": "compact"}, replication=r),
        TopicSpec(registry_topic(settings), 1, {"cleanup.policy": "compact"}, replication=r),
        TopicSpec(timeline_topic(settings), p, replication=r),
        TopicSpec(timeline_handover_topic(settings), p, replication=r),
        # read from the start by the aggregator: each partition's snapshot, then its changes
        TopicSpec(indicator_partials_topic(settings), 1, replication=r),
        TopicSpec(indicators_topic(settings), 1, {"cleanup.policy": "compact"}, replication=r),
        TopicSpec(indicator_signals_topic(settings), 1, replication=r),
        # partitioned by person id like the timeline; read whole, from the start, by the case lists
        TopicSpec(risk_assessments_topic(settings), p, {"cleanup.policy": "compact"}, replication=r),
        TopicSpec(risk_cutoffs_topic(settings), 1, {"cleanup.policy": "compact"}, replication=r),
        TopicSpec(caselists_topic(settings), 1, {"cleanup.policy": "compact"}, replication=r),
        # read whole, from the start, by the gateway; few records (selected ACSC admissions)
        TopicSpec(review_packs_topic(settings), 1, {"cleanup.policy": "compact"}, replication=r),
        # every outcome recorded is kept as long as the audit trail: it is a clinical governance record
        TopicSpec(review_outcomes_topic(settings), 1, {"retention.ms": str(settings.audit_retention_days * DAY_MS)},
                  replication=r),
        TopicSpec(alerts_topic(settings), p, {"retention.ms": str(settings.alerts_retention_days * DAY_MS)},
                  replication=r),
        TopicSpec(acks_topic(settings), 1, replication=r),
        TopicSpec(audit_topic(settings), 1, {"retention.ms": str(settings.audit_retention_days * DAY_MS)},
                  replication=r),
        # The one place raw input rests: bounded retention, see README "Dead letters".
        TopicSpec(
            deadletter_topic(settings),
            1,
            {"retention.ms": str(settings.deadletter_retention_days * DAY_MS),
             "max.message.bytes": str(MAX_RECORD_BYTES)},
            replication=r,
        ),
        TopicSpec(replayed_topic(settings), 1, {"cleanup.policy": "compact"}, replication=r),
        # Raw HL7 v2 as received (identifiers in clear, like the provider topics): bounded like the
        # dead letters; nothing downstream reads it, ingest reads the events mapped from it.
        TopicSpec(hl7_raw_topic(settings), 1, {"retention.ms": str(settings.deadletter_retention_days * DAY_MS)},
                  replication=r),
        TopicSpec(quality_topic(settings), 1, {"retention.ms": str(settings.quality_retention_days * DAY_MS)},
                  replication=r),
        TopicSpec(fhir_raw_topic(settings), 1, {"retention.ms": str(settings.deadletter_retention_days * DAY_MS)},
                  replication=r),
        TopicSpec(fhir_deadletter_topic(settings), 1,
                  {"retention.ms": str(settings.alerts_retention_days * DAY_MS)}, replication=r),
        TopicSpec(fhir_replayed_topic(settings), 1, {"cleanup.policy": "compact"}, replication=r),
    ]
    return specs
