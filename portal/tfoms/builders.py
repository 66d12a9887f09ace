"""Packets of the ТФОМС exchange over RabbitMQ (SPEC T-4…T-7, seed 4.4.5): build, check, parse.

Wire flavour: ПроМед's upper-case TFOMSAutoInteract one (specs/tfoms/NOTES.md §1). The root element
is the packet type; order-263 packets carry HEADER (OPERATIONTYPE Insert|Update|Delete, DATA, CODE_MO,
`<X>_ID`) and BODY, left out for a Delete where the schema allows it. Attachment, dispensary
observation and plans use Karelia's ZGLV flavour (its XSDs are the only public ones). Every packet is
checked against its XSD (portal/schemas/tfoms/amqp, README there says which are copies and which are
ours) before it leaves; the official XSDs decide types and order, ours follow the NOTES table.

Values, where the sources leave a choice (kept in one place here):
* CODE_MO, MO, REFERRAL_MO, CODE_MO_TO = the МО's F003 code; header ids (`<X>_ID`, DN ID, PERS ID) =
  the row id, so ТФОМС links an Update or Delete to its Insert;
* BR_CODE and every BRANCH/BRANCH_TO/KOD_PODR = the branch's three-digit code (ТФОМС scopes it by the
  МО; NOTES' «mcod + code» is the Крым flavour's spelling); DIVISION/DIVISION_TO/DIVISION_ID/
  HOSPITALISATION_DIVISION = DV_ID, the department id (the МО's own department codes are free text,
  the official XSDs want xs:int), the МО's code goes in DV_CODE;
* STRUCTURE_BED/DIVISIONPROFIL = V002 care profile, BEDPROFIL/V020_STRUCTURE_BED = V020 bed profile,
  DLSB = the bed profile id; a hospitalisation or movement without one takes its department's first;
* SEX 10301/10302, W 1/2; POLICY_TYPE/VPOLIS F008: С→1, В→2, П/Э/К→3; POLIS_NUMBER the policy number
  or the ЕНП, digits only; POLIS_SERIAL only when it is all digits (xs:integer);
* HOSPITALISATION_TYPE/FORM_MEDICAL_CARE 0 planned / 1 emergency; PHONE «не указан» when empty;
  ANOTHER_REGION 1 when the СМО code's region (first two digits) is not the МО's;
* ATTACH_DATA (ПроМед package_PERSONATTACHDISTRICT; the XSD has no annotations): OPER_TYPE 1 Insert,
  2 Update, 3 Delete (PERS stays: the ZGLV has no object id); INFO_TYPE 1 прикрепление, 0 открепление
  (detached_on set), DATE the detachment or attachment date; SP_PRIK = Attachment.method (1 по месту
  регистрации — условное, 2 по заявлению, 0 нет данных); T_PRIK = Attachment.kind; SNILS_VR the
  district doctor's СНИЛС «XXX-XXX-XXX XX», left out without a doctor. Перекрепление to another МО
  is the old attachment's открепление plus the new МО's прикрепление, each its own packet;
* DN_IN: DN_MONTH1… spread KRAT visits over the year from the month observation began; DN_OUT needs
  ended_on and the end result; PERS_LIST carries exactly one PERS (one message per person, seed
  4.4.5.2.1), DISP the V016 code of the plan kind, DISP_MONTH the first month of the planned quarter.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from lxml import etree

from portal.clinical.identifiers import digits, format_snils
from portal.clinical.models import (
    Attachment,
    BedProfile,
    Branch,
    Department,
    DispensaryObservation,
    Hospitalisation,
    HospitalMovement,
    HospitalReferral,
    Mo,
    Patient,
    PlanPerson,
    Staff,
)
from portal.extensions import db
from portal.tfoms.ident import F008_POLICY_KIND
from portal.tfoms.models import OPERATIONS
from portal.tfoms.plans import DISP_CODES

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "tfoms" / "amqp"
XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'

# «Тип пакета» of the journal: the seed's words (4.4.3, 4.4.5).
PACKET_TYPES: dict[str, str] = {
    "BRANCH": "Филиал",
    "DIVISION": "Отделение",
    "DIVISION_LINK_STRUCTURE_BED": "Связь отделений и профилей коек",
    "AMOUNT_BED": "Количество коек в профиле",
    "FREE_BEDS_INFORMATION": "Количество свободных коек",
    "HOSPITALISATION_REFERRAL": "Направление на госпитализацию",
    "CANCEL_HOSPITALISATION_REFERRAL": "Отмена направления на госпитализацию",
    "HOSPITALISATION": "Информация о госпитализации",
    "MOTION_IN_HOSPITAL": "Движение пациента в стационаре",
    "CANCEL_HOSPITALISATION": "Отказ от госпитализации",
    "ATTACH_DATA": "Данные о прикреплении",
    "DN_IN": "Диспансерное наблюдение",
    "DN_OUT": "Снятие с диспансерного наблюдения",
    "PERS_LIST": "План профилактических мероприятий",
    "POLIS": "Изменение страховой принадлежности",
    "ANSWER": "Ответ",
    "ERROR": "Пакет с ошибками",
    "FREE_BEDS_REQUEST": "Запрос свободных мест в стационаре",
    "FREE_BEDS_ANSWER": "Свободные места в стационаре",
}

# Packet type (root element) → its schema in SCHEMA_DIR.
SCHEMA_FILES: dict[str, str] = {
    "BRANCH": "branch.xsd",
    "DIVISION": "division.xsd",
    "DIVISION_LINK_STRUCTURE_BED": "division_link_structure_bed.xsd",
    "AMOUNT_BED": "amount_bed.xsd",
    "FREE_BEDS_INFORMATION": "free_beds_information.xsd",
    "HOSPITALISATION_REFERRAL": "hospitalisation_referral.xsd",
    "CANCEL_HOSPITALISATION_REFERRAL": "cancel_hospitalisation_referral.xsd",
    "HOSPITALISATION": "hospitalisation.xsd",
    "MOTION_IN_HOSPITAL": "motion_in_hospital.xsd",
    "CANCEL_HOSPITALISATION": "cancel_hospitalisation.xsd",
    "ATTACH_DATA": "personattachdistrict.xsd",
    "DN_IN": "disp.xsd",
    "DN_OUT": "dispout.xsd",
    "PERS_LIST": "dispplan.xsd",
    "POLIS": "polis.xsd",
    "ANSWER": "answer.xsd",
    "FREE_BEDS_REQUEST": "free_beds_rpc.xsd",
    "FREE_BEDS_ANSWER": "free_beds_rpc.xsd",
}

POLICY_TYPES: dict[str, int] = {"С": 1, "В": 2, "П": 3, "Э": 3, "К": 3}  # F008 by the policy kind letter
SEX_CODES: dict[str, int] = {"M": 10301, "F": 10302}
SEX_W: dict[str, int] = {"M": 1, "F": 2}
W_SEX: dict[int, str] = {1: "M", 2: "F"}
BRANCH_CATEGORIES: dict[str, int] = {"polyclinic": 1, "hospital": 2, "ambulance": 5}
# DIVISION_TYPE (ПроМед LpuUnitType codes); 8 «стационар на дому» is inferred from the same list.
DIVISION_TYPES: dict[str, int] = {
    "round_the_clock": 1,
    "maternity": 1,
    "perinatal_centre": 1,
    "day_hospital": 9,
    "polyclinic_day_hospital": 7,
    "home_hospital": 8,
    "admission": 6,
}
REFERRAL_TYPES: dict[str, int] = {"planned": 0, "emergency": 1}
ATTACH_OPER_TYPES: dict[str, int] = {"Insert": 1, "Update": 2, "Delete": 3}
REVENUE_OMS = 12901
NO_PHONE = "не указан"


class PacketBuildError(Exception):
    """A packet could not be built: missing values (Russian) or the XSD's errors («строка N: …»)."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


