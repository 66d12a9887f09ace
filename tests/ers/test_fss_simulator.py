"""The ФСС ЭРС stand-in on the wire: what it refuses (unencrypted, unsigned, no МО signature), how
it answers (signed by ФСС, encrypted to the sender), its processing and its control endpoints.
Requests are built here by hand (zeep on our WSDL, then portal.crypto) so each can be broken."""

from __future__ import annotations

import functools
from datetime import date, timedelta

import pytest
import requests
import zeep
from lxml import etree

from portal.crypto import (
    decrypt_body,
    encrypt_body,
    generate_demo_certificate,
    load_signing_key,
    set_wsu_id,
    sign_envelope,
    verify_envelope,
)
from portal.ers.client import WSDL
from simulators import start_simulators

ERS = "http://gtw.ws.fss.ru/openservice/ers"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
OGRN = "1026602336727"
MO_ACTOR = f"http://eln.fss.ru/actor/mo/{OGRN}"
FSS_ACTOR = "http://eln.fss.ru/actor/fss/ca/1027739443236"
TODAY = date.today()


@functools.cache
def _key(name: str):
    return load_signing_key(*generate_demo_certificate(name))


@functools.cache
def _zeep() -> zeep.Client:
    return zeep.Client(str(WSDL))


@pytest.fixture
def sims():
    server, base_url = start_simulators(0)
    requests.post(f"{base_url}/fss/_settings", json={"result_delay": 0}, timeout=5)
    requests.post(
        f"{base_url}/fss/_contracts",
        json={
            "ogrn": OGRN,
            "number": "14",
            "date": "2021-12-31",
            "ends": (TODAY + timedelta(days=30)).isoformat(),
        },
        timeout=5,
    )
    yield base_url
    server.shutdown()
    server.server_close()


@pytest.fixture
def fss_cert(sims) -> str:
    return requests.get(f"{sims}/fss/_certificate", timeout=5).text


def _org(number: str = "14") -> dict:
    return {
        "orgName": "ГБУЗ СО «ЦГБ № 2»",
        "inn": "6658021402",
        "ogrn": OGRN,
        "kpp": "665801001",
        "contractNumber": number,
        "conractDate": date(2021, 12, 31),
    }


def _person(snils: str = "15135820937") -> dict:
    return {
        "birthdate": date(1994, 5, 6),
        "firstName": "Екатерина",
        "secondName": "Требушинина",
        "medicalInsurance": {"medicalInsurance": {"insuranceNumber": "6653400830000123"}},
        "snils": {"snils": snils},
        "identifyingDocument": {
            "idDoc": {
                "kind": "21",
                "docNumber": "123456",
                "docIssueDate": date(2014, 5, 20),
                "docIssuer": "УФМС",
            }
        },
        "residenceAddress": {"residenceAddress": "г. Екатеринбург, ул. Ленина, д. 1"},
    }


def _envelope(operation: str, org: dict | None = None, **params) -> etree._Element:
    info = {"specVersion": "1.0", "software": "тест", "softwareVerison": "1"}
    client = _zeep()
    return client.create_message(
        client.service, operation, systemInfo=info, medicalOrganization=org or _org(), **params
    )


def _seal(envelope, fss_cert: str, signers=None, *, encrypt: bool = True, reply: bool = True):
    body = envelope.find(f"{{{SOAP}}}Body")
    set_wsu_id(body, f"OGRN_{OGRN}")
    for actor, key in signers if signers is not None else [(MO_ACTOR, _key("МО"))]:
        sign_envelope(envelope, key, [f"OGRN_{OGRN}"], actor=actor)
    if encrypt:
        encrypt_body(envelope, fss_cert, reply_cert_pem=_key("МО").cert_pem if reply else None)
    return envelope


def _post(sims: str, envelope) -> tuple[int, etree._Element]:
    response = requests.post(
        f"{sims}/fss/ers",
        data=etree.tostring(envelope),
        headers={"Content-Type": "text/xml; charset=utf-8"},
        timeout=10,
    )
    return response.status_code, etree.fromstring(response.content)


def _fault(answer: etree._Element) -> tuple[str, str]:
    fault = answer.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert fault is not None, etree.tostring(answer)
    return fault.findtext("faultcode"), fault.findtext("faultstring")


def _open(answer: etree._Element, fss_cert: str) -> etree._Element:
    """Decrypt with the МО key, check ФСС's signature; the result element."""
    decrypt_body(answer, _key("МО"), what="Ответ ФСС")
    verify_envelope(answer, trusted_pem=fss_cert, actor=FSS_ACTOR)
    return answer.find(f"{{{SOAP}}}Body")[0]


