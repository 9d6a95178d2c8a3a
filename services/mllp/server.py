"""The MLLP listener: HL7 v2 ADT in, an ACK out only after the message is durably written.

For each frame, in the order it came on its connection:

1. decode it per MSH-18 (carehub/domain/hl7v2/charset.py); an unknown charset is refused (AR),
   never guessed;
2. map it to care events with the mapping table (carehub/domain/hl7v2/mapping.py); a message
   that can never be accepted is refused (AR, or AE where the table says so) with the reason in
   MSA-3 and ERR, and its bytes are dead-lettered;
3. write the raw bytes to ``carehub.mllp.raw`` and the mapped events to the provider topic, and
   wait until the broker has acknowledged every write (acks=all);
4. ACK: AA (CA in enhanced mode) only now; AE when a write failed, so that the sender retries.

A message resent after a lost ACK is ACKed again and yields the same events with the same ids
(the ids are a function of the sender and the message or visit), which ingest drops as
duplicates: resending never makes a second event. Each connection is served by its own task, so a
slow or broken sender never holds up another, and a sending facility has at most
``CAREHUB_MLLP_MAX_INFLIGHT_PER_SENDER`` writes in flight however many connections it opens
(carehub/runtime/fairness.py), so its flood waits for itself, not for others. Frames over the
size limit, bytes outside frames and idle connections are logged and counted, and the connection
is closed where the stream can no longer be trusted.

Framing is read here with asyncio streams rather than python-hl7's ``start_hl7_server``: its
reader raises on bytes before the start block and drops the frame that follows them, where this
reader logs the stray bytes and keeps the message. Parsing and ACKs use python-hl7 (through the
domain package). Logs carry positions, sizes, control ids and reasons, never message content.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer

from carehub.domain.hl7v2.ack import ack_required, build_ack
from carehub.domain.hl7v2.charset import CharsetError, UnknownCharset, declared_charset, decode, encode
from carehub.domain.hl7v2.mapping import AdtMapping, Mapped, load_adt_mapping, map_message
from carehub.kafka.profile import client_profile
from carehub.runtime.fairness import InFlight
from carehub.runtime.health import HEALTH
from carehub.settings import Settings
from carehub.topics import deadletter_topic, hl7_raw_topic
from carehub.v1 import ingest_pb2 as ing

from . import metrics as m

log = logging.getLogger(__name__)

START, END = b"\x0b", b"\x1c\x0d"
HL7_CONTENT_TYPE = b"x-application/hl7-v2+er7"
KEY_PART = 128  # characters of a message's value in a record key, header or dead letter's ids
PROTOBUF = b"application/x-protobuf"


class MllpService:
    def __init__(self, settings: Settings, bootstrap: str, mapping: AdtMapping | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.mapping = mapping or load_adt_mapping(settings.hl7_mapping, settings.hl7_facilities)
        self.provider_topic = settings.source_topics[0]
        self.producer: AIOKafkaProducer | None = None
        self.port: int | None = None
        self.inflight = InFlight(settings.mllp_max_inflight_per_sender)

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        profile = client_profile(self.settings)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap,
                                         max_request_size=self.settings.mllp_max_message_bytes + 64 * 1024,
                                         **profile.aiokafka_producer())
        await self.producer.start()
        server = await asyncio.start_server(self._serve, self.settings.mllp_host, self.settings.mllp_port,
                                            limit=self.settings.mllp_max_message_bytes + len(START) + len(END))
        self.port = int(server.sockets[0].getsockname()[1])
        print(f"mllp://{self.settings.mllp_host}:{self.port}", flush=True)
        log.info("mllp: listening on %s:%d (mapping %s)", self.settings.mllp_host, self.port, self.mapping.digest)
        if started is not None:
            started.set()
        try:
            while not stop.is_set():
                HEALTH.judge([])
                await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=1.0)
        finally:
            server.close()
            await server.wait_closed()
            await self.producer.stop()

    # ---- one connection -------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        m.CONNECTIONS.inc()
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.readuntil(END), self.settings.mllp_idle_timeout_s)
                except TimeoutError:
                    m.FRAMING.labels("idle").inc()
                    log.info("mllp: %s idle for %.0f s: closed", peer, self.settings.mllp_idle_timeout_s)
                    return
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        m.FRAMING.labels("truncated").inc()
                        log.warning("mllp: %s closed mid-frame (%d bytes unframed)", peer, len(exc.partial))
                    return
                except asyncio.LimitOverrunError:
                    m.FRAMING.labels("too_large").inc()
                    log.warning("mllp: %s sent a frame over %d bytes: closed", peer,
                                self.settings.mllp_max_message_bytes)
                    writer.write(frame(refusal_without_header(
                        f"message over {self.settings.mllp_max_message_bytes} bytes")))
                    await writer.drain()
                    return
                received = time.perf_counter()
                start = data.rfind(START)
                if start < 0:
                    m.FRAMING.labels("garbage").inc()
                    log.warning("mllp: %s sent %d bytes outside any frame: skipped", peer, len(data))
                    continue
                if start > 0:
                    m.FRAMING.labels("garbage").inc()
                    log.warning("mllp: %s sent %d bytes before a start block: skipped", peer, start)
                try:
                    ack = await self.handle(data[start + 1: -len(END)])
                except Exception as exc:  # a fault of ours: no ACK, so the sender resends
                    m.FRAMING.labels("error").inc()
                    log.error("mllp: %s: a message could not be handled (%s): connection closed", peer,
                              type(exc).__name__)
                    return
                if ack is not None:
                    writer.write(frame(ack))
                    await writer.drain()
                m.ACK_SECONDS.observe(time.perf_counter() - received)
        except (ConnectionError, OSError) as exc:
            log.info("mllp: %s connection lost: %s", peer, type(exc).__name__)
        finally:
            m.CONNECTIONS.dec()
            writer.close()

    # ---- one message --------------------------------------------------------------------------
    async def handle(self, raw: bytes) -> bytes | None:
        """The ACK bytes for one message (None where the sender asked for no ACK)."""
        try:
            text = decode(raw)
        except UnknownCharset as exc:
            return await self._refuse_undecodable(raw, ing.REJECT_REASON_UNKNOWN_CHARSET, str(exc), "MSH-18")
        except CharsetError as exc:
            return await self._refuse_undecodable(raw, ing.REJECT_REASON_HL7_REFUSED, str(exc), None)
        mapped = map_message(text, self.mapping)
        sender = mapped.sending_facility[:KEY_PART]
        if self.inflight.full(sender):
            m.WAITED.inc()
        async with self.inflight.slot(sender):  # a facility's flood waits for its own writes, not others'
            return await self._store(raw, text, mapped)

    async def _store(self, raw: bytes, text: str, mapped: Mapped) -> bytes | None:
        charset = declared_charset(raw)
        if mapped.refusal is not None:
            refusal = mapped.refusal
            await self._dead_letter(raw, ing.REJECT_REASON_HL7_REFUSED, refusal.text, mapped)
            m.MESSAGES.labels(mapped.trigger or "-", refusal.code).inc()
            log.warning("mllp: refused %s %s from %s: %s", mapped.trigger or "?", mapped.control_id or "?",
                        mapped.sending_facility or "?", refusal.text)
            return self._ack(text, charset, refusal.code, refusal.text, refusal.field, refusal.condition)
        try:
            await self._write(raw, mapped)
        except Exception as exc:  # the broker did not take it: the sender must retry
            log.error("mllp: could not store %s %s: %s", mapped.trigger, mapped.control_id, type(exc).__name__)
            m.MESSAGES.labels(mapped.trigger, "AE").inc()
            return self._ack(text, charset, "AE", "not stored, please resend", None, "207")
        for problem in mapped.degraded:
            m.DEGRADED.labels(problem.field).inc()
        m.MESSAGES.labels(mapped.trigger, "AA").inc()
        m.EVENTS.inc(len(mapped.events))
        return self._ack(text, charset, "AA", "", None, None)

    def _ack(self, text: str, charset: str, code: str, message: str, field: str | None,
             condition: str | None) -> bytes | None:
        try:
            if not ack_required(text, code):
                return None
            ack = build_ack(text, code, message, field, error_condition=condition)
        except ValueError:  # an MSH too broken to echo: the sender still learns why
            return refusal_without_header(message)
        try:
            return encode(ack, charset)
        except (CharsetError, LookupError, UnicodeError):
            return ack.encode("ascii", "replace")

    async def _write(self, raw: bytes, mapped: Mapped) -> None:
        assert self.producer is not None
        key = record_key(mapped.sending_application, mapped.sending_facility, mapped.control_id)
        futures = [await self.producer.send(hl7_raw_topic(self.settings), value=raw, key=key,
                                            headers=[("content-type", HL7_CONTENT_TYPE)])]
        control = mapped.control_id[:KEY_PART].encode()
        for event in mapped.events:
            futures.append(await self.producer.send(
                self.provider_topic, value=event.SerializeToString(),
                key=record_key(event.source_org, event.person.local_id),
                headers=[("content-type", PROTOBUF), ("carehub-hl7-control-id", control)]))
        await asyncio.gather(*futures)

    async def _refuse_undecodable(self, raw: bytes, reason: ing.RejectReason.ValueType, message: str,
                                  field: str | None) -> bytes:
        await self._dead_letter(raw, reason, message, None)
        m.MESSAGES.labels("-", "AR").inc()
        log.warning("mllp: refused a message: %s", message)
        text = raw.decode("latin-1")  # only to echo MSH: the ACK itself is ASCII
        try:
            ack = build_ack(text, "AR", message, field, error_condition="207")
        except Exception:  # no usable MSH at all
            return refusal_without_header(message)
        return ack.encode("ascii", "replace")

    async def _dead_letter(self, raw: bytes, reason: ing.RejectReason.ValueType, message: str,
                           mapped: Mapped | None) -> None:
        """The refused bytes go to the dead-letter topic (with the reason), where operators look."""
        assert self.producer is not None
        letter = ing.DeadLetter(original_value=raw, reason=reason, message=message[:500])
        letter.original_headers["content-type"] = HL7_CONTENT_TYPE
        letter.source.topic = "mllp"
        letter.source.offset = -1
        letter.rejected_time.GetCurrentTime()
        if mapped is not None:
            letter.event_id = mapped.control_id[:KEY_PART]
            letter.source_org = mapped.sending_facility[:KEY_PART]
        try:
            await (await self.producer.send(deadletter_topic(self.settings), value=letter.SerializeToString()))
        except Exception as exc:
            log.error("mllp: could not dead-letter a refused message: %s", type(exc).__name__)


def frame(payload: bytes) -> bytes:
    return START + payload + END


def record_key(*parts: str) -> bytes:
    """A record key from a message's values, each cut to KEY_PART characters: a key names a
    message, and a value of nearly a megabyte in MSH-3 must not double the record past the limit."""
    return "/".join(part[:KEY_PART] for part in parts).encode()


def refusal_without_header(text: str) -> bytes:
    """An AR for bytes with no usable MSH: nothing to echo, but the sender still learns why."""
    clean = "".join(c if " " <= c < "~" and c not in "|^\\&" else " " for c in text)[:200]  # ASCII, no separators
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return (f"MSH|^~\\&|CAREHUB|CAREHUB|||{stamp}||ACK|R{stamp}|P|2.5\rMSA|AR||{clean}\r"
            f"ERR||MSH|100^Segment sequence error^HL70357|E\r").encode("ascii")
