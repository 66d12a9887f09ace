"""In Chromium: «Документы ИЭМК» — sign a document, transfer it, and watch its status cell follow
the upload job and ИЭМК's answer by itself; «+» shows the journal and the registration number."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from playwright.sync_api import expect

from portal.admin.services import ensure_demo_certificate, set_setting
from portal.clinical.models import Department, Mo, Patient, Staff
from portal.exchange import delivery
from portal.extensions import db
from portal.iemk import documents
from portal.iemk import models as m
from portal.iemk.channel import CHANNEL
from portal.models_base import utcnow
from simulators import start_simulators
from tests import factories
from tests.browser.conftest import log_in

pytestmark = pytest.mark.browser


@pytest.fixture
def sims():
    """The ИЭМК stand-in; its answer is asked for by the portal (no callback), so each step shows."""
    server, base_url = start_simulators(0, config={"IEMK_RESULT_DELAY": 0, "IEMK_CALLBACKS": False})
    yield base_url
    server.shutdown()
    server.server_close()


def _seed(app, sims: str, portal_url: str) -> int:
    """A laboratory protocol of МО «a», made from its event as intake makes it; ИЭМК is the stand-in."""
    with app.app_context():
        mo = db.session.scalars(db.select(Mo).order_by(Mo.id)).first()
        patient = db.session.scalars(
            db.select(Patient).where(Patient.mo_id == mo.id).order_by(Patient.id)
        ).first()
        department = db.session.scalars(db.select(Department).where(Department.mo_id == mo.id)).first()
        doctor = db.session.scalars(db.select(Staff).where(Staff.mo_id == mo.id)).first()
        event = factories.make_event(
            patient,
            "lab_blood",
            department_id=department.id,
            doctor_id=doctor.id,
            at=datetime.now().replace(microsecond=0) - timedelta(hours=3),
            data={"hemoglobin_g_l": 118, "esr_mm_h": 18, "diagnosis": "Z34.0"},
        )
        documents.ensure_documents([event.id])
        ensure_demo_certificate("iemk", "Тест: подпись документов ИЭМК")
        for key, value in (
            ("iemk.pix_endpoint", f"{sims}/iemk/pix"),
            ("iemk.emk_endpoint", f"{sims}/iemk/emk"),
            ("iemk.registry_endpoint", f"{sims}/iemk/registry"),
            ("iemk.callback_url", f"{portal_url}/iemk/callback"),  # the stand-in is told not to call
            ("iemk.timeout", "5"),
        ):
            set_setting(key, value)
        set_setting("iemk.guid", "0b7d4c1e-5a3e-4a5b-9d0e-1c2f3a4b5c6d", mo.id)
        db.session.commit()
        doc_id = db.session.scalars(
            db.select(m.IemkDocument.id).where(m.IemkDocument.event_id == event.id)
        ).one()
        db.session.remove()
        return doc_id


def _upload(app) -> None:
    """What the scheduler does: the upload job (ИЭМК takes the document and answers later)."""
    from portal.iemk.jobs import upload

    with app.app_context():
        upload()
        db.session.commit()
        db.session.remove()


def _ask_for_answers(app) -> None:
    """The same job a minute later: ИЭМК's answer asked for (getDocumentResult)."""
    with app.app_context():
        delivery.poll_due(CHANNEL, now=utcnow() + timedelta(seconds=CHANNEL.poll_seconds + 1))
        db.session.commit()
        db.session.remove()


