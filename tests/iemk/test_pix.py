"""The ИЭМК patient index as the portal meets it: the PixService client against the stand-in,
SOAP 1.1 over real HTTP on a simulators host of the test's own."""

from __future__ import annotations

import threading
from datetime import date, datetime
from pathlib import Path

import pytest
import requests
from lxml import etree
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from portal.admin.services import set_setting
from portal.exchange.delivery import DataError, TransientError
from portal.iemk import pix
from portal.iemk.pix import PixError
from simulators import start_simulators
from tests import factories

WSDL = Path(pix.__file__).resolve().parent.parent / "schemas" / "iemk" / "PixService.xml"
XS = "http://www.w3.org/2001/XMLSchema"
DTO = "http://schemas.datacontract.org/2004/07/EMKService.Data.Dto"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"


@pytest.fixture
def sims(app):
    server, base_url = start_simulators(0)
    yield base_url
    server.shutdown()
    server.server_close()


@pytest.fixture
def mo(app, sims):
    mo = factories.make_mo()
    set_setting("iemk.pix_endpoint", f"{sims}/iemk/pix", mo.id)
    set_setting("iemk.timeout", "5")
    set_setting("iemk.guid", "0b7d4c1e-5a3e-4a5b-9d0e-1c2f3a4b5c6d", mo.id)
    return mo


def _index(sims: str) -> list[dict]:
    return requests.get(f"{sims}/iemk/_patients", timeout=5).json()


def _wsdl_order(type_name: str) -> list[str]:
    """Element order of a PatientDto-namespace complex type, read from the WSDL itself."""
    tree = etree.parse(str(WSDL))
    node = tree.find(f".//{{{XS}}}schema[@targetNamespace='{DTO}']/{{{XS}}}complexType[@name='{type_name}']")
    return [element.get("name") for element in node.iter(f"{{{XS}}}element")]


def test_registered_patient_is_found_by_global_id_with_documents_and_addresses(mo, sims):
    patient = factories.make_patient(mo, snils="11223344595", policy_kind="Э", insurer_code="35001")

    global_id = pix.ensure_registered(patient)

    assert global_id and patient.iemk_global_id == global_id
    assert pix.ensure_registered(patient) == global_id  # known: no second AddPatient
    assert [row["idLPU"] for row in _index(sims)] == [mo.oid]
    found = pix.get_by_global_id(mo, global_id)
    assert found["IdGlobal"] == global_id
    assert (found["FamilyName"], found["GivenName"], found["MiddleName"]) == ("Иванова", "Мария", "Петровна")
    assert found["BirthDate"].date() == date(1994, 5, 6) and found["Sex"] == 2
    assert found["IdPatientMIS"] == patient.source_id
    documents = {d["IdDocumentType"]: d for d in found["Documents"]["DocumentDto"]}
    assert documents[14]["DocS"] == "1904" and documents[14]["DocN"] == patient.document_number
    assert documents[14]["DocumentName"] == "Паспорт гражданина РФ"
    assert documents[223]["DocN"] == "11223344595" and documents[223]["ProviderName"] == "ПФР"
    assert documents[228]["DocN"] == patient.policy_number and documents[228]["IdProvider"] == "35001"
    addresses = found["Addresses"]["AddressDto"]
    assert [(a["IdAddressType"], a["StringAddress"]) for a in addresses] == [
        (1, "г. Вологда, ул. Мира, д. 5, кв. 1"),
        (2, "г. Вологда, ул. Мира, д. 5, кв. 1"),
    ]
    assert pix.get_by_global_id(mo, "no-such-id") is None


def test_update_changes_the_index_and_keeps_the_global_id(mo, sims):
    patient = factories.make_patient(mo)
    global_id = pix.ensure_registered(patient)

    patient.last_name, patient.residence_address = "Петрова", "г. Череповец, ул. Ленина, д. 3"
    pix.update_patient(patient)

    found = pix.get_by_global_id(mo, global_id)
    assert found["FamilyName"] == "Петрова" and found["IdGlobal"] == global_id
    assert found["Addresses"]["AddressDto"][1]["StringAddress"] == "г. Череповец, ул. Ленина, д. 3"
    assert [row["FamilyName"] for row in _index(sims)] == ["Петрова"]


