"""ВИМИС views: the callback service ВИМИС calls, the XML of each version, the registry."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from lxml import etree

from portal import crypto
from portal.auth.access import requires
from portal.auth.scoping import get_scoped, mo_choices
from portal.clinical.models import CARE_CONDITIONS, EVENT_KINDS
from portal.extensions import csrf, db
from portal.vimis import api as _api  # noqa: F401  (registers GET /api/v1/events/<id>/semd)
from portal.vimis import bp, registry, services
from portal.vimis import triggers as _triggers  # noqa: F401  (registers the intake hook)
from portal.vimis.models import IN_FLIGHT, STATUS_COLOURS, STATUSES, Semd, SemdVersion
from portal.vimis.semd_types import SEMD_TYPES, TRIGGER_POINTS

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
CALLBACK_NS = "http://callback.mis.vimis.rosminzdrav.ru/"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def _soap(body: str, status: int = 200) -> Response:
    envelope = (
        f'<?xml version="1.0" encoding="UTF-8"?><S:Envelope xmlns:S="{SOAP_ENV}">'
        f"<S:Body>{body}</S:Body></S:Envelope>"
    )
    return Response(envelope, status=status, content_type="text/xml; charset=utf-8")


def _fault(code: str, message: str) -> Response:
    from xml.sax.saxutils import escape

    return _soap(
        f"<S:Fault><faultcode>S:{code}</faultcode><faultstring>{escape(message)}</faultstring></S:Fault>", 500
    )


def _child(element: etree._Element, name: str) -> str | None:
    for child in element:
        if isinstance(child.tag, str) and etree.QName(child).localname == name:
            return (child.text or "").strip()
    return None


@bp.post("/callback")
@csrf.exempt
def callback() -> Response:
    """The МИС callback service of callback.wsdl: sendResult and sendInterimMsg (V-11)."""
    raw = request.get_data()
    try:
        envelope = etree.fromstring(raw, _PARSER)
    except etree.XMLSyntaxError as error:
        return _fault("Client", f"Некорректный XML: {error}")
    try:  # ИПС signs what it sends; an unsigned or altered callback changes nothing
        crypto.verify_envelope(envelope)
    except crypto.SignatureError as error:
        return _fault("Client", str(error))
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    operation = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
    if operation is None:
        return _fault("Client", "В SOAP-сообщении нет тела")
    name = etree.QName(operation).localname
    msg_id = _child(operation, "msg_id")
    if not msg_id:
        return _fault("Client", "Не указан msg_id")
    text = raw.decode("utf-8", errors="replace")
    try:
        if name == "sendResult":
            status = _child(operation, "status")
            if status not in ("0", "1"):
                return _fault("Client", f"Недопустимый статус результата: {status}")
            services.apply_callback_result(msg_id, int(status), _child(operation, "description") or "", text)
        elif name == "sendInterimMsg":
            services.apply_interim_message(msg_id, _child(operation, "description") or "", text)
        else:
            return _fault("Client", f"Неизвестная операция: {name}")
    except services.CallbackError as error:
        db.session.rollback()
        return _fault("Client", str(error))
    db.session.commit()
    return _soap(f'<{name}Response xmlns="{CALLBACK_NS}"/>')


@bp.get("/semd/<int:semd_id>/versions/<int:number>.xml")
@requires("vimis.view")
def version_xml(semd_id: int, number: int) -> Response:
    semd = get_scoped(Semd, semd_id)
    version = db.session.scalars(
        db.select(SemdVersion).where(SemdVersion.semd_id == semd.id, SemdVersion.number == number)
    ).first()
    if version is None or not version.xml:
        abort(404, description=f"Версия {number} СЭМД ещё не сформирована.")
    filename = f"semd-{semd.id}-v{number}.xml"
    return Response(
        version.xml,
        content_type="application/xml; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# --- «Реестр СЭМД ВИМИС АКИНЕО» (V-6 … V-10) ---------------------------------------------------
# One URL serves the page and its fragments; every fragment checks the capability and the МО
# itself (get_scoped), because any of them may be requested directly.


def _semd_base() -> str:
    """«/vimis/semd/»: rows append the id themselves instead of calling url_for four times each."""
    return url_for("vimis.semd_card", semd_id=0)[:-1]


def _registry_context(
    filters: registry.RegistryFilters,
    before=None,
    message: str | None = None,
    level: str = "success",
    legend: bool = False,
    rows_only: bool = False,
) -> dict:
    """What the page and its fragments show. The legend is counted here when that is cheap (one
    МО, index-only filters) or asked for (`legend`); otherwise the page loads it as a fragment."""
    context = {
        "filters": filters,
        "page": registry.registry_page(filters, current_user, before, current_app.config["PAGE_SIZE"]),
        "event_kinds": EVENT_KINDS,
        "care_conditions": CARE_CONDITIONS,
        "show_mo": filters.mo_id is None,
        "can_send": current_user.can("vimis.send"),
        "in_flight": IN_FLIGHT,
        "semd_base": _semd_base(),
    }
    if rows_only:
        return context
    counts = None
    if legend or filters.cheap_legend:
        counts = registry.status_counts(filters, current_user)
    return {
        **context,
        "counts": counts,
        "doctors": registry.doctor_choices(filters),
        "mos": mo_choices(),
        "message": message,
        "level": level,
        "statuses": STATUSES,
        "colours": STATUS_COLOURS,
        "kinds": registry.TRIGGER_EVENT_KINDS,
        "semd_types": SEMD_TYPES,
    }


def _filters(args) -> registry.RegistryFilters:
    try:
        return registry.RegistryFilters.parse(args, current_user)
    except registry.FilterError as error:
        abort(error.status, description=error.message)


@bp.get("/", endpoint="registry")
@requires("vimis.view")
def registry_view():
    """The registry page; for htmx the results (filters changed) or the next rows («Показать ещё»)."""
    filters = _filters(request.args)
    try:
        before = registry.parse_cursor(request.args.get("after"))
    except registry.FilterError as error:
        abort(400, description=error.message)
    target = request.headers.get("HX-Target") if request.headers.get("HX-Request") else None
    if target == "more" or (target == "results" and before is not None):
        return render_template("vimis/_rows.html", **_registry_context(filters, before, rows_only=True))
    context = _registry_context(filters, before, legend=request.args.get("legend") == "1")
    if target == "results":
        return render_template("vimis/_results.html", oob_doctors=current_user.is_central, **context)
    return render_template("vimis/registry.html", **context)


@bp.get("/legend")
@requires("vimis.view")
def legend():
    """The legend's counts under the current filters, loaded by the page after itself."""
    filters = _filters(request.args)
    return render_template(
        "vimis/_legend.html",
        filters=filters,
        counts=registry.status_counts(filters, current_user),
        statuses=STATUSES,
        colours=STATUS_COLOURS,
        can_send=current_user.can("vimis.send"),
    )


