"""Making a request to ФСС (SPEC E-3, E-11, E-12): checked first, then queued for the "ers" channel
in the caller's transaction; the page shows it waiting until ФСС has answered."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from portal.clinical.models import ClinicalEvent, Mo, Patient, Pregnancy
from portal.ers import models as m
from portal.ers import payloads
from portal.ers.rules import contract_refusal, current_contract, personal_data_refusal, ticket1_refusal
from portal.ers.state import ErsState, state, visit_actions
from portal.exchange.delivery import enqueue, journal
from portal.extensions import db


class RequestRefused(Exception):
    """The request cannot go as it is; the message says why (Russian), nothing was saved."""


def new_request(
    mo: Mo,
    method: str,
    info: str,
    data: dict[str, Any],
    *,
    signers: dict[str, int | None],
    user: Any = None,
    ip: str | None = None,
    patient: Patient | None = None,
    event: ClinicalEvent | None = None,
    pregnancy: Pregnancy | None = None,
    ers_number: str | None = None,
) -> m.ErsRequest:
    """Check the contract, the patient's personal data and the signatures, then keep and queue."""
    if method not in m.METHODS:
        raise ValueError(f"unknown ЭРС method {method!r}")
    refusal = contract_refusal(current_contract(mo.id)) or (
        personal_data_refusal(patient) if patient else None
    )
    if refusal:
        raise RequestRefused(refusal)
    _check_signers(signers, user)
    return _keep(
        mo,
        method,
        info,
        data,
        signers=signers,
        user=user,
        ip=ip,
        patient=patient,
        pregnancy=pregnancy or (event.pregnancy if event else None),
        event=event,
        ers_number=ers_number,
    )


def _check_signers(signers: dict[str, int | None], user: Any) -> None:
    if not signers.get("mo"):
        raise RequestRefused("Не выбрана подпись МО: выберите сертификат МО вверху страницы")
    if signers.get("doctor") and not (user is not None and user.staff and user.staff.snils):
        raise RequestRefused(
            "Для подписи врача нужен СНИЛС врача: учётная запись не связана с сотрудником со СНИЛС. "
            "Уберите ЭЦП врача или обратитесь к администратору"
        )


def _keep(
    mo: Mo,
    method: str,
    info: str,
    data: dict[str, Any],
    *,
    signers: dict[str, int | None],
    user: Any,
    ip: str | None,
    patient: Patient | None,
    pregnancy: Pregnancy | None,
    event: ClinicalEvent | None = None,
    ers_number: str | None = None,
    batch: str | None = None,
) -> m.ErsRequest:
    """The request row and its work item for the "ers" channel. A request of a refresh run
    (`batch`) gets no journal line of its own: the run's progress speaks for it."""
    from portal.ers.channel import CHANNEL

    request = m.ErsRequest(
        mo_id=mo.id,
        method=method,
        info=info,
        data=data,
        signers=signers,
        status=m.QUEUED,
        user_id=getattr(user, "id", None),
        ip=ip,
        patient_id=patient.id if patient else None,
        pregnancy_id=pregnancy.id if pregnancy else None,
        event_id=event.id if event else None,
        ers_number=ers_number,
        batch=batch,
    )
    request.visits_added = sum(action == "ADD" for _, action in visit_actions(request))
    db.session.add(request)
    db.session.flush()
    enqueue(CHANNEL, "ers_request", request.id, mo.id)
    if batch is None:
        journal(
            CHANNEL,
            None,
            "Постановка в очередь",
            f"{info}: запрос поставлен в очередь на отправку в ФСС",
            subject=("ers_request", request.id),
            mo_id=mo.id,
            user_id=request.user_id,
            notify=False,
        )
    return request


# --- the card's requests (E-7 … E-9): each checks what ФСС would refuse, names it, then queues ---


@dataclass
class Sender:
    """Who sends from the card: the chosen signatures (kind → certificate id), the user, the IP."""

    signers: dict[str, int | None]
    user: Any = None
    ip: str | None = None


DISABLE_REASONS: dict[str, str] = {  # ours: ФСС's codes are not public (specs/fss-ers/NOTES.md)
    "1": "Номер ЭРС сформирован ошибочно",
    "2": "Повторное оформление (дубликат)",
    "3": "Беременность прервана или закончилась до выдачи талонов",
    "9": "Иная причина",
}


def _date(value: Any) -> str:
    return f"{value:%d.%m.%Y}"


def _queue(
    sender: Sender,
    method: str,
    info: str,
    data: dict[str, Any],
    pregnancy: Pregnancy,
    *,
    event: ClinicalEvent | None = None,
    number: str | None = None,
) -> m.ErsRequest:
    return new_request(
        pregnancy.mo,
        method,
        info,
        data,
        signers=sender.signers,
        user=sender.user,
        ip=sender.ip,
        patient=pregnancy.patient,
        event=event,
        pregnancy=pregnancy,
        ers_number=number,
    )


