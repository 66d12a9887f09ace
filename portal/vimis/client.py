"""The ВИМИС transport: zeep on the local `akineo.wsdl`, signed by portal.crypto.

The only module that talks to ВИМИС. Transport failures are sorted for the delivery
mechanism: nothing left (refused, connect timeout, 5xx) → TransientError; the request left but
no answer came (read timeout, broken connection) → UnknownOutcome; ВИМИС refused the request
itself (SOAP Fault «Client») → DataError. Every envelope sent and received is returned to the
caller, which keeps it in the item's journal.
"""

from __future__ import annotations

import base64
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from lxml import etree
from zeep import Client, Settings
from zeep.exceptions import Fault, TransportError, XMLSyntaxError

from portal import crypto
from portal.admin import services as admin_services
from portal.exchange.delivery import DataError, TransientError, UnknownOutcome, memo, setting
from portal.exchange.http import NotSoap, connection_errors, reason, soap_transport
from portal.exchange.models import WorkItem
from portal.vimis.semd_types import SEMD_TYPES, VMCL_AKINEO

WSDL = Path(__file__).resolve().parent.parent / "schemas" / "vimis" / "akineo.wsdl"
WSA = "http://www.w3.org/2005/08/addressing"
EGISZ = "http://egisz.rosminzdrav.ru"
SIGNED_IDS = ["body", "id-to", "id-action", "id-replyto", "id-messageid"]


@dataclass
class Sent:
    msg_id: str
    request: str
    response: str


@dataclass
class Status:
    code: int | None  # 0 error, 1 ok, 2 in work, None: ВИМИС does not know the id
    description: str
    response: str


class _Signer:
    """zeep's wsse hook: add the ИПС headers of the official example, then sign them and the body.

    zeep calls `apply` before sending and `verify` on the answer; both stash the serialized
    envelope for the journal (per thread, since the same client serves several threads).
    """

    def __init__(self) -> None:
        self.local = threading.local()

    def apply(
        self, envelope: etree._Element, headers: dict[str, Any]
    ) -> tuple[etree._Element, dict[str, Any]]:
        ctx = self.local.context
        soap = envelope.tag.split("}")[0][1:]
        header = envelope.find(f"{{{soap}}}Header")
        if header is None:
            header = etree.Element(f"{{{soap}}}Header")
            envelope.insert(0, header)
        for element in header.findall(f"{{{WSA}}}*"):  # zeep's own wsa headers: ours replace them
            header.remove(element)
        body = envelope.find(f"{{{soap}}}Body")
        crypto.set_wsu_id(body, "body")

        def wsa(name: str, text: str | None = None, wsu_id: str | None = None) -> etree._Element:
            element = etree.SubElement(header, f"{{{WSA}}}{name}")
            if text is not None:
                element.text = text
            if wsu_id:
                crypto.set_wsu_id(element, wsu_id)
            return element

        wsa("To", ctx["to"], "id-to")
        wsa("Action", ctx["action"], "id-action")
        etree.SubElement(wsa("ReplyTo", wsu_id="id-replyto"), f"{{{WSA}}}Address").text = ctx["reply_to"]
        etree.SubElement(wsa("FaultTo"), f"{{{WSA}}}Address").text = f"{WSA}/anonymous"
        wsa("MessageID", ctx["message_id"], "id-messageid")
        transport = etree.SubElement(header, f"{{{EGISZ}}}transportHeader")
        auth = etree.SubElement(transport, f"{{{EGISZ}}}authInfo")
        etree.SubElement(auth, f"{{{EGISZ}}}clientEntityId").text = ctx["client_entity_id"]
        crypto.sign_envelope(envelope, ctx["key"], SIGNED_IDS)
        self.local.request = etree.tostring(envelope, encoding="unicode")
        return envelope, headers

    def verify(self, envelope: etree._Element) -> etree._Element:
        self.local.response = etree.tostring(envelope, encoding="unicode")
        return envelope


_clients: dict[tuple[str, float], tuple[Client, Any, _Signer]] = {}
_clients_lock = threading.Lock()


def _client(endpoint: str, timeout: float) -> tuple[Any, _Signer]:
    """One zeep client per endpoint and timeout: loading the WSDL costs more than a call."""
    with _clients_lock:
        cached = _clients.get((endpoint, timeout))
        if cached is None:
            signer = _Signer()
            transport = soap_transport(endpoint, timeout)
            client = Client(str(WSDL), transport=transport, wsse=signer, settings=Settings(strict=False))
            service = client.create_service("{http://vimis.rosminzdrav.ru/}receiverSoapBinding", endpoint)
            cached = _clients[(endpoint, timeout)] = (client, service, signer)
        return cached[1], cached[2]


def signing_key(mo_id: int | None) -> crypto.SigningKey:
    return memo(("signing_key", mo_id), lambda: _signing_key(mo_id))


