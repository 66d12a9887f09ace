"""Who may open the administration pages: roles × routes, and the menu."""

from __future__ import annotations

import pytest

from portal.admin.models import Certificate
from portal.auth.models import ApiToken
from portal.extensions import db
from tests.admin.helpers import make_certificate, post
from tests.conftest import login

GET_PAGES = ["/admin/", "/admin/mo", "/admin/mo/{mo}", "/admin/settings", "/admin/certificates", "/admin/users",
             "/admin/users/new", "/admin/users/{user}", "/admin/users/staff-options?mo={mo}", "/admin/tokens",
             "/admin/audit"]
POSTS = ["/admin/mo/{mo}/integrations/iemk", "/admin/mo/{mo}", "/admin/settings", "/admin/certificates",
         "/admin/certificates/{cert}/delete", "/admin/users/new", "/admin/users/{user}",
         "/admin/users/{user}/password", "/admin/users/{user}/active", "/admin/tokens",
         "/admin/tokens/{token}/revoke"]
CENTRAL_ONLY = {"/admin/settings", "/admin/tokens"}


def _ids(region) -> dict:
    cert_pem, _key, _cert = make_certificate()
    from portal.admin.certificates import parse_certificate

    parsed = parse_certificate(cert_pem)
    cert = Certificate(purpose="mo", mo_id=region.a.mo.id, subject=parsed.subject, serial=parsed.serial,
                       valid_from=parsed.valid_from, valid_to=parsed.valid_to, cert_pem=parsed.pem)
    token = ApiToken(name="t", token_hash="0" * 64, prefix="00000000")
    db.session.add_all([cert, token])
    db.session.commit()
    return {"mo": region.a.mo.id, "user": region.a.users["doctor"].id, "cert": cert.id, "token": token.id}


@pytest.mark.parametrize("role", ["doctor", "statistician", "ers_operator", "ers_accountant"])
def test_non_administrators_get_403_everywhere(client, region, role):
    ids = _ids(region)
    login(client, region.a.users[role])
    for url in GET_PAGES:
        response = client.get(url.format(**ids))
        assert response.status_code == 403, url
        assert "Доступ запрещён" in response.get_data(as_text=True)
    for url in POSTS:
        assert post(client, url.format(**ids), {"enabled": "1"}, page="/").status_code == 403, url
    assert db.session.get(Certificate, ids["cert"]) is not None
    assert db.session.get(ApiToken, ids["token"]).revoked_at is None
    page = client.get("/").get_data(as_text=True)
    assert "Администрирование" not in page and "/admin/" not in page


def test_mo_admin_gets_403_only_on_central_pages(client, region):
    ids = _ids(region)
    login(client, region.a.users["mo_admin"])
    for url in GET_PAGES:
        expected = 403 if url in CENTRAL_ONLY else 200
        response = client.get(url.format(**ids), follow_redirects=True)
        assert response.status_code == expected, url
    menu = client.get("/").get_data(as_text=True)
    assert "Медицинские организации" in menu and "Журнал аудита" in menu
    assert "Токены API" not in menu and "Настройки обмена" not in menu


def test_central_admin_opens_every_page(client, region):
    ids = _ids(region)
    login(client, region.central)
    for url in GET_PAGES:
        assert client.get(url.format(**ids), follow_redirects=True).status_code == 200, url
    menu = client.get("/").get_data(as_text=True)
    for item in ("Медицинские организации", "Пользователи", "Настройки обмена", "Сертификаты", "Токены API",
                 "Журнал аудита"):
        assert item in menu


def test_anonymous_is_sent_to_login(client, region):
    response = client.get("/admin/mo")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
