"""ЭРС rows: the МО's contract with ФСС (E-3) and every request to ФСС with its answer (E-13).

A request is made by a person on a patient (or by «Обновить данные ЭРС» for the МО), checked,
signed by the chosen signers, encrypted to ФСС and sent; ФСС answers `requestId` (REGISTERED) and
the result later (getResultById): PROCESSED with its data (an ЭРС number …) or PROCESSING_ERROR with
coded errors («Код: 1204 Сообщение: …»). Both the request and the answer are kept as readable XML
(the signed, decrypted form) for «Реестр запросов».
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, DateTime, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.clinical.models import Mo, Patient
from portal.extensions import db
from portal.models_base import TimestampMixin

# Request statuses: ours before ФСС has it, then ФСС's own (specs/fss-ers/NOTES.md).
QUEUED = "QUEUED"  # checked and waiting to be sent (ФСС away: it waits and goes when ФСС returns)
REGISTERED = "REGISTERED"
READY_TO_PROCESS = "READY_TO_PROCESS"
PROCESSING = "PROCESSING"
PROCESSED = "PROCESSED"
PROCESSING_ERROR = "PROCESSING_ERROR"
REFUSED = "REFUSED"  # refused before ФСС took it (an answer with an error code, a bad answer)

STATUSES: dict[str, str] = {
    QUEUED: "Ожидает отправки в ФСС",
    REGISTERED: "Принят ФСС",
    READY_TO_PROCESS: "Готов к обработке",
    PROCESSING: "Обрабатывается",
    PROCESSED: "Обработан",
    PROCESSING_ERROR: "Ошибка обработки",
    REFUSED: "Отклонён",
}
IN_FLIGHT = frozenset({QUEUED, REGISTERED, READY_TO_PROCESS, PROCESSING})

METHODS: dict[str, str] = {
    "createErs": "Запрос ЭРС",
    "getErsData": "Данные ЭРС",
    "disableErs": "Удаление номера ЭРС",
    "putVisit": "Посещение",
    "putTicket1": "Талон 1",
    "putTicket2": "Талон 2",
    "putTicket3": "Талон 3",
    "getResultById": "Результат обработки",
    "registerChildErs": "Регистрация ребёнка",
    "getTickets": "Талоны",
}


class ErsContract(TimestampMixin, db.Model):
    """Договор МО с ФСС (E-3): the newest one is shown at the top of the page; an expired one
    refuses requests."""

    __tablename__ = "ers_contract"
    __table_args__ = (Index("ix_ers_contract_mo", "mo_id", "signed_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    number: Mapped[str] = mapped_column(String(64))
    signed_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date] = mapped_column(Date)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))

    mo: Mapped[Mo] = relationship()


class ErsRequest(TimestampMixin, db.Model):
    """One request to ФСС and what came back (E-13: Дата, IP, Информация, Запрос, Метод, Статус)."""

    __tablename__ = "ers_request"
    __table_args__ = (
        Index("ix_ers_request_mo_date", "mo_id", "created_at", "id"),
        Index("ix_ers_request_patient", "patient_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patient.id"))
    pregnancy_id: Mapped[int | None] = mapped_column(ForeignKey("pregnancy.id"))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("clinical_event.id"))  # the exam it came from
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    ip: Mapped[str | None] = mapped_column(String(45))
    method: Mapped[str] = mapped_column(String(32))  # METHODS
    info: Mapped[str] = mapped_column(String(255))  # «Информация»: what the request is about
    status: Mapped[str] = mapped_column(String(24), default=QUEUED)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # what was checked and sent
    signers: Mapped[list[str] | None] = mapped_column(JSON)  # the chosen signatures (certificate ids)
    request_xml: Mapped[str | None] = mapped_column(Text)  # the envelope as signed (before encryption)
    answer_xml: Mapped[str | None] = mapped_column(Text)  # the last answer, decrypted
    fss_request_id: Mapped[str | None] = mapped_column(String(64), index=True)  # ФСС's requestId
    ers_number: Mapped[str | None] = mapped_column(String(32))  # given, found or disabled by this request
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what ФСС's answer said (ersData …)
    batch: Mapped[str | None] = mapped_column(String(36), index=True)  # «Обновить данные ЭРС» run
    visits_added: Mapped[int] = mapped_column(default=0, server_default="0")  # the report's «Посещения»
    error_code: Mapped[str | None] = mapped_column(String(16))
    error_text: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime)

    mo: Mapped[Mo] = relationship()
    patient: Mapped[Patient | None] = relationship()

    @property
    def status_label(self) -> str:
        return STATUSES.get(self.status, self.status)

    @property
    def error_label(self) -> str | None:
        """ФСС's error as the seed shows it: «Код: 1204 Сообщение: …»."""
        if not (self.error_code or self.error_text):
            return None
        if not self.error_code:  # refused before ФСС answered: our own words, no ФСС code
            return self.error_text
        return f"Код: {self.error_code} Сообщение: {self.error_text or ''}".strip()
