"""CDA documents of the nine SEMD types: what ВИМИС (and its simulator) reads from them."""

from __future__ import annotations

import re
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from lxml import etree

from portal.clinical.identifiers import format_snils
from portal.extensions import db
from portal.vimis.builders import CdaSchemaError, build_document, validate_cda
from portal.vimis.semd_types import SEMD_TYPES
from tests.vimis.helpers import make_semd_case

NS = {"h": "urn:hl7-org:v3"}
CREATED = datetime(2026, 11, 20, 7, 5, tzinfo=UTC)  # 10:05 in the region
ALL_TYPES = sorted(SEMD_TYPES)
CS_ELEMENTS = {"realmCode", "languageCode", "signatureCode"}  # CDA «CS»: the schema forbids codeSystem


def build(case, semd_type: int, version: int = 1, **kw) -> bytes:
    return build_document(
        case.event,
        semd_type,
        version=version,
        document_uuid=kw.pop("uuid", str(uuid.uuid4())),
        created_at=kw.pop("created_at", CREATED),
        **kw,
    )


def parse(xml: bytes):
    return etree.fromstring(xml)


def one(doc, path: str):
    found = doc.xpath(path, namespaces=NS)
    assert len(found) == 1, f"{path}: {len(found)} matches"
    return found[0]


@pytest.mark.parametrize("semd_type", ALL_TYPES)
def test_every_type_builds_a_schema_valid_document(app, semd_type):
    case = make_semd_case(semd_type)
    xml = build(case, semd_type)
    validate_cda(xml)  # no CdaSchemaError
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    doc = parse(xml)
    assert etree.QName(doc).localname == "ClinicalDocument" and etree.QName(doc).namespace == NS["h"]
    semd = SEMD_TYPES[semd_type]
    code = one(doc, "/h:ClinicalDocument/h:code")
    assert code.get("code") == semd.code
    expected_system = (
        "1.2.643.5.1.13.13.11.1522" if semd_type in (13, 19, 22) else "1.2.643.5.1.13.13.99.2.592"
    )
    assert code.get("codeSystem") == expected_system
    assert code.get("displayName") == one(doc, "/h:ClinicalDocument/h:title/text()")
    assert one(doc, "/h:ClinicalDocument/h:realmCode/@code") == "RU"
    assert one(doc, "/h:ClinicalDocument/h:typeId/@extension") == "POCD_HD000040"
    assert one(doc, "/h:ClinicalDocument/h:effectiveTime/@value") == "202611201005+0300"
    assert one(doc, "/h:ClinicalDocument/h:languageCode/@code") == "ru-RU"


@pytest.mark.parametrize("semd_type", ALL_TYPES)
def test_every_coded_element_names_its_code_system(app, semd_type):
    """ВИМИС ФЛК stage 2: code, codeSystem, codeSystemVersion and displayName on every coded value."""
    doc = parse(build(make_semd_case(semd_type), semd_type))
    coded = [e for e in doc.iter() if isinstance(e.tag, str) and e.get("code") is not None]
    assert len(coded) >= 5
    for element in coded:
        if etree.QName(element).localname in CS_ELEMENTS:
            continue
        for attribute in ("codeSystem", "codeSystemVersion", "displayName"):
            assert element.get(attribute), f"{etree.QName(element).localname} without {attribute}"


def test_patient_author_and_custodian_where_vimis_reads_them(app):
    case = make_semd_case(5)
    doc = parse(build(case, 5))
    role = "/h:ClinicalDocument/h:recordTarget/h:patientRole"
    snils = one(doc, f"{role}/h:id[@root='1.2.643.100.3']/@extension")
    assert snils == format_snils(case.patient.snils)
    assert re.fullmatch(r"\d{3}-\d{3}-\d{3} \d{2}", snils)
    assert one(doc, f"{role}/h:id[@root='{case.mo.oid}.100.1.1.10']/@extension") == case.patient.source_id
    assert one(doc, f"{role}/h:patient/h:name/h:family/text()") == "Иванова"
    assert doc.xpath(f"{role}/h:patient/h:name/h:given/text()", namespaces=NS) == ["Мария", "Петровна"]
    assert one(doc, f"{role}/h:patient/h:birthTime/@value") == "19940506"
    assert one(doc, f"{role}/h:patient/h:administrativeGenderCode/@displayName") == "Женский"
    assert (
        one(doc, f"{role}/h:addr[@use='H']/h:streetAddressLine/text()") == case.patient.registration_address
    )
    assert one(doc, f"{role}/h:addr[@use='H']/h:state/text()") == "35"  # region of the МО OID
    assert one(doc, f"{role}/h:addr[@use='HP']/h:streetAddressLine/text()") == case.patient.residence_address
    assert one(doc, f"{role}/h:providerOrganization/h:id/@root") == case.mo.oid
    passport = one(doc, f"{role}/h:id[@root='1.2.643.5.1.13.13.11.1011.1']")
    assert passport.get("extension") == f"1904 {case.patient.document_number}"

    author = "/h:ClinicalDocument/h:author/h:assignedAuthor"
    assert one(doc, f"{author}/h:id[@root='1.2.643.100.3']/@extension") == format_snils(case.doctor.snils)
    assert one(doc, f"{author}/h:code/@codeSystem") == "1.2.643.5.1.13.13.11.1002"
    assert one(doc, f"{author}/h:code/@displayName") == "врач-акушер-гинеколог"
    assert one(doc, f"{author}/h:assignedPerson/h:name/h:family/text()") == "Смирнова"
    custodian = "/h:ClinicalDocument/h:custodian/h:assignedCustodian/h:representedCustodianOrganization"
    assert one(doc, f"{custodian}/h:id/@root") == case.mo.oid
    assert one(doc, f"{custodian}/h:name/text()") == case.mo.name
    legal = "/h:ClinicalDocument/h:legalAuthenticator/h:assignedEntity"
    assert one(doc, f"{legal}/h:id[@root='1.2.643.100.3']/@extension") == format_snils(case.doctor.snils)


