"""МО list, МО card and the per-МО integration switches (X-4, seed I 2.7.1)."""

from __future__ import annotations

from portal.admin.models import AuditLog, MoIntegration
from portal.admin.services import enabled_procedures, get_setting, is_enabled, set_integration
from portal.extensions import db
from tests.admin.helpers import IP, post
from tests.conftest import login
from tests.factories import make_department, make_staff


def _audit(action: str) -> list[AuditLog]:
    return list(db.session.scalars(db.select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))


def test_central_admin_sees_every_mo_with_requisites(client, region):
    login(client, region.central)
    page = client.get("/admin/mo").get_data(as_text=True)
    for mo in (region.a.mo, region.b.mo):
        assert mo.short_name in page
        assert mo.oid in page and mo.f003_code in page and mo.registry_number in page
    assert "ВИМИС" in page and "ИЭМК" in page and "ЭРС" in page and "ТФОМС" in page
    assert "0/2" in page and "Включить интеграцию" in page


def test_mo_admin_sees_only_own_mo(client, region):
    login(client, region.a.users["mo_admin"])
    page = client.get("/admin/mo").get_data(as_text=True)
    assert region.a.mo.short_name in page
    assert region.b.mo.short_name not in page


def test_mo_admin_cannot_open_or_switch_another_mo(client, region):
    login(client, region.a.users["mo_admin"])
    assert client.get(f"/admin/mo/{region.b.mo.id}").status_code == 403
    response = post(client, f"/admin/mo/{region.b.mo.id}/integrations/iemk", {"enabled": "1"}, htmx=True)
    assert response.status_code == 403
    assert enabled_procedures(region.b.mo.id) == set()
    assert _audit("integration.switch") == []


def test_search_filters_the_list_and_keeps_the_query(client, region):
    login(client, region.central)
    page = client.get("/admin/mo", query_string={"q": region.b.mo.short_name}).get_data(as_text=True)
    assert region.b.mo.short_name in page and f'href="/admin/mo/{region.a.mo.id}"' not in page
    assert f'value="{region.b.mo.short_name}"' in page
    fragment = client.get("/admin/mo", query_string={"q": "нет такой"}, headers={"HX-Request": "true"})
    text = fragment.get_data(as_text=True)
    assert text.lstrip().startswith('<div id="mo-table"') and "Ничего не найдено" in text


def test_iemk_toggles_from_0_of_2_to_2_of_2_and_back_with_audit(client, region):
    mo = region.a.mo
    login(client, region.central)
    response = post(client, f"/admin/mo/{mo.id}/integrations/iemk", {"enabled": "1"}, htmx=True)
    assert response.status_code == 200
    row = response.get_data(as_text=True)
    assert row.lstrip().startswith(f'<tr id="mo-{mo.id}"')  # only this МО's row is swapped
    assert "<html" not in row and region.b.mo.short_name not in row
    assert "2/2" in row and "Выключить интеграцию" in row
    assert enabled_procedures(mo.id) == {"iemk_collect", "iemk_upload"}
    entry = _audit("integration.switch")[-1]
    assert entry.login == region.central.login and entry.ip == IP and entry.mo_id == mo.id
    assert "включена" in entry.summary and entry.details["integration"] == "iemk"

    response = post(client, f"/admin/mo/{mo.id}/integrations/iemk", {"enabled": "0"}, htmx=True)
    row = response.get_data(as_text=True)
    assert "0/2" in row and "Включить интеграцию" in row
    assert enabled_procedures(mo.id) == set()
    assert len(_audit("integration.switch")) == 2
    assert "выключена" in _audit("integration.switch")[-1].summary


def test_one_of_two_procedures_shows_as_1_of_2(client, region):
    db.session.add(MoIntegration(mo_id=region.a.mo.id, key="iemk_collect", enabled=True))
    db.session.commit()
    login(client, region.central)
    page = client.get("/admin/mo").get_data(as_text=True)
    assert "1/2" in page


