"""Queries behind the АИСТ_ЭРС start page (SPEC E-1, E-3, E-4): the list filters from the URL, the
МО's patients with a current pregnancy and their ЭРС numbers, the certificates a user may sign
with, the chosen signatures kept in the session, and saving a contract.

The list is small (one МО's current pregnancies, a few thousand rows at most), so it pages by
number with LIMIT/OFFSET, which the seed's «Количество строк» and page links need anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import defer, joinedload

from portal.admin.audit import audit
from portal.admin.models import Certificate
from portal.auth.models import User
from portal.clinical.models import Mo, Patient, Pregnancy
from portal.ers import models as m
from portal.ers.state import ErsState, number_column, states
from portal.extensions import db
from portal.filters import ROWS_PER_PAGE, FilterError, filter_mo, filter_paging, page_count, patient_match

OUTCOME_DAYS = 90  # a pregnancy stays on the list this long after its outcome (Талон 2, Талон 3)
MAX_QUERY = 100
SORTS = ("fio", "birth", "snils", "ers")
SIGNER_KINDS: dict[str, str] = {  # session key → certificate purpose, in the seed's order
    "doctor": "doctor",
    "mo": "mo",
    "accountant": "accountant",
}
SIGNER_LABELS = {"doctor": "ЭЦП врача", "mo": "ЭЦП МО", "accountant": "ЭЦП бухгалтера"}
SESSION_KEY = "ers_signers"


@dataclass
class PatientFilters:
    """The list as the URL carries it: mo (central only), q, sort, dir, rows, page."""

    mo_id: int | None
    q: str = ""
    sort: str = "fio"
    descending: bool = False
    per_page: int = ROWS_PER_PAGE[0]
    page: int = 1
    own_mo: bool = False  # the user's own МО, not chosen: the URL does not carry it

    @classmethod
    def parse(cls, args: Mapping[str, str], user: Any) -> PatientFilters:
        mo_id = filter_mo(args, user)
        q = (args.get("q") or "").strip()[:MAX_QUERY]
        sort = (args.get("sort") or "fio").strip()
        if sort not in SORTS:
            raise FilterError(f"Неизвестная сортировка «{sort}».")
        direction = (args.get("dir") or "asc").strip()
        if direction not in ("asc", "desc"):
            raise FilterError(f"Неизвестный порядок сортировки «{direction}».")
        per_page, page = filter_paging(args)
        return cls(mo_id, q, sort, direction == "desc", per_page, page, own_mo=not user.is_central)

    def query_args(self, **changes: Any) -> dict[str, str]:
        """The filters as URL arguments; defaults left out so links stay short."""
        values: dict[str, Any] = {
            "mo": None if self.own_mo else self.mo_id,
            "q": self.q,
            "sort": None if self.sort == "fio" else self.sort,
            "dir": "desc" if self.descending else None,
            "rows": None if self.per_page == ROWS_PER_PAGE[0] else self.per_page,
            "page": None if self.page == 1 else self.page,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in (None, "")}

    def sorted_by(self, column: str) -> dict[str, str]:
        """The link of a column heading: by this column, the other way round when it is current."""
        descending = column == self.sort and not self.descending
        return self.query_args(
            sort=None if column == "fio" else column, dir="desc" if descending else None, page=None
        )


@dataclass
class PatientRow:
    patient: Patient
    pregnancy: Pregnancy
    ers_number: str | None
    term: str  # «Текущий срок»
    state: ErsState | None = None  # Талон 1, 2, 3-1, 3-2 and what is on its way


@dataclass
class PatientPage:
    rows: list[PatientRow]
    total: int
    page: int
    pages: int
    per_page: int


def _ers_number() -> Any:
    """The pregnancy's current ЭРС number (state.number_column), correlated to the row."""
    return number_column(Pregnancy.id).correlate(Pregnancy)


def _search(text: str) -> Any:
    """«Поиск»: a СНИЛС (or its first digits), else prefixes of surname, name, patronymic in order."""
    return db.and_(*(patient_match(text) or [db.true()]))


