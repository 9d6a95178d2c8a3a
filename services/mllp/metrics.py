"""Prometheus metrics of the MLLP door (services/mllp)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("carehub_mllp_messages_total", "HL7 v2 messages received, by trigger event and ACK code",
                   ["trigger", "ack"])
EVENTS = Counter("carehub_mllp_events_total", "Care events mapped from HL7 v2 messages and written")
DEGRADED = Counter("carehub_mllp_degraded_total", "Fields of accepted messages that were imperfect, by field",
                   ["field"])
FRAMING = Counter("carehub_mllp_framing_errors_total",
                  "Frames that could not be read: garbage, over the size limit, idle connections", ["kind"])
CONNECTIONS = Gauge("carehub_mllp_connections", "Open MLLP connections")
ACK_SECONDS = Histogram("carehub_mllp_ack_seconds", "From a message's last byte to its ACK written",
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
WAITED = Counter("carehub_mllp_sender_waits_total",
                 "Messages that waited because their sending facility had every write slot in use")
