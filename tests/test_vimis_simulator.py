"""The ВИМИС «АКиНЕО» simulator as the portal meets it: signed SOAP over real HTTP.

Requests are built by hand like the official ИПС examples (and once through zeep, as the
portal's client does); answers and callbacks are checked the way the portal will check them.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from lxml import etree
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from portal.clinical.identifiers import enp_check_digit, snils_check_number
from portal.crypto import (
    WsSecurity,
    crc32_checksum,
    detached_signature,
    generate_demo_certificate,
    load_signing_key,
    set_wsu_id,
    sign_envelope,
    verify_envelope,
)
from simulators import start_simulators

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
WSA = "http://www.w3.org/2005/08/addressing"
VIMIS = "http://vimis.rosminzdrav.ru/"
CALLBACK = "http://callback.mis.vimis.rosminzdrav.ru/"
ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
WSDL = Path(__file__).resolve().parent.parent / "portal" / "schemas" / "vimis" / "akineo.wsdl"

PATIENT_SNILS = "112-233-445 95"
DOCTOR_SNILS = f"123-456-789 {snils_check_number('123456789')}"
ENP = "770000000000001" + enp_check_digit("770000000000001")
MO_OID = "1.2.643.5.1.13.13.12.2.77.8481"


@pytest.fixture(scope="module")
def mis_key():
    return load_signing_key(*generate_demo_certificate("МИС роддома (тест ВИМИС)"))


@pytest.fixture
def host():
    server, base_url = start_simulators(port=0, config={"VIMIS_RESULT_DELAY": 0, "VIMIS_CALLBACK_TIMEOUT": 5})
    yield base_url
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver():
    """The МИС callback service: a local HTTP server that records what ВИМИС posts."""
    received: list[dict] = []
    arrived = threading.Condition()

    def app(environ, start_response):
        request = Request(environ)
        with arrived:
            received.append({"body": request.get_data(), "soap_action": request.headers.get("SOAPAction")})
            arrived.notify_all()
        return Response(status=200)(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def wait(count: int, timeout: float = 10) -> list[dict]:
        with arrived:
            arrived.wait_for(lambda: len(received) >= count, timeout)
        return list(received)

    yield f"http://127.0.0.1:{server.server_port}/vimis/callback", wait
    server.shutdown()
    server.server_close()


def cda(
    *,
    snils: str | None = PATIENT_SNILS,
    doctor_snils: str | None = DOCTOR_SNILS,
    set_id: str = "17-1001",
    version: int = 1,
    custodian: str = MO_OID,
    enp: str | None = ENP,
    sex_code_system: str | None = "1.2.643.5.1.13.13.11.1040",
) -> bytes:
    """A small ClinicalDocument with the header fields ФЛК looks at."""
    snils_id = f'<id root="1.2.643.100.3" extension="{snils}"/>' if snils else ""
    doctor_id = f'<id root="1.2.643.100.3" extension="{doctor_snils}"/>' if doctor_snils else ""
    system = f' codeSystem="{sex_code_system}"' if sex_code_system else ""
    policy = (
        f'<participant typeCode="HLD"><associatedEntity classCode="POLHOLD">'
        f'<id root="1.2.643.5.1.13.2.7.100.2" extension="{enp}"/></associatedEntity></participant>'
        if enp
        else ""
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <realmCode code="RU"/>
  <id root="{MO_OID}.100.1.1.51" extension="{uuid.uuid4()}"/>
  <code code="SMSV17" codeSystem="1.2.643.5.1.13.13.99.2.592" codeSystemVersion="2.1"
        displayName="Выписной эпикриз из родильного дома"/>
  <languageCode code="ru-RU"/>
  <setId root="{MO_OID}.100.1.1.50" extension="{set_id}"/>
  <versionNumber value="{version}"/>
  <recordTarget><patientRole>
    {snils_id}
    <addr use="H"><streetAddressLine>г. Липецк, ул. Мира, д. 1</streetAddressLine><state>48</state></addr>
    <patient>
      <name><family>Иванова</family><given>Мария</given><given>Петровна</given></name>
      <administrativeGenderCode code="2"{system} displayName="Женский"/>
      <birthTime value="19950312"/>
    </patient>
  </patientRole></recordTarget>
  <author><time value="202405011200+0300"/><assignedAuthor>
    {doctor_id}
    <code code="27" codeSystem="1.2.643.5.1.13.13.11.1002" displayName="врач-акушер-гинеколог"/>
  </assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization>
    <id root="{custodian}"/><name>ГУЗ Роддом</name>
  </representedCustodianOrganization></assignedCustodian></custodian>
  {policy}
</ClinicalDocument>
""".encode()


