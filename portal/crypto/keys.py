"""Signing keys and the algorithms this default (non-GOST) provider knows.

Real ВИМИС/ФСС traffic is signed with GOST R 34.10-2012; the working default here is RSA-2048
with SHA-256. Everything algorithm-specific sits in this module: a `SigningKey` knows how to sign
and which XML-DSig URIs describe that, and `DIGEST_METHODS` / `SIGNATURE_METHODS` map the URIs
found in a received message to code. A GOST provider adds its key loading and its URIs here,
and callers (WS-Security, CMS) do not change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

# XML-DSig algorithm identifiers of the default provider.
C14N_EXCLUSIVE = "http://www.w3.org/2001/10/xml-exc-c14n#"
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
SIGNATURE_RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"


class CryptoError(Exception):
    """Base of the errors of `portal.crypto`; the message is Russian and may be shown to users."""


class SignatureError(CryptoError):
    """A signature is missing, malformed or does not verify.

    `reason` is the bare cause (without the «Подпись … не прошла проверку:» lead), so a
    caller that words its own message (the ВИМИС simulator's SOAP fault) can reuse it.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class SigningKeyError(CryptoError):
    """A certificate or private key that cannot be used for signing here."""


def _readable_name(name: x509.Name) -> str:
    return name.rfc4514_string()


@dataclass(frozen=True)
class SigningKey:
    """A private key with its certificate: what a system or a person signs with."""

    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    signature_method = SIGNATURE_RSA_SHA256
    digest_method = DIGEST_SHA256

    @property
    def cert_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def cert_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def subject(self) -> str:
        return _readable_name(self.certificate.subject)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def sign(self, data: bytes) -> bytes:
        """Raw signature of `data` for `signature_method` (RSA PKCS#1 v1.5 with SHA-256)."""
        return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _verify_rsa_sha256(certificate: x509.Certificate, signature: bytes, data: bytes) -> None:
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise InvalidSignature("certificate key is not RSA")
    public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


# URI -> function; a GOST provider registers its gostr34112012-256 / gostr34102012 URIs here.
DIGEST_METHODS: dict[str, Callable[[bytes], bytes]] = {DIGEST_SHA256: _sha256}
SIGNATURE_METHODS: dict[str, Callable[[x509.Certificate, bytes, bytes], None]] = {
    SIGNATURE_RSA_SHA256: _verify_rsa_sha256,
}


def load_certificate(cert: str | bytes) -> x509.Certificate:
    """A certificate from PEM text or DER bytes."""
    raw = cert.encode("ascii", errors="replace") if isinstance(cert, str) else cert
    try:
        if b"-----BEGIN CERTIFICATE-----" in raw:
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise SigningKeyError("Не удалось прочитать сертификат X.509.") from exc


def load_signing_key(cert_pem: str, key_pem: str) -> SigningKey:
    """Pair a PEM certificate with its unencrypted PEM private key (a `Certificate` row's cert_pem/key_pem)."""
    certificate = load_certificate(cert_pem)
    try:
        private_key = serialization.load_pem_private_key(key_pem.encode("ascii", errors="replace"), None)
    except UnsupportedAlgorithm as exc:
        raise SigningKeyError(
            "Алгоритм закрытого ключа не поддерживается (ключи ГОСТ требуют отдельного криптопровайдера)."
        ) from exc
    except (TypeError, ValueError) as exc:
        raise SigningKeyError("Не удалось прочитать закрытый ключ (PEM без пароля).") from exc
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise SigningKeyError("Поддерживаются только ключи RSA.")
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private_key.public_key().public_bytes(*public) != certificate.public_key().public_bytes(*public):
        raise SigningKeyError("Закрытый ключ не соответствует сертификату.")
    return SigningKey(private_key, certificate)


def _fit(value: str, limit: int = 64) -> str:
    """Shorten to `limit` UTF-8 bytes (cryptography counts bytes: 32 Cyrillic letters fill a CN)."""
    value = " ".join(value.split()) or "—"
    if len(value.encode()) <= limit:
        return value
    while len((value + "…").encode()) > limit:
        value = value[:-1]
    return value.rstrip() + "…"


def generate_demo_certificate(
    common_name: str, *, organisation: str = "Демонстрационный стенд портала", days: int = 730
) -> tuple[str, str]:
    """A self-signed RSA-2048 certificate and its key as (cert_pem, key_pem), for demos and tests.

    Names longer than the 64 bytes `cryptography` allows for a CN (a full МО name, or just
    33 Cyrillic letters) are shortened with «…».
    """
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "RU"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _fit(organisation)),
            x509.NameAttribute(NameOID.COMMON_NAME, _fit(common_name)),
        ]
    )
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(private_key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return cert_pem, key_pem


def certificate_subject(certificate: x509.Certificate) -> str:
    return _readable_name(certificate.subject)
