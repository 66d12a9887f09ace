"""ИЭМК N3.Health stand-in: the patient index PixService (`PixService.xml`, SOAP 1.1).

EMKService and the document registry live in `simulators/iemk_emk.py`, on this blueprint.

    GET  /iemk/pix?wsdl         the WSDL (also ?singleWsdl), soap:address pointing at this host
    POST /iemk/pix              GetVersion, AddPatient, UpdatePatient, GetPatient, GetPatientByGlobalId
    GET  /iemk/_patients        the index (JSON list), for tests and demos
    GET  /iemk/_last_request    the last SOAP request received, as sent (text/xml)
    GET|POST /iemk/_settings    {"required_guid": "…" | null} (+ the document part's, iemk_emk.py)

What it does (specs/iemk/NOTES.md; the behaviour the WSDL leaves open is this stand-in's choice):

* patients are kept per (idLPU, IdPatientMIS) with an IdGlobal each; a patient added by another
  МО with the same СНИЛС (document 223) gets the same IdGlobal, as a patient index cross-references;
* AddPatient of a known (idLPU, IdPatientMIS), UpdatePatient of an unknown one, a PatientDto
  without FamilyName / GivenName / BirthDate / Sex / IdPatientMIS, PatientDto elements not in
  the WSDL's order, or a guid other than `required_guid` (when set) → SOAP Fault `s:Client` with
  detail `RequestFault` (ns N3.EMK.Dto.Common, as the WSDL's fault messages declare); several
  missing fields come as one RequestFault with nested `Errors`;
* GetPatient is query by example: every non-empty field of the template must match (names
  ignoring case, BirthDate by day, documents by type, number and series); a template with
  IdPatientMIS searches the asking МО only. GetPatientByGlobalId of an unknown id answers no
  patient.

The ErrorCode values (1 validation, 2 already exists, 3 not found, 4 access) are this stand-in's:
N3's list is not public. Modes: `behaviour("iemk")` first — "down" 503, "errors" a SOAP Fault
`s:Server` (HTTP 500) without detail, "slow" delays the answer. Host config IEMK_REQUIRED_GUID.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from lxml import etree

from portal.crypto import SignatureError, verify_envelope
from simulators.server import behaviour, register_simulator, storage

bp = Blueprint("sim_iemk", __name__)

NAME = "iemk"
WSDL_PATH = Path(__file__).resolve().parent.parent / "portal" / "schemas" / "iemk" / "PixService.xml"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
TEMPURI = "http://tempuri.org/"
DTO = "http://schemas.datacontract.org/2004/07/EMKService.Data.Dto"
CORE = "http://schemas.datacontract.org/2004/07/N3.Shared.Core"
FAULT_NS = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto.Common"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
ACTIONS = {
    "http://tempuri.org/IServiceSupport/GetVersion": "GetVersion",
    **{
        f"http://tempuri.org/IPixService/{op}": op
        for op in ("AddPatient", "UpdatePatient", "GetPatient", "GetPatientByGlobalId")
    },
}
# PatientDto elements in the WSDL's order.
PATIENT_FIELDS = (
    "Addresses",
    "BirthDate",
    "BirthPlace",
    "ContactPerson",
    "Contacts",
    "DeathTime",
    "Documents",
    "FamilyName",
    "GivenName",
    "IdBloodType",
    "IdGlobal",
    "IdLivingAreaType",
    "IdPatientMIS",
    "IsVip",
    "Job",
    "MiddleName",
    "Privilege",
    "Sex",
    "SocialGroup",
    "SocialStatus",
)
REQUIRED = ("FamilyName", "GivenName", "BirthDate", "Sex", "IdPatientMIS")
SERVICE_VERSION = "N3.Health PixService (локальный симулятор) 1.0"
E_VALIDATION, E_EXISTS, E_NOT_FOUND, E_ACCESS = 1, 2, 3, 4
SNILS_TYPE = "223"

_parser_local = threading.local()


def _parser() -> etree.XMLParser:
    parser = getattr(_parser_local, "parser", None)
    if parser is None:
        parser = _parser_local.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, remove_comments=True
        )
    return parser


class Refusal(Exception):
    """A RequestFault to answer: (property, message, code) plus nested ones."""

    def __init__(
        self, property_name: str | None, message: str, code: int, errors: list[Refusal] | None = None
    ):
        super().__init__(message)
        self.property_name, self.message, self.code, self.errors = property_name, message, code, errors or []


class PixState:
    def __init__(self, required_guid: str | None) -> None:
        self.lock = threading.Lock()
        self.required_guid = required_guid
        self.patients: dict[tuple[str, str], etree._Element] = {}  # (idLPU, IdPatientMIS) → PatientDto
        self.last_request: bytes = b""


def _state() -> PixState:
    store = storage(NAME)
    with _state_lock:
        if "pix" not in store:
            store["pix"] = PixState(current_app.config.get("IEMK_REQUIRED_GUID"))
        return store["pix"]


_state_lock = threading.Lock()


# --- reading the request --------------------------------------------------------------------


def _local(node: etree._Element) -> str:
    return etree.QName(node).localname


def _nil(node: etree._Element) -> bool:
    return node.get(f"{{{XSI}}}nil") in ("true", "1")


def _param(operation: etree._Element, name: str) -> etree._Element | None:
    return next((c for c in operation if isinstance(c.tag, str) and _local(c) == name and not _nil(c)), None)


def _text(node: etree._Element | None) -> str:
    return (node.text or "").strip() if node is not None else ""


def _fields(patient: etree._Element) -> dict[str, etree._Element]:
    """The PatientDto's elements by name, refusing unknown ones and a wrong order (WCF would
    silently drop an out-of-order element, so a client would never learn)."""
    found: dict[str, etree._Element] = {}
    last = -1
    for child in patient:
        if not isinstance(child.tag, str):
            continue
        name = _local(child)
        if etree.QName(child).namespace != DTO or name not in PATIENT_FIELDS:
            raise Refusal(name, f"Неизвестный элемент PatientDto: {name}", E_VALIDATION)
        index = PATIENT_FIELDS.index(name)
        if index <= last:
            raise Refusal(
                name, f"Элемент {name} стоит не на своём месте: порядок PatientDto задан WSDL", E_VALIDATION
            )
        last = index
        if not _nil(child):
            found[name] = child
    return found


def _documents(fields: dict[str, etree._Element]) -> list[dict[str, str]]:
    node = fields.get("Documents")
    if node is None:
        return []
    return [
        {_local(f): _text(f) for f in doc if isinstance(f.tag, str) and not _nil(f)}
        for doc in node
        if isinstance(doc.tag, str) and not _nil(doc)
    ]


def _as_dict(patient: etree._Element) -> dict[str, Any]:
    """A stored PatientDto as JSON: simple fields as text, Documents and Addresses as lists."""
    result: dict[str, Any] = {}
    for child in patient:
        if not isinstance(child.tag, str) or _nil(child):
            continue
        name = _local(child)
        if len(child):
            result[name] = [{_local(f): _text(f) for f in item if isinstance(f.tag, str)} for item in child]
        else:
            result[name] = _text(child)
    return result


def _validate(fields: dict[str, etree._Element]) -> None:
    missing = [name for name in REQUIRED if not _text(fields.get(name))]
    sex = _text(fields.get("Sex"))
    problems = [Refusal(name, f"Не заполнено обязательное поле {name}", E_VALIDATION) for name in missing]
    if sex and sex not in ("1", "2", "3"):
        problems.append(Refusal("Sex", f"Недопустимое значение пола: {sex}", E_VALIDATION))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise Refusal("patient", "Пациент не прошёл проверку", E_VALIDATION, problems)


def _with_global_id(patient: etree._Element, global_id: str) -> etree._Element:
    """A copy of the PatientDto with IdGlobal set in its WSDL place."""
    copy = etree.fromstring(etree.tostring(patient), parser=_parser())
    for child in list(copy):
        if isinstance(child.tag, str) and _local(child) == "IdGlobal":
            copy.remove(child)
    element = etree.Element(f"{{{DTO}}}IdGlobal")
    element.text = global_id
    position = PATIENT_FIELDS.index("IdGlobal")
    for index, child in enumerate(copy):
        if isinstance(child.tag, str) and PATIENT_FIELDS.index(_local(child)) > position:
            copy.insert(index, element)
            break
    else:
        copy.append(element)
    return copy


def _global_id(patient: etree._Element) -> str:
    return _text(next((c for c in patient if isinstance(c.tag, str) and _local(c) == "IdGlobal"), None))


# --- operations -----------------------------------------------------------------------------


def _lpu(operation: etree._Element, name: str = "idLPU") -> str:
    lpu = _text(_param(operation, name))
    if not lpu:
        raise Refusal(name, "Не указан идентификатор МО (idLPU)", E_VALIDATION)
    return lpu


def _patient_param(operation: etree._Element) -> etree._Element:
    patient = _param(operation, "patient")
    if patient is None:
        raise Refusal("patient", "Не передан пациент (PatientDto)", E_VALIDATION)
    return patient


def _add(state: PixState, operation: etree._Element) -> etree._Element:
    lpu, patient = _lpu(operation), _patient_param(operation)
    fields = _fields(patient)
    _validate(fields)
    key = (lpu, _text(fields["IdPatientMIS"]))
    snils = {
        d.get("DocN") for d in _documents(fields) if d.get("IdDocumentType") == SNILS_TYPE and d.get("DocN")
    }
    with state.lock:
        if key in state.patients:
            raise Refusal(
                "IdPatientMIS", f"Пациент с IdPatientMIS {key[1]} уже зарегистрирован в МО {lpu}", E_EXISTS
            )
        global_id = next(
            (
                _global_id(stored)
                for stored in state.patients.values()
                if snils
                & {
                    d.get("DocN")
                    for d in _documents(_fields(stored))
                    if d.get("IdDocumentType") == SNILS_TYPE
                }
            ),
            None,
        ) or str(uuid.uuid4())
        state.patients[key] = _with_global_id(patient, global_id)
    return etree.Element(f"{{{TEMPURI}}}AddPatientResponse")


def _update(state: PixState, operation: etree._Element) -> etree._Element:
    lpu, patient = _lpu(operation), _patient_param(operation)
    fields = _fields(patient)
    _validate(fields)
    key = (lpu, _text(fields["IdPatientMIS"]))
    with state.lock:
        stored = state.patients.get(key)
        if stored is None:
            raise Refusal(
                "IdPatientMIS", f"Пациент с IdPatientMIS {key[1]} не найден в МО {lpu}", E_NOT_FOUND
            )
        state.patients[key] = _with_global_id(patient, _global_id(stored))
    return etree.Element(f"{{{TEMPURI}}}UpdatePatientResponse")


def _matches(template: dict[str, etree._Element], stored: etree._Element) -> bool:
    have = _fields(stored)
    for name, node in template.items():
        if name == "Documents":
            documents = _documents(have)
            for wanted in _documents(template):
                keys = [k for k in ("IdDocumentType", "DocN", "DocS") if wanted.get(k)]
                if not any(all(d.get(k) == wanted[k] for k in keys) for d in documents):
                    return False
            continue
        if len(node) or not _text(node):
            continue  # other complex fields are not search criteria here
        value, wanted = _text(have.get(name)), _text(node)
        if name in ("BirthDate", "DeathTime"):
            value, wanted = value[:10], wanted[:10]
        if value.casefold() != wanted.casefold():
            return False
    return True


def _get(state: PixState, operation: etree._Element) -> etree._Element:
    lpu, template = _lpu(operation), _fields(_patient_param(operation))
    criteria = {name: node for name, node in template.items() if _text(node) or len(node)}
    if not criteria:
        raise Refusal("patient", "Не задан ни один параметр поиска", E_VALIDATION)
    with state.lock:
        found = [
            stored
            for (stored_lpu, _mis), stored in state.patients.items()
            if ("IdPatientMIS" not in criteria or stored_lpu == lpu) and _matches(criteria, stored)
        ]
    response = etree.Element(f"{{{TEMPURI}}}GetPatientResponse")
    result = etree.SubElement(response, f"{{{TEMPURI}}}GetPatientResult")
    for stored in found:
        copy = etree.fromstring(etree.tostring(stored), parser=_parser())
        copy.tag = f"{{{DTO}}}PatientDto"
        result.append(copy)
    return response


def _get_by_global_id(state: PixState, operation: etree._Element) -> etree._Element:
    _lpu(operation, "idLpu")
    wanted = _text(_param(operation, "patientId"))
    if not wanted:
        raise Refusal("patientId", "Не указан глобальный идентификатор пациента", E_VALIDATION)
    with state.lock:
        stored = next((p for p in state.patients.values() if _global_id(p) == wanted), None)
    response = etree.Element(f"{{{TEMPURI}}}GetPatientByGlobalIdResponse")
    if stored is not None:
        copy = etree.fromstring(etree.tostring(stored), parser=_parser())
        copy.tag = f"{{{TEMPURI}}}GetPatientByGlobalIdResult"
        response.append(copy)
    return response


def _version(_state: PixState, _operation: etree._Element) -> etree._Element:
    response = etree.Element(f"{{{TEMPURI}}}GetVersionResponse")
    result = etree.SubElement(response, f"{{{TEMPURI}}}GetVersionResult")
    etree.SubElement(result, f"{{{CORE}}}DatabaseVersion").text = "1.0"
    etree.SubElement(result, f"{{{CORE}}}ServiceVersion").text = SERVICE_VERSION
    return response


OPERATIONS = {
    "GetVersion": _version,
    "AddPatient": _add,
    "UpdatePatient": _update,
    "GetPatient": _get,
    "GetPatientByGlobalId": _get_by_global_id,
}


# --- answers --------------------------------------------------------------------------------


def _envelope(body_child: etree._Element) -> Response:
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP})
    etree.SubElement(envelope, f"{{{SOAP}}}Body").append(body_child)
    status = 500 if _local(body_child) == "Fault" else 200
    return Response(
        etree.tostring(envelope, xml_declaration=True, encoding="utf-8"),
        status=status,
        mimetype="text/xml",
        content_type="text/xml; charset=utf-8",
    )


def _fault_detail(parent: etree._Element, refusal: Refusal, tag: str) -> None:
    node = etree.SubElement(parent, tag)
    if refusal.property_name is not None:
        etree.SubElement(node, f"{{{FAULT_NS}}}PropertyName").text = refusal.property_name
    etree.SubElement(node, f"{{{FAULT_NS}}}Message").text = refusal.message
    etree.SubElement(node, f"{{{FAULT_NS}}}ErrorCode").text = str(refusal.code)
    if refusal.errors:
        errors = etree.SubElement(node, f"{{{FAULT_NS}}}Errors")
        for inner in refusal.errors:
            _fault_detail(errors, inner, f"{{{FAULT_NS}}}RequestFault")


def fault(refusal: Refusal | None, text: str, code: str = "s:Client") -> Response:
    """A WCF-style SOAP 1.1 Fault; with a refusal, its detail is the WSDL's RequestFault."""
    element = etree.Element(f"{{{SOAP}}}Fault", nsmap={"s": SOAP})
    etree.SubElement(element, "faultcode").text = code
    faultstring = etree.SubElement(element, "faultstring")
    faultstring.text = text
    faultstring.set("{http://www.w3.org/XML/1998/namespace}lang", "ru-RU")
    if refusal is not None:
        detail = etree.SubElement(element, "detail")
        _fault_detail(detail, refusal, f"{{{FAULT_NS}}}RequestFault")
    return _envelope(element)


