"""ИЭМК documents as ИЭМК reads them: the CDA of each of the six kinds passes the format control
(CDA.xsd) and the logical control, names the kind, the document, the patient and the doctor, and
carries what the kind is about; an inpatient epicrisis is one document per department."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from lxml import etree

from portal.clinical.identifiers import format_snils
from portal.clinical.models import Mo
from portal.extensions import db
from portal.iemk import cda, documents
from portal.iemk import models as m
from portal.iemk.checks import logic_check
from tests import factories

NS = {"h": "urn:hl7-org:v3"}
CREATED = datetime(2026, 11, 20, 7, 5, tzinfo=UTC)  # 10:05 in the region
ADMITTED = datetime(2026, 11, 10, 9, 0)
DISCHARGED = datetime(2026, 11, 15, 12, 0)
VISIT = datetime(2026, 11, 18, 10, 30)
PERINATAL_CENTRE = "mo-perinatal-centre"

# kind → (event kind, care conditions, event data)
EVENTS: dict[str, tuple[str, str, dict]] = {
    "stat_epicrisis": (
        "discharge",
        "1",
        {"diagnosis": "O80.0", "bed_days": 5, "result": "Выписана с ребёнком домой"},
    ),
    "amb_epicrisis": (
        "exam_repeat",
        "3",
        {"diagnosis": "Z34.8", "bp": "115/75", "complaints": "Отёки ног к вечеру", "fundal_height_cm": 30},
    ),
    "lab": ("lab_blood", "3", {"hemoglobin_g_l": 112, "esr_mm_h": 21}),
    "referral": (
        "referral_mo",
        "3",
        {
            "diagnosis": "O24.4",
            "purpose": "Консультация",
            "target_mo": PERINATAL_CENTRE,
            "reason": "Гестационный диабет",
        },
    ),
    "consult": (
        "consult_therapist",
        "3",
        {"diagnosis": "O99.0", "conclusion": "Анемия беременной лёгкой степени"},
    ),
    "instrumental": (
        "ultrasound_2",
        "3",
        {"fetuses": 1, "term_by_biometry": "20 недель 2 дня", "conclusion": "Пороков развития не выявлено."},
    ),
}
# What each kind's body must show: (section code, texts in it).
CONTENT: dict[str, tuple[str, tuple[str, ...]]] = {
    "stat_epicrisis": (
        "HOSP",
        ("Отделение патологии беременности", "10.11.2026 09:00 — 15.11.2026 12:00", "1234"),
    ),
    "amb_epicrisis": ("SERVICES", ("Повторный осмотр", "Отёки ног к вечеру", "Высота дна матки, см")),
    "lab": ("RESLAB", ("Общий анализ крови (ОАК)", "Гемоглобин, г/л", "112")),
    "referral": ("SCOPORG", ("Консультация", "ГБУЗ «Перинатальный центр»")),
    "consult": ("RESINFO", ("Анемия беременной лёгкой степени",)),
    "instrumental": ("RESINFO", ("20 недель 2 дня", "Пороков развития не выявлено.")),
}
KINDS = sorted(m.KINDS)


def make_document(event, kind: str, department=None) -> m.IemkDocument:
    """The row intake would make for the event (for an epicrisis: one department's part)."""
    department_id = department.id if department is not None else event.department_id
    doc = m.IemkDocument(
        kind=kind,
        event_id=event.id,
        part=(department_id or 0) if kind == "stat_epicrisis" else 0,
        mo_id=event.mo_id,
        patient_id=event.patient_id,
        department_id=department_id,
        doctor_id=event.doctor_id,
        event_at=event.at,
        local_uid=str(uuid.uuid4()),
    )
    db.session.add(doc)
    db.session.flush()
    return doc


def make_case(
    kind: str,
    *,
    data: dict | None = None,
    mo_kw: dict | None = None,
    patient_kw: dict | None = None,
    doctor_kw: dict | None = None,
    stay_kw: dict | None = None,
    with_doctor: bool = True,
    with_stay: bool = True,
) -> SimpleNamespace:
    """A ready document of `kind`: МО, department, doctor, pregnant patient, a stay for an epicrisis."""
    event_kind, care, default_data = EVENTS[kind]
    mo = factories.make_mo(**(mo_kw or {}))
    if db.session.scalar(db.select(Mo).where(Mo.source_id == PERINATAL_CENTRE)) is None:
        factories.make_mo(source_id=PERINATAL_CENTRE, name="ГБУЗ «Перинатальный центр»", short_name="ПЦ")
    department = factories.make_department(mo, name="Отделение патологии беременности")
    doctor = factories.make_staff(mo, **(doctor_kw or {})) if with_doctor else None
    patient = factories.make_patient(mo, **(patient_kw or {}))
    pregnancy = factories.make_pregnancy(patient)
    stay = None
    if kind == "stat_epicrisis" and with_stay:
        values = dict(admitted_at=ADMITTED, discharged_at=DISCHARGED, card_number="1234", diagnosis="O23.1")
        stay = factories.make_hospitalisation(
            patient, department, pregnancy_id=pregnancy.id, **{**values, **(stay_kw or {})}
        )
    event = factories.make_event(
        patient,
        event_kind,
        pregnancy_id=pregnancy.id,
        hospitalisation_id=stay.id if stay else None,
        department_id=department.id,
        doctor_id=doctor.id if doctor else None,
        care_conditions=care,
        at=DISCHARGED if kind == "stat_epicrisis" else VISIT,
        data=dict(default_data if data is None else data),
    )
    doc = make_document(event, kind, department if kind == "stat_epicrisis" else None)
    return SimpleNamespace(
        mo=mo, department=department, doctor=doctor, patient=patient, stay=stay, event=event, doc=doc
    )


def parse(xml: bytes):
    return etree.fromstring(xml)


def one(root, path: str):
    found = root.xpath(path, namespaces=NS)
    assert len(found) == 1, f"{path}: {len(found)} matches"
    return found[0]


def section_text(root, code: str) -> str:
    return " ".join(" ".join(one(root, f"//h:section[h:code/@code='{code}']").itertext()).split())


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_passes_both_controls_and_names_kind_document_patient_and_doctor(app, kind):
    case = make_case(kind)
    oid = case.mo.oid

    xml, problems = cda.validate(case.doc, created_at=CREATED)

    assert problems == []
    assert cda.format_check(xml) == [] and logic_check(xml, case.doc) == []
    root = parse(xml)
    dk = m.KINDS[kind]
    code = one(root, "/h:ClinicalDocument/h:code")
    assert (code.get("code"), code.get("codeSystem"), code.get("displayName")) == (
        str(dk.type_code),
        "1.2.643.5.1.13.13.11.1522",
        dk.type_name,
    )
    assert one(root, "/h:ClinicalDocument/h:title/text()") == dk.type_name
    assert one(root, "/h:ClinicalDocument/h:templateId/@root") == dk.template_oid
    assert one(root, "/h:ClinicalDocument/h:typeId/@extension") == "POCD_MT000040"
    assert one(root, f"/h:ClinicalDocument/h:id[@root='{oid}.100.1.1.51']/@extension") == case.doc.local_uid
    assert one(root, f"/h:ClinicalDocument/h:setId[@root='{oid}.100.1.1.50']/@extension").startswith(
        f"iemk-{dk.remd_kind}-{case.event.source_id}"
    )
    assert one(root, "/h:ClinicalDocument/h:versionNumber/@value") == "1"
    assert one(root, "/h:ClinicalDocument/h:effectiveTime/@value") == "202611201005+0300"
    patient = "/h:ClinicalDocument/h:recordTarget/h:patientRole"
    assert one(root, f"{patient}/h:id[@root='1.2.643.100.3']/@extension") == format_snils(case.patient.snils)
    assert one(root, f"{patient}/h:id[@root='{oid}.100.1.1.10']/@extension") == case.patient.source_id
    author = "/h:ClinicalDocument/h:author/h:assignedAuthor"
    assert one(root, f"{author}/h:id[@root='1.2.643.100.3']/@extension") == format_snils(case.doctor.snils)
    assert one(root, f"{author}/h:id[@root='{oid}.100.1.1.70']/@extension") == case.doctor.source_id
    assert one(root, f"{author}/h:assignedPerson/h:name/h:family/text()") == "Смирнова"
    legal = "/h:ClinicalDocument/h:legalAuthenticator/h:assignedEntity"
    assert one(root, f"{legal}/h:id[@root='1.2.643.100.3']/@extension") == format_snils(case.doctor.snils)
    custodian = "/h:ClinicalDocument/h:custodian/h:assignedCustodian/h:representedCustodianOrganization"
    assert one(root, f"{custodian}/h:id/@root") == oid
    assert one(
        root, "//h:participant[@typeCode='HLD']//h:id[@root='1.2.643.5.1.13.2.7.100.2']/@extension"
    ) == (case.patient.enp)
    performer = one(root, "//h:documentationOf/h:serviceEvent/h:performer")
    assert performer.get("typeCode") == ("SPRF" if kind == "consult" else "PPRF")
    section, texts = CONTENT[kind]
    shown = section_text(root, section)
    for text in texts:
        assert text in shown, f"{text!r} not in {section}: {shown}"


@pytest.mark.parametrize("kind", ["stat_epicrisis", "amb_epicrisis", "referral", "consult"])
def test_the_main_diagnosis_is_coded_in_icd10(app, kind):
    case = make_case(kind)
    root = parse(cda.build_document(case.doc, created_at=CREATED))
    value = one(root, "//h:section[h:code/@code='DGN']/h:entry/h:observation/h:value")
    assert value.get("code") == EVENTS[kind][2]["diagnosis"]
    assert value.get("codeSystem") == "1.2.643.5.1.13.13.11.1005"
    assert value.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "CD"


def test_an_epicrisis_without_movements_covers_the_whole_stay(app):
    case = make_case("stat_epicrisis")
    root = parse(cda.build_document(case.doc, created_at=CREATED))

    assert one(root, "//h:serviceEvent/h:effectiveTime/h:low/@value") == "202611100900+0300"
    assert one(root, "//h:serviceEvent/h:effectiveTime/h:high/@value") == "202611151200+0300"
    encounter = one(root, "//h:componentOf/h:encompassingEncounter")
    assert one(encounter, f"h:id[@root='{case.mo.oid}.100.1.1.16']/@extension") == "1234"  # история болезни
    assert one(encounter, "h:effectiveTime/h:low/@value") == "202611100900+0300"
    assert one(encounter, "h:effectiveTime/h:high/@value") == "202611151200+0300"
    assert one(encounter, "h:dischargeDispositionCode/@displayName") == "Выписан"
    assert "Диагноз при поступлении (МКБ-10) O23.1" in section_text(root, "DGN")


def test_a_stay_in_two_departments_gives_two_epicrises_each_with_its_own_dates(app):
    mo = factories.make_mo()
    doctor = factories.make_staff(mo)
    pathology = factories.make_department(mo, name="Отделение патологии беременности")
    delivery = factories.make_department(mo, name="Родовое отделение")
    patient = factories.make_patient(mo)
    stay = factories.make_hospitalisation(
        patient,
        pathology,
        admitted_at=ADMITTED,
        discharged_at=DISCHARGED,
        card_number="77",
        diagnosis="O23.1",
    )
    factories.make_movement(
        stay, department_id=pathology.id, began_at=ADMITTED, ended_at=datetime(2026, 11, 12, 8, 0)
    )
    factories.make_movement(
        stay,
        department_id=delivery.id,
        began_at=datetime(2026, 11, 12, 8, 0),
        ended_at=datetime(2026, 11, 12, 20, 0),
        outcome="1",
    )
    back = datetime(2026, 11, 12, 20, 0)
    factories.make_movement(stay, department_id=pathology.id, began_at=back)  # open: until the discharge
    event = factories.make_event(
        patient,
        "discharge",
        hospitalisation_id=stay.id,
        doctor_id=doctor.id,
        care_conditions="1",
        at=DISCHARGED,
        data={"diagnosis": "O80.0"},
    )
    documents.ensure_documents([event.id])
    docs = db.session.scalars(db.select(m.IemkDocument).where(m.IemkDocument.event_id == event.id)).all()
    by_department = {doc.department_id: doc for doc in docs}
    assert sorted(by_department) == sorted([pathology.id, delivery.id])

    built = {}
    for department_id, doc in by_department.items():
        xml, problems = cda.validate(doc, created_at=CREATED)
        assert problems == [], problems
        built[department_id] = parse(xml)

    ward, birth = built[pathology.id], built[delivery.id]
    assert one(ward, "//h:serviceEvent/h:effectiveTime/h:low/@value") == "202611100900+0300"
    assert one(ward, "//h:serviceEvent/h:effectiveTime/h:high/@value") == "202611151200+0300"
    assert one(birth, "//h:serviceEvent/h:effectiveTime/h:low/@value") == "202611120800+0300"
    assert one(birth, "//h:serviceEvent/h:effectiveTime/h:high/@value") == "202611122000+0300"
    for root, name in ((ward, "Отделение патологии беременности"), (birth, "Родовое отделение")):
        assert one(root, "//h:encompassingEncounter/h:effectiveTime/h:low/@value") == "202611100900+0300"
        assert one(root, "//h:encompassingEncounter/h:effectiveTime/h:high/@value") == "202611151200+0300"
        assert one(root, "//h:encompassingEncounter/h:location//h:location/h:name/text()") == name
    ward_text, birth_text = section_text(ward, "HOSP"), section_text(birth, "HOSP")
    assert "Исход пребывания в отделении Улучшение / выздоровление" in birth_text
    assert (
        "10.11.2026 09:00 — 12.11.2026 08:00" in ward_text
        and "12.11.2026 20:00 — 15.11.2026 12:00" in ward_text
    )
    assert (
        "12.11.2026 08:00 — 12.11.2026 20:00" in birth_text
        and "10.11.2026 09:00 — 12.11.2026 08:00" not in birth_text
    )
    set_ids = {one(root, "/h:ClinicalDocument/h:setId/@extension") for root in built.values()}
    assert len(set_ids) == 2


def test_the_set_id_stays_when_the_document_is_built_again(app):
    case = make_case("lab")
    first = parse(cda.build_document(case.doc, created_at=CREATED))
    again = parse(cda.build_document(case.doc, created_at=datetime(2026, 11, 21, 8, 0)))
    path = "/h:ClinicalDocument/h:setId/@extension"
    assert one(first, path) == one(again, path) == f"iemk-75-{case.event.source_id}"
    assert one(again, "/h:ClinicalDocument/h:id/@extension") == case.doc.local_uid


def test_an_outpatient_epicrisis_names_the_signed_visit_report(app):
    case = make_case("amb_epicrisis")
    db.session.add(
        m.VisitReport(
            source_id="vr-1",
            event_id=case.event.id,
            mo_id=case.mo.id,
            file_name="Протокол осмотра.pdf",
            content=b"%PDF-1.4",
            to_iemk=True,
        )
    )
    db.session.flush()
    root = parse(cda.build_document(case.doc, created_at=CREATED))
    assert "Протокол визита Протокол осмотра.pdf" in section_text(root, "SERVICES")


def test_a_referral_names_the_receiving_mo_and_the_reason(app):
    case = make_case("referral")
    root = parse(cda.build_document(case.doc, created_at=CREATED))
    assert "Направлен в ГБУЗ «Перинатальный центр»" in section_text(root, "SCOPORG")
    assert "Обоснование направления Гестационный диабет" in section_text(root, "ELU")


def test_validate_stops_at_the_data_check(app):
    case = make_case("lab", patient_kw={"snils": None})
    xml, problems = cda.validate(case.doc, created_at=CREATED)
    assert xml is None and problems == ["У пациента не указан СНИЛС"]


def test_validate_names_the_control_that_failed(app, monkeypatch):
    case = make_case("instrumental")
    good = cda.build_document(case.doc, created_at=CREATED)

    no_schema = good.replace(b"<languageCode", b"<language", 1).replace(
        b'code="ru-RU"/>', b'code="ru-RU"/>', 1
    )
    monkeypatch.setattr(cda, "build_document", lambda doc, created_at: no_schema)
    xml, problems = cda.validate(case.doc, created_at=CREATED)
    assert xml == no_schema and len(problems) == 1
    assert problems[0].startswith("Форматный контроль: Документ не соответствует схеме CDA: строка ")

    other_template = good.replace(
        b'<templateId root="1.2.643.5.1.13.13.14.6.9.4"/>', b'<templateId root="0"/>'
    )
    monkeypatch.setattr(cda, "build_document", lambda doc, created_at: other_template)
    xml, problems = cda.validate(case.doc, created_at=CREATED)
    assert problems == [
        "Логический контроль: У1-3. Элемент ClinicalDocument/templateId должен иметь значение атрибута @root "
        "равное '1.2.643.5.1.13.13.14.6.9.4' («Протокол инструментального исследования»)"
    ]
