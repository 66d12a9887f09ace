"""Reading uploaded certificates and private keys (X.509, PEM or DER).

Only what administrators need to see is taken from a certificate: subject, issuer, serial and
validity. GOST certificates parse as well (their key algorithm is simply not loaded), so an
МО can keep its real signing certificate here beside the demo RSA ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID, ObjectIdentifier

MAX_BYTES = 64 * 1024

# Russian qualified certificates carry these; without names they would print as bare OIDs.
RUSSIAN_NAME_OIDS: dict[ObjectIdentifier, str] = {
    ObjectIdentifier("1.2.643.100.1"): "ОГРН",
    ObjectIdentifier("1.2.643.100.3"): "СНИЛС",
    ObjectIdentifier("1.2.643.100.4"): "ИННЮЛ",
    ObjectIdentifier("1.2.643.100.5"): "ОГРНИП",
    ObjectIdentifier("1.2.643.3.131.1.1"): "ИНН",
    ObjectIdentifier("2.5.4.4"): "SN",
    ObjectIdentifier("2.5.4.42"): "GN",
    ObjectIdentifier("2.5.4.12"): "T",
    ObjectIdentifier("1.2.840.113549.1.9.1"): "E",
}


class CertificateError(ValueError):
    """An uploaded certificate or key that cannot be used; the message is for the user."""


@dataclass(frozen=True)
class ParsedCertificate:
    subject: str
    issuer: str
    serial: str
    valid_from: date
    valid_to: date
    pem: str
    public_key_der: bytes | None  # None when the key algorithm is not supported here (GOST)


# How people read a name: who (CN, surname, given name, title), then the organisation, then the rest.
_NAME_ORDER = {
    NameOID.COMMON_NAME: 0, NameOID.SURNAME: 1, NameOID.GIVEN_NAME: 2, NameOID.TITLE: 3,
    NameOID.ORGANIZATIONAL_UNIT_NAME: 4, NameOID.ORGANIZATION_NAME: 5,
}


def _name(name: x509.Name) -> str:
    attributes = sorted(name, key=lambda a: _NAME_ORDER.get(a.oid, len(_NAME_ORDER)))
    return ", ".join(a.rfc4514_string(RUSSIAN_NAME_OIDS) for a in attributes)


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8", errors="replace") if isinstance(data, str) else data


def parse_certificate(data: bytes | str) -> ParsedCertificate:
    """Parse the first certificate of a PEM text or a DER file; Russian error otherwise."""
    raw = _as_bytes(data).strip()
    if not raw:
        raise CertificateError("Файл сертификата пуст.")
    if len(raw) > MAX_BYTES:
        raise CertificateError("Файл сертификата слишком большой (больше 64 КБ).")
    try:
        if b"-----BEGIN" in raw:
            if b"-----BEGIN CERTIFICATE-----" not in raw:
                raise CertificateError(
                    "В тексте нет сертификата: ожидается блок «-----BEGIN CERTIFICATE-----»."
                )
            cert = x509.load_pem_x509_certificate(raw)
        else:
            cert = x509.load_der_x509_certificate(raw)
        subject = _name(cert.subject)
        issuer = _name(cert.issuer)
        valid_from = cert.not_valid_before_utc.date()
        valid_to = cert.not_valid_after_utc.date()
        serial = format(cert.serial_number, "X")
    except CertificateError:
        raise
    except (ValueError, TypeError) as exc:
        raise CertificateError(
            "Не удалось прочитать сертификат: файл повреждён или это не сертификат X.509 (PEM или DER)."
        ) from exc
    try:
        public_key_der = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (UnsupportedAlgorithm, ValueError):
        public_key_der = None
    if not subject:
        raise CertificateError("В сертификате не указан владелец (subject).")
    return ParsedCertificate(
        subject=subject,
        issuer=issuer,
        serial=serial,
        valid_from=valid_from,
        valid_to=valid_to,
        pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        public_key_der=public_key_der,
    )


def check_private_key(data: bytes | str, certificate: ParsedCertificate) -> str:
    """Check that a PEM private key is readable, unencrypted and belongs to the certificate.

    Returns the key text to store. Keys of algorithms this library does not know (GOST) are
    accepted as they are: the signing provider checks them.
    """
    raw = _as_bytes(data).strip()
    if len(raw) > MAX_BYTES:
        raise CertificateError("Файл закрытого ключа слишком большой (больше 64 КБ).")
    if b"-----BEGIN" not in raw or b"PRIVATE KEY-----" not in raw:
        raise CertificateError("Закрытый ключ должен быть в формате PEM («-----BEGIN PRIVATE KEY-----»).")
    if b"ENCRYPTED" in raw:
        raise CertificateError("Закрытый ключ защищён паролем: загрузите ключ без пароля.")
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except TypeError as exc:
        raise CertificateError("Закрытый ключ защищён паролем: загрузите ключ без пароля.") from exc
    except UnsupportedAlgorithm:
        return raw.decode("ascii", errors="replace")
    except ValueError as exc:
        raise CertificateError("Не удалось прочитать закрытый ключ: файл повреждён.") from exc
    if certificate.public_key_der is not None:
        key_public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if key_public != certificate.public_key_der:
            raise CertificateError("Закрытый ключ не соответствует сертификату.")
    return raw.decode("ascii")
