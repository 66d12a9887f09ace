"""«Выгрузка прикреплений»: the attachment file for ТФОМС (seed 4.5.1, SPEC T-9).

One line per attachment (Attachment row) of the МО that was in force at some time in the
reporting period, streamed from one SQL query in chunks and written in Windows-1251.

Where the seed is silent the file does this:

* every date (Дата_рождения, Дата_УДЛ, Дата_открепления) is YYYYMMDD — the seed gives that
  format only for Дата_открепления;
* СНИЛС of the person is written like СНИЛС_врача, XXX-XXX-XXX XX;
* ИД_полиса: for «С» series + " № " + number (only the number, or only the series, when the other is
  missing); for «В» the number of the temporary certificate; empty for the other kinds;
* Ном_УДЛ: series + " " + number (whichever is present when one is missing);
* a double quote inside a value is doubled (""), as in CSV; a line break inside a value becomes a
  space, so a value can never break a line;
* Дата_открепления is filled only when the detachment falls on or before the end of the period;
* «Р» (регистрация): the person entered the portal's database on or after 7 days before the start of
  the period (one added during the period — or later — is new too), or the person has an attachment
  to another МО detached within the period; «И» otherwise;
* Категория_медработника: 1 for a doctor, 2 for a nurse («средний медицинский персонал»); without
  a doctor category the line ends after СНИЛС_врача (no trailing empty slot);
* a person whose attachment lacks a required value (Тип ДПФС, ЕНП for a policy of the unified
  form П/Э, Дата_рождения, Способ_прикрепления, Код_участка, СНИЛС_врача), has a malformed СНИЛС, or
  a value with a character Windows-1251 cannot represent is left out of the file and reported —
  never written as an invalid or altered line.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import String, and_, case, exists, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.functions import FunctionElement

from portal.clinical.models import Attachment, Department, Mo, Patient, Staff
from portal.extensions import db
from portal.tfoms.channel import CHANNEL, PACKET_ATTACHMENTS

ENCODING = "cp1251"
LINE_SEPARATOR = "\r\n"
PROCEDURE = "tfoms_attachment"  # per-МО switch of the daily file (portal.admin.registry)
SERVICE = "tfoms_attachments"  # the service of «Журнал работы сервисов»
SUBJECT = "tfoms_attachment_file"  # journal subject: ("tfoms_attachment_file", mo_id)
NEW_PERSON_DAYS = 7  # «добавлен в Систему за последние 7 дней до начала отчетного периода»
CHUNK_ROWS = 5000
LIST_LIMIT = 100  # people left out shown on the page and kept in the journal line

POLICY_KINDS = ("П", "Э", "В", "С", "К")  # Тип ДПФС
UNIFIED_POLICY_KINDS = ("П", "Э")  # «полисы ОМС единого образца»: ЕНП required
ATTACHMENT_METHODS = ("0", "1", "2")  # Способ_прикрепления
STAFF_CATEGORY_CODES = {"doctor": "1", "nurse": "2"}  # Категория_медработника

# Bits of the «problem» column: why an attachment cannot be written (one SQL expression drives
# the page's count, its list and the file itself).
P_POLICY_KIND, P_ENP, P_BIRTH, P_METHOD, P_DISTRICT, P_DOCTOR_SNILS, P_SNILS = 1, 2, 4, 8, 16, 32, 64


class AttachmentFileError(Exception):
    """A refusal in Russian: nothing is written."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class LeftOut:
    """A person left out of the file, and why."""

    patient_id: int
    attachment_id: int
    person: str  # Фамилия Имя Отчество
    birth_date: str | None  # dd.mm.yyyy
    reasons: tuple[str, ...]

    @property
    def text(self) -> str:
        born = f", д. р. {self.birth_date}" if self.birth_date else ""
        return f"{self.person}{born} (пациент № {self.patient_id}): {'; '.join(self.reasons)}"


@dataclass
class Preview:
    rows: int  # lines the file will hold
    errors: int  # people left out
    left_out: list[LeftOut] = field(default_factory=list)  # the first LIST_LIMIT of them


