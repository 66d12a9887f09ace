"""CDA R2 documents of the nine ВИМИС «АКиНЕО» SEMD types and their XSD check (SPEC V-1, V-4).

The header follows the official SEMD beta templates (specs/vimis/ССЗ_v1_2_шаблоны_СЭМД, the same
SMSV numbering as АКиНЕО) and the АКиНЕО field tables (SMSV3/8/17 xlsx); the body carries the
sections the portal has data for, as narrative tables, plus the coded «Данные о медицинских картах
пациента» section every SEMD beta requires. `check_event` (portal.vimis.checks) runs first; the
builder is still defensive and writes nullFlavor="NI" where data are missing.

Where things are (XPath, namespace urn:hl7-org:v3; `<OID>` is the МО OID from ФРМО):

* document id: /ClinicalDocument/id[@root='<OID>.100.1.1.51']/@extension = document uuid;
  set of versions: setId[@root='<OID>.100.1.1.50']/@extension = "<SEMD type>-<event source id>",
  the same for every version; versionNumber/@value = № отправки.
* document type: code/@code = SMSV1 … SMSV17 with codeSystem 1.2.643.5.1.13.13.99.2.592 (SEMD
  beta), or the kind 13 / 14 / 339 with codeSystem 1.2.643.5.1.13.13.11.1522 (SEMD 13, 19, 22).
* patient: recordTarget/patientRole/id[@root='<OID>.100.1.1.10'] (MIS id),
  id[@root='1.2.643.100.3']/@extension = СНИЛС as «XXX-XXX-XXX XX»,
  id[@root='1.2.643.5.1.13.13.11.1011.<kind>'] (ДУЛ «series number», kind 1 = паспорт РФ,
  6 = свидетельство о рождении; other ФОМС F011 kinds as id root '1.2.643.5.1.13.2.1.1.736.<F011>'),
  addr[@use='H'] (registration) and addr[@use='HP'] (residence), each streetAddressLine + state
  (region code, taken from the МО OID), telecom, patient/name/family + given (first, middle),
  patient/administrativeGenderCode (1.2.643.5.1.13.13.11.1040), patient/birthTime/@value
  (YYYYMMDD), providerOrganization/id/@root = МО OID.
* ЕНП / new-style ОМС policy: /ClinicalDocument/participant[@typeCode='HLD']/
  associatedEntity[@classCode='POLHOLD']/id[@root='1.2.643.5.1.13.2.7.100.2']/@extension
  (16 digits), with scopingOrganization/id[@root='1.2.643.5.1.13.2.1.1.635']/@extension = the
  insurer's ФОМС F002 code. The participant is absent when the patient has no new-style policy.
* author: author/assignedAuthor/id[@root='<OID>.100.1.1.70'] (MIS id),
  id[@root='1.2.643.100.3']/@extension = doctor's СНИЛС «XXX-XXX-XXX XX», code = position
  (1.2.643.5.1.13.13.11.1002; nullFlavor when the position has no known code), assignedPerson/name;
  legalAuthenticator/assignedEntity repeats the same doctor.
* МО: custodian/assignedCustodian/representedCustodianOrganization/id/@root = МО OID.
* case: componentOf/encompassingEncounter (hospitalisation dates and discharge outcome for 8/17);
  medical card: component/structuredBody/component/section[code/@code='vimisMedicalCard']/entry/
  observation (code 1.2.643.5.1.13.13.11.1507: 53 inpatient, 51 outpatient card).
* КАС (22): section DOCINFO rows «Уникальный идентификатор случая КАС в ВИМИС» and «Статус
  случая в регистре КАС»; the pregnancy outcome of 17 is the LABODELI section «Беременность и роды».

Every element with a `code` attribute carries codeSystem, codeSystemVersion, codeSystemName and
displayName, except the CDA «CS» elements realmCode, languageCode and signatureCode, for which
the CDA schema forbids those attributes.

Times: event and hospitalisation times are the region's wall clock (intake keeps it), written with
+0300; a naive `created_at` is UTC (the portal's stored timestamps) and is converted to +0300.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

from lxml import etree

from portal.clinical.identifiers import digits, format_snils
from portal.clinical.models import (
    CARE_CONDITIONS,
    KAS_STATUSES,
    OUTCOME_KINDS,
    PAYMENT_KINDS,
    SEXES,
    ClinicalEvent,
    Mo,
    Patient,
    Staff,
)
from portal.vimis.checks import CARD_TYPES, OID_PATTERN, medical_card, new_style_policy_number
from portal.vimis.semd_types import SEMD_TYPES

NS = "urn:hl7-org:v3"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "vimis" / "CDA_Infrastructure" / "CDA.xsd"
PRETTY = True  # one element per line: schema errors name a useful line
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
REGION_TZ = timezone(timedelta(hours=3))  # Moscow time: the region's wall clock

SNILS_ROOT = "1.2.643.100.3"
POLICY_ROOT = "1.2.643.5.1.13.2.7.100.2"  # ОМС policy of the new style (ЕНП)
INSURER_ROOT = "1.2.643.5.1.13.2.1.1.635"  # ФОМС F002, the register of insurers
MINZDRAV_OID = "1.2.643.5.1.13"  # recipient: Минздрав России (ИЭМК)


class CdaSchemaError(ValueError):
    """The document does not match the CDA R2 schema; the message quotes the schema's errors."""


