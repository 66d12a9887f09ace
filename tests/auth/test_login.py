"""Login, logout, throttling, CSRF and the session cookie."""

import re

from portal.admin.models import AuditLog
from portal.extensions import db
from tests import factories
from tests.conftest import login


def _form_token(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _try(client, login_name, password):
    return client.post("/login", data={"login": login_name, "password": password, "csrf_token": _form_token(client)})


def test_login_and_logout(client, region):
    user = region.a.users["doctor"]
    response = _try(client, user.login, factories.PASSWORD)
    assert response.status_code == 302
    cookie = response.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/").get_data(as_text=True)
    assert user.full_name in page and "Врач" in page
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302
    actions = set(db.session.scalars(db.select(AuditLog.action).where(AuditLog.login == user.login)))
    assert {"auth.login", "auth.logout"} <= actions


def test_wrong_password_is_refused_in_russian(client, region):
    response = _try(client, region.a.users["doctor"].login, "wrong")
    assert response.status_code == 401
    assert "Неверный логин или пароль" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_throttling_locks_even_the_right_password(client, region):
    user = region.a.users["doctor"]
    for _ in range(3):  # TestConfig.LOGIN_MAX_FAILURES
        _try(client, user.login, "wrong")
    response = _try(client, user.login, factories.PASSWORD)
    assert response.status_code == 429
    assert "Слишком много неудачных попыток" in response.get_data(as_text=True)
    # another user is not locked by someone else's failures
    assert _try(client, region.a.users["statistician"].login, factories.PASSWORD).status_code == 302


def test_blocked_user_cannot_log_in(client, region):
    user = region.a.users["doctor"]
    user.active = False
    db.session.commit()
    response = _try(client, user.login, factories.PASSWORD)
    assert response.status_code == 401 and "заблокирована" in response.get_data(as_text=True)


def test_post_without_csrf_token_is_refused(client, region):
    response = client.post("/login", data={"login": region.a.users["doctor"].login, "password": factories.PASSWORD})
    assert response.status_code == 400
    assert "Обновите страницу" in response.get_data(as_text=True)


def test_logout_by_get_is_not_allowed(client, region):
    login(client, region.a.users["doctor"])
    assert client.get("/logout").status_code == 405
    assert client.get("/").status_code == 200


def test_next_parameter_cannot_leave_the_portal(client, region):
    token = _form_token(client)
    user = region.a.users["doctor"]
    response = client.post(
        "/login?next=https://evil.example/x", data={"login": user.login, "password": factories.PASSWORD, "csrf_token": token}
    )
    assert response.headers["Location"] == "/"


def test_next_parameter_returns_to_the_page(client, region):
    assert "/login?next=" in client.get("/clinical/patients").headers["Location"]
    token = _form_token(client)
    user = region.a.users["doctor"]
    response = client.post(
        "/login?next=/clinical/patients", data={"login": user.login, "password": factories.PASSWORD, "csrf_token": token}
    )
    assert response.headers["Location"] == "/clinical/patients"


def test_unknown_page_is_a_russian_404(client, region):
    login(client, region.a.users["doctor"])
    response = client.get("/no/such/page")
    assert response.status_code == 404 and "Страница не найдена" in response.get_data(as_text=True)