@dataclass
class ExportResult:
    name: str
    rows: int
    left_out: list[LeftOut]

    @property
    def errors(self) -> int:
        return len(self.left_out)

    @property
    def message(self) -> str:
        text = f"Файл {self.name}: записей {self.rows}"
        if self.left_out:
            text += f", не включено людей с ошибками в данных: {self.errors}"
        return text

    def payload(self) -> str | None:
        """The people left out, one per line (the journal's «Данные пакета»)."""
        if not self.left_out:
            return None
        lines = [person.text for person in self.left_out[:LIST_LIMIT]]
        if self.errors > LIST_LIMIT:
            lines.append(f"… и ещё {self.errors - LIST_LIMIT}")
        return "\n".join(lines)


# --- validation -------------------------------------------------------------------------------


def check_mo(mo: Mo) -> str:
    """The six-digit registry number, or a refusal naming the МО."""
    number = (mo.registry_number or "").strip()
    if len(number) != 6 or not number.isdigit():
        raise AttachmentFileError(
            f"У МО «{mo.short_name or mo.name}» не указан шестизначный реестровый номер МО — "
            "без него нельзя назвать файл прикрепления. Укажите его в карточке МО."
        )
    return number


def check_period(period_from: date | None, period_to: date | None) -> tuple[date, date]:
    if period_from is None or period_to is None:
        raise AttachmentFileError("Укажите «Отчётную дату»: начало и окончание периода.")
    if period_to < period_from:
        raise AttachmentFileError(
            f"Окончание периода ({period_to:%d.%m.%Y}) раньше его начала ({period_from:%d.%m.%Y})."
        )
    return period_from, period_to


def file_name(mo: Mo, report_date: date) -> str:
    """MO + 2 (source: МО) + registry number + YYYYMMDD + .csv, Latin «MO» (seed 4.5.1.1)."""
    return f"MO2{check_mo(mo)}{report_date:%Y%m%d}.csv"


def _load_mo(mo_id: int) -> Mo:
    mo = db.session.get(Mo, mo_id)
    if mo is None:
        raise AttachmentFileError(f"МО с кодом {mo_id} не найдена.", status=404)
    return mo


# --- the query ---------------------------------------------------------------------------------


class yyyymmdd(FunctionElement):
    """A date column as YYYYMMDD text, formatted by the database (no date objects in Python)."""

    type = String()
    inherit_cache = True


@compiles(yyyymmdd)
def _yyyymmdd_sqlite(element: yyyymmdd, compiler: Any, **kw: Any) -> str:  # dates are 'YYYY-MM-DD' text
    return f"replace({compiler.process(element.clauses, **kw)}, '-', '')"


@compiles(yyyymmdd, "postgresql")
def _yyyymmdd_postgresql(element: yyyymmdd, compiler: Any, **kw: Any) -> str:
    return f"to_char({compiler.process(element.clauses, **kw)}, 'YYYYMMDD')"


def _blank(column: Any) -> Any:
    return or_(column.is_(None), column == "")


def _problem(patient: Any, attachment: Any, doctor: Any) -> Any:
    return (
        case(
            (or_(patient.policy_kind.is_(None), patient.policy_kind.not_in(POLICY_KINDS)), P_POLICY_KIND),
            else_=0,
        )
        + case((and_(patient.policy_kind.in_(UNIFIED_POLICY_KINDS), _blank(patient.enp)), P_ENP), else_=0)
        + case((patient.birth_date.is_(None), P_BIRTH), else_=0)
        + case(
            (or_(attachment.method.is_(None), attachment.method.not_in(ATTACHMENT_METHODS)), P_METHOD),
            else_=0,
        )
        + case(
            (or_(attachment.district.is_(None), func.trim(attachment.district) == ""), P_DISTRICT), else_=0
        )
        + case((or_(doctor.snils.is_(None), func.length(doctor.snils) != 11), P_DOCTOR_SNILS), else_=0)
        + case(
            (
                and_(patient.snils.is_not(None), patient.snils != "", func.length(patient.snils) != 11),
                P_SNILS,
            ),
            else_=0,
        )
    )