class MalformedReply(ValueError):
    """A message from ТФОМС that cannot be read; the text says why, in Russian."""

    def __init__(self, message: str, errors: Iterable[str] = ()) -> None:
        self.errors = list(errors)
        super().__init__(message)


# ---------------------------------------------------------------- XML plumbing

Content = list[tuple[str, Any]]  # (tag, text value | nested Content | None = left out)

_schemas: dict[str, etree.XMLSchema] = {}
_schema_lock = threading.Lock()  # guards loading and each validation (a schema keeps one error log)
_parsers = threading.local()


def _parser() -> etree.XMLParser:
    """One hardened parser per thread (lxml parsers are not shared between threads)."""
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
        )
    return parser


def _parse(xml: bytes | str) -> etree._Element:
    data = xml.encode("utf-8") if isinstance(xml, str) else bytes(xml)
    return etree.fromstring(data.strip(), _parser())


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.replace(microsecond=0).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value).strip()


def _fill(parent: etree._Element, content: Content) -> None:
    """Children in the given order; a nested list is an element, None or "" is left out."""
    for tag, value in content:
        if isinstance(value, list):
            _fill(etree.SubElement(parent, tag), value)
        elif value is not None and _text(value) != "":
            etree.SubElement(parent, tag).text = _text(value)


def _serialise(root_tag: str, content: Content) -> bytes:
    root = etree.Element(root_tag)
    _fill(root, content)
    return XML_DECLARATION + etree.tostring(root, encoding="utf-8", pretty_print=True)


def _schema(file_name: str) -> etree.XMLSchema:
    with _schema_lock:
        schema = _schemas.get(file_name)
        if schema is None:
            schema = _schemas[file_name] = etree.XMLSchema(etree.parse(str(SCHEMA_DIR / file_name)))
    return schema


def _readable(message: str) -> str:
    return " ".join(message.split()).rstrip(".")


def validate(packet_type: str | None, xml: bytes | str) -> list[str]:
    """The packet's schema errors as «строка N: текст» (empty: valid); None picks by the root element."""
    try:
        root = _parse(xml)
    except etree.XMLSyntaxError as error:
        return [f"строка {error.lineno}: {_readable(error.msg)}"]
    kind = packet_type or root.tag
    file_name = SCHEMA_FILES.get(kind)
    if file_name is None:
        return [f"Нет схемы для пакета «{kind}»"]
    if root.tag != kind:
        return [f"строка {root.sourceline}: корневой элемент «{root.tag}», ожидался «{kind}»"]
    schema = _schema(file_name)
    with _schema_lock:
        if schema.validate(root):
            return []
        return [f"строка {e.line}: {_readable(e.message)}" for e in schema.error_log]


def flat(xml: bytes | str) -> dict[str, str]:
    """«Тег: Данные»: the packet's leaves in document order; a repeated tag becomes TAG[2], TAG[3] …"""
    try:
        root = _parse(xml)
    except etree.XMLSyntaxError as error:
        raise MalformedReply(
            f"Сообщение не является XML: строка {error.lineno}: {_readable(error.msg)}"
        ) from None
    values: dict[str, str] = {}
    seen: dict[str, int] = {}
    for element in root.iterdescendants():
        if not isinstance(element.tag, str) or any(isinstance(child.tag, str) for child in element):
            continue
        tag = etree.QName(element).localname
        seen[tag] = seen.get(tag, 0) + 1
        values[tag if seen[tag] == 1 else f"{tag}[{seen[tag]}]"] = (element.text or "").strip()
    return values


# ---------------------------------------------------------------- values of the model rows


class _Need:
    """Collects the Russian names of missing required values while a packet is assembled."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, value: Any, message: str) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            if message not in self.errors:
                self.errors.append(message)
            return None
        return value


def _code_mo(need: _Need, mo: Mo | None, message: str = "Не указан код МО ФОМС (F003)") -> str | None:
    return need((mo.f003_code or "").strip() if mo is not None else None, message)


def _oid(need: _Need, mo: Mo) -> str | None:
    return need((mo.oid or "").strip(), "Не указан OID МО (ФРМО)")


def _day(value: date | datetime | None) -> date | None:
    return value.date() if isinstance(value, datetime) else value


def _branch_code(need: _Need, department: Department | None, required: bool = True) -> str | None:
    branch = department.branch if department is not None else None
    if branch is None:
        if required and department is not None:
            need(None, f"Отделение «{department.name}» не привязано к подразделению (филиалу)")
        return None
    return need(branch.code, f"Не указан код подразделения «{branch.name}»")


def _first_bed_profile(department_id: int) -> BedProfile | None:
    """The department's first bed profile, looked up once per delivery pass."""
    from portal.exchange.delivery import memo

    return memo(
        ("tfoms_first_bed_profile", department_id),
        lambda: db.session.scalar(
            db.select(BedProfile)
            .where(BedProfile.department_id == department_id)
            .order_by(BedProfile.id)
            .limit(1)
        ),
    )


