"""The gateway's audit trail: who saw or did what, when (topic ``carehub.audit``, keyed by organisation).

Every gRPC delivery, acknowledgement and refusal, and every FHIR delivery attempt, goes through
:class:`Audit`, so the trail has one shape whichever way an alert reached a partner.

A record is on the broker (acknowledged) before ``write`` returns, so before the alert it
records leaves: a gateway killed at any moment has delivered nothing it has not audited
(``make chaos`` checks every delivery against the trail).
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaProducer

from carehub.v1 import alerts_pb2 as al


class Audit:
    def __init__(self, producer: AIOKafkaProducer | None, topic: str) -> None:
        self.producer, self.topic = producer, topic

    async def write(self, org: str, action: str, alert_id: str = "", trace_id: str = "", detail: str = "") -> None:
        record = al.AuditRecord(org=org, action=action, alert_id=alert_id, trace_id=trace_id, detail=detail)
        record.at.FromNanoseconds(time.time_ns())
        if self.producer is not None:
            await self.producer.send_and_wait(self.topic, key=org.encode(), value=record.SerializeToString())
