"""Queries behind «Реестр запросов» (SPEC E-13): the filters from the URL, keyset pages of the
МО's requests to ФСС newest first, one request with its journal, and its XML made readable.

Every query is bounded by the user's МО (`scoped`) and rides the index (mo_id, created_at, id) —
or (patient_id, created_at) for the patient card's block — with a «Показать ещё» cursor.
A request of another МО is 404, as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import abort
from sqlalchemy import or_, select
from sqlalchemy.orm import defer, joinedload

from portal.auth.models import User
from portal.auth.scoping import may_see_mo, scoped
from portal.clinical.models import Patient
from portal.ers import models as m
from portal.exchange.models import JournalEntry
from portal.extensions import db
from portal.filters import (  # noqa: F401  (parse_cursor: views)
    FilterError,
    KeysetPage,
    contains_ci,
    filter_date,
    filter_mo,
    newest_first,
    parse_cursor,
    parse_id,
    patient_match,
)

SUBJECT = "ers_request"  # JournalEntry.subject_type of a request's lines
MAX_QUERY = 100
JOURNAL_LIMIT = 500  # lines of one request's journal shown at once


@dataclass
class RequestFilters:
    """The registry as the URL carries it: mo (central only), q, patient, method, status, from, to.

    The period is open by default: the patient card's block shows all the patient's requests."""

    mo_id: int | None
    q: str = ""
    patient_id: int | None = None
    method: str | None = None
    status: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    own_mo: bool = False  # the user's own МО, not chosen: the URL does not carry it

    @classmethod
    def parse(cls, args: Mapping[str, str], user: Any) -> RequestFilters:
        mo_id = filter_mo(args, user)
        q = (args.get("q") or "").strip()[:MAX_QUERY]
        raw_patient = (args.get("patient") or "").strip()
        patient_id = parse_id(raw_patient, f"Некорректный пациент «{raw_patient}».") if raw_patient else None
        method = (args.get("method") or "").strip() or None
        if method is not None and method not in m.METHODS:
            raise FilterError(f"Неизвестный метод «{method}».")
        status = (args.get("status") or "").strip() or None
        if status is not None and status not in m.STATUSES:
            raise FilterError(f"Неизвестный статус «{status}».")
        date_from = filter_date(args.get("from"), None, "Дата начала периода")  # type: ignore[arg-type]
        date_to = filter_date(args.get("to"), None, "Дата окончания периода")  # type: ignore[arg-type]
        if date_from and date_to and date_from > date_to:
            raise FilterError(f"Начало периода {date_from:%d.%m.%Y} позже его окончания {date_to:%d.%m.%Y}.")
        return cls(mo_id, q, patient_id, method, status, date_from, date_to, own_mo=not user.is_central)

    def query_args(self, **changes: Any) -> dict[str, str]:
        """The filters as URL arguments; empty ones left out so links stay short."""
        values: dict[str, Any] = {
            "mo": None if self.own_mo else self.mo_id,
            "q": self.q,
            "patient": self.patient_id,
            "method": self.method,
            "status": self.status,
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in (None, "")}

    @property
    def narrowed(self) -> bool:
        """Some condition beyond the МО and the patient is set (the empty table says so)."""
        return bool(self.q or self.method or self.status or self.date_from or self.date_to)


def get_patient(patient_id: int, user: Any) -> Patient:
    """The patient of the card's block; absent or of another МО is 404."""
    patient = db.session.get(Patient, patient_id)
    if patient is None or not may_see_mo(patient.mo_id, user):
        abort(404, description="Пациент не найден.")
    return patient


def _search(text: str, mo_id: int | None) -> Any:
    """«Поиск»: Информация, the method (code or label), ЭРС number, ФСС requestId or the patient."""
    r = m.ErsRequest
    lowered = text.lower()
    conditions: list[Any] = [contains_ci(r.info, text)]
    methods = [
        code for code, label in m.METHODS.items() if lowered in code.lower() or lowered in label.lower()
    ]
    if methods:
        conditions.append(r.method.in_(methods))
    conditions.append(r.ers_number.contains(text, autoescape=True))
    conditions.append(contains_ci(r.fss_request_id, text))
    patient = patient_match(text)
    if patient is not None:
        if mo_id is not None:
            patient.append(Patient.mo_id == mo_id)
        conditions.append(r.patient_id.in_(select(Patient.id).where(*patient)))
    return or_(*conditions)


def _filtered(stmt: Any, filters: RequestFilters, user: Any) -> Any:
    r = m.ErsRequest
    stmt = scoped(stmt, r.mo_id, user)
    if filters.mo_id is not None:
        stmt = stmt.where(r.mo_id == filters.mo_id)
    if filters.patient_id is not None:
        stmt = stmt.where(r.patient_id == filters.patient_id)
    if filters.method is not None:
        stmt = stmt.where(r.method == filters.method)
    if filters.status is not None:
        stmt = stmt.where(r.status == filters.status)
    if filters.date_from is not None:
        stmt = stmt.where(r.created_at >= datetime.combine(filters.date_from, time.min))
    if filters.date_to is not None:
        stmt = stmt.where(r.created_at < datetime.combine(filters.date_to + timedelta(days=1), time.min))
    if filters.q:
        stmt = stmt.where(_search(filters.q, filters.mo_id))
    return stmt


def _listed() -> Any:
    """Requests with what a row shows, without the envelopes (read on the arrow only)."""
    r = m.ErsRequest
    return select(r).options(
        joinedload(r.patient),
        joinedload(r.mo),
        defer(r.request_xml),
        defer(r.answer_xml),
        defer(r.data),
        defer(r.result),
    )


def request_page(
    filters: RequestFilters, user: Any, after: tuple[datetime, int] | None = None, limit: int = 50
) -> KeysetPage:
    """One page of requests, newest first."""
    r = m.ErsRequest
    stmt = _filtered(_listed(), filters, user)
    return newest_first(stmt, r.created_at, r.id, after, limit)


def get_request(request_id: int, user: Any, *, envelopes: bool = True) -> m.ErsRequest:
    """One request the user may see; absent or of another МО is 404. Without `envelopes` the
    XML (tens of kilobytes each) is not read: the polled status cell needs none of it."""
    r = m.ErsRequest
    stmt = scoped(select(r), r.mo_id, user).where(r.id == request_id)
    if not envelopes:
        stmt = stmt.options(defer(r.request_xml), defer(r.answer_xml))
    found = db.session.scalar(stmt)
    if found is None:
        abort(404, description="Запрос не найден.")
    return found


def journal_lines(request: m.ErsRequest, limit: int = JOURNAL_LIMIT) -> list[JournalEntry]:
    """What the shared delivery mechanism wrote about the request, newest first."""
    return list(
        db.session.scalars(
            select(JournalEntry)
            .where(JournalEntry.subject_type == SUBJECT, JournalEntry.subject_id == request.id)
            .order_by(JournalEntry.at.desc(), JournalEntry.id.desc())
            .limit(limit)
        )
    )


def sender(request: m.ErsRequest) -> User | None:
    return db.session.get(User, request.user_id) if request.user_id else None
