"""Detached CMS (PKCS#7) signatures of documents and their CRC-32 checksum.

`cryptography` builds CMS SignedData but has no public verification of it, so
`verify_detached` reads the few DER structures it needs itself (RFC 5652 §5): the signer's
certificate, the signed attributes with their messageDigest, and the signature over them.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from portal.crypto.keys import SignatureError, SigningKey, certificate_subject, load_certificate

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_DATA = "1.2.840.113549.1.7.1"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SKI = "2.5.29.14"

_HASHES: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "2.16.840.1.101.3.4.2.1": ("sha256", hashes.SHA256),
    "2.16.840.1.101.3.4.2.2": ("sha384", hashes.SHA384),
    "2.16.840.1.101.3.4.2.3": ("sha512", hashes.SHA512),
}

_SEQUENCE, _SET, _OID, _INTEGER, _OCTETS = 0x30, 0x31, 0x06, 0x02, 0x04
_CTX0, _CTX1, _CTX0_PRIMITIVE = 0xA0, 0xA1, 0x80


def crc32_checksum(data: bytes) -> str:
    """CRC-32 (IEEE 802.3) of the document in decimal, as `signature/checksum` of sendDocument wants."""
    return str(zlib.crc32(data) & 0xFFFFFFFF)


def detached_signature(key: SigningKey, data: bytes) -> bytes:
    """Detached CMS SignedData (DER) of `data`, with the signer's certificate inside."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(data)
        .add_signer(key.certificate, key.private_key, hashes.SHA256())
        .sign(
            serialization.Encoding.DER,
            [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
        )
    )


@dataclass(frozen=True)
class _Node:
    tag: int
    raw: bytes  # the whole TLV
    content: bytes

    def children(self) -> list[_Node]:
        return _parse_all(self.content)


def _parse_one(data: bytes, pos: int) -> tuple[_Node, int]:
    if pos + 2 > len(data):
        raise ValueError("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte tags are not used in CMS")
    length = data[pos + 1]
    offset = pos + 2
    if length == 0x80:
        raise ValueError("indefinite length (BER) is not DER")
    if length & 0x80:
        count = length & 0x7F
        if count > 4 or offset + count > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    end = offset + length
    if end > len(data):
        raise ValueError("truncated")
    return _Node(tag, data[pos:end], data[offset:end]), end


def _parse_all(data: bytes) -> list[_Node]:
    nodes, pos = [], 0
    while pos < len(data):
        node, pos = _parse_one(data, pos)
        nodes.append(node)
    return nodes


def _oid(node: _Node) -> str:
    if node.tag != _OID or not node.content:
        raise ValueError("OID expected")
    first = node.content[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in node.content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(p) for p in parts)


def _expect(node: _Node, tag: int) -> _Node:
    if node.tag != tag:
        raise ValueError(f"tag {tag:#x} expected, got {node.tag:#x}")
    return node


def _fail(reason: str) -> SignatureError:
    return SignatureError(f"Подпись документа не прошла проверку: {reason}.", reason)


def _signer_certificate(sid: _Node, certificates: list[x509.Certificate]) -> x509.Certificate:
    for certificate in certificates:
        if sid.tag == _SEQUENCE:  # IssuerAndSerialNumber
            issuer, serial = sid.children()
            if (
                issuer.raw == certificate.issuer.public_bytes()
                and int.from_bytes(_expect(serial, _INTEGER).content, "big", signed=True)
                == certificate.serial_number
            ):
                return certificate
        elif sid.tag == _CTX0_PRIMITIVE:  # SubjectKeyIdentifier
            try:
                ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            except x509.ExtensionNotFound:
                continue
            if ski.digest == sid.content:
                return certificate
    raise _fail("в подписи нет сертификата подписанта")


def verify_detached(signature: bytes, data: bytes, *, trusted_pem: str | None = None) -> str:
    """Check a detached CMS signature of `data`; the signer's subject, or SignatureError.

    With `trusted_pem` the signer must hold exactly that certificate.
    """
    if not signature:
        raise SignatureError("Документ не подписан.", "подпись отсутствует")
    try:
        content_info, rest = _parse_one(signature, 0)
        if rest != len(signature):
            raise ValueError("trailing bytes")
        content_type, explicit = _expect(content_info, _SEQUENCE).children()[:2]
        if _oid(content_type) != OID_SIGNED_DATA:
            raise _fail("это не подпись CMS SignedData")
        signed_data = _expect(_expect(explicit, _CTX0).children()[0], _SEQUENCE).children()
        signer_infos = _expect(signed_data[-1], _SET).children()
        certificates = pkcs7.load_der_pkcs7_certificates(signature)
    except SignatureError:
        raise
    except ValueError as exc:
        raise _fail("подпись повреждена (не DER CMS)") from exc
    if len(signer_infos) != 1:
        raise _fail("ожидается ровно один подписант")
    try:
        fields = _expect(signer_infos[0], _SEQUENCE).children()
        sid, digest_algorithm = fields[1], fields[2]
        hash_name, hash_class = _HASHES.get(_oid(digest_algorithm.children()[0]), (None, None))
        signed_attrs = fields[3] if fields[3].tag == _CTX0 else None
        signature_value = _expect(fields[5] if signed_attrs is not None else fields[4], _OCTETS).content
    except (ValueError, IndexError) as exc:
        raise _fail("подпись повреждена (SignerInfo)") from exc
    if hash_name is None:
        raise _fail("алгоритм хэширования не поддерживается")
    certificate = _signer_certificate(sid, certificates)
    if trusted_pem is not None and certificate != load_certificate(trusted_pem):
        raise _fail("документ подписан не доверенным сертификатом")
    digest = hashlib.new(hash_name, data).digest()
    if signed_attrs is None:
        signed_bytes = data
    else:
        try:
            attributes = {
                _oid(attr.children()[0]): attr.children()[1].children() for attr in signed_attrs.children()
            }
            message_digest = _expect(attributes[OID_MESSAGE_DIGEST][0], _OCTETS).content
            content_oid = _oid(attributes[OID_CONTENT_TYPE][0])
        except (ValueError, IndexError, KeyError) as exc:
            raise _fail("в подписанных атрибутах нет messageDigest или contentType") from exc
        if content_oid != OID_DATA:
            raise _fail("неожиданный тип подписанного содержимого")
        if message_digest != digest:
            raise _fail("документ изменён после подписания (хэш не совпадает)")
        signed_bytes = bytes([_SET]) + signed_attrs.raw[1:]  # RFC 5652 §5.4: signed as a SET OF
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise _fail("алгоритм ключа подписанта не поддерживается")
    try:
        public_key.verify(signature_value, signed_bytes, padding.PKCS1v15(), hash_class())
    except InvalidSignature as exc:
        raise _fail("значение подписи неверно") from exc
    return certificate_subject(certificate)
