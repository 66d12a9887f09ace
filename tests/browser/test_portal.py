"""In Chromium: log in through the form, use the left menu, filter patients live (HTMX)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in

pytestmark = pytest.mark.browser


def test_doctor_uses_menu_and_patients_page_then_central_admin_sees_administration(
    live_server, page, screenshot
):
    url, region = live_server.url, live_server.region
    menu = page.get_by_role("navigation", name="Главное меню")

    log_in(page, url, region.doctor, region.password)
    expect(page.locator(".topbar .user")).to_have_text(region.doctor_name)
    expect(menu).to_contain_text("Интеграционные сервисы")
    expect(menu).to_contain_text("Исходные данные")
    expect(menu).not_to_contain_text("Администрирование")
    screenshot(page, "01-doctor-home")

    menu.get_by_role("link", name="Пациенты").click()
    expect(page).to_have_url(re.compile(r"/clinical/patients"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Пациенты")
    expect(menu.get_by_role("link", name="Пациенты")).to_have_attribute("aria-current", "page")
    results = page.locator("#results")
    for name in region.patients_a:
        expect(results).to_contain_text(name)
    expect(results).to_contain_text(region.mo_a)
    expect(results).not_to_contain_text(region.mo_b)  # another МО's patients never reach a doctor

    # Typing in the search box refreshes the table in place (HTMX) and keeps the filter in the URL.
    wanted, other = region.patients_a[1], region.patients_a[0]
    page.get_by_label("ФИО, СНИЛС или ЕНП").fill(wanted.split()[0])
    expect(results).not_to_contain_text(other)
    expect(results).to_contain_text(wanted)
    expect(page).to_have_url(re.compile(r"[?&]q="))
    screenshot(page, "02-doctor-patients-search")

    page.get_by_role("button", name="Выйти").click()
    expect(page.get_by_role("button", name="Войти")).to_be_visible()

    log_in(page, url, region.central, region.password)
    expect(menu).to_contain_text("Администрирование")
    expect(menu.get_by_role("link", name="Медицинские организации")).to_be_visible()
    screenshot(page, "03-central-admin-menu")


def test_wrong_password_shows_russian_error_and_stays_on_login(live_server, page, screenshot):
    page.goto(f"{live_server.url}/login")
    page.get_by_label("Логин").fill(live_server.region.doctor)
    page.get_by_label("Пароль").fill("не-тот-пароль")
    page.get_by_role("button", name="Войти").click()
    expect(page.get_by_role("alert")).to_have_text("Неверный логин или пароль.")
    expect(page.get_by_role("navigation", name="Главное меню")).to_have_count(0)
    screenshot(page, "04-login-error")