def test_enp_goes_to_the_policy_holder_participant(app):
    case = make_semd_case(3)
    doc = parse(build(case, 3))
    entity = "/h:ClinicalDocument/h:participant[@typeCode='HLD']/h:associatedEntity[@classCode='POLHOLD']"
    assert one(doc, f"{entity}/h:id[@root='1.2.643.5.1.13.2.7.100.2']/@extension") == case.patient.enp
    assert (
        one(doc, f"{entity}/h:scopingOrganization/h:id[@root='1.2.643.5.1.13.2.1.1.635']/@extension")
        == "35001"
    )

    without = make_semd_case(3, patient_kw={"enp": None, "policy_kind": "С", "policy_number": "123456"})
    assert parse(build(without, 3)).xpath("//h:participant[@typeCode='HLD']", namespaces=NS) == []


def test_versions_share_the_set_and_differ_in_id_and_number(app):
    case = make_semd_case(17)
    first = parse(build(case, 17, version=1, uuid="doc-1"))
    second = parse(build(case, 17, version=2, uuid="doc-2"))
    set_path = f"/h:ClinicalDocument/h:setId[@root='{case.mo.oid}.100.1.1.50']/@extension"
    assert one(first, set_path) == one(second, set_path) == f"17-{case.event.source_id}"
    assert one(first, f"/h:ClinicalDocument/h:id[@root='{case.mo.oid}.100.1.1.51']/@extension") == "doc-1"
    assert one(second, f"/h:ClinicalDocument/h:id[@root='{case.mo.oid}.100.1.1.51']/@extension") == "doc-2"
    assert one(first, "/h:ClinicalDocument/h:versionNumber/@value") == "1"
    assert one(second, "/h:ClinicalDocument/h:versionNumber/@value") == "2"
    other_semd = make_semd_case(17)
    assert one(parse(build(other_semd, 17)), set_path.replace(case.mo.oid, other_semd.mo.oid)) != one(
        first, set_path
    )


def test_maternity_discharge_17_carries_the_outcome_and_8_does_not(app):
    with_outcome, without = make_semd_case(17), make_semd_case(8)
    doc17, doc8 = parse(build(with_outcome, 17)), parse(build(without, 8))
    section = "//h:section[h:code/@code='LABODELI']"
    assert one(doc17, f"{section}//h:td[../h:th='Исход беременности']/text()") == "Роды (родоразрешение)"
    assert doc8.xpath(section, namespaces=NS) == []
    for doc, case in ((doc17, with_outcome), (doc8, without)):
        encounter = "/h:ClinicalDocument/h:componentOf/h:encompassingEncounter"
        assert one(doc, f"{encounter}/h:effectiveTime/h:low/@value") == case.stay.admitted_at.strftime(
            "%Y%m%d%H%M+0300"
        )
        assert one(doc, f"{encounter}/h:effectiveTime/h:high/@value") == case.stay.discharged_at.strftime(
            "%Y%m%d%H%M+0300"
        )
        assert (
            one(doc, f"{encounter}/h:id[@root='{case.mo.oid}.100.1.1.16']/@extension") == case.stay.source_id
        )
        assert one(doc, f"{encounter}/h:dischargeDispositionCode/@displayName") == "Выписан"
        card = one(doc, "//h:section[h:code/@code='vimisMedicalCard']/h:entry/h:observation/h:code")
        assert card.get("code") == "53"  # медицинская карта стационарного больного
        assert one(doc, "//h:section[h:code/@code='HOSP']//h:td[../h:th='Срок беременности']/text()")


