"""The FHIR R4 endpoint: Bundles in over HTTPS, a 2xx only after they are durably written.

Two operations (docs/fhir.md):

* ``POST [base]/$process-message`` with a message Bundle (Da Vinci Unsolicited Notifications:
  admit, discharge, transfer);
* ``POST [base]`` with a transaction Bundle of Patient, Encounter and Condition resources.

For each request, one after another in this order:

1. who sent it: a verified client certificate's common name or a bearer token, mapped to an
   organisation by the senders file (services/fhir/tls.py, carehub/domain/fhir/senders.py);
   401 or 403 otherwise; 429 with Retry-After when that organisation already has
   ``CAREHUB_FHIR_MAX_INFLIGHT_PER_SENDER`` Bundles being stored, so that one sender's flood is
   refused clearly instead of queueing everyone else's (carehub/runtime/fairness.py);
2. the body: at most ``CAREHUB_FHIR_MAX_BUNDLE_BYTES`` (413 beyond), ``application/fhir+json``
   (415 otherwise), then validated as a FHIR Bundle (400 with an OperationOutcome naming each
   problem);
3. mapped to care events (carehub/domain/fhir/mapping.py); a Bundle that cannot mean anything to
   the hub is answered 422 with the reason. Refused bodies (400 and 422) are dead-lettered with
   the outcome's text, where operators see them with ``carehub dlq list``;
4. the Bundle's bytes written to ``carehub.fhir.raw`` and its events to the provider topic, and
   the broker's acknowledgement of every write awaited (acks=all); 503 with Retry-After when a
   write fails, so that the sender retries;
5. 200: an OperationOutcome (with a warning per imperfect element) for a message, a
   transaction-response Bundle for a transaction.

The same Bundle sent again (same sender and Bundle id) is answered 200 and written once: this
process remembers the Bundles it accepted, and the events' ids are deterministic besides, so
ingest drops a repeat that reaches another instance or outlives the memory. Logs carry the
organisation, the Bundle id, elements and reasons, never content.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import uvicorn
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from carehub.domain.fhir.bundle import BundleRejected, parse_bundle
from carehub.domain.fhir.mapping import FhirMapping, MappedBundle, describe, load_fhir_mapping, map_bundle
from carehub.domain.fhir.outcome import Issue, error, operation_outcome
from carehub.domain.fhir.senders import Sender, Senders, load_senders
from carehub.kafka.profile import client_profile
from carehub.partner import RecentIds
from carehub.revocation import RevocationList
from carehub.runtime.fairness import InFlight
from carehub.runtime.health import HEALTH
from carehub.settings import Settings
from carehub.topics import deadletter_topic, fhir_raw_topic
from carehub.v1 import ingest_pb2 as ing

from . import metrics as m
from .tls import PEER_CN, PEER_FINGERPRINT, CertAwareH11Protocol, server_ssl_context

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
ACCEPTED_TYPES = (FHIR_JSON, "application/json", "application/json+fhir")
PROTOBUF = b"application/x-protobuf"
RETRY_AFTER_S = 5
THROTTLE_RETRY_AFTER_S = 1  # a sender over its in-flight limit: a slot frees within milliseconds


class Answer(Exception):
    """An HTTP answer other than success: status, OperationOutcome issues, extra headers."""

    def __init__(self, status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> None:
        super().__init__(describe(issues))
        self.status, self.issues, self.headers = status, issues, headers or {}


def fhir_response(status: int, resource: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(resource), status, headers=headers, media_type=FHIR_JSON)


class FhirService:
    def __init__(self, settings: Settings, bootstrap: str, senders: Senders | None = None,
                 mapping: FhirMapping | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.ssl = server_ssl_context(settings)
        self.senders = senders or load_senders(settings.fhir_senders_file)
        self.mapping = mapping or load_fhir_mapping(settings.fhir_mapping)
        self.revocations = RevocationList(settings.revoked_certificates)
        self.inflight = InFlight(settings.fhir_max_inflight_per_sender)  # per sender: a flood gets 429s
        self.provider_topic = settings.source_topics[0]
        self.producer: AIOKafkaProducer | None = None
        self.accepted = RecentIds(100_000)
        self.port: int | None = None

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/fhir/$process-message", self.process_message, methods=["POST"]),
            Route("/fhir", self.transaction, methods=["POST"]),
            Route("/fhir/", self.transaction, methods=["POST"]),
            Route("/fhir/metadata", self.metadata, methods=["GET"]),
        ])

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        profile = client_profile(self.settings)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap,
                                         max_request_size=self.settings.fhir_max_bundle_bytes + 64 * 1024,
                                         **profile.aiokafka_producer())
        await self.producer.start()
        context = self.ssl
        config = uvicorn.Config(self.app(), host=self.settings.fhir_host, port=self.settings.fhir_port,
                                http=CertAwareH11Protocol, lifespan="off", access_log=False,
                                log_level="warning", ssl_context_factory=lambda _config, _default: context,
                                timeout_keep_alive=30, limit_concurrency=512)
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if serving.done():
                    serving.result()  # start-up failed: raise what uvicorn raised
                    raise SystemExit("carehub fhir: the HTTPS server stopped during start-up")
                await asyncio.sleep(0.02)
            self.port = int(server.servers[0].sockets[0].getsockname()[1])
            print(f"https://{self.settings.fhir_host}:{self.port}/fhir", flush=True)
            log.info("fhir: listening on %s:%d (%d senders, mapping %s, client certificates %s)",
                     self.settings.fhir_host, self.port, len(self.senders), self.mapping.digest,
                     "required" if self.settings.fhir_require_client_cert else "optional")
            if started is not None:
                started.set()
            stopping = asyncio.ensure_future(stop.wait())
            while not stop.is_set() and not serving.done():
                HEALTH.judge([])
                await asyncio.wait([stopping, serving], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        finally:
            server.should_exit = True
            await asyncio.gather(serving, return_exceptions=True)
            await self.producer.stop()

    # ---- requests ---------------------------------------------------------------------------------
    async def process_message(self, request: Request) -> Response:
        return await self._receive(request, ("message",))

    async def transaction(self, request: Request) -> Response:
        return await self._receive(request, ("transaction",))

    async def metadata(self, request: Request) -> Response:
        """A CapabilityStatement, so that FHIR clients can discover what this endpoint does."""
        return fhir_response(200, capability_statement())

    async def _receive(self, request: Request, expect: tuple[str, ...]) -> Response:
        kind = expect[0]
        sender: Sender | None = None
        body = b""
        started = time.perf_counter()
        try:
            sender = self._who(request)
            if self.inflight.full(sender.org):
                limit = self.settings.fhir_max_inflight_per_sender
                raise Answer(429, [error("throttled", "", f"{limit} Bundles from {sender.org} are being stored "
                                                          "already: send this one again shortly")],
                             {"Retry-After": str(THROTTLE_RETRY_AFTER_S)})
            async with self.inflight.slot(sender.org):
                with m.INFLIGHT.track_inprogress():
                    body = await self._body(request)
                    received = time.perf_counter()
                    response = await self._accept(sender, body, expect)
                    m.SECONDS.observe(time.perf_counter() - received)
        except Answer as answer:
            if answer.status in (400, 422) and body:
                await self._dead_letter(body, sender, answer.issues)
            log.warning("fhir: %d for a %s Bundle from %s: %s", answer.status, kind,
                        sender.org if sender else "an unidentified sender", describe(answer.issues)[:500])
            response = fhir_response(answer.status, operation_outcome(answer.issues), answer.headers)
        m.BUNDLES.labels(kind, str(response.status_code)).inc()
        log.debug("fhir: answered %d in %.1f ms", response.status_code, 1000 * (time.perf_counter() - started))
        return response

    def _who(self, request: Request) -> Sender:
        """The sending organisation: the verified certificate's, else the bearer token's."""
        common_name = getattr(request.state, PEER_CN, None)
        fingerprint = getattr(request.state, PEER_FINGERPRINT, None)
        if fingerprint and self.revocations.revoked(fingerprint):
            raise Answer(403, [error("forbidden", "", "the client certificate has been revoked")])
        by_cert = self.senders.by_org(common_name) if common_name else None
        if common_name and by_cert is None:
            raise Answer(403, [error("forbidden", "", f"certificate of {common_name!r}: not a FHIR sender here")])
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        by_token = self.senders.by_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if header and by_token is None and by_cert is None:
            raise Answer(401, [error("login", "", "the bearer token is not a FHIR sender's")],
                         {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if by_cert and by_token and by_cert != by_token:
            raise Answer(403, [error("forbidden", "", "the token and the certificate name different organisations")])
        sender = by_cert or by_token
        if sender is None:
            raise Answer(401, [error("login", "", "a client certificate or a bearer token is required")],
                         {"WWW-Authenticate": "Bearer"})
        return sender

    async def _body(self, request: Request) -> bytes:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in ACCEPTED_TYPES:
            raise Answer(415, [error("not-supported", "", f"Content-Type must be {FHIR_JSON} (JSON); got "
                                                          f"{media[:60] or 'none'!r}")])
        limit = self.settings.fhir_max_bundle_bytes
        too_large = Answer(413, [error("too-costly", "", f"the Bundle is over {limit} bytes")],
                           {"Connection": "close"})
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def _accept(self, sender: Sender, body: bytes, expect: tuple[str, ...]) -> Response:
        try:
            mapped = await asyncio.to_thread(self._map, sender, body, expect)
        except BundleRejected as rejected:
            raise Answer(400, rejected.issues) from None
        if not mapped.accepted:
            raise Answer(422, mapped.refusal + mapped.warnings)
        key = f"{sender.org}/{mapped.bundle_key}"
        if key in self.accepted:
            m.DUPLICATES.inc()
            log.info("fhir: %s sent Bundle %s again: answered, not written", sender.org, mapped.bundle_key)
            return self._success(mapped, [Issue("information", "duplicate", "Bundle.id",
                                                "already accepted: nothing written again")])
        try:
            await self._write(key, body, mapped)
        except Exception as exc:  # the broker did not take it: the sender must retry
            log.error("fhir: could not store Bundle %s from %s: %s", mapped.bundle_key, sender.org,
                      type(exc).__name__)
            raise Answer(503, [error("transient", "", "not stored, please resend")],
                         {"Retry-After": str(RETRY_AFTER_S)}) from None
        self.accepted.add(key)
        m.EVENTS.inc(len(mapped.events))
        m.WARNINGS.labels(sender.org).inc(len(mapped.warnings))
        if mapped.warnings:
            log.info("fhir: Bundle %s from %s accepted with %d warnings: %s", mapped.bundle_key, sender.org,
                     len(mapped.warnings), describe(mapped.warnings)[:500])
        return self._success(mapped, mapped.warnings)

    def _map(self, sender: Sender, body: bytes, expect: tuple[str, ...]) -> MappedBundle:
        bundle = parse_bundle(body, expect)
        return map_bundle(bundle, body, sender, self.mapping)

    def _success(self, mapped: MappedBundle, issues: list[Issue]) -> Response:
        outcome = operation_outcome(issues)
        if mapped.kind != "transaction":
            return fhir_response(200, outcome)
        return fhir_response(200, {"resourceType": "Bundle", "type": "transaction-response",
                                   "entry": [{"response": {"status": "200 OK", "outcome": outcome}}]})

    async def _write(self, key: str, body: bytes, mapped: MappedBundle) -> None:
        assert self.producer is not None
        futures = [await self.producer.send(fhir_raw_topic(self.settings), value=body, key=key.encode(),
                                            headers=[("content-type", FHIR_JSON.encode())])]
        for event in mapped.events:
            futures.append(await self.producer.send(
                self.provider_topic, value=event.SerializeToString(),
                key=f"{event.source_org}/{event.person.local_id}".encode(),
                headers=[("content-type", PROTOBUF), ("carehub-fhir-bundle", mapped.bundle_key.encode()[:200])]))
        await asyncio.gather(*futures)

    async def _dead_letter(self, body: bytes, sender: Sender | None, issues: list[Issue]) -> None:
        """A refused Bundle goes to the dead-letter topic with the outcome's text, where operators look."""
        assert self.producer is not None
        letter = ing.DeadLetter(original_value=body, reason=ing.REJECT_REASON_FHIR_REFUSED,
                                message=describe(issues)[:500])
        letter.original_headers["content-type"] = FHIR_JSON.encode()
        letter.source.topic = "fhir"
        letter.source.offset = -1
        letter.rejected_time.GetCurrentTime()
        if sender is not None:
            letter.source_org = sender.org
        try:
            await (await self.producer.send(deadletter_topic(self.settings), value=letter.SerializeToString()))
        except Exception as exc:
            log.error("fhir: could not dead-letter a refused Bundle: %s", type(exc).__name__)


def capability_statement() -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement", "status": "active", "date": "2026-12-04", "kind": "instance",
        "software": {"name": "carehub"}, "fhirVersion": "4.0.1", "format": ["application/fhir+json"],
        "rest": [{"mode": "server",
                  "interaction": [{"code": "transaction"}],
                  "operation": [{"name": "process-message",
                                 "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message"}]}],
        "messaging": [{"supportedMessage": [{"mode": "receiver",
                                             "definition": "http://hl7.org/fhir/us/davinci-alerts/MessageDefinition/"
                                                           "notifications-message"}]}],
    }
