"""A fuzzing run against a hub on this machine: send each form's inputs, then account for every one.

The hub is a :class:`carehub.harness.LocalHub` with ingest and the doors the forms need
(:func:`start_services`). Inputs go in as a provider would send them:

* **protobuf**, **json**: Kafka records on the provider topic through the SDK's Publisher, each
  with a ``carehub-fuzz`` header naming its input;
* **hl7**: MLLP over several connections at once, one connection per input (its bytes, then a
  half-close, then every ACK read until the server closes), so that each ACK belongs to one input;
  the valid message that follows a malformed one goes on the same connection, after it, where it
  fits, so a malformed input that spoils the stream for the next message shows as valid traffic
  lost;
* **fhir**: HTTPS POSTs with the demo client certificate over a few concurrent keep-alive
  connections; a 503 is retried as a sender would.

Then, once ingest has committed the provider topic to its end (never "when it goes quiet"), the
outcome of every input is read back from the topics: the provider topic (by the fuzz header,
MSH-10 or the Bundle key the doors put on each event), ``ingest.accepted`` (by source position:
``quality`` non-empty is degraded), ``ingest.deadletter`` (by source position for provider records;
by the message's own bytes for the doors' refusals), ``mllp.raw`` and ``fhir.raw`` (by bytes).
An input that was dropped as a duplicate shows nowhere: it is counted as one only when its
(source_org, event_id) was accepted from another record.

Crashes: a service process that exits; a connection closed without an ACK that MSH-15 did not
excuse, or reset (except after a frame over the size limit); an HTTP 500 or a dropped connection
(except for a body over the limit); a ``processing_error`` dead letter (ingest's catch-all for an
exception of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from carehub import tlsgen
from carehub.fhir_client import tls_context
from carehub.fuzz.corpus import DOOR_ORG, FORMS, Form, FuzzInput, generate, make, total
from carehub.fuzz.hl7 import ack_expected, ack_fields, pieces
from carehub.harness import LocalHub, Worker
from carehub.kafka.broker import free_port
from carehub.kafka.profile import EMBEDDED, ClientProfile
from carehub.kafka.read import Record, read_to_end
from carehub.sdk import Publisher
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing

FUZZ_HEADER = "carehub-fuzz"
HL7_HEADER = "carehub-hl7-control-id"  # set by services/mllp on each event it writes
FHIR_HEADER = "carehub-fhir-bundle"  # set by services/fhir
MLLP_LIMIT = 1024 * 1024 + 3  # the door's default CAREHUB_MLLP_MAX_MESSAGE_BYTES, plus its framing bytes
FHIR_LIMIT = 2 * 1024 * 1024  # the door's default CAREHUB_FHIR_MAX_BUNDLE_BYTES
MLLP_CONNECTIONS = 16
FHIR_CONNECTIONS = 8
ANSWER_TIMEOUT_S = 60.0
Progress = Callable[[int], object]

# Outcome categories of a malformed input: every input falls in exactly one.
ACCEPTED, DEGRADED, DEAD, DUPLICATE = "accepted", "degraded", "dead-lettered", "duplicate"
NO_EVENT, REFUSED, SKIPPED, UNACCOUNTED = "accepted, no care event", "refused at the door", \
    "no message read", "unaccounted"
# when one input has several outcomes (two frames, an event accepted and another dead-lettered)
PRIORITY = (UNACCOUNTED, DEAD, DEGRADED, ACCEPTED, DUPLICATE, NO_EVENT, REFUSED, SKIPPED)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


EMPTY = digest(b"")


# -- what each input did at the door ----------------------------------------------------------------

@dataclass
class Sent:
    """One input after sending: what the sender saw (the outcome is read from the topics later)."""

    index: int
    valid: bool
    mark: str = ""
    mutations: tuple[str, ...] = ()
    frames: list[tuple[str, bool, bool]] = field(default_factory=list)  # HL7: (digest, ACK due if stored, if not)
    unread: list[str] = field(default_factory=list)  # HL7 pieces that are no message: garbage, unterminated, oversize
    answers: list[str] = field(default_factory=list)  # ACK codes (MSA-1) or the HTTP status
    body: str = ""  # FHIR: the digest of the body
    duplicate: bool = False  # FHIR: answered as a Bundle accepted before
    error: str = ""  # what went wrong on the connection, if anything
    error_expected: bool = False  # an input over the size limit: the door may close the connection
    not_sent: bool = False  # the producer could not send it (Kafka)

    @classmethod
    def of(cls, inp: FuzzInput) -> Sent:
        return cls(inp.index, inp.valid, inp.mark, inp.mutations)


@dataclass
class FormReport:
    form: Form
    inputs: int = 0  # malformed inputs sent
    valid_sent: int = 0
    valid_lost: list[int] = field(default_factory=list)
    crashes: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # malformed inputs by category (PRIORITY)
    degraded: Counter[str] = field(default_factory=Counter)  # by field and problem
    dead_lettered: Counter[str] = field(default_factory=Counter)  # by where and reason
    door: Counter[str] = field(default_factory=Counter)  # ACK codes / HTTP statuses of malformed inputs
    unaccounted: list[int] = field(default_factory=list)
    crashed: list[int] = field(default_factory=list)  # inputs whose sending saw a crash
    examples: dict[int, tuple[str, ...]] = field(default_factory=dict)  # mutations of problem inputs
    orphans: int = 0  # outputs that no input explains
    elapsed_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds: starting, sending, waiting, reading back
    stopped_early: bool = False

    @property
    def ok(self) -> bool:
        return not (sum(self.crashes.values()) or self.unaccounted or self.valid_lost or self.stopped_early)

    def add(self, part: FormReport) -> None:
        """Count in the report of another part of the same form's run (on a hub of its own)."""
        self.inputs += part.inputs
        self.valid_sent += part.valid_sent
        for mine, theirs in ((self.valid_lost, part.valid_lost), (self.unaccounted, part.unaccounted),
                             (self.crashed, part.crashed)):
            mine.extend(theirs)
        for total_, more in ((self.crashes, part.crashes), (self.outcomes, part.outcomes),
                             (self.degraded, part.degraded), (self.dead_lettered, part.dead_lettered),
                             (self.door, part.door)):
            total_.update(more)
        self.examples.update(part.examples)
        self.orphans += part.orphans
        self.elapsed_s += part.elapsed_s
        for what, seconds in part.phases.items():
            self.phases[what] = self.phases.get(what, 0.0) + seconds
        self.stopped_early = self.stopped_early or part.stopped_early


