"""The ИЭМК document stand-in as an outside system would meet it: raw SOAP over HTTP to /iemk/emk
and /iemk/registry, its refusals, its memory, and the asynchronous sendDocumentResult it posts to
a live receiver."""

from __future__ import annotations

import base64
import functools
import threading
import time
import uuid

import pytest
import requests
from lxml import etree
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from portal import crypto
from simulators import start_simulators

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"
TEMPURI = "http://tempuri.org/"
DTO = "http://schemas.datacontract.org/2004/07/EMKService.Data.Dto"
CASE = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto.Case"
MEDDOC = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto.MedRec.MedDoc"
COMMON = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto.Common"
STAFF = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto"
DOCS = "urn:obstetric-portal:iemk-documents"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
LPU = "1.2.643.5.1.13.13.12.2.35.3501"
CDA = (
    '<ClinicalDocument xmlns="urn:hl7-org:v3"><templateId root="1.2.643.5.1.13.13.15.18.4"/>'
    "<title>Протокол лабораторного исследования</title></ClinicalDocument>"
).encode()
PDF = b"%PDF-1.4\n%%EOF\n"


@functools.cache
def _key() -> crypto.SigningKey:
    return crypto.load_signing_key(*crypto.generate_demo_certificate("Смирнова Ольга Михайловна"))


def _sign(data: bytes) -> bytes:
    return crypto.detached_signature(_key(), data)


@pytest.fixture
def sims():
    server, base_url = start_simulators(0, config={"IEMK_RESULT_DELAY": 0})
    yield base_url
    server.shutdown()
    server.server_close()


class Receiver:
    """A live HTTP endpoint that keeps what is posted to it and answers as told."""

    def __init__(self, answer: tuple[int, bytes] = (200, b"")) -> None:
        self.bodies: list[bytes] = []
        self.answer = answer
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/iemk/callback"

    def _app(self, environ, start_response):
        self.bodies.append(Request(environ).get_data())
        status, body = self.answer
        return Response(body, status=status, content_type="text/xml; charset=utf-8")(environ, start_response)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- raw SOAP -------------------------------------------------------------------------------


