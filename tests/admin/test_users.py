"""Users: list with filters, create/edit rules, password reset, block/unblock, МО scoping, audit."""

from __future__ import annotations

import re

from portal.admin.models import AuditLog
from portal.auth.models import User
from portal.extensions import db
from tests.admin.helpers import post
from tests.conftest import login
from tests.factories import PASSWORD, make_staff

URL = "/admin/users"


def _user(login_: str) -> User | None:
    db.session.expire_all()
    return db.session.scalar(db.select(User).where(User.login == login_))


def _new(client, **fields):
    data = {"login": "ivanova.mp", "full_name": "Иванова Мария Петровна", "role": "doctor", "mo": "",
            "staff": "", "active": "1", "password": "long-enough-1", "password2": "long-enough-1"}
    data.update({k: str(v) for k, v in fields.items()})
    return post(client, f"{URL}/new", data, page=f"{URL}/new")


def _edit_form(user: User, **fields) -> dict:
    data = {"full_name": user.full_name, "role": user.role, "mo": str(user.mo_id or ""),
            "staff": str(user.staff_id or ""), "active": "1" if user.active else ""}
    data.update({k: str(v) for k, v in fields.items()})
    return data


def test_central_admin_lists_everyone_and_filters_in_url(client, region):
    login(client, region.central)
    page = client.get(URL).get_data(as_text=True)
    assert region.a.users["doctor"].login in page and region.b.users["doctor"].login in page
    page = client.get(URL, query_string={"role": "doctor", "mo": region.b.mo.id}).get_data(as_text=True)
    assert region.b.users["doctor"].login in page
    assert region.a.users["doctor"].login not in page and region.b.users["mo_admin"].login not in page
    assert '<option value="doctor" selected>' in page
    fragment = client.get(URL, query_string={"q": "Пользователь"}, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.lstrip().startswith('<div id="users-table">') and "<html" not in fragment


def test_search_by_cyrillic_name_ignores_case(client, region):
    region.a.users["doctor"].full_name = "Смирнова Ольга Михайловна"
    db.session.commit()
    login(client, region.central)
    page = client.get(URL, query_string={"q": "смирнова"}).get_data(as_text=True)
    assert region.a.users["doctor"].login in page and region.b.users["doctor"].login not in page


def test_keyset_pages(app, client, region):
    app.config["PAGE_SIZE"] = 5
    login(client, region.central)
    page = client.get(URL).get_data(as_text=True)
    logins = sorted(u.login for u in db.session.scalars(db.select(User)))
    assert logins[4] in page and logins[5] not in page
    assert f"after={logins[4]}" in page
    page2 = client.get(URL, query_string={"after": logins[4]}).get_data(as_text=True)
    assert logins[5] in page2 and logins[4] not in page2


def test_mo_admin_lists_only_own_mo(client, region):
    login(client, region.a.users["mo_admin"])
    page = client.get(URL, query_string={"mo": region.b.mo.id}).get_data(as_text=True)
    assert region.a.users["doctor"].login in page and region.b.users["doctor"].login not in page


def test_create_user_with_audit_without_password(client, region):
    staff = region.a.doctor
    login(client, region.central)
    response = _new(client, login="Ivanova.MP", mo=region.a.mo.id, staff=staff.id)
    assert response.status_code == 303
    user = _user("ivanova.mp")  # logins are kept in lower case, as the login form compares them
    assert user and user.mo_id == region.a.mo.id and user.staff_id == staff.id and user.active
    assert user.check_password("long-enough-1")
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "user.create"))
    assert entry.login == region.central.login and entry.mo_id == region.a.mo.id
    assert "long-enough-1" not in str(entry.details) and "long-enough-1" not in entry.summary
    login(client, user, "long-enough-1")  # the new user can log in


def test_duplicate_login_is_refused(client, region):
    login(client, region.central)
    existing = region.a.users["doctor"].login
    response = _new(client, login=existing.upper(), mo=region.a.mo.id)
    assert response.status_code == 422
    assert f"Логин «{existing}» уже занят" in response.get_data(as_text=True)
    assert db.session.scalar(db.select(db.func.count(User.id)).where(User.login == existing)) == 1


def test_short_or_mismatched_password_is_refused(client, region):
    login(client, region.central)
    response = _new(client, mo=region.a.mo.id, password="short", password2="short")
    assert response.status_code == 422 and "не короче 8 символов" in response.get_data(as_text=True)
    response = _new(client, mo=region.a.mo.id, password="long-enough-1", password2="long-enough-2")
    assert response.status_code == 422 and "Пароли не совпадают" in response.get_data(as_text=True)
    assert _user("ivanova.mp") is None


def test_mo_admin_cannot_create_central_admin_or_user_of_another_mo(client, region):
    login(client, region.a.users["mo_admin"])
    response = _new(client, role="central_admin", mo=region.a.mo.id)
    assert response.status_code == 422
    assert "не может назначать роль «Администратор ЦОД»" in response.get_data(as_text=True)
    assert _user("ivanova.mp") is None
    response = _new(client, mo=region.b.mo.id)
    assert response.status_code == 422 and "только своей МО" in response.get_data(as_text=True)
    assert _user("ivanova.mp") is None
    response = _new(client)  # no МО given: the administrator's own
    assert response.status_code == 303
    assert _user("ivanova.mp").mo_id == region.a.mo.id
    page = client.get(f"{URL}/new").get_data(as_text=True)
    assert 'value="central_admin"' not in page


