"""Prophylactic plans and ТФОМС (seed 4.5.2, SPEC T-10): the PROF export and its error answer.

The export («Экспорт данных плана профилактического мероприятия», order ФФОМС № 88) writes one
XML file per СМО chosen (or one without СМО), zipped under the same name:

    PROF_M{registry number, 6}T{ТФОМС code, 2}[S{СМО code, 5}]_{YY}{MM}{N}.zip → one entry ….XML

YY is the form's Год, MM the first month of the reporting period, N the packet number (1–9),
unique per МО and reporting period. The seed's example «PROF_M590001T59 S59021_17011.zip» has a
space before S: a typo, no space is written (ПроМед's Perm exporter writes none).

XML flavour — ПроМед's Perm template (the seed's example name is Perm's, T59), windows-1251:

    ZL_LIST/ZGLV: VERSION 1.0, DATA (export date), FILENAME, CODMOF (F003 code of the МО, else its
                  registry number), YEAR (the form's Год), QUART (Квартал загрузки, only if chosen).
                  Perm's FILENAME1 is always written empty there, so it is left out here.
    SV_PR_MER:    NOMER_Z (1..n in the file), PERSON_ID (patient id), SMOCOD, ENP, FAM, IM, OT, DR,
                  W, DOCTYPE, DOCSER, DOCNUM, SNILS, VPOLIS, SPOLIS, NPOLIS, TEL, KAT_LG, COMMENT,
                  SV_PL_MER(QUART, DISP)

Choices where the sources are silent or differ (and are kept in one place here):
* an element without a value is left out, never written empty (ПроМед's parser drops empty tags);
* OT without a Cyrillic letter is written «НЕТ», as ПроМед does (the ФОМС convention);
* DR is YYYY-MM-DD; W is 1 male / 2 female; SNILS is XXX-XXX-XXX XX;
* VPOLIS is F008: 1 old-style policy (С), 2 temporary certificate (В), 3 unified policy (П, Э, К);
  NPOLIS is the policy number, for a unified policy without one the ЕНП;
* TEL: the last ten digits of the phone when it has at least ten, else left out (as ПроМед);
* KAT_LG (category of privilege: ПроМед maps privileges 11→1, 50→18, 150→21): the portal has no
  privileges, so it is left out; COMMENT likewise;
* DISP is the V016 code ПроМед writes (ДВ4 for ДВН, ОПВ for ПОВН) rather than the plan kind number;
  the children's kinds take the V016 codes other regional exporters use (DISP_CODES).

With СМО chosen only people of that СМО with status «Отправлен в ТФОМС» go in, one file per СМО
(seed 4.5.2.1.3; ПроМед Perm takes «Принята ТФОМС» instead — the seed is followed); without СМО,
every person «Новые», who then become «Отправлен в ТФОМС». A file without records is not made.

The answer (OSHIB_PR, pddp_err.xsd) names the PROF file in FNAME_I; each ZAP_OSHIB marks its
NOMER_Z «Ошибка», and everyone else of that file still «Отправлен в ТФОМС» becomes «Принята ТФОМС»
(as seed 4.4.5.2.1 does for the queue answer and ПроМед does for this file).
"""

from __future__ import annotations

import io
import re
import shutil
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from lxml import etree
from sqlalchemy import and_, func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer

from portal.admin import services as admin_services
from portal.admin.registry import SETTINGS, SettingDef, register_setting
from portal.auth.scoping import scoped
from portal.clinical.identifiers import digits, format_snils
from portal.clinical.models import (
    PLAN_KINDS,
    PLAN_PERSON_ACCEPTED,
    PLAN_PERSON_ERROR,
    PLAN_PERSON_NEW,
    PLAN_PERSON_SENT,
    PLAN_PERSON_STATUSES,
    Insurer,
    Mo,
    Patient,
    PlanPerson,
    ProphylacticPlan,
    join_name,
)
from portal.exchange.delivery import journal
from portal.extensions import db
from portal.models_base import chunks, utcnow
from portal.tfoms.channel import CHANNEL, PACKET_PROF, PACKET_PROF_ERRORS
from portal.tfoms.files import inbox_dir, max_upload_bytes, tfoms_dir
from portal.tfoms.models import PlanExport, PlanExportRecord

TFOMS_CODE = SETTINGS.get("tfoms.code") or register_setting(
    SettingDef(
        "tfoms.code",
        "ТФОМС",
        "Код ТФОМС (двузначный)",
        "text",
        "35",
        help="Np в имени файла плана профилактических мероприятий PROF_M…T{код}…: код ТФОМС — получателя.",
    )
)

PROCEDURE = "tfoms_prof"  # the per-МО integration switch and the service of the journal
SUBJECT = "tfoms_plan_export"

FORM_INVALID = (
    "Не все поля формы заполнены корректно, проверьте введенные вами данные. "
    "Некорректно заполненные поля выделены особо"
)
EXPORT_DONE = "Экспорт успешно завершён"

MONTHS: dict[int, str] = {
    1: "Январь", 2: "Февраль", 3: "Март", 4: "Апрель", 5: "Май", 6: "Июнь",
    7: "Июль", 8: "Август", 9: "Сентябрь", 10: "Октябрь", 11: "Ноябрь", 12: "Декабрь",
}  # fmt: skip
# «Квартал загрузки» (seed 4.5.2.1.3): changes loaded by 1 April, 1 July, 1 October.
LOAD_QUARTERS: dict[int, str] = {
    2: "2 квартал (к 1 апреля)",
    3: "3 квартал (к 1 июля)",
    4: "4 квартал (к 1 октября)",
}

