"""«Отчёт запросов на сервер ФСС» (SPEC E-14; seed: «Сводный отчёт по отправке и получению данных
по ЭРС в ФСС»): requests to ФСС counted by period and by МО, doctor or patient, or listed one by one.

What is counted:

* «Запросы для ФСС» — requests the portal sent to ФСС (`sent_at` is set), by the date sent;
* «Данные с ФСС» — what ФСС accepted (status PROCESSED), by the date of its answer (`answered_at`).

Columns: ЭРС = createErs, Посещения = putVisit, Т1 / Т2 / Т3 = putTicket1 / putTicket2 / putTicket3
(Т3 counts both parts, 3-1 and 3-2). «Посещения» counts the visits added: a putVisit request
carries one per chosen exam (`visits_added`), a cancellation adds none; the other columns count
requests. Other methods (getErsData, disableErs, getResultById …) are not in the report.

Grouping: «М.О.» by the request's МО; «Врачи» by the user who made the request (named as their
staff record when the account is linked to one, else by the account's name); «Пациенты» by
patient; «Реестр» lists the requests one per row (date and time, МО, patient, method, status) with
their counts. Granularity «Годы» / «Месяцы» / «Дни» gives the period of a grouped row; the
period tree offers the years, months and days that have data in the user's scope, and the
periods ticked there (any mix) limit the report to their union; none ticked means all.

The aggregation is one GROUP BY in SQL on a period label built by the database (`strftime` on
SQLite, `to_char` on PostgreSQL). The PDF streams the same query (`iter_rows`, yield_per) into
the chunked renderer of `portal.reports.background`, so 10,000 rows never sit in memory at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Select, and_, case, func, or_

from portal.auth.models import User
from portal.auth.scoping import scoped
from portal.clinical.models import Mo, Patient, Staff, join_name
from portal.ers.models import METHODS, PROCESSED, STATUSES, ErsRequest
from portal.extensions import db
from portal.filters import (
    ROWS_PER_PAGE,
    FilterError,
    contains_ci,
    filter_mo,
    filter_paging,
    page_count,
    patient_match,
)
from portal.models_base import utcnow
from portal.reports.background import (
    Column,
    Progress,
    RenderError,
    TableReport,
    register_renderer,
    render_table_pdf,
)
from portal.reports.models import ReportRun

TITLE = "Отчёт запросов на сервер ФСС"
KIND = "ers_requests"

SOURCES: dict[str, str] = {"sent": "Запросы для ФСС", "fss": "Данные с ФСС"}
GROUPS: dict[str, str] = {"mo": "М.О.", "doctor": "Врачи", "patient": "Пациенты", "registry": "Реестр"}
GRAINS: dict[str, str] = {"year": "Годы", "month": "Месяцы", "day": "Дни"}
MAX_PERIODS = 400
# (key of the row, method, column heading)
COUNTS: tuple[tuple[str, str, str], ...] = (
    ("ers", "createErs", "ЭРС"),
    ("visits", "putVisit", "Посещения"),
    ("t1", "putTicket1", "Т1"),
    ("t2", "putTicket2", "Т2"),
    ("t3", "putTicket3", "Т3"),
)
COUNTED_METHODS = tuple(method for _, method, _ in COUNTS)
NAME_HEADINGS = {"mo": "М.О.", "doctor": "Врач", "patient": "Пациент", "registry": "Пациент"}
NO_USER = "Пользователь не указан"
NO_PATIENT = "Без пациента"

_PERIOD_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_SQLITE_FORMATS = {"year": "%Y", "month": "%Y-%m", "day": "%Y-%m-%d"}
_PG_FORMATS = {"year": "YYYY", "month": "YYYY-MM", "day": "YYYY-MM-DD"}


# --- filters ---------------------------------------------------------------------------------------


def _getlist(args: Mapping[str, Any], name: str) -> list[str]:
    """Repeated URL parameters (a MultiDict) or a list kept in a run's params (a dict)."""
    if hasattr(args, "getlist"):
        return [str(v) for v in args.getlist(name)]
    value = args.get(name)
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def _choice(raw: str | None, allowed: Mapping[str, str], default: str, what: str) -> str:
    value = (raw or "").strip() or default
    if value not in allowed:
        raise FilterError(
            f"{what}: «{value}» — нет такого значения; возможны: {', '.join(allowed.values())}."
        )
    return value


