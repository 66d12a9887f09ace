"""The ФСС ЭРС client against the ФСС stand-in over real HTTP: signed by the chosen signers,
encrypted to ФСС, ФСС's answers decrypted and their signature checked, failures sorted for the
delivery mechanism (SPEC E-1, E-9, E-10, E-11, E-12)."""

from __future__ import annotations

import functools
from datetime import date, timedelta

import pytest
import requests
from lxml import etree

from portal.admin.services import set_setting
from portal.crypto import generate_demo_certificate, load_signing_key
from portal.ers import client
from portal.ers.client import FssAnswerRefused, Signers
from portal.ers.models import ErsContract
from portal.exchange.delivery import DataError, TransientError, UnknownOutcome
from portal.extensions import db
from simulators import start_simulators
from tests import factories

ERS = "http://gtw.ws.fss.ru/openservice/ers"
DOCTOR_SNILS = "11223344595"


@functools.cache
def _key(name: str):
    return load_signing_key(*generate_demo_certificate(name))


def _signers(**kw) -> Signers:
    values = dict(
        mo=_key("ГБУЗ «Родильный дом»"),
        doctor=_key("Врач Петрова"),
        accountant=_key("Бухгалтер Сидорова"),
        doctor_snils=DOCTOR_SNILS,
    )
    values.update(kw)
    return Signers(**values)


@pytest.fixture
def sims(app):
    server, base_url = start_simulators(0)
    requests.post(f"{base_url}/fss/_settings", json={"result_delay": 0}, timeout=5)
    yield base_url
    server.shutdown()
    server.server_close()


@pytest.fixture
def fss_cert(sims) -> str:
    return requests.get(f"{sims}/fss/_certificate", timeout=5).text


@pytest.fixture
def mo(app, sims):
    mo = factories.make_mo()
    db.session.add(
        ErsContract(mo_id=mo.id, number="14", signed_on=date.today() - timedelta(days=30),
                    ends_on=date.today() + timedelta(days=300))
    )  # fmt: skip
    db.session.flush()
    set_setting("ers.endpoint", f"{sims}/fss/ers")
    set_setting("ers.timeout", "5")
    return mo


@pytest.fixture
def contract(mo, sims):
    """ФСС knows the МО's contract."""
    row = db.session.scalars(db.select(ErsContract).where(ErsContract.mo_id == mo.id)).one()
    requests.post(
        f"{sims}/fss/_contracts",
        json={
            "ogrn": mo.ogrn,
            "number": row.number,
            "date": row.signed_on.isoformat(),
            "ends": row.ends_on.isoformat(),
        },
        timeout=5,
    )
    return row


def _person(**kw) -> dict:
    person = {
        "birthdate": date(1994, 5, 6),
        "firstName": "Екатерина",
        "secondName": "Требушинина",
        "patronymic": "Васильевна",
        "medicalInsurance": {"medicalInsurance": {"insuranceNumber": "6653400830000123"}},
        "snils": {"snils": "15135820937"},
        "identifyingDocument": {
            "idDoc": {
                "kind": "21",
                "docNumber": "123456",
                "docSerie": "6514",
                "docIssueDate": date(2014, 5, 20),
                "docIssuer": "Отделом УФМС России по Свердловской обл.",
            }
        },
        "residenceAddress": {"residenceAddress": "г. Екатеринбург, ул. Ленина, д. 1, кв. 2"},
    }
    person.update(kw)
    return person


def _send(mo, fss_cert, method, body, signers=None):
    return client.send(mo, method, body, signers or _signers(), fss_cert, _key("ГБУЗ «Родильный дом»"))


def _result(mo, fss_cert, exchange, method):
    request_id = exchange.result["requestId"]
    return client.result(mo, request_id, method, _signers(), fss_cert, _key("ГБУЗ «Родильный дом»"))


def _create_ers(mo, fss_cert, **person) -> str:
    sent = _send(mo, fss_cert, "createErs", {"person": _person(**person), "registerDate": date.today()})
    return _result(mo, fss_cert, sent, "createErs").result["ersNumber"]


