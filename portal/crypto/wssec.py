"""WS-Security signatures of SOAP messages (XML-DSig over wsu:Id references), written by hand.

The shape follows the ИПС ЕГИСЗ examples (specs/vimis/…/1. Request.xml, 2. RequestResponse.xml):
`wsse:Security` in the SOAP header holds a `wsse:BinarySecurityToken` (the X.509 certificate,
wsu:Id "id-x509"), optionally a `wsu:Timestamp`, and a `ds:Signature` whose SignedInfo has one
Reference per signed element (`#body`, `#id-to`, `#id-action`, …), each canonicalised with
exclusive c14n. Only the algorithms differ (see `portal.crypto.keys`).

Several signers (the ФСС profile, specs/fss-eln/mo_v20 §4.3): each signer gets its own
`wsse:Security` block marked with `soapenv:actor` (SOAP 1.1) / `role` (SOAP 1.2), e.g.
`http://eln.fss.ru/actor/mo/{ОГРН}`; the block's BinarySecurityToken takes the actor URI itself
as its wsu:Id (as in the spec's examples), so the KeyInfo of each signature points at its own
certificate. All signers usually sign the same element (the Body, wsu:Id "OGRN_{ОГРН}").
`sign_envelope(..., actor=...)` adds or replaces that actor's block and leaves the others;
`verify_envelope(..., actor=...)` checks one block, `verify_signers` requires all named ones.
Without an actor both behave as before: one block, replacing any others.

`WsSecurity` plugs the same into zeep (`zeep.Client(..., wsse=WsSecurity(...))`): zeep 4.3 builds
the envelope, runs its WS-Addressing plugin (the ВИМИС WSDL declares wsam:Action, so zeep adds
wsa:Action/MessageID/To itself) and the other plugins, then calls `wsse.apply(envelope,
http_headers)`; on the answer it calls `wsse.verify(envelope)` on the parsed root element
before it looks for a SOAP Fault.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
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


def _actor_attribute(envelope: etree._Element) -> str:
    soap = _soap_ns(envelope)
    return f"{{{soap}}}actor" if soap == SOAP11 else f"{{{soap}}}role"


def _block_actor(security: etree._Element) -> str | None:
    """The actor/role of a wsse:Security block (either SOAP version's attribute)."""
    return security.get(f"{{{SOAP11}}}actor") or security.get(f"{{{SOAP12}}}role")


def _by_id(envelope: etree._Element, wsu_id: str) -> list[etree._Element]:
    return envelope.xpath("//*[@wsu:Id=$id or @Id=$id]", namespaces=_NS, id=wsu_id)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sign_envelope(
    envelope: etree._Element,
    key: SigningKey,
    reference_ids: Iterable[str],
    *,
    actor: str | None = None,
    timestamp: int | None = None,
) -> None:
    """Sign the elements with these wsu:Ids, adding wsse:Security to soap:Header.

    Without `actor`: one block at the top of the header, replacing every other wsse:Security.
    With `actor`: a block carrying `soapenv:actor` (SOAP 1.1) / `role` (SOAP 1.2) = actor, its
    BinarySecurityToken with wsu:Id = actor, placed after the blocks already there (so the
    order of the blocks is the order of signing); an earlier block of the same actor is
    replaced, the other signers' blocks are kept. Call once per signer.

    `timestamp` (seconds of validity) also adds a signed wsu:Timestamp, as ИПС does in its answers.
    """
    ids = list(dict.fromkeys(reference_ids))
    if not ids:
        raise ValueError("nothing to sign")
    if actor is not None and not actor.strip():
        raise ValueError("empty actor")
    soap = _soap_ns(envelope)
    header = _header(envelope, create=True)
    security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE, "wsu": WSU})
    security.set(f"{{{soap}}}mustUnderstand", "1" if soap == SOAP11 else "true")
    if actor is None:
        for old in header.findall(f"{{{WSSE}}}Security"):
            header.remove(old)
        header.insert(0, security)
        token_id, timestamp_id = TOKEN_ID, TIMESTAMP_ID
    else:
        blocks = header.findall(f"{{{WSSE}}}Security")
        same = [block for block in blocks if _block_actor(block) == actor]
        if same:
            same[0].addprevious(security)
            for old in same:
                header.remove(old)
        elif blocks:
            blocks[-1].addnext(security)
        else:
            header.insert(0, security)
        security.set(_actor_attribute(envelope), actor)
        token_id = actor
        timestamp_id = f"{TIMESTAMP_ID}-{hashlib.sha256(actor.encode()).hexdigest()[:16]}"
    token = etree.SubElement(
        security,
        f"{{{WSSE}}}BinarySecurityToken",
        {"EncodingType": BASE64_BINARY, "ValueType": X509_TOKEN, _WSU_ID: token_id},
    )
    token.text = base64.b64encode(key.cert_der).decode("ascii")
    signature = etree.SubElement(security, f"{{{DS}}}Signature", nsmap={"ds": DS})
    if timestamp is not None:
        now = datetime.now(UTC)
        stamp = etree.SubElement(security, f"{{{WSU}}}Timestamp", {_WSU_ID: timestamp_id})
        etree.SubElement(stamp, f"{{{WSU}}}Created").text = _utc(now)
        etree.SubElement(stamp, f"{{{WSU}}}Expires").text = _utc(now + timedelta(seconds=timestamp))
        ids.append(timestamp_id)

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
    etree.SubElement(token_reference, f"{{{WSSE}}}Reference", URI=f"#{token_id}", ValueType=X509_TOKEN)


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


