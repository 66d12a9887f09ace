"""ИЭМК documents (SPEC I-4 … I-6): cases and uploads through N3's EMKService, lists, files and
results through the document registry, and the asynchronous answer.

* EMKService (`EMKService.xml`, the vendor's WSDL, SOAP 1.1 BasicHttpBinding) at
  `iemk.emk_endpoint`: `ensure_case` opens the case a document belongs to (CreateCase, once per
  МО and case), `add_med_record` uploads the signed CDA — and the signed PDF of the visit — as the
  N3 MedDocument subtype of its kind (AddMedRecord). Its WS-Addressing header carries our
  MessageID and ReplyTo = `iemk.callback_url`, where ИЭМК sends the result later (РЭМД pattern).
* The document registry (`IemkDocuments.wsdl`, reconstructed by us on the РЭМД pattern because
  the N3 WSDLs have no such operations — see the file's header) at `iemk.registry_endpoint`:
  `search_documents`, `get_document`, `document_result`.
* `parse_result_callback` reads the sendDocumentResult ИЭМК posts to the portal.

Failures are sorted by `soap.call` as for the patient index: TransientError, UnknownOutcome, or
EmkError (a DataError) for a refusal or an answer that is not SOAP.

Case fields whose N3 dictionaries are not public (purpose, type, result, roles) are left out;
IdPaymentType 1 (ОМС) and Confidentiality 1 («обычный») follow N3's published examples: confirm
them with the regional operator when connecting, as the document types of `pix`.
"""

from __future__ import annotations

import base64
import binascii
import csv
import functools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from lxml import etree
from sqlalchemy.exc import IntegrityError

from portal.clinical.models import Mo, Patient, Staff
from portal.exchange.delivery import DataError, setting
from portal.exchange.http import plain
from portal.extensions import db
from portal.iemk import pix, soap
from portal.iemk.models import KINDS, IemkCase, IemkDocument, VisitReport

EMK_WSDL = soap.SCHEMAS / "EMKService.xml"
EMK_BINDING = "{http://tempuri.org/}BasicHttpBinding_IEmkService"
DOCS_WSDL = soap.SCHEMAS / "IemkDocuments.wsdl"
NS_DOCS = "urn:obstetric-portal:iemk-documents"
DOCS_BINDING = f"{{{NS_DOCS}}}IemkDocumentsBinding"
MESSAGE_CODES = soap.SCHEMAS / "remd_message_codes.csv"  # ФНСИ 1.2.643.5.1.13.13.99.2.305 v3.18
MEDDOC = "{http://schemas.datacontract.org/2004/07/N3.EMK.Dto.MedRec.MedDoc}"
CASES = "{http://schemas.datacontract.org/2004/07/N3.EMK.Dto.Case}"
SOAP_NAMESPACES = ("http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope")

CASE_EXISTS = 2  # RequestFault ErrorCode «already exists» (the stand-in's; N3's list is not public)
NOT_FOUND = "REGISTRY_ITEM_NOT_FOUND"
PAYMENT_OMS = 1
CONFIDENTIALITY_NORMAL = 1
SNILS_TYPE = 223
STATUSES = ("processing", "success", "error")
CDA_MIME, PDF_MIME = "text/xml", "application/pdf"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class EmkError(soap.IemkError):
    """ИЭМК refused a document request or answered nonsense; the text is for the user (Russian)."""


class CallbackError(ValueError):
    """A sendDocumentResult that cannot be read; the text goes back in a SOAP Fault."""


@dataclass
class Sent:
    request: str  # the AddMedRecord envelope as sent
    response: str  # and as answered


@dataclass
class DocResult:
    """What ИЭМК says about an uploaded document (getDocumentResult or the callback)."""

    status: str  # "processing" | "success" | "error" | "not_found"
    emdr_id: str | None = None
    registered_at: datetime | None = None  # naive UTC
    errors: list[tuple[str, str]] = field(default_factory=list)  # (ФНСИ 305 code, text as answered)
    message: str = ""  # for the user, in Russian
    answer: str = ""  # the XML as received


