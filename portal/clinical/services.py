"""Queries behind the source-data pages. Every query passes through МО scoping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import or_, tuple_
from sqlalchemy.orm import joinedload

from portal.auth.scoping import scoped
from portal.clinical.identifiers import digits, snils_is_valid
from portal.clinical.models import ClinicalEvent, Hospitalisation, Patient, Pregnancy
from portal.extensions import db


@dataclass
class Page:
    rows: list[Any]
    next_cursor: str | None


def data_problems(patient: Patient) -> list[str]:
    """What the outside systems will refuse, in the words of their checks."""
    problems = []
    if not patient.snils:
        problems.append("Нет СНИЛС пациента")
    elif not snils_is_valid(patient.snils):
        problems.append("Некорректная контрольная сумма СНИЛС")
    if not patient.registration_address:
        problems.append("Нет адреса регистрации пациента")
    if not patient.policy_number and not patient.enp:
        problems.append("Нет полиса ОМС")
    if not patient.document_number:
        problems.append("Нет документа, удостоверяющего личность")
    return problems


def search_patients(mo_id: int | None, query: str, problems_only: bool, after: str | None, limit: int) -> Page:
    stmt = scoped(db.select(Patient).options(joinedload(Patient.mo)), Patient.mo_id)
    if mo_id is not None:
        stmt = stmt.where(Patient.mo_id == mo_id)
    query = (query or "").strip()
    if query:
        number = digits(query)
        if number and len(number) >= 6 and len(number) == len(query.replace("-", "").replace(" ", "")):
            stmt = stmt.where(or_(Patient.snils.startswith(number), Patient.enp.startswith(number)))
        else:
            parts = query.split()
            fields = (Patient.last_name, Patient.first_name, Patient.middle_name)
            for field, part in zip(fields, parts, strict=False):
                stmt = stmt.where(field.ilike(part.replace("%", "") + "%"))
    if problems_only:
        stmt = stmt.where(or_(Patient.snils.is_(None), Patient.registration_address.is_(None)))
    key = (Patient.last_name, Patient.first_name, Patient.id)
    if after:
        last, first, ident = after.split("|", 2)
        stmt = stmt.where(tuple_(*key) > tuple_(last, first, int(ident)))
    rows = list(db.session.scalars(stmt.order_by(*key).limit(limit + 1)))
    cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        tail = rows[-1]
        cursor = f"{tail.last_name}|{tail.first_name}|{tail.id}"
    return Page(rows, cursor)


def current_pregnancies(patient_ids: list[int]) -> dict[int, Pregnancy]:
    """The newest pregnancy of each patient, in one query."""
    if not patient_ids:
        return {}
    result: dict[int, Pregnancy] = {}
    for pregnancy in db.session.scalars(
        db.select(Pregnancy).where(Pregnancy.patient_id.in_(patient_ids)).order_by(Pregnancy.registered_on)
    ):
        result[pregnancy.patient_id] = pregnancy
    return result


def patient_card(patient: Patient) -> dict[str, Any]:
    hospitalisations = list(
        db.session.scalars(
            db.select(Hospitalisation)
            .options(joinedload(Hospitalisation.department))
            .where(Hospitalisation.patient_id == patient.id)
            .order_by(Hospitalisation.admitted_at.desc())
        )
    )
    events = list(
        db.session.scalars(
            db.select(ClinicalEvent)
            .options(joinedload(ClinicalEvent.pregnancy), joinedload(ClinicalEvent.doctor),
                     joinedload(ClinicalEvent.department))
            .where(ClinicalEvent.patient_id == patient.id)
            .order_by(ClinicalEvent.at.desc(), ClinicalEvent.id.desc())
            .limit(500)
        )
    )
    return {"hospitalisations": hospitalisations, "events": events, "problems": data_problems(patient)}


def search_events(
    mo_id: int | None, date_from: date | None, date_to: date | None, kind: str | None, after: str | None, limit: int
) -> Page:
    stmt = scoped(
        db.select(ClinicalEvent).options(
            joinedload(ClinicalEvent.patient),
            joinedload(ClinicalEvent.pregnancy),
            joinedload(ClinicalEvent.department),
            joinedload(ClinicalEvent.doctor),
            joinedload(ClinicalEvent.mo),
        ),
        ClinicalEvent.mo_id,
    )
    if mo_id is not None:
        stmt = stmt.where(ClinicalEvent.mo_id == mo_id)
    if date_from:
        stmt = stmt.where(ClinicalEvent.at >= datetime.combine(date_from, time.min))
    if date_to:
        stmt = stmt.where(ClinicalEvent.at <= datetime.combine(date_to, time.max))
    if kind:
        stmt = stmt.where(ClinicalEvent.kind == kind)
    if after:
        at_text, ident = after.split("|", 1)
        stmt = stmt.where(tuple_(ClinicalEvent.at, ClinicalEvent.id) < tuple_(datetime.fromisoformat(at_text), int(ident)))
    rows = list(db.session.scalars(stmt.order_by(ClinicalEvent.at.desc(), ClinicalEvent.id.desc()).limit(limit + 1)))
    cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        cursor = f"{rows[-1].at.isoformat()}|{rows[-1].id}"
    return Page(rows, cursor)
