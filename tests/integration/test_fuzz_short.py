"""`make fuzz`, short: 1,000 malformed inputs of each wire form, with valid traffic in between.

The machinery of tools/fuzz.py (carehub.fuzz.campaign) on one hub: ingest, the MLLP door and the
FHIR door as real processes on the embedded broker. Protobuf and JSON records go through the SDK,
HL7 v2 over MLLP connections, FHIR Bundles over mutual TLS. Nothing may crash, every malformed
input must have an outcome read back from the topics (accepted, degraded, dead-lettered with a
reason, dropped as a duplicate, refused at the door), and every valid input must be accepted.
Seed 6 holds, among others, 0.9 MB protobuf records, a 0.9 MB HL7 field and a 0.9 MB FHIR name.
"""

from __future__ import annotations

import time

import pytest

from carehub.fuzz.campaign import Plan, format_report, run_forms, start_services
from carehub.fuzz.corpus import FORMS
from carehub.harness import LocalHub

pytestmark = pytest.mark.integration

SEED, PER_FORM = 6, 1_000


def test_malformed_inputs_of_every_form_crash_nothing_and_are_all_accounted_for(hub: LocalHub) -> None:
    started = time.monotonic()
    doors = start_services(hub, FORMS)
    reports = run_forms(hub, doors, Plan(SEED, PER_FORM), deadline=time.monotonic() + 75, settle_timeout_s=60)
    text = "\n".join(format_report(r, SEED) for r in reports)
    for r in reports:
        assert not r.stopped_early and r.inputs == PER_FORM and r.valid_sent == PER_FORM // 10, text
        assert sum(r.crashes.values()) == 0, text
        assert r.unaccounted == [], text
        assert r.valid_lost == [], text
        assert sum(r.outcomes.values()) == r.inputs, text
        assert r.outcomes["dead-lettered"] and (r.outcomes["accepted"] or r.outcomes["degraded"]), text
    print(f"\n{text}\n({time.monotonic() - started:.0f} s)")