def _number(found: ErsState, what: str) -> str:
    if found.waiting("createErs") and not found.number:
        raise RequestRefused(f"{what}: номер ЭРС ещё не получен — ждём ответа ФСС на «Запрос ЭРС»")
    if not found.number:
        raise RequestRefused(f"{what}: у пациентки нет номера ЭРС. Сначала нажмите «Запрос ЭРС»")
    return found.number


def _not_waiting(found: ErsState, method: str, what: str) -> None:
    if found.waiting(method):
        raise RequestRefused(f"{what} уже отправлен в ФСС: дождитесь ответа")


def _accountant(sender: Sender, what: str) -> None:
    if not sender.signers.get("accountant"):
        raise RequestRefused(f"{what} подписывает бухгалтер: выберите ЭЦП бухгалтера вверху страницы")


def _ticket(sender: Sender, pregnancy: Pregnancy, part: str) -> str:
    """What every talon needs: a number, not accepted already, none on its way, the accountant's
    signature. Returns the ЭРС number."""
    what = f"Талон {part}"
    found = state(pregnancy)
    number = _number(found, what)
    if found.tickets[part]:
        raise RequestRefused(f"{what} уже принят ФСС")
    if part == "3-2" and not found.tickets["3-1"]:
        raise RequestRefused("Талон 3-2 отправляется после того, как ФСС принял Талон 3-1")
    method = f"putTicket{part[0]}"
    if found.waiting(method):
        raise RequestRefused(f"{'Талон 3' if part[0] == '3' else what} уже отправлен в ФСС: дождитесь ответа")
    _accountant(sender, what)
    return number


def request_ers(sender: Sender, pregnancy: Pregnancy, exam: ClinicalEvent | None) -> m.ErsRequest:
    """«Запрос ЭРС» from the primary exam; sent again it asks ФСС for the number it gave."""
    if exam is None or exam.kind != "exam_primary":
        raise RequestRefused(
            "«Запрос ЭРС» отправляется из первичного осмотра: выберите его в разделе «Первичный осмотр»"
        )
    found = state(pregnancy)
    _not_waiting(found, "createErs", "Запрос ЭРС")
    patient = pregnancy.patient
    return _queue(
        sender,
        "createErs",
        f"Запрос ЭРС: {patient.full_name}",
        payloads.create_ers(patient, pregnancy),
        pregnancy,
        event=exam,
    )


def send_visits(
    sender: Sender, pregnancy: Pregnancy, exams: list[ClinicalEvent], action: str = "ADD"
) -> m.ErsRequest:
    """«Посещение» (ADD) of the chosen repeat exams, or «✕ Посещение» (CANCEL) of sent ones."""
    cancel = action == "CANCEL"
    what = "Отмена посещения" if cancel else "Посещение"
    exams = [e for e in exams if e.kind == "exam_repeat"]
    if not exams:
        raise RequestRefused(f"{what}: отметьте повторные осмотры в столбце «Выбор»")
    found = state(pregnancy)
    number = _number(found, what)
    pending = found.pending_visits()
    for exam in exams:
        if exam.source_id in pending:
            raise RequestRefused(f"Посещение от {_date(exam.at)} уже отправлено в ФСС: дождитесь ответа")
        sent = exam.source_id in found.visits
        if cancel and not sent:
            raise RequestRefused(f"Посещение от {_date(exam.at)} в ФСС не передавалось: отменять нечего")
        if not cancel and sent:
            raise RequestRefused(
                f"Посещение от {_date(exam.at)} уже принято ФСС. Чтобы исправить, отмените его («✕ Посещение») и отправьте снова"
            )
    dates = ", ".join(_date(e.at) for e in exams)
    patient = pregnancy.patient
    return _queue(
        sender,
        "putVisit",
        f"{what} от {dates}: {patient.full_name}",
        payloads.visits(patient, pregnancy, number, exams, action),
        pregnancy,
        event=exams[0],
        number=number,
    )


def send_ticket1(sender: Sender, pregnancy: Pregnancy, exams: list[ClinicalEvent]) -> m.ErsRequest:
    """Талон 1 from one exam at 30 weeks or later (28 for a multiple pregnancy)."""
    if len(exams) != 1:
        raise RequestRefused("Талон 1: отметьте один осмотр, по которому выдаётся талон")
    exam = exams[0]
    refusal = ticket1_refusal(pregnancy, exam.at.date())
    if refusal:
        raise RequestRefused(refusal)
    number = _ticket(sender, pregnancy, "1")
    patient = pregnancy.patient
    return _queue(
        sender,
        "putTicket1",
        f"Талон 1 (осмотр {_date(exam.at)}): {patient.full_name}",
        payloads.ticket1(patient, pregnancy, number, exam),
        pregnancy,
        event=exam,
        number=number,
    )


