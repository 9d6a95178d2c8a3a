"""Realistic HL7 v2 ADT messages for the hl7v2 tests, written for carehub (synthetic people).

``adt()`` builds a message from segments given as {field number: value}, so that a test names
only the fields it is about. The NHS numbers are valid test numbers (mod-11), not real people.
"""

from __future__ import annotations

from collections.abc import Mapping

NHS = "9434765919"
NHS_2 = "9434765870"

MSH_DEFAULTS = {3: "PAS", 4: "RR8", 5: "CAREHUB", 6: "CAREHUB", 7: "20261001101700", 11: "P", 12: "2.4"}


def segment(name: str, fields: Mapping[int, str]) -> str:
    if not fields:
        return name
    width = max(fields)
    return "|".join([name, *(fields.get(i, "") for i in range(1, width + 1))])


def msh(trigger: str, control: str, **fields: str) -> str:
    values = {**MSH_DEFAULTS, 9: f"ADT^{trigger}^ADT_A01", 10: control}
    values.update({int(k[1:]): v for k, v in fields.items()})
    width = max(values)
    return "MSH|^~\\&|" + "|".join(values.get(i, "") for i in range(3, width + 1))


PID = {1: "1", 3: f"H-99812^^^RR8^MR~{NHS}^^^NHS^NH", 5: "Whitfield^Margaret^^^Mrs", 7: "19410317", 8: "F",
       11: "12 Pinkerton Circuit^^Leeds^^LS1 4AP^GBR"}
PD1 = {3: "Park Surgery^^B86001"}
PV1_INPATIENT = {1: "1", 2: "I", 3: "WARD7^^^RR8", 4: "E", 14: "54", 19: "S-2026-0042", 44: "20261001101500"}
EVN = {1: "A01", 2: "20261001101742", 6: "20261001101500"}


def adt(trigger: str, control: str = "MSG0001", *, msh_fields: Mapping[str, str] | None = None,
        evn: Mapping[int, str] | None = None, pid: Mapping[int, str] | None = None,
        pd1: Mapping[int, str] | None = None, pv1: Mapping[int, str] | None = None,
        extra: list[str] | None = None, separator: str = "\r") -> str:
    """One ADT message; ``None`` keeps the default segment, ``{}`` leaves it out (PD1) or empty."""
    lines = [msh(trigger, control, **(msh_fields or {}))]
    lines.append(segment("EVN", {**EVN, 1: trigger} if evn is None else evn))
    lines.append(segment("PID", PID if pid is None else pid))
    if pd1 is None or pd1:
        lines.append(segment("PD1", PD1 if pd1 is None else pd1))
    lines.append(segment("PV1", PV1_INPATIENT if pv1 is None else pv1))
    lines += extra or []
    return separator.join(lines) + separator


def dg1(set_id: int, code: str, kind: str = "A", priority: str = "", system: str = "I10") -> str:
    return segment("DG1", {1: str(set_id), 3: f"{code}^^{system}" if system else code, 6: kind, 15: priority})


# From python-hl7 0.4.5's own test data (tests/samples.py in its sdist, PyPI "hl7"):
# Copyright (C) 2009-2020 John Paulett, BSD licence (3-clause; redistribution with the notice
# kept). A synthetic Australian ADT^A04 for an outpatient (PV1-2 O), enhanced mode NE/NE, ASCII.
PYTHON_HL7_SAMPLE_A04 = "\r".join([
    "MSH|^~\\&||ABCHS||AUSDHSV|20070101112951||ADT^A04^ADT_A01|12334456778890|P|2.5|||NE|NE|AU|ASCII",
    "EVN|A04|20060705000000",
    "PID|1||0000112234^^^100^A||XXXXXXXXXX^^^^^^S||10131113|1||4|^^RICHMOND^^3121||||1201||||||||1100|||||||||AAA",
    "PD1||2",
    "NK1|1||1||||||||||||||||||2",
    "PV1|1|O||||^^^^^1",
    "",
])
