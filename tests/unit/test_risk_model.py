"""The risk model file and its code lists: loading the packaged ones, and refusing broken copies.

Each broken case edits one packaged file in a copy and expects the load to fail with a message
that starts with that file's path and names the entry at fault (as tests/unit/test_domain_loader.py
does for the indicators), so a worker never scores anyone with a model it would misread.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from carehub.domain.codelists import load_codelists
from carehub.domain.loader import DefinitionError, Reader
from carehub.domain.risk import load_model, parse_model
from carehub.domain.risk.model import PACKAGED

MODEL = "risk/model.toml"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packaged code lists and risk files."""
    for folder in ("codelists", "risk"):
        shutil.copytree(PACKAGED / folder, tmp_path / folder)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path}"  # the case edits what it means to
    path.write_text(text.replace(old, new))


def test_the_packaged_model_loads_with_its_version_factors_tiers_and_segments() -> None:
    model = load_model()
    assert model.label == "carehub-risk 1.0.0" and len(model.digest) == 16
    assert [f.name for f in model.factors] == [
        "emergency_admissions", "ed_attendances", "long_term_conditions", "age", "care_home", "social_care",
        "frailty", "end_of_life"]
    assert [(t.name, t.top_share) for t in model.tiers] == [
        ("very_high", 0.005), ("high", 0.05), ("moderate", 0.2), ("low", 1.0)]
    assert [s.name for s in model.segments] == [
        "end_of_life", "frail", "complex", "long_term_conditions", "mostly_healthy"]
    frailty = model.factor("frailty")
    assert frailty.denominator == 36 and frailty.min_age == 65
    assert len(frailty.conditions) == 34  # of the eFI's 36 deficits: housebound and polypharmacy have no ICD-10
    assert {c.name for c in model.factor("end_of_life").conditions} == {"palliative_care", "metastatic_cancer"}


def test_the_digest_follows_the_bytes_of_every_file_read(tree: Path) -> None:
    before = load_model(tree)
    edit(tree / MODEL, "intercept = -4.4", "intercept = -4.5")
    after = load_model(tree)
    assert before.digest == load_model().digest and after.digest != before.digest
    edit(tree / "risk" / "frailty_deficits.toml", 'codes = ["R42"]', 'codes = ["R42", "H81"]')
    assert load_model(tree).digest != after.digest


BROKEN = [
    # (file, old, new, the entry and problem the message must name)
    (MODEL, 'version = "1.0.0"', "version = 1", r"version must be a string \(got 1\)"),
    (MODEL, "intercept = -4.4", 'intercept = "-4.4"', r"\[score\]\.intercept must be a number"),
    (MODEL, 'codelist = "efi_deficits"', 'codelist = "efi"',
     r"\[factors\.frailty\]\.codelist names no known code list: 'efi'"),
    (MODEL, 'groups = ["deficit"]', 'groups = ["deficits"]',
     r"\[factors\.frailty\]\.groups must name groups of code list 'efi_deficits'"),
    (MODEL, "denominator = 36\n", "", r"\[factors\.frailty\]\.denominator is required for kind 'deficits'"),
    (MODEL, 'kind = "care_home"\n', 'kind = "care_home"\nwindow_days = 30\n',
     r"\[factors\.care_home\]\.window_days does not apply to kind 'care_home'"),
    (MODEL, 'kind = "age"', 'kind = "birthday"', r"\[factors\.age\]\.kind must be one of"),
    (MODEL, "{ at_least = 85, points = 1.5 }", "{ at_least = 85, above = 84, points = 1.5 }",
     r"\[factors\.age\]\.points\[0\] needs exactly one of at_least, above, below \(got at_least, above\)"),
    (MODEL, "{ at_least = 85, points = 1.5 }", "{ at_least = 85, point = 1.5 }",
     r"\[factors\.age\]\.points\[0\]\.point is an unknown key"),
    (MODEL, "top_share = 0.05", "top_share = 0.004",
     r"tiers\[1\]\.top_share must be more than the tier above's \(0\.005\)"),
    (MODEL, "top_share = 1.0", "top_share = 0.9", r"tiers\[3\]\.top_share must be 1 in the last tier"),
    (MODEL, 'name = "high"', 'name = "very_high"', r"tiers\[1\]\.name 'very_high' is already the name"),
    (MODEL, '{ factor = "frailty", above = 0.24 }', '{ factor = "frailness", above = 0.24 }',
     r"segments\[1\]\.any_of\[0\]\.factor names no factor of this model: 'frailness'"),
    (MODEL, 'title = "Mostly healthy"', 'title = "Mostly healthy"\nany_of = [{ factor = "age", at_least = 0 }]',
     r"segments\[4\] must have no rules: the last segment takes everyone else"),
    ("risk/long_term_conditions.toml", 'codes = ["I48"]', 'codes = ["I48", 48]',
     r"\[conditions\.atrial_fibrillation\]\.codes\[1\] must be a string \(got 48\)"),
    ("risk/frailty_deficits.toml", 'id = "efi_deficits"', 'id = "acsc"',
     r"id 'acsc' is already the id of a code list in"),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), BROKEN)
def test_a_broken_file_is_refused_naming_the_file_and_the_entry(tree: Path, name: str, old: str, new: str,
                                                                expected: str) -> None:
    path = tree / name
    edit(path, old, new)
    with pytest.raises(DefinitionError) as caught:
        load_model(tree)
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert re.search(expected, str(caught.value)), str(caught.value)


def test_a_syntax_error_names_the_file(tree: Path) -> None:
    edit(tree / MODEL, "[score]", "[score")
    with pytest.raises(DefinitionError, match=r"model\.toml: not valid TOML"):
        load_model(tree)


def test_every_problem_of_the_file_is_listed(tree: Path) -> None:
    edit(tree / MODEL, 'codelist = "efi_deficits"', 'codelist = "efi"')
    edit(tree / MODEL, "top_share = 1.0", "top_share = 0.9")
    with pytest.raises(DefinitionError) as caught:
        load_model(tree)
    entries = [entry for entry, _ in caught.value.problems]
    assert entries == ["[factors.frailty].codelist", "tiers[3].top_share"]


def test_parse_model_names_where_it_came_from() -> None:
    codelists = load_codelists(PACKAGED / "codelists", Reader())
    data = {"id": "m", "version": "1", "title": "t", "source": "s",
            "score": {"outcome": "o", "horizon_days": 90, "intercept": -4.0},
            "factors": {"age": {"kind": "age", "title": "Age", "points": [{"at_least": 65, "points": 1}]}},
            "tiers": [{"name": "all", "title": "All", "top_share": 1.0}],
            "segments": [{"name": "everyone", "title": "Everyone"}]}
    model = parse_model(data, codelists, "inline")
    assert model.factor("age").points(70) == 1.0 and model.factor("age").points(64) == 0.0
    data["segments"] = []
    with pytest.raises(DefinitionError, match=r"^inline: segments must not be empty"):
        parse_model(data, codelists, "inline")
