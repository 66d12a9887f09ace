"""A report rendered in the background (SPEC E-14): who asked for what, how far the rendering
has come and where the PDF is, so a page can show progress and hand over the file later."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models_base import TimestampMixin

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"

STATUSES: dict[str, str] = {
    QUEUED: "В очереди",
    RUNNING: "Формируется",
    DONE: "Готов",
    FAILED: "Ошибка",
}


class ReportRun(TimestampMixin, db.Model):
    """One request for a report as a file: parameters, progress (done of total rows), the file."""

    __tablename__ = "report_run"
    __table_args__ = (Index("ix_report_run_user", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))  # which report: "ers_requests" …
    title: Mapped[str] = mapped_column(String(255))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    mo_id: Mapped[int | None] = mapped_column(ForeignKey("mo.id"))
    status: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    done: Mapped[int] = mapped_column(Integer, default=0)  # rows rendered so far
    total: Mapped[int] = mapped_column(Integer, default=0)  # rows to render (known once counted)
    pages: Mapped[int | None] = mapped_column(Integer)
    file_path: Mapped[str | None] = mapped_column(String(500))
    size: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    @property
    def status_label(self) -> str:
        return STATUSES.get(self.status, self.status)

    @property
    def percent(self) -> int:
        if self.status == DONE:
            return 100
        return int(100 * self.done / self.total) if self.total else 0
