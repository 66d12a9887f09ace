"""АИСТ_ЭРС start page (SPEC E-1, E-3, E-4): the contract with ФСС, the signature choice and the
list of the МО's pregnant patients.

An МО without a contract is asked for one first. An МО user works in their own МО; a central
administrator picks one (`mo` in the URL). One URL serves the page and, for htmx, the list alone
(HX-Target «ers-results»). Every view checks the capability and the МО itself.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from portal.auth.access import requires
from portal.auth.scoping import check_mo, mo_choices
from portal.clinical.models import Mo
from portal.dates import parse_date
from portal.ers import bp, pages
from portal.ers.rules import contract_errors, contract_refusal, current_contract
from portal.extensions import db
from portal.filters import FilterError
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
    }
    if mo is None:
        return context
    contract = current_contract(mo.id)
    context.update(contract=contract, refusal=contract_refusal(contract) if contract else None)
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
@requires("ers.view")
def contract():
    """«Введите номер договора с ФСС»: number, date, end date; errors under each field."""
    filters = _filters(request.form)
    mo = _mo(filters)
    if mo is None:
        abort(400, description="Выберите МО, для которой вводится договор с ФСС.")
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
    filters = _filters(request.form)
    mo = _mo(filters)
    if mo is None:
        abort(400, description="Выберите МО.")
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