def _row_context(record: Semd, **extra) -> dict:
    """Context of one SEMD's fragments; `semd=RegistryRow.of(record)` for the row's own parts."""
    return {
        "semd": record,
        "mass": False,
        "statuses": STATUSES,
        "event_kinds": EVENT_KINDS,
        "care_conditions": CARE_CONDITIONS,
        "show_mo": False,
        "can_send": current_user.can("vimis.send"),
        "in_flight": IN_FLIGHT,
        "semd_base": _semd_base(),
        **extra,
    }


@bp.get("/semd/<int:semd_id>")
@requires("vimis.view")
def semd_card(semd_id: int):
    """The SEMD with its journal: the «+» without JavaScript, and a printable page."""
    semd = get_scoped(Semd, semd_id)
    semd_type = SEMD_TYPES.get(semd.semd_type)
    return render_template(
        "vimis/semd.html",
        journal=registry.semd_journal(semd),
        semd_title=semd_type.title if semd_type else "",
        semd_type=semd_type,
        trigger_points=TRIGGER_POINTS,
        **_row_context(semd),
    )


@bp.get("/semd/<int:semd_id>/journal")
@requires("vimis.view")
def semd_journal(semd_id: int):
    """«+»: the SEMD's journal as a table row under its row."""
    semd = get_scoped(Semd, semd_id)
    return render_template(
        "vimis/_journal_row.html", journal=registry.semd_journal(semd), colspan=15, **_row_context(semd)
    )


