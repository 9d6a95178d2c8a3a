"""The HL7 v2 acknowledgement the MLLP server sends back for one message, as text.

Modes (HL7 v2.5 section 2.9; decisions in docs/hl7v2-adt.md, "Acknowledgements"):

* **original** (MSH-15 and MSH-16 both empty): one ACK per message, MSA-1 AA (accepted: the
  events are committed), AE (refused for its content: a required field missing or unusable) or
  AR (refused for what it is: message type, trigger, version, processing id, unknown facility).
* **enhanced** (MSH-15 or MSH-16 valued): the hub sends the *accept* acknowledgement only,
  MSA-1 CA / CE / CR for AA / AE / AR, when MSH-15 asks for one: AL always, NE never, ER only
  on CE/CR, SU only on CA; an empty MSH-15 beside a valued MSH-16 is taken as AL. Application
  acknowledgements (MSH-16) are never sent: what the hub does with an event after committing it
  happens later and elsewhere (ingest validation, the dead-letter topic), and sending one would
  need a connection back to the sender.

The ACK's MSH swaps the original's sending and receiving application and facility, echoes MSH-11,
MSH-12 and MSH-18 (so the server encodes the ACK in the sender's character set), and MSA-2 echoes
MSH-10 as received. An error code carries an ERR segment naming the field: ERR-1 (HL7 v2.3-2.4)
or ERR-2/3/4 (v2.5 and later) by MSH-12.

python-hl7's ``Message.create_ack`` was checked and is not used: it fails on an MSH-9 without a
trigger component, stamps MSH-7 from ``utcnow`` without an offset, generates a random control id,
and writes neither MSA-3 nor ERR. The tests parse every ACK built here back with ``hl7.parse``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from carehub.domain.hl7v2.charset import escape

Code = Literal["AA", "AE", "AR", "CA", "CE", "CR"]
ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}
ORIGINAL = {v: k for k, v in ENHANCED.items()}
ERRORS = frozenset({"AE", "AR", "CE", "CR"})
# HL7 table 0357 (message error condition codes) used by the mapper's refusals.
CONDITIONS = {
    "100": "Segment sequence error", "101": "Required field missing", "102": "Data type error",
    "103": "Table value not found", "200": "Unsupported message type", "201": "Unsupported event code",
    "202": "Unsupported processing id", "203": "Unsupported version id", "204": "Unknown key identifier",
    "207": "Application internal error",
}
FIELD = re.compile(r"^([A-Z][A-Z0-9]{2})(?:-([0-9]+)(?:\.([0-9]+))?)?$")


@dataclass(frozen=True)
class Header:
    """The raw MSH fields an ACK needs (escaped as received)."""

    fields: list[str]  # fields[n] is MSH-n; fields[1] the field separator

    def __getitem__(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    @property
    def encoding(self) -> str:
        return self[2] or "^~\\&"

    def component(self, n: int, c: int) -> str:
        parts = self[n].split(self.encoding[1:2] or "~")[0].split(self.encoding[0])
        return parts[c - 1] if len(parts) >= c else ""


@dataclass(frozen=True)
class Modes:
    accept: str       # MSH-15 as sent
    application: str  # MSH-16 as sent

    @property
    def enhanced(self) -> bool:
        return bool(self.accept or self.application)


def header(message_text: str) -> Header:
    """The MSH of ``message_text`` (only its first line is read); ValueError if there is none."""
    line = re.split(r"[\r\n]", message_text.lstrip(), maxsplit=1)[0]
    if len(line) < 8 or not line.startswith("MSH"):
        raise ValueError("not an HL7 v2 message: no MSH segment to acknowledge")
    separator = line[3]
    parts = line.split(separator)
    return Header(["MSH", separator, *parts[1:]])


def modes(message_text: str, accept_ack_mode: str | None = None, application_ack_mode: str | None = None) -> Modes:
    """MSH-15 and MSH-16 of the message, unless the caller overrides them."""
    msh = header(message_text)
    accept = msh.component(15, 1).strip() if accept_ack_mode is None else accept_ack_mode
    application = msh.component(16, 1).strip() if application_ack_mode is None else application_ack_mode
    return Modes(accept, application)


def ack_code(code: str, mode: Modes) -> Code:
    """``code`` (AA/AE/AR, or CA/CE/CR) as the mode writes it."""
    base = ORIGINAL.get(code, code)
    if base not in ENHANCED:
        raise ValueError(f"acknowledgement code {code!r} is not one of AA, AE, AR, CA, CE, CR")
    return ENHANCED[base] if mode.enhanced else base  # type: ignore[return-value]


def ack_required(message_text: str, code: str, accept_ack_mode: str | None = None,
                 application_ack_mode: str | None = None) -> bool:
    """Whether the server sends an ACK for this message and outcome (original mode: always)."""
    mode = modes(message_text, accept_ack_mode, application_ack_mode)
    if not mode.enhanced:
        return True
    error = ORIGINAL.get(code, code) != "AA"
    return {"AL": True, "": True, "NE": False, "ER": error, "SU": not error}.get(mode.accept, True)


def build_ack(message_text: str, code: str, text: str = "", error_field: str | None = None, *,
              accept_ack_mode: str | None = None, application_ack_mode: str | None = None,
              error_condition: str | None = None, application: str = "CAREHUB", facility: str = "CAREHUB",
              control_id: str | None = None, now: datetime | None = None) -> str:
    """The ACK for ``message_text`` with MSA-1 ``code`` (translated for the mode), MSA-3 ``text``,
    and on an error code an ERR segment naming ``error_field`` (e.g. "PID-3" or "MSH-10").

    ``application``/``facility`` fill MSH-3/4 only where the message's MSH-5/6 are empty.
    ``control_id`` defaults to a value derived from MSH-10 and the code (at most 20 characters),
    so a resent message gets the same ACK apart from MSH-7.
    """
    msh = header(message_text)
    mode = modes(message_text, accept_ack_mode, application_ack_mode)
    final = ack_code(code, mode)
    sep, enc = msh[1], msh.encoding
    charset = msh.component(18, 1).strip()
    when = (now or datetime.now(UTC)).astimezone(UTC)
    trigger = msh.component(9, 2)
    control = control_id or "A" + hashlib.sha256(f"{msh[10]}\x1f{final}".encode()).hexdigest()[:19].upper()
    header_fields = [
        "MSH", enc, msh[5] or escape(application, enc, sep), msh[6] or escape(facility, enc, sep), msh[3], msh[4],
        when.strftime("%Y%m%d%H%M%S+0000"), "", enc[0].join(["ACK", trigger, "ACK"]) if trigger else "ACK",
        escape(control, enc, sep), msh[11], msh[12], "", "", "", "", "", msh[18],
    ]
    while header_fields and header_fields[-1] == "":
        header_fields.pop()
    segments = [sep.join(header_fields)]
    msa = ["MSA", final, msh[10], escape(text, enc, sep, charset)] if text else ["MSA", final, msh[10]]
    segments.append(sep.join(msa))
    if final in ERRORS:
        segments.append(_err(msh, final, text, error_field, error_condition, charset))
    return "\r".join(segments) + "\r"


def _err(msh: Header, code: str, text: str, error_field: str | None, condition: str | None, charset: str) -> str:
    sep, enc = msh[1], msh.encoding
    comp, sub = enc[0], enc[3:4] or "&"
    condition = condition or "207"
    words = CONDITIONS.get(condition, "")
    location = [""]
    if error_field:
        found = FIELD.match(error_field)
        if found is None:
            raise ValueError(f"error_field {error_field!r} is not SEG or SEG-n (e.g. \"PID-3\")")
        segment, number, component = found.groups()
        location = [segment, "1", number or "", component or ""]
    while location and location[-1] == "":
        location.pop()
    severity = "E"
    if _version(msh.component(12, 1)) < (2, 5):
        # ERR-1 (ELD): segment ^ sequence ^ field position ^ code & text & table
        where = [*location[:3], "", "", ""][:3]
        eld = [*where, sub.join([condition, escape(words, enc, sep), "HL70357"])]
        return sep.join(["ERR", comp.join(eld)])
    erl = comp.join(location)
    cwe = comp.join([condition, escape(words, enc, sep), "HL70357"])
    diagnostic = escape(text, enc, sep, charset)
    return sep.join(["ERR", "", erl, cwe, severity, "", "", diagnostic])


def _version(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in value.strip().split("."))
    except ValueError:
        return (2, 5)