def _wsa(header, name: str, text: str | None, wsu_id: str | None) -> etree._Element:
    element = etree.SubElement(header, f"{{{WSA}}}{name}", nsmap={None: WSA})
    if text is not None:
        element.text = text
    if wsu_id:
        set_wsu_id(element, wsu_id)
    return element


def envelope(
    body_xml: str,
    key,
    *,
    message_id: str | None = None,
    reply_to: str = ANONYMOUS,
    action: str = "sendDocument",
) -> bytes:
    """A request shaped like «1. Request.xml»: wsa headers with wsu:Id, transportHeader, signature."""
    root = etree.fromstring(
        f'<S:Envelope xmlns:S="{SOAP}" xmlns:wsu="{WSU}"><S:Header/>'
        f'<S:Body wsu:Id="body">{body_xml}</S:Body></S:Envelope>'
    )
    header = root.find(f"{{{SOAP}}}Header")
    _wsa(header, "To", "https://ips-test.rosminzdrav.ru/386f2299dd31b", "id-to")
    _wsa(header, "Action", action, "id-action")
    etree.SubElement(_wsa(header, "ReplyTo", None, "id-replyto"), f"{{{WSA}}}Address").text = reply_to
    etree.SubElement(_wsa(header, "FaultTo", None, None), f"{{{WSA}}}Address").text = ANONYMOUS
    _wsa(header, "MessageID", message_id or str(uuid.uuid4()), "id-messageid")
    transport = etree.SubElement(header, "{http://egisz.rosminzdrav.ru}transportHeader")
    auth = etree.SubElement(transport, "{http://egisz.rosminzdrav.ru}authInfo")
    etree.SubElement(
        auth, "{http://egisz.rosminzdrav.ru}clientEntityId"
    ).text = "523dec46-f829-7e86-5c0e-1550d5718871"
    if key is not None:
        sign_envelope(root, key, ["body", "id-to", "id-action", "id-replyto", "id-messageid"])
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def send_body(
    document: bytes, key, *, doc_type: int = 17, version: str = "2", checksum: str | None = None
) -> str:
    signature = ""
    if key is not None:
        data = base64.b64encode(detached_signature(key, document)).decode()
        signature = (
            f'<signature xmlns=""><data>{data}</data>'
            f"<checksum>{checksum or crc32_checksum(document)}</checksum></signature>"
        )
    return (
        f'<sendDocument xmlns="{VIMIS}"><vmcl xmlns="">3</vmcl><docType xmlns="">{doc_type}</docType>'
        f'<docTypeVersion xmlns="">{version}</docTypeVersion><triggerPoint xmlns="">8</triggerPoint>'
        f'<interimMsg xmlns="">0</interimMsg>{signature}'
        f'<document xmlns="">{base64.b64encode(document).decode()}</document></sendDocument>'
    )


def post(base_url: str, data: bytes, timeout: float = 10) -> requests.Response:
    return requests.post(
        f"{base_url}/vimis/ws",
        data=data,
        headers={"Content-Type": "text/xml; charset=utf-8"},
        timeout=timeout,
    )


