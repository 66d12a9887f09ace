"""Queries and the manual start behind «Журнал работы сервисов» (T-11).

Services are the registered jobs; each run of one is a ServiceRun, its steps JournalEntry rows
carrying the run's id. A central administrator sees every run with its stored counts. An МО
administrator or statistician sees region-wide runs and their own МО's runs; for a region-wide
run the stored counts cover the whole region, so theirs are counted from their МО's entries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from lxml import etree
from sqlalchemy import String, and_, case, cast, distinct, false, func, literal, not_, or_, tuple_
from sqlalchemy.orm import aliased

from jobs.scheduler import JobDef, load_jobs, run_job
from portal.admin import services as admin_services
from portal.admin.audit import audit
from portal.admin.registry import SettingDef, register_setting
from portal.auth.models import User
from portal.auth.scoping import scoped
from portal.clinical.models import Mo
from portal.exchange.models import (
    RUN_ERROR,
    RUN_OK,
    RUN_RESULTS,
    RUN_RUNNING,
    STATES,
    JournalEntry,
    ServiceRun,
)
from portal.extensions import db
from portal.models_base import utcnow

log = logging.getLogger("journal")

MANUAL_RUN_INTERVAL = register_setting(
    SettingDef(
        "journal.manual_run_interval",
        "Журнал работы сервисов",
        "Ручной запуск сервиса не чаще, с",
        "seconds",
        "3600",
    )
)
admin_services.ACTION_LABELS.setdefault("journal.run", "Ручной запуск сервиса")
admin_services.ACTION_GROUPS.setdefault("journal.*", "Журнал работы сервисов")
admin_services.OBJECT_LABELS.setdefault("ServiceRun", "Запуск сервиса")

RESULT_CLASSES = {RUN_RUNNING: "blue", RUN_OK: "green", RUN_ERROR: "red"}
PRINT_LIMIT = 1000  # rows in a printed list or a printed detailed log
RUN_ROW_WAIT = 3.0  # seconds the start request waits for the background run to show up


class JournalError(Exception):
    """A refusal users read: unknown service, a manual start too soon."""


@dataclass
class RunRow:
    """A run as the user may see it: counts and result for their МО where the run was region-wide."""

    run: ServiceRun
    total: int
    errors: int
    result: str

    @property
    def result_label(self) -> str:
        return RUN_RESULTS.get(self.result, self.result)

    @property
    def result_class(self) -> str:
        return RESULT_CLASSES.get(self.result, "")

    @property
    def running(self) -> bool:
        return self.result == RUN_RUNNING


@dataclass
class ServiceSummary:
    job: JobDef
    last: RunRow | None

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def title(self) -> str:
        return self.job.title_ru


@dataclass
class Page:
    rows: list[Any]
    next_cursor: str | None


# --- scoping and counts -------------------------------------------------------------------------


# Services a user without «journal.all_services» (a statistician, seed 4.6.1) may see: ТФОМС's.
TFOMS_SERVICE_PREFIX = "tfoms"


def service_visible(user: User, service: str) -> bool:
    return user.can("journal.all_services") or service.startswith(TFOMS_SERVICE_PREFIX)


def _scope_runs(stmt, user: User, entity: Any = ServiceRun):
    """Runs a user may see: all for ЦОД; region-wide ones and their own МО's for everyone else;
    a statistician only those of the ТФОМС services."""
    if not user.can("journal.all_services"):
        stmt = stmt.where(entity.service.startswith(TFOMS_SERVICE_PREFIX))
    if user.is_central:
        return stmt
    if user.mo_id is None:
        return stmt.where(false())
    return stmt.where(or_(entity.mo_id.is_(None), entity.mo_id == user.mo_id))


def _scope_entries(stmt, user: User):
    """Entries a user may see: all for ЦОД, only their own МО's for everyone else."""
    return scoped(stmt, JournalEntry.mo_id, user)


def _counted_items(user: User, errors_only: bool):
    """Distinct packets of the outer run in the user's scope, as a correlated subquery: work items,
    and the subjects of lines without one (files exchanged with ТФОМС), as `runs.RunTally` counts."""
    packet = case(
        (JournalEntry.item_id.is_not(None), literal("i") + cast(JournalEntry.item_id, String)),
        else_=JournalEntry.subject_type + literal(":") + cast(JournalEntry.subject_id, String),
    )
    stmt = db.select(func.count(distinct(packet))).where(JournalEntry.run_id == ServiceRun.id)
    if errors_only:
        stmt = stmt.where(JournalEntry.level == "error")
    return _scope_entries(stmt, user).scalar_subquery()