def _call(url: str, operation: str, body: str, header: str = "", action: str | None = None):
    envelope = (
        f'<s:Envelope xmlns:s="{SOAP}" xmlns:wsa="{WSA}"><s:Header>{header}</s:Header>'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    if action:
        headers["SOAPAction"] = f'"{action}"'
    answer = requests.post(url, data=envelope.encode(), headers=headers, timeout=10)
    return answer.status_code, etree.fromstring(answer.content)


def _emk(sims: str, operation: str, params: str, header: str = ""):
    return _call(
        f"{sims}/iemk/emk",
        operation,
        f'<t:{operation} xmlns:t="{TEMPURI}">{params}</t:{operation}>',
        header,
        f"http://tempuri.org/IEmkService/{operation}",
    )


def _registry(sims: str, operation: str, params: str):
    return _call(
        f"{sims}/iemk/registry",
        operation,
        f'<d:{operation}Request xmlns:d="{DOCS}"><d:guid>g</d:guid><d:idLpu>{LPU}</d:idLpu>{params}'
        f"</d:{operation}Request>",
    )


def _add_patient(sims: str, mis: str, lpu: str = LPU) -> None:
    body = (
        f'<t:AddPatient xmlns:t="{TEMPURI}" xmlns:p="{DTO}"><t:guid>g</t:guid><t:idLPU>{lpu}</t:idLPU><t:patient>'
        f"<p:BirthDate>1994-05-06T00:00:00</p:BirthDate><p:FamilyName>Иванова</p:FamilyName>"
        f"<p:GivenName>Мария</p:GivenName><p:IdPatientMIS>{mis}</p:IdPatientMIS><p:Sex>2</p:Sex>"
        f"</t:patient></t:AddPatient>"
    )
    status, _answer = _call(f"{sims}/iemk/pix", "AddPatient", body)
    assert status == 200


def _create_case(sims: str, mis: str, case: str, case_type: str = "CaseAmb"):
    return _emk(
        sims,
        "CreateCase",
        f'<t:guid>g</t:guid><t:createCaseDto xmlns:c="{CASE}" xmlns:xsi="{XSI}" xsi:type="c:{case_type}">'
        f"<c:OpenDate>2026-11-01T00:00:00</c:OpenDate><c:HistoryNumber>{case}</c:HistoryNumber>"
        f"<c:IdCaseMis>{case}</c:IdCaseMis><c:IdLpu>{LPU}</c:IdLpu><c:IdPatientMis>{mis}</c:IdPatientMis>"
        f"</t:createCaseDto>",
    )


def _attachment(data: bytes, mime: str, sign: bytes | None) -> str:
    signs = (
        f"<m:PersonalSigns><m:MedDocumentDto.PersonalSign><m:Sign>{base64.b64encode(sign).decode()}</m:Sign>"
        f"</m:MedDocumentDto.PersonalSign></m:PersonalSigns>"
        if sign is not None
        else ""
    )
    return (
        f"<m:MedDocumentDto.DocumentAttachment><m:Data>{base64.b64encode(data).decode()}</m:Data>{signs}"
        f"<m:MimeType>{mime}</m:MimeType></m:MedDocumentDto.DocumentAttachment>"
    )


def _add_record(
    sims: str,
    mis: str,
    case: str,
    uid: str,
    *,
    attachments: list[str] | None = None,
    record_type: str = "LaboratoryReport",
    author: bool = True,
    message_id: str | None = None,
    reply_to: str | None = None,
):
    attachments = attachments if attachments is not None else [_attachment(CDA, "text/xml", _sign(CDA))]
    header = (f"<wsa:MessageID>{message_id}</wsa:MessageID>" if message_id else "") + (
        f"<wsa:ReplyTo><wsa:Address>{reply_to}</wsa:Address></wsa:ReplyTo>" if reply_to else ""
    )
    who = (
        f'<m:Author><s:Person xmlns:s="{STAFF}"><s:HumanName><s:GivenName>Ольга</s:GivenName>'
        f"<s:FamilyName>Смирнова</s:FamilyName></s:HumanName></s:Person></m:Author>"
        if author
        else ""
    )
    return _emk(
        sims,
        "AddMedRecord",
        f"<t:guid>g</t:guid><t:idLpu>{LPU}</t:idLpu><t:idPatientMis>{mis}</t:idPatientMis>"
        f'<t:idCaseMis>{case}</t:idCaseMis><t:medRecord xmlns:m="{MEDDOC}" xmlns:xsi="{XSI}" '
        f'xsi:type="m:{record_type}"><m:Attachments>{"".join(attachments)}</m:Attachments>{who}'
        f"<m:CreationDate>2026-11-20T10:00:00</m:CreationDate><m:Header>Протокол</m:Header>"
        f"<m:IdDocumentMis>{uid}</m:IdDocumentMis></t:medRecord>",
        header,
    )


def _fault(answer: etree._Element) -> dict[str, str]:
    fault = answer.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    found = {"faultcode": fault.findtext("faultcode"), "faultstring": fault.findtext("faultstring")}
    detail = fault.find("detail")
    for node in detail.iter() if detail is not None else []:
        if isinstance(node.tag, str) and not len(node):
            found[etree.QName(node).localname] = (node.text or "").strip()
    return found


def _documents(sims: str) -> list[dict]:
    return requests.get(f"{sims}/iemk/_documents", timeout=5).json()


def _settings(sims: str, **payload) -> requests.Response:
    return requests.post(f"{sims}/iemk/_settings", json=payload, timeout=5)


@pytest.fixture
def opened(sims):
    """A patient in the index with an open case."""
    _add_patient(sims, "pat-1")
    status, _answer = _create_case(sims, "pat-1", "preg-1")
    assert status == 200
    return sims


# --- contract -------------------------------------------------------------------------------


def test_both_wsdls_are_served_with_the_stand_in_s_addresses(sims):
    emk_wsdl = etree.fromstring(requests.get(f"{sims}/iemk/emk?singleWsdl", timeout=5).content)
    registry = etree.fromstring(requests.get(f"{sims}/iemk/registry?wsdl", timeout=5).content)

    def locations(wsdl):
        return {
            port.get("name"): port[0].get("location")
            for port in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/}port")
        }

    assert locations(emk_wsdl)["BasicHttpBinding_IEmkService"] == f"{sims}/iemk/emk"
    assert locations(registry) == {
        "IemkDocumentsPort": f"{sims}/iemk/registry",
        "IemkCallbackPort": "http://localhost/iemk/callback",  # the portal's, not ours
    }
    assert requests.get(f"{sims}/iemk/emk", timeout=5).status_code == 400


