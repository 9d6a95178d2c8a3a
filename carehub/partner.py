"""A client for the partner gateway (service carehub.v1.PartnerGateway): alerts, acknowledgements, indicators.

Synchronous, on grpc's sync channel (a small watchdog thread per stream applies `stop` and the idle timeout)::

    store = CursorFile(Path("alerts.cursor"))
    with PartnerClient("hub.example:50051", ca_file=Path("ca.pem"), cert_file=Path("org.pem"),
                       key_file=Path("org.key")) as client:
        for got in client.alerts(store.load()):
            client.acknowledge(got.alert.alert_id, "received"); store.save(got.cursor)

`alerts()` reconnects by itself (capped exponential backoff, from the last cursor received),
drops heartbeats and alerts already delivered (by alert_id), and raises only when retrying cannot
help: `PartnerAuthError` when the gateway refuses the caller, `PartnerError` for a request it rejects.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from carehub.v1 import alerts_pb2 as al
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import partner_pb2_grpc as pb_grpc
from carehub.v1 import review_pb2 as rv
from carehub.v1 import risk_pb2 as rk

__all__ = [
    "CursorFile",
    "PartnerAuthError",
    "PartnerClient",
    "PartnerError",
    "PartnerUnavailable",
    "Received",
    "RecentIds",
    "channel_credentials",
    "parse_ack_status",
]

log = logging.getLogger(__name__)
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

# Retrying the same request cannot help with these (the caller, or the request, is refused).
_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_PERMANENT_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.FAILED_PRECONDITION)
# Long-lived streams: let the channel notice a dead peer, within what a default grpc server accepts.
_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 30_000),
]


class PartnerError(Exception):
    """The gateway refused a request, or cannot be reached; the message says which and why."""


class PartnerAuthError(PartnerError):
    """UNAUTHENTICATED or PERMISSION_DENIED: the certificate or token is not accepted, or not entitled."""


class PartnerUnavailable(PartnerError):
    """The gateway cannot be reached (not running, wrong address, or the TLS handshake failed)."""


@dataclass(frozen=True, slots=True)
class Received:
    """One alert from the stream, and the cursor to resume after it."""

    alert: al.Alert
    cursor: str


class RecentIds:
    """The last `capacity` distinct ids seen, to drop redeliveries in bounded memory."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def add(self, key: str) -> bool:
        """True if `key` is new (and remember it), False if it was seen among the recent ones."""
        if key in self._ids:
            return False
        self._ids.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._ids.discard(self._order.popleft())
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._order)


def parse_ack_status(status: str | al.AckStatus.ValueType) -> al.AckStatus.ValueType:
    """'received', 'understood', 'actioned', 'not_for_us' (or 'not-for-us', any case, or the enum value)."""
    if isinstance(status, int):
        if status == al.ACK_STATUS_UNSPECIFIED or status not in al.AckStatus.values():
            raise ValueError(f"not an acknowledgement status: {status}")
        return status
    name = status.strip().upper().replace("-", "_").replace(" ", "_").removeprefix("ACK_STATUS_")
    try:
        value = al.AckStatus.Value(f"ACK_STATUS_{name}")
    except ValueError:
        value = al.ACK_STATUS_UNSPECIFIED
    if value == al.ACK_STATUS_UNSPECIFIED:
        choices = ", ".join(n.removeprefix("ACK_STATUS_").lower() for n in al.AckStatus.keys()[1:])
        raise ValueError(f"not an acknowledgement status: {status!r} (one of {choices})")
    return value


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PartnerError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise PartnerError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise PartnerError(f"{what} file {path} is not PEM (expected a '-----BEGIN ...' block)")
    return data


def channel_credentials(ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None,
                        token: str | None = None) -> grpc.ChannelCredentials:
    """TLS trusting `ca_file`; with a client certificate (mutual TLS) and/or a bearer token on every call."""
    if (cert_file is None) != (key_file is None):
        raise PartnerError("a client certificate needs its key and the key its certificate: give both or neither")
    root = _read_pem(ca_file, "CA certificate")
    chain = _read_pem(cert_file, "client certificate") if cert_file is not None else None
    key = _read_pem(key_file, "client key") if key_file is not None else None
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
    if token is None:
        return creds
    token = token.strip()
    if not token or any(c in token for c in "\r\n\0"):
        raise PartnerError("the bearer token is empty or spans several lines")
    return grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))


_HINTS = (
    ("CERTIFICATE_VERIFY_FAILED", "the gateway's certificate was not issued by the CA given"),
    ("Hostname verification", "the gateway's certificate does not name the host connected to (see server_name)"),
    ("certificate required", "the gateway wants a client certificate (mutual TLS)"),
    ("Connection refused", "nothing listens there: is the gateway running?"),
)


