"""«Планы диспансеризации и профилактических медицинских осмотров»: the list, people, МО scoping."""

from __future__ import annotations

import re

import pytest

from portal.extensions import db
from tests import factories
from tests.conftest import login
from tests.tfoms.plans_support import YEAR, exported, setup_plans, upload


@pytest.fixture
def data(region):
    return setup_plans(region)


def _text(response) -> str:
    return re.sub(r"\s+", " ", response.get_data(as_text=True))


def test_plans_of_own_mo_with_counts_by_status(client, region, data):
    login(client, region.a.users["statistician"])
    page = _text(client.get("/tfoms/plans"))
    assert "<h1>Планы диспансеризации и профилактических медицинских осмотров</h1>" in page
    row = re.search(rf'<tr id="plan-{data.plan.id}">(.*?)</tr>', page).group(1)
    assert "5. Проф. осмотры взр. населения" in row and f"II квартал {YEAR}" in row
    counts = re.findall(r'<td class="num[^"]*">(\d+)</td>', row)
    assert counts == ["5", "2", "2", "1", "0"]  # Людей, Новые, Отправлен в ТФОМС, Принята ТФОМС, Ошибка
    assert f'name="plan" value="{data.dvn.id}"' in page
    assert f'id="plan-{data.other_plan.id}"' not in page  # another МО's plan
    assert "Загрузить протокол ошибок" in page and 'name="file"' in page


def test_filters_by_year_and_kind_in_the_url(client, region, data):
    factories.make_plan(data.mo, kind="5", year=YEAR - 1, quarter=None)
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    page = _text(
        client.get(
            f"/tfoms/plans?year={YEAR}&kind=1", headers={"HX-Request": "true", "HX-Target": "plans-results"}
        )
    )
    assert page.lstrip().startswith('<form id="plans-form"') or 'id="plans-form"' in page
    assert f'id="plan-{data.dvn.id}"' in page and f'id="plan-{data.plan.id}"' not in page
    page = _text(client.get(f"/tfoms/plans?year={YEAR - 1}"))
    assert f"{YEAR - 1} год" in page and f'id="plan-{data.plan.id}"' not in page
    assert client.get("/tfoms/plans?year=abc").status_code == 400
    assert client.get("/tfoms/plans?kind=42").status_code == 400


def test_people_of_a_plan_with_status_filter(client, region, data):
    login(client, region.a.users["mo_admin"])
    hx = {"HX-Request": "true", "HX-Target": f"plan-{data.plan.id}"}
    page = _text(client.get(f"/tfoms/plans/{data.plan.id}/people", headers=hx))
    assert page.strip().startswith(f'<tr id="people-{data.plan.id}" class="people-row">')
    for header in ("ФИО", "Д.Р.", "ЕНП", "СМО", "Квартал", "Статус", "Ошибка"):
        assert f"<th>{header}</th>" in page
    assert "Иванова Мария Петровна" in page and "06.05.1994" in page and data.patients[0].enp in page
    assert "Все (5)" in page and "Новые (2)" in page
    sent = _text(client.get(f"/tfoms/plans/{data.plan.id}/people?status=sent", headers=hx))
    assert "Сидорова" in sent and "Кузнецова" in sent and "Иванова" not in sent
    # without htmx: a page of its own
    standalone = _text(client.get(f"/tfoms/plans/{data.plan.id}/people"))
    assert "<h1>5. Проф. осмотры взр. населения — II квартал" in standalone and "Смирнова Елена" in standalone
    assert client.get(f"/tfoms/plans/{data.plan.id}/people?status=lost").status_code == 400


def test_people_list_pages_with_show_more(client, region, data):
    for n in range(96):  # 101 people: one page of 100 and one more
        factories.make_plan_person(
            data.plan, factories.make_patient(data.mo, last_name=f"Фамилия{n:03d}"), quarter=4
        )
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    first = _text(
        client.get(f"/tfoms/plans/{data.plan.id}/people", headers={"HX-Request": "true", "HX-Target": "x"})
    )
    assert (
        "Иванова" in first and "Фамилия094" in first and "Фамилия095" not in first and "Показать ещё" in first
    )
    cursor = re.search(r"after=(\d+)", first).group(1)
    hx = {"HX-Request": "true", "HX-Target": f"people-more-{data.plan.id}"}
    more = _text(client.get(f"/tfoms/plans/{data.plan.id}/people?after={cursor}", headers=hx))
    assert "Фамилия095" in more and "Иванова" not in more and "Показать ещё" not in more


def test_other_mo_plan_and_export_are_not_found(client, region, data):
    export = exported(client, region.a.users["mo_admin"], [data.plan])
    login(client, region.b.users["mo_admin"])
    assert client.get(f"/tfoms/plans/{data.plan.id}/people").status_code == 404
    assert client.get(f"/tfoms/plans/exports/{export.id}/download").status_code == 404
    assert client.get(f"/tfoms/plans/export?plan={data.plan.id}").status_code == 404
    page = _text(client.get("/tfoms/plans"))
    assert export.file_name not in page and f'id="plan-{data.plan.id}"' not in page


def test_doctor_and_accountant_may_not_open_the_page(client, region, data):
    for role in ("doctor", "ers_accountant"):
        login(client, region.a.users[role])
        assert client.get("/tfoms/plans").status_code == 403
        assert client.get(f"/tfoms/plans/{data.plan.id}/people").status_code == 403
    assert upload(client, "ERR.xml", b"<x/>").status_code == 403


def test_central_admin_sees_every_mo_and_picks_one(client, region, data):
    login(client, region.central)
    page = _text(client.get("/tfoms/plans"))
    assert f'id="plan-{data.plan.id}"' in page and f'id="plan-{data.other_plan.id}"' in page
    assert "<th>МО</th>" in page and '<select name="mo">' in page
    page = _text(client.get(f"/tfoms/plans?mo={region.b.mo.id}"))
    assert f'id="plan-{data.plan.id}"' not in page and f'id="plan-{data.other_plan.id}"' in page
    # plans of two МО are not exported together
    text = _text(client.get(f"/tfoms/plans/export?plan={data.plan.id}&plan={data.other_plan.id}"))
    assert "Выбраны планы разных МО" in text


def test_exports_list_shows_files_and_answers(client, region, data):
    export = exported(client, region.a.users["mo_admin"], [data.plan], packet="7")
    page = _text(client.get("/tfoms/plans"))
    row = re.search(rf'<tr id="export-{export.id}">(.*?)</tr>', page).group(1)
    assert f"{export.file_name}.zip" in row and f"/tfoms/plans/exports/{export.id}/download" in row
    assert f"01.{YEAR}" in row and ">7<" in row and ">2<" in row and "ответа нет" in row


def test_close_empties_the_export_panel(client, region, data):
    login(client, region.a.users["mo_admin"])
    response = client.get("/tfoms/plans", headers={"HX-Request": "true", "HX-Target": "export-panel"})
    assert response.status_code == 200 and response.get_data(as_text=True) == ""