def _bed_profile(
    need: _Need,
    department: Department | None,
    *preferred: BedProfile | None,
    stay: Hospitalisation | None = None,
) -> BedProfile | None:
    """The bed profile named by the row, else the department's first (ПроМед takes the section's state).

    An admission department has no beds of its own: a stay or a movement there is reported on the
    profile the patient is admitted to — the referral's, else that of the stay's other movements."""
    for bed in preferred:
        if bed is not None:
            return bed
    if department is None:
        return None
    bed = _first_bed_profile(department.id)
    if bed is None and stay is not None and department.kind == "admission":
        bed = stay.referral.bed_profile if stay.referral is not None else None
        if bed is None:
            bed = db.session.scalar(
                db.select(BedProfile)
                .join(HospitalMovement, HospitalMovement.department_id == BedProfile.department_id)
                .where(HospitalMovement.hospitalisation_id == stay.id)
                .order_by(HospitalMovement.began_at, BedProfile.id)
                .limit(1)
            )
    return need(bed, f"У отделения «{department.name}» не указан коечный фонд (профиль коек)")


def _doctor_snils(staff: Staff | None) -> str | None:
    return format_snils(staff.snils) if staff is not None and len(digits(staff.snils)) == 11 else None


def _patient_base(need: _Need, p: Patient) -> tuple[int | None, int | None, date | None]:
    """(SEX 10301/10302, W 1/2, birth date) with their missing-value messages."""
    sex = need(SEX_CODES.get(p.sex or ""), "У пациента не указан пол")
    birth = need(p.birth_date, "У пациента не указана дата рождения")
    return sex, SEX_W.get(p.sex or ""), birth


@dataclass
class _Policy:
    type: int | None = None
    serial: str | None = None  # digits only (xs:integer), else None
    series: str | None = None  # as recorded (Karelia's SPOLIS is a string)
    number: str | None = None  # digits only
    smo: str | None = None


def _policy(need: _Need, p: Patient, required: bool) -> _Policy:
    kind = (p.policy_kind or "").strip().upper()
    policy_type = POLICY_TYPES.get(kind) or (3 if not kind and digits(p.enp) else None)
    number = digits(p.policy_number) or digits(p.enp) or None
    if policy_type is None or number is None:
        if required:
            need(None, "У пациента не указан полис ОМС")
        return _Policy()
    smo = (p.insurer_code or "").strip() or None
    if required:
        need(smo, "У пациента не указана СМО (код F002)")
    series = (p.policy_series or "").strip() or None
    return _Policy(policy_type, series if series and series.isdigit() else None, series, number, smo)


def _insured(policy: _Policy, p: Patient, sex: int | None, birth: date | None) -> Content:
    """The policy and the person, in the order the order-263 packets share."""
    return [
        ("POLICY_TYPE", policy.type),
        ("POLIS_SERIAL", policy.serial),
        ("POLIS_NUMBER", policy.number),
        ("SMO", policy.smo),
        ("FIRST_NAME", p.first_name),
        ("LAST_NAME", p.last_name),
        ("FATHER_NAME", p.middle_name),
        ("SEX", sex),
        ("BIRTHDAY", birth),
    ]


def _beds(bed: BedProfile | None) -> Content:
    """V002 profile, V020 bed profile, the division–profile link and the care type (HOSPITALISATION,
    MOTION_IN_HOSPITAL; a referral names them in another order)."""
    return [
        ("STRUCTURE_BED", bed.care_profile if bed else None),
        ("BEDPROFIL", bed.profile if bed else None),
        ("DLSB", bed.id if bed else None),
        ("CARETYPE", None),
    ]


def _another_region(p: Patient, mo: Mo) -> int:
    insurer, code = (p.insurer_code or "").strip(), (mo.f003_code or "").strip()
    return 1 if insurer[:2] and code[:2] and insurer[:2] != code[:2] else 0


def _header(
    op: str, on: date, code_mo: str | None, id_tag: str, header_id: int, *extra: tuple[str, Any]
) -> Content:
    return [("OPERATIONTYPE", op), ("DATA", on), ("CODE_MO", code_mo), *extra, (id_tag, header_id)]


def _packet(header: Content, body: Content | None, op: str) -> Content:
    """HEADER and BODY; a Delete goes without BODY (every order-263 schema allows it)."""
    return [("HEADER", header), ("BODY", None if op == "Delete" else body)]


# ---------------------------------------------------------------- stage 1: МО structure and beds


def _branch(b: Branch, op: str, need: _Need, on: date, hid: int) -> Content:
    header = _header(op, on, _code_mo(need, b.mo), "BR_ID", hid)
    if op == "Delete":
        return _packet(header, None, op)
    category = need(
        BRANCH_CATEGORIES.get(b.kind),
        f"Подразделения вида «{b.kind_label}» не передаются в ТФОМС (только стационар, поликлиника, СМП)",
    )
    closed = b.closed_on is not None and b.closed_on <= on
    body = [
        ("BR_CODE", need(b.code, "Не указан код подразделения")),
        ("NAME", b.name),
        ("DATE_ADD", b.opened_on),
        ("ADDRESS", b.address),
        ("LPU_TYPE", 4 if b.for_children is None else (1 if b.for_children else 3)),
        ("CATEGORY", category),
        ("PHONE", b.phone),
        ("ACTIVE", 0 if closed else 1),
        ("DATE_REMOVE", b.closed_on),
    ]
    return _packet(header, body, op)


def _division(d: Department, op: str, need: _Need, on: date, hid: int) -> Content:
    header = _header(op, on, _code_mo(need, d.mo), "DV_ID", hid)
    if op == "Delete":
        return _packet(header, None, op)
    division_type = need(DIVISION_TYPES.get(d.kind), f"Отделения вида «{d.kind_label}» не передаются в ТФОМС")
    branch_id = need(d.branch_id, f"Отделение «{d.name}» не привязано к подразделению (филиалу)")
    closed = d.closed_on is not None and d.closed_on <= on
    body = [
        ("DV_CODE", (d.code or "").strip() or str(d.id)),
        ("NAME", d.name),
        ("FULLNAME", f"{d.mo.name}, {d.name}"),
        ("LEVEL", 1),
        ("CODE_MZ", None),
        ("PHONE", d.phone),
        ("ADDRESS", (d.branch.address if d.branch is not None else None) or d.mo.address),
        ("BRANCH_ID", branch_id),
        ("DIVISION_TYPE", division_type),
        ("REVENUE_TYPE", REVENUE_OMS),
        ("ACTIVE", 0 if closed else 2),
        ("ID_NUMBER_CARD", None),
    ]
    return _packet(header, body, op)


def _link_structure_bed(bed: BedProfile, op: str, need: _Need, on: date, hid: int) -> Content:
    header = _header(op, on, _code_mo(need, bed.mo), "DLSB_ID", hid)
    body = [
        ("DIVISION_ID", bed.department_id),
        ("STRUCTURE_BED", need(bed.care_profile, "Не указан профиль медицинской помощи (V002)")),
        ("V020_STRUCTURE_BED", need(bed.profile, "Не указан профиль койки (V020)")),
    ]
    return _packet(header, body, op)