def _signing_key(mo_id: int | None) -> crypto.SigningKey:
    """The МО's own «Подпись СЭМД для ВИМИС» certificate, else the region's; valid today."""
    try:
        return admin_services.signing_key("vimis", mo_id)
    except admin_services.NoCertificate as error:
        raise TransientError(str(error)) from None


def _call(item: WorkItem, action: str, message_id: str, operation: str, **params: Any) -> tuple[Any, _Signer]:
    endpoint = setting("vimis.endpoint", item.mo_id)
    timeout = float(setting("vimis.timeout", item.mo_id) or 30)
    service, signer = _client(endpoint, timeout)
    signer.local.context = {
        "to": endpoint,
        "action": action,
        "message_id": message_id,
        "key": signing_key(item.mo_id),
        "reply_to": setting("vimis.callback_url", item.mo_id),
        "client_entity_id": setting("vimis.client_entity_id", item.mo_id),
    }
    signer.local.request = signer.local.response = None
    with connection_errors("ВИМИС", timeout):
        try:
            return getattr(service, operation)(**params), signer
        except TransportError as error:
            raise TransientError(f"ВИМИС ответил ошибкой HTTP {error.status_code}") from error
        except (NotSoap, XMLSyntaxError) as error:
            raise UnknownOutcome(f"ответ ВИМИС не разобран: {error}") from error
        except Fault as error:
            code = str(error.code or "")
            if code.rsplit(":", 1)[-1].lower().startswith("client"):
                raise DataError(f"ВИМИС отклонил запрос: {error.message}") from error
            raise TransientError(f"ВИМИС ответил ошибкой сервера: {error.message}") from error


def send_document(item: WorkItem, semd: Any, document: bytes) -> Sent:
    """sendDocument for one SEMD version; item.request_id is the WS-Addressing MessageID."""
    semd_type = SEMD_TYPES[semd.semd_type]
    key = signing_key(item.mo_id)
    result, signer = _call(
        item,
        "sendDocument",
        item.request_id,
        "sendDocument",
        vmcl=VMCL_AKINEO,
        docType=semd_type.doc_type,
        docTypeVersion=str(semd_type.doc_type_version),
        triggerPoint=semd_type.trigger_point,
        interimMsg=0,
        signature={
            "data": base64.b64encode(crypto.detached_signature(key, document)).decode("ascii"),
            "checksum": int(crypto.crc32_checksum(document)),
        },
        document=base64.b64encode(document).decode("ascii"),
    )
    msg_id = result if isinstance(result, str) else getattr(result, "msg_id", None)
    if not msg_id:
        raise UnknownOutcome("ВИМИС не вернул msg_id")
    return Sent(msg_id=msg_id, request=signer.local.request or "", response=signer.local.response or "")


def check_status(item: WorkItem) -> Status:
    """checkStatus by ВИМИС's msg_id, or by our MessageID when the send's answer was lost."""
    asked = item.external_id or item.request_id
    try:
        result, signer = _call(item, "checkStatus", str(uuid.uuid4()), "checkStatus", msg_id=asked)
    except DataError as error:  # ВИМИС: «Документ не найден»
        return Status(None, f"ВИМИС не знает документ {asked}: {error}", "")
    code = int(result.status) if result.status is not None else 2
    return Status(code, result.description or "", signer.local.response or "")


def new_kas_case_number(semd: Any) -> str:
    """POST {"mo_oid", "year", "region"} to the КАС case id service → «21-77-00065» (§5.3)."""
    from portal.vimis.builders import region_code

    endpoint = setting("vimis.kas_endpoint", semd.mo_id)
    timeout = float(setting("vimis.timeout", semd.mo_id) or 30)
    payload = {"mo_oid": semd.mo.oid, "year": semd.event_at.year, "region": region_code(semd.mo)}
    headers = {"clientEntityId": setting("vimis.client_entity_id", semd.mo_id)}
    try:
        answer = requests.post(endpoint, json=payload, headers=headers, timeout=timeout)
    except requests.exceptions.RequestException as error:
        raise TransientError(f"Сервис номеров случаев КАС недоступен: {reason(error)}") from error
    if answer.status_code >= 500:
        raise TransientError(f"Сервис номеров случаев КАС ответил ошибкой HTTP {answer.status_code}")
    try:
        body = answer.json()
    except ValueError as error:
        raise TransientError("Сервис номеров случаев КАС вернул не JSON") from error
    number = (body.get("data") or {}).get("number") if isinstance(body, dict) else None
    if not (isinstance(body, dict) and body.get("is_success") and number):
        errors = body.get("errors") if isinstance(body, dict) else None
        raise DataError(
            f"Номер случая КАС не получен: {'; '.join(map(str, errors or [])) or answer.text[:300]}"
        )
    return str(number)
