"""ИЭМК documents (SPEC I-2, I-7, I-9): one row per document a clinical event makes, its CDA as
signed, its status; the visit reports of the source MIS; the cases opened in ИЭМК.

A document goes «Не подписан» → «Подписан» (CDA built, format and logic checks passed, simple
electronic signature) → «Передан в ИЭМК» (AddMedRecord accepted, no asynchronous answer yet) →
«Сохранен в ИЭМК» or «Ошибка: <текст>». Delivery is an exchange work item of the "iemk" channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.clinical.models import ClinicalEvent, Department, Mo, Patient, Staff
from portal.extensions import db
from portal.models_base import TimestampMixin, utcnow

UNSIGNED = "unsigned"
SIGNED = "signed"
SENT = "sent"
SAVED = "saved"
ERROR = "error"

STATUSES: dict[str, str] = {
    UNSIGNED: "Не подписан",
    SIGNED: "Подписан",
    SENT: "Передан в ИЭМК",
    SAVED: "Сохранен в ИЭМК",
    ERROR: "Ошибка",
}
STATUS_COLOURS: dict[str, str] = {
    UNSIGNED: "black",
    SIGNED: "yellow",
    SENT: "blue",
    SAVED: "green",
    ERROR: "red",
}


@dataclass(frozen=True)
class DocKind:
    """One ИЭМК document kind: the federal SEMD it is built as and the N3 MedDocument it travels in."""

    key: str
    title: str  # the seed's name
    remd_kind: int  # ФНСИ 1.2.643.5.1.13.13.11.1520 «Регистрируемые медицинские документы»
    type_code: int  # ФНСИ 1.2.643.5.1.13.13.11.1522 document type (ClinicalDocument/code)
    type_name: str
    template_oid: str  # ClinicalDocument/templateId: the kind's Schematron where one is public, else the ФНСИ 1520 OID
    med_document: str  # N3 EMKService MedDocument subtype (xsi:type)
    event_kinds: tuple[str, ...]


KINDS: dict[str, DocKind] = {
    k.key: k
    for k in (
        DocKind("stat_epicrisis", "Эпикриз стационара", 77, 1, "Эпикриз в стационаре выписной",
                "1.2.643.5.1.13.13.15.25.4", "DischargeSummary", ("discharge",)),
        DocKind("amb_epicrisis", "Амбулаторный эпикриз", 92, 2, "Эпикриз по законченному случаю амбулаторный",
                "1.2.643.5.1.13.13.15.26.4", "Form027U", ("exam_primary", "exam_repeat")),
        DocKind("lab", "Протокол лабораторного исследования", 75, 7, "Протокол лабораторного исследования",
                "1.2.643.5.1.13.13.15.18.4", "LaboratoryReport", ("lab_blood", "lab_urine")),
        DocKind("referral", "Направление (057/у-04)", 43, 3,
                "Направление на госпитализацию, восстановительное лечение, обследование, консультацию",
                "1.2.643.5.1.13.13.15.31.2", "Referral", ("referral_mo",)),
        DocKind("consult", "Протокол консультации", 119, 5, "Протокол консультации",
                "1.2.643.5.1.13.13.15.13.4", "ConsultNote", ("consult_therapist",)),
        DocKind("instrumental", "Протокол инструментального исследования", 174, 6,
                "Протокол инструментального исследования", "1.2.643.5.1.13.13.14.6.9.4", "PacsResult",
                ("ultrasound_1", "ultrasound_2", "ultrasound_3", "prenatal_screening_1")),
    )
}
KIND_BY_EVENT: dict[str, DocKind] = {event: k for k in KINDS.values() for event in k.event_kinds}


class IemkDocument(TimestampMixin, db.Model):
    """A document for ИЭМК made by one clinical event (an inpatient epicrisis: one per department)."""

    __tablename__ = "iemk_document"
    __table_args__ = (
        UniqueConstraint("event_id", "part"),
        Index("ix_iemk_document_mo_date", "mo_id", "event_at", "id"),
        Index("ix_iemk_document_date", "event_at", "id"),
        Index("ix_iemk_document_mo_status", "mo_id", "status", "event_at"),
        Index("ix_iemk_document_patient", "patient_id", "event_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))  # KINDS
    event_id: Mapped[int] = mapped_column(ForeignKey("clinical_event.id"))
    part: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # department id of an epicrisis
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    doctor_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    event_at: Mapped[datetime] = mapped_column(DateTime)
    local_uid: Mapped[str] = mapped_column(String(36), unique=True)  # IdDocumentMis / localUid
    status: Mapped[str] = mapped_column(String(16), default=UNSIGNED)
    status_text: Mapped[str | None] = mapped_column(Text)  # why not signed, or ИЭМК's error
    queued: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")  # a work item is open
    xml: Mapped[str | None] = mapped_column(Text)  # the CDA document as signed
    built_at: Mapped[datetime | None] = mapped_column(DateTime)
    signature: Mapped[str | None] = mapped_column(Text)  # base64 CMS detached signature of `xml`
    signer: Mapped[str | None] = mapped_column(String(255))  # who signed, as shown
    signed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    signed_at: Mapped[datetime | None] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime)
    emdr_id: Mapped[str | None] = mapped_column(String(64))  # ИЭМК's registration number
    last_message: Mapped[str | None] = mapped_column(Text)
    last_message_at: Mapped[datetime | None] = mapped_column(DateTime)

    event: Mapped[ClinicalEvent] = relationship()
    mo: Mapped[Mo] = relationship()
    patient: Mapped[Patient] = relationship()
    department: Mapped[Department | None] = relationship()
    doctor: Mapped[Staff | None] = relationship()

    @property
    def doc_kind(self) -> DocKind:
        return KINDS[self.kind]

    @property
    def title(self) -> str:
        return self.doc_kind.title

    @property
    def status_label(self) -> str:
        label = STATUSES.get(self.status, self.status)
        if self.status == ERROR and self.status_text:
            return f"{label}: {self.status_text}"
        return label

    @property
    def colour(self) -> str:
        return STATUS_COLOURS.get(self.status, "black")

    @property
    def in_flight(self) -> bool:
        """The status cell refreshes itself: queued for sending, or sent and not answered."""
        return self.status == SENT or (self.status == SIGNED and self.queued)


class VisitReport(TimestampMixin, db.Model):
    """A visit report the source MIS signed as PDF (the seed's «емиас»); with `to_iemk` it is
    attached to the visit's Амбулаторный эпикриз (seed 2.2: PDF only, .zip is not accepted)."""

    __tablename__ = "visit_report"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("clinical_event.id"), index=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    file_name: Mapped[str] = mapped_column(String(255))
    content: Mapped[bytes] = mapped_column(LargeBinary)  # the PDF
    signature: Mapped[bytes | None] = mapped_column(LargeBinary)  # detached CMS of the PDF, as signed
    signed_by: Mapped[str | None] = mapped_column(String(255))
    signed_at: Mapped[datetime | None] = mapped_column(DateTime)
    to_iemk: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")

    event: Mapped[ClinicalEvent] = relationship()


class IemkCase(db.Model):
    """A case (CaseAmb / CaseStat) opened in ИЭМК with CreateCase, so it is opened once."""

    __tablename__ = "iemk_case"
    __table_args__ = (UniqueConstraint("mo_id", "case_mis_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    case_mis_id: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