# SV_PL_MER/DISP: V016 «типы диспансеризации» by plan kind (see the module docstring).
DISP_CODES: dict[str, str] = {
    "1": "ДВ4",  # Дисп-ция взр. населения 1-ый этап (ПроМед)
    "3": "ДС1",  # Дисп-ция детей-сирот стационарных 1-ый этап
    "5": "ОПВ",  # Проф. осмотры взр. населения (ПроМед)
    "6": "ОН3",  # Периодические осмотры несовершеннолетних
    "7": "ДС2",  # Дисп-ция детей-сирот усыновленных 1-ый этап
    "9": "ОН2",  # Предварительные осмотры несовершеннолетних 1-ый этап
    "10": "ПН1",  # Профилактические осмотры несовершеннолетних 1-ый этап
}
# F008 «типы полиса» by the policy kind letters of the intake contract.
VPOLIS: dict[str, str] = {"С": "1", "В": "2", "П": "3", "Э": "3", "К": "3"}

SV_PR_MER_ORDER = (  # the element order of a record, SV_PL_MER last
    "NOMER_Z", "PERSON_ID", "SMOCOD", "ENP", "FAM", "IM", "OT", "DR", "W", "DOCTYPE", "DOCSER", "DOCNUM",
    "SNILS", "VPOLIS", "SPOLIS", "NPOLIS", "TEL", "KAT_LG", "COMMENT",
)  # fmt: skip

SERVICE = "tfoms_prof"  # «Обмен планами профилактических осмотров»: exports, uploads, the inbox job
CHUNK = 1000  # rows per statement when statuses and records are written
PAYLOAD_LIMIT = 64 * 1024  # characters of a PROF file kept in the journal line
PEOPLE_PAGE = 100
EXPORTS_PAGE = 30
PLANS_LIMIT = 1000
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "tfoms" / "pddp_err.xsd"
_CYRILLIC = re.compile(r"[А-Яа-яЁё]")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True)


class PlanError(Exception):
    """A request the page refuses: status and a Russian message that names what is wrong."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- the list of plans and their people --------------------------------------------------------


def kind_title(kind: str) -> str:
    """«5. Проф. осмотры взр. населения», as the export form shows the type."""
    return f"{kind}. {PLAN_KINDS.get(kind, kind)}"


@dataclass(frozen=True)
class PlanFilters:
    mo_id: int | None
    year: int
    kind: str | None

    @classmethod
    def parse(cls, args: Any, own_mo_id: int | None, is_central: bool) -> PlanFilters:
        """МО forced to the user's own unless central; the year defaults to the current one."""
        mo_id = own_mo_id
        if is_central:
            raw_mo = (args.get("mo") or "").strip()
            if raw_mo and not raw_mo.isdigit():
                raise PlanError(f"Некорректная МО в фильтре: «{raw_mo}».")
            mo_id = int(raw_mo) if raw_mo else None
        raw_year = (args.get("year") or "").strip()
        if not raw_year:
            year = date.today().year
        elif re.fullmatch(r"\d{4}", raw_year) and 2000 <= int(raw_year) <= 2099:
            year = int(raw_year)
        else:
            raise PlanError(f"Некорректный год плана: «{raw_year}» — ожидается год из четырёх цифр.")
        kind = (args.get("kind") or "").strip() or None
        if kind is not None and kind not in PLAN_KINDS:
            raise PlanError(f"Неизвестный вид плана: «{kind}».")
        return cls(mo_id, year, kind)

    def query_args(self) -> dict[str, str]:
        args = {"year": str(self.year)}
        if self.mo_id is not None:
            args["mo"] = str(self.mo_id)
        if self.kind:
            args["kind"] = self.kind
        return args


@dataclass
class PlanRow:
    plan: ProphylacticPlan
    mo_name: str
    total: int
    counts: dict[str, int]


def plan_rows(filters: PlanFilters, user: Any) -> tuple[list[PlanRow], bool]:
    """Plans under the filters with their people counted by status (one grouped query)."""
    stmt = (
        db.select(ProphylacticPlan, Mo.short_name)
        .join(Mo, Mo.id == ProphylacticPlan.mo_id)
        .where(ProphylacticPlan.year == filters.year)
        .order_by(
            Mo.short_name,
            func.length(ProphylacticPlan.kind),
            ProphylacticPlan.kind,
            ProphylacticPlan.quarter.is_not(None),
            ProphylacticPlan.quarter,
            ProphylacticPlan.id,
        )
        .limit(PLANS_LIMIT + 1)
    )
    if filters.mo_id is not None:
        stmt = stmt.where(ProphylacticPlan.mo_id == filters.mo_id)
    if filters.kind:
        stmt = stmt.where(ProphylacticPlan.kind == filters.kind)
    found = db.session.execute(scoped(stmt, ProphylacticPlan.mo_id, user)).all()
    more = len(found) > PLANS_LIMIT
    found = found[:PLANS_LIMIT]
    counts: dict[int, dict[str, int]] = {plan.id: {} for plan, _ in found}
    for ids in chunks(list(counts), CHUNK):
        grouped = db.session.execute(
            db.select(PlanPerson.plan_id, PlanPerson.status, func.count())
            .where(PlanPerson.plan_id.in_(ids))
            .group_by(PlanPerson.plan_id, PlanPerson.status)
        )
        for plan_id, status, count in grouped:
            counts[plan_id][status] = count
    rows = [PlanRow(plan, mo_name, sum(counts[plan.id].values()), counts[plan.id]) for plan, mo_name in found]
    return rows, more


