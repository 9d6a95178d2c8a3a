"""The fault suite's plan and its figures (``make chaos``, tools/chaos.py), without any I/O.

tools/chaos.py runs a hub on the embedded broker, publishes the synthetic region through all
three doors at a steady rate while partners are subscribed, injects faults on the
:func:`schedule` made here, and then reads every topic to its end. What it read goes through
the functions below, which say what was lost, what came twice and what the partners got; they
are pure so that tests/unit/test_chaos_figures.py can hold them to their definitions.

Definitions (an *event id* is ``(source_org, event_id)``):

- **published**: SDK records the broker acknowledged, and door messages the door acknowledged
  (MLLP AA/CA, FHIR 2xx), with the events the door's own mapping makes of them.
- **lost**: a published event id that is neither accepted (in ``ingest.accepted``) nor
  dead-lettered, plus a malformed record that is neither dead-lettered (matched by its bytes)
  nor accepted under its own id. After ingest, an accepted id missing from ``identity.linked``,
  or a linked one missing from ``timeline.events``, is lost too ("lost after ingest").
- **accepted more than once**: the same provider record's event accepted again after a crash
  (ingest writes before it records what it saw: later stages drop the repeat), reported apart
  from **duplicates accepted twice**: one event id accepted from two different provider
  records, which de-duplication exists to prevent.
- **duplicates dropped**: provider records neither accepted nor dead-lettered (resends, door
  resends after a lost ACK, producer retries).
- **delivered twice**: an alert id that a partner's client handed to the partner more than
  once (after the client's own de-duplication). The gateway promises each position of the
  alerts topic once per cursor: raw receipts (before the client's de-duplication) above the
  partner's positions in the topic are **positions delivered twice**; an alert id the alerts
  worker wrote at two positions is counted apart (**alerts written twice**).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

EventId = tuple[str, str]  # (source_org, event_id)
Position = tuple[str, int, int]  # (topic, partition, offset)
Cell = tuple[int, int | None, int]  # an indicator value: numerator, denominator, provisional
CellKey = tuple[str, str, str]  # indicator, unit, window

KILL, STALL, DROP, RESUBSCRIBE = "kill", "stall", "drop", "resubscribe"


# -- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after publishing starts: the earliest time it may happen
    kind: str  # KILL, STALL (the broker), DROP (partners' connections), RESUBSCRIBE (partners' streams)
    target: str = ""  # the service, for KILL
    seconds: float = 0.0  # how long a STALL or a DROP lasts

    def describe(self) -> str:
        if self.kind == KILL:
            return f"SIGKILL {self.target}, restart it"
        if self.kind == STALL:
            return f"SIGSTOP the broker for {self.seconds:g} s, then SIGCONT"
        if self.kind == DROP:
            return f"drop every partner connection, refuse new ones for {self.seconds:g} s"
        return "every partner's stream ended by the partner, resumed from its saved cursor"


def schedule(services: Sequence[str], rounds: int, window_s: float, stall_s: float, drop_s: float,
             lead_s: float, tail_s: float) -> list[Fault]:
    """The faults, in time order, spread over publishing from ``lead_s`` to ``window_s - tail_s``.

    Each round kills every one of ``services`` in turn at an even spacing; the broker stall
    comes once, after the kill in the middle of the middle round, and takes its own time on top
    of the spacing; each round drops the partners' connections half-way between two kills, and
    the first round also has every partner end its stream and resume from its cursor.
    """
    if rounds < 1 or not services:
        raise ValueError("at least one round and one service")
    kills = rounds * len(services)
    usable = window_s - lead_s - tail_s - stall_s
    if usable <= 0:
        raise ValueError(f"a {window_s:g} s window leaves no time for {kills} kills and a {stall_s:g} s stall")
    gap = usable / (kills + 1)
    faults: list[Fault] = []
    t = lead_s
    stall_after = (rounds // 2) * len(services) + len(services) // 2  # the kill before the stall
    for k in range(kills):
        t += gap
        faults.append(Fault(round(t, 3), KILL, services[k % len(services)]))
        within = k % len(services)
        if within == len(services) // 2 - 1 or len(services) == 1:
            faults.append(Fault(round(t + gap / 2, 3), DROP, seconds=drop_s))
        if k == 1:
            faults.append(Fault(round(t + gap / 3, 3), RESUBSCRIBE))
        if k == min(stall_after, kills - 1) and stall_s > 0:
            faults.append(Fault(round(t + gap / 2, 3), STALL, seconds=stall_s))
            t += stall_s
    return sorted(faults, key=lambda f: f.at_s)


# -- ingest and the stages after it ---------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """One event as ``ingest.accepted`` carries it: its id and the provider record it came from."""

    event: EventId
    source: Position


@dataclass(frozen=True)
class Letter:
    """One dead letter: where its record came from (a door's own topic name and -1 for a refused
    door message), the event id where ingest could read one, and the original bytes."""

    source: Position
    event: EventId | None
    original: bytes


@dataclass
class IngestFigures:
    published_records: int = 0  # SDK records acknowledged by the broker
    door_messages: int = 0  # door messages acknowledged by their door
    expected_events: int = 0  # distinct event ids published (SDK and doors)
    provider_records: int = 0  # records on the provider topics (SDK, doors, resends, retries)
    accepted: int = 0  # distinct event ids accepted
    accepted_records: int = 0  # accepted events as written, repeats included
    accepted_more_than_once: int = 0  # the same provider record's event accepted again (crash repeats)
    duplicates_accepted_twice: int = 0  # one event id accepted from two provider records
    dead_lettered: int = 0  # distinct dead letters (by source position; door refusals by bytes)
    valid_dead_lettered: int = 0  # published valid event ids that were dead-lettered
    duplicates_dropped: int = 0
    lost: int = 0
    lost_examples: list[str] = field(default_factory=list)
    malformed: int = 0  # malformed records published
    malformed_lost: int = 0
    unexpected: int = 0  # accepted ids nobody published (the expectation is wrong, or worse)
    lost_at_identity: int = 0  # accepted, never linked
    lost_at_timeline: int = 0  # linked, never on a timeline
    linked_repeats: int = 0  # linked events repeated (the same id linked again after a crash)
    linked_to_two_persons: int = 0  # event ids on two hub persons (merged persons as one)
    two_persons_examples: list[str] = field(default_factory=list)  # "org/event id" of up to 5 of them

    @property
    def lost_after_ingest(self) -> int:
        return self.lost_at_identity + self.lost_at_timeline


def account_ingest(expected: Iterable[EventId], malformed: Iterable[tuple[bytes, EventId | None]],
                   accepted: Sequence[Accepted], letters: Sequence[Letter], provider_records: int,
                   provider_topics: Iterable[str]) -> IngestFigures:
    """Where every published event went: accepted, dead-lettered, dropped as a duplicate, or lost.

    ``expected``: the published event ids; ``malformed``: each malformed record's bytes and, where
    its JSON names one, its event id; ``provider_records``: how many records the provider topics
    hold. Dead letters whose source is not a provider topic are a door's refusals.
    """
    wanted = set(expected)
    topics = set(provider_topics)
    accepted_ids = {a.event for a in accepted}
    distinct = set(accepted)
    positions_by_id: dict[EventId, set[Position]] = {}
    for a in distinct:
        positions_by_id.setdefault(a.event, set()).add(a.source)
    letter_positions = {x.source for x in letters if x.source[0] in topics}
    door_refusals = {(x.source[0], x.original) for x in letters if x.source[0] not in topics}
    letter_ids = {x.event for x in letters if x.event is not None}
    letter_bytes = {x.original for x in letters}
    missing = sorted(wanted - accepted_ids - letter_ids)
    bad = list(malformed)
    bad_lost = [value for value, ident in bad if value not in letter_bytes and (ident is None or ident not in
                                                                               accepted_ids)]
    handled = {a.source for a in distinct} | letter_positions
    return IngestFigures(
        expected_events=len(wanted),
        provider_records=provider_records,
        accepted=len(accepted_ids),
        accepted_records=len(accepted),
        accepted_more_than_once=len(accepted) - len(distinct),
        duplicates_accepted_twice=sum(1 for ps in positions_by_id.values() if len(ps) > 1),
        dead_lettered=len(letter_positions) + len(door_refusals),
        valid_dead_lettered=len((wanted & letter_ids) - accepted_ids),
        duplicates_dropped=max(0, provider_records - len(handled)),
        lost=len(missing) + len(bad_lost),
        lost_examples=[f"{org}/{event_id}" for org, event_id in missing[:5]],
        malformed=len(bad),
        malformed_lost=len(bad_lost),
        unexpected=len(accepted_ids - wanted - {ident for _, ident in bad if ident is not None}),
    )


def account_stages(figures: IngestFigures, accepted: Iterable[EventId],
                   linked: Sequence[tuple[EventId, str, bool]], timeline: Iterable[EventId],
                   merged: Mapping[str, str] | None = None) -> None:
    """Events lost after ingest (accepted but never linked, linked but never on a timeline), and
    events linked to more than one hub person.

    ``linked`` holds every linked event as written: (event id, hub person id, whether it is a copy
    of an identity merge). Its repeats (a crash repeat, or the copies a merge writes on purpose,
    one for each person) are counted, not judged; a repeat that names another person is one
    event on two persons' timelines, counted twice by everything after identity. ``merged``: the
    merges in force at the end (absorbed person -> survivor, see :func:`merges_in_force`). Two
    persons of which one absorbed the other are one: an event decided before its person's merge and
    again, after a crash, once the merge was made, goes to the survivor, who holds it once.
    """
    linked_ids = {event for event, _, _ in linked}
    persons: dict[EventId, set[str]] = {}
    for event, person, merge in linked:
        if not merge:
            persons.setdefault(event, set()).add(_survivor(person, merged or {}))
    figures.lost_at_identity = len(set(accepted) - linked_ids)
    figures.lost_at_timeline = len(linked_ids - set(timeline))
    figures.linked_repeats = len(linked) - len(linked_ids)
    twice = [event for event, ps in persons.items() if len(ps) > 1]
    figures.linked_to_two_persons = len(twice)
    figures.two_persons_examples = [f"{org}/{event_id}" for org, event_id in sorted(twice)[:5]]


def merges_in_force(merges: Iterable[tuple[str, str, bool]]) -> dict[str, str]:
    """(absorbed, survivor, unmerge) in link order -> absorbed person -> the person that absorbed it."""
    out: dict[str, str] = {}
    for absorbed, survivor, unmerge in merges:
        if unmerge:
            out.pop(absorbed, None)
        else:
            out[absorbed] = survivor
    return out


def _survivor(person: str, merged: Mapping[str, str]) -> str:
    seen = {person}
    while person in merged and merged[person] not in seen:
        person = merged[person]
        seen.add(person)
    return person


# -- alerts ----------------------------------------------------------------------------------------


@dataclass
class PartnerTally:
    """What one partner's client handed over (after its de-duplication) and what it dropped."""

    received: Counter[str] = field(default_factory=Counter)  # alert id -> times handed to the partner
    dropped_by_client: int = 0  # raw receipts the client dropped as repeats (PartnerClient.duplicates)

    @property
    def raw(self) -> int:
        return sum(self.received.values()) + self.dropped_by_client


