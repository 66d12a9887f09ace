"""ФСС ЭРС stand-in (электронный родовой сертификат): the portal's reconstructed contract
(`portal/schemas/ers`), signed and encrypted as the ФСС profile wants it.

    GET  /fss/ers?wsdl           the WSDL, soap:address and the types' schemaLocation pointing here
    GET  /fss/ErsTypes.xsd       the types
    POST /fss/ers                every operation of the contract (SOAP 1.1)
    GET  /fss/_certificate       ФСС's certificate (PEM) — set it as «Сертификат ФСС» in the portal
    GET|POST /fss/_contracts     contracts ФСС knows: {"ogrn", "number", "date", "ends"} (ISO dates)
    GET|POST /fss/_settings      {"result_delay": seconds, "tamper_answers": bool,
                                  "sign_answers": bool, "encrypt_answers": bool}
    GET  /fss/_requests          what it received: requestId, method, status, signers, errors (JSON)

A request must be encrypted for this stand-in's certificate and carry the sender's certificate
for the answer (ds:X509Certificate in the header); every wsse:Security block present is verified
and the МО's (actor http://eln.fss.ru/actor/mo/{ОГРН}) is required. Otherwise: SOAP Fault
`soap:Client` (HTTP 500), in clear, unsigned — as the ФСС gateways refuse what they cannot read.

Then the contract of medicalOrganization (contractNumber, conractDate) must be one posted to
`/_contracts` for that ОГРН and in force today, else the answer at once is PROCESSING_ERROR with
code 1204 in the seed's words («Отсутствует заключенный договор с ТОФ на оказание услуг: ИНН=…,
ОГРН=…, КПП=… от 31.12.2021 № 14»). Writes answer REGISTERED with a requestId; getResultById then
gives READY_TO_PROCESS (first half of `result_delay`), PROCESSING (second half), and PROCESSED
(createErs: a new ten-digit ЭРС number, or the woman's earlier one by СНИЛС) or PROCESSING_ERROR
with coded errors. getErsData and getTickets answer at once.

Error codes other than 1204 (from the seed) are this stand-in's own; ФСС's list is not public:
1001 request not found, 1002 request type mismatch, 1301 personal datum missing (named, unless
its noDataReason is given), 1302 СНИЛС not eleven digits, 1401 Талон 1 before 30 weeks (28 for a
multiple pregnancy), 1501 unknown ЭРС number, 1502 ЭРС closed.

With `FSS_STATE_FILE` in the host's config (`make run` sets one in the instance folder) the ЭРС it
issued, with their talons and visits, survive a restart; otherwise it starts empty.

Every answer is signed by ФСС's actor (http://eln.fss.ru/actor/fss/ca/1027739443236) and encrypted
to the request's reply certificate; the settings break that for tests (`tamper_answers` changes
the answer after signing, `sign_answers`/`encrypt_answers` false leave it out). Modes via
`behaviour("fss")`: "down" 503, "errors" a SOAP Fault `soap:Server`, "slow" processes the request
and then delays the answer.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from lxml import etree

from portal.crypto import (
    DecryptionError,
    SignatureError,
    SigningKey,
    decrypt_body,
    encrypt_body,
    generate_demo_certificate,
    is_encrypted,
    load_signing_key,
    reply_certificate,
    set_wsu_id,
    sign_envelope,
    verify_envelope,
)
from simulators.server import processed_then_answered, register_simulator, storage

bp = Blueprint("sim_fss", __name__)

NAME = "fss"
SCHEMAS = Path(__file__).resolve().parent.parent / "portal" / "schemas" / "ers"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
ERS = "http://gtw.ws.fss.ru/openservice/ers"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
XS = "http://www.w3.org/2001/XMLSchema"
FSS_OGRN = "1027739443236"
FSS_ACTOR = f"http://eln.fss.ru/actor/fss/ca/{FSS_OGRN}"
MO_ACTOR = "http://eln.fss.ru/actor/mo/{ogrn}"

ASYNC = ("createErs", "disableErs", "putTicket1", "putTicket2", "putTicket3", "putVisit", "registerChildErs")
AT_ONCE = ("getErsData", "getTickets", "getResultById")
E_NOT_FOUND, E_TYPE, E_CONTRACT = "1001", "1002", "1204"
E_MISSING, E_SNILS, E_TICKET1, E_UNKNOWN_ERS, E_CLOSED = "1301", "1302", "1401", "1501", "1502"
DEFAULT_SETTINGS = {
    "result_delay": 5.0,
    "tamper_answers": False,
    "sign_answers": True,
    "encrypt_answers": True,
}

_parser_local = threading.local()
_state_lock = threading.Lock()


def _parser() -> etree.XMLParser:
    parser = getattr(_parser_local, "parser", None)
    if parser is None:
        parser = _parser_local.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, remove_comments=True, huge_tree=True
        )
    return parser


class Refusal(Exception):
    """A SOAP Fault to answer in clear."""

    def __init__(self, message: str, code: str = "soap:Client") -> None:
        super().__init__(message)
        self.message, self.code = message, code


class FssState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        cert_pem, key_pem = generate_demo_certificate(
            "Фонд социального страхования Российской Федерации", organisation="ФСС (локальный симулятор)"
        )
        self.key: SigningKey = load_signing_key(cert_pem, key_pem)
        self.settings: dict[str, Any] = dict(DEFAULT_SETTINGS)
        self.contracts: list[dict[str, str]] = []
        self.requests: dict[str, dict[str, Any]] = {}  # requestId → what was received and decided
        self.order: list[str] = []  # requestIds (and refusals) in the order received
        self.ers: dict[str, dict[str, Any]] = {}  # ЭРС number → {snils, ogrn, orgName, status, tickets}


def _state() -> FssState:
    store = storage(NAME)
    with _state_lock:
        if "state" not in store:
            state = store["state"] = FssState()
            path = _state_file()
            if path is not None and path.is_file():  # the certificates issued before a restart
                state.ers = json.loads(path.read_text(encoding="utf-8"))
        return store["state"]


def _state_file() -> Path | None:
    """Where the issued ЭРС are kept between starts (`FSS_STATE_FILE`; `make run` sets one)."""
    raw = current_app.config.get("FSS_STATE_FILE")
    return Path(raw) if raw else None


def _save(state: FssState) -> None:
    """Write the issued ЭРС (called under the state's lock), atomically."""
    path = _state_file()
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state.ers, ensure_ascii=False), encoding="utf-8")
    temporary.replace(path)