@dataclass(frozen=True)
class Coded:
    code: str
    system: str
    version: str
    system_name: str
    display: str


def _beta(code: str, display: str) -> Coded:
    return Coded(
        code, "1.2.643.5.1.13.13.99.2.592", "2.1", "Типы структурированных медицинских сведений", display
    )


def _kind(code: str, display: str) -> Coded:
    return Coded(code, "1.2.643.5.1.13.13.11.1522", "4.45", "Виды медицинских документов", display)


# ClinicalDocument/code per type (protocol tables 3 and 4); titles are the protocol's names.
DOCUMENT_CODES: dict[int, Coded] = {
    1: _beta("SMSV1", "Направление на оказание медицинских услуг"),
    2: _beta("SMSV2", "Протокол инструментального исследования"),
    3: _beta("SMSV3", "Протокол лабораторного исследования"),
    5: _beta("SMSV5", "Осмотр (консультация) пациента"),
    8: _beta("SMSV8", "Лечение в условиях стационара (дневного стационара)"),
    13: _kind("13", "Медицинское свидетельство о смерти"),
    17: _beta("SMSV17", "Выписной эпикриз родильного дома"),
    19: _kind("14", "Медицинское свидетельство о перинатальной смерти"),
    22: _kind("339", "Извещение о критическом акушерском состоянии"),
}
# templateId: "0" for SEMD beta («для целей взаимодействия с ВИМИС передавать 0»); the federal
# death certificates use their РЭМД templates (ФНСИ 1.2.643.5.1.13.13.11.1520: Ред. 5 and Ред. 1).
TEMPLATE_IDS: dict[int, str] = {13: "1.2.643.5.1.13.13.15.35.5", 19: "1.2.643.5.1.13.13.15.37.1"}

CONFIDENTIALITY = Coded(
    "N", "1.2.643.5.1.13.13.99.2.285", "1.1", "Уровень конфиденциальности медицинского документа", "обычный"
)
GENDERS: dict[str, Coded] = {
    sex: Coded(code, "1.2.643.5.1.13.13.11.1040", "2.1", "Пол пациента", display)
    for sex, code, display in (("M", "1", "Мужской"), ("F", "2", "Женский"))
}
POLICY_HOLDER = Coded("SELF", "2.16.840.1.113883.5.111", "2.0", "RoleCode", "Сам пациент")
DISCHARGED = Coded("1", "1.2.643.5.1.13.13.99.2.307", "1.1", "Исходы случаев госпитализации", "Выписан")
CARD_KINDS: dict[str, Coded] = {
    "inpatient": Coded(
        "53",
        "1.2.643.5.1.13.13.11.1507",
        "1.1",
        "Тип медицинской карты",
        "Медицинская карта стационарного больного",
    ),
    "outpatient": Coded(
        "51",
        "1.2.643.5.1.13.13.11.1507",
        "1.1",
        "Тип медицинской карты",
        "Медицинская карта пациента, получающего медицинскую помощь в амбулаторных условиях",
    ),
}
# Positions of medical workers (ФНСИ 1.2.643.5.1.13.13.11.1002): 35 and 109 are in the official
# templates, 13, 110 and 122 as real MIS data use them (consistent with the templates' numbering).
# Any other position is written with nullFlavor: the source MIS would have to send the ФРМР code.
POSITION_CODES: dict[str, str] = {
    "врач-акушер-гинеколог": "13",
    "врач клинической лабораторной диагностики": "35",
    "врач-терапевт": "109",
    "врач-терапевт участковый": "110",
    "врач-хирург": "122",
}
POSITION_SYSTEM = ("1.2.643.5.1.13.13.11.1002", "7.1", "Должности медицинских и фармацевтических работников")
# ДУЛ: ФОМС F011 kind → code of ФНСИ «Документы, удостоверяющие личность» (1.2.643.5.1.13.13.11.1011).
DOCUMENT_KIND_CODES: dict[str, str] = {"14": "1", "3": "6"}


def _section_code(code: str, display: str) -> Coded:
    return Coded(
        code, "1.2.643.5.1.13.13.99.2.197", "1.7", "Секции электронных медицинских документов", display
    )


