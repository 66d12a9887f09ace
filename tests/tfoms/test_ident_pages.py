"""The «Пакетная идентификация ТФОМС» page (seed 4.3.2, T-1): period, packages and records,
package search, context search over each column of the records, «Показать», pagination, «Удалить»,
fragments, and МО scoping of every view."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import insert

from portal.clinical.models import Patient
from portal.extensions import db
from portal.models_base import utcnow
from portal.tfoms import ident
from portal.tfoms.files import inbox_dir, tfoms_dir
from portal.tfoms.ident_views import shift_period
from portal.tfoms.models import IDENT_SELECTED, IDENT_STATUSES, IdentPackage, IdentRecord
from tests import factories
from tests.conftest import csrf_token, login
from tests.tfoms.ident_support import HX, PAGE, answer_for, package_of, register_for


def _text_of(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def _text(response) -> str:
    return _text_of(response.get_data(as_text=True))


def _packages_shown(html: str) -> list[str]:
    return re.findall(r'data-package="([^"]+)"', html)


def _rows(html: str) -> int:
    return html.count("<tr data-status=")


ROWS = {**HX, "HX-Target": "ident-record-rows"}


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
    assert records.lstrip().startswith("<") and 'id="ident-filters"' not in records
    assert 'id="ident-record-search"' in records and 'id="ident-record-rows"' in records
    assert _rows(records) == 100 and "Показать ещё" in records
    cursor = re.search(r"after=(\d+)", records).group(1)
    more = client.get(f"{url}&after={cursor}", headers={**HX, "HX-Target": "more-records"}).get_data(
        as_text=True
    )
    assert _rows(more) == 50 and "Показать ещё" not in more

    # keyset paging with a column search: the cursor link keeps the search
    sent = "Ожидает ответа ТФОМС"
    assert IDENT_STATUSES["sent"] == sent
    first = client.get(f"{url}&status=sent&patient=анна", headers=ROWS).get_data(as_text=True)
    assert "<form" not in first and "<thead" not in first and _rows(first) == 100
    next_url = unescape(re.search(r'href="([^"]+after=\d+[^"]*)"', first).group(1))
    assert parse_qs(urlsplit(next_url).query)["patient"] == ["анна"]
    assert parse_qs(urlsplit(next_url).query)["status"] == ["sent"]
    rest = client.get(next_url, headers={**HX, "HX-Target": "more-records"}).get_data(as_text=True)
    assert _rows(rest) == 50 and "Показать ещё" not in rest
    narrowed = client.get(f"{url}&patient=лист&after={cursor}", headers={**HX, "HX-Target": "more-records"})
    after_cursor = db.session.scalar(
        db.select(db.func.count())
        .select_from(IdentRecord)
        .join(Patient, Patient.id == IdentRecord.patient_id)
        .where(IdentRecord.id > int(cursor), Patient.last_name == "Листова")
    )
    assert after_cursor >= 49 and _rows(narrowed.get_data(as_text=True)) == after_cursor

    found = client.get(f"{url}&patient=Иском", headers=ROWS).get_data(as_text=True)
    assert _rows(found) == 1 and "Искомая Анна" in found
    nothing = client.get(f"{url}&patient=Нетакой", headers=ROWS).get_data(as_text=True)
    assert "Записи по условиям поиска (Пациент: «Нетакой») не найдены." in _text_of(nothing)

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


def _column_package(region):
    """Four people of one package, each different in every column, answered by the ТФОМС stand-in."""
    mo = region.a.mo
    factories.make_insurer("35001")
    people = {
        "Соколова": factories.make_patient(
            mo, last_name="Соколова", first_name="Анна", middle_name="Игоревна", birth_date=date(1990, 3, 12)
        ),
        "Орлова": factories.make_patient(
            mo, last_name="Орлова", first_name="Вера", middle_name="Павловна", birth_date=date(1988, 7, 1)
        ),
        "Волкова": factories.make_patient(
            mo, last_name="Волкова", first_name="Ольга", middle_name=None, birth_date=date(1990, 3, 12)
        ),
        "Соколовская": factories.make_patient(
            mo,
            last_name="Соколовская",
            first_name="Ирина",
            middle_name="Олеговна",
            birth_date=date(1995, 1, 30),
        ),
    }
    cases = {
        "Соколова": ("hospitalisation", "КВС-17", date(2026, 3, 1), date(2026, 3, 10)),
        "Орлова": ("visit", "ТАП-2201", date(2026, 3, 5), None),
        "Волкова": (None, None, date(2026, 2, 1), date(2026, 2, 20)),
        "Соколовская": ("hospitalisation", "КВС-1701", date(2026, 3, 8), date(2026, 3, 15)),
    }
    now = utcnow()
    db.session.execute(
        insert(IdentRecord),
        [
            {
                "mo_id": mo.id,
                "patient_id": people[name].id,
                "reason": "case" if case_type else "manual",
                "case_type": case_type,
                "case_number": number,
                "period_from": din,
                "period_to": dout,
                "status": IDENT_SELECTED,
                "created_at": now,
            }
            for name, (case_type, number, din, dout) in cases.items()
        ],
    )
    package = ident.form_packages(mo.id).packages[0]
    db.session.commit()
    answer = answer_for(
        package,
        register_for(
            insured=[(people["Соколова"], {"rq": "35001", "ropdoc": 3})],
            errors=[
                (
                    people["Орлова"],
                    {"rq": "39999", "rqogrn": "1000000000009", "ropdoc": 3, "repl": "2=Не совпадает СНИЛС;"},
                )
            ],
            eerp=[people["Волкова"]],
            missing=[people["Соколовская"]],
        ),
    )
    assert ident.process_answer(package.file_name, answer, check_mo=False).ok
    db.session.commit()
    return package, people


def _found(client, url: str) -> set[str]:
    """Surnames of the records a column search shows, asked as the column's htmx input asks."""
    html = client.get(url, headers=ROWS).get_data(as_text=True)
    assert "<thead" not in html  # only the rows: the inputs keep their focus and text
    return set(re.findall(r'<tr data-status="[a-z_]+">\s*<td class="num">[^<]*</td>\s*<td>(\S+)', html))