def _current_pregnancies(mo_id: int, today: date) -> Any:
    """The newest current pregnancy per patient of the МО: no outcome, or one in the last 90 days."""
    cutoff = today - timedelta(days=OUTCOME_DAYS)
    return (
        select(func.max(Pregnancy.id).label("id"))
        .join(Patient, Patient.id == Pregnancy.patient_id)
        .where(
            Patient.mo_id == mo_id,
            or_(Pregnancy.outcome.is_(None), Pregnancy.outcome_on >= cutoff),
        )
        .group_by(Pregnancy.patient_id)
        .subquery()
    )


def patient_page(filters: PatientFilters, today: date | None = None) -> PatientPage:
    """One page of the МО's pregnant patients (the МО is already checked for the user)."""
    today = today or date.today()
    if filters.mo_id is None:
        return PatientPage([], 0, 1, 1, filters.per_page)
    current = _current_pregnancies(filters.mo_id, today)
    ers = _ers_number().label("ers_number")
    stmt = (
        select(Patient, Pregnancy, ers)
        .join(Pregnancy, Pregnancy.patient_id == Patient.id)
        .where(Pregnancy.id.in_(select(current.c.id)))
    )
    count = select(func.count()).select_from(Pregnancy).where(Pregnancy.id.in_(select(current.c.id)))
    if filters.q:
        condition = _search(filters.q)
        stmt = stmt.where(condition)
        count = count.join(Patient, Patient.id == Pregnancy.patient_id).where(condition)
    total = int(db.session.scalar(count) or 0)
    page, pages = page_count(total, filters.per_page, filters.page)
    keys: dict[str, list[Any]] = {
        "fio": [Patient.last_name, Patient.first_name, Patient.middle_name],
        "birth": [Patient.birth_date],
        "snils": [Patient.snils],
        "ers": [ers],
    }
    ordering = []
    for key in [*keys[filters.sort], Patient.id]:
        ordering.append(key.desc() if filters.descending else key.asc())
    if filters.sort == "ers":  # «Нет» after the numbers either way
        ordering.insert(0, ers.is_(None))
    stmt = stmt.order_by(*ordering).limit(filters.per_page).offset((page - 1) * filters.per_page)
    rows = [
        PatientRow(patient, pregnancy, number, pregnancy.gestational_age(today))
        for patient, pregnancy, number in db.session.execute(stmt)
    ]
    found = states(row.pregnancy for row in rows)
    for row in rows:
        row.state = found[row.pregnancy.id]
    return PatientPage(rows, total, page, pages, filters.per_page)


# --- signatures (E-1) ----------------------------------------------------------------------------


def signature_choices(mo_id: int, user: Any, today: date | None = None) -> dict[str, list[Certificate]]:
    """The certificates valid today for each signature: the user's own doctor's certificates, the
    МО's certificates, the accountant certificates of the МО's users; the longest-lived first."""
    today = today or date.today()
    cert = Certificate
    valid = (cert.valid_from <= today, cert.valid_to >= today)
    users_of_mo = select(User.id).where(User.mo_id == mo_id)
    wheres = {
        "doctor": (cert.purpose == "doctor", cert.user_id == user.id),
        "mo": (cert.purpose == "mo", cert.mo_id == mo_id),
        "accountant": (cert.purpose == "accountant", cert.user_id.in_(users_of_mo)),
    }
    return {
        kind: list(
            db.session.scalars(select(cert).where(*where, *valid).order_by(cert.valid_to.desc(), cert.id))
        )
        for kind, where in wheres.items()
    }


def chosen_signers(
    session: Mapping[str, Any], mo_id: int, choices: dict[str, list[Certificate]]
) -> dict[str, Certificate | None]:
    """The signatures chosen for this МО and still valid (a certificate that expired drops out)."""
    kept = (session.get(SESSION_KEY) or {}).get(str(mo_id)) or {}
    chosen: dict[str, Certificate | None] = {}
    for kind, certs in choices.items():
        chosen[kind] = next((c for c in certs if c.id == kept.get(kind)), None)
    return chosen


def signer_ids(session: Mapping[str, Any], mo_id: int, user: Any) -> dict[str, int | None]:
    """The chosen signatures as `services.new_request` takes them: kind → certificate id."""
    chosen = chosen_signers(session, mo_id, signature_choices(mo_id, user))
    return {kind: cert.id if cert else None for kind, cert in chosen.items()}


