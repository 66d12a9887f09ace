"""Queries behind «Реестр СЭМД ВИМИС АКИНЕО» (V-6 … V-10): filters, keyset pages, legend, journal.

The registry grows to a million rows, so every query here is bounded by the МО and the period
and rides an index of `semd`: pages go down (mo_id, event_at, id) with a keyset cursor and
never count the whole table. The legend counts each status as its own index-only range of
(mo_id, status, event_at); when other filters make counting read rows (doctor, patient,
Мероприятие, СЭМД, or all МО), the page leaves the legend to a fragment loaded after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, func, literal, select, text, tuple_
from sqlalchemy.orm import aliased

from portal.auth.scoping import may_see_mo, scoped
from portal.clinical.models import EVENT_KINDS, Department, Mo, Patient, Staff, join_name
from portal.exchange.models import JournalEntry, WorkItem
from portal.extensions import db
from portal.filters import MAX_ID, FilterError, filter_date, filter_mo, filter_period, parse_cursor, parse_id  # noqa: F401  (FilterError: routes)
from portal.vimis import models as m
from portal.vimis.semd_types import SEMD_TYPES, TRIGGER_KINDS

DEFAULT_DAYS = 30  # «Даты мероприятий» default: the last 30 days
MAX_PATIENT_QUERY = 100
PATIENT_IDS_LIMIT = 500  # «Пациент» matching more patients than this is checked row by row
JOURNAL_LIMIT = 500  # lines of one SEMD's journal shown at once

# Мероприятие filter: the trigger events of V-1 in the order of EVENT_KINDS.
TRIGGER_EVENT_KINDS: dict[str, str] = {k: v for k, v in EVENT_KINDS.items() if k in TRIGGER_KINDS}







@dataclass
class RegistryFilters:
    """The registry's filters as the URL carries them (mo, doctor, from, to, patient, mass, kind,
    status, semd); the МО is already forced to the user's own unless they are central."""

    mo_id: int | None
    date_from: date
    date_to: date
    doctor_id: int | None = None
    patient: str = ""
    kind: str | None = None
    status: str | None = None
    semd_type: int | None = None
    mass: bool = False
    patient_clause: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def index_only(self) -> bool:
        """Only МО, period and status: the legend counts come from the (mo_id, status, event_at) index."""
        return self.doctor_id is None and not self.patient and self.kind is None and self.semd_type is None

    @property
    def cheap_legend(self) -> bool:
        """One МО and index-only filters: the page counts its legend inline; otherwise the legend
        is a fragment of its own that the page loads after itself."""
        return self.index_only and self.mo_id is not None

    @classmethod
    def parse(cls, args: Mapping[str, str], user: Any, today: date | None = None) -> RegistryFilters:
        """Read and check the request's filters; FilterError with a Russian message otherwise."""
        today = today or date.today()
        mo_id = filter_mo(args, user)

        date_from, date_to = filter_period(args, today, DEFAULT_DAYS)

        doctor_id = None
        raw_doctor = (args.get("doctor") or "").strip()
        if raw_doctor:
            doctor_id = parse_id(raw_doctor, f"Некорректный врач «{raw_doctor}».")
            doctor_mo = db.session.scalar(select(Staff.mo_id).where(Staff.id == doctor_id))
            if doctor_mo is None:
                raise FilterError(f"Врач с кодом {doctor_id} не найден.", 404)
            if not may_see_mo(doctor_mo, user):
                raise FilterError("Данные другой медицинской организации недоступны.", 403)
            if mo_id is not None and doctor_mo != mo_id:
                doctor_id = None  # ЦОД switched to another МО: its doctors replace the old choice

        patient = (args.get("patient") or "").strip()[:MAX_PATIENT_QUERY]

        kind = (args.get("kind") or "").strip() or None
        if kind is not None and kind not in TRIGGER_EVENT_KINDS:
            raise FilterError(f"Неизвестное мероприятие «{kind}».")

        status = (args.get("status") or "").strip() or None
        if status is not None and status not in m.STATUSES:
            raise FilterError(f"Неизвестный статус «{status}».")

        semd_type = None
        raw_type = (args.get("semd") or "").strip()
        if raw_type:
            semd_type = parse_id(raw_type, f"Неизвестный тип СЭМД «{raw_type}».")
            if semd_type not in SEMD_TYPES:
                raise FilterError(f"Неизвестный тип СЭМД «{raw_type}».")

        mass = (args.get("mass") or "") in ("1", "on", "true")
        return cls(
            mo_id=mo_id,
            date_from=date_from,
            date_to=date_to,
            doctor_id=doctor_id,
            patient=patient,
            kind=kind,
            status=status,
            semd_type=semd_type,
            mass=mass,
        )

    def query_args(self, **changes: Any) -> dict[str, str]:
        """The filters as URL arguments (for links, hidden inputs and redirects)."""
        values = {
            "mo": self.mo_id,
            "doctor": self.doctor_id,
            "from": self.date_from.isoformat(),
            "to": self.date_to.isoformat(),
            "patient": self.patient,
            "mass": "1" if self.mass else None,
            "kind": self.kind,
            "status": self.status,
            "semd": self.semd_type,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in (None, "")}


