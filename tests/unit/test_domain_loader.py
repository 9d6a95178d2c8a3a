"""The domain loader (carehub/domain/loader.py) on broken copies of the packaged data files.

Each case edits one packaged file in a copy and expects the load to fail with a message that
starts with that file's path and names the entry at fault, so a worker refuses to start on a
file it would misread, and whoever edited it is told where to look.
"""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from carehub.domain import alert_rules, definitions
from carehub.domain.alert_evaluation import AlertEngine
from carehub.domain.alert_rules import load_rules
from carehub.domain.codelists import normal, parse_codelist
from carehub.domain.definitions import load_catalogue, parse_indicator
from carehub.domain.indicator_facts import PersonFacts, day_of
from carehub.domain.loader import DefinitionError, parse_toml
from tests.unit.test_alert_rules import OCT, Person
from tests.unit.test_indicators_engine import admitted
from tests.unit.test_timeline_state import Feed


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of every packaged data file: ``defs/`` (code lists, indicators) and ``rules/``."""
    shutil.copytree(definitions.PACKAGED, tmp_path / "defs", ignore=shutil.ignore_patterns("alert_rules"))
    shutil.copytree(alert_rules.PACKAGED, tmp_path / "rules")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path}"  # the case edits what it means to
    path.write_text(text.replace(old, new))


def load_all(tree: Path) -> alert_rules.RuleBook:
    """Everything a worker loads: code lists and indicators (via the rules), then the rules."""
    return load_rules(tree / "rules", tree / "defs")


ASTHMA = 'group = "chronic"\nposition = "primary"\ncodes = ["J45", "J46"]'
CODELISTS = [
    # wrong type, unknown key, missing key, a value outside its words, a pair half given
    ("acsc.toml", 'codes = ["J45", "J46"]', 'codes = ["J45", 46]',
     r"\[conditions\.asthma\]\.codes\[1\] must be a string \(got 46\)"),
    ("acsc.toml", ASTHMA, ASTHMA.replace("codes", "codez"), r"\[conditions\.asthma\]\.codez is an unknown key"),
    ("acsc.toml", ASTHMA, ASTHMA.replace('group = "chronic"\n', ""), r"\[conditions\.asthma\]\.group is required"),
    ("acsc.toml", "version = 1", "version = true", r"version must be an integer \(got true\)"),
    ("acsc.toml", ASTHMA, ASTHMA.replace('"primary"', '"first"'), r"\[conditions\.asthma\]\.position must be one of"),
    ("acsc.toml", ASTHMA, ASTHMA.replace('["J45", "J46"]', "[]"), r"\[conditions\.asthma\]\.codes must not be empty"),
    ("acsc.toml", ASTHMA, ASTHMA.replace('"J46"', '" . "'), r"\[conditions\.asthma\]\.codes\[1\] must be a code"),
    ("acsc.toml", 'with_secondary = ["J41", "J42", "J43", "J44", "J47"]\n', "",
     r"\[conditions\.copd\]\.with_secondary is required .*go together"),
    ("falls.toml", 'title = "Injury due to a fall"\n', "", "title is required"),
    ("falls.toml", "[conditions.fall_injury]", "conditions = 3\n[fall_injury]", r"conditions must be a table"),
    # duplicate id (the second file in name order is the one named, with the first)
    ("falls.toml", 'id = "falls"', 'id = "acsc"', r"id 'acsc' is already the id of the code list in .*acsc\.toml"),
    ("falls.toml", 'id = "falls"', 'id = "falls', r"not valid TOML: .*line 4"),
]
INDICATORS = [
    ("falls_65plus.toml", "min_age = 65\n\n", 'min_age = "65"\n\n', r"\[filter\]\.min_age must be an integer"),
    ("falls_65plus.toml", "population_min_age = 65", "population_min_age = -1", "population_min_age must be >= 0"),
    ("falls_65plus.toml", "[filter]", "[filter]\nmin_agee = 65", r"\[filter\]\.min_agee is an unknown key"),
    ("falls_65plus.toml", 'windows = ["30d", "12m", "month"]\n', "", "windows is required"),
    ("falls_65plus.toml", 'units = ["practice",', 'units = ["ward",', r"units\[0\] must be one of 'practice'"),
    ("falls_65plus.toml", "per = 100000", "per = 0", "per must be > 0"),
    ("falls_65plus.toml", "per = 100000", "per = true", r"per must be a number \(got true\)"),
    ("falls_65plus.toml", 'codelist = "falls"', 'codelist = "fall"',
     r"\[numerator\]\.codelist names no known code list: 'fall' \(have: acsc, cancer, falls\)"),
    ("acsc_chronic.toml", 'groups = ["chronic"]', 'groups = ["chronik"]',
     r"\[numerator\]\.groups must name groups of code list 'acsc' \(acute, chronic\); not groups of it: 'chronik'"),
    ("acsc_all.toml", 'codelist = "acsc"\n', "", r"\[numerator\]\.groups needs codelist"),
    ("acsc_all.toml", 'groups = ["chronic", "acute"]\n', "", r"\[numerator\]\.groups is required with codelist"),
    ("falls_65plus.toml", 'id = "falls_65plus"', 'id = "acsc_all"',
     r"id 'acsc_all' is already the id of the indicator in .*acsc_all\.toml"),
    ("falls_65plus.toml", "[numerator]", "[numerator", r"not valid TOML: .*line 16"),
    # which words fit which fact (docs/indicator-semantics.md, "Facts" and "Definition words")
    ("falls_65plus.toml", 'fact = "admission"', 'fact = "ed_attendance"',
     r"\[filter\]\.admission_method applies to spells, not to fact 'ed_attendance'"),
    ("acsc_acute.toml", "[filter]", "[filter]\nexclude_died = true",
     r"\[filter\]\.exclude_died applies to discharges, not to fact 'admission'"),
    ("followup_7d.toml", "exclude_died = true", "exclude_died = 1", r"\[filter\]\.exclude_died must be true or false"),
    ("followup_7d.toml", "followed_up_within_days = 7", "followed_up = false",
     r"\[numerator\]\.followed_up needs followed_up_within_days"),
    ("frequent_ed_attenders.toml", "prior_ed_attendances_min = 3", "readmission_max_days = 3",
     r"\[numerator\]\.readmission_max_days applies to discharges, not to fact 'ed_attendance'"),
    ("readmission_30d.toml", "readmission_max_days = 29", "prior_ed_attendances_min = 3",
     r"\[numerator\]\.prior_ed_attendances_min applies to ED attendances"),
    ("care_home_admissions.toml", '[numerator]\nadmission_source = ["54", "65", "85"]\n', "",
     "numerator must name a condition: a proportion needs a"),
]
RULES = [
    ("followup_overdue.toml", "after_days = 7", "after_days = true", r"\[when\]\.after_days must be an integer"),
    ("followup_overdue.toml", "after_days = 7", "after_days = -7", r"\[when\]\.after_days must be >= 0"),
    ("followup_overdue.toml", "after_days = 7", "after_dayz = 7", r"\[when\]\.after_dayz is an unknown key"),
    ("followup_overdue.toml", "after_days = 7", "", r"\[when\]\.after_days is required with on = 'followup_overdue'"),
    ("death.toml", 'severity = "info"\n', "", "severity is required"),
    ("death.toml", 'on = "death"', 'on = "deth"', "on must be one of 'admission'"),
    ("death.toml", 'recipients = ["registered_practice",', 'recipients = ["gp",', r"recipients\[0\] must be one of"),
    ("death.toml", 'on = "death"', 'on = "indicator_outlier"', "recipients must be \\['unit'\\]"),
    ("acsc_emergency_admission.toml", 'codelist = "acsc"', 'codelist = "acs"',
     r"\[when\]\.codelist names no known code list: 'acs'"),
    ("acsc_emergency_admission.toml", 'groups = ["chronic", "acute"]', 'groups = ["chronic", "acut"]',
     r"\[when\]\.groups must name groups of code list 'acsc' .*'acut'"),
    ("acsc_emergency_admission.toml", 'codelist = "acsc"\n', "", r"\[when\]\.groups needs codelist"),
    ("death.toml", 'id = "death"', 'id = "care_home_admission"',
     r"id 'care_home_admission' is already the id of the alert rule in .*care_home_admission\.toml"),
    ("death.toml", "title = ", "title = = ", r"not valid TOML: .*line 3"),
    ("death.toml", "version = 1", 'version = "1"', r"version must be an integer \(got \"1\"\)"),
    ("care_home_admission.toml", 'on = "admission"', 'on = "death"',
     r"\[when\]\.admission_method applies to spells, not to on = 'death'"),
    ("frequent_ed_attender.toml", "prior_ed_attendances_exactly = 3", "readmission_max_days = 3",
     r"\[when\]\.readmission_max_days applies to admissions, not to on = 'ed_attendance'"),
    ("provider_outlier.toml", '"high_998", "low_998"', '"high_999"', r"\[when\]\.outlier\[0\] must be one of"),
    ("care_plan_review_overdue.toml", "after_days = 0", "",
     r"\[when\]\.after_days is required with on = 'care_plan_review_overdue'"),
    ("care_plan_review_overdue.toml", 'recipients = ["care_plan_owner"]',
     'recipients = ["care_plan_owner", "registered_practice"]',
     r"recipients must be \['care_plan_owner'\] for on = 'care_plan_review_overdue'"),
    ("care_plan_review_overdue.toml", "after_days = 0", "after_days = 0\nadmission_method = [\"emergency\"]",
     r"\[when\]\.admission_method applies to spells, not to on = 'care_plan_review_overdue'"),
]
CASES = ([("defs/codelists/" + f, *rest) for f, *rest in CODELISTS]
         + [("defs/indicators/" + f, *rest) for f, *rest in INDICATORS]
         + [("rules/" + f, *rest) for f, *rest in RULES])


@pytest.mark.parametrize(("file", "old", "new", "expected"), CASES, ids=[f"{c[0]}:{c[3][:40]}" for c in CASES])
def test_a_broken_file_fails_naming_the_file_and_the_entry(tree: Path, file: str, old: str, new: str,
                                                          expected: str) -> None:
    load_all(tree)  # the copy loads before the edit: the edit is what breaks it
    path = tree / file
    edit(path, old, new)
    with pytest.raises(DefinitionError, match=f"(?m)^{re.escape(str(path))}: {expected}") as info:
        load_all(tree)  # (?m): the problem is on one of the message's lines, each naming the file
    assert info.value.path == str(path)


def test_every_problem_in_a_file_is_listed_one_line_each(tree: Path) -> None:
    path = tree / "defs" / "indicators" / "falls_65plus.toml"
    edit(path, 'fact = "admission"', 'fact = "ed_attendance"')
    with pytest.raises(DefinitionError) as info:
        load_catalogue(tree / "defs")
    lines = str(info.value).splitlines()
    assert [line.removeprefix(f"{path}: ").split(" ")[0] for line in lines] == [
        "[filter].admission_method", "[filter].min_age", "[numerator].codelist"]
    assert [e for e, _ in info.value.problems] == ["[filter].admission_method", "[filter].min_age",
                                                   "[numerator].codelist"]
    assert isinstance(info.value, ValueError)  # callers that caught the old loaders' errors still do


def test_empty_directories_and_undecodable_bytes_are_named(tree: Path) -> None:
    for path in (tree / "rules").glob("*.toml"):
        path.unlink()
    with pytest.raises(DefinitionError, match=f"^{re.escape(str(tree / 'rules'))}: no alert rules"):
        load_all(tree)
    with pytest.raises(DefinitionError, match=r"^x\.toml: not valid UTF-8"):
        parse_toml(b"id = '\xff'", "x.toml")


def test_the_parse_functions_check_a_mapping_the_same_way() -> None:
    codelists = load_catalogue().codelists
    asthma = {"group": "chronic", "codes": ["J45"], "position": "primary"}
    header = {"id": "x", "version": 1, "title": "t", "source": "s"}
    parsed = parse_codelist({**header, "conditions": {"a": asthma}}, "x.toml")
    assert parsed.conditions[0].codes == ("J45",) and parsed.groups() == {"chronic"}
    with pytest.raises(DefinitionError, match=r"^x\.toml: \[conditions\.a\]\.group is required"):
        parse_codelist({**header, "conditions": {"a": {"codes": ["J45"]}}}, "x.toml")
    base = {"id": "i", "version": 1, "title": "t", "source": "s", "fact": "admission", "measure": "count",
            "units": ["region"], "windows": ["now"]}
    assert parse_indicator(base, codelists, "i.toml").per == 100_000.0
    with pytest.raises(DefinitionError, match=r"^i\.toml: \[numerator\]\.admission_source\[0\] must be a string"):
        parse_indicator({**base, "numerator": {"admission_source": [54]}}, codelists, "i.toml")
    with pytest.raises(DefinitionError, match=r"^i\.toml: version must be >= 1"):
        parse_indicator({**base, "version": 0}, codelists, "i.toml")


def test_the_packaged_files_load_and_a_copy_has_the_same_digest(tree: Path) -> None:
    catalogue, book = load_catalogue(), load_rules()
    assert {c.id for c in catalogue.codelists.values()} == {"acsc", "cancer", "falls"}
    assert len(catalogue.indicators) == len(list((definitions.PACKAGED / "indicators").glob("*.toml")))
    assert len(book.rules) == len(list(alert_rules.PACKAGED.glob("*.toml")))
    copy = load_catalogue(tree / "defs")
    assert copy.digest == catalogue.digest and copy.indicators == catalogue.indicators  # names and bytes only
    assert load_all(tree).digest == book.digest and load_all(tree).rules == book.rules
    falls = catalogue.codelists["falls"].conditions[0]
    assert falls.position == "primary" and normal("W01.1").startswith(falls.require_secondary)


def test_editing_a_rule_or_a_code_list_in_a_copy_changes_the_alerts(tree: Path) -> None:
    packaged = Person("packaged")
    packaged.known()
    assert {a.rule for a in packaged.admit(OCT, "N10")} == {"acsc_emergency_admission"}  # pyelonephritis

    edit(tree / "rules" / "acsc_emergency_admission.toml", 'groups = ["chronic", "acute"]', 'groups = ["chronic"]')
    book = load_all(tree)
    assert book.digest != load_rules().digest
    only_chronic = Person("only-chronic")
    only_chronic.engine = AlertEngine(book, involved_within_days=90)
    only_chronic.known()
    assert only_chronic.admit(OCT, "N10") == []  # an acute ACSC: no longer a rule's business
    assert {a.rule for a in only_chronic.admit(OCT + timedelta(days=1), "J45.9", spell="S-2")} == {
        "acsc_emergency_admission"}  # asthma: chronic, still alerted

    edit(tree / "defs" / "codelists" / "acsc.toml", 'codes = ["J45", "J46"]', 'codes = ["J46"]')
    no_asthma = Person("no-asthma")
    no_asthma.engine = AlertEngine(load_all(tree), involved_within_days=90)
    no_asthma.known()
    assert no_asthma.admit(OCT, "J45.9") == []  # the rule judges with the edited code list


def test_editing_an_indicator_in_a_copy_changes_its_counts(tree: Path) -> None:
    f = Feed()
    admitted(f, OCT, "N10", discharged=OCT + timedelta(days=2), coded="N10")
    key = ("acsc_acute", "practice:P01", day_of(int(OCT.timestamp()) * 10**9))
    assert PersonFacts(load_catalogue()).cells(f.timeline)[key][0] == 1
    edit(tree / "defs" / "indicators" / "acsc_acute.toml", 'admission_method = ["emergency"]',
         'admission_method = ["elective"]')
    assert key not in PersonFacts(load_catalogue(tree / "defs")).cells(f.timeline)  # filtered out now
