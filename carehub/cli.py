"""The `carehub` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from carehub.settings import Settings, load_settings
from carehub.wire import iter_delimited


def _bootstrap(settings: Settings, arg: str | None, command: str) -> str:
    bootstrap = arg or settings.kafka_bootstrap
    if not bootstrap:
        raise SystemExit(f"carehub {command}: set CAREHUB_KAFKA_BOOTSTRAP or pass --bootstrap host:port")
    return bootstrap


def cmd_broker(args: argparse.Namespace) -> int:
    from carehub.kafka.broker import EmbeddedBroker, create_topics
    from carehub.topics import topic_specs

    settings = load_settings()
    with EmbeddedBroker(port=args.port) as broker:
        create_topics(broker.bootstrap, topic_specs(settings))
        print(f"embedded broker (Tansu, memory storage) on {broker.bootstrap}, pid {broker.pid}")
        print(f"export CAREHUB_KAFKA_BOOTSTRAP={broker.bootstrap}   # Ctrl-C stops the broker")
        sys.stdout.flush()
        _wait_for_interrupt()
    return 0


def _wait_for_interrupt() -> None:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()


def cmd_topics(args: argparse.Namespace) -> int:
    from carehub.kafka.broker import create_topics, wait_for_metadata
    from carehub.topics import topic_specs

    settings = load_settings()
    bootstrap = _bootstrap(settings, args.bootstrap, "topics")
    wait_for_metadata(bootstrap, args.wait)
    created = create_topics(bootstrap, topic_specs(settings))
    for spec in topic_specs(settings):
        state = "created" if spec.name in created else "exists"
        print(f"{spec.name:45} partitions={spec.partitions:<3} {state}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from carehub.runtime.services import run_service

    run_service('ingest')
    return 0


def _records_from_file(path: Path, fmt: str) -> Iterator[tuple[bytes, str]]:
    """(value, content type) per event: JSON lines as written, or length-delimited protobuf."""
    if fmt == "auto":
        fmt = "protobuf" if path.suffix in (".pb", ".bin", ".protobuf") else "jsonl"
    if fmt == "jsonl":
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    yield line.rstrip(b"\r\n"), "application/json"
        return
    try:
        for payload in iter_delimited(path.read_bytes()):
            yield payload, "application/x-protobuf"
    except ValueError as exc:
        raise SystemExit(f"carehub publish: {path} is not length-delimited protobuf ({exc})") from None


def cmd_identity(args: argparse.Namespace) -> int:
    if args.action == "explain":
        return _explain(args)
    if args.person:
        raise SystemExit("carehub identity: a person id goes with `explain` (carehub identity explain PERSON)")
    from carehub.runtime.services import run_service

    run_service('identity')
    return 0


def _explain(args: argparse.Namespace) -> int:
    from carehub import identity_desk as desk

    if not args.person:
        raise SystemExit("carehub identity explain: which person? (carehub identity explain PERSON)")
    settings = load_settings()
    bootstrap = _bootstrap(settings, args.bootstrap, "identity explain")
    because = desk.explain(args.person, desk.read_linked(bootstrap, settings), desk.read_registry(bootstrap, settings))
    if args.json:
        print(json.dumps({"person_id": args.person, "records": [
            {"source_org": b.org, "local_id": b.local_id, "because": list(b.reasons)} for b in because]}, indent=2))
    else:
        print(desk.explain_text(args.person, because))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from carehub import identity_desk as desk

    settings = load_settings()
    bootstrap = _bootstrap(settings, args.bootstrap, "review")
    if args.action in ("link", "separate"):
        if not args.id:
            raise SystemExit(f"carehub review {args.action}: which item? (carehub review {args.action} ID ...)")
        try:
            decision = desk.decide(bootstrap, settings, args.id, args.action, args.reviewer or "", args.why or "",
                                   timeout_s=args.timeout)
        except desk.DeskError as exc:
            raise SystemExit(f"carehub review {args.action}: {exc}") from None
        except TimeoutError as exc:
            raise SystemExit(f"carehub review {args.action}: {exc}") from None
        if args.json:
            from google.protobuf import json_format

            print(json.dumps(json_format.MessageToDict(decision, preserving_proto_field_name=True), indent=2))
        else:
            print(f"review item {args.id}: {desk.decision_text(decision)}")
        return 1 if desk.refused(decision) else 0
    items = desk.read_items(bootstrap, settings)
    if args.action == "list":
        waiting = desk.open_items(items)
        print(desk.as_json(waiting) if args.json else desk.list_text(waiting))
        return 0
    if not args.id or args.id not in items or not items[args.id].source_org:
        raise SystemExit(f"carehub review show: no review item {args.id!r}")
    item = items[args.id]
    print(desk.as_json([item]) if args.json else desk.show_text(item, desk.read_registry(bootstrap, settings)))
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    from carehub.runtime.services import run_service

    run_service('timeline')
    return 0


def cmd_indicators_worker(args: argparse.Namespace) -> int:
    from carehub.runtime.services import run_service

    run_service('indicators')
    return 0


def cmd_indicators(args: argparse.Namespace) -> int:
    if args.remote:
        from carehub.partner_cli import indicators_remote

        return indicators_remote(args)
    from carehub.domain.reference_values import load_reference_values
    from carehub.indicator_report import as_json, read_values, references_for, select, table

    settings = load_settings()
    bootstrap = _bootstrap(settings, args.bootstrap, "indicators")
    values = select(read_values(bootstrap, settings).values(), unit=args.unit, indicator=args.indicator,
                    window=None if args.window == "all" else args.window)
    references = references_for(load_reference_values(definitions=settings.indicator_definitions),
                                {v.indicator for v in values})
    print(as_json(values) if args.json else table(values, references))
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    if args.remote:
        from carehub.partner_cli import quality_remote

        return quality_remote(args)
    from carehub.quality_report import as_json, read_book, report, table

    if not args.org:
        raise SystemExit("carehub quality: --org ORG (or --remote, for your own organisation via the gateway)")
    settings = load_settings()
    days = report(read_book(_bootstrap(settings, args.bootstrap, "quality"), settings), args.org, args.days)
    print(as_json(days) if args.json else table(args.org, days))
    return 0


def cmd_population(args: argparse.Namespace) -> int:
    from carehub.runtime.services import run_service

    run_service("population")
    return 0


def cmd_caselists_worker(args: argparse.Namespace) -> int:
    from carehub.runtime.services import run_service

    run_service("caselists")
    return 0


def cmd_caselist(args: argparse.Namespace) -> int:
    if args.remote:
        from carehub.partner_cli import caselist_remote

        return caselist_remote(args)
    from carehub.caselist_report import as_json, read_lists, table
    from carehub.domain.caselists import by_org, only_new

    if not args.org:
        raise SystemExit("carehub caselist: --org ORG (or --remote, for your own organisation via the gateway)")
    settings = load_settings()
    case_list = by_org(read_lists(_bootstrap(settings, args.bootstrap, "caselist"), settings), args.org)
    if args.new_only:
        case_list = only_new(case_list)
    print(as_json(case_list) if args.json else table(case_list))
    return 0


def cmd_reviews_worker(args: argparse.Namespace) -> int:
    from carehub.runtime.services import run_service

    run_service("reviews")
    return 0


def cmd_reviews(args: argparse.Namespace) -> int:
    if args.remote:
        from carehub.partner_cli import reviews_remote

        return reviews_remote(args)
    from carehub.review_report import as_json, packs_of, read_outcomes, read_packs, table

    if not args.org or args.learning:
        raise SystemExit("carehub reviews: --org PRACTICE (or --remote, for your own practice's packs and the "
                         "learning counts via the gateway)")
    settings = load_settings()
    bootstrap = _bootstrap(settings, args.bootstrap, "reviews")
    packs = packs_of(read_packs(bootstrap, settings), read_outcomes(bootstrap, settings), args.org)
    packs = [p for p in packs if (not args.month or p.month == args.month)
             and not (args.without_outcome and p.HasField("outcome"))]
    print(as_json(args.org, packs) if args.json else table(args.org, packs))
    return 0


def cmd_review_outcome(args: argparse.Namespace) -> int:
    if not args.remote:
        raise SystemExit("carehub review-outcome: only the pack's practice records an outcome, over the gateway "
                         "(--remote --ca --cert --key)")
    from carehub.partner_cli import review_outcome_remote

    return review_outcome_remote(args)


def cmd_alerts_worker(args: argparse.Namespace) -> int:
    from carehub.runtime.services import run_service

    run_service('alerts')
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from carehub.runtime.services import run_service

    run_service('gateway')
    return 0


def cmd_mllp(args: argparse.Namespace) -> int:
    from carehub.runtime.services import run_service

    run_service("mllp")
    return 0


def cmd_send_hl7(args: argparse.Namespace) -> int:
    import asyncio

    from carehub.hl7_client import messages_of, send

    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"carehub send-hl7: no such file: {', '.join(missing)}")
    host, _, port = args.target.rpartition(":")
    try:
        outcomes = asyncio.run(send(host or "127.0.0.1", int(port), messages_of(paths), args.timeout))
    except (OSError, TimeoutError) as exc:
        raise SystemExit(f"carehub send-hl7: {args.target}: {exc or type(exc).__name__}") from None
    accepted = sum(o.code in ("AA", "CA") for o in outcomes)
    print(f"sent {len(outcomes)}, accepted {accepted}, not accepted {len(outcomes) - accepted}")
    return 0 if accepted == len(outcomes) else 1


def cmd_fhir(args: argparse.Namespace) -> int:
    from carehub.runtime.services import run_service

    run_service("fhir")
    return 0


def cmd_send_fhir(args: argparse.Namespace) -> int:
    import httpx

    from carehub.fhir_client import bundles_of, client, send

    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"carehub send-fhir: no such file: {', '.join(missing)}")
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    if bool(args.cert) != bool(args.key):
        raise SystemExit("carehub send-fhir: --cert and --key go together")
    answers = []
    with client(Path(args.ca) if args.ca else None, Path(args.cert) if args.cert else None,
                Path(args.key) if args.key else None, token, args.timeout) as http:
        for source, body in bundles_of(paths):
            try:
                answer = send(http, args.base, source, body)
            except httpx.HTTPError as exc:
                raise SystemExit(f"carehub send-fhir: {args.base}: {exc or type(exc).__name__}") from None
            answers.append(answer)
            print(f"{answer.source}: {answer.status} Bundle {answer.bundle_id or '(no id)'}")
            for issue in answer.issues:
                print(f"  {issue}")
    accepted = sum(a.accepted for a in answers)
    print(f"sent {len(answers)}, accepted {accepted}, not accepted {len(answers) - accepted}")
    return 0 if accepted == len(answers) else 1


def cmd_watch(args: argparse.Namespace) -> int:
    from carehub.partner_cli import watch

    return watch(args)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from carehub.dashboard.server import run

    return run(args)


def _add_gateway_options(p: argparse.ArgumentParser) -> None:
    """Where the partner gateway is and who we are to it (the certificate's CN, or the token's partner)."""
    p.add_argument("--target", default="127.0.0.1:50051", help="the gateway's host:port (default 127.0.0.1:50051)")
    p.add_argument("--ca", help="CA certificate (PEM) that issued the gateway's certificate")
    p.add_argument("--cert", help="client certificate (PEM) for mutual TLS; its CN is the organisation code")
    p.add_argument("--key", help="the client certificate's private key (PEM)")
    p.add_argument("--token-file", help="file holding a bearer token (instead of a certificate)")
    p.add_argument("--server-name", help="name to check the gateway's certificate against, if not the target host")


def _key_of(value: bytes, content_type: str) -> bytes | None:
    from carehub.v1 import care_event_pb2 as ce

    try:
        if content_type == "application/json":
            import orjson

            obj = orjson.loads(value)
            return f"{obj['sourceOrg']}/{obj['person']['localId']}".encode()
        event = ce.CareEvent.FromString(value)
        return f"{event.source_org}/{event.person.local_id}".encode()
    except Exception:
        return None  # the hub will dead-letter it; keying it is not our job


def cmd_publish(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from carehub.kafka.profile import client_profile
    from carehub.sdk import Publisher
    from carehub.telemetry import setup_tracing

    settings = load_settings()
    bootstrap = _bootstrap(settings, args.bootstrap, "publish")
    path = Path(args.file)
    if not path.exists():
        raise SystemExit(f"carehub publish: no such file: {path}")
    setup_tracing("carehub-publisher")
    topic = args.topic or settings.source_topics[0]
    records = list(_records_from_file(path, args.format))
    with (Publisher(bootstrap, topic=topic, profile=client_profile(settings)) as pub,
          tqdm(total=len(records), unit="ev", desc="publish") as bar):
        for value, content_type in records:
            pub.publish_raw(value, _key_of(value, content_type), content_type,
                            on_done=lambda _ok: bar.update(1))
        pub.flush()
    print(f"sent {pub.sent}, failed {pub.failed} to {topic} on {bootstrap}")
    for err in pub.errors[:5]:
        print(f"  error: {err}")
    return 0 if pub.failed == 0 else 1


def cmd_generate(args: argparse.Namespace) -> int:
    from carehub.synthetic import RegionConfig, generate_region, write_jsonl

    region = generate_region(RegionConfig(people=args.people, seed=args.seed))
    out = Path(args.out)
    write_jsonl(region, out)
    print(f"wrote {len(region.records)} records for {args.people} people (seed {args.seed}) to {out}")
    return 0


def cmd_fhir_dlq(args: argparse.Namespace) -> int:
    from carehub import fhir_deadletters as fdl

    settings = load_settings()
    bootstrap = _bootstrap(settings, args.bootstrap, "fhir-dlq")
    if args.action == "replay":
        n, skipped = fdl.replay(settings, args.partner, dry_run=args.dry_run, bootstrap=bootstrap)
        print(f"{'would replay' if args.dry_run else 'replayed'} {n} FHIR dead letters; "
              f"{skipped} were replayed before")
        return 0
    print("\n".join(fdl.list_lines(settings, args.partner, bootstrap=bootstrap, each=args.each)))
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from carehub import deadletters as dl
    from carehub.kafka.profile import client_profile
    from carehub.topics import deadletter_topic, replayed_topic
    from carehub.v1 import ingest_pb2 as ing

    settings = load_settings()
    bootstrap = _bootstrap(settings, args.bootstrap, "dlq")
    topic = deadletter_topic(settings)
    if args.action == "replay":
        n, skipped = dl.replay(bootstrap, topic, replayed_topic(settings), args.reason, dry_run=args.dry_run,
                               profile=client_profile(settings))
        verb = "would replay" if args.dry_run else "replayed"
        print(f"{verb} {n} dead letters; {skipped} were replayed before or came from the MLLP or FHIR door "
              "(their senders resend)")
        return 0
    letters = dl.read_dead_letters(bootstrap, topic, args.reason)
    if args.json:
        for s in letters[: args.limit]:
            print(json.dumps({
                "position": s.position, "reason": ing.RejectReason.Name(s.letter.reason),
                "message": s.letter.message, "source_topic": s.letter.source.topic,
                "source_partition": s.letter.source.partition, "source_offset": s.letter.source.offset,
                "event_id": s.letter.event_id, "source_org": s.letter.source_org,
                "rejected_time": s.letter.rejected_time.ToJsonString(),
            }))
        return 0
    counts = dl.summarise(letters)
    print(f"{len(letters)} dead letters in {topic}")
    for reason, n in counts.most_common():
        print(f"  {n:7}  {reason.removeprefix('REJECT_REASON_').lower()}")
    if args.reason:
        for s in letters[: args.limit]:
            src = s.letter.source
            print(f"  {s.position:>8}  {src.topic}[{src.partition}]@{src.offset}  "
                  f"{s.letter.source_org or '-'}/{s.letter.event_id or '-'}: {s.letter.message}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from carehub.demo import run_demo

    return run_demo(people=args.people, seed=args.seed)


def cmd_demo_feed(args: argparse.Namespace) -> int:
    from carehub.demo import feed_region

    settings = load_settings()
    bootstrap = _bootstrap(settings, args.bootstrap, "demo-feed")
    feed_region(bootstrap, settings, people=args.people, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carehub", description="carehub: integrated care hub")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="the demo: embedded broker, services, synthetic region (Ctrl-C stops)")
    p.add_argument("--people", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("broker", help="run the embedded Kafka-protocol broker on 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("topics", help="create carehub's topics on CAREHUB_KAFKA_BOOTSTRAP")
    p.add_argument("--bootstrap")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the cluster")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("ingest", help="run an ingest worker")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("identity", help="run the identity worker (one per deployment); `identity explain PERSON`: "
                                        "why each local record belongs to that person")
    p.add_argument("action", nargs="?", choices=["explain"])
    p.add_argument("person", nargs="?", help="explain: the hub person id")
    p.add_argument("--json", action="store_true", help="explain: as JSON")
    p.add_argument("--bootstrap")
    p.set_defaults(func=cmd_identity)

    p = sub.add_parser("review", help="the identity review desk: near matches to link or keep apart")
    p.add_argument("action", choices=["list", "show", "link", "separate"])
    p.add_argument("id", nargs="?", help="show, link, separate: the review item id")
    p.add_argument("--reviewer", help="link, separate: who decides (kept in the audit trail)")
    p.add_argument("--why", help="link, separate: the reason (kept in the audit trail)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="link, separate: seconds to wait for the identity stage to apply the decision")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.add_argument("--bootstrap")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("timeline", help="run a person-timeline worker")
    p.set_defaults(func=cmd_timeline)

    p = sub.add_parser("indicators-worker", help="run the indicators service (one per deployment)")
    p.set_defaults(func=cmd_indicators_worker)

    p = sub.add_parser("indicators", help="print the current indicator values")
    p.add_argument("--unit", help="e.g. practice:P001, locality:L01, provider:RR8 (shown beside the region)")
    p.add_argument("--indicator", help="e.g. acsc_chronic; default: all")
    p.add_argument("--window", default="12m", help="30d, 12m, now, a month YYYY-MM, or all (default 12m)")
    p.add_argument("--json", action="store_true", help="one JSON object per value")
    p.add_argument("--bootstrap")
    p.add_argument("--remote", action="store_true", help="ask the partner gateway (your entitled values only)")
    p.add_argument("--watch", action="store_true", help="with --remote: print the values again as they change")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="with --remote: seconds to connect")
    _add_gateway_options(p)
    p.set_defaults(func=cmd_indicators)

    p = sub.add_parser("quality", help="a sending organisation's data-quality report, per day")
    p.add_argument("--org", help="the sending organisation (operators, reading Kafka)")
    p.add_argument("--days", type=int, default=30, help="the last this many days (default 30)")
    p.add_argument("--json", action="store_true", help="one JSON object per day")
    p.add_argument("--bootstrap")
    p.add_argument("--remote", action="store_true", help="ask the partner gateway for your own organisation's")
    _add_gateway_options(p)
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("population", help="run a population-health worker: each person's risk assessment")
    p.set_defaults(func=cmd_population)

    p = sub.add_parser("caselists-worker", help="run the case-list service (one per deployment): tier cut-offs "
                                                "and every organisation's case list")
    p.set_defaults(func=cmd_caselists_worker)

    p = sub.add_parser("caselist", help="an organisation's case-finding list: its people in the top risk tiers")
    p.add_argument("--org", help="the practice or team (operators, reading Kafka)")
    p.add_argument("--new-only", action="store_true", help="only the people new on the list this week")
    p.add_argument("--json", action="store_true", help="the list as one JSON object")
    p.add_argument("--bootstrap")
    p.add_argument("--remote", action="store_true", help="ask the partner gateway for your own organisation's")
    p.add_argument("--watch", action="store_true", help="with --remote: print the list again each time it changes")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="with --remote: seconds to connect")
    _add_gateway_options(p)
    p.set_defaults(func=cmd_caselist)

    p = sub.add_parser("reviews-worker", help="run a reviews worker: avoidable-admission review packs")
    p.set_defaults(func=cmd_reviews_worker)

    p = sub.add_parser("reviews", help="a practice's avoidable-admission review packs for case conferences")
    p.add_argument("--org", help="the practice (operators, reading Kafka)")
    p.add_argument("--month", help="only admissions of this month (YYYY-MM)")
    p.add_argument("--without-outcome", action="store_true", help="only packs with no outcome recorded yet")
    p.add_argument("--learning", action="store_true", help="with --remote: the shared learning counts instead")
    p.add_argument("--watch", action="store_true", help="with --remote: print the packs again each time they change")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="with --remote: seconds to connect")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.add_argument("--bootstrap")
    p.add_argument("--remote", action="store_true", help="ask the partner gateway for your own practice's")
    _add_gateway_options(p)
    p.set_defaults(func=cmd_reviews)

    p = sub.add_parser("review-outcome", help="record a case conference's outcome for one of your review packs")
    p.add_argument("pack_id")
    p.add_argument("--verdict", required=True, help="a verdict code of the taxonomy (docs/review-packs.md)")
    p.add_argument("--factor", action="append", help="a contributory factor code (repeat for several)")
    p.add_argument("--action", action="append", help="an agreed action: TEXT@OWNER_ORG[@YYYY-MM-DD] (repeat)")
    p.add_argument("--conference-date", help="YYYY-MM-DD (default today)")
    p.add_argument("--notes")
    p.add_argument("--json", action="store_true", help="the recorded outcome as JSON")
    p.add_argument("--remote", action="store_true", help="over the partner gateway (required)")
    _add_gateway_options(p)
    p.set_defaults(func=cmd_review_outcome)

    p = sub.add_parser("alerts-worker", help="run an alert worker")
    p.set_defaults(func=cmd_alerts_worker)

    p = sub.add_parser("gateway", help="run the partner gateway (gRPC over TLS)")
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("mllp", help="run the HL7 v2 MLLP listener (CAREHUB_MLLP_PORT, default 2575)")
    p.set_defaults(func=cmd_mllp)

    p = sub.add_parser("send-hl7", help="send HL7 v2 messages over MLLP and print each ACK")
    p.add_argument("files", nargs="+", help="files of HL7 v2 messages (segments by line, messages by MSH)")
    p.add_argument("--target", default="127.0.0.1:2575", help="the MLLP listener's host:port")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each ACK")
    p.set_defaults(func=cmd_send_hl7)

    p = sub.add_parser("fhir", help="run the FHIR R4 endpoint (HTTPS; CAREHUB_FHIR_PORT, default 8443)")
    p.set_defaults(func=cmd_fhir)

    p = sub.add_parser("send-fhir", help="POST FHIR Bundles to the FHIR endpoint and print each answer")
    p.add_argument("files", nargs="+", help="files of one Bundle (JSON) each, or .ndjson with one per line")
    p.add_argument("--base", default="https://127.0.0.1:8443/fhir", help="the endpoint's base URL")
    p.add_argument("--ca", help="CA certificate (PEM) that issued the endpoint's certificate")
    p.add_argument("--cert", help="client certificate (PEM) for mutual TLS; its CN is the organisation code")
    p.add_argument("--key", help="the client certificate's private key (PEM)")
    p.add_argument("--token-file", help="file holding a bearer token (instead of a certificate)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer")
    p.set_defaults(func=cmd_send_fhir)

    p = sub.add_parser("watch", help="print your organisation's alerts from the partner gateway as they come")
    _add_gateway_options(p)
    p.add_argument("--partner", help="your organisation code, for display (the identity is the certificate/token)")
    p.add_argument("--cursor-file", help="keep the position here, to resume after a restart")
    p.add_argument("--ack", metavar="STATUS", help="acknowledge each alert shown: received, understood, actioned "
                                                   "or not_for_us")
    p.add_argument("--ack-note", default="", help="note sent with each acknowledgement")
    p.add_argument("--once", action="store_true", help="stop after the first alert")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N alerts")
    p.add_argument("--json", action="store_true", help="one JSON object per alert (with its cursor)")
    p.add_argument("--idle-timeout", type=float, default=120.0,
                   help="reconnect when nothing (not even a heartbeat) came for this many seconds; 0: never")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for the first connection")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("dashboard", help="serve a practice's dashboard page (HTML) from the partner gateway, "
                                         "with the practice's certificate")
    p.add_argument("--gateway", default="127.0.0.1:50051", help="the partner gateway's host:port "
                                                                "(default 127.0.0.1:50051)")
    p.add_argument("--ca", required=True, help="CA certificate (PEM) that issued the gateway's certificate")
    p.add_argument("--cert", required=True, help="the practice's client certificate (PEM); its CN is the practice")
    p.add_argument("--key", required=True, help="the client certificate's private key (PEM)")
    p.add_argument("--server-name", help="name to check the gateway's certificate against, if not the gateway host")
    p.add_argument("--host", default="127.0.0.1", help="address to serve the page on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to serve the page on (default 8080; 0: a free one)")
    p.add_argument("--name", help="how the page names the practice (default: its code)")
    p.add_argument("--cache-s", type=float, default=5.0, help="serve reloads within this many seconds from the "
                                                               "last reads (default 5)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each gateway read")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("publish", help="publish care events from a file")
    p.add_argument("file", help="JSON lines (one CareEvent per line) or length-delimited protobuf (.pb)")
    p.add_argument("--format", choices=["auto", "jsonl", "protobuf"], default="auto")
    p.add_argument("--topic", help="default: the first provider topic")
    p.add_argument("--bootstrap")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("generate", help="write the synthetic region as JSON lines")
    p.add_argument("--people", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("-o", "--out", default="region.jsonl")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo-feed", help="generate the synthetic region and publish it")
    p.add_argument("--people", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bootstrap")
    p.set_defaults(func=cmd_demo_feed)

    p = sub.add_parser("dlq", help="list dead letters by reason, or replay them")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--reason", help="e.g. future_timestamp, missing_field")
    p.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--dry-run", action="store_true", help="replay: count only")
    p.add_argument("--bootstrap")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("fhir-dlq", help="list alerts whose FHIR delivery gave up, or deliver them again")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--partner", help="only this partner's (organisation code)")
    p.add_argument("--each", action="store_true", help="list: one line per dead letter")
    p.add_argument("--dry-run", action="store_true", help="replay: count only")
    p.add_argument("--bootstrap")
    p.set_defaults(func=cmd_fhir_dlq)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    sys.exit(args.func(args))