def plan_years(filters: PlanFilters, user: Any) -> list[int]:
    """Years that have plans in the user's scope, with the current and the chosen year."""
    stmt = db.select(ProphylacticPlan.year).distinct()
    if filters.mo_id is not None:
        stmt = stmt.where(ProphylacticPlan.mo_id == filters.mo_id)
    years = set(db.session.scalars(scoped(stmt, ProphylacticPlan.mo_id, user)))
    return sorted(years | {date.today().year, filters.year}, reverse=True)


def get_plan(plan_id: int, user: Any) -> ProphylacticPlan:
    """A plan the user may see; another МО's plan is as absent as a missing one (404)."""
    plan = db.session.scalar(
        scoped(
            db.select(ProphylacticPlan).where(ProphylacticPlan.id == plan_id), ProphylacticPlan.mo_id, user
        )
    )
    if plan is None:
        raise PlanError(f"План № {plan_id} не найден.", 404)
    return plan


@dataclass
class PersonRow:
    id: int
    name: str
    birth_date: date | None
    enp: str | None
    insurer_code: str | None
    insurer_name: str | None
    quarter: int
    status: str
    status_text: str | None
    status_at: datetime | None

    @property
    def status_label(self) -> str:
        return PLAN_PERSON_STATUSES.get(self.status, self.status)


def parse_status(raw: str | None) -> str | None:
    status = (raw or "").strip() or None
    if status is not None and status not in PLAN_PERSON_STATUSES:
        raise PlanError(f"Неизвестный статус: «{status}».")
    return status


def parse_after(raw: str | None) -> int | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise PlanError(f"Некорректная позиция списка: «{raw}».")
    return int(raw)


def plan_people(
    plan: ProphylacticPlan, status: str | None, after: int | None
) -> tuple[list[PersonRow], int | None]:
    """One page of a plan's people in id order (keyset), and the cursor of the next page."""
    stmt = (
        db.select(
            PlanPerson.id,
            Patient.last_name,
            Patient.first_name,
            Patient.middle_name,
            Patient.birth_date,
            Patient.enp,
            Patient.insurer_code,
            Insurer.name,
            PlanPerson.quarter,
            PlanPerson.status,
            PlanPerson.status_text,
            PlanPerson.status_at,
        )  # fmt: skip
        .join(Patient, Patient.id == PlanPerson.patient_id)
        .outerjoin(Insurer, Insurer.code == Patient.insurer_code)
        .where(PlanPerson.plan_id == plan.id)
        .order_by(PlanPerson.id)
        .limit(PEOPLE_PAGE + 1)
    )
    if status:
        stmt = stmt.where(PlanPerson.status == status)
    if after is not None:
        stmt = stmt.where(PlanPerson.id > after)
    rows = [
        PersonRow(r[0], join_name(r[1], r[2], r[3]), r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11])
        for r in db.session.execute(stmt)
    ]
    cursor = rows[PEOPLE_PAGE - 1].id if len(rows) > PEOPLE_PAGE else None
    return rows[:PEOPLE_PAGE], cursor


def status_counts(plan: ProphylacticPlan) -> dict[str, int]:
    grouped = db.session.execute(
        db.select(PlanPerson.status, func.count())
        .where(PlanPerson.plan_id == plan.id)
        .group_by(PlanPerson.status)
    )
    return dict(grouped.all())


# --- earlier exports --------------------------------------------------------------------------


@dataclass
class ExportRow:
    export: PlanExport
    mo_name: str
    user_name: str | None
    insurer_name: str | None


def export_rows(
    mo_id: int | None, user: Any, before: int | None = None
) -> tuple[list[ExportRow], int | None]:
    """Newest exports first (keyset on id), without their content."""
    from portal.auth.models import User

    stmt = (
        db.select(PlanExport, Mo.short_name, User.full_name, Insurer.name)
        .join(Mo, Mo.id == PlanExport.mo_id)
        .outerjoin(User, User.id == PlanExport.user_id)
        .outerjoin(Insurer, Insurer.code == PlanExport.insurer_code)
        .options(defer(PlanExport.content))
        .order_by(PlanExport.id.desc())
        .limit(EXPORTS_PAGE + 1)
    )
    if mo_id is not None:
        stmt = stmt.where(PlanExport.mo_id == mo_id)
    if before is not None:
        stmt = stmt.where(PlanExport.id < before)
    found = [ExportRow(*row) for row in db.session.execute(scoped(stmt, PlanExport.mo_id, user))]
    cursor = found[EXPORTS_PAGE - 1].export.id if len(found) > EXPORTS_PAGE else None
    return found[:EXPORTS_PAGE], cursor


def get_export(export_id: int, user: Any) -> PlanExport:
    """An export the user may see; another МО's export is as absent as a missing one (404)."""
    export = db.session.scalar(
        scoped(db.select(PlanExport).where(PlanExport.id == export_id), PlanExport.mo_id, user)
    )
    if export is None:
        raise PlanError(f"Файл экспорта № {export_id} не найден.", 404)
    return export


# --- the export form --------------------------------------------------------------------------


def parse_plan_ids(raw: Sequence[str]) -> list[int]:
    ids: list[int] = []
    for value in raw:
        value = value.strip()
        if not value.isdigit():
            raise PlanError(f"Некорректный номер плана: «{value}».")
        if int(value) not in ids:
            ids.append(int(value))
    return ids


