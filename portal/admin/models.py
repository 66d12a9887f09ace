from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, DateTime, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.clinical.models import Mo
from portal.extensions import db
from portal.models_base import TimestampMixin, utcnow


class MoIntegration(db.Model):
    """Per-МО switch of one integration procedure (X-4); a missing row means switched off."""

    __tablename__ = "mo_integration"
    __table_args__ = (UniqueConstraint("mo_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"), index=True)
    key: Mapped[str] = mapped_column(String(40))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    reason: Mapped[str | None] = mapped_column(String(300))


class Setting(db.Model):
    """A region-wide setting, or its override for one МО (mo_id set)."""

    __tablename__ = "setting"
    __table_args__ = (UniqueConstraint("key", "mo_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(80))
    mo_id: Mapped[int | None] = mapped_column(ForeignKey("mo.id"))
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Certificate(TimestampMixin, db.Model):
    """A certificate the portal signs or encrypts with (МО, a user) or for (ФСС, ИЭМК)."""

    __tablename__ = "certificate"

    id: Mapped[int] = mapped_column(primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))  # key of CERTIFICATE_PURPOSES
    mo_id: Mapped[int | None] = mapped_column(ForeignKey("mo.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"), index=True)
    subject: Mapped[str] = mapped_column(String(500))
    issuer: Mapped[str | None] = mapped_column(String(500))
    serial: Mapped[str] = mapped_column(String(100))
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date] = mapped_column(Date)
    cert_pem: Mapped[str] = mapped_column(Text)
    key_pem: Mapped[str | None] = mapped_column(Text)  # secret: never rendered back

    mo: Mapped[Mo | None] = relationship()

    def days_left(self, today: date | None = None) -> int:
        return (self.valid_to - (today or date.today())).days


class AuditLog(db.Model):
    """Append-only record of every administrative change and sensitive edit."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_mo_at", "mo_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    login: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(80))
    object_type: Mapped[str | None] = mapped_column(String(40))
    object_id: Mapped[str | None] = mapped_column(String(64))
    mo_id: Mapped[int | None] = mapped_column(ForeignKey("mo.id"))
    summary: Mapped[str] = mapped_column(String(500))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
