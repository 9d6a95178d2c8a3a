"""`make run` / `carehub run`: the hub on one machine with its embedded defaults.

Starts the embedded broker (unless CAREHUB_KAFKA_BOOTSTRAP names a cluster), an ingest
worker as a child process, publishes the synthetic region, and reports progress from the
worker's own /metrics until Ctrl-C, which stops the children it started, by pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tqdm import tqdm

from carehub.harness import scrape
from carehub.kafka.broker import kafka_for
from carehub.kafka.profile import client_profile
from carehub.runtime.services import SERVICES, service_command
from carehub.sdk import Publisher
from carehub.settings import Settings, load_settings

FIRST_METRICS_PORT = 9464  # ingest; identity, timeline, indicators, alerts and gateway on the next ports


def feed_region(bootstrap: str, settings: Settings, people: int, seed: int) -> int:
    """Generate the synthetic region and publish it; returns the number of records sent."""
    from carehub.synthetic import RegionConfig, generate_region

    print(f"generating the synthetic region: {people} people, seed {seed} ...", flush=True)
    region = generate_region(RegionConfig(people=people, seed=seed))
    records = list(region.records)
    with Publisher(bootstrap, topic=settings.source_topics[0], profile=client_profile(settings)) as pub, \
            tqdm(total=len(records), unit="ev", desc="publish") as bar:
        for rec in records:
            pub.publish_raw(rec.value, rec.key, rec.content_type, on_done=lambda _ok: bar.update(1))
        pub.flush()
    print(f"published {pub.sent} records ({pub.failed} failed)", flush=True)
    return pub.sent


def demo_partners(settings: Settings, people: int, seed: int) -> dict[str, str]:
    """TLS material and a partners file for every organisation of the synthetic region.

    The gateway never runs without TLS, so the demo makes its own CA under the data directory
    (kept between runs) and a client certificate per organisation, named by its code.
    """
    import random

    from carehub.synthetic import RegionConfig
    from carehub.synthetic.orgs import build_directory
    from carehub.tlsgen import make_demo_pki

    config = RegionConfig(people=people, seed=seed)
    orgs = [org.code for org in build_directory(config, random.Random(f"{config.seed}/orgs")).all]
    pki = make_demo_pki(settings.data_dir / "pki", orgs)
    partners = settings.data_dir / "partners.toml"
    partners.write_text("# the demo's partners: every organisation of the synthetic region\n" + "".join(
        f'[partners.{org}]\nname = "{org} (synthetic)"\n' for org in orgs))
    return {"CAREHUB_GATEWAY_TLS_CERT": str(pki.server.cert), "CAREHUB_GATEWAY_TLS_KEY": str(pki.server.key),
            "CAREHUB_GATEWAY_CLIENT_CA": str(pki.ca.cert), "CAREHUB_GATEWAY_PARTNERS_FILE": str(partners)}


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
            print(f"HL7 v2 over MLLP: mllp://{settings.mllp_host}:{settings.mllp_port} "
                  "(send with `.venv/bin/carehub send-hl7 FILE`)")
            try:
                sent = feed_region(bootstrap, settings, people, seed)
                _watch(urls, sent, children, bootstrap)
            finally:
                # the workers first, while the broker is still there to leave their groups cleanly
                _stop_children(children)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _stop_children(children)  # those started before an interrupt during start-up
    print("stopped" if interrupted else "done")
    return 0


def _watch(urls: dict[str, str], sent: int, children: list[subprocess.Popen[bytes]], bootstrap: str) -> None:
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
        line = (f"ingested {int(accepted + rejected + dups)}/{sent}: accepted {int(accepted)}, "
                f"dead-lettered {int(rejected)}, duplicates dropped {int(dups)}; linked {int(linked)}; "
                f"on timelines {int(timeline)}; indicator values {int(values)}; alerts {int(alerts)}")
        if line != last:
            print(line, flush=True)
            last = line
        if (not steady and accepted + rejected + dups >= sent and linked >= accepted and timeline >= linked
                and values > 0):
            steady = True
            print("steady state: every published record is accepted, dead-lettered or dropped as a duplicate,\n"
                  "and every accepted event is joined to a hub person and placed on their timeline.\n"
                  f"  metrics:      {', '.join(urls.values())}\n"
                  f"  dead letters: CAREHUB_KAFKA_BOOTSTRAP={bootstrap} .venv/bin/carehub dlq list\n"
                  f"  indicators:   CAREHUB_KAFKA_BOOTSTRAP={bootstrap} .venv/bin/carehub indicators"
                  " [--unit practice:B86001] [--window 30d]\n"
                  "  alerts:       .venv/bin/carehub watch --partner B86001 --ca .carehub/pki/ca.pem"
                  " --cert .carehub/pki/B86001.pem --key .carehub/pki/B86001.key\n"
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


