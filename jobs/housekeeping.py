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


# Service runs: every job run is recorded (T-11), so scheduled runs that found nothing to do
# would bury the ones that did. They are kept for a week; runs with packets stay.
EMPTY_RUNS_KEEP_DAYS = 7
# A run still «Выполняется» this long after its start died with its process.
STALE_RUN_HOURS = 6


def tidy_service_runs(now: datetime | None = None) -> str:
    from portal.exchange.models import RUN_OK, JournalEntry, ServiceRun
    from portal.exchange.runs import close_interrupted_runs

    now = now or utcnow()
    stale = close_interrupted_runs("Запуск прерван: процесс остановился, не завершив работу",
                                   started_before=now - timedelta(hours=STALE_RUN_HOURS), include_manual=True)
    has_entries = db.select(JournalEntry.id).where(JournalEntry.run_id == ServiceRun.id).exists()
    deleted = db.session.execute(
        db.delete(ServiceRun).where(
            ServiceRun.result == RUN_OK, ServiceRun.total == 0, ServiceRun.manual.is_(False),
            ServiceRun.started_at < now - timedelta(days=EMPTY_RUNS_KEEP_DAYS), ~has_entries,
        )
    ).rowcount or 0
    return f"прерванных запусков отмечено: {stale}, пустых запусков удалено: {deleted}"


register_job("tidy_service_runs", "Очистка журнала работы сервисов", tidy_service_runs, interval_seconds=3600,
             interval_config="JOB_TIDY_SERVICE_RUNS_SECONDS")
