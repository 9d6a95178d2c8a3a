"""`carehub watch`, `carehub indicators --remote` and `carehub caselist --remote`: a partner's view of the
gateway, for a person to read.

carehub/cli.py imports this module only when one of those commands runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import stat
import sys
import textwrap
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

# Before grpc loads: gRPC core's info lines (e.g. each failed TLS handshake) are not for a person's terminal.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from carehub.partner import CursorFile, PartnerAuthError, PartnerClient, PartnerError, parse_ack_status
from carehub.v1 import alerts_pb2 as al

_SEVERITY = {al.SEVERITY_INFO: "INFO", al.SEVERITY_WARNING: "WARNING", al.SEVERITY_URGENT: "URGENT"}
_KIND = {al.ALERT_KIND_REVISION: "REVISION of an earlier alert",
         al.ALERT_KIND_RETRACTION: "RETRACTION: an earlier alert no longer holds"}
_WIDTH = 100


# -- formatting


def _local(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC).astimezone()


def _when(dt: datetime | None, *, relative_to: datetime | None = None) -> str:
    """'14:05 Tue 3 Mar 2026 GMT', or only '14:32' when on the same local day as `relative_to`."""
    if dt is None:
        return "unknown time"
    if relative_to is not None and dt.date() == relative_to.date():
        return dt.strftime("%H:%M")
    zone = dt.strftime("%Z")
    return f"{dt:%H:%M %a} {dt.day} {dt:%b %Y}" + (f" {zone}" if zone else "")


def _later(a: datetime | None, b: datetime | None) -> str:
    if a is None or b is None or b < a:
        return ""
    minutes = round((b - a).total_seconds() / 60)
    if minutes < 1:
        return " (at once)"
    if minutes < 120:
        return f" ({minutes} min later)"
    hours = minutes / 60
    return f" ({hours:.0f} h later)" if hours < 48 else f" ({hours / 24:.0f} days later)"


def _earlier_ref(alert_id: str, earlier: Mapping[str, al.Alert]) -> str:
    before = earlier.get(alert_id)
    if before is None:
        return f"alert {alert_id} (not shown in this session)"
    return f'alert {alert_id} of {_when(_local(before.event_time))}: "{before.title}"'


def format_alert(alert: al.Alert, earlier: Mapping[str, al.Alert] | None = None, partner: str | None = None) -> str:
    """One block of text for one alert: what happened to whom, when, and why the hub says so.

    `earlier`: alerts already shown, by id, so that revisions and retractions can name what they change.
    `partner`: the organisation the reader expects to be; an alert addressed elsewhere says so.
    """
    earlier = earlier or {}
    happened = _local(alert.event_time)
    raised = _local(alert.raised_at)
    severity = _SEVERITY.get(alert.severity, "UNGRADED")
    head = f"-- {_when(happened if happened else raised)} -- {severity}"
    if alert.kind in _KIND:
        head += f" -- {_KIND[alert.kind]}"
    lines = [f"{head} {'-' * max(2, _WIDTH - len(head) - 1)}", alert.title or "(no title)"]

    def field(label: str, text: str) -> None:
        lines.append(textwrap.fill(text, width=_WIDTH, initial_indent=f"  {label:<9} ", subsequent_indent=" " * 12,
                                   break_on_hyphens=False))

    if alert.kind == al.ALERT_KIND_REVISION:
        field("Revises", f"{_earlier_ref(alert.refers_to, earlier)}; what it said has changed, as below")
    elif alert.kind == al.ALERT_KIND_RETRACTION:
        field("Retracts", f"{_earlier_ref(alert.refers_to, earlier)}; disregard it")
    role = alert.recipient_role.replace("_", " ")
    if alert.local_id:
        field("Person", f"your record {alert.local_id}" + (f" (you are their {role})" if role else ""))
    elif alert.unit:
        field("Unit", f"{alert.unit} (about a service, not one person)")
    if alert.detail:
        field("What", alert.detail)
    when = f"happened {_when(happened)}; raised by the hub {_when(raised, relative_to=happened)}"
    when += _later(happened, raised)
    if alert.source_org:
        when += f"; reported by {alert.source_org}"
    field("When", when)
    definition = alert.definition or (f"{alert.rule} v{alert.rule_version}" if alert.rule else "no rule named")
    if alert.provisional:
        field("Why", f"rule {definition}; PROVISIONAL: judged on working diagnoses, not yet coded; a revision may "
                     "follow")
    elif alert.kind == al.ALERT_KIND_REVISION and "coding" in alert.detail.lower():
        field("Why", f"rule {definition}; confirmed: judged on coded diagnoses")
    else:
        field("Why", f"rule {definition}")
    if partner and alert.recipient_org and alert.recipient_org != partner:
        field("Note", f"addressed to {alert.recipient_org}, not {partner}: check which certificate or token is used")
    field("Alert id", alert.alert_id)
    return "\n".join(lines)


class _Shown(OrderedDict[str, al.Alert]):
    """The alerts shown so far (the most recent 10,000), for revisions and retractions to refer to."""

    def remember(self, alert: al.Alert) -> None:
        self[alert.alert_id] = alert
        while len(self) > 10_000:
            self.popitem(last=False)


# -- arguments


def _read_token(path: str | None) -> str | None:
    if not path:
        return None
    token_path = Path(path)
    try:
        mode = token_path.stat().st_mode
        token = token_path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise PartnerError(f"token file not found: {token_path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PartnerError(f"cannot read token file {token_path}: {exc}") from None
    if not token:
        raise PartnerError(f"token file {token_path} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: token file {token_path} can be read by others; chmod 600 it", file=sys.stderr)
    return token


def _client(args: argparse.Namespace, idle_timeout: float | None = None) -> PartnerClient:
    if not args.ca:
        raise PartnerError("--ca is needed: the CA certificate that issued the gateway's certificate (PEM)")
    if not args.cert and not args.key and not args.token_file:
        raise PartnerError("give a client certificate (--cert and --key) or a bearer token (--token-file)")
    return PartnerClient(args.target, ca_file=Path(args.ca), cert_file=Path(args.cert) if args.cert else None,
                         key_file=Path(args.key) if args.key else None, token=_read_token(args.token_file),
                         server_name=args.server_name or None, idle_timeout=idle_timeout)


@contextlib.contextmanager
def _sigterm_stops(stop: threading.Event) -> Iterator[None]:
    """SIGTERM ends the watch as Ctrl-C does (only where handlers can be set: the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- commands


def watch(args: argparse.Namespace) -> int:
    """Print the caller's alerts as they come; acknowledge each with --ack; keep the cursor in --cursor-file."""
    try:
        return _watch(args)
    except PartnerError as exc:
        raise SystemExit(f"carehub watch: {exc}") from None
    except OSError as exc:  # the cursor file cannot be read or written
        raise SystemExit(f"carehub watch: {exc}") from None


def _watch(args: argparse.Namespace) -> int:
    try:
        ack = parse_ack_status(args.ack) if args.ack else None
    except ValueError as exc:
        raise PartnerError(f"--ack: {exc}") from None
    limit = 1 if args.once else args.limit
    if limit is not None and limit < 1:
        raise PartnerError("--limit must be at least 1")
    store = CursorFile(Path(args.cursor_file)) if args.cursor_file else None
    cursor = store.load() if store else None
    stop = threading.Event()
    shown = _Shown()
    printed = 0
    with _client(args, idle_timeout=args.idle_timeout or None) as client, _sigterm_stops(stop):
        try:
            client.wait_ready(args.connect_timeout)
            who = args.partner or "the organisation named by the certificate or token"
            start = f"after cursor {cursor}" if cursor else "from the oldest retained alert"
            print(f"watching alerts for {who} at {args.target}, {start} (Ctrl-C stops)", file=sys.stderr,
                  flush=True)
            for got in client.alerts(cursor, stop=stop):
                alert = got.alert
                if args.json:
                    record = json_format.MessageToDict(alert)
                    record["cursor"] = got.cursor
                    print(json.dumps(record, sort_keys=True), flush=True)
                else:
                    print(format_alert(alert, shown, args.partner), flush=True)
                shown.remember(alert)
                if ack is not None:
                    _acknowledge(client, alert.alert_id, ack, args.ack_note, quiet=args.json)
                if store:
                    store.save(got.cursor)
                printed += 1
                if not args.json:
                    print(flush=True)
                if limit is not None and printed >= limit:
                    break
        except KeyboardInterrupt:
            pass
    tail = f"; the cursor is in {store.path}" if store else ""
    print(f"{printed} alert{'s' if printed != 1 else ''} shown{tail}", file=sys.stderr)
    return 0


def _acknowledge(client: PartnerClient, alert_id: str, status: al.AckStatus.ValueType, note: str,
                 quiet: bool) -> None:
    name = al.AckStatus.Name(status).removeprefix("ACK_STATUS_").lower()
    try:
        recorded = client.acknowledge(alert_id, status, note)
    except PartnerAuthError:
        raise
    except PartnerError as exc:
        print(f"  NOT acknowledged: {exc}", file=sys.stderr if quiet else sys.stdout, flush=True)
        return
    if quiet:
        return
    print(f"  {'Acknowledged' if recorded else 'NOT recorded by the gateway:'} {name}", flush=True)


def indicators_remote(args: argparse.Namespace) -> int:
    """`carehub indicators --remote`: the caller's entitled values from the gateway, as a table or JSON."""
    from carehub.indicator_report import as_json, select, table

    indicator = args.indicator or None
    window = None if args.window in (None, "", "all") else args.window

    try:
        with _client(args) as client:
            if not getattr(args, "watch", False):
                response = client.indicators_response(indicator, window)
                values = select(response.values, unit=args.unit)
                print(as_json(values) if args.json else table(values, list(response.references)))
                return 0
            client.wait_ready(getattr(args, "connect_timeout", 10.0))
            with contextlib.suppress(KeyboardInterrupt):
                for batch in client.watch_indicators(indicator, window):
                    values = select(batch, unit=args.unit)
                    stamp = datetime.now().astimezone().strftime("%H:%M:%S")
                    print(as_json(values) if args.json else f"-- {stamp}\n{table(values)}\n", flush=True)
            return 0
    except PartnerError as exc:
        raise SystemExit(f"carehub indicators --remote: {exc}") from None


def quality_remote(args: argparse.Namespace) -> int:
    """`carehub quality --remote`: the caller's own data-quality report from the gateway."""
    from carehub.quality_report import as_json, table

    try:
        with _client(args) as client:
            report = client.quality(args.days)
    except PartnerError as exc:
        raise SystemExit(f"carehub quality --remote: {exc}") from None
    print(as_json(report.days) if args.json else table(report.source_org, report.days))
    return 0


def caselist_remote(args: argparse.Namespace) -> int:
    """`carehub caselist --remote`: the caller's own case list from the gateway, as a table or JSON."""
    from carehub.caselist_report import as_json, table

    try:
        with _client(args) as client:
            if not getattr(args, "watch", False):
                case_list = client.caselist(args.new_only)
                print(as_json(case_list) if args.json else table(case_list))
                return 0
            client.wait_ready(getattr(args, "connect_timeout", 10.0))
            with contextlib.suppress(KeyboardInterrupt):
                for case_list in client.watch_caselist(args.new_only):
                    stamp = datetime.now().astimezone().strftime("%H:%M:%S")
                    print(as_json(case_list) if args.json else f"-- {stamp}\n{table(case_list)}\n", flush=True)
            return 0
    except PartnerError as exc:
        raise SystemExit(f"carehub caselist --remote: {exc}") from None


def reviews_remote(args: argparse.Namespace) -> int:
    """`carehub reviews --remote`: the caller's own review packs from the gateway (and, with --learning, the counts)."""
    from carehub.review_report import as_json, learning_table, table

    try:
        with _client(args) as client:
            if getattr(args, "learning", False):
                learning = client.review_learning()
                print(json.dumps(json_format.MessageToDict(learning, preserving_proto_field_name=True), indent=2)
                      if args.json else learning_table(learning))
                return 0
            if getattr(args, "watch", False):
                client.wait_ready(getattr(args, "connect_timeout", 10.0))
                with contextlib.suppress(KeyboardInterrupt):
                    for answer in client.watch_review_packs(args.month or "", args.without_outcome):
                        stamp = datetime.now().astimezone().strftime("%H:%M:%S")
                        packs = list(answer.packs)
                        print(as_json(answer.org, packs) if args.json
                              else f"-- {stamp}\n{table(answer.org, packs)}\n", flush=True)
                return 0
            answer = client.review_packs(args.month or "", args.without_outcome)
    except PartnerError as exc:
        raise SystemExit(f"carehub reviews --remote: {exc}") from None
    packs = list(answer.packs)
    print(as_json(answer.org, packs) if args.json else table(answer.org, packs))
    return 0


def review_outcome_remote(args: argparse.Namespace) -> int:
    """`carehub review-outcome --remote PACK_ID --verdict V --factor F ... --action TEXT@OWNER[@DUE] ...`."""
    from carehub.review_report import parse_action

    try:
        actions = [parse_action(a) for a in args.action or []]
    except ValueError as exc:
        raise SystemExit(f"carehub review-outcome: {exc}") from None
    try:
        with _client(args) as client:
            outcome = client.record_review_outcome(args.pack_id, args.verdict, args.factor or [], actions,
                                                   args.conference_date or datetime.now(UTC).date().isoformat(),
                                                   args.notes or "")
    except PartnerError as exc:
        raise SystemExit(f"carehub review-outcome: {exc}") from None
    print(json.dumps(json_format.MessageToDict(outcome, preserving_proto_field_name=True), indent=2)
          if args.json else f"recorded: pack {outcome.pack_id}, {outcome.verdict}, factors "
                            f"{', '.join(outcome.factors) or 'none'}, {len(outcome.actions)} actions "
                            f"({outcome.taxonomy_version})")
    return 0
