"""ИЭМК N3.Health stand-in, documents: EMKService (`EMKService.xml`, SOAP 1.1) and the document
registry of the portal's `IemkDocuments.wsdl`, with the asynchronous answer sendDocumentResult.

Routes on the "iemk" simulator's blueprint (simulators/iemk.py), so modes, guid and the patient
index are shared with PixService:

    GET  /iemk/emk?wsdl          the EMKService WSDL (also ?singleWsdl), address pointing here
    POST /iemk/emk               GetVersion, CreateCase, AddMedRecord (other operations: a Fault)
    GET  /iemk/registry?wsdl     IemkDocuments.wsdl, the registry's address pointing here
    POST /iemk/registry          searchDocuments, getDocument, getDocumentResult
    GET  /iemk/_documents        the stored documents with their status and callbacks (JSON)
    GET  /iemk/_cases            the opened cases (JSON)
    GET|POST /iemk/_settings     (simulators/iemk.py) also {"result_delay": seconds,
                                 "callbacks": true|false, "reject_next": {"count", "code",
                                 "message"} | null}

What it checks at once (RequestFault, as for the patient index): the guid (when required);
CreateCase: a case type, IdCaseMis, IdLpu, IdPatientMis, OpenDate, the patient in the index
(AddPatient first), not opened before (ErrorCode 2); AddMedRecord: the patient in the index,
the case opened for that patient, a MedDocument subtype with IdDocumentMis, CreationDate and
Author, a CDA attachment (text/xml) that parses as XML, every attachment with a personal
signature, PDFs that are PDFs.

Then it answers later, as ИЭМК does: `result_delay` seconds after the upload the result is
known — success with an emdrId, or an error with ФНСИ 305 codes: the next `reject_next.count`
documents get `reject_next.code` (message empty unless given, so the portal shows the
directory's text), a personal signature that does not verify gets SIGNATURE_VERIFICATION_ERROR.
getDocumentResult answers "processing" until then; with `callbacks` on, sendDocumentResult is
posted to the AddMedRecord's wsa:ReplyTo (what happened to each delivery is listed in
/_documents). AddMedRecord of an IdDocumentMis already stored and not in error stores nothing
new (a resend after a lost answer is harmless); after an error it replaces the document.

Modes (`behaviour("iemk")`): "down" 503 and "errors" a Fault `s:Server` before reading the
request; "slow" processes and stores the request FIRST and then delays the answer, so a client
timeout means "stored, answer lost". Host config: IEMK_RESULT_DELAY (default 2 s),
IEMK_CALLBACKS (default True), IEMK_CALLBACK_TIMEOUT (default 10 s).
"""

from __future__ import annotations

import base64
import binascii
import csv
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from flask import Response, current_app, jsonify, request, url_for
from lxml import etree

from portal.crypto import SignatureError, verify_detached
from simulators import iemk
from simulators.iemk import E_ACCESS, E_EXISTS, E_NOT_FOUND, E_VALIDATION, SOAP, TEMPURI, XSI, Refusal
from simulators.server import behaviour, processed_then_answered, storage

log = logging.getLogger("simulators.iemk")

bp = iemk.bp
NAME = iemk.NAME
SCHEMAS = Path(__file__).resolve().parent.parent / "portal" / "schemas" / "iemk"
EMK_WSDL = SCHEMAS / "EMKService.xml"
DOCS_WSDL = SCHEMAS / "IemkDocuments.wsdl"
MESSAGE_CODES = SCHEMAS / "remd_message_codes.csv"
NS_DOCS = "urn:obstetric-portal:iemk-documents"
WSA = "http://www.w3.org/2005/08/addressing"
XS = "http://www.w3.org/2001/XMLSchema"
HL7 = "urn:hl7-org:v3"
MEDDOC = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto.MedRec.MedDoc"
EMK_ACTIONS = {
    "http://tempuri.org/IServiceSupport/GetVersion": "GetVersion",
    **{
        f"http://tempuri.org/IEmkService/{op}": op
        for op in (
            "AddCase",
            "CreateCase",
            "AddStepToCase",
            "AddMedRecord",
            "UpdateCase",
            "CloseCase",
            "CancelCase",
        )
    },
}
DOCS_OPERATIONS = ("searchDocuments", "getDocument", "getDocumentResult")
CASE_TYPES = ("CaseAmb", "CaseStat", "CaseAcps", "CaseTmc")
ANONYMOUS = {
    "http://www.w3.org/2005/08/addressing/anonymous",
    "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous",
}
# ФНСИ 1520 kind of a SEMD, by the CDA's templateId, else by the MedDocument subtype it came in.
TEMPLATE_KINDS = {
    "1.2.643.5.1.13.13.15.25.4": 77,
    "1.2.643.5.1.13.13.15.26.4": 92,
    "1.2.643.5.1.13.13.15.18.4": 75,
    "1.2.643.5.1.13.13.15.31.2": 43,
    "1.2.643.5.1.13.13.15.13.4": 119,
    "1.2.643.5.1.13.13.15.17.4": 174,
}
TYPE_KINDS = {
    "DischargeSummary": 77,
    "Form027U": 92,
    "LaboratoryReport": 75,
    "Referral": 43,
    "ConsultNote": 119,
    "PacsResult": 174,
}
CDA_MIME, PDF_MIME = "text/xml", "application/pdf"
SERVICE_VERSION = "N3.Health EMKService (локальный симулятор) 1.0"
CALLBACK_ATTEMPTS = 5  # at 0.5, 1, 1.5, 2 s: a Fault «Server» or no answer is tried again
MAX_DELAY = 300.0