def test_staff_must_work_in_the_users_mo(client, region):
    login(client, region.central)
    response = _new(client, mo=region.a.mo.id, staff=region.b.doctor.id)
    assert response.status_code == 422 and "Сотрудник должен работать в МО пользователя" in response.get_data(as_text=True)
    assert _user("ivanova.mp") is None


def test_staff_options_follow_the_chosen_mo(client, region):
    other = make_staff(region.b.mo, last_name="Орлова")
    db.session.commit()
    login(client, region.central)
    options = client.get(f"{URL}/staff-options", query_string={"mo": region.b.mo.id},
                         headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Орлова" in options and f'value="{other.id}"' in options
    login(client, region.a.users["mo_admin"])
    assert client.get(f"{URL}/staff-options", query_string={"mo": region.b.mo.id}).status_code == 403


def test_edit_changes_fields_and_audits_them(client, region):
    doctor = region.a.users["doctor"]
    login(client, region.a.users["mo_admin"])
    url = f"{URL}/{doctor.id}"
    response = post(client, url, _edit_form(doctor, full_name="Петрова Анна Сергеевна", role="statistician",
                                            staff=region.a.doctor.id), page=url)
    assert response.status_code == 303
    user = _user(doctor.login)
    assert user.full_name == "Петрова Анна Сергеевна" and user.role == "statistician"
    assert user.staff_id == region.a.doctor.id
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "user.update"))
    assert entry.details["changes"]["role"] == ["doctor", "statistician"] and entry.mo_id == region.a.mo.id


def test_mo_admin_cannot_move_user_or_touch_other_mo_or_central(client, region):
    doctor = region.a.users["doctor"]
    login(client, region.a.users["mo_admin"])
    url = f"{URL}/{doctor.id}"
    response = post(client, url, _edit_form(doctor, mo=region.b.mo.id), page=url)
    assert response.status_code == 422 and "Нельзя перевести пользователя в другую МО" in response.get_data(as_text=True)
    assert _user(doctor.login).mo_id == region.a.mo.id
    response = post(client, url, _edit_form(doctor, role="central_admin"), page=url)
    assert response.status_code == 422 and _user(doctor.login).role == "doctor"

    other = region.b.users["doctor"]
    assert client.get(f"{URL}/{other.id}").status_code == 403
    assert post(client, f"{URL}/{other.id}", _edit_form(other, full_name="Взлом"), page=URL).status_code == 403
    assert post(client, f"{URL}/{other.id}/active", {"active": "0"}, page=URL).status_code == 403
    assert post(client, f"{URL}/{other.id}/password", {"password": "x" * 10, "password2": "x" * 10},
                page=URL).status_code == 403
    assert _user(other.login).active and _user(other.login).full_name != "Взлом"

    central = region.central  # sits in МО «a», but only ЦОД manages ЦОД accounts
    assert client.get(f"{URL}/{central.id}").status_code == 403
    assert post(client, f"{URL}/{central.id}/password", {"password": "x" * 10, "password2": "x" * 10},
                page=URL).status_code == 403
    assert _user(central.login).check_password(PASSWORD)


def test_central_admin_moves_user_to_another_mo(client, region):
    doctor = region.a.users["doctor"]
    login(client, region.central)
    url = f"{URL}/{doctor.id}"
    assert post(client, url, _edit_form(doctor, mo=region.b.mo.id), page=url).status_code == 303
    assert _user(doctor.login).mo_id == region.b.mo.id


def test_nobody_blocks_themselves(client, region):
    for admin in (region.central, region.a.users["mo_admin"]):
        login(client, admin)
        response = post(client, f"{URL}/{admin.id}/active", {"active": "0"}, page=URL)
        assert response.status_code == 303
        assert "Нельзя заблокировать собственную учётную запись" in client.get(URL).get_data(as_text=True)
        assert _user(admin.login).active
        url = f"{URL}/{admin.id}"
        response = post(client, url, _edit_form(admin, active=""), page=url)
        assert response.status_code == 422 and _user(admin.login).active


def test_block_and_unblock(client, region):
    doctor = region.a.users["doctor"]
    login(client, region.a.users["mo_admin"])
    assert post(client, f"{URL}/{doctor.id}/active", {"active": "0", "back": "list"}, page=URL).status_code == 303
    assert not _user(doctor.login).active
    other = client.application.test_client()
    page = other.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = other.post("/login", data={"login": doctor.login, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 401 and "заблокирована" in response.get_data(as_text=True)

    post(client, f"{URL}/{doctor.id}/active", {"active": "1"}, page=URL)
    assert _user(doctor.login).active
    actions = [e.action for e in db.session.scalars(db.select(AuditLog).order_by(AuditLog.id))]
    assert "user.block" in actions and "user.unblock" in actions


def test_reset_password(client, region):
    doctor = region.a.users["doctor"]
    login(client, region.a.users["mo_admin"])
    url = f"{URL}/{doctor.id}/password"
    post(client, url, {"password": "short", "password2": "short"}, page=URL)
    assert _user(doctor.login).check_password(PASSWORD)
    assert "не короче 8 символов" in client.get(f"{URL}/{doctor.id}").get_data(as_text=True)
    assert post(client, url, {"password": "new-password-9", "password2": "new-password-9"}, page=URL).status_code == 303
    assert _user(doctor.login).check_password("new-password-9")
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "user.password"))
    assert "new-password-9" not in str(entry.details) and entry.login == region.a.users["mo_admin"].login
