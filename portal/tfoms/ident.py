"""«Пакетная идентификация ТФОМС» (seed 4.3, SPEC T-1…T-3): who is selected, the request DBF of
a package, and the answer DBF that saves policies.

People are selected three ways (4.3.3): a new person stored by intake (for МО with the
«tfoms_identification» procedure on), the «Идентифицировать» button, and daily from the day's
treatment cases. A package takes every selected record of an МО into one request file
`{F003}_{ddmmyyyy}_{n}.DBF` (CP866); the answer comes back under the same name, by upload or into
the inbox folder, and is matched to the request records on the person fields (4.3.4).

Everything that handles many rows is set-based: one insert per chunk of new people, one query for
a package's records, executemany for the answer's updates and policies. Files are written before
the commit (a failed commit leaves an orphan file whose name the next package reuses) and deleted
only after it: `AnswerResult.remove_after_commit`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Date, DateTime, String, bindparam, func, insert, literal, or_, select

from portal.admin import services as admin_services
from portal.admin.audit import audit
from portal.admin.services import enabled_mo_ids
from portal.auth.scoping import scoped
from portal.clinical.hooks import StoredRecord, on_stored
from portal.clinical.identifiers import digits, format_snils
from portal.clinical.models import (
    POLICY_KINDS,
    ClinicalEvent,
    Hospitalisation,
    Insurer,
    Mo,
    Patient,
    PatientPolicy,
)
from portal.exchange.delivery import journal
from portal.extensions import db
from portal.models_base import chunks, utcnow
from portal.tfoms.channel import CHANNEL, PACKET_IDENT_ANSWER, PACKET_IDENT_REQUEST
from portal.tfoms.dbf import REQUEST_FIELDS, DbfError, dbf_bytes, has_fields, read_dbf
from portal.tfoms.files import inbox_dir, tfoms_dir, write_atomically
from portal.tfoms.models import (
    IDENT_IDENTIFIED,
    IDENT_NOT_IDENTIFIED,
    IDENT_SELECTED,
    IDENT_SENT,
    NO_ANSWER_TEXT,
    IdentPackage,
    IdentRecord,
)

PROCEDURE = "tfoms_identification"  # the per-МО switch of the daily job (admin registry)
SERVICE_PACKAGING = "tfoms_ident"  # «Журнал работы сервисов»: selection and packaging
SERVICE_ANSWERS = "tfoms_ident_answers"  # … and answer processing
SUBJECT = "tfoms_ident_package"  # journal subject: a package
SUBJECT_FILE = "tfoms_ident_file"  # journal subject of a file whose package does not exist
SUBJECT_MO = "tfoms_ident_mo"  # journal subject of an МО whose package could not be formed

CASE_REPEAT_DAYS = 30  # a person identified this recently is not selected again from a case
CASE_LOOKBACK_DAYS = 1  # the daily run also takes the day before (a run after midnight)
PACKAGE_LIMIT = 10_000  # records in one request file
CHUNK = 900  # ids per IN (…) list
WAITING = (IDENT_SELECTED, IDENT_SENT)
DBF_ENCODING = "cp866"

# Policy type: our letters (POLICY_KINDS) ↔ ФОМС F008 codes in OPDOC / ROPDOC. The ТФОМС
# stand-in (simulators/tfoms.py) uses this same mapping.
POLICY_KIND_F008: dict[str, int] = {"С": 1, "В": 2, "П": 3, "Э": 4, "К": 5}
F008_POLICY_KIND: dict[int, str] = {code: kind for kind, code in POLICY_KIND_F008.items()}
SEX_W: dict[str, int] = {"M": 1, "F": 2}

# Request field → the answer field that echoes it (the answer renames the document fields).
MATCH_FIELDS: tuple[tuple[str, str], ...] = (
    ("FAM", "FAM"),
    ("IM", "IM"),
    ("OT", "OT"),
    ("DR", "DR"),
    ("W", "W"),
    ("SS", "SS"),
    ("C_DOC", "DOCTP"),
    ("S_DOC", "DOCS"),
    ("N_DOC", "DOCN"),
    ("OPDOC", "OPDOC"),
    ("SPOL", "SPOL"),
    ("NPOL", "NPOL"),
    ("ENP", "ENP"),
    ("DIN", "DIN"),
    ("DOUT", "DOUT"),
)
RESULT_FIELDS = ("EERP", "REPL", "RQ", "RQOGRN", "ROPDOC", "RSPOL", "RNPOL", "RENP", "RDBEG", "RDEND")
ANSWER_REQUIRED = tuple(a for _, a in MATCH_FIELDS) + RESULT_FIELDS
_REQUEST_DATES = ("DR", "DIN", "DOUT")
_FIELD_LIMITS = {f.name: f.length for f in REQUEST_FIELDS if f.type == "C"}
_COMBINATION_TEXT = "фамилия, дата рождения, пол и одно из: СНИЛС, тип документа, тип полиса"
_NAME = re.compile(r"^(?P<f003>\d{1,6})_(?P<day>\d{8})_(?P<n>\d+)$")

admin_services.ACTION_LABELS.setdefault("tfoms.ident_select", "Отбор на идентификацию в ТФОМС")
admin_services.ACTION_LABELS.setdefault("tfoms.ident_package", "Формирование пакета идентификации")
admin_services.ACTION_LABELS.setdefault("tfoms.ident_answer", "Загрузка ответа идентификации")
admin_services.ACTION_LABELS.setdefault("tfoms.ident_delete", "Удаление пакета идентификации")
admin_services.ACTION_GROUPS.setdefault("tfoms.*", "ТФОМС")
admin_services.OBJECT_LABELS.setdefault("IdentPackage", "Пакет идентификации ТФОМС")
admin_services.OBJECT_LABELS.setdefault("IdentRecord", "Запись идентификации ТФОМС")


class IdentError(Exception):
    """A refusal the user reads; nothing was changed."""


def _d(value: date | None) -> str:
    return value.strftime("%d.%m.%Y") if value else ""


def request_path(package: IdentPackage) -> Path:
    return tfoms_dir("ident") / package.file_name


def rejected_dir() -> Path:
    path = inbox_dir() / "rejected"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _user_id(user: Any) -> int | None:
    return user.id if user is not None and getattr(user, "is_authenticated", False) else None


# --- selection (seed 4.3.3) -------------------------------------------------------------------


def _waiting(patient_column: Any) -> Any:
    """A record of the patient that waits: selected, or in a package without an answer."""
    return (
        select(IdentRecord.id)
        .where(IdentRecord.patient_id == patient_column, IdentRecord.status.in_(WAITING))
        .exists()
    )


@on_stored("patient")
def select_new_patients(rows: list[StoredRecord]) -> None:
    """«При сохранении формы "Человек. Добавление" для новой записи»: every created patient of an
    МО with the procedure on is selected, one INSERT … SELECT per chunk."""
    created = [r.id for r in rows if r.created]
    if not created:
        return
    enabled = enabled_mo_ids(PROCEDURE)
    if not enabled:
        return
    today, now = date.today(), utcnow()
    columns = ["mo_id", "patient_id", "reason", "period_from", "status", "created_at"]
    for chunk in chunks(created, CHUNK):
        source = select(
            Patient.mo_id,
            Patient.id,
            literal("new_person", String),
            literal(today, Date),
            literal(IDENT_SELECTED, String),
            literal(now, DateTime),
        ).where(Patient.id.in_(chunk), Patient.mo_id.in_(sorted(enabled)))
        db.session.execute(insert(IdentRecord).from_select(columns, source))


def waiting_record(patient_id: int) -> IdentRecord | None:
    return db.session.scalars(
        select(IdentRecord)
        .where(IdentRecord.patient_id == patient_id, IdentRecord.status.in_(WAITING))
        .order_by(IdentRecord.id.desc())
        .limit(1)
    ).first()


def identify_patient(patient: Patient, user: Any = None) -> str:
    """The «Идентифицировать» button: select the patient now; refused while a record waits."""
    waiting = waiting_record(patient.id)
    if waiting is not None:
        if waiting.package is not None:
            raise IdentError(
                f"{patient.full_name} уже ожидает ответа ТФОМС в пакете {waiting.package.name} "
                f"(сформирован {_d(waiting.package.formed_on)}): повторный запрос не нужен."
            )
        raise IdentError(
            f"{patient.full_name} уже отобран(а) для идентификации {_d(waiting.created_at.date())}: "
            "запрос уйдёт в ТФОМС в ближайшем пакете."
        )
    record = IdentRecord(
        mo_id=patient.mo_id,
        patient_id=patient.id,
        reason="manual",
        period_from=date.today(),
        status=IDENT_SELECTED,
        created_at=utcnow(),
    )
    db.session.add(record)
    db.session.flush()
    audit(
        "tfoms.ident_select",
        f"Пациент {patient.full_name} отобран(а) для идентификации в ТФОМС",
        obj=record,
        mo_id=patient.mo_id,
        user=user,
    )
    return f"{patient.full_name} отобран(а) для идентификации в ТФОМС: запрос уйдёт в ближайшем пакете."


def select_from_cases(day: date, mo_ids: Iterable[int]) -> int:
    """Daily: patients of the day's hospitalisations (КВС) and outpatient visits (ТАП) who were not
    identified in the last CASE_REPEAT_DAYS days and have no waiting record; one record per
    patient (a hospitalisation first), a case never twice. Returns how many were selected."""
    mo_ids = sorted(mo_ids)
    if not mo_ids:
        return 0
    start = datetime.combine(day - timedelta(days=CASE_LOOKBACK_DAYS), time.min)
    end = datetime.combine(day + timedelta(days=1), time.min)
    fresh = or_(
        Patient.tfoms_identified_on.is_(None),
        Patient.tfoms_identified_on < day - timedelta(days=CASE_REPEAT_DAYS),
    )
    h, e = Hospitalisation, ClinicalEvent
    stays = db.session.execute(
        select(h.id, h.source_id, h.mo_id, h.patient_id, h.admitted_at, h.discharged_at)
        .join(Patient, Patient.id == h.patient_id)
        .where(
            h.admitted_at >= start, h.admitted_at < end, h.mo_id.in_(mo_ids), fresh, ~_waiting(h.patient_id)
        )
        .order_by(h.admitted_at, h.id)
    ).all()
    visits = db.session.execute(
        select(e.id, e.source_id, e.mo_id, e.patient_id, e.at)
        .join(Patient, Patient.id == e.patient_id)
        .where(
            e.mo_id.in_(mo_ids),
            e.at >= start,
            e.at < end,
            e.care_conditions == "3",
            fresh,
            ~_waiting(e.patient_id),
        )
        .order_by(e.at, e.id)
    ).all()
    candidates: list[dict[str, Any]] = [
        {
            "mo_id": s.mo_id,
            "patient_id": s.patient_id,
            "case_type": "hospitalisation",
            "case_id": s.id,
            "case_number": s.source_id,
            "period_from": s.admitted_at.date(),
            "period_to": s.discharged_at.date() if s.discharged_at else None,
        }
        for s in stays
    ] + [
        {
            "mo_id": v.mo_id,
            "patient_id": v.patient_id,
            "case_type": "visit",
            "case_id": v.id,
            "case_number": v.source_id,
            "period_from": v.at.date(),
            "period_to": v.at.date(),
        }
        for v in visits
    ]
    if not candidates:
        return 0
    done: set[tuple[str, int]] = set()  # cases selected before (by any run), via the patient index
    patient_ids = sorted({c["patient_id"] for c in candidates})
    for chunk in chunks(patient_ids, CHUNK):
        done.update(
            db.session.execute(
                select(IdentRecord.case_type, IdentRecord.case_id).where(
                    IdentRecord.patient_id.in_(chunk), IdentRecord.case_id.is_not(None)
                )
            ).all()
        )
    now, taken, rows = utcnow(), set(), []
    for c in candidates:
        if c["patient_id"] in taken or (c["case_type"], c["case_id"]) in done:
            continue
        taken.add(c["patient_id"])
        rows.append({**c, "reason": "case", "status": IDENT_SELECTED, "created_at": now})
    if rows:
        db.session.execute(insert(IdentRecord), rows)
    return len(rows)


def selected_summary(mo_id: int | None, user: Any, limit: int = 50) -> tuple[int, list[Any]]:
    """«Отобрано для идентификации: N» and the first of them (patient, reason, date)."""
    condition = [IdentRecord.status == IDENT_SELECTED]
    # the (mo_id, status) index serves both: one МО, or every МО as an IN list (a few dozen)
    condition.append(
        IdentRecord.mo_id == mo_id if mo_id is not None else IdentRecord.mo_id.in_(select(Mo.id))
    )
    count = db.session.scalar(
        scoped(select(func.count()).select_from(IdentRecord).where(*condition), IdentRecord.mo_id, user)
    )
    first = db.session.execute(
        scoped(
            select(
                IdentRecord.id,
                IdentRecord.reason,
                IdentRecord.created_at,
                IdentRecord.case_type,
                IdentRecord.case_number,
                Patient.id.label("patient_id"),
                Patient.last_name,
                Patient.first_name,
                Patient.middle_name,
                Mo.short_name,
            )
            .join(Patient, Patient.id == IdentRecord.patient_id)
            .join(Mo, Mo.id == IdentRecord.mo_id)
            .where(*condition)
            .order_by(IdentRecord.id)
            .limit(limit),
            IdentRecord.mo_id,
            user,
        )
    ).all()
    return int(count or 0), first


# --- the request file (packaging) ---------------------------------------------------------------


@dataclass
class PackResult:
    packages: list[IdentPackage] = field(default_factory=list)
    records: int = 0  # in the files
    skipped: int = 0  # not sent: no combination of identifying fields
    message: str = ""


def _text(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def request_values(row: Any) -> tuple[dict[str, Any], str | None]:
    """The request fields of one selected record (joined with its patient), or why it cannot be sent."""
    document_number = _text(row.document_number)
    policy_number = _text(row.policy_number)
    enp = digits(row.enp) or None
    kind = row.policy_kind if row.policy_kind in POLICY_KIND_F008 else None
    values: dict[str, Any] = {
        "FAM": _text(row.last_name),
        "IM": _text(row.first_name),
        "OT": _text(row.middle_name),
        "DR": row.birth_date,
        "W": SEX_W.get(row.sex or ""),
        "SS": format_snils(row.snils) if len(digits(row.snils)) == 11 else None,
        "C_DOC": int(row.document_kind) if document_number and (row.document_kind or "").isdigit() else None,
        "S_DOC": _text(row.document_series) if document_number else None,
        "N_DOC": document_number,
        "OPDOC": POLICY_KIND_F008[kind] if kind and (policy_number or enp) else None,
        "SPOL": _text(row.policy_series) if kind else None,
        "NPOL": policy_number if kind else None,
        "ENP": enp if enp and len(enp) == 16 else None,
        "DIN": row.period_from,
        "DOUT": row.period_to,
    }
    base = {"FAM": "фамилия", "DR": "дата рождения", "W": "пол"}
    missing = [label for name, label in base.items() if values[name] is None]
    if missing or not (values["SS"] or values["C_DOC"] is not None or values["OPDOC"] is not None):
        if not (values["SS"] or values["C_DOC"] is not None or values["OPDOC"] is not None):
            missing.append("СНИЛС, документ или полис")
        return values, (
            f"Не отправлено в ТФОМС: для запроса нужны {_COMBINATION_TEXT}; не заполнено: {', '.join(missing)}."
        )
    for name, limit in _FIELD_LIMITS.items():
        value = values[name]
        if value is None:
            continue
        try:
            size = len(value.encode(DBF_ENCODING))
        except UnicodeEncodeError:
            return (
                values,
                f"Не отправлено в ТФОМС: поле {name} «{value}» содержит символы, недопустимые в файле (CP866).",
            )
        if size > limit:
            return values, f"Не отправлено в ТФОМС: значение поля {name} «{value}» длиннее {limit} знаков."
    return values, None


def _as_json(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in values.items()}


def _from_json(values: dict[str, Any]) -> dict[str, Any]:
    result = dict(values)
    for name in _REQUEST_DATES:
        if result.get(name):
            result[name] = date.fromisoformat(result[name])
    return result


def _next_number(prefix: str) -> int:
    """n of `{F003}_{ddmmyyyy}_{n}`: one more than the largest n of the names taken (names are unique)."""
    names = db.session.scalars(select(IdentPackage.name).where(IdentPackage.name.startswith(prefix))).all()
    numbers = [int(n[len(prefix) :]) for n in names if n[len(prefix) :].isdigit()]
    return max(numbers, default=0) + 1


def form_packages(mo_id: int, user: Any = None, day: date | None = None) -> PackResult:
    """«Сформировать пакет»: every selected record of the МО into new packages of at most
    PACKAGE_LIMIT records; records without an identifying combination are not sent and become
    «Не идентифицирован» with the missing fields named."""
    day = day or date.today()
    mo = db.session.get(Mo, mo_id)
    if mo is None:
        raise IdentError("МО не найдена.")
    if not (mo.f003_code or "").strip():
        raise IdentError(
            f"Пакет для МО «{mo.short_name}» не сформирован: у МО не указан код F003, "
            "а он нужен для имени файла запроса. Код передаёт исходная МИС в данных МО."
        )
    r, p = IdentRecord, Patient
    rows = db.session.execute(
        select(
            r.id,
            r.period_from,
            r.period_to,
            p.last_name,
            p.first_name,
            p.middle_name,
            p.birth_date,
            p.sex,
            p.snils,
            p.document_kind,
            p.document_series,
            p.document_number,
            p.policy_kind,
            p.policy_series,
            p.policy_number,
            p.enp,
        )
        .join(p, p.id == r.patient_id)
        .where(r.mo_id == mo_id, r.status == IDENT_SELECTED)
        .order_by(r.id)
    ).all()
    if not rows:
        return PackResult(
            message=f"Для МО «{mo.short_name}» нет отобранных на идентификацию людей: пакет не сформирован."
        )
    valid: list[tuple[int, dict[str, Any]]] = []
    refused: list[tuple[int, str]] = []
    for row in rows:
        values, problem = request_values(row)
        if problem:
            refused.append((row.id, problem))
        else:
            valid.append((row.id, values))

    result = PackResult(skipped=len(refused))
    table = IdentRecord.__table__
    update = table.update().where(table.c.id == bindparam("b_id"))
    prefix = f"{mo.f003_code.strip()}_{day:%d%m%Y}_"
    number = _next_number(prefix)
    for chunk in chunks(valid, PACKAGE_LIMIT):
        name = f"{prefix}{number}"
        package = IdentPackage(
            mo_id=mo_id,
            name=name,
            formed_on=day,
            number=number,
            user_id=_user_id(user),
            record_count=len(chunk),
            created_at=utcnow(),
        )
        db.session.add(package)
        db.session.flush()
        data = dbf_bytes(REQUEST_FIELDS, (values for _, values in chunk), encoding=DBF_ENCODING, today=day)
        write_atomically(request_path(package), data)
        db.session.execute(
            update.values(
                package_id=bindparam("b_package"),
                nrec=bindparam("b_nrec"),
                request=bindparam("b_request"),
                status=IDENT_SENT,
                status_on=day,
            ),
            [
                {"b_id": rid, "b_package": package.id, "b_nrec": n, "b_request": _as_json(values)}
                for n, (rid, values) in enumerate(chunk, 1)
            ],
        )
        journal(
            CHANNEL,
            None,
            "Формирование пакета",
            f"Пакет {name}: в файл запроса {package.file_name} включено записей: {len(chunk)}",
            level="ok",
            subject=(SUBJECT, package.id),
            mo_id=mo_id,
            user_id=_user_id(user),
            packet_id=package.file_name,
            packet_type=PACKET_IDENT_REQUEST,
        )
        if user is not None:
            audit(
                "tfoms.ident_package",
                f"Сформирован пакет идентификации {name} ({len(chunk)} записей)",
                obj=package,
                mo_id=mo_id,
                user=user,
            )
        result.packages.append(package)
        result.records += len(chunk)
        number += 1
    if refused:
        first_package = result.packages[0].id if result.packages else None
        db.session.execute(
            update.values(
                package_id=bindparam("b_package"),
                status=IDENT_NOT_IDENTIFIED,
                status_on=day,
                result=bindparam("b_result"),
            ),
            [{"b_id": rid, "b_package": first_package, "b_result": problem} for rid, problem in refused],
        )
        if first_package is not None:
            db.session.execute(
                db.update(IdentPackage)
                .where(IdentPackage.id == first_package)
                .values(errors_count=IdentPackage.errors_count + len(refused))
            )
    names = ", ".join(p.name for p in result.packages)
    if result.packages:
        result.message = (
            f"Сформирован{'' if len(result.packages) == 1 else 'ы'} "
            f"пакет{'' if len(result.packages) == 1 else 'ы'} {names}: записей в файле запроса {result.records}."
        )
    else:
        result.message = f"Пакет для МО «{mo.short_name}» не сформирован: ни у одного отобранного человека нет данных для запроса."
    if refused:
        result.message += (
            f" Не отправлено из-за неполных данных: {len(refused)} (статус «Не идентифицирован», "
            f"нужны {_COMBINATION_TEXT})."
        )
    return result


def journal_refusal(mo_id: int, message: str, user: Any = None) -> None:
    """A package that could not be formed: an error line of the run, under the МО."""
    journal(
        CHANNEL,
        None,
        "Формирование пакета",
        message,
        level="error",
        subject=(SUBJECT_MO, mo_id),
        mo_id=mo_id,
        user_id=_user_id(user),
        packet_type=PACKET_IDENT_REQUEST,
    )


def select_and_package(mo_id: int | None = None, day: date | None = None) -> str:
    """The daily job: select from the day's treatment cases, then package every МО with the
    procedure on that has selected records. Runs inside the job's service run."""
    day = day or date.today()
    enabled = enabled_mo_ids(PROCEDURE)
    if mo_id is not None:
        enabled &= {mo_id}
    if not enabled:
        return "Пакетная идентификация не включена ни для одной МО: отбор не выполнялся."
    selected = select_from_cases(day, enabled)
    waiting_mos = db.session.scalars(
        select(IdentRecord.mo_id)
        .where(IdentRecord.status == IDENT_SELECTED, IdentRecord.mo_id.in_(sorted(enabled)))
        .distinct()
    ).all()
    packages, records, problems = 0, 0, []
    for mo in sorted(waiting_mos):
        try:
            result = form_packages(mo, None, day)
        except IdentError as error:
            problems.append(str(error))
            journal_refusal(mo, str(error))
            continue
        packages += len(result.packages)
        records += result.records
    summary = (
        f"Отобрано по случаям лечения: {selected}. Сформировано пакетов: {packages} (записей: {records})."
    )
    if problems:
        summary += " " + " ".join(problems)
    return summary


