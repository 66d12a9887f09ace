"""What ФСС holds for a pregnancy, derived from the requests it has processed (SPEC E-4, E-7 … E-9):
the ЭРС number (given by createErs, found by getErsData in another МО, cleared by disableErs),
the talons accepted and the visits sent, plus the requests still on their way.

Nothing is stored twice: the list's columns and the card read the same fold of `ErsRequest`
rows, oldest first, so a later request overrides an earlier one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, or_, select
from sqlalchemy import true as sa_true
from sqlalchemy.orm import defer

from portal.clinical.models import Pregnancy
from portal.ers import models as m
from portal.extensions import db

TICKETS = ("1", "2", "3-1", "3-2")  # the list's columns Талон 1, Талон 2, Талон 3-1, Талон 3-2
NUMBER_METHODS = ("createErs", "getErsData", "disableErs")


def ticket_part(request: m.ErsRequest) -> str | None:
    """Which talon a putTicket request carries: 1, 2, 3-1 or 3-2."""
    if request.method in ("putTicket1", "putTicket2"):
        return request.method[-1]
    if request.method == "putTicket3":
        storage = ((request.data or {}).get("tickets") or {}).get("storage") or [{}]
        return (storage[0].get("ticket3") or {}).get("ticket3Part")
    return None


def visit_actions(request: m.ErsRequest) -> list[tuple[str, str]]:
    """(visitId, ADD|CANCEL) of a putVisit request; visitId is the exam's id in the source MIS."""
    storage = ((request.data or {}).get("visits") or {}).get("storage") or []
    return [
        (str(item["visit"]["visitId"]), item["visit"]["visitAction"])
        for item in storage
        if isinstance(item, dict) and item.get("visit")
    ]


@dataclass
class ErsState:
    number: str | None = None
    issued_by: str | None = None  # the МО that issued it, when found by «Обновить данные ЭРС»
    tickets: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(TICKETS, False))
    visits: set[str] = field(default_factory=set)  # visitIds ФСС holds
    pending: list[m.ErsRequest] = field(default_factory=list)  # not yet answered
    requests: list[m.ErsRequest] = field(default_factory=list)  # all, oldest first

    def apply(self, request: m.ErsRequest, own_ogrn: str | None) -> None:
        self.requests.append(request)
        if request.status in m.IN_FLIGHT:
            self.pending.append(request)
            return
        if request.status != m.PROCESSED:
            return
        method = request.method
        if method == "createErs" and request.ers_number:
            self.number, self.issued_by = request.ers_number, None
        elif method == "getErsData" and not request.ers_number:
            self.number, self.issued_by = None, None  # ФСС holds no active ЭРС for her
        elif method == "getErsData":
            found = (request.result or {}).get("found") or {}
            self.number = request.ers_number
            self.issued_by = found.get("orgName") if found.get("ogrn") not in (None, own_ogrn) else None
            for part in found.get("tickets") or []:
                if part in self.tickets:
                    self.tickets[part] = True
        elif method == "disableErs" and request.ers_number == self.number:
            self.number, self.issued_by = None, None
            self.tickets = dict.fromkeys(TICKETS, False)
            self.visits = set()
        elif method.startswith("putTicket"):
            part = ticket_part(request)
            if part in self.tickets:
                self.tickets[part] = True
        elif method == "putVisit":
            for visit_id, action in visit_actions(request):
                (self.visits.discard if action == "CANCEL" else self.visits.add)(visit_id)

    def waiting(self, method: str) -> bool:
        return any(r.method == method for r in self.pending)

    def pending_visits(self) -> dict[str, str]:
        """visitId → ADD|CANCEL of visits on their way to ФСС."""
        return {
            vid: action for r in self.pending if r.method == "putVisit" for vid, action in visit_actions(r)
        }


def states(pregnancies: Iterable[Pregnancy], before_id: int | None = None) -> dict[int, ErsState]:
    """The ЭРС state of each pregnancy, one query for all of them; with `before_id`, as it was
    before that request."""
    by_id = {p.id: p for p in pregnancies}
    found = {pid: ErsState() for pid in by_id}
    if not by_id:
        return found
    req = m.ErsRequest
    rows = db.session.scalars(
        select(req)
        .options(defer(req.request_xml), defer(req.answer_xml))  # the envelopes: only the registry
        .where(req.pregnancy_id.in_(list(by_id)), req.id < before_id if before_id else sa_true())
        .order_by(req.id)
    )
    for request in rows:
        found[request.pregnancy_id].apply(request, by_id[request.pregnancy_id].mo.ogrn)
    return found


def state(pregnancy: Pregnancy) -> ErsState:
    return states([pregnancy])[pregnancy.id]


def number_column(pregnancy_id: Any) -> Any:
    """The pregnancy's current ЭРС number as a correlated subquery (the list sorts by it): the
    newest processed request that gives or clears a number decides (getErsData that found no
    active certificate clears it: ФСС's word wins)."""
    req = m.ErsRequest
    return (
        select(case((req.method == "disableErs", None), else_=req.ers_number))
        .where(
            req.pregnancy_id == pregnancy_id,
            req.method.in_(NUMBER_METHODS),
            req.status == m.PROCESSED,
            or_(req.ers_number.is_not(None), req.method == "getErsData"),
        )
        .order_by(req.id.desc())
        .limit(1)
        .scalar_subquery()
    )
