"""XML Encryption (W3C) of SOAP messages, as the ФСС services want it (specs/fss-eln/mo_v20 §5).

Layout (§5.1), in the Body of the message:

    <soapenv:Body wsu:Id="OGRN_…">                      (attributes of the Body are kept)
      <xenc:EncryptedData Type="http://www.w3.org/2001/04/xmlenc#Content">
        <xenc:EncryptionMethod Algorithm="{content algorithm}"/>
        <ds:KeyInfo>
          <xenc:EncryptedKey>                            (one per recipient)
            <xenc:EncryptionMethod Algorithm="{key transport}"> [ds:DigestMethod, xenc11:MGF] </…>
            <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{recipient certificate}</…></…></…>
            <xenc:CipherData><xenc:CipherValue>{wrapped session key}</…></…>
          </xenc:EncryptedKey>
        </ds:KeyInfo>
        <xenc:CipherData><xenc:CipherValue>{encrypted content}</…></…>
      </xenc:EncryptedData>
    </soapenv:Body>

Algorithms. The default provider, like `keys.py`, uses what `cryptography` has:

    role            demo (used here)                                 production (ФСС, GOST provider)
    content         http://www.w3.org/2009/xmlenc11#aes256-gcm       urn:ietf:params:xml:ns:cpxmlsec:algorithms:gost28147
                    (…/2001/04/xmlenc#aes256-cbc is read as well)    (GostJCE/CBC/ISO10126Padding, params TK26Z)
    key transport   http://www.w3.org/2009/xmlenc11#rsa-oaep         urn:ietf:params:xml:ns:cpxmlsec:algorithms:transport-gost2001
                    (SHA-256 digest, MGF1 with SHA-256)              (VKO GOST R 34.10-2012 256/512, ephemeral key;
                                                                     the URI keeps its "2001" name for 2012 keys)

A GOST provider registers its two URIs in `CONTENT_METHODS` and `KEY_TRANSPORTS` (and its key
type in `keys.py`); the element layout does not change.

Order of operations, as §5 states it («сначала на них накладывается ЭП …, а затем они
шифруются»; the receiver «сначала их дешифрует, а затем … производится проверка блока ЭП»):

    sending   1. set_wsu_id(body, "OGRN_{ОГРН}")
              2. sign_envelope(envelope, key, ["OGRN_…"], actor=…)   once per signer
                 (doctor, МО, accountant): every signature is over the PLAINTEXT Body
              3. encrypt_body(envelope, fss_cert_pem, reply_cert_pem=mo_cert_pem)
                 (the MO's certificate goes into the header as ds:X509Certificate, §5, so
                 that ФСС can encrypt its answer for the MO)
    receiving 1. decrypt_body(answer, mo_key)        restores the Body exactly (same exc-c14n)
              2. verify_envelope(answer, trusted_pem=fss_cert_pem,
                                 actor="http://eln.fss.ru/actor/fss/ca/1027739443236")

So a signature cannot be checked while the Body is encrypted (its digest is over the
plaintext): a signature check on an encrypted Body fails with «#… изменён после подписания».
The wsse:Security blocks stay readable in the header. The spec's prose says the whole signed
message is put, encrypted, into the Body of a new SOAP message; `encrypt_message` /
`decrypt_message` do that variant (EncryptedData Type …#Element holding the whole envelope)
should the ФСС gateway turn out to want it — its examples only show the Body part.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from portal.crypto.keys import (
    DIGEST_SHA256,
    CryptoError,
    SigningKey,
    SigningKeyError,
    certificate_subject,
    load_certificate,
)
from portal.crypto.wssec import DS, _body, _header, _soap_ns

XENC = "http://www.w3.org/2001/04/xmlenc#"
XENC11 = "http://www.w3.org/2009/xmlenc11#"
TYPE_CONTENT = "http://www.w3.org/2001/04/xmlenc#Content"
TYPE_ELEMENT = "http://www.w3.org/2001/04/xmlenc#Element"

AES256_GCM = "http://www.w3.org/2009/xmlenc11#aes256-gcm"
AES256_CBC = "http://www.w3.org/2001/04/xmlenc#aes256-cbc"
RSA_OAEP = "http://www.w3.org/2009/xmlenc11#rsa-oaep"
MGF1_SHA256 = "http://www.w3.org/2009/xmlenc11#mgf1sha256"

# Production values of the ФСС profile, for a GOST provider to register (not implemented here).
GOST28147 = "urn:ietf:params:xml:ns:cpxmlsec:algorithms:gost28147"
TRANSPORT_GOST2001 = "urn:ietf:params:xml:ns:cpxmlsec:algorithms:transport-gost2001"

_NS = {"xenc": XENC, "xenc11": XENC11, "ds": DS}
_DER, _PEM = Encoding.DER, Encoding.PEM
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


class DecryptionError(CryptoError):
    """An encrypted message that cannot be decrypted here; `reason` is the bare cause."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class _Refused(Exception):
    """Internal: a reason, worded into DecryptionError by the public function."""


