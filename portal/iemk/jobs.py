"""ИЭМК job «Выгрузка документов в ИЭМК» (I-8): collect, upload, ask for late answers (thin)."""

from __future__ import annotations

from jobs.scheduler import register_job
from portal.exchange.delivery import poll_due, send_due
from portal.extensions import db
from portal.iemk.channel import CHANNEL
from portal.iemk.documents import collect


def upload(mo_id: int | None = None) -> str:
    """Signed documents of МО with the integration on are queued, then every queued document goes."""
    collected = collect(mo_id)
    db.session.commit()
    sent = send_due(CHANNEL, mo_id=mo_id)
    asked = poll_due(CHANNEL, mo_id=mo_id)
    return f"поставлено в очередь: {collected}, передано: {sent}, запрошено ответов: {asked}"


register_job(
    "iemk_upload",
    "Выгрузка документов в ИЭМК",
    upload,
    interval_seconds=30,
    interval_config="JOB_IEMK_UPLOAD_SECONDS",
    interval_setting="iemk.upload_interval",
)
