"""WS-Security signatures of SOAP messages (XML-DSig over wsu:Id references), written by hand.

The shape follows the ИПС ЕГИСЗ examples (specs/vimis/…/1. Request.xml, 2. RequestResponse.xml):
`wsse:Security` in the SOAP header holds a `wsse:BinarySecurityToken` (the X.509 certificate,
wsu:Id "id-x509"), optionally a `wsu:Timestamp`, and a `ds:Signature` whose SignedInfo has one
Reference per signed element (`#body`, `#id-to`, `#id-action`, …), each canonicalised with
exclusive c14n. Only the algorithms differ (see `portal.crypto.keys`).

`WsSecurity` plugs the same into zeep (`zeep.Client(..., wsse=WsSecurity(...))`): zeep 4.3 builds
the envelope, runs its WS-Addressing plugin (the ВИМИС WSDL declares wsam:Action, so zeep adds
wsa:Action/MessageID/To itself) and the other plugins, then calls `wsse.apply(envelope,
http_headers)`; on the answer it calls `wsse.verify(envelope)` on the parsed root element
before it looks for a SOAP Fault.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from lxml import etree

from portal.crypto.keys import (
    C14N_EXCLUSIVE,
    DIGEST_METHODS,
    SIGNATURE_METHODS,
    SignatureError,
    SigningKey,
    certificate_subject,
    load_certificate,
)

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DS = "http://www.w3.org/2000/09/xmldsig#"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
X509_TOKEN = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
BASE64_BINARY = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)
TOKEN_ID = "id-x509"
TIMESTAMP_ID = "id-timestamp"
CLOCK_SKEW = timedelta(minutes=5)

_WSU_ID = f"{{{WSU}}}Id"
_NS = {"wsse": WSSE, "wsu": WSU, "ds": DS}


def _c14n(element: etree._Element) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False)


def _soap_ns(envelope: etree._Element) -> str:
    namespace = etree.QName(envelope).namespace
    if etree.QName(envelope).localname != "Envelope" or namespace not in (SOAP11, SOAP12):
        raise ValueError("not a SOAP envelope")
    return namespace


def _header(envelope: etree._Element, create: bool) -> etree._Element | None:
    soap = _soap_ns(envelope)
    header = envelope.find(f"{{{soap}}}Header")
    if header is None and create:
        header = etree.Element(f"{{{soap}}}Header")
        envelope.insert(0, header)
    return header


def _body(envelope: etree._Element) -> etree._Element | None:
    return envelope.find(f"{{{_soap_ns(envelope)}}}Body")


def set_wsu_id(element: etree._Element, wsu_id: str) -> etree._Element:
    """Give an element the wsu:Id a signature Reference points at (`#body`, `#id-to` …)."""
    element.set(_WSU_ID, wsu_id)
    return element


def _by_id(envelope: etree._Element, wsu_id: str) -> list[etree._Element]:
    return envelope.xpath("//*[@wsu:Id=$id or @Id=$id]", namespaces=_NS, id=wsu_id)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sign_envelope(
    envelope: etree._Element,
    key: SigningKey,
    reference_ids: Iterable[str],
    *,
    timestamp: int | None = None,
) -> None:
    """Sign the elements with these wsu:Ids, adding wsse:Security at the top of soap:Header.

    `timestamp` (seconds of validity) also adds a signed wsu:Timestamp, as ИПС does in its answers.
    """
    ids = list(dict.fromkeys(reference_ids))
    if not ids:
        raise ValueError("nothing to sign")
    soap = _soap_ns(envelope)
    header = _header(envelope, create=True)
    for old in header.findall(f"{{{WSSE}}}Security"):
        header.remove(old)
    security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE, "wsu": WSU})
    security.set(f"{{{soap}}}mustUnderstand", "1" if soap == SOAP11 else "true")
    header.insert(0, security)
    token = etree.SubElement(
        security,
        f"{{{WSSE}}}BinarySecurityToken",
        {"EncodingType": BASE64_BINARY, "ValueType": X509_TOKEN, _WSU_ID: TOKEN_ID},
    )
    token.text = base64.b64encode(key.cert_der).decode("ascii")
    signature = etree.SubElement(security, f"{{{DS}}}Signature", nsmap={"ds": DS})
    if timestamp is not None:
        now = datetime.now(UTC)
        stamp = etree.SubElement(security, f"{{{WSU}}}Timestamp", {_WSU_ID: TIMESTAMP_ID})
        etree.SubElement(stamp, f"{{{WSU}}}Created").text = _utc(now)
        etree.SubElement(stamp, f"{{{WSU}}}Expires").text = _utc(now + timedelta(seconds=timestamp))
        ids.append(TIMESTAMP_ID)

    signed_info = etree.SubElement(signature, f"{{{DS}}}SignedInfo")
    etree.SubElement(signed_info, f"{{{DS}}}CanonicalizationMethod", Algorithm=C14N_EXCLUSIVE)
    etree.SubElement(signed_info, f"{{{DS}}}SignatureMethod", Algorithm=key.signature_method)
    digest = DIGEST_METHODS[key.digest_method]
    for wsu_id in ids:
        targets = _by_id(envelope, wsu_id)
        if len(targets) != 1:
            raise ValueError(f"{len(targets)} elements carry wsu:Id {wsu_id!r}, need exactly one")
        reference = etree.SubElement(signed_info, f"{{{DS}}}Reference", URI=f"#{wsu_id}")
        transforms = etree.SubElement(reference, f"{{{DS}}}Transforms")
        etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm=C14N_EXCLUSIVE)
        etree.SubElement(reference, f"{{{DS}}}DigestMethod", Algorithm=key.digest_method)
        etree.SubElement(reference, f"{{{DS}}}DigestValue").text = base64.b64encode(
            digest(_c14n(targets[0]))
        ).decode("ascii")
    value = etree.SubElement(signature, f"{{{DS}}}SignatureValue")
    value.text = base64.b64encode(key.sign(_c14n(signed_info))).decode("ascii")
    key_info = etree.SubElement(signature, f"{{{DS}}}KeyInfo")
    token_reference = etree.SubElement(key_info, f"{{{WSSE}}}SecurityTokenReference")
    etree.SubElement(token_reference, f"{{{WSSE}}}Reference", URI=f"#{TOKEN_ID}", ValueType=X509_TOKEN)


def _fail(reason: str) -> SignatureError:
    return SignatureError(f"Подпись ответа не прошла проверку: {reason}.", reason)


def _only(elements: list[etree._Element], what: str) -> etree._Element:
    if len(elements) != 1:
        raise _fail(f"{what}: найдено элементов — {len(elements)}, ожидается один")
    return elements[0]


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _token_certificate(envelope: etree._Element, signature: etree._Element) -> x509.Certificate:
    uri = signature.xpath(
        "string(ds:KeyInfo/wsse:SecurityTokenReference/wsse:Reference/@URI)", namespaces=_NS
    )
    if not uri.startswith("#"):
        raise _fail("в KeyInfo нет ссылки на сертификат (BinarySecurityToken)")
    token = _only(
        [e for e in _by_id(envelope, uri[1:]) if e.tag == f"{{{WSSE}}}BinarySecurityToken"],
        "сертификат подписи (BinarySecurityToken)",
    )
    try:
        return load_certificate(base64.b64decode("".join((token.text or "").split()), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise _fail("сертификат подписи повреждён") from exc


def verify_envelope(envelope: etree._Element, *, trusted_pem: str | None = None) -> str:
    """Check the WS-Security signature of a received SOAP message; the signer's subject.

    Every Reference digest and the SignatureValue are checked against the certificate in the
    BinarySecurityToken; the SOAP Body must be among the signed elements; a wsu:Timestamp, when
    present, must be signed and not expired. With `trusted_pem` the certificate must be exactly
    that one. Raises SignatureError with a Russian message.
    """
    try:
        header = _header(envelope, create=False)
        body = _body(envelope)
    except ValueError as exc:
        raise _fail("это не SOAP-сообщение") from exc
    security = header.findall(f"{{{WSSE}}}Security") if header is not None else []
    if not security:
        raise SignatureError("Ответ не подписан (нет заголовка wsse:Security).", "сообщение не подписано")
    security = _only(security, "заголовок wsse:Security")
    signature = _only(security.findall(f"{{{DS}}}Signature"), "ds:Signature")
    signed_info = _only(signature.findall(f"{{{DS}}}SignedInfo"), "ds:SignedInfo")
    certificate = _token_certificate(envelope, signature)
    if trusted_pem is not None and certificate != load_certificate(trusted_pem):
        raise _fail("сообщение подписано не доверенным сертификатом")
    now = datetime.now(UTC)
    if (
        not certificate.not_valid_before_utc - CLOCK_SKEW
        <= now
        <= certificate.not_valid_after_utc + CLOCK_SKEW
    ):
        raise _fail("срок действия сертификата подписи истёк или не наступил")

    c14n_method = signed_info.xpath("string(ds:CanonicalizationMethod/@Algorithm)", namespaces=_NS)
    if c14n_method != C14N_EXCLUSIVE:
        raise _fail(f"метод канонизации {c14n_method or '—'} не поддерживается")
    signature_method = signed_info.xpath("string(ds:SignatureMethod/@Algorithm)", namespaces=_NS)
    if signature_method not in SIGNATURE_METHODS:
        raise _fail(f"алгоритм подписи {signature_method or '—'} не поддерживается")

    signed: list[etree._Element] = []
    for reference in signed_info.findall(f"{{{DS}}}Reference"):
        uri = reference.get("URI", "")
        if not uri.startswith("#") or len(uri) < 2:
            raise _fail(f"ссылка {uri or '—'} не поддерживается (ожидается #wsu:Id)")
        transforms = reference.xpath("ds:Transforms/ds:Transform/@Algorithm", namespaces=_NS)
        if any(t != C14N_EXCLUSIVE for t in transforms) or reference.xpath(
            "ds:Transforms/ds:Transform/*", namespaces=_NS
        ):
            raise _fail(f"преобразование для {uri} не поддерживается")
        digest_method = reference.xpath("string(ds:DigestMethod/@Algorithm)", namespaces=_NS)
        if digest_method not in DIGEST_METHODS:
            raise _fail(f"алгоритм хэширования {digest_method or '—'} не поддерживается")
        target = _only(_by_id(envelope, uri[1:]), f"подписанный элемент {uri}")
        expected = "".join(reference.findtext(f"{{{DS}}}DigestValue", "").split())
        actual = base64.b64encode(DIGEST_METHODS[digest_method](_c14n(target))).decode("ascii")
        if actual != expected:
            raise _fail(f"элемент {uri} изменён после подписания")
        signed.append(target)
    if body is None or not any(element is body for element in signed):
        raise _fail("тело сообщения (soap:Body) не подписано")

    for stamp in security.findall(f"{{{WSU}}}Timestamp"):
        if not any(element is stamp for element in signed):
            raise _fail("метка времени wsu:Timestamp не подписана")
        expires = _parse_time(stamp.findtext(f"{{{WSU}}}Expires"))
        if expires is not None and expires + CLOCK_SKEW < now:
            raise _fail("срок действия сообщения (wsu:Timestamp/Expires) истёк")

    try:
        value = base64.b64decode(
            "".join(signature.findtext(f"{{{DS}}}SignatureValue", "").split()), validate=True
        )
        SIGNATURE_METHODS[signature_method](certificate, value, _c14n(signed_info))
    except (binascii.Error, InvalidSignature) as exc:
        raise _fail("значение подписи (SignatureValue) неверно") from exc
    return certificate_subject(certificate)


def _is_unsigned_fault(envelope: etree._Element) -> bool:
    try:
        body, header = _body(envelope), _header(envelope, create=False)
    except ValueError:
        return False
    has_fault = body is not None and body.find(f"{{{_soap_ns(envelope)}}}Fault") is not None
    has_security = header is not None and header.find(f"{{{WSSE}}}Security") is not None
    return has_fault and not has_security


class WsSecurity:
    """zeep's `wsse` object: signs each request and checks the signature of each answer.

    `add_headers(envelope)` runs first inside `apply` and returns the wsu:Ids of the headers it
    added that must be signed too (the ВИМИС client puts wsa:To/Action/ReplyTo/MessageID with
    "id-to", "id-action", "id-replyto", "id-messageid" and the egisz transportHeader there, after
    removing the wsa headers zeep added itself). The body always gets wsu:Id "body" and is signed.

    Answers: with `verify_answers` every answer must carry a valid signature (pinned to
    `trusted_pem` when given). A SOAP Fault without any wsse:Security passes unverified so that
    zeep raises the service's own Fault text; a fault that carries a signature is checked.
    """

    def __init__(
        self,
        key: SigningKey,
        add_headers: Callable[[etree._Element], Iterable[str] | None] | None = None,
        *,
        verify_answers: bool = True,
        trusted_pem: str | None = None,
        timestamp: int | None = None,
    ) -> None:
        self.key = key
        self.add_headers = add_headers
        self.verify_answers = verify_answers
        self.trusted_pem = trusted_pem
        self.timestamp = timestamp
        self.last_signer: str | None = None  # subject of the last verified answer

    def apply(self, envelope: etree._Element, headers: dict) -> tuple[etree._Element, dict]:
        ids = list(self.add_headers(envelope) or []) if self.add_headers else []
        body = _body(envelope)
        if body is None:
            raise ValueError("SOAP envelope without Body")
        set_wsu_id(body, "body")
        sign_envelope(envelope, self.key, ["body", *ids], timestamp=self.timestamp)
        return envelope, headers

    def verify(self, envelope: etree._Element) -> etree._Element:
        self.last_signer = None
        if not self.verify_answers or _is_unsigned_fault(envelope):
            return envelope
        self.last_signer = verify_envelope(envelope, trusted_pem=self.trusted_pem)
        return envelope
