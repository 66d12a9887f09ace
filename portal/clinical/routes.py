"""Pages over the source data: patients (list and card) and events."""

from __future__ import annotations

from datetime import date, timedelta

from flask import abort, current_app, render_template, request
from flask_login import current_user

from portal.auth.access import requires
from portal.auth.scoping import filter_mo_id, get_scoped, mo_choices
from portal.clinical import bp
from portal.clinical.models import (
    CARE_CONDITIONS,
    DOCUMENT_KINDS,
    EVENT_KINDS,
    OUTCOME_KINDS,
    SOCIAL_STATUSES,
    Patient,
)
from portal.clinical.services import (
    current_pregnancies,
    data_problems,
    patient_card,
    search_events,
    search_patients,
)


def _fragment_or_page(fragment: str, template: str, **context):
    """One URL serves the page and, for an HTMX request aimed at the results, only the fragment."""
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") in {"results", "more"}:
        return render_template(fragment, **context)
    return render_template(template, **context)


def _parse_date(name: str, default: date | None) -> date | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw == "":
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        abort(400, description=f"Дата «{raw}» должна быть в формате ГГГГ-ММ-ДД.")


@bp.get("/patients")
@requires("clinical.view")
def patients():
    mo_id = filter_mo_id(request.args.get("mo"))
    query = request.args.get("q", "")
    problems_only = request.args.get("problems") == "1"
    try:
        page = search_patients(mo_id, query, problems_only, request.args.get("after"), current_app.config["PAGE_SIZE"])
    except ValueError:
        abort(400, description="Некорректный параметр страницы.")
    pregnancies = current_pregnancies([p.id for p in page.rows])
    return _fragment_or_page(
        "clinical/_patients_rows.html" if request.args.get("after") else "clinical/_patients_table.html",
        "clinical/patients.html",
        page=page, pregnancies=pregnancies, problems=data_problems, mos=mo_choices(),
        mo_id=mo_id, q=query, problems_only=problems_only, today=date.today(),
    )


@bp.get("/patients/<int:patient_id>")
@requires("clinical.view")
def patient(patient_id: int):
    record = get_scoped(Patient, patient_id)
    return render_template(
        "clinical/patient.html", patient=record, card=patient_card(record), today=date.today(),
        outcome_kinds=OUTCOME_KINDS, document_kinds=DOCUMENT_KINDS, social_statuses=SOCIAL_STATUSES,
        care_conditions=CARE_CONDITIONS,
    )


@bp.get("/events")
@requires("clinical.view")
def events():
    today = date.today()
    mo_id = filter_mo_id(request.args.get("mo"))
    date_from = _parse_date("from", today - timedelta(days=30))
    date_to = _parse_date("to", today)
    kind = request.args.get("kind") or None
    if kind and kind not in EVENT_KINDS:
        abort(400, description=f"Неизвестный вид мероприятия «{kind}».")
    try:
        page = search_events(mo_id, date_from, date_to, kind, request.args.get("after"), current_app.config["PAGE_SIZE"])
    except ValueError:
        abort(400, description="Некорректный параметр страницы.")
    return _fragment_or_page(
        "clinical/_events_rows.html" if request.args.get("after") else "clinical/_events_table.html",
        "clinical/events.html",
        page=page, mos=mo_choices(), mo_id=mo_id, date_from=date_from, date_to=date_to, kind=kind,
        kinds=EVENT_KINDS, care_conditions=CARE_CONDITIONS, show_mo=current_user.is_central,
    )