def send(base_url: str, key, document: bytes, *, timeout: float = 10, **kwargs) -> requests.Response:
    checksum = kwargs.pop("checksum", None)
    return post(base_url, envelope(send_body(document, key, checksum=checksum), key, **kwargs), timeout)


def answer_of(response: requests.Response, base_url: str) -> etree._Element:
    """The body child of a signed answer, after checking its signature against the simulator's certificate."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/xml")
    root = etree.fromstring(response.content)
    trusted = requests.get(f"{base_url}/vimis/_certificate", timeout=5).text
    assert "ИПС ЕГИСЗ" in verify_envelope(root, trusted_pem=trusted)
    return root.find(f"{{{SOAP}}}Body")[0]


def msg_id_of(response: requests.Response, base_url: str) -> str:
    answer = answer_of(response, base_url)
    assert answer.tag == f"{{{VIMIS}}}returnMsgId"
    return answer.findtext("msg_id")


def fault_of(response: requests.Response) -> tuple[str, str]:
    assert response.status_code == 500
    fault = etree.fromstring(response.content).find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    return fault.findtext("faultcode"), fault.findtext("faultstring")


def check_status(base_url: str, key, identifier: str) -> requests.Response:
    body = f'<checkStatus xmlns="{VIMIS}"><msg_id xmlns="">{identifier}</msg_id></checkStatus>'
    return post(base_url, envelope(body, key, action="checkStatus"))


def status_of(base_url: str, key, identifier: str) -> tuple[int, str]:
    answer = answer_of(check_status(base_url, key, identifier), base_url)
    assert answer.tag == f"{{{VIMIS}}}checkStatusResponse"
    return int(answer.findtext("status")), answer.findtext("description")


def documents(base_url: str) -> list[dict]:
    return requests.get(f"{base_url}/vimis/_documents", timeout=5).json()


def settings(base_url: str, **payload) -> requests.Response:
    return requests.post(f"{base_url}/vimis/_settings", json=payload, timeout=5)


# --- tests ----------------------------------------------------------------------------------


def test_wsdl_points_at_this_host(host):
    answer = requests.get(f"{host}/vimis/ws?wsdl", timeout=5)
    assert answer.status_code == 200
    wsdl = etree.fromstring(answer.content)
    address = wsdl.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address.get("location") == f"{host}/vimis/ws"
    operations = {op.get("name") for op in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/}operation")}
    assert operations == {"sendDocument", "checkStatus"}


def test_accepted_document_gets_msg_id_and_passes_flk(host, mis_key):
    response = send(host, mis_key, cda(), message_id="f7e12d2b-6d85-44c7-9bef-c6bc1c67c5db")
    assert b'<returnMsgId xmlns="http://vimis.rosminzdrav.ru/"><msg_id xmlns="">' in response.content
    msg_id = msg_id_of(response, host)
    assert uuid.UUID(msg_id).version == 4
    assert status_of(host, mis_key, msg_id) == (1, "Запись в базу данных выполнена успешно")
    [record] = documents(host)
    assert record["msg_id"] == msg_id and record["message_id"] == "f7e12d2b-6d85-44c7-9bef-c6bc1c67c5db"
    assert (record["docType"], record["version"], record["setId"], record["status"]) == (
        17,
        "1",
        "17-1001",
        1,
    )
    assert "МИС роддома" in record["signer"]


def test_unsigned_or_badly_signed_request_is_a_fault(host, mis_key):
    code, text = fault_of(post(host, envelope(send_body(cda(), None), None)))
    assert code == "soap:Client" and text.startswith(
        "Подпись запроса не прошла проверку: сообщение не подписано"
    )

    signed = envelope(send_body(cda(), mis_key), mis_key)
    tampered = signed.replace(b'<docType xmlns="">17</docType>', b'<docType xmlns="">8</docType>')
    code, text = fault_of(post(host, tampered))
    assert code == "soap:Client" and "#body изменён после подписания" in text
    assert documents(host) == []


def test_flk_errors_come_back_as_status_0_with_russian_descriptions(host, mis_key):
    cases = {
        "no_snils": cda(snils=None),
        "bad_snils": cda(snils="123-456-789 00"),
        "no_code_system": cda(sex_code_system=None),
        "no_doctor_snils": cda(doctor_snils=None),
        "bad_enp": cda(enp="7700000000000010" if ENP[-1] != "0" else "7700000000000011"),
        "not_frmo": cda(custodian="1.2.3.4"),
    }
    msg_ids = {name: msg_id_of(send(host, mis_key, document), host) for name, document in cases.items()}
    results = {name: status_of(host, mis_key, msg_id) for name, msg_id in msg_ids.items()}
    assert all(status == 0 for status, _ in results.values())
    assert results["no_snils"][1] == "ФЛК: Этап 1. Не указан СНИЛС пациента"
    assert (
        results["bad_snils"][1] == "ФЛК: Этап 1. Некорректная контрольная сумма СНИЛС пациента 123-456-789 00"
    )
    assert results["no_code_system"][1] == (
        "ФЛК: Этап 2. Элемент administrativeGenderCode с кодом «2»: не указан codeSystem"
    )
    assert results["no_doctor_snils"][1] == "ФЛК: Этап 4. Не указан СНИЛС медицинского работника"
    assert results["bad_enp"][1].startswith("ФЛК: Этап 1. Некорректная контрольная сумма ЕНП пациента")
    assert results["not_frmo"][1] == "ФЛК: Этап 3. Организация-владелец документа 1.2.3.4 не найдена в ФРМО"

    several = msg_id_of(send(host, mis_key, cda(snils=None, doctor_snils="123-456-789 00")), host)
    assert status_of(host, mis_key, several)[1] == (
        "ФЛК: Этап 1. Не указан СНИЛС пациента; "
        "ФЛК: Этап 4. Некорректная контрольная сумма СНИЛС медицинского работника 123-456-789 00"
    )


def test_not_xml_and_wrong_checksum_are_rejected_by_flk(host, mis_key):
    not_xml = msg_id_of(send(host, mis_key, "Иванова".encode()), host)
    assert status_of(host, mis_key, not_xml) == (0, "Data at the root level is invalid. Line 1, position 1.")
    bad_checksum = msg_id_of(send(host, mis_key, cda(), checksum="12345"), host)
    assert status_of(host, mis_key, bad_checksum) == (0, "ФЛК: Контрольная сумма документа не совпадает")


def test_callback_reaches_the_reply_to_address_signed(host, mis_key, receiver):
    url, wait = receiver
    ok = msg_id_of(send(host, mis_key, cda(), reply_to=url), host)
    bad = msg_id_of(send(host, mis_key, cda(snils=None), reply_to=url), host)
    trusted = requests.get(f"{host}/vimis/_certificate", timeout=5).text
    results = {}
    for call in wait(2):
        root = etree.fromstring(call["body"])
        assert "ИПС ЕГИСЗ" in verify_envelope(root, trusted_pem=trusted)
        assert call["soap_action"] == '"sendResult"'
        header = root.find(f"{{{SOAP}}}Header")
        assert header.findtext(f"{{{WSA}}}To") == url and header.findtext(f"{{{WSA}}}Action") == "sendResult"
        result = root.find(f"{{{SOAP}}}Body/{{{CALLBACK}}}sendResult")
        results[result.findtext("msg_id")] = (int(result.findtext("status")), result.findtext("description"))
    assert results == {
        ok: (1, "Запись в базу данных выполнена успешно"),
        bad: (0, "ФЛК: Этап 1. Не указан СНИЛС пациента"),
    }
    time.sleep(0.2)
    assert all(d["callbacks"] == ["sendResult: доставлен (HTTP 200)"] for d in documents(host))


def test_result_waits_for_the_delay_and_no_callback_when_switched_off(host, mis_key, receiver):
    url, wait = receiver
    assert settings(host, result_delay=0.8, callbacks=False).json() == {
        "result_delay": 0.8,
        "callbacks": False,
    }
    msg_id = msg_id_of(send(host, mis_key, cda(), reply_to=url), host)
    assert status_of(host, mis_key, msg_id) == (2, "Документ в обработке")
    time.sleep(1.0)
    assert status_of(host, mis_key, msg_id)[0] == 1
    assert wait(1, timeout=0.5) == []  # the portal has to poll checkStatus
    assert settings(host, result_delay=-1).status_code == 400
    assert settings(host, callbacks="да").status_code == 400


def test_check_status_by_message_id_and_unknown_id(host, mis_key):
    message_id = str(uuid.uuid4())
    msg_id = msg_id_of(send(host, mis_key, cda(), message_id=message_id), host)
    by_message_id = status_of(host, mis_key, message_id)
    assert by_message_id == status_of(host, mis_key, msg_id) == (1, "Запись в базу данных выполнена успешно")
    unknown = str(uuid.uuid4())
    code, text = fault_of(check_status(host, mis_key, unknown))
    assert code == "soap:Client" and text == f"Документ не найден: {unknown}"


def test_same_message_id_twice_makes_one_document(host, mis_key):
    message_id = str(uuid.uuid4())
    first = msg_id_of(send(host, mis_key, cda(set_id="17-7"), message_id=message_id), host)
    again = msg_id_of(send(host, mis_key, cda(set_id="17-7"), message_id=message_id), host)
    assert first == again
    other = msg_id_of(send(host, mis_key, cda(set_id="17-7", version=2)), host)
    assert other != first
    versions = sorted(d["version"] for d in documents(host) if d["setId"] == "17-7")
    assert versions == ["1", "2"]


def test_duplicate_addressing_headers_are_refused(host, mis_key):
    root = etree.fromstring(envelope(send_body(cda(), mis_key), None))
    header = root.find(f"{{{SOAP}}}Header")
    _wsa(header, "MessageID", "urn:uuid:" + str(uuid.uuid4()), None)  # e.g. zeep's own, left in
    sign_envelope(root, mis_key, ["body", "id-to", "id-action", "id-replyto", "id-messageid"])
    code, text = fault_of(post(host, etree.tostring(root)))
    assert code == "soap:Client" and "wsa:MessageID повторяется" in text
    assert documents(host) == []


def test_down_and_errors_modes(host, mis_key):
    requests.post(f"{host}/vimis/_control", json={"mode": "down"}, timeout=5)
    assert send(host, mis_key, cda()).status_code == 503

    requests.post(f"{host}/vimis/_control", json={"mode": "errors", "share": 1.0}, timeout=5)
    code, text = fault_of(send(host, mis_key, cda()))
    assert code == "soap:Server" and "Внутренняя ошибка" in text
    assert documents(host) == []  # neither mode accepted anything

    requests.post(f"{host}/vimis/_control", json={"share": 0.0}, timeout=5)
    assert msg_id_of(send(host, mis_key, cda()), host)


def test_slow_mode_stores_the_document_although_the_client_timed_out(host, mis_key):
    requests.post(f"{host}/vimis/_control", json={"mode": "slow", "delay": 1.5}, timeout=5)
    message_id = str(uuid.uuid4())
    with pytest.raises(requests.Timeout):
        send(host, mis_key, cda(set_id="17-slow"), message_id=message_id, timeout=0.5)
    [record] = documents(host)  # accepted before the answer was delayed
    assert record["message_id"] == message_id and record["setId"] == "17-slow"
    requests.post(f"{host}/vimis/_control", json={"mode": "normal"}, timeout=5)
    # the portal asks by its MessageID instead of sending again
    assert status_of(host, mis_key, message_id) == (1, "Запись в базу данных выполнена успешно")


def _zeep_service(base_url: str, key, message_id: str, reply_to: str):
    """The portal's way: zeep on the local WSDL, WsSecurity adding the ИПС headers and pinning answers."""
    from zeep import Client
    from zeep.transports import Transport

    def add_headers(envelope):
        header = envelope.find(f"{{{SOAP}}}Header")
        for element in header.findall(f"{{{WSA}}}*"):  # zeep's own wsa headers (urn:uuid MessageID)
            header.remove(element)
        action = envelope.find(f"{{{SOAP}}}Body")[0].tag.split("}")[1]
        _wsa(header, "To", f"{base_url}/vimis/ws", "id-to")
        _wsa(header, "Action", action, "id-action")
        etree.SubElement(_wsa(header, "ReplyTo", None, "id-replyto"), f"{{{WSA}}}Address").text = reply_to
        _wsa(header, "MessageID", message_id, "id-messageid")
        return ["id-to", "id-action", "id-replyto", "id-messageid"]

    trusted = requests.get(f"{base_url}/vimis/_certificate", timeout=5).text
    client = Client(
        str(WSDL),
        wsse=WsSecurity(key, add_headers, trusted_pem=trusted),
        transport=Transport(timeout=5, operation_timeout=5),
    )
    return client.create_service("{http://vimis.rosminzdrav.ru/}receiverSoapBinding", f"{base_url}/vimis/ws")