# -- starting the hub's services ---------------------------------------------------------------------

@dataclass
class Doors:
    mllp_port: int | None = None
    fhir_base: str | None = None
    pki: tlsgen.DemoPki | None = None


def start_services(hub: LocalHub, forms: Iterable[Form], log_level: str = "warning",
                   timeout_s: float = 90.0) -> Doors:
    """Ingest, and the doors ``forms`` need, started on ``hub``; returns once the doors listen."""
    forms = set(forms)
    doors = Doors()
    hub.start("ingest", CAREHUB_LOG_LEVEL=log_level)
    if "hl7" in forms:
        doors.mllp_port = free_port()
        hub.start("mllp", CAREHUB_MLLP_PORT=str(doors.mllp_port), CAREHUB_LOG_LEVEL=log_level)
    if "fhir" in forms:
        pki = doors.pki = tlsgen.make_demo_pki(hub.data_dir / "pki", [DOOR_ORG])
        port = free_port()
        hub.start("fhir", CAREHUB_FHIR_PORT=str(port), CAREHUB_FHIR_TLS_CERT=str(pki.server.cert),
                  CAREHUB_FHIR_TLS_KEY=str(pki.server.key), CAREHUB_FHIR_CLIENT_CA=str(pki.ca.cert),
                  CAREHUB_LOG_LEVEL=log_level)
        doors.fhir_base = f"https://127.0.0.1:{port}/fhir"
        hub.wait_listening(port, timeout_s)
    if doors.mllp_port is not None:
        hub.wait_listening(doors.mllp_port, timeout_s)
    return doors


def dead_workers(hub: LocalHub) -> list[Worker]:
    return [w for w in hub.workers if w.proc.poll() is not None and not w.killed]


AGENT_CRASHED = "Crashed reason="  # faust's log line when an agent (a stream stage) dies: the process lives on


def crashed_agents(hub: LocalHub) -> list[str]:
    """The stream stages that died inside a running worker, from the workers' logs."""
    found = []
    for w in hub.workers:
        if not w.log.exists():
            continue
        with w.log.open(errors="replace") as lines:
            found += [f"{w.service}: a stream agent crashed: {line.split(AGENT_CRASHED, 1)[1].strip()[:200]}"
                      for line in lines if AGENT_CRASHED in line]
    return found


