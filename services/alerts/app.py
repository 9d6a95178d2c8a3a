"""The alert worker: timeline events and indicator signals in, alerts to partners out.

It reads ``carehub.timeline.events`` (``TimelineBatch`` records, partitioned by person id) and
keeps each person's ``AlertState`` in the faust table ``alerts-persons``, co-partitioned with
it. Alerts go to ``carehub.alerts``, one record per alert keyed by the recipient organisation,
so each partner's alerts are in order on one partition: that log is what the gateway serves and
what a partner's resume cursor points into. Alerts are written before the state that records
them, so a crash can repeat an alert (with the same id) but never lose one.

Follow-up clocks run on event time: each partition's clock is the newest event time it has
seen, and an index of the earliest due follow-up per person (rebuilt from the table after an
assignment) says whose clocks to look at. Indicator signals (``carehub.indicators.signals``)
have an agent of their own; they carry no person.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import MutableMapping
from typing import Any

import faust
from opentelemetry import trace

from carehub.domain.alert_evaluation import AlertEngine
from carehub.domain.alert_rules import load_rules
from carehub.domain.timeline import ns
from carehub.kafka.batching import target_partition
from carehub.runtime.stage import Batch, StageRuntime
from carehub.settings import Settings
from carehub.telemetry import continue_trace, tracing_enabled
from carehub.topics import alerts_topic, indicator_signals_topic, timeline_topic
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import timeline_pb2 as tl

from . import metrics as m

log = logging.getLogger(__name__)
tracer = trace.get_tracer("carehub.alerts")
APP_SUFFIX = "alerts"
TABLE = "alerts-persons"


class Alerts:
    def __init__(self, settings: Settings, persons: MutableMapping[str, Any], out: Any, engine: AlertEngine) -> None:
        self.settings = settings
        self.persons = persons
        self.out = out
        self.engine = engine
        self.clock: dict[int, int] = {}                 # partition -> newest event time (ns)
        self.due: dict[int, dict[str, int]] = {}        # partition -> person -> earliest due (ns)
        self.tracing = tracing_enabled()
        self.source_topic = timeline_topic(settings)

    def forget_partitions(self, topic_partitions: set[str]) -> None:
        for tp in topic_partitions:
            p = int(tp.rsplit(":", 1)[1])
            self.due.pop(p, None)
            self.clock.pop(p, None)

    def _index(self, partitions: set[int]) -> None:
        missing = {p for p in partitions if p not in self.due}
        if not missing:
            return
        for p in missing:
            self.due[p] = {}
        for person_id, raw in self.persons.items():
            p = target_partition(person_id, self.settings.partitions)
            if p in missing and raw:
                due = self.engine.next_due(al.AlertState.FromString(raw))
                if due is not None:
                    self.due[p][person_id] = due

    def load(self, person_id: str) -> al.AlertState:
        raw = self.persons.get(person_id)
        return al.AlertState.FromString(raw) if raw else al.AlertState()

    def apply_records(self, values: list[tuple[int, bytes]], now_ns: int,
                      ) -> tuple[list[al.Alert], dict[int, dict[str, al.AlertState]]]:
        """(alerts to send, changed states by source partition) for (partition, TimelineBatch bytes)."""
        states: dict[str, al.AlertState] = {}
        changed: dict[int, dict[str, al.AlertState]] = {}
        alerts: list[al.Alert] = []
        self._index({p for p, _ in values})
        for partition, value in values:
            for event in tl.TimelineBatch.FromString(value).events:
                person_id = event.linked.person_id
                state = states.get(person_id)
                if state is None:
                    state = states[person_id] = self.load(person_id)
                before = state.SerializeToString(deterministic=True)
                accepted = event.linked.event
                with (continue_trace(tracer, "alerts", accepted.trace_context, self.source_topic, partition,
                                     accepted.event_id) if self.tracing else contextlib.nullcontext()):
                    alerts += self.engine.on_event(state, person_id, event, now_ns)
                t = ns(event.linked.event.event_time)
                self.clock[partition] = max(self.clock.get(partition, 0), t)
                if state.SerializeToString(deterministic=True) != before:
                    changed.setdefault(partition, {})[person_id] = state
                    self._note_due(partition, person_id, state)
        for partition in {p for p, _ in values}:
            clock = self.clock.get(partition, 0)
            for person_id in [pid for pid, due in self.due.get(partition, {}).items() if due <= clock]:
                state = states.get(person_id) or self.load(person_id)
                states[person_id] = state
                alerts += self.engine.expire(state, person_id, clock, now_ns)
                m.OVERDUE_CHECKED.inc()
                changed.setdefault(partition, {})[person_id] = state
                self._note_due(partition, person_id, state)
        return alerts, changed

    def _note_due(self, partition: int, person_id: str, state: al.AlertState) -> None:
        due = self.engine.next_due(state)
        index = self.due.setdefault(partition, {})
        if due is None:
            index.pop(person_id, None)
        else:
            index[person_id] = due

    async def process_batch(self, batch: Batch) -> None:
        started = time.perf_counter()
        values = [(record.partition, record.value) for record in batch]
        alerts, changed = self.apply_records(values, time.time_ns())
        await self.send(alerts)
        for partition, states in changed.items():
            with batch.state_for(self.source_topic, partition):
                for person_id, state in states.items():
                    self.persons[person_id] = state.SerializeToString()
        m.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def send(self, alerts: list[al.Alert]) -> None:
        futures = []
        for alert in alerts:
            futures.append(await self.out.send(key=alert.recipient_org.encode(), value=alert.SerializeToString()))
            m.ALERTS.labels(alert.rule, al.AlertKind.Name(alert.kind), alert.recipient_role).inc()
        for future in futures:
            await future


class Signals:
    def __init__(self, alerts: Alerts) -> None:
        self.alerts = alerts

    async def process_batch(self, batch: Batch) -> None:
        out: list[al.Alert] = []
        for record in batch:
            signal = ind.IndicatorSignal.FromString(record.value)
            out += self.alerts.engine.on_signal(signal.value, time.time_ns())
        await self.alerts.send(out)


def build_app(settings: Settings, bootstrap: str) -> faust.App:
    runtime = StageRuntime(APP_SUFFIX, settings, bootstrap)
    persons = runtime.table(TABLE, partitions=settings.partitions, value_type=bytes)
    engine = AlertEngine(load_rules(definitions=settings.indicator_definitions), settings.alerts_involved_within_days)
    alerts = Alerts(settings, persons, runtime.topic(alerts_topic(settings)), engine)
    runtime.batch_stage("alerts", [timeline_topic(settings)], alerts, settings.ingest_batch_size,
                        settings.ingest_batch_within_s)
    runtime.batch_stage("signals", [indicator_signals_topic(settings)], Signals(alerts), 100, 0.5)
    runtime.forget_on_revoke(alerts)
    app = runtime.app
    app.carehub_alerts = alerts  # type: ignore[attr-defined]
    return app
