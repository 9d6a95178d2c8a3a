"""Review packs: which admissions get one, and what a pack holds. Pure; no Kafka.

An admission gets a pack when the alert rule ``acsc_emergency_admission`` would judge it so
(the same rule file, so a practice reviews what it was alerted to): an emergency admission
whose diagnoses, coded when coded, else the working ones, fall in the ACSC code list. Coding
that takes it out of the list, or a cancellation (A11), withdraws the pack; coding that
confirms it clears ``provisional``.

Selection (``CAREHUB_REVIEW_SAMPLE_FRACTION``): every such admission (1.0), or a sample: an
admission is drawn when a hash of its pack id, read as a number in [0, 1), is below the
fraction. The draw depends on nothing but the admission, so a replay, a restart or a merge
selects the same admissions, and each practice gets about that share of its admissions every
month (binomially: a practice with few admissions may get none in a month).

The pack id is derived from the admitting organisation and its spell id, not from the person:
a pack keeps its id, and its recorded outcome, when identity merges move the spell to another
person. The person is named only by the practice's own record id; a practice with no record of
its own for the person gets no pack (as with case lists), and a direct-care opt-out means no
pack (it would share what other organisations reported).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from carehub.domain.alert_rules import Rule
from carehub.domain.codelists import normal
from carehub.domain.definitions import Catalogue
from carehub.domain.indicator_facts import admission_counted_in
from carehub.domain.review.taxonomy import Taxonomy
from carehub.domain.timeline import CARE_HOME_CODES, DAY_NS, DIED, FOLLOW_UP_SECTORS, ns
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import review_pb2 as rv
from carehub.v1 import timeline_pb2 as tl

WINDOW_DAYS = 90
HORIZON_DAYS = 365  # packs are kept current for admissions this recent (the newest event's clock)
CONTACT_KINDS = frozenset({rv.REMEMBERED_KIND_CONTACT, rv.REMEMBERED_KIND_SOCIAL_CARE, rv.REMEMBERED_KIND_CARE_PLAN})


@dataclass(frozen=True)
class PackRules:
    rule: Rule  # recognises an emergency ACSC admission (data/alert_rules/acsc_emergency_admission.toml)
    catalogue: Catalogue
    taxonomy: Taxonomy
    sample_fraction: float = 1.0
    window_days: int = WINDOW_DAYS
    follow_up_days: int = 7  # the followup_7d indicator's days

    @property
    def window_ns(self) -> int:
        return self.window_days * DAY_NS


def pack_rules(rule: Rule, catalogue: Catalogue, taxonomy: Taxonomy, sample_fraction: float = 1.0) -> PackRules:
    """The rules, with the follow-up days taken from the catalogue's ``followup_7d`` when it has it."""
    days = 7
    for indicator in catalogue.indicators:
        if indicator.id == "followup_7d" and indicator.followed_up_within_days is not None:
            days = indicator.followed_up_within_days
    return PackRules(rule, catalogue, taxonomy, sample_fraction, follow_up_days=days)


def pack_id(spell_org: str, spell_id: str) -> str:
    return hashlib.sha256(f"review-pack|{spell_org}|{spell_id}".encode()).hexdigest()[:32]


def draw(pid: str) -> float:
    """The admission's sampling draw in [0, 1): from its pack id alone."""
    return int(hashlib.sha256(f"review-sample|{pid}".encode()).hexdigest()[:13], 16) / 16**13


def selection(rules: PackRules, pid: str) -> str | None:
    """Why the admission has a pack, or None when the sample leaves it out."""
    if rules.sample_fraction >= 1.0:
        return f"every emergency admission for an ambulatory care sensitive condition ({rules.rule.definition})"
    value = draw(pid)
    if value >= rules.sample_fraction:
        return None
    return (f"sampled: {rules.sample_fraction:.0%} of each practice's emergency ACSC admissions a month "
            f"(draw {value:.4f} < {rules.sample_fraction:g}; {rules.rule.definition})")


def is_review_admission(rule: Rule, spell: tl.SpellView) -> bool:
    """Would the alert rule judge this spell an emergency ACSC admission now (as the alert stage does)?"""
    if spell.status == tl.SPELL_STATUS_CANCELLED or not spell.HasField("admitted_at"):
        return False
    if rule.admission_methods and spell.admission_method not in rule.admission_methods:
        return False
    if rule.admission_sources and spell.admission_source not in rule.admission_sources:
        return False
    return rule.codelist is None or rule.codelist.matches(
        rule.groups, [normal(d.code) for d in spell.diagnoses], [normal(p.code) for p in spell.procedures])


