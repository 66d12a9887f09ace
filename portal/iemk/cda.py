"""CDA documents for ИЭМК (SPEC I-7) and their controls, in the order ИЭМК runs them (seed §2):
data check, building, format control (CDA.xsd), logical control.

The six kinds are federal SEMD (ФНСИ 1.2.643.5.1.13.13.11.1520, `KINDS` in portal.iemk.models).
They are built with the ВИМИС builder's header and building blocks (portal.vimis.builders), so
recordTarget, author, custodian, informationRecipient, legalAuthenticator and the policy holder
are the same as in a ВИМИС SEMD. Where things are (XPath, namespace urn:hl7-org:v3, `<OID>` the
МО OID from ФРМО):

* kind: code/@code = type_code (codeSystem 1.2.643.5.1.13.13.11.1522, displayName = type_name,
  also the title); templateId/@root = template_oid; typeId/@extension = POCD_MT000040.
* id[@root='<OID>.100.1.1.51']/@extension = the document's local_uid (IdDocumentMis);
  setId[@root='<OID>.100.1.1.50']/@extension = "iemk-<РЭМД kind>-<event source id>[-<part>]",
  the same whenever the document is built again; versionNumber = 1.
* documentationOf/serviceEvent: the documented service and its doctor (performer SPRF for a
  consultation, PPRF otherwise); effectiveTime low (and high): for an Эпикриз стационара the
  patient's time in the document's department (movements), for the rest the event's time.
* componentOf/encompassingEncounter: the case id (<OID>.100.1.1.15), the medical record
  (…16 история болезни = the stay's card number, …17 индивидуальная карта беременной), the
  period (the whole stay and «Выписан» for an epicrisis) and the department.
* body: the kind's sections (codes of 1.2.643.5.1.13.13.99.2.197) as narrative tables —
  HOSP (stat_epicrisis), SERVICES (amb_epicrisis), RESLAB (lab), SCOPORG + ELU (referral),
  DOCINFO + RESINFO (consult, instrumental) — and DGN with the main diagnosis coded in МКБ-10
  (entry/observation/value, 1.2.643.5.1.13.13.11.1005) wherever there is one.
"""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from portal.clinical.models import MOVEMENT_OUTCOMES, PAYMENT_KINDS, Mo
from portal.extensions import db
from portal.iemk.checks import (
    ICD10,
    ICD10_SYSTEM,
    Period,
    check_document,
    department_of,
    department_periods,
    diagnosis_of,
    discharged_at,
    doctor_of,
    event_data,
    logic_check,
)
from portal.iemk.models import IemkDocument
from portal.vimis.builders import (
    DISCHARGED,
    NS,
    SECTION_DGN,
    SECTION_DOCINFO,
    SECTION_HOSP,
    SECTION_RESINFO,
    SECTION_RESLAB,
    SECTION_SERVICES,
    CdaSchemaError,
    Coded,
    Header,
    clinical_document,
    coded_element,
    data_rows,
    data_text,
    date_text,
    document_kind_code,
    element,
    encompassing_encounter,
    event_rows,
    rows_section,
    section_code,
    service_event,
    time_element,
    to_bytes,
    validate_cda,
)

TYPE_ID = "POCD_MT000040"  # РЭМД Schematron Main01-2
XSI = "http://www.w3.org/2001/XMLSchema-instance"
INPATIENT = ("1", "2")  # care conditions of a stay

SECTION_SCOPORG = section_code("SCOPORG", "Цель направления и медицинская организация, куда направлен")
SECTION_ELU = section_code("ELU", "Описание и обоснование направления")
MAIN_DISEASE = Coded(
    "1", "1.2.643.5.1.13.13.11.1077", "1.3", "Виды нозологических единиц диагноза", "Основное заболевание"
)
ICD10_VERSION = "2.10"
ICD10_NAME = (
    "Международная классификация болезней и состояний, связанных со здоровьем 10 пересмотра. Версия 4"
)

