"""National reference values (carehub/domain/reference_values.py, data/reference/national.toml).

The packaged file loads against the packaged indicators, a value not found stays without a
number, and a broken copy (written to tmp_path) fails naming the file and the entry, as
tests/unit/test_domain_loader.py checks for the other data files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from carehub.domain.definitions import load_catalogue
from carehub.domain.loader import DefinitionError
from carehub.domain.reference_values import PACKAGED, load_reference_values, parse_reference_values
from tests.unit.broken_copies import assert_broken_copy_refused


def test_the_packaged_values_load_and_name_known_indicators() -> None:
    values = load_reference_values()
    ids = {i.id for i in load_catalogue().indicators}
    assert values.values and all(v.indicator in ids for v in values.values)
    assert len(values.digest) == 16
    readmissions = {v.period: v for v in values.for_indicator("readmission_30d")}
    assert readmissions["2017/18"].value == 13.8 and readmissions["2013/14"].value == 12.5
    assert all(v.unit == "percent" and v.comparison == "definition_differs" for v in readmissions.values())
    assert readmissions["2017/18"].source.publisher == "NHS Digital" and readmissions["2017/18"].source.year == 2019


def test_a_value_not_found_has_no_number_and_says_why() -> None:
    values = load_reference_values()
    chronic = {v.name: v for v in values.for_indicator("acsc_chronic")}
    latest = chronic["nhsof_2_3_i_latest"]
    assert latest.status == "not_found" and latest.value is None and not latest.found
    assert latest.note and "2521" in latest.note and latest.unit == "per_100000"
    share = chronic["iap00068_share_2015_16"]
    assert share.value == 8.1 and share.comparison == "context_only"  # a share, not a rate per 100,000
    acute = values.for_indicator("acsc_acute")
    assert [(v.status, v.value) for v in acute] == [("not_found", None)]
    assert values.for_indicator("followup_7d") == ()


READMISSION = 'indicator = "readmission_30d"\ntitle = "Emergency readmissions within 30 days of discharge from ' \
              'hospital (NHS Outcomes Framework 3b)"\narea = "England"\nperiod = "2017/18"'
ENTRY = r"\[values\.nhsof_3b_2017_18\]"
BROKEN = [
    (READMISSION, READMISSION.replace("readmission_30d", "readmission_31d"),
     rf"{ENTRY}\.indicator names no carehub indicator: 'readmission_31d' \(have: acsc_acute, "),
    ("value = 13.8", "value = 138", rf"{ENTRY}\.value must be at most 100 with unit = 'percent' \(got 138\)"),
    ("value = 13.8", 'value = "13.8"', rf"{ENTRY}\.value must be a number"),
    ("value = 13.8\n", "", rf"{ENTRY}\.value is required with status = 'published'"),
    ('period = "2017/18"\nstatus = "published"', 'period = "2017/18"\nstatus = "not_found"',
     rf"{ENTRY}\.value must be left out with status = 'not_found'"),
    ('period = "2017/18"\nstatus = "published"', 'period = "2017/18"\nstatus = "estimated"',
     rf"{ENTRY}\.status must be one of 'published' or 'not_found'"),
    ('period = "2017/18"\nstatus = "published"\nvalue = 13.8\nunit = "percent"',
     'period = "2017/18"\nstatus = "published"\nvalue = 13.8\nunit = "per_100000"',
     rf"{ENTRY}\.unit must be 'percent' to stand beside indicator 'readmission_30d' \(a proportion"),
    ('period = "2017/18"\nstatus = "published"', 'period = "2017/18"\nperiods = "x"\nstatus = "published"',
     rf"{ENTRY}\.periods is an unknown key"),
    ('title = "Emergency readmissions published for first time in five years", year = 2019, url = "https://digital'
     '.nhs.uk/news/2019/emergency-readmissions-published-for-first-time-in-five-years" }\n\n[values.nhsof_3b_2013',
     'title = "Emergency readmissions published for first time in five years", year = 2019, url = "http://digital'
     '.nhs.uk/news/2019/emergency-readmissions-published-for-first-time-in-five-years" }\n\n[values.nhsof_3b_2013',
     rf"{ENTRY[:-2]}\.source\]\.url must be an https:// address"),
    ('[values.nhsof_3a_latest]\nindicator = "acsc_acute"', '[values.nhsof_3a_latest]\nindicator = "long_stay_7d"',
     r"\[values\.nhsof_3a_latest\]\.comparison must be 'context_only': indicator 'long_stay_7d' is a count"),
    ('note = "No recent England value was found. The NHS Outcomes Framework (NHS Digital, now NHS England) '
     'updated 3a', '# note = "No recent England value was found. The NHS Outcomes Framework (NHS Digital, now NHS '
     'England) updated 3a', r"\[values\.nhsof_3a_latest\]\.note is required with status = 'not_found'"),
]


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN, ids=[c[2][:50] for c in BROKEN])
def test_a_broken_copy_is_refused_naming_the_file_and_the_entry(tmp_path: Path, old: str, new: str,
                                                               expected: str) -> None:
    assert_broken_copy_refused(PACKAGED, tmp_path / "national.toml", load_reference_values, old, new, expected)


def test_parse_names_the_place_it_was_given() -> None:
    indicators = {i.id: i for i in load_catalogue().indicators}
    data = {"id": "x", "version": 1, "title": "t", "values": {"a": {
        "indicator": "nope", "title": "t", "area": "England", "period": "2020/21", "status": "not_found",
        "unit": "per_100000", "comparison": "definition_differs", "definition": "d", "differences": "d",
        "note": "n", "source": {"publisher": "p", "title": "t", "year": 2022}}}}
    with pytest.raises(DefinitionError, match=r"^somewhere: \[values\.a\]\.indicator names no carehub indicator"):
        parse_reference_values(data, indicators, "somewhere")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="no reference values file here"):
        load_reference_values(tmp_path / "national.toml")
