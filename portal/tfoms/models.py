"""ТФОМС file exchange rows: identification packages and their records, plan exports."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
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


# Statuses of a packet exchanged over RabbitMQ (T-7, seed 4.4.5.3.1.1).
PACKET_QUEUED = "queued"  # waits to be built and sent (or for its parent to be accepted)
PACKET_BUILD_ERROR = "build_error"
PACKET_BUILT = "built"
PACKET_SENT = "sent"
PACKET_SEND_ERROR = "send_error"
PACKET_ACCEPTED = "accepted"
PACKET_REJECTED = "rejected"
PACKET_RECEIVED = "received"
PACKET_PROCESSED = "processed"
PACKET_REFUSED = "refused"
PACKET_STATUSES: dict[str, str] = {
    PACKET_QUEUED: "Ожидает отправки",
    PACKET_BUILD_ERROR: "Ошибка формирования",
    PACKET_BUILT: "Сформирован",
    PACKET_SENT: "Отправлен",
    PACKET_SEND_ERROR: "Ошибка отправки",
    PACKET_ACCEPTED: "Принят ТФОМС",
    PACKET_REJECTED: "Отклонен ТФОМС",
    PACKET_RECEIVED: "Получен от ТФОМС",
    PACKET_PROCESSED: "Обработан",
    PACKET_REFUSED: "Отклонен",
}
# Statuses after which a run of the service sends the packet again, rebuilt from fresh data,
# unless «Не отправлять повторно» is set.
PACKET_RESEND_STATUSES = (PACKET_BUILD_ERROR, PACKET_REJECTED)

OUTGOING, INCOMING = "out", "in"
OPERATIONS = ("Insert", "Update", "Delete")


class TfomsPacket(db.Model):
    """One packet over RabbitMQ, to ТФОМС or from it, with its status, data and answer (T-7).

    An outgoing packet is delivered by a work item of its channel; `after_id` names the packet
    ТФОМС must accept first (an INSERT's parent, a DELETE's child), and until then the packet
    has no work item. `data` and `answer` are the packet's and the answer's «Тег: Данные» as JSON
    with the seed's answer flag.
    """

    __tablename__ = "tfoms_packet"
    __table_args__ = (
        Index("ix_tfoms_packet_mo_created", "mo_id", "created_at", "id"),
        Index("ix_tfoms_packet_created", "created_at", "id"),
        Index("ix_tfoms_packet_object", "object_type", "object_id", "id"),
        Index("ix_tfoms_packet_after", "after_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))  # the service whose packet it is
    direction: Mapped[str] = mapped_column(String(3), default=OUTGOING)
    mo_id: Mapped[int | None] = mapped_column(ForeignKey("mo.id"))
    packet_type: Mapped[str] = mapped_column(String(40))  # HOSPITALISATION, ATTACH_DATA, POLIS, ANSWER …
    operation: Mapped[str | None] = mapped_column(String(6))  # Insert / Update / Delete
    object_type: Mapped[str | None] = mapped_column(String(32))  # the row it carries: "hospitalisation" …
    object_id: Mapped[int | None] = mapped_column(Integer)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)  # AMQP message_id, the packet's GUID
    after_id: Mapped[int | None] = mapped_column(ForeignKey("tfoms_packet.id"))
    status: Mapped[str] = mapped_column(String(16), default=PACKET_QUEUED)  # PACKET_STATUSES
    status_text: Mapped[str | None] = mapped_column(Text)
    status_at: Mapped[datetime | None] = mapped_column(DateTime)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    answer: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    xml: Mapped[str | None] = mapped_column(Text)  # the packet as sent or received
    answer_xml: Mapped[str | None] = mapped_column(Text)
    no_resend: Mapped[bool] = mapped_column(Boolean, default=False)  # «Не отправлять повторно»
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))

    mo: Mapped[Mo | None] = relationship()

    @property
    def status_label(self) -> str:
        return PACKET_STATUSES.get(self.status, self.status)


class TfomsSync(db.Model):
    """How far a selection of changes has got: rows changed after `selected_until` go next run."""

    __tablename__ = "tfoms_sync"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    selected_until: Mapped[datetime] = mapped_column(DateTime)


class QueueMessage(db.Model):
    """A message of the broker-less transport: a queue kept in the portal's own database.

    Used when no PORTAL_AMQP_URL is configured, so that a fresh machine runs the exchange with
    ТФОМС's stand-in. A consumer leases a message (`locked_until`) and deletes it on ack; a
    consumer that dies leaves the lease to expire and the message is delivered again.
    """

    __tablename__ = "tfoms_queue_message"
    __table_args__ = (Index("ix_tfoms_queue_message_queue", "queue", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    queue: Mapped[str] = mapped_column(String(120))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime)