def _medical_document_types() -> frozenset[str]:
    """The MedDocument subtypes of the WSDL (direct and indirect), read from the file itself."""
    tree = etree.parse(str(EMK_WSDL))
    schema = tree.find(f".//{{{XS}}}schema[@targetNamespace='{MEDDOC}']")
    bases = {}
    for complex_type in schema.findall(f"{{{XS}}}complexType"):
        extension = complex_type.find(f".//{{{XS}}}extension")
        if extension is not None:
            bases[complex_type.get("name")] = extension.get("base").split(":")[-1]
    found = set()
    for name in bases:
        current = name
        while current in bases and current != "MedDocument":
            current = bases[current]
        if current == "MedDocument":
            found.add(name)
    return frozenset(found)


MED_DOCUMENT_TYPES = _medical_document_types()


def _message_codes() -> set[str]:
    with MESSAGE_CODES.open(encoding="utf-8", newline="") as source:
        return {row["code"].strip() for row in csv.DictReader(source)}


MESSAGE_CODE_SET = _message_codes()


# --- state ----------------------------------------------------------------------------------


@dataclass
class Stored:
    """A document as ИЭМК keeps it, with the result it will give."""

    lpu: str
    local_uid: str
    patient_mis: str
    global_id: str
    case_id: str
    record_type: str
    kind: int | None
    title: str
    created_at: str
    author: str
    files: list[tuple[str, bytes, bytes | None]]  # (mime type, data, personal signature)
    message_id: str | None
    reply_to: str | None
    received_at: datetime
    ready_at: float  # time.time() when the result is known
    final_status: str  # "success" | "error"
    emdr_id: str | None
    errors: list[tuple[str, str]]
    registered_at: datetime
    version: int = 1
    repeats: int = 0  # uploads of the same IdDocumentMis answered without storing anything new
    callbacks: list[str] = field(default_factory=list)

    def status(self) -> str:
        return "processing" if time.time() < self.ready_at else self.final_status

    def as_dict(self) -> dict[str, Any]:
        status = self.status()
        return {
            "idLpu": self.lpu,
            "localUid": self.local_uid,
            "idPatientMis": self.patient_mis,
            "IdGlobal": self.global_id,
            "idCaseMis": self.case_id,
            "type": self.record_type,
            "kind": self.kind,
            "title": self.title,
            "creationDate": self.created_at,
            "author": self.author,
            "attachments": [
                {"mimeType": mime, "size": len(data), "signed": bool(sign)} for mime, data, sign in self.files
            ],
            "status": status,
            "emdrId": self.emdr_id if status == "success" else None,
            "errors": [{"code": c, "message": m} for c, m in self.errors] if status == "error" else [],
            "version": self.version,
            "repeats": self.repeats,
            "message_id": self.message_id,
            "reply_to": self.reply_to,
            "received_at": self.received_at.isoformat(),
            "callbacks": list(self.callbacks),
        }


class EmkState:
    def __init__(self, result_delay: float, callbacks: bool, callback_timeout: float) -> None:
        self.lock = threading.Lock()
        self.result_delay = result_delay
        self.callbacks = callbacks
        self.callback_timeout = callback_timeout
        self.rejections: list[tuple[str, str]] = []  # (code, message) for the next documents
        self.cases: dict[tuple[str, str], dict[str, str]] = {}  # (idLpu, IdCaseMis) → case
        self.documents: dict[tuple[str, str], Stored] = {}  # (idLpu, IdDocumentMis) → document
        self.emdr_numbers = 0

    def settings(self) -> dict[str, Any]:
        reject = None
        if self.rejections:
            code, message = self.rejections[0]
            reject = {"count": len(self.rejections), "code": code, "message": message}
        return {"result_delay": self.result_delay, "callbacks": self.callbacks, "reject_next": reject}