def _outcome_event(pregnancy: Pregnancy, outcome: ClinicalEvent | None, what: str) -> ClinicalEvent:
    if outcome is None or outcome.kind != "pregnancy_outcome":
        raise RequestRefused(f"{what} выдаётся по исходу беременности: выберите исход в разделе «Исход»")
    if (outcome.data or {}).get("outcome") != "birth":
        raise RequestRefused(
            f"{what} выдаётся только при родах: исход — {outcome.data.get('outcome') or 'не роды'}"
        )
    return outcome


def send_ticket2(sender: Sender, pregnancy: Pregnancy, outcome: ClinicalEvent | None) -> m.ErsRequest:
    """Талон 2 from the outcome: the birth and every newborn."""
    outcome = _outcome_event(pregnancy, outcome, "Талон 2")
    number = _ticket(sender, pregnancy, "2")
    arrival = outcome.hospitalisation.admitted_at.date() if outcome.hospitalisation else None
    patient = pregnancy.patient
    return _queue(
        sender,
        "putTicket2",
        f"Талон 2 (исход {_date(outcome.at)}): {patient.full_name}",
        payloads.ticket2(patient, pregnancy, number, outcome, arrival),
        pregnancy,
        event=outcome,
        number=number,
    )


def send_ticket3(
    sender: Sender,
    pregnancy: Pregnancy,
    outcome: ClinicalEvent | None,
    part: str,
    children: list[dict[str, str]],
    today: Any,
) -> m.ErsRequest:
    """Талон 3-1 / 3-2: the children's observation in their first / second half-year."""
    what = f"Талон {part}"
    if part not in payloads.WATCH_MONTHS:
        raise RequestRefused(f"Неизвестная часть талона 3: «{part}»")
    outcome = _outcome_event(pregnancy, outcome, what)
    missing = [
        n for n, child in enumerate(children, 1) if not child.get("first_name") or not child.get("last_name")
    ]
    if not children:
        raise RequestRefused(f"{what}: укажите фамилию и имя каждого ребёнка")
    if missing:
        numbers = ", ".join(f"№ {n}" for n in missing)
        raise RequestRefused(f"{what}: укажите фамилию и имя каждого ребёнка (не заполнено: ребёнок {numbers})")
    number = _ticket(sender, pregnancy, part)
    patient = pregnancy.patient
    return _queue(
        sender,
        "putTicket3",
        f"{what} (дети: {len(children)}): {patient.full_name}",
        payloads.ticket3(patient, number, part, outcome.at.date(), children, today),
        pregnancy,
        event=outcome,
        number=number,
    )


def disable_number(sender: Sender, pregnancy: Pregnancy, reason_code: str, reason_text: str) -> m.ErsRequest:
    """«✕ ЭРС»: deleting the number needs a reason chosen and written (seed)."""
    found = state(pregnancy)
    number = _number(found, "Удаление номера ЭРС")
    if reason_code not in DISABLE_REASONS:
        raise RequestRefused("Удаление номера ЭРС: выберите причину")
    text = (reason_text or "").strip()
    if len(text) < 5:
        raise RequestRefused("Удаление номера ЭРС: опишите причину в текстовом поле (не короче 5 знаков)")
    _not_waiting(found, "disableErs", "Запрос на удаление номера ЭРС")
    patient = pregnancy.patient
    return _queue(
        sender,
        "disableErs",
        f"Удаление номера ЭРС {number}: {patient.full_name}",
        payloads.disable_ers(number, reason_code, f"{DISABLE_REASONS[reason_code]}. {text}"[:500]),
        pregnancy,
        number=number,
    )


def refresh(sender: Sender, mo: Mo, pregnancies: list[Pregnancy]) -> tuple[str, int]:
    """«Обновить данные ЭРС»: one getErsData per woman with a СНИЛС (ФСС finds certificates
    issued in any МО by it); returns the run's id and how many were queued."""
    refusal = contract_refusal(current_contract(mo.id))
    if refusal:
        raise RequestRefused(refusal)
    _check_signers(sender.signers, sender.user)
    batch = str(uuid.uuid4())
    queued = 0
    for pregnancy in pregnancies:
        patient = pregnancy.patient
        if not patient.snils:
            continue
        _keep(  # getErsData needs nothing of her data but the СНИЛС: no personal-data check
            mo,
            "getErsData",
            f"Данные ЭРС по СНИЛС: {patient.full_name}",
            payloads.get_ers_data(patient.snils),
            signers=sender.signers,
            user=sender.user,
            ip=sender.ip,
            patient=patient,
            pregnancy=pregnancy,
            batch=batch,
        )
        queued += 1
    if not queued:
        raise RequestRefused("Нет пациенток со СНИЛС: ФСС ищет ЭРС по СНИЛС")
    return batch, queued
