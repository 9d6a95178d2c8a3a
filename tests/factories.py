"""Valid care events for tests; each test changes what it is about."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from carehub.v1 import care_event_pb2 as ce

VALID_NHS = "9434765919"  # valid mod-11 check digit
VALID_NHS_2 = "9434765870"


def care_event(
    event_type: ce.EventType.ValueType = ce.EVENT_TYPE_ADMISSION,
    *,
    when: datetime | None = None,
    local_id: str = "H-99812",
    national_id: str = VALID_NHS,
    source_org: str = "RR8",
    given: str = "Margaret",
    family: str = "Whitfield",
    birth_date: str = "1941-03-17",
    postcode: str = "LS1 4AP",
    event_id: str | None = None,
) -> ce.CareEvent:
    event = ce.CareEvent(
        event_id=event_id or str(uuid.uuid4()),
        schema_version=1,
        source_org=source_org,
        source_sector=ce.SECTOR_ACUTE,
        event_type=event_type,
        person=ce.Person(
            local_id=local_id, national_id=national_id, given_name=given, family_name=family,
            birth_date=birth_date, sex=ce.SEX_FEMALE, postcode=postcode, address_line="12 Pinkerton Circuit",
        ),
        clinical=ce.ClinicalDetail(
            spell_id="S-1", admission_method=ce.ADMISSION_METHOD_EMERGENCY, admission_source="19",
            diagnoses=[ce.Diagnosis(code="N39.0", position=1, provisional=True)],
        ),
        registered_practice="B86001",
        locality="Leeds North",
    )
    event.event_time.FromDatetime(when or datetime.now(UTC) - timedelta(minutes=5))
    event.recorded_time.FromDatetime(when or datetime.now(UTC))
    return event