def _explain(details: str) -> str:
    """gRPC's connection error, with what it most likely means for a person."""
    details = details.removesuffix(": OK")
    hints = [hint for needle, hint in _HINTS if needle.lower() in details.lower()]
    return f"{'; '.join(hints)} ({details})" if hints else details


def _backoff(failures: int, initial: float, cap: float) -> float:
    """Capped exponential backoff with jitter: between half and all of min(cap, initial * 2**(failures-1))."""
    if failures <= 0:
        return 0.0
    delay = min(cap, initial * 2.0 ** min(failures - 1, 30))
    return delay / 2 + random.uniform(0, delay / 2)


class _Watchdog:
    """Cancels a streaming call when `stop` is set, or when no message has come for `idle_timeout` seconds."""

    def __init__(self, call: grpc.Call, stop: threading.Event, idle_timeout: float | None) -> None:
        self._call = call
        self._stop = stop
        self._idle_timeout = idle_timeout
        self._last = time.monotonic()
        self._done = False
        self.idle = False
        self._thread = threading.Thread(target=self._run, name="partner-stream-watchdog", daemon=True)
        self._thread.start()

    def touch(self) -> None:
        self._last = time.monotonic()

    def _run(self) -> None:
        while not self._done:
            if self._stop.wait(0.1):
                self._call.cancel()
                return
            if self._idle_timeout is not None and time.monotonic() - self._last > self._idle_timeout:
                self.idle = True
                self._call.cancel()
                return

    def close(self) -> None:
        self._done = True
        self._thread.join()


