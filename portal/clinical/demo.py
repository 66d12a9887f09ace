"""Demo region (X-5, issue 2 item 6): `flask portal demo-data` and `flask portal demo-logins`.

The region is built as intake-contract records (the same dicts the source MIS posts to
/api/v1/records) and stored through `ingest_batch`, so the demo exercises the real intake path,
every feature's intake hooks fire on it, and re-running it upserts by source id instead of
duplicating. The generator is a pure function of (scale, seed, today).
"""

from __future__ import annotations

import base64
import functools
import html
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import click
from flask import current_app

from portal.auth.models import ApiToken, User, hash_token
from portal.auth.roles import (
    CENTRAL_ADMIN,
    DOCTOR,
    ERS_ACCOUNTANT,
    ERS_OPERATOR,
    MO_ADMIN,
    ROLES,
    STATISTICIAN,
)
from portal.cli import portal_cli
from portal.clinical.gestation import format_weeks_days
from portal.clinical.identifiers import enp_check_digit, snils_check_number
from portal.clinical.intake import VISIT_KINDS, ingest_batch, run_in_transaction
from portal.clinical.models import ClinicalEvent, Department, Hospitalisation, Mo, Patient, Pregnancy, Staff
from portal.clinical.names import (
    BIRTH_PLACES,
    DIAGNOSES,
    FEMALE_FIRST_NAMES,
    INSURER_LIST,
    INSURERS,
    LANDLINE_CODES,
    LOCALITIES,
    MALE_FIRST_NAMES,
    MALE_SURNAMES,
    OLD_PASSPORT_ISSUERS,
    PATRONYMICS,
    PHONE_CODES,
    REGION_PREFIX,
    female_surname,
    insurer_of_enp,
)
from portal.extensions import db
from portal.iemk.models import VisitReport

PREFIX = "demo-"
TOKEN_NAME = "Демо: исходная МИС"
DEFAULT_SEED = 2026
PATIENTS_PER_SCALE = 1000
MIN_PATIENTS = 30
CHUNK = 3000  # records per ingest_batch call and per commit

# --- Positions of the staff --------------------------------------------------------------------

OBGYN = "врач-акушер-гинеколог"
ULTRASOUND = "врач ультразвуковой диагностики"
THERAPIST = "врач-терапевт"
LAB_DOCTOR = "врач клинической лабораторной диагностики"
NEONATOLOGIST = "врач-неонатолог"
ANESTHESIOLOGIST = "врач-анестезиолог-реаниматолог"
MIDWIFE = "акушерка"
NURSE = "медицинская сестра"
LAB_ASSISTANT = "фельдшер-лаборант"


# --- The region's structure --------------------------------------------------------------------


@dataclass(frozen=True)
class DemoDepartment:
    role: str  # what the generator uses it for: antenatal, delivery, pathology, gynecology, day, ultrasound, lab …
    name: str
    kind: str  # DEPARTMENT_KINDS key
    beds: int | None = None


@dataclass(frozen=True)
class DemoMo:
    n: int
    name: str
    short_name: str
    code: str  # registry number and F003 code
    oid_suffix: str | None  # None: the МО deliberately has no OID
    tax_office: str  # first four digits of ИНН and КПП
    address: str
    localities: tuple[str, ...]
    departments: tuple[DemoDepartment, ...]
    roster: tuple[tuple[str, int], ...]
    share: int  # relative number of patients registered here
    fallback: int  # МО that provides what this one lacks

    @property
    def source_id(self) -> str:
        return f"{PREFIX}mo-{self.n}"

    def department(self, role: str) -> DemoDepartment | None:
        return next((d for d in self.departments if d.role == role), None)

    def department_id(self, role: str) -> str:
        index = next(i for i, d in enumerate(self.departments, 1) if d.role == role)
        return f"{PREFIX}dep-{self.n}-{index}"


def _deps(*items: tuple) -> tuple[DemoDepartment, ...]:
    return tuple(DemoDepartment(*item) for item in items)


PERINATAL_CENTRE = 1

MOS: tuple[DemoMo, ...] = (
    DemoMo(
        1, "БУЗ ВО «Вологодский областной перинатальный центр»", "ОПЦ", "350101", "3501", "3525",
        "160002, Вологодская обл., г. Вологда, ул. Лечебная, д. 15", ("vologda", "gryazovets"),
        _deps(
            ("admission", "Приёмное отделение", "admission"),
            ("perinatal", "Акушерский стационар перинатального центра", "perinatal_centre", 40),
            ("pathology", "Отделение патологии беременности", "round_the_clock", 45),
            ("delivery", "Родовое отделение", "maternity", 30),
            ("observation", "Р/д Обсервация", "maternity", 20),
            ("gynecology", "Гинекологическое отделение", "round_the_clock", 25),
            ("icu", "Отделение анестезиологии-реанимации", "other", 12),
            ("antenatal", "Консультативно-диагностическая поликлиника", "outpatient"),
            ("day", "Дневной стационар", "day_hospital", 10),
            ("ultrasound", "Отделение ультразвуковой и функциональной диагностики", "diagnostic"),
            ("lab", "Клинико-диагностическая лаборатория", "laboratory"),
        ),
        ((OBGYN, 7), (ULTRASOUND, 2), (THERAPIST, 1), (LAB_DOCTOR, 1), (NEONATOLOGIST, 2),
         (ANESTHESIOLOGIST, 2), (MIDWIFE, 3), (NURSE, 2), (LAB_ASSISTANT, 1)),
        share=10, fallback=1,
    ),
    DemoMo(
        2, "БУЗ ВО «Вологодский городской родильный дом»", "Вологодский РД", "350102", "3502", "3525",
        "160009, Вологодская обл., г. Вологда, ул. Добролюбова, д. 40", ("vologda",),
        _deps(
            ("admission", "Приёмное отделение", "admission"),
            ("delivery", "Р/д Физиологическое отделение", "maternity", 35),
            ("observation", "Р/д Обсервация", "maternity", 15),
            ("pathology", "Отделение патологии беременности", "round_the_clock", 30),
            ("gynecology", "Гинекологическое отделение", "round_the_clock", 20),
            ("antenatal", "Женская консультация № 1", "outpatient"),
            ("day", "Дневной стационар женской консультации", "day_hospital", 8),
            ("ultrasound", "Кабинет ультразвуковой диагностики", "diagnostic"),
            ("lab", "Клинико-диагностическая лаборатория", "laboratory"),
        ),
        ((OBGYN, 5), (ULTRASOUND, 1), (THERAPIST, 1), (LAB_DOCTOR, 1), (NEONATOLOGIST, 1),
         (ANESTHESIOLOGIST, 1), (MIDWIFE, 2), (NURSE, 1)),
        share=22, fallback=1,
    ),
    DemoMo(
        3, "БУЗ ВО «Череповецкий городской родильный дом»", "Череповецкий РД", "350201", "3503", "3528",
        "162622, Вологодская обл., г. Череповец, ул. Краснодонцев, д. 3", ("cherepovets", "sheksna"),
        _deps(
            ("admission", "Приёмное отделение", "admission"),
            ("delivery", "Родильное отделение", "maternity", 40),
            ("observation", "Р/д Обсервация", "maternity", 15),
            ("pathology", "Отделение патологии беременности", "round_the_clock", 30),
            ("gynecology", "Гинекологическое отделение", "round_the_clock", 25),
            ("antenatal", "Женская консультация", "outpatient"),
            ("day", "Дневной стационар", "day_hospital", 10),
            ("ultrasound", "Отделение ультразвуковой диагностики", "diagnostic"),
            ("lab", "Клинико-диагностическая лаборатория", "laboratory"),
        ),
        ((OBGYN, 5), (ULTRASOUND, 1), (THERAPIST, 1), (LAB_DOCTOR, 1), (NEONATOLOGIST, 1),
         (ANESTHESIOLOGIST, 1), (MIDWIFE, 2), (NURSE, 1)),
        share=22, fallback=1,
    ),
    DemoMo(
        4, "БУЗ ВО «Сокольская центральная районная больница»", "Сокольская ЦРБ", "350301", "3504", "3527",
        "162130, Вологодская обл., Сокольский р-н, г. Сокол, ул. Суворова, д. 2", ("sokol", "kadnikov"),
        _deps(
            ("admission", "Приёмное отделение", "admission"),
            ("delivery", "Акушерское отделение", "maternity", 15),
            ("gynecology", "Гинекологическое отделение", "round_the_clock", 12),
            ("therapy", "Терапевтическое отделение", "round_the_clock", 30),
            ("antenatal", "Женская консультация", "outpatient"),
            ("day", "Дневной стационар", "day_hospital", 10),
            ("ultrasound", "Кабинет ультразвуковой диагностики", "diagnostic"),
            ("lab", "Клинико-диагностическая лаборатория", "laboratory"),
        ),
        ((OBGYN, 3), (ULTRASOUND, 1), (THERAPIST, 1), (LAB_DOCTOR, 1), (NEONATOLOGIST, 1),
         (MIDWIFE, 2), (NURSE, 1)),
        share=12, fallback=1,
    ),
    DemoMo(
        5, "БУЗ ВО «Великоустюгская центральная районная больница»", "Великоустюгская ЦРБ", "350401", "3505",
        "3526", "162390, Вологодская обл., г. Великий Устюг, ул. Гледенская, д. 75", ("veliky_ustyug", "krasavino"),
        _deps(
            ("admission", "Приёмное отделение", "admission"),
            ("delivery", "Акушерское отделение (межрайонное)", "maternity", 20),
            ("pathology", "Отделение патологии беременности", "round_the_clock", 10),
            ("gynecology", "Гинекологическое отделение", "round_the_clock", 15),
            ("antenatal", "Женская консультация", "outpatient"),
            ("day", "Дневной стационар", "day_hospital", 6),
            ("ultrasound", "Кабинет ультразвуковой диагностики", "diagnostic"),
            ("lab", "Клинико-диагностическая лаборатория", "laboratory"),
        ),
        ((OBGYN, 3), (ULTRASOUND, 1), (THERAPIST, 1), (LAB_DOCTOR, 1), (NEONATOLOGIST, 1),
         (MIDWIFE, 2), (NURSE, 1)),
        share=10, fallback=1,
    ),
    DemoMo(
        6, "БУЗ ВО «Вологодская городская поликлиника № 1»", "Вологодская ГП № 1", "350103", "3506", "3525",
        "160001, Вологодская обл., г. Вологда, ул. Чернышевского, д. 8", ("vologda",),
        _deps(
            ("antenatal", "Женская консультация", "outpatient"),
            ("therapy", "Терапевтическое отделение", "outpatient"),
            ("day", "Дневной стационар", "day_hospital", 12),
            ("ultrasound", "Отделение лучевой диагностики", "diagnostic"),
            ("lab", "Клинико-диагностическая лаборатория", "laboratory"),
        ),
        ((OBGYN, 3), (ULTRASOUND, 1), (THERAPIST, 2), (LAB_DOCTOR, 1), (MIDWIFE, 1), (NURSE, 2)),
        share=18, fallback=2,
    ),
    DemoMo(
        # Deliberately without OID: every СЭМД of this МО must fail with a clear reason.
        7, "БУЗ ВО «Кадуйская центральная районная больница»", "Кадуйская ЦРБ", "350501", None, "3510",
        "162510, Вологодская обл., Кадуйский р-н, рп. Кадуй, ул. Энтузиастов, д. 11", ("kaduy", "khokhlovo"),
        _deps(
            ("admission", "Приёмное отделение", "admission"),
            ("therapy", "Терапевтическое отделение", "round_the_clock", 20),
            ("antenatal", "Женская консультация", "outpatient"),
            ("lab", "Клинико-диагностическая лаборатория", "laboratory"),
        ),
        ((OBGYN, 2), (THERAPIST, 1), (MIDWIFE, 1), (NURSE, 1)),
        share=6, fallback=3,
    ),
)
MOS_BY_N = {mo.n: mo for mo in MOS}