def _name_prefix(column: Any, part: str) -> Any:
    """A name starting with `part`, as a range the name index can serve plus ILIKE for the case.

    Names are stored capitalised and SQLite folds only ASCII case, so the stored form is matched.
    """
    stored = part[:1].upper() + part[1:]
    upper = stored[:-1] + chr(ord(stored[-1]) + 1)
    return and_(
        column >= stored, column < upper, column.ilike(stored.replace("%", "").replace("_", "") + "%")
    )


def _patient_condition(text: str) -> Any:
    """«Пациент»: a number is the patient's id; words are prefixes of surname, name, patronymic.

    The matching patients are looked up first: a few hundred become an id list that the
    (patient_id, event_at) index serves; a broader prefix («И») is checked row by row (EXISTS)
    while the МО and period index drives, never by walking every matching patient's SEMDs.
    """
    if text.isdigit():
        number = int(text)
        return m.Semd.patient_id == number if number <= MAX_ID else m.Semd.patient_id.is_(None)
    parts = [p for p in text.split() if p.strip("%_")]
    if not parts:
        return m.Semd.patient_id.is_(None)

    def names(p: Any) -> list[Any]:
        return [
            _name_prefix(col, part)
            for col, part in zip((p.last_name, p.first_name, p.middle_name), parts, strict=False)
        ]

    ids = db.session.scalars(select(Patient.id).where(*names(Patient)).limit(PATIENT_IDS_LIMIT + 1)).all()
    if len(ids) <= PATIENT_IDS_LIMIT:
        return m.Semd.patient_id.in_(ids)
    other = aliased(Patient)  # the page query joins Patient itself: no auto-correlation
    return select(other.id).where(other.id == m.Semd.patient_id, *names(other)).exists()


def _conditions(filters: RegistryFilters, with_status: bool = True) -> list[Any]:
    semd = m.Semd
    conditions: list[Any] = [
        semd.event_at >= datetime.combine(filters.date_from, time.min),
        semd.event_at < datetime.combine(filters.date_to + timedelta(days=1), time.min),
    ]
    if filters.mo_id is not None:
        conditions.append(semd.mo_id == filters.mo_id)
    if filters.doctor_id is not None:
        conditions.append(semd.doctor_id == filters.doctor_id)
    if filters.patient:
        if filters.patient_clause is None:  # looked up once per request: the page and the legend share it
            filters.patient_clause = _patient_condition(filters.patient)
        conditions.append(filters.patient_clause)
    if filters.kind is not None:
        conditions.append(semd.event_kind == filters.kind)
    if filters.semd_type is not None:
        conditions.append(semd.semd_type == filters.semd_type)
    if with_status and filters.status is not None:
        conditions.append(semd.status == filters.status)
    return conditions


def _custom_plans(filters: RegistryFilters) -> None:
    """PostgreSQL, «Пациент» filter: plan the query for its actual values.

    psycopg prepares a statement after five runs, and PostgreSQL may then reuse a generic plan
    that guesses the patient check keeps one row in a hundred: it sorts a whole year of a large
    МО (300 ms) instead of walking the (mo_id, event_at, id) index (10 ms). The other filters
    keep good generic plans and skip the extra planning. SET LOCAL ends with the transaction.
    """
    if filters.patient and db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