# Names of the source MIS's data keys the ВИМИС table has no label for (shown in ИЭМК documents).
EXTRA_LABELS: dict[str, str] = {
    "height_cm": "Рост, см",
    "risk_group": "Группа риска",
    "fundal_height_cm": "Высота дна матки, см",
    "fetal_heart_rate": "ЧСС плода, уд/мин",
    "crl_mm": "Копчико-теменной размер, мм",
    "nt_mm": "Толщина воротникового пространства, мм",
    "bpd_mm": "Бипариетальный размер, мм",
    "femur_mm": "Длина бедренной кости, мм",
    "placenta": "Локализация плаценты",
    "estimated_weight_g": "Предполагаемая масса плода, г",
    "presentation": "Предлежание плода",
    "amniotic_fluid": "Околоплодные воды",
    "protein": "Белок",
}


def set_id_extension(doc: IemkDocument) -> str:
    """setId/@extension: one per (event, part), whenever the document is built."""
    base = f"iemk-{doc.doc_kind.remd_kind}-{doc.event.source_id}"
    return f"{base}-{doc.part}" if doc.part else base


def _rows(data: dict, *skip: str) -> list[tuple[str, object]]:
    """The event's data as labelled rows, without the keys shown elsewhere."""
    rows = data_rows({k: v for k, v in data.items() if k not in skip})
    return [(EXTRA_LABELS.get(label, label), value) for label, value in rows]


# --- header parts that depend on the kind ------------------------------------------------------


def _documentation_of(root, doc: IemkDocument, periods: list[Period]) -> None:
    event = doc.event
    if doc.kind == "stat_epicrisis" and periods:
        low, high = periods[0].began, periods[-1].ended
    else:
        low, high = event.at, None
    performer_type = "SPRF" if doc.kind == "consult" else "PPRF"
    service_event(root, doc.mo, doctor_of(doc), low=low, high=high, performer_type=performer_type)


def _component_of(root, doc: IemkDocument) -> None:
    event = doc.event
    department = department_of(doc)
    location = department.name if department is not None else None
    stay = event.hospitalisation
    if doc.kind == "stat_epicrisis" and stay is not None:
        encompassing_encounter(
            root,
            doc.mo,
            case_id=stay.source_id,
            record=("100.1.1.16", stay.card_number or stay.source_id),
            low=stay.admitted_at,
            high=discharged_at(doc),
            disposition=DISCHARGED,
            location=location,
        )
        return
    if stay is not None and (event.care_conditions in INPATIENT or event.pregnancy is None):
        case_id, record, low = (
            stay.source_id,
            ("100.1.1.16", stay.card_number or stay.source_id),
            stay.admitted_at,
        )
    elif event.pregnancy is not None:
        case_id, record, low = event.source_id, ("100.1.1.17", event.pregnancy.source_id), event.at
    else:
        case_id, record, low = event.source_id, None, event.at
    encompassing_encounter(root, doc.mo, case_id=case_id, record=record, low=low, location=location)


# --- body -----------------------------------------------------------------------------------------


def _stay_body(body, doc: IemkDocument, data: dict, periods: list[Period]) -> None:
    stay = doc.event.hospitalisation
    department = department_of(doc)
    last = periods[-1] if periods else None
    rows: list[tuple[str, object]] = [("Отделение", department.name if department is not None else None)]
    rows += [
        ("Период пребывания в отделении", f"{date_text(p.began)} — {date_text(p.ended)}") for p in periods
    ]
    rows += [
        ("Проведено койко-дней в отделении", sum((p.ended.date() - p.began.date()).days for p in periods)),
        (
            "Исход пребывания в отделении",
            MOVEMENT_OUTCOMES.get(last.outcome) if last and last.outcome else None,
        ),
        ("Дата поступления в стационар", date_text(stay.admitted_at) if stay else None),
        ("Дата выписки из стационара", date_text(discharged_at(doc))),
        (
            "Номер медицинской карты стационарного больного",
            (stay.card_number or stay.source_id) if stay else None,
        ),
        (
            "Форма оказания медицинской помощи",
            ("Экстренная" if stay.emergency else "Плановая") if stay else None,
        ),
        ("Источник оплаты", PAYMENT_KINDS.get(stay.payment, stay.payment) if stay else None),
        *_rows(data),
    ]
    rows_section(body, SECTION_HOSP, "ПРЕБЫВАНИЕ В ОТДЕЛЕНИИ", rows)