def _vimis_section_code(code: str, display: str) -> Coded:
    return Coded(code, "vimis1", "1.0", "Секции СЭМД beta-версии", display)


SECTION_SERVICES = _section_code("SERVICES", "Оказанные услуги")
SECTION_RESINFO = _section_code("RESINFO", "Заключение")
SECTION_RESLAB = _section_code("RESLAB", "Результаты лабораторных исследований")
SECTION_DOCINFO = _section_code("DOCINFO", "Сведения о документе")
SECTION_HOSP = _section_code("HOSP", "Пребывание в стационаре")
SECTION_LABODELI = _section_code("LABODELI", "Беременность и роды")
SECTION_DGN = _section_code("DGN", "Диагнозы")
SECTION_MEDICAL_CARD = _vimis_section_code("vimisMedicalCard", "Медицинские карты пациента")
SECTION_CONSULTATION = _vimis_section_code(
    "vimisConsultationPurpose", "Дополнительные данные приема (осмотра, консультации)"
)

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def set_id_extension(event: ClinicalEvent, semd_type: int) -> str:
    """setId/@extension: one per SEMD, shared by all its versions."""
    return f"{semd_type}-{event.source_id}"


# --- small element helpers ------------------------------------------------------------------


def _clean(value) -> str:
    return _XML_INVALID.sub("", str(value)).strip()


def _el(parent, tag: str, text: str | None = None, **attrs: str):
    element = etree.SubElement(parent, f"{{{NS}}}{tag}", attrs)
    if text is not None:
        element.text = _clean(text)
    return element


def _coded(parent, tag: str, c: Coded):
    return _el(
        parent,
        tag,
        code=c.code,
        codeSystem=c.system,
        codeSystemVersion=c.version,
        codeSystemName=c.system_name,
        displayName=c.display,
    )


def _ts(moment: datetime | date | None) -> str | None:
    """HL7 TS of a region wall-clock time (naive) or an aware time, with the +0300 offset."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        return moment.strftime("%Y%m%d")
    if moment.tzinfo is not None:
        moment = moment.astimezone(REGION_TZ)
    return moment.strftime("%Y%m%d%H%M") + "+0300"


def _created_ts(created_at: datetime) -> str:
    """A naive creation time is UTC (portal convention); shown in the region's offset."""
    aware = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    return _ts(aware)


def _time_el(parent, tag: str, moment):
    value = _ts(moment)
    return _el(parent, tag, value=value) if value else _el(parent, tag, nullFlavor="NI")


def _oid(mo: Mo) -> str | None:
    oid = (mo.oid or "").strip()
    return oid if OID_PATTERN.match(oid) else None


def _mo_id(parent, mo: Mo, suffix: str, extension: str | None, tag: str = "id"):
    """A MIS identifier under the МО's OID (<OID>.100.1.1.NN); nullFlavor without an OID."""
    oid = _oid(mo)
    if oid and extension:
        return _el(parent, tag, root=f"{oid}.{suffix}", extension=_clean(extension))
    return _el(parent, tag, nullFlavor="NI")


def region_code(mo: Mo) -> str | None:
    """Region code of 1.2.643.5.1.13.13.99.2.206 from the ФРМО OID (…12.2.<region>.<n>)."""
    parts = (_oid(mo) or "").split(".")
    if len(parts) > 10 and ".".join(parts[:9]) == "1.2.643.5.1.13.13.12.2" and parts[9].isdigit():
        return parts[9]
    return None


def _addr(parent, text: str | None, region: str | None, use: str | None = None):
    attrs = {"use": use} if use else {}
    addr = _el(parent, "addr", **attrs)
    if text and text.strip():
        _el(addr, "streetAddressLine", text)
    else:
        _el(addr, "streetAddressLine", nullFlavor="NI")
    if region:
        _el(addr, "state", region)
    else:
        _el(addr, "state", nullFlavor="NI")
    return addr


def _phone(parent, phone: str | None):
    number = digits(phone)
    if len(number) == 11 and number.startswith("8"):
        number = "7" + number[1:]
    if number:
        return _el(parent, "telecom", value=f"tel:+{number}")
    return _el(parent, "telecom", nullFlavor="NI")


def _name(parent, family: str | None, given: str | None, middle: str | None):
    name = _el(parent, "name")
    for tag, value in (("family", family), ("given", given)):
        if value and value.strip():
            _el(name, tag, value)
        else:
            _el(name, tag, nullFlavor="NI")
    if middle and middle.strip():
        _el(name, "given", middle)
    return name