def _amount_bed(bed: BedProfile, op: str, need: _Need, on: date, hid: int) -> Content:
    header = _header(op, on, _code_mo(need, bed.mo), "AB_ID", hid)
    if op == "Delete":
        return _packet(header, None, op)
    body = [
        ("DATE_BEGIN", need(bed.valid_from, "Не указана дата начала действия коечного фонда")),
        ("DATE_END", bed.valid_to),
        ("FEMALE_BED", bed.beds_female),
        ("MALE_BED", bed.beds_male),
        ("BEDS_COUNT", bed.beds),
        ("REPAIR_BED", bed.beds_repair),
        ("PLANNED_BEDS_COUNT", bed.planned_beds),
        ("PLANNED_MALE_BED", None),  # the source MIS gives planned beds without sexes
        ("PLANNED_FEMALE_BED", None),
        ("DLSB", bed.id),
    ]
    return _packet(header, body, op)


def _free_beds(bed: BedProfile, op: str, need: _Need, on: date, hid: int) -> Content:
    header = _header(op, on, _code_mo(need, bed.mo), "FBI_ID", hid)
    body = [  # the schema requires BODY even for a Delete
        ("ACTUAL_DATE", bed.actual_on or on),
        ("BRANCH", _branch_code(need, bed.department, required=False)),
        ("DIVISIONPROFIL", bed.care_profile),
        ("BEDPROFIL", bed.profile),
        ("CARETYPE", None),
        ("BEDOCCUPIED", bed.occupied),
        ("BEDOCCUPIEDTODAY", bed.admitted_today),
        ("BEDCLEARTODAY", bed.discharged_today),
        ("BEDPLANNED", bed.planned_today),
        ("BEDFREE", bed.free),
        ("BEDFREEADULT", bed.free_adult),
        ("BEDFREECHILD", bed.free_child),
    ]
    return [("HEADER", header), ("BODY", body)]


# ---------------------------------------------------------------- stage 2: referrals and hospitalisations


def _referral(r: HospitalReferral, op: str, need: _Need, on: date, hid: int) -> Content:
    code_to = _code_mo(
        need, r.to_mo, "Не указан код МО ФОМС (F003) медицинской организации, куда направлен пациент"
    )
    header = _header(op, on, _code_mo(need, r.mo), "HR_ID", hid, ("CODE_MO_TO", code_to))
    if op == "Delete":
        return _packet(header, None, op)
    p = r.patient
    department = need(r.to_department, "В направлении не указано отделение госпитализации")
    bed = _bed_profile(need, department, r.bed_profile)
    doctor = need(r.doctor, "В направлении не указан направивший врач")
    doc_code = (
        need(digits(doctor.snils) or None, f"У врача «{doctor.full_name}» не указан СНИЛС")
        if doctor
        else None
    )
    sex, _, birth = _patient_base(need, p)
    policy = _policy(need, p, required=True)
    hospitalisation_date = r.planned_on or r.issued_on
    body = [
        ("REFERRAL_NUMBER", r.number),
        ("REFERRAL_DATE", r.issued_on),
        ("HOSPITALISATION_DATE", hospitalisation_date),
        (
            "HOSPITALISATION_TYPE",
            need(REFERRAL_TYPES.get(r.kind), f"Направления вида «{r.kind}» не передаются в ТФОМС"),
        ),
        ("BRANCH_TO", _branch_code(need, department)),
        ("DIVISION_TO", department.id if department else None),
        ("BEDPROFIL", bed.profile if bed else None),
        ("STRUCTURE_BED", bed.care_profile if bed else None),
        ("DLSB", bed.id if bed else None),
        ("CARETYPE", None),
        ("BRANCH_FROM", r.branch.code if r.branch is not None else None),
        ("MKB", need(r.diagnosis, "Не указан диагноз направления (МКБ-10)")),
        ("DIAGNOSIS", r.diagnosis_text),
        ("PLANNED_DATE", hospitalisation_date),
        ("DOC_CODE", doc_code),
        *_insured(policy, p, sex, birth),
        ("PHONE", (p.phone or "").strip() or NO_PHONE),
        ("PATIENT", p.id),
        ("ANOTHER_REGION", _another_region(p, r.mo)),
    ]
    return _packet(header, body, op)


def _cancel_referral(r: HospitalReferral, op: str, need: _Need, on: date, hid: int) -> Content:
    code_to = _code_mo(
        need, r.to_mo, "Не указан код МО ФОМС (F003) медицинской организации, куда направлен пациент"
    )
    header = _header(op, on, _code_mo(need, r.mo), "CHR_ID", hid, ("CODE_MO_TO", code_to))
    if op == "Delete":
        return _packet(header, None, op)
    source = need(r.cancel_source, "Не указан источник отмены направления")
    # Who cancelled: «МО госпитализации» (1) answers for the receiving МО, anyone else for the referring one.
    to_branch = r.to_department.branch if r.to_department is not None else None
    by_receiver = source == "1"
    branch = (to_branch or r.branch) if by_receiver else (r.branch or to_branch)
    body = [
        ("REFERRAL_NUMBER", r.number),
        ("DATE", r.issued_on),
        ("REFERRAL_LPU", _code_mo(need, r.mo)),
        ("BRANCH", need(branch.code if branch else None, "Не указано подразделение, отменившее направление")),
        ("REASON", need(r.cancel_reason, "Не указана причина отмены направления")),
        ("CANCEL_SOURSE", source),
        ("CANCEL_CODE", (r.to_mo if by_receiver else r.mo).f003_code),
        ("DATE_CANCEL", need(r.cancelled_on, "Не указана дата отмены направления")),
        ("CANCEL_TYPE", 0),
        ("CANCEL_DESCRIPTION", r.cancel_text),
        ("PATIENT", r.patient_id),
    ]
    return _packet(header, body, op)


def _card_number(need: _Need, h: Hospitalisation) -> str | None:
    return need(h.card_number, "Не указан номер медицинской карты (КВС)")


def _card_number_int(need: _Need, h: Hospitalisation) -> int | None:
    """MOTION_IN_HOSPITAL and CANCEL_HOSPITALISATION take the card number as xs:int: a number
    written «номер/год» goes as its number (ТФОМС links them by HOSPITALISATION_ID anyway)."""
    text = _card_number(need, h)
    if text is None:
        return None
    digits = re.match(r"\s*(\d{1,9})", text)
    return (
        int(digits.group(1))
        if digits
        else need(None, f"Номер медицинской карты «{text}» не начинается с цифр")
    )


