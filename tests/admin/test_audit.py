"""Audit log page: newest first, keyset pages, filters in the URL, МО scoping."""

from __future__ import annotations

from datetime import datetime, timedelta

from portal.admin.models import AuditLog
from portal.extensions import db
from tests.conftest import login

URL = "/admin/audit"


def _entry(summary: str, *, mo=None, login="someone", action="user.update", at=None, details=None) -> AuditLog:
    entry = AuditLog(login=login, ip="10.0.0.1", action=action, summary=summary, mo_id=mo.id if mo else None,
                     object_type="User", object_id="7", details=details or {}, at=at or datetime(2026, 3, 1, 12))
    db.session.add(entry)
    db.session.flush()
    return entry


def test_newest_first_with_columns_and_expandable_details(client, region):
    _entry("Старая запись", mo=region.a.mo, at=datetime(2026, 1, 1, 9))
    _entry("Новая запись", mo=region.a.mo, at=datetime(2026, 2, 1, 9),
           details={"changes": {"role": ["doctor", "statistician"]}, "login": "ivanova"})
    db.session.commit()
    login(client, region.central)
    page = client.get(URL).get_data(as_text=True)
    for column in ("Дата/время", "Пользователь", "IP", "Действие", "Объект", "Описание"):
        assert f">{column}</th>" in page
    assert page.index("Новая запись") < page.index("Старая запись")
    assert "<details><summary>Новая запись</summary>" in page
    assert "role: doctor → statistician" in page and "Изменение пользователя" in page and "Пользователь #7" in page
    # the central administrator's own login is there too (newest of all)
    assert page.index(f"Вход пользователя {region.central.login}") < page.index("Новая запись")


def test_keyset_pagination_keeps_filters(app, client, region):
    app.config["PAGE_SIZE"] = 3
    entries = [_entry(f"Запись {i}", mo=region.a.mo, action="user.block") for i in range(7)]
    db.session.commit()
    login(client, region.central)
    page = client.get(URL, query_string={"action": "user.block"}).get_data(as_text=True)
    assert "Запись 6" in page and "Запись 4" in page and "Запись 3" not in page
    assert f"before={entries[4].id}" in page and "action=user.block" in page
    page2 = client.get(URL, query_string={"action": "user.block", "before": entries[4].id}).get_data(as_text=True)
    assert "Запись 3" in page2 and "Запись 1" in page2 and "Запись 4" not in page2 and "Запись 0" not in page2
    page3 = client.get(URL, query_string={"action": "user.block", "before": entries[1].id}).get_data(as_text=True)
    assert "Запись 0" in page3 and "Более ранние записи" not in page3 and "К новейшим" in page3


def test_filters_period_login_action_and_text(client, region):
    _entry("Блокировка Петровой", login="admin-a", action="user.block", at=datetime(2026, 3, 10, 8))
    _entry("Настройка ВИМИС изменена", login="admin-b", action="setting.change", at=datetime(2026, 3, 20, 8))
    _entry("Сертификат загружен", login="admin-b", action="certificate.upload", at=datetime(2026, 4, 2, 8))
    db.session.commit()
    login(client, region.central)

    def shown(**args) -> set[str]:
        page = client.get(URL, query_string=args).get_data(as_text=True)
        return {s for s in ("Блокировка Петровой", "Настройка ВИМИС изменена", "Сертификат загружен") if s in page}

    assert shown(**{"from": "2026-03-15", "to": "2026-03-31"}) == {"Настройка ВИМИС изменена"}
    assert shown(to="2026-03-20") == {"Блокировка Петровой", "Настройка ВИМИС изменена"}  # the end day included
    assert shown(login="admin-b") == {"Настройка ВИМИС изменена", "Сертификат загружен"}
    assert shown(action="user.*") == {"Блокировка Петровой"}
    assert shown(action="certificate.upload") == {"Сертификат загружен"}
    assert shown(q="вимис") == {"Настройка ВИМИС изменена"}  # Cyrillic, any case
    assert shown(q="петровой") == {"Блокировка Петровой"}
    page = client.get(URL, query_string={"login": "admin-b", "q": "вимис"}).get_data(as_text=True)
    assert 'name="login" value="admin-b"' in page and 'name="q" value="вимис"' in page


def test_bad_date_is_named_and_ignored(client, region):
    _entry("Любая запись")
    db.session.commit()
    login(client, region.central)
    page = client.get(URL, query_string={"from": "31.02.2026x"}).get_data(as_text=True)
    assert "Дата «с» не распознана" in page and "Любая запись" in page


def test_mo_admin_sees_only_own_mo_entries(client, region):
    _entry("Событие МО А", mo=region.a.mo)
    _entry("Событие МО Б", mo=region.b.mo)
    _entry("Событие региона")
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    for args in ({}, {"mo": region.b.mo.id}):
        page = client.get(URL, query_string=args).get_data(as_text=True)
        assert "Событие МО А" in page
        assert "Событие МО Б" not in page and "Событие региона" not in page

    login(client, region.central)
    page = client.get(URL, query_string={"mo": region.b.mo.id}).get_data(as_text=True)
    assert "Событие МО Б" in page and "Событие МО А" not in page


def test_htmx_gets_only_the_table(client, region):
    _entry("Запись для фрагмента", at=datetime.now() - timedelta(minutes=1))
    db.session.commit()
    login(client, region.central)
    response = client.get(URL, query_string={"q": "фрагмента"}, headers={"HX-Request": "true"})
    text = response.get_data(as_text=True)
    assert text.lstrip().startswith('<div id="audit-table">') and "<html" not in text
    assert "Запись для фрагмента" in text
    assert "HX-Request" in response.headers["Vary"]
