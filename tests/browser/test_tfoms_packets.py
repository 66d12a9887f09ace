"""In Chromium: «Пакеты обмена с ТФОМС» — the list, «+» opens «Тег: Данные», «Не отправлять
повторно» with its confirmation, the status filter in the URL."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from portal.auth.models import User
from portal.clinical.models import Mo
from portal.extensions import db
from portal.models_base import utcnow
from portal.tfoms.models import TfomsPacket
from tests.browser.conftest import log_in

pytestmark = pytest.mark.browser


def _seed(app) -> dict:
    with app.app_context():
        mo = db.session.scalars(db.select(Mo).order_by(Mo.id)).first()
        admin = db.session.scalars(
            db.select(User).where(User.mo_id == mo.id, User.role == "mo_admin")
        ).first()
        now = utcnow()
        rejected = TfomsPacket(
            channel="tfoms_auto",
            mo_id=mo.id,
            packet_type="HOSPITALISATION",
            operation="Insert",
            message_id=str(uuid.uuid4()),
            status="rejected",
            status_text="Получен ответ с ошибкой: неизвестное отделение",
            created_at=now - timedelta(minutes=30),
            data={
                "answer": False,
                "packet": {"MED_CARD_NUMBER": "К-17", "HOSPITALISATION_DATE": "2026-05-04"},
            },
            answer={"answer": True, "packet": {"RESULT": "ERROR", "RESULT_NAME": "Неизвестное отделение"}},
            xml="<HOSPITALISATION><BODY><MED_CARD_NUMBER>К-17</MED_CARD_NUMBER></BODY></HOSPITALISATION>",
        )
        accepted = TfomsPacket(
            channel="tfoms_auto",
            mo_id=mo.id,
            packet_type="BRANCH",
            operation="Insert",
            message_id=str(uuid.uuid4()),
            status="accepted",
            created_at=now - timedelta(hours=1),
        )
        db.session.add_all([rejected, accepted])
        db.session.commit()
        data = {"admin": admin.login, "rejected": rejected.id, "accepted": accepted.id}
        db.session.remove()
        return data


def test_packets_expand_forbid_and_filter(live_server, page, screenshot):
    url, app = live_server.url, live_server.app
    seed = _seed(app)
    log_in(page, url, seed["admin"], live_server.region.password)
    page.get_by_role("navigation", name="Главное меню").get_by_role(
        "link", name="Пакеты обмена с ТФОМС"
    ).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Пакеты обмена с ТФОМС")
    expect(page.locator("tr.packet-row")).to_have_count(2)
    expect(page.locator("#packets-counts [data-status=rejected] .count")).to_have_text("1")

    # «+» opens the packet's data and the answer as «Тег: Данные»
    row = page.locator(f"#packet-{seed['rejected']}")
    row.locator("a.toggle").click()
    detail = page.locator(f"#packet-detail-{seed['rejected']}")
    expect(detail).to_be_visible()
    expect(detail.get_by_label("Данные пакета")).to_contain_text("MED_CARD_NUMBER: К-17")
    expect(detail.get_by_label("Ответ")).to_contain_text("RESULT_NAME: Неизвестное отделение")
    expect(row.locator("a.toggle")).to_have_text("−")
    screenshot(page, "tfoms_packets")

    # «Не отправлять повторно» asks first, then the row shows the flag
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Не отправлять повторно").click()
    expect(row.locator(".packet-no-resend")).to_have_text("Запрет повторной отправки")
    expect(row.get_by_role("button", name="Снять запрет отправки")).to_be_visible()
    expect(page.locator("#packets-message")).to_contain_text("повторная отправка запрещена")
    expect(page.locator(f"#packet-{seed['accepted']}").get_by_role("button")).to_have_count(0)

    # Статус «Принят ТФОМС»: the table follows in place and the filter goes into the URL
    page.locator("#packet-filters select[name=status]").select_option("accepted")
    expect(page).to_have_url(re.compile(r"[?&]status=accepted"))
    expect(page.locator("tr.packet-row")).to_have_count(1)
    expect(page.locator(f"#packet-{seed['accepted']}")).to_be_visible()
