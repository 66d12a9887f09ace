"""АИСТ_ЭРС start page (SPEC E-1, E-3, E-4): the contract with ФСС, the signature choice and the
list of the МО's pregnant patients.

An МО without a contract is asked for one first. An МО user works in their own МО; a central
administrator picks one (`mo` in the URL). One URL serves the page and, for htmx, the list alone
(HX-Target «ers-results»). Every view checks the capability and the МО itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from portal.auth.access import requires
from portal.auth.scoping import check_mo, get_scoped, mo_choices
from portal.clinical.models import ClinicalEvent, Mo, Patient
from portal.dates import parse_date
from portal.ers import bp, pages, services
from portal.ers import card as card_view
from portal.ers.rules import contract_errors, contract_refusal, current_contract
from portal.extensions import db
from portal.filters import ROWS_PER_PAGE, FilterError
from portal.fragments import hx_target


def _filters(args) -> pages.PatientFilters:
    try:
        return pages.PatientFilters.parse(args, current_user)
    except FilterError as error:
        abort(error.status, description=error.message)


def _mo(filters: pages.PatientFilters) -> Mo | None:
    if filters.mo_id is None:
        return None
    check_mo(filters.mo_id)
    return db.session.get(Mo, filters.mo_id)


def _posted_mo(refusal: str = "Выберите МО.") -> tuple[pages.PatientFilters, Mo]:
    """The filters a form carries and its МО (checked for the user); 400 when there is none."""
    filters = _filters(request.form)
    mo = _mo(filters)
    if mo is None:
        abort(400, description=refusal)
    return filters, mo


def _signatures_context(mo: Mo, message: str | None = None) -> dict[str, Any]:
    choices = pages.signature_choices(mo.id, current_user)
    return {
        "choices": choices,
        "chosen": pages.chosen_signers(session, mo.id, choices),
        "labels": pages.SIGNER_LABELS,
        "today": date.today(),
        "signature_message": message,
    }


def _page_context(
    filters: pages.PatientFilters, form: dict[str, str] | None = None, errors: dict[str, str] | None = None
) -> dict[str, Any]:
    mo = _mo(filters)
    context: dict[str, Any] = {
        "filters": filters,
        "mo": mo,
        "mos": mo_choices(),
        "form": form or {},
        "errors": errors or {},
        "per_page_choices": ROWS_PER_PAGE,
    }
    if mo is None:
        return context
    contract = current_contract(mo.id)
    context.update(
        contract=contract,
        refusal=contract_refusal(contract) if contract else None,
        can_contract=current_user.can("ers.contract"),
        can_request=current_user.can("ers.request"),
    )
    batch = (request.args.get("refresh") or "").strip()
    if batch:
        context["refresh_progress"] = pages.refresh_progress(batch, mo.id)
        context["url"] = url_for("ers.refresh_status", batch=batch)
    if contract is not None:
        context.update(_signatures_context(mo), page=pages.patient_page(filters))
    return context


@bp.get("/", endpoint="patients")
@requires("ers.view")
def patients():
    """The page: the contract form, or the contract, the signatures and the patient list."""
    filters = _filters(request.args)
    context = _page_context(filters)
    if hx_target() == "ers-results" and context.get("page") is not None:
        return render_template("ers/_results.html", **context)
    return render_template("ers/patients.html", **context)


@bp.post("/contract", endpoint="contract")
@requires("ers.contract")
def contract():
    """«Введите номер договора с ФСС»: number, date, end date; errors under each field."""
    filters, mo = _posted_mo("Выберите МО, для которой вводится договор с ФСС.")
    form = {name: (request.form.get(name) or "").strip() for name in ("number", "signed_on", "ends_on")}
    dates: dict[str, date | None] = {}
    for name in ("signed_on", "ends_on"):
        try:
            dates[name] = parse_date(form[name])
        except ValueError:
            dates[name] = None
    errors = contract_errors(form["number"], dates["signed_on"], dates["ends_on"])
    if errors:
        context = _page_context(filters, form, errors)
        context["contract_open"] = True
        return render_template("ers/patients.html", **context), 400
    saved = pages.add_contract(mo, form["number"], dates["signed_on"], dates["ends_on"], current_user)
    db.session.commit()
    flash(f"Договор с ФСС № {saved.number} от {saved.signed_on:%d.%m.%Y} сохранён.", "success")
    return redirect(
        url_for("ers.patients", **filters.query_args(q=None, sort=None, dir=None, rows=None, page=None)), 303
    )


@bp.post("/signatures", endpoint="signatures")
@requires("ers.view")
def signatures():
    """ЭЦП врача, ЭЦП МО, ЭЦП бухгалтера: kept in the session for this МО."""
    filters, mo = _posted_mo()
    choices = pages.signature_choices(mo.id, current_user)
    try:
        pages.choose_signers(session, mo.id, request.form, choices)
    except FilterError as error:
        abort(error.status, description=error.message)
    message = "Подписи выбраны."
    if request.headers.get("HX-Request"):
        return render_template(
            "ers/_signatures.html", filters=filters, mo=mo, **_signatures_context(mo, message)
        )
    flash(message, "success")
    return redirect(url_for("ers.patients", **filters.query_args()), 303)


# --- the patient card (E-6 … E-11) ---------------------------------------------------------------


def _patient(patient_id: int) -> Patient:
    return get_scoped(Patient, patient_id)


def _sender(mo_id: int) -> services.Sender:
    return services.Sender(pages.signer_ids(session, mo_id, current_user), current_user, request.remote_addr)


def _card_context(patient: Patient, **extra: Any) -> dict[str, Any]:
    mo = patient.mo
    filters = pages.PatientFilters(mo.id, own_mo=not current_user.is_central)
    contract = current_contract(mo.id)
    context: dict[str, Any] = {
        "card": card_view.card(patient),
        "patient": patient,
        "mo": mo,
        "filters": filters,
        "contract": contract,
        "refusal": contract_refusal(contract),
        "can_request": current_user.can("ers.request"),
        "can_tickets": current_user.can("ers.tickets"),
        "person": card_view.person_form(patient),
        "person_errors": {},
        "person_fields": card_view.PERSON_FIELDS,
        "person_choices": card_view.CHOICES,
        "disable_reasons": services.DISABLE_REASONS,
        "message": None,
        "form": request.form,
        **_signatures_context(mo),
    }
    context.update(extra)
    return context


@bp.get("/patients/<int:patient_id>", endpoint="card")
@requires("ers.view")
def patient_card(patient_id: int):
    """О пациенте, Первичный осмотр, Повторные осмотры, Исход, Реестр запросов."""
    patient = _patient(patient_id)
    return render_template("ers/card.html", **_card_context(patient))


@bp.get("/patients/<int:patient_id>/state", endpoint="card_state")
@requires("ers.view")
def card_state(patient_id: int):
    """The number, the talons and the requests on their way: polls while any is in flight."""
    patient = _patient(patient_id)
    return render_template("ers/_card_state.html", card=card_view.card(patient), patient=patient, oob=True)


ACTIONS: dict[str, str] = {  # button → capability
    "ers": "ers.request",
    "visit": "ers.request",
    "cancel_visit": "ers.request",
    "ticket1": "ers.tickets",
    "ticket2": "ers.tickets",
    "ticket3-1": "ers.tickets",
    "ticket3-2": "ers.tickets",
}


def _children(form, count: int) -> list[dict[str, str]]:
    return [
        {
            "last_name": (form.get(f"child_last_{n}") or "").strip(),
            "first_name": (form.get(f"child_first_{n}") or "").strip(),
            "middle_name": (form.get(f"child_middle_{n}") or "").strip(),
        }
        for n in range(count)
    ]


def _events(pregnancy, ids: list[str]) -> list[ClinicalEvent]:
    wanted = {int(i) for i in ids if i.isdigit()}
    if not wanted or pregnancy is None:
        return []
    return list(
        db.session.scalars(
            db.select(ClinicalEvent)
            .where(ClinicalEvent.id.in_(wanted), ClinicalEvent.pregnancy_id == pregnancy.id)
            .order_by(ClinicalEvent.at)
        )
    )


def _refused(patient: Patient, message: str, status: int = 400, **extra: Any):
    context = _card_context(patient, message=message, **extra)
    return render_template("ers/card.html", **context), status


def _queue(patient: Patient, make: Callable[[], Any], **on_refusal: Any):
    """Queue what `make` checks and builds; its refusal re-renders the card with the reason."""
    try:
        queued = make()
    except services.RequestRefused as refusal:
        db.session.rollback()
        return _refused(patient, str(refusal), form=request.form, **on_refusal)
    db.session.commit()
    flash(f"{queued.info} — поставлен в очередь на отправку в ФСС (запрос № {queued.id}).", "success")
    return redirect(url_for("ers.card", patient_id=patient.id), 303)


@bp.post("/patients/<int:patient_id>/requests", endpoint="card_request")
@requires("ers.view")
def card_request(patient_id: int):
    """«ЗАПРОСЫ В ФСС»: Запрос ЭРС, Посещение, ✕ Посещение, Талон 1, Талон 2, Талон 3-1, Талон 3-2."""
    patient = _patient(patient_id)
    action = (request.form.get("action") or "").strip()
    if action not in ACTIONS:
        abort(400, description="Неизвестное действие: выберите кнопку в разделе «Запросы в ФСС».")
    if not current_user.can(ACTIONS[action]):
        abort(403, description="Вашей роли этот запрос в ФСС недоступен.")
    pregnancy = card_view.current_pregnancy(patient)
    if pregnancy is None:
        return _refused(patient, "У пациентки нет беременности: запросы в ФСС не отправляются")
    chosen = _events(pregnancy, request.form.getlist("exam"))
    outcome = next(iter(_events(pregnancy, request.form.getlist("outcome"))), None)
    sender = _sender(patient.mo_id)

    def make() -> Any:
        if action == "ers":
            primary = [e for e in chosen if e.kind == "exam_primary"]
            return services.request_ers(sender, pregnancy, primary[0] if primary else None)
        if action in ("visit", "cancel_visit"):
            return services.send_visits(
                sender, pregnancy, chosen, "CANCEL" if action == "cancel_visit" else "ADD"
            )
        if action == "ticket1":
            return services.send_ticket1(sender, pregnancy, chosen)
        if action == "ticket2":
            return services.send_ticket2(sender, pregnancy, outcome)
        children = _children(request.form, len(card_view.live_born(outcome)) if outcome else 0)
        return services.send_ticket3(sender, pregnancy, outcome, action[-3:], children, date.today())

    return _queue(patient, make)


@bp.post("/patients/<int:patient_id>/disable", endpoint="disable")
@requires("ers.request")
def disable(patient_id: int):
    """«✕ ЭРС»: the number is deleted at ФСС with the reason written."""
    patient = _patient(patient_id)
    pregnancy = card_view.current_pregnancy(patient)
    if pregnancy is None:
        return _refused(patient, "У пациентки нет беременности: удалять нечего")
    return _queue(
        patient,
        lambda: services.disable_number(
            _sender(patient.mo_id),
            pregnancy,
            (request.form.get("reason_code") or "").strip(),
            request.form.get("reason_text") or "",
        ),
        disable_open=True,
    )


@bp.post("/patients/<int:patient_id>/person", endpoint="person")
@requires("ers.request")
def person(patient_id: int):
    """Completing the personal data ФСС needs (the source MIS may lack them); audited."""
    patient = _patient(patient_id)
    values, errors = card_view.person_errors(request.form, date.today())
    if errors:
        form = {name: (request.form.get(name) or "").strip() for name in card_view.PERSON_FIELDS}
        return _refused(
            patient,
            "Данные не сохранены: исправьте отмеченные поля",
            person=form,
            person_errors=errors,
            person_open=True,
        )
    changed = card_view.complete_person(patient, values, current_user)
    db.session.commit()
    flash(
        ("Сохранено: " + ", ".join(changed) + ".") if changed else "Данные не изменились.",
        "success",
    )
    return redirect(url_for("ers.card", patient_id=patient.id), 303)


# --- «Обновить данные ЭРС» (E-5) ---------------------------------------------------------------


@bp.post("/refresh", endpoint="refresh")
@requires("ers.request")
def refresh():
    """Ask ФСС for the certificates of every woman on the list (issued in any МО), in the background."""
    filters, mo = _posted_mo()
    try:
        batch, queued = services.refresh(_sender(mo.id), mo, pages.current_pregnancies(mo.id))
    except services.RequestRefused as refusal:
        db.session.rollback()
        abort(400, description=str(refusal))
    db.session.commit()
    url = url_for("ers.refresh_status", batch=batch)
    if request.headers.get("HX-Request"):
        return render_template("ers/_refresh.html", progress=pages.refresh_progress(batch, mo.id), url=url)
    flash(f"Запрошены данные ЭРС по {queued} пациенткам: ход обновления — ниже.", "success")
    return redirect(url_for("ers.patients", refresh=batch, **filters.query_args()), 303)


@bp.get("/refresh/<batch>", endpoint="refresh_status")
@requires("ers.view")
def refresh_status(batch: str):
    """Progress of «Обновить данные ЭРС» and, at the end, what changed."""
    progress = pages.refresh_progress(batch, None if current_user.is_central else current_user.mo_id)
    if progress is None:
        abort(404)
    return render_template(
        "ers/_refresh.html", progress=progress, url=url_for("ers.refresh_status", batch=batch)
    )
