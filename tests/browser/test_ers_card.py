"""In Chromium: an ЭРС operator picks the МО's signature, opens a patient from the АИСТ ЭРС list,
presses «ЗАПРОС ЭРС», and watches the card wait for ФСС and then show the ЭРС number by itself."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

import pytest
import requests
from playwright.sync_api import expect

from portal.admin.services import add_certificate, ensure_demo_certificate, set_integration, set_setting
from portal.auth.models import User
from portal.clinical.models import Mo
from portal.ers.models import ErsContract
from portal.exchange.delivery import poll_due, send_due
from portal.extensions import db
from portal.models_base import utcnow
from simulators import start_simulators
from tests import factories
from tests.browser.conftest import log_in

pytestmark = pytest.mark.browser
NUMBER = re.compile(r"^9\d{9}$")  # the stand-in's ЭРС numbers: ten digits starting with 9


@pytest.fixture
def sims():
    server, base_url = start_simulators(0)
    requests.post(f"{base_url}/fss/_settings", json={"result_delay": 0}, timeout=5)
    yield base_url
    server.shutdown()
    server.server_close()


def _seed(app, sims: str) -> tuple[str, str]:
    """МО «a»: a contract ФСС knows, its signature, ФСС's certificate, the exchange on, and a
    woman 20 weeks pregnant with her primary exam. Returns (operator's login, her name)."""
    with app.app_context():
        mo = db.session.scalars(db.select(Mo).order_by(Mo.id)).first()
        signed, ends = date.today() - timedelta(days=30), date.today() + timedelta(days=300)
        db.session.add(ErsContract(mo_id=mo.id, number="14", signed_on=signed, ends_on=ends))
        requests.post(
            f"{sims}/fss/_contracts",
            json={"ogrn": mo.ogrn, "number": "14", "date": signed.isoformat(), "ends": ends.isoformat()},
            timeout=5,
        ).raise_for_status()
        ensure_demo_certificate("mo", "Родильный дом: подпись МО", mo.id)
        add_certificate("fss", None, None, requests.get(f"{sims}/fss/_certificate", timeout=5).text, None)
        set_integration(mo, "ers", True)
        set_setting("ers.endpoint", f"{sims}/fss/ers")
        set_setting("ers.timeout", "5")
        patient = factories.make_patient(mo, last_name="Аистова", first_name="Мария", middle_name="Ивановна")
        registered = date.today() - timedelta(days=12 * 7)
        pregnancy = factories.make_pregnancy(patient, registered_on=registered, weeks_at_registration=8)
        factories.make_event(
            patient, "exam_primary", pregnancy_id=pregnancy.id, at=datetime.combine(registered, time(10, 24)),
            data={"term": "8 недель", "diagnosis": "Z34.0", "complaints": "Жалоб нет"},
        )  # fmt: skip
        operator = db.session.scalars(
            db.select(User).where(User.role == "ers_operator", User.mo_id == mo.id)
        ).first()
        db.session.commit()
        login, name = operator.login, patient.full_name
        db.session.remove()
        return login, name


def _exchange(app) -> None:
    """What the scheduler's «Обмен с ФСС ЭРС» does: send, then (a moment later) ask for the result."""
    from portal.ers.channel import CHANNEL

    with app.app_context():
        send_due(CHANNEL)
        poll_due(CHANNEL, now=utcnow() + timedelta(seconds=CHANNEL.poll_seconds + 1))
        db.session.remove()


def test_request_ers_and_see_the_number(live_server, sims, page, screenshot):
    url, region, app = live_server.url, live_server.region, live_server.app
    operator, name = _seed(app, sims)
    log_in(page, url, operator, region.password)
    page.get_by_role("navigation", name="Главное меню").get_by_role("link", name="АИСТ ЭРС").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("АИСТ ЭРС")
    expect(page.locator(".ers-contract")).to_contain_text("Договор № 14")

    # nothing is sent unsigned: the refusal of an htmx request is shown at the top of the page
    page.get_by_role("button", name="Обновить данные ЭРС").click()
    expect(page.locator("#htmx-errors")).to_contain_text("Не выбрана подпись МО")

    # ЭЦП МО chosen at the top of the page (kept in the session)
    page.locator("select[name=sign_mo]").select_option(
        label=page.locator("select[name=sign_mo] option").nth(1).inner_text()
    )
    expect(page.locator(".ers-chosen")).to_contain_text("Подписи выбраны.")

    row = page.locator("table.ers-patients tbody tr", has_text=name)
    expect(row.locator("td").nth(5)).to_have_text("Нет")
    row.get_by_role("link", name="Подробнее").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    expect(page.locator("#ers-number")).to_have_text("Нет")

    page.get_by_role("button", name="ЗАПРОС ЭРС").click()
    expect(page.locator(".flash-success")).to_contain_text("поставлен в очередь на отправку в ФСС")
    state = page.locator("#ers-state")
    expect(state).to_contain_text("Ожидает отправки в ФСС")

    _exchange(app)  # signed, encrypted, sent; ФСС processes it and gives the number
    expect(page.locator("#ers-number")).to_have_text(NUMBER, timeout=12_000)
    expect(state).to_contain_text("обработан ФСС")
    expect(page.locator("#ers-primary tbody tr td").nth(1)).to_contain_text("Запрос ЭРС: да")
    screenshot(page, "ers-card-number")
    number = page.locator("#ers-number").inner_text()
    assert NUMBER.match(number)

    # the registry of the card shows the exchange; the list shows the number
    expect(page.locator("#ers-registry")).to_contain_text("createErs")
    page.get_by_role("link", name="АИСТ ЭРС").first.click()
    expect(page.locator("table.ers-patients tbody tr", has_text=name).locator("td").nth(5)).to_have_text(
        number
    )
    screenshot(page, "ers-patients")