def _run_columns(user: User) -> tuple[Any, Any, Any]:
    """(total, errors, result) as SQL expressions for the user.

    Stored counts are written when a run ends and cover the run's whole scope. While a run is
    working they are counted from its entries so far; for an МО user a region-wide run is always
    counted from their МО's entries, and its result is «Завершено с ошибкой» for them only if
    their own packets failed (a run that broke with an exception stays an error for everyone).
    """
    if user.is_central:
        live = ServiceRun.result == RUN_RUNNING
    else:
        live = or_(ServiceRun.mo_id.is_(None), ServiceRun.result == RUN_RUNNING)
    total = case((live, _counted_items(user, False)), else_=ServiceRun.total)
    errors = case((live, _counted_items(user, True)), else_=ServiceRun.errors)
    result: Any = ServiceRun.result
    if not user.is_central:
        only_packets_failed = and_(
            ServiceRun.mo_id.is_(None), ServiceRun.result == RUN_ERROR, ServiceRun.message.is_(None)
        )
        result = case(
            (only_packets_failed, case((errors > 0, RUN_ERROR), else_=RUN_OK)), else_=ServiceRun.result
        )
    return total, errors, result


def _run_select(user: User):
    total, errors, result = _run_columns(user)
    stmt = db.select(ServiceRun, total.label("total"), errors.label("errors"), result.label("result"))
    return _scope_runs(stmt, user), total, errors, result


def _rows(result) -> list[RunRow]:
    return [RunRow(run, int(total or 0), int(errors or 0), str(res)) for run, total, errors, res in result]


# --- services, runs, entries ----------------------------------------------------------------------


def job_list(user: User | None = None) -> list[JobDef]:
    """Every registered job (that the user may see), by its Russian title."""
    jobs = [job for job in load_jobs().values() if user is None or service_visible(user, job.name)]
    return sorted(jobs, key=lambda job: job.title_ru.lower())


def get_job(name: str | None, user: User | None = None) -> JobDef | None:
    job = load_jobs().get(name) if name else None
    return job if job is not None and (user is None or service_visible(user, job.name)) else None


def service_list(user: User) -> list[ServiceSummary]:
    """Every service the user may see with its latest run the user may see."""
    jobs = job_list(user)
    latest_run = aliased(ServiceRun)
    latest_ids = _scope_runs(
        db.select(func.max(latest_run.id)).group_by(latest_run.service), user, latest_run
    )
    stmt, *_ = _run_select(user)
    last = {
        row.run.service: row for row in _rows(db.session.execute(stmt.where(ServiceRun.id.in_(latest_ids))))
    }
    return [ServiceSummary(job, last.get(job.name)) for job in jobs]


def run_log(
    user: User,
    service: str,
    *,
    status: str | None = None,
    show_empty: bool = False,
    after: str | None = None,
    limit: int = 50,
) -> Page:
    """Runs of one service, newest first, keyset-paged by (started_at, id).

    Without `show_empty`, runs that finished successfully with no packets are left out (the
    scheduler runs most services every minute); running, failed and manual runs always stay.
    """
    stmt, total, _errors, result = _run_select(user)
    stmt = stmt.where(ServiceRun.service == service)
    if status:
        stmt = stmt.where(result == status)
    if not show_empty:
        stmt = stmt.where(not_(and_(result == RUN_OK, total == 0, ServiceRun.manual.is_(False))))
    if after:
        at_text, _, ident = after.partition("|")
        stmt = stmt.where(
            tuple_(ServiceRun.started_at, ServiceRun.id) < tuple_(datetime.fromisoformat(at_text), int(ident))
        )
    stmt = stmt.order_by(ServiceRun.started_at.desc(), ServiceRun.id.desc()).limit(limit + 1)
    rows = _rows(db.session.execute(stmt))
    cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        cursor = f"{rows[-1].run.started_at.isoformat()}|{rows[-1].run.id}"
    return Page(rows, cursor)


def get_run(run_id: int, user: User) -> RunRow | None:
    """One run in the user's scope; None when absent or of another МО (the view answers 404)."""
    stmt, *_ = _run_select(user)
    rows = _rows(db.session.execute(stmt.where(ServiceRun.id == run_id)))
    return rows[0] if rows else None