_state_lock = threading.Lock()


def _state() -> EmkState:
    store = storage(NAME)
    with _state_lock:
        if "emk" not in store:
            config = current_app.config
            store["emk"] = EmkState(
                result_delay=float(config.get("IEMK_RESULT_DELAY", 2)),
                callbacks=bool(config.get("IEMK_CALLBACKS", True)),
                callback_timeout=float(config.get("IEMK_CALLBACK_TIMEOUT", 10)),
            )
        return store["emk"]


def current_settings() -> dict[str, Any]:
    return _state().settings()


def settings_problem(payload: dict[str, Any]) -> str | None:
    """Why the document part cannot take these settings (Russian), or None."""
    delay = payload.get("result_delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= MAX_DELAY:
        return f"Задержка результата result_delay должна быть числом секунд от 0 до {MAX_DELAY:g}."
    if not isinstance(payload.get("callbacks", True), bool):
        return "Поле callbacks должно быть true или false."
    reject = payload.get("reject_next")
    if reject is not None:
        if not isinstance(reject, dict):
            return 'Поле reject_next: ожидается {"count": число, "code": "код ФНСИ 305", "message": "текст"} или null.'
        count, code, message = reject.get("count", 1), reject.get("code"), reject.get("message", "")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 1000:
            return "reject_next.count должно быть целым числом от 0 до 1000."
        if not isinstance(code, str) or code.replace("RECIPIENT_", "RECEPIENT_") not in MESSAGE_CODE_SET:
            return f"reject_next.code: код «{code}» не найден в справочнике ФНСИ 1.2.643.5.1.13.13.99.2.305."
        if not isinstance(message, str):
            return "reject_next.message должно быть строкой."
    return None


def apply_settings(payload: dict[str, Any]) -> None:
    state = _state()
    with state.lock:
        if "result_delay" in payload:
            state.result_delay = float(payload["result_delay"])
        if "callbacks" in payload:
            state.callbacks = payload["callbacks"]
        if "reject_next" in payload:
            reject = payload["reject_next"]
            state.rejections = (
                [(reject["code"], reject.get("message", ""))] * reject.get("count", 1) if reject else []
            )


# --- reading --------------------------------------------------------------------------------


def _local(node: etree._Element) -> str:
    return etree.QName(node).localname


def _child(node: etree._Element | None, name: str) -> etree._Element | None:
    if node is None:
        return None
    return next(
        (c for c in node if isinstance(c.tag, str) and _local(c) == name and not iemk._nil(c)),
        None,
    )


def _children(node: etree._Element | None, name: str) -> list[etree._Element]:
    if node is None:
        return []
    return [c for c in node if isinstance(c.tag, str) and _local(c) == name and not iemk._nil(c)]


def _text(node: etree._Element | None, name: str) -> str:
    return iemk._text(_child(node, name))


def _xsi_type(node: etree._Element) -> str:
    value = node.get(f"{{{XSI}}}type") or ""
    return value.split(":")[-1]


def _name(staff: etree._Element | None) -> str:
    human = _child(_child(staff, "Person"), "HumanName")
    return " ".join(t for t in (_text(human, n) for n in ("FamilyName", "GivenName", "MiddleName")) if t)


def _required(node: etree._Element, names: tuple[str, ...], what: str) -> dict[str, str]:
    values = {name: _text(node, name) for name in names}
    missing = [name for name, value in values.items() if not value]
    problems = [Refusal(name, f"Не заполнено обязательное поле {name}", E_VALIDATION) for name in missing]
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise Refusal(what, f"{what} не прошёл проверку", E_VALIDATION, problems)
    return values


def _patient_global_id(lpu: str, mis_id: str) -> str:
    pix = iemk._state()
    with pix.lock:
        stored = pix.patients.get((lpu, mis_id))
    if stored is None:
        raise Refusal(
            "IdPatientMis",
            f"Пациент с IdPatientMIS {mis_id} не найден в МО {lpu}: сначала AddPatient",
            E_NOT_FOUND,
        )
    return iemk._global_id(stored)


# --- EMKService -----------------------------------------------------------------------------


def _create_case(state: EmkState, operation: etree._Element) -> etree._Element:
    dto = iemk._param(operation, "createCaseDto")
    if dto is None:
        raise Refusal("createCaseDto", "Не передан случай (createCaseDto)", E_VALIDATION)
    case_type = _xsi_type(dto)
    if case_type not in CASE_TYPES:
        raise Refusal(
            "createCaseDto",
            f"Не указан тип случая (xsi:type {', '.join(CASE_TYPES)}): «{case_type}»",
            E_VALIDATION,
        )
    values = _required(dto, ("OpenDate", "IdCaseMis", "IdLpu", "IdPatientMis"), "Случай")
    lpu, case_id, mis_id = values["IdLpu"], values["IdCaseMis"], values["IdPatientMis"]
    _patient_global_id(lpu, mis_id)
    with state.lock:
        if (lpu, case_id) in state.cases:
            raise Refusal("IdCaseMis", f"Случай с IdCaseMis {case_id} уже существует в МО {lpu}", E_EXISTS)
        state.cases[(lpu, case_id)] = {
            "idLpu": lpu,
            "IdCaseMis": case_id,
            "type": case_type,
            "IdPatientMis": mis_id,
            "OpenDate": values["OpenDate"],
            "HistoryNumber": _text(dto, "HistoryNumber"),
            "DoctorInCharge": _name(_child(dto, "DoctorInCharge")),
        }
    return etree.Element(f"{{{TEMPURI}}}CreateCaseResponse")


def _attachments(record: etree._Element) -> list[tuple[str, bytes, bytes | None]]:
    nodes = _children(_child(record, "Attachments"), "MedDocumentDto.DocumentAttachment")
    files = []
    for number, node in enumerate(nodes, 1):
        mime = _text(node, "MimeType").lower()
        label = f"Вложение {number} ({mime or 'тип не указан'})"
        if mime not in (CDA_MIME, "application/xml", PDF_MIME):
            raise Refusal("MimeType", f"{label}: допустимы text/xml (CDA) и application/pdf", E_VALIDATION)
        try:
            data = base64.b64decode("".join(_text(node, "Data").split()), validate=True)
        except (binascii.Error, ValueError):
            raise Refusal("Data", f"{label}: данные не в base64", E_VALIDATION) from None
        if not data:
            raise Refusal("Data", f"{label}: нет данных", E_VALIDATION)
        signs = _children(_child(node, "PersonalSigns"), "MedDocumentDto.PersonalSign")
        sign_text = "".join(_text(signs[0], "Sign").split()) if signs else ""
        if not sign_text:
            raise Refusal("PersonalSigns", f"{label}: нет персональной подписи (PersonalSigns)", E_VALIDATION)
        try:
            sign = base64.b64decode(sign_text, validate=True)
        except (binascii.Error, ValueError):
            raise Refusal("Sign", f"{label}: подпись не в base64", E_VALIDATION) from None
        if mime == PDF_MIME and not data.startswith(b"%PDF"):
            raise Refusal("Data", f"{label}: данные не являются файлом PDF", E_VALIDATION)
        files.append((mime, data, sign))
    cda = next((data for mime, data, _sign in files if mime != PDF_MIME), None)
    if cda is None:
        raise Refusal("Attachments", "Нет вложения с документом CDA (MimeType text/xml)", E_VALIDATION)
    try:
        etree.fromstring(cda, parser=iemk._parser())
    except etree.XMLSyntaxError as error:
        raise Refusal("Data", f"Документ CDA не разобран как XML: {error}", E_VALIDATION) from None
    return files


def _cda_kind_and_title(files: list[tuple[str, bytes, bytes | None]]) -> tuple[int | None, str]:
    cda = etree.fromstring(
        next(data for mime, data, _sign in files if mime != PDF_MIME), parser=iemk._parser()
    )
    kind = next(
        (
            TEMPLATE_KINDS[t.get("root")]
            for t in cda.findall(f"{{{HL7}}}templateId")
            if t.get("root") in TEMPLATE_KINDS
        ),
        None,
    )
    title = cda.find(f"{{{HL7}}}title")
    return kind, " ".join((title.text or "").split()) if title is not None else ""


def _judge(
    state: EmkState, files: list[tuple[str, bytes, bytes | None]]
) -> tuple[str, list[tuple[str, str]]]:
    """The asynchronous checks, decided now and shown after result_delay (caller holds the lock)."""
    if state.rejections:
        return "error", [state.rejections.pop(0)]
    errors = []
    for mime, data, sign in files:
        try:
            verify_detached(sign or b"", data)
        except SignatureError as error:
            errors.append(
                ("SIGNATURE_VERIFICATION_ERROR", f"Подпись вложения {mime} не верна: {error.reason}")
            )
    return ("error", errors) if errors else ("success", [])


def _add_med_record(
    state: EmkState, operation: etree._Element, header: etree._Element | None
) -> etree._Element:
    lpu = iemk._lpu(operation, "idLpu")
    mis_id, case_id = (
        iemk._text(iemk._param(operation, "idPatientMis")),
        iemk._text(iemk._param(operation, "idCaseMis")),
    )
    if not mis_id:
        raise Refusal("idPatientMis", "Не указан идентификатор пациента (idPatientMis)", E_VALIDATION)
    if not case_id:
        raise Refusal("idCaseMis", "Не указан идентификатор случая (idCaseMis)", E_VALIDATION)
    global_id = _patient_global_id(lpu, mis_id)
    with state.lock:
        case = state.cases.get((lpu, case_id))
    if case is None:
        raise Refusal(
            "idCaseMis", f"Случай с IdCaseMis {case_id} не найден в МО {lpu}: сначала CreateCase", E_NOT_FOUND
        )
    if case["IdPatientMis"] != mis_id:
        raise Refusal("idCaseMis", f"Случай {case_id} открыт для другого пациента", E_VALIDATION)
    record = iemk._param(operation, "medRecord")
    if record is None:
        raise Refusal("medRecord", "Не передана медицинская запись (medRecord)", E_VALIDATION)
    record_type = _xsi_type(record)
    if record_type not in MED_DOCUMENT_TYPES:
        raise Refusal(
            "medRecord",
            f"Запись типа «{record_type or 'без xsi:type'}» не является медицинским документом (MedDocument)",
            E_VALIDATION,
        )
    values = _required(record, ("IdDocumentMis", "CreationDate"), "Документ")
    author = _child(record, "Author")
    if not _name(author):
        raise Refusal("Author", "Не указан автор документа (Author: MedicalStaff с ФИО)", E_VALIDATION)
    files = _attachments(record)
    kind, cda_title = _cda_kind_and_title(files)
    local_uid = values["IdDocumentMis"]
    message_id = iemk._text(_child(header, "MessageID")) or None
    reply_to = iemk._text(_child(_child(header, "ReplyTo"), "Address")) or None
    now = datetime.now(UTC)
    with state.lock:
        previous = state.documents.get((lpu, local_uid))
        if previous is not None and previous.patient_mis != mis_id:
            raise Refusal(
                "IdDocumentMis", f"Документ {local_uid} уже передан для другого пациента", E_VALIDATION
            )
        if previous is not None and previous.status() != "error":
            previous.repeats += 1
            log.info("ИЭМК: повтор документа %s — уже сохранён, второй не создаётся", local_uid)
            return etree.Element(f"{{{TEMPURI}}}AddMedRecordResponse")
        status, errors = _judge(state, files)
        emdr_id = None
        if status == "success":
            state.emdr_numbers += 1
            emdr_id = f"{now.year}{state.emdr_numbers:010d}"
        stored = Stored(
            lpu=lpu,
            local_uid=local_uid,
            patient_mis=mis_id,
            global_id=global_id,
            case_id=case_id,
            record_type=record_type,
            kind=kind or TYPE_KINDS.get(record_type),
            title=_text(record, "Header") or cda_title,
            created_at=values["CreationDate"],
            author=_name(author),
            files=files,
            message_id=message_id,
            reply_to=reply_to,
            received_at=now,
            ready_at=now.timestamp() + state.result_delay,
            registered_at=now + timedelta(seconds=state.result_delay),
            final_status=status,
            emdr_id=emdr_id,
            errors=errors,
            version=previous.version + 1 if previous else 1,
        )
        state.documents[(lpu, local_uid)] = stored
        send = state.callbacks and bool(reply_to) and reply_to not in ANONYMOUS
    log.info("ИЭМК: принят документ %s (%s), результат %s", local_uid, record_type, status)
    if send:
        threading.Thread(
            target=_deliver, args=(state, stored), name=f"iemk-callback-{local_uid}", daemon=True
        ).start()
    else:
        stored.callbacks.append("не отправляется" if reply_to else "не отправляется: нет wsa:ReplyTo")
    return etree.Element(f"{{{TEMPURI}}}AddMedRecordResponse")


def _emk_version(_state: EmkState, _operation: etree._Element) -> etree._Element:
    response = etree.Element(f"{{{TEMPURI}}}GetVersionResponse")
    result = etree.SubElement(response, f"{{{TEMPURI}}}GetVersionResult")
    etree.SubElement(result, f"{{{iemk.CORE}}}DatabaseVersion").text = "1.0"
    etree.SubElement(result, f"{{{iemk.CORE}}}ServiceVersion").text = SERVICE_VERSION
    return response


def _read_envelope() -> tuple[etree._Element | None, etree._Element | None, Response | None]:
    try:
        envelope = etree.fromstring(request.get_data(), parser=iemk._parser())
    except etree.XMLSyntaxError as error:
        return None, None, iemk.fault(None, f"Запрос не разобран как XML: {error}")
    body = envelope.find(f"{{{SOAP}}}Body") if envelope.tag == f"{{{SOAP}}}Envelope" else None
    operation = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
    if operation is None:
        return None, None, iemk.fault(None, "Ожидается конверт SOAP 1.1 с операцией в Body")
    return envelope, operation, None


def _guid_refused(operation: etree._Element) -> bool:
    required = iemk._state().required_guid
    return bool(required) and _text(operation, "guid") != required


def _handle_emk() -> Response:
    state = _state()
    envelope, operation, failure = _read_envelope()
    if failure is not None:
        return failure
    name = _local(operation)
    action = (request.headers.get("SOAPAction") or "").strip().strip('"')
    if etree.QName(operation).namespace != TEMPURI or name not in EMK_ACTIONS.values():
        return iemk.fault(None, f"Неизвестная операция: {name}")
    if action and EMK_ACTIONS.get(action) != name:
        return iemk.fault(None, f"SOAPAction {action} не соответствует операции {name}")
    refused = iemk.signature_refused(envelope)
    if refused:
        return iemk.fault(Refusal(None, refused, E_ACCESS), refused)
    try:
        if name != "GetVersion" and _guid_refused(operation):
            raise Refusal("guid", "Неизвестный токен МИС (guid): доступ запрещён", E_ACCESS)
        if name == "GetVersion":
            return iemk._envelope(_emk_version(state, operation))
        if name == "CreateCase":
            return iemk._envelope(_create_case(state, operation))
        if name == "AddMedRecord":
            return iemk._envelope(_add_med_record(state, operation, envelope.find(f"{{{SOAP}}}Header")))
        raise Refusal(None, f"Операция {name} симулятором ИЭМК не поддерживается", E_VALIDATION)
    except Refusal as refusal:
        return iemk.fault(refusal, refusal.message)


# --- the document registry (IemkDocuments.wsdl) ---------------------------------------------


class Coded(Exception):
    """A refusal of the registry: a ФНСИ 305 code and its text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _docs_envelope(body_child: etree._Element, status: int = 200) -> Response:
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP})
    etree.SubElement(envelope, f"{{{SOAP}}}Body").append(body_child)
    return Response(
        etree.tostring(envelope, xml_declaration=True, encoding="utf-8"),
        status=status,
        content_type="text/xml; charset=utf-8",
    )


def _docs_fault(code: str, message: str) -> Response:
    fault = etree.Element(f"{{{SOAP}}}Fault", nsmap={"s": SOAP})
    etree.SubElement(fault, "faultcode").text = "s:Client"
    etree.SubElement(fault, "faultstring").text = message
    detail = etree.SubElement(etree.SubElement(fault, "detail"), f"{{{NS_DOCS}}}fault", nsmap={None: NS_DOCS})
    etree.SubElement(detail, f"{{{NS_DOCS}}}code").text = code
    etree.SubElement(detail, f"{{{NS_DOCS}}}message").text = message
    return _docs_envelope(fault, 500)


def _root(name: str) -> etree._Element:
    return etree.Element(f"{{{NS_DOCS}}}{name}", nsmap={None: NS_DOCS})


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{NS_DOCS}}}{name}")
    if text is not None:
        element.text = text
    return element


def _registry_lpu(operation: etree._Element) -> str:
    lpu = _text(operation, "idLpu")
    if not lpu:
        raise Coded("VALIDATION_ERROR", "Не указан идентификатор МО (idLpu)")
    return lpu


def _matches_patient(stored: Stored, lpu: str, patient: etree._Element | None) -> bool:
    global_id, mis_id = _text(patient, "IdGlobal"), _text(patient, "idPatientMis")
    if global_id:
        return stored.global_id == global_id
    return stored.lpu == lpu and stored.patient_mis == mis_id


def _patient_of(operation: etree._Element) -> etree._Element:
    patient = _child(operation, "patient")
    if not (_text(patient, "IdGlobal") or _text(patient, "idPatientMis")):
        raise Coded("VALIDATION_ERROR", "Не указан пациент: IdGlobal или idPatientMis")
    return patient


def _day(operation: etree._Element, name: str) -> date | None:
    raw = _text(operation, name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw[:10])
    except ValueError:
        raise Coded("VALIDATION_ERROR", f"Некорректная дата {name}: «{raw}»") from None


def _item(parent: etree._Element, stored: Stored, tag: str = "item") -> etree._Element:
    item = _sub(parent, tag)
    _sub(item, "localUid", stored.local_uid)
    _sub(item, "kind", str(stored.kind or 0))
    _sub(item, "title", stored.title)
    _sub(item, "creationDateTime", stored.created_at)
    _sub(item, "organization", stored.lpu)
    if stored.emdr_id:
        _sub(item, "emdrId", stored.emdr_id)
    return item


def _search(state: EmkState, operation: etree._Element) -> etree._Element:
    lpu, patient = _registry_lpu(operation), _patient_of(operation)
    since, until = _day(operation, "dateFrom"), _day(operation, "dateTo")
    with state.lock:
        found = [
            s
            for s in state.documents.values()
            if s.status() == "success"
            and _matches_patient(s, lpu, patient)
            and (since is None or s.created_at[:10] >= since.isoformat())
            and (until is None or s.created_at[:10] <= until.isoformat())
        ]
    response = _root("searchDocumentsResponse")
    items = _sub(response, "items")
    for stored in sorted(found, key=lambda s: (s.created_at, s.local_uid)):
        _item(items, stored)
    return response


def _get_document(state: EmkState, operation: etree._Element) -> etree._Element:
    lpu, patient = _registry_lpu(operation), _patient_of(operation)
    local_uid = _text(operation, "localUid")
    with state.lock:
        candidates = [
            s for s in state.documents.values() if s.local_uid == local_uid and s.status() == "success"
        ]
    if not candidates:
        raise Coded("REGISTRY_ITEM_NOT_FOUND", f"Документ {local_uid} не найден в ИЭМК")
    stored = next((s for s in candidates if _matches_patient(s, lpu, patient)), None)
    if stored is None:
        raise Coded("ACCESS_DENIED", f"Документ {local_uid} относится к другому пациенту")
    response = _root("getDocumentResponse")
    document = _item(response, stored, "document")
    files = _sub(document, "files")
    for mime, data, sign in stored.files:
        file = _sub(files, "file")
        _sub(file, "mimeType", mime)
        _sub(file, "data", base64.b64encode(data).decode("ascii"))
        if sign:
            _sub(file, "signature", base64.b64encode(sign).decode("ascii"))
    return response


def _errors(parent: etree._Element, errors: list[tuple[str, str]]) -> None:
    node = _sub(parent, "errors")
    for code, message in errors:
        item = _sub(node, "item")
        _sub(item, "code", code)
        _sub(item, "message", message)


def _result_fields(parent: etree._Element, stored: Stored) -> None:
    status = stored.status()
    _sub(parent, "localUid", stored.local_uid)
    _sub(parent, "status", status)
    if status == "success":
        _sub(parent, "emdrId", stored.emdr_id)
    if status != "processing":
        _sub(parent, "registrationDateTime", stored.registered_at.isoformat())
    if status == "error":
        _errors(parent, stored.errors)


def _get_result(state: EmkState, operation: etree._Element) -> etree._Element:
    lpu, local_uid = _registry_lpu(operation), _text(operation, "localUid")
    if not local_uid:
        raise Coded("VALIDATION_ERROR", "Не указан localUid")
    with state.lock:
        stored = state.documents.get((lpu, local_uid))
    if stored is None:
        raise Coded("REGISTRY_ITEM_NOT_FOUND", f"Документ {local_uid} в ИЭМК не поступал от МО {lpu}")
    response = _root("getDocumentResultResponse")
    _result_fields(response, stored)
    return response


DOCS_HANDLERS = {
    "searchDocumentsRequest": _search,
    "getDocumentRequest": _get_document,
    "getDocumentResultRequest": _get_result,
}


def _handle_registry() -> Response:
    state = _state()
    envelope, operation, failure = _read_envelope()
    if failure is not None:
        return failure
    name = _local(operation)
    handler = DOCS_HANDLERS.get(name) if etree.QName(operation).namespace == NS_DOCS else None
    if handler is None:
        return _docs_fault("VALIDATION_ERROR", f"Неизвестная операция: {name}")
    refused = iemk.signature_refused(envelope)
    if refused:
        return _docs_fault("ACCESS_DENIED", refused)
    try:
        if _guid_refused(operation):
            raise Coded("ACCESS_DENIED", "Неизвестный токен МИС (guid): доступ запрещён")
        return _docs_envelope(handler(state, operation))
    except Coded as refusal:
        return _docs_fault(refusal.code, refusal.message)


# --- the asynchronous answer ----------------------------------------------------------------


def _callback_envelope(stored: Stored, url: str) -> bytes:
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP, "wsa": WSA})
    header = etree.SubElement(envelope, f"{{{SOAP}}}Header")
    for name, text in (
        ("To", url),
        ("Action", f"{NS_DOCS}:sendDocumentResult"),
        ("MessageID", f"urn:uuid:{uuid.uuid4()}"),
        ("RelatesTo", stored.message_id),
    ):
        if text:
            etree.SubElement(header, f"{{{WSA}}}{name}").text = text
    body = etree.SubElement(envelope, f"{{{SOAP}}}Body")
    result = _root("sendDocumentResult")
    body.append(result)
    _sub(result, "relatesToMessage", stored.message_id or "")
    _result_fields(result, stored)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def _fault_text(content: bytes) -> str:
    try:
        answer = etree.fromstring(content, parser=iemk._parser())
    except etree.XMLSyntaxError:
        return ""
    found = answer.find(f".//{{{SOAP}}}Fault/faultstring")
    return (found.text or "").strip() if found is not None else ""


def _deliver(state: EmkState, stored: Stored) -> None:
    """sendDocumentResult to the ReplyTo once the result is known (a replaced document: nothing)."""
    time.sleep(max(0.0, stored.ready_at - time.time()))
    with state.lock:
        if state.documents.get((stored.lpu, stored.local_uid)) is not stored:
            stored.callbacks.append("не отправлен: документ заменён новой передачей")
            return
    url = stored.reply_to or ""
    outcome = "не доставлен"
    for attempt in range(CALLBACK_ATTEMPTS):
        try:
            answer = requests.post(
                url,
                data=_callback_envelope(stored, url),
                headers={
                    "Content-Type": "text/xml; charset=utf-8",
                    "SOAPAction": f'"{NS_DOCS}:sendDocumentResult"',
                },
                timeout=state.callback_timeout,
            )
        except requests.RequestException as error:
            outcome = f"sendDocumentResult: не доставлен ({type(error).__name__})"
        else:
            if 200 <= answer.status_code < 300:
                outcome = f"sendDocumentResult: доставлен (HTTP {answer.status_code})"
                break
            reason = _fault_text(answer.content)
            outcome = f"sendDocumentResult: отклонён (HTTP {answer.status_code})" + (
                f": {reason}" if reason else ""
            )
            if re.search(r"<faultcode>[^<]*Client", answer.text or ""):
                break  # the portal refused the content: sending it again would not help
        if attempt < CALLBACK_ATTEMPTS - 1:
            time.sleep(0.5 * (attempt + 1))
    log.info("ИЭМК: ответ о документе %s: %s", stored.local_uid, outcome)
    stored.callbacks.append(outcome)


# --- views ----------------------------------------------------------------------------------


def _wsdl(path: Path, here: str, port: str | None = None) -> Response:
    wsdl = etree.parse(str(path), parser=iemk._parser())
    for node in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/}port"):
        if port is not None and node.get("name") != port:
            continue
        for address in node.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address"):
            address.set("location", here)
        for address in node.iter("{http://schemas.xmlsoap.org/wsdl/soap12/}address"):
            address.set("location", f"{here}/soap12")
    return Response(etree.tostring(wsdl, xml_declaration=True, encoding="utf-8"), mimetype="text/xml")


def _served(handle, path: Path, endpoint: str, port: str | None, title: str) -> Response:
    if request.method == "GET":
        answer = behaviour(NAME)
        if answer is not None:
            return answer
        if not {key.lower() for key in request.args} & {"wsdl", "singlewsdl"}:
            return Response(f"{title}: POST SOAP 1.1 или GET ?wsdl\n", 400, mimetype="text/plain")
        return _wsdl(path, url_for(endpoint, _external=True), port)
    return processed_then_answered(NAME, handle)


@bp.route("/emk", methods=["GET", "POST"])
def emk():
    return _served(_handle_emk, EMK_WSDL, ".emk", None, "Сервис документов ИЭМК (EMKService)")


@bp.route("/registry", methods=["GET", "POST"])
def registry():
    return _served(
        _handle_registry, DOCS_WSDL, ".registry", "IemkDocumentsPort", "Регистр и репозиторий документов ИЭМК"
    )


@bp.get("/_documents")
def documents():
    state = _state()
    with state.lock:
        stored = list(state.documents.values())
    return jsonify([s.as_dict() for s in stored])


@bp.get("/_cases")
def cases():
    state = _state()
    with state.lock:
        return jsonify(list(state.cases.values()))
