"""An alert as a FHIR R4 notification: the message Bundle a FHIR partner receives. Pure; no I/O.

Two shapes, both ``Bundle.type = message`` with a ``MessageHeader`` first, so a partner needs one
endpoint that reads messages:

- **Admission, discharge and transfer** alerts (a rule whose ``on`` is one of those moments, and
  the alert new rather than a revision or retraction) follow the Da Vinci Unsolicited
  Notifications structure: ``eventCoding`` ``notification-admit`` / ``-discharge`` /
  ``-transfer`` from the Da Vinci notification-event code system, ``focus`` an ``Encounter``
  whose ``subject`` is the ``Patient`` and whose ``serviceProvider`` is the reporting
  ``Organization``; the alert's rule and detail are the header's ``reason``. That is what
  admission/discharge notification receivers already understand.
- **Every other alert** (follow-up due or overdue, frequent ED attender, death, indicator
  outliers) and every **revision or retraction** is a message whose focus is a ``Communication``
  (category ``alert``) carrying the alert's title and detail, the rule as its topic, and, for a
  revision or retraction, ``about`` naming the alert it changes. A Subscriptions-backport
  notification was the alternative; it needs a ``Subscription`` the partner created on the hub
  and a ``SubscriptionStatus`` in every Bundle, and carehub's partners are configured in the
  partners file, not by subscribing, so it would describe a subscription that does not exist.

Privacy: the person is named as in the gRPC alert, **only by the recipient's own record id**
(``Patient.identifier``); no hub person id, national number, name or other organisation's id is
in the alert, so none can be in the Bundle. Organisations are named by their ODS code.

Idempotency: ids are deterministic. ``Bundle.id`` is a name-based UUID of the alert id and
``Bundle.identifier`` is the alert id itself, so the same alert always gives the same Bundle (the
same bytes, for the same endpoint) and a receiver drops a repeat by either; a partner can
acknowledge over gRPC with that alert id.

The Bundles are valid FHIR R4 (checked with the R4B models, whose elements used here are the
same). They do not claim the Da Vinci or US Core profiles in ``meta.profile``: those require
demographics (names, gender) that an alert deliberately does not carry.
"""

from __future__ import annotations

import uuid
from typing import Any

from carehub.domain.alert_rules import RuleBook
from carehub.v1 import alerts_pb2 as al

DAVINCI_EVENTS = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
# alert moments (carehub/domain/alert_rules.py ``on``) that are Da Vinci notifications
DAVINCI_CODES = {"admission": "notification-admit", "discharge": "notification-discharge",
                 "transfer": "notification-transfer"}
DAVINCI_DISPLAY = {"notification-admit": "Admit Notification", "notification-discharge": "Discharge Notification",
                   "notification-transfer": "Transfer Notification"}
ENCOUNTER_STATUS = {"notification-admit": "in-progress", "notification-discharge": "finished",
                    "notification-transfer": "in-progress"}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
COMMUNICATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
# carehub's own naming systems (URNs: they name things only carehub defines)
ALERT_ID = "urn:carehub:alert-id"
ALERT_RULE = "urn:carehub:alert-rule"
MESSAGE_EVENTS = "urn:carehub:message-event"
INDICATOR_UNIT = "urn:carehub:indicator-unit"
SOURCE_ENDPOINT = "urn:carehub:hub"


def local_record_system(org: str) -> str:
    """The identifier system of ``org``'s own record ids (what ``Alert.local_id`` holds)."""
    return f"urn:carehub:local-record-id:{org}"


NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:carehub:fhir-notifications")
KIND_EVENTS = {al.ALERT_KIND_NEW: ("alert", "Alert"), al.ALERT_KIND_REVISION: ("alert-revision", "Alert revision"),
               al.ALERT_KIND_RETRACTION: ("alert-retraction", "Alert retraction")}
PRIORITY = {al.SEVERITY_INFO: "routine", al.SEVERITY_WARNING: "urgent", al.SEVERITY_URGENT: "asap"}
NOT_AN_ORGANISATION = {"", "carehub"}  # unit alerts are reported by the hub itself


def bundle_id(alert_id: str) -> str:
    """The Bundle id of an alert's notification: the same alert always gives the same id."""
    return _uuid("bundle", alert_id)


def davinci_event(alert: al.Alert, moment: str | None) -> str | None:
    """The Da Vinci event code for a new alert on an admission, discharge or transfer, else None."""
    if alert.kind not in (al.ALERT_KIND_NEW, al.ALERT_KIND_UNSPECIFIED):
        return None
    return DAVINCI_CODES.get(moment or "")


def moments(book: RuleBook) -> dict[str, str]:
    """Rule id -> its ``on`` moment: what :func:`notification_bundle` needs to know of each rule."""
    return {rule.id: rule.on for rule in book.rules}


