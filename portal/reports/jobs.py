"""Job «Формирование отчётов»: render the PDF reports users queued (thin)."""

from __future__ import annotations

from jobs.scheduler import register_job
from portal.reports.background import run_queued


def build_reports() -> str:
    return run_queued()


register_job(
    "reports",
    "Формирование отчётов",
    build_reports,
    interval_seconds=5,
    interval_config="JOB_REPORTS_SECONDS",
)
