"""Helpers for the administration tests: CSRF-carrying posts, as a form or as HTMX does."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import csrf_token

IP = "10.20.30.40"


def post(client, url: str, data: dict | None = None, *, page: str = "/admin/mo", htmx: bool = False, **kw):
    """POST with the CSRF token taken from `page`, from a fixed client address."""
    token = csrf_token(client, page)
    data = dict(data or {})
    headers = kw.pop("headers", {})
    if htmx:
        headers.update({"HX-Request": "true", "X-CSRFToken": token})
    else:
        data.setdefault("csrf_token", token)
    return client.post(url, data=data, headers=headers, environ_base={"REMOTE_ADDR": IP}, **kw)


def make_certificate(
    common_name: str = "ГБУЗ «Родильный дом № 1»",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key=None,
) -> tuple[str, str, x509.Certificate]:
    """A real self-signed certificate and its key, both PEM."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "RU"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Минздрав области"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(x509.ObjectIdentifier("1.2.643.100.3"), "12345678901"),
    ])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    not_before = not_before or now - dt.timedelta(days=10)
    not_after = not_after or now + dt.timedelta(days=365)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert_pem, key_pem, cert
