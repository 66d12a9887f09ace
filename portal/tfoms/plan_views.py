"""«Планы диспансеризации и профилактических медицинских осмотров» (seed 4.5.2): the plans of an
МО with their people, the export to ТФОМС (PROF zip) and the upload of its error answer.

One URL serves a page and its fragments (HX-Target says which); every fragment checks the
capability and the МО itself, because any of them may be requested directly.
"""

from __future__ import annotations

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import requires
from portal.auth.scoping import mo_choices, visible_mo_id
from portal.clinical.models import PLAN_KINDS, PLAN_PERSON_STATUSES
from portal.exchange.runs import recording
from portal.extensions import db
from portal.fragments import hx_target
from portal.tfoms import bp, plans
from portal.tfoms.files import max_upload_bytes


def _abort(error: plans.PlanError):
    abort(error.status, description=error.message)


def _filters(source=None) -> plans.PlanFilters:
    try:
        return plans.PlanFilters.parse(source or request.args, visible_mo_id(), current_user.is_central)
    except plans.PlanError as error:
        _abort(error)


def _results_context(filters: plans.PlanFilters) -> dict:
    rows, more = plans.plan_rows(filters, current_user)
    return {
        "filters": filters,
        "rows": rows,
        "more_plans": more,
        "statuses": PLAN_PERSON_STATUSES,
        "show_mo": filters.mo_id is None,
    }


def _exports_context(filters: plans.PlanFilters, before: int | None = None) -> dict:
    exports, cursor = plans.export_rows(filters.mo_id, current_user, before)
    return {
        "exports": exports,
        "exports_cursor": cursor,
        "filters": filters,
        "show_mo": filters.mo_id is None,
    }


def _page_context(filters: plans.PlanFilters, **extra) -> dict:
    return {
        **_results_context(filters),
        **_exports_context(filters),
        "years": plans.plan_years(filters, current_user),
        "kinds": PLAN_KINDS,
        "mos": mo_choices(),
        "max_upload": max_upload_bytes(),
        **extra,
    }


@bp.get("/plans", endpoint="plans")
@requires("tfoms.plans")
def plans_page():
    """The page; for htmx the plan list (filters changed) or the next exports («Показать ещё»)."""
    filters = _filters()
    target = hx_target()
    if target == "exports-more":
        try:
            before = plans.parse_after(request.args.get("before"))
        except plans.PlanError as error:
            _abort(error)
        return render_template("tfoms/_plan_export_rows.html", **_exports_context(filters, before))
    if target == "export-panel":  # «Закрыть» / «OK» of the export panel
        return ""
    if target == "plans-results":
        return render_template("tfoms/_plans_results.html", **_results_context(filters))
    return render_template("tfoms/plans.html", **_page_context(filters))


@bp.post("/plans/<int:plan_id>/send")
@requires("tfoms.plans")
def plan_send(plan_id: int):
    """«Отправить» (seed 4.4.5.2.1): a packet per person over RabbitMQ; the job sends them."""
    from portal.tfoms import packets

    try:
        plan = plans.get_plan(plan_id, current_user)
    except plans.PlanError as error:
        _abort(error)
    count = packets.send_plan(plan.id, current_user)
    db.session.commit()
    message = (
        f"В очередь отправки в ТФОМС поставлено сообщений: {count}. Статусы людей изменятся, "
        "когда ТФОМС ответит."
        if count
        else "Нет людей со статусом «Новые» или «Ошибка»."
    )
    if not hx_target():
        flash(message, "success" if count else "warning")
        return redirect(url_for("tfoms.plan_people", plan_id=plan.id))
    return plan_people(plan.id, sent_message=message)


@bp.get("/plans/<int:plan_id>/people")
@requires("tfoms.plans")
def plan_people(plan_id: int, sent_message: str | None = None):
    """The people of a plan: a row under the plan (htmx), the next rows, or a page of its own."""
    try:
        plan = plans.get_plan(plan_id, current_user)
        status = plans.parse_status(request.args.get("status"))
        after = plans.parse_after(request.args.get("after"))
    except plans.PlanError as error:
        _abort(error)
    people, cursor = plans.plan_people(plan, status, after)
    context = {
        "plan": plan,
        "people": people,
        "cursor": cursor,
        "status": status,
        "statuses": PLAN_PERSON_STATUSES,
        "counts": plans.status_counts(plan),
        "colspan": 11,
        "sent_message": sent_message,
    }
    target = hx_target()
    if target == f"people-more-{plan.id}":
        return render_template("tfoms/_plan_people_rows.html", **context)
    if target:
        return render_template("tfoms/_plan_people.html", **context)
    return render_template("tfoms/plan_people.html", **context)