def test_get_version_and_unsupported_operations(sims):
    status, answer = _call(
        f"{sims}/iemk/emk",
        "GetVersion",
        f'<t:GetVersion xmlns:t="{TEMPURI}"/>',
        action="http://tempuri.org/IServiceSupport/GetVersion",
    )
    assert status == 200 and "EMKService" in etree.tostring(answer, encoding="unicode")
    status, answer = _emk(sims, "CloseCase", "<t:guid>g</t:guid>")
    assert (
        status == 500
        and _fault(answer)["faultstring"] == "Операция CloseCase симулятором ИЭМК не поддерживается"
    )


# --- cases ----------------------------------------------------------------------------------


def test_a_case_needs_a_known_patient_and_is_opened_once(sims):
    status, answer = _create_case(sims, "pat-9", "preg-9")
    assert status == 500 and _fault(answer)["ErrorCode"] == "3"
    assert "Пациент с IdPatientMIS pat-9 не найден" in _fault(answer)["faultstring"]

    _add_patient(sims, "pat-9")
    assert _create_case(sims, "pat-9", "preg-9", "CaseStat")[0] == 200
    status, answer = _create_case(sims, "pat-9", "preg-9")
    assert _fault(answer)["Message"] == f"Случай с IdCaseMis preg-9 уже существует в МО {LPU}"
    assert (_fault(answer)["PropertyName"], _fault(answer)["ErrorCode"]) == ("IdCaseMis", "2")
    [case] = requests.get(f"{sims}/iemk/_cases", timeout=5).json()
    assert (case["type"], case["IdPatientMis"]) == ("CaseStat", "pat-9")


# --- AddMedRecord ---------------------------------------------------------------------------


def _other_patient_case(sims):
    _add_patient(sims, "pat-2")
    _create_case(sims, "pat-2", "preg-2")
    return {"case": "preg-2"}


@pytest.mark.parametrize(
    ("change", "prop", "text"),
    [
        (lambda s: {"mis": "pat-404"}, "IdPatientMis", "Пациент с IdPatientMIS pat-404 не найден в МО"),
        (lambda s: {"case": "preg-404"}, "idCaseMis", "Случай с IdCaseMis preg-404 не найден"),
        (_other_patient_case, "idCaseMis", "Случай preg-2 открыт для другого пациента"),
        (lambda s: {"record_type": "Service"}, "medRecord", "не является медицинским документом"),
        (lambda s: {"author": False}, "Author", "Не указан автор документа"),
        (lambda s: {"uid": ""}, "IdDocumentMis", "Не заполнено обязательное поле IdDocumentMis"),
        (
            lambda s: {"attachments": [_attachment(PDF, "application/pdf", _sign(PDF))]},
            "Attachments",
            "Нет вложения с документом CDA",
        ),
        (
            lambda s: {"attachments": [_attachment(b"<ClinicalDocument", "text/xml", _sign(CDA))]},
            "Data",
            "Документ CDA не разобран как XML",
        ),
        (
            lambda s: {"attachments": [_attachment(CDA, "text/xml", None)]},
            "PersonalSigns",
            "нет персональной подписи",
        ),
        (
            lambda s: {
                "attachments": [
                    _attachment(CDA, "text/xml", _sign(CDA)),
                    _attachment(b"zip", "application/pdf", b"s"),
                ]
            },
            "Data",
            "данные не являются файлом PDF",
        ),
        (
            lambda s: {"attachments": [_attachment(CDA, "application/zip", b"s")]},
            "MimeType",
            "допустимы text/xml (CDA) и application/pdf",
        ),
    ],
)
def test_what_is_refused_at_once_is_named_and_not_stored(opened, change, prop, text):
    args = {"mis": "pat-1", "case": "preg-1", "uid": str(uuid.uuid4())} | change(opened)
    mis, case, uid = args.pop("mis"), args.pop("case"), args.pop("uid")

    status, answer = _add_record(opened, mis, case, uid, **args)

    fault = _fault(answer)
    assert status == 500 and fault["faultcode"] == "s:Client"
    assert fault["PropertyName"] == prop and text in fault["Message"]
    assert _documents(opened) == []


