"""In Chromium: «Пакетная идентификация ТФОМС» as a demo user goes through it — «Идентифицировать»
on the patient card, «Сформировать пакет», «Скачать», the ТФОМС stand-in's page for the answer,
«Загрузить», and the records turn «Идентифицирован»."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import expect

from portal.auth.models import User
from portal.clinical.models import Mo, Patient
from portal.extensions import db
from simulators import start_simulators
from tests import factories
from tests.browser.conftest import log_in

pytestmark = pytest.mark.browser


def _seed(app) -> dict:
    with app.app_context():
        mo = db.session.scalars(db.select(Mo).order_by(Mo.id)).first()
        for code, ogrn in factories.INSURERS:
            factories.make_insurer(code, ogrn)
        patients = list(
            db.session.scalars(db.select(Patient).where(Patient.mo_id == mo.id).order_by(Patient.id))
        )
        admin = db.session.scalars(
            db.select(User).where(User.mo_id == mo.id, User.role == "mo_admin")
        ).first()
        data = {
            "admin": admin.login,
            "patients": [
                {
                    "id": p.id,
                    "name": p.full_name,
                    "fam": p.last_name,
                    "im": p.first_name,
                    "ot": p.middle_name or "",
                    "dr": p.birth_date.isoformat(),
                }
                for p in patients
            ],
        }
        db.session.commit()
        db.session.remove()
        return data


def test_package_answer_from_the_stand_in_and_identified_records(live_server, page, screenshot, tmp_path):
    url, app = live_server.url, live_server.app
    seed = _seed(app)
    server, simulators_url = start_simulators(port=0)
    try:
        app.config["SIMULATORS_PORT"] = server.server_port  # the page's link «Стенд ТФОМС» points here
        people = [
            {**{k: p[k] for k in ("fam", "im", "ot", "dr")}, "outcome": "insured", "rq": "35001", "ropdoc": 3}
            for p in seed["patients"]
        ]
        assert requests.post(f"{simulators_url}/tfoms/_register", json=people, timeout=10).status_code == 200

        log_in(page, url, seed["admin"], live_server.region.password)
        # «Идентифицировать» on the cards of both patients of the МО
        for patient in seed["patients"]:
            page.goto(f"{url}/clinical/patients/{patient['id']}")
            page.get_by_role("button", name="Идентифицировать").click()
            expect(page.locator("#tfoms-ident .flash")).to_contain_text(
                "отобран(а) для идентификации в ТФОМС"
            )

        page.get_by_role("navigation", name="Главное меню").get_by_role(
            "link", name="Пакетная идентификация ТФОМС"
        ).click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Пакетная идентификация ТФОМС")
        expect(page.locator(".ident-selected summary")).to_contain_text("Отобрано для идентификации: 2")
        page.get_by_role("button", name="Сформировать пакет").click()
        flash = page.locator("#ident-body .flash")
        expect(flash).to_contain_text("Сформирован пакет")
        name = re.search(r"пакет (\S+):", flash.inner_text()).group(1)
        expect(page).to_have_url(re.compile(r"[?&]package=\d+"))
        records = page.locator("#ident-records")
        expect(records.locator("tbody tr[data-status]")).to_have_count(2)
        expect(records).to_contain_text("Ожидает ответа ТФОМС")

        # «Скачать» the request, get the answer on the stand-in's page
        with page.expect_download() as request_download:
            page.get_by_role("link", name="Скачать").click()
        assert request_download.value.suggested_filename == f"{name}.DBF"
        request_path = tmp_path / f"{name}.DBF"
        request_download.value.save_as(request_path)

        with page.context.expect_page() as stand_in_page:
            page.get_by_role("link", name="Стенд ТФОМС (получить ответ)").click()
        stand_in = stand_in_page.value
        expect(stand_in.get_by_role("heading", level=1)).to_contain_text("ТФОМС")
        stand_in.locator("input[type=file]").set_input_files(str(request_path))
        with stand_in.expect_download() as answer_download:
            stand_in.get_by_role("button", name="Получить ответ").click()
        answer_path = tmp_path / "answer" / answer_download.value.suggested_filename
        answer_path.parent.mkdir()
        answer_download.value.save_as(answer_path)
        assert answer_path.name == f"{name}.DBF"
        stand_in.close()

        # «Загрузить» the answer
        page.locator("input[name=file]").set_input_files(str(answer_path))
        page.get_by_role("button", name="Загрузить").click()
        expect(flash).to_contain_text(f"Ответ {name}.DBF загружен: идентифицировано 2")
        expect(records.locator("tbody tr[data-status=identified]")).to_have_count(2)
        expect(records).to_contain_text("Полис сохранён")
        selected_row = page.locator(f"tr[data-package='{name}']")
        expect(selected_row).to_contain_text("Ответ загружен")
        expect(page.locator(".ident-actions")).to_be_visible()
        expect(page.get_by_role("link", name="Скачать")).to_have_count(0)  # the request file is gone
        path = screenshot(page, "tfoms-ident")
        assert path.exists()

        # the same answer again: a clear refusal, nothing changes
        page.locator("input[name=file]").set_input_files(str(answer_path))
        page.get_by_role("button", name="Загрузить").click()
        expect(flash).to_contain_text(f"Ответ на пакет {name} уже загружен")
        expect(records.locator("tbody tr[data-status=identified]")).to_have_count(2)
    finally:
        server.shutdown()
        server.server_close()
