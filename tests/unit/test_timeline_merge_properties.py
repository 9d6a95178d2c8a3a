"""Random events, merges and un-merges: every person's timeline equals a replay from scratch.

Records at two organisations send random events (admissions, transfers, codings, discharges,
ED attendances, GP contacts, registrations, care-home admissions, consent changes, care plans,
deaths, cancellations); A40 merges and un-merges between RR8 records, chained and in any order,
go through the identity tables (services/identity/merges.py) as the identity service sends them:
two copies, the handover delivered to its recipient before the next event. At the end, each
person's timeline equals a replay of the same events, from scratch and in the same order, onto
the person each event's record belongs to at the end (merge and un-merge events included, as
events of the surviving record).

Compared (``exposed``): the whole ``PersonTimeline`` that indicators, alerts, risk, case lists
and review packs read (spells by organisation and spell id, ED attendances and contacts in time
order, registration, consent, care home, death, care plans, involvement, age and sex, the last
GP contact, the newest event time, cancelled keys and local records as sets), except:
- what is taken from the person's state when an event comes, as of that moment: the opt-out,
  practice and locality noted on each spell's admission and discharge and on each ED attendance.
  A merge joins two states whose snapshots were taken apart (and an un-merge that undoes a merge
  inside a chain joins the merges above it again), so these follow what each record's person was
  when the event came, not a replay of the joined person;
- what only serves to recognise repeats and to undo merges (applied-event digests, the link
  sequence, the merges kept, ``merged_into``).
The generated events keep away from two cases where joining two histories is not a replay of
them (true of any merge, undone or not; see README "Merges" under the timeline): care-plan owners
are per record (a cancelled plan event forgets its plan, and an older plan of the other record is
not brought back), deaths are not cancelled, and an event that names a practice names its locality
too (one naming only the practice keeps the locality of the registration in force, which depends
on the order the two records' events came in).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carehub.domain.timeline import PersonState, receive, recipient, step
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from carehub.v1 import ingest_pb2 as ing
from carehub.v1 import timeline_pb2 as tl
from services.identity.merges import merge, unmerge
from services.identity.table_store import TABLES, TableStore

START = datetime(2026, 1, 1, tzinfo=UTC)
HOSPITAL = [f"H-{i}" for i in range(4)]  # RR8 records, where merges happen
COUNCIL = ["C-0", "C-1"]  # LA01 records
KINDS = [ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_TRANSFER, ce.EVENT_TYPE_DIAGNOSIS_CODED, ce.EVENT_TYPE_DISCHARGE,
         ce.EVENT_TYPE_ED_ATTENDANCE, ce.EVENT_TYPE_GP_CONTACT, ce.EVENT_TYPE_REGISTRATION,
         ce.EVENT_TYPE_CARE_HOME_ADMISSION, ce.EVENT_TYPE_CONSENT_CHANGE, ce.EVENT_TYPE_CARE_PLAN,
         ce.EVENT_TYPE_DEATH, ce.EVENT_TYPE_CANCELLATION]
LOCALITY = {"B86001": "Leeds North", "B86002": "Leeds South"}  # every event naming a practice names its locality
CANCELLABLE = {ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_DISCHARGE, ce.EVENT_TYPE_ED_ATTENDANCE,
               ce.EVENT_TYPE_GP_CONTACT, ce.EVENT_TYPE_CARE_PLAN}


class Hub:
    """Identity tables and timeline states, fed one linked event at a time."""

    def __init__(self, links: dict[str, str]) -> None:
        self.store = TableStore({name: {} for name in TABLES})
        for local in HOSPITAL:
            self.store.set_local_person("RR8", local, f"p-{local}")
        for local in COUNCIL:  # linked to an RR8 record's person, or a person of its own
            self.store.set_local_person("LA01", local, f"p-{links.get(local, local)}")
        self.states: dict[str, PersonState] = {}
        self.log: list[idn.LinkedEvent] = []  # what was applied, in order, without the merge details

    def state(self, person: str) -> PersonState:
        return self.states.setdefault(person, PersonState.new(person))

    def send(self, event: ing.AcceptedEvent) -> None:
        person = self.store.local_person(event.source_org, event.person.local_id)
        assert person is not None
        linked = idn.LinkedEvent(person_id=person, event=event, link_sequence=len(self.log) + 1)
        self.log.append(linked)
        copies = [linked]
        if event.event_type == ce.EVENT_TYPE_IDENTITY_MERGE:
            if event.merge.unmerge:
                result = unmerge(self.store, event.source_org, person, event.merge.prior_local_id, linked.link_sequence)
            else:
                result = merge(self.store, event.source_org, person, event.merge.prior_local_id)
            if result.merge is not None:
                linked = idn.LinkedEvent()
                linked.CopyFrom(self.log[-1])
                linked.merge.CopyFrom(result.merge)
                other = idn.LinkedEvent()
                other.CopyFrom(linked)
                other.person_id = result.merge.from_person_id
                copies = [linked, other]
        for copy in copies:
            done = step(self.state(copy.person_id), copy)
            if done.handover is not None:
                assert receive(self.state(recipient(done.handover)), done.handover).handover is None

    def replay(self) -> dict[str, PersonState]:
        out: dict[str, PersonState] = {}
        for linked in self.log:
            person = self.store.local_person(linked.event.source_org, linked.event.person.local_id)
            assert person is not None
            again = idn.LinkedEvent()
            again.CopyFrom(linked)
            again.person_id = person
            done = step(out.setdefault(person, PersonState.new(person)), again)
            assert done.handover is None
        return out


def exposed(timeline: tl.PersonTimeline) -> str:
    """The timeline as compared (see the module doc), as text for a readable difference."""
    t = tl.PersonTimeline()
    t.CopyFrom(timeline)
    t.applied_events, t.last_link_sequence, t.merged_into = b"", 0, ""
    t.ClearField("absorbed")
    spells = sorted(t.spells, key=lambda s: (s.org, s.spell_id))
    for spell in spells:
        spell.admission_opted_out = spell.discharge_opted_out = False
        spell.admission_practice = spell.admission_locality = spell.discharge_practice = spell.discharge_locality = ""
    for attendance in t.ed_attendances:
        attendance.opted_out, attendance.practice, attendance.locality = False, "", ""
    records = [(r.org, r.local_id) for r in t.local_records]
    cancelled = sorted(set(t.cancelled_event_keys))  # a key cancelled twice may be listed twice
    kept = [tl.Spell() for _ in spells]
    for copy, spell in zip(kept, spells, strict=True):
        copy.CopyFrom(spell)
    del t.spells[:]
    t.spells.extend(kept)
    del t.local_records[:]
    for org, local_id in sorted(records):
        t.local_records.add(org=org, local_id=local_id)
    del t.cancelled_event_keys[:]
    t.cancelled_event_keys.extend(cancelled)
    return text_format.MessageToString(t)


@st.composite
def event(draw: st.DrawFn, n: int, sent: dict[str, list[tuple[str, int]]]) -> ing.AcceptedEvent:
    """Event ``n`` (its id "e{n}"), of a random kind; ``sent`` is what each record sent so far.

    An un-merge names mostly the prior record of a merge sent before."""
    merging = draw(st.integers(0, 5)) == 0
    org, local = ("RR8", draw(st.sampled_from(HOSPITAL))) if merging else draw(
        st.sampled_from([("RR8", h) for h in HOSPITAL] + [("LA01", c) for c in COUNCIL]))
    kind = ce.EVENT_TYPE_IDENTITY_MERGE if merging else draw(st.sampled_from(KINDS))
    sector = ce.SECTOR_ACUTE if org == "RR8" else ce.SECTOR_SOCIAL_CARE
    event = ing.AcceptedEvent(event_id=f"e{n}", schema_version=1, source_org=org, source_sector=sector,
                              event_type=kind, person=ing.PseudonymisedPerson(
                                  local_id=local, age_years=draw(st.integers(70, 90)), sex=ce.SEX_FEMALE))
    # distinct times, out of link order
    event.event_time.FromDatetime(START + timedelta(days=draw(st.integers(0, 500)), seconds=n))
    clinical = event.clinical
    spell = f"{local}-S{draw(st.integers(0, 2))}"
    if kind == ce.EVENT_TYPE_IDENTITY_MERGE:
        event.merge.unmerge = draw(st.booleans())
        merged = [prior for prior, k in sent.get("merged", [])]
        event.merge.prior_local_id = draw(st.sampled_from(merged if event.merge.unmerge and merged else HOSPITAL))
        if not event.merge.unmerge:
            sent.setdefault("merged", []).append((event.merge.prior_local_id, kind))
    elif kind == ce.EVENT_TYPE_ADMISSION:
        clinical.spell_id = spell
        clinical.admission_method = draw(st.sampled_from([ce.ADMISSION_METHOD_EMERGENCY, ce.ADMISSION_METHOD_ELECTIVE]))
        clinical.admission_source = draw(st.sampled_from(["19", "54"]))
        clinical.diagnoses.add(code=draw(st.sampled_from(["N39.0", "J18.9"])), position=1, provisional=True)
    elif kind == ce.EVENT_TYPE_TRANSFER:
        clinical.spell_id, clinical.location = spell, draw(st.sampled_from(["ward 1", "ward 2"]))
    elif kind == ce.EVENT_TYPE_DIAGNOSIS_CODED:
        clinical.spell_id = spell
        clinical.diagnoses.add(code=draw(st.sampled_from(["I50.0", "J44.1"])), position=1)
    elif kind == ce.EVENT_TYPE_DISCHARGE:
        clinical.spell_id, clinical.discharge_destination = spell, draw(st.sampled_from(["19", "54", "65"]))
    elif kind == ce.EVENT_TYPE_ED_ATTENDANCE:
        clinical.spell_id = draw(st.sampled_from(["", f"{local}-E{draw(st.integers(0, 3))}"]))  # encounter id
    elif kind == ce.EVENT_TYPE_GP_CONTACT:
        event.source_sector = ce.SECTOR_PRIMARY_CARE
    elif kind == ce.EVENT_TYPE_REGISTRATION:
        event.registered_practice = draw(st.sampled_from(sorted(LOCALITY)))
    elif kind == ce.EVENT_TYPE_CONSENT_CHANGE:
        event.consent.planning_opt_out = draw(st.booleans())
        event.consent.direct_care_opt_out = draw(st.booleans())
    elif kind == ce.EVENT_TYPE_CARE_PLAN:
        event.care_plan.owner_org = f"SC-{local}"
        event.care_plan.review_due = draw(st.sampled_from(["2027-01-10", "2027-02-01"]))
        event.care_plan.closed = draw(st.booleans())
    elif kind == ce.EVENT_TYPE_CANCELLATION:
        earlier = [event_id for event_id, k in sent.get(local, []) if k in CANCELLABLE]
        event.target_event_id = draw(st.sampled_from([*earlier, f"never-{n}"]))
    if event.registered_practice == "" and kind != ce.EVENT_TYPE_IDENTITY_MERGE and draw(st.booleans()):
        event.registered_practice = "B86001"
    event.locality = LOCALITY.get(event.registered_practice, "")
    sent.setdefault(local, []).append((event.event_id, kind))
    return event


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.dictionaries(st.sampled_from(COUNCIL), st.sampled_from(HOSPITAL)), st.data())
def test_random_merges_and_unmerges_give_every_person_the_timeline_of_a_replay(
        links: dict[str, str], data: st.DataObject) -> None:
    hub = Hub(links)
    sent: dict[str, list[tuple[str, int]]] = {}
    for n in range(data.draw(st.integers(1, 60))):
        hub.send(data.draw(event(n, sent)))
    replayed = hub.replay()
    for org, local in [("RR8", h) for h in HOSPITAL] + [("LA01", c) for c in COUNCIL]:
        person = hub.store.local_person(org, local)
        assert person is not None
        got = hub.states.get(person, PersonState.new(person)).timeline
        want = replayed.get(person, PersonState.new(person)).timeline
        assert exposed(got) == exposed(want), person
        assert not got.merged_into
    held = {hub.store.local_person(org, local) for org, locals_ in (("RR8", HOSPITAL), ("LA01", COUNCIL))
            for local in locals_}
    for person, state in hub.states.items():  # a person absorbed keeps a shell only
        if person not in held:
            assert state.timeline.merged_into and not state.timeline.spells, person


def sent_event(n: int, local: str, kind: ce.EventType.ValueType, days: int, **detail: str) -> ing.AcceptedEvent:
    event = ing.AcceptedEvent(event_id=f"e{n}", schema_version=1, source_org="RR8", source_sector=ce.SECTOR_ACUTE,
                              event_type=kind, person=ing.PseudonymisedPerson(local_id=local, age_years=80))
    event.event_time.FromDatetime(START + timedelta(days=days, seconds=n))
    for name, value in detail.items():
        if name == "prior":
            event.merge.prior_local_id = value
        elif name == "unmerge":
            event.merge.unmerge = True
        else:
            setattr(event.clinical, name, value)
    return event


def test_an_unmerge_after_thousands_of_events_and_chained_merges_is_exact() -> None:
    """A into B, 1,500 events on both sides, B into C, more events, then A out first and B after:
    each person equals its replay, and what is kept for the merges stays the size of the sides."""
    hub = Hub({})
    n = iter(range(10**6))
    hub.send(sent_event(next(n), "H-1", ce.EVENT_TYPE_IDENTITY_MERGE, 0, prior="H-0"))
    for i in range(1500):
        local = HOSPITAL[i % 3]
        kind = [ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_DISCHARGE, ce.EVENT_TYPE_ED_ATTENDANCE][i // 3 % 3]
        spell = "" if kind == ce.EVENT_TYPE_ED_ATTENDANCE else f"{local}-S{i % 40}"
        hub.send(sent_event(next(n), local, kind, i // 5, spell_id=spell))
        if i == 700:
            hub.send(sent_event(next(n), "H-2", ce.EVENT_TYPE_IDENTITY_MERGE, i // 5, prior="H-1"))
    whole = len(hub.state("p-H-2").to_bytes())
    hub.send(sent_event(next(n), "H-2", ce.EVENT_TYPE_IDENTITY_MERGE, 400, prior="H-0", unmerge="1"))
    hub.send(sent_event(next(n), "H-2", ce.EVENT_TYPE_IDENTITY_MERGE, 400, prior="H-1", unmerge="1"))
    replayed = hub.replay()
    for local in HOSPITAL[:3]:
        person = f"p-{local}"
        assert hub.store.local_person("RR8", local) == person
        assert exposed(hub.state(person).timeline) == exposed(replayed[person].timeline)
        assert hub.state(person).timeline.spells
    alone = sum(len(replayed[f"p-{local}"].to_bytes()) for local in HOSPITAL[:3])
    assert whole < 3 * alone  # the joined person and the two levels of sides, not the events