def package_file(package: IdentPackage) -> bytes:
    """The request file; rebuilt from the stored request values if the file has gone from the disk."""
    path = request_path(package)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        rows = db.session.execute(
            select(IdentRecord.request)
            .where(IdentRecord.package_id == package.id, IdentRecord.nrec.is_not(None))
            .order_by(IdentRecord.nrec)
        ).scalars()
        return dbf_bytes(
            REQUEST_FIELDS, (_from_json(v) for v in rows), encoding=DBF_ENCODING, today=package.formed_on
        )


def delete_package(package: IdentPackage, user: Any = None) -> tuple[str, list[Path]]:
    """«Удалить»: the package, its records; returns the files to delete after the commit."""
    name = package.name
    files = [request_path(package)] + _inbox_files(name)
    db.session.execute(db.delete(IdentRecord).where(IdentRecord.package_id == package.id))
    audit(
        "tfoms.ident_delete",
        f"Удалён пакет идентификации {name}",
        obj=package,
        mo_id=package.mo_id,
        user=user,
    )
    db.session.delete(package)
    db.session.flush()
    return f"Пакет {name} удалён вместе с записями и файлами.", files


def _inbox_files(name: str) -> list[Path]:
    folder = inbox_dir()
    return [p for p in folder.iterdir() if p.is_file() and p.stem == name and p.suffix.upper() == ".DBF"]


def remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


# --- the answer (seed 4.3.4, 4.3.5) -------------------------------------------------------------


@dataclass
class AnswerResult:
    ok: bool
    message: str
    package_id: int | None = None
    identified: int = 0
    not_identified: int = 0
    not_received: int = 0
    unmatched: int = 0
    remove_after_commit: list[Path] = field(default_factory=list)


def package_by_file_name(file_name: str) -> IdentPackage | None:
    stem = os.path.splitext(_base_name(file_name))[0]
    return db.session.scalars(select(IdentPackage).where(IdentPackage.name == stem)).first()


def _base_name(file_name: str) -> str:
    return re.split(r"[\\/]", file_name or "")[-1].strip()


def _norm(value: Any) -> Any:
    """One form for a request value (JSON) and its echo in the answer (DBF)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().upper() or None
    if isinstance(value, date):
        return value.isoformat()
    return value


def _refuse(
    message: str, *, package: IdentPackage | None, file_name: str, user: Any, mo_id: int | None
) -> AnswerResult:
    journal(
        CHANNEL,
        None,
        "Загрузка ответа",
        message,
        level="error",
        subject=(SUBJECT, package.id) if package is not None else (SUBJECT_FILE, 0),
        mo_id=mo_id,
        user_id=_user_id(user),
        packet_id=file_name,
        packet_type=PACKET_IDENT_ANSWER,
    )
    return AnswerResult(False, message, package.id if package is not None else None)


def _mo_of_name(stem: str) -> int | None:
    match = _NAME.match(stem)
    if not match:
        return None
    return db.session.scalar(select(Mo.id).where(Mo.f003_code == match["f003"]).limit(1))


@dataclass
class Policy:
    id: int | None  # PatientPolicy.id; None: the patient's current policy columns
    kind: str | None
    series: str | None
    number: str | None
    enp: str | None
    insurer_code: str | None
    begin: date | None
    end: date | None

    def numbers(self) -> set[str]:
        return {n for n in (_norm(self.number), _norm(self.enp)) if n}

    def label(self) -> str:
        parts = [" ".join(x for x in (self.series, self.number or self.enp) if x)]
        if self.insurer_code:
            parts.append(f"СМО {self.insurer_code}")
        if self.begin or self.end:
            period = f"с {_d(self.begin)}" if self.begin else ""
            period += f" по {_d(self.end)}" if self.end else " бессрочно"
            parts.append(period.strip())
        return ", ".join(p for p in parts if p)


def _overlap(b1: date | None, e1: date | None, b2: date | None, e2: date | None) -> bool:
    return (b1 or date.min) <= (e2 or date.max) and (b2 or date.min) <= (e1 or date.max)


def existing_policies(patient_ids: list[int]) -> dict[int, list[Policy]]:
    """Every policy known for the patients: the policy history and the current policy columns."""
    existing: dict[int, list[Policy]] = {}
    pp, p = PatientPolicy, Patient
    for chunk in chunks(patient_ids, CHUNK):
        for row in db.session.execute(
            select(
                pp.id,
                pp.patient_id,
                pp.kind,
                pp.series,
                pp.number,
                pp.enp,
                pp.insurer_code,
                pp.begin_on,
                pp.end_on,
            ).where(pp.patient_id.in_(chunk))
        ):
            existing.setdefault(row.patient_id, []).append(
                Policy(
                    row.id,
                    row.kind,
                    row.series,
                    row.number,
                    row.enp,
                    row.insurer_code,
                    row.begin_on,
                    row.end_on,
                )
            )
        for row in db.session.execute(
            select(
                p.id,
                p.policy_kind,
                p.policy_series,
                p.policy_number,
                p.enp,
                p.insurer_code,
                p.policy_begin,
                p.policy_end,
            ).where(p.id.in_(chunk), or_(p.policy_begin.is_not(None), p.policy_end.is_not(None)))
        ):
            existing.setdefault(row.id, []).append(
                Policy(
                    None,
                    row.policy_kind,
                    row.policy_series,
                    row.policy_number,
                    row.enp,
                    row.insurer_code,
                    row.policy_begin,
                    row.policy_end,
                )
            )
    return existing


def match_policy(olds: Iterable[Policy], new: Policy) -> tuple[Policy | None, Policy | None]:
    """(the same policy already saved, a different one whose period overlaps the new one's)."""
    same: Policy | None = None
    for old in olds:
        if old.insurer_code == new.insurer_code and (old.numbers() & new.numbers()):
            if old.id is not None and same is None:
                same = old
            continue
        if _overlap(new.begin, new.end, old.begin, old.end):
            return same, old
    return same, None


def process_answer(
    file_name: str, data: bytes | str | os.PathLike, *, user: Any = None, check_mo: bool
) -> AnswerResult:
    """Load an answer DBF (upload or inbox). A refusal changes nothing but one journal line."""
    name = _base_name(file_name)
    stem, ext = os.path.splitext(name)
    own_mo = getattr(user, "mo_id", None) if user is not None else None
    if ext.upper() != ".DBF":
        return _refuse(
            f"Файл «{name}» не принят: загружать можно только файлы ответа ТФОМС в формате .DBF.",
            package=None,
            file_name=name,
            user=user,
            mo_id=own_mo or _mo_of_name(stem),
        )
    package = package_by_file_name(name)
    if package is None:
        return _refuse(
            f"Пакет {stem} не найден: имя файла ответа (без расширения) должно совпадать с именем "
            "пакета запроса. Ответ не загружен.",
            package=None,
            file_name=name,
            user=user,
            mo_id=own_mo or _mo_of_name(stem),
        )
    if check_mo and user is not None and not user.is_central and package.mo_id != user.mo_id:
        return _refuse(
            f"Файл {name} относится к МО «{package.mo.short_name}» (код F003 {package.mo.f003_code}), "
            "а вы работаете в другой МО: загрузить ответ нельзя.",
            package=package,
            file_name=name,
            user=user,
            mo_id=own_mo,
        )
    if package.answer_loaded_at is not None:
        return _refuse(
            f"Ответ на пакет {package.name} уже загружен {package.answer_loaded_at:%d.%m.%Y %H:%M}: "
            "повторная загрузка не выполняется.",
            package=package,
            file_name=name,
            user=user,
            mo_id=package.mo_id,
        )
    try:
        table = read_dbf(data, encoding=DBF_ENCODING)
        missing = has_fields(table, ANSWER_REQUIRED)
        if missing:
            raise DbfError(f"в файле нет полей ответа ТФОМС: {', '.join(missing)}.")
        matched, unmatched = _match(table, package)
    except DbfError as error:
        text = str(error)
        return _refuse(
            f"Файл {name} не загружен: {text[:1].lower() + text[1:]}",
            package=package,
            file_name=name,
            user=user,
            mo_id=package.mo_id,
        )
    if not matched:
        return _refuse(
            f"Ни одна запись ответа {name} не соответствует запросу пакета {package.name} "
            f"(записей в ответе: {unmatched}): ответ не загружен, статусы не изменены.",
            package=package,
            file_name=name,
            user=user,
            mo_id=package.mo_id,
        )
    # Claim the package: of two uploads of one answer at the same moment only one gets the row
    # (PostgreSQL re-checks the condition after the first commits; SQLite writes one at a time).
    loaded_at = utcnow()
    claimed = db.session.execute(
        db.update(IdentPackage)
        .where(IdentPackage.id == package.id, IdentPackage.answer_loaded_at.is_(None))
        .values(answer_loaded_at=loaded_at)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not claimed:
        return _refuse(
            f"Ответ на пакет {package.name} уже загружен: повторная загрузка не выполняется.",
            package=package,
            file_name=name,
            user=user,
            mo_id=package.mo_id,
        )
    result = _apply(package, matched)
    result.unmatched = unmatched
    today = date.today()
    t = IdentRecord.__table__
    not_received = db.session.execute(
        t.update()
        .where(t.c.package_id == package.id, t.c.status == IDENT_SENT)
        .values(status=IDENT_NOT_IDENTIFIED, status_on=today, result=NO_ANSWER_TEXT)
    ).rowcount
    result.not_received = int(not_received or 0)
    counts = dict(
        db.session.execute(
            select(t.c.status, func.count()).where(t.c.package_id == package.id).group_by(t.c.status)
        ).all()
    )
    package.answer_loaded_at = loaded_at
    package.identified_count = counts.get(IDENT_IDENTIFIED, 0)
    package.errors_count = counts.get(IDENT_NOT_IDENTIFIED, 0)
    result.message = (
        f"Ответ {name} загружен: идентифицировано {result.identified}, не идентифицировано "
        f"{result.not_identified}, данные от ТФОМС не получены {result.not_received}"
        + (f", записей ответа без соответствия в запросе {unmatched}" if unmatched else "")
        + "."
    )
    journal(
        CHANNEL,
        None,
        "Загрузка ответа",
        result.message,
        level="ok",
        subject=(SUBJECT, package.id),
        mo_id=package.mo_id,
        user_id=_user_id(user),
        packet_id=name,
        packet_type=PACKET_IDENT_ANSWER,
    )
    if user is not None:
        audit(
            "tfoms.ident_answer",
            f"Загружен ответ на пакет {package.name}",
            obj=package,
            mo_id=package.mo_id,
            user=user,
        )
    result.remove_after_commit.append(request_path(package))
    db.session.flush()
    return result


@dataclass(slots=True)
class _Matched:
    record_id: int
    patient_id: int
    answer: tuple[Any, ...]  # RESULT_FIELDS of the answer record


def _key(values: Any, names: list[str]) -> tuple[Any, ...]:
    """The match key of a request (JSON) or answer (DBF) record: `_norm` of each field, inlined —
    it runs fifteen times for each of up to 100,000 records on both sides."""
    return tuple(
        [
            (v.strip().upper() or None)
            if v.__class__ is str
            else (v.isoformat() if v.__class__ is date else v)
            for v in map(values.get, names)
        ]
    )


def _match(table: Any, package: IdentPackage) -> tuple[list[_Matched], int]:
    """Answer records matched to request records (equal person fields); the rest are counted."""
    t = IdentRecord.__table__
    requests = db.session.execute(
        select(t.c.id, t.c.patient_id, t.c.nrec, t.c.request).where(
            t.c.package_id == package.id, t.c.nrec.is_not(None), t.c.status == IDENT_SENT
        )
    ).all()
    request_names = [r for r, _ in MATCH_FIELDS]
    index: dict[tuple[Any, ...], list[tuple[int, int, int]]] = {}
    for rid, pid, nrec, values in requests:
        index.setdefault(_key(values or {}, request_names), []).append((rid, pid, nrec))
    del requests
    answer_names = [a for _, a in MATCH_FIELDS]
    result_fields = RESULT_FIELDS
    matched: list[_Matched] = []
    used: set[int] = set()
    unmatched = 0
    for record in table:
        candidates = index.get(_key(record, answer_names))
        chosen = None
        if candidates:
            if len(candidates) == 1:
                chosen = candidates[0] if candidates[0][0] not in used else None
            else:  # people with equal data in one package: NREC tells them apart
                nrec = record.get("NREC")
                free = [c for c in candidates if c[0] not in used]
                chosen = next((c for c in free if c[2] == nrec), free[0] if free else None)
        if chosen is None:
            unmatched += 1
            continue
        used.add(chosen[0])
        matched.append(_Matched(chosen[0], chosen[1], tuple([record.get(n) for n in result_fields])))
    return matched, unmatched


def _apply(package: IdentPackage, matched: list[_Matched]) -> AnswerResult:
    """Policies and statuses of the matched records, in bulk."""
    today, now = date.today(), utcnow()
    insurers_by_code: dict[str, str] = {}
    insurers_by_ogrn: dict[str, str] = {}
    for code, ogrn in db.session.execute(select(Insurer.code, Insurer.ogrn)).all():
        insurers_by_code[code.strip()] = code
        if ogrn:
            insurers_by_ogrn[ogrn.strip()] = code
    to_check = sorted({m.patient_id for m in matched if not _text(m.answer[0])})
    existing = existing_policies(to_check)

    result = AnswerResult(True, "", package.id)
    record_rows: list[dict[str, Any]] = []
    policy_inserts: list[dict[str, Any]] = []
    policy_updates: list[dict[str, Any]] = []
    patient_rows: list[dict[str, Any]] = []

    def fail(m: _Matched, errors: str | None, text: str) -> None:
        result.not_identified += 1
        record_rows.append(
            {"b_id": m.record_id, "b_status": IDENT_NOT_IDENTIFIED, "b_errors": errors, "b_result": text}
        )

    for m in matched:
        eerp, repl, rq, rqogrn, ropdoc, rspol, rnpol, renp, rdbeg, rdend = m.answer
        errors = _text(repl)
        if _text(eerp):
            fail(m, errors, _text(eerp))
            continue
        insurer = insurers_by_code.get((rq or "").strip()) or insurers_by_ogrn.get((rqogrn or "").strip())
        if insurer is None:
            fail(
                m,
                errors,
                f"Страховая медицинская организация не найдена в справочнике СМО: код {rq or '—'}, "
                f"ОГРН {rqogrn or '—'}. Полис не сохранён.",
            )
            continue
        kind = F008_POLICY_KIND.get(ropdoc) if ropdoc is not None else None
        if kind is None:
            fail(
                m,
                errors,
                f"Неизвестный тип полиса ROPDOC «{ropdoc if ropdoc is not None else ''}». Полис не сохранён.",
            )
            continue
        enp = digits(renp) or None
        number = _text(rnpol) or enp
        if not number:
            fail(m, errors, "В ответе нет номера полиса (RNPOL, RENP). Полис не сохранён.")
            continue
        new = Policy(None, kind, _text(rspol), number, enp, insurer, rdbeg, rdend)
        same, conflict = match_policy(existing.get(m.patient_id, ()), new)
        if conflict is not None:
            fail(
                m,
                errors,
                f"Период действия полиса пересекается с полисом {conflict.label()}. Полис {new.label()} не сохранён.",
            )
            continue
        if same is not None:
            policy_updates.append(
                {
                    "b_id": same.id,
                    "b_kind": kind,
                    "b_series": new.series,
                    "b_enp": enp,
                    "b_begin": new.begin,
                    "b_end": new.end,
                }
            )
            same.kind, same.series, same.begin, same.end = kind, new.series, new.begin, new.end
        else:
            policy_inserts.append(
                {
                    "patient_id": m.patient_id,
                    "kind": kind,
                    "series": new.series,
                    "number": number,
                    "enp": enp,
                    "insurer_code": insurer,
                    "begin_on": new.begin,
                    "end_on": new.end,
                    "source": "tfoms_ident",
                    "created_at": now,
                }
            )
            existing.setdefault(m.patient_id, []).append(new)
        patient_rows.append(
            {
                "b_id": m.patient_id,
                "b_kind": kind,
                "b_series": new.series,
                "b_number": number,
                "b_enp": enp,
                "b_insurer": insurer,
                "b_begin": new.begin,
                "b_end": new.end,
            }
        )
        result.identified += 1
        record_rows.append(
            {
                "b_id": m.record_id,
                "b_status": IDENT_IDENTIFIED,
                "b_errors": errors,
                "b_result": f"Полис сохранён: {POLICY_KINDS.get(kind, kind)} {new.label()}",
            }
        )

    t = IdentRecord.__table__
    db.session.execute(
        t.update()
        .where(t.c.id == bindparam("b_id"))
        .values(
            status=bindparam("b_status"),
            status_on=today,
            errors=bindparam("b_errors"),
            result=bindparam("b_result"),
        ),
        record_rows,
    )
    if policy_inserts:  # Core executemany: the ORM's bulk insert splits rows by their None columns
        db.session.execute(PatientPolicy.__table__.insert(), policy_inserts)
    if policy_updates:
        pt = PatientPolicy.__table__
        db.session.execute(
            pt.update()
            .where(pt.c.id == bindparam("b_id"))
            .values(
                kind=bindparam("b_kind"),
                series=bindparam("b_series"),
                enp=func.coalesce(bindparam("b_enp", type_=String), pt.c.enp),
                begin_on=bindparam("b_begin"),
                end_on=bindparam("b_end"),
            ),
            policy_updates,
        )
    if patient_rows:
        pt = Patient.__table__
        db.session.execute(
            pt.update()
            .where(pt.c.id == bindparam("b_id"))
            .values(
                policy_kind=bindparam("b_kind"),
                policy_series=bindparam("b_series"),
                policy_number=bindparam("b_number"),
                enp=func.coalesce(bindparam("b_enp", type_=String), pt.c.enp),
                insurer_code=bindparam("b_insurer"),
                policy_begin=bindparam("b_begin"),
                policy_end=bindparam("b_end"),
                tfoms_identified_on=today,
                updated_at=now,
            ),
            patient_rows,
        )
    return result


def process_inbox(mo_id: int | None = None) -> str:
    """The answers job: every *.DBF in the inbox folder, like «Загрузить» without the МО check.
    Each file is its own transaction; a loaded answer is deleted, a refused one moved to
    inbox/rejected/ (the reason is in the journal) so that it is not read again."""
    folder = inbox_dir()
    prefix = None
    if mo_id is not None:
        code = db.session.scalar(select(Mo.f003_code).where(Mo.id == mo_id))
        if not code:
            return "У МО не указан код F003: ответы идентификации этой МО не определить."
        prefix = f"{code.strip()}_"
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.upper() == ".DBF")
    if prefix is not None:
        files = [p for p in files if p.name.startswith(prefix)]
    if not files:
        return "Новых файлов ответов нет."
    loaded, rejected = 0, 0
    for path in files:
        result = process_answer(path.name, path, user=None, check_mo=False)
        db.session.commit()
        if result.ok:
            loaded += 1
            remove_files([*result.remove_after_commit, path])
        else:
            rejected += 1
            target = rejected_dir() / path.name
            if target.exists():
                target = target.with_name(f"{path.stem}-{utcnow():%Y%m%d%H%M%S%f}{path.suffix}")
            shutil.move(str(path), str(target))
    return f"Обработано файлов ответов: {len(files)} (загружено: {loaded}, отклонено: {rejected})."