def test_context_search_over_each_column(app, client, region):
    package, _people = _column_package(region)
    login(client, region.a.users["mo_admin"])
    url = f"{PAGE}?package={package.id}"

    everyone = {"Соколова", "Орлова", "Волкова", "Соколовская"}
    assert _found(client, url) == everyone
    # the page has one search input over each column of the records, all htmx and kept in the URL
    page = client.get(url).get_data(as_text=True)
    assert "Поиск: пациент, номер случая" not in page and 'name="qr"' not in page
    assert 'id="qp"' in page  # the package list keeps its own search
    for name, label in (
        ("patient", "Пациент"),
        ("day", "Период"),
        ("case", "Случай лечения"),
        ("errors", "Ошибки"),
        ("result", "Результат запроса"),
    ):
        tag = re.search(rf'<input type="search" name="{name}"[^>]*>', page).group(0)
        assert f"Поиск по столбцу «{label}»" in tag and 'form="ident-record-search"' in tag
        assert 'hx-trigger="input changed delay:300ms"' in tag and 'hx-push-url="true"' in tag
        assert 'hx-target="#ident-record-rows"' in tag and 'hx-include="#ident-record-search, #qp"' in tag
    select = re.search(r'<select name="status"[^>]*>.*?</select>', page, re.S).group(0)
    assert 'hx-trigger="change"' in select and 'hx-push-url="true"' in select
    assert ">Все</option>" in select and all(
        f">{label}</option>" in select for label in IDENT_STATUSES.values()
    )
    search_form = re.search(r'<form id="ident-record-search".*?</form>', page, re.S).group(0)
    for hidden in ("from", "to", "package"):
        assert f'name="{hidden}"' in search_form  # the period and the package go with every column search

    # Пациент: any part of the name, any case; a birth date ДД.ММ.ГГГГ, alone or beside the name
    assert _found(client, f"{url}&patient=соколов") == {"Соколова", "Соколовская"}
    assert _found(client, f"{url}&patient=СОКОЛОВСКАЯ") == {"Соколовская"}
    assert _found(client, f"{url}&patient=ольга") == {"Волкова"}
    assert _found(client, f"{url}&patient=анна игоревна") == {"Соколова"}
    assert _found(client, f"{url}&patient=12.03.1990") == {"Соколова", "Волкова"}
    assert _found(client, f"{url}&patient=волкова 12.03.1990") == {"Волкова"}
    # Период: the day lies within DIN–DOUT (DOUT empty: the one day DIN)
    assert _found(client, f"{url}&day=09.03.2026") == {"Соколова", "Соколовская"}
    assert _found(client, f"{url}&day=2026-03-05") == {"Соколова", "Орлова"}
    assert _found(client, f"{url}&day=20.02.2026") == {"Волкова"}
    assert _found(client, f"{url}&day=16.03.2026") == set()
    # Случай лечения: part of the number, or the kind with or without the number
    assert _found(client, f"{url}&case=17") == {"Соколова", "Соколовская"}
    assert _found(client, f"{url}&case=1701") == {"Соколовская"}
    assert _found(client, f"{url}&case=тап") == {"Орлова"}
    assert _found(client, f"{url}&case=КВС № 170") == {"Соколовская"}
    # Статус: one of the statuses
    for status, label in IDENT_STATUSES.items():
        html = client.get(f"{url}&status={status}", headers=ROWS).get_data(as_text=True)
        assert all(s == status for s in re.findall(r'<tr data-status="([a-z_]+)"', html))
        assert label in html or "Записи по условиям поиска" in html
    assert _found(client, f"{url}&status=identified") == {"Соколова"}
    assert _found(client, f"{url}&status=not_identified") == {"Орлова", "Волкова", "Соколовская"}
    assert client.get(f"{url}&status=lost").status_code == 400
    # Ошибки: the REPL codes and their text
    assert _found(client, f"{url}&errors=снилс") == {"Орлова"}
    assert _found(client, f"{url}&errors=2=") == {"Орлова"}
    # Результат запроса
    assert _found(client, f"{url}&result=полис сохранён") == {"Соколова"}
    assert _found(client, f"{url}&result=не получены") == {"Соколовская"}