# -- sending -------------------------------------------------------------------------------------------

def _until(inputs: Iterable[FuzzInput], deadline: float) -> Iterator[FuzzInput]:
    """The inputs until ``deadline`` (time.monotonic) passes."""
    for inp in inputs:
        if time.monotonic() > deadline:
            return
        yield inp


def send_kafka(hub: LocalHub, inputs: Iterable[FuzzInput], deadline: float, progress: Progress) -> list[Sent]:
    sent: list[Sent] = []
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for inp in _until(inputs, deadline):
            record = Sent.of(inp)
            sent.append(record)

            def done(ok: bool, record: Sent = record) -> None:
                record.not_sent = not ok

            pub.publish_raw(inp.payload, inp.key, inp.content_type, on_done=done,
                            extra_headers=[(FUZZ_HEADER, f"{inp.form}/{inp.index}".encode())])
            progress(1)
    return sent


Exchange = Callable[[list[FuzzInput]], Awaitable[list[Sent]]]


async def _fan_out(batches: Iterable[list[FuzzInput]], connections: int,
                   connection: Callable[[], AbstractAsyncContextManager[Exchange]], progress: Progress) -> list[Sent]:
    """Each batch of inputs exchanged on one of ``connections`` concurrent connections, as they
    come free; what each input did."""
    results: list[Sent] = []
    queue: asyncio.Queue[list[FuzzInput] | None] = asyncio.Queue(connections * 4)

    async def serve() -> None:
        async with connection() as exchange:
            while (batch := await queue.get()) is not None:
                results.extend(await exchange(batch))
                progress(len(batch))

    tasks = [asyncio.create_task(serve()) for _ in range(connections)]
    for batch in batches:
        if all(t.done() for t in tasks):
            break  # every sender failed: gather below says why
        await queue.put(batch)
    for _ in tasks:
        if all(t.done() for t in tasks):
            break
        await queue.put(None)
    await asyncio.gather(*tasks)
    return results


def _hl7_sent(inp: FuzzInput, followed: bool) -> Sent:
    """The pieces of one input's bytes as the server reads them (see carehub.fuzz.hl7.pieces)."""
    record = Sent.of(inp)
    for piece in pieces(inp.payload, MLLP_LIMIT):
        if piece.kind == "frame":
            record.frames.append((digest(piece.payload), ack_expected(piece.payload, True),
                                  ack_expected(piece.payload, False)))
        else:  # unterminated bytes before the next input's frame are skipped like garbage
            record.unread.append("garbage" if followed and piece.kind == "unterminated" else piece.kind)
    record.error_expected = "oversize" in record.unread
    return record


async def _mllp_exchange(port: int, batch: list[FuzzInput]) -> list[Sent]:
    """One connection: the inputs' bytes, a half-close, then every ACK until the server closes."""
    records = [_hl7_sent(inp, i + 1 < len(batch)) for i, inp in enumerate(batch)]
    error = ""
    data = b""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
    except OSError as exc:
        records[0].error = f"connect: {type(exc).__name__}"
        return records
    try:
        writer.write(b"".join(inp.payload for inp in batch))
        await writer.drain()
        writer.write_eof()
    except OSError as exc:
        error = f"send: {type(exc).__name__}"
    try:
        data = await asyncio.wait_for(reader.read(), ANSWER_TIMEOUT_S)
    except TimeoutError:
        error = error or f"no end of the answer in {ANSWER_TIMEOUT_S:.0f} s"
    except OSError as exc:
        error = error or f"receive: {type(exc).__name__}"
    finally:
        writer.close()
    acks = [ack_fields(p.payload) for p in pieces(data, len(data) + 1) if p.kind == "frame"]
    last = records[-1]
    if last.valid and acks and acks[-1][1] == last.mark:
        last.answers.append(acks.pop()[0])
    records[0].answers += [code for code, _ in acks]
    records[0].error = error
    return records


def _fits(malformed: FuzzInput, valid: FuzzInput) -> bool:
    """Can the valid message follow the malformed input on its connection? (Not after a frame
    over the limit, which closes the connection, nor where both would make one over it.)"""
    return len(malformed.payload) + len(valid.payload) < MLLP_LIMIT // 2