def test_update_of_an_unregistered_patient_is_refused(mo):
    patient = factories.make_patient(mo)

    with pytest.raises(PixError) as refused:
        pix.update_patient(patient)

    assert str(refused.value).startswith(
        f"ИЭМК отказал: Пациент с IdPatientMIS {patient.source_id} не найден"
    )
    assert "(поле IdPatientMIS, код 3)" in str(refused.value)


def test_find_patients_by_template(mo):
    first = factories.make_patient(mo, last_name="Соколова", birth_date=date(1990, 1, 2))
    second = factories.make_patient(mo, last_name="Соколова", birth_date=date(1991, 3, 4))
    factories.make_patient(mo, last_name="Орлова")
    for patient in (first, second):
        pix.ensure_registered(patient)

    by_name = pix.find_patients(mo, {"FamilyName": "соколова"})
    by_name_and_birth = pix.find_patients(mo, {"FamilyName": "Соколова", "BirthDate": datetime(1991, 3, 4)})
    by_snils = pix.find_patients(
        mo, {"Documents": {"DocumentDto": [{"IdDocumentType": 223, "DocN": first.snils}]}}
    )

    assert sorted(p["IdPatientMIS"] for p in by_name) == sorted([first.source_id, second.source_id])
    assert [p["IdGlobal"] for p in by_name_and_birth] == [second.iemk_global_id]
    assert [p["IdPatientMIS"] for p in by_snils] == [first.source_id]
    assert pix.find_patients(mo, {"FamilyName": "Орлова"}) == []  # not registered in ИЭМК


def test_adding_twice_is_refused_in_russian_and_ensure_registered_recovers(mo, sims):
    patient = factories.make_patient(mo)
    assert pix.add_patient(patient) is None  # AddPatientResponse is empty in the WSDL

    with pytest.raises(PixError) as refused:
        pix.add_patient(patient)

    assert str(refused.value) == (
        f"ИЭМК отказал: Пациент с IdPatientMIS {patient.source_id} уже зарегистрирован в МО {mo.oid} "
        "(поле IdPatientMIS, код 2)"
    )
    assert refused.value.property_name == "IdPatientMIS" and refused.value.code == 2
    assert isinstance(refused.value, DataError)
    # The first answer «lost»: registering again finds the patient instead of failing.
    assert pix.ensure_registered(patient) == _index(sims)[0]["IdGlobal"]


def test_missing_required_fields_are_listed_with_their_property_names(mo, sims):
    patient = factories.make_patient(mo, first_name="", birth_date=None)

    with pytest.raises(PixError) as refused:
        pix.ensure_registered(patient)

    assert str(refused.value) == (
        "ИЭМК отказал: Пациент не прошёл проверку (поле patient, код 1); "
        "Не заполнено обязательное поле GivenName (поле GivenName, код 1); "
        "Не заполнено обязательное поле BirthDate (поле BirthDate, код 1)"
    )
    assert patient.iemk_global_id is None and _index(sims) == []


def test_mo_without_oid_is_refused_before_sending(app, sims):
    mo = factories.make_mo(oid=None)
    set_setting("iemk.pix_endpoint", f"{sims}/iemk/pix", mo.id)
    patient = factories.make_patient(mo)

    with pytest.raises(DataError, match=r"^У МО не указан OID \(ФРМО\): ИЭМК не примет пациента$"):
        pix.ensure_registered(patient)

    assert requests.get(f"{sims}/iemk/_last_request", timeout=5).content == b""


def test_unknown_token_is_refused_when_the_service_requires_one(mo, sims):
    requests.post(
        f"{sims}/iemk/_settings", json={"required_guid": "11111111-2222-3333-4444-555555555555"}, timeout=5
    )
    patient = factories.make_patient(mo)

    with pytest.raises(PixError, match=r"доступ запрещён \(поле guid, код 4\)"):
        pix.add_patient(patient)

    set_setting("iemk.guid", "11111111-2222-3333-4444-555555555555", mo.id)
    assert pix.ensure_registered(patient)


