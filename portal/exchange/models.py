"""Work items, their journal and service runs: shared by ВИМИС, ИЭМК, ЭРС and ТФОМС."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models_base import TimestampMixin, utcnow

# Delivery states of a work item.
QUEUED = "queued"  # due for a send attempt at next_attempt_at
SENDING = "sending"  # the request may have left; a crash here means "ask before resending"
UNKNOWN = "unknown"  # the request left but its answer was lost (timeout): ask before resending
WAITING = "waiting"  # accepted by the outside system; its final answer is awaited (callback or poll)
DONE = "done"  # final: delivered and accepted
FAILED = "failed"  # final: refused for its data; a person fixes the data and sends again
CANCELLED = "cancelled"  # final: withdrawn before it was sent

STATES: dict[str, str] = {
    QUEUED: "В очереди",
    SENDING: "Отправляется",
    UNKNOWN: "Результат отправки неизвестен",
    WAITING: "Ожидает ответа",
    DONE: "Принят",
    FAILED: "Ошибка",
    CANCELLED: "Отменён",
}


class WorkItem(TimestampMixin, db.Model):
    """One thing to deliver to an outside system: a SEMD version, a request, a packet."""

    __tablename__ = "work_item"
    __table_args__ = (
        Index("ix_work_item_due", "channel", "state", "next_attempt_at"),
        Index("ix_work_item_subject", "subject_type", "subject_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))  # the Channel's name: "vimis", "ers" …
    mo_id: Mapped[int | None] = mapped_column(ForeignKey("mo.id"), index=True)
    subject_type: Mapped[str] = mapped_column(String(32))  # what the item delivers: "semd_version" …
    subject_id: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # send attempts that reached the transport
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    request_id: Mapped[str | None] = mapped_column(String(64))  # our id of the request, known before it leaves
    external_id: Mapped[str | None] = mapped_column(String(64), index=True)  # the outside system's id
    last_error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    @property
    def state_label(self) -> str:
        return STATES.get(self.state, self.state)


class JournalEntry(db.Model):
    """One line of history: what happened to a subject or an item, append-only."""

    __tablename__ = "journal_entry"
    __table_args__ = (
        Index("ix_journal_entry_subject", "subject_type", "subject_id", "id"),
        Index("ix_journal_entry_run", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    channel: Mapped[str] = mapped_column(String(32))
    mo_id: Mapped[int | None] = mapped_column(ForeignKey("mo.id"))
    subject_type: Mapped[str] = mapped_column(String(32))  # the domain row: "semd", "ers_request" …
    subject_id: Mapped[int] = mapped_column(Integer)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("work_item.id"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("service_run.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    operation: Mapped[str] = mapped_column(String(40))  # Операция: «Отправка», «Результат ФЛК» …
    level: Mapped[str] = mapped_column(String(8), default="info")  # info | ok | error
    message: Mapped[str] = mapped_column(Text)  # the line users read
    packet_id: Mapped[str | None] = mapped_column(String(64))  # Идентификатор пакета
    packet_type: Mapped[str | None] = mapped_column(String(80))  # Тип пакета
    item_state: Mapped[str | None] = mapped_column(String(16))  # Статус пакета after this step
    payload: Mapped[str | None] = mapped_column(Text)  # what was sent (envelope, packet)
    answer: Mapped[str | None] = mapped_column(Text)  # what came back


# Results of a service run (T-11).
RUN_RUNNING, RUN_OK, RUN_ERROR = "running", "ok", "error"
RUN_RESULTS: dict[str, str] = {RUN_RUNNING: "Выполняется", RUN_OK: "Успешно", RUN_ERROR: "Завершено с ошибкой"}


class ServiceRun(db.Model):
    """One run of a service (a job): Запуск, Завершение, Результат, packets and errors."""

    __tablename__ = "service_run"
    __table_args__ = (Index("ix_service_run_service", "service", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service: Mapped[str] = mapped_column(String(64))  # the job's name
    mo_id: Mapped[int | None] = mapped_column(ForeignKey("mo.id"), index=True)  # None: every МО
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    result: Mapped[str] = mapped_column(String(16), default=RUN_RUNNING)
    total: Mapped[int] = mapped_column(Integer, default=0)  # Всего пакетов
    errors: Mapped[int] = mapped_column(Integer, default=0)  # Пакетов с ошибками
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    message: Mapped[str | None] = mapped_column(Text)

    @property
    def result_label(self) -> str:
        return RUN_RESULTS.get(self.result, self.result)
