"""Data-quality feedback without a broker: counting a batch, adding increments up, the report
window, and the table a provider reads (carehub/domain/quality.py, carehub/quality_report.py)."""

from __future__ import annotations

from datetime import date

from carehub.domain.quality import QualityBook, Tally, problem_key, received, totals
from carehub.quality_report import table
from carehub.v1 import ingest_pb2 as ing

R = ing.RejectReason
BAD_NHS = ing.QualityIssue(field="person.national_id", problem=R.REJECT_REASON_INVALID_NHS_NUMBER)
BAD_DX = ing.QualityIssue(field="clinical.diagnoses[3]", problem=R.REJECT_REASON_INVALID_ICD10)


def test_a_batch_is_counted_per_sender_and_day() -> None:
    tally = Tally()
    tally.accepted("RR8", "2026-12-01", [], late=False)
    tally.accepted("RR8", "2026-12-01", [BAD_NHS, BAD_DX], late=True)
    tally.rejected("RR8", "2026-12-01", R.REJECT_REASON_MISSING_FIELD)
    tally.duplicate("RR8", "2026-12-01")
    tally.accepted("B86001", "2026-12-01", [BAD_NHS], late=False)
    by_org = {c.source_org: c for c in tally.records()}
    rr8 = by_org["RR8"]
    assert (rr8.accepted, rr8.degraded, rr8.late, rr8.duplicates) == (2, 1, 1, 1)
    assert dict(rr8.degraded_by_problem) == {"person.national_id: INVALID_NHS_NUMBER": 1,
                                             "clinical.diagnoses: INVALID_ICD10": 1}
    assert dict(rr8.rejected_by_reason) == {"MISSING_FIELD": 1}
    assert received(rr8) == 4
    assert by_org["B86001"].degraded == 1


def test_increments_add_up_per_day_and_the_report_is_a_window() -> None:
    book = QualityBook()
    for day, n in (("2026-11-01", 5), ("2026-11-30", 2), ("2026-12-01", 3), ("2026-12-01", 4)):
        book.add(ing.QualityCounts(source_org="RR8", day=day, accepted=n))
    book.add(ing.QualityCounts(source_org="RAE", day="2026-12-01", accepted=99))
    last_two = book.report("RR8", date(2026, 12, 1), 2)
    assert [(d.day, d.accepted) for d in last_two] == [("2026-11-30", 2), ("2026-12-01", 7)]
    assert totals(book.report("RR8", date(2026, 12, 1), 31)).accepted == 14
    assert book.report("Z99999", date(2026, 12, 1), 30) == []
    assert book.orgs() == ["RAE", "RR8"]


def test_problem_keys_drop_list_positions() -> None:
    assert problem_key(BAD_DX) == "clinical.diagnoses: INVALID_ICD10"


def test_the_table_names_problems_and_reasons_but_no_values() -> None:
    day = ing.QualityCounts(source_org="RR8", day="2026-12-01", accepted=10, degraded=2, duplicates=1, late=3)
    day.degraded_by_problem["person.national_id: INVALID_NHS_NUMBER"] = 2
    day.rejected_by_reason["MISSING_FIELD"] = 4
    text = table("RR8", [day])
    assert "person.national_id: INVALID_NHS_NUMBER" in text and "missing_field" in text
    all_row = next(line for line in text.splitlines() if line.startswith("all")).split()
    assert all_row[1:4] == ["15", "10", "2"]  # received, accepted, degraded
    assert "nothing received" in table("RR8", [])