def _period_range(label: str) -> tuple[datetime, datetime]:
    """ "2024", "2024-05" or "2024-05-17" → [start, end) of that year, month or day."""
    match = _PERIOD_RE.match(label)
    if not match:
        raise FilterError(f"Некорректный период «{label}»: ожидается ГГГГ, ГГГГ-ММ или ГГГГ-ММ-ДД.")
    year, month, day = (int(g) if g else None for g in match.groups())
    try:
        if month is None:
            return datetime(year, 1, 1), datetime(year + 1, 1, 1)
        if day is None:
            start = datetime(year, month, 1)
            return start, datetime(year + (month == 12), month % 12 + 1, 1)
        start = datetime(year, month, day)
        return start, datetime.fromordinal(start.toordinal() + 1)
    except ValueError:
        raise FilterError(f"Периода «{label}» не существует.") from None


@dataclass(frozen=True)
class ReportFilters:
    """The report as the URL carries it: source, period (repeated), group, grain, mo (central
    only), q, rows, page."""

    source: str = "sent"
    group: str = "mo"
    grain: str = "year"
    periods: tuple[str, ...] = ()
    mo_id: int | None = None
    q: str = ""
    per_page: int = ROWS_PER_PAGE[0]
    page: int = 1
    own_mo: bool = False

    @classmethod
    def parse(cls, args: Mapping[str, Any], user: Any) -> ReportFilters:
        """Read and check the filters; FilterError with a Russian message for a bad value."""
        if not user.is_central and user.mo_id is None:
            raise FilterError("Ваша учётная запись не привязана к МО: обратитесь к администратору.", 403)
        source = _choice(args.get("source"), SOURCES, "sent", "Данные отчёта")
        group = _choice(args.get("group"), GROUPS, "mo", "Группировка")
        grain = _choice(args.get("grain"), GRAINS, "year", "Период в строках")
        periods = sorted({p.strip() for p in _getlist(args, "period") if p.strip()})
        if len(periods) > MAX_PERIODS:
            raise FilterError(
                f"Выбрано периодов: {len(periods)}; можно не больше {MAX_PERIODS} — выберите годы или месяцы."
            )
        for label in periods:
            _period_range(label)
        q = str(args.get("q") or "").strip()[:100]
        per_page, page = filter_paging(args)
        mo_id = filter_mo({"mo": str(args.get("mo") or "")}, user)
        return cls(source, group, grain, tuple(periods), mo_id, q, per_page, page, own_mo=not user.is_central)

    def query_args(self, **changes: Any) -> dict[str, Any]:
        """The filters as URL parameters (defaults left out); `period` is a list."""
        filters = replace(self, **changes) if changes else self
        args = {
            "source": None if filters.source == "sent" else filters.source,
            "period": list(filters.periods) or None,
            "group": None if filters.group == "mo" else filters.group,
            "grain": None if filters.grain == "year" else filters.grain,
            "mo": None if filters.own_mo or filters.mo_id is None else filters.mo_id,
            "q": filters.q or None,
            "rows": None if filters.per_page == ROWS_PER_PAGE[0] else filters.per_page,
            "page": None if filters.page == 1 else filters.page,
        }
        return {k: v for k, v in args.items() if v is not None}

    def fields(self, **changes: Any) -> list[tuple[str, Any]]:
        """(name, value) pairs for hidden inputs of a form (a list becomes repeated inputs)."""
        pairs: list[tuple[str, Any]] = []
        for name, value in self.query_args(**changes).items():
            pairs.extend((name, v) for v in (value if isinstance(value, list) else [value]))
        return pairs

    def described(self, mo_name: str | None) -> str:
        """One line for the PDF header: what was chosen."""
        parts = [
            SOURCES[self.source],
            f"МО: {mo_name or 'все'}",
            f"Периоды: {', '.join(self.periods) if self.periods else 'все'}",
            f"Группировка: {GROUPS[self.group]}",
        ]
        if self.group != "registry":
            parts.append(f"Период в строках: {GRAINS[self.grain]}")
        if self.q:
            parts.append(f"Поиск: «{self.q}»")
        return " · ".join(parts)

    @property
    def show_mo(self) -> bool:
        """The М.О. column beside a doctor or a patient: only when every МО is shown."""
        return self.group == "mo" or self.mo_id is None

    @property
    def name_heading(self) -> str:
        return NAME_HEADINGS[self.group]


