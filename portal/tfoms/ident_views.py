"""«Пакетная идентификация ТФОМС» pages (seed 4.3.2, SPEC T-1): packages on the left, the records
of the chosen package on the right; Обновить, Скачать, Загрузить, Удалить, Сформировать пакет;
and the «Идентифицировать» button of the patient card.

One URL serves the page and its fragments (HX-Target picks which); everything the user chose is
in the query string. Every view checks the capability and the МО itself: a package of another МО
is 404, as if it did not exist.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from portal.admin.registry import SettingDef, register_setting
from portal.admin.services import get_setting
from portal.auth.access import requires
from portal.auth.scoping import filter_mo_id, may_see_mo, mo_choices, scoped
from portal.clinical.models import Mo, Patient
from portal.dates import parse_date
from portal.exchange.runs import recording
from portal.extensions import db
from portal.filters import contains_ci
from portal.tfoms import bp, ident
from portal.tfoms.files import max_upload_bytes
from portal.tfoms.models import CASE_TYPES, IDENT_REASONS, IDENT_STATUSES, IdentPackage, IdentRecord

SIMULATOR_PAGE = register_setting(
    SettingDef(
        "tfoms.ident_simulator_page",
        "ТФОМС",
        "Страница стенда ТФОМС для пакетной идентификации",
        "url",
        "{simulators}/tfoms/",
        help="Ссылка «Стенд ТФОМС» на странице пакетной идентификации: там можно получить ответ на файл "
        "запроса. Пусто — ссылка не показывается.",
    )
)
PACKAGES_LIMIT = 200  # packages listed for one period
RECORDS_PAGE = 100  # records of a package per page
SHOW = {"all": "Все", "answered": "С ответом", "waiting": "Без ответа"}
MAX_QUERY = 100
# Context search over each column of the records (seed 4.3.2): URL parameter -> column heading.
RECORD_COLUMNS = {
    "patient": "Пациент",
    "day": "Период",
    "case": "Случай лечения",
    "status": "Статус",
    "errors": "Ошибки",
    "result": "Результат запроса",
}
DATE_LIKE = re.compile(r"\d{1,2}\.\d{1,2}\.\d{4}")


# --- filters and the period ---------------------------------------------------------------------


def _week(day: date) -> tuple[date, date]:
    start = day - timedelta(days=day.weekday())
    return start, start + timedelta(days=6)


def _month(day: date) -> tuple[date, date]:
    return day.replace(day=1), day.replace(day=calendar.monthrange(day.year, day.month)[1])


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def shift_period(date_from: date, date_to: date, direction: int) -> tuple[date, date]:
    """«Назад» / «Вперёд»: whole calendar months move by months, any other period by its length."""
    if date_from.day == 1 and date_to == _month(date_to)[1]:
        months = (date_to.year - date_from.year) * 12 + date_to.month - date_from.month + 1
        start = _add_months(date_from, direction * months)
        return start, _month(_add_months(start, months - 1))[1]
    days = (date_to - date_from).days + 1
    return date_from + timedelta(days=direction * days), date_to + timedelta(days=direction * days)


@dataclass
class IdentFilters:
    date_from: date
    date_to: date
    mo_id: int | None
    package_id: int | None
    show: str
    qp: str
    columns: dict[str, str] = field(default_factory=dict)  # RECORD_COLUMNS -> what was typed
    day: date | None = None  # «Период»: a day within DIN–DOUT
    birth_date: date | None = None  # «Пациент»: a date typed beside (or instead of) the name
    name: str = ""  # «Пациент»: the rest of what was typed
    problem: str | None = None  # a typed date that is not a date: shown instead of the records

    @classmethod
    def parse(cls, args: Any) -> IdentFilters:
        today = date.today()
        default_from, default_to = _week(today)
        try:
            date_from = parse_date(args.get("from")) or default_from
            date_to = parse_date(args.get("to")) or default_to
        except ValueError as error:
            abort(400, description=f"Дата «{error}» не распознана: введите её как ДД.ММ.ГГГГ.")
        if date_from > date_to:
            date_from, date_to = date_to, date_from
        package = (args.get("package") or "").strip()
        if package and not package.isdigit():
            abort(400, description="Некорректный номер пакета.")
        show = args.get("show") or "all"
        if show not in SHOW:
            abort(400, description=f"Неизвестное значение «Показать»: {show}.")
        filters = cls(
            date_from,
            date_to,
            filter_mo_id(args.get("mo")),
            int(package) if package else None,
            show,
            (args.get("qp") or "").strip()[:MAX_QUERY],
            {name: (args.get(name) or "").strip()[:MAX_QUERY] for name in RECORD_COLUMNS},
        )
        filters._parse_columns()
        return filters

    def _parse_columns(self) -> None:
        """Dates typed over the records: a bad one is a message on the page, never a 400 (the action
        forms carry the same values back)."""
        status = self.columns["status"]
        if status and status not in IDENT_STATUSES:
            abort(400, description=f"Неизвестный статус записи: {status}.")
        try:
            self.day = parse_date(self.columns["day"])
        except ValueError:
            self.problem = (
                f"Дата «{self.columns['day']}» в столбце «Период» не распознана: введите её как ДД.ММ.ГГГГ."
            )
        words = []
        for word in self.columns["patient"].split():
            if not DATE_LIKE.fullmatch(word):
                words.append(word)
                continue
            try:
                self.birth_date = parse_date(word)
            except ValueError:
                self.problem = self.problem or (
                    f"Дата рождения «{word}» в столбце «Пациент» не распознана: введите её как ДД.ММ.ГГГГ."
                )
        self.name = " ".join(words)

    @property
    def searching(self) -> bool:
        return any(self.columns.values())

    def search_terms(self) -> str:
        """What the records are searched by, for the «not found» line."""
        return "; ".join(
            f"{label}: «{IDENT_STATUSES.get(value, value) if name == 'status' else value}»"
            for name, label in RECORD_COLUMNS.items()
            if (value := self.columns[name])
        )

    def args(self, **changes: Any) -> dict[str, Any]:
        values = {
            "from": self.date_from.isoformat(),
            "to": self.date_to.isoformat(),
            "mo": self.mo_id,
            "package": self.package_id,
            "show": self.show if self.show != "all" else None,
            "qp": self.qp,
            **self.columns,
        }
        values.update(changes)
        return {k: v for k, v in values.items() if v not in (None, "")}

    def url(self, **changes: Any) -> str:
        return url_for("tfoms.ident", **self.args(**changes))

    def url_without_search(self, **changes: Any) -> str:
        """«Сбросить»: the same page with no column search."""
        return self.url(**dict.fromkeys(RECORD_COLUMNS), **changes)

    def periods(self) -> dict[str, str]:
        """Links of «День», «Неделя», «Месяц», «Назад», «Вперёд»: the first package of the new period is shown."""
        today = date.today()
        back, forward = (
            shift_period(self.date_from, self.date_to, -1),
            shift_period(self.date_from, self.date_to, 1),
        )
        spans = {
            "День": (today, today),
            "Неделя": _week(today),
            "Месяц": _month(today),
            "Назад": back,
            "Вперёд": forward,
        }
        return {
            label: self.url(**{"from": a.isoformat(), "to": b.isoformat(), "package": None})
            for label, (a, b) in spans.items()
        }


# --- queries ------------------------------------------------------------------------------------


def _visible_package(package_id: int) -> IdentPackage:
    """A package the user may see; another МО's package is 404, as if it did not exist."""
    package = db.session.get(IdentPackage, package_id)
    if package is None or not may_see_mo(package.mo_id):
        abort(404, description="Пакет не найден.")
    return package