@bp.get("/semd/<int:semd_id>/status")
@requires("vimis.view")
def semd_status(semd_id: int):
    """The Статус cell; it polls while the SEMD is on its way and stops at a final status."""
    semd = get_scoped(Semd, semd_id)
    return render_template(
        "vimis/_status_cell.html", **_row_context(semd, semd=registry.RegistryRow.of(semd))
    )


def _back_to_registry() -> str:
    """Without htmx: back to the registry (or SEMD) page the form came from, same host only."""
    home = url_for("vimis.registry")
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc == request.host and referrer.path.startswith(home):
        return f"{referrer.path}?{referrer.query}" if referrer.query else referrer.path
    return home


@bp.post("/semd/<int:semd_id>/send")
@requires("vimis.send")
def semd_send(semd_id: int):
    """Pencil (V-9, V-12): release the SEMD for sending; the row comes back yellow."""
    semd = get_scoped(Semd, semd_id)
    result = services.release([semd], current_user)
    db.session.commit()
    refusal = result.refused.get(semd.id)
    if request.headers.get("HX-Request"):
        return render_template(
            "vimis/_row.html",
            row_error=f"Не отправлено: {refusal}" if refusal else None,
            **_row_context(semd, semd=registry.RegistryRow.of(semd)),
        )
    if refusal:
        flash(f"{semd.label} не отправлен: {refusal}", "error")
    else:
        flash(f"{semd.label} поставлен в очередь на отправку в ВИМИС (версия {semd.send_number})", "success")
    return redirect(_back_to_registry())


BULK_ACTIONS = {
    "send": (services.release, "Поставлено в очередь на отправку в ВИМИС"),
    "cancel": (services.cancel, "Отменена отправка в ВИМИС"),
}
BULK_LIMIT = 1000


@bp.post("/bulk")
@requires("vimis.send")
def bulk():
    """«Отправить / Отменить отправку выделенных в ВИМИС» (V-10): summary, then the refreshed list."""
    filters = _filters(request.form)
    action = request.form.get("action")
    if action not in BULK_ACTIONS:
        abort(400, description="Неизвестное действие: ожидается отправка или отмена отправки.")
    raw_ids = request.form.getlist("ids")
    if len(raw_ids) > BULK_LIMIT:
        abort(400, description=f"За один раз можно обработать не более {BULK_LIMIT} СЭМД.")
    try:
        ids = [registry.parse_id(v, "Некорректный список СЭМД.") for v in raw_ids]
    except registry.FilterError as error:
        abort(400, description=error.message)
    if not ids:
        message, level = "Не выделено ни одного СЭМД.", "warning"
    else:
        try:
            semds = registry.load_scoped(ids, current_user)
        except registry.FilterError as error:
            abort(error.status, description=error.message)
        operation, verb = BULK_ACTIONS[action]
        result = operation(semds, current_user)
        db.session.commit()
        message, level = result.summary(verb), "warning" if result.refused else "success"
    if request.headers.get("HX-Request"):
        return render_template(
            "vimis/_results.html",
            oob_doctors=False,
            **_registry_context(filters, message=message, level=level),
        )
    flash(message, level)
    return redirect(url_for("vimis.registry", **filters.query_args()))