# --- queries ---------------------------------------------------------------------------------------


def _date_column(source: str) -> Any:
    return ErsRequest.sent_at if source == "sent" else ErsRequest.answered_at


def _period_label(column: Any, grain: str) -> Any:
    """The period as text, made by the database: strftime on SQLite, to_char on PostgreSQL."""
    if db.session.get_bind().dialect.name == "sqlite":
        return func.strftime(_SQLITE_FORMATS[grain], column)
    return func.to_char(column, _PG_FORMATS[grain])


def _conditions(filters: ReportFilters, *, periods: bool = True) -> list[Any]:
    column = _date_column(filters.source)
    conditions = [column.is_not(None), ErsRequest.method.in_(COUNTED_METHODS)]
    if filters.source == "fss":
        conditions.append(ErsRequest.status == PROCESSED)
    if filters.mo_id is not None:
        conditions.append(ErsRequest.mo_id == filters.mo_id)
    if periods and filters.periods:
        ranges = [_period_range(label) for label in filters.periods]
        conditions.append(or_(*(and_(column >= start, column < end) for start, end in ranges)))
    return conditions


def _search(filters: ReportFilters) -> list[Any]:
    if not filters.q:
        return []
    if filters.group == "mo":
        return [or_(contains_ci(Mo.short_name, filters.q), contains_ci(Mo.name, filters.q))]
    if filters.group == "doctor":
        return [or_(contains_ci(User.full_name, filters.q), contains_ci(Staff.last_name, filters.q))]
    match = patient_match(filters.q)
    return [and_(*match)] if match else []


def _counts(aggregate: bool) -> list[Any]:
    columns = []
    for key, method, _ in COUNTS:
        amount = ErsRequest.visits_added if method == "putVisit" else 1
        flag = case((ErsRequest.method == method, amount), else_=0)
        columns.append((func.sum(flag) if aggregate else flag).label(key))
    return columns


def _joined(stmt: Select, group: str) -> Select:
    """Requests with their МО and, by the grouping, the doctor (account → staff) or the patient."""
    stmt = stmt.select_from(ErsRequest).join(Mo, Mo.id == ErsRequest.mo_id)
    if group == "doctor":
        return stmt.outerjoin(User, User.id == ErsRequest.user_id).outerjoin(Staff, Staff.id == User.staff_id)
    if group in ("patient", "registry"):
        return stmt.outerjoin(Patient, Patient.id == ErsRequest.patient_id)
    return stmt


