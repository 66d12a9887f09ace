"""ТФОМС file exchange rows: identification packages and their records, plan exports."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.clinical.models import Mo, Patient, PlanPerson
from portal.extensions import db
from portal.models_base import utcnow

# Why a person was selected for identification (seed 4.3.3).
IDENT_REASONS: dict[str, str] = {
    "new_person": "Новый человек",
    "manual": "Кнопка «Идентифицировать»",
    "case": "Случай лечения",
}

# Status of a record of an identification package.
IDENT_SELECTED = "selected"  # waits for the next package
IDENT_SENT = "sent"  # in a package, no answer yet
IDENT_IDENTIFIED = "identified"
IDENT_NOT_IDENTIFIED = "not_identified"
IDENT_STATUSES: dict[str, str] = {
    IDENT_SELECTED: "Отобран для идентификации",
    IDENT_SENT: "Ожидает ответа ТФОМС",
    IDENT_IDENTIFIED: "Идентифицирован",
    IDENT_NOT_IDENTIFIED: "Не идентифицирован",
}
NO_ANSWER_TEXT = "Данные от ТФОМС не получены"

# Kinds of treatment case (Случай лечения) an identification record may come from.
CASE_TYPES: dict[str, str] = {"hospitalisation": "КВС", "visit": "ТАП"}


class IdentPackage(db.Model):
    """A batch identification package: one request DBF `{F003}_{ddmmyyyy}_{n}.DBF` of one МО."""

    __tablename__ = "tfoms_ident_package"
    __table_args__ = (Index("ix_tfoms_ident_package_mo_formed", "mo_id", "formed_on", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    name: Mapped[str] = mapped_column(String(40), unique=True)  # file name without .DBF
    formed_on: Mapped[date] = mapped_column(Date)
    number: Mapped[int] = mapped_column(Integer)  # n: sequence number of the day for the МО
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))  # None: formed by the job
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    answer_loaded_at: Mapped[datetime | None] = mapped_column(DateTime)
    errors_count: Mapped[int] = mapped_column(Integer, default=0)
    identified_count: Mapped[int] = mapped_column(Integer, default=0)

    mo: Mapped[Mo] = relationship()

    @property
    def file_name(self) -> str:
        return f"{self.name}.DBF"


class IdentRecord(db.Model):
    """A person selected for identification and, once packaged, one record of the request file."""

    __tablename__ = "tfoms_ident_record"
    __table_args__ = (
        Index("ix_tfoms_ident_record_package", "package_id", "nrec"),
        Index("ix_tfoms_ident_record_mo_status", "mo_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    package_id: Mapped[int | None] = mapped_column(ForeignKey("tfoms_ident_package.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(16))  # IDENT_REASONS
    case_type: Mapped[str | None] = mapped_column(String(16))  # CASE_TYPES
    case_id: Mapped[int | None] = mapped_column(Integer)  # hospitalisation.id or clinical_event.id
    case_number: Mapped[str | None] = mapped_column(String(64))
    period_from: Mapped[date | None] = mapped_column(Date)  # DIN: identification needed from
    period_to: Mapped[date | None] = mapped_column(Date)  # DOUT: … to
    nrec: Mapped[int | None] = mapped_column(Integer)  # record number in the request file
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the request fields as written
    status: Mapped[str] = mapped_column(String(16), default=IDENT_SELECTED)  # IDENT_STATUSES
    status_on: Mapped[date | None] = mapped_column(Date)
    errors: Mapped[str | None] = mapped_column(Text)  # REPL error codes of the answer
    result: Mapped[str | None] = mapped_column(Text)  # what the answer did, in Russian
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    patient: Mapped[Patient] = relationship()
    package: Mapped[IdentPackage | None] = relationship()

    @property
    def status_label(self) -> str:
        return IDENT_STATUSES.get(self.status, self.status)


class PlanExport(db.Model):
    """One PROF file (XML zipped under the same name) exported for an МО, period and СМО."""

    __tablename__ = "tfoms_plan_export"
    __table_args__ = (Index("ix_tfoms_plan_export_mo_period", "mo_id", "year", "month", "packet_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    batch: Mapped[str] = mapped_column(String(32), index=True)  # files made by one «Сформировать»
    file_name: Mapped[str] = mapped_column(String(80), unique=True)  # without extension
    year: Mapped[int] = mapped_column(Integer)
    month: Mapped[int] = mapped_column(Integer)  # first month of the reporting period
    load_quarter: Mapped[int | None] = mapped_column(Integer)  # Квартал загрузки (changes)
    packet_number: Mapped[int] = mapped_column(Integer)  # 1–9, unique per МО and period
    insurer_code: Mapped[str | None] = mapped_column(String(10))  # СМО of distributed data
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    content: Mapped[bytes] = mapped_column(LargeBinary)  # the zip
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    answer_loaded_at: Mapped[datetime | None] = mapped_column(DateTime)  # OSHIB_PR imported
    errors_count: Mapped[int] = mapped_column(Integer, default=0)

    mo: Mapped[Mo] = relationship()


class PlanExportRecord(db.Model):
    """Which person of a plan is record NOMER_Z of an exported file (the error answer names it)."""

    __tablename__ = "tfoms_plan_export_record"

    export_id: Mapped[int] = mapped_column(
        ForeignKey("tfoms_plan_export.id", ondelete="CASCADE"), primary_key=True
    )
    nomer_z: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_person_id: Mapped[int] = mapped_column(ForeignKey("plan_person.id"), index=True)

    plan_person: Mapped[PlanPerson] = relationship()