def _aes_gcm_encrypt(key: bytes, data: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, data, None)  # XML Enc 1.1 §5.2.4: IV ‖ text ‖ tag


def _aes_gcm_decrypt(key: bytes, data: bytes) -> bytes:
    if len(data) < 12 + 16:
        raise _Refused("шифротекст слишком короткий")
    try:
        return AESGCM(key).decrypt(data[:12], data[12:], None)
    except InvalidTag as exc:
        raise _Refused("шифротекст повреждён или изменён (не сходится контрольный код)") from exc


def _aes_cbc_encrypt(key: bytes, data: bytes) -> bytes:
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()  # a valid ISO 10126 padding too (last byte = length)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()


def _aes_cbc_decrypt(key: bytes, data: bytes) -> bytes:
    if len(data) < 32 or len(data) % 16:
        raise _Refused("длина шифротекста не кратна блоку")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(data[:16])).decryptor()
    plain = decryptor.update(data[16:]) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= 16:  # XML Enc padding: only the last byte is defined
        raise _Refused("шифротекст повреждён (неверное дополнение блока)")
    return plain[:-pad]


# URI -> (key length, encrypt, decrypt); a GOST provider adds GOST28147 here.
CONTENT_METHODS: dict[str, tuple[int, Callable[[bytes, bytes], bytes], Callable[[bytes, bytes], bytes]]] = {
    AES256_GCM: (32, _aes_gcm_encrypt, _aes_gcm_decrypt),
    AES256_CBC: (32, _aes_cbc_encrypt, _aes_cbc_decrypt),
}


def _oaep() -> asymmetric_padding.OAEP:
    return asymmetric_padding.OAEP(
        mgf=asymmetric_padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )


def _rsa_oaep_wrap(certificate: x509.Certificate, session_key: bytes) -> bytes:
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SigningKeyError(
            "Сертификат получателя не RSA: шифрование ГОСТ требует отдельного криптопровайдера."
        )
    return public_key.encrypt(session_key, _oaep())


def _rsa_oaep_unwrap(key: SigningKey, wrapped: bytes) -> bytes:
    try:
        return key.private_key.decrypt(wrapped, _oaep())
    except ValueError as exc:
        raise _Refused("сеансовый ключ не расшифровывается этим закрытым ключом") from exc


def _rsa_oaep_parameters(method: etree._Element) -> None:
    etree.SubElement(method, f"{{{DS}}}DigestMethod", Algorithm=DIGEST_SHA256)
    etree.SubElement(method, f"{{{XENC11}}}MGF", Algorithm=MGF1_SHA256)


def _rsa_oaep_check(method: etree._Element) -> None:
    digest = method.xpath("string(ds:DigestMethod/@Algorithm)", namespaces=_NS)
    mgf = method.xpath("string(xenc11:MGF/@Algorithm)", namespaces=_NS)
    if digest != DIGEST_SHA256 or mgf != MGF1_SHA256:
        raise _Refused(f"параметры RSA-OAEP ({digest or 'SHA-1'}, {mgf or 'MGF1 SHA-1'}) не поддерживаются")


