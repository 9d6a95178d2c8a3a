"""Diagnosis and procedure code lists the generator draws from.

The ACSC codes are taken from the 19-condition list (Purdy et al. 2009) in
``docs/indicators-reference.md`` section 2, so that the generator's ground truth agrees with
the indicator reference. Codes that count as ACSC in *any* diagnosis position there
(influenza/pneumonia, diabetes complications E10-E14 .0-.8, gangrene, vaccine-preventable)
are kept out of the non-ACSC and secondary lists, otherwise a "non-ACSC" admission would
still qualify. Codes whose ACSC status differs between sources (N39.0 is UTI in AHRQ PQI 12
but not in Purdy) are labelled by Purdy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dx:
    """A weighted diagnosis choice; ``system`` picks the symptom code used as the provisional diagnosis."""

    code: str
    weight: float
    min_age: int = 0
    max_age: int = 120
    system: str = "general"
    sex: str = ""  # "M" / "F" to restrict; empty for both
    procedure: str = ""  # OPCS-4 primary procedure, when one is usually done
    procedure_share: float = 0.0


# Purdy et al. 2009 (indicators-reference.md section 2). A 3-character entry covers its subcodes.
ACSC_PREFIXES: tuple[str, ...] = (
    # angina, asthma, cellulitis
    "I20", "I24.0", "I24.8", "I24.9", "J45", "J46",
    "L03", "L04", "L08.0", "L08.8", "L08.9", "L88", "L98.0",
    # congestive heart failure, convulsions/epilepsy
    "I11.0", "I50", "J81", "G40", "G41", "R56", "O15",
    # COPD (J20 only with a secondary J41-J44/J47: the generator never uses J20)
    "J41", "J42", "J43", "J44", "J47",
    # dehydration/gastroenteritis, dental
    "E86", "K52.2", "K52.8", "K52.9",
    "A69.0", "K02", "K03", "K04", "K05", "K06", "K08", "K09.8", "K09.9", "K12", "K13",
    # ENT, gangrene, hypertension
    "H66", "H67", "J02", "J03", "J06", "J31.2", "R02", "I10", "I11.9",
    # influenza and pneumonia
    "J10", "J11", "J13", "J14", "J15.3", "J15.4", "J15.7", "J15.9", "J16.8", "J18.1", "J18.8",
    # iron-deficiency anaemia, nutritional deficiency
    "D50.1", "D50.8", "D50.9", "E40", "E41", "E42", "E43", "E55.0", "E64.3",
    # other vaccine-preventable
    "A35", "A36", "A37", "A80", "B05", "B06", "B16.1", "B16.9", "B18.0", "B18.1", "B26", "G00.0", "M01.4",
    # pelvic inflammatory disease, pyelonephritis
    "N70", "N73", "N74", "N10", "N11", "N12", "N13.6",
)  # fmt: skip


def is_acsc_primary(code: str) -> bool:
    """Purdy ACSC by primary diagnosis, including the 4th-character ranges of diabetes and ulcers."""
    c = code.upper()
    if c[:3] in {"E10", "E11", "E12", "E13", "E14"}:
        return len(c) >= 5 and c[3] == "." and c[4] in "012345678"
    if c[:3] in {"K25", "K26", "K27", "K28"}:
        return len(c) >= 5 and c[3] == "." and c[4] in "012456"
    return c.startswith(ACSC_PREFIXES)


ACSC_EMERGENCY: tuple[Dx, ...] = (
    Dx("J18.1", 10, 0, 120, "resp"),
    Dx("J18.8", 4, 0, 120, "resp"),
    Dx("J13", 2, 0, 120, "resp"),
    Dx("J15.9", 2, 18, 120, "resp"),
    Dx("J10.1", 1.5, 0, 120, "resp"),
    Dx("J11.1", 1.5, 0, 120, "resp"),
    Dx("J44.1", 6, 40, 120, "resp"),
    Dx("J44.0", 4, 40, 120, "resp"),
    Dx("J44.9", 1, 40, 120, "resp"),
    Dx("J43.9", 0.5, 40, 120, "resp"),
    Dx("J47", 0.5, 18, 120, "resp"),
    Dx("J45.9", 3, 2, 120, "resp"),
    Dx("J46", 0.5, 2, 120, "resp"),
    Dx("I50.0", 5, 45, 120, "cardio"),
    Dx("I50.9", 3, 45, 120, "cardio"),
    Dx("I11.0", 0.5, 45, 120, "cardio"),
    Dx("J81", 0.5, 45, 120, "cardio"),
    Dx("I20.0", 1.5, 40, 120, "cardio"),
    Dx("I20.9", 1.5, 40, 120, "cardio"),
    Dx("I10", 0.5, 30, 120, "cardio"),
    Dx("N10", 6, 0, 120, "uti"),
    Dx("N12", 2, 0, 120, "uti"),
    Dx("N13.6", 0.5, 18, 120, "uti"),
    Dx("N11.9", 0.3, 0, 120, "uti"),
    Dx("L03.1", 6, 0, 120, "skin"),
    Dx("L03.9", 1.5, 0, 120, "skin"),
    Dx("L08.9", 0.3, 0, 120, "skin"),
    Dx("G40.9", 2, 0, 120, "neuro"),
    Dx("R56.8", 1.5, 0, 120, "neuro"),
    Dx("R56.0", 1.5, 0, 6, "neuro"),
    Dx("G41.9", 0.3, 0, 120, "neuro"),
    Dx("E86", 3, 0, 120, "gi"),
    Dx("K52.9", 2, 0, 120, "gi"),
    Dx("E10.1", 1, 5, 60, "general"),
    Dx("E11.0", 0.3, 40, 120, "general"),
    Dx("E11.5", 0.5, 40, 120, "general"),
    Dx("J03.9", 1, 0, 60, "ent"),
    Dx("J06.9", 1.5, 0, 15, "ent"),
    Dx("H66.9", 0.5, 0, 15, "ent"),
    Dx("J02.9", 0.5, 0, 60, "ent"),
    Dx("K04.7", 0.3, 5, 120, "ent"),
    Dx("D50.9", 1, 18, 120, "general"),
    Dx("E43", 0.1, 60, 120, "general"),
    Dx("K25.0", 0.2, 40, 120, "gi"),
    Dx("K26.4", 0.3, 40, 120, "gi"),
    Dx("R02", 0.2, 50, 120, "skin"),
    Dx("B26.9", 0.1, 2, 30, "general"),
    Dx("N73.9", 0.1, 16, 50, "gi", "F"),
)

NON_ACSC_EMERGENCY: tuple[Dx, ...] = (
    Dx("R07.4", 6, 16, 120, "cardio"),
    Dx("R07.3", 2, 16, 120, "cardio"),
    Dx("R10.4", 5, 5, 120, "gi"),
    Dx("R55", 3, 12, 120, "neuro"),
    Dx("I21.9", 2.5, 40, 120, "cardio", procedure="K75.1", procedure_share=0.5),
    Dx("I21.4", 1.5, 40, 120, "cardio", procedure="K75.1", procedure_share=0.5),
    Dx("I63.9", 2, 50, 120, "neuro"),
    Dx("G45.9", 1, 50, 120, "neuro"),
    Dx("A41.9", 2.5, 0, 120, "general"),
    Dx("N39.0", 4, 16, 120, "uti"),
    Dx("J22", 2, 16, 120, "resp"),
    Dx("K80.2", 1.5, 20, 120, "gi", procedure="J18.3", procedure_share=0.3),
    Dx("K85.9", 1, 20, 120, "gi"),
    Dx("K35.8", 1.5, 5, 60, "gi", procedure="H01.1", procedure_share=0.9),
    Dx("K56.6", 0.8, 40, 120, "gi"),
    Dx("K92.2", 1, 40, 120, "gi"),
    Dx("R53", 1, 65, 120, "general"),
    Dx("F10.0", 1, 16, 70, "general"),
    Dx("T39.1", 1, 14, 60, "general"),
    Dx("R41.0", 1, 75, 120, "neuro"),
    Dx("I26.9", 0.7, 30, 120, "resp"),
    Dx("S06.0", 1, 0, 120, "injury"),
    Dx("N17.9", 1.5, 65, 120, "general"),
    Dx("E87.1", 1, 65, 120, "general"),
    Dx("J21.9", 5, 0, 1, "resp"),
    Dx("R50.9", 3, 0, 14, "general"),
    Dx("R11", 1, 0, 14, "gi"),
)

# Falls admissions 65+ (PHOF 22401, indicators-reference.md section 4): an injury primary plus a W00-W19 secondary.
FALL_INJURIES: tuple[Dx, ...] = (
    Dx("S72.0", 60, system="injury", procedure="W46.1", procedure_share=0.8),
    Dx("S72.1", 15, system="injury", procedure="W24.1", procedure_share=0.8),
    Dx("S42.2", 10, system="injury"),
    Dx("S32.5", 5, system="injury"),
    Dx("S22.4", 5, system="injury"),
    Dx("S06.0", 5, system="injury"),
)
FALL_CAUSES: tuple[tuple[str, float], ...] = (("W19", 70), ("W01", 15), ("W10", 10), ("W06", 5))

ELECTIVE: tuple[Dx, ...] = (
    Dx("H25.9", 8, 55, 120, procedure="C71.2", procedure_share=1.0),
    Dx("K40.9", 4, 18, 120, sex="M", procedure="T20.1", procedure_share=1.0),
    Dx("M17.1", 4, 50, 120, procedure="W40.1", procedure_share=1.0),
    Dx("M16.1", 3, 50, 120, procedure="W37.1", procedure_share=1.0),
    Dx("N40", 2, 50, 120, sex="M", procedure="M65.3", procedure_share=1.0),
    Dx("C50.9", 2, 35, 120, sex="F", procedure="B28.3", procedure_share=1.0),
    Dx("K80.2", 3, 20, 120, procedure="J18.3", procedure_share=1.0),
    Dx("Z51.1", 5, 18, 120, procedure="X72.9", procedure_share=1.0),
    Dx("K63.5", 4, 40, 120, procedure="H22.9", procedure_share=1.0),
    Dx("D25.9", 1.5, 30, 60, sex="F", procedure="Q07.4", procedure_share=1.0),
    Dx("I83.9", 1, 25, 80, procedure="L85.1", procedure_share=1.0),
    Dx("G56.0", 1.5, 30, 120, procedure="A65.1", procedure_share=1.0),
    Dx("J35.0", 2, 3, 16, procedure="F34.1", procedure_share=1.0),
)

MATERNITY: tuple[Dx, ...] = (
    Dx("O80", 60),
    Dx("O82.0", 25, procedure="R18.2", procedure_share=1.0),
    Dx("O42.0", 15),
)

MENTAL_HEALTH: tuple[Dx, ...] = (
    Dx("F20.9", 3),
    Dx("F32.2", 3),
    Dx("F31.2", 2),
    Dx("F25.0", 1),
    Dx("F60.3", 1),
)

# Diagnoses an ED records for attendances that do not lead to admission.
ED_ONLY: tuple[Dx, ...] = (
    Dx("S93.4", 4),
    Dx("S61.9", 3),
    Dx("S00.9", 3),
    Dx("S52.5", 2, 5, 120),
    Dx("R07.4", 4, 16, 120),
    Dx("R10.4", 4),
    Dx("R51", 2, 5, 120),
    Dx("T14.1", 2),
    Dx("J06.9", 2, 0, 15),
    Dx("R50.9", 2, 0, 14),
    Dx("T78.4", 1),
    Dx("M54.5", 2, 16, 120),
)

# Comorbidities for secondary positions: none counts as ACSC in "any" position (no J1x pneumonia,
# no E10-E14 .0-.8, no R02, no vaccine-preventable codes).
SECONDARY_OLDER: tuple[tuple[str, float], ...] = (
    ("I10", 10), ("E11.9", 6), ("I48.9", 4), ("N18.3", 3), ("J44.9", 2), ("F03", 2),
    ("E78.0", 3), ("I25.1", 3), ("M81.9", 2), ("E03.9", 2), ("F32.9", 1), ("Z87.8", 1),
)  # fmt: skip
SECONDARY_YOUNGER: tuple[tuple[str, float], ...] = (
    ("F32.9", 3), ("J45.9", 3), ("Z72.0", 4), ("E66.9", 2), ("F41.1", 2), ("E11.9", 1),
)  # fmt: skip

# Symptom codes used as the working diagnosis when it differs from the coded one.
PROVISIONAL_BY_SYSTEM: dict[str, str] = {
    "resp": "R06.0",
    "cardio": "R07.4",
    "uti": "R39.8",
    "skin": "R22.4",
    "neuro": "R40.2",
    "gi": "R11",
    "ent": "R50.9",
    "general": "R53",
}

# NHS Data Dictionary source of admission for care-home residents (indicators-reference.md section 4).
CARE_HOME_SOURCES: tuple[tuple[str, float], ...] = (("85", 70), ("65", 20), ("54", 10))
USUAL_RESIDENCE = "19"
DIED = "79"

WARDS: tuple[str, ...] = (
    "AMU", "Ward 5", "Ward 12", "Ward 22 (Elderly Care)", "CCU", "Respiratory Ward",
    "Trauma & Orthopaedics", "Surgical Assessment Unit", "ICU", "Stroke Unit", "Discharge Lounge",
)  # fmt: skip
