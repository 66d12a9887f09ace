"""The «Пакетная идентификация ТФОМС» page (seed 4.3.2, T-1): period, packages and records,
search, «Показать», pagination, «Удалить», fragments, and МО scoping of every view."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from html import unescape

from sqlalchemy import insert

from portal.clinical.models import Patient
from portal.extensions import db
from portal.models_base import utcnow
from portal.tfoms import ident
from portal.tfoms.files import inbox_dir, tfoms_dir
from portal.tfoms.ident_views import shift_period
from portal.tfoms.models import IDENT_SELECTED, IdentPackage, IdentRecord
from tests import factories
from tests.conftest import csrf_token, login
from tests.tfoms.ident_support import HX, PAGE, answer_for, package_of, register_for


def _text(response) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))))


def _packages_shown(html: str) -> list[str]:
    return re.findall(r'data-package="([^"]+)"', html)


def test_page_shows_packages_of_the_period_and_records_of_the_chosen_one(app, client, region):
    a = region.a
    insurers_patients = a.patients
    factories.make_insurer("35001")
    ident.identify_patient(insurers_patients[0])
    old = ident.form_packages(a.mo.id, day=date.today() - timedelta(days=40)).packages[0]
    db.session.commit()
    fresh = package_of([insurers_patients[1]])
    answer = answer_for(fresh, register_for(insured=[(insurers_patients[1], {"rq": "35001", "ropdoc": 3})]))
    assert ident.process_answer(fresh.file_name, answer, check_mo=False).ok
    db.session.commit()
    login(client, a.users["mo_admin"])

    response = client.get(PAGE)
    assert response.status_code == 200 and "Vary" in response.headers
    html = response.get_data(as_text=True)
    assert _packages_shown(html) == [fresh.name]  # the current week; the first package is chosen
    text = _text(response)
    for heading in (
        "Наименование",
        "Дата формирования",
        "Ответ",
        "Ошибок",
        "Идентифицировано",
        "Пациент",
        "Период",
        "Случай лечения",
        "Статус",
        "Ошибки",
        "Результат запроса",
    ):
        assert heading in text
    assert f"Записи пакета {fresh.name}" in text and "Ответ загружен" in text
    assert insurers_patients[1].full_name in text and "Идентифицирован" in text and "Полис сохранён" in text
    for label in (
        "День",
        "Неделя",
        "Месяц",
        "Назад",
        "Вперёд",
        "Обновить",
        "Загрузить",
        "Удалить",
        "Сформировать пакет",
        "Стенд ТФОМС",
    ):
        assert label in text
    assert 'href="http://127.0.0.1:' in html and '/tfoms/"' in html  # the stand-in's page

    # typed dates (ДД.ММ.ГГГГ) and the month link
    day = old.formed_on
    typed = client.get(PAGE, query_string={"from": day.strftime("%d.%m.%Y"), "to": day.strftime("%d.%m.%Y")})
    html = typed.get_data(as_text=True)
    assert _packages_shown(html) == [old.name] and "Ответ не загружен" in html
    month = re.search(r'href="([^"]+)"[^>]*>Месяц</a>', html).group(1)
    first = date.today().replace(day=1)
    assert f"from={first.isoformat()}" in unescape(month)
    assert client.get(PAGE, query_string={"from": "31.02.2026"}).status_code == 400

    # «Показать»: С ответом / Без ответа / Все
    wide = {"from": (date.today() - timedelta(days=60)).isoformat(), "to": date.today().isoformat()}
    assert _packages_shown(
        client.get(PAGE, query_string={**wide, "show": "answered"}).get_data(as_text=True)
    ) == [fresh.name]
    assert _packages_shown(
        client.get(PAGE, query_string={**wide, "show": "waiting"}).get_data(as_text=True)
    ) == [old.name]
    assert _packages_shown(client.get(PAGE, query_string=wide).get_data(as_text=True)) == [
        fresh.name,
        old.name,
    ]


def test_period_navigation_moves_by_days_weeks_and_whole_months():
    assert shift_period(date(2026, 3, 2), date(2026, 3, 8), -1) == (date(2026, 2, 23), date(2026, 3, 1))
    assert shift_period(date(2026, 3, 5), date(2026, 3, 5), 1) == (date(2026, 3, 6), date(2026, 3, 6))
    assert shift_period(date(2026, 3, 1), date(2026, 3, 31), -1) == (date(2026, 2, 1), date(2026, 2, 28))
    assert shift_period(date(2026, 12, 1), date(2026, 12, 31), 1) == (date(2027, 1, 1), date(2027, 1, 31))


def test_fragments_search_and_pagination(app, client, region):
    mo = region.a.mo
    now = utcnow()
    db.session.execute(
        insert(Patient),
        [
            {
                "source_id": f"page-{i}",
                "mo_id": mo.id,
                "last_name": "Листова" if i != 7 else "Искомая",
                "first_name": "Анна",
                "sex": "F",
                "birth_date": date(1990, 1, 1),
                "snils": factories.valid_snils(i),
                "created_at": now,
                "updated_at": now,
            }
            for i in range(150)
        ],
    )
    ids = db.session.scalars(db.select(Patient.id).where(Patient.source_id.like("page-%"))).all()
    db.session.execute(
        insert(IdentRecord),
        [
            {
                "mo_id": mo.id,
                "patient_id": pid,
                "reason": "manual",
                "period_from": date.today(),
                "status": IDENT_SELECTED,
                "created_at": now,
            }
            for pid in ids
        ],
    )
    package = ident.form_packages(mo.id).packages[0]
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    url = f"{PAGE}?package={package.id}"

    records = client.get(url, headers={**HX, "HX-Target": "ident-records"}).get_data(as_text=True)
    assert records.lstrip().startswith("<") and "<form" not in records
    assert records.count("<tr data-status=") == 100 and "Показать ещё" in records
    cursor = re.search(r"after=(\d+)", records).group(1)
    more = client.get(f"{url}&after={cursor}", headers={**HX, "HX-Target": "more-records"}).get_data(
        as_text=True
    )
    assert more.count("<tr data-status=") == 50 and "Показать ещё" not in more

    found = client.get(f"{url}&qr=Иском", headers={**HX, "HX-Target": "ident-records"}).get_data(as_text=True)
    assert found.count("<tr data-status=") == 1 and "Искомая Анна" in found
    by_status = client.get(f"{url}&qr=ожидает", headers={**HX, "HX-Target": "ident-records"}).get_data(
        as_text=True
    )
    assert by_status.count("<tr data-status=") == 100
    nothing = client.get(f"{url}&qr=Нетакой", headers={**HX, "HX-Target": "ident-records"}).get_data(
        as_text=True
    )
    assert "Записи по запросу «Нетакой» не найдены." in nothing

    packages = client.get(f"{PAGE}?qp={package.name[-5:]}", headers={**HX, "HX-Target": "ident-packages"})
    assert _packages_shown(packages.get_data(as_text=True)) == [package.name]
    none = client.get(f"{PAGE}?qp=zzz", headers={**HX, "HX-Target": "ident-packages"}).get_data(as_text=True)
    assert "Пакеты по запросу «zzz» не найдены." in none

    body = client.get(url, headers={**HX, "HX-Target": "ident-body"}).get_data(as_text=True)
    assert 'id="ident-filters"' not in body and 'id="ident-packages"' in body
    whole = client.get(url, headers={**HX, "HX-Target": "ident-page"}).get_data(as_text=True)
    assert 'id="ident-filters"' in whole and "<html" not in whole


def test_delete_removes_the_package_its_records_and_files(app, client, region):
    a = region.a
    package = package_of(a.patients)
    answer = inbox_dir() / package.file_name
    answer.write_bytes(b"an answer waiting in the inbox")
    login(client, a.users["mo_admin"])
    page = client.get(f"{PAGE}?package={package.id}").get_data(as_text=True)
    assert f'hx-confirm="Удалить пакет {package.name} с записями (2) и файлами запроса и ответа?"' in page

    token = csrf_token(client, PAGE)
    response = client.post(f"{PAGE}/{package.id}/delete", data={"csrf_token": token}, headers=HX)
    assert f"Пакет {package.name} удалён вместе с записями и файлами." in response.get_data(as_text=True)
    assert response.headers["HX-Push-Url"].startswith(PAGE)
    assert db.session.get(IdentPackage, package.id) is None
    assert db.session.scalar(db.select(db.func.count()).select_from(IdentRecord)) == 0
    assert not (tfoms_dir("ident") / package.file_name).exists() and not answer.exists()
    assert "отобран" in ident.identify_patient(a.patients[0])  # may be selected again


def test_mo_scoping_of_every_view(app, client, region):
    a, b = region.a, region.b
    package_a = package_of([a.patients[0]])
    package_b = package_of([b.patients[0]])
    login(client, b.users["mo_admin"])

    page = client.get(PAGE).get_data(as_text=True)
    assert _packages_shown(page) == [package_b.name]
    assert client.get(PAGE, query_string={"mo": a.mo.id}).get_data(as_text=True).count(package_a.name) == 0
    assert client.get(f"{PAGE}?package={package_a.id}").status_code == 404
    assert (
        client.get(f"{PAGE}?package={package_a.id}", headers={**HX, "HX-Target": "ident-records"}).status_code
        == 404
    )
    assert client.get(f"{PAGE}/{package_a.id}/download").status_code == 404
    token = csrf_token(client, PAGE)
    assert client.post(f"{PAGE}/{package_a.id}/delete", data={"csrf_token": token}).status_code == 404
    assert db.session.get(IdentPackage, package_a.id) is not None
    assert (tfoms_dir("ident") / package_a.file_name).exists()
    # «Сформировать пакет» of an МО admin is for their own МО, whatever the form says
    ident.identify_patient(a.patients[1])
    db.session.commit()
    made = client.post(f"{PAGE}/form", data={"csrf_token": token, "mo": a.mo.id}, headers=HX).get_data(
        as_text=True
    )
    assert f"Для МО «{b.mo.short_name}» нет отобранных" in made
    assert db.session.scalar(db.select(db.func.count()).select_from(IdentPackage)) == 2

    login(client, region.central)
    everything = client.get(PAGE).get_data(as_text=True)
    assert set(_packages_shown(everything)) == {package_a.name, package_b.name}
    assert "<th>МО</th>" in everything and f'<option value="{a.mo.id}"' in everything
    only_a = client.get(PAGE, query_string={"mo": a.mo.id}).get_data(as_text=True)
    assert _packages_shown(only_a) == [package_a.name]

    for role in ("doctor", "statistician"):
        login(client, a.users[role])
        assert client.get(PAGE).status_code == 403
        assert client.get(f"{PAGE}/{package_a.id}/download").status_code == 403


def test_selected_people_are_counted_with_who_waits(app, client, region):
    a = region.a
    ident.identify_patient(a.patients[0])
    ident.identify_patient(region.b.patients[0])
    db.session.commit()
    login(client, a.users["mo_admin"])
    response = client.get(PAGE)
    text, html = _text(response), response.get_data(as_text=True)
    assert "Отобрано для идентификации: 1 — войдут в следующий пакет" in text
    assert (
        f"/clinical/patients/{a.patients[0].id}" in html
        and f"/clinical/patients/{region.b.patients[0].id}" not in html
    )
    assert a.patients[0].full_name in text
    assert "Кнопка «Идентифицировать»" in text and datetime.now().strftime("%d.%m.%Y") in text