# URI -> (wrap, unwrap, write parameters into EncryptionMethod, check them when reading);
# a GOST provider adds transport-gost2001 here.
KEY_TRANSPORTS: dict[
    str,
    tuple[
        Callable[[x509.Certificate, bytes], bytes],
        Callable[[SigningKey, bytes], bytes],
        Callable[[etree._Element], None],
        Callable[[etree._Element], None],
    ],
] = {RSA_OAEP: (_rsa_oaep_wrap, _rsa_oaep_unwrap, _rsa_oaep_parameters, _rsa_oaep_check)}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _cipher_data(parent: etree._Element, value: bytes) -> None:
    cipher_data = etree.SubElement(parent, f"{{{XENC}}}CipherData")
    etree.SubElement(cipher_data, f"{{{XENC}}}CipherValue").text = _b64(value)


def _encrypted_data(
    plaintext: bytes, recipients: list[x509.Certificate], data_type: str, method: str, transport: str
) -> etree._Element:
    key_length, encrypt, _ = CONTENT_METHODS[method]
    wrap, _, parameters, _ = KEY_TRANSPORTS[transport]
    session_key = os.urandom(key_length)
    data = etree.Element(f"{{{XENC}}}EncryptedData", {"Type": data_type}, nsmap={"xenc": XENC, "ds": DS})
    etree.SubElement(data, f"{{{XENC}}}EncryptionMethod", Algorithm=method)
    key_info = etree.SubElement(data, f"{{{DS}}}KeyInfo")
    for certificate in recipients:
        encrypted_key = etree.SubElement(key_info, f"{{{XENC}}}EncryptedKey")
        parameters(etree.SubElement(encrypted_key, f"{{{XENC}}}EncryptionMethod", Algorithm=transport))
        x509_data = etree.SubElement(etree.SubElement(encrypted_key, f"{{{DS}}}KeyInfo"), f"{{{DS}}}X509Data")
        etree.SubElement(x509_data, f"{{{DS}}}X509Certificate").text = _b64(certificate.public_bytes(_DER))
        _cipher_data(encrypted_key, wrap(certificate, session_key))
    _cipher_data(data, encrypt(session_key, plaintext))
    return data


