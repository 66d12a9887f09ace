"""The patient card of АИСТ_ЭРС (SPEC E-6, E-11): the pregnancy the card shows, its exams as the
seed's tables (Выбор, Отправлено, Дата, Срок, Дополнительно, Подробнее), what ФСС holds for it,
and completing the personal data the source MIS lacked (audited).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select

from portal.admin.audit import audit
from portal.clinical.identifiers import digits, snils_is_valid
from portal.clinical.models import DOCUMENT_KINDS, POLICY_KINDS, ClinicalEvent, Patient, Pregnancy
from portal.dates import parse_date
from portal.ers import models as m
from portal.ers.payloads import newborns
from portal.ers.rules import missing_personal_data
from portal.ers.state import ErsState, state, visit_actions
from portal.extensions import db

EXAM_KINDS = ("exam_primary", "exam_repeat", "pregnancy_outcome")


@dataclass
class ExamRow:
    event: ClinicalEvent
    sent: str  # «Отправлено»: Нет, Да (посещение), Талон 1, Ожидает ответа ФСС …
    term: str
    extra: str  # «Дополнительно»
    waiting: bool = False


@dataclass
class Card:
    patient: Patient
    pregnancy: Pregnancy | None
    state: ErsState
    primary: list[ExamRow]
    repeat: list[ExamRow]
    outcome: list[ExamRow]
    missing: list[str]

    @property
    def newborns(self) -> list[dict[str, Any]]:
        """Live-born children of the outcome (Талон 3 asks their names)."""
        for row in self.outcome:
            children = live_born(row.event)
            if children:
                return children
        return []


def live_born(outcome: ClinicalEvent) -> list[dict[str, Any]]:
    return [c for c in newborns(outcome) if c.get("alive", True)]


def current_pregnancy(patient: Patient) -> Pregnancy | None:
    """The newest pregnancy: the card (like the list) works on the current one."""
    return db.session.scalars(
        select(Pregnancy).where(Pregnancy.patient_id == patient.id).order_by(Pregnancy.id.desc()).limit(1)
    ).first()


def _extra(event: ClinicalEvent) -> str:
    data = event.data or {}
    if event.kind == "pregnancy_outcome":
        children = [c for c in data.get("children") or [] if isinstance(c, dict)]
        parts = [data.get("delivery") or data.get("description") or data.get("outcome") or ""]
        if children:
            parts.append(
                "Дети: "
                + "; ".join(
                    f"{'мальчик' if c.get('sex') == 'M' else 'девочка' if c.get('sex') == 'F' else 'плод'}"
                    f"{', ' + str(c['weight_g']) + ' г' if c.get('weight_g') else ''}"
                    f"{'' if c.get('alive', True) else ', мертворождение'}"
                    for c in children
                )
            )
        return ". ".join(p for p in parts if p)
    parts = []
    if data.get("term"):
        parts.append(f"Беременность {data['term']}.")
    if data.get("diagnosis"):
        parts.append(f"Диагноз {data['diagnosis']}.")
    if data.get("complaints"):
        parts.append(f"{data['complaints']}.")
    return " ".join(parts)


def _sent(event: ClinicalEvent, found: ErsState) -> tuple[str, bool]:
    """What went to ФСС from this event: the newest request of each kind that names it."""
    labels: list[str] = []
    waiting = False
    newest: dict[str, m.ErsRequest] = {}
    for request in found.requests:
        if request.event_id == event.id or (
            request.method == "putVisit" and any(vid == event.source_id for vid, _ in visit_actions(request))
        ):
            newest[request.method] = request
    if event.kind == "exam_repeat" and event.source_id in found.visits:
        labels.append("Да (посещение)")
    for method, request in newest.items():
        if method == "putVisit" and request.status == m.PROCESSED:
            continue  # shown from the state above (a cancellation leaves «Нет»)
        title = m.METHODS[method]
        if request.status in m.IN_FLIGHT:
            labels.append(f"{title}: {request.status_label.lower()}")
            waiting = True
        elif request.status == m.PROCESSED:
            labels.append(f"{title}: да")
        else:
            labels.append(f"{title}: ошибка")
    return ("; ".join(labels) or "Нет"), waiting


def card(patient: Patient) -> Card:
    pregnancy = current_pregnancy(patient)
    found = state(pregnancy) if pregnancy else ErsState()
    rows: dict[str, list[ExamRow]] = {kind: [] for kind in EXAM_KINDS}
    if pregnancy is not None:
        events = db.session.scalars(
            select(ClinicalEvent)
            .where(ClinicalEvent.pregnancy_id == pregnancy.id, ClinicalEvent.kind.in_(EXAM_KINDS))
            .order_by(ClinicalEvent.at, ClinicalEvent.id)
        )
        for event in events:
            sent, waiting = _sent(event, found)
            rows[event.kind].append(
                ExamRow(event, sent, pregnancy.gestational_age(event.at.date()), _extra(event), waiting)
            )
    return Card(
        patient,
        pregnancy,
        found,
        rows["exam_primary"],
        rows["exam_repeat"],
        rows["pregnancy_outcome"],
        missing_personal_data(patient),
    )


# --- completing the personal data (E-11) -------------------------------------------------------

PERSON_FIELDS: dict[str, str] = {  # form field → label, in the seed's order
    "last_name": "Фамилия",
    "first_name": "Имя",
    "middle_name": "Отчество (при наличии)",
    "policy_kind": "Тип документа ОМС",
    "policy_number": "Номер полиса ОМС",
    "document_kind": "Документ, удостоверяющий личность",
    "document_series": "Серия документа",
    "document_number": "Номер документа",
    "document_issued_on": "Дата выдачи документа",
    "document_issuer": "Кем выдан",
    "birth_date": "Дата рождения",
    "residence_address": "Адрес места жительства",
    "snils": "СНИЛС",
}
DATE_FIELDS = ("document_issued_on", "birth_date")
REQUIRED = tuple(name for name in PERSON_FIELDS if name not in ("middle_name", "document_series"))
CHOICES = {"policy_kind": POLICY_KINDS, "document_kind": DOCUMENT_KINDS}


def person_form(patient: Patient) -> dict[str, str]:
    form: dict[str, str] = {}
    for name in PERSON_FIELDS:
        value = getattr(patient, name)
        if name == "policy_number":
            value = patient.policy_number or patient.enp
        if name == "residence_address":
            value = patient.residence_address or patient.registration_address
        form[name] = value.strftime("%d.%m.%Y") if isinstance(value, date) else (value or "")
    return form


def person_errors(form: Mapping[str, str], today: date) -> tuple[dict[str, Any], dict[str, str]]:
    """The values to save and field → Russian message for each wrong one."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, label in PERSON_FIELDS.items():
        raw = (form.get(name) or "").strip()
        if not raw:
            if name in REQUIRED:
                errors[name] = f"Заполните поле «{label}»"
            values[name] = None
            continue
        if name in DATE_FIELDS:
            try:
                parsed = parse_date(raw)
            except ValueError:
                parsed = None
            if parsed is None or parsed > today:
                errors[name] = f"«{label}»: дата в формате ДД.ММ.ГГГГ, не позже сегодняшней"
            values[name] = parsed
        elif name == "snils":
            if not snils_is_valid(raw):
                errors[name] = "СНИЛС: 11 цифр с верной контрольной суммой"
            values[name] = digits(raw)
        elif name in CHOICES and raw not in CHOICES[name]:
            errors[name] = f"«{label}»: выберите значение из списка"
        elif len(raw) > 300:
            errors[name] = f"«{label}»: не длиннее 300 знаков"
        else:
            values[name] = raw
    return values, errors


def complete_person(patient: Patient, values: dict[str, Any], user: Any) -> list[str]:
    """Save what the operator changed; audited with the old and new values. Flushes."""
    changed: dict[str, dict[str, str | None]] = {}
    for name, value in values.items():
        if name == "policy_number" and patient.enp and not patient.policy_number and value == patient.enp:
            continue  # the ЕНП stands for the number: nothing typed
        if name == "residence_address" and value == (
            patient.residence_address or patient.registration_address
        ):
            continue
        old = getattr(patient, name)
        if old != value:
            changed[name] = {
                "было": old.isoformat() if isinstance(old, date) else old,
                "стало": value.isoformat() if isinstance(value, date) else value,
            }
            setattr(patient, name, value)
    if changed:
        db.session.flush()
        audit(
            "ers.person",
            f"Персональные данные для ФСС: {patient.full_name} — "
            + ", ".join(PERSON_FIELDS[n].lower() for n in changed),
            obj=patient,
            mo_id=patient.mo_id,
            details=changed,
            user=user,
        )
    return [PERSON_FIELDS[n] for n in changed]