def test_service_down_or_failing_or_absent_is_transient(mo, sims):
    patient = factories.make_patient(mo)

    requests.post(f"{sims}/iemk/_control", json={"mode": "down"}, timeout=5)
    with pytest.raises(TransientError, match="HTTP 503"):
        pix.add_patient(patient)

    requests.post(f"{sims}/iemk/_control", json={"mode": "errors", "share": 1}, timeout=5)
    with pytest.raises(TransientError, match="ошибкой сервера: Внутренняя ошибка сервиса ИЭМК"):
        pix.add_patient(patient)

    with socket_closed() as url:
        set_setting("iemk.pix_endpoint", url, mo.id)
        with pytest.raises(TransientError, match="ИЭМК недоступен"):
            pix.add_patient(patient)

    requests.post(f"{sims}/iemk/_control", json={"mode": "normal"}, timeout=5)
    assert _index(sims) == []


class socket_closed:
    """An address where nothing listens (a port just released)."""

    def __enter__(self) -> str:
        server = make_server("127.0.0.1", 0, lambda environ, start: [])
        port = server.server_port
        server.server_close()
        return f"http://127.0.0.1:{port}/iemk/pix"

    def __exit__(self, *exc) -> None:
        return None


def test_garbage_answer_is_a_pix_error_naming_it(mo):
    def app(environ, start_response):
        return Response("<html><body>Вход в систему</body>", status=200, mimetype="text/html")(
            environ, start_response
        )

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        set_setting("iemk.pix_endpoint", f"http://127.0.0.1:{server.server_port}/iemk/pix", mo.id)
        with pytest.raises(
            PixError, match="^ИЭМК вернул ответ не в формате SOAP: «<html><body>Вход в систему"
        ):
            pix.add_patient(factories.make_patient(mo))
    finally:
        server.shutdown()
        server.server_close()


def test_patient_dto_goes_in_wsdl_order_with_token_and_oid(mo, sims):
    patient = factories.make_patient(mo)
    pix.add_patient(patient)

    sent = etree.fromstring(requests.get(f"{sims}/iemk/_last_request", timeout=5).content)
    operation = sent.find(f"{{{SOAP}}}Body")[0]
    assert [etree.QName(c).localname for c in operation] == ["guid", "idLPU", "patient"]
    assert operation[0].text == "0b7d4c1e-5a3e-4a5b-9d0e-1c2f3a4b5c6d" and operation[1].text == mo.oid
    fields = [etree.QName(c).localname for c in operation[2]]
    order = _wsdl_order("PatientDto")
    assert fields == sorted(fields, key=order.index)
    assert fields == [
        "Addresses",
        "BirthDate",
        "Documents",
        "FamilyName",
        "GivenName",
        "IdPatientMIS",
        "MiddleName",
        "Sex",
    ]
    document_order = _wsdl_order("DocumentDto")
    for document in operation[2].find(f"{{{DTO}}}Documents"):
        names = [etree.QName(c).localname for c in document]
        assert names == sorted(names, key=document_order.index)
    assert operation[2].find(f"{{{DTO}}}Sex").text == "2"
    assert operation[2].find(f"{{{DTO}}}BirthDate").text.startswith("1994-05-06")


def test_stand_in_serves_the_wsdl_at_its_own_address(sims):
    wsdl = etree.fromstring(requests.get(f"{sims}/iemk/pix?singleWsdl", timeout=5).content)
    locations = [a.get("location") for a in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address")]
    assert locations == [f"{sims}/iemk/pix"]


def test_requests_go_signed_with_the_iemk_certificate_and_a_tampered_one_is_refused(mo, sims):
    from portal import crypto
    from portal.admin.services import ensure_demo_certificate

    ensure_demo_certificate("iemk", "Тест: подпись запросов ИЭМК", mo.id)
    patient = factories.make_patient(mo)

    pix.ensure_registered(patient)

    sent = requests.get(f"{sims}/iemk/_last_request", timeout=5).content
    envelope = etree.fromstring(sent)
    assert "Тест: подпись запросов ИЭМК" in crypto.verify_envelope(envelope)
    tampered = sent.replace(patient.source_id.encode(), b"someone-else")
    answer = requests.post(
        f"{sims}/iemk/pix",
        data=tampered,
        timeout=5,
        headers={
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": '"http://tempuri.org/IPixService/GetPatient"',
        },
    )
    assert answer.status_code == 500
    assert "Подпись запроса не прошла проверку" in answer.text