def _cipher_value(element: etree._Element, what: str) -> bytes:
    values = element.findall("xenc:CipherData/xenc:CipherValue", _NS)
    if len(values) != 1:
        raise _Refused(f"нет {what} (xenc:CipherData/CipherValue)")
    try:
        return base64.b64decode("".join((values[0].text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Refused(f"{what} не в кодировке Base64") from exc


def _session_key(data: etree._Element, key: SigningKey) -> bytes:
    """Unwrap the session key of the EncryptedKey addressed to `key`'s certificate."""
    encrypted_keys = data.findall("ds:KeyInfo/xenc:EncryptedKey", _NS)
    if not encrypted_keys:
        raise _Refused("нет зашифрованного сеансового ключа (xenc:EncryptedKey)")
    addressed: list[etree._Element] = []
    others: list[str] = []
    for encrypted_key in encrypted_keys:
        text = encrypted_key.findtext("ds:KeyInfo/ds:X509Data/ds:X509Certificate", None, _NS)
        if text is None:
            addressed.append(encrypted_key)  # no identification of the recipient: try it
            continue
        try:
            certificate = load_certificate(base64.b64decode("".join(text.split()), validate=True))
        except (binascii.Error, ValueError, SigningKeyError):
            raise _Refused("сертификат получателя в xenc:EncryptedKey повреждён") from None
        if certificate == key.certificate:
            addressed.insert(0, encrypted_key)
        else:
            others.append(certificate_subject(certificate))
    if not addressed:
        raise _Refused(f"сообщение зашифровано для другого сертификата ({'; '.join(others)})")
    last: _Refused | None = None
    for encrypted_key in addressed:
        method = encrypted_key.find("xenc:EncryptionMethod", _NS)
        transport = method.get("Algorithm", "") if method is not None else ""
        if transport not in KEY_TRANSPORTS:
            raise _Refused(f"алгоритм передачи ключа {transport or '—'} не поддерживается")
        _, unwrap, _, check = KEY_TRANSPORTS[transport]
        check(method)
        try:
            return unwrap(key, _cipher_value(encrypted_key, "сеансового ключа"))
        except _Refused as exc:
            last = exc
    raise last  # type: ignore[misc]


def _decrypt(data: etree._Element, key: SigningKey) -> bytes:
    method = data.xpath("string(xenc:EncryptionMethod/@Algorithm)", namespaces=_NS)
    if method not in CONTENT_METHODS:
        raise _Refused(f"алгоритм шифрования {method or '—'} не поддерживается")
    session_key = _session_key(data, key)
    if len(session_key) != CONTENT_METHODS[method][0]:
        raise _Refused("сеансовый ключ неверной длины")
    return CONTENT_METHODS[method][2](session_key, _cipher_value(data, "зашифрованных данных"))


def _recipients(recipient_cert_pem: str | list[str]) -> list[x509.Certificate]:
    pems = [recipient_cert_pem] if isinstance(recipient_cert_pem, str) else list(recipient_cert_pem)
    if not pems:
        raise ValueError("no recipient certificate")
    return [load_certificate(pem) for pem in pems]


def _encrypted_child(body: etree._Element) -> etree._Element:
    found = body.findall(f"{{{XENC}}}EncryptedData")
    others = [
        child for child in body if child.tag is not etree.Comment and child.tag != f"{{{XENC}}}EncryptedData"
    ]
    if not found:
        raise _Refused("тело сообщения не зашифровано (нет xenc:EncryptedData)")
    if len(found) > 1 or others:
        raise _Refused("в теле сообщения кроме xenc:EncryptedData есть другие элементы")
    return found[0]


def is_encrypted(envelope: etree._Element) -> bool:
    """Whether the Body holds an xenc:EncryptedData (an unencrypted SOAP Fault does not)."""
    body = _body(envelope)
    return body is not None and body.find(f"{{{XENC}}}EncryptedData") is not None


def encrypt_body(
    envelope: etree._Element,
    recipient_cert_pem: str | list[str],
    *,
    reply_cert_pem: str | None = None,
    method: str = AES256_GCM,
    transport: str = RSA_OAEP,
) -> None:
    """Replace the Body's content with xenc:EncryptedData for the recipient(s); call after signing.

    The Body element itself and its attributes (wsu:Id the signatures point at) stay. With
    `reply_cert_pem` the sender's certificate is added to soap:Header as ds:X509Certificate
    (§5: ФСС encrypts its answer for that certificate). Several recipients (a list of PEMs)
    get one xenc:EncryptedKey each.
    """
    body = _body(envelope)
    if body is None:
        raise ValueError("SOAP envelope without Body")
    if is_encrypted(envelope):
        raise ValueError("the Body is already encrypted")
    recipients = _recipients(recipient_cert_pem)
    content = escape(body.text or "") + "".join(
        etree.tostring(child, encoding="unicode", with_tail=True) for child in body
    )
    data = _encrypted_data(content.encode("utf-8"), recipients, TYPE_CONTENT, method, transport)
    for child in list(body):
        body.remove(child)
    body.text = None
    body.append(data)
    if reply_cert_pem is not None:
        set_reply_certificate(envelope, reply_cert_pem)


def decrypt_body(envelope: etree._Element, key: SigningKey, *, what: str = "Ответ") -> None:
    """Put the decrypted content back into the Body; then the signatures can be verified.

    Raises DecryptionError «{what} не расшифрован: …» (pass what="Ответ ФСС") for a Body that
    is not encrypted, a message encrypted for another certificate, a wrong key, a damaged or
    changed ciphertext, an unsupported (e.g. GOST) algorithm.
    """
    try:
        try:
            body = _body(envelope)
        except ValueError:
            raise _Refused("это не SOAP-сообщение") from None
        if body is None:
            raise _Refused("в сообщении нет soap:Body")
        data = _encrypted_child(body)
        if data.get("Type", TYPE_CONTENT) != TYPE_CONTENT:
            raise _Refused(f"тип зашифрованных данных {data.get('Type')} не поддерживается")
        plaintext = _decrypt(data, key)
        # parsed in the Body's namespace context (prefixes used only in QName values, xsi:type)
        declarations = "".join(
            f" xmlns{':' + prefix if prefix else ''}={quoteattr(uri)}" for prefix, uri in body.nsmap.items()
        )
        try:
            wrapper = etree.fromstring(
                f"<xmlenc-content{declarations}>".encode() + plaintext + b"</xmlenc-content>", _PARSER
            )
        except etree.XMLSyntaxError as exc:
            raise _Refused("расшифрованное содержимое не является XML") from exc
    except _Refused as exc:
        raise DecryptionError(f"{what} не расшифрован: {exc}.", str(exc)) from exc
    body.remove(data)
    body.text = wrapper.text
    for child in list(wrapper):
        body.append(child)


def encrypt_message(
    envelope: etree._Element,
    recipient_cert_pem: str | list[str],
    *,
    method: str = AES256_GCM,
    transport: str = RSA_OAEP,
) -> etree._Element:
    """The whole (signed) message, encrypted into the Body of a new SOAP envelope (§5.1 prose)."""
    soap = _soap_ns(envelope)
    plaintext = etree.tostring(envelope, encoding="utf-8")
    outer = etree.Element(f"{{{soap}}}Envelope", nsmap={"soapenv": soap})
    etree.SubElement(outer, f"{{{soap}}}Header")
    body = etree.SubElement(outer, f"{{{soap}}}Body")
    body.append(_encrypted_data(plaintext, _recipients(recipient_cert_pem), TYPE_ELEMENT, method, transport))
    return outer


def decrypt_message(envelope: etree._Element, key: SigningKey, *, what: str = "Ответ") -> etree._Element:
    """The inner SOAP envelope of an `encrypt_message` message (then verify its signatures)."""
    try:
        try:
            body = _body(envelope)
        except ValueError:
            raise _Refused("это не SOAP-сообщение") from None
        if body is None:
            raise _Refused("в сообщении нет soap:Body")
        plaintext = _decrypt(_encrypted_child(body), key)
        try:
            inner = etree.fromstring(plaintext, _PARSER)
            _soap_ns(inner)
        except (etree.XMLSyntaxError, ValueError) as exc:
            raise _Refused("расшифрованное содержимое не является SOAP-сообщением") from exc
    except _Refused as exc:
        raise DecryptionError(f"{what} не расшифрован: {exc}.", str(exc)) from exc
    return inner


def set_reply_certificate(envelope: etree._Element, cert_pem: str) -> None:
    """Put the sender's certificate into soap:Header as ds:X509Certificate (replacing one there)."""
    header = _header(envelope, create=True)
    for old in header.findall(f"{{{DS}}}X509Certificate"):
        header.remove(old)
    element = etree.SubElement(header, f"{{{DS}}}X509Certificate", nsmap={"ds": DS})
    element.text = _b64(load_certificate(cert_pem).public_bytes(_DER))


def reply_certificate(envelope: etree._Element) -> str | None:
    """PEM of the certificate a request's sender wants the answer encrypted for, if it gave one."""
    header = _header(envelope, create=False)
    text = header.findtext(f"{{{DS}}}X509Certificate") if header is not None else None
    if not text:
        return None
    try:
        certificate = load_certificate(base64.b64decode("".join(text.split()), validate=True))
    except (binascii.Error, ValueError):
        return None
    return certificate.public_bytes(_PEM).decode("ascii")