def _mllp_batches(inputs: Iterable[FuzzInput]) -> Iterator[list[FuzzInput]]:
    """The inputs of each connection: one, or a malformed one and the valid one after it."""
    pending: FuzzInput | None = None
    for inp in inputs:
        if inp.valid and pending is not None and _fits(pending, inp):
            yield [pending, inp]
            pending = None
            continue
        if pending is not None:
            yield [pending]
        pending = inp
    if pending is not None:
        yield [pending]


def send_hl7(port: int, inputs: Iterable[FuzzInput], deadline: float, progress: Progress) -> list[Sent]:
    @contextlib.asynccontextmanager
    async def connection() -> AsyncIterator[Exchange]:
        yield lambda batch: _mllp_exchange(port, batch)

    return asyncio.run(_fan_out(_mllp_batches(_until(inputs, deadline)), MLLP_CONNECTIONS, connection, progress))


def _is_duplicate(response: httpx.Response) -> bool:
    """Did the door answer "already accepted: nothing written again"?"""
    try:
        resource: Any = response.json()
    except ValueError:
        return False
    if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
        resource = ((resource.get("entry") or [{}])[0].get("response") or {}).get("outcome") or {}
    issues = resource.get("issue") if isinstance(resource, dict) else None
    return any(isinstance(i, dict) and i.get("code") == "duplicate" for i in issues or [])


async def _post(http: httpx.AsyncClient, base: str, inp: FuzzInput) -> Sent:
    record = Sent.of(inp)
    record.body = digest(inp.payload)
    record.error_expected = len(inp.payload) > FHIR_LIMIT
    headers = {"Content-Type": inp.content_type} if inp.content_type else {}
    for attempt in range(6):
        try:
            response = await http.post(base + inp.path, content=inp.payload, headers=headers)
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}"
            return record
        if response.status_code == 503 and attempt < 5:  # not stored yet: a sender resends
            await asyncio.sleep(0.5)
            continue
        record.answers.append(str(response.status_code))
        record.duplicate = response.status_code == 200 and _is_duplicate(response)
        return record
    return record


def send_fhir(doors: Doors, inputs: Iterable[FuzzInput], deadline: float, progress: Progress) -> list[Sent]:
    assert doors.pki is not None and doors.fhir_base is not None
    base, client, ca = doors.fhir_base, doors.pki.clients[DOOR_ORG], doors.pki.ca.cert

    @contextlib.asynccontextmanager
    async def connection() -> AsyncIterator[Exchange]:
        async with httpx.AsyncClient(verify=tls_context(ca, client.cert, client.key), timeout=ANSWER_TIMEOUT_S) as http:
            async def exchange(batch: list[FuzzInput]) -> list[Sent]:
                return [await _post(http, base, inp) for inp in batch]

            yield exchange

    batches = ([inp] for inp in _until(inputs, deadline))
    return asyncio.run(_fan_out(batches, FHIR_CONNECTIONS, connection, progress))


# -- reading the outcomes back -------------------------------------------------------------------------

@dataclass(frozen=True)
class _LargeFetches(ClientProfile):
    """The embedded broker's profile, reading up to FETCH_BYTES a fetch: the broker's cost per fetch
    grows with the partition (docs/embedded-broker.md), and a run's dead-letter topic holds a record
    per batch, of up to a megabyte, so it is read in as few fetches as will do."""

    def kafka_python_consumer(self) -> dict[str, Any]:
        return super().kafka_python_consumer() | {"max_partition_fetch_bytes": FETCH_BYTES,
                                                  "fetch_max_bytes": FETCH_BYTES}


FETCH_BYTES = 64 * 1024 * 1024
READER = _LargeFetches(**asdict(EMBEDDED))


def _reason(number: ing.RejectReason.ValueType) -> str:
    return ing.RejectReason.Name(number).removeprefix("REJECT_REASON_").lower()


def _header(record: Record, name: str) -> bytes | None:
    return next((v for k, v in record.headers if k == name), None)


def _identity(value: bytes | None, content_type: bytes | None) -> tuple[str, str] | None:
    """(source_org, event_id) of a provider record, read as ingest reads it (header, else first byte)."""
    if not value:
        return None
    try:
        if content_type == b"application/json" or (content_type != b"application/x-protobuf"
                                                   and value.lstrip()[:1] == b"{"):
            obj = orjson.loads(value)
            if not isinstance(obj, dict):
                return None
            org = obj.get("sourceOrg", obj.get("source_org"))
            event_id = obj.get("eventId", obj.get("event_id"))
            if "source_org" in obj and "sourceOrg" in obj:  # both spellings: the later one counts
                org = obj["source_org"] if list(obj).index("source_org") > list(obj).index("sourceOrg") else org
            if "event_id" in obj and "eventId" in obj:
                event_id = obj["event_id"] if list(obj).index("event_id") > list(obj).index("eventId") else event_id
            return (org, event_id) if isinstance(org, str) and isinstance(event_id, str) else None
        event = ce.CareEvent.FromString(value)
        return event.source_org, event.event_id
    except Exception:
        return None


