"""«Журнал работы сервисов» (T-11): services, the runs of one, the detailed log of a run.

One URL serves the page and its fragments; the selected service, run and filters live in the
query string (?service=…&run=…&status=…&empty=1). Thin views: capability check, scoping in
the services module (another МО's run is 404), one template.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import requires
from portal.exchange.models import RUN_RESULTS
from portal.extensions import db
from portal.journal import bp
from portal.journal import services as svc
from portal.models_base import utcnow
from portal.reports import render_pdf


@bp.app_template_filter("journal_dt")
def _journal_dt(value: datetime | None) -> str:
    return value.strftime("%d.%m.%Y %H:%M:%S") if value else ""


@bp.app_template_filter("packet_lines")
def _packet_lines(text: str | None) -> svc.PacketData:
    return svc.packet_lines(text)


@dataclass(frozen=True)
class JournalView:
    """What the URL selects; `args` gives the query of a link that changes part of it."""

    service: str | None = None
    run_id: int | None = None
    status: str = ""
    show_empty: bool = False

    def args(self, **changes: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "service": self.service,
            "run": self.run_id,
            "status": self.status,
            "empty": "1" if self.show_empty else None,
        }
        values.update(changes)
        return {key: value for key, value in values.items() if value not in (None, "")}


def _int_arg(name: str, source: Any = None) -> int | None:
    raw = (source if source is not None else request.args).get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        abort(400, description=f"Параметр «{name}» должен быть числом.")


def _view_from(source: Any) -> JournalView:
    status = source.get("status") or ""
    if status and status not in RUN_RESULTS:
        abort(400, description=f"Неизвестный результат запуска «{status}».")
    # The checkbox «Скрыть запуски без пакетов» follows a hidden empty=1: the last value wins.
    empty = source.getlist("empty")
    return JournalView(
        source.get("service") or None, _int_arg("run", source), status, bool(empty) and empty[-1] == "1"
    )


def _selected_run(view: JournalView) -> tuple[JournalView, svc.RunRow | None]:
    """The run of ?run=: 404 when absent or of another МО; it also selects its service."""
    if view.run_id is None:
        return view, None
    row = svc.get_run(view.run_id, current_user)
    if row is None:
        abort(404, description="Запуск не найден.")
    return replace(view, service=row.run.service), row


def _detail_context(row: svc.RunRow | None) -> dict[str, Any]:
    after = _int_arg("entries_after")
    entries = svc.run_entries(row.run, current_user, after=after) if row else svc.Page([], None)
    show_entry_mo = current_user.is_central and row is not None and row.run.mo_id is None
    return {
        "detail": row,
        "entries": entries,
        "show_entry_mo": show_entry_mo,
        "entry_columns": 9 if show_entry_mo else 8,
        "entry_mo_names": svc.mo_names({e.mo_id for e in entries.rows}) if show_entry_mo else {},
        "detail_user_name": svc.user_names({row.run.user_id}).get(row.run.user_id)
        if row and row.run.manual
        else None,
    }


def _runs_context(view: JournalView) -> dict[str, Any]:
    try:
        runs = (
            svc.run_log(
                current_user,
                view.service,
                status=view.status or None,
                show_empty=view.show_empty,
                after=request.args.get("after"),
                limit=current_app.config["PAGE_SIZE"],
            )
            if view.service
            else svc.Page([], None)
        )
    except ValueError:
        abort(400, description="Некорректный параметр страницы.")
    return {"runs": runs, **_run_names(runs.rows)}


def _run_names(rows: list[svc.RunRow]) -> dict[str, Any]:
    return {
        "run_mo_names": svc.mo_names({r.run.mo_id for r in rows}),
        "run_user_names": svc.user_names({r.run.user_id for r in rows if r.run.manual}),
    }


def _toolbar_context(view: JournalView, job: Any) -> dict[str, Any]:
    may_run = bool(job) and current_user.can("journal.run")
    next_run_at = svc.next_manual_run_at(job.name, svc.run_scope(current_user))[1] if may_run else None
    return {"may_run": may_run, "next_run_at": next_run_at}


def _fragment_target() -> str | None:
    if request.headers.get("HX-Request") and not request.headers.get("HX-Boosted"):
        return request.headers.get("HX-Target")
    return None


@bp.get("/")
@requires("journal.view")
def services():
    view, selected = _selected_run(_view_from(request.args))
    target = _fragment_target() or ""
    common = {"view": view, "results": RUN_RESULTS, "state_label": svc.state_label}

    if target.startswith("run-"):  # a running row polling itself
        row = svc.get_run(_int_arg("row") or 0, current_user)
        if row is None:
            abort(404, description="Запуск не найден.")
        return render_template("journal/_run_row.html", r=row, **_run_names([row]), **common)

    summaries = svc.service_list(current_user)
    if view.service is None and summaries:
        view = replace(view, service=summaries[0].name)
        common["view"] = view
    job = svc.get_job(view.service, current_user)
    if job is None and selected is None and view.service is not None:
        abort(404, description=f"Сервис «{view.service}» не найден.")
    common["job"] = job
    common["service_title"] = job.title_ru if job else view.service

    if target == "more-runs":
        return render_template("journal/_run_rows.html", **_runs_context(view), **common)
    if target == "more-entries":
        return render_template("journal/_entry_rows.html", **_detail_context(selected), **common)
    if target == "journal-detail":
        return render_template(
            "journal/_detail.html",
            oob=True,
            **_detail_context(selected),
            **_toolbar_context(view, job),
            **common,
        )
    names = [s.name for s in summaries]
    context = {
        **common,
        **_runs_context(view),
        **_detail_context(selected),
        **_toolbar_context(view, job),
        "services": summaries,
        "position": names.index(view.service) + 1 if view.service in names else 0,
    }
    template = "journal/_journal.html" if target == "journal" else "journal/services.html"
    return render_template(template, **context)


@bp.post("/run")
@requires("journal.run")
def run():
    """«Запуск»: start the service now; the page comes back at once with the run «Выполняется»."""
    name = request.form.get("service", "")
    back = _view_from(request.form)
    try:
        started = svc.start_manual_run(
            name, current_user._get_current_object(), wait=bool(current_app.config.get("JOURNAL_RUN_WAIT"))
        )
    except svc.JournalError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for("journal.services", **back.args(run=None)), 303)
    flash(f"Сервис «{started.job.title_ru}» запущен.", "success")
    return redirect(url_for("journal.services", **back.args(service=name, run=started.run_id)), 303)


@bp.get("/print")
@requires("journal.view")
def print_report():
    """«Печать»: what=run — the selected run with its detailed log; what=list — the run log as filtered."""
    view, selected = _selected_run(_view_from(request.args))
    what = request.args.get("what")
    stamp = utcnow()
    if what == "run" and selected is not None:
        job = svc.get_job(selected.run.service, current_user)
        title = job.title_ru if job else selected.run.service
        entries = svc.run_entries(selected.run, current_user, limit=svc.PRINT_LIMIT)
        show_entry_mo = current_user.is_central and selected.run.mo_id is None
        return render_pdf(
            "reports/journal_run.html",
            title=f"Запуск сервиса «{title}» от {selected.run.started_at:%d.%m.%Y %H:%M:%S}",
            filename=f"Журнал работы сервисов {selected.run.service} запуск {selected.run.id}.pdf",
            service_title=title,
            r=selected,
            entries=entries,
            state_label=svc.state_label,
            show_entry_mo=show_entry_mo,
            entry_mo_names=svc.mo_names({e.mo_id for e in entries.rows} | {selected.run.mo_id}),
            run_user_names=svc.user_names({selected.run.user_id}),
        )
    if what == "list" and view.service:
        job = svc.get_job(view.service, current_user)
        if job is None:
            abort(404, description=f"Сервис «{view.service}» не найден.")
        runs = svc.run_log(
            current_user,
            job.name,
            status=view.status or None,
            show_empty=view.show_empty,
            limit=svc.PRINT_LIMIT,
        )
        return render_pdf(
            "reports/journal_runs.html",
            title=f"Лог запусков сервиса «{job.title_ru}»",
            filename=f"Журнал работы сервисов {job.name} {stamp:%Y-%m-%d}.pdf",
            view=view,
            results=RUN_RESULTS,
            runs=runs,
            limit=svc.PRINT_LIMIT,
            **_run_names(runs.rows),
        )
    return redirect(url_for("journal.services", **view.args()), 303)