def _call(sims, fss_cert, operation, **params) -> etree._Element:
    status, answer = _post(sims, _seal(_envelope(operation, **params), fss_cert))
    assert status == 200, etree.tostring(answer, encoding="unicode")
    return _open(answer, fss_cert)


def _t(node: etree._Element, name: str) -> str | None:
    return node.findtext(f"{{{ERS}}}{name}")


def _errors(node: etree._Element) -> list[tuple[str, str]]:
    return [
        (e.findtext(f"{{{ERS}}}code"), e.findtext(f"{{{ERS}}}message")) for e in node.iter(f"{{{ERS}}}error")
    ]


def _processed(sims, fss_cert, node: etree._Element, operation: str) -> etree._Element:
    return _call(sims, fss_cert, "getResultById", requestType=operation, requestId=_t(node, "requestId"))


def _ticket1(number: str, weeks: int = 32) -> dict:
    ticket = {
        "ersNumber": number,
        "createDate": TODAY,
        "pregnancyTimeOnRegisterDate": 9,
        "pregnancyTimeOnPutDate": weeks,
        "isMultiplePregnancy": False,
        "exchangeCardNumber": "1",
        "exchangeCardDate": TODAY,
    }
    return {"tickets": {"storage": [{"person": _person(), "ticket1": ticket}]}}


def _create(sims, fss_cert, snils: str = "15135820937") -> str:
    sent = _call(sims, fss_cert, "createErs", person=_person(snils), registerDate=TODAY)
    return _t(_processed(sims, fss_cert, sent, "createErs"), "ersNumber")


# ----------------------------------------------------------------------------------------------


def test_wsdl_points_at_the_stand_in_and_zeep_loads_it(sims):
    client = zeep.Client(f"{sims}/fss/ers?wsdl")

    assert "createErs" in client.service._operations and "putVisit" in client.service._operations
    assert client.service._binding_options["address"] == f"{sims}/fss/ers"
    assert requests.get(f"{sims}/fss/ers", timeout=5).status_code == 400


def test_the_certificate_of_fss_is_published_and_signs_the_answers(sims, fss_cert):
    assert fss_cert.startswith("-----BEGIN CERTIFICATE-----")
    assert requests.get(f"{sims}/fss/_certificate", timeout=5).text == fss_cert  # one key per host

    status, answer = _post(
        sims, _seal(_envelope("createErs", person=_person(), registerDate=TODAY), fss_cert)
    )

    assert status == 200
    header = answer.find(f"{{{SOAP}}}Header")
    assert [b.get(f"{{{SOAP}}}actor") for b in header] == [FSS_ACTOR]
    assert answer.find(f"{{{SOAP}}}Body")[0].tag == "{http://www.w3.org/2001/04/xmlenc#}EncryptedData"
    result = _open(answer, fss_cert)
    assert result.tag == f"{{{ERS}}}createErsResponse" and _t(result, "status") == "REGISTERED"


def test_an_unencrypted_request_is_refused(sims, fss_cert):
    envelope = _seal(_envelope("createErs", person=_person(), registerDate=TODAY), fss_cert, encrypt=False)

    status, answer = _post(sims, envelope)

    assert status == 500
    code, text = _fault(answer)
    assert code == "soap:Client" and text.startswith("Запрос не зашифрован")


def test_a_request_without_a_reply_certificate_is_refused(sims, fss_cert):
    envelope = _seal(_envelope("createErs", person=_person(), registerDate=TODAY), fss_cert, reply=False)

    assert _fault(_post(sims, envelope)[1])[1].startswith(
        "В запросе нет сертификата МО для шифрования ответа"
    )


def test_every_signature_is_checked_and_the_mo_one_required(sims, fss_cert):
    doctor = f"http://eln.fss.ru/actor/doc/{OGRN}_11223344595"
    only_doctor = _seal(
        _envelope("createErs", person=_person(), registerDate=TODAY), fss_cert, [(doctor, _key("Врач"))]
    )
    assert (
        _fault(_post(sims, only_doctor)[1])[1]
        == f"Нет подписи МО: запрос должен быть подписан ЭЦП МО (actor {MO_ACTOR})"
    )

    envelope = _envelope("createErs", person=_person(), registerDate=TODAY)
    body = envelope.find(f"{{{SOAP}}}Body")
    set_wsu_id(body, f"OGRN_{OGRN}")
    sign_envelope(envelope, _key("МО"), [f"OGRN_{OGRN}"], actor=MO_ACTOR)
    sign_envelope(envelope, _key("Врач"), [f"OGRN_{OGRN}"], actor=doctor)
    body.find(f".//{{{ERS}}}firstName").text = "Мария"  # changed after signing
    encrypt_body(envelope, fss_cert, reply_cert_pem=_key("МО").cert_pem)

    text = _fault(_post(sims, envelope)[1])[1]
    assert text.startswith(f"Подпись {MO_ACTOR} не прошла проверку")  # the blocks in order, МО first
    assert "изменён после подписания" in text
    received = requests.get(f"{sims}/fss/_requests", timeout=5).json()
    assert [(r["method"], r["status"]) for r in received] == [
        ("createErs", "REFUSED"),
        ("createErs", "REFUSED"),
    ]


