"""Alerts as FHIR notification Bundles: the shapes, R4 validity, determinism and privacy.

The alerts are the alert engine's own (tests/unit/test_alert_rules.py's frail man), so the
Bundles are those a partner would receive; each is validated with fhir.resources' R4B models.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle

from carehub.domain.alert_rules import load_rules
from carehub.domain.fhir.notifications import (
    ALERT_ID,
    DAVINCI_EVENTS,
    MESSAGE_EVENTS,
    bundle_id,
    davinci_event,
    local_record_system,
    moments,
    notification_bundle,
)
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import indicators_pb2 as ind
from tests.unit.test_alert_rules import GP, HOSPITAL, NOW, OCT, SOCIAL, Person

MOMENTS = moments(load_rules())
ENDPOINT = "https://fhir.riverside.example/notifications"


def resources(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle["entry"]:
        out.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return out


def valid(alert: al.Alert) -> dict[str, Any]:
    bundle = notification_bundle(alert, MOMENTS.get(alert.rule), ENDPOINT)
    Bundle.model_validate(bundle)  # raises on anything FHIR R4(B) does not allow
    entries = bundle["entry"]
    assert entries[0]["resource"]["resourceType"] == "MessageHeader"
    urls = [e["fullUrl"] for e in entries]
    assert len(urls) == len(set(urls))
    for e in entries:  # every reference resolves inside the Bundle
        assert e["fullUrl"] == f"urn:uuid:{e['resource']['id']}"
    for ref in _references(bundle):
        assert ref in urls, ref
    return bundle


def _references(value: object) -> list[str]:
    if isinstance(value, dict):
        own = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return own + [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def admitted() -> tuple[Person, list[al.Alert]]:
    p = Person()
    p.known()
    return p, p.admit(OCT, "N10")  # pyelonephritis: an ACSC, to the GP and the social worker


def test_an_admission_is_a_da_vinci_admit_notification_about_the_partners_own_record() -> None:
    _, alerts = admitted()
    gp = next(a for a in alerts if a.recipient_org == GP)
    bundle = valid(gp)
    header = bundle["entry"][0]["resource"]
    assert header["eventCoding"] == {"system": DAVINCI_EVENTS, "code": "notification-admit",
                                     "display": "Admit Notification"}
    found = resources(bundle)
    (encounter,) = found["Encounter"]
    assert header["focus"] == [{"reference": f"urn:uuid:{encounter['id']}"}]
    assert encounter["status"] == "in-progress" and encounter["class"]["code"] == "IMP"
    assert encounter["period"] == {"start": "2026-10-01T10:00:00Z"}
    (patient,) = found["Patient"]
    assert patient["identifier"] == [{"system": local_record_system(GP), "value": "P-4471"}]
    assert set(patient) == {"resourceType", "id", "identifier"}  # nothing else about the person
    assert encounter["subject"] == {"reference": f"urn:uuid:{patient['id']}"}
    orgs = {o["identifier"][0]["value"]: o for o in found["Organization"]}
    assert set(orgs) == {GP, HOSPITAL}
    assert encounter["serviceProvider"] == {"reference": f"urn:uuid:{orgs[HOSPITAL]['id']}"}
    assert header["destination"] == [{"endpoint": ENDPOINT, "receiver": {"reference": f"urn:uuid:{orgs[GP]['id']}"}}]
    assert header["reason"]["coding"][0]["code"] == "acsc_emergency_admission"
    assert "N10" in header["reason"]["text"] and "provisional" in header["reason"]["text"]
    assert bundle["identifier"] == {"system": ALERT_ID, "value": gp.alert_id}
    text = orjson.dumps(bundle).decode()
    # only the GP's own record id: not the hospital's, the social worker's, or the hub's person id
    for other in ("H-99812", "C-7730", "person-1", "9434765919", "Whitfield"):
        assert other not in text


def test_a_discharge_is_a_da_vinci_discharge_notification() -> None:
    p, _ = admitted()
    due = p.send(p.event(ce.EVENT_TYPE_DISCHARGE, OCT + timedelta(days=3), discharge_destination="19"))
    alert = next(a for a in due if a.rule == "discharge_followup_due")
    bundle = valid(alert)
    assert bundle["entry"][0]["resource"]["eventCoding"]["code"] == "notification-discharge"
    (encounter,) = resources(bundle)["Encounter"]
    assert encounter["status"] == "finished" and encounter["period"] == {"end": "2026-10-04T10:00:00Z"}


def test_other_alerts_revisions_and_retractions_are_communications() -> None:
    p, alerts = admitted()
    first = {a.recipient_org: a for a in alerts}
    revision = p.send(p.event(ce.EVENT_TYPE_DIAGNOSIS_CODED, OCT + timedelta(days=4),
                              diagnoses=[ce.Diagnosis(code="N10", position=1)]))
    death = p.send(p.event(ce.EVENT_TYPE_DEATH, OCT + timedelta(days=9)))
    outlier = p.engine.on_signal(ind.IndicatorValue(indicator="acsc_all", unit="provider:RR8", window="12m",
                                                    title="ACSC admissions", as_of="2026-10-31",
                                                    outlier="high_998", value=2.0, regional_value=1.0), NOW)
    assert revision and death and outlier
    for alert in [*revision, *death, *outlier]:
        bundle = valid(alert)
        header = bundle["entry"][0]["resource"]
        assert header["eventCoding"]["system"] == MESSAGE_EVENTS
        (communication,) = resources(bundle)["Communication"]
        assert header["focus"] == [{"reference": f"urn:uuid:{communication['id']}"}]
        assert communication["identifier"] == [{"system": ALERT_ID, "value": alert.alert_id}]
        assert communication["category"][0]["coding"][0]["code"] == "alert"
        assert communication["payload"][0]["contentString"] == alert.title
    gp_revision = next(a for a in revision if a.recipient_org == GP)
    bundle = valid(gp_revision)
    assert bundle["entry"][0]["resource"]["eventCoding"]["code"] == "alert-revision"
    (communication,) = resources(bundle)["Communication"]
    assert {"identifier": {"system": ALERT_ID, "value": first[GP].alert_id},
            "display": "the alert this one revises or retracts"} in communication["about"]
    unit = valid(outlier[0])
    assert "Patient" not in resources(unit)  # a unit alert is about no one
    (communication,) = resources(unit)["Communication"]
    assert communication["about"] == [{"identifier": {"system": "urn:carehub:indicator-unit",
                                                      "value": "provider:RR8"}}]


def test_the_same_alert_always_gives_the_same_bundle() -> None:
    _, alerts = admitted()
    gp, social = sorted(alerts, key=lambda a: a.recipient_org)
    again = al.Alert.FromString(gp.SerializeToString())
    assert orjson.dumps(notification_bundle(gp, "admission", ENDPOINT)) == \
        orjson.dumps(notification_bundle(again, "admission", ENDPOINT))
    assert notification_bundle(gp, "admission")["id"] == bundle_id(gp.alert_id)
    assert bundle_id(gp.alert_id) != bundle_id(social.alert_id)
    assert {gp.recipient_org, social.recipient_org} == {GP, SOCIAL}


@pytest.mark.parametrize(("moment", "kind", "code"), [
    ("admission", al.ALERT_KIND_NEW, "notification-admit"),
    ("discharge", al.ALERT_KIND_NEW, "notification-discharge"),
    ("transfer", al.ALERT_KIND_NEW, "notification-transfer"),  # no packaged rule fires on transfer yet
    ("admission", al.ALERT_KIND_REVISION, None),
    ("discharge", al.ALERT_KIND_RETRACTION, None),
    ("death", al.ALERT_KIND_NEW, None),
    (None, al.ALERT_KIND_NEW, None),  # a rule the gateway does not know
])
def test_which_alerts_are_da_vinci_notifications(moment: str | None, kind: int, code: str | None) -> None:
    alert = al.Alert(alert_id="a1", kind=kind, rule="r", recipient_org=GP, local_id="P-1",  # type: ignore[arg-type]
                     source_org=HOSPITAL, title="t", detail="d")
    alert.raised_at.FromSeconds(1_800_000_000)
    alert.event_time.FromSeconds(1_799_990_000)
    assert davinci_event(alert, moment) == code
    valid(alert)  # every shape validates, with whatever the alert has