@dataclass
class AlertFigures:
    partners: int = 0
    in_topic: int = 0  # distinct alert ids in the alerts topic addressed to subscribed partners
    positions: int = 0  # their records (an id written twice counts twice)
    delivered: int = 0  # distinct (partner, alert id) received
    missing: int = 0  # in the topic for a partner, never received by it
    missing_examples: list[str] = field(default_factory=list)
    wrong_partner: int = 0  # received by a partner it was not addressed to
    delivered_twice: int = 0  # handed to a partner more than once after the client's de-duplication
    raw_receipts: int = 0
    dropped_by_client: int = 0
    positions_delivered_twice: int = 0  # raw receipts above the partner's positions in the topic
    written_twice: int = 0  # alert ids at more than one position of the topic
    same_situation_twice: int = 0  # new alerts with another id for a situation a partner was already told of
    same_situation_examples: list[str] = field(default_factory=list)
    unaudited: int = 0  # (partner, alert id) received with no "deliver" record in the audit topic
    unaudited_examples: list[str] = field(default_factory=list)


def account_alerts(topic: Iterable[tuple[str, str, str]], tallies: Mapping[str, PartnerTally]) -> AlertFigures:
    """``topic``: (recipient organisation, alert id, situation) for each record of the alerts topic,
    where a situation names what a new alert about a person is about (rule, role, the person's
    record id, reporting organisation, event time; "" for anything else): one situation should
    give one alert id. ``tallies``: each subscribed partner's receipts."""
    positions: Counter[str] = Counter()
    ids: dict[str, set[str]] = {org: set() for org in tallies}
    written: Counter[tuple[str, str]] = Counter()
    situations: dict[tuple[str, str], set[str]] = {}
    for org, alert_id, situation in topic:
        if org in tallies:
            positions[org] += 1
            ids[org].add(alert_id)
            written[(org, alert_id)] += 1
            if situation:
                situations.setdefault((org, situation), set()).add(alert_id)
    out = AlertFigures(partners=len(tallies))
    for org, tally in sorted(tallies.items()):
        got = set(tally.received)
        out.in_topic += len(ids[org])
        out.positions += positions[org]
        out.delivered += len(got & ids[org])
        missed = sorted(ids[org] - got)
        out.missing += len(missed)
        out.missing_examples += [f"{org}: {a}" for a in missed[: max(0, 5 - len(out.missing_examples))]]
        out.wrong_partner += len(got - ids[org])
        out.delivered_twice += sum(n - 1 for n in tally.received.values() if n > 1)
        out.raw_receipts += tally.raw
        out.dropped_by_client += tally.dropped_by_client
        out.positions_delivered_twice += max(0, tally.raw - positions[org])
    out.written_twice = sum(n - 1 for n in written.values() if n > 1)
    out.same_situation_twice = sum(len(v) - 1 for v in situations.values())
    out.same_situation_examples = [f"{org} {situation}: {', '.join(sorted(v))}"
                                   for (org, situation), v in sorted(situations.items()) if len(v) > 1][:5]
    return out