def _export_form_context(selected: list, values: dict, errors: dict, message: str | None) -> dict:
    ids = [p.id for p in selected]
    return {
        "selected": selected,
        "type_label": plans.type_label(selected),
        "period_label": plans.period_label(selected),
        "insurers": plans.insurer_choices(ids),
        "months": plans.MONTHS,
        "load_quarters": plans.LOAD_QUARTERS,
        "fields": values,
        "errors": errors,
        "message": message,
    }


def _render_export(filters: plans.PlanFilters, panel: dict, status: int = 200, oob: bool = False):
    """The export panel alone for htmx (with the refreshed lists after an export), else the page."""
    if hx_target():
        context = {"panel": panel, "filters": filters}
        if oob:
            context.update(_results_context(filters))
            context.update(_exports_context(filters))
        return render_template("tfoms/_export_panel.html", oob=oob, **context)
    return render_template("tfoms/plans.html", **_page_context(filters, panel=panel)), status


@bp.route("/plans/export", methods=["GET", "POST"])
@requires("tfoms.plans")
def plans_export():
    """«Экспорт» opens the form for the selected plans; «Сформировать» makes the files (T-10)."""
    source = request.form if request.method == "POST" else request.args
    filters = _filters(source)
    try:
        selected = plans.load_plans(plans.parse_plan_ids(source.getlist("plan")), current_user)
    except plans.PlanError as error:
        if error.status != 422:
            _abort(error)
        return _render_export(filters, {"refusal": error.message}, 422 if request.method == "POST" else 200)
    mo = selected[0].mo
    if request.method == "GET":
        return _render_export(filters, _export_form_context(selected, plans.form_defaults(), {}, None))
    submitted = {
        "report_month": request.form.get("report_month", ""),
        "report_year": request.form.get("report_year", ""),
        "load_quarter": request.form.get("load_quarter", ""),
        "packet": request.form.get("packet", ""),
        "smo": request.form.getlist("smo"),
    }
    choices = plans.insurer_choices([p.id for p in selected])
    values, errors = plans.validate_export(request.form, choices)
    if values is None:
        return _render_export(
            filters, _export_form_context(selected, submitted, errors, plans.FORM_INVALID), 422
        )
    taken = plans.packet_taken(mo.id, values.year, values.month, values.packet)
    if taken is not None:
        message = plans.packet_taken_message(taken)
        return _render_export(
            filters, _export_form_context(selected, submitted, {"packet": message}, message), 422
        )
    refusal = plans.export_refusal(mo)
    if refusal:
        return _render_export(filters, _export_form_context(selected, submitted, {}, refusal), 422)
    with recording(plans.SERVICE, mo_id=mo.id, manual=True, user_id=current_user.id):
        outcome = plans.export_plans(mo, selected, values, current_user)
    if outcome.packet_error:
        errors = {"packet": outcome.packet_error}
        return _render_export(
            filters, _export_form_context(selected, submitted, errors, outcome.packet_error), 422
        )
    panel = {"outcome": outcome, "done": plans.EXPORT_DONE}
    return _render_export(filters, panel, 200 if outcome.ok else 422, oob=True)


@bp.get("/plans/exports/<int:export_id>/download")
@requires("tfoms.plans")
def plan_export_download(export_id: int):
    """«Скачать и сохранить архив экспорта»: the zip as it was made."""
    try:
        export = plans.get_export(export_id, current_user)
    except plans.PlanError as error:
        _abort(error)
    return Response(
        export.content,
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{export.file_name}.zip"'},
    )


@bp.post("/plans/answers", endpoint="plans_answer")
@requires("tfoms.plans")
def plans_answer():
    """«Загрузить протокол ошибок»: an OSHIB_PR answer (.xml or .zip) to one of the exports."""
    filters = _filters(request.form)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        result = plans.ImportResult(False, "Выберите файл протокола ошибок (.xml или .zip).")
    else:
        limit = max_upload_bytes()
        data = upload.read(limit + 1)
        with recording(plans.SERVICE, mo_id=visible_mo_id(), manual=True, user_id=current_user.id):
            result = plans.import_error_file(upload.filename, data, current_user)
    if hx_target():
        context = {"result": result, "filters": filters}
        if result.ok:
            context.update(_results_context(filters))
            context.update(_exports_context(filters))
        return render_template("tfoms/_plan_upload_result.html", oob=result.ok, **context)
    flash(
        result.message,
        "success" if result.ok and not result.problems else "warning" if result.ok else "error",
    )
    return redirect(url_for("tfoms.plans", **filters.query_args()), 303)