def test_an_unknown_contract_is_refused_at_once_with_1204(sims, fss_cert):
    result = _call(sims, fss_cert, "createErs", org=_org("15"), person=_person(), registerDate=TODAY)

    assert _t(result, "status") == "PROCESSING_ERROR" and _t(result, "errorCode") == "1204"
    assert _errors(result) == [
        (
            "1204",
            "Отсутствует заключенный договор с ТОФ на оказание услуг: ИНН=6658021402, ОГРН=1026602336727, "
            "КПП=665801001 от 31.12.2021 № 15",
        )
    ]


def test_an_expired_contract_is_refused_with_1204(sims, fss_cert):
    requests.post(
        f"{sims}/fss/_contracts",
        json={"ogrn": OGRN, "number": "7", "date": "2020-01-01", "ends": "2020-12-31"},
        timeout=5,
    )
    org = {**_org("7"), "conractDate": date(2020, 1, 1)}

    result = _call(sims, fss_cert, "createErs", org=org, person=_person(), registerDate=TODAY)

    assert _t(result, "errorCode") == "1204"


def test_results_are_held_back_until_the_delay_passes(sims, fss_cert):
    requests.post(f"{sims}/fss/_settings", json={"result_delay": 3600}, timeout=5)
    sent = _call(sims, fss_cert, "createErs", person=_person(), registerDate=TODAY)

    waiting = _processed(sims, fss_cert, sent, "createErs")

    assert _t(waiting, "status") == "READY_TO_PROCESS" and _t(waiting, "ersNumber") is None
    assert requests.get(f"{sims}/fss/_requests", timeout=5).json()[0]["status"] == "READY_TO_PROCESS"


def test_the_same_woman_gets_her_earlier_ers_and_it_is_found_by_snils(sims, fss_cert):
    first = _create(sims, fss_cert)
    assert _create(sims, fss_cert) == first
    assert _create(sims, fss_cert, snils="02802499143") != first

    ticket = _call(sims, fss_cert, "putTicket1", **_ticket1(first))
    assert _t(_processed(sims, fss_cert, ticket, "putTicket1"), "status") == "PROCESSED"

    data = _call(sims, fss_cert, "getErsData", params={"snils": "15135820937"})
    [ers] = data.findall(f"{{{ERS}}}ersData")
    assert (_t(ers, "ersNumber"), _t(ers, "ersStatus"), _t(ers, "ogrn")) == (first, "ACTIVE", OGRN)
    assert [s.findtext(f"{{{ERS}}}ticketType") for s in ers.iter(f"{{{ERS}}}storage")] == ["1"]
    tickets = _call(sims, fss_cert, "getTickets", getTicketsParams={"startDate": TODAY, "endDate": TODAY})
    assert [s.findtext(f"{{{ERS}}}ersNumber") for s in tickets.iter(f"{{{ERS}}}storage")] == [first]


def test_a_closed_ers_takes_no_tickets(sims, fss_cert):
    number = _create(sims, fss_cert)
    closed = _call(
        sims, fss_cert, "disableErs",
        disableErsRequest={"ersIdentifier": number, "reasonCode": "1", "reasonMessage": "Запрошен ошибочно"},
    )  # fmt: skip
    assert _t(_processed(sims, fss_cert, closed, "disableErs"), "status") == "PROCESSED"

    ticket = _call(sims, fss_cert, "putTicket1", **_ticket1(number))

    assert _errors(_processed(sims, fss_cert, ticket, "putTicket1")) == [("1502", f"ЭРС № {number} закрыт")]