def load_plans(ids: Sequence[int], user: Any) -> list[ProphylacticPlan]:
    """The selected plans, all visible to the user and of one МО."""
    if not ids:
        raise PlanError("Не выбрано ни одного плана: отметьте планы флажками и нажмите «Экспорт».", 422)
    if len(ids) > 200:
        raise PlanError("За один раз можно выгрузить не более 200 планов.")
    plans = list(
        db.session.scalars(
            scoped(
                db.select(ProphylacticPlan).where(ProphylacticPlan.id.in_(ids)), ProphylacticPlan.mo_id, user
            ).order_by(ProphylacticPlan.id)
        )
    )
    missing = sorted(set(ids) - {p.id for p in plans})
    if missing:
        raise PlanError(f"План № {missing[0]} не найден.", 404)
    if len({p.mo_id for p in plans}) > 1:
        raise PlanError(
            "Выбраны планы разных МО: файл экспорта формируется для одной МО. Выберите МО в фильтре.", 422
        )
    return plans


def type_label(plans: Sequence[ProphylacticPlan]) -> str:
    """«Тип»: the kind when every plan has the same one, else empty (seed 4.5.2.1.3)."""
    kinds = {p.kind for p in plans}
    return kind_title(kinds.pop()) if len(kinds) == 1 else ""


def period_label(plans: Sequence[ProphylacticPlan], today: date | None = None) -> str:
    """«Период плана»: one plan — its period; one period and different kinds — empty; different
    periods — the current year. Plans of one kind and one period show that period."""
    if len(plans) == 1:
        return plans[0].period_label
    periods = {(p.year, p.quarter) for p in plans}
    if len(periods) == 1:
        return "" if len({p.kind for p in plans}) > 1 else plans[0].period_label
    return f"{(today or date.today()).year} год"


def insurer_choices(plan_ids: Sequence[int]) -> list[tuple[str, str]]:
    """(code, name) of the СМО that people of the selected plans are insured with."""
    codes = db.session.scalars(
        db.select(Patient.insurer_code)
        .distinct()
        .join(PlanPerson, PlanPerson.patient_id == Patient.id)
        .where(
            PlanPerson.plan_id.in_(plan_ids), Patient.insurer_code.is_not(None), Patient.insurer_code != ""
        )
    ).all()
    names = dict(
        db.session.execute(db.select(Insurer.code, Insurer.name).where(Insurer.code.in_(codes))).all()
    )
    return sorted(((code, names.get(code) or f"СМО {code}") for code in codes), key=lambda c: c[0])


@dataclass
class ExportValues:
    month: int
    year: int
    load_quarter: int | None
    packet: int
    insurers: list[str]


def form_defaults() -> dict[str, Any]:
    return {
        "report_month": "",
        "report_year": str(date.today().year),
        "load_quarter": "",
        "packet": "",
        "smo": [],
    }


def validate_export(
    form: Any, choices: Sequence[tuple[str, str]]
) -> tuple[ExportValues | None, dict[str, str]]:
    """Check the form's fields; the messages name what each wrong field expects."""
    errors: dict[str, str] = {}
    month_raw = (form.get("report_month") or "").strip()
    month = int(month_raw) if month_raw.isdigit() else 0
    if not 1 <= month <= 12:
        errors["report_month"] = "Выберите месяц, с которого начинается отчётный период."
    year_raw = (form.get("report_year") or "").strip()
    year = int(year_raw) if re.fullmatch(r"\d{4}", year_raw) else 0
    if not 2000 <= year <= 2099:
        errors["report_year"] = "Укажите год из четырёх цифр, например 2026."
    quarter_raw = (form.get("load_quarter") or "").strip()
    load_quarter = int(quarter_raw) if quarter_raw.isdigit() else None
    if quarter_raw and load_quarter not in LOAD_QUARTERS:
        errors["load_quarter"] = "Квартал загрузки — 2, 3 или 4 квартал либо пусто."
    packet_raw = (form.get("packet") or "").strip()
    if not re.fullmatch(r"[1-9]", packet_raw):
        errors["packet"] = "Порядковый номер пакета — одна цифра от 1 до 9."
    allowed = {code for code, _ in choices}
    insurers: list[str] = []
    raw_codes = form.getlist("smo") if hasattr(form, "getlist") else (form.get("smo") or [])
    for code in raw_codes:
        code = code.strip()
        if not code:
            continue
        if code not in allowed:
            errors["smo"] = f"СМО с кодом «{code}» нет среди страховых организаций людей выбранных планов."
        elif not re.fullmatch(r"\d{5}", code):
            errors["smo"] = (
                f"Код СМО «{code}» — не пять цифр: имя файла по правилу PROF_…S{{код СМО}} не составить."
            )
        elif code not in insurers:
            insurers.append(code)
    if errors:
        return None, errors
    return ExportValues(month, year, load_quarter, int(packet_raw), insurers), errors


def packet_taken(mo_id: int, year: int, month: int, packet: int) -> PlanExport | None:
    """An earlier export of the МО with this packet number in the same reporting period."""
    return db.session.scalar(
        db.select(PlanExport)
        .options(defer(PlanExport.content))
        .where(
            PlanExport.mo_id == mo_id,
            PlanExport.year == year,
            PlanExport.month == month,
            PlanExport.packet_number == packet,
        )
        .order_by(PlanExport.id)
        .limit(1)
    )


def packet_taken_message(taken: PlanExport) -> str:
    from portal.auth.models import User

    who = db.session.get(User, taken.user_id) if taken.user_id else None
    by = f" пользователем {who.full_name}" if who is not None else ""
    return (
        f"Номер пакета {taken.packet_number} уже занят в отчётном периоде {taken.month:02d}.{taken.year}: "
        f"файл {taken.file_name} сформирован {taken.created_at:%d.%m.%Y %H:%M}{by}. Укажите другой номер."
    )