def test_outpatient_documents_cite_the_pregnancy_card_and_gestational_age(app):
    case = make_semd_case(2)
    doc = parse(build(case, 2))
    observation = one(doc, "//h:section[h:code/@code='vimisMedicalCard']/h:entry/h:observation")
    assert one(observation, "h:code/@code") == "51"
    assert one(observation, f"h:id[@root='{case.mo.oid}.100.1.1.59']/@extension") == case.pregnancy.source_id
    term = one(doc, "//h:td[../h:th='Срок беременности']/text()")
    assert term == case.event.gestational_age() and "недел" in term
    assert one(doc, "//h:td[../h:th='Отделение']/text()") == "Р/д Обсервация"
    assert one(doc, "//h:td[../h:th='Заключение']/text()") == "Беременность 12 недель"
    assert one(doc, "//h:td[../h:th='Условия оказания медицинской помощи']/text()") == "3 — Амбулаторно"


def test_kas_notice_22_carries_case_number_and_register_status(app):
    case = make_semd_case(22)
    doc = parse(build(case, 22, kas_case_number="26-35-00012"))
    code = one(doc, "/h:ClinicalDocument/h:code")
    assert (code.get("code"), code.get("codeSystem")) == ("339", "1.2.643.5.1.13.13.11.1522")
    assert one(doc, "//h:td[../h:th='Уникальный идентификатор случая КАС в ВИМИС']/text()") == "26-35-00012"
    assert one(doc, "//h:td[../h:th='Статус случая в регистре КАС']/text()") == "Поставить на контроль"
    case.event.data = {
        **case.event.data,
        "kas_case_number": "26-35-00013",
        "kas_status": "remove_from_control",
    }
    db.session.commit()
    doc = parse(build(case, 22))
    assert one(doc, "//h:td[../h:th='Уникальный идентификатор случая КАС в ВИМИС']/text()") == "26-35-00013"
    assert one(doc, "//h:td[../h:th='Статус случая в регистре КАС']/text()") == "Снять с контроля"


def test_federal_death_certificates_use_their_kind_and_template(app):
    for semd_type, kind, template in (
        (13, "13", "1.2.643.5.1.13.13.15.35.5"),
        (19, "14", "1.2.643.5.1.13.13.15.37.1"),
    ):
        doc = parse(build(make_semd_case(semd_type), semd_type))
        assert one(doc, "/h:ClinicalDocument/h:code/@code") == kind
        assert one(doc, "/h:ClinicalDocument/h:templateId/@root") == template
        assert doc.xpath("//h:section[h:code/@code='vimisMedicalCard']", namespaces=NS) == []


def test_missing_data_still_gives_a_schema_valid_document(app):
    """Checks run first, but the builder never crashes: it writes nullFlavor instead."""
    case = make_semd_case(
        8,
        mo_kw={"oid": None, "address": None},
        with_doctor=False,
        with_stay=False,
        with_pregnancy=False,
        patient_kw={
            "snils": None,
            "birth_date": None,
            "registration_address": None,
            "residence_address": None,
            "phone": None,
            "enp": None,
            "policy_number": None,
            "document_kind": None,
            "middle_name": None,
        },
        data={"weird\x01key": "value\x02", "nested": {"a": [1, True]}},
    )
    xml = build(case, 8)
    validate_cda(xml)
    doc = parse(xml)
    assert one(doc, "/h:ClinicalDocument/h:id/@nullFlavor") == "NI"
    assert one(doc, "//h:patientRole/h:patient/h:birthTime/@nullFlavor") == "NI"
    assert one(doc, "//h:custodian//h:representedCustodianOrganization/h:id/@nullFlavor") == "NI"


def test_broken_document_is_refused_with_the_schema_message(app):
    doc = parse(build(make_semd_case(1), 1))
    doc.remove(one(doc, "/h:ClinicalDocument/h:recordTarget"))
    broken = etree.tostring(doc, xml_declaration=True, encoding="UTF-8")
    with pytest.raises(CdaSchemaError) as error:
        validate_cda(broken)
    message = str(error.value)
    assert re.match(r"Документ не соответствует схеме CDA: строка \d+: ", message)
    assert (
        "Element 'author': This element is not expected. Expected is" in message and "recordTarget" in message
    )
    assert "{urn:hl7-org:v3}" not in message
    assert isinstance(error.value, ValueError)

    with pytest.raises(CdaSchemaError, match=r"^Документ не соответствует схеме CDA: строка 1: "):
        validate_cda(b"not xml at all")


def test_validation_is_thread_safe_and_fast(app):
    case = make_semd_case(17)
    good = build(case, 17)
    doc = parse(good)
    one(doc, "/h:ClinicalDocument/h:versionNumber").set("value", "first")
    bad = etree.tostring(doc, encoding="UTF-8")
    outcomes: list[tuple[str, bool]] = []

    def worker():
        for _ in range(30):
            for label, xml in (("good", good), ("bad", bad)):
                try:
                    validate_cda(xml)
                    outcomes.append((label, True))
                except CdaSchemaError as error:
                    assert "versionNumber" in str(error)
                    outcomes.append((label, False))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 240 and all(ok == (label == "good") for label, ok in outcomes)

    started = time.perf_counter()
    for _ in range(100):
        validate_cda(build(case, 17))
    assert time.perf_counter() - started < 2.0  # ≥100 documents/s with room for signing and sending