def _visit_body(body, doc: IemkDocument, data: dict) -> None:
    from portal.iemk.documents import visit_report

    report = visit_report(doc)
    rows = [*event_rows(doc.event), *_rows(data)]
    if report is not None:
        rows.append(("Протокол визита", f"{report.file_name} (подписанный PDF во вложении)"))
    rows_section(body, SECTION_SERVICES, "СВЕДЕНИЯ О ПОСЕЩЕНИИ", rows)


def _lab_body(body, doc: IemkDocument, data: dict) -> None:
    rows_section(
        body,
        SECTION_RESLAB,
        "РЕЗУЛЬТАТЫ ЛАБОРАТОРНЫХ ИССЛЕДОВАНИЙ",
        [*event_rows(doc.event), *_rows(data)],
    )


def _referral_body(body, doc: IemkDocument, data: dict) -> None:
    target = str(data.get("target_mo") or "").strip()
    target_mo = db.session.scalar(db.select(Mo).where(Mo.source_id == target)) if target else None
    rows_section(
        body,
        SECTION_SCOPORG,
        "ЦЕЛЬ НАПРАВЛЕНИЯ И МЕДИЦИНСКАЯ ОРГАНИЗАЦИЯ, КУДА НАПРАВЛЕН",
        [
            ("Цель направления", data_text(data, "purpose")),
            ("Направлен в", target_mo.name if target_mo is not None else target or None),
            ("Дата направления", date_text(doc.event.at)),
        ],
    )
    rows_section(
        body,
        SECTION_ELU,
        "ОПИСАНИЕ И ОБОСНОВАНИЕ НАПРАВЛЕНИЯ",
        [
            ("Обоснование направления", data_text(data, "reason")),
            *event_rows(doc.event),
            *_rows(data, "purpose", "target_mo", "reason"),
        ],
    )


def _protocol_body(body, doc: IemkDocument, data: dict) -> None:
    """Консультация and инструментальное исследование: what was done, then the findings and conclusion."""
    event = doc.event
    rows = event_rows(event)
    stay = event.hospitalisation
    if doc.kind == "consult" and stay is not None and event.care_conditions in INPATIENT:
        rows.append(("Направлен из отделения", stay.department.name if stay.department else None))
    if doc.kind == "consult":
        rows_section(body, SECTION_DOCINFO, "СВЕДЕНИЯ О КОНСУЛЬТАЦИИ", [*rows, *_rows(data, "conclusion")])
        rows_section(body, SECTION_RESINFO, "ЗАКЛЮЧЕНИЕ", [("Заключение", data_text(data, "conclusion"))])
        return
    rows_section(body, SECTION_DOCINFO, "СВЕДЕНИЯ ОБ ИССЛЕДОВАНИИ", rows)
    rows_section(
        body,
        SECTION_RESINFO,
        "РЕЗУЛЬТАТЫ ИССЛЕДОВАНИЯ И ЗАКЛЮЧЕНИЕ",
        [*_rows(data, "conclusion"), ("Заключение", data_text(data, "conclusion"))],
    )