def test_mo_admin_switches_own_mo_without_javascript(client, region):
    mo = region.a.mo
    login(client, region.a.users["mo_admin"])
    response = post(client, f"/admin/mo/{mo.id}/integrations/tfoms_attachment", {"enabled": "1"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/mo")
    assert is_enabled(mo.id, "tfoms_attachment")
    page = client.get("/admin/mo").get_data(as_text=True)
    assert "ТФОМС: прикрепление» включена" in page  # the flash message


def test_vimis_off_without_reason_is_refused_and_changes_nothing(client, region):
    mo = region.a.mo
    set_integration(mo, "vimis", True)
    db.session.commit()
    before = len(_audit("integration.switch"))
    login(client, region.central)
    response = post(client, f"/admin/mo/{mo.id}/integrations/vimis", {"enabled": "0", "reason": "  "}, htmx=True)
    assert response.status_code == 200  # HTMX swaps the row only on success; the row carries the refusal
    text = response.get_data(as_text=True)
    assert text.lstrip().startswith(f'<tr id="mo-{mo.id}"') and 'class="flash flash-error' in text
    assert "укажите причину" in text and "обязательна" in text
    db.session.expire_all()
    assert is_enabled(mo.id, "vimis")
    assert len(_audit("integration.switch")) == before


def test_vimis_form_says_sending_is_mandatory_and_off_needs_reason(client, region):
    set_integration(region.a.mo, "vimis", True)
    db.session.commit()
    login(client, region.central)
    page = client.get("/admin/mo").get_data(as_text=True)
    assert "Отправка СЭМД в ВИМИС обязательна" in page and 'name="reason"' in page


def test_vimis_off_with_reason_is_stored_and_shown(client, region):
    mo = region.a.mo
    set_integration(mo, "vimis", True)
    db.session.commit()
    login(client, region.central)
    response = post(client, f"/admin/mo/{mo.id}/integrations/vimis",
                    {"enabled": "0", "reason": "Сбой ВИМИС с 10:00", "back": "detail"})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/admin/mo/{mo.id}")
    assert not is_enabled(mo.id, "vimis")
    page = client.get(f"/admin/mo/{mo.id}").get_data(as_text=True)
    assert "Причина: Сбой ВИМИС с 10:00" in page
    assert _audit("integration.switch")[-1].details["reason"] == "Сбой ВИМИС с 10:00"


def test_unknown_integration_is_refused(client, region):
    login(client, region.central)
    response = post(client, f"/admin/mo/{region.a.mo.id}/integrations/nonsense", {"enabled": "1"})
    assert response.status_code == 303
    assert "Неизвестная интеграция" in client.get("/admin/mo").get_data(as_text=True)
    assert enabled_procedures(region.a.mo.id) == set()


def test_mo_card_shows_requisites_departments_and_staff(client, region):
    mo = region.a.mo
    make_department(mo, kind="day_hospital", name="Дневной стационар № 2", beds=12)
    make_staff(mo, category="nurse", last_name="Кузнецова")
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    page = client.get(f"/admin/mo/{mo.id}").get_data(as_text=True)
    for value in (mo.name, mo.ogrn, mo.inn, mo.kpp, mo.address, mo.oid, mo.f003_code):
        assert value in page
    assert "Дневной стационар № 2" in page and "Дневной стационар" in page and "Родильный дом" in page
    assert "врач: 1" in page and "средний медицинский персонал: 1" in page
    assert 'name="iemk.pix_endpoint"' not in page  # overrides: read-only for an МО administrator


def test_mo_overrides_are_saved_by_central_admin_only(client, region):
    a, b = region.a.mo, region.b.mo
    login(client, region.central)
    url = f"/admin/mo/{a.id}"
    response = post(client, url, {"iemk.pix_endpoint": "https://iemk.example.ru/pix", "iemk.guid": "guid-secret-42"},
                    page=url)
    assert response.status_code == 303
    assert get_setting("iemk.pix_endpoint", a.id) == "https://iemk.example.ru/pix"
    assert get_setting("iemk.pix_endpoint", b.id) != "https://iemk.example.ru/pix"
    page = client.get(url).get_data(as_text=True)
    assert "guid-secret-42" not in page and "задан" in page

    response = post(client, url, {"iemk.pix_endpoint": "ftp://bad"}, page=url)
    assert response.status_code == 422 and "http:// или https://" in response.get_data(as_text=True)
    assert get_setting("iemk.pix_endpoint", a.id) == "https://iemk.example.ru/pix"

    response = post(client, url, {"iemk.pix_endpoint": ""}, page=url)  # empty: the region's value again
    assert get_setting("iemk.pix_endpoint", a.id) == get_setting("iemk.pix_endpoint")

    login(client, region.a.users["mo_admin"])
    response = post(client, url, {"iemk.pix_endpoint": "https://evil.example/pix"}, page=url)
    assert response.status_code == 403
    assert get_setting("iemk.pix_endpoint", a.id) == get_setting("iemk.pix_endpoint")


def test_each_switch_is_a_real_form_with_confirmation_swapping_its_row(client, region):
    mo = region.a.mo
    login(client, region.central)
    page = client.get("/admin/mo").get_data(as_text=True)
    form = page[page.index(f'action="/admin/mo/{mo.id}/integrations/iemk"') - 40:]
    form = form[: form.index("</form>")]
    assert '<form method="post"' in form and f'hx-post="/admin/mo/{mo.id}/integrations/iemk"' in form
    assert f'hx-target="#mo-{mo.id}"' in form and 'hx-swap="outerHTML"' in form
    assert 'hx-confirm="Включить интеграцию «ИЭМК ЕГИСЗ»' in form and 'name="csrf_token"' in form


def test_vimis_off_without_reason_without_javascript(client, region):
    mo = region.a.mo
    set_integration(mo, "vimis", True)
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    response = post(client, f"/admin/mo/{mo.id}/integrations/vimis", {"enabled": "0"})
    assert response.status_code == 303
    page = client.get("/admin/mo").get_data(as_text=True)
    assert 'class="flash flash-error"' in page and "ВИМИС не выключен: укажите причину" in page
    assert is_enabled(mo.id, "vimis")