def test_a_resend_stores_nothing_new_and_after_an_error_replaces(opened):
    uid = str(uuid.uuid4())
    assert _add_record(opened, "pat-1", "preg-1", uid)[0] == 200
    assert _add_record(opened, "pat-1", "preg-1", uid)[0] == 200
    [stored] = _documents(opened)
    assert (stored["status"], stored["repeats"], stored["version"], stored["kind"]) == ("success", 1, 1, 75)

    rejected = str(uuid.uuid4())
    assert _settings(opened, reject_next={"count": 1, "code": "NO_SNILS"}).json()["reject_next"]["count"] == 1
    _add_record(opened, "pat-1", "preg-1", rejected)
    _add_record(opened, "pat-1", "preg-1", rejected)

    again = next(d for d in _documents(opened) if d["localUid"] == rejected)
    assert (again["status"], again["version"], again["repeats"]) == ("success", 2, 0)
    assert _settings(opened).json()["reject_next"] is None


def test_a_signature_that_does_not_verify_is_an_asynchronous_error(opened):
    uid = str(uuid.uuid4())
    _add_record(opened, "pat-1", "preg-1", uid, attachments=[_attachment(CDA, "text/xml", _sign(b"other"))])

    status, answer = _registry(opened, "getDocumentResult", f"<d:localUid>{uid}</d:localUid>")

    assert status == 200
    result = answer.find(f"{{{SOAP}}}Body/{{{DOCS}}}getDocumentResultResponse")
    assert result.findtext(f"{{{DOCS}}}status") == "error"
    assert (
        result.findtext(f"{{{DOCS}}}errors/{{{DOCS}}}item/{{{DOCS}}}code") == "SIGNATURE_VERIFICATION_ERROR"
    )
    assert result.findtext(f"{{{DOCS}}}emdrId") is None


# --- the registry ---------------------------------------------------------------------------


def test_results_searches_and_files_by_raw_soap(opened):
    _settings(opened, result_delay=300)
    later = str(uuid.uuid4())
    _add_record(opened, "pat-1", "preg-1", later)
    _settings(opened, result_delay=0)
    now = str(uuid.uuid4())
    _add_record(opened, "pat-1", "preg-1", now)

    _, checking = _registry(opened, "getDocumentResult", f"<d:localUid>{later}</d:localUid>")
    _, listed = _registry(
        opened, "searchDocuments", "<d:patient><d:idPatientMis>pat-1</d:idPatientMis></d:patient>"
    )
    _, fetched = _registry(
        opened,
        "getDocument",
        f"<d:patient><d:idPatientMis>pat-1</d:idPatientMis></d:patient><d:localUid>{now}</d:localUid>",
    )
    status, unknown = _registry(opened, "getDocumentResult", "<d:localUid>no-such</d:localUid>")

    assert checking.findtext(f".//{{{DOCS}}}status") == "processing"
    assert [i.findtext(f"{{{DOCS}}}localUid") for i in listed.iter(f"{{{DOCS}}}item")] == [now]  # stored only
    file = fetched.find(f".//{{{DOCS}}}file")
    data = base64.b64decode(file.findtext(f"{{{DOCS}}}data"))
    assert data == CDA and crypto.verify_detached(
        base64.b64decode(file.findtext(f"{{{DOCS}}}signature")), data
    )
    assert status == 500 and _fault(unknown)["code"] == "REGISTRY_ITEM_NOT_FOUND"


def test_modes_apply_to_every_ИЭМК_endpoint(sims):
    requests.post(f"{sims}/iemk/_control", json={"mode": "down"}, timeout=5)
    assert requests.post(f"{sims}/iemk/registry", data=b"<x/>", timeout=5).status_code == 503
    assert requests.post(f"{sims}/iemk/emk", data=b"<x/>", timeout=5).status_code == 503
    requests.post(f"{sims}/iemk/_control", json={"mode": "errors", "share": 1}, timeout=5)
    status, answer = _registry(sims, "getDocumentResult", "<d:localUid>x</d:localUid>")
    assert status == 500 and _fault(answer)["faultcode"] == "s:Server"