def choose_signers(
    session: MutableMapping[str, Any],
    mo_id: int,
    form: Mapping[str, str],
    choices: dict[str, list[Certificate]],
) -> None:
    """Keep the chosen signatures for the МО in the session; FilterError for one not offered."""
    picked: dict[str, int | None] = {}
    for kind, certs in choices.items():
        raw = (form.get(f"sign_{kind}") or "").strip()
        if not raw:
            picked[kind] = None
            continue
        ident = next((c.id for c in certs if str(c.id) == raw), None)
        if ident is None:
            raise FilterError(
                f"{SIGNER_LABELS[kind]}: сертификат недоступен или недействителен. Обновите страницу."
            )
        picked[kind] = ident
    kept = dict(session.get(SESSION_KEY) or {})
    kept[str(mo_id)] = picked
    session[SESSION_KEY] = kept


# --- the contract (E-3) --------------------------------------------------------------------------


def add_contract(mo: Mo, number: str, signed_on: date, ends_on: date, user: Any) -> m.ErsContract:
    """Keep a contract the form checked (rules.contract_errors) and audit it; flushes, never commits."""
    contract = m.ErsContract(
        mo_id=mo.id,
        number=number.strip(),
        signed_on=signed_on,
        ends_on=ends_on,
        created_by_id=getattr(user, "id", None),
    )
    db.session.add(contract)
    db.session.flush()
    audit(
        "ers.contract",
        f"Договор с ФСС № {contract.number} от {signed_on:%d.%m.%Y} до {ends_on:%d.%m.%Y} ({mo.short_name})",
        obj=contract,
        mo_id=mo.id,
        details={
            "number": contract.number,
            "signed_on": signed_on.isoformat(),
            "ends_on": ends_on.isoformat(),
        },
        user=user,
    )
    return contract


# --- «Обновить данные ЭРС» (E-5) -----------------------------------------------------------------


def current_pregnancies(mo_id: int, today: date | None = None) -> list[Pregnancy]:
    """The pregnancies the list shows (its whole length, not one page)."""
    current = _current_pregnancies(mo_id, today or date.today())
    return list(
        db.session.scalars(
            select(Pregnancy)
            .options(joinedload(Pregnancy.patient))  # the refresh reads each woman's СНИЛС
            .where(Pregnancy.id.in_(select(current.c.id)))
            .order_by(Pregnancy.id)
        )
    )


@dataclass
class RefreshProgress:
    batch: str
    total: int
    done: int
    failed: list[m.ErsRequest]
    changed: list[tuple[m.ErsRequest, str | None]]  # (request, the number before) for new numbers
    cleared: list[m.ErsRequest]  # numbers ФСС no longer holds as active

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 100


def refresh_progress(batch: str, mo_id: int | None) -> RefreshProgress | None:
    """How far a run of «Обновить данные ЭРС» is and, once every answer is in, what it changed;
    None for an unknown run (or one of another МО when `mo_id` is given). Polled every 2 s:
    counts while it runs, a fixed number of queries at the end."""
    req = m.ErsRequest
    head = db.session.execute(
        select(
            func.min(req.id),
            func.min(req.mo_id),
            func.count(),
            func.count().filter(req.status.in_(m.IN_FLIGHT)),
        ).where(req.batch == batch)
    ).one()
    first_id, batch_mo, total, waiting = head
    if not total or (mo_id is not None and batch_mo != mo_id):
        return None
    progress = RefreshProgress(batch, total, total - waiting, [], [], [])
    if waiting:
        return progress
    rows = list(
        db.session.scalars(
            select(req)
            .options(defer(req.request_xml), defer(req.answer_xml), joinedload(req.patient))
            .where(req.batch == batch)
            .order_by(req.id)
        )
    )
    pregnancies = db.session.scalars(
        select(Pregnancy).where(Pregnancy.id.in_({r.pregnancy_id for r in rows}))
    )
    before = states(pregnancies, before_id=first_id)  # each woman's state before the run
    for request in rows:
        found = before.get(request.pregnancy_id)  # a request made without a pregnancy has no before
        old = found.number if found else None
        if request.status != m.PROCESSED:
            progress.failed.append(request)
        elif request.ers_number and request.ers_number != old:
            progress.changed.append((request, old))
        elif old and not request.ers_number:
            progress.cleared.append(request)
    return progress