def notification_bundle(alert: al.Alert, moment: str | None, endpoint: str = "") -> dict[str, Any]:
    """The FHIR R4 message Bundle (JSON data) for ``alert``.

    ``moment`` is the ``on`` of the alert's rule (``admission``, ``discharge``, ...; None when the
    rule is unknown); ``endpoint`` the partner's URL, named as the message's destination.
    """
    parts = _Parts(alert)
    event = davinci_event(alert, moment)
    focus = parts.encounter(event) if event is not None else parts.communication()
    if event is not None:
        coding = {"system": DAVINCI_EVENTS, "code": event, "display": DAVINCI_DISPLAY[event]}
    else:
        code, display = KIND_EVENTS.get(alert.kind, KIND_EVENTS[al.ALERT_KIND_NEW])
        coding = {"system": MESSAGE_EVENTS, "code": code, "display": display}
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": _uuid("header", alert.alert_id),
        "eventCoding": coding,
        "source": {"name": "carehub", "software": "carehub", "endpoint": SOURCE_ENDPOINT},
        "focus": [{"reference": focus["fullUrl"]}],
        "reason": {"coding": [parts.rule_coding()], "text": _with_provisional(alert) or alert.title or alert.rule},
    }
    if endpoint:
        destination: dict[str, Any] = {"endpoint": endpoint}
        if parts.recipient is not None:
            destination["receiver"] = {"reference": parts.recipient["fullUrl"]}
        header["destination"] = [destination]
    if parts.reporter is not None:
        header["responsible"] = {"reference": parts.reporter["fullUrl"]}
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": bundle_id(alert.alert_id),
        "identifier": {"system": ALERT_ID, "value": alert.alert_id},
        "type": "message",
    }
    if alert.HasField("raised_at"):
        bundle["timestamp"] = alert.raised_at.ToJsonString()
    bundle["entry"] = [_entry(header), focus, *parts.others()]
    return bundle


class _Parts:
    """The resources around the focus: the person and the organisations, each once."""

    def __init__(self, alert: al.Alert) -> None:
        self.alert = alert
        self.patient = _entry(_patient(alert.recipient_org, alert.local_id)) if alert.local_id else None
        self.recipient = _organisation(alert.recipient_org)
        source = alert.source_org
        self.reporter = (self.recipient if source == alert.recipient_org else _organisation(source))

    def others(self) -> list[dict[str, Any]]:
        out = [e for e in (self.patient, self.recipient, self.reporter) if e is not None]
        return [e for i, e in enumerate(out) if e not in out[:i]]

    def rule_coding(self) -> dict[str, Any]:
        coding = {"system": ALERT_RULE, "code": self.alert.rule or "unknown"}
        if self.alert.rule_version:
            coding["version"] = str(self.alert.rule_version)
        if self.alert.title:
            coding["display"] = self.alert.title
        return coding

    def encounter(self, event: str) -> dict[str, Any]:
        alert = self.alert
        resource: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": _uuid("encounter", alert.alert_id),
            "status": ENCOUNTER_STATUS[event],
            "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
        }
        if self.patient is not None:
            resource["subject"] = {"reference": self.patient["fullUrl"]}
        if alert.HasField("event_time"):
            at = alert.event_time.ToJsonString()
            resource["period"] = {"end": at} if event == "notification-discharge" else {"start": at}
        if self.reporter is not None:
            resource["serviceProvider"] = {"reference": self.reporter["fullUrl"]}
        return _entry(resource)

    def communication(self) -> dict[str, Any]:
        alert = self.alert
        resource: dict[str, Any] = {
            "resourceType": "Communication",
            "id": _uuid("communication", alert.alert_id),
            "identifier": [{"system": ALERT_ID, "value": alert.alert_id}],
            "status": "completed",
            "category": [{"coding": [{"system": COMMUNICATION_CATEGORY, "code": "alert"}]}],
            "priority": PRIORITY.get(alert.severity, "routine"),
            "topic": {"coding": [self.rule_coding()], "text": alert.title or alert.rule},
            "payload": [{"contentString": text} for text in (alert.title, _with_provisional(alert)) if text],
        }
        if self.patient is not None:
            resource["subject"] = {"reference": self.patient["fullUrl"]}
        about = []
        if alert.refers_to:
            about.append({"identifier": {"system": ALERT_ID, "value": alert.refers_to},
                          "display": "the alert this one revises or retracts"})
        if alert.unit:
            about.append({"identifier": {"system": INDICATOR_UNIT, "value": alert.unit}})
        if about:
            resource["about"] = about
        if alert.HasField("raised_at"):
            resource["sent"] = alert.raised_at.ToJsonString()
        if self.recipient is not None:
            resource["recipient"] = [{"reference": self.recipient["fullUrl"]}]
        return _entry(resource)


def _with_provisional(alert: al.Alert) -> str:
    if alert.provisional and alert.detail:
        return f"{alert.detail} (provisional: judged on a working diagnosis, not yet coded)"
    return alert.detail


def _patient(org: str, local_id: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": _uuid("patient", org, local_id),
            "identifier": [{"system": local_record_system(org), "value": local_id}]}


def _organisation(code: str) -> dict[str, Any] | None:
    if code in NOT_AN_ORGANISATION:
        return None
    return _entry({"resourceType": "Organization", "id": _uuid("organization", code),
                   "identifier": [{"system": ODS, "value": code}]})


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))