def account_audit(figures: AlertFigures, delivered: Iterable[tuple[str, str]],
                  tallies: Mapping[str, PartnerTally]) -> None:
    """``delivered``: (organisation, alert id) of every "deliver" record in the audit topic. Every
    alert a partner received must have one: the gateway writes it before the alert leaves."""
    audited = set(delivered)
    missing = sorted((org, alert_id) for org, tally in tallies.items() for alert_id in tally.received
                     if (org, alert_id) not in audited)
    figures.unaudited = len(missing)
    figures.unaudited_examples = [f"{org}: {alert_id}" for org, alert_id in missing[:5]]


# -- indicators ------------------------------------------------------------------------------------


@dataclass
class IndicatorFigures:
    reference: int = 0  # values the batch reference computes
    equal: int = 0  # published values equal to it
    differ: int = 0
    missing: int = 0  # in the reference, not published
    extra: int = 0  # published, not in the reference
    examples: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return self.differ + self.missing + self.extra


def compare_indicators(published: Mapping[CellKey, Cell], reference: Mapping[CellKey, Cell]) -> IndicatorFigures:
    common = set(published) & set(reference)
    wrong = sorted(k for k in common if published[k] != reference[k])
    out = IndicatorFigures(reference=len(reference), equal=len(common) - len(wrong), differ=len(wrong),
                           missing=len(set(reference) - common), extra=len(set(published) - common))
    out.examples = [f"{'|'.join(k)}: published {published[k]}, reference {reference[k]}" for k in wrong[:5]]
    out.examples += [f"{'|'.join(k)}: not published" for k in sorted(set(reference) - common)[:3]]
    out.examples += [f"{'|'.join(k)}: published, not in the reference" for k in sorted(set(published) - common)[:3]]
    return out