@dataclass
class Topics:
    """What the hub's topics say, indexed for accounting."""

    provider: dict[tuple[int, int], Record]
    accepted: dict[tuple[int, int], ing.AcceptedEvent]  # by source (partition, offset) on the provider topic
    accepted_keys: dict[tuple[str, str], set[tuple[int, int]]]
    dead: dict[tuple[int, int], str]  # ingest's dead letters by source position: reason
    door_dead: dict[str, Counter[str]]  # "mllp"/"fhir" -> digest of the refused bytes -> count
    door_dead_reason: dict[tuple[str, str], str]
    raw: dict[str, Counter[str]]  # "mllp"/"fhir" -> digest of the stored bytes -> count
    raw_keys: dict[tuple[str, str], list[bytes]]  # (door, digest) -> the raw records' keys
    by_fuzz: dict[str, list[tuple[int, int]]]  # "form/index" -> provider positions
    by_control: dict[str, list[tuple[int, int]]]  # MSH-10 -> provider positions of the MLLP door's events
    by_bundle: dict[str, list[tuple[int, int]]]  # Bundle key -> provider positions of the FHIR door's events
    processing_errors: int = 0
    used: set[tuple[int, int]] = field(default_factory=set)  # provider positions some input explains

    @classmethod
    def read(cls, hub: LocalHub, timeout_s: float) -> Topics:
        def read(name: str) -> list[Record]:
            return read_to_end(hub.bootstrap, hub.topic(name), timeout_s=timeout_s, profile=READER)

        def values(name: str) -> Iterator[bytes]:
            return (r.value for r in read(name) if r.value is not None)

        provider_topic = hub.topic("provider.events")
        provider = {(r.partition, r.offset): r for r in read("provider.events")}
        accepted: dict[tuple[int, int], ing.AcceptedEvent] = {}
        keys: dict[tuple[str, str], set[tuple[int, int]]] = {}
        for value in values("ingest.accepted"):
            for event in ing.AcceptedBatch.FromString(value).events:
                position = (event.source.partition, event.source.offset)
                if event.source.topic == provider_topic:
                    accepted[position] = event
                    keys.setdefault((event.source_org, event.event_id), set()).add(position)
        dead: dict[tuple[int, int], str] = {}
        door_dead: dict[str, Counter[str]] = {"mllp": Counter(), "fhir": Counter()}
        door_reason: dict[tuple[str, str], str] = {}
        errors = 0
        for value in values("ingest.deadletter"):
            letter = ing.DeadLetter.FromString(value)
            reason = _reason(letter.reason)
            errors += letter.reason == ing.REJECT_REASON_PROCESSING_ERROR
            if letter.source.topic in door_dead:
                d = digest(letter.original_value)
                door_dead[letter.source.topic][d] += 1
                door_reason[(letter.source.topic, d)] = reason
            elif letter.source.topic == provider_topic:
                dead[(letter.source.partition, letter.source.offset)] = reason
        raw: dict[str, Counter[str]] = {"mllp": Counter(), "fhir": Counter()}
        raw_keys: dict[tuple[str, str], list[bytes]] = {}
        for door in raw:
            for r in read(f"{door}.raw"):
                d = digest(r.value or b"")
                raw[door][d] += 1
                raw_keys.setdefault((door, d), []).append(r.key or b"")
        by_fuzz: dict[str, list[tuple[int, int]]] = {}
        by_control: dict[str, list[tuple[int, int]]] = {}
        by_bundle: dict[str, list[tuple[int, int]]] = {}
        for position, r in provider.items():
            for name, index in ((FUZZ_HEADER, by_fuzz), (HL7_HEADER, by_control), (FHIR_HEADER, by_bundle)):
                found = _header(r, name)
                if found is not None:
                    index.setdefault(found.decode("utf-8", "replace"), []).append(position)
        return cls(provider, accepted, keys, dead, door_dead, door_reason, raw, raw_keys, by_fuzz, by_control,
                   by_bundle, errors)

    def event_outcome(self, position: tuple[int, int]) -> tuple[str, list[str]]:
        """What ingest did with the provider record at ``position``: (category, details)."""
        self.used.add(position)
        if position in self.accepted:
            quality = self.accepted[position].quality
            if quality:
                return DEGRADED, [f"{q.field.split('[')[0]}: {_reason(q.problem)}" for q in quality]
            return ACCEPTED, []
        if position in self.dead:
            return DEAD, [f"ingest: {self.dead[position]}"]
        record = self.provider.get(position)
        who = _identity(record.value, _header(record, "content-type")) if record is not None else None
        if who is not None and self.accepted_keys.get(who, set()) - {position}:
            return DUPLICATE, []
        return UNACCOUNTED, ["no outcome at ingest"]

    def take(self, door: str, kind: str, d: str) -> bool:
        """Use up one stored (``raw``) or refused (``dead``) copy of the bytes with digest ``d``."""
        counts = (self.raw if kind == "raw" else self.door_dead)[door]
        if counts[d] > 0:
            counts[d] -= 1
            return True
        return False

    def control_of(self, d: str) -> str | None:
        """MSH-10 of a stored HL7 message, from its raw record's key (application/facility/MSH-10)."""
        for key in self.raw_keys.get(("mllp", d), []):
            text = key.decode("utf-8", "replace")
            parts = text.split("/", 2)
            if len(parts) == 3 and parts[2] in self.by_control:
                return parts[2]
            for i, c in enumerate(text):  # an application or facility with a slash in it
                if c == "/" and text[i + 1:] in self.by_control:
                    return text[i + 1:]
        return None

    def orphans(self) -> int:
        unused = sum(1 for p in self.provider if p not in self.used)
        return unused + sum(sum(c.values()) for c in (*self.raw.values(), *self.door_dead.values()))


