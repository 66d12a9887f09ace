"""Housekeeping jobs: keep the portal's own tables from growing without bound."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app

from jobs.scheduler import register_job
from portal.auth.models import LoginFailure
from portal.extensions import db
from portal.models_base import utcnow


def purge_login_failures(older_than: datetime) -> int:
    """Delete failed-login rows older than the cut-off; they no longer count for throttling."""
    result = db.session.execute(db.delete(LoginFailure).where(LoginFailure.at < older_than))
    return result.rowcount or 0


def cleanup_login_failures() -> str:
    window = current_app.config["LOGIN_WINDOW_SECONDS"]
    deleted = purge_login_failures(utcnow() - timedelta(seconds=window))
    return f"удалено записей: {deleted}"


register_job(
    "cleanup_login_failures",
    "Очистка журнала неудачных входов",
    cleanup_login_failures,
    interval_seconds=3600,
    interval_config="JOB_CLEANUP_LOGIN_FAILURES_SECONDS",
)
