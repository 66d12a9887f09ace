"""Controls of an ИЭМК document (SPEC I-7; seed §2: «форматно-логический контроль»).

* `check_document` runs before building: what is missing or wrong in the portal's data, one Russian
  sentence each, so the user knows what to fix in the source MIS.
* `logic_check` is the logical control of the built CDA (after the CDA.xsd format control passed).
  The official РЭМД Schematron (specs/remd/1CMedicine_semd_validator/174.sch) is XSLT 2, which lxml
  cannot run, so a chosen set of its general header rules (modules Main01–Main09, Core03, Core04 and
  the kind rules У1-21/У1-22/У2-1/У2-5) is written here as XPath 1 (+ EXSLT regular expressions),
  each quoting the rule's id and text. Rules the portal's CDA cannot meet on purpose are left out:
  the «identity:»/«address:»/«fias:»/«medService:» extension elements (the plain CDA.xsd of the
  format control forbids them), author/time and legalAuthenticator/signatureCode with
  nullFlavor «NI», and the ФРМР position code (the source MIS sends positions as text).
  The kind's own rules («ИЭМК-N») follow: templateId and code of the kind, its sections, the main
  diagnosis, dates in order, and the document's own ids.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from lxml import etree

from portal.clinical.identifiers import digits, format_snils, snils_is_valid
from portal.clinical.models import Department, HospitalMovement, Staff
from portal.extensions import db
from portal.iemk.models import IemkDocument
from portal.vimis.builders import date_text
from portal.vimis.checks import OID_PATTERN, name_is_valid

MSG_PATIENT_SNILS = "У пациента не указан СНИЛС"
MSG_PATIENT_SNILS_CHECKSUM = "У пациента некорректный СНИЛС {snils}: не сходится контрольное число"
MSG_PATIENT_NAME = "У пациента не указаны фамилия и имя"
MSG_PATIENT_NAME_CHARS = "Недопустимые символы в ФИО пациента"
MSG_PATIENT_BIRTH = "У пациента не указана дата рождения"
MSG_PATIENT_SEX = "У пациента не указан пол"
MSG_PATIENT_ADDRESS = "У пациента не указан адрес регистрации"
MSG_MO_OID = "У МО не указан OID (ФРМО)"
MSG_MO_OID_INVALID = "У МО некорректный OID (ФРМО): {oid}"
MSG_NO_DOCTOR = "Не указан врач"
MSG_DOCTOR_SNILS = "У врача {name} не указан СНИЛС"
MSG_DOCTOR_SNILS_CHECKSUM = "У врача {name} некорректный СНИЛС {snils}: не сходится контрольное число"
MSG_DIAGNOSIS = "Не указан диагноз (МКБ-10)"
MSG_DIAGNOSIS_INVALID = "Некорректный код диагноза по МКБ-10: «{code}»"
MSG_EVENT_BEFORE_BIRTH = "Дата документа ({at}) раньше даты рождения пациента ({birth})"
MSG_NO_STAY = "Не указана госпитализация (история болезни)"
MSG_NO_DEPARTMENT = "Не указано отделение госпитализации"
MSG_DISCHARGE_BEFORE_ADMISSION = (
    "Дата выписки из стационара ({discharged}) раньше даты поступления ({admitted})"
)
MSG_LEFT_BEFORE_ARRIVAL = (
    "Дата выбытия из отделения «{department}» ({ended}) раньше даты поступления в отделение ({began})"
)
MSG_OUTSIDE_STAY = (
    "Пребывание в отделении «{department}» ({began} — {ended}) выходит за даты госпитализации "
    "({admitted} — {discharged})"
)
MSG_NO_RESULTS = "Нет результатов исследования"
MSG_NO_REFERRAL_TARGET = "Не указано, куда направлен пациент"

DIAGNOSIS_KINDS = frozenset({"stat_epicrisis", "amb_epicrisis", "referral", "consult"})
RESULT_KINDS = frozenset({"lab", "instrumental"})
ICD10 = re.compile(r"^[A-Z][0-9]{2}(\.[0-9]{1,2})?$")
ICD10_SYSTEM = "1.2.643.5.1.13.13.11.1005"
KIND_SYSTEM = "1.2.643.5.1.13.13.11.1522"  # ClinicalDocument/code: «Виды медицинских документов»
# The body section each kind must have (codes of 1.2.643.5.1.13.13.99.2.197), with the rule id:
# the instrumental protocol's are the Schematron's own (174.sch У2-1, У2-5).
KIND_SECTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "stat_epicrisis": (("ИЭМК-3", "HOSP"),),
    "amb_epicrisis": (("ИЭМК-3", "SERVICES"),),
    "lab": (("ИЭМК-3", "RESLAB"),),
    "referral": (("ИЭМК-3", "SCOPORG"),),
    "consult": (("ИЭМК-3", "RESINFO"),),
    "instrumental": (("У2-1", "DOCINFO"), ("У2-5", "RESINFO")),
}
_NOT_RESULTS = frozenset({"diagnosis"})  # event data keys that are not results of a study


# --- what a document is made of (the builder uses the same) -----------------------------------


def doctor_of(doc: IemkDocument) -> Staff | None:
    """The author: the document's doctor, else the event's."""
    return doc.doctor or doc.event.doctor


def department_of(doc: IemkDocument) -> Department | None:
    """The department of the document: the epicrisis's part, else the event's (or the stay's)."""
    if doc.department is not None:
        return doc.department
    stay = doc.event.hospitalisation
    if doc.kind == "stat_epicrisis" and stay is not None and stay.department is not None:
        return stay.department
    return doc.event.department


def event_data(doc: IemkDocument) -> dict:
    data = doc.event.data
    return data if isinstance(data, dict) else {}


def diagnosis_of(doc: IemkDocument) -> str | None:
    """The main diagnosis (МКБ-10 code): the event's, else, for an epicrisis, the stay's."""
    value = event_data(doc).get("diagnosis")
    if isinstance(value, str) and value.strip():
        return value.strip()
    stay = doc.event.hospitalisation
    if doc.kind == "stat_epicrisis" and stay is not None and (stay.diagnosis or "").strip():
        return stay.diagnosis.strip()
    return None


def discharged_at(doc: IemkDocument) -> datetime:
    """When the stay ended: the stay's discharge time, else the discharge event's."""
    stay = doc.event.hospitalisation
    return (stay.discharged_at if stay else None) or doc.event.at


@dataclass(frozen=True)
class Period:
    """A stay of the patient in one department: from, to and the movement's outcome (MOVEMENT_OUTCOMES)."""

    began: datetime
    ended: datetime
    outcome: str | None = None


def department_periods(doc: IemkDocument) -> list[Period]:
    """The patient's periods in the epicrisis's department (from the stay's movements, in order);
    the whole stay when the stay has no movement there. An open movement ends where the next one
    begins, or at the discharge."""
    stay = doc.event.hospitalisation
    if stay is None:
        return []
    end_of_stay = discharged_at(doc)
    department = department_of(doc)
    movements = db.session.scalars(
        db.select(HospitalMovement)
        .where(HospitalMovement.hospitalisation_id == stay.id)
        .order_by(HospitalMovement.began_at, HospitalMovement.id)
    ).all()
    periods = []
    for i, movement in enumerate(movements):
        if department is None or movement.department_id != department.id:
            continue
        following = movements[i + 1].began_at if i + 1 < len(movements) else None
        periods.append(
            Period(movement.began_at, movement.ended_at or following or end_of_stay, movement.outcome)
        )
    return periods or [Period(stay.admitted_at, end_of_stay)]


def result_keys(doc: IemkDocument) -> list[str]:
    return [k for k, v in event_data(doc).items() if k not in _NOT_RESULTS and v not in (None, "", [], {})]


# --- data check ---------------------------------------------------------------------------------


def check_document(doc: IemkDocument) -> list[str]:
    """Every problem in the data that stops building the document; [] when it is ready."""
    problems: list[str] = []
    event = doc.event
    patient = doc.patient

    if not digits(patient.snils):
        problems.append(MSG_PATIENT_SNILS)
    elif not snils_is_valid(patient.snils):
        problems.append(MSG_PATIENT_SNILS_CHECKSUM.format(snils=format_snils(patient.snils)))
    if not ((patient.last_name or "").strip() and (patient.first_name or "").strip()):
        problems.append(MSG_PATIENT_NAME)
    elif not name_is_valid(patient.last_name, patient.first_name, patient.middle_name):
        problems.append(MSG_PATIENT_NAME_CHARS)
    if patient.birth_date is None:
        problems.append(MSG_PATIENT_BIRTH)
    elif event.at.date() < patient.birth_date:
        problems.append(
            MSG_EVENT_BEFORE_BIRTH.format(at=date_text(event.at), birth=date_text(patient.birth_date))
        )
    if patient.sex not in ("M", "F"):
        problems.append(MSG_PATIENT_SEX)
    if not (patient.registration_address or "").strip():
        problems.append(MSG_PATIENT_ADDRESS)

    oid = (doc.mo.oid or "").strip()
    if not oid:
        problems.append(MSG_MO_OID)
    elif not OID_PATTERN.match(oid):
        problems.append(MSG_MO_OID_INVALID.format(oid=oid))

    doctor = doctor_of(doc)
    if doctor is None:
        problems.append(MSG_NO_DOCTOR)
    elif not digits(doctor.snils):
        problems.append(MSG_DOCTOR_SNILS.format(name=doctor.full_name))
    elif not snils_is_valid(doctor.snils):
        problems.append(
            MSG_DOCTOR_SNILS_CHECKSUM.format(name=doctor.full_name, snils=format_snils(doctor.snils))
        )

    diagnosis = diagnosis_of(doc)
    if diagnosis is None:
        if doc.kind in DIAGNOSIS_KINDS:
            problems.append(MSG_DIAGNOSIS)
    elif not ICD10.match(diagnosis):
        problems.append(MSG_DIAGNOSIS_INVALID.format(code=diagnosis))

    if doc.kind == "stat_epicrisis":
        problems.extend(_stay_problems(doc))
    elif doc.kind in RESULT_KINDS and not result_keys(doc):
        problems.append(MSG_NO_RESULTS)
    elif doc.kind == "referral" and not str(event_data(doc).get("target_mo") or "").strip():
        problems.append(MSG_NO_REFERRAL_TARGET)
    return problems


def _stay_problems(doc: IemkDocument) -> list[str]:
    stay = doc.event.hospitalisation
    if stay is None:
        return [MSG_NO_STAY]
    department = department_of(doc)
    if department is None:
        return [MSG_NO_DEPARTMENT]
    admitted, discharged = stay.admitted_at, discharged_at(doc)
    if discharged < admitted:
        return [
            MSG_DISCHARGE_BEFORE_ADMISSION.format(
                discharged=date_text(discharged), admitted=date_text(admitted)
            )
        ]
    problems = []
    for period in department_periods(doc):
        texts = dict(department=department.name, began=date_text(period.began), ended=date_text(period.ended))
        if period.ended < period.began:
            problems.append(MSG_LEFT_BEFORE_ARRIVAL.format(**texts))
        elif period.began < admitted or period.ended > discharged:
            problems.append(
                MSG_OUTSIDE_STAY.format(
                    **texts, admitted=date_text(admitted), discharged=date_text(discharged)
                )
            )
    return problems


# --- logical control ------------------------------------------------------------------------------

XNS = {
    "h": "urn:hl7-org:v3",
    "re": "http://exslt.org/regular-expressions",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
CD = "/h:ClinicalDocument"


@dataclass(frozen=True)
class Rule:
    """One Schematron assertion: for every node the `context` selects, the `test` must hold
    (a <report>: must not hold). XPath 1 with the prefixes of `XNS`."""

    context: str
    test: str
    message: str  # the rule id and text, as the Schematron words it
    report: bool = False

    def fails(self, tree) -> bool:
        nodes = [tree] if self.context == "/" else _xpath(self.context)(tree)
        test = _xpath(self.test)
        return any(bool(test(node)) == self.report for node in nodes)


@functools.lru_cache(maxsize=1024)
def _xpath(expression: str) -> etree.XPath:
    """Compiled once: the same rules run on every document (lxml XPath objects are thread-safe)."""
    return etree.XPath(expression, namespaces=XNS)


def _any(attribute: str, values: tuple[str, ...]) -> str:
    """XPath 1 for the Schematron's `@a=['x','y']`."""
    return " or ".join(f"{attribute}='{v}'" for v in values)


def _mis_id(suffix: str) -> str:
    """«OID_медицинской_организации.100.НомерМИС.НомерЭкзМИС.<suffix>» as a regular expression."""
    return rf"re:test(@root, '^[0-2](\.([1-9][0-9]*|0))+\.100([.]([1-9][0-9]*|0))+\.{suffix}$')"


_E = "Элемент ClinicalDocument"
_NO_NULL = "не должен иметь атрибут @nullFlavor"
_DOC_KINDS = ("1.2.643.5.1.13.13.11.1522", "1.2.643.5.1.13.2.1.1.646", "1.2.643.5.1.13.13.11.1115",
              "1.2.643.5.1.13.13.99.2.195")  # fmt: skip
_CONFIDENTIALITY = ("1.2.643.5.1.13.13.99.2.285", "1.2.643.5.1.13.2.1.1.1504.9", "2.16.840.1.113883.2.35.10.9",
                    "1.2.643.5.1.13.13.11.1116")  # fmt: skip
_TS = (
    r"^[1-2][0-9]{3}$",
    r"^[1-2][0-9]{3}[0-1][0-9]$",
    r"^[1-2][0-9]{3}[0-1][0-9][0-3][0-9]$",
    r"^[1-2][0-9]{3}[0-1][0-9][0-3][0-9][0-2][0-9][0-5][0-9]\+[0-2][0-9][0-5]0$",
    r"^[1-2][0-9]{3}[0-1][0-9][0-3][0-9][0-2][0-9][0-5][0-9][0-5][0-9]\+[0-2][0-9][0-5]0$",
)
_TS_ANY = " or ".join(f"re:test(@value, '{p}')" for p in _TS)
_TS_COARSE = " or ".join(f"re:test(@value, '{p}')" for p in _TS[:2])
_TS_NODES = (
    "//h:effectiveTime[not(h:low|h:high)][not(@nullFlavor)][not(@xsi:type='IVL_TS' or @xsi:type='PIVL_TS')]"
    "|//h:birthTime[not(@nullFlavor)]|//h:time[not(@nullFlavor)]|//h:effectiveTime/h:low[not(@nullFlavor)]"
    "|//h:effectiveTime/h:high[not(@nullFlavor)]"
)
_RT = f"{CD}/h:recordTarget/h:patientRole"
_AUTHOR = f"{CD}/h:author/h:assignedAuthor"
_CUSTODIAN = f"{CD}/h:custodian/h:assignedCustodian/h:representedCustodianOrganization"
_RECIPIENT = f"{CD}/h:informationRecipient/h:intendedRecipient"
_SERVICE = f"{CD}/h:documentationOf/h:serviceEvent"
_ENCOUNTER = f"{CD}/h:componentOf/h:encompassingEncounter"

# The general header rules of 174.sch this control runs (ids and texts verbatim, «.» trimmed).
SCHEMATRON_RULES: tuple[Rule, ...] = (
    # Main01: общие сведения о СЭМД
    Rule("/", "count(/h:ClinicalDocument)=1", "Main01-1. Документ должен иметь 1 корневой элемент ClinicalDocument"),
    Rule(CD, "count(h:realmCode)=1", f"Main01-1. {_E} должен иметь 1 элемент realmCode"),
    Rule(f"{CD}/h:realmCode", "@code='RU'",
         f"Main01-1. {_E}/realmCode должен иметь значение атрибута @code равное 'RU'"),
    Rule(CD, "count(h:typeId)=1", f"Main01-2. {_E} должен иметь 1 элемент typeId"),
    Rule(f"{CD}/h:typeId", "@root='2.16.840.1.113883.1.3'",
         f"Main01-2. {_E}/typeId должен иметь значение атрибута @root равное '2.16.840.1.113883.1.3'"),
    Rule(f"{CD}/h:typeId", "@extension='POCD_MT000040'",
         f"Main01-2. {_E}/typeId должен иметь значение атрибута @extension равное 'POCD_MT000040'"),
    Rule(CD, "count(h:templateId)=1", f"Main01-3. {_E} должен иметь 1 элемент templateId"),
    Rule(f"{CD}/h:templateId", "@nullFlavor", f"Main01-3. {_E}/templateId {_NO_NULL}", report=True),
    Rule(CD, "count(h:id)=1", f"Main01-4. {_E} должен иметь 1 элемент id"),
    Rule(f"{CD}/h:id", _mis_id("51"),
         f"Main01-4. {_E}/id должен иметь синтаксически корректное значение атрибута @root, сформированное по "
         "правилу формирования идентификаторов документов, т.е. "
         "\"OID_медицинской_организации.100.НомерМИС.НомерЭкзМИС.51\""),
    Rule(f"{CD}/h:id", "@extension!=''", f"Main01-4. {_E}/id должен иметь не пустое значение атрибута @extension"),
    Rule(f"{CD}/h:id", "@nullFlavor", f"Main01-4. {_E}/id {_NO_NULL}", report=True),
    Rule(CD, "count(h:code)=1", f"Main01-5. {_E} должен иметь 1 элемент code"),
    Rule(f"{CD}/h:code", _any("@codeSystem", _DOC_KINDS),
         f"Main01-5. {_E}/code должен иметь значение атрибута @codeSystem равное '1.2.643.5.1.13.13.11.1522', "
         "'1.2.643.5.1.13.2.1.1.646', '1.2.643.5.1.13.13.11.1115' или '1.2.643.5.1.13.13.99.2.195'"),
    Rule(CD, "count(h:title)=1", f"Main01-6. {_E} должен иметь 1 элемент title"),
    Rule(f"{CD}/h:title", "normalize-space(.)!=''", f"Main01-6. {_E}/title должен иметь не пустое значение"),
    Rule(CD, "count(h:effectiveTime)=1", f"Main01-7. {_E} должен иметь 1 элемент effectiveTime"),
    Rule(f"{CD}/h:effectiveTime[not(@nullFlavor)]", "@value",
         f"Main01-7. {_E}/effectiveTime должен иметь атрибут @value"),
    Rule(CD, "count(h:confidentialityCode)=1", f"Main01-8. {_E} должен иметь 1 элемент confidentialityCode"),
    Rule(f"{CD}/h:confidentialityCode", _any("@codeSystem", _CONFIDENTIALITY),
         f"Main01-8. {_E}/confidentialityCode должен иметь значение атрибута @codeSystem равное "
         "'1.2.643.5.1.13.13.99.2.285', '1.2.643.5.1.13.2.1.1.1504.9', '2.16.840.1.113883.2.35.10.9' или "
         "'1.2.643.5.1.13.13.11.1116'"),
    Rule(f"{CD}/h:confidentialityCode", "@code!=''",
         f"Main01-8. {_E}/confidentialityCode должен иметь не пустое значение атрибута @code"),
    Rule(CD, "count(h:languageCode)=1", f"Main01-9. {_E} должен иметь 1 элемент languageCode"),
    Rule(f"{CD}/h:languageCode", "@code='ru-RU'",
         f"Main01-9. {_E}/languageCode должен иметь значение атрибута @code равное 'ru-RU'"),
    Rule(CD, "count(h:setId)=1", f"Main01-10. {_E} должен иметь 1 элемент setId"),
    Rule(f"{CD}/h:setId", _mis_id("50"),
         f"Main01-10. {_E}/setId должен иметь синтаксически корректное значение атрибута @root, сформированное "
         "по правилу формирования идентификаторов наборов версий документов, т.е. "
         "\"OID_медицинской_организации.100.НомерМИС.НомерЭкзМИС.50\""),
    Rule(f"{CD}/h:setId", "@extension!=''",
         f"Main01-10. {_E}/setId должен иметь не пустое значение атрибута @extension"),
    Rule(f"{CD}[h:id/@root][h:setId/@root]", "h:id/@root=h:setId/@root",
         "Main01-10. Значения атрибута @root элементов ClinicalDocument/id и ClinicalDocument/setId должны "
         "различаться", report=True),
    Rule(CD, "count(h:versionNumber)=1", f"Main01-11. {_E} должен иметь 1 элемент versionNumber"),
    Rule(f"{CD}/h:versionNumber", "@value!=''",
         f"Main01-11. {_E}/versionNumber должен иметь не пустое значение атрибута @value"),
    Rule(CD, "count(h:component)=1", f"Main01-12. {_E} должен иметь 1 элемент component"),
    Rule(f"{CD}/h:component", "count(h:structuredBody)=1",
         f"Main01-12. {_E}/component должен иметь 1 элемент structuredBody"),
    # Main02: пациент
    Rule(CD, "count(h:recordTarget)=1", f"Main02-1. {_E} должен иметь 1 элемент recordTarget"),
    Rule(f"{CD}/h:recordTarget", "count(h:patientRole)=1",
         f"Main02-1. {_E}/recordTarget должен иметь 1 элемент patientRole"),
    Rule(f"{_RT}/h:id[1]", _mis_id("10"),
         f"Main02-1. {_E}/recordTarget/patientRole/id[1] должен иметь синтаксически корректное значение атрибута "
         "@root, сформированное по правилу формирования идентификаторов пациентов, т.е. "
         "\"OID_медицинской_организации.100.НомерМИС.НомерЭкзМИС.10\""),
    Rule(f"{_RT}/h:id[1]", "@extension!=''",
         f"Main02-1. {_E}/recordTarget/patientRole/id[1] должен иметь не пустое значение атрибута @extension"),
    Rule(f"{_RT}/h:id[2]", "@root='1.2.643.100.3'",
         f"Main02-1. {_E}/recordTarget/patientRole/id[2] должен иметь значение атрибута @root равное "
         "'1.2.643.100.3'"),
    Rule(f"{_RT}/h:id[2]", "@extension!=''",
         f"Main02-1. {_E}/recordTarget/patientRole/id[2] должен иметь не пустое значение атрибута @extension"),
    Rule(_RT, "count(h:addr)>=1 and count(h:addr)<=2",
         f"Main02-1. {_E}/recordTarget/patientRole должен иметь 1 или 2 элемента addr"),
    Rule(_RT, "count(h:patient)=1", f"Main02-1. {_E}/recordTarget/patientRole должен иметь 1 элемент patient"),
    Rule(_RT, "count(h:providerOrganization)=1",
         f"Main02-1. {_E}/recordTarget/patientRole должен иметь 1 элемент providerOrganization"),
    Rule(f"{_RT}/h:patient", "count(h:name)=1",
         f"Main02-1. {_E}/recordTarget/patientRole/patient должен иметь 1 элемент name"),
    Rule(f"{_RT}/h:patient", "count(h:administrativeGenderCode)=1",
         f"Main02-1. {_E}/recordTarget/patientRole/patient должен иметь 1 элемент administrativeGenderCode"),
    Rule(f"{_RT}/h:patient", "count(h:birthTime)=1",
         f"Main02-1. {_E}/recordTarget/patientRole/patient должен иметь 1 элемент birthTime"),
    Rule(f"{_RT}/h:patient/h:name", "count(h:family)=1",
         f"Main02-1. {_E}/recordTarget/patientRole/patient/name должен иметь 1 элемент family"),
    Rule(f"{_RT}/h:patient/h:administrativeGenderCode",
         _any("@codeSystem", ("1.2.643.5.1.13.13.11.1040", "1.2.643.5.1.13.2.1.1.156")),
         f"Main02-1. {_E}/recordTarget/patientRole/patient/administrativeGenderCode должен иметь значение "
         "атрибута @codeSystem равное '1.2.643.5.1.13.13.11.1040' или '1.2.643.5.1.13.2.1.1.156'"),
    Rule(f"{_RT}/h:providerOrganization", "count(h:id)>=1 and count(h:id)<=2",
         f"Main02-1. {_E}/recordTarget/patientRole/providerOrganization должен иметь 1 или 2 элемента id"),
    Rule(f"{_RT}/h:providerOrganization/h:id", "@nullFlavor",
         f"Main02-1. {_E}/recordTarget/patientRole/providerOrganization/id {_NO_NULL}", report=True),
    # Main03: автор
    Rule(CD, "count(h:author)=1", f"Main03-1. {_E} должен иметь 1 элемент author"),
    Rule(f"{CD}/h:author", "count(h:time)=1", f"Main03-1. {_E}/author должен иметь 1 элемент time"),
    Rule(f"{CD}/h:author", "count(h:assignedAuthor)=1",
         f"Main03-1. {_E}/author должен иметь 1 элемент assignedAuthor"),
    Rule(_AUTHOR, "count(h:id)=2", f"Main03-1. {_E}/author/assignedAuthor должен иметь 2 элемента id"),
    Rule(_AUTHOR, "count(h:code)=1", f"Main03-1. {_E}/author/assignedAuthor должен иметь 1 элемент code"),
    Rule(_AUTHOR, "count(h:assignedPerson)=1",
         f"Main03-1. {_E}/author/assignedAuthor должен иметь 1 элемент assignedPerson"),
    Rule(_AUTHOR, "count(h:representedOrganization)<=1",
         f"Main03-1. {_E}/author/assignedAuthor должен иметь не более 1 элемента representedOrganization"),
    Rule(f"{_AUTHOR}/h:id[1]", _mis_id("70"),
         f"Main03-1. {_E}/author/assignedAuthor/id[1] должен иметь синтаксически корректное значение атрибута "
         "@root, сформированное по правилу формирования идентификаторов автора, т.е. "
         "\"OID_медицинской_организации.100.НомерМИС.НомерЭкзМИС.70\""),
    Rule(f"{_AUTHOR}/h:id[1]", "@extension!=''",
         f"Main03-1. {_E}/author/assignedAuthor/id[1] должен иметь не пустое значение атрибута @extension"),
    Rule(f"{_AUTHOR}/h:id[2]", "@root='1.2.643.100.3'",
         f"Main03-1. {_E}/author/assignedAuthor/id[2] должен иметь значение атрибута @root равное "
         "'1.2.643.100.3'"),
    Rule(f"{_AUTHOR}/h:id[2]", "@extension!=''",
         f"Main03-1. {_E}/author/assignedAuthor/id[2] должен иметь не пустое значение атрибута @extension"),
    Rule(f"{_AUTHOR}/h:assignedPerson", "count(h:name)=1",
         f"Main03-1. {_E}/author/assignedAuthor/assignedPerson должен иметь 1 элемент name"),
    Rule(f"{_AUTHOR}/h:assignedPerson/h:name", "count(h:family)=1",
         f"Main03-1. {_E}/author/assignedAuthor/assignedPerson/name должен иметь 1 элемент family"),
    Rule(f"{_AUTHOR}/h:representedOrganization/h:id", "@nullFlavor",
         f"Main03-1. {_E}/author/assignedAuthor/representedOrganization/id {_NO_NULL}", report=True),
    # Main04: владелец документа
    Rule(CD, "count(h:custodian)=1", f"Main04-1. {_E} должен иметь 1 элемент custodian"),
    Rule(f"{CD}/h:custodian", "count(h:assignedCustodian)=1",
         f"Main04-1. {_E}/custodian должен иметь 1 элемент assignedCustodian"),
    Rule(f"{CD}/h:custodian/h:assignedCustodian", "count(h:representedCustodianOrganization)=1",
         f"Main04-1. {_E}/custodian/assignedCustodian должен иметь 1 элемент representedCustodianOrganization"),
    Rule(_CUSTODIAN, "count(h:id)=1",
         f"Main04-1. {_E}/custodian/assignedCustodian/representedCustodianOrganization должен иметь 1 элемент id"),
    Rule(_CUSTODIAN, "count(h:name)=1",
         f"Main04-1. {_E}/custodian/assignedCustodian/representedCustodianOrganization должен иметь 1 элемент "
         "name"),
    Rule(_CUSTODIAN, "count(h:addr)=1",
         f"Main04-1. {_E}/custodian/assignedCustodian/representedCustodianOrganization должен иметь 1 элемент "
         "addr"),
    Rule(f"{_CUSTODIAN}/h:id", "@nullFlavor",
         f"Main04-1. {_E}/custodian/assignedCustodian/representedCustodianOrganization/id {_NO_NULL}",
         report=True),
    # Main05: получатель (Минздрав России)
    Rule(CD, "count(h:informationRecipient[h:intendedRecipient/h:receivedOrganization/h:id/@root='1.2.643.5.1.13'])=1",
         f"Main05-1. {_E} должен иметь 1 элемент informationRecipient"),
    Rule(_RECIPIENT, "count(h:receivedOrganization)=1",
         f"Main05-1. {_E}/informationRecipient/intendedRecipient должен иметь 1 элемент receivedOrganization"),
    Rule(f"{_RECIPIENT}/h:receivedOrganization", "count(h:name)=1",
         f"Main05-1. {_E}/informationRecipient/intendedRecipient/receivedOrganization должен иметь 1 элемент "
         "name"),
    # Main06: лицо, придавшее юридическую силу
    Rule(CD, "count(h:legalAuthenticator)=1", f"Main06-1. {_E} должен иметь 1 элемент legalAuthenticator"),
    Rule(f"{CD}/h:legalAuthenticator", "count(h:time)=1",
         f"Main06-1. {_E}/legalAuthenticator должен иметь 1 элемент time"),
    Rule(f"{CD}/h:legalAuthenticator", "count(h:signatureCode)=1",
         f"Main06-1. {_E}/legalAuthenticator должен иметь 1 элемент signatureCode"),
    Rule(f"{CD}/h:legalAuthenticator", "count(h:assignedEntity[not(h:id/@nullFlavor)])=1",
         f"Main06-1. {_E}/legalAuthenticator должен иметь 1 элемент assignedEntity"),
    # Main08 and У1-21: документируемое событие
    Rule(CD, "count(h:documentationOf)=1", f"У1-21. {_E} должен иметь 1 элемент documentationOf"),
    Rule(f"{CD}/h:documentationOf", "count(h:serviceEvent)=1",
         f"Main08-1. {_E}/documentationOf должен иметь 1 элемент serviceEvent"),
    Rule(_SERVICE, "count(h:effectiveTime)=1",
         f"Main08-1. {_E}/documentationOf/serviceEvent должен иметь 1 элемент effectiveTime"),
    Rule(_SERVICE, "count(h:performer)>=1",
         f"Main08-1. {_E}/documentationOf/serviceEvent должен иметь не менее 1 элемента performer"),
    Rule(f"{_SERVICE}/h:effectiveTime", "count(h:low)=1",
         f"Main08-1. {_E}/documentationOf/serviceEvent/effectiveTime должен иметь 1 элемент low"),
    Rule(f"{_SERVICE}/h:effectiveTime", "count(h:high)<=1",
         f"Main08-1. {_E}/documentationOf/serviceEvent/effectiveTime должен иметь не более 1 элемента high"),
    Rule(f"{_SERVICE}/h:effectiveTime/h:low", "@nullFlavor",
         f"Main08-1. {_E}/documentationOf/serviceEvent/effectiveTime/low {_NO_NULL}", report=True),
    Rule(f"{_SERVICE}/h:effectiveTime/h:high", "@nullFlavor",
         f"Main08-1. {_E}/documentationOf/serviceEvent/effectiveTime/high {_NO_NULL}", report=True),
    Rule(f"{_SERVICE}/h:performer", _any("@typeCode", ("PPRF", "SPRF")),
         f"Main08-1. {_E}/documentationOf/serviceEvent/performer должен иметь значение атрибута @typeCode равное "
         "'PPRF' или 'SPRF'"),
    Rule(f"{_SERVICE}/h:performer", "count(h:assignedEntity[not(h:id/@nullFlavor='NA')])=1",
         f"Main08-1. {_E}/documentationOf/serviceEvent/performer должен иметь 1 элемент assignedEntity"),
    # Main09 and У1-22: случай оказания медицинской помощи
    Rule(CD, "count(h:componentOf)<=1", f"Main09-1. {_E} должен иметь не более 1 элемента componentOf"),
    Rule(f"{CD}/h:componentOf", "count(h:encompassingEncounter)=1",
         f"Main09-1. {_E}/componentOf должен иметь 1 элемент encompassingEncounter"),
    Rule(_ENCOUNTER, "count(h:id)=1 or count(h:id)=2",
         f"Main09-1. {_E}/componentOf/encompassingEncounter должен иметь 1 или 2 элемента id"),
    Rule(_ENCOUNTER, "count(h:effectiveTime)=1",
         f"У1-22. {_E}/componentOf/encompassingEncounter должен иметь 1 элемент effectiveTime"),
    Rule(f"{_ENCOUNTER}/h:id[1]", _mis_id("15"),
         f"Main09-1. {_E}/componentOf/encompassingEncounter/id[1] должен иметь синтаксически корректное значение "
         "атрибута @root, сформированное по правилу формирования идентификаторов случаев оказания медицинской "
         "помощи, т.е. \"OID_медицинской_организации.100.НомерМИС.НомерЭкзМИС.15\""),
    Rule(f"{_ENCOUNTER}/h:id[1]", "@extension!=''",
         f"Main09-1. {_E}/componentOf/encompassingEncounter/id[1] должен иметь не пустое значение атрибута "
         "@extension"),
    Rule(f"{_ENCOUNTER}/h:id[2]", _mis_id("(16|17)"),
         f"Main09-1. {_E}/componentOf/encompassingEncounter/id[2] должен иметь синтаксически корректное значение "
         "атрибута @root, сформированное по правилу формирования идентификаторов случаев оказания медицинской "
         "помощи в стационаре или идентификаторов амбулаторных случаев оказания медицинской помощи, т.е. "
         "\"OID_медицинской_организации.100.НомерМИС.НомерЭкзМИС.16\" или "
         "\"OID_медицинской_организации.100.НомерМИС.НомерЭкзМИС.17\" соответственно"),
    Rule(f"{_ENCOUNTER}/h:effectiveTime", "count(h:low)=1",
         f"Main09-1. {_E}/componentOf/encompassingEncounter/effectiveTime должен иметь 1 элемент low"),
    Rule(f"{_ENCOUNTER}/h:effectiveTime/h:low", "@nullFlavor",
         f"Main09-1. {_E}/componentOf/encompassingEncounter/effectiveTime/low {_NO_NULL}", report=True),
    Rule(f"{_ENCOUNTER}/h:effectiveTime/h:high", "@nullFlavor",
         f"Main09-1. {_E}/componentOf/encompassingEncounter/effectiveTime/high {_NO_NULL}", report=True),
    # Core03, Core04: даты и идентификаторы во всём документе
    Rule(_TS_NODES, _TS_ANY,
         "Core03-1. Дата должна соответствовать формату \"YYYYMMDDHHmmSS+|ZZZZ\", где \"YYYY\" – год, \"ММ\" – "
         "месяц, \"HH\" - часы, \"mm\" - минуты, \"SS\" - секунды, \"+|ZZZZ\" - указатель временной зоны"),
    Rule(_TS_NODES, _TS_COARSE,
         "Core03-1. Дата в элементе должна быть указана с точностью до дня, можно указывать с точностью до минут "
         "или до секунд. Если указано хотя бы с точностью до минут, то должна быть указана временная зона",
         report=True),
    Rule("//h:id[not(@nullFlavor)]", r"re:test(@root, '^[0-2](\.([1-9][0-9]*|0))+$')",
         "Core04-1. Элемент //id должен иметь синтаксически корректное значение атрибута @root, соответствующее "
         "регулярному выражению '([0-2])([.]([1-9][0-9]*|0))+'"),
)  # fmt: skip


def _kind_rules(doc: IemkDocument) -> list[Rule]:
    """The kind's own values: its template and document type, its sections and the diagnosis."""
    kind = doc.doc_kind
    rules = [
        Rule(f"{CD}/h:templateId", f"@root='{kind.template_oid}'",
             f"У1-3. {_E}/templateId должен иметь значение атрибута @root равное '{kind.template_oid}' "
             f"(«{kind.type_name}»)"),
        Rule(f"{CD}/h:code", f"@code='{kind.type_code}'",
             f"У1-5. {_E}/code должен иметь значение атрибута @code равное '{kind.type_code}' "
             f"(«{kind.type_name}»)"),
        Rule(f"{CD}/h:code", f"@codeSystem='{KIND_SYSTEM}'",
             f"ИЭМК-1. {_E}/code должен иметь значение атрибута @codeSystem равное '{KIND_SYSTEM}' "
             "(«Виды медицинских документов»)"),
        Rule(f"{CD}/h:id", f"@extension='{doc.local_uid}'",
             f"ИЭМК-2. {_E}/id должен иметь значение атрибута @extension, равное идентификатору документа в МИС "
             f"(localUid {doc.local_uid})"),
    ]  # fmt: skip
    for rule_id, code in KIND_SECTIONS[kind.key]:
        rules.append(
            Rule(f"{CD}/h:component/h:structuredBody", f"count(h:component[h:section/h:code/@code='{code}'])=1",
                 f"{rule_id}. {_E}/component/structuredBody должен иметь 1 элемент "
                 f"component[section/code/@code='{code}']")
        )  # fmt: skip
    if kind.key in DIAGNOSIS_KINDS:
        rules.append(
            Rule(f"{CD}/h:component/h:structuredBody",
                 "count(h:component/h:section[h:code/@code='DGN']/h:entry/h:observation/"
                 f"h:value[@codeSystem='{ICD10_SYSTEM}'][@code!=''])>=1",
                 f"ИЭМК-4. {_E}/component/structuredBody должен иметь секцию DGN с основным диагнозом: "
                 f"entry/observation/value с кодом МКБ-10 (@codeSystem равное '{ICD10_SYSTEM}')")
        )  # fmt: skip
    if kind.key == "stat_epicrisis":
        rules.append(
            Rule(f"{_ENCOUNTER}/h:effectiveTime", "count(h:high)=1",
                 f"ИЭМК-5. {_E}/componentOf/encompassingEncounter/effectiveTime должен иметь 1 элемент high "
                 "(дата выписки из стационара)")
        )  # fmt: skip
    return rules


def _moment(value: str | None) -> datetime | None:
    """An HL7 TS (YYYY[MM[DD[HHMM[SS]]]][+ZZZZ]) as an aware time; no zone = the region's +0300."""
    match = re.fullmatch(
        r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?([+-])?(\d{2})?(\d{2})?", value or ""
    )
    if not match:
        return None
    year, month, day, hour, minute, second, sign, zh, zm = match.groups()
    offset = timedelta(hours=3)
    if sign:
        offset = (1 if sign == "+" else -1) * timedelta(hours=int(zh or 0), minutes=int(zm or 0))
    try:
        return datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0),
            tzinfo=timezone(offset),
        )  # fmt: skip
    except ValueError:
        return None


