"""«Документы ИЭМК» (SPEC I-8, I-9) and the ИЭМК block of the patient card.

One URL serves the page and its fragments (HX-Target says which). Status cells of documents on
their way carry a hidden `id` input; one poller on the page asks for all of them at once every
few seconds and gets the cells back out of band; a cell at a final status comes back without the
input and polling stops. Every view and fragment checks the capability and the МО itself: a
document or patient of another МО is 404, as if it did not exist.

Views never call ИЭМК, except «Получить все СЭМД пациента» and opening one of those documents,
which the user asks for and waits for (like the free-beds request to ТФОМС).
"""

from __future__ import annotations

from typing import Any

from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import requires
from portal.auth.scoping import may_see_mo, mo_choices
from portal.clinical.models import Mo, Patient
from portal.exchange.delivery import DataError, TransientError, UnknownOutcome
from portal.extensions import db
from portal.fragments import hx_target
from portal.iemk import bp, documents, registry
from portal.iemk import callback as _callback  # noqa: F401  (registers POST /iemk/callback)
from portal.iemk.models import ERROR, KINDS, STATUS_COLOURS, STATUSES, UNSIGNED, IemkDocument
from portal.models_base import utcnow
from portal.xmlview import pretty_xml

POLL_SECONDS = 5  # in-flight status cells ask for themselves this often
ACTION_LIMIT = 1000  # documents one action may take
ACTIONS = ("sign", "transfer")


def _user():
    return current_user._get_current_object()


def _filters(args) -> registry.DocumentFilters:
    try:
        return registry.DocumentFilters.parse(args, current_user)
    except registry.FilterError as error:
        abort(error.status, description=error.message)


def _may_sign(doc: IemkDocument) -> bool:
    """The row offers «Подписать»: not signed yet, or refused by ИЭМК and to be signed again."""
    return doc.status in (UNSIGNED, ERROR) and documents.sign_refusal(doc) is None


def _may_transfer(doc: IemkDocument) -> bool:
    return documents.transfer_refusal(doc) is None


def _row_context() -> dict[str, Any]:
    """What every document row needs besides the document; macros get it as `r`."""
    row = {
        "statuses": STATUSES,
        "colours": STATUS_COLOURS,
        "kinds": KINDS,
        "can_sign": current_user.can("iemk.sign"),
        "can_send": current_user.can("iemk.send"),
        "may_sign": _may_sign,
        "may_transfer": _may_transfer,
        "poll_seconds": POLL_SECONDS,
    }
    return {**row, "r": row}


def _results_context(
    filters: registry.DocumentFilters, after=None, message: str | None = None, level: str = "success"
) -> dict[str, Any]:
    page = registry.document_page(filters, current_user, after, current_app.config["PAGE_SIZE"])
    counts = registry.status_counts(filters, current_user)
    return {
        **_row_context(),
        "filters": filters,
        "page": page,
        "counts": counts,
        "total": sum(counts.values()),
        "show_mo": filters.mo_id is None,
        "message": message,
        "level": level,
        "later_page": after is not None,
    }


# --- «Документы ИЭМК» ------------------------------------------------------------------------------


@bp.get("/documents", endpoint="documents")
@requires("iemk.view")
def documents_page():
    """The page; for htmx the results (filters, counts, Обновить) or the next rows («Показать ещё»)."""
    filters = _filters(request.args)
    try:
        after = registry.parse_cursor(request.args.get("after"))
    except registry.FilterError as error:
        abort(400, description=error.message)
    target = hx_target()
    if target == "iemk-more" or (target == "iemk-results" and after is not None):
        return render_template("iemk/_rows.html", **_results_context(filters, after))
    if target == "iemk-results":
        return render_template("iemk/_results.html", oob_status=True, **_results_context(filters))
    return render_template("iemk/documents.html", mos=mo_choices(), **_results_context(filters))


@bp.get("/documents/print", endpoint="documents_print")
@requires("iemk.view")
def documents_print():
    """«Печать»: the list as filtered (up to PRINT_LIMIT rows) with the filters in its header."""
    filters = _filters(request.args)
    page = registry.document_page(filters, current_user, limit=registry.PRINT_LIMIT)
    counts = registry.status_counts(filters, current_user)
    return render_template(
        "iemk/documents_print.html",
        **_row_context(),
        filters=filters,
        page=page,
        counts=counts,
        total=sum(counts.values()),
        show_mo=filters.mo_id is None,
        described=filters.described(current_user),
        limit=registry.PRINT_LIMIT,
        printed_at=utcnow(),
    )


@bp.get("/documents/status", endpoint="documents_status")
@requires("iemk.view")
def documents_status():
    """The Статус cells of the asked documents (the visible in-flight ones), out of band; with
    the page's filters (the registry's poller sends them) the counts per status as well."""
    try:
        ids = registry.parse_ids(request.args.getlist("id"), registry.POLL_LIMIT)
        docs = registry.load_scoped(ids, current_user)
    except registry.FilterError as error:
        abort(error.status, description=error.message)
    context: dict[str, Any] = {"docs": docs, **_row_context()}
    if "from" in request.args:
        filters = _filters(request.args)
        counts = registry.status_counts(filters, current_user)
        context.update(filters=filters, counts=counts, total=sum(counts.values()))
    return render_template("iemk/_status_cells.html", **context)


