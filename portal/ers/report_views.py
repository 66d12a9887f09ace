"""«Отчёт запросов на сервер ФСС» (SPEC E-14): the report page, its PDF rendered in the background.

`GET /ers/report` serves the page and, for htmx (HX-Target «ers-report-results»), the table with
the period tree out of band. The filters live in the URL. «Печать / PDF» (`POST /ers/report/pdf`)
queues a ReportRun that the job «Формирование отчётов» renders in a child process; the progress
fragment polls itself until the file is ready. A run is seen by the user who asked for it, by
the users of its МО (it holds that МО's figures only) and by the central administrator; anyone
else gets 404, as if it did not exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import abort, redirect, render_template, request, send_file, url_for
from flask_login import current_user

from portal.auth.access import requires
from portal.auth.scoping import check_mo, mo_choices
from portal.ers import bp, report
from portal.extensions import db
from portal.filters import ROWS_PER_PAGE, FilterError
from portal.fragments import hx_target
from portal.reports import content_disposition
from portal.reports.models import DONE, FAILED, QUEUED, RUNNING, ReportRun

POLL_SECONDS = 1


def _filters(args) -> report.ReportFilters:
    try:
        filters = report.ReportFilters.parse(args, current_user)
    except FilterError as error:
        abort(error.status, description=error.message)
    if filters.mo_id is not None:
        check_mo(filters.mo_id)
    return filters


def _context(filters: report.ReportFilters) -> dict[str, Any]:
    return {
        "filters": filters,
        "page": report.report_page(filters, current_user),
        "tree": report.period_tree(filters, current_user),
        "counts": report.COUNTS,
        "sources": report.SOURCES,
        "groups": report.GROUPS,
        "grains": report.GRAINS,
        "per_page_choices": ROWS_PER_PAGE,
        "title": report.TITLE,
    }


@bp.get("/report", endpoint="report")
@requires("ers.view")
def report_page():
    """The page; for htmx the table (and the period tree out of band)."""
    filters = _filters(request.args)
    if hx_target() == "ers-report-results":
        return render_template("ers/_report_table.html", oob_tree=True, **_context(filters))
    return render_template("ers/report.html", mos=mo_choices(), **_context(filters))


def _visible_run(run_id: int) -> ReportRun:
    run = db.session.get(ReportRun, run_id)
    if run is None or run.kind != report.KIND:
        abort(404)
    mine = run.user_id is not None and run.user_id == current_user.id
    same_mo = run.mo_id is not None and run.mo_id == current_user.mo_id
    if not (current_user.is_central or mine or same_mo):
        abort(404)
    return run


def _run_fragment(run: ReportRun, status: int = 200):
    context = {
        "run": run,
        "polling": run.status in (QUEUED, RUNNING),
        "poll_seconds": POLL_SECONDS,
        "DONE": DONE,
        "FAILED": FAILED,
    }
    if hx_target():
        return render_template("ers/_report_run.html", **context), status
    return render_template("ers/report_run.html", **context), status


@bp.post("/report/pdf", endpoint="report_pdf")
@requires("ers.view")
def report_pdf():
    """«Печать / PDF»: queue the report as a file; the answer is its progress fragment."""
    filters = _filters(request.form)
    run = report.queue_pdf(filters, current_user)
    db.session.commit()
    if not hx_target():
        return redirect(url_for("ers.report_run", run_id=run.id), 303)
    return _run_fragment(run, 202)


@bp.get("/report/runs/<int:run_id>", endpoint="report_run")
@requires("ers.view")
def report_run(run_id: int):
    """Progress of a PDF: «Формируется: N из M строк», then «Открыть PDF» or the error."""
    return _run_fragment(_visible_run(run_id))


@bp.get("/report/runs/<int:run_id>/pdf", endpoint="report_file")
@requires("ers.view")
def report_file(run_id: int):
    """The finished PDF, shown inline."""
    run = _visible_run(run_id)
    path = Path(run.file_path) if run.file_path else None
    if run.status != DONE or path is None or not path.is_file():
        abort(404, description="Файл отчёта ещё не готов или уже удалён: сформируйте отчёт заново.")
    response = send_file(path, mimetype="application/pdf", max_age=0)
    response.headers["Content-Disposition"] = content_disposition(
        f"Отчёт запросов ФСС {run.created_at:%Y-%m-%d} № {run.id}.pdf"
    )
    response.headers["Cache-Control"] = "no-store"
    return response