def _diagnosis_section(body, doc: IemkDocument) -> None:
    """ДИАГНОЗЫ: the main diagnosis in words and coded (МКБ-10), and the admission one of a stay."""
    code = diagnosis_of(doc)
    stay = doc.event.hospitalisation
    name = (
        stay.diagnosis_text if stay is not None and stay.diagnosis == code and stay.diagnosis_text else None
    )
    rows: list[tuple[str, object]] = []
    if doc.kind == "stat_epicrisis" and stay is not None and stay.diagnosis:
        rows.append(
            (
                "Диагноз при поступлении (МКБ-10)",
                " ".join(filter(None, (stay.diagnosis, stay.diagnosis_text))),
            )
        )
    if code:
        label = (
            "Заключительный диагноз (МКБ-10)" if doc.kind == "stat_epicrisis" else "Основной диагноз (МКБ-10)"
        )
        rows.append((label, " ".join(filter(None, (code, name)))))
    if not rows:
        return
    section = rows_section(body, SECTION_DGN, "ДИАГНОЗЫ", rows)
    if not code or not ICD10.match(code):
        return
    observation = element(element(section, "entry"), "observation", classCode="OBS", moodCode="EVN")
    coded_element(observation, "code", MAIN_DISEASE)
    time_element(observation, "effectiveTime", doc.event.at)
    attributes = {
        f"{{{XSI}}}type": "CD",
        "code": code,
        "codeSystem": ICD10_SYSTEM,
        "codeSystemVersion": ICD10_VERSION,
        "codeSystemName": ICD10_NAME,
        "displayName": name or code,
    }
    etree.SubElement(observation, f"{{{NS}}}value", attributes, nsmap={"xsi": XSI})


def _body(root, doc: IemkDocument, periods: list[Period]) -> None:
    body = element(element(root, "component"), "structuredBody")
    data = event_data(doc)
    if doc.kind == "stat_epicrisis":
        _stay_body(body, doc, data, periods)
    elif doc.kind == "amb_epicrisis":
        _visit_body(body, doc, data)
    elif doc.kind == "lab":
        _lab_body(body, doc, data)
    elif doc.kind == "referral":
        _referral_body(body, doc, data)
    else:  # consult, instrumental
        _protocol_body(body, doc, data)
    _diagnosis_section(body, doc)


# --- public API -----------------------------------------------------------------------------------


def build_document(doc: IemkDocument, *, created_at: datetime) -> bytes:
    """UTF-8 CDA R2 of the document's kind (see the module docstring); `created_at` naive = UTC.
    Writes nullFlavor where data are missing: `check_document` names those first."""
    kind = doc.doc_kind
    header = Header(
        code=document_kind_code(str(kind.type_code), kind.type_name),
        template_id=kind.template_oid,
        document_uuid=doc.local_uid,
        set_id=set_id_extension(doc),
        version=1,
        created_at=created_at,
        type_id=TYPE_ID,
    )
    root = clinical_document(header, patient=doc.patient, mo=doc.mo, doctor=doctor_of(doc))
    periods = department_periods(doc) if doc.kind == "stat_epicrisis" else []
    _documentation_of(root, doc, periods)
    _component_of(root, doc)
    _body(root, doc, periods)
    return to_bytes(root)


def format_check(xml: bytes) -> list[str]:
    """Format control: the document against CDA.xsd; [] when it matches."""
    try:
        validate_cda(xml)
    except CdaSchemaError as error:
        return [str(error)]
    return []


def validate(doc: IemkDocument, *, created_at: datetime) -> tuple[bytes | None, list[str]]:
    """Data check → build → format control → logical control, stopping at the first that fails.
    Returns (xml, []) when all pass; (None, data problems) or (xml, «Форматный контроль: …» /
    «Логический контроль: …» problems) otherwise."""
    problems = check_document(doc)
    if problems:
        return None, problems
    xml = build_document(doc, created_at=created_at)
    problems = [f"Форматный контроль: {p}" for p in format_check(xml)]
    if not problems:
        problems = [f"Логический контроль: {p}" for p in logic_check(xml, doc)]
    return xml, problems