def _packages(filters: IdentFilters) -> list[IdentPackage]:
    p = IdentPackage
    stmt = scoped(
        select(p)
        .options(joinedload(p.mo))
        .where(p.formed_on >= filters.date_from, p.formed_on <= filters.date_to),
        p.mo_id,
    )
    if filters.mo_id is not None:
        stmt = stmt.where(p.mo_id == filters.mo_id)
    if filters.show == "answered":
        stmt = stmt.where(p.answer_loaded_at.is_not(None))
    elif filters.show == "waiting":
        stmt = stmt.where(p.answer_loaded_at.is_(None))
    if filters.qp:
        stmt = stmt.where(p.name.contains(filters.qp, autoescape=True))
    return list(db.session.scalars(stmt.order_by(p.formed_on.desc(), p.id.desc()).limit(PACKAGES_LIMIT + 1)))


def _record_conditions(filters: IdentFilters) -> list[Any]:
    """The column searches of the records, combined with AND; all done by the database."""
    r = IdentRecord
    columns = filters.columns
    conditions: list[Any] = []
    if filters.name:
        full_name = (
            Patient.last_name + " " + Patient.first_name + func.coalesce(" " + Patient.middle_name, "")
        )
        conditions.append(contains_ci(full_name, filters.name))
    if filters.birth_date is not None:
        conditions.append(Patient.birth_date == filters.birth_date)
    if filters.day is not None:
        conditions.append(r.period_from <= filters.day)
        conditions.append(func.coalesce(r.period_to, r.period_from) >= filters.day)
    if words := columns["case"].replace("№", " ").split():  # «123», «КВС», «КВС № 123»
        kinds = [code for code, label in CASE_TYPES.items() if label.lower() == words[0].lower()]
        number = " ".join(words[1:] if kinds else words)
        if kinds:
            conditions.append(r.case_type.in_(kinds))
        if number:
            conditions.append(contains_ci(r.case_number, number))
    if columns["status"]:
        conditions.append(r.status == columns["status"])
    if columns["errors"]:
        conditions.append(contains_ci(r.errors, columns["errors"]))
    if columns["result"]:
        conditions.append(contains_ci(r.result, columns["result"]))
    return conditions