def _combine(outcomes: list[tuple[str, list[str]]]) -> tuple[str, list[str]]:
    if not outcomes:
        return SKIPPED, []
    category = min((o[0] for o in outcomes), key=PRIORITY.index)
    return category, [d for c, details in outcomes if c == category for d in details]


def _events(topics: Topics, positions: list[tuple[int, int]]) -> list[tuple[str, list[str]]]:
    return [topics.event_outcome(p) for p in positions]


def account_kafka(form: Form, sent: list[Sent], topics: Topics, report: FormReport) -> None:
    for record in sent:
        positions = topics.by_fuzz.get(f"{form}/{record.index}", [])
        if not positions:
            outcome = (UNACCOUNTED, ["not on the provider topic" + (": the SDK could not send it"
                                                                    if record.not_sent else "")])
        else:
            outcome = _combine(_events(topics, sorted(positions)[:1]))
            for extra in sorted(positions)[1:]:  # a producer retry wrote it twice: the copy is a duplicate
                topics.event_outcome(extra)
        _tally(report, record, outcome, valid_ok=outcome[0] in (ACCEPTED, DEGRADED))


def account_hl7(sent: list[Sent], topics: Topics, report: FormReport) -> None:
    for record in sent:
        outcomes: list[tuple[str, list[str]]] = []
        due = 0
        for d, due_if_stored, due_if_not in record.frames:
            if topics.take("mllp", "raw", d):
                due += due_if_stored
                control = topics.control_of(d)
                events = _events(topics, topics.by_control.pop(control, [])) if control is not None else []
                outcomes += events or [(NO_EVENT, [])]
            elif topics.take("mllp", "dead", d):
                due += due_if_not
                outcomes.append((DEAD, [f"mllp: {topics.door_dead_reason[('mllp', d)]}"]))
            else:
                due += due_if_not
                outcomes.append((UNACCOUNTED, ["neither stored nor dead-lettered by the door"]))
        if "oversize" in record.unread:
            outcomes.append((REFUSED, ["over the frame size limit: the connection closed"]))
        if record.error and not record.error_expected:
            report.crashes[f"mllp: {record.error}"] += 1
            report.crashed.append(record.index)
        elif len(record.answers) < due and not record.error_expected:
            report.crashes["mllp: no ACK where one was due"] += 1
            report.crashed.append(record.index)
        category, details = _combine(outcomes)
        if category == SKIPPED:
            details = sorted(set(record.unread))
        ok = bool(record.answers) and record.answers[-1] in ("AA", "CA") and category in (ACCEPTED, DEGRADED)
        _tally(report, record, (category, details), valid_ok=ok)