def _hospitalisation(h: Hospitalisation, op: str, need: _Need, on: date, hid: int) -> Content:
    header = _header(op, on, _code_mo(need, h.mo), "H_ID", hid)
    if op == "Delete":
        return _packet(header, None, op)
    p, r = h.patient, h.referral
    department = need(h.department, "Не указано отделение госпитализации")
    same_department = (
        r is not None and r.bed_profile is not None and r.bed_profile.department_id == h.department_id
    )
    bed = _bed_profile(need, department, r.bed_profile if same_department else None, stay=h)
    sex, _, birth = _patient_base(need, p)
    policy = _policy(need, p, required=False)
    body = [
        ("REFERRAL_NUMBER", r.number if r else None),
        ("REFERRAL_DATE", r.issued_on if r else None),
        ("REFERRAL_MO", r.mo.f003_code if r else None),
        ("REFERRAL_BRANCH", r.branch.code if r and r.branch is not None else None),
        ("MO", _code_mo(need, h.mo)),
        ("BRANCH", _branch_code(need, department)),
        ("DIVISION", h.department_id),
        ("FORM_MEDICAL_CARE", 1 if h.emergency else 0),
        ("HOSPITALISATION_DATE", _day(h.admitted_at)),
        ("HOSPITALISATION_TIME", h.admitted_at),
        *_insured(policy, p, sex, birth),
        *_beds(bed),
        ("MED_CARD_NUMBER", _card_number(need, h)),
        ("MKB", need(h.diagnosis, "Не указан диагноз при поступлении (МКБ-10)")),
        ("DIAGNOSIS", h.diagnosis_text),
        ("PATIENT", p.id),
    ]
    return _packet(header, body, op)


def _movement(m: HospitalMovement, op: str, need: _Need, on: date, hid: int) -> Content:
    h = m.hospitalisation
    header = _header(op, on, _code_mo(need, h.mo), "MIH_ID", hid)
    if op == "Delete":
        return _packet(header, None, op)
    p, r = h.patient, h.referral
    bed = _bed_profile(need, m.department, m.bed_profile, stay=h)
    sex, _, birth = _patient_base(need, p)
    policy = _policy(need, p, required=True)
    body = [
        ("HOSPITALISATION_ID", h.id),
        ("REFERRAL_NUMBER", r.number if r is not None and len(str(r.number)) <= 6 else None),
        ("REFERRAL_DATE", r.issued_on if r is not None else None),
        ("HOSPITALISATION_TYPE", 1 if h.emergency else 0),
        ("BRANCH", _branch_code(need, m.department)),
        ("DIVISION", m.department_id),
        *_beds(bed),
        ("DATE_IN", _day(m.began_at)),
        ("DATE_OUT", _day(m.ended_at)),
        ("MED_CARD_NUMBER", _card_number_int(need, h)),
        ("HOSPITALISATION_DATE", _day(h.admitted_at)),
        *_insured(policy, p, sex, birth),
        ("PATIENT", p.id),
    ]
    return _packet(header, body, op)


def _cancel_hospitalisation(h: Hospitalisation, op: str, need: _Need, on: date, hid: int) -> Content:
    header = [("OPERATIONTYPE", op), ("CODE_MO", _code_mo(need, h.mo)), ("CH_ID", hid)]  # the XSD has no DATA
    if op == "Delete":
        return _packet(header, None, op)
    department = need(h.department, "Не указано отделение госпитализации")
    body = [
        ("DATE", _day(h.admitted_at)),
        ("HOSPITALISATION_ID", h.id),
        ("BRANCH", _branch_code(need, department)),
        ("REASON", need(h.refusal_reason, "Не указана причина отказа в госпитализации")),
        ("CANCEL_SOURSE", need(h.refusal_source, "Не указан источник отказа в госпитализации")),
        ("DATE_CANCEL", need(_day(h.refused_at), "Не указана дата отказа в госпитализации")),
        ("CANCEL_TYPE", 0),
        ("HOSPITALISATION_DIVISION", h.department_id),
        ("MED_CARD_NUMBER", _card_number_int(need, h)),
        ("PATIENT", h.patient_id),
    ]
    return _packet(header, body, op)


# ---------------------------------------------------------------- attachment, dispensary observation, plans


def _attachment(a: Attachment, op: str, need: _Need, on: date, hid: int) -> Content:
    p = a.patient
    _, w, birth = _patient_base(need, p)
    policy = _policy(need, p, required=False)
    method = need((a.method or "").strip(), "Не указан способ прикрепления")
    branch = a.department.branch if a.department is not None else None
    pers = [
        *_person(p, w, birth),
        ("SMO", policy.smo),
        ("VPOLIS", policy.type),
        ("SPOLIS", policy.series),
        ("NPOLIS", policy.number),
        ("OPER_TYPE", ATTACH_OPER_TYPES[op]),
        ("INFO_TYPE", 0 if a.detached_on else 1),
        ("DATE", a.detached_on or a.attached_on),
        ("SP_PRIK", method),
        ("T_PRIK", a.kind),
        ("KOD_PODR", branch.code if branch is not None and (branch.code or "").isdigit() else None),
        ("NUM_UCH", need(a.district, "Не указан номер участка")),
        ("TIP_UCH", None),
        ("SNILS_VR", _doctor_snils(a.doctor)),
        ("PHONE1", p.phone),
        ("PHONE2", None),
    ]
    zglv = [("VERSION", "1.0"), ("DATE", on), ("CODE_MO", _code_mo(need, a.mo)), ("ID_MO", _oid(need, a.mo))]
    return [("ZGLV", zglv), ("PERS", pers)]  # PERS even for a Delete: ZGLV does not name the attachment


def _person(p: Patient, w: int | None, birth: date | None) -> Content:
    """The person as the ZGLV-style packets (ATTACH_DATA, DN_IN, DN_OUT) open their record."""
    return [
        ("ID_PAC", p.id),
        ("FAM", p.last_name),
        ("IM", p.first_name),
        ("OT", p.middle_name),
        ("W", w),
        ("DR", birth),
    ]