def _period(root, path: str) -> tuple[datetime | None, datetime | None]:
    def at(tag: str) -> datetime | None:
        values = root.xpath(f"{path}/h:effectiveTime/h:{tag}/@value", namespaces=XNS)
        return _moment(values[0]) if values else None

    return at("low"), at("high")


def _date_problems(root, doc: IemkDocument) -> list[str]:
    """Dates in order: the case and the documented service each end after they begin; the stay in
    the department of an epicrisis lies inside the hospitalisation."""
    problems = []
    case_low, case_high = _period(root, _ENCOUNTER)
    service_low, service_high = _period(root, _SERVICE)
    stay = doc.kind == "stat_epicrisis"
    if case_low and case_high and case_high < case_low:
        problems.append(
            "ИЭМК-6. Дата выписки из стационара (componentOf/encompassingEncounter/effectiveTime/high) не должна "
            "быть раньше даты поступления (effectiveTime/low)"
            if stay
            else "ИЭМК-6. Дата окончания случая (componentOf/encompassingEncounter/effectiveTime/high) не должна "
            "быть раньше даты его начала (effectiveTime/low)"
        )
    if service_low and service_high and service_high < service_low:
        problems.append(
            "ИЭМК-7. Дата выбытия из отделения (documentationOf/serviceEvent/effectiveTime/high) не должна быть "
            "раньше даты поступления в отделение (effectiveTime/low)"
            if stay
            else "ИЭМК-7. Дата окончания документируемого события (documentationOf/serviceEvent/effectiveTime/high) "
            "не должна быть раньше даты его начала (effectiveTime/low)"
        )
    known = all((case_low, case_high, service_low, service_high))
    if stay and known and (service_low < case_low or service_high > case_high):
        problems.append(
            "ИЭМК-8. Пребывание в отделении (documentationOf/serviceEvent/effectiveTime) должно быть в пределах "
            "госпитализации (componentOf/encompassingEncounter/effectiveTime)"
        )
    return problems


def _patient_problems(root, doc: IemkDocument) -> list[str]:
    """The document is about the document's patient (СНИЛС in recordTarget)."""
    found = root.xpath(f"{_RT}/h:id[@root='1.2.643.100.3']/@extension", namespaces=XNS)
    expected = format_snils(doc.patient.snils) if digits(doc.patient.snils) else None
    if expected and found and found[0] != expected:
        return [
            f"ИЭМК-9. {_E}/recordTarget/patientRole/id[@root='1.2.643.100.3'] должен иметь значение атрибута "
            f"@extension, равное СНИЛС пациента ({expected})"
        ]
    return []


def logic_check(xml: bytes, doc: IemkDocument) -> list[str]:
    """Logical control of the built document: the failed rules, each «<id>. <text>»; [] = passed."""
    try:
        root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as error:
        return [f"Документ не является корректным XML: {error.msg}"]
    tree = root.getroottree()
    problems = [rule.message for rule in (*SCHEMATRON_RULES, *_kind_rules(doc)) if rule.fails(tree)]
    problems += _date_problems(tree, doc)
    problems += _patient_problems(tree, doc)
    return list(dict.fromkeys(problems))