def account_fhir(sent: list[Sent], topics: Topics, report: FormReport) -> None:
    for record in sent:
        status = record.answers[-1] if record.answers else ""
        if record.error:
            if record.error_expected:
                outcome = (REFUSED, ["413 (connection closed while sending)"])
            else:
                report.crashes[f"fhir: {record.error}"] += 1
                report.crashed.append(record.index)
                outcome = (UNACCOUNTED, [record.error])
        elif status == "500":
            report.crashes["fhir: 500"] += 1
            report.crashed.append(record.index)
            outcome = (UNACCOUNTED, ["500"])
        elif status == "200" and record.duplicate:
            outcome = (DUPLICATE, ["the Bundle was accepted before"])
        elif status == "200":
            if topics.take("fhir", "raw", record.body):
                keys = topics.raw_keys.get(("fhir", record.body), [b""])
                bundle = keys[0].decode("utf-8", "replace").removeprefix(f"{DOOR_ORG}/")[:200]
                events = _events(topics, topics.by_bundle.pop(bundle, []))
                outcome = _combine(events) if events else (NO_EVENT, [])
            else:
                outcome = (UNACCOUNTED, ["200 but the Bundle is not on fhir.raw"])
        elif status in ("400", "422"):
            if record.body == EMPTY:  # nothing to keep: the door dead-letters bodies only
                outcome = (REFUSED, [f"{status}, an empty body"])
            elif topics.take("fhir", "dead", record.body):
                outcome = (DEAD, [f"fhir: {topics.door_dead_reason[('fhir', record.body)]} ({status})"])
            else:
                outcome = (UNACCOUNTED, [f"{status} but not dead-lettered"])
        elif status in ("413", "415"):
            outcome = (REFUSED, [status])
        else:
            outcome = (UNACCOUNTED, [f"answered {status or 'nothing'}"])
        _tally(report, record, outcome, valid_ok=status == "200" and outcome[0] in (ACCEPTED, DEGRADED))


def _tally(report: FormReport, record: Sent, outcome: tuple[str, list[str]], valid_ok: bool) -> None:
    category, details = outcome
    if record.valid:
        report.valid_sent += 1
        if not valid_ok:
            report.valid_lost.append(record.index)
            report.examples[record.index] = (f"valid input: {category}", *details)
        return
    report.inputs += 1
    report.outcomes[category] += 1
    for code in record.answers:
        report.door[code] += 1
    if not record.answers and report.form in ("hl7", "fhir"):
        report.door["no answer" if report.form == "fhir" else "no ACK"] += 1
    if category == DEGRADED:
        report.degraded.update(set(details))
    elif category == DEAD:
        report.dead_lettered.update(set(details))
    elif category == REFUSED:
        report.dead_lettered.update(f"not dead-lettered: {d}" for d in set(details))
    elif category == UNACCOUNTED:
        report.unaccounted.append(record.index)
        report.examples[record.index] = (*details, *record.mutations)
    if record.index in report.crashed:
        report.examples[record.index] = record.mutations


# -- a whole run -----------------------------------------------------------------------------------

@dataclass
class Plan:
    seed: int
    per_form: int  # malformed inputs of each form
    valid_every: int = 10
    forms: tuple[Form, ...] = FORMS
    first: int = 0  # the number (among the malformed ones) of the first input: a part of a longer run