def signature_refused(envelope: etree._Element) -> str | None:
    """A request that carries a WS-Security signature must verify (a tampered one is refused);
    N3 authorises by the МИС token, so an unsigned request is let through."""
    header = envelope.find(f"{{{SOAP}}}Header")
    if header is None or header.find(f"{{{WSSE}}}Security") is None:
        return None
    try:
        verify_envelope(envelope)
    except SignatureError as error:
        return f"Подпись запроса не прошла проверку: {error.reason or error}"
    return None


def _error_answer() -> Response:
    return fault(None, "Внутренняя ошибка сервиса ИЭМК", "s:Server")


def _handle() -> Response:
    state = _state()
    raw = request.get_data()
    state.last_request = raw
    try:
        envelope = etree.fromstring(raw, parser=_parser())
    except etree.XMLSyntaxError as error:
        return fault(None, f"Запрос не разобран как XML: {error}")
    body = envelope.find(f"{{{SOAP}}}Body") if envelope.tag == f"{{{SOAP}}}Envelope" else None
    operation = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
    if operation is None:
        return fault(None, "Ожидается конверт SOAP 1.1 с операцией в Body")
    name = _local(operation)
    action = (request.headers.get("SOAPAction") or "").strip().strip('"')
    if etree.QName(operation).namespace != TEMPURI or name not in OPERATIONS:
        return fault(None, f"Неизвестная операция: {name}")
    refused = signature_refused(envelope)
    if refused:
        return fault(Refusal(None, refused, E_ACCESS), refused)
    if action and ACTIONS.get(action) != name:
        return fault(None, f"SOAPAction {action} не соответствует операции {name}")
    try:
        if (
            name != "GetVersion"
            and state.required_guid
            and _text(_param(operation, "guid")) != state.required_guid
        ):
            raise Refusal("guid", "Неизвестный токен МИС (guid): доступ запрещён", E_ACCESS)
        return _envelope(OPERATIONS[name](state, operation))
    except Refusal as refusal:
        return fault(refusal, refusal.message)


