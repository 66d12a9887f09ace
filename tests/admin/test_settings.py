"""Region-wide exchange settings: validation, secrets never shown back, audit."""

from __future__ import annotations

from portal.admin.models import AuditLog, Setting
from portal.admin.services import get_setting
from portal.extensions import db
from tests.admin.helpers import post
from tests.conftest import login

URL = "/admin/settings"


def _form(client, **changes) -> dict:
    """The settings form as the page fills it, with some fields changed."""
    data = {
        "vimis.endpoint": get_setting("vimis.endpoint"),
        "vimis.timeout": get_setting("vimis.timeout"),
        "ers.endpoint": get_setting("ers.endpoint"),
        "ers.timeout": get_setting("ers.timeout"),
    }
    data.update(changes)
    return data


def _changes() -> list[AuditLog]:
    return list(db.session.scalars(db.select(AuditLog).where(AuditLog.action == "setting.change")))


def test_settings_are_grouped_with_current_values(client, region):
    login(client, region.central)
    page = client.get(URL).get_data(as_text=True)
    for group in ("ВИМИС «АКиНЕО»", "ИЭМК ЕГИСЗ", "ФСС ЭРС", "ТФОМС"):
        assert f"<legend>{group}</legend>" in page
    assert get_setting("vimis.endpoint") in page and "Тайм-аут запроса, с" in page


def test_valid_change_is_saved_and_audited(client, region):
    login(client, region.central)
    response = post(client, URL, _form(client, **{"vimis.endpoint": "https://vimis.example.ru/ws",
                                                  "vimis.timeout": "45"}), page=URL)
    assert response.status_code == 303
    assert get_setting("vimis.endpoint") == "https://vimis.example.ru/ws"
    assert get_setting("vimis.timeout") == "45"
    keys = {entry.details["key"] for entry in _changes()}
    assert keys == {"vimis.endpoint", "vimis.timeout"}  # unchanged fields are not «changed»
    assert all(entry.login == region.central.login for entry in _changes())
    assert "Настройки сохранены (изменено: 2)" in client.get(URL).get_data(as_text=True)


def test_bad_url_refuses_the_whole_form(client, region):
    login(client, region.central)
    response = post(client, URL, _form(client, **{"vimis.endpoint": "vimis.example.ru/ws", "vimis.timeout": "45"}),
                    page=URL)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Адрес должен начинаться с http:// или https://" in page
    assert "Настройки не сохранены" in page
    assert 'value="vimis.example.ru/ws"' in page  # what the user typed stays in the field
    assert get_setting("vimis.timeout") == "30"  # the valid field of the same form is not saved either
    assert db.session.scalar(db.select(db.func.count(Setting.id))) == 0
    assert _changes() == []


def test_seconds_must_be_a_positive_integer(client, region):
    login(client, region.central)
    for bad in ("0", "-5", "1.5", "abc"):
        response = post(client, URL, _form(client, **{"ers.timeout": bad}), page=URL)
        assert response.status_code == 422
        assert "целое положительное число секунд" in response.get_data(as_text=True)
    assert get_setting("ers.timeout") == "60"


def test_secret_is_never_rendered_back(client, region):
    secret = "9f0c2d7e-guid-secret-value"
    login(client, region.central)
    response = post(client, URL, _form(client, **{"iemk.guid": secret}), page=URL)
    assert response.status_code == 303
    assert get_setting("iemk.guid") == secret
    page = client.get(URL).get_data(as_text=True)
    assert secret not in page
    assert "задан" in page and 'name="iemk.guid" value=""' in page
    entry = _changes()[-1]
    assert secret not in entry.summary and secret not in str(entry.details)
    assert entry.details["key"] == "iemk.guid"

    # an empty secret input keeps the stored value …
    post(client, URL, _form(client, **{"iemk.guid": ""}), page=URL)
    assert get_setting("iemk.guid") == secret
    # … even when another field of the form is wrong, nothing is revealed
    response = post(client, URL, _form(client, **{"ers.endpoint": "nonsense"}), page=URL)
    assert response.status_code == 422 and secret not in response.get_data(as_text=True)
    # «очистить» removes it
    post(client, URL, _form(client, **{"iemk.guid__clear": "1"}), page=URL)
    assert get_setting("iemk.guid") == ""
    assert "не задан" in client.get(URL).get_data(as_text=True)


def test_only_central_admin_opens_settings(client, region):
    login(client, region.a.users["mo_admin"])
    assert client.get(URL).status_code == 403
    response = post(client, URL, {"vimis.endpoint": "https://x.example/ws"}, page="/admin/mo")
    assert response.status_code == 403
    assert get_setting("vimis.endpoint") != "https://x.example/ws"
