"""In Chromium: «Отчёт запросов на сервер ФСС» — the granularity radio refreshes the table in place
(HTMX, filters in the URL); «Печать / PDF» shows the run's progress, which polls itself until the
job «Формирование отчётов» (run here by hand) has rendered the file, then offers «Открыть PDF»."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from playwright.sync_api import expect

from portal.clinical.models import Mo
from portal.ers.models import PROCESSED, ErsRequest
from portal.extensions import db
from portal.reports.background import run_queued
from tests.browser.conftest import log_in

pytestmark = pytest.mark.browser


def test_report_table_and_pdf_progress(live_server, page, screenshot):
    url, region, app = live_server.url, live_server.region, live_server.app
    with app.app_context():
        mo = db.session.scalars(db.select(Mo).where(Mo.short_name == region.mo_a)).one()
        for n in range(40):
            sent = datetime(2024, 3, 1) + timedelta(days=n * 2)
            db.session.add(
                ErsRequest(
                    mo_id=mo.id,
                    method=("createErs", "putVisit")[n % 2],
                    info="x",
                    status=PROCESSED,
                    sent_at=sent,
                    answered_at=sent,
                )
            )
        db.session.commit()
        db.session.remove()

    log_in(page, url, region.central, region.password)
    page.goto(f"{url}/ers/report")
    expect(page.get_by_role("heading", level=1)).to_have_text("Отчёт запросов на сервер ФСС")
    results = page.locator("#ers-report-results")
    expect(results.locator("tbody tr").first).to_contain_text("2024")
    expect(results.locator("tbody tr").first).to_contain_text("20")  # 20 ЭРС in 2024

    page.get_by_label("Месяцы").check()
    expect(results.locator("tbody tr").first).to_contain_text("2024-03")
    expect(page).to_have_url(re.compile(r"[?&]grain=month"))
    screenshot(page, "ers-report-months")

    page.get_by_role("button", name="Печать / PDF").click()
    run = page.locator("#ers-report-run")
    expect(run).to_contain_text("В очереди на формирование, строк: 3.")
    with app.app_context():
        assert run_queued() == "сформировано отчётов: 1, с ошибкой: 0"
        db.session.remove()
    expect(run.get_by_role("link", name="Открыть PDF")).to_be_visible(timeout=5000)  # the fragment polled
    screenshot(page, "ers-report-pdf-ready")
