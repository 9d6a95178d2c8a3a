"""FHIR Bundles to care events without a broker: validation, each mapping path, refusals, warnings,
the data files' errors (carehub/domain/fhir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome

from carehub.domain.fhir.bundle import BundleRejected, expression, parse_bundle
from carehub.domain.fhir.mapping import MappedBundle, bundle_key, load_fhir_mapping, map_bundle
from carehub.domain.fhir.outcome import operation_outcome
from carehub.domain.fhir.senders import Sender, hash_token, load_senders
from carehub.domain.loader import DefinitionError
from carehub.v1 import care_event_pb2 as ce
from tests.fhir_bundles import NHS_NUMBER, body, notification, spoiled, transaction

MAPPING = load_fhir_mapping()
RR8 = Sender("RR8", ce.SECTOR_ACUTE)


def mapped(bundle: dict[str, Any], sender: Sender = RR8) -> MappedBundle:
    raw = body(bundle)
    return map_bundle(parse_bundle(raw, ("message", "transaction")), raw, sender, MAPPING)


def kinds(result: MappedBundle) -> list[str]:
    return [ce.EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in result.events]


@pytest.mark.parametrize("bundle", [notification("admit"), notification("discharge", status="finished"),
                                    notification("transfer"), transaction()])
def test_fixtures_are_valid_fhir(bundle: dict[str, Any]) -> None:
    Bundle.model_validate(bundle)


def test_operation_outcomes_are_valid_fhir() -> None:
    OperationOutcome.model_validate(operation_outcome([]))
    OperationOutcome.model_validate(operation_outcome(mapped(notification(priority=None)).refusal))


def test_admit_notification_is_an_admission_with_everything_carried() -> None:
    result = mapped(notification("admit"))
    assert result.accepted and not result.warnings and kinds(result) == ["ADMISSION"]
    event = result.events[0]
    assert (event.source_org, event.source_sector) == ("RR8", ce.SECTOR_ACUTE)
    assert event.person.local_id == "MRN123" and event.person.national_id == NHS_NUMBER
    assert (event.person.given_name, event.person.family_name, event.person.birth_date) == ("Ann", "Smith",
                                                                                         "1950-02-03")
    assert event.person.sex == ce.SEX_FEMALE and event.person.postcode == "LS1 4AP"
    assert event.registered_practice == "B86001"
    assert event.clinical.admission_method == ce.ADMISSION_METHOD_EMERGENCY
    assert event.clinical.location == "Ward 12" and event.clinical.spell_id == "V001"
    assert [(d.code, d.position, d.provisional) for d in event.clinical.diagnoses] == [("J44.1", 1, True)]
    assert event.event_time.ToJsonString() == "2026-11-30T09:15:00Z"
    assert event.recorded_time.ToJsonString() == "2026-11-30T09:20:00Z"


def test_event_ids_are_the_visits_so_a_resend_or_a_restatement_is_the_same_event() -> None:
    first = mapped(notification("admit", "b1"))
    again = mapped(notification("admit", "b2"))  # another Bundle about the same visit
    restated = mapped(transaction("t1"))         # the same visit in a transaction
    assert first.events[0].event_id == again.events[0].event_id == restated.events[0].event_id
    other = mapped(notification("admit", "b3", visit="V999"))
    assert other.events[0].event_id != first.events[0].event_id


def test_discharge_carries_final_diagnoses_as_a_coding_and_cancellation_targets_the_visit() -> None:
    result = mapped(notification("discharge", status="finished", end="2026-12-01T10:00:00Z"))
    assert kinds(result) == ["DISCHARGE", "DIAGNOSIS_CODED"]
    assert [(d.code, d.provisional) for d in result.events[1].clinical.diagnoses] == [("J44.1", False)]
    admission = mapped(notification("admit")).events[0]
    cancelled = mapped(notification("admit", "b-x", status="entered-in-error"))
    assert kinds(cancelled) == ["CANCELLATION", "CANCELLATION"]
    assert {e.target_event_id for e in cancelled.events} == {admission.event_id, result.events[0].event_id}


def test_ed_and_outpatient_classes() -> None:
    ed = mapped(notification("admit", klass="EMER", priority=None))
    assert kinds(ed) == ["ED_ATTENDANCE"]
    assert kinds(mapped(notification("admit", klass="AMB"))) == []
    odd = mapped(notification("admit", klass="XYZ"))
    assert kinds(odd) == [] and "not in [encounter_class]" in odd.warnings[0].diagnostics


def test_transaction_states_the_visit_as_it_stands() -> None:
    open_visit = mapped(transaction())
    assert kinds(open_visit) == ["ADMISSION"]
    closed = mapped(transaction(status="finished", end="2026-12-01T10:00:00Z"))
    assert kinds(closed) == ["ADMISSION", "DISCHARGE", "DIAGNOSIS_CODED"]


def test_imperfect_elements_degrade_with_a_warning_and_nothing_echoed() -> None:
    bundle = spoiled(notification())
    patient = bundle["entry"][2]["resource"]
    patient["identifier"][0]["value"] = "9434765918"  # wrong check digit
    patient["address"][0]["postalCode"] = "NOT A CODE"
    bundle["entry"][3]["resource"]["code"]["coding"][0]["system"] = "http://snomed.info/sct"
    result = mapped(bundle)
    assert result.accepted and kinds(result) == ["ADMISSION"]
    event = result.events[0]
    assert not event.person.national_id and not event.person.postcode and not event.clinical.diagnoses
    where = {w.expression: w.diagnostics for w in result.warnings}
    assert "NHS number" in where["Bundle.entry[2].resource.identifier[0]"]
    assert "Bundle.entry[2].resource.address.postalCode" in where
    assert "ICD-10" in where["Bundle.entry[3].resource.code"]
    assert not any("9434765918" in w.diagnostics or "NOT A CODE" in w.diagnostics for w in result.warnings)


@pytest.mark.parametrize(("spoil", "where", "words"), [
    (lambda b: b.update(entry=b["entry"][1:]), "Bundle.entry[0].resource", "MessageHeader"),
    (lambda b: b["entry"][0]["resource"]["eventCoding"].update(code="notification-other"),
     "Bundle.entry[0].resource.eventCoding", "not supported"),
    (lambda b: b["entry"][0]["resource"].update(focus=[{"reference": "Encounter/missing"}]),
     "Bundle.entry[0].resource.focus", "Encounter in this Bundle"),
    (lambda b: b["entry"][1]["resource"].pop("priority"), "Bundle.entry[1].resource.priority", "admission method"),
    (lambda b: b["entry"][1]["resource"].update(subject={"reference": "Patient/other"}),
     "Bundle.entry[1].resource.subject", "Patient in this Bundle"),
])
def test_bundles_that_cannot_mean_anything_are_refused_naming_the_element(spoil: Any, where: str,
                                                                         words: str) -> None:
    bundle = spoiled(notification())
    spoil(bundle)
    result = mapped(bundle)
    assert not result.accepted and result.events == []
    assert result.refusal[0].expression == where and words in result.refusal[0].diagnostics


def test_parse_names_every_problem_as_fhirpath() -> None:
    bundle = spoiled(notification())
    bundle["entry"][2]["resource"]["birthDate"] = "1950-13-45"
    bundle["entry"][2]["resource"]["shoeSize"] = 44
    with pytest.raises(BundleRejected) as caught:
        parse_bundle(body(bundle), ("message",))
    found = {i.expression for i in caught.value.issues}
    assert found == {"Bundle.entry[2].resource.birthDate", "Bundle.entry[2].resource.shoeSize"}
    with pytest.raises(BundleRejected, match=r"Bundle\.type"):
        parse_bundle(body(transaction()), ("message",))
    for raw in (b"", b"[1]", b'{"resourceType": "Patient"}'):
        with pytest.raises(BundleRejected):
            parse_bundle(raw, ("message",))
    assert expression(("entry", 0, "resource", "status__ext")) == "Bundle.entry[0].resource._status"


def test_bundle_identity_is_its_id_then_identifier_then_bytes() -> None:
    assert bundle_key({"id": "x"}, b"") == "id:x"
    assert bundle_key({"identifier": {"system": "s", "value": "v"}}, b"") == "identifier:s|v"
    assert bundle_key({}, b"a") != bundle_key({}, b"b")


def test_senders_identify_by_token_hash_and_bad_files_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "senders.toml"
    path.write_text(f'version = 1\n[senders.AXG]\nsector = "community"\ntoken_sha256 = ["{hash_token("t0k")}"]\n')
    senders = load_senders(path)
    assert senders.by_token("t0k") == Sender("AXG", ce.SECTOR_COMMUNITY) and senders.by_token("other") is None
    path.write_text('version = 1\n[senders.AXG]\nsector = "community"\ntoken_sha256 = ["t0k"]\n')
    with pytest.raises(DefinitionError, match=r"senders\.AXG.*token_sha256"):
        load_senders(path)
    path.write_text('version = 1\n[senders.AXG]\nsector = "space"\n')
    with pytest.raises(DefinitionError, match="sector"):
        load_senders(path)


def test_a_bad_mapping_file_names_the_entry(tmp_path: Path) -> None:
    text = MAPPING.path.read_text().replace('"http://terminology.hl7.org/CodeSystem/v3-ActCode|EMER"', '"EMER"')
    path = tmp_path / "mapping.toml"
    path.write_text(text)
    with pytest.raises(DefinitionError, match="encounter_class"):
        load_fhir_mapping(path)
    path.write_text(MAPPING.path.read_text().replace('= "start"', '= "begin"', 1))
    with pytest.raises(DefinitionError, match="events"):
        load_fhir_mapping(path)