# -- the report ------------------------------------------------------------------------------------

# The stages whose catch-up is timed, in pipeline order, and what "caught up" means for each.
CATCH_UP = (
    ("doors", "every queued MLLP and FHIR message acknowledged by its door"),
    ("ingest", "its consumer group has committed the provider topic to its end"),
    ("identity", "committed ingest.accepted to its end"),
    ("timeline", "committed identity.linked and timeline.handover to their ends"),
    ("indicators", "every published value equals the batch reference"),
    ("alerts", "committed timeline.events and indicators.signals to their ends"),
    ("population", "committed timeline.events to its end (risk assessments current)"),
    ("reviews", "committed timeline.events to its end (review packs current)"),
    ("partners", "every subscribed partner has received every alert addressed to it"),
)


@dataclass
class Report:
    command: str
    seconds: float = 0.0  # wall time of the whole run
    ingest: IngestFigures = field(default_factory=IngestFigures)
    alerts: AlertFigures = field(default_factory=AlertFigures)
    indicators: IndicatorFigures = field(default_factory=IndicatorFigures)
    catch_up_s: dict[str, float | None] = field(default_factory=dict)  # None: not within the deadline
    faults: list[str] = field(default_factory=list)  # what happened, when
    notes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """What fails the suite: anything lost, delivered twice (also as one event on two persons,
        or one situation under two alert ids) or sent to the wrong partner, an indicator value
        that differs from the reference, a stage that did not catch up."""
        i, a, n = self.ingest, self.alerts, self.indicators
        out = []
        if i.lost:
            unfinished = self.catch_up_s.get("ingest", 0.0) is None
            out.append(f"{i.lost} events lost ({', '.join(i.lost_examples) or 'malformed records'})"
                       + (": not accepted by the deadline, ingest had not caught up" if unfinished else ""))
        if i.lost_after_ingest:
            out.append(f"{i.lost_at_identity} accepted events never linked, {i.lost_at_timeline} linked events "
                       "never on a timeline")
        if i.linked_to_two_persons:
            out.append(f"{i.linked_to_two_persons} events linked to two hub persons (counted twice downstream: "
                       f"{', '.join(i.two_persons_examples)})")
        if a.delivered_twice:
            out.append(f"{a.delivered_twice} alerts delivered twice to a partner")
        if a.same_situation_twice:
            out.append(f"{a.same_situation_twice} alerts repeat a situation a partner was already told of, "
                       f"under another id ({'; '.join(a.same_situation_examples)})")
        if a.missing:
            out.append(f"{a.missing} alerts never received ({', '.join(a.missing_examples)})")
        if a.wrong_partner:
            out.append(f"{a.wrong_partner} alerts received by a partner they were not addressed to")
        if a.unaudited:
            out.append(f"{a.unaudited} deliveries with no audit record ({', '.join(a.unaudited_examples)})")
        if n.mismatches or not n.reference:
            out.append(f"indicator values equal to the reference: {n.equal} of {n.reference} ({n.differ} differ, "
                       f"{n.missing} missing, {n.extra} extra){': ' + '; '.join(n.examples) if n.examples else ''}")
        late = [stage for stage, _ in CATCH_UP if self.catch_up_s.get(stage, 0.0) is None]
        if late:
            out.append(f"not caught up within the deadline: {', '.join(late)}")
        return out

    def table(self) -> str:
        i, a, n = self.ingest, self.alerts, self.indicators
        rows: list[tuple[str, str, str]] = [
            ("events published (distinct event ids)", f"{i.expected_events:,}", ""),
            ("  SDK records acknowledged by the broker", f"{i.published_records:,}", ""),
            ("  door messages acknowledged (MLLP and FHIR)", f"{i.door_messages:,}", ""),
            ("malformed records published (besides)", f"{i.malformed:,}", ""),
            ("records on the provider topic", f"{i.provider_records:,}", ""),
            ("accepted (distinct events)", f"{i.accepted:,}", ""),
            ("dead-lettered", f"{i.dead_lettered:,}", ""),
            ("  of them published valid events", f"{i.valid_dead_lettered:,}", ""),
            ("duplicates dropped", f"{i.duplicates_dropped:,}", ""),
            ("lost", f"{i.lost:,}", "0"),
            ("lost after ingest (never linked / never on a timeline)",
             f"{i.lost_at_identity:,} / {i.lost_at_timeline:,}", "0 / 0"),
            ("accepted more than once (a crash repeat of one record)", f"{i.accepted_more_than_once:,}", ""),
            ("duplicates accepted twice (two records, one event id)", f"{i.duplicates_accepted_twice:,}", ""),
            ("linked events written again (crash repeats, merges)", f"{i.linked_repeats:,}", ""),
            ("events linked to two hub persons (merged persons as one)", f"{i.linked_to_two_persons:,}", ""),
            ("accepted, not published (unexpected)", f"{i.unexpected:,}", ""),
            ("partners subscribed", f"{a.partners:,}", ""),
            ("alerts addressed to them (distinct ids)", f"{a.in_topic:,}", ""),
            ("alerts delivered (distinct per partner)", f"{a.delivered:,}", "all"),
            ("alerts never received", f"{a.missing:,}", "0"),
            ("alerts delivered twice (after the client's de-duplication)", f"{a.delivered_twice:,}", "0"),
            ("alerts to the wrong partner", f"{a.wrong_partner:,}", "0"),
            ("deliveries with no audit record", f"{a.unaudited:,}", "0"),
            ("raw receipts / dropped by the client as repeats", f"{a.raw_receipts:,} / {a.dropped_by_client:,}", ""),
            ("alerts-topic positions delivered twice by the gateway", f"{a.positions_delivered_twice:,}", ""),
            ("alert ids written twice to the alerts topic", f"{a.written_twice:,}", ""),
            ("one situation alerted under two ids (new alerts, same person record)", f"{a.same_situation_twice:,}",
             ""),
            ("indicator values equal to the batch reference",
             f"{n.equal:,} of {n.reference:,}" + (f" (+{n.extra} extra)" if n.extra else ""), "all"),
        ]
        for stage, _ in CATCH_UP:
            if stage in self.catch_up_s:
                s = self.catch_up_s[stage]
                rows.append((f"caught up: {stage}", "not within the deadline" if s is None else f"{s:.1f} s", ""))
        width = max(len(r[0]) for r in rows)
        value_width = max(len(r[1]) for r in rows)
        lines = [f"{'figure'.ljust(width)}  {'value'.rjust(value_width)}  must be"]
        lines += [f"{label.ljust(width)}  {value.rjust(value_width)}  {must}".rstrip() for label, value, must in rows]
        return "\n".join(lines)