def report_query(filters: ReportFilters, user: Any) -> Select:
    """The report's rows as one statement: grouped by period and МО / doctor / patient, or the
    requests themselves for «Реестр»; limited to the user's МО whatever the filters say."""
    column = _date_column(filters.source)
    where = _conditions(filters) + _search(filters)
    if filters.group == "registry":
        stmt = db.select(
            ErsRequest.id,
            column.label("at"),
            Mo.short_name.label("mo"),
            Patient.last_name,
            Patient.first_name,
            Patient.middle_name,
            ErsRequest.method,
            ErsRequest.status,
            *_counts(aggregate=False),
        )
        stmt = _joined(stmt, filters.group).where(*where).order_by(column, ErsRequest.id)
        return scoped(stmt, ErsRequest.mo_id, user)
    period = _period_label(column, filters.grain).label("period")
    keys: list[Any] = [period, Mo.id.label("mo_id"), Mo.short_name.label("mo")]
    order: list[Any] = [period, Mo.short_name, Mo.id]
    if filters.group == "doctor":
        keys += [ErsRequest.user_id, User.full_name, Staff.last_name, Staff.first_name, Staff.middle_name]
        order = [
            period,
            Mo.short_name,
            Mo.id,
            func.coalesce(Staff.last_name, User.full_name),
            ErsRequest.user_id,
        ]
    elif filters.group == "patient":
        keys += [ErsRequest.patient_id, Patient.last_name, Patient.first_name, Patient.middle_name]
        order = [period, Mo.short_name, Mo.id, Patient.last_name, Patient.first_name, ErsRequest.patient_id]
    stmt = _joined(db.select(*keys, *_counts(aggregate=True)), filters.group)
    stmt = stmt.where(*where).group_by(*keys).order_by(*order)
    return scoped(stmt, ErsRequest.mo_id, user)


@dataclass
class ReportRow:
    period: str
    mo: str
    name: str | None = None  # doctor or patient; the patient for «Реестр»
    method: str | None = None  # «Реестр»: what was asked
    status: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, key: str) -> int:
        return self.counts[key]


def _person(record: Any) -> str | None:
    if not record.last_name:
        return None
    return join_name(record.last_name, record.first_name, record.middle_name)


def _row(filters: ReportFilters, record: Any) -> ReportRow:
    counts = {key: int(getattr(record, key) or 0) for key, _, _ in COUNTS}
    if filters.group == "registry":
        return ReportRow(
            f"{record.at:%d.%m.%Y %H:%M}",
            record.mo,
            _person(record) or NO_PATIENT,
            METHODS.get(record.method, record.method),
            STATUSES.get(record.status, record.status),
            counts,
        )
    name = None
    if filters.group == "doctor":  # named as the staff record when the account is linked to one
        name = _person(record) or record.full_name or NO_USER
    elif filters.group == "patient":
        name = _person(record) or NO_PATIENT
    return ReportRow(record.period, record.mo, name, counts=counts)


@dataclass
class ReportPage:
    rows: list[ReportRow]
    total: int
    page: int
    pages: int
    totals: dict[str, int]


def count_rows(filters: ReportFilters, user: Any) -> int:
    stmt = report_query(filters, user).order_by(None)
    return db.session.scalar(db.select(func.count()).select_from(stmt.subquery())) or 0


def totals(filters: ReportFilters, user: Any) -> dict[str, int]:
    """«Итого» over every row of the report, not only the page shown."""
    stmt = _joined(db.select(*_counts(aggregate=True)), filters.group)
    stmt = scoped(stmt.where(*_conditions(filters), *_search(filters)), ErsRequest.mo_id, user)
    record = db.session.execute(stmt).one()
    return {key: int(getattr(record, key) or 0) for key, _, _ in COUNTS}


def report_page(filters: ReportFilters, user: Any) -> ReportPage:
    """One page of the report on screen (rows per page 10 / 30 / 50, LIMIT/OFFSET)."""
    total = count_rows(filters, user)
    page, pages = page_count(total, filters.per_page, filters.page)
    stmt = report_query(filters, user).limit(filters.per_page).offset((page - 1) * filters.per_page)
    rows = [_row(filters, record) for record in db.session.execute(stmt)]
    return ReportPage(rows, total, page, pages, totals(filters, user))


def iter_rows(filters: ReportFilters, user: Any, chunk: int = 500) -> Iterator[ReportRow]:
    """Every row of the report, streamed from the database `chunk` at a time (server-side cursor
    on PostgreSQL), for the PDF."""
    result = db.session.execute(report_query(filters, user).execution_options(yield_per=chunk))
    try:
        for record in result:
            yield _row(filters, record)
    finally:
        result.close()


# --- the period tree -------------------------------------------------------------------------------


@dataclass
class PeriodNode:
    label: str  # "2024", "2024-05", "2024-05-17"
    children: list[PeriodNode] = field(default_factory=list)
    checked: bool = False
    open: bool = False  # something inside is ticked: the branch is shown unfolded


