"""Certificates: upload (PEM, file or text) parsed with cryptography, scoping, delete, audit."""

from __future__ import annotations

import datetime as dt
import io

from cryptography.hazmat.primitives.asymmetric import ec

from portal.admin.models import AuditLog, Certificate
from portal.extensions import db
from tests.admin.helpers import make_certificate, post
from tests.conftest import login

URL = "/admin/certificates"


def _certs() -> list[Certificate]:
    return list(db.session.scalars(db.select(Certificate).order_by(Certificate.id)))


def _upload(client, mo_id, cert_pem, key_pem="", purpose="mo", user=""):
    return post(client, URL, {"purpose": purpose, "mo": str(mo_id or ""), "user": str(user),
                              "cert_text": cert_pem, "key_text": key_pem}, page=URL)


def test_garbage_is_refused_and_nothing_stored(client, region):
    login(client, region.central)
    response = _upload(client, region.a.mo.id, "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----")
    assert response.status_code == 422
    assert "Не удалось прочитать сертификат" in response.get_data(as_text=True)
    response = post(client, URL, {"purpose": "mo", "mo": str(region.a.mo.id),
                                  "cert_file": (io.BytesIO(b"\x00\x01garbage"), "cert.cer")},
                    page=URL, content_type="multipart/form-data")
    assert response.status_code == 422 and "Не удалось прочитать сертификат" in response.get_data(as_text=True)
    response = _upload(client, region.a.mo.id, "")
    assert response.status_code == 422 and "Выберите файл сертификата" in response.get_data(as_text=True)
    assert _certs() == []
    assert db.session.scalar(db.select(AuditLog.id).where(AuditLog.action == "certificate.upload")) is None


def test_real_pem_is_stored_with_its_dates_and_key_is_never_shown(client, region):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert_pem, key_pem, cert = make_certificate(not_before=now - dt.timedelta(days=3),
                                               not_after=now + dt.timedelta(days=200))
    login(client, region.central)
    response = _upload(client, region.a.mo.id, cert_pem, key_pem)
    assert response.status_code == 303
    (stored,) = _certs()
    assert stored.mo_id == region.a.mo.id and stored.purpose == "mo"
    assert stored.valid_from == cert.not_valid_before_utc.date()
    assert stored.valid_to == cert.not_valid_after_utc.date()
    assert stored.serial == format(cert.serial_number, "X")
    assert stored.subject.startswith("CN=ГБУЗ «Родильный дом № 1», O=Минздрав области") and "СНИЛС=12345678901" in stored.subject
    assert stored.key_pem and "PRIVATE KEY" in stored.key_pem

    page = client.get(URL).get_data(as_text=True)
    assert "ключ загружен" in page and stored.serial in page
    assert f"осталось {(stored.valid_to - dt.date.today()).days} дн" in page
    key_body = key_pem.splitlines()[1]
    assert key_body not in page and key_pem.splitlines()[-1] + "\n" not in page
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "certificate.upload"))
    assert entry.login == region.central.login and entry.mo_id == region.a.mo.id
    assert key_body not in str(entry.details) and entry.details["key"] is True


def test_upload_as_file(client, region):
    cert_pem, _key, _cert = make_certificate("Сертификат из файла")
    login(client, region.a.users["mo_admin"])
    response = post(client, URL, {"purpose": "vimis", "cert_file": (io.BytesIO(cert_pem.encode()), "mo.pem")},
                    page=URL, content_type="multipart/form-data")
    assert response.status_code == 303
    (stored,) = _certs()
    assert stored.mo_id == region.a.mo.id and "Сертификат из файла" in stored.subject and stored.key_pem is None


def test_key_of_another_certificate_is_refused(client, region):
    cert_pem, _key, _cert = make_certificate()
    _other_cert, other_key, _ = make_certificate(key=ec.generate_private_key(ec.SECP256R1()))
    login(client, region.central)
    response = _upload(client, region.a.mo.id, cert_pem, other_key)
    assert response.status_code == 422
    assert "Закрытый ключ не соответствует сертификату" in response.get_data(as_text=True)
    assert _certs() == []


def test_expiring_and_expired_certificates_are_marked(client, region):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    soon, _k, _c = make_certificate("Скоро истекает", now - dt.timedelta(days=300), now + dt.timedelta(days=10))
    gone, _k, _c = make_certificate("Уже истёк", now - dt.timedelta(days=400), now - dt.timedelta(days=5))
    login(client, region.central)
    assert _upload(client, region.a.mo.id, soon).status_code == 303
    response = _upload(client, region.a.mo.id, gone)
    assert response.status_code == 303
    page = client.get(URL).get_data(as_text=True)
    assert "срок действия сертификата истёк" in page  # warned on upload
    assert 'class="cert-days expiring">осталось' in page
    assert 'class="cert-days expired">истёк' in page


def test_doctor_signature_needs_a_user_of_the_same_mo(client, region):
    cert_pem, _key, _cert = make_certificate("Смирнова Ольга Михайловна")
    login(client, region.central)
    response = _upload(client, region.a.mo.id, cert_pem, purpose="doctor")
    assert response.status_code == 422 and "выберите пользователя" in response.get_data(as_text=True)
    response = _upload(client, region.a.mo.id, cert_pem, purpose="doctor", user=region.b.users["doctor"].id)
    assert response.status_code == 422 and "выбранной МО" in response.get_data(as_text=True)
    assert _certs() == []
    response = _upload(client, region.a.mo.id, cert_pem, purpose="doctor", user=region.a.users["doctor"].id)
    assert response.status_code == 303
    (stored,) = _certs()
    assert stored.user_id == region.a.users["doctor"].id and stored.mo_id == region.a.mo.id
    assert region.a.users["doctor"].full_name in client.get(URL).get_data(as_text=True)


def test_mo_admin_sees_and_changes_only_own_certificates(client, region):
    own_pem, _k, _c = make_certificate("Своя МО")
    other_pem, _k, _c = make_certificate("Чужая МО")
    login(client, region.central)
    _upload(client, region.a.mo.id, own_pem)
    _upload(client, region.b.mo.id, other_pem)
    own, other = _certs()

    login(client, region.a.users["mo_admin"])
    page = client.get(URL).get_data(as_text=True)
    assert "Своя МО" in page and "Чужая МО" not in page
    page = client.get(URL, query_string={"mo": region.b.mo.id}).get_data(as_text=True)
    assert "Чужая МО" not in page  # the МО filter cannot widen the scope
    fresh, _k, _c = make_certificate("Попытка в чужую МО")
    assert _upload(client, region.b.mo.id, fresh).status_code == 403
    assert post(client, f"{URL}/{other.id}/delete", page=URL).status_code == 403
    assert len(_certs()) == 2

    response = post(client, f"{URL}/{own.id}/delete", page=URL)
    assert response.status_code == 303
    assert [c.id for c in _certs()] == [other.id]
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "certificate.delete"))
    assert entry.login == region.a.users["mo_admin"].login and "Своя МО" in entry.summary


def test_filter_by_mo_for_central_admin(client, region):
    a_pem, _k, _c = make_certificate("Сертификат А")
    b_pem, _k, _c = make_certificate("Сертификат Б")
    login(client, region.central)
    _upload(client, region.a.mo.id, a_pem)
    _upload(client, region.b.mo.id, b_pem)
    fragment = client.get(URL, query_string={"mo": region.b.mo.id}, headers={"HX-Request": "true"})
    text = fragment.get_data(as_text=True)
    assert text.lstrip().startswith('<div id="cert-table">') and "<html" not in text
    assert "Сертификат Б" in text and "Сертификат А" not in text
