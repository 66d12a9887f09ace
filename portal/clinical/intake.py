"""Intake of source records (X-5): validation and set-based upsert by the source MIS's ids.

`ingest_batch` is the one entry point: the HTTP API, the JSONL import and the demo-data
generator all call it. It validates every record, resolves references (within the batch or to
rows stored before) and upserts type by type in dependency order with a handful of queries per
type — never a query per record — so that 100,000 events go in at thousands per second.
It flushes and never commits: the caller owns the transaction.

The field specifications below are the contract: validation and the OpenAPI document
(`portal/clinical/openapi.py`) both read them, so they cannot drift apart.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from portal.clinical import hooks
from portal.clinical.hooks import StoredRecord
from portal.clinical.models import (
    ATTACHMENT_KINDS,
    ATTACHMENT_METHODS,
    BRANCH_KINDS,
    CANCEL_REASONS,
    CANCEL_SOURCES,
    CARE_CONDITIONS,
    DEPARTMENT_KINDS,
    DISPENSARY_END_RESULTS,
    DOCUMENT_KINDS,
    EVENT_KINDS,
    KAS_STATUSES,
    MOVEMENT_OUTCOMES,
    OUTCOME_KINDS,
    PAYMENT_KINDS,
    PLAN_KINDS,
    POLICY_KINDS,
    REFERRAL_KINDS,
    SEXES,
    SOCIAL_STATUSES,
    STAFF_CATEGORIES,
    Attachment,
    BedProfile,
    Branch,
    ClinicalEvent,
    Department,
    DispensaryObservation,
    Hospitalisation,
    HospitalMovement,
    HospitalReferral,
    Insurer,
    Mo,
    Patient,
    PlanPerson,
    Pregnancy,
    ProphylacticPlan,
    Staff,
)
from portal.extensions import db
from portal.iemk.models import VisitReport
from portal.models_base import chunks, utcnow

REQUIRED = "Не указано обязательное поле «{label}»"
# Where dispensary observation takes place (DN_PLACE of the ТФОМС packet); the models keep the code only.
DISPENSARY_PLACES: dict[str, str] = {"1": "В медицинской организации", "2": "На дому"}
T = TypeVar("T")
IN_CHUNK = 500  # source ids per IN (...) query: well under SQLite's and PostgreSQL's parameter limits
# A visit report is a PDF of a few pages; the limit keeps one record well inside the request limit
# (base64 adds a third: 10 МБ of PDF is about 13.4 МБ of JSON, the API accepts 20 МБ per request).
MAX_REPORT_BYTES = 10 * 1024 * 1024
MAX_SIGNATURE_BYTES = 1024 * 1024
# Visits whose report may be attached to an Амбулаторный эпикриз (seed 2.2).
VISIT_KINDS = ("exam_primary", "exam_repeat")
INPATIENT_CARE = ("1", "2")  # care conditions of a stay: an exam there is not an outpatient visit


class Refusal(Exception):
    """One record is refused: which field and why, in Russian."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --- Field kinds ---------------------------------------------------------------------------------


class Field:
    """One JSON field of a record and the model column it fills."""

    openapi_type = "string"

    def __init__(
        self,
        name: str,
        label: str,
        *,
        required: bool = False,
        default: Any = None,
        column: str | None = None,
        description: str = "",
        example: Any = None,
    ) -> None:
        self.name = name
        self.label = label
        self.required = required
        self.default = default
        self.column = column or name
        self.description = description
        self.example = example

    def bind(self, model: type) -> None:
        """Learn column limits from the model (called once when the record type is defined)."""

    def parse(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def read(self, record: dict[str, Any], path: str) -> Any:
        """The column value from a record: absent and null mean the default (or a refusal if required)."""
        value = record.get(self.name)
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                value = None
        if value is None:
            if self.required:
                raise Refusal(path, REQUIRED.format(label=self.label))
            return self.default() if callable(self.default) else self.default
        return self.parse(value, path)

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.openapi_type}
        schema.update(self.extra_schema())
        text = self.label + (f". {self.description}" if self.description else "")
        schema["description"] = text
        if not self.required:
            schema["nullable"] = True
        if self.default is not None and not callable(self.default):
            schema["default"] = self.default
        if self.example is not None:
            schema["example"] = self.example
        return schema

    def extra_schema(self) -> dict[str, Any]:
        return {}


# NUL cannot be stored in PostgreSQL text, lone surrogates cannot be encoded as UTF-8 at all.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(text: str, path: str, label: str) -> str:
    if _UNSTORABLE.search(text):
        raise Refusal(path, f"«{label}»: недопустимые символы (NUL или неполная суррогатная пара)")
    return text