@dataclass
class RemoteDocument:
    """One document of the patient held by ИЭМК (searchDocuments)."""

    local_uid: str
    kind: int | None  # ФНСИ 1520
    title: str
    created_at: datetime | None  # naive UTC
    organization: str  # ФРМО OID of the МО that sent it
    emdr_id: str | None


@dataclass
class RemoteFile(RemoteDocument):
    """A document fetched from ИЭМК (getDocument): the CDA, and the PDF when one was attached."""

    mime: str = ""  # of the first file
    xml: bytes | None = None
    pdf: bytes | None = None
    signature: bytes | None = None  # detached CMS of the CDA
    pdf_signature: bytes | None = None
    answer: str = ""


# --- calls ----------------------------------------------------------------------------------


def _timeout(mo: Mo) -> float:
    return float(setting("iemk.timeout", mo.id) or 30)


def _emk(mo: Mo, operation: str, addressing: soap.Addressing | None = None, **params: Any) -> soap.Answer:
    return soap.call(
        EMK_WSDL,
        EMK_BINDING,
        setting("iemk.emk_endpoint", mo.id),
        _timeout(mo),
        operation,
        error=EmkError,
        service_name="сервиса документов (EMKService)",
        addressing=addressing,
        key=soap.request_key(mo),
        **params,
    )


def _emk_type(mo: Mo, qname: str) -> Any:
    return soap.get_type(EMK_WSDL, setting("iemk.emk_endpoint", mo.id), _timeout(mo), qname)


def _registry(mo: Mo, operation: str, **params: Any) -> soap.Answer:
    return soap.call(
        DOCS_WSDL,
        DOCS_BINDING,
        setting("iemk.registry_endpoint", mo.id),
        _timeout(mo),
        operation,
        error=EmkError,
        service_name="сервиса регистра документов",
        key=soap.request_key(mo),
        guid=setting("iemk.guid", mo.id),
        idLpu=soap.lpu(mo, "запрос о документах"),
        **params,
    )


def version(mo: Mo) -> dict[str, Any]:
    """EMKService GetVersion: {"DatabaseVersion", "ServiceVersion"}."""
    return plain(_emk(mo, "GetVersion").result) or {}


# --- cases ----------------------------------------------------------------------------------


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value not in (None, "", [], {})}


def medical_staff(staff: Staff | None, lpu: str) -> dict[str, Any] | None:
    """N3 MedicalStaff: the doctor's name, their id in the source MIS and СНИЛС (document 223)."""
    if staff is None:
        return None
    snils = "".join(ch for ch in staff.snils or "" if ch.isdigit())
    documents = [{"DocN": snils, "IdDocumentType": SNILS_TYPE, "ProviderName": "ПФР"}] if snils else []
    person = {
        "HumanName": _clean(
            {"GivenName": staff.first_name, "MiddleName": staff.middle_name, "FamilyName": staff.last_name}
        ),
        "IdPersonMis": staff.source_id,
        "Documents": {"IdentityDocument": documents} if documents else None,
    }
    return _clean({"Person": _clean(person), "IdLpu": lpu, "PositionName": staff.position})


