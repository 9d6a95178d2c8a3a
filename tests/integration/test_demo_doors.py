"""`carehub run`'s feed through all three doors: the SDK, HL7 v2 over MLLP and FHIR over mutual TLS.

A small synthetic region is fed as the demo feeds it (carehub.demo.feed_region with doors) into
the real ingest, MLLP and FHIR services: every door message is accepted, the count the feed
returns is what the provider topic gets, and the door events are accepted by ingest under the
doors' own ids, joined to the same spells as the rest of the hospital's feed.
"""

from __future__ import annotations

import random

import pytest

from carehub import tlsgen
from carehub.demo import feed_region
from carehub.harness import LocalHub
from carehub.kafka.broker import free_port
from carehub.settings import load_settings
from carehub.synthetic import RegionConfig
from carehub.synthetic.orgs import build_directory
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing

pytestmark = pytest.mark.integration

PEOPLE, SEED = 400, 3


def test_the_demo_feed_uses_all_three_doors(hub: LocalHub, capsys: pytest.CaptureFixture[str]) -> None:
    config = RegionConfig(people=PEOPLE, seed=SEED)
    orgs = build_directory(config, random.Random(f"{config.seed}/orgs")).all
    pki = tlsgen.make_demo_pki(hub.data_dir / "pki", [o.code for o in orgs])
    senders = hub.data_dir / "fhir-senders.toml"
    senders.write_text("version = 1\n" + "".join(
        f'[senders.{o.code}]\nsector = "{ce.Sector.Name(o.sector).removeprefix("SECTOR_").lower()}"\n'
        for o in orgs))
    mllp_port, fhir_port = free_port(), free_port()
    hub.start("ingest")
    hub.start("mllp", CAREHUB_MLLP_PORT=str(mllp_port))
    hub.start("fhir", CAREHUB_FHIR_PORT=str(fhir_port), CAREHUB_FHIR_TLS_CERT=str(pki.server.cert),
              CAREHUB_FHIR_TLS_KEY=str(pki.server.key), CAREHUB_FHIR_CLIENT_CA=str(pki.ca.cert),
              CAREHUB_FHIR_SENDERS_FILE=str(senders))

    for port in (mllp_port, fhir_port):
        hub.wait_listening(port)
    settings = load_settings(kafka_bootstrap=hub.bootstrap, pseudonym_key=hub.key, topic_prefix=hub.prefix,
                             data_dir=hub.data_dir, partitions=hub.partitions, mllp_port=mllp_port,
                             fhir_port=fhir_port)

    sent = feed_region(hub.bootstrap, settings, PEOPLE, SEED, doors=True)

    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("MLLP ", "FHIR "))}
    assert set(lines) == {"MLLP", "FHIR"}, out
    for line in lines.values():
        words = line.replace(",", "").split()
        sent_n, accepted_n, refused_n = (int(words[words.index(w) + 1]) for w in ("sent", "accepted", "refused"))
        assert sent_n == accepted_n > 0 and refused_n == 0, line

    hub.wait_caught_up("ingest", ["provider.events"])
    assert len(hub.read("provider.events")) == sent
    accepted = [e for v in hub.values("ingest.accepted") for e in ing.AcceptedBatch.FromString(v).events]
    by_door = {"hl7v2-": 0, "fhir-": 0}
    for event in accepted:
        for prefix in by_door:
            if event.event_id.startswith(prefix):
                by_door[prefix] += 1
    assert all(by_door.values()), by_door
    # a spell admitted over FHIR is discharged over FHIR and coded on the SDK feed, all under one spell id
    fhir_spells = {(e.source_org, e.clinical.spell_id) for e in accepted
                   if e.event_id.startswith("fhir-") and e.event_type == ce.EVENT_TYPE_ADMISSION}
    spells: dict[tuple[str, str], set[int]] = {}
    for event in accepted:
        if (event.source_org, event.clinical.spell_id) in fhir_spells:
            spells.setdefault((event.source_org, event.clinical.spell_id), set()).add(event.event_type)
    assert any({ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_DISCHARGE, ce.EVENT_TYPE_DIAGNOSIS_CODED} <= kinds
               for kinds in spells.values()), spells