def _string(value: Any, path: str, label: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Refusal(path, f"«{label}»: ожидается строка")
    return _storable(str(value), path, label)


class Text(Field):
    def __init__(self, name: str, label: str, *, max_length: int | None = None, **kw: Any) -> None:
        super().__init__(name, label, **kw)
        self.max_length = max_length

    def bind(self, model: type) -> None:
        if self.max_length is None and self.column in model.__table__.c:
            self.max_length = getattr(model.__table__.c[self.column].type, "length", None)

    def parse(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise Refusal(path, f"«{self.label}»: ожидается строка")
        _storable(value, path, self.label)
        if self.max_length and len(value) > self.max_length:
            raise Refusal(path, f"«{self.label}»: не длиннее {self.max_length} символов, получено {len(value)}")
        return value

    def extra_schema(self) -> dict[str, Any]:
        return {"maxLength": self.max_length} if self.max_length else {}


class Digits(Field):
    """A code made of digits only (registry number, ИНН, ОГРН, КПП, ЕНП); spaces are ignored."""

    def __init__(self, name: str, label: str, lengths: tuple[int, ...], **kw: Any) -> None:
        super().__init__(name, label, **kw)
        self.lengths = lengths

    def parse(self, value: Any, path: str) -> str:
        text = _string(value, path, self.label).replace(" ", "")
        if not text.isascii() or not text.isdigit() or len(text) not in self.lengths:
            expected = " или ".join(str(n) for n in self.lengths)
            raise Refusal(path, f"«{self.label}»: ожидается {expected} цифр, получено «{value}»")
        return text

    def extra_schema(self) -> dict[str, Any]:
        alternatives = "|".join(f"\\d{{{n}}}" for n in self.lengths)
        return {"pattern": f"^({alternatives})$"}


class Snils(Field):
    """СНИЛС: 11 digits, with or without the usual separators ("112-233-445 95").

    Only the format is checked here: a wrong check number is stored, because the ВИМИС and
    ФСС checks must be able to report «Некорректная контрольная сумма СНИЛС» on it.
    """

    def parse(self, value: Any, path: str) -> str:
        text = _string(value, path, self.label)
        compact = text.replace("-", "").replace(" ", "")
        if not compact.isascii() or not compact.isdigit() or len(compact) != 11:
            raise Refusal(path, f"«{self.label}»: ожидается 11 цифр (например, 112-233-445 95), получено «{value}»")
        return compact

    def extra_schema(self) -> dict[str, Any]:
        return {"pattern": r"^(\d[ -]?){10}\d$", "example": "112-233-445 95"}


_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


class Oid(Text):
    def parse(self, value: Any, path: str) -> str:
        text = super().parse(value, path)
        if not _OID.match(text):
            raise Refusal(path, f"«{self.label}»: ожидается OID вида 1.2.643.5.1.13.13.12.2.35.1001, получено «{text}»")
        return text

    def extra_schema(self) -> dict[str, Any]:
        return {**super().extra_schema(), "pattern": _OID.pattern}


class Choice(Field):
    def __init__(self, name: str, label: str, choices: dict[str, str], **kw: Any) -> None:
        super().__init__(name, label, **kw)
        self.choices = choices

    def parse(self, value: Any, path: str) -> str:
        text = _string(value, path, self.label)
        if text not in self.choices:
            allowed = ", ".join(self.choices)
            raise Refusal(path, f"«{self.label}»: недопустимое значение «{text}»; допустимы: {allowed}")
        return text

    def extra_schema(self) -> dict[str, Any]:
        return {"enum": list(self.choices)}

    def schema(self) -> dict[str, Any]:
        schema = super().schema()
        schema["description"] += ". Значения: " + "; ".join(f"{k} — {v}" for k, v in self.choices.items())
        return schema


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?$")


class DateField(Field):
    def parse(self, value: Any, path: str) -> date:
        if not isinstance(value, str) or not _DATE.match(value):
            raise Refusal(path, f"«{self.label}»: дата должна быть в формате ГГГГ-ММ-ДД, получено «{value}»")
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            raise Refusal(path, f"«{self.label}»: несуществующая дата «{value}»") from None
        if not 1900 <= parsed.year <= 2100:
            raise Refusal(path, f"«{self.label}»: дата «{value}» вне допустимого диапазона")
        return parsed

    def extra_schema(self) -> dict[str, Any]:
        return {"format": "date"}


class DateTimeField(Field):
    """Local date-time of the region; an offset, if sent, is dropped (the wall-clock time is kept)."""

    def parse(self, value: Any, path: str) -> datetime:
        if not isinstance(value, str) or not _DATETIME.match(value):
            raise Refusal(
                path, f"«{self.label}»: дата и время должны быть в формате ГГГГ-ММ-ДДTЧЧ:ММ:СС, получено «{value}»"
            )
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise Refusal(path, f"«{self.label}»: несуществующие дата или время «{value}»") from None
        if not 1900 <= parsed.year <= 2100:
            raise Refusal(path, f"«{self.label}»: дата «{value}» вне допустимого диапазона")
        return parsed.replace(tzinfo=None)

    def extra_schema(self) -> dict[str, Any]:
        return {"format": "date-time", "example": "2026-11-20T10:00:00"}


_MKB10 = re.compile(r"^[A-Z]\d{2}(\.\d{1,2})?$")


class Diagnosis(Field):
    """An МКБ-10 code (O24.4, Z34.0). A Cyrillic letter that looks Latin is refused, not guessed:
    ТФОМС and ВИМИС reject it, and the source MIS must fix its own reference data."""

    def parse(self, value: Any, path: str) -> str:
        text = _string(value, path, self.label).strip()
        if not _MKB10.match(text):
            raise Refusal(
                path,
                f"«{self.label}»: ожидается код МКБ-10 вида O24.4 (латинская буква, две цифры, "
                f"подрубрика через точку), получено «{text}»",
            )
        return text

    def extra_schema(self) -> dict[str, Any]:
        return {"pattern": _MKB10.pattern, "example": "O24.4"}


class Int(Field):
    openapi_type = "integer"

    def __init__(self, name: str, label: str, *, minimum: int, maximum: int, **kw: Any) -> None:
        super().__init__(name, label, **kw)
        self.minimum = minimum
        self.maximum = maximum

    def parse(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Refusal(path, f"«{self.label}»: ожидается целое число, получено «{value}»")
        if not self.minimum <= value <= self.maximum:
            raise Refusal(path, f"«{self.label}»: допустимо от {self.minimum} до {self.maximum}, получено {value}")
        return value

    def extra_schema(self) -> dict[str, Any]:
        return {"minimum": self.minimum, "maximum": self.maximum}


class Bool(Field):
    openapi_type = "boolean"

    def parse(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise Refusal(path, f"«{self.label}»: ожидается true или false, получено «{value}»")
        return value


class JsonObject(Field):
    openapi_type = "object"

    def parse(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Refusal(path, f"«{self.label}»: ожидается объект JSON")
        return value

    def extra_schema(self) -> dict[str, Any]:
        return {"additionalProperties": True}


class PdfFileName(Text):
    """A file name that must be a .pdf; a .zip gets the seed's own refusal (seed 2.2)."""

    def parse(self, value: Any, path: str) -> str:
        text = super().parse(value, path)
        lower = text.lower()
        if lower.endswith(".zip"):
            raise Refusal(
                path, "Формат .zip не поддерживается: протокол визита передаётся в ИЭМК только в формате PDF"
            )
        if not lower.endswith(".pdf") or len(lower) == 4:
            raise Refusal(path, f"«{self.label}»: ожидается файл .pdf, получено «{text}»")
        return text

    def extra_schema(self) -> dict[str, Any]:
        return {**super().extra_schema(), "pattern": r"^.+\.[Pp][Dd][Ff]$"}


def _megabytes(size: int) -> str:
    """10 МБ, 10,1 МБ: tenths rounded up, so that anything over a limit never reads as the limit."""
    tenths = -(-size * 10 // (1024 * 1024))
    whole, tenth = divmod(tenths, 10)
    return f"{whole},{tenth} МБ" if tenth else f"{whole} МБ"


_WHITESPACE = re.compile(r"\s+")


class Base64File(Field):
    """A file sent inline as base64 (RFC 4648, line breaks allowed); the column holds the bytes.

    `magic` is how the file must begin (b"%PDF-" for a PDF) and `kind` names it in the refusal.
    Oversized content is refused from its length before it is decoded.
    """

    def __init__(
        self, name: str, label: str, *, max_bytes: int, magic: bytes | None = None, kind: str = "", **kw: Any
    ) -> None:
        super().__init__(name, label, **kw)
        self.max_bytes = max_bytes
        self.magic = magic
        self.kind = kind

    @property
    def max_chars(self) -> int:
        return 4 * ((self.max_bytes + 2) // 3)

    def parse(self, value: Any, path: str) -> bytes:
        if not isinstance(value, str):
            raise Refusal(path, f"«{self.label}»: ожидается строка base64")
        compact = _WHITESPACE.sub("", value)
        too_big = f"«{self.label}»: файл больше допустимых {_megabytes(self.max_bytes)}"
        if len(compact) > self.max_chars:
            raise Refusal(path, f"{too_big}, получено {_megabytes(len(compact) * 3 // 4)}")
        try:
            data = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise Refusal(
                path, f"«{self.label}»: некорректная строка base64 (допустимы A–Z, a–z, 0–9, +, / и = в конце)"
            ) from None
        if len(data) > self.max_bytes:
            raise Refusal(path, f"{too_big}, получено {_megabytes(len(data))}")
        if self.magic is not None and not data.startswith(self.magic):
            raise Refusal(
                path, f"«{self.label}»: содержимое не является файлом {self.kind} (должно начинаться с "
                f"«{self.magic.decode('ascii')}»)"
            )
        return data

    def extra_schema(self) -> dict[str, Any]:
        return {"format": "byte", "maxLength": self.max_chars}

    def schema(self) -> dict[str, Any]:
        schema = super().schema()
        schema["description"] += f". Base64, не больше {_megabytes(self.max_bytes)} до кодирования"
        return schema


class Ref(Field):
    """A reference to another record by its source id; fills `<column>` with the row's primary key."""

    def __init__(self, name: str, label: str, target: str, **kw: Any) -> None:
        kw.setdefault("column", f"{name}_id")
        super().__init__(name, label, **kw)
        self.target = target

    def parse(self, value: Any, path: str) -> str:
        text = _string(value, path, self.label)
        if len(text) > 64:
            raise Refusal(path, f"«{self.label}»: идентификатор не длиннее 64 символов")
        return text

    def extra_schema(self) -> dict[str, Any]:
        return {"maxLength": 64, "x-refers-to": self.target}


class Nested(Field):
    """A nested object (policy, document) whose fields fill columns of the same row."""

    openapi_type = "object"

    def __init__(self, name: str, label: str, fields: list[Field], **kw: Any) -> None:
        super().__init__(name, label, **kw)
        self.fields = fields

    def bind(self, model: type) -> None:
        for f in self.fields:
            f.bind(model)

    def read_into(self, record: dict[str, Any], values: dict[str, Any], path: str) -> None:
        value = record.get(self.name)
        if value is None:
            inner: dict[str, Any] = {}
        elif isinstance(value, dict):
            inner = value
        else:
            raise Refusal(path, f"«{self.label}»: ожидается объект JSON")
        for f in self.fields:
            values[f.column] = f.read(inner, f"{path}.{f.name}")

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "nullable": True,
            "description": self.label + (f". {self.description}" if self.description else ""),
            "properties": {f.name: f.schema() for f in self.fields},
        }


# --- Record types --------------------------------------------------------------------------------


@dataclass
class RecordType:
    name: str
    label: str
    model: type
    fields: list[Field]
    # Russian noun and its agreement for messages about a referenced record: «Пациент pat-9 не найден».
    noun: str
    found: str = "найден"
    refused: str = "отклонён"
    # Columns other records check against (department → its МО; pregnancy → its patient).
    exposed: tuple[str, ...] = ()
    description: str = ""
    # References whose row must belong to the record's own МО (its `mo_id`).
    same_mo: tuple[str, ...] = ()
    # Columns taken from a referenced row, not sent: (column, reference, exposed column of its row);
    # a bed profile's МО is its department's, a movement's МО its hospitalisation's.
    derived: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self) -> None:
        for f in self.fields:
            f.bind(self.model)
        self.refs = [f for f in self.fields if isinstance(f, Ref)]
        self.ref_targets = {f.name: f.target for f in self.refs}
        self.columns = [c for f in self.fields for c in ([g.column for g in f.fields] if isinstance(f, Nested) else [f.column])]
        self.columns += [column for column, _ref, _exposed in self.derived]

    def parse(self, record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Column values and references (field → source id) of one record, or a Refusal."""
        values: dict[str, Any] = {}
        refs: dict[str, str] = {}
        for f in self.fields:
            if isinstance(f, Nested):
                f.read_into(record, values, f.name)
            elif isinstance(f, Ref):
                source_id = f.read(record, f.name)
                if source_id is not None:
                    refs[f.name] = source_id
                values[f.column] = None
            else:
                values[f.column] = f.read(record, f.name)
        for column, _ref, _exposed in self.derived:
            values[column] = None
        return values, refs


_TYPE_LIST = [
    RecordType(
        "mo", "Медицинская организация", Mo,
        [
            Text("name", "Полное наименование", required=True, example="ГБУЗ «Родильный дом № 1»"),
            Text("short_name", "Краткое наименование", description="Если не указано — первые 120 символов полного"),
            Digits("registry_number", "Реестровый номер МО", (6,), description="Шестизначный номер в федеральном реестре"),
            Digits("f003_code", "Код МО по F003", (6,)),
            Oid("oid", "OID МО", example="1.2.643.5.1.13.13.12.2.35.1001"),
            Digits("ogrn", "ОГРН", (13, 15)),
            Digits("inn", "ИНН", (10, 12)),
            Digits("kpp", "КПП", (9,)),
            Text("address", "Адрес"),
        ],
        noun="МО", found="найдена", refused="отклонена",
    ),
    RecordType(
        "insurer", "Страховая медицинская организация", Insurer,
        [
            Digits("code", "Реестровый номер СМО", (5,), required=True, description="Код по справочнику F002"),
            Digits("ogrn", "ОГРН СМО", (13, 15)),
            Text("name", "Наименование СМО", required=True),
            Digits("okato", "ОКАТО территории страхования", (5, 8, 11)),
        ],
        noun="СМО", found="найдена", refused="отклонена",
    ),
    RecordType(
        "branch", "Подразделение (здание) МО", Branch,
        [
            Ref("mo", "МО", "mo", required=True),
            Digits("code", "Код подразделения", (3,), required=True,
                   description="Трёхзначный код здания внутри МО (BRANCH ТФОМС: код МО по F003 + этот код)"),
            Text("name", "Наименование подразделения", required=True),
            Choice("kind", "Вид подразделения", BRANCH_KINDS, required=True),
            Bool("for_children", "Детское подразделение",
                 description="true — детское, false — взрослое, null — общее"),
            Text("address", "Адрес подразделения"),
            Text("phone", "Телефон подразделения"),
            DateField("opened_on", "Дата открытия"),
            DateField("closed_on", "Дата закрытия", description="null — подразделение действует"),
        ],
        noun="Подразделение", found="найдено", refused="отклонено", exposed=("mo_id",),
    ),
    RecordType(
        "department", "Отделение", Department,
        [
            Ref("mo", "МО", "mo", required=True),
            Ref("branch", "Подразделение (здание)", "branch", description="Подразделение той же МО"),
            Text("code", "Код подразделения", description="Код подразделения в МО (файл прикрепления ТФОМС)"),
            Text("name", "Наименование отделения", required=True),
            Choice("kind", "Вид отделения", DEPARTMENT_KINDS, required=True),
            Int("beds", "Количество коек", minimum=0, maximum=100_000),
            Text("phone", "Телефон отделения"),
            DateField("closed_on", "Дата закрытия отделения",
                      description="null — отделение действует; закрытое удаляется из справочника ТФОМС"),
        ],
        noun="Отделение", found="найдено", refused="отклонено", exposed=("mo_id",), same_mo=("branch",),
    ),
    RecordType(
        "bed_profile", "Профиль коек отделения (коечный фонд)", BedProfile,
        [
            Ref("department", "Отделение", "department", required=True,
                description="МО профиля — МО этого отделения"),
            Int("profile", "Профиль койки по V020", minimum=1, maximum=999, required=True, example=3),
            Int("care_profile", "Профиль медицинской помощи по V002", minimum=1, maximum=999, required=True,
                example=136),
            Bool("children", "Детские койки", default=False),
            *(
                Int(name, label, minimum=0, maximum=100_000, default=0)
                for name, label in (
                    ("beds", "Количество коек"),
                    ("beds_male", "Коек для мужчин"),
                    ("beds_female", "Коек для женщин"),
                    ("beds_repair", "Коек на ремонте"),
                    ("planned_beds", "Плановое количество коек"),
                )
            ),
            DateField("valid_from", "Действует с"),
            DateField("valid_to", "Действует по", description="null — без срока"),
            DateField("actual_on", "Дата сведений о занятости коек",
                      description="Сведения о свободных местах на эту дату"),
            *(
                Int(name, label, minimum=0, maximum=100_000, default=0)
                for name, label in (
                    ("occupied", "Занято коек"),
                    ("admitted_today", "Поступило за день"),
                    ("discharged_today", "Выбыло за день"),
                    ("planned_today", "Плановых госпитализаций на день"),
                    ("free", "Свободных коек"),
                    ("free_adult", "Свободных коек для взрослых"),
                    ("free_child", "Свободных коек для детей"),
                )
            ),
        ],
        noun="Профиль коек", exposed=("mo_id", "department_id"), derived=(("mo_id", "department", "mo_id"),),
    ),
    RecordType(
        "staff", "Медицинский работник", Staff,
        [
            Ref("mo", "МО", "mo", required=True),
            Text("last_name", "Фамилия", required=True),
            Text("first_name", "Имя", required=True),
            Text("middle_name", "Отчество"),
            Snils("snils", "СНИЛС"),
            Text("position", "Должность"),
            Choice("category", "Категория медработника", STAFF_CATEGORIES, default="doctor"),
        ],
        noun="Медицинский работник", exposed=("mo_id",),
    ),
    RecordType(
        "patient", "Пациент", Patient,
        [
            Ref("mo", "МО прикрепления", "mo", required=True),
            Text("last_name", "Фамилия", required=True),
            Text("first_name", "Имя", required=True),
            Text("middle_name", "Отчество"),
            Choice("sex", "Пол", SEXES, default="F"),
            DateField("birth_date", "Дата рождения"),
            Snils("snils", "СНИЛС"),
            Digits("enp", "ЕНП", (16,), description="Единый номер полиса ОМС"),
            Nested(
                "policy", "Полис ОМС",
                [
                    Choice("kind", "Тип полиса ОМС", POLICY_KINDS, column="policy_kind"),
                    Text("series", "Серия полиса", column="policy_series"),
                    Text("number", "Номер полиса", column="policy_number"),
                    Text("insurer", "Код страховой медицинской организации", column="insurer_code"),
                    DateField("begin_on", "Дата начала действия полиса", column="policy_begin"),
                    DateField("end_on", "Дата окончания действия полиса", column="policy_end"),
                ],
            ),
            Nested(
                "document", "Документ, удостоверяющий личность",
                [
                    Choice("kind", "Тип документа", DOCUMENT_KINDS, column="document_kind"),
                    Text("series", "Серия документа", column="document_series"),
                    Text("number", "Номер документа", column="document_number"),
                    DateField("issued_on", "Дата выдачи документа", column="document_issued_on"),
                    Text("issuer", "Кем выдан документ", column="document_issuer"),
                ],
            ),
            Text("registration_address", "Адрес регистрации"),
            Text("residence_address", "Адрес места жительства"),
            Choice("social_status", "Социальный статус", SOCIAL_STATUSES),
            Text("phone", "Телефон"),
            Text("birth_place", "Место рождения"),
        ],
        noun="Пациент",
    ),
    RecordType(
        "attachment", "Прикрепление к участку", Attachment,
        [
            Ref("patient", "Пациент", "patient", required=True),
            Ref("mo", "МО прикрепления", "mo", required=True),
            Ref("department", "Подразделение участка", "department", description="Отделение той же МО"),
            Text("district", "Код (номер) участка", required=True),
            Ref("doctor", "Основной врач участка", "staff", description="id записи staff"),
            Choice("method", "Способ прикрепления", ATTACHMENT_METHODS, default="0"),
            Choice("kind", "Тип прикрепления", ATTACHMENT_KINDS, default="1"),
            DateField("attached_on", "Дата прикрепления", required=True),
            DateField("detached_on", "Дата открепления", description="null — прикрепление действует"),
        ],
        noun="Прикрепление", found="найдено", refused="отклонено", same_mo=("department",),
    ),
    RecordType(
        "pregnancy", "Беременность", Pregnancy,
        [
            Ref("patient", "Пациент", "patient", required=True),
            Ref("mo", "МО, поставившая на учёт", "mo", required=True),
            DateField("registered_on", "Дата постановки на учёт", required=True),
            Int("weeks_at_registration", "Срок при постановке на учёт, недель", minimum=0, maximum=45, required=True),
            Int("days_at_registration", "Срок при постановке на учёт, дней сверх недель", minimum=0, maximum=6, default=0),
            Bool("multiple", "Многоплодная беременность", default=False),
            Choice("outcome", "Исход беременности", OUTCOME_KINDS, description="null — беременность продолжается"),
            DateField("outcome_on", "Дата исхода", description="Обязательна, если указан исход"),
        ],
        noun="Беременность", found="найдена", refused="отклонена", exposed=("patient_id",),
    ),
    RecordType(
        "referral", "Направление на госпитализацию", HospitalReferral,
        [
            Ref("mo", "Направившая МО", "mo", required=True),
            Ref("patient", "Пациент", "patient", required=True),
            Ref("pregnancy", "Беременность", "pregnancy"),
            Ref("branch", "Подразделение направившей МО", "branch", description="Подразделение той же МО"),
            Ref("doctor", "Направивший врач", "staff", description="id записи staff той же МО"),
            Int("number", "Номер направления", minimum=1, maximum=2_147_483_647, required=True),
            Choice("kind", "Вид направления", REFERRAL_KINDS, required=True),
            Bool("auto_created", "Создано автоматически", default=False,
                 description="Автоматически созданные направления в ТФОМС не передаются"),
            Choice("payment", "Источник оплаты", PAYMENT_KINDS, default="oms"),
            DateField("issued_on", "Дата направления", required=True),
            DateField("planned_on", "Плановая дата госпитализации"),
            Ref("to_mo", "МО госпитализации", "mo", required=True),
            Ref("to_department", "Отделение госпитализации", "department",
                description="Отделение МО госпитализации"),
            Ref("bed_profile", "Профиль коек", "bed_profile",
                description="Профиль коек отделения госпитализации (или МО госпитализации)"),
            Diagnosis("diagnosis", "Диагноз направления (МКБ-10)", required=True),
            Text("diagnosis_text", "Диагноз направления (текст)"),
            Nested(
                "cancel", "Отмена направления",
                [
                    DateField("on", "Дата отмены направления", column="cancelled_on"),
                    Choice("reason", "Причина отмены направления", CANCEL_REASONS, column="cancel_reason"),
                    Choice("source", "Кто отменил направление", CANCEL_SOURCES, column="cancel_source"),
                    Text("text", "Комментарий к отмене", column="cancel_text"),
                ],
                description="null — направление действует; при отмене обязательны on, reason и source",
            ),
        ],
        noun="Направление", found="найдено", refused="отклонено", exposed=("patient_id", "to_mo_id"),
        same_mo=("branch", "doctor"),
    ),
    RecordType(
        "hospitalisation", "Госпитализация", Hospitalisation,
        [
            Ref("patient", "Пациент", "patient", required=True),
            Ref("pregnancy", "Беременность", "pregnancy"),
            Ref("mo", "МО", "mo", required=True),
            Ref("department", "Отделение", "department", description="Отделение той же МО"),
            Ref("referral", "Направление на госпитализацию", "referral",
                description="Направление того же пациента в эту МО; null — без направления"),
            DateTimeField("admitted_at", "Дата и время поступления", required=True),
            DateTimeField("discharged_at", "Дата и время выписки"),
            Choice("outcome", "Исход беременности в этой госпитализации", OUTCOME_KINDS),
            Choice("payment", "Источник оплаты", PAYMENT_KINDS, default="oms"),
            Bool("emergency", "Экстренная госпитализация", default=False,
                 description="Форма оказания помощи: true — экстренная, false — плановая"),
            Text("card_number", "Номер медицинской карты стационарного больного"),
            Diagnosis("diagnosis", "Диагноз при поступлении (МКБ-10)"),
            Text("diagnosis_text", "Диагноз при поступлении (текст)"),
            Nested(
                "refusal", "Отказ в госпитализации (исход пребывания в приёмном отделении)",
                [
                    DateTimeField("at", "Дата и время отказа", column="refused_at"),
                    Choice("reason", "Причина отказа", CANCEL_REASONS, column="refusal_reason"),
                    Choice("source", "Кто отказался", CANCEL_SOURCES, column="refusal_source"),
                    Text("text", "Комментарий к отказу", column="refusal_text"),
                ],
                description="null — пациент госпитализирован; при отказе обязательны at, reason и source",
            ),
        ],
        noun="Госпитализация", found="найдена", refused="отклонена", exposed=("patient_id", "mo_id"),
        same_mo=("department",),
    ),
    RecordType(
        "movement", "Движение в стационаре", HospitalMovement,
        [
            Ref("hospitalisation", "Госпитализация", "hospitalisation", required=True,
                description="МО движения — МО этой госпитализации"),
            Ref("department", "Отделение", "department", required=True,
                description="Отделение МО госпитализации"),
            Ref("bed_profile", "Профиль коек", "bed_profile", description="Профиль коек этого отделения"),
            DateTimeField("began_at", "Дата и время поступления в отделение", required=True),
            DateTimeField("ended_at", "Дата и время выбытия из отделения",
                          description="null — пациент в отделении"),
            Choice("outcome", "Исход движения", MOVEMENT_OUTCOMES, description="Для завершённого движения"),
        ],
        noun="Движение", found="найдено", refused="отклонено",
        derived=(("mo_id", "hospitalisation", "mo_id"),), same_mo=("department",),
    ),
    RecordType(
        "dispensary", "Диспансерное наблюдение", DispensaryObservation,
        [
            Ref("patient", "Пациент", "patient", required=True),
            Ref("mo", "МО наблюдения", "mo", required=True),
            Ref("doctor", "Врач, осуществляющий наблюдение", "staff",
                description="id записи staff той же МО"),
            Diagnosis("diagnosis", "Диагноз наблюдения (МКБ-10)", required=True),
            DateField("began_on", "Дата начала наблюдения", required=True),
            Int("visits_per_year", "Кратность явок в год", minimum=1, maximum=12, default=1),
            Choice("place", "Место наблюдения", DISPENSARY_PLACES, default="1"),
            DateField("ended_on", "Дата прекращения наблюдения",
                      description="null — наблюдение продолжается"),
            Choice("end_result", "Причина прекращения наблюдения", DISPENSARY_END_RESULTS,
                   description="Обязательна, если указана дата прекращения"),
        ],
        noun="Диспансерное наблюдение", found="найдено", refused="отклонено", same_mo=("doctor",),
    ),
    RecordType(
        "event", "Клиническое событие", ClinicalEvent,
        [
            Choice("kind", "Вид события", EVENT_KINDS, required=True),
            Ref("patient", "Пациент", "patient", required=True),
            Ref("pregnancy", "Беременность", "pregnancy"),
            Ref("hospitalisation", "Госпитализация", "hospitalisation",
                description="Обязательна для выписки (discharge): исход внутри госпитализации выбирает СЭМД 17, иначе 8"),
            Ref("mo", "МО", "mo", required=True),
            Ref("department", "Отделение", "department", description="Отделение той же МО"),
            Ref("doctor", "Врач", "staff", description="id записи staff"),
            DateTimeField("at", "Дата и время события", required=True),
            Choice("care_conditions", "Условия оказания медицинской помощи", CARE_CONDITIONS),
            JsonObject("data", "Структурированные клинические данные", default=dict,
                       description="Для kas_notice обязательно data.kas_status: " + ", ".join(KAS_STATUSES)),
        ],
        noun="Событие", found="найдено", refused="отклонено", same_mo=("department",),
        exposed=("mo_id", "kind", "care_conditions"),
    ),
    RecordType(
        "visit_report", "Протокол визита (подписанный PDF)", VisitReport,
        [
            Ref("event", "Визит", "event", required=True,
                description="Амбулаторный приём — событие exam_primary или exam_repeat; МО протокола — МО "
                            "этого события"),
            PdfFileName("file_name", "Имя файла", required=True, example="Протокол осмотра 12.03.2026.pdf",
                 description="Только .pdf: архивы .zip в ИЭМК не передаются"),
            Base64File("content", "Содержимое PDF", required=True, max_bytes=MAX_REPORT_BYTES, magic=b"%PDF-",
                       kind="PDF", description="Протокол визита, подписанный в МИС"),
            Base64File("signature", "Открепленная подпись", max_bytes=MAX_SIGNATURE_BYTES,
                       description="Подпись CMS (PKCS#7, DER) файла PDF, если МИС её передаёт"),
            Text("signed_by", "Кто подписал", description="ФИО и должность подписавшего"),
            DateTimeField("signed_at", "Дата и время подписания"),
            Bool("to_iemk", "Передавать в ИЭМК", default=True,
                 description="Признак TO_IEMK: протокол прилагается к Амбулаторному эпикризу визита"),
        ],
        noun="Протокол визита", derived=(("mo_id", "event", "mo_id"),),
        description="Протокол визита, подписанный в МИС («емиас»): с признаком to_iemk прилагается к "
                    "СЭМД «Амбулаторный эпикриз» этого визита (только PDF, .zip не поддерживается)",
    ),
    RecordType(
        "plan", "План диспансеризации или профилактических осмотров", ProphylacticPlan,
        [
            Ref("mo", "МО", "mo", required=True),
            Choice("kind", "Вид мероприятия", PLAN_KINDS, required=True),
            Int("year", "Год плана", minimum=2000, maximum=2100, required=True),
            Int("quarter", "Квартал плана", minimum=1, maximum=4, description="null — план на год"),
            Text("name", "Наименование плана"),
        ],
        noun="План", exposed=("mo_id",),
    ),
    RecordType(
        "plan_person", "Человек в плане", PlanPerson,
        [
            Ref("plan", "План", "plan", required=True),
            Ref("patient", "Пациент", "patient", required=True),
            Int("quarter", "Квартал проведения мероприятия", minimum=1, maximum=4, required=True),
        ],
        noun="Человек в плане",
    ),
]
RECORD_TYPES: dict[str, RecordType] = {t.name: t for t in _TYPE_LIST}
ORDER = hooks.RECORD_TYPES  # dependency order: a type refers only to types before it
assert tuple(RECORD_TYPES) == ORDER


def _check_mo(values: dict[str, Any], refs: dict[str, str]) -> None:
    if values["short_name"] is None:
        values["short_name"] = values["name"][:120]


def _check_pregnancy(values: dict[str, Any], refs: dict[str, str]) -> None:
    if values["outcome"] and values["outcome_on"] is None:
        raise Refusal("outcome_on", "Для исхода беременности укажите дату исхода «outcome_on»")
    if values["outcome_on"] and not values["outcome"]:
        raise Refusal("outcome", "Указана дата исхода, но не указан исход беременности «outcome»")
    if values["outcome_on"] and values["outcome_on"] < values["registered_on"]:
        raise Refusal("outcome_on", "Дата исхода раньше даты постановки на учёт")


def _check_hospitalisation(values: dict[str, Any], refs: dict[str, str]) -> None:
    if values["discharged_at"] and values["discharged_at"] < values["admitted_at"]:
        raise Refusal("discharged_at", "Дата выписки раньше даты поступления")
    if any(values[c] is not None for c in ("refused_at", "refusal_reason", "refusal_source", "refusal_text")):
        for name, column, label in (("at", "refused_at", "Дата и время отказа"),
                                    ("reason", "refusal_reason", "Причина отказа"),
                                    ("source", "refusal_source", "Кто отказался")):
            if values[column] is None:
                raise Refusal(
                    f"refusal.{name}", f"Для отказа в госпитализации укажите «{label}» (refusal.{name})"
                )
        if values["refused_at"] < values["admitted_at"]:
            raise Refusal("refusal.at", "Дата отказа в госпитализации раньше даты поступления")


def _check_branch(values: dict[str, Any], refs: dict[str, str]) -> None:
    if values["opened_on"] and values["closed_on"] and values["closed_on"] < values["opened_on"]:
        raise Refusal("closed_on", "Дата закрытия подразделения раньше даты открытия")


def _check_bed_profile(values: dict[str, Any], refs: dict[str, str]) -> None:
    if values["valid_from"] and values["valid_to"] and values["valid_to"] < values["valid_from"]:
        raise Refusal("valid_to", "Дата окончания действия профиля коек раньше даты начала")


def _check_referral(values: dict[str, Any], refs: dict[str, str]) -> None:
    if values["planned_on"] and values["planned_on"] < values["issued_on"]:
        raise Refusal("planned_on", "Плановая дата госпитализации раньше даты направления")
    if any(values[c] is not None for c in ("cancelled_on", "cancel_reason", "cancel_source", "cancel_text")):
        for name, column, label in (("on", "cancelled_on", "Дата отмены направления"),
                                    ("reason", "cancel_reason", "Причина отмены направления"),
                                    ("source", "cancel_source", "Кто отменил направление")):
            if values[column] is None:
                raise Refusal(f"cancel.{name}", f"Для отмены направления укажите «{label}» (cancel.{name})")
        if values["cancelled_on"] < values["issued_on"]:
            raise Refusal("cancel.on", "Дата отмены направления раньше даты направления")


def _check_movement(values: dict[str, Any], refs: dict[str, str]) -> None:
    if values["ended_at"] and values["ended_at"] < values["began_at"]:
        raise Refusal("ended_at", "Дата выбытия из отделения раньше даты поступления в него")
    if values["outcome"] and not values["ended_at"]:
        raise Refusal("ended_at", "Указан исход движения, но не указана дата выбытия «ended_at»")


def _check_dispensary(values: dict[str, Any], refs: dict[str, str]) -> None:
    if values["ended_on"] and not values["end_result"]:
        raise Refusal("end_result", "Для прекращения наблюдения укажите причину «end_result»")
    if values["end_result"] and not values["ended_on"]:
        raise Refusal("ended_on", "Указана причина прекращения наблюдения, но не указана дата «ended_on»")
    if values["ended_on"] and values["ended_on"] < values["began_on"]:
        raise Refusal("ended_on", "Дата прекращения наблюдения раньше даты начала")


def _check_attachment(values: dict[str, Any], refs: dict[str, str]) -> None:
    if values["detached_on"] and values["detached_on"] < values["attached_on"]:
        raise Refusal("detached_on", "Дата открепления раньше даты прикрепления")


def _check_patient(values: dict[str, Any], refs: dict[str, str]) -> None:
    if values["policy_begin"] and values["policy_end"] and values["policy_end"] < values["policy_begin"]:
        raise Refusal("policy.end_on", "Дата окончания действия полиса раньше даты начала")


def _check_event(values: dict[str, Any], refs: dict[str, str]) -> None:
    if values["kind"] == "kas_notice":
        status = values["data"].get("kas_status")
        if status is None or status == "":
            raise Refusal("data.kas_status", "Для извещения о КАС укажите «Статус случая в регистре КАС» (data.kas_status)")
        if not isinstance(status, str) or status not in KAS_STATUSES:
            allowed = ", ".join(KAS_STATUSES)
            raise Refusal("data.kas_status", f"«Статус случая в регистре КАС»: недопустимое значение «{status}»; допустимы: {allowed}")
    if values["kind"] == "discharge" and "hospitalisation" not in refs:
        raise Refusal("hospitalisation", "Для выписки укажите госпитализацию «hospitalisation»")


RECORD_CHECKS = {
    "mo": _check_mo,
    "branch": _check_branch,
    "bed_profile": _check_bed_profile,
    "patient": _check_patient,
    "attachment": _check_attachment,
    "pregnancy": _check_pregnancy,
    "referral": _check_referral,
    "hospitalisation": _check_hospitalisation,
    "movement": _check_movement,
    "dispensary": _check_dispensary,
    "event": _check_event,
}


# --- The batch -----------------------------------------------------------------------------------


@dataclass
class IngestResult:
    results: list[dict[str, Any]]
    stored: int = 0
    refused: int = 0
    created: int = 0
    updated: int = 0  # stored records whose values changed (a repeat that changes nothing is not counted)
    records: list[StoredRecord] = field(default_factory=list)


class _References:
    """Source id → (primary key, exposed columns…) per type: rows of this batch and rows stored before."""

    def __init__(self) -> None:
        self.known: dict[str, dict[str, tuple]] = {name: {} for name in ORDER}
        self.refused: dict[str, set[str]] = {name: set() for name in ORDER}
        self.looked_up: dict[str, set[str]] = {name: set() for name in ORDER}

    def preload(self, target: str, source_ids: Iterable[str]) -> None:
        """One query per chunk of unknown ids of one type."""
        known, refused, looked_up = self.known[target], self.refused[target], self.looked_up[target]
        wanted = [s for s in set(source_ids) if s not in known and s not in refused and s not in looked_up]
        if not wanted:
            return
        looked_up.update(wanted)
        rtype = RECORD_TYPES[target]
        table = rtype.model.__table__
        columns = [table.c.source_id, table.c.id, *(table.c[c] for c in rtype.exposed)]
        for chunk in chunks(wanted, IN_CHUNK):
            for row in db.session.execute(select(*columns).where(table.c.source_id.in_(chunk))):
                known[row[0]] = tuple(row[1:])

    def resolve(self, ref: Ref, source_id: str) -> tuple:
        row = self.known[ref.target].get(source_id)
        if row is not None:
            return row
        target = RECORD_TYPES[ref.target]
        if source_id in self.refused[ref.target]:
            raise Refusal(ref.name, f"{target.noun} {source_id} {target.refused} в этом пакете")
        raise Refusal(ref.name, f"{target.noun} {source_id} не {target.found}")


def _shown(value: Any) -> Any:
    """A value echoed back in an answer, made encodable (the input may hold lone surrogates)."""
    return _UNSTORABLE.sub("\ufffd", value) if isinstance(value, str) else value


def _refusal(type_name: Any, source_id: Any, field_name: str | None, message: str) -> dict[str, Any]:
    return {
        "type": _shown(type_name) if isinstance(type_name, str) else None,
        "id": _shown(source_id) if isinstance(source_id, str | int) and not isinstance(source_id, bool) else None,
        "status": "refused",
        "field": field_name,
        "message": _shown(message),
    }


def _source_id(record: dict[str, Any]) -> str:
    value = record.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        if value is None or value == "":
            raise Refusal("id", REQUIRED.format(label="Идентификатор записи"))
        raise Refusal("id", "«Идентификатор записи»: ожидается строка")
    text = _storable(str(value).strip(), "id", "Идентификатор записи")
    if not text:
        raise Refusal("id", REQUIRED.format(label="Идентификатор записи"))
    if len(text) > 64:
        raise Refusal("id", "«Идентификатор записи»: не длиннее 64 символов")
    return text


def _exposed(rtype: RecordType, rows: dict[str, tuple], ref_name: str, column: str) -> Any:
    """An exposed column of a referenced row (rows hold the primary key, then the exposed columns)."""
    return rows[ref_name][1 + RECORD_TYPES[rtype.ref_targets[ref_name]].exposed.index(column)]


def _check_consistency(rtype: RecordType, values: dict[str, Any], rows: dict[str, tuple], refs: dict[str, str]) -> None:
    """Referenced departments, branches and doctors belong to the record's МО; pregnancy, stay and
    referral belong to its patient; a referral's department and bed profile to the МО it sends to."""
    for name in rtype.same_mo:
        if name in rows and _exposed(rtype, rows, name, "mo_id") != values["mo_id"]:
            owner = f"МО {refs['mo']}" if "mo" in refs else f"МО госпитализации {refs['hospitalisation']}"
            noun = RECORD_TYPES[rtype.ref_targets[name]].noun
            raise Refusal(name, f"{noun} {refs[name]} не относится к {owner}")
    owned = (("pregnancy", "Беременность"), ("hospitalisation", "Госпитализация"), ("referral", "Направление"))
    for name, noun in owned:
        if name in rows and "patient_id" in values and (
            _exposed(rtype, rows, name, "patient_id") != values["patient_id"]
        ):
            raise Refusal(name, f"{noun} {refs[name]} относится к другому пациенту, не к {refs['patient']}")
    if rtype.name == "referral":
        if "to_department" in rows and _exposed(rtype, rows, "to_department", "mo_id") != values["to_mo_id"]:
            raise Refusal(
                "to_department", f"Отделение {refs['to_department']} не относится к МО {refs['to_mo']}"
            )
        if "bed_profile" in rows:
            if _exposed(rtype, rows, "bed_profile", "mo_id") != values["to_mo_id"]:
                raise Refusal(
                    "bed_profile", f"Профиль коек {refs['bed_profile']} не относится к МО {refs['to_mo']}"
                )
            if values["to_department_id"] is not None and (
                _exposed(rtype, rows, "bed_profile", "department_id") != values["to_department_id"]
            ):
                raise Refusal(
                    "bed_profile",
                    f"Профиль коек {refs['bed_profile']} не относится к отделению {refs['to_department']}",
                )
    if rtype.name == "hospitalisation" and "referral" in rows and (
        _exposed(rtype, rows, "referral", "to_mo_id") != values["mo_id"]
    ):
        raise Refusal("referral", f"Направление {refs['referral']} выдано в другую МО, не в {refs['mo']}")
    if rtype.name == "visit_report":
        kind = _exposed(rtype, rows, "event", "kind")
        if kind not in VISIT_KINDS:
            raise Refusal(
                "event",
                f"Событие {refs['event']} — «{EVENT_KINDS.get(kind, kind)}», не амбулаторный приём: протокол "
                "визита прилагается только к первичному или повторному осмотру (exam_primary, exam_repeat)",
            )
        care = _exposed(rtype, rows, "event", "care_conditions")
        if care in INPATIENT_CARE:
            raise Refusal(
                "event",
                f"Осмотр {refs['event']} проведён в условиях «{CARE_CONDITIONS[care]}», не амбулаторно: "
                "протокол визита прилагается только к амбулаторному приёму",
            )
    if rtype.name == "movement" and "bed_profile" in rows and (
        _exposed(rtype, rows, "bed_profile", "department_id") != values["department_id"]
    ):
        raise Refusal(
            "bed_profile", f"Профиль коек {refs['bed_profile']} не относится к отделению {refs['department']}"
        )


def ingest_batch(records: list[dict]) -> IngestResult:
    """Validate and upsert a batch; one result per record in input order. Flushes, never commits."""
    session = db.session
    session.flush()  # rows the caller added are visible to the set-based queries below
    results: list[dict[str, Any] | None] = [None] * len(records)
    by_type: dict[str, list[tuple[int, dict[str, Any], str]]] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            results[index] = _refusal(None, None, None, "Запись должна быть объектом JSON")
            continue
        type_name = record.get("type")
        if type_name not in RECORD_TYPES:
            message = (
                REQUIRED.format(label="Тип записи") if type_name in (None, "")
                else f"Неизвестный тип записи «{type_name}»; допустимы: {', '.join(ORDER)}"
            )
            results[index] = _refusal(type_name, record.get("id"), "type", message)
            continue
        try:
            source_id = _source_id(record)
        except Refusal as refusal:
            results[index] = _refusal(type_name, record.get("id"), refusal.field, refusal.message)
            continue
        by_type.setdefault(type_name, []).append((index, record, source_id))

    refs_index = _References()
    outcome = IngestResult(results=[])  # filled at the end
    for type_name in ORDER:
        items = by_type.get(type_name)
        if not items:
            continue
        rtype = RECORD_TYPES[type_name]
        check = RECORD_CHECKS.get(type_name)
        parsed: list[tuple[int, str, dict[str, Any], dict[str, str]]] = []
        for index, record, source_id in items:
            try:
                values, refs = rtype.parse(record)
                if check:
                    check(values, refs)
            except Refusal as refusal:
                results[index] = _refusal(type_name, source_id, refusal.field, refusal.message)
                continue
            parsed.append((index, source_id, values, refs))

        wanted: dict[str, set[str]] = {}
        for ref in rtype.refs:
            wanted.setdefault(ref.target, set()).update(p[3][ref.name] for p in parsed if ref.name in p[3])
        for target, source_ids in wanted.items():
            refs_index.preload(target, source_ids)

        accepted: dict[str, dict[str, Any]] = {}  # the last valid record of a source id wins
        for index, source_id, values, refs in parsed:
            try:
                rows = {}
                for ref in rtype.refs:
                    if ref.name in refs:
                        row = refs_index.resolve(ref, refs[ref.name])
                        rows[ref.name] = row
                        values[ref.column] = row[0]
                for column, ref_name, exposed in rtype.derived:
                    values[column] = _exposed(rtype, rows, ref_name, exposed)
                _check_consistency(rtype, values, rows, refs)
            except Refusal as refusal:
                results[index] = _refusal(type_name, source_id, refusal.field, refusal.message)
                continue
            accepted[source_id] = values
            results[index] = {"type": type_name, "id": source_id, "status": "stored"}

        refs_index.refused[type_name].update(s for _i, _r, s in items if s not in accepted)

        stored = _upsert(rtype, accepted, refs_index)
        outcome.records.extend(stored)
        hooks.notify(type_name, stored)

    session.flush()
    outcome.results = results  # type: ignore[assignment]
    outcome.stored = sum(1 for r in results if r and r["status"] == "stored")
    outcome.refused = len(results) - outcome.stored
    outcome.created = sum(1 for r in outcome.records if r.created)
    outcome.updated = sum(1 for r in outcome.records if r.changed and not r.created)
    return outcome


def _upsert(rtype: RecordType, rows: dict[str, dict[str, Any]], refs_index: _References) -> list[StoredRecord]:
    """Existing rows found with one IN query per chunk; new ones inserted in bulk; changed ones updated in bulk."""
    if not rows:
        return []
    session = db.session
    table = rtype.model.__table__
    columns = rtype.columns
    existing: dict[str, Any] = {}
    source_ids = list(rows)
    for chunk in chunks(source_ids, IN_CHUNK):
        query = select(table.c.id, table.c.source_id, *(table.c[c] for c in columns)).where(
            table.c.source_id.in_(chunk)
        )
        for row in session.execute(query):
            existing[row.source_id] = row

    now = utcnow()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    stored: list[StoredRecord] = []
    for source_id, values in rows.items():
        row = existing.get(source_id)
        if row is None:
            inserts.append({"source_id": source_id, **values, "created_at": now, "updated_at": now})
            continue
        mapping = row._mapping
        changed = any(mapping[c] != values[c] for c in columns)
        if changed:
            updates.append({"id": row.id, **values, "updated_at": now})
        stored.append(StoredRecord(rtype.name, row.id, source_id, False, changed))

    if inserts:
        for chunk in chunks(inserts, 1000):
            returned = session.execute(insert(table).returning(table.c.id, table.c.source_id), chunk)
            for new_id, source_id in returned:
                stored.append(StoredRecord(rtype.name, new_id, source_id, True, True))
    if updates:
        session.execute(update(rtype.model), updates)
        for item in updates:  # objects the caller holds must not show the old values
            obj = session.identity_map.get(session.identity_key(rtype.model, item["id"]))
            if obj is not None:
                session.expire(obj)

    known = refs_index.known[rtype.name]
    for record in stored:
        values = rows[record.source_id]
        known[record.source_id] = (record.id, *(values[c] for c in rtype.exposed))
    return stored


def run_in_transaction(work: Callable[[], T], attempts: int = 3) -> T:
    """For callers that own the transaction (the API view, the import command): run and commit.

    Two writers that add the same new source id at once collide on its unique index (or, on
    SQLite, on the write lock); the loser rolls back and runs again, now finding the row.
    """
    for attempt in range(1, attempts + 1):
        try:
            result = work()
            db.session.commit()
            return result
        except (IntegrityError, OperationalError):
            db.session.rollback()
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")