def case_of(doc: IemkDocument) -> tuple[str, str]:
    """(N3 case type, idCaseMis): the stay for documents of a hospitalisation, else the pregnancy,
    else the visit itself."""
    event = doc.event
    if event.hospitalisation is not None:
        return "CaseStat", event.hospitalisation.source_id
    if event.pregnancy is not None:
        return "CaseAmb", event.pregnancy.source_id
    return "CaseAmb", event.source_id


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def _case_dto(doc: IemkDocument, case_type: str, case_id: str, lpu: str) -> dict[str, Any]:
    event = doc.event
    doctor = medical_staff(doc.doctor or event.doctor, lpu)
    fields: dict[str, Any] = {
        "HistoryNumber": case_id,
        "IdCaseMis": case_id,
        "IdPaymentType": PAYMENT_OMS,
        "Confidentiality": CONFIDENTIALITY_NORMAL,
        "DoctorConfidentiality": CONFIDENTIALITY_NORMAL,
        "CuratorConfidentiality": CONFIDENTIALITY_NORMAL,
        "IdLpu": lpu,
        "DoctorInCharge": doctor,
        "Authenticator": {"Doctor": doctor} if doctor else None,
        "Author": {"Doctor": doctor} if doctor else None,
        "IdPatientMis": pix.mis_id(doc.patient),
    }
    if case_type == "CaseStat":
        stay = event.hospitalisation
        fields.update(
            OpenDate=stay.admitted_at,
            HistoryNumber=stay.card_number or case_id,
            HospitalizationOrder=2 if stay.emergency else 1,
        )
    elif event.pregnancy is not None:
        fields.update(OpenDate=_midnight(event.pregnancy.registered_on), IsActive=True)
    else:
        fields.update(OpenDate=event.at, IsActive=True)
    return _clean(fields)


def _already_exists(refusal: EmkError) -> bool:
    text = str(refusal).casefold()
    return refusal.code == CASE_EXISTS or "уже существует" in text or "already exists" in text


def ensure_case(doc: IemkDocument) -> str:
    """idCaseMis of the document's case, opened in ИЭМК with CreateCase the first time (the row
    IemkCase is flushed, not committed). A refusal saying the case exists counts as opened: an
    earlier CreateCase may have lost its answer."""
    mo = doc.mo
    lpu = soap.lpu(mo, "документ")
    case_type, case_id = case_of(doc)
    known = db.session.scalar(
        db.select(IemkCase.id).where(IemkCase.mo_id == doc.mo_id, IemkCase.case_mis_id == case_id)
    )
    if known is not None:
        return case_id
    dto = _emk_type(mo, CASES + case_type)(**_case_dto(doc, case_type, case_id, lpu))
    try:
        _emk(mo, "CreateCase", guid=setting("iemk.guid", mo.id), createCaseDto=dto)
    except EmkError as refusal:
        if not _already_exists(refusal):
            raise
    try:
        with db.session.begin_nested():
            db.session.add(IemkCase(mo_id=doc.mo_id, case_mis_id=case_id))
            db.session.flush()
    except IntegrityError:  # another worker opened the same case a moment ago
        pass
    return case_id


# --- upload ---------------------------------------------------------------------------------


def _signed(data: bytes, mime: str, sign: bytes, doctor: dict[str, Any]) -> dict[str, Any]:
    return {
        "Data": data,
        "PersonalSigns": {"MedDocumentDto.PersonalSign": [{"Sign": sign, "Doctor": doctor}]},
        "MimeType": mime,
    }


def add_med_record(doc: IemkDocument, report: VisitReport | None, message_id: str) -> Sent:
    """AddMedRecord of the signed document (IdDocumentMis = localUid) and, when given, the signed
    PDF of the visit; `message_id` is the WS-Addressing MessageID the asynchronous answer relates to."""
    mo = doc.mo
    lpu = soap.lpu(mo, "документ")
    if not (doc.xml and doc.signature):
        raise DataError("Документ не подписан: сначала «Получить и подписать документы»")
    if doc.doctor is None:
        raise DataError("У документа не указан врач: ИЭМК принимает документ от имени подписавшего врача")
    try:
        signature = base64.b64decode(doc.signature, validate=True)
    except (binascii.Error, ValueError):
        raise DataError("Подпись документа повреждена (не base64): подпишите документ заново") from None
    doctor = medical_staff(doc.doctor, lpu)
    attachments = [_signed(doc.xml.encode("utf-8"), CDA_MIME, signature, doctor)]
    if report is not None:
        if not report.signature:
            raise DataError(
                f"Протокол визита «{report.file_name}» не подписан: ИЭМК не примет его без подписи"
            )
        attachments.append(_signed(report.content, PDF_MIME, report.signature, doctor))
    record = _emk_type(mo, MEDDOC + KINDS[doc.kind].med_document)(
        Attachments={"MedDocumentDto.DocumentAttachment": attachments},
        Author=doctor,
        CreationDate=doc.built_at or doc.signed_at or doc.event_at,
        Header=doc.title,
        IdDocumentMis=doc.local_uid,
    )
    _case_type, case_id = case_of(doc)
    answer = _emk(
        mo,
        "AddMedRecord",
        soap.Addressing(message_id, setting("iemk.callback_url", mo.id)),
        guid=setting("iemk.guid", mo.id),
        idLpu=lpu,
        idPatientMis=pix.mis_id(doc.patient),
        idCaseMis=case_id,
        medRecord=record,
    )
    return Sent(request=answer.request, response=answer.response)


