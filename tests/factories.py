"""Factories for tests: real rows in the test database, with believable Russian data."""

from __future__ import annotations

import functools
import itertools
from datetime import date, datetime, timedelta
from types import SimpleNamespace

from werkzeug.security import generate_password_hash

from portal.auth.models import User
from portal.auth.roles import ROLES
from portal.clinical.identifiers import enp_check_digit, snils_check_number
from portal.clinical.models import (
    Attachment,
    BedProfile,
    Branch,
    ClinicalEvent,
    Department,
    DispensaryObservation,
    Hospitalisation,
    HospitalMovement,
    HospitalReferral,
    Insurer,
    Mo,
    Patient,
    PlanPerson,
    Pregnancy,
    ProphylacticPlan,
    Staff,
)
from portal.extensions import db

PASSWORD = "test-password-1"
_seq = itertools.count(1)


def _n() -> int:
    return next(_seq)


def valid_snils(n: int) -> str:
    first9 = f"{100_000_000 + n * 7919 % 899_999_999:09d}"
    return first9 + snils_check_number(first9)


def valid_enp(n: int) -> str:
    first15 = f"35{n:013d}"
    return first15 + enp_check_digit(first15)


def make_mo(**kw) -> Mo:
    n = _n()
    values = dict(
        source_id=f"mo-{n}", name=f"ГБУЗ «Родильный дом № {n}»", short_name=f"РД № {n}",
        registry_number=f"35{n % 10000:04d}", f003_code=f"35{n % 10000:04d}", oid=f"1.2.643.5.1.13.13.12.2.35.{1000 + n}",
        ogrn=f"10235000{n:05d}", inn=f"35250{n:05d}", kpp="352501001", address="г. Вологда, ул. Ленина, д. 1",
    )
    values.update(kw)
    mo = Mo(**values)
    db.session.add(mo)
    db.session.flush()
    return mo


def make_department(mo: Mo, kind: str = "maternity", **kw) -> Department:
    n = _n()
    dep = Department(source_id=f"dep-{n}", mo_id=mo.id, name=kw.pop("name", f"Отделение {n}"), kind=kind, **kw)
    db.session.add(dep)
    db.session.flush()
    return dep


def make_branch(mo: Mo, kind: str = "hospital", **kw) -> Branch:
    n = _n()
    values = dict(source_id=f"br-{n}", mo_id=mo.id, code=f"{n % 1000:03d}", name=f"Корпус {n}", kind=kind,
                  address="г. Вологда, ул. Ленина, д. 1", phone="8172000000", opened_on=date(2020, 1, 1))
    values.update(kw)
    branch = Branch(**values)
    db.session.add(branch)
    db.session.flush()
    return branch


def make_bed_profile(department: Department, **kw) -> BedProfile:
    n = _n()
    values = dict(
        source_id=f"bed-{n}", mo_id=department.mo_id, department_id=department.id, profile=3, care_profile=136,
        beds=30, beds_male=0, beds_female=30, beds_repair=0, planned_beds=30, valid_from=date(2024, 1, 1),
        actual_on=date.today(), occupied=22, admitted_today=3, discharged_today=2, planned_today=1, free=8,
        free_adult=8, free_child=0,
    )
    values.update(kw)
    bed = BedProfile(**values)
    db.session.add(bed)
    db.session.flush()
    return bed


def make_referral(patient: Patient, to_department: Department, **kw) -> HospitalReferral:
    n = _n()
    values = dict(
        source_id=f"ref-{n}", mo_id=patient.mo_id, patient_id=patient.id, number=1000 + n, kind="planned",
        auto_created=False, payment="oms", issued_on=date.today() - timedelta(days=2),
        planned_on=date.today() + timedelta(days=5), to_mo_id=to_department.mo_id, to_department_id=to_department.id,
        diagnosis="O24.4", diagnosis_text="Сахарный диабет, развившийся во время беременности",
    )
    values.update(kw)
    referral = HospitalReferral(**values)
    db.session.add(referral)
    db.session.flush()
    return referral


def make_movement(hospitalisation: Hospitalisation, **kw) -> HospitalMovement:
    n = _n()
    values = dict(
        source_id=f"mov-{n}", hospitalisation_id=hospitalisation.id, mo_id=hospitalisation.mo_id,
        department_id=hospitalisation.department_id, began_at=hospitalisation.admitted_at,
    )
    values.update(kw)
    movement = HospitalMovement(**values)
    db.session.add(movement)
    db.session.flush()
    return movement


def make_dispensary(patient: Patient, **kw) -> DispensaryObservation:
    n = _n()
    values = dict(source_id=f"dn-{n}", mo_id=patient.mo_id, patient_id=patient.id, diagnosis="O24.4",
                  began_on=date.today() - timedelta(days=30), visits_per_year=4, place="1")
    values.update(kw)
    observation = DispensaryObservation(**values)
    db.session.add(observation)
    db.session.flush()
    return observation


def make_staff(mo: Mo, **kw) -> Staff:
    n = _n()
    values = dict(
        source_id=f"doc-{n}", mo_id=mo.id, last_name="Смирнова", first_name="Ольга", middle_name="Михайловна",
        snils=valid_snils(n), position="врач-акушер-гинеколог", category="doctor",
    )
    values.update(kw)
    staff = Staff(**values)
    db.session.add(staff)
    db.session.flush()
    return staff