def run_forms(hub: LocalHub, doors: Doors, plan: Plan, deadline: float,
              progress: Callable[[Form, int], Progress] | None = None, settle_timeout_s: float = 600.0,
              ) -> list[FormReport]:
    """Send every form's inputs to ``hub`` (services already started), one form after another,
    wait for ingest to finish its input, stop the hub's workers, and account for each input from
    the topics; stops sending at ``deadline`` (time.monotonic), and marks the forms it cut short."""
    sent: dict[Form, list[Sent]] = {}
    reports = {form: FormReport(form) for form in plan.forms}
    started: dict[Form, float] = {}
    for form in plan.forms:
        expected = total(plan.per_form, plan.valid_every, plan.first)
        tick = progress(form, expected) if progress else (lambda n: None)
        inputs: Iterator[FuzzInput] = generate(form, plan.seed, plan.per_form, plan.valid_every, plan.first)
        started[form] = time.monotonic()
        if form in ("protobuf", "json"):
            sent[form] = send_kafka(hub, inputs, deadline, tick)
        elif form == "hl7":
            assert doors.mllp_port is not None
            sent[form] = send_hl7(doors.mllp_port, inputs, deadline, tick)
        else:
            sent[form] = send_fhir(doors, inputs, deadline, tick)
        reports[form].stopped_early = len(sent[form]) < expected
        reports[form].phases["sending"] = time.monotonic() - started[form]
    crashed = [f"{w.service} (pid {w.pid}) exited {w.proc.returncode}" for w in dead_workers(hub)]
    settling = time.monotonic()
    try:
        hub.wait_caught_up("ingest", ["provider.events"], max(30.0, min(settle_timeout_s, deadline - time.monotonic())),
                           interval_s=1.0)
    except AssertionError as exc:
        crashed.append(f"ingest did not finish its input: {str(exc).splitlines()[0][:300]}")
    crashed += [f"{w.service} (pid {w.pid}) exited {w.proc.returncode}" for w in dead_workers(hub)
                if not any(str(w.pid) in c for c in crashed)]
    crashed += crashed_agents(hub)
    hub.stop_all()  # nothing more to do, and the embedded broker reads back faster with no one else fetching
    reading = time.monotonic()
    topics = Topics.read(hub, timeout_s=900.0)
    shared = {"waiting for ingest": reading - settling, "reading the topics back": time.monotonic() - reading}
    for form in plan.forms:
        report = reports[form]
        if form in ("protobuf", "json"):
            account_kafka(form, sent[form], topics, report)
        elif form == "hl7":
            account_hl7(sent[form], topics, report)
        else:
            account_fhir(sent[form], topics, report)
        for line in crashed:
            report.crashes[line] += 1
        report.elapsed_s = time.monotonic() - started[form]
        report.phases.update(shared)
    if topics.processing_errors:
        for form in plan.forms:  # ingest's catch-all: count it against the forms it came from
            report = reports[form]
            n = sum(v for k, v in report.dead_lettered.items() if k.endswith("processing_error"))
            if n:
                report.crashes["ingest: processing_error (an exception in ingest)"] += n
    orphans = topics.orphans()
    for report in reports.values():
        report.orphans = orphans
    return [reports[form] for form in plan.forms]


def format_report(report: FormReport, seed: int) -> str:
    def table(counter: Counter[str], indent: str = "      ") -> list[str]:
        return [f"{indent}{n:>9,}  {what}" for what, n in counter.most_common()]

    crashes = sum(report.crashes.values())
    phases = ", ".join(f"{what} {seconds:,.0f} s" for what, seconds in report.phases.items())
    lines = [f"{report.form}: {report.inputs:,} malformed inputs, {report.valid_sent:,} valid "
             f"({report.elapsed_s:,.1f} s{': ' + phases if phases else ''})"]
    lines.append(f"  crashes: {crashes:,}{'  <-- must be 0' if crashes else ''}")
    lines += table(report.crashes)
    lines.append("  outcomes of the malformed inputs:")
    lines += table(report.outcomes, "    ")
    if report.degraded:
        lines.append("    degraded, by problem (field: problem):")
        lines += table(report.degraded)
    if report.dead_lettered:
        lines.append("    dead-lettered (and refused), by where and reason:")
        lines += table(report.dead_lettered)
    if report.door:
        lines.append("    answers at the door (ACK code / HTTP status):")
        lines += table(report.door)
    lines.append(f"  unaccounted: {len(report.unaccounted):,}{'  <-- must be 0' if report.unaccounted else ''}")
    lines.append(f"  valid sent: {report.valid_sent:,}, valid lost: {len(report.valid_lost):,}"
                 f"{'  <-- must be 0' if report.valid_lost else ''}")
    if report.stopped_early:
        lines.append("  STOPPED EARLY by --max-minutes: not every input was sent")
    problems = sorted({*report.unaccounted, *report.valid_lost, *report.crashed})[:10]
    for index in problems:
        what = "; ".join(report.examples.get(index, ()))[:400]
        lines.append(f"    input {report.form}:{index} (seed {seed}): {what}")
    return "\n".join(lines)


def write_input(path: Path, form: Form, seed: int, index: int, valid_every: int = 10) -> FuzzInput:
    """Write input ``index`` of ``form`` (in the run with ``seed``) to ``path``, to replay it by hand."""
    inp = make(form, seed, index, valid_every > 0 and (index + 1) % (valid_every + 1) == 0)
    path.write_bytes(inp.payload)
    return inp