def test_zeep_client_talks_to_the_simulator(host, mis_key, receiver):
    from zeep.exceptions import Fault

    url, wait = receiver
    document = cda(set_id="17-zeep")
    message_id = str(uuid.uuid4())
    service = _zeep_service(host, mis_key, message_id, url)
    msg_id = service.sendDocument(
        vmcl=3,
        docType=17,
        docTypeVersion="2",
        triggerPoint=8,
        interimMsg=1,
        signature={
            "data": base64.b64encode(detached_signature(mis_key, document)).decode(),
            "checksum": int(crc32_checksum(document)),
        },
        document=base64.b64encode(document).decode(),
    )
    assert isinstance(msg_id, str) and documents(host)[0]["message_id"] == message_id
    result = service.checkStatus(msg_id=msg_id)
    assert (result.status, result.description) == (1, "Запись в базу данных выполнена успешно")
    assert service.checkStatus(msg_id=message_id).status == 1
    with pytest.raises(Fault) as fault:
        service.checkStatus(msg_id="no-such-id")
    assert fault.value.code == "soap:Client" and fault.value.message == "Документ не найден: no-such-id"
    actions = [etree.fromstring(c["body"]).find(f"{{{SOAP}}}Body")[0].tag.split("}")[1] for c in wait(2)]
    assert actions == ["sendInterimMsg", "sendResult"]  # interimMsg=1 asked for the intermediate message


def test_documents_built_by_the_portal_pass_flk(app, host, mis_key):
    """Every SEMD type as portal.vimis.builders writes it is accepted with status 1."""
    from datetime import UTC, datetime

    from portal.vimis.builders import build_document
    from portal.vimis.semd_types import SEMD_TYPES
    from tests.vimis.helpers import make_semd_case

    sent = {}
    for semd_type, semd in SEMD_TYPES.items():
        case = make_semd_case(semd_type)
        document = build_document(
            case.event, semd_type, version=1, document_uuid=str(uuid.uuid4()), created_at=datetime.now(UTC)
        )
        body = send_body(document, mis_key, doc_type=semd.doc_type, version=str(semd.doc_type_version))
        sent[semd_type] = msg_id_of(post(host, envelope(body, mis_key)), host)
    results = {semd_type: status_of(host, mis_key, msg_id) for semd_type, msg_id in sent.items()}
    assert results == {t: (1, "Запись в базу данных выполнена успешно") for t in SEMD_TYPES}