def _joined(columns: list[Any], mo_id: int, period_from: date, period_to: date):
    """`columns` over every attachment of the МО in force at some time in the period.

    On SQLite the attachment table is walked in id order (`mo_id + 0` keeps the planner off the
    (mo_id, attached_on) index): without statistics — the portal runs no ANALYZE — it would take
    that index, read the patients in random order and sort every wide row for ORDER BY id. In id
    order there is no sort, the patients (created in about the same order) are read sequentially
    and LIMIT stops early: for 1,000,000 lines the file takes 13 s instead of 22 s and the page's
    count 1 s instead of 5 s; an МО of 5 % of the table loses a few hundredths of a second.
    PostgreSQL keeps statistics and plans by itself.
    """
    a, p, d, s = Attachment.__table__.c, Patient.__table__.c, Department.__table__.c, Staff.__table__.c
    mo_column = a.mo_id + 0 if db.session.get_bind().dialect.name == "sqlite" else a.mo_id
    return (
        select(*columns)
        .select_from(Attachment.__table__)
        .join(Patient.__table__, p.id == a.patient_id)
        .outerjoin(Department.__table__, d.id == a.department_id)
        .outerjoin(Staff.__table__, s.id == a.doctor_id)
        .where(
            mo_column == mo_id,
            a.attached_on <= period_to,
            or_(a.detached_on.is_(None), a.detached_on >= period_from),
        )
    )


def _problem_column() -> Any:
    return _problem(Patient.__table__.c, Attachment.__table__.c, Staff.__table__.c)


def _query(mo_id: int, period_from: date, period_to: date, *, problems_only: bool = False):
    """The rows of the file, in the order of the attachments' ids, with what each line needs."""
    a, p, d, s = Attachment.__table__.c, Patient.__table__.c, Department.__table__.c, Staff.__table__.c
    other = aliased(Attachment.__table__)
    moved_here = exists().where(  # an attachment to another МО ended within the period
        other.c.patient_id == a.patient_id,
        other.c.mo_id != a.mo_id,
        other.c.detached_on >= period_from,
        other.c.detached_on <= period_to,
    )
    new_since = datetime.combine(period_from - timedelta(days=NEW_PERSON_DAYS), datetime.min.time())
    problem = _problem_column()
    columns = [
        case((or_(p.created_at >= new_since, moved_here), "Р"), else_="И"),
        p.policy_kind,
        p.policy_series,
        p.policy_number,
        p.enp,
        p.last_name,
        p.first_name,
        p.middle_name,
        yyyymmdd(p.birth_date),
        p.birth_place,
        p.document_kind,
        p.document_series,
        p.document_number,
        yyyymmdd(p.document_issued_on),
        p.document_issuer,
        p.snils,
        a.method,
        a.kind,
        case((a.detached_on <= period_to, yyyymmdd(a.detached_on)), else_=None),
        d.code,
        a.district,
        s.snils,
        s.category,
        problem,
        a.id,
        p.id,
    ]
    stmt = _joined(columns, mo_id, period_from, period_to)
    if problems_only:
        stmt = stmt.where(problem != 0)
    return stmt.order_by(a.id)


# --- formatting --------------------------------------------------------------------------------


def _reasons(row: Any) -> tuple[str, ...]:
    """Why a row cannot be written, in the seed's field names."""
    bits = row[23]
    reasons = []
    if bits & P_POLICY_KIND:
        reasons.append(
            f"недопустимый «Тип ДПФС» «{row[1]}» (допустимы {', '.join(POLICY_KINDS)})"
            if row[1]
            else "не указан «Тип ДПФС»"
        )
    if bits & P_ENP:
        reasons.append(f"не указан «ЕНП» (обязателен для полиса единого образца, Тип ДПФС «{row[1]}»)")
    if bits & P_BIRTH:
        reasons.append("не указана «Дата_рождения»")
    if bits & P_METHOD:
        reasons.append(
            f"недопустимый «Способ_прикрепления» «{row[16]}» (допустимы 0, 1, 2)"
            if row[16]
            else "не указан «Способ_прикрепления»"
        )
    if bits & P_DISTRICT:
        reasons.append("не указан «Код_участка»")
    if bits & P_DOCTOR_SNILS:
        reasons.append(
            f"«СНИЛС_врача» «{row[21]}» не из 11 цифр"
            if row[21]
            else "не указан «СНИЛС_врача» (врач участка)"
        )
    if bits & P_SNILS:
        reasons.append(f"«СНИЛС» «{row[15]}» не из 11 цифр")
    return tuple(reasons)


def _left_out(row: Any, reasons: tuple[str, ...]) -> LeftOut:
    person = " ".join(part for part in (row[5], row[6], row[7]) if part) or "(без ФИО)"
    born = row[8]
    birth = f"{born[6:8]}.{born[4:6]}.{born[0:4]}" if born and len(born) == 8 else None
    return LeftOut(
        patient_id=row[25], attachment_id=row[24], person=person, birth_date=birth, reasons=reasons
    )


