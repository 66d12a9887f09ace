"""In Chromium: «Реестр СЭМД ВИМИС АКИНЕО» — filter, «+»/«−», pencil with Да/Нет, mass send."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from portal.clinical.models import Department, Mo, Patient, Pregnancy, Staff
from portal.exchange import delivery
from portal.extensions import db
from portal.vimis import models as m
from portal.vimis.channel import CHANNEL
from portal.vimis.services import current_version
from tests.browser.conftest import log_in
from tests.vimis.test_registry import _item, finish, trigger

pytestmark = pytest.mark.browser


def _seed(app) -> dict:
    """SEMDs of МО «a» made the portal's way (intake → trigger): three waiting, one with an error."""
    with app.app_context():
        mo = db.session.scalars(db.select(Mo).order_by(Mo.id)).first()
        patients = list(
            db.session.scalars(db.select(Patient).where(Patient.mo_id == mo.id).order_by(Patient.id))
        )
        side = SimpleNamespace(
            mo=mo,
            patients=patients,
            department=db.session.scalars(db.select(Department).where(Department.mo_id == mo.id)).first(),
            doctor=db.session.scalars(db.select(Staff).where(Staff.mo_id == mo.id)).first(),
            pregnancy=db.session.scalars(
                db.select(Pregnancy).where(Pregnancy.patient_id == patients[0].id)
            ).first(),
        )
        waiting = trigger(side, count=2) + trigger(side, kind="ultrasound_1", patient=patients[1])
        failed = finish(trigger(side, kind="lab_blood")[0], m.ERROR)
        ids = {"waiting": [s.id for s in waiting], "failed": failed.id}
        db.session.remove()
        return ids


def test_registry_filter_journal_pencil_and_mass_send(live_server, page, screenshot):
    url, region, app = live_server.url, live_server.region, live_server.app
    ids = _seed(app)
    log_in(page, url, region.doctor, region.password)
    page.get_by_role("navigation", name="Главное меню").get_by_role(
        "link", name="Реестр СЭМД ВИМИС АКИНЕО"
    ).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Реестр СЭМД ВИМИС АКИНЕО")
    results = page.locator("#results")
    expect(results.locator("tr.semd-row")).to_have_count(4)
    expect(page.locator("#legend [data-status=queued] .count")).to_have_text("3")

    # Статус «Ошибка»: the table follows in place and the filter goes into the URL
    page.locator("#filters select[name=status]").select_option("error")
    expect(page).to_have_url(re.compile(r"[?&]status=error"))
    failed_row = page.locator(f"#semd-{ids['failed']}")
    expect(results.locator("tr.semd-row")).to_have_count(1)
    expect(failed_row.locator("td.ball .status")).to_have_class(re.compile("red"))
    page.get_by_role("link", name="Обновить").click()  # re-reads the list under the same filters
    expect(page).to_have_url(re.compile(r"[?&]status=error"))
    expect(results.locator("tr.semd-row")).to_have_count(1)

    # «+» opens the journal under the row and becomes «−»; «−» closes it
    toggle = failed_row.locator("a.toggle")
    toggle.click()
    journal = page.locator(f"#journal-{ids['failed']}")
    expect(journal).to_contain_text("не прошла ФЛК: Нет адреса регистрации пациента")
    expect(journal.get_by_role("link", name="XML версии 1")).to_be_visible()
    expect(toggle).to_have_text("−")
    journal.get_by_text("Ответ ВИМИС").click()
    expect(journal.locator("details.answer pre").last).to_contain_text("sendResult")
    screenshot(page, "vimis-registry-journal")
    toggle.click()
    expect(journal).to_have_count(0)
    expect(toggle).to_have_text("+")

    # the pencil asks «Да» / «Нет»; «Нет» changes nothing, «Да» turns the row yellow (version 2)
    failed_row.get_by_role("button", name=re.compile("Отправить СЭМД 3 в ВИМИС")).click()
    dialog = page.locator("dialog.confirm-dialog")
    expect(dialog).to_contain_text("Отправить СЭМД 3")
    dialog.get_by_role("button", name="Нет").click()
    expect(dialog).to_be_hidden()
    expect(failed_row.locator("td.ball .status")).to_have_class(re.compile("red"))
    failed_row.get_by_role("button", name=re.compile("Отправить СЭМД 3 в ВИМИС")).click()
    dialog.get_by_role("button", name="Да").click()
    expect(failed_row.locator("td.ball .status")).to_have_class(re.compile("yellow"))
    expect(failed_row.locator("td").nth(4)).to_have_text("2")
    expect(failed_row.locator("td.status-line")).to_contain_text("версия 2 СЭМД3 поставлена в очередь")

    # the yellow row polls its Статус cell: ВИМИС's answer turns the ball green without a reload
    with app.app_context():
        semd = db.session.get(m.Semd, ids["failed"])
        delivery.apply_outcome(
            CHANNEL,
            _item(current_version(semd)),
            delivery.Outcome.done("Версия 2 СЭМД3 прошла ФЛК"),
            operation="Результат ФЛК",
        )
        db.session.commit()
        db.session.remove()
    expect(failed_row.locator("td.ball .status")).to_have_class(re.compile("green"), timeout=12_000)
    expect(failed_row.locator("td.status-line")).to_contain_text("Версия 2 СЭМД3 прошла ФЛК")

    # Массовые операции: checkboxes replace the pencils; tick all, send, confirm with OK, summary
    page.locator("#filters select[name=status]").select_option("")
    page.get_by_label("Массовые операции").check()
    expect(page).to_have_url(re.compile(r"[?&]mass=1"))
    expect(results.locator("button.pencil")).to_have_count(0)
    expect(results.locator("tbody input[name=ids]")).to_have_count(4)
    page.get_by_label("Выделить все СЭМД").check()
    expect(results.locator("tbody input[name=ids]:checked")).to_have_count(4)
    questions = []
    page.once("dialog", lambda d: (questions.append(d.message), d.accept()))
    page.get_by_role("button", name="Отправить выделенные в ВИМИС").click()
    expect(results.locator(".flash")).to_contain_text(
        "Поставлено в очередь на отправку в ВИМИС: 1; не выполнено: 3"
    )
    assert questions == ["Отправить выделенные СЭМД в ВИМИС: 4?"]
    expect(page.locator(f"#semd-{ids['failed']} td.ball .status")).to_have_class(re.compile("yellow"))
    expect(page.locator("#legend [data-status=queued] .count")).to_have_text("4")
    path = screenshot(page, "vimis-registry")
    assert path.exists()

    # the SEMD's own page (the «+» without JavaScript) prints without the menu and the buttons
    page.goto(f"{url}/vimis/semd/{ids['failed']}")
    expect(page.get_by_role("heading", level=1)).to_have_text("СЭМД 3 — Протокол лабораторного исследования")
    expect(page.locator(".semd-journal")).to_contain_text("Версия 2 СЭМД3 прошла ФЛК")
    page.emulate_media(media="print")
    expect(page.get_by_role("navigation", name="Главное меню")).to_be_hidden()
    expect(page.get_by_role("button", name="Печать")).to_be_hidden()
    screenshot(page, "vimis-semd-print")
