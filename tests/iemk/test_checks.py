"""The controls of an ИЭМК document as the user reads them: the data check names each missing or
wrong fact in plain Russian; the logical control catches a document that does not follow the
rules and quotes the rule (РЭМД Schematron id and text, or the kind's own «ИЭМК-N»)."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from lxml import etree

from portal.clinical.identifiers import format_snils
from portal.extensions import db
from portal.iemk import cda
from portal.iemk.checks import check_document, logic_check
from tests import factories
from tests.iemk.test_cda import ADMITTED, CREATED, DISCHARGED, KINDS, make_case

NS = {"h": "urn:hl7-org:v3"}


def bad_snils(n: int) -> str:
    valid = factories.valid_snils(n)
    return valid[:9] + f"{(int(valid[9:]) + 1) % 100:02d}"


@pytest.mark.parametrize("kind", KINDS)
def test_a_ready_document_has_no_problems(app, kind):
    assert check_document(make_case(kind).doc) == []


def test_a_laboratory_protocol_needs_no_diagnosis(app):
    assert check_document(make_case("lab", data={"hemoglobin_g_l": 118}).doc) == []


WRONG_SNILS = bad_snils(7)

# (kind, make_case arguments, the one message the user reads)
DATA_PROBLEMS = [
    ("lab", dict(patient_kw={"snils": None}), "У пациента не указан СНИЛС"),
    (
        "lab",
        dict(patient_kw={"snils": WRONG_SNILS}),
        f"У пациента некорректный СНИЛС {format_snils(WRONG_SNILS)}: не сходится контрольное число",
    ),
    ("lab", dict(patient_kw={"first_name": ""}), "У пациента не указаны фамилия и имя"),
    ("lab", dict(patient_kw={"last_name": "Иванова2"}), "Недопустимые символы в ФИО пациента"),
    ("lab", dict(patient_kw={"birth_date": None}), "У пациента не указана дата рождения"),
    (
        "lab",
        dict(patient_kw={"birth_date": date(2026, 12, 1)}),
        "Дата документа (18.11.2026 10:30) раньше даты рождения пациента (01.12.2026)",
    ),
    ("lab", dict(patient_kw={"sex": ""}), "У пациента не указан пол"),
    ("lab", dict(patient_kw={"registration_address": None}), "У пациента не указан адрес регистрации"),
    ("consult", dict(mo_kw={"oid": None}), "У МО не указан OID (ФРМО)"),
    (
        "consult",
        dict(mo_kw={"oid": "1.2.643.5.1.13.13.12.2.35.x"}),
        "У МО некорректный OID (ФРМО): 1.2.643.5.1.13.13.12.2.35.x",
    ),
    ("instrumental", dict(with_doctor=False), "Не указан врач"),
    ("instrumental", dict(doctor_kw={"snils": None}), "У врача Смирнова Ольга Михайловна не указан СНИЛС"),
    (
        "instrumental",
        dict(doctor_kw={"snils": WRONG_SNILS}),
        f"У врача Смирнова Ольга Михайловна некорректный СНИЛС {format_snils(WRONG_SNILS)}: "
        "не сходится контрольное число",
    ),
    ("amb_epicrisis", dict(data={"bp": "110/70"}), "Не указан диагноз (МКБ-10)"),
    ("referral", dict(data={"target_mo": "mo-perinatal-centre"}), "Не указан диагноз (МКБ-10)"),
    ("consult", dict(data={"conclusion": "Здорова"}), "Не указан диагноз (МКБ-10)"),
    ("stat_epicrisis", dict(data={"bed_days": 5}, stay_kw={"diagnosis": None}), "Не указан диагноз (МКБ-10)"),
    (
        "consult",
        dict(data={"diagnosis": "беременность"}),
        "Некорректный код диагноза по МКБ-10: «беременность»",
    ),
    ("stat_epicrisis", dict(with_stay=False), "Не указана госпитализация (история болезни)"),
    (
        "stat_epicrisis",
        dict(stay_kw={"discharged_at": datetime(2026, 11, 9, 12, 0)}),
        "Дата выписки из стационара (09.11.2026 12:00) раньше даты поступления (10.11.2026 09:00)",
    ),
    ("lab", dict(data={}), "Нет результатов исследования"),
    ("instrumental", dict(data={"diagnosis": "Z34.8"}), "Нет результатов исследования"),
    (
        "referral",
        dict(data={"diagnosis": "O24.4", "purpose": "Консультация"}),
        "Не указано, куда направлен пациент",
    ),
]


@pytest.mark.parametrize(("kind", "kw", "message"), DATA_PROBLEMS)
def test_each_missing_or_wrong_fact_is_named(app, kind, kw, message):
    assert check_document(make_case(kind, **kw).doc) == [message]


def test_all_problems_are_named_at_once(app):
    case = make_case("consult", patient_kw={"snils": None}, mo_kw={"oid": None}, with_doctor=False, data={})
    assert check_document(case.doc) == [
        "У пациента не указан СНИЛС",
        "У МО не указан OID (ФРМО)",
        "Не указан врач",
        "Не указан диагноз (МКБ-10)",
    ]


def test_movements_out_of_order_are_named_with_the_department(app):
    case = make_case("stat_epicrisis")
    factories.make_movement(
        case.stay, department_id=case.department.id, began_at=datetime(2026, 11, 12, 8, 0),
        ended_at=datetime(2026, 11, 11, 8, 0),
    )  # fmt: skip
    factories.make_movement(
        case.stay, department_id=case.department.id, began_at=datetime(2026, 11, 9, 8, 0),
        ended_at=datetime(2026, 11, 10, 8, 0),
    )  # fmt: skip
    assert check_document(case.doc) == [
        "Пребывание в отделении «Отделение патологии беременности» (09.11.2026 08:00 — 10.11.2026 08:00) "
        "выходит за даты госпитализации (10.11.2026 09:00 — 15.11.2026 12:00)",
        "Дата выбытия из отделения «Отделение патологии беременности» (11.11.2026 08:00) раньше даты "
        "поступления в отделение (12.11.2026 08:00)",
    ]


def test_an_epicrisis_without_any_department_is_named(app):
    case = make_case("stat_epicrisis")
    case.doc.department = None
    case.stay.department = None
    case.event.department = None
    db.session.flush()
    assert check_document(case.doc) == ["Не указано отделение госпитализации"]


# --- logical control of the built document ---------------------------------------------------------


def _x(root, path: str):
    return root.xpath(path, namespaces=NS)


def _remove(path: str):
    def tamper(root):
        for node in _x(root, path):
            node.getparent().remove(node)

    return tamper


def _set(path: str, attribute: str, value: str):
    def tamper(root):
        for node in _x(root, path):
            node.set(attribute, value)

    return tamper


CD = "/h:ClinicalDocument"
ENCOUNTER = f"{CD}/h:componentOf/h:encompassingEncounter"
SERVICE = f"{CD}/h:documentationOf/h:serviceEvent"
E = "Элемент ClinicalDocument"

# (kind, how the document is spoiled, the rule the control quotes)
TAMPERED = [
    ("stat_epicrisis", _remove(f"{CD}/h:documentationOf"), f"У1-21. {E} должен иметь 1 элемент documentationOf"),
    (
        "stat_epicrisis",
        _set(f"{CD}/h:templateId", "root", "1.2.643.5.1.13.13.15.26.4"),
        f"У1-3. {E}/templateId должен иметь значение атрибута @root равное '1.2.643.5.1.13.13.15.25.4' "
        "(«Эпикриз в стационаре выписной»)",
    ),
    (
        "lab",
        _set(f"{CD}/h:code", "code", "2"),
        f"У1-5. {E}/code должен иметь значение атрибута @code равное '7' («Протокол лабораторного исследования»)",
    ),
    (
        "lab",
        _set(f"{CD}/h:code", "codeSystem", "1.2.643.5.1.13.13.99.2.592"),
        f"ИЭМК-1. {E}/code должен иметь значение атрибута @codeSystem равное '1.2.643.5.1.13.13.11.1522' "
        "(«Виды медицинских документов»)",
    ),
    (
        "consult",
        _set(f"{CD}/h:typeId", "extension", "POCD_HD000040"),
        f"Main01-2. {E}/typeId должен иметь значение атрибута @extension равное 'POCD_MT000040'",
    ),
    (
        "stat_epicrisis",
        _set(f"{ENCOUNTER}/h:effectiveTime/h:high", "value", "202611090900+0300"),
        "ИЭМК-6. Дата выписки из стационара (componentOf/encompassingEncounter/effectiveTime/high) не должна "
        "быть раньше даты поступления (effectiveTime/low)",
    ),
    (
        "stat_epicrisis",
        _set(f"{SERVICE}/h:effectiveTime/h:high", "value", "202611091200+0300"),
        "ИЭМК-7. Дата выбытия из отделения (documentationOf/serviceEvent/effectiveTime/high) не должна быть "
        "раньше даты поступления в отделение (effectiveTime/low)",
    ),
    (
        "stat_epicrisis",
        _set(f"{SERVICE}/h:effectiveTime/h:low", "value", "202611080900+0300"),
        "ИЭМК-8. Пребывание в отделении (documentationOf/serviceEvent/effectiveTime) должно быть в пределах "
        "госпитализации (componentOf/encompassingEncounter/effectiveTime)",
    ),
    ("stat_epicrisis", _remove(f"{ENCOUNTER}/h:effectiveTime/h:high"),
     f"ИЭМК-5. {E}/componentOf/encompassingEncounter/effectiveTime должен иметь 1 элемент high (дата выписки из "
     "стационара)"),
    (
        "amb_epicrisis",
        _set(f"{CD}/h:id", "extension", "00000000-0000-0000-0000-000000000000"),
        "ИЭМК-2",
    ),
    (
        "amb_epicrisis",
        lambda root: _x(root, f"{CD}/h:setId")[0].set("root", _x(root, f"{CD}/h:id/@root")[0]),
        "Main01-10. Значения атрибута @root элементов ClinicalDocument/id и ClinicalDocument/setId должны "
        "различаться",
    ),
    ("referral", _remove(f"{CD}/h:recordTarget"), f"Main02-1. {E} должен иметь 1 элемент recordTarget"),
    (
        "referral",
        _set(f"{CD}/h:recordTarget/h:patientRole/h:id[@root='1.2.643.100.3']", "extension", "000-000-000 00"),
        "ИЭМК-9",
    ),
    (
        "consult",
        _remove(f"{CD}/h:author/h:assignedAuthor/h:id[@root='1.2.643.100.3']"),
        f"Main03-1. {E}/author/assignedAuthor должен иметь 2 элемента id",
    ),
    (
        "instrumental",
        _set(f"{CD}/h:recordTarget/h:patientRole/h:patient/h:birthTime", "value", "1994"),
        "Core03-1. Дата в элементе должна быть указана с точностью до дня, можно указывать с точностью до минут "
        "или до секунд. Если указано хотя бы с точностью до минут, то должна быть указана временная зона",
    ),
    (
        "instrumental",
        _set(f"{CD}/h:effectiveTime", "value", "202611201005"),
        "Core03-1. Дата должна соответствовать формату \"YYYYMMDDHHmmSS+|ZZZZ\", где \"YYYY\" – год, \"ММ\" – "
        "месяц, \"HH\" - часы, \"mm\" - минуты, \"SS\" - секунды, \"+|ZZZZ\" - указатель временной зоны",
    ),
    (
        "instrumental",
        _remove(f"{CD}/h:component/h:structuredBody/h:component[h:section/h:code/@code='RESINFO']"),
        f"У2-5. {E}/component/structuredBody должен иметь 1 элемент component[section/code/@code='RESINFO']",
    ),
    (
        "stat_epicrisis",
        _remove(f"{CD}/h:component/h:structuredBody/h:component[h:section/h:code/@code='DGN']"),
        "ИЭМК-4",
    ),
    (
        "lab",
        _remove(f"{CD}/h:component/h:structuredBody/h:component[h:section/h:code/@code='RESLAB']"),
        f"ИЭМК-3. {E}/component/structuredBody должен иметь 1 элемент component[section/code/@code='RESLAB']",
    ),
    (
        "lab",
        _set(f"{CD}/h:custodian//h:representedCustodianOrganization/h:id", "nullFlavor", "NI"),
        f"Main04-1. {E}/custodian/assignedCustodian/representedCustodianOrganization/id не должен иметь атрибут "
        "@nullFlavor",
    ),
    ("lab", _remove(f"{CD}/h:informationRecipient"), f"Main05-1. {E} должен иметь 1 элемент informationRecipient"),
    (
        "amb_epicrisis",
        _set(f"{ENCOUNTER}/h:id[1]", "root", "1.2.643.5.1.13.13.12.2.35.1.100.1.1.99"),
        f"Main09-1. {E}/componentOf/encompassingEncounter/id[1] должен иметь синтаксически корректное значение",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "tamper", "rule"), TAMPERED)
def test_the_logical_control_quotes_the_rule_a_spoiled_document_breaks(app, kind, tamper, rule):
    case = make_case(kind)
    root = etree.fromstring(cda.build_document(case.doc, created_at=CREATED))
    tamper(root)
    spoiled = etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    problems = logic_check(spoiled, case.doc)

    assert any(p.startswith(rule) for p in problems), problems


def test_one_broken_rule_is_one_message(app):
    case = make_case("stat_epicrisis")
    root = etree.fromstring(cda.build_document(case.doc, created_at=CREATED))
    _remove(f"{CD}/h:documentationOf")(root)
    assert logic_check(etree.tostring(root), case.doc) == [
        f"У1-21. {E} должен иметь 1 элемент documentationOf"
    ]


def test_a_discharge_before_admission_in_the_data_is_refused_before_building(app):
    case = make_case("stat_epicrisis", stay_kw={"admitted_at": DISCHARGED, "discharged_at": ADMITTED})
    xml, problems = cda.validate(case.doc, created_at=CREATED)
    assert xml is None
    assert problems == [
        "Дата выписки из стационара (10.11.2026 09:00) раньше даты поступления (15.11.2026 12:00)"
    ]


def test_a_document_that_is_not_xml_is_named(app):
    case = make_case("lab")
    (problem,) = logic_check(b"<ClinicalDocument", case.doc)
    assert problem.startswith("Документ не является корректным XML")