@dataclass
class RecordRow:
    record: IdentRecord
    patient_name: str
    birth_date: date | None


def _records(
    package: IdentPackage | None, filters: IdentFilters, after: int | None
) -> tuple[list[RecordRow], int | None]:
    if package is None or filters.problem:
        return [], None
    r = IdentRecord
    stmt = (
        select(r, Patient.last_name, Patient.first_name, Patient.middle_name, Patient.birth_date)
        .join(Patient, Patient.id == r.patient_id)
        .where(r.package_id == package.id)
    )
    for condition in _record_conditions(filters):
        stmt = stmt.where(condition)
    if after is not None:
        stmt = stmt.where(r.id > after)
    rows = db.session.execute(stmt.order_by(r.id).limit(RECORDS_PAGE + 1)).all()
    result = [
        RecordRow(
            row[0], " ".join(x for x in (row.last_name, row.first_name, row.middle_name) if x), row.birth_date
        )
        for row in rows[:RECORDS_PAGE]
    ]
    cursor = result[-1].record.id if len(rows) > RECORDS_PAGE else None
    return result, cursor


def _record_count(package: IdentPackage | None) -> int:
    if package is None:
        return 0
    return int(db.session.scalar(select(func.count()).where(IdentRecord.package_id == package.id)) or 0)


def _simulator_url() -> str | None:
    return get_setting(SIMULATOR_PAGE.key) or None


def _context(
    filters: IdentFilters, message: str | None = None, level: str = "success", after: int | None = None
) -> dict:
    packages = _packages(filters)
    more_packages = len(packages) > PACKAGES_LIMIT
    packages = packages[:PACKAGES_LIMIT]
    package = _visible_package(filters.package_id) if filters.package_id is not None else None
    if package is None and packages:
        package = packages[0]
    rows, cursor = _records(package, filters, after)
    selected_count, selected = ident.selected_summary(filters.mo_id, current_user)
    return {
        "filters": filters,
        "packages": packages,
        "more_packages": more_packages,
        "package": package,
        "rows": rows,
        "cursor": cursor,
        "record_count": _record_count(package),
        "selected_count": selected_count,
        "selected": selected,
        "mos": mo_choices(),
        "message": message,
        "level": level,
        "show_options": SHOW,
        "case_types": CASE_TYPES,
        "statuses": IDENT_STATUSES,
        "record_columns": RECORD_COLUMNS,
        "reasons": IDENT_REASONS,
        "simulator_url": _simulator_url(),
        "max_upload_mb": max_upload_bytes() / 1024 / 1024,
        "limit": ident.PACKAGE_LIMIT,
        "packages_limit": PACKAGES_LIMIT,
    }


FRAGMENTS = {
    "ident-page": "tfoms/_ident_page.html",
    "ident-body": "tfoms/_ident_body.html",
    "ident-packages": "tfoms/_ident_packages.html",
    "ident-records": "tfoms/_ident_records.html",
    "ident-record-rows": "tfoms/_ident_record_body.html",
    "more-records": "tfoms/_ident_record_rows.html",
}


@bp.get("/ident", endpoint="ident")
@requires("tfoms.ident")
def ident_page():
    filters = IdentFilters.parse(request.args)
    after_raw = request.args.get("after")
    if after_raw and not after_raw.isdigit():
        abort(400, description="Некорректный параметр страницы.")
    after = int(after_raw) if after_raw else None
    target = request.headers.get("HX-Target") if request.headers.get("HX-Request") else None
    template = FRAGMENTS.get(target or "", "tfoms/ident.html")
    return render_template(template, **_context(filters, after=after))


def _respond(filters: IdentFilters, message: str, level: str):
    """After an action: htmx gets the refreshed page part (with the URL of its GET), a plain form a
    redirect with the message."""
    if request.headers.get("HX-Request"):
        response = current_app.make_response(
            render_template("tfoms/_ident_page.html", **_context(filters, message, level))
        )
        response.headers["HX-Push-Url"] = filters.url()
        return response
    flash(message, level)
    return redirect(filters.url(), code=303)


