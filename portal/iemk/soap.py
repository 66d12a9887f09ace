"""What the ИЭМК clients share: zeep services on local WSDLs, the envelopes of every call, and the
sorting of failures for the delivery mechanism, with ИЭМК's refusals (RequestFault) in Russian.

Sorting (the same for the patient index, EMKService and the document registry): nothing left
(refused, connect timeout, 5xx) → TransientError; the request left but no answer came →
UnknownOutcome; ИЭМК refused the request (SOAP Fault with a detail, or a Fault «Client») or
answered something that is not SOAP → the caller's IemkError (a DataError: no automatic retry).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree
from zeep import Client, Plugin, Settings
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import Fault, TransportError, XMLParseError, XMLSyntaxError

from portal import crypto
from portal.clinical.models import Mo
from portal.exchange.delivery import DataError, TransientError, memo
from portal.exchange.http import NotSoap, connection_errors, soap_transport

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "iemk"
WSA = "http://www.w3.org/2005/08/addressing"


class IemkError(DataError):
    """ИЭМК refused the request or answered nonsense; the text is for the user (Russian).

    `code` is N3's ErrorCode (int) of a RequestFault, or the ФНСИ 305 code (str) of a fault of
    the document registry; `response` is the answer as received, when there was one."""

    def __init__(self, message: str, property_name: str | None = None, code: int | str | None = None) -> None:
        super().__init__(message)
        self.property_name = property_name
        self.code = code
        self.response = ""


@dataclass(frozen=True)
class Addressing:
    """WS-Addressing of a request whose answer ИЭМК sends later: our MessageID and where to."""

    message_id: str
    reply_to: str


@dataclass
class Answer:
    result: Any
    request: str  # the envelope as sent
    response: str  # the envelope as received


class _Envelopes(Plugin):
    """Keeps the envelopes of this thread's call (one client serves several threads) and puts our
    MessageID and ReplyTo into the WS-Addressing header zeep writes for the N3 WSDLs."""

    def __init__(self) -> None:
        self.local = threading.local()

    def egress(self, envelope, http_headers, operation, binding_options):
        addressing: Addressing | None = getattr(self.local, "addressing", None)
        if addressing is not None:
            soap = etree.QName(envelope).namespace
            header = envelope.find(f"{{{soap}}}Header")
            if header is None:
                header = etree.Element(f"{{{soap}}}Header")
                envelope.insert(0, header)
            for name in ("MessageID", "ReplyTo"):
                for old in header.findall(f"{{{WSA}}}{name}"):
                    header.remove(old)
            etree.SubElement(header, f"{{{WSA}}}MessageID").text = addressing.message_id
            reply_to = etree.SubElement(header, f"{{{WSA}}}ReplyTo")
            etree.SubElement(reply_to, f"{{{WSA}}}Address").text = addressing.reply_to
        key = getattr(self.local, "key", None)
        if key is not None:  # WS-Security: the body signed with «Подпись запросов ИЭМК» (I-1)
            soap = etree.QName(envelope).namespace
            crypto.set_wsu_id(envelope.find(f"{{{soap}}}Body"), "body")
            crypto.sign_envelope(envelope, key, ["body"])
        self.local.request = etree.tostring(envelope, encoding="unicode")
        return envelope, http_headers

    def ingress(self, envelope, http_headers, operation):
        self.local.response = etree.tostring(envelope, encoding="unicode")
        return envelope, http_headers


_clients: dict[tuple[str, float], tuple[Client, _Envelopes]] = {}
_services: dict[tuple[str, str, str, float], tuple[Any, _Envelopes]] = {}
_lock = threading.Lock()


def _client(wsdl: Path, endpoint: str, timeout: float) -> tuple[Client, _Envelopes]:
    """The WSDL is parsed once per timeout: one zeep Client (the caller holds _lock)."""
    cached = _clients.get((str(wsdl), timeout))
    if cached is None:
        envelopes = _Envelopes()
        client = Client(
            str(wsdl),
            transport=soap_transport(endpoint, timeout),
            settings=Settings(strict=False),
            plugins=[envelopes],
        )
        cached = _clients[(str(wsdl), timeout)] = (client, envelopes)
    return cached


def service(wsdl: Path, binding: str, endpoint: str, timeout: float) -> tuple[Any, _Envelopes]:
    """A service proxy per endpoint on the WSDL's one client."""
    key = (str(wsdl), binding, endpoint, timeout)
    with _lock:
        found = _services.get(key)
        if found is None:
            client, envelopes = _client(wsdl, endpoint, timeout)
            found = _services[key] = (client.create_service(binding, endpoint), envelopes)
        return found


def get_type(wsdl: Path, endpoint: str, timeout: float, qname: str) -> Any:
    """A type of the WSDL (to send a subtype, e.g. xsi:type DischargeSummary for a MedRecord)."""
    with _lock:
        client, _envelopes = _client(wsdl, endpoint, timeout)
    return client.get_type(qname)