def _format(rows: Any, mo_fields: tuple[str, str], left_out: list[LeftOut]) -> list[str]:
    """The lines of a chunk of rows; rows that cannot be written go to `left_out`.

    Tight on purpose: it runs once per person of the region.
    """
    lines = []
    append = lines.append
    for row in rows:
        (action, kind, series, number, enp, last, first, middle, born, place, doc_kind, doc_series, doc_number,
         issued, issuer, snils, method, attach_kind, detached, department, district, doctor_snils, category,
         problem) = row[:24]  # fmt: skip
        if problem:
            left_out.append(_left_out(row, _reasons(row)))
            continue
        if kind == "С":
            policy = f"{series} № {number}" if series and number else (number or series)
        elif kind == "В":
            policy = number
        else:
            policy = None
        document = f"{doc_series} {doc_number}" if doc_series and doc_number else doc_number or doc_series
        line = (
            f'"{action}";"{kind}";'
            f"{_q(policy)};{_q(enp)};{_q(last)};{_q(first)};{_q(middle)};"
            f'"{born}";{_q(place)};{_q(doc_kind)};{_q(document)};{_d(issued)};{_q(issuer)};'
            f'{_snils(snils) if snils else ""};{mo_fields[0]};"{method}";{_q(attach_kind)};{_d(detached)};'
            f"{mo_fields[1]};{_q(department)};{_q(district)};"
            f'"{doctor_snils[0:3]}-{doctor_snils[3:6]}-{doctor_snils[6:9]} {doctor_snils[9:11]}"'
        )
        code = STAFF_CATEGORY_CODES.get(category)
        if code:
            line += f';"{code}"'
        if "\n" in line or "\r" in line:  # a line break inside a value: a space instead
            line = line.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
        append(line)
    return lines


def _q(value: str | None) -> str:
    """A present value in double quotes (a quote inside doubled); an absent one is an empty slot."""
    if not value:
        return ""
    if '"' in value:
        value = value.replace('"', '""')
    return f'"{value}"'


def _d(value: str | None) -> str:
    return f'"{value}"' if value else ""


def _snils(value: str) -> str:
    return f'"{value[0:3]}-{value[3:6]}-{value[6:9]} {value[9:11]}"'


def _encode(
    lines: list[str], rows: list[Any], mo_fields: tuple[str, str], left_out: list[LeftOut]
) -> tuple[bytes, int]:
    """The chunk in Windows-1251 and its line count; a person with a character it cannot hold is
    left out and named."""
    try:
        return LINE_SEPARATOR.join(lines).encode(ENCODING), len(lines)
    except UnicodeEncodeError:
        pass
    kept = []
    for row in rows:  # the rare slow path: line by line, to find who cannot be written
        one: list[LeftOut] = []
        formatted = _format([row], mo_fields, one)
        if not formatted:
            continue  # already reported by the first pass
        try:
            kept.append(formatted[0].encode(ENCODING))
        except UnicodeEncodeError as error:
            bad = formatted[0][error.start : error.end]
            left_out.append(
                _left_out(row, (f"символ «{bad}» не представим в кодировке Windows-1251 (исправьте данные)",))
            )
    return LINE_SEPARATOR.encode(ENCODING).join(kept), len(kept)


def _mo_fields(mo: Mo) -> tuple[str, str]:
    return _q(check_mo(mo)), _q((mo.oid or "").strip() or None)


