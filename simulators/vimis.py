"""ВИМИС «АКиНЕО» stand-in: the ИПС SOAP service `akineo.wsdl` and its `sendResult` callbacks.

    GET  /vimis/ws?wsdl        the service WSDL, soap:address pointing at this host
    POST /vimis/ws             SOAP 1.1: sendDocument, checkStatus (WS-Security signed)
    GET  /vimis/_certificate   the simulator's signing certificate (PEM), to pin its answers
    GET  /vimis/_documents     received documents (JSON list), for tests and demos
    GET|POST /vimis/_settings  {"result_delay": seconds, "callbacks": true|false}
    POST /vimis/kas            the КАС case id service (REST, §5.3): a new case number

What it does, as the real service does (specs/vimis/NOTES.md):

* every request must carry a valid WS-Security signature (any certificate: ИПС registration
  is not simulated); otherwise a SOAP Fault;
* `sendDocument` answers `returnMsgId` at once. The WS-Addressing MessageID is the idempotency
  key: the same MessageID again gets the same msg_id and no second document;
* ФЛК in four stages (§6) runs on the decoded CDA; the result (status 1 / 0 with a Russian
  description) is ready `result_delay` seconds later: `checkStatus` answers status 2 «Документ
  в обработке» until then, and a signed `sendResult` is POSTed to the request's wsa:ReplyTo
  (when callbacks are on and ReplyTo is not anonymous; `interimMsg=1` adds a `sendInterimMsg`
  first). The portal has to poll `checkStatus` when no callback comes;
* a WS-Addressing header (To, Action, MessageID, ReplyTo, FaultTo) given twice is a SOAP Fault
  (WS-Addressing 1.0 §3.2), so a client that leaves zeep's own wsa headers beside its signed
  ones learns it here rather than by a MessageID silently read from the wrong header;
* `checkStatus` takes a msg_id or the MessageID of the sendDocument request (after a timeout
  the client never learnt the msg_id). An unknown id is a SOAP Fault `soap:Client`
  «Документ не найден: <id>», not status 0, which would read like a ФЛК rejection.

Modes: "down" answers 503 before reading the request; "errors" answers a SOAP Fault (HTTP 500)
to `share` of the requests; "slow" processes and stores the request FIRST and only then delays
the answer, so a client timeout means "accepted, answer lost" and the client must ask
checkStatus with its MessageID rather than send again.

Host config keys: VIMIS_RESULT_DELAY (seconds, default 3), VIMIS_CALLBACKS (default True),
VIMIS_CALLBACK_TIMEOUT (seconds, default 10), VIMIS_SIGNING_CERT_PEM + VIMIS_SIGNING_KEY_PEM
(a fixed signing key; otherwise a demo key is generated when the host starts).

ФЛК here is the outside system's own code (its СНИЛС/ЕНП checksums are written here again on
purpose), so a bug in the portal's checks cannot hide in the simulator.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import requests
from flask import Blueprint, Response, current_app, jsonify, request, url_for
from lxml import etree

from portal.crypto import (
    SignatureError,
    SigningKey,
    crc32_checksum,
    generate_demo_certificate,
    load_signing_key,
    set_wsu_id,
    sign_envelope,
    verify_detached,
    verify_envelope,
)
from simulators.server import behaviour, processed_then_answered, register_simulator

log = logging.getLogger("simulators.vimis")

bp = Blueprint("sim_vimis", __name__)

NAME = "vimis"
WSDL_PATH = Path(__file__).resolve().parent.parent / "portal" / "schemas" / "vimis" / "akineo.wsdl"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
WSA = "http://www.w3.org/2005/08/addressing"
EGISZ = "http://egisz.rosminzdrav.ru"
NS_VIMIS = "http://vimis.rosminzdrav.ru/"
NS_CALLBACK = "http://callback.mis.vimis.rosminzdrav.ru/"
HL7 = "urn:hl7-org:v3"
ANONYMOUS = {
    "http://www.w3.org/2005/08/addressing/anonymous",
    "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous",
}

VMCL_AKINEO = 3
# docType -> accepted docTypeVersion values (Таблицы 3 и 4 of the protocol).
ACCEPTED_TYPES: dict[int, set[str]] = {
    1: {"2"},
    2: {"2"},
    3: {"2", "3"},
    5: {"2"},
    8: {"2"},
    13: {"2"},
    17: {"2"},
    19: {"3"},
    22: {"3"},
}
SNILS_ROOT = "1.2.643.100.3"
# Where the ЕНП (полис ОМС нового образца) sits in the ССЗ SEMD templates:
# participant[@typeCode='HLD']/associatedEntity/id/@root; any id with this root is checked.
ENP_ROOT = "1.2.643.5.1.13.2.7.100.2"
FRMO_PREFIX = "1.2.643.5.1.13."  # МО OIDs of the ФРМО register
# Coded elements of HL7 type CS: a code without codeSystem is right for them.
CS_ELEMENTS = {"realmCode", "languageCode", "statusCode", "signatureCode", "interpretationCode", "mediaType"}
MAX_CODE_ERRORS = 5
CALLBACK_ATTEMPTS = 3

STATUS_ERROR, STATUS_OK, STATUS_PROCESSING = 0, 1, 2
OK_DESCRIPTION = "Запись в базу данных выполнена успешно"
PROCESSING_DESCRIPTION = "Документ в обработке"
NOT_XML_DESCRIPTION = "Data at the root level is invalid. Line 1, position 1."

_parsers = threading.local()
_NAME_CYRILLIC = re.compile(r"^[А-Яа-яЁё]+(?:[ '\-][А-Яа-яЁё]+)*$")
_NAME_LATIN = re.compile(r"^[A-Za-z]+(?:[ '\-][A-Za-z]+)*$")


def _parser() -> etree.XMLParser:
    """A hardened parser per server thread (lxml parser objects must not be shared between threads)."""
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, remove_comments=True
        )
    return parser


# --- the simulator's memory -----------------------------------------------------------------


@dataclass
class Received:
    """One accepted sendDocument request and what ВИМИС made of it."""

    msg_id: str
    message_id: str | None
    vmcl: int | None
    doc_type: int
    doc_type_version: str
    trigger_point: int | None
    interim: bool
    version: str | None
    set_id: str | None
    set_id_root: str | None
    final_status: int
    final_description: str
    received_at: datetime
    ready_at: float  # time.time() when the result is known
    reply_to: str | None
    client_entity_id: str | None
    signer: str
    callbacks: list[str] = field(default_factory=list)  # what happened to each callback

    def status(self) -> tuple[int, str]:
        if time.time() < self.ready_at:
            return STATUS_PROCESSING, PROCESSING_DESCRIPTION
        return self.final_status, self.final_description

    def as_dict(self) -> dict[str, Any]:
        status, description = self.status()
        return {
            "msg_id": self.msg_id,
            "message_id": self.message_id,
            "vmcl": self.vmcl,
            "docType": self.doc_type,
            "docTypeVersion": self.doc_type_version,
            "triggerPoint": self.trigger_point,
            "interimMsg": int(self.interim),
            "version": self.version,
            "setId": self.set_id,
            "setIdRoot": self.set_id_root,
            "status": status,
            "description": description,
            "received_at": self.received_at.isoformat(),
            "reply_to": self.reply_to,
            "signer": self.signer,
            "callbacks": list(self.callbacks),
        }


class VimisState:
    """Documents, settings and the signing key of the simulator in one host."""

    def __init__(
        self, key: SigningKey, result_delay: float, callbacks: bool, callback_timeout: float
    ) -> None:
        self.lock = threading.Lock()
        self.key = key
        self.result_delay = result_delay
        self.callbacks = callbacks
        self.callback_timeout = callback_timeout
        self.documents: dict[str, Received] = {}
        self.kas_numbers: dict[tuple[int, str], int] = {}  # (year, region) → last КАС case number
        self.by_message_id: dict[str, str] = {}

    def find(self, identifier: str) -> Received | None:
        with self.lock:
            record = self.documents.get(identifier)
            if record is None:
                msg_id = self.by_message_id.get(_normal_message_id(identifier))
                record = self.documents.get(msg_id) if msg_id else None
            return record

    def settings(self) -> dict[str, Any]:
        return {"result_delay": self.result_delay, "callbacks": self.callbacks}


@bp.record_once
def _start(setup_state) -> None:
    """One signing key and one memory per host, made when the host app is built."""
    config = setup_state.app.config
    cert_pem, key_pem = config.get("VIMIS_SIGNING_CERT_PEM"), config.get("VIMIS_SIGNING_KEY_PEM")
    if not (cert_pem and key_pem):
        cert_pem, key_pem = generate_demo_certificate(
            "ИПС ЕГИСЗ (симулятор ВИМИС)", organisation="Симулятор ЕГИСЗ"
        )
    store = setup_state.app.extensions["simulators"].get(NAME).store
    store["state"] = VimisState(
        load_signing_key(cert_pem, key_pem),
        result_delay=float(config.get("VIMIS_RESULT_DELAY", 3)),
        callbacks=bool(config.get("VIMIS_CALLBACKS", True)),
        callback_timeout=float(config.get("VIMIS_CALLBACK_TIMEOUT", 10)),
    )


def _state() -> VimisState:
    return current_app.extensions["simulators"].get(NAME).store["state"]


def _normal_message_id(value: str) -> str:
    value = value.strip()
    return value[len("urn:uuid:") :] if value.lower().startswith("urn:uuid:") else value


# --- SOAP answers ---------------------------------------------------------------------------


def _xml_response(envelope: etree._Element, status: int = 200) -> Response:
    body = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    return Response(body, status=status, content_type="text/xml; charset=utf-8")


def _envelope(body_xml: str) -> etree._Element:
    """A SOAP 1.1 envelope around a body child written as text (keeps `xmlns=""` of unqualified children)."""
    envelope = etree.fromstring(
        f'<soap:Envelope xmlns:soap="{SOAP}" xmlns:wsu="{WSU}"><soap:Header/>'
        f'<soap:Body wsu:Id="body">{body_xml}</soap:Body></soap:Envelope>'
    )
    return envelope


def fault(code: str, text: str, status: int = 500) -> Response:
    """An unsigned SOAP 1.1 Fault (`code` is Client or Server)."""
    envelope = etree.fromstring(
        f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Body><soap:Fault>'
        f"<faultcode>soap:{code}</faultcode><faultstring>{escape(text)}</faultstring>"
        f"</soap:Fault></soap:Body></soap:Envelope>"
    )
    return _xml_response(envelope, status)


def _signed_answer(body_xml: str) -> Response:
    envelope = _envelope(body_xml)
    sign_envelope(envelope, _state().key, ["body"], timestamp=600)
    return _xml_response(envelope)


def _return_msg_id(msg_id: str) -> Response:
    return _signed_answer(
        f'<returnMsgId xmlns="{NS_VIMIS}"><msg_id xmlns="">{escape(msg_id)}</msg_id></returnMsgId>'
    )


def _check_status_response(status: int, description: str) -> Response:
    return _signed_answer(
        f'<checkStatusResponse xmlns="{NS_VIMIS}"><status xmlns="">{status}</status>'
        f'<description xmlns="">{escape(description)}</description></checkStatusResponse>'
    )


def _error_answer() -> Response:
    return fault(
        "Server", "Внутренняя ошибка ВИМИС «АКиНЕО», повторите запрос позже / Internal service error"
    )


# --- ФЛК --------------------------------------------------------------------------------------


def _digits(value: str | None) -> str:
    return re.sub(r"\D", "", value or "")


def snils_valid(value: str) -> bool:
    """ПФР rule: weights 9..1 over the first nine digits; checked only above 001-001-998."""
    d = _digits(value)
    if len(d) != 11:
        return False
    if int(d[:9]) <= 1001998:
        return True
    total = sum(int(digit) * weight for digit, weight in zip(d[:9], range(9, 0, -1), strict=True))
    if total > 101:
        total %= 101
    control = 0 if total in (100, 101) else total
    return f"{control:02d}" == d[9:]


def enp_valid(value: str) -> bool:
    """ФОМС rule: odd places from the right (doubled as a number), then even places; sum of digits."""
    d = _digits(value)
    if len(d) != 16:
        return False
    from_right = d[:15][::-1]
    composed = from_right[1::2] + str(int(from_right[0::2]) * 2)
    return (10 - sum(int(c) for c in composed) % 10) % 10 == int(d[15])


def _shown_snils(value: str) -> str:
    d = _digits(value)
    return f"{d[0:3]}-{d[3:6]}-{d[6:9]} {d[9:11]}" if len(d) == 11 else value


def _first(node: etree._Element, path: str) -> etree._Element | None:
    found = node.xpath(path, namespaces={"h": HL7})
    return found[0] if found else None


def _snils_problem(node: etree._Element | None, whose: str, stage: int) -> str | None:
    snils_id = _first(node, f"h:id[@root='{SNILS_ROOT}']") if node is not None else None
    value = (snils_id.get("extension") or "").strip() if snils_id is not None else ""
    if not value:
        return f"ФЛК: Этап {stage}. Не указан СНИЛС {whose}"
    if len(_digits(value)) != 11:
        return f"ФЛК: Этап {stage}. Некорректный формат СНИЛС {whose} {value}"
    if not snils_valid(value):
        return f"ФЛК: Этап {stage}. Некорректная контрольная сумма СНИЛС {whose} {_shown_snils(value)}"
    return None


def _stage1_patient(cda: etree._Element) -> list[str]:
    errors: list[str] = []
    role = _first(cda, "h:recordTarget/h:patientRole")
    if role is None:
        return ["ФЛК: Этап 1. Не указаны сведения о пациенте (recordTarget/patientRole)"]
    if problem := _snils_problem(role, "пациента", 1):
        errors.append(problem)
    family = (role.findtext(f"{{{HL7}}}patient/{{{HL7}}}name/{{{HL7}}}family") or "").strip()
    givens = [(g.text or "").strip() for g in role.iterfind(f"{{{HL7}}}patient/{{{HL7}}}name/{{{HL7}}}given")]
    if not family:
        errors.append("ФЛК: Этап 1. Не указана фамилия пациента")
    if not givens or not givens[0]:
        errors.append("ФЛК: Этап 1. Не указано имя пациента")
    for part in [family, *givens]:
        if part and not (_NAME_CYRILLIC.match(part) or _NAME_LATIN.match(part)):
            errors.append(f"ФЛК: Этап 1. ФИО пациента содержит недопустимые символы: «{part}»")
    if not (_first(role, "h:patient/h:birthTime/@value") or "").strip():
        errors.append("ФЛК: Этап 1. Не указана дата рождения пациента")
    if _first(role, "h:addr[@use='H']") is None:
        errors.append("ФЛК: Этап 1. Не указан адрес постоянной регистрации пациента")
    for enp in cda.xpath(f"//h:id[@root='{ENP_ROOT}']/@extension", namespaces={"h": HL7}):
        if not enp_valid(enp):
            errors.append(f"ФЛК: Этап 1. Некорректная контрольная сумма ЕНП пациента {enp.strip()}")
    return errors


def _stage2_codes(cda: etree._Element) -> list[str]:
    errors: list[str] = []
    for element in cda.iter():
        if not isinstance(element.tag, str) or element.get("code") is None:
            continue
        name = etree.QName(element).localname
        if name in CS_ELEMENTS:
            continue
        code, system = element.get("code"), element.get("codeSystem")
        if not system:
            errors.append(f"ФЛК: Этап 2. Элемент {name} с кодом «{code}»: не указан codeSystem")
        elif system.startswith("1.2.643.") and not element.get("displayName"):
            errors.append(
                f"ФЛК: Этап 2. Элемент {name} с кодом «{code}» справочника {system}: не указан displayName"
            )
    unique = list(dict.fromkeys(errors))
    if len(unique) > MAX_CODE_ERRORS:
        unique = [
            *unique[:MAX_CODE_ERRORS],
            f"ФЛК: Этап 2. И ещё ошибок кодирования: {len(unique) - MAX_CODE_ERRORS}",
        ]
    return unique


def _stage3_organisation(cda: etree._Element) -> list[str]:
    root = (
        _first(cda, "h:custodian/h:assignedCustodian/h:representedCustodianOrganization/h:id/@root") or ""
    ).strip()
    if not root:
        return ["ФЛК: Этап 3. Не указан идентификатор организации-владельца документа (custodian)"]
    if not root.startswith(FRMO_PREFIX):
        return [f"ФЛК: Этап 3. Организация-владелец документа {root} не найдена в ФРМО"]
    return []


def _stage4_workers(cda: etree._Element) -> list[str]:
    authors = cda.findall(f"{{{HL7}}}author/{{{HL7}}}assignedAuthor")
    if not authors:
        return ["ФЛК: Этап 4. Не указан автор документа"]
    return list(dict.fromkeys(p for a in authors if (p := _snils_problem(a, "медицинского работника", 4))))


@dataclass
class Inspection:
    errors: list[str]
    version: str | None = None
    set_id: str | None = None
    set_id_root: str | None = None


def inspect_document(document: bytes) -> Inspection:
    """ФЛК of a decoded CDA document: the errors (empty when it passes) and its setId/version."""
    if not document.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return Inspection([NOT_XML_DESCRIPTION])
    try:
        cda = etree.fromstring(document, parser=_parser())
    except etree.XMLSyntaxError as exc:
        line, column = exc.position
        return Inspection([f"XML документа некорректен (строка {line}, позиция {column}): {exc.msg}"])
    if cda.tag != f"{{{HL7}}}ClinicalDocument":
        return Inspection(
            ["ФЛК: Документ не является CDA: корневой элемент должен быть ClinicalDocument (urn:hl7-org:v3)"]
        )
    set_id = cda.find(f"{{{HL7}}}setId")
    version = cda.find(f"{{{HL7}}}versionNumber")
    errors = _stage1_patient(cda) + _stage2_codes(cda) + _stage3_organisation(cda) + _stage4_workers(cda)
    return Inspection(
        errors,
        version=version.get("value") if version is not None else None,
        set_id=set_id.get("extension") if set_id is not None else None,
        set_id_root=set_id.get("root") if set_id is not None else None,
    )


# --- operations -----------------------------------------------------------------------------


class _ClientError(Exception):
    """A request the service refuses with a soap:Client fault."""


def _child_texts(operation: etree._Element) -> dict[str, etree._Element]:
    return {etree.QName(child).localname: child for child in operation if isinstance(child.tag, str)}


def _int(fields: dict[str, etree._Element], name: str, required: bool) -> int | None:
    element = fields.get(name)
    text = (element.text or "").strip() if element is not None else ""
    if not text:
        if required:
            raise _ClientError(f"Не заполнено обязательное поле {name} / Required element {name} is missing")
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise _ClientError(f"Поле {name} должно быть целым числом / {name} must be xs:int") from exc


def _header_text(header: etree._Element | None, path: str) -> str | None:
    if header is None:
        return None
    found = header.xpath(f"string({path})", namespaces={"wsa": WSA, "egisz": EGISZ})
    return found.strip() or None


def _send_document(envelope: etree._Element, operation: etree._Element, signer: str) -> Response:
    state = _state()
    header = envelope.find(f"{{{SOAP}}}Header")
    fields = _child_texts(operation)
    vmcl = _int(fields, "vmcl", required=False)
    doc_type = _int(fields, "docType", required=True)
    trigger_point = _int(fields, "triggerPoint", required=False)
    interim = _int(fields, "interimMsg", required=False) == 1
    doc_type_version = (fields["docTypeVersion"].text or "").strip() if "docTypeVersion" in fields else ""
    if not doc_type_version:
        raise _ClientError(
            "Не заполнено обязательное поле docTypeVersion / Required element docTypeVersion is missing"
        )
    if "document" not in fields or not (fields["document"].text or "").strip():
        raise _ClientError("Не заполнено обязательное поле document / Required element document is missing")
    try:
        document = base64.b64decode("".join(fields["document"].text.split()), validate=True)
    except (binascii.Error, ValueError):
        document = b""  # ФЛК reports it as not XML, like the real service

    errors: list[str] = []
    if vmcl is not None and vmcl != VMCL_AKINEO:
        errors.append(f"ФЛК: Неверное направление vmcl={vmcl}: ВИМИС «АКиНЕО» принимает vmcl=3")
    if doc_type not in ACCEPTED_TYPES:
        errors.append(f"ФЛК: Тип документа docType={doc_type} не принимается ВИМИС «АКиНЕО»")
    elif doc_type_version not in ACCEPTED_TYPES[doc_type]:
        errors.append(
            f"ФЛК: Версия docTypeVersion={doc_type_version} не соответствует типу документа docType={doc_type}"
        )
    signature = fields.get("signature")
    if signature is not None:
        parts = _child_texts(signature)
        checksum = (parts["checksum"].text or "").strip() if "checksum" in parts else ""
        if not checksum.lstrip("-").isdigit() or int(checksum) % 2**32 != int(crc32_checksum(document)):
            errors.append("ФЛК: Контрольная сумма документа не совпадает")
        data = "".join((parts["data"].text or "").split()) if "data" in parts else ""
        try:
            verify_detached(base64.b64decode(data, validate=True), document)
        except (binascii.Error, ValueError):
            errors.append("ФЛК: Электронная подпись документа не прошла проверку: подпись не в base64")
        except SignatureError as exc:
            errors.append(f"ФЛК: Электронная подпись документа не прошла проверку: {exc.reason}")
    inspection = inspect_document(document)
    errors.extend(inspection.errors)

    message_id = _header_text(header, "wsa:MessageID")
    reply_to = _header_text(header, "wsa:ReplyTo/wsa:Address")
    with state.lock:
        known = state.by_message_id.get(_normal_message_id(message_id)) if message_id else None
        if known is not None:
            log.info("ВИМИС: повтор MessageID %s, msg_id %s", message_id, known)
            return _return_msg_id(known)
        record = Received(
            msg_id=str(uuid.uuid4()),
            message_id=message_id,
            vmcl=vmcl,
            doc_type=doc_type,
            doc_type_version=doc_type_version,
            trigger_point=trigger_point,
            interim=interim,
            version=inspection.version,
            set_id=inspection.set_id,
            set_id_root=inspection.set_id_root,
            final_status=STATUS_ERROR if errors else STATUS_OK,
            final_description="; ".join(errors) if errors else OK_DESCRIPTION,
            received_at=datetime.now(UTC),
            ready_at=time.time() + state.result_delay,
            reply_to=reply_to,
            client_entity_id=_header_text(
                header, "egisz:transportHeader/egisz:authInfo/egisz:clientEntityId"
            ),
            signer=signer,
        )
        state.documents[record.msg_id] = record
        if message_id:
            state.by_message_id[_normal_message_id(message_id)] = record.msg_id
        callbacks = state.callbacks and bool(reply_to) and reply_to not in ANONYMOUS
    log.info(
        "ВИМИС: принят документ docType=%s, msg_id %s, статус %s",
        doc_type,
        record.msg_id,
        record.final_status,
    )
    if callbacks:
        threading.Thread(
            target=_deliver_callbacks,
            args=(state, record),
            name=f"vimis-callback-{record.msg_id}",
            daemon=True,
        ).start()
    else:
        record.callbacks.append("не отправляется")
    return _return_msg_id(record.msg_id)


def _check_status(operation: etree._Element) -> Response:
    fields = _child_texts(operation)
    identifier = (fields["msg_id"].text or "").strip() if "msg_id" in fields else ""
    if not identifier:
        raise _ClientError("Не заполнено обязательное поле msg_id / Required element msg_id is missing")
    record = _state().find(identifier)
    if record is None:
        return fault("Client", f"Документ не найден: {identifier}")
    return _check_status_response(*record.status())


# --- callbacks ------------------------------------------------------------------------------


def _callback_envelope(state: VimisState, record: Received, url: str, action: str, body_xml: str) -> bytes:
    envelope = _envelope(body_xml)
    header = envelope.find(f"{{{SOAP}}}Header")
    ids = ["body"]
    for wsu_id, name, text in (
        ("id-to", "To", url),
        ("id-relatesto", "RelatesTo", record.message_id),
        ("id-action", "Action", action),
        ("id-messageid", "MessageID", str(uuid.uuid4())),
    ):
        if text:
            element = etree.SubElement(header, f"{{{WSA}}}{name}", nsmap={None: WSA})
            element.text = text
            ids.append(set_wsu_id(element, wsu_id).get(f"{{{WSU}}}Id"))
    reply_to = set_wsu_id(etree.SubElement(header, f"{{{WSA}}}ReplyTo", nsmap={None: WSA}), "id-replyto")
    etree.SubElement(reply_to, f"{{{WSA}}}Address").text = "http://www.w3.org/2005/08/addressing/anonymous"
    ids.append("id-replyto")
    if record.client_entity_id:
        transport = etree.SubElement(header, f"{{{EGISZ}}}transportHeader", nsmap={None: EGISZ})
        auth = etree.SubElement(transport, f"{{{EGISZ}}}authInfo")
        etree.SubElement(auth, f"{{{EGISZ}}}clientEntityId").text = record.client_entity_id
    sign_envelope(envelope, state.key, ids, timestamp=600)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def _post_callback(state: VimisState, record: Received, action: str, body_xml: str) -> None:
    url = record.reply_to or ""
    outcome = "не доставлен"
    for attempt in range(CALLBACK_ATTEMPTS):
        try:
            answer = requests.post(
                url,
                data=_callback_envelope(state, record, url, action, body_xml),
                headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'},
                timeout=state.callback_timeout,
            )
            if 200 <= answer.status_code < 300:
                outcome = f"{action}: доставлен (HTTP {answer.status_code})"
                break
            outcome = f"{action}: отклонён (HTTP {answer.status_code})"
        except requests.RequestException as exc:
            outcome = f"{action}: не доставлен ({type(exc).__name__})"
        if attempt < CALLBACK_ATTEMPTS - 1:
            time.sleep(0.5 * (attempt + 1))
    log.info("ВИМИС: обратный вызов %s для msg_id %s: %s", action, record.msg_id, outcome)
    record.callbacks.append(outcome)


def _deliver_callbacks(state: VimisState, record: Received) -> None:
    """sendInterimMsg (if asked for), then sendResult once the result is ready."""
    msg_id = escape(record.msg_id)
    if record.interim:
        _post_callback(
            state,
            record,
            "sendInterimMsg",
            f'<sendInterimMsg xmlns="{NS_CALLBACK}"><msg_id xmlns="">{msg_id}</msg_id>'
            f'<description xmlns="">Документ принят в обработку</description></sendInterimMsg>',
        )
    time.sleep(max(0.0, record.ready_at - time.time()))
    status, description = record.final_status, record.final_description
    _post_callback(
        state,
        record,
        "sendResult",
        f'<sendResult xmlns="{NS_CALLBACK}"><msg_id xmlns="">{msg_id}</msg_id>'
        f'<status xmlns="">{status}</status><description xmlns="">{escape(description)}</description></sendResult>',
    )


# --- views ----------------------------------------------------------------------------------


def _handle_soap() -> Response:
    try:
        envelope = etree.fromstring(request.get_data(), parser=_parser())
    except etree.XMLSyntaxError:
        return fault("Client", "Запрос не является XML-сообщением SOAP / Malformed SOAP request")
    body = envelope.find(f"{{{SOAP}}}Body")
    if envelope.tag != f"{{{SOAP}}}Envelope" or body is None or len(body) == 0:
        return fault("Client", "Ожидается конверт SOAP 1.1 с телом / SOAP 1.1 envelope expected")
    try:
        signer = verify_envelope(envelope)
    except SignatureError as exc:
        return fault("Client", f"Подпись запроса не прошла проверку: {exc.reason} / WS-Security check failed")
    header = envelope.find(f"{{{SOAP}}}Header")
    for name in ("To", "Action", "MessageID", "ReplyTo", "FaultTo"):
        count = len(header.findall(f"{{{WSA}}}{name}")) if header is not None else 0
        if count > 1:  # WS-Addressing 1.0 Core §3.2: each property at most once
            return fault(
                "Client",
                f"Заголовок wsa:{name} повторяется ({count} раза) / wsa:InvalidAddressingHeader: duplicate {name}",
            )
    operation = body[0]
    try:
        if operation.tag == f"{{{NS_VIMIS}}}sendDocument":
            return _send_document(envelope, operation, signer)
        if operation.tag == f"{{{NS_VIMIS}}}checkStatus":
            return _check_status(operation)
    except _ClientError as exc:
        return fault("Client", str(exc))
    return fault("Client", f"Неизвестная операция {etree.QName(operation).localname} / Unknown operation")


@bp.route("/ws", methods=["GET", "POST"])
def ws():
    if request.method == "GET":
        if "wsdl" not in {key.lower() for key in request.args}:
            return Response(
                "Сервис ВИМИС «АКиНЕО»: POST SOAP 1.1 или GET ?wsdl\n", 400, mimetype="text/plain"
            )
        answer = behaviour(NAME)
        if answer is not None:
            return answer
        wsdl = etree.parse(str(WSDL_PATH), parser=_parser())
        for address in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address"):
            address.set("location", url_for(".ws", _external=True))
        return Response(
            etree.tostring(wsdl, xml_declaration=True, encoding="utf-8"),
            content_type="text/xml; charset=utf-8",
        )

    return processed_then_answered(NAME, _handle_soap)


@bp.get("/_certificate")
def certificate():
    return Response(_state().key.cert_pem, mimetype="application/x-pem-file")


@bp.get("/_documents")
def documents():
    state = _state()
    with state.lock:
        records = list(state.documents.values())
    return jsonify([record.as_dict() for record in records])


@bp.route("/_settings", methods=["GET", "POST"])
def settings():
    state = _state()
    if request.method == "POST":
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            return jsonify({"error": "Ожидается JSON-объект с полями result_delay и callbacks."}), 400
        delay = payload.get("result_delay", state.result_delay)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 300:
            return jsonify(
                {"error": "Задержка результата result_delay должна быть числом секунд от 0 до 300."}
            ), 400
        callbacks = payload.get("callbacks", state.callbacks)
        if not isinstance(callbacks, bool):
            return jsonify({"error": "Поле callbacks должно быть true или false."}), 400
        with state.lock:
            state.result_delay, state.callbacks = float(delay), callbacks
    return jsonify(state.settings())


@bp.post("/kas")
def kas_case_number():
    """The КАС case id service (protocol §5.3): {"mo_oid", "year", "region"} → «26-35-00001»."""
    answer = behaviour(NAME)
    if answer is not None:
        return answer
    payload = request.get_json(silent=True)
    errors = []
    if not isinstance(payload, dict):
        payload, errors = {}, ["Ожидается JSON-объект с полями mo_oid, year, region"]
    mo_oid, year, region = payload.get("mo_oid"), payload.get("year"), payload.get("region")
    if not errors:
        if not isinstance(mo_oid, str) or not mo_oid.startswith(FRMO_PREFIX):
            errors.append(f"МО {mo_oid} не найдена в ФРМО")
        if not isinstance(year, int) or not 2000 <= year <= 2100:
            errors.append(f"Некорректный год: {year}")
        if not (isinstance(region, str) and region.isdigit() and len(region) == 2):
            errors.append(f"Некорректный код региона: {region}")
    if errors:
        return jsonify({"data": None, "is_success": False, "errors": errors})
    state = _state()
    with state.lock:
        key = (year, region)
        state.kas_numbers[key] = state.kas_numbers.get(key, 0) + 1
        number = f"{year % 100:02d}-{region}-{state.kas_numbers[key]:05d}"
    return jsonify({"data": {"number": number}, "is_success": True, "errors": []})


register_simulator(NAME, "ВИМИС «АКиНЕО»", bp, error_answer=_error_answer)
