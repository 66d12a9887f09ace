"""The ИЭМК patient index (N3.Health PixService, SPEC I-3): zeep on the local `PixService.xml`.

SOAP 1.1 (BasicHttpBinding) at the МО's `iemk.pix_endpoint`; every call carries the МО's МИС
token `iemk.guid` and the МО's ФРМО OID as `idLPU`. Failures are sorted for the delivery
mechanism: nothing left (refused, connect timeout, 5xx) → TransientError; the request left but
no answer came → UnknownOutcome; ИЭМК refused the request (SOAP Fault with `RequestFault`) or
answered something that is not SOAP → PixError (a DataError: no automatic retry).

PatientDto documents (`IdDocumentType`, N3's own document type dictionary, unsignedByte):

* identity document: the ФОМС F011 code of `Patient.document_kind`, which N3 uses for identity
  documents with the same numbers (14 паспорт гражданина РФ, 3 свидетельство о рождении …);
  a kind missing from `IDENTITY_TYPES` goes as 18 «Иные документы» with its name;
* СНИЛС: 223, DocN eleven digits, ProviderName «ПФР» — as the public N3 client of the WSDL does;
* полис ОМС: 226 старого образца (kind «С»), 227 временное свидетельство («В»), 228 единого
  образца (paper «П», electronic «Э», УЭК «К»; DocN = ЕНП), IdProvider = the СМО's F002 code.
  226–228 follow N3's dictionary as peers use it; the official list is not public (NOTES.md):
  confirm them with the regional operator when connecting.

Addresses: `IdAddressType` 1 registration, 2 actual residence, the text as `StringAddress` (we
keep no structured address). Sex: 1 male, 2 female (unsignedByte).
"""

from __future__ import annotations

import threading
from datetime import date, datetime
from pathlib import Path
from typing import Any

from lxml import etree
from zeep import Client, Settings
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import Fault, TransportError, XMLParseError, XMLSyntaxError
from zeep.helpers import serialize_object

from portal.clinical.models import DOCUMENT_KINDS, Mo, Patient
from portal.exchange.delivery import DataError, TransientError, setting
from portal.exchange.http import NotSoap, connection_errors, soap_transport
from portal.extensions import db

WSDL = Path(__file__).resolve().parent.parent / "schemas" / "iemk" / "PixService.xml"
BINDING = "{http://tempuri.org/}BasicHttpBinding_IPixService"
NS_FAULT = "http://schemas.datacontract.org/2004/07/N3.EMK.Dto.Common"

SEX = {"M": 1, "F": 2}
# ФОМС F011 kind → N3 IdDocumentType (same numbers for identity documents).
IDENTITY_TYPES: dict[str, int] = {
    k: int(k) for k in ("3", "9", "10", "12", "13", "14", "21", "22", "23", "24")
}
OTHER_DOCUMENT = 18
SNILS_TYPE = 223
POLICY_TYPES: dict[str, int] = {"С": 226, "В": 227, "П": 228, "Э": 228, "К": 228}
POLICY_NAMES = {
    226: "Полис ОМС старого образца",
    227: "Временное свидетельство, подтверждающее оформление полиса ОМС",
    228: "Полис ОМС единого образца",
}
ADDRESS_REGISTRATION, ADDRESS_RESIDENCE = 1, 2
SOURCES = ("Unknown", "Reg", "Fed")


