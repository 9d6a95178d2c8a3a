"""A person's timeline and the reviews stage's memory of it, side by side, for the review tests.

Events go through the real timeline (carehub/domain/timeline.py) and the enriched events it
returns through the reviews history (carehub/domain/review/history.py), as in the stages.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from carehub.domain.alert_rules import load_rules
from carehub.domain.definitions import load_catalogue
from carehub.domain.review.history import take
from carehub.domain.review.packs import PackRules, pack_rules
from carehub.domain.review.taxonomy import load_taxonomy
from carehub.domain.timeline import PersonState, apply
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import review_pb2 as rv
from carehub.v1 import timeline_pb2 as tl

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
GP, GP_2, HOSPITAL, COMMUNITY, SOCIAL, CARE_HOME, OOH = "B86001", "B86002", "RR8", "COM01", "SC001", "CH1", "OOH1"
SECTOR = {GP: ce.SECTOR_PRIMARY_CARE, GP_2: ce.SECTOR_PRIMARY_CARE, HOSPITAL: ce.SECTOR_ACUTE,
          COMMUNITY: ce.SECTOR_COMMUNITY, SOCIAL: ce.SECTOR_SOCIAL_CARE, CARE_HOME: ce.SECTOR_CARE_HOME,
          OOH: ce.SECTOR_AMBULANCE}
_TAXONOMY = load_taxonomy()
_RULE = next(r for r in load_rules().rules if r.id == "acsc_emergency_admission")
_CATALOGUE = load_catalogue()


def rules(sample_fraction: float = 1.0) -> PackRules:
    return pack_rules(_RULE, _CATALOGUE, _TAXONOMY, sample_fraction)


def at(day: float) -> datetime:
    return T0 + timedelta(days=day)


class Person:
    def __init__(self, person_id: str = "p1", sequence: itertools.count[int] | None = None) -> None:
        self.person_id = person_id
        self.state = PersonState.new(person_id)
        self.review = rv.ReviewPerson()
        self.sequence = sequence or itertools.count(1)
        self.ids = itertools.count()
        self.outcomes: list[str] = []
        self.events: list[tl.TimelineEvent] = []  # what the timeline sent, in order

    def linked(self, kind: ce.EventType.ValueType, day: float, org: str, *, local_id: str = "", event_id: str = "",
               spell: str = "", diagnoses: tuple[str, ...] = (), method: ce.AdmissionMethod.ValueType =
               ce.ADMISSION_METHOD_EMERGENCY, source: str = "19", destination: str = "", target: str = "",
               practice: str = "", age: int = 82) -> idn.LinkedEvent:
        linked = idn.LinkedEvent(person_id=self.person_id, link_sequence=next(self.sequence))
        e = linked.event
        e.event_id = event_id or f"{self.person_id}-e{next(self.ids)}"
        e.source_org, e.event_type, e.source_sector = org, kind, SECTOR[org]
        e.event_time.FromDatetime(at(day))
        e.person.local_id = local_id or f"{org}-{self.person_id}"
        e.person.age_years = age
        e.target_event_id = target
        if practice:
            e.registered_practice, e.locality = practice, "L01"
        c = e.clinical
        c.spell_id, c.admission_method, c.admission_source, c.discharge_destination = spell, method, source, destination
        for i, code in enumerate(diagnoses):
            c.diagnoses.add(code=code, position=i + 1, provisional=kind == ce.EVENT_TYPE_ADMISSION)
        return linked

    def take(self, out: tl.TimelineEvent | None) -> None:
        if out is not None:
            self.events.append(out)
            self.outcomes.append(take(self.review, out))

    def send(self, kind: ce.EventType.ValueType, day: float, org: str, **kw: object) -> str:
        linked = self.linked(kind, day, org, **kw)  # type: ignore[arg-type]
        self.take(apply(self.state, linked))
        return linked.event.event_id

    def register(self, day: float, practice: str = GP, local_id: str = "P-0001") -> None:
        self.send(ce.EVENT_TYPE_REGISTRATION, day, practice, practice=practice, local_id=local_id)