@bp.get("/ident/<int:package_id>/download")
@requires("tfoms.ident")
def ident_download(package_id: int):
    """«Скачать»: the request file, only while no answer is loaded."""
    package = _visible_package(package_id)
    if package.answer_loaded_at is not None:
        filters = IdentFilters.parse(request.args)
        filters.package_id = package.id
        message = (
            f"Ответ на пакет {package.name} загружен {package.answer_loaded_at:%d.%m.%Y %H:%M}: "
            "файл запроса удалён, скачать его нельзя."
        )
        flash(message, "error")
        return redirect(filters.url(), code=303)
    data = ident.package_file(package)
    return current_app.response_class(
        data,
        content_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{package.file_name}"'},
    )


@bp.post("/ident/upload")
@requires("tfoms.ident")
def ident_upload():
    """«Загрузить»: an answer DBF; every refusal is a message and changes nothing."""
    filters = IdentFilters.parse(request.form)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _respond(filters, "Выберите файл ответа ТФОМС (.DBF).", "error")
    limit = max_upload_bytes()  # routes.py lets the request through up to this size
    data = upload.read(limit + 1)
    if len(data) > limit:
        return _respond(
            filters,
            f"Файл не загружен: он больше допустимых {limit / 1024 / 1024:.0f} МБ. Ответ не загружен.",
            "error",
        )
    name = ident._base_name(upload.filename)
    package = ident.package_by_file_name(name)
    if package is not None and not may_see_mo(package.mo_id):
        package = None  # another МО's: process_answer refuses it by name
    run_mo = package.mo_id if package is not None else current_user.mo_id
    data = data if name.upper().endswith(".DBF") else b""
    with recording(ident.SERVICE_ANSWERS, mo_id=run_mo, manual=True, user_id=current_user.id):
        result = ident.process_answer(name, data, user=current_user, check_mo=True)
        db.session.commit()
    ident.remove_files(result.remove_after_commit)
    if package is not None:
        filters.package_id = package.id
    return _respond(filters, result.message, "success" if result.ok else "error")


@bp.post("/ident/<int:package_id>/delete")
@requires("tfoms.ident")
def ident_delete(package_id: int):
    """«Удалить»: the package, its records and its files (request and answer, if any)."""
    package = _visible_package(package_id)
    message, files = ident.delete_package(package, current_user)
    db.session.commit()
    ident.remove_files(files)
    filters = IdentFilters.parse(request.form)
    filters.package_id = None
    return _respond(filters, message, "success")


@bp.post("/ident/form")
@requires("tfoms.ident")
def ident_form():
    """«Сформировать пакет» for the user's МО (a central administrator chooses the МО)."""
    filters = IdentFilters.parse(request.form)
    mo_id = filters.mo_id
    if mo_id is None:
        return _respond(filters, "Выберите МО, для которой сформировать пакет.", "error")
    mo = db.session.get(Mo, mo_id)
    if mo is None:
        abort(404, description="МО не найдена.")
    with recording(ident.SERVICE_PACKAGING, mo_id=mo_id, manual=True, user_id=current_user.id):
        try:
            result = ident.form_packages(mo_id, current_user)
        except ident.IdentError as error:
            db.session.rollback()
            ident.journal_refusal(mo_id, str(error), current_user)
            db.session.commit()
            return _respond(filters, str(error), "error")
        db.session.commit()
    if result.packages:
        filters.package_id = result.packages[0].id
        filters.date_from = min(filters.date_from, result.packages[0].formed_on)
        filters.date_to = max(filters.date_to, result.packages[0].formed_on)
    return _respond(filters, result.message, "success" if result.packages else "warning")


# --- the patient card: «Идентифицировать» -------------------------------------------------------


@bp.app_template_global("tfoms_ident_state")
def ident_state(patient: Patient) -> dict[str, Any]:
    """What the patient card shows about identification: the waiting record, if any."""
    record = ident.waiting_record(patient.id)
    return {"waiting": record, "identified_on": patient.tfoms_identified_on}


@bp.route("/ident/patient/<int:patient_id>", methods=["GET", "POST"])
@requires("tfoms.ident")
def ident_patient(patient_id: int):
    """«Идентифицировать» on the patient card: select the patient for the next package."""
    patient = db.session.get(Patient, patient_id)
    if patient is None or not may_see_mo(patient.mo_id):
        abort(404, description="Пациент не найден.")
    message, level = None, "success"
    if request.method == "POST":
        try:
            message = ident.identify_patient(patient, current_user)
            db.session.commit()
        except ident.IdentError as error:
            db.session.rollback()
            message, level = str(error), "warning"
        if not request.headers.get("HX-Request"):
            flash(message, level)
            return redirect(url_for("clinical.patient", patient_id=patient.id), code=303)
    return render_template("tfoms/_ident_patient.html", patient=patient, message=message, level=level)