def make_patient(mo: Mo, **kw) -> Patient:
    n = _n()
    values = dict(
        source_id=f"pat-{n}", mo_id=mo.id, last_name="Иванова", first_name="Мария", middle_name="Петровна",
        sex="F", birth_date=date(1994, 5, 6), snils=valid_snils(n), enp=valid_enp(n),
        policy_kind="Э", policy_number=valid_enp(n), insurer_code="35001",
        document_kind="14", document_series="1904", document_number=f"{n:06d}",
        document_issued_on=date(2014, 6, 1), document_issuer="УМВД России по Вологодской области",
        registration_address="г. Вологда, ул. Мира, д. 5, кв. 1", residence_address="г. Вологда, ул. Мира, д. 5, кв. 1",
        social_status="working", phone="+7 900 000-00-00",
    )
    values.update(kw)
    patient = Patient(**values)
    db.session.add(patient)
    db.session.flush()
    return patient


def make_pregnancy(patient: Patient, **kw) -> Pregnancy:
    n = _n()
    values = dict(
        source_id=f"preg-{n}", patient_id=patient.id, mo_id=patient.mo_id,
        registered_on=date.today() - timedelta(days=100), weeks_at_registration=8, multiple=False,
    )
    values.update(kw)
    pregnancy = Pregnancy(**values)
    db.session.add(pregnancy)
    db.session.flush()
    return pregnancy


def make_hospitalisation(patient: Patient, department: Department, **kw) -> Hospitalisation:
    n = _n()
    values = dict(
        source_id=f"hosp-{n}", patient_id=patient.id, mo_id=department.mo_id, department_id=department.id,
        admitted_at=datetime.now().replace(microsecond=0) - timedelta(days=3), payment="oms",
        card_number=f"{n}", diagnosis="O24.4",
    )
    values.update(kw)
    hosp = Hospitalisation(**values)
    db.session.add(hosp)
    db.session.flush()
    return hosp


def make_event(patient: Patient, kind: str = "exam_primary", **kw) -> ClinicalEvent:
    n = _n()
    values = dict(
        source_id=f"ev-{n}", kind=kind, patient_id=patient.id, mo_id=patient.mo_id,
        at=datetime.now().replace(microsecond=0) - timedelta(days=1), care_conditions="3", data={},
    )
    values.update(kw)
    event = ClinicalEvent(**values)
    db.session.add(event)
    db.session.flush()
    return event


# The СМО of the demo region and of the ТФОМС stand-in (simulators/tfoms.py DEFAULT_INSURERS).
INSURERS = (("35001", "1033500000011"), ("35002", "1033500000022"), ("35003", "1033500000033"))


def make_insurer(code: str = "35001", ogrn: str | None = None, **kw) -> Insurer:
    """The СМО with this code, created once per test database."""
    existing = db.session.scalar(db.select(Insurer).where(Insurer.code == code))
    if existing is not None:
        return existing
    ogrn = ogrn or dict(INSURERS).get(code) or f"10335{int(code):08d}"
    insurer = Insurer(source_id=f"smo-{code}", code=code, ogrn=ogrn, name=kw.pop("name", f"СМО {code}"), **kw)
    db.session.add(insurer)
    db.session.flush()
    return insurer


def make_attachment(patient: Patient, **kw) -> Attachment:
    n = _n()
    values = dict(
        source_id=f"att-{n}", patient_id=patient.id, mo_id=patient.mo_id, district=f"{n % 30 + 1}",
        method="1", kind="1", attached_on=date.today() - timedelta(days=400),
    )
    values.update(kw)
    attachment = Attachment(**values)
    db.session.add(attachment)
    db.session.flush()
    return attachment


def make_plan(mo: Mo, kind: str = "5", **kw) -> ProphylacticPlan:
    n = _n()
    values = dict(source_id=f"plan-{n}", mo_id=mo.id, kind=kind, year=date.today().year, quarter=None,
                  name=f"План {n}")
    values.update(kw)
    plan = ProphylacticPlan(**values)
    db.session.add(plan)
    db.session.flush()
    return plan


def make_plan_person(plan: ProphylacticPlan, patient: Patient, **kw) -> PlanPerson:
    n = _n()
    values = dict(source_id=f"pp-{n}", plan_id=plan.id, patient_id=patient.id, quarter=1)
    values.update(kw)
    person = PlanPerson(**values)
    db.session.add(person)
    db.session.flush()
    return person


@functools.cache
def _password_hash() -> str:
    """Hashing is deliberately slow; tests reuse one hash of the shared test password."""
    return generate_password_hash(PASSWORD)


def make_user(role: str, mo: Mo | None, login: str | None = None, **kw) -> User:
    n = _n()
    user = User(
        login=login or f"{role}-{n}", full_name=kw.pop("full_name", f"Пользователь {n} ({ROLES[role]})"),
        role=role, mo_id=mo.id if mo else None, **kw,
    )
    user.password_hash = _password_hash()
    db.session.add(user)
    db.session.flush()
    return user


def make_region() -> SimpleNamespace:
    """Two МО, each with a department, a doctor, two patients and one user of every role."""
    mos = []
    for _ in range(2):
        mo = make_mo()
        dep = make_department(mo)
        doctor = make_staff(mo)
        patients = [make_patient(mo), make_patient(mo, last_name="Петрова", first_name="Анна")]
        pregnancy = make_pregnancy(patients[0])
        event = make_event(patients[0], pregnancy_id=pregnancy.id, department_id=dep.id, doctor_id=doctor.id)
        users = {role: make_user(role, mo) for role in ROLES}
        mos.append(SimpleNamespace(mo=mo, department=dep, doctor=doctor, patients=patients,
                                   pregnancy=pregnancy, event=event, users=users))
    db.session.commit()
    return SimpleNamespace(a=mos[0], b=mos[1], central=mos[0].users["central_admin"])