def write_attachment_file(
    mo_id: int,
    period_from: date,
    period_to: date,
    out: BinaryIO,
    *,
    left_out: list[LeftOut] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Stream the МО's attachment file for the period into `out`; returns the lines written.

    People that cannot be written are appended to `left_out` (when given) and skipped.
    Raises AttachmentFileError (nothing written) for an unknown МО, an МО without a registry
    number, or a period that ends before it starts.
    """
    period_from, period_to = check_period(period_from, period_to)
    mo = _load_mo(mo_id)
    fields = _mo_fields(mo)
    skipped: list[LeftOut] = left_out if left_out is not None else []
    stmt = _query(mo_id, period_from, period_to)
    result = db.session.execute(stmt.execution_options(yield_per=chunk_rows))
    separator = LINE_SEPARATOR.encode(ENCODING)
    written = 0
    try:
        for rows in result.partitions():
            lines = _format(rows, fields, skipped)
            if not lines:
                continue
            data, count = _encode(lines, rows, fields, skipped)
            if not count:
                continue
            if written:
                out.write(separator)
            out.write(data)
            written += count
    finally:
        result.close()
    return written


# --- what the page shows before the export ------------------------------------------------------


def preview(mo_id: int, period_from: date, period_to: date, limit: int = LIST_LIMIT) -> Preview:
    """Lines of the file and people left out for missing values: two queries, nothing per row.

    A character Windows-1251 cannot hold is found only while writing the file (the journal line
    of the export names such people).
    """
    period_from, period_to = check_period(period_from, period_to)
    mo = _load_mo(mo_id)
    check_mo(mo)
    problem = _problem_column()
    counts = _joined(
        [func.count(), func.sum(case((problem != 0, 1), else_=0))], mo_id, period_from, period_to
    )
    total, errors = db.session.execute(counts).one()
    total, errors = int(total or 0), int(errors or 0)
    result = Preview(rows=total - errors, errors=errors)
    if errors:
        problems = _query(mo_id, period_from, period_to, problems_only=True)
        for row in db.session.execute(problems.limit(limit)):
            result.left_out.append(_left_out(row, _reasons(row)))
    return result


# --- exports: by a user, and by the daily job -----------------------------------------------------


def export(
    mo_id: int,
    period_from: date,
    period_to: date,
    out: BinaryIO,
    *,
    user_id: int | None = None,
    operation: str = "Выгрузка файла прикрепления",
) -> ExportResult:
    """Write the file into `out` and journal it (inside the caller's service run, if any)."""
    from portal.exchange.delivery import journal

    period_from, period_to = check_period(period_from, period_to)
    mo = _load_mo(mo_id)
    name = file_name(mo, period_to)
    left_out: list[LeftOut] = []
    rows = write_attachment_file(mo_id, period_from, period_to, out, left_out=left_out)
    result = ExportResult(name=name, rows=rows, left_out=left_out)
    journal(
        CHANNEL,
        None,
        operation,
        f"{result.message}; период {period_from:%d.%m.%Y}–{period_to:%d.%m.%Y}",
        subject=(SUBJECT, mo_id),
        mo_id=mo_id,
        user_id=user_id,
        packet_id=name,
        packet_type=PACKET_ATTACHMENTS,
        level="error" if left_out else "ok",
        payload=result.payload(),
    )
    return result


def export_daily(mo_id: int | None = None, day: date | None = None) -> str:
    """The job: for every МО with «ТФОМС: прикрепление» switched on (or only `mo_id`, if it is),
    the file of `day` (by default yesterday) into the outbox; returns a short summary."""
    from portal.admin.services import enabled_mo_ids
    from portal.exchange.delivery import journal
    from portal.tfoms.files import tfoms_dir

    day = day or date.today() - timedelta(days=1)
    enabled = enabled_mo_ids(PROCEDURE)
    mo_ids = sorted(enabled & {mo_id} if mo_id is not None else enabled)
    if not mo_ids:
        return "Нет МО с включённой выгрузкой прикреплений в ТФОМС"
    outbox = tfoms_dir("outbox")
    files = rows = errors = 0
    refused: list[str] = []
    for current in mo_ids:
        mo = db.session.get(Mo, current)
        try:
            name = file_name(mo, day)
        except AttachmentFileError as error:
            refused.append(mo.short_name or mo.name)
            journal(
                CHANNEL,
                None,
                "Формирование файла прикрепления",
                f"Файл не сформирован: {error.message}",
                subject=(SUBJECT, current),
                mo_id=current,
                packet_type=PACKET_ATTACHMENTS,
                level="error",
            )
            continue
        with _atomic_file(outbox / name) as out:
            result = export(current, day, day, out, operation="Формирование файла прикрепления")
        files += 1
        rows += result.rows
        errors += result.errors
    summary = f"Файлов прикрепления за {day:%d.%m.%Y}: {files}, записей {rows}"
    if errors:
        summary += f", не включено людей с ошибками в данных: {errors}"
    if refused:
        summary += f"; не сформированы (нет реестрового номера МО): {', '.join(refused)}"
    return summary


class _atomic_file:
    """A file written under a temporary name in the same folder and renamed when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> BinaryIO:
        handle, self.temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".part-")
        self.out = os.fdopen(handle, "wb", buffering=1 << 20)
        return self.out

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.out.close()
        if kind is None:
            os.replace(self.temporary, self.path)
        else:
            Path(self.temporary).unlink(missing_ok=True)