def period_tree(filters: ReportFilters, user: Any) -> list[PeriodNode]:
    """Years → months → days that have data for the source in the user's (or chosen) МО."""
    column = _date_column(filters.source)
    day = _period_label(column, "day")
    stmt = scoped(db.select(day).where(*_conditions(filters, periods=False)), ErsRequest.mo_id, user)
    days = sorted({label for label in db.session.scalars(stmt.distinct()) if label})
    chosen = set(filters.periods)
    years: dict[str, PeriodNode] = {}
    months: dict[str, PeriodNode] = {}
    for label in days:
        year_label, month_label = label[:4], label[:7]
        year = years.setdefault(year_label, PeriodNode(year_label, checked=year_label in chosen))
        month = months.get(month_label)
        if month is None:
            month = months[month_label] = PeriodNode(month_label, checked=month_label in chosen)
            year.children.append(month)
        month.children.append(PeriodNode(label, checked=label in chosen))
    for year in years.values():
        for month in year.children:
            month.open = any(d.checked for d in month.children)
        year.open = any(m.checked or m.open for m in year.children)
    return list(years.values())


# --- the PDF ---------------------------------------------------------------------------------------


def queue_pdf(filters: ReportFilters, user: Any) -> ReportRun:
    """«Печать / PDF»: a ReportRun for the job «Формирование отчётов» (flushes, never commits)."""
    run = ReportRun(
        kind=KIND,
        title=TITLE,
        params=filters.query_args(page=1, per_page=ROWS_PER_PAGE[0]),
        user_id=user.id,
        mo_id=filters.mo_id,
        total=count_rows(filters, user),
    )
    db.session.add(run)
    db.session.flush()
    return run


def pdf_columns(filters: ReportFilters) -> list[Column]:
    """The PDF's columns, widths in characters (at most LINE_CHARS with the separators)."""
    counts = [Column(heading, max(5, len(heading)), "right") for _, _, heading in COUNTS]
    if filters.group == "registry":
        return [
            Column("Дата", 16),
            Column("М.О.", 28),
            Column("Пациент", 36),
            Column("Запрос", 12),
            Column("Статус", 22),
            *counts,
        ]
    columns = [Column("Дата", 10)]
    if filters.show_mo:
        columns.append(Column("М.О.", 40 if filters.group == "mo" else 34))
    if filters.group != "mo":
        columns.append(Column(filters.name_heading, 44))
    return columns + counts


def pdf_cells(filters: ReportFilters) -> Any:
    keys = [key for key, _, _ in COUNTS]
    if filters.group == "registry":
        return lambda row: [row.period, row.mo, row.name, row.method, row.status, *(row[k] for k in keys)]
    show_mo, show_name = filters.show_mo, filters.group != "mo"
    return lambda row: [
        row.period,
        *([row.mo] if show_mo else []),
        *([row.name] if show_name else []),
        *(row[k] for k in keys),
    ]


def render_report_run(run: ReportRun, out_path: Path, progress: Progress) -> int:
    """The renderer of "ers_requests" runs: the user's filters, checked again for that user."""
    user = db.session.get(User, run.user_id) if run.user_id else None
    if user is None or not user.can("ers.view"):
        raise RenderError("Отчёт заказал пользователь, которому он больше недоступен.")
    try:
        filters = ReportFilters.parse(run.params or {}, user)
    except FilterError as error:
        raise RenderError(error.message) from None
    mo = db.session.get(Mo, filters.mo_id) if filters.mo_id else None
    report = TableReport(
        template="ers/report_pdf.html",
        title=run.title or TITLE,
        columns=pdf_columns(filters),
        cells=pdf_cells(filters),
        total_rows=count_rows(filters, user),
        rows=iter_rows(filters, user),
        context={
            "filters_text": filters.described(mo.short_name if mo else None),
            "printed_at": utcnow(),
            "printed_by": user,
        },
    )
    return render_table_pdf(report, out_path, progress)


register_renderer(KIND, render_report_run)
