"""The ИЭМК patient index (N3.Health PixService, SPEC I-3): zeep on the local `PixService.xml`.

SOAP 1.1 (BasicHttpBinding) at the МО's `iemk.pix_endpoint`; every call carries the МО's МИС
token `iemk.guid` and the МО's ФРМО OID as `idLPU`. Failures are sorted for the delivery
mechanism by `soap.call` (shared with EMKService): nothing left (refused, connect timeout, 5xx) →
TransientError; the request left but no answer came → UnknownOutcome; ИЭМК refused the request
(SOAP Fault with `RequestFault`) or answered something that is not SOAP → PixError (a DataError:
no automatic retry).

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

from datetime import date, datetime
from typing import Any

from portal.clinical.models import DOCUMENT_KINDS, Mo, Patient
from portal.exchange.delivery import setting
from portal.exchange.http import plain
from portal.extensions import db
from portal.iemk import soap

WSDL = soap.SCHEMAS / "PixService.xml"
BINDING = "{http://tempuri.org/}BasicHttpBinding_IPixService"

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


class PixError(soap.IemkError):
    """ИЭМК refused a patient index request or answered nonsense; the text is for the user (Russian)."""


def _lpu(mo: Mo) -> str:
    return soap.lpu(mo, "пациента")


def mis_id(patient: Patient) -> str:
    """IdPatientMIS: the patient's id in the source MIS (EMKService's idPatientMis too)."""
    return patient.source_id or str(patient.id)


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
        "IdPatientMIS": mis_id(patient),
        "MiddleName": patient.middle_name or None,
        "Sex": SEX.get((patient.sex or "").upper()),
    }
    return {key: value for key, value in dto.items() if value is not None}


# --- calls ----------------------------------------------------------------------------------


def _call(mo: Mo, operation: str, **params: Any) -> Any:
    endpoint = setting("iemk.pix_endpoint", mo.id)
    timeout = float(setting("iemk.timeout", mo.id) or 30)
    return soap.call(
        WSDL,
        BINDING,
        endpoint,
        timeout,
        operation,
        error=PixError,
        service_name="сервиса пациентов",
        key=soap.request_key(mo),
        **params,
    ).result


def version(mo: Mo) -> dict[str, Any]:
    """GetVersion: {"DatabaseVersion", "ServiceVersion"} (to compare with the stored WSDL)."""
    return plain(_call(mo, "GetVersion")) or {}


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
    found = plain(result)
    if isinstance(found, dict):  # ArrayOfPatientDto kept as a wrapper by some zeep versions
        found = found.get("PatientDto")
    return list(found or [])


def get_by_global_id(mo: Mo, global_id: str) -> dict[str, Any] | None:
    result = _call(
        mo, "GetPatientByGlobalId", guid=setting("iemk.guid", mo.id), patientId=global_id, idLpu=_lpu(mo)
    )
    return plain(result) or None


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