# --- results --------------------------------------------------------------------------------


@functools.cache
def _message_codes() -> dict[str, str]:
    with MESSAGE_CODES.open(encoding="utf-8", newline="") as source:
        return {row["code"].strip(): row["description"].strip() for row in csv.DictReader(source)}


def code_description(code: str) -> str | None:
    """The ФНСИ 305 text of a code; the live РЭМД spells RECIPIENT_* where the directory has RECEPIENT_*."""
    codes = _message_codes()
    code = code.strip()
    return codes.get(code) or codes.get(code.replace("RECIPIENT_", "RECEPIENT_"))


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def result_of(
    status: str,
    emdr_id: str | None,
    registered_at: datetime | None,
    errors: list[tuple[str, str]],
    answer: str,
) -> DocResult:
    """A DocResult with the sentence the user reads."""
    if status == "success":
        message = "Документ сохранен в ИЭМК" + (f", регистрационный номер {emdr_id}" if emdr_id else "")
    elif status == "error":
        parts = [f"{text or code_description(code) or 'без описания'} (код {code})" for code, text in errors]
        message = "; ".join(parts) or "ИЭМК отклонил документ без указания причины"
    elif status == "not_found":
        message = "ИЭМК не получил документ"
    else:
        message = "ИЭМК проверяет документ"
    return DocResult(status, emdr_id or None, _utc(registered_at), errors, message, answer)