def _visit_months(start: date, krat: int | None) -> list[int]:
    """DN_MONTH1…: KRAT visits spread evenly over the twelve months from the month observation began."""
    count = max(1, min(12, krat or 1))
    return [(start.month - 1 + i * 12 // count) % 12 + 1 for i in range(count)]


def _dispensary_person(need: _Need, o: DispensaryObservation) -> Content:
    p = o.patient
    _, w, birth = _patient_base(need, p)
    policy = _policy(need, p, required=True)
    return [
        *_person(p, w, birth),
        ("VPOLIS", policy.type),
        ("SPOLIS", policy.series),
        ("NPOLIS", policy.number),
    ]


def _zglv_dn(need: _Need, o: DispensaryObservation, op: str, on: date, hid: int) -> Content:
    return [("VERSION", "1.0"), ("DATA", on), ("CODE_MO", _code_mo(need, o.mo)), ("TYPE", op), ("ID", hid)]


def _dn_in(o: DispensaryObservation, op: str, need: _Need, on: date, hid: int) -> Content:
    zglv = _zglv_dn(need, o, op, on, hid)
    if op == "Delete":
        return [("ZGLV", zglv)]
    months = _visit_months(o.began_on, o.visits_per_year) if o.began_on else []
    direct = [
        *_dispensary_person(need, o),
        ("PHONE", o.patient.phone),
        ("DATE_IN", need(o.began_on, "Не указана дата постановки на диспансерное наблюдение")),
        (
            "DS_DISP",
            need((o.diagnosis or "").rstrip("."), "Не указан диагноз диспансерного наблюдения (МКБ-10)"),
        ),
        ("SNILS_VR", _doctor_snils(o.doctor)),
        ("KRAT", o.visits_per_year),
        *[(f"DN_MONTH{i}", month) for i, month in enumerate(months, start=1)],
        ("DN_PLACE", o.place),
    ]
    return [("ZGLV", zglv), ("DIRECT", direct)]


def _dn_out(o: DispensaryObservation, op: str, need: _Need, on: date, hid: int) -> Content:
    zglv = _zglv_dn(need, o, op, on, hid)
    if op == "Delete":
        return [("ZGLV", zglv)]
    direct = [
        *_dispensary_person(need, o),
        ("DATE_OUT", need(o.ended_on, "Диспансерное наблюдение не завершено: не указана дата снятия")),
        (
            "DS_DISP",
            need((o.diagnosis or "").rstrip("."), "Не указан диагноз диспансерного наблюдения (МКБ-10)"),
        ),
        ("SNILS_VR", _doctor_snils(o.doctor)),
        ("RESULT_OUT", need(o.end_result, "Не указана причина снятия с диспансерного наблюдения")),
    ]
    return [("ZGLV", zglv), ("DIRECT", direct)]


def _plan_person(pp: PlanPerson, op: str, need: _Need, on: date, hid: int) -> Content:
    plan, p = pp.plan, pp.patient
    _, w, birth = _patient_base(need, p)
    policy = _policy(need, p, required=True)
    zglv = [
        ("VERSION", "1.0"),
        ("DATA", on),
        ("YEAR", plan.year),
        ("TYPE", op),
        ("CODE_MO", _code_mo(need, plan.mo)),
        ("ID_MO", _oid(need, plan.mo)),
        ("SMO", policy.smo),
        ("ZAP", 1),
    ]
    pers = [  # PERS is required even for a Delete
        ("ID_PAC", p.id),
        ("ID", hid),
        ("FAM", p.last_name),
        ("IM", p.first_name),
        ("OT", p.middle_name),
        ("W", w),
        ("DR", birth),
        ("VPOLIS", policy.type),
        ("SPOLIS", policy.series),
        ("NPOLIS", policy.number),
        ("DISP", need(DISP_CODES.get(plan.kind), f"План вида «{plan.kind_label}» не передаётся в ТФОМС")),
        ("DISP_MONTH", (pp.quarter - 1) * 3 + 1 if pp.quarter else None),
        ("PHONE1", p.phone),
        ("PHONE2", None),
    ]
    need(pp.quarter, "Не указан квартал мероприятия плана")
    return [("ZGLV", zglv), ("PERS", pers)]


Builder = Callable[[Any, str, _Need, date, int], Content]
_BUILDERS: dict[str, tuple[type, Builder]] = {
    "BRANCH": (Branch, _branch),
    "DIVISION": (Department, _division),
    "DIVISION_LINK_STRUCTURE_BED": (BedProfile, _link_structure_bed),
    "AMOUNT_BED": (BedProfile, _amount_bed),
    "FREE_BEDS_INFORMATION": (BedProfile, _free_beds),
    "HOSPITALISATION_REFERRAL": (HospitalReferral, _referral),
    "CANCEL_HOSPITALISATION_REFERRAL": (HospitalReferral, _cancel_referral),
    "HOSPITALISATION": (Hospitalisation, _hospitalisation),
    "MOTION_IN_HOSPITAL": (HospitalMovement, _movement),
    "CANCEL_HOSPITALISATION": (Hospitalisation, _cancel_hospitalisation),
    "ATTACH_DATA": (Attachment, _attachment),
    "DN_IN": (DispensaryObservation, _dn_in),
    "DN_OUT": (DispensaryObservation, _dn_out),
    "PERS_LIST": (PlanPerson, _plan_person),
}


def _checked(packet_type: str, content: Content) -> bytes:
    xml = _serialise(packet_type, content)
    errors = validate(packet_type, xml)
    if errors:
        raise PacketBuildError(errors)
    return xml


def build(
    packet_type: str, operation: str, obj: Any, *, created_on: date, header_id: int | None = None
) -> bytes:
    """The packet of `obj` as UTF-8 XML checked against its XSD; PacketBuildError names what is wrong."""
    spec = _BUILDERS.get(packet_type)
    if spec is None:
        raise PacketBuildError([f"Неизвестный тип пакета «{packet_type}»"])
    if operation not in OPERATIONS:
        raise PacketBuildError([f"Неизвестная операция «{operation}»"])
    model, builder = spec
    if not isinstance(obj, model):
        raise TypeError(f"{packet_type} is built from {model.__name__}, not {type(obj).__name__}")
    need = _Need()
    content = builder(obj, operation, need, created_on, obj.id if header_id is None else header_id)
    if need.errors:
        raise PacketBuildError(need.errors)
    return _checked(packet_type, content)


# ---------------------------------------------------------------- answers: ANSWER and the ERROR form


@dataclass
class Reply:
    """ТФОМС's reply to one of our packets."""

    message_id: str | None  # the answered packet's message_id
    answered_type: str | None
    ok: bool
    errors: list[str]  # «Код 12: текст» (ANSWER) or the DESCRIPTION (ERROR)
    data: dict[str, str]  # «Тег: Данные» to store


def build_answer(
    answered_type: str,
    answered_message_id: str,
    errors: list[tuple[int, str]],
    *,
    queue_name: str,
    id_pac: int | None = None,
) -> bytes:
    """An ANSWER (answer.xsd): RESULT OK, or ERROR with one ERROR_RESULT per (code, text)."""
    results: Content = [("RESULT", "ERROR" if errors else "OK")]
    for code, text in errors:
        rows = [("ID_PAC", id_pac), ("RESULT_CODE", code), ("RESULT_NAME", (text or "").strip() or "Ошибка")]
        results.append(("ERROR_RESULT", rows))
    header = [("QUEUE_NAME", queue_name), ("TYPE", answered_type), ("MESSAGE_ID", answered_message_id)]
    return _checked("ANSWER", [("HEADER", header), ("BODY", [("RESULTS", results)])])


def _read(body: bytes | str, what: str) -> etree._Element:
    try:
        return _parse(body)
    except etree.XMLSyntaxError as error:
        raise MalformedReply(
            f"{what} не является XML: строка {error.lineno}: {_readable(error.msg)}"
        ) from None


def _child(element: etree._Element | None, name: str) -> etree._Element | None:
    """A child by name, any letter case (the ERROR form comes in both flavours)."""
    if element is None:
        return None
    for child in element:
        if isinstance(child.tag, str) and etree.QName(child).localname.upper() == name:
            return child
    return None


def _child_text(element: etree._Element | None, *path: str) -> str | None:
    for name in path:
        element = _child(element, name)
    text = (element.text or "").strip() if element is not None else ""
    return text or None


def _parse_answer(root: etree._Element, body: bytes | str) -> Reply:
    errors = validate("ANSWER", body)
    if errors:
        raise MalformedReply("Ответ ТФОМС не соответствует схеме answer.xsd: " + "; ".join(errors), errors)
    message_id = _child_text(root, "HEADER", "MESSAGE_ID")
    if message_id is None:
        raise MalformedReply("В ответе ТФОМС нет MESSAGE_ID")
    results = root.find("BODY/RESULTS")
    result = (results.findtext("RESULT") or "").strip().upper()
    problems = [
        f"Код {(row.findtext('RESULT_CODE') or '').strip()}: {(row.findtext('RESULT_NAME') or '').strip()}"
        for row in results.findall("ERROR_RESULT")
    ]
    ok = result == "OK"
    if not ok and not problems:
        problems = [f"ТФОМС вернул результат «{result}» без описания ошибки"]
    return Reply(message_id, _child_text(root, "HEADER", "TYPE"), ok, [] if ok else problems, flat(body))


def _parse_error(root: etree._Element) -> Reply:
    """<ERROR><HEADER><MESSAGE_ID/><DESCRIPTION/></HEADER><BODY>base64 of our packet</BODY></ERROR>."""
    header = _child(root, "HEADER")
    message_id = _child_text(header, "MESSAGE_ID")
    description = _child_text(header, "DESCRIPTION")
    original: etree._Element | None = None
    encoded = _child_text(root, "BODY")
    if encoded:
        try:
            original = _parse(base64.b64decode("".join(encoded.split())))
        except (binascii.Error, ValueError, etree.XMLSyntaxError):
            original = None
    data: dict[str, str] = {"MESSAGE_ID": message_id or "", "DESCRIPTION": description or ""}
    answered_type = None
    object_id = None
    if original is not None:
        answered_type = etree.QName(original).localname
        data["TYPE"] = answered_type
        original_header = _child(original, "HEADER")
        if original_header is None:
            original_header = _child(original, "ZGLV")
        for leaf in original_header if original_header is not None else []:
            if not isinstance(leaf.tag, str) or len(leaf):
                continue
            tag, value = etree.QName(leaf).localname, (leaf.text or "").strip()
            data.setdefault(tag, value)
            if tag.upper() == "ID" or (tag.upper().endswith("_ID") and tag.upper() != "MESSAGE_ID"):
                object_id = value or object_id
        message_id = message_id or _child_text(original_header, "MESSAGE_ID")
        data["MESSAGE_ID"] = message_id or ""
    if message_id is None and (answered_type is None or object_id is None):
        raise MalformedReply("В ответе ТФОМС нет MESSAGE_ID")
    return Reply(
        message_id, answered_type, False, [description or "ТФОМС отклонил пакет без описания ошибки"], data
    )


def parse_reply(message_type: str | None, body: bytes) -> Reply:
    """Read an ANSWER or an ERROR reply; MalformedReply says in Russian why it cannot be read.

    An ERROR without MESSAGE_ID anywhere still reads when its BODY is our packet: message_id is then
    None and data has the packet's TYPE and header (its `<X>_ID`) to find it by.
    """
    kind = (message_type or "").strip().upper()
    root = _read(body, "Ответ ТФОМС")
    root_name = etree.QName(root).localname.upper()
    if kind and kind != "ANSWER" and "ERROR" not in kind:
        raise MalformedReply(f"Сообщение типа «{message_type}» не является ответом ТФОМС")
    if kind == "ANSWER" or (not kind and root_name == "ANSWER"):
        if root_name != "ANSWER":
            raise MalformedReply(f"Ответ ТФОМС: корневой элемент «{root.tag}», ожидался «ANSWER»")
        return _parse_answer(root, body)
    if "ERROR" not in root_name:
        raise MalformedReply(f"Ответ ТФОМС: корневой элемент «{root.tag}», ожидался «ERROR»")
    return _parse_error(root)


# ---------------------------------------------------------------- POLIS: changes of insurance from ТФОМС


@dataclass
class Polis:
    """A POLIS packet (polis.xsd). polis.xsd has no SOC_STATUS nor the document's date and issuer
    (seed 4.4.5.5.2 names them), so social_status, document_issued_on and document_issuer stay None."""

    operation: str
    bdz_id: int
    enp: str | None
    insurer_code: str | None
    policy_type: int | None  # POLISTYPE as sent
    policy_kind: str | None  # С/В/П/Э/К (portal.tfoms.ident F008 mapping)
    series: str | None
    number: str | None
    begin_on: date | None
    end_on: date | None
    last_name: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    birth_date: date | None = None
    sex: str | None = None  # "F" / "M"
    document_kind: str | None = None
    document_series: str | None = None
    document_number: str | None = None
    snils: str | None = None  # 11 digits
    registration_address: str | None = None  # pADR
    residence_address: str | None = None  # uADR
    document_issued_on: date | None = None
    document_issuer: str | None = None
    social_status: str | None = None
    data: dict[str, str] = field(default_factory=dict)

    @property
    def has_person(self) -> bool:
        return self.last_name is not None


def _date_of(text: str | None) -> date | None:
    return date.fromisoformat(text[:10]) if text else None


def _int_of(text: str | None) -> int | None:
    return int(text) if text and text.lstrip("-").isdigit() else None


def parse_polis(body: bytes) -> Polis:
    root = _read(body, "Пакет POLIS")
    if root.tag != "POLIS":
        raise MalformedReply(f"Ожидался пакет POLIS, получен «{root.tag}»")
    errors = validate("POLIS", body)
    if errors:
        raise MalformedReply("Пакет POLIS не соответствует схеме polis.xsd: " + "; ".join(errors), errors)

    def text(path: str) -> str | None:
        value = (root.findtext(path) or "").strip()
        return value or None

    policy_type = _int_of(text("BODY/POLIS_DATA/POLISTYPE"))
    snils = digits(text("BODY/PERSON/SNILS"))
    return Polis(
        operation=text("HEADER/OPERATIONTYPE") or "",
        bdz_id=int(text("HEADER/BDZID") or 0),
        enp=text("BODY/POLIS_DATA/ENP"),
        insurer_code=text("BODY/POLIS_DATA/SMOCODE"),
        policy_type=policy_type,
        policy_kind=F008_POLICY_KIND.get(policy_type) if policy_type is not None else None,
        series=text("BODY/POLIS_DATA/POLISSER"),
        number=text("BODY/POLIS_DATA/POLISNUM"),
        begin_on=_date_of(text("BODY/POLIS_DATA/POLISBEGDT")),
        end_on=_date_of(text("BODY/POLIS_DATA/POLISENDDT")),
        last_name=text("BODY/PERSON/FAM"),
        first_name=text("BODY/PERSON/IM"),
        middle_name=text("BODY/PERSON/OT"),
        birth_date=_date_of(text("BODY/PERSON/DR")),
        sex=W_SEX.get(_int_of(text("BODY/PERSON/W")) or 0),
        document_kind=text("BODY/PERSON/DOCTYPE"),
        document_series=text("BODY/PERSON/DOCSER"),
        document_number=text("BODY/PERSON/DOCNUM"),
        snils=snils if len(snils) == 11 else None,
        registration_address=text("BODY/PERSON/pADR"),
        residence_address=text("BODY/PERSON/uADR"),
        data=flat(body),
    )


def build_polis(
    *,
    bdz_id: int,
    enp: str,
    smo_code: str,
    policy_type: int,
    number: str,
    begin: date,
    end: date | None = None,
    series: str | None = None,
    person: dict | None = None,
    operation: str = "Update",
) -> bytes:
    """A POLIS packet as ТФОМС sends it; `person` takes the Polis field names (last_name, sex "F"/"M" …)."""
    content: Content = []
    if person:
        snils = digits(person.get("snils"))
        content.append(
            (
                "PERSON",
                [
                    ("FAM", person.get("last_name")),
                    ("IM", person.get("first_name")),
                    ("OT", person.get("middle_name")),
                    ("DR", person.get("birth_date")),
                    ("W", SEX_W.get(person.get("sex") or "")),
                    ("DOCTYPE", person.get("document_kind")),
                    ("DOCSER", person.get("document_series")),
                    ("DOCNUM", person.get("document_number")),
                    ("SNILS", format_snils(snils) if len(snils) == 11 else None),
                    ("pADR", person.get("registration_address")),
                    ("uADR", person.get("residence_address")),
                ],
            )
        )
    content.append(
        (
            "POLIS_DATA",
            [
                ("ENP", enp),
                ("NEWPERSDATA", 1 if person else 0),
                ("PERSONPOLISID", bdz_id),
                ("SMOCODE", smo_code),
                ("POLISTYPE", policy_type),
                ("POLISSER", series),
                ("POLISNUM", number),
                ("POLISBEGDT", datetime.combine(begin, datetime.min.time())),
                ("POLISENDDT", datetime.combine(end, datetime.min.time()) if end else None),
                ("POLISEDITDT", datetime.now().replace(microsecond=0)),
            ],
        )
    )
    return _checked(
        "POLIS", [("HEADER", [("OPERATIONTYPE", operation), ("BDZID", bdz_id)]), ("BODY", content)]
    )


# ---------------------------------------------------------------- stage 3: the free places RPC


def build_free_beds_request(code_mo: str, *, target_mo: str | None, profile: int | None, on: date) -> bytes:
    """FREE_BEDS_REQUEST of МО `code_mo` (F003): one МО or all, one V020 bed profile or all."""
    return _checked(
        "FREE_BEDS_REQUEST",
        [
            ("HEADER", [("DATA", on), ("CODE_MO", code_mo)]),
            ("BODY", [("MO", target_mo), ("BEDPROFIL", profile)]),
        ],
    )


def parse_free_beds_request(body: bytes) -> dict[str, Any]:
    """The request's values: code_mo, target_mo, profile, on (for ТФОМС's side)."""
    root = _read(body, "Запрос свободных мест")
    errors = validate("FREE_BEDS_REQUEST", body)
    if errors:
        raise MalformedReply("Запрос свободных мест не соответствует схеме: " + "; ".join(errors), errors)
    return {
        "code_mo": (root.findtext("HEADER/CODE_MO") or "").strip(),
        "target_mo": (root.findtext("BODY/MO") or "").strip() or None,
        "profile": _int_of((root.findtext("BODY/BEDPROFIL") or "").strip()),
        "on": _date_of((root.findtext("HEADER/DATA") or "").strip()),
    }


_FREE_BEDS_ITEM = (  # ITEM element ← key of the item dict
    ("MO", "mo"),
    ("BRANCH", "branch"),
    ("DIVISION", "division"),
    ("DIVISION_NAME", "division_name"),
    ("BEDPROFIL", "profile"),
    ("STRUCTURE_BED", "care_profile"),
    ("BEDFREE", "free"),
    ("BEDFREEADULT", "free_adult"),
    ("BEDFREECHILD", "free_child"),
    ("ACTUAL_DATE", "actual_on"),
)


def build_free_beds_answer(items: list[dict], on: date) -> bytes:
    rows: Content = [("ITEM", [(tag, item.get(key)) for tag, key in _FREE_BEDS_ITEM]) for item in items]
    return _checked("FREE_BEDS_ANSWER", [("HEADER", [("DATA", on)]), ("BODY", rows)])


def parse_free_beds_answer(body: bytes) -> list[dict]:
    root = _read(body, "Ответ о свободных местах")
    if root.tag != "FREE_BEDS_ANSWER":
        raise MalformedReply(f"Ожидался ответ FREE_BEDS_ANSWER, получен «{root.tag}»")
    errors = validate("FREE_BEDS_ANSWER", body)
    if errors:
        raise MalformedReply("Ответ о свободных местах не соответствует схеме: " + "; ".join(errors), errors)
    numbers = {"division", "profile", "care_profile", "free", "free_adult", "free_child"}
    items = []
    for element in root.iterfind("BODY/ITEM"):
        item: dict[str, Any] = {}
        for tag, key in _FREE_BEDS_ITEM:
            value = (element.findtext(tag) or "").strip() or None
            if key in numbers:
                item[key] = _int_of(value)
            elif key == "actual_on":
                item[key] = _date_of(value)
            else:
                item[key] = value
        items.append(item)
    return items
