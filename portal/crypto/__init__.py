"""Signing for the outside systems, behind one small interface (DESIGN.md «Crypto»).

Callers use only what is exported here. The working default is RSA-2048 / SHA-256 (keys the
set-up generates for the demo); real ВИМИС and ФСС want GOST R 34.10-2012, which a provider can
add in `keys.py` (key loading and algorithm URIs) without touching callers.

    key = load_signing_key(cert.cert_pem, cert.key_pem)     # a Certificate row, purpose "vimis"
    sign_envelope(envelope, key, ["body", "id-to", ...])      # WS-Security of a SOAP message
    verify_envelope(answer, trusted_pem=ips_cert_pem)         # -> signer subject or SignatureError
    detached_signature(key, document) / verify_detached(...)  # CMS of a document
    crc32_checksum(document)                                  # sendDocument signature/checksum
    zeep.Client(wsdl, wsse=WsSecurity(key, add_headers))      # the same inside zeep

Several signers and encryption (the ФСС profile, see `wssec` and `xmlenc` docstrings):

    sign_envelope(envelope, doctor_key, ["OGRN_…"], actor=doctor_actor)   # one block per signer
    sign_envelope(envelope, mo_key, ["OGRN_…"], actor=mo_actor)
    encrypt_body(envelope, fss_cert_pem, reply_cert_pem=mo_key.cert_pem)  # after all signatures
    decrypt_body(answer, mo_key, what="Ответ ФСС")                        # -> DecryptionError
    verify_envelope(answer, trusted_pem=fss_cert_pem, actor=fss_actor)    # after decryption
    verify_signers(request, [doctor_actor, mo_actor])                     # -> {actor: subject}
"""

from portal.crypto.cms import crc32_checksum, detached_signature, verify_detached
from portal.crypto.keys import (
    CryptoError,
    SignatureError,
    SigningKey,
    SigningKeyError,
    generate_demo_certificate,
    load_signing_key,
)
from portal.crypto.wssec import (
    WsSecurity,
    set_wsu_id,
    sign_envelope,
    verify_envelope,
    verify_signers,
)
from portal.crypto.xmlenc import (
    DecryptionError,
    decrypt_body,
    decrypt_message,
    encrypt_body,
    encrypt_message,
    is_encrypted,
    reply_certificate,
    set_reply_certificate,
)

__all__ = [
    "CryptoError",
    "DecryptionError",
    "SignatureError",
    "SigningKey",
    "SigningKeyError",
    "WsSecurity",
    "crc32_checksum",
    "decrypt_body",
    "decrypt_message",
    "detached_signature",
    "encrypt_body",
    "encrypt_message",
    "generate_demo_certificate",
    "is_encrypted",
    "load_signing_key",
    "reply_certificate",
    "set_reply_certificate",
    "set_wsu_id",
    "sign_envelope",
    "verify_detached",
    "verify_envelope",
    "verify_signers",
]