class PartnerClient:
    """A partner organisation's connection to the gateway (who it is comes from its certificate or token)."""

    def __init__(self, target: str, *, ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None,
                 token: str | None = None, server_name: str | None = None, timeout: float = 10.0,
                 retries: int = 2, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 idle_timeout: float | None = None, dedupe_capacity: int = 100_000) -> None:
        """`server_name` overrides the name checked against the gateway's certificate (e.g. when `target` is
        an IP address); `timeout` bounds each unary call, tried `retries` more times while UNAVAILABLE;
        `idle_timeout` reconnects an alert stream that has been silent (no alert, no heartbeat) that long."""
        self.target = target
        self._timeout = timeout
        self._retries = retries
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._idle_timeout = idle_timeout
        options = list(_CHANNEL_OPTIONS)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        creds = channel_credentials(ca_file, cert_file, key_file, token)
        self._channel = grpc.secure_channel(target, creds, options=options)
        self._stub = pb_grpc.PartnerGatewayStub(self._channel)
        self._seen = RecentIds(dedupe_capacity)
        self.cursor: str | None = None
        """The last cursor received (alerts, heartbeats and resumes all carry one)."""
        self.last_heartbeat: datetime | None = None
        """The gateway's clock in its last heartbeat (UTC)."""
        self.last_heartbeat_received: datetime | None = None
        """When that heartbeat arrived, by this machine's clock (UTC)."""
        self.reconnects = 0
        self.duplicates = 0

    # -- lifecycle

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PartnerClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Raise PartnerUnavailable unless a connection (TCP and TLS) is made within `timeout` seconds."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            why = self._last_connection_error()
            raise PartnerUnavailable(
                f"cannot connect to the partner gateway at {self.target} within {timeout:g} s: "
                + (_explain(why) if why else "is it running there, and was its certificate issued by the CA given?")
            ) from None

    def _last_connection_error(self) -> str | None:
        """Why the channel cannot connect, as gRPC tells a call that fails for it (the call never reaches a server
        that cannot be connected to; one that can be answers UNIMPLEMENTED, and this returns None)."""
        probe: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            "/carehub.v1.PartnerGateway/ConnectionProbe")
        try:
            probe(b"", timeout=2.0)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                return exc.details()
        return None

    # -- errors

    def _error(self, exc: grpc.RpcError, what: str) -> PartnerError:
        code = exc.code()
        details = exc.details() or "no details"
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return PartnerAuthError(
                f"the partner gateway at {self.target} refused {what}: not authenticated ({details}); check the "
                "client certificate and key, or the token")
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return PartnerAuthError(
                f"the partner gateway at {self.target} refused {what}: permission denied ({details}); the "
                "organisation named by the certificate or token is not entitled to it")
        if code == grpc.StatusCode.UNAVAILABLE:
            return PartnerUnavailable(f"cannot reach the partner gateway at {self.target} ({what}): "
                                      f"{_explain(details)}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return PartnerUnavailable(f"the partner gateway at {self.target} did not answer {what} within "
                                      f"{self._timeout:g} s")
        return PartnerError(f"{what} failed at {self.target}: {code.name}: {details}")

    def _unary(self, method: grpc.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req, what: str) -> _Resp:
        for attempt in range(self._retries + 1):
            try:
                return method(request, timeout=self._timeout)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == self._retries:
                    raise self._error(exc, what) from None
                time.sleep(_backoff(attempt + 1, self._backoff_initial, self._backoff_max))
        raise AssertionError("unreachable")

    # -- alerts

    def alerts(self, cursor: str | None = None, *, reconnect: bool = True,
               stop: threading.Event | None = None) -> Generator[Received, None, None]:
        """The caller's alerts after `cursor` (all retained ones when None), then live ones, until `stop` is set.

        Each alert id is yielded once (the last `dedupe_capacity` ids are remembered, across calls on this
        client). After a lost connection, the end of the stream or a Resume message it reconnects from the
        last cursor received, after a capped exponential backoff (none for a Resume after alerts). With
        `reconnect=False` it returns at the end of the stream or at a Resume (see `cursor`) and raises
        PartnerUnavailable when the connection fails. Raises PartnerAuthError when the gateway refuses the
        caller, PartnerError when it rejects the request (e.g. a cursor it does not know).
        """
        stop = stop if stop is not None else threading.Event()
        position = cursor or ""
        failures = 0
        while not stop.is_set():
            call = self._stub.SubscribeAlerts(pb.SubscribeAlertsRequest(cursor=position))
            watchdog = _Watchdog(call, stop, self._idle_timeout)
            got_message = got_alert = False
            resume = False
            reason = "the gateway ended the stream"
            try:
                for message in call:
                    watchdog.touch()
                    got_message = True
                    if message.cursor:
                        position = self.cursor = message.cursor
                    body = message.WhichOneof("body")
                    if body == "heartbeat":
                        now = datetime.now(UTC)
                        ms = message.heartbeat.server_time_ms
                        self.last_heartbeat = datetime.fromtimestamp(ms / 1000, UTC) if ms else now
                        self.last_heartbeat_received = now
                    elif body == "resume":
                        resume = True
                        reason = f"the gateway asked to resume ({message.resume.reason or 'no reason given'})"
                        break
                    elif body == "alert":
                        got_alert = True
                        alert = message.alert
                        if alert.alert_id and not self._seen.add(alert.alert_id):
                            self.duplicates += 1
                            log.debug("dropped a redelivered alert %s", alert.alert_id)
                            continue
                        yield Received(alert, message.cursor or position)
                        if stop.is_set():
                            return
                    # any other body: from a newer gateway; its cursor is taken, the rest skipped
            except grpc.RpcError as exc:
                if stop.is_set():
                    return
                code = exc.code()
                if code in _AUTH_CODES or code in _PERMANENT_CODES:
                    raise self._error(exc, "the alert subscription") from None
                if watchdog.idle:
                    reason = f"no message for {self._idle_timeout:g} s"
                else:
                    reason = f"{code.name}: {exc.details() or 'no details'}"
                if not reconnect:
                    raise self._error(exc, "the alert subscription") from None
            finally:
                watchdog.close()
                call.cancel()
            if stop.is_set() or not reconnect:
                return
            if resume and got_alert:  # it was making progress: go straight back
                failures = 0
            elif got_message and not resume:  # the connection worked: back off from the start again
                failures = 1
            else:
                failures += 1
            delay = _backoff(failures, self._backoff_initial, self._backoff_max)
            self.reconnects += 1
            log.warning("alert stream from %s: %s; reconnecting in %.1f s from %s", self.target, reason, delay,
                        f"cursor {position}" if position else "the oldest retained alert")
            if stop.wait(delay):
                return

    def acknowledge(self, alert_id: str, status: str | al.AckStatus.ValueType, note: str = "") -> bool:
        """Tell the hub what became of an alert; True if the gateway recorded it."""
        if not alert_id:
            raise ValueError("acknowledge needs an alert id")
        request = pb.AcknowledgeRequest(alert_id=alert_id, status=parse_ack_status(status), note=note)
        return self._unary(self._stub.Acknowledge, request, f"the acknowledgement of {alert_id}").recorded

    # -- indicators

    def indicators(self, indicator: str | None = None, window: str | None = None) -> list[ind.IndicatorValue]:
        """The caller's entitled indicator values (all indicators / windows when None)."""
        return list(self.indicators_response(indicator, window).values)

    def indicators_response(self, indicator: str | None = None, window: str | None = None) -> pb.IndicatorsResponse:
        """The whole GetIndicators answer: the entitled values and the national reference values."""
        request = pb.IndicatorsRequest(indicator=indicator or "", window=window or "")
        return self._unary(self._stub.GetIndicators, request, "the indicators request")

    def quality(self, days: int = 30) -> pb.QualityReport:
        """Data-quality feedback on the caller's own feed, per day for the last ``days`` days."""
        return self._unary(self._stub.GetQuality, pb.QualityRequest(days=days), "the quality request")

    def caselist(self, new_only: bool = False) -> rk.CaseList:
        """The caller's case-finding list (only the people new this week with ``new_only``)."""
        return self._unary(self._stub.GetCaseList, pb.CaseListRequest(new_only=new_only), "the case list request")

    def review_packs(self, month: str = "", without_outcome: bool = False) -> pb.ReviewPacks:
        """The caller's avoidable-admission review packs, each with its latest outcome."""
        request = pb.ReviewPacksRequest(month=month, without_outcome=without_outcome)
        return self._unary(self._stub.GetReviewPacks, request, "the review packs request")

    def watch_review_packs(self, month: str = "", without_outcome: bool = False, *, reconnect: bool = True,
                           stop: threading.Event | None = None) -> Generator[pb.ReviewPacks, None, None]:
        """The caller's review packs now, then each time one changes; reconnects like `alerts()` does."""
        request = pb.ReviewPacksRequest(month=month, without_outcome=without_outcome)
        yield from self._watch(lambda: self._stub.WatchReviewPacks(request), "review packs", reconnect, stop)

    def record_review_outcome(self, pack_id: str, verdict: str, factors: Sequence[str] = (),
                              actions: Sequence[rv.ReviewAction] = (), conference_date: str = "",
                              notes: str = "") -> rv.ReviewOutcome:
        """Record a case conference's outcome for one of the caller's packs; the outcome as recorded."""
        request = pb.RecordReviewOutcomeRequest(pack_id=pack_id, verdict=verdict, factors=list(factors),
                                                actions=list(actions), conference_date=conference_date, notes=notes)
        return self._unary(self._stub.RecordReviewOutcome, request, f"the outcome of pack {pack_id}").outcome

    def review_learning(self) -> rv.ReviewLearning:
        """Recorded verdicts and contributory factors counted by the units the caller may see."""
        return self._unary(self._stub.GetReviewLearning, pb.ReviewLearningRequest(), "the review learning request")

    def watch_caselist(self, new_only: bool = False, *, reconnect: bool = True,
                       stop: threading.Event | None = None) -> Generator[rk.CaseList, None, None]:
        """The caller's case list now, then each time it changes; reconnects like `alerts()` does."""
        request = pb.CaseListRequest(new_only=new_only)
        yield from self._watch(lambda: self._stub.WatchCaseList(request), "case list", reconnect, stop)

    def watch_indicators(self, indicator: str | None = None, window: str | None = None, *, reconnect: bool = True,
                         stop: threading.Event | None = None) -> Generator[list[ind.IndicatorValue], None, None]:
        """The values of each WatchIndicators response as it comes; reconnects like `alerts()` does."""
        request = pb.IndicatorsRequest(indicator=indicator or "", window=window or "")
        for response in self._watch(lambda: self._stub.WatchIndicators(request), "indicators", reconnect, stop):
            yield list(response.values)

    def _watch(self, open_call: Callable[[], Any], what: str, reconnect: bool,
               stop: threading.Event | None) -> Generator[Any, None, None]:
        """Each message of a server stream ``open_call()`` opens, reopened after a transient failure
        with back-off (a permanent or authentication failure raises; so does any with ``reconnect``
        False), until ``stop`` is set."""
        stop = stop if stop is not None else threading.Event()
        failures = 0
        while not stop.is_set():
            call = open_call()
            watchdog = _Watchdog(call, stop, None)
            got_message = False
            reason = "the gateway ended the stream"
            try:
                for message in call:
                    got_message = True
                    yield message
            except grpc.RpcError as exc:
                if stop.is_set():
                    return
                if exc.code() in _AUTH_CODES or exc.code() in _PERMANENT_CODES or not reconnect:
                    raise self._error(exc, f"the {what} watch") from None
                reason = f"{exc.code().name}: {exc.details() or 'no details'}"
            finally:
                watchdog.close()
                call.cancel()
            if stop.is_set() or not reconnect:
                return
            failures = 1 if got_message else failures + 1
            delay = _backoff(failures, self._backoff_initial, self._backoff_max)
            log.warning("%s watch on %s: %s; reconnecting in %.1f s", what, self.target, reason, delay)
            if stop.wait(delay):
                return


class CursorFile:
    """Where a subscriber keeps its cursor between runs; each save replaces the file atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> str | None:
        """The saved cursor, or None when there is none yet."""
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def save(self, cursor: str) -> None:
        """Write `cursor` to a temporary file beside the target, flush it to disk, then rename it over."""
        if "\n" in cursor:
            raise ValueError("a cursor is one line")
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(cursor + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