def test_column_searches_combine_and_stay_in_the_url(app, client, region):
    package, _people = _column_package(region)
    login(client, region.a.users["mo_admin"])
    url = f"{PAGE}?package={package.id}"

    # combined with AND
    assert _found(client, f"{url}&patient=соколов&day=02.03.2026") == {"Соколова"}
    assert _found(client, f"{url}&patient=соколов&status=not_identified") == {"Соколовская"}
    assert _found(client, f"{url}&case=КВС&status=identified&result=полис") == {"Соколова"}
    assert _found(client, f"{url}&patient=орлова&case=КВС") == set()
    nothing = client.get(f"{url}&patient=орлова&status=identified", headers=ROWS).get_data(as_text=True)
    assert "Записи по условиям поиска (Пациент: «орлова»; Статус: «Идентифицирован») не найдены." in _text_of(
        nothing
    )

    # the whole page from the URL: the inputs show the search, every link keeps it
    query = f"{url}&patient=соколов&day=09.03.2026&case=КВС&status=not_identified&errors=&result=получены"
    response = client.get(query)
    html = response.get_data(as_text=True)
    assert _found(client, query) == {"Соколовская"}
    assert re.search(r'<input type="search" name="patient" value="соколов"', html)
    assert re.search(r'<input type="search" name="day" value="09.03.2026"', html)
    assert re.search(r'<input type="search" name="case" value="КВС"', html)
    assert re.search(r'<input type="search" name="result" value="получены"', html)
    assert '<option value="not_identified" selected>' in html
    links = [unescape(u) for u in re.findall(r'href="(/tfoms/ident\?[^"]+)"', html)]
    package_link = next(u for u in links if f"package={package.id}" in u and "from=" in u)
    kept = parse_qs(urlsplit(package_link).query)
    assert (
        kept["patient"] == ["соколов"]
        and kept["day"] == ["09.03.2026"]
        and kept["status"] == ["not_identified"]
    )
    assert kept["case"] == ["КВС"] and kept["result"] == ["получены"]
    # hidden copies in the action forms bring the search back after «Удалить» / «Загрузить»
    assert html.count('<input type="hidden" name="patient" value="соколов">') >= 2
    # «Сбросить» shows the whole package again
    reset = unescape(re.search(r'href="([^"]+)"[^>]*>Сбросить</a>', html, re.S).group(1))
    assert "patient=" not in reset and f"package={package.id}" in reset
    assert _found(client, reset) == {"Соколова", "Орлова", "Волкова", "Соколовская"}


def test_a_bad_date_in_a_column_is_a_message(app, client, region):
    package, _people = _column_package(region)
    login(client, region.a.users["mo_admin"])
    url = f"{PAGE}?package={package.id}"

    rows = client.get(f"{url}&day=31.02.2026", headers=ROWS)
    assert rows.status_code == 200 and _rows(rows.get_data(as_text=True)) == 0
    assert "Дата «31.02.2026» в столбце «Период» не распознана: введите её как ДД.ММ.ГГГГ." in _text_of(
        rows.get_data(as_text=True)
    )
    page = client.get(f"{url}&day=вчера&patient=соколов")
    assert page.status_code == 200
    text = _text_of(page.get_data(as_text=True))
    assert "Дата «вчера» в столбце «Период» не распознана" in text
    assert f"Записи пакета {package.name}" in text  # the rest of the page is there
    birth = client.get(f"{url}&patient=соколова 30.02.1990", headers=ROWS).get_data(as_text=True)
    assert "Дата рождения «30.02.1990» в столбце «Пациент» не распознана" in _text_of(birth)
    # nothing was changed by the bad date, and the package is still there with its records
    assert _found(client, url) == {"Соколова", "Орлова", "Волкова", "Соколовская"}
