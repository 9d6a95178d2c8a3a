"""The partner gateway: alerts, indicators and case lists to the organisations entitled to them, over gRPC.

``SubscribeAlerts`` sends the caller's alerts after its cursor, then live ones, with heartbeats.
The cursor is a position in ``carehub.alerts`` (partition:offset); alerts are keyed by the
recipient organisation, so one partner's alerts are one partition's records in order, and a
reconnect with the last cursor gets everything after it exactly once, whichever gateway
instance it reaches and however often it restarted. A subscriber whose buffer
(``CAREHUB_GATEWAY_SUBSCRIBER_BUFFER``) fills up is told to resume from its cursor, so a slow
or stuck partner never holds up anyone else.

``GetIndicators`` answers with the caller's entitled indicator values and, for the indicators in
them, the national reference values (carehub/domain/data/reference/national.toml: value if any,
status, period, source, definition, comparison), which are public.

``GetCaseList`` and ``WatchCaseList`` answer with the caller's own case-finding list
(``carehub.caselists``, written by services/caselists): the organisation comes from the
caller's certificate or token, never from the request, and a list names people only in that
organisation's record ids.

``ListIdentityReviews``, ``GetIdentityReview`` and ``DecideIdentityReview`` are the identity review
desk (carehub/identity_desk.py) for an identity team's own tool, open only to a partner whose entry
in the partners file has ``roles = ["identity_review"]``; anyone else is refused (PERMISSION_DENIED,
audited). A decision goes onto the linkage log like ``carehub review link / separate``, is audited
here (who, for which organisation, when, why) and again by the identity stage when applied.

``GetReviewPacks`` and ``WatchReviewPacks`` answer with the caller's own avoidable-admission
review packs (``carehub.review.packs``, written by services/reviews), each with the latest
outcome recorded;
``RecordReviewOutcome`` records a case conference's outcome for one of them, checked against the
review taxonomy, on ``carehub.review.outcomes``; ``GetReviewLearning`` counts the recorded outcomes
by practice, locality and region for the units the caller may see, small numbers withheld.

Every call is authenticated (services/gateway/auth.py) and answers only with what that
organisation may see; every delivery, acknowledgement, read of a case list and refusal is
written to ``carehub.audit``. The stock gRPC health and reflection services run beside it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from aiokafka import AIOKafkaProducer
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from opentelemetry.propagate import extract

from carehub import identity_desk as desk
from carehub.domain.caselists import only_new
from carehub.domain.reference_values import ReferenceValues, load_reference_values
from carehub.domain.review.learning import learning
from carehub.domain.review.outcomes import outcome_problems, outcome_record
from carehub.domain.review.taxonomy import Taxonomy, load_taxonomy
from carehub.fhir_deadletters import replay_of
from carehub.indicator_report import references_for
from carehub.kafka.profile import client_profile
from carehub.revocation import RevocationList
from carehub.runtime.health import HEALTH
from carehub.settings import Settings
from carehub.topics import (
    accepted_topic,
    acks_topic,
    alerts_topic,
    audit_topic,
    caselists_topic,
    indicators_topic,
    quality_topic,
    review_outcomes_topic,
    review_packs_topic,
    review_topic,
)
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import identity_review_pb2 as rvw
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import ingest_pb2 as ing
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import partner_pb2_grpc as pb_grpc
from carehub.v1 import review_pb2 as rv
from carehub.v1 import risk_pb2 as rk

from . import metrics as m
from .audit import Audit
from .auth import caller, server_credentials
from .fhir_delivery import FhirDelivery
from .logs import (
    AlertLog,
    CaseListBoard,
    Entry,
    IdentityReviewBoard,
    IndicatorBoard,
    QualityLog,
    ReviewBoard,
    parse_cursor,
    tail,
)
from .partners import IDENTITY_REVIEW, Partners, load_partners

log = logging.getLogger(__name__)
tracer = trace.get_tracer("carehub.gateway")
SERVICE = "carehub.v1.PartnerGateway"
DEFAULT_QUALITY_DAYS = 30
IDENTITY_DECISION_WAIT_S = 30.0  # DecideIdentityReview answers once applied, or with the decision as sent
VERDICT_WORDS = {rvw.REVIEW_VERDICT_LINK: "link", rvw.REVIEW_VERDICT_SEPARATE: "separate"}


class PartnerGateway(pb_grpc.PartnerGatewayServicer):
    def __init__(self, settings: Settings, partners: Partners, alerts: AlertLog, board: IndicatorBoard,
                 audit: Audit, producer: AIOKafkaProducer | None, quality: QualityLog | None = None,
                 revocations: RevocationList | None = None, caselists: CaseListBoard | None = None,
                 references: ReferenceValues | None = None, reviews: ReviewBoard | None = None,
                 taxonomy: Taxonomy | None = None, identity_reviews: IdentityReviewBoard | None = None) -> None:
        self.settings = settings
        self.identity_reviews = identity_reviews or IdentityReviewBoard()
        self.references = references or load_reference_values(definitions=settings.indicator_definitions)
        self.reviews = reviews or ReviewBoard()
        self.taxonomy = taxonomy or load_taxonomy(settings.review_taxonomy)
        self.caselists = caselists or CaseListBoard()
        self.quality = quality or QualityLog()
        self.revocations = revocations or RevocationList(settings.revoked_certificates)
        self.partners = partners
        self.alerts = alerts
        self.board = board
        self.audit = audit
        self.producer = producer

    async def _who(self, context: grpc.aio.ServicerContext[Any, Any], action: str) -> str:
        try:
            partner = await caller(context, self.partners, self.revocations)
        except BaseException:
            m.REFUSED.labels(action).inc()
            await self.audit.write("", "refuse", detail=action)
            raise
        return partner.org

    async def _identity_team(self, context: grpc.aio.ServicerContext[Any, Any], action: str) -> str:
        """The caller, if its partners-file entry grants the identity_review role; else PERMISSION_DENIED, audited."""
        org = await self._who(context, action)
        partner = self.partners.by_org(org)
        if partner is None or IDENTITY_REVIEW not in partner.roles:
            m.REFUSED.labels(action).inc()
            await self.audit.write(org, "refuse", detail=f"{action}: no {IDENTITY_REVIEW} role")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"this organisation may not work the identity review queue (no {IDENTITY_REVIEW} role)")
        await self.identity_reviews.ready.wait()
        return org

    async def ListIdentityReviews(self, request: pb.ListIdentityReviewsRequest,
                                  context: grpc.aio.ServicerContext[Any, Any]) -> pb.IdentityReviews:
        org = await self._identity_team(context, "list_identity_reviews")
        items = desk.open_items(self.identity_reviews.items, request.include_decided)
        decided = " (decided too)" if request.include_decided else ""
        await self.audit.write(org, "list_identity_reviews", detail=f"{len(items)} items{decided}")
        return pb.IdentityReviews(items=items)

    async def GetIdentityReview(self, request: pb.GetIdentityReviewRequest,
                                context: grpc.aio.ServicerContext[Any, Any]) -> idn.ReviewItem:
        org = await self._identity_team(context, "get_identity_review")
        item = await self._identity_item(org, request.review_id, context, "get_identity_review")
        await self.audit.write(org, "get_identity_review", detail=item.review_id)
        return item

    async def _identity_item(self, org: str, review_id: str, context: grpc.aio.ServicerContext[Any, Any],
                             action: str) -> idn.ReviewItem:
        item = self.identity_reviews.items.get(review_id)
        if item is None or not item.source_org:
            await self.audit.write(org, "refuse", detail=f"{action}: no review item {review_id[:40]!r}")
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such identity review item")
        assert item is not None
        return item

    async def DecideIdentityReview(self, request: pb.DecideIdentityReviewRequest,
                                   context: grpc.aio.ServicerContext[Any, Any]) -> pb.DecideIdentityReviewResponse:
        """A reviewer's LINK or SEPARATE, onto the linkage log; answered with the result once applied."""
        org = await self._identity_team(context, "decide_identity_review")
        item = await self._identity_item(org, request.review_id, context, "decide_identity_review")
        try:
            decision = desk.new_decision(item.review_id, VERDICT_WORDS.get(request.verdict, "?"),
                                         request.reviewer[:200], request.reason[:2000])
        except desk.DeskError as exc:
            await self.audit.write(org, "refuse", detail=f"decide_identity_review {item.review_id}: {exc}")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # not reached: abort raises
        decision.reviewer_org = org
        verdict = VERDICT_WORDS[request.verdict]
        await self.audit.write(org, "decide_identity_review", trace_id=decision.decision_id,
                               detail=f"{item.review_id} {verdict} by {decision.reviewer} at "
                                      f"{decision.decided_time.ToJsonString()}: {decision.reason}")
        if self.producer is not None:
            key, value = desk.decision_record(decision)
            await self.producer.send_and_wait(accepted_topic(self.settings), key=key, value=value)
        applied = await self.identity_reviews.result(item.review_id, decision.decision_id, IDENTITY_DECISION_WAIT_S)
        return pb.DecideIdentityReviewResponse(decision=applied or decision)

    async def SubscribeAlerts(self, request: pb.SubscribeAlertsRequest,
                              context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[pb.AlertMessage]:
        org = await self._who(context, "subscribe")
        try:
            cursor = parse_cursor(request.cursor)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a cursor: {request.cursor!r}")
            return
        await self.alerts.ready.wait()
        sub, backlog = self.alerts.subscribe(org, cursor, self.settings.gateway_subscriber_buffer)
        m.SUBSCRIBERS.inc()
        await self.audit.write(org, "subscribe", detail=f"from {request.cursor or 'the start'}")
        last = request.cursor
        try:
            for entry in backlog:
                yield await self._deliver(org, entry)
                last = entry.cursor
            while True:
                if sub.behind:
                    m.BEHIND.inc()
                    yield pb.AlertMessage(resume=pb.Resume(reason="fell behind; reconnect with this cursor"),
                                          cursor=last)
                    return
                try:
                    entry = await asyncio.wait_for(sub.queue.get(), self.settings.gateway_heartbeat_s)
                except TimeoutError:
                    yield pb.AlertMessage(heartbeat=pb.Heartbeat(server_time_ms=time.time_ns() // 10**6), cursor=last)
                    continue
                yield await self._deliver(org, entry)
                last = entry.cursor
        finally:
            self.alerts.unsubscribe(sub)
            m.SUBSCRIBERS.dec()

    async def _deliver(self, org: str, entry: Entry) -> pb.AlertMessage:
        alert = entry.alert
        with tracer.start_as_current_span("deliver alert", context=extract(dict(alert.trace_context)),
                                          kind=trace.SpanKind.PRODUCER) as span:
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.service", SERVICE)
            span.set_attribute("rpc.method", "SubscribeAlerts")
            span.set_attribute("carehub.alert.rule", alert.rule)
            span.set_attribute("carehub.partner", org)
        m.DELIVERED.labels(alert.rule).inc()
        m.DELIVERY_SECONDS.observe(max(0.0, time.time() - alert.raised_at.ToNanoseconds() / 1e9))
        await self.audit.write(org, "deliver", alert.alert_id, alert.trace_id)
        return pb.AlertMessage(alert=alert, cursor=entry.cursor)

    async def Acknowledge(self, request: pb.AcknowledgeRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> pb.AcknowledgeResponse:
        org = await self._who(context, "acknowledge")
        entry = self.alerts.by_id.get(request.alert_id)
        if entry is None or entry.alert.recipient_org != org:  # another partner's alert looks like no alert
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such alert for this organisation")
        assert entry is not None
        if request.status == al.ACK_STATUS_UNSPECIFIED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "status is required")
        ack = al.Acknowledgement(alert_id=request.alert_id, org=org, status=request.status, note=request.note[:2000],
                                 rule=entry.alert.rule, trace_id=entry.alert.trace_id)
        ack.at.FromNanoseconds(time.time_ns())
        ack.alert_raised_at.CopyFrom(entry.alert.raised_at)
        if self.producer is not None:
            await self.producer.send_and_wait(acks_topic(self.settings), key=request.alert_id.encode(),
                                              value=ack.SerializeToString())
        status = al.AckStatus.Name(request.status).removeprefix("ACK_STATUS_").lower()
        m.ACKS.labels(status).inc()
        m.ACK_SECONDS.labels(status).observe(max(0.0, (ack.at.ToNanoseconds() - ack.alert_raised_at.ToNanoseconds())
                                                 / 1e9))
        await self.audit.write(org, "acknowledge", request.alert_id, entry.alert.trace_id, status)
        return pb.AcknowledgeResponse(recorded=True)

    def _answer(self, org: str, request: pb.IndicatorsRequest) -> pb.IndicatorsResponse:
        """The entitled values, with the national reference values of their indicators (or the one asked for)."""
        values = self._entitled(org, request)
        indicators = {v.indicator for v in values} | ({request.indicator} if request.indicator else set())
        return pb.IndicatorsResponse(values=values, references=references_for(self.references, indicators))

    def _entitled(self, org: str, request: pb.IndicatorsRequest) -> list[ind.IndicatorValue]:
        units = self.partners.entitled_units(org, {v.unit for v in self.board.values.values()})
        return sorted((v for v in self.board.values.values() if v.unit in units
                       and (not request.indicator or v.indicator == request.indicator)
                       and (not request.window or v.window == request.window)),
                      key=lambda v: (v.indicator, v.window, v.unit))

    async def GetQuality(self, request: pb.QualityRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> pb.QualityReport:
        """Data-quality feedback on the caller's own feed (never another organisation's)."""
        org = await self._who(context, "get_quality")
        await self.quality.ready.wait()
        days = request.days or DEFAULT_QUALITY_DAYS
        await self.audit.write(org, "get_quality", detail=f"{days} days")
        return pb.QualityReport(source_org=org, days=self.quality.book.report(org, datetime.now(UTC).date(), days))

    async def GetCaseList(self, request: pb.CaseListRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> rk.CaseList:
        """The caller's own case-finding list (an empty one naming it when nobody is listed)."""
        org = await self._who(context, "get_caselist")
        await self.caselists.ready.wait()
        return await self._caselist(org, self.caselists.of(org), request, "get_caselist")

    async def WatchCaseList(self, request: pb.CaseListRequest,
                            context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[rk.CaseList]:
        """The caller's own case list now, then again each time it changes (the latest, if several did)."""
        org = await self._who(context, "watch_caselist")
        await self.caselists.ready.wait()
        queue = self.caselists.watch(org)  # registered before the snapshot is taken: no change is missed
        try:
            yield await self._caselist(org, self.caselists.of(org), request, "watch_caselist")
            while True:
                yield await self._caselist(org, await queue.get(), request, "deliver_caselist")
        finally:
            self.caselists.unwatch(org, queue)

    async def _caselist(self, org: str, case_list: rk.CaseList, request: pb.CaseListRequest,
                        action: str) -> rk.CaseList:
        if case_list.org != org:  # the board is keyed by organisation; this cannot happen, and must not
            raise RuntimeError("a case list under another organisation's key")
        out = only_new(case_list) if request.new_only else case_list
        m.CASELISTS_SERVED.inc()
        await self.audit.write(org, action, detail=f"{len(out.entries)} entries"
                                                   + (" (new this week only)" if request.new_only else ""))
        return out

    async def GetReviewPacks(self, request: pb.ReviewPacksRequest,
                             context: grpc.aio.ServicerContext[Any, Any]) -> pb.ReviewPacks:
        """The caller's own review packs, each with the latest outcome recorded for it."""
        org = await self._who(context, "get_review_packs")
        await self.reviews.ready()
        packs = self.reviews.of(org, request.month, request.without_outcome)
        m.REVIEW_PACKS_SERVED.inc(len(packs))
        await self.audit.write(org, "get_review_packs", detail=f"{len(packs)} packs" + (
            f" of {request.month}" if request.month else "") + (" without outcome" if request.without_outcome else ""))
        return pb.ReviewPacks(org=org, packs=packs)

    async def WatchReviewPacks(self, request: pb.ReviewPacksRequest,
                               context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[pb.ReviewPacks]:
        """The caller's own packs now, then again whenever one of them changes (a new pack, a revision, a
        withdrawal, an outcome); unchanged answers are not repeated."""
        org = await self._who(context, "watch_review_packs")
        await self.reviews.ready()
        queue = self.reviews.watch(org)  # registered before the snapshot is taken: no change is missed
        try:
            last = b""
            action = "watch_review_packs"
            while True:
                packs = self.reviews.of(org, request.month, request.without_outcome)
                answer = pb.ReviewPacks(org=org, packs=packs)
                body = answer.SerializeToString(deterministic=True)
                if body != last:
                    last = body
                    m.REVIEW_PACKS_SERVED.inc(len(packs))
                    await self.audit.write(org, action, detail=f"{len(packs)} packs")
                    action = "deliver_review_packs"
                    yield answer
                await queue.get()
        finally:
            self.reviews.unwatch(org, queue)

    async def RecordReviewOutcome(self, request: pb.RecordReviewOutcomeRequest,
                                  context: grpc.aio.ServicerContext[Any, Any]) -> pb.RecordReviewOutcomeResponse:
        """A case conference's outcome for one of the caller's packs; only the pack's practice may record it."""
        org = await self._who(context, "record_review_outcome")
        await self.reviews.ready()
        pack = self.reviews.packs.get(request.pack_id)
        if pack is None or pack.practice != org:  # another practice's pack looks like no pack
            m.REVIEW_OUTCOMES.labels("not_found").inc()
            await self.audit.write(org, "refuse_review_outcome", detail=f"no pack {request.pack_id[:40]!r} here")
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such review pack for this organisation")
        assert pack is not None
        problems = outcome_problems(self.taxonomy, request.verdict, request.factors, request.actions,
                                    request.conference_date)
        if problems:
            m.REVIEW_OUTCOMES.labels("invalid").inc()
            await self.audit.write(org, "refuse_review_outcome", detail=f"{pack.pack_id}: {'; '.join(problems)}"[:500])
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
        outcome = outcome_record(self.taxonomy, pack, request.verdict, request.factors, request.actions,
                                 request.conference_date, request.notes, time.time_ns())
        if self.producer is not None:
            await self.producer.send_and_wait(review_outcomes_topic(self.settings), key=pack.pack_id.encode(),
                                              value=outcome.SerializeToString())
        self.reviews.put_outcome(outcome)  # read back at once; the topic brings the same record again
        m.REVIEW_OUTCOMES.labels("recorded").inc()
        await self.audit.write(org, "record_review_outcome", detail=f"{pack.pack_id}: {outcome.verdict}, "
                                                                   f"{len(outcome.factors)} factors, "
                                                                   f"{len(outcome.actions)} actions")
        return pb.RecordReviewOutcomeResponse(outcome=outcome)

    async def GetReviewLearning(self, request: pb.ReviewLearningRequest,
                                context: grpc.aio.ServicerContext[Any, Any]) -> rv.ReviewLearning:
        """Recorded verdicts and factors counted by unit, for the units the caller may see, small numbers withheld."""
        org = await self._who(context, "get_review_learning")
        await self.reviews.ready()
        cells = learning(self.taxonomy, self.reviews.packs.values(), self.reviews.outcomes,
                         self.settings.suppression_max)
        units = self.partners.entitled_units(org, {c.unit for c in cells})
        mine = [c for c in cells if c.unit in units]
        await self.audit.write(org, "get_review_learning", detail=f"{len(mine)} cells")
        out = rv.ReviewLearning(cells=mine, taxonomy_version=self.taxonomy.label,
                                suppression_max=self.settings.suppression_max)
        out.computed_at.FromNanoseconds(time.time_ns())
        return out

    async def GetIndicators(self, request: pb.IndicatorsRequest,
                            context: grpc.aio.ServicerContext[Any, Any]) -> pb.IndicatorsResponse:
        org = await self._who(context, "get_indicators")
        await self.board.ready.wait()
        await self.audit.write(org, "get_indicators", detail=f"{request.indicator or '*'} {request.window or '*'}")
        return self._answer(org, request)

    async def WatchIndicators(self, request: pb.IndicatorsRequest,
                              context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[pb.IndicatorsResponse]:
        org = await self._who(context, "watch_indicators")
        await self.board.ready.wait()
        queue: asyncio.Queue[ind.IndicatorValue | None] = asyncio.Queue(self.settings.gateway_subscriber_buffer)
        self.board.watchers.add(queue)
        try:
            yield self._answer(org, request)
            while True:
                changed = await queue.get()
                if changed is None:  # fell behind: a whole snapshot
                    yield self._answer(org, request)
                    continue
                batch = [changed]
                while not queue.empty() and len(batch) < 500:
                    item = queue.get_nowait()
                    if item is None:
                        batch = []
                        break
                    batch.append(item)
                units = self.partners.entitled_units(org, {v.unit for v in batch})
                mine = [v for v in batch if v.unit in units and (not request.indicator or v.indicator ==
                                                               request.indicator)
                        and (not request.window or v.window == request.window)]
                if not batch:
                    yield self._answer(org, request)
                elif mine:
                    yield pb.IndicatorsResponse(values=mine)
        finally:
            self.board.watchers.discard(queue)


class Gateway:
    """The server and the readers it depends on, started and stopped together."""

    def __init__(self, settings: Settings, bootstrap: str, partners: Partners | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        if partners is None:
            if settings.gateway_partners_file is None:
                raise SystemExit("carehub gateway: set CAREHUB_GATEWAY_PARTNERS_FILE (who may connect)")
            partners = load_partners(settings.gateway_partners_file)
        self.partners = partners
        self.credentials = server_credentials(settings)
        self.revocations = RevocationList(settings.revoked_certificates)  # a bad deny list stops it here
        self.fhir = FhirDelivery(settings, bootstrap, partners)  # FHIR partners' tables, tokens and TLS checked here
        self.alerts = AlertLog()
        self.board = IndicatorBoard()
        self.quality = QualityLog()
        self.caselists = CaseListBoard()
        self.reviews = ReviewBoard()
        self.identity_reviews = IdentityReviewBoard()
        self.taxonomy = load_taxonomy(settings.review_taxonomy)  # a bad taxonomy file stops it here, naming it
        self.port = 0

    def _on_alert(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        if value is not None:
            self.alerts.add(Entry(partition, offset, al.Alert.FromString(value)))
            m.ALERTS_HELD.set(len(self.alerts.by_id))

    def _on_value(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        if key is not None:
            self.board.put(key.decode(), ind.IndicatorValue.FromString(value) if value is not None else None)

    def _on_caselist(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        if key is not None:
            self.caselists.put(key.decode(), rk.CaseList.FromString(value) if value is not None else None)

    def _on_pack(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        if key is not None:
            self.reviews.put_pack(key.decode(), rv.ReviewPack.FromString(value) if value is not None else None)

    def _on_outcome(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        if value is not None:
            self.reviews.put_outcome(rv.ReviewOutcome.FromString(value))

    def _on_identity_review(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        if value is not None:
            self.identity_reviews.put(idn.ReviewItem.FromString(value))

    def _on_quality(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        if value is not None:
            self.quality.book.add(ing.QualityCounts.FromString(value))

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        profile = client_profile(self.settings)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **profile.aiokafka_producer())
        await producer.start()
        audit = Audit(producer, audit_topic(self.settings))
        server = grpc.aio.server()
        pb_grpc.add_PartnerGatewayServicer_to_server(
            PartnerGateway(self.settings, self.partners, self.alerts, self.board, audit, producer, self.quality,
                           self.revocations, self.caselists, reviews=self.reviews, taxonomy=self.taxonomy,
                           identity_reviews=self.identity_reviews), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (pb.DESCRIPTOR.services_by_name["PartnerGateway"].full_name, health.SERVICE_NAME,
             reflection.SERVICE_NAME), server)
        address = f"{self.settings.gateway_host}:{self.settings.gateway_port}"
        self.port = server.add_secure_port(address, self.credentials)
        await health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        # The partner port speaks TLS only; kubelet gRPC probes speak plaintext. This port
        # carries the health service and nothing else, so it reveals only SERVING or not.
        probes: grpc.aio.Server | None = None
        if self.settings.gateway_health_port:
            probes = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probes)
            probes.add_insecure_port(f"{self.settings.gateway_health_host}:{self.settings.gateway_health_port}")
            await probes.start()
        log.info("gateway: gRPC over TLS on %s:%d (mutual TLS %s)", self.settings.gateway_host, self.port,
                 "required" if self.settings.gateway_require_client_cert else "optional, bearer tokens accepted")
        readers = [
            # a FHIR replay is for the FHIR delivery loop: gRPC subscribers had the alert the first time
            asyncio.create_task(tail(self.bootstrap, alerts_topic(self.settings), self._on_alert, self.alerts.ready,
                                     stop, profile, skip=lambda headers: bool(replay_of(headers)))),
            asyncio.create_task(tail(self.bootstrap, indicators_topic(self.settings), self._on_value,
                                     self.board.ready, stop, profile)),
            asyncio.create_task(tail(self.bootstrap, quality_topic(self.settings), self._on_quality,
                                     self.quality.ready, stop, profile)),
            asyncio.create_task(tail(self.bootstrap, caselists_topic(self.settings), self._on_caselist,
                                     self.caselists.ready, stop, profile)),
            asyncio.create_task(tail(self.bootstrap, review_packs_topic(self.settings), self._on_pack,
                                     self.reviews.packs_ready, stop, profile)),
            asyncio.create_task(tail(self.bootstrap, review_outcomes_topic(self.settings), self._on_outcome,
                                     self.reviews.outcomes_ready, stop, profile)),
            asyncio.create_task(self.fhir.run(stop, audit, producer)),
        ]
        if any(IDENTITY_REVIEW in p.roles for p in self.partners):  # no identity team: the items are not read
            readers.append(asyncio.create_task(tail(self.bootstrap, review_topic(self.settings),
                                                    self._on_identity_review, self.identity_reviews.ready, stop,
                                                    profile)))
        try:
            await self.alerts.ready.wait()
            await health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
            await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            if started is not None:
                started.set()
            while not stop.is_set():
                m.SUBSCRIBERS_NOW.set(self.alerts.count_subscribers())
                HEALTH.judge([what for what, ready in (("indicator values not read up to date yet", self.board.ready),
                                                       ("quality reports not read up to date yet", self.quality.ready),
                                                       ("case lists not read up to date yet", self.caselists.ready),
                                                       ("review packs not read up to date yet",
                                                        self.reviews.packs_ready),
                                                       ("review outcomes not read up to date yet",
                                                        self.reviews.outcomes_ready))
                              if not ready.is_set()])
                await asyncio.wait([asyncio.ensure_future(stop.wait()), *readers], timeout=1.0,
                                   return_when=asyncio.FIRST_COMPLETED)
                for reader in readers:
                    if reader.done() and reader.exception() is not None:
                        raise RuntimeError("gateway: a Kafka reader stopped") from reader.exception()
        finally:
            await health_servicer.enter_graceful_shutdown()
            await server.stop(grace=2)
            if probes is not None:
                await probes.stop(grace=None)
            stop.set()
            await asyncio.gather(*readers, return_exceptions=True)
            await producer.stop()
