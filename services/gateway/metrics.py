"""Prometheus metrics of the partner gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SUBSCRIBERS = Gauge("carehub_gateway_subscribers", "Alert subscriptions open")
SUBSCRIBERS_NOW = Gauge("carehub_gateway_subscribers_registered", "Live alert subscribers registered with the log")
DELIVERED = Counter("carehub_gateway_alerts_delivered_total", "Alerts written to a partner's stream", ["rule"])
DELIVERY_SECONDS = Histogram(
    "carehub_gateway_delivery_seconds", "From the alert being raised to its delivery on a partner's stream",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
BEHIND = Counter("carehub_gateway_subscribers_behind_total", "Subscribers told to resume after their buffer filled")
REFUSED = Counter("carehub_gateway_refused_total", "Calls refused for want of a valid identity", ["call"])
ACKS = Counter("carehub_gateway_acknowledgements_total", "Acknowledgements recorded", ["status"])
ACK_SECONDS = Histogram(
    "carehub_gateway_acknowledgement_seconds", "From an alert being raised to its acknowledgement",
    ["status"], buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600),
)
ALERTS_HELD = Gauge("carehub_gateway_alerts_held", "Alerts held from the retained log")
CASELISTS_SERVED = Counter("carehub_gateway_caselists_served_total",
                           "Case lists sent to partners (GetCaseList answers and WatchCaseList messages)")
REVIEW_PACKS_SERVED = Counter("carehub_gateway_review_packs_served_total", "Review packs sent to practices")
REVIEW_OUTCOMES = Counter("carehub_gateway_review_outcomes_total", "Review outcomes recorded, and refused (invalid, "
                          "or not the caller's pack)", ["result"])
# FHIR delivery (services/gateway/fhir_delivery.py), per FHIR partner
FHIR_ATTEMPTS = Counter("carehub_gateway_fhir_attempts_total", "FHIR notification POSTs to partners, by what came "
                        "of each: delivered (2xx), transient (retried) or permanent (refused)", ["partner", "outcome"])
FHIR_DEAD_LETTERS = Counter("carehub_gateway_fhir_dead_letters_total", "Alerts a FHIR partner did not take, "
                            "dead-lettered: rejected (a permanent answer), gave_up (retried too long) or "
                            "unreadable", ["partner", "reason"])
FHIR_LAG = Gauge("carehub_gateway_fhir_delivery_lag_seconds", "Age of the alert a FHIR partner's delivery loop is "
                 "working on (from being raised); 0 when it has none in hand", ["partner"])
FHIR_DELIVERY_SECONDS = Histogram(
    "carehub_gateway_fhir_delivery_seconds", "From an alert being raised to a FHIR partner's 2xx",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600, 6 * 3600, 24 * 3600),
)