def test_settings_are_checked(sims):
    assert (
        "не найден в справочнике ФНСИ"
        in _settings(sims, reject_next={"count": 1, "code": "NO_SUCH"}).json()["error"]
    )
    assert _settings(sims, result_delay=-1).status_code == 400
    assert _settings(sims, callbacks="yes").status_code == 400
    assert _settings(sims, reject_next={"count": 2, "code": "RECIPIENT_SNILS_MISMATCH"}).status_code == 200
    assert requests.get(f"{sims}/iemk/_settings", timeout=5).json() == {
        "required_guid": None,
        "result_delay": 0.0,
        "callbacks": True,
        "reject_next": {"count": 2, "code": "RECIPIENT_SNILS_MISMATCH", "message": ""},
    }


# --- the asynchronous answer ----------------------------------------------------------------


def _wait_for_callbacks(sims: str, uid: str, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = next(d for d in _documents(sims) if d["localUid"] == uid)["callbacks"]
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("ответ не отправлен")


def test_the_result_is_posted_to_reply_to_relating_to_our_message(opened):
    receiver = Receiver()
    try:
        uid, message_id = str(uuid.uuid4()), f"urn:uuid:{uuid.uuid4()}"
        _add_record(opened, "pat-1", "preg-1", uid, message_id=message_id, reply_to=receiver.url)

        assert _wait_for_callbacks(opened, uid) == ["sendDocumentResult: доставлен (HTTP 200)"]
    finally:
        receiver.close()
    [body] = receiver.bodies
    envelope = etree.fromstring(body)
    assert envelope.findtext(f"{{{SOAP}}}Header/{{{WSA}}}RelatesTo") == message_id
    assert envelope.findtext(f"{{{SOAP}}}Header/{{{WSA}}}To") == receiver.url
    result = envelope.find(f"{{{SOAP}}}Body/{{{DOCS}}}sendDocumentResult")
    assert [etree.QName(c).localname for c in result] == [
        "relatesToMessage",
        "localUid",
        "status",
        "emdrId",
        "registrationDateTime",
    ]
    assert (result.findtext(f"{{{DOCS}}}relatesToMessage"), result.findtext(f"{{{DOCS}}}localUid")) == (
        message_id,
        uid,
    )
    assert result.findtext(f"{{{DOCS}}}emdrId") == _documents(opened)[0]["emdrId"]


def test_an_error_result_carries_its_codes(opened):
    receiver = Receiver()
    try:
        _settings(opened, reject_next={"count": 1, "code": "NO_SNILS", "message": ""})
        uid = str(uuid.uuid4())
        _add_record(opened, "pat-1", "preg-1", uid, message_id="m-1", reply_to=receiver.url)
        _wait_for_callbacks(opened, uid)
    finally:
        receiver.close()
    result = etree.fromstring(receiver.bodies[0]).find(f"{{{SOAP}}}Body/{{{DOCS}}}sendDocumentResult")
    assert result.findtext(f"{{{DOCS}}}status") == "error"
    assert result.findtext(f"{{{DOCS}}}errors/{{{DOCS}}}item/{{{DOCS}}}code") == "NO_SNILS"


def test_undelivered_and_refused_answers_are_kept_for_everyone_to_see(opened):
    refusing = Receiver(
        (
            500,
            f'<s:Envelope xmlns:s="{SOAP}"><s:Body><s:Fault><faultcode>s:Client</faultcode>'
            f"<faultstring>Неизвестный документ</faultstring></s:Fault></s:Body></s:Envelope>".encode(),
        )
    )
    gone = Receiver()
    gone.close()  # nothing listens there any more
    try:
        refused, lost, quiet = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
        _add_record(opened, "pat-1", "preg-1", refused, message_id="m-1", reply_to=refusing.url)
        _add_record(opened, "pat-1", "preg-1", lost, message_id="m-2", reply_to=gone.url)
        _add_record(opened, "pat-1", "preg-1", quiet, message_id="m-3")

        assert _wait_for_callbacks(opened, refused) == [
            "sendDocumentResult: отклонён (HTTP 500): Неизвестный документ"
        ]
        assert len(refusing.bodies) == 1  # a refusal of the content is not repeated
        assert _wait_for_callbacks(opened, lost) == ["sendDocumentResult: не доставлен (ConnectionError)"]
        assert _wait_for_callbacks(opened, quiet) == ["не отправляется: нет wsa:ReplyTo"]
    finally:
        refusing.close()
