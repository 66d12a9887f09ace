"""Making a request to ФСС (SPEC E-3, E-11, E-12): checked first, then queued for the "ers" channel
in the caller's transaction; the page shows it waiting until ФСС has answered."""

from __future__ import annotations

from typing import Any

from portal.clinical.models import ClinicalEvent, Mo, Patient
from portal.ers import models as m
from portal.ers.rules import contract_refusal, current_contract, personal_data_refusal
from portal.exchange.delivery import enqueue, journal
from portal.extensions import db


class RequestRefused(Exception):
    """The request cannot go as it is; the message says why (Russian), nothing was saved."""


def new_request(
    mo: Mo,
    method: str,
    info: str,
    data: dict[str, Any],
    *,
    signers: dict[str, int | None],
    user: Any = None,
    ip: str | None = None,
    patient: Patient | None = None,
    event: ClinicalEvent | None = None,
) -> m.ErsRequest:
    """Check the contract and the patient's personal data, then keep and queue the request."""
    from portal.ers.channel import CHANNEL

    if method not in m.METHODS:
        raise ValueError(f"unknown ЭРС method {method!r}")
    refusal = contract_refusal(current_contract(mo.id)) or (
        personal_data_refusal(patient) if patient else None
    )
    if refusal:
        raise RequestRefused(refusal)
    if not signers.get("mo"):
        raise RequestRefused("Не выбрана подпись МО: выберите сертификат МО вверху страницы")
    request = m.ErsRequest(
        mo_id=mo.id,
        method=method,
        info=info,
        data=data,
        signers=signers,
        status=m.QUEUED,
        user_id=getattr(user, "id", None),
        ip=ip,
        patient_id=patient.id if patient else None,
        pregnancy_id=event.pregnancy_id if event else None,
        event_id=event.id if event else None,
    )
    db.session.add(request)
    db.session.flush()
    enqueue(CHANNEL, "ers_request", request.id, mo.id)
    journal(
        CHANNEL,
        None,
        "Постановка в очередь",
        f"{info}: запрос поставлен в очередь на отправку в ФСС",
        subject=("ers_request", request.id),
        mo_id=mo.id,
        user_id=request.user_id,
        notify=False,
    )
    return request
