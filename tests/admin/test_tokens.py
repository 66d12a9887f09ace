"""API tokens: issued once, stored as a hash, revocable; central administrators only."""

from __future__ import annotations

import re

from portal.admin.models import AuditLog
from portal.auth.models import ApiToken, hash_token
from portal.extensions import db
from tests.admin.helpers import post
from tests.conftest import login

URL = "/admin/tokens"


def test_token_is_shown_once_and_only_its_hash_is_stored(client, region):
    login(client, region.central)
    response = post(client, URL, {"name": "МИС РАМ — выгрузка"}, page=URL)
    assert response.status_code == 201
    page = response.get_data(as_text=True)
    assert "Скопируйте токен сейчас" in page and "показывается только один раз" in page
    plain = re.search(r'class="token-value" value="([^"]+)"', page).group(1)
    assert len(plain) >= 40
    assert response.headers["Cache-Control"] == "no-store"

    token = db.session.scalar(db.select(ApiToken))
    assert token.name == "МИС РАМ — выгрузка"
    assert token.token_hash == hash_token(plain) and plain not in (token.token_hash, token.prefix)
    assert token.prefix == plain[:8] and token.created_by_id == region.central.id
    # what authenticates a bearer token: its sha256 matches exactly one live token
    assert db.session.scalar(db.select(ApiToken).where(ApiToken.token_hash == hash_token(plain),
                                                       ApiToken.revoked_at.is_(None))) == token

    listing = client.get(URL).get_data(as_text=True)
    assert plain not in listing and token.prefix in listing and "МИС РАМ — выгрузка" in listing
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "token.issue"))
    assert plain not in str(entry.details) and plain not in entry.summary and entry.login == region.central.login


def test_token_needs_a_name(client, region):
    login(client, region.central)
    response = post(client, URL, {"name": "   "}, page=URL)
    assert response.status_code == 422 and "Укажите название токена" in response.get_data(as_text=True)
    assert db.session.scalar(db.select(ApiToken)) is None


def test_revoke(client, region):
    login(client, region.central)
    post(client, URL, {"name": "Старый токен"}, page=URL)
    token = db.session.scalar(db.select(ApiToken))
    response = post(client, f"{URL}/{token.id}/revoke", page=URL)
    assert response.status_code == 303
    db.session.expire_all()
    assert token.revoked_at is not None
    page = client.get(URL).get_data(as_text=True)
    assert "отозван: запросы с ним больше не принимаются" in page  # the flash
    assert '<span class="pill off">отозван ' in page and f"/admin/tokens/{token.id}/revoke" not in page
    assert db.session.scalar(db.select(AuditLog).where(AuditLog.action == "token.revoke")).login == region.central.login


def test_only_central_admin_manages_tokens(client, region):
    login(client, region.a.users["mo_admin"])
    assert client.get(URL).status_code == 403
    assert post(client, URL, {"name": "x"}, page="/admin/mo").status_code == 403
    assert db.session.scalar(db.select(ApiToken)) is None


def test_issued_token_opens_the_intake_api_until_revoked(client, region):
    login(client, region.central)
    page = post(client, URL, {"name": "МИС РАМ"}, page=URL).get_data(as_text=True)
    plain = re.search(r'class="token-value" value="([^"]+)"', page).group(1)
    api = client.application.test_client()
    headers = {"Authorization": f"Bearer {plain}"}
    assert api.post("/api/v1/records", json={"records": []}, headers=headers).status_code == 200
    assert "не использовался" not in client.get(URL).get_data(as_text=True)  # last use is shown

    token = db.session.scalar(db.select(ApiToken))
    post(client, f"{URL}/{token.id}/revoke", page=URL)
    assert api.post("/api/v1/records", json={"records": []}, headers=headers).status_code == 401