def _list(value: Any, name: str) -> list[Any]:
    """The repeated `name` of a wrapper (zeep gives a wrapper of one list as the list itself)."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return list(getattr(value, name, None) or [])


def _errors_of(errors: Any) -> list[tuple[str, str]]:
    items = [plain(item) for item in _list(errors, "item")]
    return [((item.get("code") or "").strip(), (item.get("message") or "").strip()) for item in items]


def document_result(mo: Mo, local_uid: str) -> DocResult:
    """getDocumentResult: processing, success (emdrId), error (ФНСИ 305 codes), or not_found when
    ИЭМК never got the document (then it may be sent again)."""
    try:
        answer = _registry(mo, "getDocumentResult", localUid=local_uid)
    except EmkError as refusal:
        if refusal.code == NOT_FOUND:
            return result_of("not_found", None, None, [], refusal.response)
        raise
    found = answer.result
    status = str(found.status or "")
    if status not in STATUSES:
        raise EmkError(f"ИЭМК вернул неизвестный статус документа: «{status}»")
    return result_of(
        status, found.emdrId, found.registrationDateTime, _errors_of(found.errors), answer.response
    )


def _patient_ref(patient: Patient) -> dict[str, str]:
    if patient.iemk_global_id:
        return {"IdGlobal": patient.iemk_global_id}
    return {"idPatientMis": pix.mis_id(patient)}


def _remote(item: Any) -> dict[str, Any]:
    return {
        "local_uid": item.localUid,
        "kind": item.kind,
        "title": item.title or "",
        "created_at": _utc(item.creationDateTime),
        "organization": item.organization or "",
        "emdr_id": item.emdrId or None,
    }


def search_documents(
    patient: Patient, date_from: date | None = None, date_to: date | None = None
) -> list[RemoteDocument]:
    """searchDocuments: what ИЭМК holds for the patient — of every МО when the patient is known by
    IdGlobal, else the documents our МО sent."""
    answer = _registry(
        patient.mo, "searchDocuments", patient=_patient_ref(patient), dateFrom=date_from, dateTo=date_to
    )
    items = _list(answer.result, "item")
    return [RemoteDocument(**_remote(item)) for item in items]


def get_document(patient: Patient, local_uid: str) -> RemoteFile:
    """getDocument: the stored files of one document of the patient (CDA, PDF) and their signatures."""
    answer = _registry(patient.mo, "getDocument", patient=_patient_ref(patient), localUid=local_uid)
    document = answer.result
    files = _list(document.files, "file")
    found = RemoteFile(**_remote(document), answer=answer.response)
    found.mime = files[0].mimeType if files else ""
    for file in files:
        mime = (file.mimeType or "").lower()
        if found.xml is None and "xml" in mime:
            found.xml, found.signature = file.data, file.signature or None
        elif found.pdf is None and mime == PDF_MIME:
            found.pdf, found.pdf_signature = file.data, file.signature or None
    return found


# --- the asynchronous answer ----------------------------------------------------------------


def _child(node: etree._Element, name: str) -> etree._Element | None:
    return next((c for c in node if isinstance(c.tag, str) and etree.QName(c).localname == name), None)


def _text(node: etree._Element, name: str) -> str:
    found = _child(node, name)
    return (found.text or "").strip() if found is not None else ""


def parse_result_callback(body: bytes) -> tuple[str, DocResult]:
    """sendDocumentResult (IemkDocuments.wsdl) → (localUid, result); CallbackError names what is
    wrong with a malformed message."""
    try:
        envelope = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as error:
        raise CallbackError(f"Некорректный XML: {error}") from None
    soap_ns = etree.QName(envelope).namespace
    if etree.QName(envelope).localname != "Envelope" or soap_ns not in SOAP_NAMESPACES:
        raise CallbackError("Ожидается конверт SOAP (soap:Envelope)")
    body_node = envelope.find(f"{{{soap_ns}}}Body")
    operation = (
        next((c for c in body_node if isinstance(c.tag, str)), None) if body_node is not None else None
    )
    if operation is None:
        raise CallbackError("В SOAP-сообщении нет тела")
    name = etree.QName(operation)
    if name.localname != "sendDocumentResult" or name.namespace != NS_DOCS:
        raise CallbackError(
            f"Неизвестная операция: {name.localname} ({name.namespace or 'без пространства имён'})"
        )
    local_uid = _text(operation, "localUid")
    if not local_uid:
        raise CallbackError("Не указан localUid документа")
    status = _text(operation, "status")
    if status not in STATUSES:
        raise CallbackError(
            f"Недопустимый статус результата: «{status}» (ожидается processing, success или error)"
        )
    emdr_id = _text(operation, "emdrId") or None
    if status == "success" and not emdr_id:
        raise CallbackError("В положительном ответе нет регистрационного номера (emdrId)")
    registered_at = None
    if _text(operation, "registrationDateTime"):
        raw = _text(operation, "registrationDateTime")
        try:
            registered_at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise CallbackError(f"Некорректная дата регистрации registrationDateTime: «{raw}»") from None
    errors: list[tuple[str, str]] = []
    errors_node = _child(operation, "errors")
    for item in errors_node if errors_node is not None else []:
        if not isinstance(item.tag, str) or etree.QName(item).localname != "item":
            continue
        code = _text(item, "code")
        if not code:
            raise CallbackError("Ошибка без кода в errors/item: code обязателен (ФНСИ 305)")
        errors.append((code, _text(item, "message")))
    if status == "error" and not errors:
        raise CallbackError("В ответе об ошибке нет ни одного кода ошибки (errors/item/code)")
    answer = body.decode("utf-8", errors="replace")
    return local_uid, result_of(status, emdr_id, registered_at, errors, answer)