def _organization(parent, tag: str, mo: Mo):
    """An organisation element (id = МО OID, name, telecom, addr) under `tag`."""
    org = _el(parent, tag)
    oid = _oid(mo)
    if oid:
        _el(org, "id", root=oid)
    else:
        _el(org, "id", nullFlavor="NI")
    _el(org, "name", mo.name)
    _el(org, "telecom", nullFlavor="NI")
    _addr(org, mo.address, region_code(mo))
    return org


def _position(parent, staff: Staff):
    code = getattr(staff, "position_code", None) or POSITION_CODES.get((staff.position or "").strip().lower())
    if not code:
        return _el(parent, "code", nullFlavor="NI")
    system, version, system_name = POSITION_SYSTEM
    return _coded(parent, "code", Coded(code, system, version, system_name, _clean(staff.position or code)))


def _staff_entity(entity, staff: Staff | None, mo: Mo):
    """ids (MIS, СНИЛС), position and name of a medical worker inside assignedAuthor/assignedEntity."""
    if staff is None:
        _el(entity, "id", nullFlavor="NI")
        return
    _mo_id(entity, mo, "100.1.1.70", staff.source_id)
    if digits(staff.snils):
        _el(entity, "id", root=SNILS_ROOT, extension=_clean(format_snils(staff.snils)))
    else:
        _el(entity, "id", nullFlavor="NI")
    _position(entity, staff)
    person = _el(entity, "assignedPerson")
    _name(person, staff.last_name, staff.first_name, staff.middle_name)


def _rows_section(body, code: Coded, title: str, rows: list[tuple[str, object]]):
    """A section with a two-column narrative table of the rows that have a value."""
    section = _el(_el(body, "component"), "section")
    _coded(section, "code", code)
    _el(section, "title", title)
    text = _el(section, "text")
    filled = [(label, value) for label, value in rows if value not in (None, "")]
    if not filled:
        _el(text, "paragraph", "Нет данных")
        return section
    tbody = _el(_el(text, "table"), "tbody")
    for label, value in filled:
        tr = _el(tbody, "tr")
        _el(tr, "th", label)
        _el(tr, "td", value)
    return section


def _date_text(moment) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return moment.strftime("%d.%m.%Y %H:%M")
    return moment.strftime("%d.%m.%Y")


def _event_rows(event: ClinicalEvent) -> list[tuple[str, object]]:
    """What the registry shows of the event: kind, date, term, department, conditions, doctor."""
    doctor = event.doctor
    conditions = event.care_conditions
    return [
        ("Мероприятие", event.kind_label),
        ("Дата мероприятия", _date_text(event.at)),
        ("Срок беременности", event.gestational_age()),
        ("Отделение", event.department.name if event.department else None),
        (
            "Условия оказания медицинской помощи",
            f"{conditions} — {CARE_CONDITIONS.get(conditions, '')}".rstrip(" —") if conditions else None,
        ),
        (
            "Врач",
            " ".join(p for p in (doctor.full_name, f"({doctor.position})" if doctor.position else "") if p)
            if doctor
            else None,
        ),
    ]


# Labels of the source MIS's event data (the intake contract leaves `data` free; these are the
# keys the regional MIS sends). Unknown keys are shown under their own name.
DATA_LABELS: dict[str, str] = {
    "diagnosis": "Диагноз (МКБ-10)",
    "conclusion": "Заключение",
    "condition": "Состояние",
    "purpose": "Цель направления",
    "target_mo": "Направлен в",
    "reason": "Обоснование направления",
    "sample": "Биологический материал",
    "result": "Результат госпитализации",
    "bed_days": "Проведено койко-дней",
    "term": "Срок беременности (по данным МИС)",
    "term_by_biometry": "Срок беременности по биометрии",
    "fetuses": "Количество плодов",
    "weight_kg": "Масса тела, кг",
    "bp": "Артериальное давление, мм рт. ст.",
    "complaints": "Жалобы",
    "hemoglobin_g_l": "Гемоглобин, г/л",
    "erythrocytes_10e12_l": "Эритроциты, ×10¹²/л",
    "leukocytes_10e9_l": "Лейкоциты, ×10⁹/л",
    "platelets_10e9_l": "Тромбоциты, ×10⁹/л",
    "esr_mm_h": "СОЭ, мм/ч",
    "specific_gravity": "Удельный вес мочи",
    "protein_g_l": "Белок в моче, г/л",
    "leukocytes_per_field": "Лейкоциты в моче, в поле зрения",
    "ketones": "Кетоновые тела",
    "pappa_mom": "PAPP-A, MoM",
    "hcg_mom": "β-ХГЧ, MoM",
    "risk": "Риск хромосомных аномалий",
    "risk_t21": "Риск трисомии 21, 1:",
    "outcome": "Исход беременности",
    "delivery": "Родоразрешение",
    "children": "Дети",
    "sex": "Пол",
    "weight_g": "Масса, г",
    "length_cm": "Длина, см",
    "apgar": "Оценка по Апгар",
    "alive": "Живорождение",
    "method": "Метод",
    "operation": "Операция",
    "form": "Учётная форма",
    "series": "Серия",
    "number": "Номер",
    "kind": "Вид",
    "cause_code": "Причина смерти (МКБ-10)",
    "cause": "Причина смерти",
    "died_at": "Дата и время смерти",
    "mother_diagnosis": "Диагноз матери (МКБ-10)",
    "kas_criterion": "Ведущий критерий КАС",
}
_SPECIAL_KEYS = frozenset({"diagnosis", "kas_status", "kas_case_number"})


