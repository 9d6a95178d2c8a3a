"""FHIR Bundles for the tests: Da Vinci notification messages and a Synthea-shaped transaction.

Built as JSON data so a test can spoil one element at a time; every Bundle here validates
against the R4B models (tests/unit/test_fhir_mapping.py checks that).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

NOTIFY = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
NHS = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
NHS_NUMBER = "9434765919"  # a valid synthetic NHS number (mod-11 check digit)


def patient(local_id: str = "MRN123", nhs_number: str = NHS_NUMBER) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "pat-1",
            "identifier": [{"system": NHS, "value": nhs_number},
                           {"system": "https://rr8.example.nhs.uk/Id/mrn", "value": local_id}],
            "name": [{"use": "official", "family": "Smith", "given": ["Ann"]}],
            "gender": "female", "birthDate": "1950-02-03",
            "address": [{"use": "home", "line": ["1 High Street"], "postalCode": "LS1 4AP"}],
            "generalPractitioner": [{"reference": "Organization/gp"}]}


def encounter(visit: str = "V001", klass: str = "IMP", status: str = "in-progress",
              start: str = "2026-11-30T09:15:00+00:00", end: str | None = None,
              priority: str | None = "EM") -> dict[str, Any]:
    enc: dict[str, Any] = {
        "resourceType": "Encounter", "id": "enc-1", "status": status,
        "identifier": [{"system": "https://rr8.example.nhs.uk/Id/visit", "value": visit}],
        "class": {"system": ACT, "code": klass}, "subject": {"reference": "Patient/pat-1"},
        "period": {"start": start, **({"end": end} if end else {})},
        "location": [{"location": {"reference": "Location/ward"}, "status": "active"}],
        "diagnosis": [{"condition": {"reference": "Condition/dx1"}, "rank": 1}],
    }
    if priority:
        enc["priority"] = {"coding": [{"system": PRIORITY, "code": priority}]}
    return enc


def _common(enc: dict[str, Any], verification: str = "provisional") -> list[dict[str, Any]]:
    return [
        {"fullUrl": "https://rr8.example.nhs.uk/fhir/Encounter/enc-1", "resource": enc},
        {"fullUrl": "https://rr8.example.nhs.uk/fhir/Patient/pat-1", "resource": patient()},
        {"fullUrl": "https://rr8.example.nhs.uk/fhir/Condition/dx1", "resource": {
            "resourceType": "Condition", "id": "dx1", "subject": {"reference": "Patient/pat-1"},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]},
            "code": {"coding": [{"system": ICD10, "code": "J44.1"}]}}},
        {"fullUrl": "https://rr8.example.nhs.uk/fhir/Organization/gp", "resource": {
            "resourceType": "Organization", "id": "gp", "identifier": [{"system": ODS, "value": "B86001"}]}},
        {"fullUrl": "https://rr8.example.nhs.uk/fhir/Location/ward", "resource": {
            "resourceType": "Location", "id": "ward", "name": "Ward 12"}},
    ]


def notification(event: str = "admit", bundle_id: str = "b-admit-1", **enc: Any) -> dict[str, Any]:
    """A Da Vinci Unsolicited Notification (message Bundle) for one Encounter."""
    verification = "confirmed" if event == "discharge" else "provisional"
    return {
        "resourceType": "Bundle", "id": bundle_id, "type": "message", "timestamp": "2026-11-30T09:20:00+00:00",
        "entry": [
            {"fullUrl": "urn:uuid:5cbc121b-cd71-4428-b8b7-31e53eba8184", "resource": {
                "resourceType": "MessageHeader", "id": "mh-1",
                "eventCoding": {"system": NOTIFY, "code": f"notification-{event}"},
                "source": {"endpoint": "https://rr8.example.nhs.uk/fhir"},
                "focus": [{"reference": "Encounter/enc-1"}]}},
            *_common(encounter(**enc), verification)]}


def transaction(bundle_id: str = "synthea-1", **enc: Any) -> dict[str, Any]:
    """A transaction Bundle of Patient, Encounter and Condition (the Synthea export shape)."""
    entries = _common(encounter(**enc), "confirmed")
    for entry in entries:
        kind = entry["resource"]["resourceType"]
        entry["request"] = {"method": "PUT", "url": f"{kind}/{entry['resource']['id']}"}
    return {"resourceType": "Bundle", "id": bundle_id, "type": "transaction", "entry": entries}


def body(bundle: dict[str, Any]) -> bytes:
    return orjson.dumps(bundle)


def spoiled(bundle: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(bundle)
