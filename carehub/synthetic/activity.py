"""What happens to each person during the window, as the events their care providers would send.

Rates are per person per year and follow the rough shape of English activity (GP
contacts ~5, ED ~0.4, emergency admissions ~0.1 rising steeply after 75, elective ~0.1)
so that indicators computed on the synthetic region land in plausible ranges. People
are simulated one at a time, in time order, so a hospital stay can shape what follows:
readmissions, follow-up contacts, moves into care homes, deaths in hospital.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from carehub.synthetic import codes
from carehub.synthetic.codes import Dx
from carehub.synthetic.config import DAY, HOUR, MINUTE, RegionConfig
from carehub.synthetic.identity import LocalRecord, Registry
from carehub.synthetic.orgs import Directory, Organisation
from carehub.synthetic.population import Person, by_age
from carehub.v1 import care_event_pb2 as pb

YEAR = 365 * DAY

# (upper age bound exclusive, events per person per year)
EMERGENCY_RATE = (
    (1, 0.25), (5, 0.10), (15, 0.04), (45, 0.055), (65, 0.08), (75, 0.16), (85, 0.30), (200, 0.50),
)  # fmt: skip
ELECTIVE_RATE = ((15, 0.03), (45, 0.06), (65, 0.12), (75, 0.22), (200, 0.20))
ED_RATE = ((1, 0.9), (5, 0.5), (15, 0.3), (25, 0.45), (65, 0.33), (75, 0.38), (85, 0.55), (200, 0.85))
GP_RATE = ((5, 6.0), (15, 2.5), (45, 3.5), (65, 5.0), (75, 7.0), (85, 9.0), (200, 11.0))
ACSC_SHARE = ((15, 0.20), (65, 0.13), (200, 0.21))  # of emergency admissions that are not falls
SOCIAL_CARE_ASSESSMENT_RATE = ((65, 0.0), (75, 0.015), (200, 0.06))

ED_ARRIVAL_SHARE = 0.75  # emergency admissions that come through the ED
FALL_SHARE_65 = 0.10
IDENTITY_DUPLICATE_SHARE = 0.01  # ED attendances registered under a new record, merged later
CONSENT_CHANGE_SHARE = 0.004
# Care plans: reviewed 3 to 12 months after they are made or last reviewed, coordinated by a named role.
PLAN_REVIEW_DAYS = (91, 365)
PLAN_CONTACT_ROLES = ("social worker", "care coordinator")


@dataclass(slots=True)
class Draft:
    """An event before noise and serialisation: ``record`` overrides the person's usual record at the org."""

    time: int
    org: Organisation
    sector: pb.Sector.ValueType
    event_type: pb.EventType.ValueType
    event_id: str
    clinical: pb.ClinicalDetail | None = None
    record: LocalRecord | None = None
    target_event_id: str = ""
    consent: tuple[bool, bool] | None = None  # (direct care opt-out, planning opt-out)
    merge_prior: str = ""
    contact: bool = False  # an out-of-hospital contact: dropped if it falls inside a hospital stay
    care_plan: pb.CarePlanDetail | None = None


@dataclass(slots=True)
class Spell:
    """Ground truth for one hospital spell, to check indicators against."""

    person: int
    org: str
    spell_id: str
    method: pb.AdmissionMethod.ValueType
    sector: pb.Sector.ValueType
    admitted: int
    discharged: int | None  # None: still open at the end of the window
    primary: str  # the coded primary diagnosis
    provisional: str  # the working diagnosis sent at admission
    acsc: bool  # coded primary is an ACSC (Purdy list, docs/indicators-reference.md section 2)
    fall: bool
    admission_source: str
    admission_event_id: str
    discharge_destination: str = ""
    via_ed: bool = False
    cancelled: bool = False
    readmission: bool = False  # emergency, 0-29 days after this person's previous discharge alive


