"""«Отчёт запросов на сервер ФСС» (SPEC E-14) as its users see it: counts per МО, doctor, patient
and the registry by year, month and day for «Запросы для ФСС» and «Данные с ФСС», the period tree,
МО scoping, refusals of bad filters, and the PDF rendered in the background (queue → job → file).

The app here uses an SQLite file rather than memory: the job renders the PDF in a child process,
which must see the same database.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import pytest
from lxml import html
from pypdf import PdfReader

from portal.ers.models import PROCESSED, PROCESSING_ERROR, REGISTERED, ErsRequest
from portal.extensions import db
from portal.reports import PORTAL_NAME
from portal.reports.background import ROWS_PER_PAGE, run_queued
from portal.reports.models import DONE, RUNNING, ReportRun
from tests.conftest import DATABASES, _reset_postgres, csrf_token, login, make_app

TITLE = "Отчёт запросов на сервер ФСС"
HX = {"HX-Request": "true", "HX-Target": "ers-report-results"}


@pytest.fixture(params=DATABASES)
def app(request, tmp_path):
    database = request.param
    overrides = (
        {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'portal.db'}"} if database == "sqlite" else {}
    )
    application = make_app(database, **overrides)
    application.instance_path = str(tmp_path / "instance")
    with application.app_context():
        if database == "postgresql":
            _reset_postgres()
        else:
            db.create_all()
        yield application
        db.session.remove()
        db.engine.dispose()


def add(mo, method, *, sent=None, answered=None, status=PROCESSED, patient=None, user=None, data=None, visits=1):
    request = ErsRequest(
        mo_id=mo.id,
        patient_id=patient.id if patient else None,
        user_id=user.id if user else None,
        method=method,
        info="запрос",
        status=status,
        data=data or {},
        sent_at=sent,
        answered_at=answered,
        visits_added=visits if method == "putVisit" else 0,
    )
    db.session.add(request)
    return request


def rows(page: str) -> list[list[str]]:
    tree = html.fromstring(page)
    return [
        [" ".join(cell.text_content().split()) for cell in row.xpath("./td")]
        for row in tree.xpath('//table[contains(@class, "ers-report")]/tbody/tr')
    ]


def totals_row(page: str) -> list[str]:
    tree = html.fromstring(page)
    return [
        " ".join(c.text_content().split())
        for c in tree.xpath('//table[contains(@class, "ers-report")]/tfoot/tr/th')
    ]


def text(page: str) -> str:
    return " ".join(html.fromstring(page).text_content().split())


@pytest.fixture
def data(region):
    """Requests of МО A and B in 2024 and 2025: sent, answered, processed or not."""
    a, b = region.a, region.b
    doctor_user = a.users["ers_operator"]
    doctor_user.staff_id = a.doctor.id  # linked to staff: named as «Смирнова Ольга Михайловна»
    clerk = a.users["ers_accountant"]  # not linked: named by the account
    p1, p2 = a.patients
    mar = datetime(2024, 3, 5, 10, 0)
    add(a.mo, "createErs", sent=mar, answered=mar + timedelta(hours=1), patient=p1, user=doctor_user)
    add(
        a.mo,
        "putVisit",
        sent=mar,
        answered=mar + timedelta(hours=2),
        patient=p1,
        user=doctor_user,
        visits=2,  # two exams in one «Посещение»: two visits, one request
    )
    add(
        a.mo,
        "putVisit",
        sent=datetime(2024, 3, 6, 9),
        answered=datetime(2024, 4, 1, 9),
        patient=p2,
        user=clerk,
    )
    add(
        a.mo,
        "putTicket1",
        sent=datetime(2024, 3, 6, 12),
        status=PROCESSING_ERROR,
        answered=datetime(2024, 3, 6, 13),
        patient=p2,
        user=clerk,
    )
    add(
        a.mo,
        "putTicket3",
        sent=datetime(2025, 1, 10),
        answered=datetime(2025, 1, 11),
        patient=p1,
        user=doctor_user,
        data={"part": "3-2"},
    )
    add(a.mo, "putTicket2", sent=None, status="QUEUED", patient=p1, user=doctor_user)  # not sent yet
    add(a.mo, "getErsData", sent=mar, answered=mar, patient=p1, user=doctor_user)  # not in the report
    add(
        b.mo,
        "createErs",
        sent=datetime(2024, 3, 5, 8),
        answered=datetime(2024, 3, 5, 9),
        patient=b.patients[0],
    )
    add(b.mo, "createErs", sent=datetime(2024, 7, 1, 8), status=REGISTERED, patient=b.patients[1])
    db.session.commit()
    return region


def get(client, **args):
    response = client.get("/ers/report", query_string=args)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


# --- counts -------------------------------------------------------------------------------------


def test_sent_requests_per_mo_by_year_month_and_day(client, data):
    a, b = data.a.mo.short_name, data.b.mo.short_name
    login(client, data.central)
    page = get(client)
    assert TITLE in text(page)
    expected = sorted(
        [["2024", a, "1", "3", "1", "0", "0"], ["2024", b, "2", "0", "0", "0", "0"]], key=lambda r: r[1]
    )
    assert rows(page) == expected + [["2025", a, "0", "0", "0", "0", "1"]]
    assert totals_row(page) == ["Итого", "3", "3", "1", "0", "1"]

    by_month = rows(get(client, grain="month", mo=data.a.mo.id))
    assert by_month == [["2024-03", a, "1", "3", "1", "0", "0"], ["2025-01", a, "0", "0", "0", "0", "1"]]
    by_day = rows(get(client, grain="day", mo=data.a.mo.id))
    assert by_day == [
        ["2024-03-05", a, "1", "2", "0", "0", "0"],
        ["2024-03-06", a, "0", "1", "1", "0", "0"],
        ["2025-01-10", a, "0", "0", "0", "0", "1"],
    ]


def test_data_from_fss_counts_processed_by_answer_date(client, data):
    a = data.a.mo.short_name
    login(client, data.central)
    by_month = rows(get(client, source="fss", grain="month", mo=data.a.mo.id))
    # the Т1 with a processing error is not counted; the visit answered on 1 April is April's
    assert by_month == [
        ["2024-03", a, "1", "2", "0", "0", "0"],
        ["2024-04", a, "0", "1", "0", "0", "0"],
        ["2025-01", a, "0", "0", "0", "0", "1"],
    ]
    every_mo = rows(get(client, source="fss"))
    assert ["2024", data.b.mo.short_name, "1", "0", "0", "0", "0"] in every_mo  # the REGISTERED one is not


def test_doctors_patients_and_registry(client, data):
    login(client, data.a.users["mo_admin"])
    doctors = rows(get(client, group="doctor"))
    assert doctors == [
        ["2024", data.a.users["ers_accountant"].full_name, "0", "1", "1", "0", "0"],
        ["2024", "Смирнова Ольга Михайловна", "1", "2", "0", "0", "0"],
        ["2025", "Смирнова Ольга Михайловна", "0", "0", "0", "0", "1"],
    ]
    patients = rows(get(client, group="patient"))
    assert patients == [
        ["2024", "Иванова Мария Петровна", "1", "2", "0", "0", "0"],
        ["2024", "Петрова Анна Петровна", "0", "1", "1", "0", "0"],
        ["2025", "Иванова Мария Петровна", "0", "0", "0", "0", "1"],
    ]
    registry = rows(get(client, group="registry", source="fss"))
    mo = data.a.mo.short_name
    assert registry == [
        [
            "05.03.2024 11:00",
            mo,
            "Иванова Мария Петровна",
            "Запрос ЭРС",
            "Обработан",
            "1",
            "0",
            "0",
            "0",
            "0",
        ],
        ["05.03.2024 12:00", mo, "Иванова Мария Петровна", "Посещение", "Обработан", "0", "2", "0", "0", "0"],
        ["01.04.2024 09:00", mo, "Петрова Анна Петровна", "Посещение", "Обработан", "0", "1", "0", "0", "0"],
        ["11.01.2025 00:00", mo, "Иванова Мария Петровна", "Талон 3", "Обработан", "0", "0", "0", "0", "1"],
    ]
    searched = rows(get(client, group="registry", source="fss", q="петр"))
    assert [r[2] for r in searched] == ["Петрова Анна Петровна"]


def test_rows_per_page_and_pages(client, data):
    login(client, data.central)
    page = get(client, group="registry", rows=10)
    assert len(rows(page)) == 7 and "Всего строк: 7" in text(page)
    for n in range(12):
        add(data.a.mo, "putVisit", sent=datetime(2024, 5, 1, 8, n))
    db.session.commit()
    first, second = get(client, group="registry"), get(client, group="registry", page=2)
    assert len(rows(first)) == 10 and len(rows(second)) == 9
    assert "Страница 2 из 2" in text(second)
    fragment = client.get("/ers/report?group=registry&page=2", headers=HX).get_data(as_text=True)
    assert 'id="ers-report-results"' in fragment and "<h1>" not in fragment
    assert 'id="ers-report-periods" class="periods" hx-swap-oob="true"' in fragment


# --- the period tree ------------------------------------------------------------------------------


def tree(page: str) -> list[str]:
    return html.fromstring(page).xpath('//fieldset[@id="ers-report-periods"]//input[@name="period"]/@value')


def test_period_tree_has_only_periods_with_data_and_limits_the_report(client, data):
    login(client, data.central)
    page = get(client, mo=data.a.mo.id)
    assert tree(page) == ["2024", "2024-03", "2024-03-05", "2024-03-06", "2025", "2025-01", "2025-01-10"]
    assert tree(get(client, mo=data.a.mo.id, source="fss")) == [
        "2024",
        "2024-03",
        "2024-03-05",
        "2024-04",
        "2024-04-01",
        "2025",
        "2025-01",
        "2025-01-11",
    ]
    chosen = get(client, mo=data.a.mo.id, grain="day", period=["2024-03-06", "2025"])
    assert [r[0] for r in rows(chosen)] == ["2024-03-06", "2025-01-10"]
    checked = html.fromstring(chosen).xpath('//input[@name="period"][@checked]/@value')
    assert checked == ["2024-03-06", "2025"]


# --- МО scoping and refusals ----------------------------------------------------------------------


def test_mo_user_sees_only_their_mo_whatever_the_url(client, data):
    login(client, data.b.users["ers_operator"])
    for args in ({}, {"mo": data.a.mo.id}, {"group": "registry", "mo": data.a.mo.id}):
        page = get(client, **args)
        assert data.a.mo.short_name not in text(page)
        assert {r[1] for r in rows(page) if len(r) > 2} <= {data.b.mo.short_name}
    assert tree(get(client, mo=data.a.mo.id)) == ["2024", "2024-03", "2024-03-05", "2024-07", "2024-07-01"]
    login(client, data.b.users["doctor"])  # no «ers.view»
    assert client.get("/ers/report").status_code == 403


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"source": "all"}, "Данные отчёта: «all» — нет такого значения"),
        ({"group": "x"}, "Группировка: «x» — нет такого значения"),
        ({"grain": "week"}, "Период в строках: «week» — нет такого значения"),
        ({"period": "2024-13"}, "Периода «2024-13» не существует."),
        ({"period": "март"}, "Некорректный период «март»"),
        ({"rows": "7"}, "Количество строк: 10, 30 или 50."),
    ],
)
def test_bad_filter_is_refused_in_russian(client, region, args, message):
    login(client, region.central)
    response = client.get("/ers/report", query_string=args)
    assert response.status_code == 400
    assert message in text(response.get_data(as_text=True))


# --- the PDF in the background --------------------------------------------------------------------


def test_pdf_is_queued_rendered_by_the_job_and_opened(client, region, app):
    user = region.a.users["mo_admin"]
    count = 2 * ROWS_PER_PAGE + 3
    for n in range(count):
        add(
            region.a.mo,
            "putVisit",
            sent=datetime(2024, 5, 1) + timedelta(minutes=n),
            patient=region.a.patients[0],
        )
    add(region.b.mo, "putVisit", sent=datetime(2024, 5, 1))  # another МО: not in the file
    db.session.commit()
    login(client, user)
    token = csrf_token(client, "/ers/report")
    response = client.post(
        "/ers/report/pdf",
        data={"csrf_token": token, "group": "registry", "mo": region.b.mo.id},
        headers={"HX-Request": "true", "HX-Target": "ers-report-run"},
    )
    assert response.status_code == 202
    fragment = response.get_data(as_text=True)
    assert f"В очереди на формирование, строк: {count}." in text(fragment)
    assert 'hx-trigger="every 1s"' in fragment
    run = db.session.scalars(db.select(ReportRun)).one()
    run_url = f"/ers/report/runs/{run.id}"

    assert run_queued() == "сформировано отчётов: 1, с ошибкой: 0"

    fragment = client.get(run_url, headers={"HX-Request": "true", "HX-Target": "ers-report-run"}).get_data(
        as_text=True
    )
    assert "Открыть PDF" in fragment and "hx-trigger" not in fragment
    db.session.expire_all()
    run = db.session.get(ReportRun, run.id)
    assert (run.status, run.done, run.total, run.pages) == (DONE, count, count, 3)

    response = client.get(f"{run_url}/pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"].startswith("inline;")
    reader = PdfReader(io.BytesIO(response.get_data()))
    assert len(reader.pages) == 3
    for number, page in enumerate(reader.pages, 1):
        assert page.mediabox.width > page.mediabox.height  # landscape
        page_text = page.extract_text()
        assert PORTAL_NAME in page_text and TITLE in page_text
        assert "Группировка: Реестр" in page_text and "Дата" in page_text and "Посещения" in page_text
        assert f"Стр. {number} из 3" in page_text
    everything = "".join(p.extract_text() for p in reader.pages)
    assert everything.count("Иванова Мария Петровна") == count
    assert region.b.mo.short_name not in everything


def test_another_mos_run_is_not_found(client, region):
    login(client, region.a.users["ers_operator"])
    token = csrf_token(client, "/ers/report")
    response = client.post("/ers/report/pdf", data={"csrf_token": token})
    assert response.status_code == 303
    run = db.session.scalars(db.select(ReportRun)).one()
    assert response.headers["Location"].endswith(f"/ers/report/runs/{run.id}")
    assert "В очереди на формирование" in text(
        client.get(f"/ers/report/runs/{run.id}").get_data(as_text=True)
    )
    run_queued()
    assert client.get(f"/ers/report/runs/{run.id}/pdf").status_code == 200  # empty report: one page

    login(client, region.a.users["mo_admin"])  # the same МО's figures: shared within the МО
    assert client.get(f"/ers/report/runs/{run.id}/pdf").status_code == 200
    for other in (region.b.users["ers_operator"], region.b.users["mo_admin"]):
        login(client, other)
        assert client.get(f"/ers/report/runs/{run.id}").status_code == 404
        assert client.get(f"/ers/report/runs/{run.id}/pdf").status_code == 404
    login(client, region.central)
    assert client.get(f"/ers/report/runs/{run.id}/pdf").status_code == 200


def test_a_run_left_running_by_a_crash_is_taken_again(client, region):
    add(region.a.mo, "createErs", sent=datetime(2024, 5, 1))
    run = ReportRun(
        kind="ers_requests",
        title=TITLE,
        params={},
        user_id=region.central.id,
        status=RUNNING,
        done=0,
        total=1,
    )
    db.session.add(run)
    db.session.commit()
    assert run_queued() == "сформировано отчётов: 0, с ошибкой: 0"  # still fresh: someone renders it
    run.updated_at = datetime(2024, 1, 1)
    db.session.commit()
    assert run_queued() == "сформировано отчётов: 1, с ошибкой: 0"
    db.session.expire_all()
    assert db.session.get(ReportRun, run.id).status == DONE


def test_progress_fragment_while_running_and_after_a_failure(client, region):
    user = region.a.users["ers_accountant"]
    run = ReportRun(
        kind="ers_requests", title=TITLE, params={}, user_id=user.id, status=RUNNING, done=300, total=1200
    )
    db.session.add(run)
    db.session.commit()
    login(client, user)
    hx = {"HX-Request": "true", "HX-Target": "ers-report-run"}
    fragment = client.get(f"/ers/report/runs/{run.id}", headers=hx).get_data(as_text=True)
    assert "Формируется: 300 из 1200 строк" in text(fragment)
    assert '<progress max="1200" value="300">' in fragment and 'hx-trigger="every 1s"' in fragment
    assert client.get(f"/ers/report/runs/{run.id}/pdf").status_code == 404  # not ready yet

    run.status, run.error = "failed", "Формирование отчёта прервано. Попробуйте ещё раз или сузьте период."
    db.session.commit()
    fragment = client.get(f"/ers/report/runs/{run.id}", headers=hx).get_data(as_text=True)
    assert "Отчёт не сформирован: Формирование отчёта прервано." in text(fragment)
    assert "hx-trigger" not in fragment