# --- reading the request ----------------------------------------------------------------------


def _q(name: str) -> str:
    return f"{{{ERS}}}{name}"


def _text(node: etree._Element | None, path: str) -> str:
    if node is None:
        return ""
    found = node.find(path.replace("e:", f"{{{ERS}}}"))
    return (found.text or "").strip() if found is not None else ""


def _fault(message: str, code: str = "soap:Client") -> Response:
    xml = (
        f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Body><soap:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{_escape(message)}</faultstring>"
        "</soap:Fault></soap:Body></soap:Envelope>"
    )
    return Response(
        xml.encode("utf-8"), status=500, mimetype="text/xml", content_type="text/xml; charset=utf-8"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _signers(envelope: etree._Element, ogrn: str) -> list[str]:
    """Verify every wsse:Security block; the actors, in order. The МО's signature is required."""
    header = envelope.find(f"{{{SOAP}}}Header")
    blocks = header.findall(f"{{{WSSE}}}Security") if header is not None else []
    actors = [block.get(f"{{{SOAP}}}actor") or "" for block in blocks]
    if not blocks:
        raise Refusal("Запрос не подписан: нет ни одного блока wsse:Security")
    for actor in actors:
        if not actor:
            raise Refusal("Блок подписи wsse:Security без soapenv:actor")
        try:
            verify_envelope(envelope, actor=actor)
        except SignatureError as error:
            raise Refusal(str(error)) from error
    required = MO_ACTOR.format(ogrn=ogrn)
    if required not in actors:
        raise Refusal(f"Нет подписи МО: запрос должен быть подписан ЭЦП МО (actor {required})")
    return actors


def _contract_refusal(state: FssState, org: etree._Element) -> str | None:
    ogrn, number, signed = _text(org, "e:ogrn"), _text(org, "e:contractNumber"), _text(org, "e:conractDate")
    today = date.today().isoformat()
    with state.lock:
        known = any(
            c["ogrn"] == ogrn
            and c["number"] == number
            and c["date"] == signed[:10]
            and c["date"] <= today <= c["ends"]
            for c in state.contracts
        )
    if known:
        return None
    try:
        shown = date.fromisoformat(signed[:10]).strftime("%d.%m.%Y")
    except ValueError:
        shown = signed
    return (
        f"Отсутствует заключенный договор с ТОФ на оказание услуг: ИНН={_text(org, 'e:inn')}, "
        f"ОГРН={ogrn}, КПП={_text(org, 'e:kpp')} от {shown} № {number}"
    )


# --- checks of the processing -----------------------------------------------------------------

PERSON_BLOCKS = (
    ("medicalInsurance", "e:medicalInsurance/e:insuranceNumber", "номер полиса ОМС"),
    ("snils", "e:snils", "СНИЛС"),
    ("identifyingDocument", "e:idDoc/e:docNumber", "документ, удостоверяющий личность"),
    ("residenceAddress", "e:residenceAddress", "адрес места жительства"),
)


def _person_errors(person: etree._Element) -> list[tuple[str, str]]:
    """Missing personal data, each named (seed «Типичные ошибки», E-11)."""
    errors: list[tuple[str, str]] = []

    def missing(label: str, path: str) -> None:
        errors.append((E_MISSING, f"Не заполнено обязательное поле «{label}» ({path})"))

    for name, label in (("secondName", "Фамилия"), ("firstName", "Имя"), ("birthdate", "Дата рождения")):
        if not _text(person, f"e:{name}"):
            missing(label, f"person/{name}")
    for block, path, label in PERSON_BLOCKS:
        node = person.find(_q(block))
        if node is not None and _text(node, "e:noDataReason"):
            continue
        value = _text(node, path)
        if not value:
            errors.append(
                (
                    E_MISSING,
                    f"Не заполнено обязательное поле «{label}» (person/{block}): укажите значение "
                    "или причину отсутствия (noDataReason)",
                )
            )
            continue
        if block == "snils" and not (len(value) == 11 and value.isdigit()):
            errors.append((E_SNILS, f"СНИЛС {value} должен состоять из 11 цифр"))
        if block == "identifyingDocument":
            for field, name in (
                ("docIssueDate", "Дата выдачи документа"),
                ("docIssuer", "Кем выдан документ"),
            ):
                if not _text(node, f"e:idDoc/e:{field}"):
                    missing(name, f"person/identifyingDocument/idDoc/{field}")
    return errors


def _weeks(value: str) -> str:
    n = int(value) if value.isdigit() else 0
    if n % 10 == 1 and n % 100 != 11:
        return f"{n} неделя"
    if n % 10 in (2, 3, 4) and n % 100 not in (12, 13, 14):
        return f"{n} недели"
    return f"{n} недель"


def _ticket1_errors(ticket: etree._Element) -> list[tuple[str, str]]:
    weeks = _text(ticket, "e:pregnancyTimeOnPutDate")
    multiple = _text(ticket, "e:isMultiplePregnancy").lower() in ("true", "1")
    needed = 28 if multiple else 30
    if weeks.isdigit() and int(weeks) >= needed:
        return []
    return [
        (
            E_TICKET1,
            "Талон 1 выдаётся только по осмотрам от 30-ти недель или от 28-ми недель при многоплодной "
            f"беременности: срок на дату выдачи — {_weeks(weeks)}"
            + (" (многоплодная беременность)" if multiple else ""),
        )
    ]


def _ers_errors(state: FssState, number: str) -> list[tuple[str, str]]:
    found = state.ers.get(number)
    if found is None:
        return [(E_UNKNOWN_ERS, f"ЭРС № {number or '—'} не найден")]
    if found["status"] != "ACTIVE":
        return [(E_CLOSED, f"ЭРС № {number} закрыт")]
    return []


def _new_ers_number(state: FssState) -> str:
    while True:
        number = "9" + f"{random.randrange(10**9):09d}"
        if number not in state.ers:
            return number


def _process(
    state: FssState, method: str, payload: etree._Element, ogrn: str, org_name: str
) -> dict[str, Any]:
    """What ФСС decides about an asynchronous request (shown after `result_delay`)."""
    errors: list[tuple[str, str]] = []
    outcome: dict[str, Any] = {}
    with state.lock:
        if method == "createErs":
            person = payload.find(_q("person"))
            errors = (
                _person_errors(person)
                if person is not None
                else [(E_MISSING, "Нет сведений о получателе (person)")]
            )
            if not errors:
                snils = _text(person, "e:snils/e:snils")
                earlier = next(
                    (
                        n
                        for n, e in state.ers.items()
                        if snils and e["snils"] == snils and e["status"] == "ACTIVE"
                    ),
                    None,
                )
                number = earlier or _new_ers_number(state)
                if earlier is None:
                    state.ers[number] = {
                        "snils": snils,
                        "ogrn": ogrn,
                        "orgName": org_name,
                        "registerDate": _text(payload, "e:registerDate") or date.today().isoformat(),
                        "status": "ACTIVE",
                        "tickets": [],
                        "visits": {},
                    }
                outcome["ersNumber"] = number
        elif method in ("putTicket1", "putTicket2", "putTicket3"):
            part = method[-1]
            storages = payload.findall(f"{_q('tickets')}/{_q('storage')}")
            for storage_node in storages:
                person = storage_node.find(_q("person"))
                ticket = storage_node.find(_q(f"ticket{part}"))
                number = _text(ticket, "e:ersNumber")
                errors += _person_errors(person) if person is not None else []
                errors += _ers_errors(state, number)
                if part == "1" and ticket is not None:
                    errors += _ticket1_errors(ticket)
            if not storages:
                errors.append((E_MISSING, "В запросе нет талонов (tickets/storage)"))
            if not errors:
                for storage_node in storages:
                    ticket = storage_node.find(_q(f"ticket{part}"))
                    kind = _text(ticket, "e:ticket3Part") if part == "3" else part
                    state.ers[_text(ticket, "e:ersNumber")]["tickets"].append(
                        {
                            "ticketType": kind,
                            "ticketStatus": "ACCEPTED",
                            "createDate": _text(ticket, "e:createDate"),
                            "ogrn": ogrn,
                        }
                    )
        elif method == "putVisit":
            storages = payload.findall(f"{_q('visits')}/{_q('storage')}")
            for storage_node in storages:
                person = storage_node.find(_q("person"))
                errors += _person_errors(person) if person is not None else []
                errors += _ers_errors(state, _text(storage_node, "e:visit/e:ersNumber"))
            if not errors:
                for storage_node in storages:
                    visit = storage_node.find(_q("visit"))
                    visits = state.ers[_text(visit, "e:ersNumber")]["visits"]
                    if _text(visit, "e:visitAction") == "CANCEL":
                        visits.pop(_text(visit, "e:visitId"), None)
                    else:
                        visits[_text(visit, "e:visitId")] = _text(visit, "e:visitDate")
        elif method == "disableErs":
            number = _text(payload, "e:disableErsRequest/e:ersIdentifier")
            errors = _ers_errors(state, number)
            if not errors:
                state.ers[number]["status"] = "DISABLED"
        elif method == "registerChildErs":
            person = payload.find(_q("person"))
            errors = (_person_errors(person) if person is not None else []) + _ers_errors(
                state, _text(payload, "e:registerChildrenInfo/e:ersNumber")
            )
        if not errors:
            _save(state)
    outcome["errors"] = errors
    return outcome


# --- answers ----------------------------------------------------------------------------------


def _result(
    method: str,
    request_id: str,
    status: str,
    *,
    message: str | None = None,
    errors: list[tuple[str, str]] | None = None,
) -> etree._Element:
    """An ErsRequestResult element (`{method}Response`) up to its `errors`."""
    root = etree.Element(_q(f"{method}Response"), nsmap={None: ERS})
    etree.SubElement(root, _q("requestId")).text = request_id
    etree.SubElement(root, _q("status")).text = status
    if errors and message is None:
        message = "Запрос обработан с ошибками"
    if message:
        etree.SubElement(root, _q("message")).text = message
    if errors:
        etree.SubElement(root, _q("errorCode")).text = errors[0][0]
        etree.SubElement(root, _q("errorText")).text = errors[0][1]
        wrapper = etree.SubElement(root, _q("errors"))
        for code, text in errors:
            error = etree.SubElement(wrapper, _q("error"))
            etree.SubElement(error, _q("code")).text = code
            etree.SubElement(error, _q("message")).text = text
    return root


def _answer(state: FssState, content: etree._Element, reply_cert_pem: str) -> Response:
    """Sign with ФСС's actor, then encrypt to the sender's certificate (as the settings allow)."""
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soapenv": SOAP})
    etree.SubElement(envelope, f"{{{SOAP}}}Header")
    body = etree.SubElement(envelope, f"{{{SOAP}}}Body")
    body.append(content)
    settings = dict(state.settings)
    body_id = f"OGRN_{FSS_OGRN}"
    set_wsu_id(body, body_id)
    if settings["sign_answers"]:
        sign_envelope(envelope, state.key, [body_id], actor=FSS_ACTOR)
    if settings["tamper_answers"]:
        request_id = content.find(_q("requestId"))
        request_id.text = (request_id.text or "") + "-изменён"
    if settings["encrypt_answers"]:
        encrypt_body(envelope, reply_cert_pem)
    return Response(
        etree.tostring(envelope, xml_declaration=True, encoding="utf-8"),
        mimetype="text/xml",
        content_type="text/xml; charset=utf-8",
    )


def _visible(entry: dict[str, Any], delay: float) -> str:
    """The status getResultById shows now."""
    if "outcome" not in entry:  # refused on arrival or answered at once
        return entry["status"]
    elapsed = time.monotonic() - entry["received"]
    if elapsed < delay / 2:
        return "READY_TO_PROCESS"
    if elapsed < delay:
        return "PROCESSING"
    return "PROCESSING_ERROR" if entry["outcome"]["errors"] else "PROCESSED"


def _get_result(state: FssState, payload: etree._Element, ogrn: str) -> etree._Element:
    request_id = _text(payload, "e:requestId")
    request_type = _text(payload, "e:requestType")
    with state.lock:
        entry = state.requests.get(request_id)
        delay = float(state.settings["result_delay"])
    if entry is None or entry["ogrn"] != ogrn or "outcome" not in entry:
        return _result(
            "getResultById",
            request_id,
            "PROCESSING_ERROR",
            errors=[(E_NOT_FOUND, f"Запрос {request_id} не найден")],
        )
    if entry["method"] != request_type:
        return _result(
            "getResultById",
            request_id,
            "PROCESSING_ERROR",
            errors=[(E_TYPE, f"Запрос {request_id} — {entry['method']}, а не {request_type}")],
        )
    status = _visible(entry, delay)
    outcome = entry["outcome"]
    errors = outcome["errors"] if status == "PROCESSING_ERROR" else None
    root = _result("getResultById", request_id, status, errors=errors)
    etree.SubElement(root, _q("requestType")).text = request_type
    if status == "PROCESSED" and outcome.get("ersNumber"):
        etree.SubElement(root, _q("ersNumber")).text = outcome["ersNumber"]
    return root


def _ers_data(state: FssState, payload: etree._Element) -> etree._Element:
    number = _text(payload, "e:params/e:ersIdentifier")
    snils = _text(payload, "e:params/e:snils")
    root = _result("getErsData", str(uuid.uuid4()), "PROCESSED")
    with state.lock:
        found = [
            (n, e)
            for n, e in state.ers.items()
            if (number and n == number) or (snils and e["snils"] == snils)
        ]
        for n, e in found:
            data = etree.SubElement(root, _q("ersData"))
            etree.SubElement(data, _q("ersNumber")).text = n
            etree.SubElement(data, _q("ersStatus")).text = e["status"]
            etree.SubElement(data, _q("registerDate")).text = e["registerDate"][:10]
            etree.SubElement(data, _q("orgName")).text = e["orgName"]
            etree.SubElement(data, _q("ogrn")).text = e["ogrn"]
            if e["tickets"]:
                _ticket_list(etree.SubElement(data, _q("tickets")), n, e["tickets"])
    return root


def _ticket_list(parent: etree._Element, number: str, tickets: list[dict[str, str]]) -> None:
    for ticket in tickets:
        node = etree.SubElement(parent, _q("storage"))
        etree.SubElement(node, _q("ersNumber")).text = number
        etree.SubElement(node, _q("ticketType")).text = ticket["ticketType"]
        etree.SubElement(node, _q("ticketStatus")).text = ticket["ticketStatus"]
        if ticket.get("createDate"):
            etree.SubElement(node, _q("createDate")).text = ticket["createDate"][:10]
        etree.SubElement(node, _q("ogrn")).text = ticket["ogrn"]


def _tickets(state: FssState, payload: etree._Element, ogrn: str) -> etree._Element:
    start = _text(payload, "e:getTicketsParams/e:startDate")[:10]
    end = _text(payload, "e:getTicketsParams/e:endDate")[:10]
    status = _text(payload, "e:getTicketsParams/e:ticketStatus")
    root = _result("getTickets", str(uuid.uuid4()), "PROCESSED")
    parent = etree.SubElement(root, _q("tickets"))
    with state.lock:
        for number, ers in state.ers.items():
            chosen = [
                t
                for t in ers["tickets"]
                if t["ogrn"] == ogrn
                and start <= (t.get("createDate") or "")[:10] <= end
                and (not status or t["ticketStatus"] == status)
            ]
            _ticket_list(parent, number, chosen)
    return root


def _record(state: FssState, entry: dict[str, Any]) -> None:
    with state.lock:
        key = entry.get("requestId") or f"refused-{uuid.uuid4()}"
        state.requests[key] = entry
        state.order.append(key)


def _handle() -> Response:
    state = _state()
    try:
        envelope = etree.fromstring(request.get_data(), _parser())
    except etree.XMLSyntaxError:
        return _fault("Запрос не является XML-документом")
    method = "?"
    signers: list[str] = []
    try:
        if etree.QName(envelope).namespace != SOAP or etree.QName(envelope).localname != "Envelope":
            raise Refusal("Ожидается сообщение SOAP 1.1 (soapenv:Envelope)")
        if not is_encrypted(envelope):
            raise Refusal(
                "Запрос не зашифрован: тело сообщения должно содержать xenc:EncryptedData для сертификата ФСС"
            )
        try:
            decrypt_body(envelope, state.key, what="Запрос")
        except DecryptionError as error:
            raise Refusal(f"{error} Зашифруйте запрос на сертификат ФСС") from error
        reply_cert_pem = reply_certificate(envelope)
        if reply_cert_pem is None:
            raise Refusal(
                "В запросе нет сертификата МО для шифрования ответа (ds:X509Certificate в заголовке)"
            )
        body = envelope.find(f"{{{SOAP}}}Body")
        payload = next((child for child in body if isinstance(child.tag, str)), None)
        if (
            payload is None
            or etree.QName(payload).namespace != ERS
            or not etree.QName(payload).localname.endswith("Request")
        ):
            raise Refusal("В теле запроса нет операции сервиса ЭРС")
        method = etree.QName(payload).localname[: -len("Request")]
        if method not in ASYNC + AT_ONCE:
            raise Refusal(f"Неизвестная операция {method}")
        org = payload.find(_q("medicalOrganization"))
        ogrn = _text(org, "e:ogrn")
        signers = _signers(envelope, ogrn)
    except Refusal as refusal:
        _record(state, {"method": method, "status": "REFUSED", "signers": signers, "fault": refusal.message})
        return _fault(refusal.message, refusal.code)

    refusal_text = _contract_refusal(state, org)
    if refusal_text is not None:
        request_id = str(uuid.uuid4())
        errors = [(E_CONTRACT, refusal_text)]
        _record(
            state,
            {"requestId": request_id, "method": method, "status": "PROCESSING_ERROR", "signers": signers,
             "ogrn": ogrn, "errors": errors, "received": time.monotonic()},
        )  # fmt: skip
        return _answer(state, _result(method, request_id, "PROCESSING_ERROR", errors=errors), reply_cert_pem)

    if method == "getResultById":
        content = _get_result(state, payload, ogrn)
    elif method == "getErsData":
        content = _ers_data(state, payload)
    elif method == "getTickets":
        content = _tickets(state, payload, ogrn)
    else:
        request_id = str(uuid.uuid4())
        outcome = _process(state, method, payload, ogrn, _text(org, "e:orgName"))
        _record(
            state,
            {"requestId": request_id, "method": method, "status": "REGISTERED", "signers": signers,
             "ogrn": ogrn, "outcome": outcome, "received": time.monotonic()},
        )  # fmt: skip
        content = _result(method, request_id, "REGISTERED")
    if method in AT_ONCE:
        _record(
            state,
            {"requestId": f"{method}-{uuid.uuid4()}", "method": method, "status": _text(content, "e:status"),
             "signers": signers, "ogrn": ogrn, "asked": _text(payload, "e:requestId") or None},
        )  # fmt: skip
    return _answer(state, content, reply_cert_pem)


# --- routes -----------------------------------------------------------------------------------


@bp.route("/ers", methods=["GET", "POST"])
def ers():
    if request.method == "GET":
        if "wsdl" not in {key.lower() for key in request.args}:
            return Response(
                "Сервис ЭРС ФСС (симулятор): POST SOAP 1.1 или GET ?wsdl\n", 400, mimetype="text/plain"
            )
        wsdl = etree.parse(str(SCHEMAS / "ErsService.wsdl"), parser=_parser())
        for address in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address"):
            address.set("location", url_for(".ers", _external=True))
        for schema_import in wsdl.iter(f"{{{XS}}}import"):
            schema_import.set("schemaLocation", url_for(".types", _external=True))
        return Response(etree.tostring(wsdl, xml_declaration=True, encoding="utf-8"), mimetype="text/xml")
    return processed_then_answered(NAME, _handle)


@bp.get("/ErsTypes.xsd")
def types():
    return Response((SCHEMAS / "ErsTypes.xsd").read_bytes(), mimetype="text/xml")


@bp.get("/_certificate")
def certificate():
    return Response(_state().key.cert_pem, mimetype="application/x-pem-file")


@bp.route("/_contracts", methods=["GET", "POST"])
def contracts():
    state = _state()
    if request.method == "POST":
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            return jsonify({"error": "Ожидается JSON-объект с полями ogrn, number, date, ends"}), 400
        try:
            contract = {
                "ogrn": str(payload["ogrn"]).strip(),
                "number": str(payload["number"]).strip(),
                "date": date.fromisoformat(str(payload["date"])[:10]).isoformat(),
                "ends": date.fromisoformat(str(payload["ends"])[:10]).isoformat(),
            }
        except (KeyError, ValueError):
            return jsonify({"error": "Нужны ogrn, number, date и ends (даты ГГГГ-ММ-ДД)"}), 400
        with state.lock:
            state.contracts.append(contract)
    with state.lock:
        return jsonify(list(state.contracts))


@bp.route("/_settings", methods=["GET", "POST"])
def settings():
    state = _state()
    if request.method == "POST":
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict) or set(payload) - set(DEFAULT_SETTINGS):
            return jsonify({"error": f"Допустимые поля: {', '.join(DEFAULT_SETTINGS)}"}), 400
        delay = payload.get("result_delay", state.settings["result_delay"])
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            return jsonify({"error": "result_delay — число секунд не меньше 0"}), 400
        with state.lock:
            for name in ("tamper_answers", "sign_answers", "encrypt_answers"):
                if name in payload:
                    state.settings[name] = bool(payload[name])
            state.settings["result_delay"] = float(delay)
    with state.lock:
        return jsonify(dict(state.settings))


@bp.get("/_requests")
def requests_received():
    state = _state()
    with state.lock:
        delay = float(state.settings["result_delay"])
        rows = []
        for key in state.order:
            entry = state.requests[key]
            status = _visible(entry, delay)
            row = {
                "requestId": entry.get("requestId"),
                "method": entry["method"],
                "status": status,
                "signers": entry.get("signers", []),
                "ogrn": entry.get("ogrn"),
            }
            if "fault" in entry:
                row["fault"] = entry["fault"]
            errors = entry.get("errors") or (entry.get("outcome") or {}).get("errors") or []
            if errors and status == "PROCESSING_ERROR":
                row["errors"] = [{"code": code, "message": text} for code, text in errors]
            if (entry.get("outcome") or {}).get("ersNumber") and status == "PROCESSED":
                row["ersNumber"] = entry["outcome"]["ersNumber"]
            rows.append(row)
    return jsonify(rows)


def _server_error() -> Response:
    return _fault("Внутренняя ошибка сервиса ЭРС", "soap:Server")


register_simulator(NAME, "ФСС: электронный родовой сертификат", bp, _server_error)