def call(
    wsdl: Path,
    binding: str,
    endpoint: str,
    timeout: float,
    operation: str,
    *,
    error: type[IemkError],
    service_name: str,
    addressing: Addressing | None = None,
    key: crypto.SigningKey | None = None,
    **params: Any,
) -> Answer:
    """One SOAP call; `service_name` names the service in messages («сервиса пациентов»); with
    `key` the request goes signed (WS-Security)."""
    proxy, envelopes = service(wsdl, binding, endpoint, timeout)
    envelopes.local.addressing = addressing
    envelopes.local.key = key
    envelopes.local.request = envelopes.local.response = ""
    try:
        with connection_errors("ИЭМК", timeout):
            try:
                result = getattr(proxy, operation)(**params)
            except TransportError as failure:
                if failure.status_code >= 500:
                    raise TransientError(f"ИЭМК ответил ошибкой HTTP {failure.status_code}") from failure
                raise error(
                    f"ИЭМК ответил HTTP {failure.status_code}: проверьте адрес {service_name}"
                ) from failure
            except Fault as failure:
                refusal = fault_error(failure, error)
                if isinstance(refusal, IemkError):
                    refusal.response = envelopes.local.response or ""
                raise refusal from failure
            except (NotSoap, XMLSyntaxError, XMLParseError) as failure:
                raise error(f"ИЭМК вернул ответ не в формате SOAP: {_shown(failure)}") from failure
            except ZeepError as failure:
                raise error(f"Ответ ИЭМК не разобран по WSDL {service_name}: {_shown(failure)}") from failure
        return Answer(result, envelopes.local.request or "", envelopes.local.response or "")
    finally:
        envelopes.local.addressing = envelopes.local.key = None


def request_key(mo: Mo) -> crypto.SigningKey | None:
    """The МО's (else the region's) certificate «Подпись запросов ИЭМК» that signs every request
    to ИЭМК, read once per delivery pass; None when none is set (N3 authorises by the МИС token)."""
    from portal.admin.services import NoCertificate, signing_key

    def load() -> crypto.SigningKey | None:
        try:
            return signing_key("iemk", mo.id)
        except NoCertificate:
            return None

    return memo(("iemk_request_key", mo.id), load)


def lpu(mo: Mo, what: str) -> str:
    """The МО's ФРМО OID (idLpu of every call); `what` ИЭМК would not take without it."""
    if not (mo.oid or "").strip():
        raise DataError(f"У МО не указан OID (ФРМО): ИЭМК не примет {what}")
    return mo.oid.strip()


# --- faults ---------------------------------------------------------------------------------


def _shown(error: Exception) -> str:
    content = getattr(error, "content", None)
    if isinstance(content, bytes):
        text = " ".join(content[:200].decode("utf-8", "replace").split())
        return f"«{text}»" if text else "пустой ответ"
    return str(error)[:200] or type(error).__name__


def _child_text(node: etree._Element, name: str) -> str:
    found = next((c for c in node if isinstance(c.tag, str) and etree.QName(c).localname == name), None)
    return (found.text or "").strip() if found is not None else ""


def _fault_text(node: etree._Element) -> str:
    message = _child_text(node, "Message") or "без описания"
    details = [f"поле {_child_text(node, 'PropertyName')}"] if _child_text(node, "PropertyName") else []
    if _child_text(node, "ErrorCode"):
        details.append(f"код {_child_text(node, 'ErrorCode')}")
    return message + (f" ({', '.join(details)})" if details else "")


def _nested(node: etree._Element) -> list[etree._Element]:
    """RequestFault elements under node's Errors (recursively), in document order."""
    found = []
    for errors in (c for c in node if isinstance(c.tag, str) and etree.QName(c).localname == "Errors"):
        for inner in (
            c for c in errors if isinstance(c.tag, str) and etree.QName(c).localname == "RequestFault"
        ):
            found.append(inner)
            found.extend(_nested(inner))
    return found


def fault_error(error: Fault, kind: type[IemkError]) -> Exception:
    """A SOAP Fault → `kind` with every message in Russian, or TransientError for a server fault.

    Details understood: N3's RequestFault (or ArrayOfRequestFault), nested Errors included;
    and the document registry's fault (code of ФНСИ 305, message)."""
    detail = error.detail
    faults: list[etree._Element] = []
    coded: etree._Element | None = None
    if detail is not None:
        for node in detail.iter():
            if not isinstance(node.tag, str):
                continue
            name = etree.QName(node).localname
            parent = node.getparent()
            if name == "RequestFault" and (parent is None or etree.QName(parent).localname != "Errors"):
                faults.append(node)
            elif coded is None and _child_text(node, "code") and name != "RequestFault":
                coded = node
    if not faults and coded is not None:
        code, message = _child_text(coded, "code"), _child_text(coded, "message") or error.message
        return kind(f"ИЭМК отказал: {message} (код {code})", None, code)
    if not faults:
        code = str(error.code or "")
        if code.rsplit(":", 1)[-1].lower().startswith("client"):
            return kind(f"ИЭМК отказал: {error.message}")
        return TransientError(f"ИЭМК ответил ошибкой сервера: {error.message}")
    top = faults[0]
    parts = [_fault_text(node) for node in faults[:1] + _nested(top) + faults[1:]]
    for other in faults[1:]:
        parts.extend(_fault_text(node) for node in _nested(other))
    text = "ИЭМК отказал: " + parts[0] + ("; " + "; ".join(parts[1:]) if parts[1:] else "")
    property_name = _child_text(top, "PropertyName")
    number = _child_text(top, "ErrorCode")
    return kind(text, property_name or None, int(number) if number and number.lstrip("-").isdigit() else None)