def _ticket1(number: str, weeks: int, multiple: bool) -> dict:
    ticket = {
        "ersNumber": number,
        "createDate": date.today(),
        "pregnancyTimeOnRegisterDate": 9,
        "pregnancyTimeOnPutDate": weeks,
        "isMultiplePregnancy": multiple,
        "exchangeCardNumber": "123",
        "exchangeCardDate": date.today(),
    }
    return {"tickets": {"storage": [{"person": _person(), "ticket1": ticket}]}}


def _received(sims) -> list[dict]:
    return requests.get(f"{sims}/fss/_requests", timeout=5).json()


# ----------------------------------------------------------------------------------------------


def test_create_ers_is_registered_then_processed_with_a_number(mo, contract, fss_cert, sims):
    sent = _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})

    assert sent.result["status"] == "REGISTERED" and sent.result["requestId"]
    assert sent.result["errors"] == [] and client.error_text(sent.result) == ""
    request = etree.fromstring(sent.request_xml.encode())
    body = request.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    assert body[0].tag == f"{{{ERS}}}createErsRequest"  # kept readable: signed, before encryption
    assert body.get(
        "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd}Id"
    ) == (f"OGRN_{mo.ogrn}")
    assert body[0].findtext(f"{{{ERS}}}medicalOrganization/{{{ERS}}}contractNumber") == "14"
    assert "createErsResponse" in sent.answer_xml and "EncryptedData" not in sent.answer_xml

    done = _result(mo, fss_cert, sent, "createErs")

    assert done.result["status"] == "PROCESSED"
    assert done.result["requestType"] == "createErs"
    number = done.result["ersNumber"]
    assert number.isdigit() and len(number) == 10
    assert [(r["method"], r["status"]) for r in _received(sims)] == [
        ("createErs", "PROCESSED"),
        ("getResultById", "PROCESSED"),
    ]


def test_result_waits_while_fss_processes(mo, contract, fss_cert, sims):
    requests.post(f"{sims}/fss/_settings", json={"result_delay": 3600}, timeout=5)
    sent = _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})

    waiting = _result(mo, fss_cert, sent, "createErs")

    assert waiting.result["status"] == "READY_TO_PROCESS" and waiting.result.get("ersNumber") is None


def test_without_a_contract_fss_answers_1204_in_the_seeds_words(mo, fss_cert, sims):
    sent = _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})

    assert sent.result["status"] == "PROCESSING_ERROR"
    assert sent.result["errorCode"] == "1204"
    signed = (date.today() - timedelta(days=30)).strftime("%d.%m.%Y")
    assert client.error_text(sent.result) == (
        f"Код: 1204 Сообщение: Отсутствует заключенный договор с ТОФ на оказание услуг: ИНН={mo.inn}, "
        f"ОГРН={mo.ogrn}, КПП={mo.kpp} от {signed} № 14"
    )


def test_three_signers_are_verified_by_fss(mo, contract, fss_cert, sims):
    sent = _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})

    assert sent.result["status"] == "REGISTERED"
    [received] = _received(sims)
    assert received["signers"] == [
        f"http://eln.fss.ru/actor/doc/{mo.ogrn}_{DOCTOR_SNILS}",
        f"http://eln.fss.ru/actor/mo/{mo.ogrn}",
        f"http://eln.fss.ru/actor/acc/{mo.ogrn}",
    ]
    request = etree.fromstring(sent.request_xml.encode())
    actors = [
        block.get("{http://schemas.xmlsoap.org/soap/envelope/}actor")
        for block in request.iter(
            "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}Security"
        )
    ]
    assert actors == received["signers"]


def test_a_request_without_the_mo_signature_is_refused(mo, contract, fss_cert, sims):
    with pytest.raises(client.ErsError) as refused:
        _send(
            mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()}, _signers(mo=None)
        )

    assert isinstance(refused.value, DataError)
    assert str(refused.value).startswith("ФСС отказал: Нет подписи МО")
    assert f"http://eln.fss.ru/actor/mo/{mo.ogrn}" in str(refused.value)
    assert "createErsRequest" in refused.value.request
    assert [(r["method"], r["status"]) for r in _received(sims)] == [("createErs", "REFUSED")]