class PixError(DataError):
    """ИЭМК refused the request or answered nonsense; the text is for the user (Russian)."""

    def __init__(self, message: str, property_name: str | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.property_name = property_name
        self.code = code


_clients: dict[float, Client] = {}
_services: dict[tuple[str, float], Any] = {}
_lock = threading.Lock()


def _service(endpoint: str, timeout: float) -> Any:
    """The WSDL is parsed once per timeout (one zeep Client); a service proxy per endpoint."""
    with _lock:
        service = _services.get((endpoint, timeout))
        if service is None:
            client = _clients.get(timeout)
            if client is None:
                transport = soap_transport(endpoint, timeout)
                client = _clients[timeout] = Client(
                    str(WSDL), transport=transport, settings=Settings(strict=False)
                )
            service = _services[(endpoint, timeout)] = client.create_service(BINDING, endpoint)
        return service


def _lpu(mo: Mo) -> str:
    if not (mo.oid or "").strip():
        raise DataError("У МО не указан OID (ФРМО): ИЭМК не примет пациента")
    return mo.oid.strip()


# --- the PatientDto -------------------------------------------------------------------------


def _moment(value: date | None) -> datetime | None:
    return datetime(value.year, value.month, value.day) if value else None


def _identity_document(patient: Patient) -> dict[str, Any] | None:
    if not (patient.document_kind and patient.document_number):
        return None
    kind = patient.document_kind
    return {
        "DocN": patient.document_number,
        "DocS": patient.document_series or None,
        "DocumentName": DOCUMENT_KINDS.get(kind, f"Документ вида {kind} (F011)"),
        "IdDocumentType": IDENTITY_TYPES.get(kind, OTHER_DOCUMENT),
        "IssuedDate": _moment(patient.document_issued_on),
        "ProviderName": patient.document_issuer or None,
    }


def _policy_document(patient: Patient) -> dict[str, Any] | None:
    doc_type = POLICY_TYPES.get(patient.policy_kind or "")
    number = patient.policy_number or (patient.enp if doc_type == 228 else None)
    if doc_type is None or not number:
        return None
    return {
        "DocN": number,
        "DocS": patient.policy_series or None,
        "DocumentName": POLICY_NAMES[doc_type],
        "ExpiredDate": _moment(patient.policy_end),
        "IdDocumentType": doc_type,
        "IdProvider": patient.insurer_code or None,
        "StartDate": _moment(patient.policy_begin),
    }


def patient_dto(patient: Patient) -> dict[str, Any]:
    """Our patient as N3's PatientDto (zeep puts the elements in the WSDL's order)."""
    documents = [d for d in (_identity_document(patient), _policy_document(patient)) if d]
    if patient.snils:
        digits = "".join(ch for ch in patient.snils if ch.isdigit())
        documents.insert(
            1, {"DocN": digits, "DocumentName": "СНИЛС", "IdDocumentType": SNILS_TYPE, "ProviderName": "ПФР"}
        )
    addresses = [
        {"IdAddressType": kind, "StringAddress": text.strip()}
        for kind, text in (
            (ADDRESS_REGISTRATION, patient.registration_address),
            (ADDRESS_RESIDENCE, patient.residence_address),
        )
        if text and text.strip()
    ]
    dto: dict[str, Any] = {
        "Addresses": {"AddressDto": addresses} if addresses else None,
        "BirthDate": _moment(patient.birth_date),
        "Documents": {"DocumentDto": documents} if documents else None,
        "FamilyName": patient.last_name,
        "GivenName": patient.first_name,
        "IdGlobal": patient.iemk_global_id or None,
        "IdPatientMIS": patient.source_id or str(patient.id),
        "MiddleName": patient.middle_name or None,
        "Sex": SEX.get((patient.sex or "").upper()),
    }
    return {key: value for key, value in dto.items() if value is not None}


# --- calls ----------------------------------------------------------------------------------


def _call(mo: Mo, operation: str, **params: Any) -> Any:
    endpoint = setting("iemk.pix_endpoint", mo.id)
    timeout = float(setting("iemk.timeout", mo.id) or 30)
    service = _service(endpoint, timeout)
    with connection_errors("ИЭМК", timeout):
        try:
            return getattr(service, operation)(**params)
        except TransportError as error:
            if error.status_code >= 500:
                raise TransientError(f"ИЭМК ответил ошибкой HTTP {error.status_code}") from error
            raise PixError(
                f"ИЭМК ответил HTTP {error.status_code}: проверьте адрес сервиса пациентов"
            ) from error
        except Fault as error:
            raise _fault_error(error) from error
        except (NotSoap, XMLSyntaxError, XMLParseError) as error:
            raise PixError(f"ИЭМК вернул ответ не в формате SOAP: {_shown(error)}") from error
        except ZeepError as error:
            raise PixError(f"Ответ ИЭМК не разобран по WSDL сервиса пациентов: {_shown(error)}") from error


def _shown(error: Exception) -> str:
    content = getattr(error, "content", None)
    if isinstance(content, bytes):
        text = " ".join(content[:200].decode("utf-8", "replace").split())
        return f"«{text}»" if text else "пустой ответ"
    return str(error)[:200] or type(error).__name__


def _fault_text(node: etree._Element) -> str:
    def child(name: str) -> str:
        found = node.find(f"{{{NS_FAULT}}}{name}")
        if found is None:
            found = next((c for c in node if etree.QName(c).localname == name), None)
        return (found.text or "").strip() if found is not None else ""

    message = child("Message") or "без описания"
    details = [f"поле {child('PropertyName')}"] if child("PropertyName") else []
    if child("ErrorCode"):
        details.append(f"код {child('ErrorCode')}")
    return message + (f" ({', '.join(details)})" if details else "")


def _nested(node: etree._Element) -> list[etree._Element]:
    """RequestFault elements under node's Errors (recursively), in document order."""
    found = []
    for errors in (c for c in node if etree.QName(c).localname == "Errors"):
        for inner in (c for c in errors if etree.QName(c).localname == "RequestFault"):
            found.append(inner)
            found.extend(_nested(inner))
    return found


def _fault_error(error: Fault) -> Exception:
    """A RequestFault (or an ArrayOfRequestFault) → PixError with every message in Russian."""
    detail = error.detail
    faults: list[etree._Element] = []
    if detail is not None:
        for node in detail.iter():
            if not isinstance(node.tag, str):
                continue
            name = etree.QName(node).localname
            if name == "RequestFault" and etree.QName(node.getparent()).localname != "Errors":
                faults.append(node)
    if not faults:
        code = str(error.code or "")
        if code.rsplit(":", 1)[-1].lower().startswith("client"):
            return PixError(f"ИЭМК отказал: {error.message}")
        return TransientError(f"ИЭМК ответил ошибкой сервера: {error.message}")
    top = faults[0]
    parts = [_fault_text(node) for node in faults[:1] + _nested(top) + faults[1:]]
    for other in faults[1:]:
        parts.extend(_fault_text(node) for node in _nested(other))
    text = "ИЭМК отказал: " + parts[0] + ("; " + "; ".join(parts[1:]) if parts[1:] else "")
    property_name = _child_text(top, "PropertyName")
    code = _child_text(top, "ErrorCode")
    return PixError(text, property_name or None, int(code) if code and code.lstrip("-").isdigit() else None)


def _child_text(node: etree._Element, name: str) -> str:
    found = next((c for c in node if isinstance(c.tag, str) and etree.QName(c).localname == name), None)
    return (found.text or "").strip() if found is not None else ""


def _plain(value: Any) -> Any:
    """zeep objects → plain dicts and lists (for callers and JSON)."""
    value = serialize_object(value, dict)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def version(mo: Mo) -> dict[str, Any]:
    """GetVersion: {"DatabaseVersion", "ServiceVersion"} (to compare with the stored WSDL)."""
    return _plain(_call(mo, "GetVersion")) or {}


def add_patient(patient: Patient) -> str | None:
    """AddPatient; the WSDL answers nothing, so the IdGlobal comes only if a server sends one."""
    mo = patient.mo
    result = _call(
        mo, "AddPatient", guid=setting("iemk.guid", mo.id), idLPU=_lpu(mo), patient=patient_dto(patient)
    )
    return result if isinstance(result, str) and result else None


def update_patient(patient: Patient) -> None:
    mo = patient.mo
    _call(
        mo,
        "UpdatePatient",
        guid=setting("iemk.guid", mo.id),
        idLPU=_lpu(mo),
        patient=patient_dto(patient),
    )


def find_patients(mo: Mo, template: dict[str, Any], source: str = "Reg") -> list[dict[str, Any]]:
    """GetPatient: query by example (the non-empty PatientDto fields of `template`)."""
    if source not in SOURCES:
        raise ValueError(f"idSource {source!r}")
    result = _call(
        mo,
        "GetPatient",
        guid=setting("iemk.guid", mo.id),
        idLPU=_lpu(mo),
        patient=template,
        idSource=source,
    )
    found = _plain(result)
    if isinstance(found, dict):  # ArrayOfPatientDto kept as a wrapper by some zeep versions
        found = found.get("PatientDto")
    return list(found or [])


def get_by_global_id(mo: Mo, global_id: str) -> dict[str, Any] | None:
    result = _call(
        mo, "GetPatientByGlobalId", guid=setting("iemk.guid", mo.id), patientId=global_id, idLpu=_lpu(mo)
    )
    return _plain(result) or None


def ensure_registered(patient: Patient) -> str:
    """The patient's IdGlobal, registering them first; stored on the patient (flushed, not committed).

    AddPatient returns nothing, so the IdGlobal is read back with GetPatient by IdPatientMIS. A
    refused AddPatient is also looked up that way: the patient may have been added by an earlier
    call whose answer was lost.
    """
    if patient.iemk_global_id:
        return patient.iemk_global_id
    mo = patient.mo
    _lpu(mo)
    mis_id = patient_dto(patient)["IdPatientMIS"]
    try:
        global_id = add_patient(patient)
    except PixError as refused:
        global_id = _global_id_of(mo, mis_id)
        if not global_id:
            raise refused from None
    if not global_id:
        global_id = _global_id_of(mo, mis_id)
    if not global_id:
        raise PixError("ИЭМК принял пациента, но не нашёл его по идентификатору МИС: IdGlobal не получен")
    patient.iemk_global_id = global_id
    db.session.flush()
    return global_id


def _global_id_of(mo: Mo, mis_id: str) -> str | None:
    for found in find_patients(mo, {"IdPatientMIS": mis_id}):
        if found.get("IdPatientMIS") == mis_id and found.get("IdGlobal"):
            return found["IdGlobal"]
    return None