def test_sign_transfer_and_watch_the_status_follow(live_server, sims, page, screenshot):
    url, region, app = live_server.url, live_server.region, live_server.app
    doc_id = _seed(app, sims, url)
    log_in(page, url, region.doctor, region.password)
    page.get_by_role("navigation", name="Главное меню").get_by_role("link", name="ИЭМК", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Документы ИЭМК")
    row = page.locator(f"#iemk-doc-{doc_id}")
    status = page.locator(f"#iemk-status-{doc_id}")
    expect(status).to_contain_text("Не подписан")
    expect(page.locator("#iemk-counts [data-status=unsigned] .count")).to_have_text("1")

    # a count filters by its status and the URL says so
    page.locator("#iemk-counts [data-status=unsigned]").click()
    expect(page).to_have_url(re.compile(r"[?&]status=unsigned"))
    expect(page.locator("#iemk-status-filter")).to_have_value("unsigned")
    page.locator("#iemk-counts [data-status='']").click()
    expect(page).not_to_have_url(re.compile(r"status=unsigned"))

    # «Получить и подписать документы» for the ticked row, confirmed with OK
    row.get_by_label(f"Выбрать документ № {doc_id}").check()
    questions: list[str] = []
    page.once("dialog", lambda d: (questions.append(d.message), d.accept()))
    page.get_by_role("button", name="Получить и подписать документы").click()
    expect(page.locator("#iemk-results .flash")).to_have_text("Подписано документов: 1.")
    assert questions == ["Получить и подписать выбранные документы: 1?"]
    expect(status).to_have_text("Подписан")
    expect(row.locator("td.signature")).to_contain_text(region.doctor_name)

    # «Передать в ИЭМК» on the row: queued, and the cell starts asking for itself
    row.get_by_role("button", name=f"Передать в ИЭМК документ № {doc_id}").click()
    expect(page.locator("#iemk-results .flash")).to_have_text("Поставлено в очередь на передачу в ИЭМК: 1.")
    expect(status).to_contain_text("в очереди на передачу в ИЭМК")

    # the job uploads it, then ИЭМК's answer comes; the page follows each step without a reload
    _upload(app)
    expect(status).to_have_text("Передан в ИЭМК ожидается ответ ИЭМК", timeout=12_000)
    expect(status.locator(".status")).to_have_class(re.compile("blue"))
    _ask_for_answers(app)
    expect(status).to_have_text("Сохранен в ИЭМК", timeout=12_000)
    expect(status.locator(".status")).to_have_class(re.compile("green"))
    expect(page.locator("#iemk-counts [data-status=saved] .count")).to_have_text("1")  # came with the cell
    expect(page.locator("#iemk-counts [data-status=signed] .count")).to_have_text("0")

    # «+»: the journal, newest first, and ИЭМК's registration number
    toggle = row.locator("a.toggle")
    toggle.click()
    detail = page.locator(f"#iemk-detail-{doc_id}")
    expect(detail).to_contain_text("Регистрационный номер в ИЭМК")
    expect(detail.locator("table.iemk-journal tbody tr").first).to_contain_text("сохранен в ИЭМК")
    expect(detail.locator("table.iemk-journal")).to_contain_text("Подписание")
    expect(toggle).to_have_text("−")
    path = screenshot(page, "iemk-documents")
    assert path.exists()

    # the printed list: no menu, no buttons
    with page.context.expect_page() as opening:
        page.get_by_role("link", name="Печать").click()
    printed = opening.value
    printed.wait_for_load_state()
    expect(printed.get_by_role("heading", level=1)).to_have_text("Документы ИЭМК")
    printed.emulate_media(media="print")
    expect(printed.get_by_role("navigation", name="Главное меню")).to_be_hidden()
    expect(printed.locator(f"#iemk-doc-{doc_id}")).to_contain_text("Сохранен в ИЭМК")
    screenshot(printed, "iemk-documents-print")
    printed.close()

    # the patient card: the same row, and «Получить все СЭМД пациента» asks ИЭМК and opens the CDA
    row.locator("td.person a").click()
    block = page.locator("#iemk-patient")
    expect(block.get_by_role("heading", name="Документы ИЭМК")).to_be_visible()
    expect(block.locator(f"#iemk-status-{doc_id}")).to_have_text("Сохранен в ИЭМК")
    block.get_by_role("link", name="Получить все СЭМД пациента").click()
    remote = block.locator("#iemk-remote")
    expect(remote.locator("tbody tr")).to_have_count(1)
    expect(remote.locator("tbody tr")).to_contain_text("Протокол лабораторного исследования")
    expect(remote.locator("tbody tr")).to_contain_text(region.mo_a)
    remote.get_by_role("link", name="Открыть").click()
    opened = remote.locator("#iemk-remote-view")
    expect(opened.locator(".cda-section h4").first).to_be_visible()
    expect(opened).to_contain_text("РЕЗУЛЬТАТЫ ЛАБОРАТОРНЫХ ИССЛЕДОВАНИЙ")
    expect(opened.get_by_role("link", name="Скачать XML документа")).to_be_visible()
    screenshot(page, "iemk-patient-remote")