@dataclass(slots=True)
class RegistryRow:
    """One registry line: the SEMD's own columns and the names the table shows.

    A page reads plain columns (no ORM identity map, no lazy loads); single-row fragments
    build the same thing from a loaded `Semd` with `of`.
    """

    id: int
    semd_type: int
    send_number: int
    status: str
    event_at: datetime
    event_kind: str
    gestation_weeks: int | None
    care_conditions: str | None
    last_message: str | None
    last_message_at: datetime | None
    patient_name: str
    birth_date: date | None
    doctor_name: str
    department_name: str
    mo_name: str

    @property
    def label(self) -> str:
        return f"СЭМД {self.semd_type}"

    @property
    def status_label(self) -> str:
        return m.STATUSES.get(self.status, self.status)

    @property
    def colour(self) -> str:
        return m.STATUS_COLOURS.get(self.status, "black")

    @classmethod
    def of(cls, semd: m.Semd) -> RegistryRow:
        doctor, department = semd.doctor, semd.department
        return cls(
            semd.id,
            semd.semd_type,
            semd.send_number,
            semd.status,
            semd.event_at,
            semd.event_kind,
            semd.gestation_weeks,
            semd.care_conditions,
            semd.last_message,
            semd.last_message_at,
            semd.patient.full_name,
            semd.patient.birth_date,
            doctor.full_name if doctor else "",
            department.name if department else "",
            semd.mo.short_name,
        )


@dataclass
class RegistryPage:
    rows: list[RegistryRow]
    next_cursor: str | None  # «Показать ещё»: "event_at-iso|id" of the last row, None at the end



def registry_page(
    filters: RegistryFilters, user: Any, before: tuple[datetime, int] | None, limit: int
) -> RegistryPage:
    """One page of SEMDs, newest event first, with the related names in the same query.

    The semd table drives the plan: (mo_id, event_at, id) gives the order and the keyset
    bound, the joins are primary-key lookups for at most `limit` + 1 rows.
    """
    s = m.Semd
    with_mo = filters.mo_id is None  # all МО (ЦОД): the table names each row's МО
    stmt = (
        scoped(
            select(
                s.id,
                s.semd_type,
                s.send_number,
                s.status,
                s.event_at,
                s.event_kind,
                s.gestation_weeks,
                s.care_conditions,
                s.last_message,
                s.last_message_at,
                Patient.last_name,
                Patient.first_name,
                Patient.middle_name,
                Patient.birth_date,
                Staff.last_name.label("doctor_last"),
                Staff.first_name.label("doctor_first"),
                Staff.middle_name.label("doctor_middle"),
                Department.name.label("department"),
                (Mo.short_name if with_mo else literal("")).label("mo_name"),
            ),
            s.mo_id,
            user,
        )
        .select_from(s)
        .join(Patient, Patient.id == s.patient_id)
        .outerjoin(Staff, Staff.id == s.doctor_id)
        .outerjoin(Department, Department.id == s.department_id)
        .where(*_conditions(filters))
    )
    if with_mo:
        stmt = stmt.join(Mo, Mo.id == s.mo_id)
    if before is not None:
        stmt = stmt.where(tuple_(s.event_at, s.id) < tuple_(*before))
    _custom_plans(filters)
    result = db.session.execute(stmt.order_by(s.event_at.desc(), s.id.desc()).limit(limit + 1)).all()
    rows = [
        RegistryRow(
            r.id,
            r.semd_type,
            r.send_number,
            r.status,
            r.event_at,
            r.event_kind,
            r.gestation_weeks,
            r.care_conditions,
            r.last_message,
            r.last_message_at,
            join_name(r.last_name, r.first_name, r.middle_name),
            r.birth_date,
            join_name(r.doctor_last, r.doctor_first, r.doctor_middle),
            r.department or "",
            r.mo_name or "",
        )
        for r in result
    ]
    cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        cursor = f"{rows[-1].event_at.isoformat()}|{rows[-1].id}"
    return RegistryPage(rows, cursor)