def test_no_signer_at_all_is_not_sent(mo, contract, fss_cert, sims):
    with pytest.raises(DataError, match="не подписан"):
        _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()}, Signers())
    assert _received(sims) == []


def test_a_tampered_answer_is_refused_and_kept(mo, contract, fss_cert, sims):
    requests.post(f"{sims}/fss/_settings", json={"tamper_answers": True}, timeout=5)

    with pytest.raises(FssAnswerRefused) as refused:
        _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})

    assert str(refused.value).startswith("Ответ ФСС отклонён: подпись ФСС не прошла проверку")
    assert "изменён после подписания" in str(refused.value)
    assert "EncryptedData" in refused.value.response  # the raw answer, as it came
    assert "createErsRequest" in refused.value.request


def test_an_unsigned_answer_is_refused(mo, contract, fss_cert, sims):
    requests.post(f"{sims}/fss/_settings", json={"sign_answers": False}, timeout=5)

    with pytest.raises(FssAnswerRefused, match="подпись ФСС не прошла проверку") as refused:
        _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})

    assert "нет подписи" in str(refused.value)


def test_an_answer_in_clear_is_refused(mo, contract, fss_cert, sims):
    requests.post(f"{sims}/fss/_settings", json={"encrypt_answers": False}, timeout=5)

    with pytest.raises(FssAnswerRefused, match="Ответ ФСС отклонён: ответ не расшифрован") as refused:
        _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})

    assert "createErsResponse" in refused.value.response


def test_a_request_encrypted_for_another_certificate_is_refused_by_fss(mo, contract, sims):
    other = _key("Не ФСС").cert_pem  # «Сертификат ФСС» set to the wrong certificate

    with pytest.raises(client.ErsError, match="ФСС отказал: Запрос не расшифрован"):
        _send(mo, other, "createErs", {"person": _person(), "registerDate": date.today()})
    assert _received(sims)[0]["status"] == "REFUSED"


def test_fss_down_is_transient(mo, contract, fss_cert, sims):
    requests.post(f"{sims}/fss/_control", json={"mode": "down"}, timeout=5)

    with pytest.raises(TransientError, match="503"):
        _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})


def test_fss_server_fault_is_transient(mo, contract, fss_cert, sims):
    requests.post(f"{sims}/fss/_control", json={"mode": "errors"}, timeout=5)

    with pytest.raises(TransientError, match="Внутренняя ошибка сервиса ЭРС"):
        _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})


def test_fss_unreachable_is_transient(mo, contract, fss_cert):
    set_setting("ers.endpoint", "http://127.0.0.1:9/fss/ers")

    with pytest.raises(TransientError, match="ФСС недоступен"):
        _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})


def test_no_answer_within_the_timeout_is_an_unknown_outcome(mo, contract, fss_cert, sims):
    set_setting("ers.timeout", "1")
    requests.post(f"{sims}/fss/_control", json={"mode": "slow", "delay": 3}, timeout=5)

    with pytest.raises(UnknownOutcome, match="ФСС не ответил за 1 с"):
        _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})


def test_ticket1_at_29_weeks_is_refused(mo, contract, fss_cert, sims):
    number = _create_ers(mo, fss_cert)
    sent = _send(mo, fss_cert, "putTicket1", _ticket1(number, 29, multiple=False))
    assert sent.result["status"] == "REGISTERED"

    done = _result(mo, fss_cert, sent, "putTicket1")

    assert done.result["status"] == "PROCESSING_ERROR"
    assert client.error_text(done.result) == (
        "Код: 1401 Сообщение: Талон 1 выдаётся только по осмотрам от 30-ти недель или от 28-ми недель "
        "при многоплодной беременности: срок на дату выдачи — 29 недель"
    )