def condition_of(rule: Rule, spell: tl.SpellView) -> str:
    if rule.codelist is None:
        return ""
    diagnoses = [normal(d.code) for d in spell.diagnoses]
    procedures = [normal(p.code) for p in spell.procedures]
    for condition in rule.codelist.conditions:
        if condition.group in rule.groups and condition.matches(diagnoses, procedures):
            return condition.name
    return ""


def practice_record(person: rv.ReviewPerson) -> str:
    """The registered practice's own record id for the person ("" when it has none)."""
    for record in person.local_records:
        if record.org == person.registered_practice:
            return record.local_id
    return ""


def packs_for(rules: PackRules, person: rv.ReviewPerson, computed_ns: int) -> dict[str, rv.ReviewPack]:
    """Every pack the person should have now, for admissions within the horizon, by pack id."""
    if person.merged_into or person.direct_care_opt_out or not person.registered_practice:
        return {}
    local_id = practice_record(person)
    if not local_id:
        return {}
    horizon = person.newest_ns - HORIZON_DAYS * DAY_NS
    out: dict[str, rv.ReviewPack] = {}
    for held in person.spells:
        spell = held.view
        if not is_review_admission(rules.rule, spell) or ns(spell.admitted_at) < horizon:
            continue
        pid = pack_id(spell.org, spell.spell_id)
        why = selection(rules, pid)
        if why is not None:
            out[pid] = assemble(rules, person, held, pid, local_id, why, computed_ns)
    return out


