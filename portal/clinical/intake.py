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
    CARE_CONDITIONS,
    DEPARTMENT_KINDS,
    DOCUMENT_KINDS,
    EVENT_KINDS,
    KAS_STATUSES,
    OUTCOME_KINDS,
    PAYMENT_KINDS,
    PLAN_KINDS,
    POLICY_KINDS,
    SEXES,
    SOCIAL_STATUSES,
    STAFF_CATEGORIES,
    Attachment,
    ClinicalEvent,
    Department,
    Hospitalisation,
    Insurer,
    Mo,
    Patient,
    PlanPerson,
    Pregnancy,
    ProphylacticPlan,
    Staff,
)
from portal.extensions import db
from portal.models_base import chunks, utcnow

REQUIRED = "Не указано обязательное поле «{label}»"
T = TypeVar("T")
IN_CHUNK = 500  # source ids per IN (...) query: well under SQLite's and PostgreSQL's parameter limits


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

    def __post_init__(self) -> None:
        for f in self.fields:
            f.bind(self.model)
        self.refs = [f for f in self.fields if isinstance(f, Ref)]
        self.columns = [c for f in self.fields for c in ([g.column for g in f.fields] if isinstance(f, Nested) else [f.column])]

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
        "department", "Отделение", Department,
        [
            Ref("mo", "МО", "mo", required=True),
            Text("code", "Код подразделения", description="Код подразделения в МО (файл прикрепления ТФОМС)"),
            Text("name", "Наименование отделения", required=True),
            Choice("kind", "Вид отделения", DEPARTMENT_KINDS, required=True),
            Int("beds", "Количество коек", minimum=0, maximum=100_000),
        ],
        noun="Отделение", found="найдено", refused="отклонено", exposed=("mo_id",),
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
        noun="Медицинский работник",
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
        noun="Прикрепление", found="найдено", refused="отклонено",
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
        "hospitalisation", "Госпитализация", Hospitalisation,
        [
            Ref("patient", "Пациент", "patient", required=True),
            Ref("pregnancy", "Беременность", "pregnancy"),
            Ref("mo", "МО", "mo", required=True),
            Ref("department", "Отделение", "department", description="Отделение той же МО"),
            DateTimeField("admitted_at", "Дата и время поступления", required=True),
            DateTimeField("discharged_at", "Дата и время выписки"),
            Choice("outcome", "Исход беременности в этой госпитализации", OUTCOME_KINDS),
            Choice("payment", "Источник оплаты", PAYMENT_KINDS, default="oms"),
        ],
        noun="Госпитализация", found="найдена", refused="отклонена", exposed=("patient_id",),
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
        noun="Событие", found="найдено", refused="отклонено",
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
    "patient": _check_patient,
    "attachment": _check_attachment,
    "pregnancy": _check_pregnancy,
    "hospitalisation": _check_hospitalisation,
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


def _check_consistency(rtype: RecordType, values: dict[str, Any], rows: dict[str, tuple], refs: dict[str, str]) -> None:
    """A referenced department belongs to the record's МО; pregnancy and stay belong to its patient."""
    if "department" in rows and rows["department"][1] != values.get("mo_id"):
        raise Refusal("department", f"Отделение {refs['department']} не относится к МО {refs['mo']}")
    for name, noun in (("pregnancy", "Беременность"), ("hospitalisation", "Госпитализация")):
        if name in rows and "patient_id" in values and rows[name][1] != values["patient_id"]:
            raise Refusal(name, f"{noun} {refs[name]} относится к другому пациенту, не к {refs['patient']}")


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