def test_ticket1_at_28_weeks_of_a_multiple_pregnancy_is_accepted(mo, contract, fss_cert):
    number = _create_ers(mo, fss_cert)
    sent = _send(mo, fss_cert, "putTicket1", _ticket1(number, 28, multiple=True))

    done = _result(mo, fss_cert, sent, "putTicket1")

    assert done.result["status"] == "PROCESSED" and done.result["errors"] == []


def test_a_ticket_for_an_unknown_ers_is_refused(mo, contract, fss_cert):
    sent = _send(mo, fss_cert, "putTicket1", _ticket1("9999999999", 32, multiple=False))

    done = _result(mo, fss_cert, sent, "putTicket1")

    assert client.error_text(done.result) == "Код: 1501 Сообщение: ЭРС № 9999999999 не найден"


def test_missing_snils_without_a_reason_is_refused_with_the_field_named(mo, contract, fss_cert):
    sent = _send(
        mo, fss_cert, "createErs", {"person": _person(snils={"snils": ""}), "registerDate": date.today()}
    )

    done = _result(mo, fss_cert, sent, "createErs")

    assert done.result["status"] == "PROCESSING_ERROR" and done.result.get("ersNumber") is None
    assert client.error_text(done.result) == (
        "Код: 1301 Сообщение: Не заполнено обязательное поле «СНИЛС» (person/snils): укажите значение "
        "или причину отсутствия (noDataReason)"
    )


def test_missing_snils_with_a_reason_is_accepted(mo, contract, fss_cert):
    person = _person(snils={"noDataReason": "не предоставлен"}, residenceAddress={"noDataReason": "БОМЖ"})
    sent = _send(mo, fss_cert, "createErs", {"person": person, "registerDate": date.today()})

    done = _result(mo, fss_cert, sent, "createErs")

    assert done.result["status"] == "PROCESSED" and done.result["ersNumber"]


def test_several_errors_are_joined(mo, contract, fss_cert):
    person = _person(snils={"snils": ""}, residenceAddress={"residenceAddress": ""})
    sent = _send(mo, fss_cert, "createErs", {"person": person, "registerDate": date.today()})

    text = client.error_text(_result(mo, fss_cert, sent, "createErs").result)

    assert (
        text.count("Код: 1301") == 2
        and "; Код: 1301 Сообщение: Не заполнено обязательное поле «адрес" in text
    )


def test_an_expired_contract_is_not_sent(mo, fss_cert, sims):
    row = db.session.scalars(db.select(ErsContract).where(ErsContract.mo_id == mo.id)).one()
    row.ends_on = date.today() - timedelta(days=1)
    db.session.flush()

    with pytest.raises(DataError, match="истёк"):
        _send(mo, fss_cert, "createErs", {"person": _person(), "registerDate": date.today()})
    assert _received(sims) == []


def test_a_request_the_schema_does_not_allow_is_not_sent(mo, contract, fss_cert, sims):
    person = _person()
    del person["firstName"]

    with pytest.raises(client.ErsError, match="Запрос не соответствует схеме ФСС"):
        _send(mo, fss_cert, "createErs", {"person": person, "registerDate": date.today()})
    assert _received(sims) == []


def test_error_text_without_an_error_list_uses_the_envelope():
    assert client.error_text({"errorCode": "1204", "errorText": "Нет договора", "errors": []}) == (
        "Код: 1204 Сообщение: Нет договора"
    )
    assert client.error_text({"status": "PROCESSED", "errors": []}) == ""


def test_actors():
    assert client.mo_actor("1026602336727") == "http://eln.fss.ru/actor/mo/1026602336727"
    assert client.doctor_actor("1026602336727", "112-233-445 95") == (
        "http://eln.fss.ru/actor/doc/1026602336727_11223344595"
    )
    assert client.accountant_actor("1026602336727") == "http://eln.fss.ru/actor/acc/1026602336727"
    assert client.FSS_ACTOR == "http://eln.fss.ru/actor/fss/ca/1027739443236"
    with pytest.raises(DataError, match="СНИЛС врача"):
        Signers(doctor=_key("Врач Петрова")).actors("1026602336727")