def _month(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns // 10**9, UTC).strftime("%Y-%m")


def _day(t_ns: int) -> int:
    return t_ns // DAY_NS


def _words(event_type: int) -> str:
    return ce.EventType.Name(event_type).removeprefix("EVENT_TYPE_").lower().replace("_", " ")  # type: ignore[arg-type]


def _contact(item: rv.RememberedEvent) -> rv.ReviewContact:
    contact = rv.ReviewContact(org=item.org, sector=item.sector, what=_words(item.event_type))
    contact.at.FromNanoseconds(item.at_ns)
    return contact


def assemble(rules: PackRules, person: rv.ReviewPerson, held: rv.ReviewSpell, pid: str, local_id: str,
             why: str, computed_ns: int) -> rv.ReviewPack:
    spell = held.view
    admitted = ns(spell.admitted_at)
    start = admitted - rules.window_ns
    pack = rv.ReviewPack(pack_id=pid, practice=person.registered_practice, locality=person.locality,
                         local_id=local_id, month=_month(admitted), window_days=rules.window_days, selection=why,
                         taxonomy_version=rules.taxonomy.label, deceased=person.deceased)
    pack.window_start.FromNanoseconds(start)
    pack.computed_at.FromNanoseconds(computed_ns)
    pack.admission.CopyFrom(_admission(rules, person, spell))
    within = [i for i in person.items if start <= i.at_ns < admitted]
    contacts = [i for i in within if i.kind in CONTACT_KINDS]
    pack.contacts.extend(_contact(i) for i in contacts)
    by_sector: dict[int, tuple[int, set[str]]] = {}
    for item in contacts:
        count, orgs = by_sector.get(item.sector, (0, set()))
        by_sector[item.sector] = (count + 1, orgs | {item.org})
    for sector, (count, orgs) in sorted(by_sector.items()):
        pack.contacts_by_sector.add(sector=sector, contacts=count, organisations=len(orgs))
    pack.ed_attendances.extend(_contact(i) for i in within if i.kind == rv.REMEMBERED_KIND_ED_ATTENDANCE)
    pack.social_care.extend(_contact(i) for i in within if i.kind == rv.REMEMBERED_KIND_SOCIAL_CARE
                            or i.sector == ce.SECTOR_SOCIAL_CARE)
    key = (spell.org, spell.spell_id)
    rest = [s for s in person.spells if (s.view.org, s.view.spell_id) != key]
    others = [s.view for s in rest if s.view.status != tl.SPELL_STATUS_CANCELLED]
    pack.discharges.extend(_discharges(rules, person, others, start, admitted))
    pack.missed_follow_ups = sum(d.follow_up == rv.FOLLOW_UP_MISSED for d in pack.discharges)
    pack.care_home_moves.extend(_care_home_moves(within, others, spell, start, admitted))
    plans = _care_plans(person.care_plans.values(), admitted)
    pack.care_plan_known = bool(plans)
    pack.care_plans.extend(plans)
    pack.counts_in.extend(_counts_in(rules, held, rest))
    return pack


def _admission(rules: PackRules, person: rv.ReviewPerson, spell: tl.SpellView) -> rv.ReviewAdmission:
    admission = rv.ReviewAdmission(org=spell.org, status=spell.status, primary_diagnosis=spell.primary_diagnosis,
                                   provisional=spell.primary_diagnosis_provisional,
                                   diagnoses=[d.code for d in spell.diagnoses],
                                   condition=condition_of(rules.rule, spell),
                                   admission_source=spell.admission_source, age_at_admission=spell.age_at_admission)
    admission.admitted_at.CopyFrom(spell.admitted_at)
    if spell.HasField("discharged_at"):
        admission.discharged_at.CopyFrom(spell.discharged_at)
    admitted = ns(spell.admitted_at)
    before = [ns(s.view.discharged_at) for s in person.spells
              if s.view.status == tl.SPELL_STATUS_CLOSED and s.view.HasField("discharged_at")
              and ns(s.view.discharged_at) <= admitted and (s.view.org, s.view.spell_id) != (spell.org, spell.spell_id)]
    admission.days_since_previous_discharge = _day(admitted) - _day(max(before)) if before else -1
    return admission


def _discharges(rules: PackRules, person: rv.ReviewPerson, spells: Iterable[tl.SpellView], start: int,
                admitted: int) -> list[rv.ReviewDischarge]:
    follow_ups = [i for i in person.items if i.event_type == ce.EVENT_TYPE_GP_CONTACT
                  and i.sector in FOLLOW_UP_SECTORS and i.at_ns < admitted]
    n = rules.follow_up_days
    out = []
    for spell in spells:
        if spell.status != tl.SPELL_STATUS_CLOSED or not spell.HasField("discharged_at"):
            continue
        discharged = ns(spell.discharged_at)
        if not start <= discharged <= admitted:
            continue
        d = rv.ReviewDischarge(org=spell.org, destination=spell.discharge_destination, within_days=n,
                               emergency=spell.admission_method == ce.ADMISSION_METHOD_EMERGENCY)
        if spell.HasField("admitted_at"):
            d.admitted_at.CopyFrom(spell.admitted_at)
        d.discharged_at.CopyFrom(spell.discharged_at)
        day = _day(discharged)
        seen = [i for i in follow_ups if 1 <= _day(i.at_ns) - day <= n]
        if spell.discharge_destination == DIED:
            d.follow_up = rv.FOLLOW_UP_NOT_DUE
        elif seen:
            d.follow_up = rv.FOLLOW_UP_DONE
            d.followed_up_at.FromNanoseconds(seen[0].at_ns)
            d.followed_up_by = seen[0].org
        elif _day(admitted) - day <= n:
            d.follow_up = rv.FOLLOW_UP_INTERRUPTED
        else:
            d.follow_up = rv.FOLLOW_UP_MISSED
        out.append(d)
    return sorted(out, key=lambda d: ns(d.discharged_at))


def _care_home_moves(within: Iterable[rv.RememberedEvent], spells: Iterable[tl.SpellView], index: tl.SpellView,
                     start: int, admitted: int) -> list[rv.CareHomeMove]:
    moves: list[tuple[int, str, str]] = [(i.at_ns, i.org, "moved into a care home") for i in within
                                         if i.kind == rv.REMEMBERED_KIND_CARE_HOME_MOVE]
    for spell in [*spells, index]:
        if spell.HasField("admitted_at") and start <= ns(spell.admitted_at) <= admitted \
                and spell.admission_source in CARE_HOME_CODES:
            moves.append((ns(spell.admitted_at), spell.org,
                          f"admitted from a care home (source {spell.admission_source})"))
        if spell.HasField("discharged_at") and start <= ns(spell.discharged_at) <= admitted \
                and spell.discharge_destination in CARE_HOME_CODES:
            moves.append((ns(spell.discharged_at), spell.org,
                          f"discharged to a care home (destination {spell.discharge_destination})"))
    out = []
    for at, org, what in sorted(moves):
        move = rv.CareHomeMove(org=org, what=what)
        move.at.FromNanoseconds(at)
        out.append(move)
    return out


def _care_plans(plans: Iterable[tl.CarePlan], admitted: int) -> list[rv.ReviewCarePlan]:
    day = datetime.fromtimestamp(admitted // 10**9, UTC).date().isoformat()
    out = []
    for plan in sorted(plans, key=lambda p: (ns(p.at), p.owner_org)):
        if plan.closed or ns(plan.at) > admitted:
            continue
        entry = rv.ReviewCarePlan(owner_org=plan.owner_org, review_due=plan.review_due, segment=plan.segment,
                                  contact_role=plan.contact_role,
                                  overdue=bool(plan.review_due) and plan.review_due < day)
        entry.recorded_at.CopyFrom(plan.at)
        out.append(entry)
    return out


def as_spell(held: rv.ReviewSpell) -> tl.Spell:
    """The timeline's ``Spell`` a ``SpellView`` was made from, as far as the indicators read it."""
    v = held.view
    spell = tl.Spell(org=v.org, spell_id=v.spell_id, status=v.status, admission_method=v.admission_method,
                     admission_source=v.admission_source, discharge_destination=v.discharge_destination,
                     age_at_admission=v.age_at_admission, admission_sector=v.admission_sector,
                     admission_opted_out=held.admission_opted_out)
    if v.HasField("admitted_at"):
        spell.admitted_at.CopyFrom(v.admitted_at)
    if v.HasField("discharged_at"):
        spell.discharged_at.CopyFrom(v.discharged_at)
    if v.primary_diagnosis_provisional or not v.diagnoses:
        spell.provisional_diagnoses.extend(v.diagnoses)
        spell.provisional_procedures.extend(v.procedures)
    else:
        spell.coded_diagnoses.extend(v.diagnoses)
        spell.coded_procedures.extend(v.procedures)
    return spell


def _counts_in(rules: PackRules, held: rv.ReviewSpell, others: Iterable[rv.ReviewSpell],
               ) -> list[rv.IndicatorMembership]:
    out = []
    for indicator, provisional, earlier in admission_counted_in(rules.catalogue, as_spell(held),
                                                                [as_spell(s) for s in others]):
        how = "numerator"
        if earlier is not None:
            when = datetime.fromtimestamp(earlier.discharged_at.seconds, UTC).date().isoformat()
            how = f"makes the discharge from {earlier.org} on {when} a readmission"
        out.append(rv.IndicatorMembership(indicator=indicator.id, title=indicator.title, provisional=provisional,
                                          how=how))
    return out


def pack_digest(pack: rv.ReviewPack) -> bytes:
    """What a pack says, without when it was computed: a change is published, a recomputation is not."""
    copy = rv.ReviewPack()
    copy.CopyFrom(pack)
    copy.ClearField("computed_at")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()[:16]


def changes(person: rv.ReviewPerson, packs: dict[str, rv.ReviewPack]) -> list[tuple[str, rv.ReviewPack | None]]:
    """The packs to send (changed ones, and None to withdraw one), noting them in ``person.published``.

    Packs of admissions older than the horizon are neither recomputed nor withdrawn: they stay as
    last published.
    """
    out: list[tuple[str, rv.ReviewPack | None]] = []
    spell_ids = {pack_id(s.view.org, s.view.spell_id): s.view.spell_id for s in person.spells}
    horizon = person.newest_ns - HORIZON_DAYS * DAY_NS
    for pid, pack in sorted(packs.items()):
        digest = pack_digest(pack)
        if pid in person.published and person.published[pid].digest == digest:
            continue
        out.append((pid, pack))
        held = person.published[pid]
        held.digest = digest
        held.admitted_ns = ns(pack.admission.admitted_at)
        held.spell_org, held.spell_id = pack.admission.org, spell_ids.get(pid, "")
    for pid in sorted(set(person.published) - set(packs)):
        if person.published[pid].admitted_ns >= horizon:
            out.append((pid, None))
            del person.published[pid]
    return out