def _detail_context(doc: IemkDocument) -> dict[str, Any]:
    row = _row_context()
    actions = 2 if row["can_sign"] or row["can_send"] else 0
    return {
        **row,
        "doc": doc,
        "journal": documents.journal_lines(doc),
        "xml_text": pretty_xml(doc.xml),
        "cda": registry.readable_cda(doc.xml),
        "cols": (7 if request.args.get("place") == "patient" else 8) + actions,
    }


@bp.get("/documents/<int:doc_id>", endpoint="document")
@requires("iemk.view")
def document(doc_id: int):
    """«+»: the document's journal, signature, ИЭМК's number and CDA under its row, or a page."""
    doc = registry.get_document(doc_id, current_user)
    if hx_target():
        return render_template("iemk/_detail_row.html", **_detail_context(doc))
    return render_template("iemk/document.html", **_detail_context(doc))


@bp.get("/documents/<int:doc_id>.xml", endpoint="document_xml")
@requires("iemk.view")
def document_xml(doc_id: int):
    """The CDA document as signed, to save."""
    doc = registry.get_document(doc_id, current_user)
    if not doc.xml:
        abort(404, description="Документ ещё не сформирован: сначала «Получить и подписать документы».")
    return Response(
        doc.xml,
        content_type="application/xml; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="iemk-{doc.id}-{doc.local_uid}.xml"'},
    )


# --- actions -----------------------------------------------------------------------------------------


def _named(doc: IemkDocument) -> str:
    return f"{doc.title} № {doc.id} ({doc.patient.full_name}, {doc.event_at:%d.%m.%Y})"


def _summary(action: str, result: Any) -> tuple[str, str]:
    """The Russian line saying what was done and naming every refusal with its reason."""
    if action == "sign":
        done, done_label, refused_label = result.signed, "Подписано документов", "Не подписаны"
    else:
        done, done_label, refused_label = (
            result.queued,
            "Поставлено в очередь на передачу в ИЭМК",
            "Не переданы",
        )
    parts = [f"{done_label}: {len(done)}."]
    if result.refused:
        reasons = "; ".join(f"{_named(doc)} — {reason}" for doc, reason in result.refused)
        parts.append(f"{refused_label}: {reasons}.")
    level = "success" if not result.refused else ("warning" if done else "error")
    return " ".join(parts), level


def _parse_action(raw: str | None) -> tuple[str, int | None]:
    """«sign» / «transfer» for the ticked documents, «sign:12» / «transfer:12» for one row."""
    name, _, one = (raw or "").partition(":")
    if name not in ACTIONS:
        abort(400, description="Неизвестное действие: ожидается подписание или передача в ИЭМК.")
    if not one:
        return name, None
    try:
        return name, registry.parse_id(one, "Некорректный документ.")
    except registry.FilterError as error:
        abort(400, description=error.message)


def _chosen(one: int | None) -> list[IemkDocument]:
    try:
        ids = [one] if one is not None else registry.parse_ids(request.form.getlist("ids"), ACTION_LIMIT)
        return registry.load_scoped(ids, current_user)
    except registry.FilterError as error:
        abort(error.status, description=error.message)


def _run(action: str, docs: list[IemkDocument]) -> tuple[str, str]:
    capability = "iemk.sign" if action == "sign" else "iemk.send"
    if not current_user.can(capability):
        abort(403, description="Вашей роли это действие недоступно.")
    if not docs:
        return "Не выбрано ни одного документа.", "warning"
    operation = documents.sign_documents if action == "sign" else documents.transfer
    result = operation(docs, _user())
    db.session.commit()
    return _summary(action, result)


@bp.post("/documents/action", endpoint="documents_action")
@requires("iemk.view")
def documents_action():
    """«Получить и подписать документы» / «Передать документ в ИЭМК» for the ticked rows or one
    row; htmx gets the refreshed results with the message, a plain form a redirect and a flash."""
    filters = _filters(request.form)
    action, one = _parse_action(request.form.get("action"))
    message, level = _run(action, _chosen(one))
    if request.headers.get("HX-Request"):
        return render_template(
            "iemk/_results.html", oob_status=False, **_results_context(filters, message=message, level=level)
        )
    flash(message, level)
    if one is not None and request.form.get("back") == "document":
        return redirect(url_for("iemk.document", doc_id=one), code=303)
    return redirect(url_for("iemk.documents", **filters.query_args()), code=303)


# --- the patient card -------------------------------------------------------------------------------


def _visible_patient(patient_id: int) -> Patient:
    patient = db.session.get(Patient, patient_id)
    if patient is None or not may_see_mo(patient.mo_id):
        abort(404, description="Пациент не найден.")
    return patient


def _patient_context(patient: Patient, message: str | None = None, level: str = "success") -> dict[str, Any]:
    return {
        **_row_context(),
        "patient": patient,
        "docs": registry.patient_documents(patient, current_user),
        "message": message,
        "level": level,
        "show_mo": False,
    }