def tfoms_code() -> str:
    return (admin_services.get_setting(TFOMS_CODE.key) or "").strip()


def export_refusal(mo: Mo) -> str | None:
    """What stops any export of the МО, whatever the form says."""
    if not admin_services.is_enabled(mo.id, PROCEDURE):
        return (
            f"Обмен планами профилактических мероприятий с ТФОМС выключен для МО «{mo.short_name}»: "
            "администратор включает его на странице МО (переключатель «Профил.»)."
        )
    if not re.fullmatch(r"\d{6}", mo.registry_number or ""):
        return (
            f"У МО «{mo.short_name}» нет реестрового номера из шести цифр "
            f"(сейчас: «{mo.registry_number or ''}»): имя файла PROF_M{{номер}}… не составить."
        )
    code = tfoms_code()
    if not re.fullmatch(r"\d{2}", code):
        return (
            f"Код ТФОМС в настройках должен состоять из двух цифр (сейчас: «{code}»): "
            "его задаёт администратор ЦОД в разделе «Настройки», группа «ТФОМС»."
        )
    return None


def file_name(mo: Mo, values: ExportValues, insurer: str | None, code: str | None = None) -> str:
    """PROF_M{Ni}T{Np}[S{СМО}]_{YY}{MM}{N} (seed 4.5.2.1.4), without extension."""
    smo = f"S{insurer}" if insurer else ""
    code = code if code is not None else tfoms_code()
    return f"PROF_M{mo.registry_number}T{code}{smo}_{values.year % 100:02d}{values.month:02d}{values.packet}"


@dataclass
class ExportedFile:
    export: PlanExport
    insurer_name: str | None