@bp.route("/pix", methods=["GET", "POST"])
def pix():
    answer = behaviour(NAME)
    if answer is not None:
        return answer
    if request.method == "GET":
        if not {key.lower() for key in request.args} & {"wsdl", "singlewsdl"}:
            return Response(
                "Сервис пациентов ИЭМК (PixService): POST SOAP 1.1 или GET ?wsdl\n",
                400,
                mimetype="text/plain",
            )
        wsdl = etree.parse(str(WSDL_PATH), parser=_parser())
        here = url_for(".pix", _external=True)
        for address in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address"):
            address.set("location", here)
        for address in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/soap12/}address"):
            address.set("location", f"{here}/soap12")
        return Response(etree.tostring(wsdl, xml_declaration=True, encoding="utf-8"), mimetype="text/xml")
    return _handle()


@bp.get("/_patients")
def patients():
    state = _state()
    with state.lock:
        rows = [{"idLPU": lpu, **_as_dict(p)} for (lpu, _mis), p in state.patients.items()]
    return jsonify(rows)


@bp.get("/_last_request")
def last_request():
    return Response(_state().last_request, mimetype="text/xml")


@bp.route("/_settings", methods=["GET", "POST"])
def settings():
    from simulators import iemk_emk  # the document part (EMKService, registry) keeps its own

    state = _state()
    if request.method == "POST":
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict) or not isinstance(payload.get("required_guid", ""), str | None):
            return jsonify({"error": 'Ожидается JSON {"required_guid": строка или null}'}), 400
        problem = iemk_emk.settings_problem(payload)
        if problem:
            return jsonify({"error": problem}), 400
        if "required_guid" in payload:
            state.required_guid = payload["required_guid"] or None
        iemk_emk.apply_settings(payload)
    return jsonify({"required_guid": state.required_guid, **iemk_emk.current_settings()})


register_simulator(NAME, "ИЭМК (N3.Health)", bp, error_answer=_error_answer)