# Pregnancy stories per 1,000 patients; "mid" absorbs the remainder. Every story occurs at least once.
STORIES: tuple[tuple[str, int], ...] = (
    ("early", 180),  # under observation, 6–13 weeks
    ("late", 190),  # under observation, 30–40 weeks
    ("late_multiple", 8),  # twins, 29–37 weeks
    ("late_kas", 4),  # in the perinatal centre now, on the КАС register
    ("birth", 230),
    ("birth_multiple", 6),
    ("birth_kas", 8),  # КАС put on control, continued and removed
    ("maternal_death", 1),
    ("abortion", 40),
    ("miscarriage", 25),
    ("ectopic", 10),
    ("fetal_death", 5),  # антенатальная гибель плода: «после исхода …», perinatal death certificate
)
# Deliberately incomplete patients, per 1,000, so that the registries show errors.
FLAWS: tuple[tuple[str, int], ...] = (("no_registration_address", 3), ("no_snils", 3), ("bad_snils", 2))

# Contract date-time format (local wall-clock time of the region).
ISO = "%Y-%m-%dT%H:%M:%S"


def _ogrn(body12: str) -> str:
    return body12 + str(int(body12) % 11 % 10)


def _inn10(body9: str) -> str:
    weights = (2, 4, 10, 3, 5, 9, 4, 6, 8)
    return body9 + str(sum(int(d) * w for d, w in zip(body9, weights, strict=True)) % 11 % 10)


def staff_position_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for mo in MOS:
        for position, count in mo.roster:
            counts[position] = counts.get(position, 0) + count
    return counts


# --- The generator -----------------------------------------------------------------------------


@dataclass
class _Staff:
    source_id: str
    position: str
    full_name: str


@dataclass
class _Patient:
    index: int
    source_id: str
    home: DemoMo
    obgyn: _Staff
    first_pregnancy: bool
    weight: float
    events: int = 0
    stays: int = 0


@dataclass
class _Stay:
    source_id: str
    mo: DemoMo
    role: str
    admitted: datetime
    discharged: datetime | None
    care: str
    outcome: str | None = None
    outcome_at: datetime | None = None
    record: dict[str, Any] = field(default_factory=dict)