def _value_text(key: str, value) -> str:
    if isinstance(value, bool):
        return "Да" if value else "Нет"
    if key == "outcome" and isinstance(value, str):
        return OUTCOME_KINDS.get(value, value)
    if key == "sex" and isinstance(value, str):
        return SEXES.get(value, value)
    if isinstance(value, dict):
        return ", ".join(
            f"{DATA_LABELS.get(k, k)}: {_value_text(k, v)}" for k, v in value.items() if v not in (None, "")
        )
    if isinstance(value, list | tuple):
        return "; ".join(_value_text(key, v) for v in value)
    return str(value)


def _data_rows(data: dict) -> list[tuple[str, object]]:
    """Every other fact the source MIS sent with the event (protocol: pass all data available)."""
    return [
        (DATA_LABELS.get(key, key), _value_text(key, value))
        for key, value in data.items()
        if key not in _SPECIAL_KEYS and value not in (None, "", [], {})
    ]


def _data_text(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value in (None, "", [], {}):
        return None
    return _value_text(key, value)


# --- header -------------------------------------------------------------------------------


def _record_target(doc, patient: Patient, mo: Mo):
    region = region_code(mo)
    role = _el(_el(doc, "recordTarget"), "patientRole")
    _mo_id(role, mo, "100.1.1.10", patient.source_id)
    if digits(patient.snils):
        _el(role, "id", root=SNILS_ROOT, extension=_clean(format_snils(patient.snils)))
    else:
        _el(role, "id", nullFlavor="NI")
    number = " ".join(p for p in (patient.document_series, patient.document_number) if p)
    if (patient.document_kind or "").isdigit() and number:
        kind = DOCUMENT_KIND_CODES.get(patient.document_kind)
        root = (
            f"1.2.643.5.1.13.13.11.1011.{kind}"
            if kind
            else f"1.2.643.5.1.13.2.1.1.736.{patient.document_kind}"
        )
        issuer = ". ".join(
            p
            for p in (
                patient.document_issuer,
                f"Дата выдачи: {patient.document_issued_on:%d.%m.%Y}" if patient.document_issued_on else None,
            )
            if p
        )
        attrs = {"assigningAuthorityName": _clean(issuer)} if issuer else {}
        _el(role, "id", root=root, extension=_clean(number), **attrs)
    _addr(role, patient.registration_address, region, use="H")
    _addr(role, patient.residence_address or patient.registration_address, region, use="HP")
    _phone(role, patient.phone)
    person = _el(role, "patient")
    _name(person, patient.last_name, patient.first_name, patient.middle_name)
    gender = GENDERS.get(patient.sex)
    if gender:
        _coded(person, "administrativeGenderCode", gender)
    else:
        _el(person, "administrativeGenderCode", nullFlavor="NI")
    _time_el(person, "birthTime", patient.birth_date)
    _organization(role, "providerOrganization", mo)


def _author(doc, doctor: Staff | None, mo: Mo, created: str):
    author = _el(doc, "author")
    _el(author, "time", value=created)
    assigned = _el(author, "assignedAuthor")
    _staff_entity(assigned, doctor, mo)
    _organization(assigned, "representedOrganization", mo)


def _custodian(doc, mo: Mo):
    custodian = _el(_el(doc, "custodian"), "assignedCustodian")
    _organization(custodian, "representedCustodianOrganization", mo)


def _recipient(doc):
    org = _el(_el(_el(doc, "informationRecipient"), "intendedRecipient"), "receivedOrganization")
    _el(org, "id", root=MINZDRAV_OID)
    _el(org, "name", "Министерство здравоохранения Российской Федерации")


def _legal_authenticator(doc, doctor: Staff | None, mo: Mo, created: str):
    legal = _el(doc, "legalAuthenticator")
    _el(legal, "time", value=created)
    _el(legal, "signatureCode", code="S")
    entity = _el(legal, "assignedEntity")
    _staff_entity(entity, doctor, mo)
    _organization(entity, "representedOrganization", mo)


def _policy(doc, patient: Patient):
    number = new_style_policy_number(patient)
    if not number:
        return
    entity = _el(_el(doc, "participant", typeCode="HLD"), "associatedEntity", classCode="POLHOLD")
    _el(entity, "id", root=POLICY_ROOT, extension=number)
    _coded(entity, "code", POLICY_HOLDER)
    if patient.insurer_code:
        insurer = _el(entity, "scopingOrganization")
        _el(insurer, "id", root=INSURER_ROOT, extension=_clean(patient.insurer_code))
        _el(insurer, "name", nullFlavor="NI")


def service_event(
    doc,
    mo: Mo,
    performer: Staff | None,
    *,
    low: datetime | date | None,
    high: datetime | date | None = None,
    performer_type: str = "PPRF",
):
    """documentationOf/serviceEvent: the period of the documented service and who performed it."""
    service = _el(_el(doc, "documentationOf"), "serviceEvent")
    period = _el(service, "effectiveTime")
    _time_el(period, "low", low)
    if high is not None:
        _time_el(period, "high", high)
    entity = _el(_el(service, "performer", typeCode=performer_type), "assignedEntity")
    _staff_entity(entity, performer, mo)
    _organization(entity, "representedOrganization", mo)
    return service


def encompassing_encounter(
    doc,
    mo: Mo,
    *,
    case_id: str | None,
    record: tuple[str, str | None] | None,
    low: datetime | date | None,
    high: datetime | date | None = None,
    disposition: Coded | None = None,
    location: str | None = None,
):
    """componentOf/encompassingEncounter: the case (<OID>.100.1.1.15), its medical record (`record`:
    suffix 100.1.1.16 история болезни or 100.1.1.17 амбулаторная карта, and number), its period,
    the discharge outcome and the department (`location`)."""
    encounter = _el(_el(doc, "componentOf"), "encompassingEncounter")
    _mo_id(encounter, mo, "100.1.1.15", case_id)
    if record is not None:
        _mo_id(encounter, mo, record[0], record[1])
    period = _el(encounter, "effectiveTime")
    _time_el(period, "low", low)
    if high is not None:
        _time_el(period, "high", high)
    if disposition is not None:
        _coded(encounter, "dischargeDispositionCode", disposition)
    if location is not None:
        facility = _el(_el(encounter, "location"), "healthCareFacility")
        _el(facility, "id", nullFlavor="NI")
        _el(_el(facility, "location"), "name", location)
    return encounter


def _documentation_of(doc, event: ClinicalEvent, semd_type: int):
    """The performed service (study, consultation) and its performer: SMSV2, SMSV3, SMSV5."""
    if semd_type not in (2, 3, 5) or event.doctor is None:
        return
    service_event(
        doc, event.mo, event.doctor, low=event.at, performer_type="SPRF" if semd_type == 5 else "PPRF"
    )


def _component_of(doc, event: ClinicalEvent, semd_type: int):
    card = medical_card(event, semd_type) if semd_type in CARD_TYPES else None
    stay = event.hospitalisation if semd_type in (8, 17) or (card and card[0] == "inpatient") else None
    record = None
    if stay is not None:
        record = ("100.1.1.16", stay.source_id)  # номер истории болезни
    elif card is not None:
        record = ("100.1.1.17", card[1].source_id)  # номер амбулаторной карты
    department = (stay.department if stay else None) or event.department
    hospital = semd_type in (8, 17)
    encompassing_encounter(
        doc,
        event.mo,
        case_id=stay.source_id if stay else event.source_id,
        record=record,
        low=(stay.admitted_at if stay else None) if hospital else (stay.admitted_at if stay else event.at),
        high=((stay.discharged_at if stay else None) or event.at) if hospital else None,
        disposition=DISCHARGED if hospital else None,
        location=department.name if department is not None else None,
    )


# --- body ---------------------------------------------------------------------------------


def _medical_card_section(body, event: ClinicalEvent, semd_type: int):
    """«Данные о медицинских картах пациента» (vimisMedicalCard), R [1..1] in every SEMD beta."""
    card = medical_card(event, semd_type)
    rows: list[tuple[str, object]] = []
    if card is not None:
        kind, record = card
        number = record.source_id
        opened = record.admitted_at if kind == "inpatient" else record.registered_on
        rows = [
            ("Вид медицинской карты", CARD_KINDS[kind].display),
            ("Номер", number),
            ("Дата создания", _date_text(opened)),
        ]
    section = _rows_section(body, SECTION_MEDICAL_CARD, "Данные о медицинских картах пациента", rows)
    if card is None:
        return
    observation = _el(_el(section, "entry"), "observation", classCode="OBS", moodCode="EVN")
    _mo_id(observation, event.mo, "100.1.1.59", number)
    _coded(observation, "code", CARD_KINDS[kind])
    _el(observation, "text", number)
    _time_el(observation, "effectiveTime", opened)


def _body(doc, event: ClinicalEvent, semd_type: int, kas_case_number: str | None):
    body = _el(_el(doc, "component"), "structuredBody")
    data = event.data if isinstance(event.data, dict) else {}
    rows = [*_event_rows(event), *_data_rows(data)]
    if semd_type == 1:
        _rows_section(body, SECTION_SERVICES, "МЕДИЦИНСКИЕ УСЛУГИ, НА КОТОРЫЕ НАПРАВЛЕН ПАЦИЕНТ", rows)
    elif semd_type == 2:
        _rows_section(body, SECTION_RESINFO, "РЕЗУЛЬТАТ ИССЛЕДОВАНИЯ", rows)
    elif semd_type == 3:
        _rows_section(body, SECTION_RESLAB, "РЕЗУЛЬТАТЫ ИССЛЕДОВАНИЯ", rows)
    elif semd_type == 5:
        _rows_section(body, SECTION_DOCINFO, "СВЕДЕНИЯ О КОНСУЛЬТАЦИИ", rows)
        _rows_section(
            body,
            SECTION_CONSULTATION,
            "ДОПОЛНИТЕЛЬНЫЕ СВЕДЕНИЯ О КОНСУЛЬТАЦИИ",
            [
                ("Обстоятельства посещения", "По беременности" if event.pregnancy else None),
                (
                    "Дата постановки на учет по беременности",
                    _date_text(event.pregnancy.registered_on) if event.pregnancy else None,
                ),
            ],
        )
    elif semd_type in (8, 17):
        stay = event.hospitalisation
        _rows_section(
            body,
            SECTION_HOSP,
            "ОБЩИЕ ДАННЫЕ О ГОСПИТАЛИЗАЦИИ",
            [
                ("Дата начала госпитализации", _date_text(stay.admitted_at) if stay else None),
                ("Дата выписки", _date_text((stay.discharged_at if stay else None) or event.at)),
                ("Отделение", stay.department.name if stay and stay.department else None),
                ("Источник оплаты", PAYMENT_KINDS.get(stay.payment, stay.payment) if stay else None),
                *(row for row in rows if row[0] not in ("Мероприятие", "Дата мероприятия", "Отделение")),
            ],
        )
        if semd_type == 17:
            _outcome_section(body, event)
    elif semd_type == 22:
        status = data.get("kas_status")
        _rows_section(
            body,
            SECTION_DOCINFO,
            "ИЗВЕЩЕНИЕ О КРИТИЧЕСКОМ АКУШЕРСКОМ СОСТОЯНИИ",
            [
                (
                    "Уникальный идентификатор случая КАС в ВИМИС",
                    kas_case_number or _data_text(data, "kas_case_number") or "не получен",
                ),
                ("Статус случая в регистре КАС", KAS_STATUSES.get(status, status) if status else None),
                *rows,
                ("Текущее место нахождения пациента", event.department.name if event.department else None),
            ],
        )
    else:  # 13, 19: federal death certificates
        _rows_section(body, SECTION_DOCINFO, "СВЕДЕНИЯ О СМЕРТИ", rows)
    if _data_text(data, "diagnosis"):
        _rows_section(body, SECTION_DGN, "ДИАГНОЗЫ", [("Диагноз (МКБ-10)", _data_text(data, "diagnosis"))])
    if semd_type in CARD_TYPES:
        _medical_card_section(body, event, semd_type)


def _outcome_section(body, event: ClinicalEvent):
    """SMSV17 only: «Беременность и роды» with the pregnancy outcome inside the stay."""
    stay = event.hospitalisation
    pregnancy = event.pregnancy or (stay.pregnancy if stay else None)
    outcome = (stay.outcome if stay else None) or (pregnancy.outcome if pregnancy else None)
    _rows_section(
        body,
        SECTION_LABODELI,
        "БЕРЕМЕННОСТЬ И РОДЫ",
        [
            ("Исход беременности", OUTCOME_KINDS.get(outcome, outcome) if outcome else None),
            ("Дата исхода", _date_text(pregnancy.outcome_on) if pregnancy and pregnancy.outcome_on else None),
            ("Срок беременности", pregnancy.gestational_age(event.at.date()) if pregnancy else None),
            ("Многоплодная беременность", ("Да" if pregnancy.multiple else "Нет") if pregnancy else None),
        ],
    )


# --- public API ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """What differs between documents in the header every SEMD shares (ВИМИС and ИЭМК)."""

    code: Coded  # ClinicalDocument/code, also the title
    template_id: str
    document_uuid: str  # id/@extension under <OID>.100.1.1.51
    set_id: str  # setId/@extension under <OID>.100.1.1.50
    version: int
    created_at: datetime  # naive = UTC
    type_id: str = "POCD_HD000040"  # typeId/@extension (РЭМД Schematron Main01-2 wants POCD_MT000040)


def clinical_document(header: Header, *, patient: Patient, mo: Mo, doctor: Staff | None):
    """A ClinicalDocument element with the common header: ids, code, title, times, recordTarget,
    author, custodian, recipient (Минздрав), legalAuthenticator and the ОМС policy holder.
    The caller adds documentationOf, componentOf and the body, then `to_bytes`."""
    created = _created_ts(header.created_at)
    doc = etree.Element(f"{{{NS}}}ClinicalDocument", nsmap={None: NS})
    _el(doc, "realmCode", code="RU")
    _el(doc, "typeId", root="2.16.840.1.113883.1.3", extension=header.type_id)
    _el(doc, "templateId", root=header.template_id)
    _mo_id(doc, mo, "100.1.1.51", header.document_uuid)
    _coded(doc, "code", header.code)
    _el(doc, "title", header.code.display)
    _el(doc, "effectiveTime", value=created)
    _coded(doc, "confidentialityCode", CONFIDENTIALITY)
    _el(doc, "languageCode", code="ru-RU")
    _mo_id(doc, mo, "100.1.1.50", header.set_id, tag="setId")
    _el(doc, "versionNumber", value=str(int(header.version)))
    _record_target(doc, patient, mo)
    _author(doc, doctor, mo, created)
    _custodian(doc, mo)
    _recipient(doc)
    _legal_authenticator(doc, doctor, mo, created)
    _policy(doc, patient)
    return doc


def to_bytes(doc) -> bytes:
    """The document as sent: UTF-8 with the XML declaration."""
    return XML_DECLARATION + etree.tostring(doc, encoding="UTF-8", pretty_print=PRETTY)


# Building blocks other CDA documents reuse (portal.iemk.cda builds the ИЭМК SEMD with them).
element = _el
coded_element = _coded
time_element = _time_el
mo_identifier = _mo_id
section_code = _section_code
document_kind_code = _kind
rows_section = _rows_section
date_text = _date_text
event_rows = _event_rows
data_rows = _data_rows
data_text = _data_text


def build_document(
    event: ClinicalEvent,
    semd_type: int,
    *,
    version: int,
    document_uuid: str,
    created_at: datetime,
    kas_case_number: str | None = None,
) -> bytes:
    """UTF-8 CDA R2 XML of `semd_type` for `event`, version `version` (№ отправки).

    `kas_case_number` («Уникальный идентификатор случая КАС в ВИМИС», SEMD 22) falls back to
    event.data["kas_case_number"].
    """
    if semd_type not in SEMD_TYPES:
        raise ValueError(f"unknown SEMD type {semd_type}")
    header = Header(
        code=DOCUMENT_CODES[semd_type],
        template_id=TEMPLATE_IDS.get(semd_type, "0"),
        document_uuid=document_uuid,
        set_id=set_id_extension(event, semd_type),
        version=version,
        created_at=created_at,
    )
    doc = clinical_document(header, patient=event.patient, mo=event.mo, doctor=event.doctor)
    _documentation_of(doc, event, semd_type)
    _component_of(doc, event, semd_type)
    _body(doc, event, semd_type, kas_case_number)
    return to_bytes(doc)


_schema: etree.XMLSchema | None = None
_schema_lock = threading.Lock()  # guards loading and each validation (the schema keeps one error log)
_parsers = threading.local()


def _cda_schema() -> etree.XMLSchema:
    global _schema
    if _schema is None:
        with _schema_lock:
            if _schema is None:
                _schema = etree.XMLSchema(etree.parse(str(SCHEMA_PATH)))
    return _schema


def _parser() -> etree.XMLParser:
    """One hardened parser per thread (lxml parsers are not shared between threads)."""
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return parser


def _readable(message: str) -> str:
    """libxml2's message without the namespace noise: «Element 'author': This element is not expected…»."""
    return message.replace(f"{{{NS}}}", "").strip().rstrip(".")


def validate_cda(xml: bytes) -> None:
    """Check a document against CDA.xsd; raise CdaSchemaError quoting the first errors."""
    prefix = "Документ не соответствует схеме CDA: "
    try:
        document = etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError as error:
        raise CdaSchemaError(f"{prefix}строка {error.lineno}: {_readable(error.msg)}") from None
    schema = _cda_schema()
    with _schema_lock:
        if schema.validate(document):
            return
        errors = [f"строка {e.line}: {_readable(e.message)}" for e in list(schema.error_log)[:3]]
    raise CdaSchemaError(prefix + "; ".join(errors))
