"""FHIR delivery's rules and configuration, without a socket: answers, waits, the partners file's
FHIR table, tokens from the environment, TLS files, and the dead-letter record.

The loop itself, against a real HTTP server and the real broker, is in
tests/integration/test_fhir_delivery.py.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import orjson
import pytest

from carehub import tlsgen
from carehub.fhir_deadletters import GAVE_UP, FhirDeadLetter, replay_of
from carehub.settings import Settings
from carehub.v1 import alerts_pb2 as al
from services.gateway.fhir_delivery import Target, client_ssl_context, targets
from services.gateway.fhir_policy import (
    Verdict,
    backoff,
    backoff_ceiling,
    next_wait,
    outcome_excerpt,
    retry_after,
    verdict,
)
from services.gateway.partners import (
    FhirEndpoint,
    GatewayConfigError,
    PartnersFileError,
    load_partners,
    parse_partners,
)

TOKEN = "fhir-token-5e0c2b9a1f6e8d3c5b7a9f0e2d4c6b4d"


# --- answers and waits ---------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "expected"), [
    (200, Verdict.DELIVERED), (201, Verdict.DELIVERED), (204, Verdict.DELIVERED),
    (None, Verdict.TRANSIENT), (408, Verdict.TRANSIENT), (429, Verdict.TRANSIENT),
    (500, Verdict.TRANSIENT), (502, Verdict.TRANSIENT), (503, Verdict.TRANSIENT), (504, Verdict.TRANSIENT),
    (400, Verdict.PERMANENT), (401, Verdict.PERMANENT), (403, Verdict.PERMANENT), (404, Verdict.PERMANENT),
    (409, Verdict.PERMANENT), (413, Verdict.PERMANENT), (422, Verdict.PERMANENT),
    (301, Verdict.PERMANENT), (307, Verdict.PERMANENT),  # httpx follows no redirect: fix the endpoint
])
def test_which_answers_are_retried(status: int | None, expected: Verdict) -> None:
    assert verdict(status) is expected


def test_backoff_doubles_to_its_ceiling_with_jitter_within_half_to_whole() -> None:
    assert [backoff_ceiling(n, 1.0, 300.0) for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff_ceiling(10_000, 1.0, 300.0) == 300.0  # no overflow however long the outage
    rng = random.Random(7)
    for n in range(1, 15):
        ceiling = backoff_ceiling(n, 0.5, 60.0)
        waits = [backoff(n, 0.5, 60.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 4  # jittered, not in lock-step
    assert backoff(1, 1.0, 300.0, random.Random(1)) == backoff(1, 1.0, 300.0, random.Random(1))


def test_retry_after_is_honoured_and_no_wait_passes_the_give_up_time() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
    assert retry_after("120", now) == 120.0
    assert retry_after(format_datetime(datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC), usegmt=True), now) == 30.0
    assert retry_after(format_datetime(datetime(2026, 12, 1, 11, 0, tzinfo=UTC), usegmt=True), now) == 0.0
    for unusable in (None, "", "soon", "-5", "1.5", "Tue, 99 Foo 2026"):
        assert retry_after(unusable, now) is None
    rng = random.Random(3)
    assert next_wait(1, 120.0, 1.0, 300.0, left_s=1000.0, rng=rng) == 120.0  # what the partner asked
    assert next_wait(1, 900.0, 1.0, 300.0, left_s=1000.0, rng=rng) == 900.0  # even beyond the back-off
    assert next_wait(1, 900.0, 1.0, 300.0, left_s=40.0, rng=rng) == 40.0     # never past the give-up
    assert 0.5 <= next_wait(1, None, 1.0, 300.0, left_s=1000.0, rng=rng) <= 1.0
    assert next_wait(9, None, 1.0, 300.0, left_s=-3.0, rng=rng) == 0.0


def test_a_refusal_is_summed_up_in_one_short_line() -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "invalid", "diagnostics": "Bundle.entry[1]: unknown\nEncounter.class"},
        {"severity": "error", "code": "required", "details": {"text": "MessageHeader.focus is required"}},
        {"severity": "error", "code": "processing"}, "not an issue"]}
    assert outcome_excerpt(orjson.dumps(outcome)) == \
        "Bundle.entry[1]: unknown Encounter.class; MessageHeader.focus is required; processing"
    assert outcome_excerpt(b"<html>\n<b>Bad   request</b></html>") == "<html> <b>Bad request</b></html>"
    assert outcome_excerpt(b"") == ""
    long = outcome_excerpt(b"x" * 5000)
    assert len(long) == 200 and long.endswith("...")


# --- the partners file's FHIR table --------------------------------------------------------------


def test_a_partner_may_have_a_fhir_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "partners.toml"
    path.write_text('[partners.B86001]\nname = "Riverside"\n'
                    '[partners.B86001.fhir]\nendpoint = "https://fhir.riverside.example/n"\n'
                    'token_env = "CAREHUB_FHIR_TOKEN_B86001"\n'
                    '[partners.RR8]\nname = "Hospital"\n[partners.RR8.fhir]\nendpoint = "http://127.0.0.1:8080/f"\n'
                    '[partners.SC001]\nname = "Social care"\n')
    loaded = load_partners(path)
    by = {p.org: p.fhir for p in loaded}
    assert by == {"B86001": FhirEndpoint("https://fhir.riverside.example/n", "CAREHUB_FHIR_TOKEN_B86001"),
                  "RR8": FhirEndpoint("http://127.0.0.1:8080/f"), "SC001": None}


@pytest.mark.parametrize(("fhir", "key", "says"), [
    ('fhir = "https://x.example"', "partners.B86001.fhir", "expected a table"),
    ("[partners.B86001.fhir]\ntoken_env = 'T'", "partners.B86001.fhir.endpoint", "required"),
    ("[partners.B86001.fhir]\nendpoint = ''", "partners.B86001.fhir.endpoint", "required"),
    ("[partners.B86001.fhir]\nendpoint = 'http://fhir.riverside.example/n'", "partners.B86001.fhir.endpoint",
     "must be https://"),
    ("[partners.B86001.fhir]\nendpoint = 'http://10.0.0.1/n'", "partners.B86001.fhir.endpoint", "must be https://"),
    ("[partners.B86001.fhir]\nendpoint = 'ftp://x.example/n'", "partners.B86001.fhir.endpoint", "must be https://"),
    ("[partners.B86001.fhir]\nendpoint = 'fhir.riverside.example/n'", "partners.B86001.fhir.endpoint",
     "no host"),
    ("[partners.B86001.fhir]\nendpoint = 'https://user:secret@x.example/n'", "partners.B86001.fhir.endpoint",
     "user name or password"),
    ("[partners.B86001.fhir]\nendpoint = 'https://x.example:99999/n'", "partners.B86001.fhir.endpoint",
     "not a URL"),
    ("[partners.B86001.fhir]\nendpoint = 'https://x.example/n#f'", "partners.B86001.fhir.endpoint", "fragment"),
    (f"[partners.B86001.fhir]\nendpoint = 'https://x.example'\ntoken_env = '{TOKEN}'",
     "partners.B86001.fhir.token_env", "not the token"),
    ("[partners.B86001.fhir]\nendpoint = 'https://x.example'\ntoken_env = 7", "partners.B86001.fhir.token_env",
     "name of an environment variable"),
    ("[partners.B86001.fhir]\nendpoint = 'https://x.example'\nretries = 3", "partners.B86001.fhir.retries",
     "unknown key"),
])
def test_a_bad_fhir_table_names_the_file_and_entry(tmp_path: Path, fhir: str, key: str, says: str) -> None:
    path = tmp_path / "partners.toml"
    path.write_text(f'[partners.B86001]\nname = "Riverside"\n{fhir}\n')
    with pytest.raises(PartnersFileError) as info:
        load_partners(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: ") and says in message
    assert TOKEN not in message and "secret" not in message


def test_the_token_comes_from_the_environment_and_a_missing_one_stops_the_start() -> None:
    partners = parse_partners({"partners": {
        "B86001": {"name": "x", "fhir": {"endpoint": "https://x.example/n", "token_env": "CAREHUB_FHIR_TOKEN_B86001"}},
        "RR8": {"name": "y", "fhir": {"endpoint": "https://y.example/n"}},
        "SC001": {"name": "z"}}})
    found = targets(partners, {"CAREHUB_FHIR_TOKEN_B86001": f" {TOKEN}\n"})
    assert found == [Target("B86001", "https://x.example/n", TOKEN), Target("RR8", "https://y.example/n")]
    assert TOKEN not in repr(found)
    for environ in ({}, {"CAREHUB_FHIR_TOKEN_B86001": "  "}):
        with pytest.raises(GatewayConfigError, match="partner B86001: environment variable CAREHUB_FHIR_TOKEN_B86001"):
            targets(partners, environ)


def test_tls_files_towards_partners_are_checked_at_start(tmp_path: Path) -> None:
    pki = tlsgen.make_demo_pki(tmp_path / "pki", ["B86001"])
    client = pki.clients["B86001"]
    assert client_ssl_context(Settings()) is not None  # the system's CAs, no client certificate
    assert client_ssl_context(Settings(fhir_out_ca=pki.ca.cert, fhir_out_client_cert=client.cert,
                                       fhir_out_client_key=client.key)) is not None
    cases = [
        (Settings(fhir_out_ca=tmp_path / "none.pem"), "CAREHUB_FHIR_OUT_CA=.*none.pem: file not found"),
        (Settings(fhir_out_ca=client.key), "CAREHUB_FHIR_OUT_CA=.*: not PEM CA certificates"),
        (Settings(fhir_out_client_cert=client.cert), "go together"),
        (Settings(fhir_out_client_cert=client.cert, fhir_out_client_key=pki.server.key),
         "CAREHUB_FHIR_OUT_CLIENT_CERT=.*not a certificate and its matching"),
    ]
    for settings, message in cases:
        with pytest.raises(GatewayConfigError, match=message):
            client_ssl_context(settings)


# --- the dead-letter record ----------------------------------------------------------------------


def test_a_dead_letter_keeps_what_an_operator_and_a_replay_need() -> None:
    alert = al.Alert(alert_id="a1", recipient_org="B86001", rule="death")
    letter = FhirDeadLetter(org="B86001", alert_id="a1", reason=GAVE_UP, attempts=17, last_status=503,
                            last_error="HTTP 503", first_attempt_at=1_800_000_000.25, last_attempt_at=1_800_086_400.5,
                            endpoint="https://x.example/n", bundle={"resourceType": "Bundle", "id": "b"},
                            alert=alert.SerializeToString(), source="t.alerts[1]@42", rule="death")
    raw = letter.to_json()
    shown = orjson.loads(raw)
    assert shown["first_attempt_at"] == "2027-01-15T08:00:00.250+00:00" and shown["reason"] == "gave_up"
    back = FhirDeadLetter.from_json(raw)
    assert back == letter and al.Alert.FromString(back.alert) == alert
    assert replay_of([("content-type", b"x"), ("carehub-replay-of", b"t.fhir:0:5")]) == "t.fhir:0:5"
    assert replay_of(None) == "" and replay_of([]) == ""