class _Region:
    """Holds the random stream and what was generated so far (staff, unique identifiers)."""

    def __init__(self, seed: int, today: date) -> None:
        self.rng = random.Random(seed)
        # A second stream for the ТФОМС data (attachments, plans, policy dates): adding them did
        # not change anything the first stream makes.
        self.tfoms_rng = random.Random(seed * 7919 + 1)
        # A third stream for the order-263 records (branches, beds, referrals, movements,
        # dispensary observation): they too leave every row of the other streams as it was.
        self.hospital_rng = random.Random(seed * 7919 + 2)
        # A fourth stream picks the visits with a signed PDF report (ИЭМК, seed 2.2).
        self.report_rng = random.Random(seed * 7919 + 3)
        self.report_share = 1.0  # chance that a patient's last visit has a report; set per region size
        self.staff_by_id: dict[str, _Staff] = {}
        self.branch_of: dict[tuple[int, str], str] = {}  # (МО, department role) → branch source id
        self.bed_profiles: dict[tuple[int, str], dict[int, str]] = {}  # (МО, role) → V020 → source id
        self.referral_numbers: dict[int, int] = {}  # МО number → last referral number
        self.card_numbers: dict[int, int] = {}  # МО number → last КВС number
        self.plan_people: dict[int, list[str]] = {}  # МО number → patients for its plans
        self.today = today
        self.last = today - timedelta(days=1)  # events end yesterday: nothing is in the future
        self.snils_used: set[str] = set()
        self.enp_used: set[str] = set()
        self.passports_used: set[str] = set()
        self.staff: dict[int, dict[str, list[_Staff]]] = {}
        self.obgyn_turn: dict[int, int] = {}

    # Identifiers -----------------------------------------------------------------------------

    def snils(self) -> str:
        while True:
            first9 = f"{self.rng.randint(2_000_000, 199_999_999):09d}"  # above 001-001-998: checked
            if first9 not in self.snils_used:
                self.snils_used.add(first9)
                return first9 + snils_check_number(first9)

    def enp(self) -> str:
        while True:
            first15 = "35" + f"{self.rng.randrange(10**13):013d}"
            if first15 not in self.enp_used:
                self.enp_used.add(first15)
                return first15 + enp_check_digit(first15)

    # Names -------------------------------------------------------------------------------------

    def female_name(self) -> tuple[str, str, str]:
        rng = self.rng
        father = rng.choice(tuple(PATRONYMICS))
        return female_surname(rng.choice(MALE_SURNAMES)), rng.choice(FEMALE_FIRST_NAMES), PATRONYMICS[father][0]

    def male_name(self) -> tuple[str, str, str]:
        rng = self.rng
        father = rng.choice(tuple(PATRONYMICS))
        return rng.choice(MALE_SURNAMES), rng.choice(MALE_FIRST_NAMES), PATRONYMICS[father][1]

    # Places and times --------------------------------------------------------------------------

    def address(self, locality_key: str) -> str:
        rng = self.rng
        locality, postal, streets = LOCALITIES[locality_key]
        postcode = (postal + "".join(str(rng.randint(0, 9)) for _ in range(6 - len(postal))))[:6]
        house = rng.randint(1, 120)
        text = f"{postcode}, {REGION_PREFIX}, {locality}, {rng.choice(streets)}, д. {house}"
        if rng.random() < 0.15:
            text += f", корп. {rng.randint(1, 3)}"
        if locality.startswith("г. Вологда") or locality.startswith("г. Череповец") or rng.random() < 0.5:
            text += f", кв. {rng.randint(1, 180)}"
        return text

    def phone(self) -> str:
        rng = self.rng
        return (
            f"+7 {rng.choice(PHONE_CODES)} {rng.randint(100, 999)}-"
            f"{rng.randint(0, 99):02d}-{rng.randint(0, 99):02d}"
        )

    def at(self, day: date, start: int = 8, end: int = 17) -> datetime:
        """A time of day within working hours (or any hours for a hospital)."""
        minutes = self.rng.randint(start * 60, end * 60 - 1)
        return datetime.combine(day, time(minutes // 60, minutes % 60))

    # Staff -------------------------------------------------------------------------------------

    def doctor(self, mo: DemoMo, *positions: str) -> _Staff:
        by_position = self.staff[mo.n]
        for position in positions:
            people = by_position.get(position)
            if people:
                return self.rng.choice(people)
        return self.rng.choice(by_position[OBGYN])

    def own_obgyn(self, mo: DemoMo) -> _Staff:
        """Patients are assigned to the МО's obstetricians in turn (участок)."""
        people = self.staff[mo.n][OBGYN]
        turn = self.obgyn_turn.get(mo.n, 0)
        self.obgyn_turn[mo.n] = turn + 1
        return people[turn % len(people)]


def _site(home: DemoMo, role: str, high_risk: bool = False) -> DemoMo:
    """The МО where a patient of `home` gets a service: own, then the fallback, then the perinatal centre."""
    chain = [PERINATAL_CENTRE] if high_risk else [home.n, home.fallback, PERINATAL_CENTRE]
    for n in chain:
        mo = MOS_BY_N[n]
        if mo.department(role) is not None:
            return mo
    raise LookupError(role)


def demo_records(
    scale: int = 1, seed: int = DEFAULT_SEED, today: date | None = None, patients: int | None = None
) -> Iterator[dict[str, Any]]:
    """Intake-contract records of the demo region, in dependency order; the same for the same arguments.

    `patients` overrides PATIENTS_PER_SCALE × scale (small regions for tests); at least 30, so
    that every story and every deliberate flaw occurs.
    """
    count = patients if patients is not None else PATIENTS_PER_SCALE * scale
    if count < MIN_PATIENTS:
        raise ValueError(f"В демо-регионе должно быть не меньше {MIN_PATIENTS} пациентов")
    region = _Region(seed, today or date.today())
    for code, ogrn, name in INSURER_LIST:
        yield {"type": "insurer", "id": f"{PREFIX}smo-{code}", "code": code, "ogrn": ogrn, "name": name,
               "okato": "19000"}
    yield from _structure(region)
    stories, flaws = _plan(region.rng, count)
    region.report_share = min(1.0, VISIT_REPORTS / count)
    for index, story in enumerate(stories, 1):
        patient: dict[str, Any] = {}
        visits: list[dict[str, Any]] = []
        for record in _patient_records(region, index, story, flaws.get(index)):
            yield record
            if record["type"] == "patient":
                patient = record
            elif record["type"] == "event" and record["kind"] in VISIT_KINDS:
                visits.append(record)
        yield from _visit_reports(region, patient, visits)
    yield from _prophylactic_plans(region)


def _structure(region: _Region) -> Iterator[dict[str, Any]]:
    rng = region.rng
    for mo in MOS:
        yield {
            "type": "mo",
            "id": mo.source_id,
            "name": mo.name,
            "short_name": mo.short_name,
            "registry_number": mo.code,
            "f003_code": mo.code,
            "oid": f"1.2.643.5.1.13.13.12.2.35.{mo.oid_suffix}" if mo.oid_suffix else None,
            "ogrn": _ogrn(f"10235{mo.tax_office[2:]}0{mo.n:04d}"[:12]),
            "inn": _inn10(f"{mo.tax_office}0{mo.n:04d}"),
            "kpp": f"{mo.tax_office}01001",
            "address": mo.address,
        }
    yield from _branches(region)
    for mo in MOS:
        for index, dep in enumerate(mo.departments, 1):
            yield {
                "type": "department",
                "id": f"{PREFIX}dep-{mo.n}-{index}",
                "mo": mo.source_id,
                "code": f"{mo.n:02d}{index:03d}",
                "name": dep.name,
                "kind": dep.kind,
                "beds": dep.beds,
                "branch": region.branch_of[(mo.n, dep.role)],
                "phone": _landline(region.hospital_rng, mo),
            }
    yield from _bed_profiles(region)
    number = 0
    for mo in MOS:
        region.staff[mo.n] = {}
        for position, count in mo.roster:
            for k in range(count):
                number += 1
                is_doctor = position.startswith("врач")
                # Anaesthetists are mostly men; obstetrics mostly women.
                male = is_doctor and rng.random() < (0.6 if position == ANESTHESIOLOGIST else 0.12)
                last, first, middle = region.male_name() if male else region.female_name()
                snils: str | None = region.snils()
                if mo.n == 4 and position == OBGYN and k == 1:
                    snils = None  # deliberately: a doctor without СНИЛС
                source_id = f"{PREFIX}staff-{number}"
                person = _Staff(source_id, position, f"{last} {first} {middle}")
                region.staff[mo.n].setdefault(position, []).append(person)
                region.staff_by_id[source_id] = person
                yield {
                    "type": "staff",
                    "id": source_id,
                    "mo": mo.source_id,
                    "last_name": last,
                    "first_name": first,
                    "middle_name": middle,
                    "snils": snils,
                    "position": position,
                    "category": "doctor" if is_doctor else "nurse",
                }


def _plan(rng: random.Random, count: int) -> tuple[list[str], dict[int, str]]:
    """Stories in a shuffled order and the patients (1-based) that get a deliberate flaw."""
    stories: list[str] = []
    for story, per_thousand in STORIES:
        stories += [story] * max(1, round(count * per_thousand / 1000))
    stories += ["mid"] * max(1, count - len(stories))
    stories = stories[:count]
    rng.shuffle(stories)
    ongoing = [i for i, s in enumerate(stories, 1) if s in ("mid", "late")]
    wanted = [(flaw, max(1, round(count * per / 1000))) for flaw, per in FLAWS]
    chosen = rng.sample(ongoing, sum(n for _f, n in wanted))
    flaws: dict[int, str] = {}
    for flaw, n in wanted:
        for _ in range(n):
            flaws[chosen.pop()] = flaw
    return stories, flaws


def _patient_records(region: _Region, index: int, story: str, flaw: str | None) -> Iterator[dict[str, Any]]:
    rng = region.rng
    home = rng.choices(MOS, weights=[mo.share for mo in MOS])[0]
    locality = rng.choice(home.localities)
    birth_date = date(1980, 1, 1) + timedelta(days=rng.randint(0, (date(2006, 12, 31) - date(1980, 1, 1)).days))
    age = (region.today - birth_date).days // 365
    last, first, middle = region.female_name()
    patient = _Patient(
        index, f"{PREFIX}pat-{index}", home, region.own_obgyn(home),
        first_pregnancy=age < 24 or rng.random() < 0.4, weight=round(rng.uniform(48, 88), 1),
    )

    snils: str | None = region.snils()
    if flaw == "no_snils":
        snils = None
    elif flaw == "bad_snils":
        good = snils[9:]
        snils = snils[:9] + f"{(int(good) + 7) % 100:02d}"
    enp = region.enp()
    policy_roll = rng.random()
    if policy_roll < 0.85:
        policy = {"kind": "Э", "series": None, "number": enp}
    elif policy_roll < 0.97:
        policy = {"kind": "П", "series": None, "number": enp}
    else:
        policy = {"kind": "В", "series": None, "number": f"35{rng.randint(0, 9_999_999):07d}"}
    rng.choices(INSURERS, weights=(55, 30, 15))  # kept: the random stream stays as it was
    policy["insurer"] = insurer_of_enp(enp)[0]  # the stand-in ТФОМС register agrees

    extra = region.tfoms_rng
    policy["begin_on"] = (birth_date + timedelta(days=extra.randint(18 * 365, 20 * 365))).isoformat() \
        if policy["kind"] != "В" else (region.today - timedelta(days=extra.randint(5, 25))).isoformat()
    if policy["kind"] == "В":
        policy["end_on"] = (date.fromisoformat(policy["begin_on"]) + timedelta(days=45)).isoformat()

    registration = region.address(locality)
    residence = registration if rng.random() < 0.85 else region.address(locality)
    if age < 23 and rng.random() < 0.5:
        social = "student"
    else:
        social = rng.choices(("working", "unemployed", "student", "other"), weights=(62, 27, 7, 4))[0]
    yield {
        "type": "patient",
        "id": patient.source_id,
        "mo": home.source_id,
        "last_name": last,
        "first_name": first,
        "middle_name": middle,
        "sex": "F",
        "birth_date": birth_date.isoformat(),
        "snils": f"{snils[0:3]}-{snils[3:6]}-{snils[6:9]} {snils[9:]}" if snils and rng.random() < 0.5 else snils,
        "enp": enp,
        "policy": policy,
        "document": _passport(region, birth_date, locality),
        "registration_address": None if flaw == "no_registration_address" else registration,
        "residence_address": residence,
        "social_status": social,
        "phone": region.phone() if rng.random() < 0.97 else None,
        "birth_place": extra.choice(BIRTH_PLACES) if extra.random() < 0.9 else None,
    }
    yield from _attachment_records(region, patient)
    if not patient.first_pregnancy and age >= 24 and rng.random() < 0.3:
        # An earlier pregnancy that ended in birth years ago: history, without events.
        outcome_on = region.today - timedelta(days=rng.randint(700, 1800))
        weeks = rng.randint(38, 40)
        yield {
            "type": "pregnancy",
            "id": f"{PREFIX}preg-{index}-prev",
            "patient": patient.source_id,
            "mo": home.source_id,
            "registered_on": (outcome_on - timedelta(days=(weeks - 9) * 7)).isoformat(),
            "weeks_at_registration": 9,
            "days_at_registration": 0,
            "multiple": False,
            "outcome": "birth",
            "outcome_on": outcome_on.isoformat(),
        }
    yield from _pregnancy_records(region, patient, story)


def _attachment_records(region: _Region, patient: _Patient) -> Iterator[dict[str, Any]]:
    """The patient's attachment to her МО's участок, with its obstetrician as the участок's doctor;
    some moved from another МО in the last weeks (the attachment file's «Р» for them)."""
    extra = region.tfoms_rng
    home = patient.home
    attached_on = region.today - timedelta(days=extra.randint(40, 2500))
    if extra.random() < 0.04:
        other = extra.choice([mo for mo in MOS if mo.n != home.n])
        moved_on = region.today - timedelta(days=extra.randint(1, 40))
        yield {
            "type": "attachment", "id": f"{PREFIX}att-{patient.index}-prev", "patient": patient.source_id,
            "mo": other.source_id, "district": f"{extra.randint(1, 12)}", "method": "1", "kind": "1",
            "attached_on": attached_on.isoformat(), "detached_on": (moved_on - timedelta(days=1)).isoformat(),
        }
        attached_on = moved_on
    yield {
        "type": "attachment",
        "id": f"{PREFIX}att-{patient.index}",
        "patient": patient.source_id,
        "mo": home.source_id,
        "department": home.department_id("antenatal") if home.department("antenatal") else None,
        "district": f"{(region.obgyn_turn.get(home.n, 1) - 1) % 12 + 1}",  # the obstetrician's turn
        "doctor": patient.obgyn.source_id,
        "method": "2" if extra.random() < 0.7 else "1",
        "kind": "2",  # гинекологическое: the obstetrician's участок
        "attached_on": attached_on.isoformat(),
    }
    region.plan_people.setdefault(home.n, []).append(patient.source_id)


def _prophylactic_plans(region: _Region) -> Iterator[dict[str, Any]]:
    """Each МО's plans of the current year: ДВН and ПОВН, a part of its attached women in each."""
    extra = region.tfoms_rng
    year = region.today.year
    for mo in MOS:
        people = region.plan_people.get(mo.n, [])
        for kind, share in (("1", 0.35), ("5", 0.25)):
            plan_id = f"{PREFIX}plan-{mo.n}-{kind}-{year}"
            yield {"type": "plan", "id": plan_id, "mo": mo.source_id, "kind": kind, "year": year,
                   "name": f"{'ДВН' if kind == '1' else 'ПОВН'} {year}, {mo.short_name}"}
            for source_id in people:
                if extra.random() < share:
                    yield {"type": "plan_person", "id": f"{plan_id}-{source_id}", "plan": plan_id,
                           "patient": source_id, "quarter": extra.randint(1, 4)}


def _passport(region: _Region, birth_date: date, locality: str) -> dict[str, Any]:
    """Паспорт РФ: issued at 14, replaced at 20 (or on marriage); series = ОКАТО 19 + year of issue."""
    rng = region.rng
    at14 = birth_date.replace(year=birth_date.year + 14) if birth_date.month != 2 or birth_date.day != 29 else (
        date(birth_date.year + 14, 3, 1)
    )
    at20 = date(at14.year + 6, at14.month, at14.day)
    issued = at14 + timedelta(days=rng.randint(3, 40))
    if at20 + timedelta(days=60) < region.today:
        issued = at20 + timedelta(days=rng.randint(3, 60))
        if rng.random() < 0.35:  # a new passport on marriage
            span = (region.today - timedelta(days=200) - issued).days
            if span > 30:
                issued += timedelta(days=rng.randint(30, span))
    if issued >= date(2016, 7, 1):
        issuer = "УМВД России по Вологодской области"
    elif issued >= date(2006, 1, 1):
        issuer = "Отделение УФМС России по Вологодской области"
    else:
        issuer = OLD_PASSPORT_ISSUERS[locality]
    while True:
        series = f"19{issued.year % 100:02d}"
        number = f"{rng.randint(0, 999_999):06d}"
        if series + number not in region.passports_used:
            region.passports_used.add(series + number)
            break
    return {"kind": "14", "series": series, "number": number, "issued_on": issued.isoformat(), "issuer": issuer}


# Term ranges in days: (lowest, highest) for the stories.
_ONGOING_TERM = {
    "early": (43, 97),
    "mid": (98, 209),
    "late": (210, 286),
    "late_multiple": (203, 259),
    "late_kas": (224, 266),
}
_OUTCOME_TERM = {
    "birth": (259, 293),
    "birth_multiple": (238, 266),
    "birth_kas": (245, 280),
    "maternal_death": (252, 280),
    "abortion": (42, 83),
    "miscarriage": (56, 150),
    "ectopic": (35, 63),
    "fetal_death": (168, 252),
}
_OUTCOME_KIND = {
    "birth": "birth", "birth_multiple": "birth", "birth_kas": "birth", "maternal_death": "birth",
    "abortion": "abortion", "miscarriage": "miscarriage", "ectopic": "ectopic", "fetal_death": "other",
}


def _pregnancy_records(region: _Region, patient: _Patient, story: str) -> Iterator[dict[str, Any]]:
    rng = region.rng
    home = patient.home
    multiple = story in ("late_multiple", "birth_multiple")
    outcome = _OUTCOME_KIND.get(story)
    if outcome:
        low, high = _OUTCOME_TERM[story]
        if story == "birth" and rng.random() < 0.08:
            low, high = 231, 258  # preterm
        term_end = rng.randint(low, high)
        # Plain births may be today's news (still in hospital); the other stories need their whole
        # course (discharge, КАС removal, certificates) to lie in the past.
        outcome_on = region.last - timedelta(days=rng.randint(0, 150) if story == "birth" else rng.randint(10, 120))
        day0 = outcome_on - timedelta(days=term_end)
    else:
        low, high = _ONGOING_TERM[story]
        term_end = rng.randint(low, high)
        outcome_on = None
        day0 = region.last - timedelta(days=term_end)
    reg_weeks = rng.randint(6, 11) if rng.random() < 0.88 else rng.randint(12, 20)
    reg_weeks = max(4, min(reg_weeks, (term_end - 1) // 7))
    registered_on = day0 + timedelta(days=reg_weeks * 7)
    preg_id = f"{PREFIX}preg-{patient.index}"
    yield {
        "type": "pregnancy",
        "id": preg_id,
        "patient": patient.source_id,
        "mo": home.source_id,
        "registered_on": registered_on.isoformat(),
        "weeks_at_registration": reg_weeks,
        "days_at_registration": 0,
        "multiple": multiple,
        "outcome": outcome,
        "outcome_on": outcome_on.isoformat() if outcome_on else None,
    }

    ctx = _Pregnancy(region, patient, preg_id, day0, registered_on, multiple, story, outcome_on)
    high_risk = multiple or story in ("birth_kas", "maternal_death", "fetal_death", "late_kas")
    # Stays first: outpatient care pauses while the patient is in hospital.
    stays: list[_Stay] = []
    end_day = outcome_on or region.last
    if story in _PATHOLOGY_STORIES and term_end >= 160 and rng.random() < 0.18:
        stay = ctx.pathology_stay(term_end, high_risk)
        if stay is not None:
            stays.append(stay)
    if story == "late_kas":
        stays.append(ctx.kas_stay_now())
    if outcome_on:
        stays.append(ctx.outcome_stay(outcome, outcome_on, term_end, high_risk))
    hospital = _Hospital(region, ctx)
    for stay in stays:
        yield from hospital.stay_records(stay)
    yield from hospital.other_records(stays)
    outpatient_end = min([s.admitted.date() - timedelta(days=1) for s in stays if s.outcome or s.discharged is None]
                         + [end_day])
    busy = [(s.admitted.date(), (s.discharged or datetime.combine(region.today, time())).date()) for s in stays]
    yield from ctx.outpatient_events(outpatient_end, busy)
    for stay in stays:
        yield from ctx.stay_events(stay)


_PATHOLOGY_STORIES = {"mid", "late", "late_multiple", "birth", "birth_multiple"}


class _Pregnancy:
    """One pregnancy's timeline: outpatient visits, investigations and hospital stays."""

    def __init__(
        self, region: _Region, patient: _Patient, preg_id: str, day0: date, registered_on: date,
        multiple: bool, story: str, outcome_on: date | None,
    ) -> None:
        self.region = region
        self.rng = region.rng
        self.patient = patient
        self.preg_id = preg_id
        self.day0 = day0
        self.registered_on = registered_on
        self.multiple = multiple
        self.story = story
        self.outcome_on = outcome_on

    # Helpers -----------------------------------------------------------------------------------

    def term(self, day: date) -> int:
        return (day - self.day0).days

    def day_at(self, term_days: int) -> date:
        return self.day0 + timedelta(days=term_days)

    def diagnosis(self) -> str:
        if self.multiple:
            return "O30.0"
        if self.story in ("late_kas", "birth_kas", "maternal_death", "fetal_death"):
            return "Z35.8"
        return "Z34.0" if self.patient.first_pregnancy else "Z34.8"

    def event(
        self, kind: str, mo: DemoMo, role: str, doctor: _Staff, at: datetime, care: str,
        data: dict[str, Any], stay: _Stay | None = None,
    ) -> dict[str, Any]:
        self.patient.events += 1
        record = {
            "type": "event",
            "id": f"{PREFIX}ev-{self.patient.index}-{self.patient.events}",
            "kind": kind,
            "patient": self.patient.source_id,
            "pregnancy": self.preg_id,
            "mo": mo.source_id,
            "department": mo.department_id(role),
            "doctor": doctor.source_id,
            "at": at.strftime(ISO),
            "care_conditions": care,
            "data": data,
        }
        if stay is not None:
            record["hospitalisation"] = stay.source_id
        return record

    def stay(
        self, mo: DemoMo, role: str, admitted: datetime, discharged: datetime | None, outcome: str | None,
    ) -> _Stay:
        self.patient.stays += 1
        source_id = f"{PREFIX}hosp-{self.patient.index}-{self.patient.stays}"
        if discharged is not None and discharged.date() > self.region.last:
            discharged = None  # still in hospital
        care = "2" if mo.department(role).kind == "day_hospital" else "1"
        payment = self.rng.choices(("oms", "budget", "paid"), weights=(94, 4, 2))[0]
        record = {
            "type": "hospitalisation",
            "id": source_id,
            "patient": self.patient.source_id,
            "pregnancy": self.preg_id,
            "mo": mo.source_id,
            "department": mo.department_id(role),
            "admitted_at": admitted.strftime(ISO),
            "discharged_at": discharged.strftime(ISO) if discharged else None,
            "outcome": outcome,
            "payment": payment,
        }
        return _Stay(source_id, mo, role, admitted, discharged, care, outcome=outcome, record=record)

    # Stays -------------------------------------------------------------------------------------

    def pathology_stay(self, term_end: int, high_risk: bool) -> _Stay | None:
        """«Патология беременности» (or a day hospital) without an outcome: its discharge is СЭМД 8."""
        rng = self.rng
        start_term = rng.randint(154, max(155, term_end - 12))
        admitted_day = max(self.day_at(start_term), self.registered_on + timedelta(days=14))
        day_care = rng.random() < 0.25
        role = "day" if day_care else "pathology"
        mo = _site(self.patient.home, role, high_risk)
        length = rng.randint(5, 10) if day_care else rng.randint(5, 12)
        admitted = self.region.at(admitted_day, 9, 15)
        discharged = datetime.combine(admitted_day + timedelta(days=length), time(rng.randint(10, 14), 0))
        if self.outcome_on is not None:
            # Home again at least a few days before the outcome stay begins.
            latest = datetime.combine(self.outcome_on - timedelta(days=4), time(11, 0))
            discharged = min(discharged, latest)
            if discharged - admitted < timedelta(days=2):
                return None
        return self.stay(mo, role, admitted, discharged, None)

    def kas_stay_now(self) -> _Stay:
        admitted = self.region.at(self.region.last - timedelta(days=self.rng.randint(1, 4)), 0, 24)
        return self.stay(MOS_BY_N[PERINATAL_CENTRE], "perinatal", admitted, None, None)

    def outcome_stay(self, outcome: str, outcome_on: date, term_end: int, high_risk: bool) -> _Stay:
        """The stay in which the pregnancy ends; its discharge is СЭМД 17."""
        rng = self.rng
        region = self.region
        home = self.patient.home

        def arrival(days_before: int) -> tuple[datetime, datetime]:
            """Admission and the moment of the outcome, on the outcome date."""
            if days_before == 0:
                admitted = region.at(outcome_on, 0, 18)
                return admitted, admitted + timedelta(minutes=rng.randint(60, 300))
            return region.at(outcome_on - timedelta(days=days_before), 0, 24), region.at(outcome_on, 0, 24)

        if outcome == "birth":
            mo = _site(home, "delivery", high_risk or term_end < 238)
            role = "perinatal" if mo.n == PERINATAL_CENTRE and high_risk else "delivery"
            admitted, outcome_at = arrival(rng.randint(0, 2))
            cesarean = self.multiple or rng.random() < 0.25
            stay_days = rng.randint(5, 7) if cesarean else rng.randint(3, 5)
            if self.story == "maternal_death":
                discharged = datetime.combine(outcome_on + timedelta(days=2), time(4, 40))  # time of death
            else:
                discharged = datetime.combine(outcome_on + timedelta(days=stay_days), time(rng.randint(10, 14), 0))
        elif outcome == "abortion":
            mo = _site(home, "day")
            role = "day"
            admitted = region.at(outcome_on, 8, 10)
            outcome_at = admitted + timedelta(minutes=rng.randint(60, 120))
            discharged = admitted + timedelta(hours=rng.randint(5, 8))
        elif outcome == "other":
            mo = MOS_BY_N[PERINATAL_CENTRE]
            role = "perinatal"
            admitted, outcome_at = arrival(rng.randint(0, 1))
            discharged = datetime.combine(outcome_on + timedelta(days=rng.randint(3, 5)), time(11, 0))
        else:  # miscarriage, ectopic: emergency gynaecology
            mo = _site(home, "gynecology")
            role = "gynecology"
            admitted, outcome_at = arrival(0)
            days = rng.randint(2, 4) if outcome == "miscarriage" else rng.randint(5, 7)
            discharged = datetime.combine(outcome_on + timedelta(days=days), time(rng.randint(10, 14), 0))
        stay = self.stay(mo, role, admitted, discharged, outcome)
        stay.outcome_at = outcome_at
        return stay

    # Events ------------------------------------------------------------------------------------

    def outpatient_events(self, until: date, busy: list[tuple[date, date]]) -> Iterator[dict[str, Any]]:
        """Visits and investigations from registration until `until` (inclusive), skipping stays."""
        rng = self.rng
        region = self.region
        home = self.patient.home
        own = self.patient.obgyn
        if until < self.registered_on:
            return

        def free(day: date) -> bool:
            return self.registered_on <= day <= until and not any(a <= day <= b for a, b in busy)

        # Первичный осмотр at registration.
        reg = self.registered_on
        if free(reg):
            yield self.event("exam_primary", home, "antenatal", own, region.at(reg), "3", self.exam_data(reg, True))
        # Labs at registration, 18–20, 28–30 and 36 weeks.
        for target in (None, (126, 140), (196, 210), (252, 258)):
            day = reg + timedelta(days=rng.randint(0, 2)) if target is None else self.day_at(rng.randint(*target))
            if free(day):
                lab = _site(home, "lab")
                doctor = region.doctor(lab, LAB_DOCTOR)
                at = region.at(day, 8, 11)
                yield self.event("lab_blood", lab, "lab", doctor, at, "3", self.blood_data())
                yield self.event("lab_urine", lab, "lab", doctor, at + timedelta(minutes=20), "3", self.urine_data())
        # Терапевт after registration and at about 30 weeks.
        for day in (reg + timedelta(days=rng.randint(3, 14)), self.day_at(rng.randint(203, 217))):
            if free(day):
                therapy = home.department("therapy")
                role = "therapy" if therapy and therapy.kind == "outpatient" else "antenatal"
                yield self.event(
                    "consult_therapist", home, role, region.doctor(home, THERAPIST), region.at(day), "3",
                    {"diagnosis": "Z34.8" if rng.random() < 0.8 else "O99.0",
                     "conclusion": "Соматически здорова" if rng.random() < 0.8 else "Анемия беременной лёгкой степени"},
                )
        # УЗИ I триместра with the complex prenatal screening (11–13+6 weeks).
        term = max(77, self.term(reg))
        if term <= 97:
            day = self.day_at(rng.randint(term, 97))
            if free(day):
                site = _site(home, "ultrasound")
                doctor = region.doctor(site, ULTRASOUND)
                at = region.at(day, 8, 14)
                yield self.event("ultrasound_1", site, "ultrasound", doctor, at, "3", self.ultrasound_data(1, day))
                yield self.event(
                    "prenatal_screening_1", site, "ultrasound", doctor, at + timedelta(minutes=40), "3",
                    self.screening_data(),
                )
        for trimester, (low, high) in ((2, (133, 146)), (3, (210, 238))):
            day = self.day_at(rng.randint(low, high))
            if free(day):
                site = _site(home, "ultrasound")
                yield self.event(
                    f"ultrasound_{trimester}", site, "ultrasound", region.doctor(site, ULTRASOUND),
                    region.at(day, 8, 16), "3", self.ultrasound_data(trimester, day),
                )
        # A consultation in the perinatal centre for some, by referral.
        if rng.random() < 0.08:
            day = self.day_at(rng.randint(140, 196))
            if free(day):
                yield self.event(
                    "referral_mo", home, "antenatal", own, region.at(day), "3",
                    {"target_mo": f"{PREFIX}mo-{PERINATAL_CENTRE}", "purpose": "Консультация",
                     "diagnosis": self.diagnosis(), "reason": "Консультация в КДП перинатального центра"},
                )
        # Повторные осмотры: monthly to 28 weeks, every two weeks to 36, then weekly.
        day = reg + timedelta(days=rng.randint(10, 17))
        while day <= until:
            if free(day):
                yield self.event("exam_repeat", home, "antenatal", own, region.at(day), "3", self.exam_data(day, False))
            term = self.term(day)
            step = rng.randint(24, 32) if term < 196 else rng.randint(12, 16) if term < 252 else rng.randint(6, 8)
            day += timedelta(days=step)

    def stay_events(self, stay: _Stay) -> Iterator[dict[str, Any]]:
        rng = self.rng
        region = self.region
        mo = stay.mo
        role = stay.role
        own = self.patient.obgyn
        care = stay.care
        admitted = stay.admitted
        # A planned stay starts with a referral from the women's clinic.
        planned = stay.outcome in (None, "abortion") or (stay.outcome == "birth" and rng.random() < 0.4)
        if planned and self.story != "late_kas":
            day = admitted.date() - timedelta(days=rng.randint(1, 5))
            if day >= self.registered_on:
                purpose = {"abortion": "Прерывание беременности", "birth": "Плановая госпитализация для родоразрешения"}
                yield self.event(
                    "referral_mo", self.patient.home, "antenatal", own, region.at(day), "3",
                    {"target_mo": mo.source_id, "purpose": purpose.get(stay.outcome, "Госпитализация"),
                     "diagnosis": self.diagnosis()},
                )
        lab = mo if mo.department("lab") else _site(mo, "lab")
        lab_doctor = region.doctor(lab, LAB_DOCTOR)
        lab_at = admitted + timedelta(hours=1)
        if lab_at.date() <= region.last:
            yield self.event("lab_blood", lab, "lab", lab_doctor, lab_at, care, self.blood_data(), stay)
            yield self.event("lab_urine", lab, "lab", lab_doctor, lab_at + timedelta(minutes=15), care, self.urine_data(), stay)
        doctor = region.doctor(mo, OBGYN)
        kas = self.story in ("late_kas", "birth_kas", "maternal_death")
        if kas:
            condition = {
                "late_kas": ("O14.1", "Тяжёлая преэклампсия"),
                "birth_kas": ("O72.0", "Кровотечение в третьем периоде родов"),
                "maternal_death": ("O72.1", "Массивное послеродовое кровотечение"),
            }[self.story]
            if self.story == "late_kas":
                put_at = admitted + timedelta(hours=3)
            else:
                put_at = stay.outcome_at + timedelta(minutes=rng.randint(20, 120))
            kas_doctor = region.doctor(mo, ANESTHESIOLOGIST, OBGYN)
            steps = [("put_on_control", put_at), ("continue_control", put_at + timedelta(days=1))]
            if self.story == "birth_kas" and stay.discharged is not None:
                steps.append(("remove_from_control", stay.discharged - timedelta(hours=2)))
            for status, at in steps:
                if at.date() <= region.last:
                    yield self.event(
                        "kas_notice", mo, role, kas_doctor, at, care,
                        {"kas_status": status, "diagnosis": condition[0], "condition": condition[1]}, stay,
                    )
        if stay.outcome and stay.outcome_at.date() <= region.last:
            at = stay.outcome_at
            day = at.date()
            yield self.event("pregnancy_outcome", mo, role, doctor, at, care, self.outcome_data(stay.outcome, day), stay)
            if stay.outcome == "birth" and self.story != "maternal_death":
                screening_day = day + timedelta(days=rng.randint(1, 3))
                if screening_day <= region.last and (stay.discharged is None or screening_day <= stay.discharged.date()):
                    yield self.event(
                        "referral_neonatal_screening", mo, role, region.doctor(mo, NEONATOLOGIST),
                        region.at(screening_day, 8, 12), care,
                        {"purpose": "Неонатальный скрининг", "sample": "Сухое пятно крови",
                         "children": 2 if self.multiple else 1},
                    )
            if self.story == "fetal_death":
                yield self.event(
                    "perinatal_death_certificate", mo, role, doctor, at + timedelta(hours=rng.randint(2, 20)), care,
                    {"form": "106-2/у", "series": "19", "number": f"{rng.randint(0, 999_999):06d}",
                     "kind": "мертворождение", "cause_code": "P20.9", "cause": "Внутриутробная гипоксия неуточнённая",
                     "mother_diagnosis": "O36.4"},
                )
            if self.story == "maternal_death" and stay.discharged is not None:
                yield self.event(
                    "death_certificate", mo, role, doctor, stay.discharged + timedelta(hours=3), care,
                    {"form": "106/у", "series": "19", "number": f"{rng.randint(0, 999_999):06d}",
                     "cause_code": "O72.1", "cause": "Другие кровотечения в раннем послеродовом периоде",
                     "died_at": stay.discharged.strftime(ISO)},
                )
                return  # no discharge: the patient died in hospital
        if stay.discharged is not None:
            days = max((stay.discharged.date() - admitted.date()).days, 1)
            outcome_text = {None: "Выписана домой в удовлетворительном состоянии",
                            "birth": "Выписана с ребёнком домой" if self.story != "fetal_death" else "Выписана домой"}
            yield self.event(
                "discharge", mo, role, doctor, stay.discharged, care,
                {"diagnosis": self.discharge_diagnosis(stay.outcome), "bed_days": days,
                 "result": outcome_text.get(stay.outcome, "Выписана домой")},
                stay,
            )

    # Clinical data -----------------------------------------------------------------------------

    def exam_data(self, day: date, primary: bool) -> dict[str, Any]:
        rng = self.rng
        term = self.term(day)
        weeks = term // 7
        weight = self.patient.weight + max(0, weeks - 12) * rng.uniform(0.3, 0.5)
        data: dict[str, Any] = {
            "term": format_weeks_days(term),
            "diagnosis": self.diagnosis(),
            "weight_kg": round(weight, 1),
            "bp": f"{rng.randint(100, 130)}/{rng.randint(60, 85)}",
            "complaints": "Жалоб нет" if rng.random() < 0.85 else rng.choice(
                ("Тошнота по утрам", "Тянущие боли внизу живота", "Отёки ног к вечеру", "Изжога")
            ),
        }
        if primary:
            data["height_cm"] = rng.randint(152, 180)
            data["risk_group"] = rng.choices(("низкий", "средний", "высокий"), weights=(70, 22, 8))[0]
        if weeks >= 20:
            data["fundal_height_cm"] = weeks + rng.randint(-2, 2)
            data["fetal_heart_rate"] = rng.randint(130, 160)
        return data

    def blood_data(self) -> dict[str, Any]:
        rng = self.rng
        return {
            "hemoglobin_g_l": rng.randint(98, 138),
            "erythrocytes_10e12_l": round(rng.uniform(3.5, 4.7), 2),
            "leukocytes_10e9_l": round(rng.uniform(5.0, 11.5), 1),
            "platelets_10e9_l": rng.randint(170, 330),
            "esr_mm_h": rng.randint(10, 35),
        }

    def urine_data(self) -> dict[str, Any]:
        rng = self.rng
        return {
            "specific_gravity": rng.randint(1010, 1025),
            "protein_g_l": 0 if rng.random() < 0.9 else 0.033,
            "leukocytes_per_field": rng.choice(("0-1", "1-2", "2-3", "3-5")),
            "ketones": "отр.",
        }

    def ultrasound_data(self, trimester: int, day: date) -> dict[str, Any]:
        rng = self.rng
        term = self.term(day) + rng.randint(-3, 3)
        data: dict[str, Any] = {"fetuses": 2 if self.multiple else 1, "term_by_biometry": format_weeks_days(term)}
        if trimester == 1:
            data["crl_mm"] = round(45 + (term - 77) * 1.8 + rng.uniform(-3, 3), 1)
            data["nt_mm"] = round(rng.uniform(1.0, 2.4), 1)
        elif trimester == 2:
            data["bpd_mm"] = round(43 + (term - 133) * 0.4 + rng.uniform(-2, 2), 1)
            data["femur_mm"] = round(30 + (term - 133) * 0.3 + rng.uniform(-2, 2), 1)
            data["placenta"] = rng.choice(("по задней стенке", "по передней стенке", "в дне матки"))
        else:
            data["estimated_weight_g"] = int(1500 + (term - 210) * 35 + rng.randint(-150, 150))
            data["presentation"] = "головное" if rng.random() < 0.94 else "тазовое"
            data["amniotic_fluid"] = "нормальное" if rng.random() < 0.9 else "маловодие"
        data["conclusion"] = f"Беременность {format_weeks_days(term)}. " + (
            "Пороков развития не выявлено." if rng.random() < 0.97 else "Требуется экспертное УЗИ."
        )
        return data

    def screening_data(self) -> dict[str, Any]:
        rng = self.rng
        risk = rng.choice((1500, 3000, 5000, 8000, 12000)) if rng.random() < 0.97 else rng.choice((60, 90, 150))
        return {
            "pappa_mom": round(rng.uniform(0.5, 1.8), 2),
            "hcg_mom": round(rng.uniform(0.5, 2.0), 2),
            "risk_t21": f"1:{risk}",
            "risk": "высокий" if risk < 100 else "низкий",
        }

    def outcome_data(self, outcome: str, day: date) -> dict[str, Any]:
        rng = self.rng
        term = format_weeks_days(self.term(day))
        if outcome == "birth":
            children = []
            for _ in range(2 if self.multiple else 1):
                weight = rng.randint(2200, 3100) if self.multiple else rng.randint(2700, 4200)
                children.append({
                    "sex": rng.choice(("M", "F")), "weight_g": weight, "length_cm": rng.randint(46, 56),
                    "apgar": f"{rng.randint(7, 8)}/{rng.randint(8, 9)}", "alive": True,
                })
            return {"outcome": "birth", "term": term, "children": children,
                    "delivery": "Кесарево сечение" if self.multiple or rng.random() < 0.25 else "Самопроизвольные роды"}
        if outcome == "abortion":
            return {"outcome": "abortion", "term": term, "diagnosis": "O04.9",
                    "method": rng.choice(("Медикаментозный аборт", "Вакуум-аспирация"))}
        if outcome == "miscarriage":
            return {"outcome": "miscarriage", "term": term, "diagnosis": "O03.9"}
        if outcome == "ectopic":
            return {"outcome": "ectopic", "term": term, "diagnosis": "O00.1", "operation": "Тубэктомия"}
        return {"outcome": "other", "term": term, "diagnosis": "O36.4",
                "description": "Антенатальная гибель плода", "children": [{"alive": False}]}

    def discharge_diagnosis(self, outcome: str | None) -> str:
        return {None: "O26.8" if not self.multiple else "O30.0", "birth": "O80" if not self.multiple else "O84.2",
                "abortion": "O04.9", "miscarriage": "O03.9", "ectopic": "O00.1", "other": "O36.4"}[outcome]


# --- ТФОМС order 263: branches, beds, referrals, movements, dispensary observation --------------

# Branches (подразделения) of each МО: code, name, kind, roles of the departments in it.
BRANCHES: dict[int, tuple[tuple[str, str, str, tuple[str, ...]], ...]] = {
    1: (
        ("001", "Акушерский корпус", "hospital",
         ("admission", "perinatal", "pathology", "delivery", "observation", "icu", "ultrasound", "lab")),
        ("002", "Гинекологический корпус", "hospital", ("gynecology", "day")),
        ("003", "Консультативно-диагностическая поликлиника", "polyclinic", ("antenatal",)),
    ),
    2: (
        ("001", "Родильный дом", "hospital",
         ("admission", "delivery", "observation", "pathology", "gynecology", "ultrasound", "lab")),
        ("002", "Женская консультация № 1", "polyclinic", ("antenatal", "day")),
    ),
    3: (
        ("001", "Родильный дом", "hospital",
         ("admission", "delivery", "observation", "pathology", "gynecology", "day", "ultrasound", "lab")),
        ("002", "Женская консультация", "polyclinic", ("antenatal",)),
    ),
    4: (
        ("001", "Стационар", "hospital",
         ("admission", "delivery", "gynecology", "therapy", "day", "ultrasound", "lab")),
        ("002", "Женская консультация", "polyclinic", ("antenatal",)),
    ),
    5: (
        ("001", "Стационар", "hospital",
         ("admission", "delivery", "pathology", "gynecology", "day", "ultrasound", "lab")),
        ("002", "Женская консультация", "polyclinic", ("antenatal",)),
    ),
    6: (("001", "Поликлиника", "polyclinic", ("antenatal", "therapy", "day", "ultrasound", "lab")),),
    7: (
        ("001", "Стационар", "hospital", ("admission", "therapy", "lab")),
        ("002", "Женская консультация", "polyclinic", ("antenatal",)),
    ),
}

# Bed profiles of the obstetric in-patient departments, by role: (V020 bed profile, share of the
# department's beds). Care profile V002 136 «акушерство и гинекология» for all of them.
# V020 (clinical.models.BED_PROFILE_NAMES): 2 для беременных и рожениц, 3 патологии беременности,
# 4 гинекологические.
OBSTETRIC_CARE = 136
BIRTH_BEDS, PATHOLOGY_BEDS, GYNECOLOGY_BEDS = 2, 3, 4
BED_PROFILES: dict[str, tuple[tuple[int, float], ...]] = {
    "perinatal": ((BIRTH_BEDS, 0.7), (PATHOLOGY_BEDS, 0.3)),
    "delivery": ((BIRTH_BEDS, 1.0),),
    "observation": ((BIRTH_BEDS, 1.0),),
    "pathology": ((PATHOLOGY_BEDS, 1.0),),
    "gynecology": ((GYNECOLOGY_BEDS, 1.0),),
    "day": ((PATHOLOGY_BEDS, 0.6), (GYNECOLOGY_BEDS, 0.4)),
}
FULL_PROFILE = (2, "pathology")  # no free beds today: referrals there are cancelled for «Отсутствие мест»


def _landline(rng: random.Random, mo: DemoMo) -> str:
    code = LANDLINE_CODES[mo.localities[0]]
    length = 10 - len(code)  # a Russian number is ten digits with its area code
    digits = str(rng.randint(2, 7)) + f"{rng.randint(0, 10 ** (length - 1) - 1):0{length - 1}d}"
    if len(digits) == 6:
        return f"+7 ({code}) {digits[:2]}-{digits[2:4]}-{digits[4:]}"
    return f"+7 ({code}) {digits[0]}-{digits[1:3]}-{digits[3:]}"


def _branches(region: _Region) -> Iterator[dict[str, Any]]:
    rng = region.hospital_rng
    for mo in MOS:
        locality, postal, streets = LOCALITIES[mo.localities[0]]
        for code, name, kind, roles in BRANCHES[mo.n]:
            source_id = f"{PREFIX}br-{mo.n}-{code}"
            for role in roles:
                region.branch_of[(mo.n, role)] = source_id
            if code == "001":
                address = mo.address
            else:
                postcode = (postal + "".join(str(rng.randint(0, 9)) for _ in range(6 - len(postal))))[:6]
                street, house = rng.choice(streets), rng.randint(1, 60)
                address = f"{postcode}, {REGION_PREFIX}, {locality}, {street}, д. {house}"
            yield {
                "type": "branch",
                "id": source_id,
                "mo": mo.source_id,
                "code": code,
                "name": name,
                "kind": kind,
                "for_children": False if kind == "polyclinic" else None,  # a women's clinic serves adults
                "address": address,
                "phone": _landline(rng, mo),
                "opened_on": date(rng.randint(1965, 2012), rng.randint(1, 12), 1).isoformat(),
            }
    missing = [(mo.n, d.role) for mo in MOS for d in mo.departments if (mo.n, d.role) not in region.branch_of]
    assert not missing, f"departments without a branch: {missing}"


def _bed_profiles(region: _Region) -> Iterator[dict[str, Any]]:
    """Коечный фонд of the obstetric in-patient departments, with today's occupancy."""
    rng = region.hospital_rng
    for mo in MOS:
        for index, dep in enumerate(mo.departments, 1):
            shares = BED_PROFILES.get(dep.role)
            if not shares or not dep.beds:
                continue
            left = dep.beds
            for k, (profile, share) in enumerate(shares):
                beds = left if k == len(shares) - 1 else round(dep.beds * share)
                left -= beds
                repair = 0 if rng.random() < 0.8 else rng.randint(1, max(1, beds // 10))
                usable = beds - repair
                share = 1.0 if (mo.n, dep.role) == FULL_PROFILE else rng.uniform(0.55, 0.92)
                occupied = round(usable * share)
                source_id = f"{PREFIX}bed-{mo.n}-{index}-{profile}"
                region.bed_profiles.setdefault((mo.n, dep.role), {})[profile] = source_id
                yield {
                    "type": "bed_profile",
                    "id": source_id,
                    "department": f"{PREFIX}dep-{mo.n}-{index}",
                    "profile": profile,
                    "care_profile": OBSTETRIC_CARE,
                    "children": False,
                    "beds": beds,
                    "beds_male": 0,
                    "beds_female": beds,
                    "beds_repair": repair,
                    "planned_beds": beds,
                    "valid_from": date(region.today.year, 1, 1).isoformat(),
                    "valid_to": None,
                    "actual_on": region.today.isoformat(),
                    "occupied": occupied,
                    "admitted_today": rng.randint(0, max(1, beds // 8)),
                    "discharged_today": rng.randint(0, max(1, beds // 8)),
                    "planned_today": rng.randint(0, 2),
                    "free": usable - occupied,
                    "free_adult": usable - occupied,
                    "free_child": 0,
                }


# Admission diagnoses of the stays without an outcome (патология беременности, дневной стационар).
_PATHOLOGY_DIAGNOSES = ("O26.8", "O23.1", "O24.4", "O13", "O47.0", "O36.5", "O99.0", "O21.0")
# Diagnoses of dispensary observation in pregnancy.
_DISPENSARY_DIAGNOSES = ("O24.4", "O99.0", "O13", "O99.2", "O99.4", "Z35.8")
# Why a planned referral was cancelled: (reason, source, comment).
_CANCELS = (
    ("1", "2", "Пациентка отказалась от госпитализации"),
    ("4", "1", "Нет свободных мест в отделении, направлена повторно"),
    ("5", "0", "Направление оформлено с ошибкой"),
    ("2", "1", "Показаний для госпитализации на момент осмотра нет"),
)
# Why a patient was not admitted from the admission department: (reason, source, comment).
_REFUSALS = (
    ("1", "2", "Пациентка от госпитализации отказалась, предупреждена о последствиях"),
    ("2", "1", "Показаний для госпитализации нет, рекомендовано наблюдение в женской консультации"),
    ("4", "1", "Свободных мест нет, пациентка переведена в другой стационар"),
)


class _Hospital:
    """The order-263 side of one pregnancy's stays: referral, КВС data and movements, plus the
    admission refusals, cancelled referrals and dispensary observation. Draws only from
    `region.hospital_rng`."""

    def __init__(self, region: _Region, ctx: _Pregnancy) -> None:
        self.region = region
        self.rng = region.hospital_rng
        self.ctx = ctx
        self.patient = ctx.patient

    def card_number(self, mo: DemoMo, at: datetime) -> str:
        self.region.card_numbers[mo.n] = number = self.region.card_numbers.get(mo.n, 0) + 1
        return f"{number}/{at.year % 100:02d}"

    def profile(self, mo: DemoMo, role: str, stay: _Stay | None) -> str | None:
        """The bed profile a stay in this department is on: births, pathology or gynaecology beds."""
        profiles = self.region.bed_profiles.get((mo.n, role))
        if not profiles:
            return None
        if stay is not None and stay.outcome in ("abortion", "miscarriage", "ectopic"):
            wanted = GYNECOLOGY_BEDS
        elif stay is not None and stay.outcome in ("birth", "other"):
            wanted = BIRTH_BEDS
        else:
            wanted = PATHOLOGY_BEDS
        return profiles.get(wanted) or next(iter(profiles.values()))

    def admission_diagnosis(self, stay: _Stay) -> str:
        ctx = self.ctx
        if ctx.story == "late_kas":
            return "O14.1"
        if stay.outcome is None:
            return "O30.0" if ctx.multiple else self.rng.choice(_PATHOLOGY_DIAGNOSES)
        if stay.outcome == "birth":
            if ctx.multiple:
                return "O30.0"
            term = ctx.term(stay.admitted.date())
            return "O60" if term < 259 else "O48" if term > 287 else "O80"
        return {"abortion": "Z64.0", "miscarriage": "O20.0", "ectopic": "O00.1", "other": "O36.4"}[
            stay.outcome
        ]

    def referral(
        self, kind: str, to: DemoMo, role: str, issued_on: date, planned_on: date, diagnosis: str,
        payment: str, profile: str | None, suffix: str,
    ) -> dict[str, Any]:
        home = self.patient.home
        region = self.region
        region.referral_numbers[home.n] = number = region.referral_numbers.get(home.n, 0) + 1
        return {
            "type": "referral",
            "id": f"{PREFIX}ref-{self.patient.index}-{suffix}",
            "mo": home.source_id,
            "patient": self.patient.source_id,
            "pregnancy": self.ctx.preg_id,
            "branch": region.branch_of[(home.n, "antenatal")],
            "doctor": self.patient.obgyn.source_id,
            "number": number,
            "kind": kind,
            "auto_created": self.rng.random() < 0.05,
            "payment": payment,
            "issued_on": issued_on.isoformat(),
            "planned_on": planned_on.isoformat(),
            "to_mo": to.source_id,
            "to_department": to.department_id(role),
            "bed_profile": profile,
            "diagnosis": diagnosis,
            "diagnosis_text": DIAGNOSES[diagnosis],
            "cancel": None,
        }

    def stay_records(self, stay: _Stay) -> Iterator[dict[str, Any]]:
        """The referral (if any), the КВС with its order-263 fields, then its movements."""
        rng = self.rng
        ctx = self.ctx
        if ctx.story == "late_kas" or stay.outcome in ("miscarriage", "ectopic", "other"):
            emergency = True
        elif stay.outcome == "birth":
            emergency = rng.random() < 0.65
        else:
            emergency = stay.role == "pathology" and rng.random() < 0.1
        diagnosis = self.admission_diagnosis(stay)
        profile = self.profile(stay.mo, stay.role, stay)
        referral = None
        if rng.random() < (0.35 if emergency else 0.92):
            admitted_on = stay.admitted.date()
            if emergency:
                issued_on = planned_on = admitted_on
            else:
                issued_on = max(ctx.registered_on, admitted_on - timedelta(days=rng.randint(1, 10)))
                planned_on = admitted_on
                if rng.random() < 0.2:  # came a day after the planned date
                    planned_on = max(issued_on, admitted_on - timedelta(days=1))
            payment = stay.record["payment"]  # a few stays, and so their referrals, are paid by the budget
            suffix = stay.source_id.rsplit("-", 1)[1]
            referral = self.referral("emergency" if emergency else "planned", stay.mo, stay.role, issued_on,
                                     planned_on, diagnosis, payment, profile, suffix)
            yield referral
        stay.record.update({
            "referral": referral["id"] if referral else None,
            "emergency": emergency,
            "card_number": self.card_number(stay.mo, stay.admitted),
            "diagnosis": diagnosis,
            "diagnosis_text": DIAGNOSES[diagnosis],
            "refusal": None,
        })
        yield stay.record
        yield from self.movements(stay)

    def movements(self, stay: _Stay) -> Iterator[dict[str, Any]]:
        """Admission department first (round-the-clock stays), then the profile departments."""
        rng = self.rng
        mo = stay.mo
        end = stay.discharged
        now = datetime.combine(self.region.today, time())
        steps: list[tuple[str, datetime]] = []  # (role, began_at)
        start = stay.admitted
        if stay.care == "1" and mo.department("admission") is not None:
            steps.append(("admission", start))
            minutes = rng.randint(20, 60)
            if stay.outcome_at is not None:
                minutes = min(minutes, max(10, int((stay.outcome_at - start).total_seconds() // 120)))
            start += timedelta(minutes=minutes)
        story = self.ctx.story
        if story == "late_kas" and mo.department("icu") is not None:
            steps.append(("icu", start))
            start += timedelta(hours=rng.randint(18, 30))
            if start < now and (end is None or start < end):
                steps.append((stay.role, start))
        elif story == "maternal_death" and mo.department("icu") is not None and stay.outcome_at is not None:
            steps.append((stay.role, start))
            steps.append(("icu", stay.outcome_at + timedelta(minutes=rng.randint(30, 60))))
        elif (
            stay.outcome == "birth" and stay.outcome_at is not None and mo.department("pathology") is not None
            and stay.outcome_at - start > timedelta(hours=12)
        ):
            steps.append(("pathology", start))
            steps.append((stay.role, stay.outcome_at - timedelta(hours=rng.randint(2, 6))))
        else:
            steps.append((stay.role, start))
        steps = [(role, began) for role, began in steps if began < now and (end is None or began <= end)]
        for k, (role, began) in enumerate(steps, 1):
            last = k == len(steps)
            ended = end if last else steps[k][1]
            if ended is not None and ended >= now:
                ended = None
            outcome = None
            if ended is not None:
                outcome = "2" if not last else "3" if story == "maternal_death" else "1"
            yield {
                "type": "movement",
                "id": f"{stay.source_id}-m{k}",
                "hospitalisation": stay.source_id,
                "department": mo.department_id(role),
                "bed_profile": self.profile(mo, role, stay) if role not in ("admission", "icu") else None,
                "began_at": began.strftime(ISO),
                "ended_at": ended.strftime(ISO) if ended else None,
                "outcome": outcome,
            }

    def other_records(self, stays: list[_Stay]) -> Iterator[dict[str, Any]]:
        """An admission refusal or a cancelled referral for a few ongoing pregnancies; dispensary
        observation for a share of all."""
        rng = self.rng
        ctx = self.ctx
        region = self.region
        ongoing = ctx.story in ("mid", "late", "late_multiple")
        busy = [(s.admitted.date(), s.discharged.date() if s.discharged else region.today) for s in stays]
        first = max(ctx.registered_on + timedelta(days=7), ctx.day_at(12 * 7),
                    region.last - timedelta(days=60))
        roll = rng.random()
        if ongoing and roll < 0.05 and first <= region.last:
            day = first + timedelta(days=rng.randint(0, (region.last - first).days))
            if not any(a <= day <= b for a, b in busy):
                if roll < 0.02:
                    yield self.refusal(day)
                else:
                    yield self.cancelled_referral(day)
        if rng.random() < 0.2:
            yield self.dispensary()

    def refusal(self, day: date) -> dict[str, Any]:
        rng = self.rng
        ctx = self.ctx
        mo = _site(self.patient.home, "admission")
        minutes = rng.randint(0, 24 * 60 - 1)  # not region.at: that draws from the first stream
        admitted = datetime.combine(day, time(minutes // 60, minutes % 60))
        refused_at = admitted + timedelta(minutes=rng.randint(40, 180))
        reason, source, text = rng.choice(_REFUSALS)
        diagnosis = rng.choice(("O20.0", "O47.0", "O26.8", "O21.0"))
        return {
            "type": "hospitalisation",
            "id": f"{PREFIX}hosp-{self.patient.index}-r1",
            "patient": self.patient.source_id,
            "pregnancy": ctx.preg_id,
            "mo": mo.source_id,
            "department": mo.department_id("admission"),
            "admitted_at": admitted.strftime(ISO),
            "discharged_at": refused_at.strftime(ISO),  # she left the admission department
            "outcome": None,
            "payment": "oms",
            "referral": None,
            "emergency": True,
            "card_number": self.card_number(mo, admitted),
            "diagnosis": diagnosis,
            "diagnosis_text": DIAGNOSES[diagnosis],
            "refusal": {"at": refused_at.strftime(ISO), "reason": reason, "source": source, "text": text},
        }

    def cancelled_referral(self, day: date) -> dict[str, Any]:
        rng = self.rng
        to = _site(self.patient.home, "pathology")
        diagnosis = rng.choice(_PATHOLOGY_DIAGNOSES)
        reason, source, text = rng.choice(_CANCELS)
        if (to.n, "pathology") == FULL_PROFILE:
            reason, source, text = _CANCELS[1]
        planned_on = min(day + timedelta(days=rng.randint(1, 7)), self.region.last)
        record = self.referral("planned", to, "pathology", day, planned_on, diagnosis, "oms",
                               self.profile(to, "pathology", None), "c1")
        cancelled_on = day + timedelta(days=rng.randint(0, (planned_on - day).days))
        record["cancel"] = {"on": cancelled_on.isoformat(), "reason": reason, "source": source, "text": text}
        return record

    def dispensary(self) -> dict[str, Any]:
        rng = self.rng
        ctx = self.ctx
        region = self.region
        began_on = min(ctx.registered_on + timedelta(days=rng.randint(0, 30)), ctx.outcome_on or region.last,
                       region.last)
        ended_on = end_result = None
        if ctx.story == "maternal_death" and ctx.outcome_on is not None:
            ended_on, end_result = ctx.outcome_on + timedelta(days=2), "3"
        elif ctx.outcome_on is not None:
            candidate = ctx.outcome_on + timedelta(days=rng.randint(42, 84))
            if candidate <= region.last:
                ended_on, end_result = candidate, rng.choices(("1", "4", "2", "5"), weights=(80, 8, 6, 6))[0]
        diagnosis = "O30.0" if ctx.multiple else rng.choice(_DISPENSARY_DIAGNOSES)
        return {
            "type": "dispensary",
            "id": f"{PREFIX}dn-{self.patient.index}",
            "patient": self.patient.source_id,
            "mo": self.patient.home.source_id,
            "doctor": self.patient.obgyn.source_id,
            "diagnosis": diagnosis,
            "began_on": began_on.isoformat(),
            "visits_per_year": rng.choice((4, 6, 12)),
            "place": "1" if rng.random() < 0.96 else "2",
            "ended_on": ended_on.isoformat() if ended_on else None,
            "end_result": end_result,
        }


# --- Loading, users, token ---------------------------------------------------------------------


# --- Signed visit reports («емиас», seed 2.2) --------------------------------------------------

VISIT_REPORTS = 30  # about this many in a region of any size: each is a real PDF, rendered once


def _visit_reports(region: _Region, patient: dict[str, Any], visits: list[dict[str, Any]]) -> Iterator[dict]:
    """The signed PDF report of the patient's last outpatient exam, for about VISIT_REPORTS patients.

    Drawn from its own stream after the patient's records, so every earlier row stays as it was.
    """
    if not visits or region.report_rng.random() >= region.report_share:
        return
    visit = max(visits, key=lambda v: v["at"])
    at = datetime.strptime(visit["at"], ISO)
    signed_at = at + timedelta(minutes=region.report_rng.randint(5, 40))
    doctor = region.staff_by_id[visit["doctor"]]
    content = visit_report_pdf(_report_html(patient, visit, at, doctor, signed_at))
    yield {
        "type": "visit_report",
        "id": f"{PREFIX}report-{visit['id'].removeprefix(PREFIX + 'ev-')}",
        "event": visit["id"],
        "file_name": f"Протокол осмотра {at:%d.%m.%Y}.pdf",
        "content": base64.b64encode(content).decode("ascii"),
        "signature": None,
        "signed_by": f"{doctor.full_name}, {doctor.position}",
        "signed_at": signed_at.strftime(ISO),
        "to_iemk": True,
    }


_DEPARTMENT_NAMES = {f"{PREFIX}dep-{mo.n}-{i}": d.name for mo in MOS for i, d in enumerate(mo.departments, 1)}
_MO_NAMES = {mo.source_id: mo.name for mo in MOS}
_EXAM_LINES = (
    ("term", "Срок беременности"),
    ("complaints", "Жалобы"),
    ("weight_kg", "Масса тела, кг"),
    ("height_cm", "Рост, см"),
    ("bp", "Артериальное давление, мм рт. ст."),
    ("fundal_height_cm", "Высота стояния дна матки, см"),
    ("fetal_heart_rate", "ЧСС плода, уд/мин"),
    ("risk_group", "Группа риска"),
    ("diagnosis", "Диагноз (МКБ-10)"),
)


def _report_html(
    patient: dict[str, Any], visit: dict[str, Any], at: datetime, doctor: _Staff, signed_at: datetime
) -> str:
    e = html.escape
    name = " ".join(p for p in (patient["last_name"], patient["first_name"], patient["middle_name"]) if p)
    birth = date.fromisoformat(patient["birth_date"]).strftime("%d.%m.%Y") if patient.get("birth_date") else "—"
    title = "Первичный осмотр беременной" if visit["kind"] == "exam_primary" else "Повторный осмотр беременной"
    rows = "".join(
        f"<tr><th>{e(label)}</th><td>{e(str(visit['data'][key]))}</td></tr>"
        for key, label in _EXAM_LINES if key in visit["data"]
    )
    return (
        "<!doctype html><html lang=ru><head><meta charset=utf-8><style>"
        "@page{size:A4;margin:18mm}body{font-family:sans-serif;font-size:10.5pt}"
        "h1{font-size:14pt;margin:4mm 0}table{border-collapse:collapse;width:100%}"
        "th,td{border:0.5pt solid #888;padding:1.5mm 2mm;text-align:left;vertical-align:top}th{width:45%}"
        ".sign{margin-top:10mm;font-size:9.5pt;border:0.5pt solid #444;padding:2mm}</style></head><body>"
        f"<div>{e(_MO_NAMES[visit['mo']])}<br>{e(_DEPARTMENT_NAMES.get(visit['department'], ''))}</div>"
        f"<h1>{e(title)}</h1>"
        f"<p>Пациентка: <b>{e(name)}</b>, дата рождения {birth}<br>"
        f"Дата и время приёма: {at:%d.%m.%Y %H:%M}</p>"
        f"<table>{rows}</table>"
        f"<p>Врач: {e(doctor.full_name)}, {e(doctor.position)}</p>"
        f"<div class=sign>Документ подписан электронной подписью в МИС {signed_at:%d.%m.%Y %H:%M}<br>"
        f"Владелец: {e(doctor.full_name)}</div></body></html>"
    )


@functools.lru_cache(maxsize=VISIT_REPORTS * 4)
def visit_report_pdf(document: str) -> bytes:
    """The report as PDF (WeasyPrint): the same bytes for the same text, kept for the next run in
    this process, so that generating the region twice (tests, --once) renders nothing again."""
    from weasyprint import HTML  # imported here: loading Pango costs time nothing else in the demo needs

    return HTML(string=document).write_pdf()


@dataclass
class LoadReport:
    stored: int = 0
    refused: int = 0
    refusals: list[str] = field(default_factory=list)  # the first few, for the operator


def load_demo(
    scale: int = 1, seed: int = DEFAULT_SEED, today: date | None = None, patients: int | None = None,
    chunk: int = CHUNK, progress: Any = None,
) -> LoadReport:
    """Store the demo records through intake, committing chunk by chunk (a large scale is not one transaction)."""
    report = LoadReport()
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if not pending:
            return
        result = run_in_transaction(lambda: ingest_batch(pending))
        report.stored += result.stored
        report.refused += result.refused
        for answer in result.results:
            if answer["status"] != "stored" and len(report.refusals) < 10:
                where = f", поле {answer['field']}" if answer.get("field") else ""
                report.refusals.append(f"{answer['type']} {answer['id']}{where}: {answer['message']}")
        pending.clear()
        if progress:
            progress(report.stored + report.refused)

    for record in demo_records(scale, seed, today, patients):
        pending.append(record)
        if len(pending) >= chunk:
            flush()
    flush()
    return report


def _first_staff_ids(position: str) -> dict[int, str]:
    """Source id of the first staff member of a position in each МО (the numbering of `_structure`)."""
    found: dict[int, str] = {}
    number = 0
    for mo in MOS:
        for pos, count in mo.roster:
            if pos == position and count:
                found.setdefault(mo.n, f"{PREFIX}staff-{number + 1}")
            number += count
    return found


def demo_user_specs() -> list[tuple[str, str, int]]:
    """(login, role, МО number): `admin` for the region, then mo<N>-admin / -doctor / -ers per МО."""
    specs = [("admin", CENTRAL_ADMIN, PERINATAL_CENTRE)]
    for mo in MOS:
        specs += [(f"mo{mo.n}-admin", MO_ADMIN, mo.n), (f"mo{mo.n}-doctor", DOCTOR, mo.n),
                  (f"mo{mo.n}-ers", ERS_OPERATOR, mo.n)]
        if mo.n == 2:
            specs += [("mo2-stat", STATISTICIAN, 2), ("mo2-ers-buh", ERS_ACCOUNTANT, 2)]
    return specs


def ensure_demo_users(password: str) -> int:
    """Create the demo users that are missing (existing ones, and their passwords, are left alone)."""
    specs = demo_user_specs()
    existing = set(db.session.scalars(db.select(User.login).where(User.login.in_([s[0] for s in specs]))))
    mos = {
        mo.source_id: mo
        for mo in db.session.scalars(db.select(Mo).where(Mo.source_id.in_([m.source_id for m in MOS])))
    }
    doctors = _first_staff_ids(OBGYN)
    staff = {
        s.source_id: s for s in db.session.scalars(db.select(Staff).where(Staff.source_id.in_(list(doctors.values()))))
    }
    # One hash for all: they share the published demo password, and hashing is deliberately slow.
    template = User()
    template.set_password(password)
    created = 0
    for login, role, n in specs:
        mo = mos.get(MOS_BY_N[n].source_id)
        if login in existing or mo is None:
            continue
        user = User(login=login, role=role, mo_id=mo.id, full_name=f"{ROLES[role]} ({mo.short_name})")
        if login == "admin":
            user.full_name = "Администратор ЦОД"
        if role in (DOCTOR, ERS_OPERATOR):  # the ЭРС operator is the doctor: signs as the doctor too
            doctor = staff.get(doctors.get(n, ""))
            if doctor is not None:
                user.staff_id = doctor.id
                if role == DOCTOR:
                    user.full_name = doctor.full_name
        user.password_hash = template.password_hash
        db.session.add(user)
        created += 1
    db.session.flush()
    return created


def ensure_demo_token(token: str) -> bool:
    """The demo source MIS's bearer token (PORTAL_DEMO_API_TOKEN); only its hash is stored."""
    digest = hash_token(token)
    if db.session.scalar(db.select(ApiToken.id).where(ApiToken.token_hash == digest)) is not None:
        return False
    db.session.add(ApiToken(name=TOKEN_NAME, token_hash=digest, prefix=token[:8]))
    db.session.flush()
    return True


def demo_loaded() -> bool:
    """The demo МО and users exist. Users are committed last, so a load cut short is not «loaded»."""
    mo = db.session.scalar(db.select(Mo.id).where(Mo.source_id == MOS[0].source_id))
    logins = [spec[0] for spec in demo_user_specs()]
    user = db.session.scalar(db.select(User.id).where(User.login.in_(logins)).limit(1))
    return mo is not None and user is not None


SUMMARY_MODELS: tuple[tuple[str, type], ...] = (
    ("МО", Mo), ("отделений", Department), ("медработников", Staff), ("пациентов", Patient),
    ("беременностей", Pregnancy), ("госпитализаций", Hospitalisation), ("событий", ClinicalEvent),
    ("протоколов визитов", VisitReport),
)


def demo_summary() -> dict[str, int]:
    """How many demo rows are stored, per table (rows of other sources are not counted)."""
    return {
        label: db.session.scalar(
            db.select(db.func.count()).select_from(model).where(model.source_id.like(f"{PREFIX}%"))
        )
        for label, model in SUMMARY_MODELS
    }


# ТФОМС file exchanges switched on in the demo МО (X-4 switches; the attachment file and the
# plan export need theirs, identification selects people only where it is on).
DEMO_TFOMS_PROCEDURES = ("tfoms_identification", "tfoms_attachment", "tfoms_prof", "tfoms_hospitalisation",
                         "tfoms_dispensary", "tfoms_insurance")


def ensure_demo_tfoms() -> int:
    """Switch the ТФОМС exchanges (files and packets) on for the demo МО and select the last week's
    treatment cases for identification (as the daily job would have), so a demo package can be
    formed; the packet service sends the region's structure and stays at its first run."""
    from portal.admin.models import MoIntegration
    from portal.tfoms.ident import select_from_cases

    mo_ids = list(db.session.scalars(db.select(Mo.id).where(Mo.source_id.startswith(PREFIX))))
    existing = {
        (mo_id, key) for mo_id, key in db.session.execute(
            db.select(MoIntegration.mo_id, MoIntegration.key).where(MoIntegration.mo_id.in_(mo_ids))
        )
    }
    for mo_id in mo_ids:
        for key in DEMO_TFOMS_PROCEDURES:
            if (mo_id, key) not in existing:
                db.session.add(MoIntegration(mo_id=mo_id, key=key, enabled=True))
    db.session.flush()
    today = date.today()
    selected = sum(select_from_cases(today - timedelta(days=back), mo_ids) for back in range(1, 8))
    db.session.commit()
    return selected


DEMO_CERTIFICATES = (
    ("vimis", "Демо-МИС: подпись ВИМИС"),  # ВИМИС signs every request (V-5)
    ("iemk", "Демо-МИС: подпись документов ИЭМК"),  # «Получить и подписать документы» (I-7)
)


def ensure_demo_keys() -> int:
    """The demo region's signing keys (RSA, self-signed), one per purpose; returns how many were made."""
    from portal.admin.services import ensure_demo_certificate

    return sum(int(ensure_demo_certificate(purpose, name)) for purpose, name in DEMO_CERTIFICATES)


def ensure_demo_ers_data() -> int:
    """АИСТ_ЭРС of the demo МО: contracts with ФСС, signatures, the exchange switched on."""
    from portal.ers.demo import ensure_demo_ers

    return ensure_demo_ers([mo.source_id for mo in MOS], [spec[0] for spec in demo_user_specs()])


DEMO_SIGNED_PER_MO = 15  # ИЭМК documents signed per demo МО: switching the integration on sends them


def ensure_demo_iemk() -> int:
    """Sign the newest ИЭМК documents of each demo МО as its demo doctor (seed 2.1–2.5), so that
    «Включить интеграцию» (0/2 → 2/2) has signed documents to send; the integration stays off."""
    from portal.iemk.documents import sign_documents
    from portal.iemk.models import UNSIGNED, IemkDocument

    signed = 0
    doctors = db.session.scalars(
        db.select(User).where(User.role == DOCTOR, User.login.in_([s[0] for s in demo_user_specs()]))
    ).all()
    for user in doctors:
        if db.session.scalar(
            db.select(IemkDocument.id).where(IemkDocument.mo_id == user.mo_id, IemkDocument.signed_at.is_not(None))
        ):
            continue
        docs = db.session.scalars(
            db.select(IemkDocument)
            .where(IemkDocument.mo_id == user.mo_id, IemkDocument.status == UNSIGNED)
            .order_by(IemkDocument.event_at.desc(), IemkDocument.id.desc())
            .limit(DEMO_SIGNED_PER_MO * 2)
        ).all()
        mine = 0
        for doc in docs:  # some fail a control (data the demo left out on purpose) and stay unsigned
            mine += len(sign_documents([doc], user).signed)
            if mine == DEMO_SIGNED_PER_MO:
                break
        signed += mine
    db.session.commit()
    return signed


@portal_cli.command("demo-data")
@click.option("--once", is_flag=True, help="Ничего не делать, если демо-регион уже загружен (для make run).")
@click.option("--scale", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Множитель числа пациентов и событий: 10 — около 10 000 пациентов.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True,
              help="Зерно генератора: при одном зерне данные одинаковы.")
@click.option("--patients", type=click.IntRange(MIN_PATIENTS), default=None, hidden=True)
def demo_data_command(once: bool, scale: int, seed: int, patients: int | None) -> None:
    """Создать (или обновить) демо-регион: МО, отделения, медработники, пациентки, события, пользователи."""
    if once and demo_loaded():
        ensure_demo_keys()
        ensure_demo_ers_data()
        db.session.commit()
        click.echo("Демо-данные уже загружены")
        return
    click.echo("Загружаю демо-регион «Вологодская область»…")
    step = 50_000
    shown = [0]

    def progress(done: int) -> None:
        if done - shown[0] >= step:
            shown[0] = done
            click.echo(f"  обработано записей: {done}")

    report = load_demo(scale, seed, patients=patients, progress=progress)
    selected = ensure_demo_tfoms()
    users = ensure_demo_users(current_app.config["DEMO_PASSWORD"])
    token = ensure_demo_token(current_app.config["DEMO_API_TOKEN"])
    keys = ensure_demo_keys()
    ers_contracts = ensure_demo_ers_data()
    db.session.commit()
    iemk_signed = ensure_demo_iemk()

    counts = demo_summary()
    parts = [f"{label}: {value}" for label, value in counts.items()]
    click.echo("Демо-регион загружен. " + ", ".join(parts) + ".")
    click.echo(f"Записей принято: {report.stored}, отклонено: {report.refused}.")
    for line in report.refusals:
        click.echo(f"  отклонено — {line}")
    click.echo(f"Демо-пользователей создано: {users}; токен API {'создан' if token else 'уже был'}; "
               f"демо-сертификатов создано: {keys}.")
    click.echo(f"ТФОМС: обмен файлами и пакетами включён для демо-МО; отобрано для идентификации: {selected}.")
    click.echo(f"ИЭМК: подписано документов демо-врачами: {iemk_signed} (интеграция выключена — 0/2).")
    click.echo(f"ФСС ЭРС: договоров с ФСС введено: {ers_contracts}; подписи МО, ЭРС-операторов и бухгалтера "
               "созданы, обмен с ФСС включён.")
    click.echo("Логины и пароль: flask portal demo-logins")


@portal_cli.command("demo-logins")
def demo_logins_command() -> None:
    """Показать демо-логины, пароль и токен API."""
    specs = demo_user_specs()
    users = {
        u.login: u
        for u in db.session.scalars(db.select(User).where(User.login.in_([s[0] for s in specs])))
    }
    rows = [(login, ROLES[users[login].role], users[login].mo.short_name if users[login].mo else "—")
            for login, _role, _n in specs if login in users]
    if not rows:
        click.echo("Демо-пользователи не созданы: выполните «flask portal demo-data».")
        return
    header = ("Логин", "Роль", "МО")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    click.echo("Демо-пользователи портала:")
    for row in [header, tuple("─" * w for w in widths), *rows]:
        click.echo("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    click.echo(f"Пароль у всех демо-пользователей: {current_app.config['DEMO_PASSWORD']}")
    click.echo(f"Токен API приёма данных (Authorization: Bearer …): {current_app.config['DEMO_API_TOKEN']}")
