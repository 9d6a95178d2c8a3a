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