def _token_certificate(security: etree._Element, signature: etree._Element) -> x509.Certificate:
    """The certificate of the BinarySecurityToken that KeyInfo names, inside the same block."""
    uri = signature.xpath(
        "string(ds:KeyInfo/wsse:SecurityTokenReference/wsse:Reference/@URI)", namespaces=_NS
    )
    if not uri.startswith("#"):
        raise _fail("в KeyInfo нет ссылки на сертификат (BinarySecurityToken)")
    token = _only(
        [e for e in _by_id(security, uri[1:]) if e.tag == f"{{{WSSE}}}BinarySecurityToken"],
        "сертификат подписи (BinarySecurityToken)",
    )
    if not any(ancestor is security for ancestor in token.iterancestors()):
        raise _fail("сертификат подписи (BinarySecurityToken) находится вне её блока wsse:Security")
    try:
        return load_certificate(base64.b64decode("".join((token.text or "").split()), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise _fail("сертификат подписи повреждён") from exc


def _security_blocks(envelope: etree._Element) -> list[etree._Element]:
    try:
        header = _header(envelope, create=False)
        _body(envelope)
    except ValueError as exc:
        raise _fail("это не SOAP-сообщение") from exc
    return header.findall(f"{{{WSSE}}}Security") if header is not None else []


def verify_envelope(
    envelope: etree._Element, *, trusted_pem: str | None = None, actor: str | None = None
) -> str:
    """Check the WS-Security signature of a received SOAP message; the signer's subject.

    Every Reference digest and the SignatureValue are checked against the certificate in the
    BinarySecurityToken; the SOAP Body must be among the signed elements; a wsu:Timestamp, when
    present, must be signed and not expired. With `trusted_pem` the certificate must be exactly
    that one. Raises SignatureError with a Russian message.

    Without `actor` the message must carry exactly one wsse:Security block (whatever its actor).
    With `actor` the block of that actor is checked and other signers' blocks are ignored; the
    error then names the actor («Подпись http://eln.fss.ru/actor/mo/… не прошла проверку: …»)
    and carries it as `error.actor`.
    """
    blocks = _security_blocks(envelope)
    if actor is None:
        if not blocks:
            raise SignatureError("Ответ не подписан (нет заголовка wsse:Security).", "сообщение не подписано")
        return _verify_block(envelope, _only(blocks, "заголовок wsse:Security"), trusted_pem)
    mine = [block for block in blocks if _block_actor(block) == actor]
    try:
        if not mine:
            raise SignatureError("", f"нет подписи этого участника (wsse:Security с actor {actor})")
        return _verify_block(envelope, _only(mine, f"заголовок wsse:Security с actor {actor}"), trusted_pem)
    except SignatureError as exc:
        error = SignatureError(f"Подпись {actor} не прошла проверку: {exc.reason}.", exc.reason)
        error.actor = actor
        raise error from exc


def verify_signers(
    envelope: etree._Element, actors: Iterable[str], *, trusted: dict[str, str] | None = None
) -> dict[str, str]:
    """Require a valid signature of every named actor; {actor: signer subject}, in that order.

    `trusted` optionally pins an actor to its certificate (PEM), e.g. the ФСС reply actor to the
    ФСС certificate from the settings. Blocks of actors not named are not checked. The first
    missing or invalid signature raises SignatureError naming its actor (`error.actor`).
    """
    names = list(dict.fromkeys(actors))
    if not names:
        raise ValueError("no actors to verify")
    trusted = trusted or {}
    return {name: verify_envelope(envelope, trusted_pem=trusted.get(name), actor=name) for name in names}


def _verify_block(envelope: etree._Element, security: etree._Element, trusted_pem: str | None) -> str:
    body = _body(envelope)
    signature = _only(security.findall(f"{{{DS}}}Signature"), "ds:Signature")
    signed_info = _only(signature.findall(f"{{{DS}}}SignedInfo"), "ds:SignedInfo")
    certificate = _token_certificate(security, signature)
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