def status_counts(filters: RegistryFilters, user: Any) -> dict[str, int]:
    """The legend: SEMDs in each status under the current filters except the status itself.

    With only МО and period, one scalar subquery per status: each is a range of the
    (mo_id, status, event_at) index and never touches the table. Any other filter (doctor,
    patient, Мероприятие, СЭМД) needs the rows anyway: then one pass with GROUP BY over the
    range its own index gives.
    """
    _custom_plans(filters)
    base = _conditions(filters, with_status=False)
    counts = dict.fromkeys(m.STATUSES, 0)
    if not filters.index_only:
        stmt = scoped(select(m.Semd.status, func.count()), m.Semd.mo_id, user).where(*base)
        for status, count in db.session.execute(stmt.group_by(m.Semd.status)):
            if status in counts:
                counts[status] = count
        return counts
    if filters.mo_id is None:  # lets each range start from the МО column of the index
        base.append(m.Semd.mo_id.in_(select(Mo.id)))
    columns = [
        scoped(select(func.count()).select_from(m.Semd), m.Semd.mo_id, user)
        .where(*base, m.Semd.status == status)
        .scalar_subquery()
        .label(status)
        for status in m.STATUSES
    ]
    row = db.session.execute(select(*columns)).one()
    counts.update({status: int(row._mapping[status] or 0) for status in m.STATUSES})
    return counts


def doctor_choices(filters: RegistryFilters) -> list[Any]:
    """«Врач»: staff of the selected МО (ЦОД without an МО picks one first)."""
    if filters.mo_id is None:
        if filters.doctor_id is None:
            return []
        where = Staff.id == filters.doctor_id
    else:
        where = Staff.mo_id == filters.mo_id
    return list(
        db.session.execute(
            select(Staff.id, Staff.last_name, Staff.first_name, Staff.middle_name)
            .where(where)
            .order_by(Staff.last_name, Staff.first_name, Staff.middle_name, Staff.id)
        )
    )


def load_scoped(ids: list[int], user: Any) -> list[m.Semd]:
    """SEMDs chosen for a mass operation; 404 / 403 (FilterError) if any is absent or foreign."""
    wanted = set(ids)
    rows = list(db.session.scalars(select(m.Semd).where(m.Semd.id.in_(wanted)).order_by(m.Semd.id)))
    if len(rows) != len(wanted):
        raise FilterError("Некоторые из выделенных СЭМД не найдены. Обновите страницу.", 404)
    if not all(may_see_mo(row.mo_id, user) for row in rows):
        raise FilterError("Данные другой медицинской организации недоступны.", 403)
    return rows


@dataclass
class VersionView:
    version: m.SemdVersion
    answers: list[JournalEntry] = field(default_factory=list)  # lines that carry ВИМИС's envelope


@dataclass
class SemdJournal:
    entries: list[JournalEntry]  # oldest first
    versions: list[VersionView]


def semd_journal(semd: m.Semd) -> SemdJournal:
    """Everything that happened to one SEMD (V-8): the journal lines and each version's answers."""
    entries = list(
        db.session.scalars(
            select(JournalEntry)
            .where(JournalEntry.subject_type == "semd", JournalEntry.subject_id == semd.id)
            .order_by(JournalEntry.id.desc())
            .limit(JOURNAL_LIMIT)
        )
    )
    entries.reverse()
    versions = list(
        db.session.scalars(
            select(m.SemdVersion).where(m.SemdVersion.semd_id == semd.id).order_by(m.SemdVersion.number)
        )
    )
    views = {v.id: VersionView(v) for v in versions}
    item_ids = {e.item_id for e in entries if e.item_id is not None and e.answer}
    if item_ids:
        item_version = dict(
            db.session.execute(
                select(WorkItem.id, WorkItem.subject_id).where(
                    WorkItem.id.in_(item_ids), WorkItem.subject_type == "semd_version"
                )
            ).all()
        )
        for entry in entries:
            view = views.get(item_version.get(entry.item_id))
            if view is not None and entry.answer:
                view.answers.append(entry)
    return SemdJournal(entries, [views[v.id] for v in versions])


def newest_error(semd: m.Semd) -> str | None:
    """The newest error line of the SEMD's journal (what the user must fix)."""
    return db.session.scalar(
        select(JournalEntry.message)
        .where(
            JournalEntry.subject_type == "semd",
            JournalEntry.subject_id == semd.id,
            JournalEntry.level == "error",
        )
        .order_by(JournalEntry.id.desc())
        .limit(1)
    )
