"""`make run` / `carehub run`: the hub on one machine with its embedded defaults.

Starts the embedded broker (unless CAREHUB_KAFKA_BOOTSTRAP names a cluster), an ingest
worker as a child process, publishes the synthetic region, and reports progress from the
worker's own /metrics until Ctrl-C, which stops the children it started, by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from tqdm import tqdm

from carehub import fhir_client, hl7_client
from carehub.domain.hl7v2.mapping import load_adt_mapping
from carehub.harness import scrape
from carehub.kafka.broker import kafka_for
from carehub.kafka.profile import client_profile
from carehub.runtime.services import SERVICES, service_command
from carehub.sdk import Publisher
from carehub.settings import Settings, load_settings
from carehub.synthetic.doors import Door, DoorMessage, Router, facilities_by_org, translate
from carehub.synthetic.region import KIND_DUPLICATE, MALFORMED_PREFIX, decode

FIRST_METRICS_PORT = 9464  # ingest; the other services of SERVICES on the next ports, in that order
DASHBOARD_PORT = 8080  # `carehub dashboard` for DASHBOARD_PRACTICE, the synthetic region's first practice
DASHBOARD_PRACTICE = "B86001"


def feed_region(bootstrap: str, settings: Settings, people: int, seed: int, *, doors: bool = False) -> int:
    """Generate the synthetic region and publish it; returns the number of records the provider
    topic gets (what ingest will have seen once it has caught up).

    With ``doors`` (``carehub run``), a share of the acute hospitals' visit events goes through the
    hub's other two doors instead of the SDK (carehub/synthetic/doors.py says which and how): HL7 v2
    ADT over MLLP, one connection with the messages in order, and FHIR notification Bundles over
    mutual TLS with each hospital's demo certificate. They are sent after the SDK records, once each
    door accepts connections (a door that does not within a minute stops the run, with its log),
    so their events may reach the hub a little after the rest. A refused message is counted and
    the first refusal printed. Resends (``duplicate`` records) of door events are not repeated.
    """
    from carehub.synthetic import RegionConfig, generate_region

    print(f"generating the synthetic region: {people} people, seed {seed} ...", flush=True)
    region = generate_region(RegionConfig(people=people, seed=seed))
    records: list[tuple[bytes, bytes, str]] = []  # (value, key, content type) for the SDK
    outbox: dict[Door, list[DoorMessage]] = {Door.MLLP: [], Door.FHIR: []}
    resends = 0
    if not doors:
        records = [(rec.value, rec.key, rec.content_type) for rec in region.records]
    else:
        facilities = facilities_by_org(load_adt_mapping(settings.hl7_mapping, settings.hl7_facilities).facilities)
        hospitals = {org.code for org in region.directory.hospitals}
        router = Router(hospitals, facilities)
        for rec in region.records:
            if rec.key.split(b"/", 1)[0].decode() not in hospitals or rec.kind.startswith(MALFORMED_PREFIX):
                records.append((rec.value, rec.key, rec.content_type))
                continue
            event = decode(rec)
            door = router.door(event)
            if door != Door.SDK:
                if rec.kind == KIND_DUPLICATE:
                    resends += 1
                else:
                    outbox[door].append(translate(event, door, facilities))
                continue
            records.append((rec.value, rec.key, rec.content_type))
        mllp_orgs = ", ".join(sorted({m.org for m in outbox[Door.MLLP]})) or "none"
        print(f"hospital visit events through the other doors: {len(outbox[Door.MLLP])} as HL7 v2 over MLLP "
              f"({mllp_orgs}: the organisations with a sending facility), {len(outbox[Door.FHIR])} as FHIR "
              f"Bundles; {len(records)} records through the SDK"
              + (f"; {resends} resends of door events not repeated" if resends else ""), flush=True)
    with Publisher(bootstrap, topic=settings.source_topics[0], profile=client_profile(settings)) as pub, \
            tqdm(total=len(records), unit="ev", desc="publish") as bar:
        for value, key, content_type in records:
            pub.publish_raw(value, key, content_type, on_done=lambda _ok: bar.update(1))
        pub.flush()
    print(f"published {pub.sent} records ({pub.failed} failed)", flush=True)
    if not doors:
        return pub.sent

    door_wait_s = 60.0

    def wait_for(door: str, host: str, port: int, log: str) -> None:
        deadline = time.monotonic() + door_wait_s
        while True:
            try:
                socket.create_connection((host, port), timeout=2).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the {door} door at {host}:{port} did not accept connections within "
                                     f"{door_wait_s:.0f} s ({exc}); see {settings.data_dir / 'logs' / log}") from None
                time.sleep(0.5)

    def report(door: str, where: str, sent: int, accepted: int, refusals: list[str]) -> None:
        print(f"{door:4} {where}: sent {sent}, accepted {accepted}, refused {len(refusals)}", flush=True)
        if refusals:
            print(f"     first refusal: {refusals[0]}", flush=True)

    events = 0
    messages = outbox[Door.MLLP]
    host, port = settings.mllp_host, settings.mllp_port
    if not messages:
        report("MLLP", f"mllp://{host}:{port}", 0, 0, [])
    else:
        wait_for("MLLP", host, port, "mllp.log")
        with tqdm(total=len(messages), unit="msg", desc="MLLP") as bar:
            def frames() -> Iterator[tuple[str, bytes]]:
                for message in messages:
                    yield message.source, message.body
                    bar.update(1)  # asked for the next one: this one's ACK is in
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # hl7_client prints a line per ACK
                    outcomes = asyncio.run(hl7_client.send(host, port, frames()))
            except (TimeoutError, OSError, EOFError, asyncio.IncompleteReadError) as exc:
                raise SystemExit(f"the MLLP door at {host}:{port} failed while sending "
                                 f"({type(exc).__name__}: {exc}); see {settings.data_dir / 'logs' / 'mllp.log'}",
                                 ) from None
        accepted_mllp = [m for m, o in zip(messages, outcomes, strict=True) if o.code in ("AA", "CA")]
        events += sum(m.events for m in accepted_mllp)
        report("MLLP", f"mllp://{host}:{port}", len(outcomes), len(accepted_mllp),
               [f"{o.source}: {o.code} {o.text}" for o in outcomes if o.code not in ("AA", "CA")])
    messages = outbox[Door.FHIR]
    host, port = settings.fhir_host, settings.fhir_port
    base = f"https://{host}:{port}/fhir"
    if not messages:
        report("FHIR", base, 0, 0, [])
    else:
        pki = settings.data_dir / "pki"
        wait_for("FHIR", host, port, "fhir.log")
        answers: list[fhir_client.Answer] = []
        with contextlib.ExitStack() as stack, tqdm(total=len(messages), unit="bundle", desc="FHIR") as bar:
            clients: dict[str, httpx.Client] = {}
            for message in messages:
                http = clients.get(message.org)
                if http is None:  # each hospital sends with its own certificate: its code is the sender
                    try:
                        http = clients[message.org] = stack.enter_context(fhir_client.client(
                            pki / "ca.pem", pki / f"{message.org}.pem", pki / f"{message.org}.key", None, 30.0))
                    except OSError as exc:  # ssl.SSLError is one too
                        raise SystemExit(f"FHIR: no usable client certificate for {message.org} under {pki} "
                                         f"({exc})") from None
                try:
                    answers.append(fhir_client.send(http, base, message.source, message.body))
                except httpx.HTTPError as exc:
                    raise SystemExit(f"the FHIR door at {base} failed while sending ({type(exc).__name__}: "
                                     f"{exc}); see {settings.data_dir / 'logs' / 'fhir.log'}") from None
                bar.update(1)
        accepted_fhir = [m for m, a in zip(messages, answers, strict=True) if a.accepted]
        events += sum(m.events for m in accepted_fhir)
        report("FHIR", base, len(answers), len(accepted_fhir),
               [f"{a.source}: HTTP {a.status} {'; '.join(a.issues)[:300]}" for a in answers if not a.accepted])
    return pub.sent + events


def demo_partners(settings: Settings, people: int, seed: int) -> dict[str, str]:
    """TLS material, partners, FHIR senders and HL7 v2 facilities for the organisations of the region.

    The gateway and the FHIR door never run without TLS, so the demo makes its own CA under the
    data directory (kept between runs) and a client certificate per organisation, named by its code.
    """
    import random

    from carehub.synthetic import RegionConfig
    from carehub.synthetic.orgs import OrgKind, build_directory
    from carehub.tlsgen import make_demo_pki
    from carehub.v1.care_event_pb2 import Sector

    config = RegionConfig(people=people, seed=seed)
    directory = build_directory(config, random.Random(f"{config.seed}/orgs")).all
    orgs = [org.code for org in directory]
    pki = make_demo_pki(settings.data_dir / "pki", orgs)
    # the FHIR door: every organisation may send, with its client certificate (mutual TLS)
    senders = settings.data_dir / "fhir-senders.toml"
    senders.write_text("# the demo's FHIR senders: every organisation of the synthetic region\nversion = 1\n" + "".join(
        f'[senders.{org.code}]\nsector = "{Sector.Name(org.sector).removeprefix("SECTOR_").lower()}"\n'
        for org in directory))
    # the MLLP door: each hospital's PAS writes its own code in MSH-4
    facilities = settings.data_dir / "hl7-facilities.toml"
    facilities.write_text("# the demo's HL7 v2 sending facilities: the region's hospitals\nversion = 1\n" + "".join(
        f'[[facilities]]\nfacility = "{org.code}"\norg = "{org.code}"\nsector = "acute"\n'
        for org in directory if org.sector == Sector.SECTOR_ACUTE))
    partners = settings.data_dir / "partners.toml"
    # a practice sees its peers' indicator values beside its own (its dashboard page compares them), its
    # locality's and the region's; every other organisation its own and the region's (the default)
    practices = [org.code for org in directory if org.kind == OrgKind.PRACTICE]
    peers = ", ".join(f'"practice:{code}"' for code in practices)
    partners.write_text("# the demo's partners: every organisation of the synthetic region\n" + "".join(
        f'[partners.{org.code}]\nname = "{org.code} (synthetic)"\n'
        + (f'units = ["region", "locality:{org.locality}", {peers}]\n' if org.kind == OrgKind.PRACTICE else "")
        for org in directory))
    return {"CAREHUB_GATEWAY_TLS_CERT": str(pki.server.cert), "CAREHUB_GATEWAY_TLS_KEY": str(pki.server.key),
            "CAREHUB_GATEWAY_CLIENT_CA": str(pki.ca.cert), "CAREHUB_GATEWAY_PARTNERS_FILE": str(partners),
            "CAREHUB_FHIR_TLS_CERT": str(pki.server.cert), "CAREHUB_FHIR_TLS_KEY": str(pki.server.key),
            "CAREHUB_FHIR_CLIENT_CA": str(pki.ca.cert), "CAREHUB_FHIR_SENDERS_FILE": str(senders),
            "CAREHUB_HL7_FACILITIES": str(facilities)}


def run_demo(people: int, seed: int) -> int:
    settings = load_settings(profile=os.environ.get("CAREHUB_PROFILE", "demo"))
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    children: list[subprocess.Popen[bytes]] = []
    interrupted = False

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        with kafka_for(settings, log_path=logs / "broker.log") as bootstrap:
            embedded = not settings.kafka_bootstrap
            print(f"kafka: {bootstrap}{' (embedded Tansu broker, memory storage)' if embedded else ''}")
            urls: dict[str, str] = {}
            gateway_env = demo_partners(settings, people, seed)
            for i, service in enumerate(SERVICES):
                port = FIRST_METRICS_PORT + i
                env = dict(os.environ, CAREHUB_KAFKA_BOOTSTRAP=bootstrap, CAREHUB_PROFILE=settings.profile.value,
                           CAREHUB_METRICS_PORT=str(port), CAREHUB_DATA_DIR=str(settings.data_dir),
                           CAREHUB_WEB_PORT=str(settings.web_port + i), CAREHUB_WORKER_NAME=f"demo-{service}",
                           **gateway_env)
                log = logs / f"{service}.log"
                children.append(subprocess.Popen(service_command(service), env=env,
                                                 stdout=log.open("ab"), stderr=subprocess.STDOUT))
                urls[service] = f"http://127.0.0.1:{port}/metrics"
                print(f"{service:8} worker pid {children[-1].pid}; log {log}; metrics {urls[service]}")
            dashboard = _start_dashboard(settings, logs, children)
            print(f"HL7 v2 over MLLP: mllp://{settings.mllp_host}:{settings.mllp_port} "
                  "(send with `.venv/bin/carehub send-hl7 FILE`)")
            print(f"FHIR R4: https://{settings.fhir_host}:{settings.fhir_port}/fhir (send with `.venv/bin/carehub "
                  f"send-fhir FILE --ca {settings.data_dir}/pki/ca.pem --cert {settings.data_dir}/pki/<ORG>.pem "
                  f"--key {settings.data_dir}/pki/<ORG>.key`)")
            try:
                facilities = Path(gateway_env["CAREHUB_HL7_FACILITIES"])
                door_settings = settings.model_copy(update={"hl7_facilities": facilities})
                sent = feed_region(bootstrap, door_settings, people, seed, doors=True)
                _watch(urls, sent, children, bootstrap, settings, dashboard)
            finally:
                # the workers first, while the broker is still there to leave their groups cleanly
                _stop_children(children)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _stop_children(children)  # those started before an interrupt during start-up
    print("stopped" if interrupted else "done")
    return 0


def _packs_now(bootstrap: str, settings: Settings) -> str:
    """How many review packs are published now, and for how many practices (from the topic)."""
    from carehub.review_report import read_packs

    try:
        packs = read_packs(bootstrap, settings, timeout_s=30)
    except TimeoutError:
        return "review packs: not read in time"
    return f"review packs now: {len(packs)}, for {len({p.practice for p in packs.values()})} practices"


def _start_dashboard(settings: Settings, logs: Path, children: list[subprocess.Popen[bytes]]) -> str:
    """`carehub dashboard` for the demo's first practice, with its certificate; its URL."""
    pki = settings.data_dir / "pki"
    log = logs / "dashboard.log"
    url = f"http://127.0.0.1:{DASHBOARD_PORT}/"
    children.append(subprocess.Popen(
        [sys.executable, "-m", "carehub", "dashboard", "--gateway", f"127.0.0.1:{settings.gateway_port}",
         "--ca", str(pki / "ca.pem"), "--cert", str(pki / f"{DASHBOARD_PRACTICE}.pem"),
         "--key", str(pki / f"{DASHBOARD_PRACTICE}.key"), "--port", str(DASHBOARD_PORT)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT))
    print(f"dashboard page of practice {DASHBOARD_PRACTICE}: {url} (pid {children[-1].pid}; log {log})")
    return url


def _watch(urls: dict[str, str], sent: int, children: list[subprocess.Popen[bytes]], bootstrap: str,
           settings: Settings, dashboard: str) -> None:
    print("waiting for the workers (Ctrl-C stops everything) ...", flush=True)
    steady = False
    last = ""
    while True:
        for child in children:
            if child.poll() is not None:
                raise SystemExit(f"a service exited with code {child.returncode}; see the logs under .carehub/logs")
        try:
            m: dict[str, float] = {}
            for url in urls.values():
                m |= scrape(url)
        except OSError:
            time.sleep(1)
            continue
        accepted = m.get("carehub_ingest_accepted_total", 0)
        rejected = m.get("carehub_ingest_rejected_total", 0)
        dups = m.get("carehub_ingest_duplicates_total", 0)
        linked = m.get("carehub_identity_linked_total", 0)
        timeline = m.get("carehub_timeline_events_total", 0)
        values = m.get("carehub_indicators_values", 0)
        alerts = m.get("carehub_alerts_raised_total", 0)
        risk = m.get("carehub_population_events_total", 0)
        listed = m.get("carehub_caselists_entries", 0)
        packs = m.get("carehub_reviews_packs_written_total", 0)
        withdrawn = m.get("carehub_reviews_packs_withdrawn_total", 0)
        line = (f"ingested {int(accepted + rejected + dups)}/{sent}: accepted {int(accepted)}, "
                f"dead-lettered {int(rejected)}, duplicates dropped {int(dups)}; linked {int(linked)}; "
                f"on timelines {int(timeline)}; indicator values {int(values)}; alerts {int(alerts)}; "
                f"risk-assessed events {int(risk)}; on case lists {int(listed)}; "
                f"review packs written {int(packs)} (withdrawn {int(withdrawn)})")
        if line != last:
            print(line, flush=True)
            last = line
        if (not steady and accepted + rejected + dups >= sent and linked >= accepted and timeline >= linked
                and values > 0 and risk >= timeline):
            steady = True
            print(_packs_now(bootstrap, settings), flush=True)
            print("steady state: every published record is accepted, dead-lettered or dropped as a duplicate,\n"
                  "every accepted event is joined to a hub person, placed on their timeline and taken into\n"
                  "their risk assessment.\n"
                  f"  metrics:      {', '.join(urls.values())}\n"
                  f"  dead letters: CAREHUB_KAFKA_BOOTSTRAP={bootstrap} .venv/bin/carehub dlq list\n"
                  f"  indicators:   CAREHUB_KAFKA_BOOTSTRAP={bootstrap} .venv/bin/carehub indicators"
                  " [--unit practice:B86001] [--window 30d]\n"
                  "  alerts:       .venv/bin/carehub watch --partner B86001 --ca .carehub/pki/ca.pem"
                  " --cert .carehub/pki/B86001.pem --key .carehub/pki/B86001.key\n"
                  f"  case list:    CAREHUB_KAFKA_BOOTSTRAP={bootstrap} .venv/bin/carehub caselist --org B86001"
                  " (or --remote --ca .carehub/pki/ca.pem --cert .carehub/pki/B86001.pem"
                  " --key .carehub/pki/B86001.key)\n"
                  f"  review packs: CAREHUB_KAFKA_BOOTSTRAP={bootstrap} .venv/bin/carehub reviews --org B86001"
                  " (or --remote --ca .carehub/pki/ca.pem --cert .carehub/pki/B86001.pem"
                  " --key .carehub/pki/B86001.key)\n"
                  f"  dashboard:    {dashboard} (practice {DASHBOARD_PRACTICE}'s page, read from the gateway with its"
                  " certificate)\n"
                  "Ctrl-C stops everything.", flush=True)
        time.sleep(2)


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