def run_entries(run: ServiceRun, user: User, *, after: int | None = None, limit: int = 100) -> Page:
    """The detailed log of a run in the user's scope, oldest first, keyset-paged by id."""
    stmt = _scope_entries(db.select(JournalEntry).where(JournalEntry.run_id == run.id), user)
    if after is not None:
        stmt = stmt.where(JournalEntry.id > after)
    rows = list(db.session.scalars(stmt.order_by(JournalEntry.id).limit(limit + 1)))
    cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        cursor = str(rows[-1].id)
    return Page(rows, cursor)


def mo_names(ids: set[int | None]) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return dict(db.session.execute(db.select(Mo.id, Mo.short_name).where(Mo.id.in_(ids))).all())


def user_names(ids: set[int | None]) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return dict(db.session.execute(db.select(User.id, User.full_name).where(User.id.in_(ids))).all())


def state_label(state: str | None) -> str:
    return STATES.get(state, state) if state else ""


# --- «Данные пакета» as «Тег: Данные» -------------------------------------------------------------

MAX_LINES = 40
MAX_VALUE = 300
BASE64_MIN = 200
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_XML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, remove_comments=True, remove_pis=True, huge_tree=False
)


@dataclass
class PacketData:
    lines: list[tuple[str, str]]  # (tag, data); tag "" for lines of plain text
    more: int = 0  # lines left out beyond MAX_LINES


def _shown(value: str) -> str:
    """A value for one line: base64 blobs by their size, long text cut, whitespace collapsed."""
    value = value.strip()
    if len(value) > BASE64_MIN and _BASE64.fullmatch(value):
        compact = re.sub(r"\s+", "", value)
        size = len(compact) * 3 // 4 - compact[-2:].count("=")
        return f"<base64, {size} байт>"
    value = " ".join(value.split())
    return value if len(value) <= MAX_VALUE else value[:MAX_VALUE] + "…"


def _xml_lines(text: str) -> list[tuple[str, str]] | None:
    try:
        root = etree.fromstring(_XML_DECLARATION.sub("", text, count=1), _XML_PARSER)
    except (etree.XMLSyntaxError, ValueError):
        return None
    lines = []
    for element in root.iter():
        if not isinstance(element.tag, str) or len(element):
            continue
        value = (element.text or "").strip()
        if value:
            lines.append((etree.QName(element).localname, _shown(value)))
    return lines


