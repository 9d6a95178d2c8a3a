"""ACKs in original and enhanced mode: they parse back with python-hl7 and echo MSH-10."""

from __future__ import annotations

from datetime import UTC, datetime

import hl7
import pytest

from carehub.domain.hl7v2.ack import ack_required, build_ack, modes
from carehub.domain.hl7v2.charset import unescape
from carehub.domain.hl7v2.mapping import load_adt_mapping, map_message
from tests.hl7v2_messages import PYTHON_HL7_SAMPLE_A04, adt

NOW = datetime(2026, 10, 1, 10, 18, 3, tzinfo=UTC)
ORIGINAL = adt("A01", "MSG0001")
ENHANCED_AL = adt("A01", "MSG0002", msh_fields={"f15": "AL", "f16": "NE"})


def parsed(ack: str) -> hl7.Message:
    assert ack.endswith("\r") and "\n" not in ack
    return hl7.parse(ack)


def test_original_mode_accept() -> None:
    ack = parsed(build_ack(ORIGINAL, "AA", now=NOW))
    assert str(ack["MSA.F1"]) == "AA"
    assert str(ack["MSA.F2"]) == "MSG0001"
    # sending and receiving swap
    assert [str(ack[f"MSH.F{n}"]) for n in (3, 4, 5, 6)] == ["CAREHUB", "CAREHUB", "PAS", "RR8"]
    assert str(ack.segment("MSH")(9)) == "ACK^A01^ACK"
    assert str(ack["MSH.F7"]) == "20261001101803+0000"
    assert [str(ack[f"MSH.F{n}"]) for n in (11, 12)] == ["P", "2.4"]
    assert len(ack.segments("MSA")) == 1 and not [s for s in ack if str(s(0)) == "ERR"]
    assert ack_required(ORIGINAL, "AA") and ack_required(ORIGINAL, "AE")


def test_original_mode_error_names_the_field() -> None:
    out = map_message(adt("A01", "MSG0003", pid={1: "1", 3: "9434765919^^^NHS^NH"}), load_adt_mapping())
    assert out.refusal is not None
    text = build_ack(adt("A01", "MSG0003"), out.refusal.code, out.refusal.text, out.refusal.field,
                     error_condition=out.refusal.condition, now=NOW)
    ack = parsed(text)
    assert (str(ack["MSA.F1"]), str(ack["MSA.F2"])) == ("AE", "MSG0003")
    assert "PID-3 is required" in str(ack["MSA.F3"])
    # v2.4: ERR-1 (ELD): segment ^ sequence ^ field ^ code & text & table
    err = ack.segment("ERR")
    assert str(err(1)) == "PID^1^3^101&Required field missing&HL70357"


def test_v25_error_uses_err_2_to_4_and_escapes_the_text() -> None:
    message = adt("A99", "M|X", msh_fields={"f12": "2.5.1"}).replace("|M|X|", "|M\\F\\X|")
    text = build_ack(message, "AR", "trigger 'A99' | not supported", "MSH-9.2", error_condition="201", now=NOW)
    ack = parsed(text)
    assert str(ack.segment("MSA")(2)) == "M\\F\\X"  # MSH-10 echoed as received
    assert unescape(str(ack.segment("MSA")(3))) == "trigger 'A99' | not supported"
    err = ack.segment("ERR")
    assert str(err(2)) == "MSH^1^9^2"
    assert str(err(3)) == "201^Unsupported event code^HL70357"
    assert str(err(4)) == "E"


@pytest.mark.parametrize(("code", "expected"), [("AA", "CA"), ("AE", "CE"), ("AR", "CR"), ("CA", "CA")])
def test_enhanced_mode_sends_commit_codes(code: str, expected: str) -> None:
    ack = parsed(build_ack(ENHANCED_AL, code, "" if code in ("AA", "CA") else "no", "PID-3", now=NOW))
    assert str(ack["MSA.F1"]) == expected
    assert str(ack["MSA.F2"]) == "MSG0002"
    assert bool([s for s in ack if str(s(0)) == "ERR"]) == (expected != "CA")


def test_original_mode_turns_commit_codes_back() -> None:
    assert str(parsed(build_ack(ORIGINAL, "CE", "x"))["MSA.F1"]) == "AE"


@pytest.mark.parametrize(("accept", "ok", "error"), [
    ("AL", True, True), ("NE", False, False), ("ER", False, True), ("SU", True, False), ("", True, True)])
def test_when_an_accept_ack_is_sent(accept: str, ok: bool, error: bool) -> None:
    message = adt("A01", msh_fields={"f15": accept, "f16": "AL"})
    assert modes(message).enhanced
    assert ack_required(message, "AA") is ok
    assert ack_required(message, "AR") is error
    assert ack_required(message, "CE") is error


def test_modes_can_be_overridden() -> None:
    assert not ack_required(ORIGINAL, "AA", accept_ack_mode="NE")
    assert str(parsed(build_ack(ORIGINAL, "AA", accept_ack_mode="AL"))["MSA.F1"]) == "CA"
    assert str(parsed(build_ack(ENHANCED_AL, "AA", accept_ack_mode="", application_ack_mode=""))["MSA.F1"]) == "AA"


def test_python_hl7_sample_in_ne_ne_mode_gets_no_ack() -> None:
    assert not ack_required(PYTHON_HL7_SAMPLE_A04, "AA")
    ack = parsed(build_ack(PYTHON_HL7_SAMPLE_A04, "AA", now=NOW))
    assert str(ack["MSA.F1"]) == "CA" and str(ack["MSA.F2"]) == "12334456778890"
    # MSH-5 was empty: the hub's own name; MSH-6 AUSDHSV becomes the sending facility
    assert [str(ack[f"MSH.F{n}"]) for n in (3, 4, 6)] == ["CAREHUB", "AUSDHSV", "ABCHS"]
    assert str(ack["MSH.F18"]) == "ASCII"


def test_the_same_message_gets_the_same_control_id() -> None:
    first = parsed(build_ack(ORIGINAL, "AA", now=NOW))
    assert str(first["MSH.F10"]) == str(parsed(build_ack(ORIGINAL, "AA", now=NOW))["MSH.F10"])
    assert len(str(first["MSH.F10"])) <= 20
    assert str(parsed(build_ack(ORIGINAL, "AA", control_id="ACK1"))["MSH.F10"]) == "ACK1"


def test_msh_9_without_a_trigger_and_utf8_text() -> None:
    message = adt("A01", msh_fields={"f18": "UNICODE UTF-8"}).replace("ADT^A01^ADT_A01", "ADT")
    ack = parsed(build_ack(message, "AE", "Zoë\u2019s record", "PID-5"))
    assert str(ack.segment("MSH")(9)) == "ACK"
    assert unescape(str(ack.segment("MSA")(3)), charset="UNICODE UTF-8") == "Zoë\u2019s record"


def test_errors() -> None:
    with pytest.raises(ValueError, match="no MSH"):
        build_ack("PID|1", "AA")
    with pytest.raises(ValueError, match="not one of"):
        build_ack(ORIGINAL, "OK")
    with pytest.raises(ValueError, match="error_field"):
        build_ack(ORIGINAL, "AE", "x", "pid three")
