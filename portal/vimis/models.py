"""SEMD and its versions. One trigger event makes exactly one SEMD (unique event_id); every
send is a new version (№ отправки), delivered by an exchange work item."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.clinical.models import ClinicalEvent, Department, Mo, Patient, Staff
from portal.extensions import db
from portal.models_base import TimestampMixin

# SEMD statuses (V-3) with the seed's legend; colours are the status classes in portal.css.
PENDING = "pending"  # black: trigger seen, not released for sending
QUEUED = "queued"  # yellow: released, waiting to be built and sent
DELIVERED = "delivered"  # sent, no ФЛК answer yet
PASSED = "passed"  # green
ERROR = "error"  # red

STATUSES: dict[str, str] = {
    PENDING: "Ожидает оформления / отправки",
    QUEUED: "Ожидает доставки в ВИМИС",
    DELIVERED: "Доставлено в ВИМИС",
    PASSED: "Прошел ФЛК",
    ERROR: "Ошибка",
}
STATUS_COLOURS: dict[str, str] = {
    PENDING: "black",
    QUEUED: "yellow",
    DELIVERED: "blue",
    PASSED: "green",
    ERROR: "red",
}
IN_FLIGHT = frozenset({QUEUED, DELIVERED})  # the status cell refreshes itself


class Semd(TimestampMixin, db.Model):
    """A SEMD for ВИМИС caused by one trigger event; event fields are copied for the registry."""

    __tablename__ = "semd"
    __table_args__ = (
        Index("ix_semd_mo_date", "mo_id", "event_at", "id"),
        Index("ix_semd_date", "event_at", "id"),
        Index("ix_semd_mo_status", "mo_id", "status", "event_at"),
        Index("ix_semd_patient", "patient_id", "event_at"),
        Index("ix_semd_doctor", "doctor_id", "event_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("clinical_event.id"), unique=True)
    semd_type: Mapped[int] = mapped_column(Integer)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    doctor_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    event_kind: Mapped[str] = mapped_column(String(40))
    event_at: Mapped[datetime] = mapped_column(DateTime)
    care_conditions: Mapped[str | None] = mapped_column(String(2))
    gestation_weeks: Mapped[int | None] = mapped_column(Integer)  # Срок on the event date
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    send_number: Mapped[int] = mapped_column(Integer, default=1)  # № отправки = the current version
    last_message: Mapped[str | None] = mapped_column(Text)  # the newest journal line …
    last_message_at: Mapped[datetime | None] = mapped_column(DateTime)  # … and its time
    # SEMD 22: «Уникальный идентификатор случая КАС в ВИМИС», one per case (protocol §5.3)
    kas_case_number: Mapped[str | None] = mapped_column(String(32))

    event: Mapped[ClinicalEvent] = relationship()
    mo: Mapped[Mo] = relationship()
    patient: Mapped[Patient] = relationship()
    doctor: Mapped[Staff | None] = relationship()
    department: Mapped[Department | None] = relationship()
    versions: Mapped[list[SemdVersion]] = relationship(back_populates="semd", order_by="SemdVersion.number")

    @property
    def label(self) -> str:
        return f"СЭМД {self.semd_type}"

    @property
    def status_label(self) -> str:
        return STATUSES.get(self.status, self.status)

    @property
    def colour(self) -> str:
        return STATUS_COLOURS.get(self.status, "black")


class SemdVersion(TimestampMixin, db.Model):
    """One send of a SEMD: the document as built, ВИМИС's msg_id and the full answer."""

    __tablename__ = "semd_version"
    __table_args__ = (UniqueConstraint("semd_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    semd_id: Mapped[int] = mapped_column(ForeignKey("semd.id"))
    number: Mapped[int] = mapped_column(Integer)
    document_uuid: Mapped[str] = mapped_column(String(36))
    xml: Mapped[str | None] = mapped_column(Text)  # the CDA document as sent
    built_at: Mapped[datetime | None] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    msg_id: Mapped[str | None] = mapped_column(String(64))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime)
    result: Mapped[str | None] = mapped_column(String(16))  # passed | error
    answer_text: Mapped[str | None] = mapped_column(Text)  # ВИМИС's full description

    semd: Mapped[Semd] = relationship(back_populates="versions")
