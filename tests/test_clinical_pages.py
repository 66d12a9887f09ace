"""Source-data pages: patients, the patient card, events — scoped to the user's МО."""

from datetime import datetime, timedelta

from portal.extensions import db
from tests import factories
from tests.conftest import login


def test_patient_list_shows_own_mo_only(client, region):
    login(client, region.a.users["doctor"])
    page = client.get("/clinical/patients").get_data(as_text=True)
    assert region.a.patients[0].full_name in page
    assert f"/clinical/patients/{region.b.patients[0].id}" not in page


def test_foreign_mo_filter_is_ignored_for_mo_users(client, region):
    login(client, region.a.users["statistician"])
    page = client.get(f"/clinical/patients?mo={region.b.mo.id}").get_data(as_text=True)
    assert f"/clinical/patients/{region.b.patients[0].id}" not in page
    assert f"/clinical/patients/{region.a.patients[0].id}" in page


def test_central_admin_filters_by_mo(client, region):
    login(client, region.central)
    page = client.get(f"/clinical/patients?mo={region.b.mo.id}").get_data(as_text=True)
    assert f"/clinical/patients/{region.b.patients[0].id}" in page
    assert f"/clinical/patients/{region.a.patients[0].id}" not in page


def test_search_by_surname_and_snils(client, region):
    login(client, region.a.users["doctor"])
    page = client.get("/clinical/patients?q=Петрова").get_data(as_text=True)
    assert "Петрова Анна" in page and "Иванова Мария" not in page
    snils = region.a.patients[0].snils
    page = client.get(f"/clinical/patients?q={snils[:3]}-{snils[3:6]}-{snils[6:9]}").get_data(as_text=True)
    assert f"/clinical/patients/{region.a.patients[0].id}" in page


def test_missing_data_is_named(client, region):
    factories.make_patient(region.a.mo, last_name="Безадресная", registration_address=None, snils=None)
    db.session.commit()
    login(client, region.a.users["doctor"])
    page = client.get("/clinical/patients?problems=1").get_data(as_text=True)
    assert "Безадресная" in page and "Нет адреса регистрации пациента" in page and "Нет СНИЛС пациента" in page
    assert "Иванова Мария" not in page


def test_keyset_pagination_walks_all_rows(client, app, region):
    for i in range(7):
        factories.make_patient(region.a.mo, last_name=f"Сидорова{i:02d}")
    db.session.commit()
    app.config["PAGE_SIZE"] = 3
    login(client, region.a.users["doctor"])
    seen, url = [], "/clinical/patients"
    for _ in range(10):
        page = client.get(url, headers={"HX-Request": "true", "HX-Target": "more"} if seen else {}).get_data(as_text=True)
        seen += [line for line in page.split("\n") if "/clinical/patients/" in line and "href" in line]
        if "Показать ещё" not in page:
            break
        url = page.split('hx-get="')[-1].split('"')[0].replace("&amp;", "&")
    assert len(seen) == 9  # 2 patients of the region + 7 added


def test_htmx_filter_returns_fragment_only(client, region):
    login(client, region.a.users["doctor"])
    response = client.get("/clinical/patients?q=Ив", headers={"HX-Request": "true", "HX-Target": "results"})
    body = response.get_data(as_text=True)
    assert "<table" in body and "<html" not in body
    assert "HX-Request" in response.headers.get("Vary", "")


def test_patient_card_shows_term_and_events(client, region):
    login(client, region.a.users["doctor"])
    page = client.get(f"/clinical/patients/{region.a.patients[0].id}").get_data(as_text=True)
    assert "О пациенте" in page and "Первичный осмотр" in page
    assert region.a.pregnancy.gestational_age() in page


def test_patient_card_of_other_mo_is_forbidden(client, region):
    login(client, region.a.users["doctor"])
    response = client.get(f"/clinical/patients/{region.b.patients[0].id}")
    assert response.status_code == 403
    assert "Доступ запрещён" in response.get_data(as_text=True)


def test_events_list_filters_by_kind_and_period(client, region):
    patient = region.a.patients[1]
    factories.make_event(patient, kind="ultrasound_1", at=datetime.now() - timedelta(days=2))
    factories.make_event(patient, kind="lab_blood", at=datetime.now() - timedelta(days=60))
    db.session.commit()
    login(client, region.a.users["doctor"])
    page = client.get("/clinical/events?kind=ultrasound_1").get_data(as_text=True)
    assert "<td>УЗИ I триместра</td>" in page and "<td>Первичный осмотр</td>" not in page
    page = client.get("/clinical/events").get_data(as_text=True)
    assert "<td>Общий анализ крови (ОАК)</td>" not in page  # older than the default 30 days
    old = (datetime.now() - timedelta(days=90)).date().isoformat()
    page = client.get(f"/clinical/events?from={old}").get_data(as_text=True)
    assert "<td>Общий анализ крови (ОАК)</td>" in page


def test_events_bad_date_is_a_russian_400(client, region):
    login(client, region.a.users["doctor"])
    response = client.get("/clinical/events?from=31.12.2026")
    assert response.status_code == 400 and "ГГГГ-ММ-ДД" in response.get_data(as_text=True)