def test_a_visit_is_added_and_cancelled(sims, fss_cert):
    number = _create(sims, fss_cert)
    for action in ("ADD", "CANCEL"):
        visit = {
            "ersNumber": number,
            "visitId": "exam-1",
            "visitAction": action,
            "visitDate": "2021-10-21T11:26:00",
        }
        sent = _call(sims, fss_cert, "putVisit", visits={"storage": [{"person": _person(), "visit": visit}]})
        assert _t(_processed(sims, fss_cert, sent, "putVisit"), "status") == "PROCESSED"


def test_get_result_of_an_unknown_request_or_of_another_type(sims, fss_cert):
    unknown = _call(sims, fss_cert, "getResultById", requestType="createErs", requestId="nope")
    assert _errors(unknown) == [("1001", "Запрос nope не найден")]

    sent = _call(sims, fss_cert, "createErs", person=_person(), registerDate=TODAY)
    other = _processed(sims, fss_cert, sent, "putTicket1")
    assert _t(other, "errorCode") == "1002"


def test_missing_personal_data_are_named(sims, fss_cert):
    person = _person(snils="")
    person["identifyingDocument"] = {
        "idDoc": {"kind": "21", "docNumber": "1", "docIssueDate": TODAY, "docIssuer": ""}
    }
    person["medicalInsurance"] = {"noDataReason": "полис не оформлен"}
    sent = _call(sims, fss_cert, "createErs", person=person, registerDate=TODAY)

    assert [m for _c, m in _errors(_processed(sims, fss_cert, sent, "createErs"))] == [
        "Не заполнено обязательное поле «СНИЛС» (person/snils): укажите значение или причину отсутствия (noDataReason)",
        "Не заполнено обязательное поле «Кем выдан документ» (person/identifyingDocument/idDoc/docIssuer)",
    ]


def test_modes_down_and_errors(sims, fss_cert):
    envelope = etree.tostring(_seal(_envelope("createErs", person=_person(), registerDate=TODAY), fss_cert))
    requests.post(f"{sims}/fss/_control", json={"mode": "down"}, timeout=5)
    assert requests.post(f"{sims}/fss/ers", data=envelope, timeout=5).status_code == 503

    requests.post(f"{sims}/fss/_control", json={"mode": "errors"}, timeout=5)
    response = requests.post(f"{sims}/fss/ers", data=envelope, timeout=5)
    assert response.status_code == 500
    assert _fault(etree.fromstring(response.content)) == ("soap:Server", "Внутренняя ошибка сервиса ЭРС")


def test_control_endpoints_refuse_bad_input(sims):
    assert requests.post(f"{sims}/fss/_contracts", json={"ogrn": OGRN}, timeout=5).status_code == 400
    assert requests.post(f"{sims}/fss/_settings", json={"result_delay": -1}, timeout=5).status_code == 400
    assert requests.post(f"{sims}/fss/_settings", json={"colour": "red"}, timeout=5).status_code == 400
    settings = requests.post(f"{sims}/fss/_settings", json={"tamper_answers": True}, timeout=5).json()
    assert settings == {
        "result_delay": 0,
        "tamper_answers": True,
        "sign_answers": True,
        "encrypt_answers": True,
    }
    contracts = requests.get(f"{sims}/fss/_contracts", timeout=5).json()
    assert contracts[0]["number"] == "14" and contracts[0]["date"] == "2021-12-31"


def _host(state_file) -> tuple[object, str]:
    server, base_url = start_simulators(0, config={"FSS_STATE_FILE": str(state_file)})
    requests.post(f"{base_url}/fss/_settings", json={"result_delay": 0}, timeout=5)
    requests.post(
        f"{base_url}/fss/_contracts",
        json={
            "ogrn": OGRN,
            "number": "14",
            "date": "2021-12-31",
            "ends": (TODAY + timedelta(days=30)).isoformat(),
        },
        timeout=5,
    )
    return server, base_url


def test_issued_certificates_survive_a_restart_with_a_state_file(tmp_path):
    state_file = tmp_path / "fss_ers.json"
    server, base_url = _host(state_file)
    try:
        number = _create(base_url, requests.get(f"{base_url}/fss/_certificate", timeout=5).text)
    finally:
        server.shutdown()
        server.server_close()
    assert number in state_file.read_text(encoding="utf-8")

    server, base_url = _host(state_file)  # a new key, the same memory of issued ЭРС
    try:
        cert = requests.get(f"{base_url}/fss/_certificate", timeout=5).text
        found = _call(base_url, cert, "getErsData", params={"snils": "15135820937"})
        assert [_t(data, "ersNumber") for data in found.findall(f"{{{ERS}}}ersData")] == [number]
    finally:
        server.shutdown()
        server.server_close()