@bp.app_template_global("iemk_patient_block")
def patient_block(patient: Patient) -> dict[str, Any] | None:
    """The «Документы ИЭМК» block of the patient card, or None for a role without ИЭМК."""
    if not current_user.is_authenticated or not current_user.can("iemk.view"):
        return None
    if not may_see_mo(patient.mo_id):
        return None
    return _patient_context(patient)


@bp.get("/patients/<int:patient_id>/documents", endpoint="patient_documents")
@requires("iemk.view")
def patient_documents(patient_id: int):
    """The block alone («Обновить»)."""
    patient = _visible_patient(patient_id)
    return render_template("iemk/_patient_block.html", iemk=_patient_context(patient), patient=patient)


@bp.post("/patients/<int:patient_id>/action", endpoint="patient_action")
@requires("iemk.view")
def patient_action(patient_id: int):
    """The block's actions. «Получить и подписать документы» with nothing ticked makes the
    documents of the patient's events that have none, then signs every unsigned one."""
    patient = _visible_patient(patient_id)
    action, one = _parse_action(request.form.get("action"))
    docs = _chosen(one)
    if any(doc.patient_id != patient.id for doc in docs):
        abort(404, description="Документ не найден.")
    if action == "sign" and one is None and not docs and current_user.can("iemk.sign"):
        documents.ensure_documents(patient_id=patient.id)
        db.session.flush()
        docs = registry.unsigned_of_patient(patient, current_user)
        if not docs:
            db.session.commit()
            message, level = "Неподписанных документов у пациента нет.", "info"
        else:
            message, level = _run(action, docs)
    else:
        message, level = _run(action, docs)
    if request.headers.get("HX-Request"):
        return render_template(
            "iemk/_patient_block.html", iemk=_patient_context(patient, message, level), patient=patient
        )
    flash(message, level)
    return redirect(url_for("clinical.patient", patient_id=patient.id), code=303)


def _remote_failure(error: Exception) -> str:
    text = str(error).strip()
    return text or "ИЭМК не ответил. Повторите запрос позже."


def _mo_names(remote: list[Any]) -> dict[str, str]:
    """ИЭМК names the sending organisation by its ФРМО OID: the МО's name where the portal knows it."""
    oids = {item.organization for item in remote if getattr(item, "organization", None)}
    if not oids:
        return {}
    return dict(db.session.execute(db.select(Mo.oid, Mo.short_name).where(Mo.oid.in_(oids))).all())


@bp.get("/patients/<int:patient_id>/remote", endpoint="patient_remote")
@requires("iemk.view")
def patient_remote(patient_id: int):
    """«Получить все СЭМД пациента»: the list ИЭМК holds for the patient (asked now)."""
    patient = _visible_patient(patient_id)
    error = None
    remote: list[Any] = []
    try:
        remote = documents.patient_remote_documents(patient)
        db.session.commit()  # the patient may have been registered in the index on the way
    except (DataError, TransientError, UnknownOutcome) as failure:
        db.session.rollback()
        error = _remote_failure(failure)
    context = {"patient": patient, "remote": remote, "error": error, "mo_names": _mo_names(remote)}
    if hx_target():
        return render_template("iemk/_remote.html", **context)
    return render_template("iemk/remote.html", **context)


@bp.get("/patients/<int:patient_id>/remote/<string:local_uid>", endpoint="patient_remote_document")
@requires("iemk.view")
def patient_remote_document(patient_id: int, local_uid: str):
    """One document from ИЭМК: the CDA as sections (and its XML), an attached PDF to save;
    ?download=xml|pdf saves a file."""
    patient = _visible_patient(patient_id)
    if len(local_uid) > 100:
        abort(404, description="Документ не найден.")
    error = None
    remote = None
    try:
        remote = documents.remote_document(patient, local_uid)
        db.session.commit()
    except (DataError, TransientError, UnknownOutcome) as failure:
        db.session.rollback()
        error = _remote_failure(failure)
    xml = getattr(remote, "xml", None) if remote is not None else None
    pdf = getattr(remote, "pdf", None) if remote is not None else None
    wanted = request.args.get("download")
    if remote is not None and wanted in ("xml", "pdf"):
        content = pdf if wanted == "pdf" else xml
        if not content:
            abort(404, description="В документе нет такого файла.")
        mime = "application/pdf" if wanted == "pdf" else "application/xml; charset=utf-8"
        return Response(
            content,
            content_type=mime,
            headers={"Content-Disposition": f'attachment; filename="iemk-{local_uid}.{wanted}"'},
        )
    context = {
        "patient": patient,
        "local_uid": local_uid,
        "remote": remote,
        "error": error,
        "cda": registry.readable_cda(xml) if xml else None,
        "xml_text": pretty_xml(xml) if xml else "",
        "has_xml": bool(xml),
        "has_pdf": bool(pdf),
        "mo_names": _mo_names([remote] if remote is not None else []),
    }
    if hx_target():
        return render_template("iemk/_remote_document.html", **context)
    return render_template("iemk/remote_document.html", **context)
