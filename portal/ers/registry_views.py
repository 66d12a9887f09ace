"""«Реестр запросов» (SPEC E-13): every request to ФСС and its answer — Дата, IP, Информация,
Запрос, Метод, Статус — with search, and the arrow that opens a request under its row.

One URL serves the page and, for htmx (HX-Target «ers-registry»), the table alone; the same
fragment is the patient card's «Реестр запросов» block (`patient=<id>`). The status cell of a
request on its way asks for itself every few seconds (the database, never ФСС) and stops at a
final status. Every view checks the capability and the МО: another МО's request is 404.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Response, abort, current_app, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import requires
from portal.auth.scoping import mo_choices
from portal.ers import bp, registry
from portal.ers import models as m
from portal.fragments import hx_target
from portal.reports import content_disposition
from portal.xmlview import readable_xml

POLL_SECONDS = 5  # an in-flight status cell asks for itself this often
TARGET = "ers-registry"
MORE_TARGET = "ers-registry-more"
XML_KINDS = {"request": "запрос", "answer": "ответ"}


def _user() -> Any:
    return current_user._get_current_object()


def _filters() -> registry.RequestFilters:
    try:
        return registry.RequestFilters.parse(request.args, _user())
    except registry.FilterError as error:
        abort(error.status, description=error.message)


def _row_context() -> dict[str, Any]:
    return {
        "methods": m.METHODS,
        "statuses": m.STATUSES,
        "in_flight": m.IN_FLIGHT,
        "poll_seconds": POLL_SECONDS,
    }


def _from_registry_page() -> bool:
    current = urlsplit(request.headers.get("HX-Current-URL") or "")
    return current.path == url_for("ers.registry")


@bp.get("/requests", endpoint="registry")
@requires("ers.view")
def registry_page():
    """The page; for htmx the table (filters, the patient card's block) or the next rows."""
    filters = _filters()
    try:
        after = registry.parse_cursor(request.args.get("after"))
    except registry.FilterError as error:
        abort(400, description=error.message)
    patient = registry.get_patient(filters.patient_id, _user()) if filters.patient_id else None
    page = registry.request_page(filters, _user(), after, current_app.config["PAGE_SIZE"])
    context = {
        **_row_context(),
        "filters": filters,
        "page": page,
        "patient": patient,
        "show_mo": filters.mo_id is None and patient is None,
        "show_patient": patient is None,
    }
    target = hx_target()
    if target == MORE_TARGET or (target == TARGET and after is not None):
        return render_template("ers/_registry_rows.html", **context)
    if target == TARGET:
        # the patient card's block brings its own search field; the registry page has its filters
        embedded = patient is not None and not _from_registry_page()
        return render_template("ers/_registry.html", embedded=embedded, **context)
    return render_template("ers/registry.html", mos=mo_choices(), embedded=False, **context)


def _detail_context(found: m.ErsRequest) -> dict[str, Any]:
    full = request.args.get("full") == "1"
    return {
        **_row_context(),
        "req": found,
        "sender": registry.sender(found),
        "journal": registry.journal_lines(found),
        "request_view": readable_xml(found.request_xml, full=full),
        "answer_view": readable_xml(found.answer_xml, full=full),
        "full": full,
    }


@bp.get("/requests/<int:request_id>", endpoint="request_detail")
@requires("ers.view")
def request_detail(request_id: int):
    """The arrow: the error, ФСС's requestId, the ЭРС number, the sender, the journal and both
    envelopes as readable XML, as a row under the request's row (htmx) or a page."""
    found = registry.get_request(request_id, _user())
    context = _detail_context(found)
    target = hx_target()
    if target == f"ers-request-body-{found.id}":  # «показать полностью» inside the open row
        return render_template("ers/_request_detail.html", as_row=False, **context)
    if target:
        return render_template("ers/_request_detail.html", as_row=True, **context)
    return render_template("ers/request.html", as_row=False, **context)


@bp.get("/requests/<int:request_id>/status", endpoint="request_status")
@requires("ers.view")
def request_status(request_id: int):
    """The Статус cell; it polls while the request is on its way and stops at a final status."""
    found = registry.get_request(request_id, _user(), envelopes=False)
    return render_template("ers/_request_status.html", req=found, **_row_context())


@bp.get("/requests/<int:request_id>/xml/<which>", endpoint="request_xml")
@requires("ers.view")
def request_xml(request_id: int, which: str):
    """The request as signed or ФСС's answer as decrypted, exactly as kept, to save."""
    if which not in XML_KINDS:
        abort(404, description="Такого XML у запроса нет: request или answer.")
    found = registry.get_request(request_id, _user())
    xml = found.request_xml if which == "request" else found.answer_xml
    if not xml:
        abort(
            404,
            description="Запрос ещё не отправлен в ФСС."
            if which == "request"
            else "Ответа ФСС на запрос ещё нет.",
        )
    return Response(
        xml,
        content_type="text/xml; charset=utf-8",
        headers={"Content-Disposition": content_disposition(f"ers-{found.id}-{which}.xml", "attachment")},
    )