@dataclass
class World:
    config: RegionConfig
    directory: Directory
    registry: Registry
    spells: list[Spell] = field(default_factory=list)
    _orgs: dict[str, Organisation] = field(default_factory=dict)
    _pick_cache: dict[tuple[int, int, bool], tuple[list[Dx], list[float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._orgs = {o.code: o for o in self.directory.all}

    def org(self, code: str) -> Organisation:
        return self._orgs[code]

    def options(self, table: Sequence[Dx], age: int, female: bool) -> tuple[list[Dx], list[float]]:
        key = (id(table), age, female)
        hit = self._pick_cache.get(key)
        if hit is None:
            sex = "F" if female else "M"
            eligible = [d for d in table if d.min_age <= age <= d.max_age and d.sex in ("", sex)]
            hit = self._pick_cache[key] = (eligible, list(itertools.accumulate(d.weight for d in eligible)))
        return hit


def poisson_times(rng: random.Random, rate_per_year: float, start: int, end: int) -> list[int]:
    times: list[int] = []
    if rate_per_year <= 0:
        return times
    mean_gap = YEAR / rate_per_year
    t = start + rng.expovariate(1 / mean_gap)
    while t < end:
        times.append(int(t))
        t += rng.expovariate(1 / mean_gap)
    return times


class PersonSimulator:
    """Generates one person's drafts; all randomness comes from the person's own Random."""

    def __init__(self, person: Person, rng: random.Random, world: World) -> None:
        self.p = person
        self.r = rng
        self.w = world
        self.w0 = world.config.window_start
        self.w1 = world.config.window_end
        self.end = person.death_time if person.death_time is not None else self.w1
        self.out: list[Draft] = []
        self.stays: list[tuple[int, int]] = []  # (admitted, left) of hospital stays
        self.died_in_hospital = False
        self.female = person.sex == pb.SEX_FEMALE
        self.practice = world.org(person.practice)

    # ---- helpers -------------------------------------------------------------------------------
    def event_id(self) -> str:
        return str(uuid.UUID(int=self.r.getrandbits(128), version=4))

    def emit(
        self,
        t: int,
        org: Organisation,
        event_type: pb.EventType.ValueType,
        *,
        sector: pb.Sector.ValueType | None = None,
        clinical: pb.ClinicalDetail | None = None,
        contact: bool = False,
        record: LocalRecord | None = None,
    ) -> Draft:
        draft = Draft(
            time=t,
            org=org,
            sector=org.sector if sector is None else sector,
            event_type=event_type,
            event_id=self.event_id(),
            clinical=clinical,
            record=record,
            contact=contact,
        )
        self.out.append(draft)
        return draft

    def plan(self, t: int, org: Organisation, segment: str, *, contact: bool = False) -> Draft:
        """A care-plan event ``org`` sends, owning the plan, with its review date and contact role.

        What the plan says is drawn from a Random seeded by the event id, not from the person's own:
        every other event of the region stays what it was before plans carried these.
        """
        draft = self.emit(t, org, pb.EVENT_TYPE_CARE_PLAN, contact=contact)
        pick = random.Random(draft.event_id)
        review = datetime.fromtimestamp(t + pick.randint(*PLAN_REVIEW_DAYS) * DAY, UTC).date()
        draft.care_plan = pb.CarePlanDetail(owner_org=org.code, review_due=review.isoformat(), segment=segment,
                                            contact_role=pick.choice(PLAN_CONTACT_ROLES))
        return draft

    def pick(self, table: Sequence[Dx]) -> Dx | None:
        eligible, cum = self.w.options(table, self.p.age, self.female)
        if not eligible:
            return None
        return self.r.choices(eligible, cum_weights=cum)[0]

    def in_stay(self, t: int) -> bool:
        return any(a < t < b for a, b in self.stays)

    def usual_hospital(self) -> Organisation:
        if self.r.random() < 0.85:
            return self.w.org(self.p.hospital)
        return self.r.choice(self.w.directory.hospitals)

    def secondaries(self) -> list[str]:
        age = self.p.age
        table = codes.SECONDARY_OLDER if age >= 50 else codes.SECONDARY_YOUNGER
        wanted = min(len(table), int(self.r.expovariate(1 / (2.0 if age >= 65 else 0.6))))
        chosen: list[str] = []
        for _ in range(wanted * 3):
            if len(chosen) >= wanted:
                break
            code = self.r.choices([c for c, _ in table], [w for _, w in table])[0]
            if code not in chosen:
                chosen.append(code)
        return chosen

    # ---- the simulation ------------------------------------------------------------------------
    def run(self) -> list[Draft]:
        p, r = self.p, self.r
        self.emit(self.w0 + r.randrange(8 * HOUR), self.practice, pb.EVENT_TYPE_REGISTRATION)
        if p.care_home:
            # Residents at the start are announced once, like registrations, so the hub knows them.
            self.emit(self.w0 + r.randrange(8 * HOUR), self.w.org(p.care_home), pb.EVENT_TYPE_CARE_HOME_ADMISSION)
        self.hospital_activity()
        self.ed_attendances()
        self.gp_contacts()
        self.community_contacts()
        self.social_care()
        self.mental_health()
        self.consent_changes()
        if p.death_time is not None and not self.died_in_hospital:
            self.emit(p.death_time, self.practice, pb.EVENT_TYPE_DEATH)
        return self.finish()

    def finish(self) -> list[Draft]:
        last = self.p.death_time if self.p.death_time is not None else self.w1 - 1
        kept = [
            d
            for d in self.out
            if self.w0 <= d.time <= last and d.time < self.w1 and not (d.contact and self.in_stay(d.time))
        ]
        kept.sort(key=lambda d: d.time)  # stable: same-time events keep their causal order
        return kept

    def hospital_activity(self) -> None:
        p, r = self.p, self.r
        f = p.frailty
        queue: list[tuple[int, int, str, str]] = []
        seq = itertools.count()

        def push(t: int, kind: str, hint: str = "") -> None:
            heapq.heappush(queue, (t, next(seq), kind, hint))

        emergency = by_age(EMERGENCY_RATE, p.age) * f * (1.6 if p.care_home else 1.0)
        for t in poisson_times(r, emergency, self.w0, self.end):
            push(t, "emergency")
        elective = by_age(ELECTIVE_RATE, p.age) * (0.5 + 0.5 * min(f, 3.0))
        for t in poisson_times(r, elective, self.w0, self.end):
            push(t, "elective")
        if self.female and 18 <= p.age <= 44:
            for t in poisson_times(r, 0.055, self.w0, self.end):
                push(t, "maternity")
        if 18 <= p.age < 80:
            for t in poisson_times(r, 0.0015 * f, self.w0, self.end):
                push(t, "mental_health")
        if p.death_time is not None and p.age >= 65 and r.random() < (0.3 if p.care_home else 0.5):
            # About half of deaths in England happen in hospital, after a short terminal admission.
            stay = DAY + int(min(20.0, r.expovariate(1 / 5)) * DAY)
            push(p.death_time - stay, "terminal")
        busy_until = self.w0 - DAY
        while queue:
            t, _, kind, hint = heapq.heappop(queue)
            if t >= self.end or t < busy_until + 2 * HOUR or t < self.w0:
                continue
            busy_until, readmit = self.admit(t, kind, hint, busy_until)
            if readmit is not None:
                push(readmit[0], "readmission", readmit[1])

    def admit(self, t: int, kind: str, hint: str, busy_until: int) -> tuple[int, tuple[int, str] | None]:
        """One spell's events; returns when the stay ends and, maybe, a scheduled readmission."""
        p, r, w = self.p, self.r, self.w
        age = p.age
        fall = False
        cause = ""
        sector: pb.Sector.ValueType = pb.SECTOR_ACUTE
        method: pb.AdmissionMethod.ValueType = pb.ADMISSION_METHOD_EMERGENCY
        if kind == "mental_health":
            org = w.directory.mental_health
            sector = pb.SECTOR_MENTAL_HEALTH
            dx = self.pick(codes.MENTAL_HEALTH)
            los = r.lognormvariate(math.log(25 * DAY), 0.6)
        elif kind == "maternity":
            org = w.org(p.hospital)
            method = pb.ADMISSION_METHOD_MATERNITY
            dx = self.pick(codes.MATERNITY)
            los = r.uniform(0.5, 3.0) * DAY
        elif kind == "elective":
            org = self.usual_hospital()
            method = pb.ADMISSION_METHOD_ELECTIVE
            dx = self.pick(codes.ELECTIVE)
            day_case = r.random() < 0.55
            los = r.uniform(4, 10) * HOUR if day_case else r.lognormvariate(math.log(2 * DAY), 0.6)
        else:
            org = w.org(hint) if hint and r.random() < 0.8 else self.usual_hospital()
            if age >= 65 and r.random() < FALL_SHARE_65:
                fall = True
                dx = self.pick(codes.FALL_INJURIES)
                cause = r.choices([c for c, _ in codes.FALL_CAUSES], [wt for _, wt in codes.FALL_CAUSES])[0]
            elif r.random() < by_age(ACSC_SHARE, age):
                dx = self.pick(codes.ACSC_EMERGENCY)
            else:
                dx = self.pick(codes.NON_ACSC_EMERGENCY)
            if kind != "terminal" and r.random() < (0.15 if age >= 75 else 0.25):
                los = r.uniform(6, 20) * HOUR
            else:
                median = (9.0 if fall else 3.0) * (1.6 if age >= 75 else 1.0)
                los = r.lognormvariate(math.log(median * DAY), 0.9)
        if dx is None:
            return busy_until, None
        los = min(los, 120 * DAY)
        home = p.care_home_at(t)
        source = w.org(home).admission_source if home else codes.USUAL_RESIDENCE
        emergency = method == pb.ADMISSION_METHOD_EMERGENCY and sector == pb.SECTOR_ACUTE
        if emergency and dx.system != "injury" and r.random() > 0.65:
            provisional = codes.PROVISIONAL_BY_SYSTEM[dx.system]
        else:
            provisional = dx.code
        spell_id = w.registry.encounter_id(org, "S")

        via_ed = False
        if emergency and r.random() < ED_ARRIVAL_SHARE:
            t_ed = t - r.randint(90 * MINUTE, 6 * HOUR)
            if t_ed > busy_until + HOUR and t_ed >= self.w0:
                via_ed = True
                self.ed_attendance(t_ed, org, provisional, ambulance_share=0.7 if age >= 75 else 0.45)

        admission = self.emit(
            t,
            org,
            pb.EVENT_TYPE_ADMISSION,
            sector=sector,
            clinical=pb.ClinicalDetail(
                spell_id=spell_id,
                admission_method=method,
                admission_source=source,
                diagnoses=[pb.Diagnosis(code=provisional, position=1, provisional=True)],
            ),
        )
        spell = Spell(
            person=p.index,
            org=org.code,
            spell_id=spell_id,
            method=method,
            sector=sector,
            admitted=t,
            discharged=None,
            primary=dx.code,
            provisional=provisional,
            acsc=codes.is_acsc_primary(dx.code),
            fall=fall,
            admission_source=source,
            admission_event_id=admission.event_id,
            via_ed=via_ed,
        )
        w.spells.append(spell)

        if (
            sector == pb.SECTOR_ACUTE
            and method != pb.ADMISSION_METHOD_MATERNITY
            and r.random() < w.config.cancellation_share
        ):
            # Admitted in error and cancelled (HL7 A11): the spell has no further events.
            t_cancel = t + r.randint(10 * MINUTE, 4 * HOUR)
            cancel = self.emit(
                t_cancel,
                org,
                pb.EVENT_TYPE_CANCELLATION,
                sector=sector,
                clinical=pb.ClinicalDetail(spell_id=spell_id),
            )
            cancel.target_event_id = admission.event_id
            spell.cancelled = True
            self.stays.append((t, t_cancel))
            return t_cancel, None

        if method == pb.ADMISSION_METHOD_ELECTIVE and r.random() < 0.6:
            self.emit(
                t - r.randint(30 * DAY, 150 * DAY),
                self.practice,
                pb.EVENT_TYPE_REFERRAL,
                clinical=pb.ClinicalDetail(referred_to_org=org.code),
                contact=True,
            )

        discharge = t + int(los)
        died = False
        if p.death_time is not None and (kind == "terminal" or discharge >= p.death_time):
            discharge, died = p.death_time, True
        self.stays.append((t, min(discharge, self.w1)))

        if discharge - t >= DAY and r.random() < 0.35:
            moves = 1 + (r.random() < 0.3)
            for when in sorted(r.randint(t + HOUR, discharge - HOUR) for _ in range(moves)):
                self.emit(
                    when,
                    org,
                    pb.EVENT_TYPE_TRANSFER,
                    sector=sector,
                    clinical=pb.ClinicalDetail(spell_id=spell_id, location=r.choice(codes.WARDS)),
                )
        if discharge >= self.w1:
            return self.w1, None  # still in hospital when the window closes

        dest = codes.USUAL_RESIDENCE
        moved_to: Organisation | None = None
        if died:
            dest = codes.DIED
        elif home:
            dest = w.org(home).admission_source
        elif age >= 75 and discharge - t >= 14 * DAY and w.directory.care_homes and r.random() < 0.25:
            moved_to = r.choice(w.directory.care_homes_in(p.locality))
            dest = moved_to.admission_source
        if not died and age >= 75 and discharge - t >= 3 * DAY and (moved_to is not None or r.random() < 0.4):
            la = w.directory.social_care_for(p.locality)
            self.emit(
                max(t + 12 * HOUR, discharge - r.randint(12 * HOUR, 60 * HOUR)),
                la,
                pb.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT,
            )
            if moved_to is not None or r.random() < 0.7:
                self.plan(discharge - r.randint(0, 6 * HOUR), la, "frail")
        self.emit(
            discharge,
            org,
            pb.EVENT_TYPE_DISCHARGE,
            sector=sector,
            clinical=pb.ClinicalDetail(spell_id=spell_id, admission_method=method, discharge_destination=dest),
        )
        spell.discharged = discharge
        spell.discharge_destination = dest
        if died:
            self.died_in_hospital = True
            self.emit(discharge, org, pb.EVENT_TYPE_DEATH, sector=sector)
        if moved_to is not None:
            p.care_home_moves.append((discharge, moved_to.code))
            self.emit(discharge + r.randint(HOUR, 4 * HOUR), moved_to, pb.EVENT_TYPE_CARE_HOME_ADMISSION)

        coded = [pb.Diagnosis(code=dx.code, position=1)]
        for i, code in enumerate(([cause] if cause else []) + self.secondaries()):
            coded.append(pb.Diagnosis(code=code, position=i + 2))
        procedures = []
        if dx.procedure and r.random() < dx.procedure_share:
            procedures.append(pb.Procedure(code=dx.procedure, position=1))
        self.emit(
            discharge + r.randint(2 * DAY, 25 * DAY),
            org,
            pb.EVENT_TYPE_DIAGNOSIS_CODED,
            sector=sector,
            clinical=pb.ClinicalDetail(
                spell_id=spell_id,
                admission_method=method,
                admission_source=source,
                diagnoses=coded,
                procedures=procedures,
            ),
        )
        if died:
            return discharge, None

        if r.random() < 0.35:
            self.emit(
                discharge + r.randint(12 * HOUR, 10 * DAY),
                self.practice,
                pb.EVENT_TYPE_GP_CONTACT,
                contact=True,
            )
        if r.random() < (0.35 if age >= 65 else 0.08):
            community = w.directory.community_for(p.locality)
            when = discharge + r.randint(12 * HOUR, 5 * DAY)
            for _ in range(1 + min(5, int(r.expovariate(1 / 1.5)))):
                self.emit(when, community, pb.EVENT_TYPE_GP_CONTACT, contact=True)
                when += r.randint(2 * DAY, 7 * DAY)
        if emergency:
            chance = (0.05 if age < 75 else 0.07) * min(2.0, 0.7 + 0.3 * p.frailty)
            if r.random() < chance:
                days = min(29, int(r.expovariate(1 / 8)))
                return discharge, (discharge + days * DAY + r.randint(2 * HOUR, 20 * HOUR), org.code)
        return discharge, None

    def ed_attendance(
        self,
        t: int,
        org: Organisation,
        code: str,
        *,
        ambulance_share: float,
        record: LocalRecord | None = None,
    ) -> None:
        r = self.r
        if r.random() < ambulance_share:
            # Conveyance: the ambulance service hands the patient over to the trust's ED.
            self.emit(
                t - r.randint(20 * MINUTE, 80 * MINUTE),
                self.w.directory.ambulance,
                pb.EVENT_TYPE_REFERRAL,
                clinical=pb.ClinicalDetail(referred_to_org=org.code),
            )
        self.emit(
            t,
            org,
            pb.EVENT_TYPE_ED_ATTENDANCE,
            sector=pb.SECTOR_EMERGENCY,
            clinical=pb.ClinicalDetail(
                spell_id=self.w.registry.encounter_id(org, "A"),
                diagnoses=[pb.Diagnosis(code=code, position=1, provisional=True)],
            ),
            record=record,
        )

    def ed_attendances(self) -> None:
        """Attendances that do not lead to admission (those are generated with their spell)."""
        p, r = self.p, self.r
        total = by_age(ED_RATE, p.age)
        rate = max(0.03, total - ED_ARRIVAL_SHARE * by_age(EMERGENCY_RATE, p.age)) * (0.4 + 0.6 * p.frailty)
        if p.frequent_ed:
            rate += 6.0
        for t in poisson_times(r, rate, self.w0, self.end):
            if self.in_stay(t):
                continue
            org = self.usual_hospital()
            dx = self.pick(codes.ED_ONLY)
            if dx is None:
                continue
            duplicate = None
            if r.random() < IDENTITY_DUPLICATE_SHARE:
                duplicate = self.w.registry.duplicate_record(p, org)
            self.ed_attendance(t, org, dx.code, ambulance_share=0.5 if p.age >= 75 else 0.2, record=duplicate)
            if duplicate is not None:
                # The trust spots the duplicate and merges it into the person's main record (HL7 A40).
                merge = self.emit(t + r.randint(DAY, 10 * DAY), org, pb.EVENT_TYPE_IDENTITY_MERGE)
                merge.merge_prior = duplicate.local_id

    def gp_contacts(self) -> None:
        p, r = self.p, self.r
        rate = by_age(GP_RATE, p.age) * (0.6 + 0.4 * min(p.frailty, 4.0))
        if 15 <= p.age < 65:
            rate *= 1.25 if self.female else 0.75
        if p.care_home:
            rate += 2.0
        for t in poisson_times(r, rate, self.w0, self.end):
            if not self.in_stay(t):
                self.emit(t, self.practice, pb.EVENT_TYPE_GP_CONTACT, contact=True)

    def community_contacts(self) -> None:
        """District nursing for the very old and for care-home residents."""
        p, r = self.p, self.r
        resident = bool(p.care_home or p.care_home_moves)
        rate = 3.0 if resident else 1.5 if p.age >= 75 else 0.0
        community = self.w.directory.community_for(p.locality)
        for t in poisson_times(r, rate, self.w0, self.end):
            if p.care_home_at(t) or (p.age >= 75 and r.random() < 0.5):
                self.emit(t, community, pb.EVENT_TYPE_GP_CONTACT, contact=True)

    def social_care(self) -> None:
        p, r = self.p, self.r
        la = self.w.directory.social_care_for(p.locality)
        for t in poisson_times(r, by_age(SOCIAL_CARE_ASSESSMENT_RATE, p.age), self.w0, self.end):
            if self.in_stay(t):
                continue
            if r.random() < 0.3:
                self.emit(
                    t - r.randint(3 * DAY, 20 * DAY),
                    self.practice,
                    pb.EVENT_TYPE_REFERRAL,
                    clinical=pb.ClinicalDetail(referred_to_org=la.code),
                    contact=True,
                )
            self.emit(t, la, pb.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, contact=True)
            if r.random() < 0.7:
                self.plan(t + r.randint(7 * DAY, 28 * DAY), la, "frail" if p.age >= 75 else "complex", contact=True)
        if p.care_home or p.care_home_moves:
            for t in poisson_times(r, 0.8, self.w0, self.end):
                if p.care_home_at(t):
                    self.plan(t, la, "care home", contact=True)  # a review of the placement

    def mental_health(self) -> None:
        p, r = self.p, self.r
        if p.age < 16:
            return
        mh = self.w.directory.mental_health
        for t in poisson_times(r, 0.015, self.w0, self.end):
            self.emit(
                t,
                self.practice,
                pb.EVENT_TYPE_REFERRAL,
                clinical=pb.ClinicalDetail(referred_to_org=mh.code),
                contact=True,
            )
            when = t + r.randint(7 * DAY, 40 * DAY)
            for _ in range(r.randint(1, 6)):
                self.emit(when, mh, pb.EVENT_TYPE_GP_CONTACT, contact=True)
                when += r.randint(5 * DAY, 14 * DAY)

    def consent_changes(self) -> None:
        r = self.r
        if r.random() >= CONSENT_CHANGE_SHARE:
            return
        t = r.randrange(self.w0 + DAY, self.w1)
        direct = r.random() < 0.15
        planning = r.random() < 0.9 or not direct
        change = self.emit(t, self.practice, pb.EVENT_TYPE_CONSENT_CHANGE)
        change.consent = (direct, planning)
        if r.random() < 0.15:
            undo = self.emit(t + r.randint(7 * DAY, 120 * DAY), self.practice, pb.EVENT_TYPE_CONSENT_CHANGE)
            undo.consent = (False, False)


def simulate(person: Person, rng: random.Random, world: World) -> list[Draft]:
    return PersonSimulator(person, rng, world).run()


def mark_readmissions(spells: list[Spell]) -> None:
    """Flag emergency acute admissions 0-29 days after the same person's previous live discharge.

    Counted across trusts, as a person-level readmission indicator (indicators-reference.md, NHSOF 3b) would.
    """
    by_person: dict[int, list[Spell]] = {}
    for s in spells:
        if s.sector == pb.SECTOR_ACUTE and not s.cancelled:
            by_person.setdefault(s.person, []).append(s)
    for own in by_person.values():
        own.sort(key=lambda s: s.admitted)
        last_discharge: int | None = None
        for s in own:
            if (
                s.method == pb.ADMISSION_METHOD_EMERGENCY
                and last_discharge is not None
                and 0 <= (s.admitted - last_discharge) // DAY <= 29
            ):
                s.readmission = True
            if s.discharged is not None and s.discharge_destination != codes.DIED:
                last_discharge = s.discharged