def _json_lines(text: str) -> list[tuple[str, str]] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    lines: list[tuple[str, str]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif value is not None and value != "":
            shown = json.dumps(value, ensure_ascii=False) if isinstance(value, bool) else str(value)
            lines.append((path or "значение", _shown(shown)))

    walk(data, "")
    return lines


def packet_lines(text: str | None) -> PacketData:
    """«Тег: Данные» lines of a packet or an answer: XML leaves, flattened JSON, or plain text."""
    if not text or not text.strip():
        return PacketData([])
    start = text.lstrip()[:1]
    lines = None
    if start == "<":
        lines = _xml_lines(text)
    elif start in "{[":
        lines = _json_lines(text)
    if lines is None:
        lines = [("", _shown(line)) for line in text.splitlines() if line.strip()]
    return PacketData(lines[:MAX_LINES], max(0, len(lines) - MAX_LINES))


# --- «Запуск» ---------------------------------------------------------------------------------------


_launch_lock = threading.Lock()


@dataclass
class ManualRun:
    job: JobDef
    run_id: int | None  # None if the background run had not shown up within RUN_ROW_WAIT
    thread: threading.Thread | None  # None when run with wait=True


def manual_run_interval() -> int:
    """Seconds between manual runs of one service (0: no limit)."""
    raw = admin_services.get_setting(MANUAL_RUN_INTERVAL.key)
    try:
        return max(0, int(raw))
    except (TypeError, ValueError):
        return int(MANUAL_RUN_INTERVAL.default)


def run_scope(user: User) -> int | None:
    """The МО a manual run of this user covers: the region for ЦОД, their own МО otherwise."""
    return None if user.is_central else user.mo_id


def last_manual_run(service: str, mo_id: int | None) -> ServiceRun | None:
    """The latest manual run that covered this scope: region-wide ones count for every МО."""
    stmt = db.select(ServiceRun).where(ServiceRun.service == service, ServiceRun.manual.is_(True))
    if mo_id is None:
        stmt = stmt.where(ServiceRun.mo_id.is_(None))
    else:
        stmt = stmt.where(or_(ServiceRun.mo_id.is_(None), ServiceRun.mo_id == mo_id))
    return db.session.scalar(stmt.order_by(ServiceRun.started_at.desc(), ServiceRun.id.desc()).limit(1))


def next_manual_run_at(service: str, mo_id: int | None) -> tuple[ServiceRun | None, datetime | None]:
    """(last manual run, when the next one is allowed) — the second is None when allowed now."""
    interval = manual_run_interval()
    last = last_manual_run(service, mo_id)
    if last is None or interval <= 0:
        return last, None
    allowed_at = last.started_at + timedelta(seconds=interval)
    return last, (allowed_at if allowed_at > utcnow() else None)


def _when(moment: datetime, now: datetime) -> str:
    return f"{moment:%H:%M}" if moment.date() == now.date() else f"{moment:%H:%M} {moment:%d.%m.%Y}"


def manual_run_refusal(job: JobDef, mo_id: int | None) -> str | None:
    last, allowed_at = next_manual_run_at(job.name, mo_id)
    if allowed_at is None:
        return None
    now = utcnow()
    return (
        f"Сервис «{job.title_ru}» уже запускался вручную в {_when(last.started_at, now)}; "
        f"следующий ручной запуск возможен после {_when(allowed_at, now)}."
    )


def _run_in_background(app: Flask, name: str, **kwargs: Any) -> None:
    """The thread's target: run_job records the run and logs a failure; nothing more to do here."""
    with contextlib.suppress(Exception):
        run_job(app, name, **kwargs)


def _await_run(service: str, user_id: int, after_id: int, timeout: float) -> ServiceRun | None:
    """The run row the launched job committed, polled until `timeout` (it commits it first thing)."""
    deadline = time.monotonic() + timeout
    while True:
        run = db.session.scalar(
            db.select(ServiceRun)
            .where(
                ServiceRun.service == service,
                ServiceRun.manual.is_(True),
                ServiceRun.user_id == user_id,
                ServiceRun.id > after_id,
            )
            .order_by(ServiceRun.id.desc())
            .limit(1)
        )
        if run is not None or time.monotonic() >= deadline:
            return run
        db.session.rollback()  # a fresh transaction sees the other thread's commit (SQLite keeps a snapshot)
        time.sleep(0.05)


def start_manual_run(name: str, user: User, *, wait: bool = False, app: Flask | None = None) -> ManualRun:
    """«Запуск»: run the service now for the user's scope, at most once per configured interval.

    The job runs in a daemon thread (its run row appears as «Выполняется» at once); with
    `wait=True` it runs here and returns when done, which tests use. Audited; commits.
    Raises JournalError with the Russian refusal.
    """
    job = get_job(name, user)
    if job is None:
        raise JournalError(f"Сервис «{name}» не найден.")
    mo_id = run_scope(user)
    if not user.is_central and mo_id is None:
        raise JournalError("У пользователя не указана МО: ручной запуск недоступен.")
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    user_id = user.id
    with _launch_lock:  # two quick clicks in one process start one run
        refusal = manual_run_refusal(job, mo_id)
        if refusal:
            raise JournalError(refusal)
        before = db.session.scalar(db.select(func.max(ServiceRun.id))) or 0
        db.session.commit()  # the job writes in its own session
        kwargs = {"mo_id": mo_id, "manual": True, "user_id": user_id}
        thread = None
        if wait:
            with contextlib.suppress(Exception):  # recorded as «Завершено с ошибкой» and logged
                run_job(app, job.name, **kwargs)
        else:
            thread = threading.Thread(
                target=_run_in_background,
                args=(app, job.name),
                kwargs=kwargs,
                daemon=True,
                name=f"manual-run-{job.name}",
            )
            thread.start()
        run = _await_run(job.name, user_id, before, 0 if wait else RUN_ROW_WAIT)
    scope = f" по МО «{mo_names({mo_id}).get(mo_id, mo_id)}»" if mo_id is not None else " по всем МО"
    audit(
        "journal.run",
        f"Ручной запуск сервиса «{job.title_ru}»{scope}",
        obj=run,
        mo_id=mo_id,
        user=user,
        details={"service": job.name, "run_id": run.id if run else None},
    )
    db.session.commit()
    log.info("Ручной запуск «%s» (%s) пользователем %s, МО %s", job.title_ru, job.name, user_id, mo_id)
    return ManualRun(job, run.id if run else None, thread)