@dataclass
class ExportOutcome:
    files: list[ExportedFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why a file was not made
    packet_error: str | None = None  # the packet number turned out to be taken

    @property
    def ok(self) -> bool:
        return bool(self.files)


def _person_columns() -> tuple[Any, ...]:
    return (
        PlanPerson.id, PlanPerson.quarter, ProphylacticPlan.kind, Patient.id, Patient.insurer_code, Patient.enp,
        Patient.last_name, Patient.first_name, Patient.middle_name, Patient.birth_date, Patient.sex,
        Patient.document_kind, Patient.document_series, Patient.document_number, Patient.snils,
        Patient.policy_kind, Patient.policy_series, Patient.policy_number, Patient.phone,
    )  # fmt: skip


def _selected_people(plan_ids: Sequence[int], insurer: str | None) -> list[Any]:
    """Rows of the file: with an СМО its people already sent, without — every new person."""
    stmt = (
        db.select(*_person_columns())
        .join(ProphylacticPlan, ProphylacticPlan.id == PlanPerson.plan_id)
        .join(Patient, Patient.id == PlanPerson.patient_id)
        .where(PlanPerson.plan_id.in_(plan_ids))
        .order_by(PlanPerson.plan_id, PlanPerson.id)
    )
    if insurer:
        stmt = stmt.where(PlanPerson.status == PLAN_PERSON_SENT, Patient.insurer_code == insurer)
    else:
        stmt = stmt.where(PlanPerson.status == PLAN_PERSON_NEW)
    return list(db.session.execute(stmt))


def _phone(raw: str | None) -> str | None:
    number = digits(raw)
    return number[-10:] if len(number) >= 10 else None


def _record_values(nomer_z: int, row: Any) -> dict[str, str | None]:
    (_, _, _, patient_id, insurer, enp, last, first, middle, birth, sex,
     doc_kind, doc_series, doc_number, snils, policy_kind, policy_series, policy_number, phone) = row  # fmt: skip
    vpolis = VPOLIS.get((policy_kind or "").strip().upper())
    npolis = policy_number or (enp if vpolis == "3" else None)
    return {
        "NOMER_Z": str(nomer_z),
        "PERSON_ID": str(patient_id),
        "SMOCOD": insurer,
        "ENP": enp,
        "FAM": last,
        "IM": first,
        "OT": middle if middle and _CYRILLIC.search(middle) else "НЕТ",
        "DR": birth.isoformat() if birth else None,
        "W": {"M": "1", "F": "2"}.get(sex or ""),
        "DOCTYPE": doc_kind,
        "DOCSER": doc_series,
        "DOCNUM": doc_number,
        "SNILS": format_snils(snils) if len(digits(snils)) == 11 else None,
        "VPOLIS": vpolis,
        "SPOLIS": policy_series,
        "NPOLIS": npolis,
        "TEL": _phone(phone),
        "KAT_LG": None,
        "COMMENT": None,
    }


def _leaf(parent: etree._Element, tag: str, value: Any) -> None:
    if value is None:
        return
    text = (value if isinstance(value, str) else str(value)).strip()
    if text:  # optional elements without a value are left out
        etree.SubElement(parent, tag).text = text


def build_xml(
    name: str, mo: Mo, values: ExportValues, rows: Iterable[Any], today: date | None = None
) -> bytes:
    """The PROF file in windows-1251, written record by record (a plan may hold 100 000 people)."""
    out = io.BytesIO()
    out.write(b'<?xml version="1.0" encoding="windows-1251"?>\n')
    with etree.xmlfile(out, encoding="windows-1251") as xf, xf.element("ZL_LIST"):
        xf.write("\n")
        header = etree.Element("ZGLV")
        _leaf(header, "VERSION", "1.0")
        _leaf(header, "DATA", (today or date.today()).isoformat())
        _leaf(header, "FILENAME", name)
        _leaf(header, "CODMOF", mo.f003_code or mo.registry_number)
        _leaf(header, "YEAR", values.year)
        _leaf(header, "QUART", values.load_quarter)
        xf.write(header, pretty_print=True)
        for nomer_z, row in enumerate(rows, start=1):
            record = etree.Element("SV_PR_MER")
            values_of = _record_values(nomer_z, row)
            for tag in SV_PR_MER_ORDER:
                _leaf(record, tag, values_of[tag])
            event = etree.SubElement(record, "SV_PL_MER")
            _leaf(event, "QUART", row[1])
            _leaf(event, "DISP", DISP_CODES.get(row[2], row[2]))
            xf.write(record, pretty_print=True)
    return out.getvalue()


def zip_file(name: str, xml: bytes, moment: datetime | None = None) -> bytes:
    """`<name>.zip` with the one entry `<name>.XML`."""
    moment = moment or datetime.now()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(f"{name}.XML", date_time=moment.timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, xml)
    return buffer.getvalue()


def _journal_payload(xml: bytes) -> str:
    """The file as text for the journal; a long one is cut after a whole record and closed."""
    text = xml.decode("cp1251")
    if len(text) <= PAYLOAD_LIMIT:
        return text
    cut = text.rfind("</SV_PR_MER>", 0, PAYLOAD_LIMIT)
    head = text[: cut + len("</SV_PR_MER>")] if cut >= 0 else text[: text.find("</ZGLV>") + len("</ZGLV>")]
    left = text.count("<SV_PR_MER>") - head.count("<SV_PR_MER>")
    return f"{head}\n<!-- ещё записей: {left}; весь файл — в списке экспортов -->\n</ZL_LIST>"


def export_plans(
    mo: Mo, plans: Sequence[ProphylacticPlan], values: ExportValues, user: Any = None
) -> ExportOutcome:
    """Make the files of one «Сформировать» in the caller's transaction (flushes, never commits).

    The МО row is locked first (PostgreSQL), so two exports of one МО cannot both take a packet
    number or both send the same new people.
    """
    db.session.execute(db.select(Mo.id).where(Mo.id == mo.id).with_for_update())
    outcome = ExportOutcome()
    taken = packet_taken(mo.id, values.year, values.month, values.packet)
    if taken is not None:
        outcome.packet_error = packet_taken_message(taken)
        return outcome
    plan_ids = [p.id for p in plans]
    names = dict(
        db.session.execute(
            db.select(Insurer.code, Insurer.name).where(Insurer.code.in_(values.insurers))
        ).all()
    )
    batch = uuid.uuid4().hex
    code = tfoms_code()
    now = utcnow()
    user_id = getattr(user, "id", None)
    try:
        _write_files(outcome, mo, plan_ids, values, names, batch, code, now, user_id)
    except IntegrityError:  # the unique file name: a parallel export took the number after all
        db.session.rollback()
        return ExportOutcome(packet_error=f"Номер пакета {values.packet} уже занят в отчётном периоде "
                             f"{values.month:02d}.{values.year}. Укажите другой номер.")  # fmt: skip
    return outcome


def _write_files(
    outcome: ExportOutcome,
    mo: Mo,
    plan_ids: Sequence[int],
    values: ExportValues,
    names: dict[str, str],
    batch: str,
    code: str,
    now: datetime,
    user_id: int | None,
) -> None:
    for insurer in values.insurers or [None]:
        rows = _selected_people(plan_ids, insurer)
        if not rows:
            if insurer:
                outcome.skipped.append(
                    f"СМО {insurer} ({names.get(insurer) or 'нет в справочнике'}): файл не сформирован — в выбранных "
                    f"планах нет людей этой СМО со статусом «{PLAN_PERSON_STATUSES[PLAN_PERSON_SENT]}»."
                )
            else:
                outcome.skipped.append(
                    "Файл не сформирован: в выбранных планах нет людей со статусом "
                    f"«{PLAN_PERSON_STATUSES[PLAN_PERSON_NEW]}»."
                )
            continue
        name = file_name(mo, values, insurer, code)
        xml = build_xml(name, mo, values, rows)
        export = PlanExport(
            mo_id=mo.id, batch=batch, file_name=name, year=values.year, month=values.month,
            load_quarter=values.load_quarter, packet_number=values.packet, insurer_code=insurer,
            record_count=len(rows), content=zip_file(name, xml), created_at=now, user_id=user_id,
        )  # fmt: skip
        db.session.add(export)
        db.session.flush()
        person_ids = [row[0] for row in rows]
        for start in range(0, len(person_ids), CHUNK):
            db.session.execute(
                insert(PlanExportRecord),
                [
                    {"export_id": export.id, "nomer_z": start + offset + 1, "plan_person_id": person_id}
                    for offset, person_id in enumerate(person_ids[start : start + CHUNK])
                ],
            )
        if not insurer:
            for ids in chunks(person_ids, CHUNK):
                db.session.execute(
                    update(PlanPerson)
                    .where(PlanPerson.id.in_(ids), PlanPerson.status == PLAN_PERSON_NEW)
                    .values(status=PLAN_PERSON_SENT, status_text=None, status_at=now)
                    .execution_options(synchronize_session=False)
                )
        whom = f", СМО {insurer}" if insurer else ""
        journal(
            CHANNEL, None, "Формирование файла",
            f"Сформирован файл {name}.zip: записей {len(rows)}{whom}; отчётный период "
            f"{values.month:02d}.{values.year}, пакет № {values.packet}.",
            level="ok", subject=(SUBJECT, export.id), mo_id=mo.id, user_id=user_id, packet_id=name,
            packet_type=PACKET_PROF, payload=_journal_payload(xml),
        )  # fmt: skip
        outcome.files.append(ExportedFile(export, names.get(insurer) if insurer else None))


# --- the error answer (OSHIB_PR) --------------------------------------------------------------


class AnswerRefused(Exception):
    def __init__(self, message: str, export: PlanExport | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.export = export


@dataclass
class ImportResult:
    ok: bool
    message: str
    export: PlanExport | None = None
    errors_set: int = 0  # people marked «Ошибка»
    accepted: int = 0  # people marked «Принята ТФОМС»
    problems: list[str] = field(default_factory=list)  # errors of the import itself
    skipped: bool = False  # inbox run limited to one МО: the file is another МО's


_schema: etree.XMLSchema | None = None


def _error_schema() -> etree.XMLSchema:
    global _schema
    if _schema is None:
        _schema = etree.XMLSchema(etree.parse(str(SCHEMA_PATH)))
    return _schema


def _size_text(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} МБ" if size >= 1024 * 1024 else f"{size} байт"


def _xml_bytes(file_name: str, data: bytes) -> bytes:
    """The XML of an .xml file or of the one XML inside a .zip."""
    limit = max_upload_bytes()
    if len(data) > limit:
        raise AnswerRefused(
            f"Файл {file_name} слишком велик: {_size_text(len(data))}, допустимо до {_size_text(limit)}."
        )
    lower = file_name.lower()
    if lower.endswith(".zip"):
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            raise AnswerRefused(
                f"Файл {file_name} не является zip-архивом (архив повреждён или это другой формат)."
            ) from None
        with archive:
            entries = [e for e in archive.infolist() if not e.is_dir()]
            xml_entries = [e for e in entries if e.filename.lower().endswith(".xml")]
            if len(entries) != 1 or len(xml_entries) != 1:
                listed = ", ".join(e.filename for e in entries) or "пусто"
                raise AnswerRefused(
                    f"В архиве {file_name} должен быть ровно один XML-файл протокола ошибок, а в нём: {listed}."
                )
            entry = xml_entries[0]
            if entry.file_size > limit:
                raise AnswerRefused(
                    f"XML-файл {entry.filename} в архиве {file_name} слишком велик: {_size_text(entry.file_size)}."
                )
            try:
                return archive.read(entry)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as error:
                raise AnswerRefused(f"Архив {file_name} не распаковывается: {error}.") from None
    if lower.endswith(".xml"):
        return data
    raise AnswerRefused(f"Файл {file_name}: ожидается протокол ошибок в формате .xml или .zip.")


def _parse_answer(file_name: str, data: bytes) -> etree._Element:
    xml = _xml_bytes(file_name, data)
    try:
        root = etree.fromstring(xml, _PARSER)
    except etree.XMLSyntaxError as error:
        text = str(error)
        hint = (
            " Проверьте кодировку файла (ожидается windows-1251 с объявлением в заголовке XML)."
            if ("encoding" in text.lower() or "utf-8" in text.lower() or "bytes" in text.lower())
            else ""
        )
        raise AnswerRefused(f"Файл {file_name} не является корректным XML: {text}.{hint}") from None
    except ValueError as error:
        raise AnswerRefused(f"Файл {file_name} не является корректным XML: {error}.") from None
    if root.tag != "OSHIB_PR":
        raise AnswerRefused(
            f"Файл {file_name} — не протокол ошибок плана: корневой элемент <{root.tag}> вместо <OSHIB_PR>."
        )
    schema = _error_schema()
    if not schema.validate(root):
        first = next(iter(schema.error_log), None)
        where = f" (строка {first.line}): {first.message}" if first is not None else ""
        raise AnswerRefused(f"Файл {file_name} не соответствует схеме протокола ошибок pddp_err.xsd{where}.")
    return root


def _target_name(root: etree._Element) -> str:
    name = (root.findtext("FNAME_I") or "").strip()
    return re.sub(r"\.(xml|zip)$", "", name, flags=re.IGNORECASE)


def _find_export(name: str, user: Any) -> PlanExport:
    export = None
    if name:
        stmt = db.select(PlanExport).where(PlanExport.file_name == name)
        if user is not None:
            stmt = scoped(stmt, PlanExport.mo_id, user)
        export = db.session.scalar(stmt)
    if export is None:
        raise AnswerRefused(f"Файл {name or '(FNAME_I пуст)'} не найден среди выгруженных файлов планов.")
    return export


def _apply(export: PlanExport, root: etree._Element, now: datetime) -> tuple[int, int, list[str]]:
    """Mark the people of the file: «Ошибка» with ТФОМС's text, «Принята ТФОМС» for the rest."""
    texts: dict[int, list[str]] = {}
    for zap in root.iterfind("ZAP_OSHIB"):
        nomer_z = int((zap.findtext("NOMER_Z") or "").strip())
        code = (zap.findtext("OSHIB") or "").strip()
        comment = (zap.findtext("COMMENT") or "").strip()
        texts.setdefault(nomer_z, []).append(f"{code}: {comment}" if comment else code)
    people: dict[int, int] = {}
    for numbers in chunks(sorted(texts), CHUNK):
        people.update(
            db.session.execute(
                db.select(PlanExportRecord.nomer_z, PlanExportRecord.plan_person_id).where(
                    PlanExportRecord.export_id == export.id, PlanExportRecord.nomer_z.in_(numbers)
                )
            ).all()
        )
    problems = [
        f"NOMER_Z {number}: такой записи нет в файле {export.file_name} ({'; '.join(texts[number])})"
        for number in sorted(texts)
        if number not in people
    ]
    changes = [
        {
            "id": people[number],
            "status": PLAN_PERSON_ERROR,
            "status_text": "; ".join(texts[number]),
            "status_at": now,
        }
        for number in sorted(texts)
        if number in people
    ]
    for part in chunks(changes, CHUNK):
        db.session.execute(update(PlanPerson), list(part))
    in_file = db.select(PlanExportRecord.plan_person_id).where(PlanExportRecord.export_id == export.id)
    accepted = db.session.execute(
        update(PlanPerson)
        .where(and_(PlanPerson.id.in_(in_file), PlanPerson.status == PLAN_PERSON_SENT))
        .values(status=PLAN_PERSON_ACCEPTED, status_text=None, status_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    return len({people[n] for n in texts if n in people}), accepted or 0, problems


def _refusal_subject(file_name: str, export: PlanExport | None) -> tuple[str, int]:
    if export is not None:
        return SUBJECT, export.id
    # no export to hang the line on: the file counts as its own packet of the run
    return "tfoms_prof_file", zlib.crc32(file_name.encode("utf-8")) & 0x7FFFFFFF


def import_error_file(
    file_name: str, data: bytes, user: Any = None, *, mo_id: int | None = None
) -> ImportResult:
    """Load an OSHIB_PR answer (.xml, or .zip with one XML) in the caller's transaction.

    `user` limits the exports to the user's МО (an upload); `mo_id` (an inbox run for one МО)
    leaves another МО's file alone. A refusal changes nothing but the journal line.
    """
    file_name = re.split(r"[\\/]", file_name or "")[-1] or "(без имени)"
    user_id = getattr(user, "id", None)
    export: PlanExport | None = None
    try:
        root = _parse_answer(file_name, data)
        target = _target_name(root)
        export = _find_export(target, user)
        if mo_id is not None and export.mo_id != mo_id:
            return ImportResult(False, f"Файл {file_name} относится к другой МО.", skipped=True)
        if export.answer_loaded_at is not None:
            raise AnswerRefused(
                f"Протокол ошибок к файлу {export.file_name} уже загружен "
                f"{export.answer_loaded_at:%d.%m.%Y %H:%M}; повторная загрузка не выполняется.",
                export,
            )
    except AnswerRefused as refusal:
        if mo_id is not None and refusal.export is None:
            return ImportResult(False, refusal.message, skipped=True)  # left for a region-wide run
        export = refusal.export or export
        journal(
            CHANNEL, None, "Загрузка протокола ошибок", f"Протокол ошибок не загружен. {refusal.message}",
            level="error", subject=_refusal_subject(file_name, export), mo_id=export.mo_id if export else None,
            user_id=user_id, packet_id=file_name[:64], packet_type=PACKET_PROF_ERRORS,
        )  # fmt: skip
        return ImportResult(False, refusal.message, export)
    now = utcnow()
    errors_set, accepted, problems = _apply(export, root, now)
    export.answer_loaded_at = now
    export.errors_count = errors_set
    answer_name = (root.findtext("FNAME") or "").strip() or file_name
    message = (
        f"Протокол ошибок {answer_name} к файлу {export.file_name} загружен: "
        f"с ошибкой — {errors_set}, принято ТФОМС — {accepted}."
    )
    if problems:
        message += f" Не найдены в файле экспорта: {len(problems)} — " + "; ".join(problems[:20])
        if len(problems) > 20:
            message += f" … и ещё {len(problems) - 20}"
        message += "."
    journal(
        CHANNEL, None, "Загрузка протокола ошибок", message,
        level="error" if errors_set or problems else "ok", subject=(SUBJECT, export.id), mo_id=export.mo_id,
        user_id=user_id, packet_id=answer_name[:64], packet_type=PACKET_PROF_ERRORS,
        answer=etree.tostring(root, encoding="unicode", pretty_print=True),
    )  # fmt: skip
    return ImportResult(True, message, export, errors_set, accepted, problems)


def _inbox_files() -> list[Path]:
    return sorted(
        path
        for path in inbox_dir().iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and "ERR" in path.name.upper()
        and path.suffix.lower() in (".xml", ".zip")
    )


def _move(path: Path, folder: str) -> None:
    target = tfoms_dir("prof_answers", folder) / f"{datetime.now():%Y%m%d-%H%M%S}_{path.name}"
    shutil.move(str(path), str(target))


def process_prof_inbox(mo_id: int | None = None) -> str:
    """Load the OSHIB_PR answers lying in the inbox; the job runs this inside its service run.

    Each file is committed on its own and only then moved to prof_answers/loaded (or /rejected),
    so a file leaves the inbox only once its result is stored. With `mo_id` (a manual run by an
    МО administrator) files of other МО, and files that name no export, are left in place.
    """
    loaded = refused = skipped = 0
    for path in _inbox_files():
        try:
            with path.open("rb") as handle:
                data = handle.read(max_upload_bytes() + 1)  # an oversized file is refused unread
        except OSError:
            continue  # removed or still locked by whoever drops it: the next run sees it
        result = import_error_file(path.name, data, mo_id=mo_id)
        if result.skipped:
            skipped += 1
            continue
        db.session.commit()
        _move(path, "loaded" if result.ok else "rejected")
        if result.ok:
            loaded += 1
        else:
            refused += 1
    if not (loaded or refused or skipped):
        return "Новых протоколов ошибок нет"
    summary = f"Протоколов ошибок загружено: {loaded}, отклонено: {refused}"
    return summary + (f", оставлено для других МО: {skipped}" if skipped else "")
