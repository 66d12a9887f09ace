"""«Журнал работы сервисов» (T-11): services, run log, detailed log, scoping, Запуск, Печать."""

from __future__ import annotations

import re
import zlib
from datetime import timedelta
from html import unescape

import pytest

from jobs.scheduler import JOBS, load_jobs, register_job, run_job
from portal.admin.models import AuditLog, Setting
from portal.exchange.models import JournalEntry, ServiceRun, WorkItem
from portal.exchange.runs import current_run
from portal.extensions import db
from portal.journal.services import packet_lines, start_manual_run
from portal.models_base import utcnow
from tests import factories
from tests.conftest import DATABASES, _reset_postgres, csrf_token, login, make_app

URL = "/journal/"
SERVICE = "cleanup_login_failures"
TITLE = "Очистка журнала неудачных входов"
HX = {"HX-Request": "true"}

SEMD_PACKET = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:v="http://vimis.rosminzdrav.ru/">'
    "<soap:Body><v:sendDocument><v:localUid>5f0c6a1e-0001</v:localUid><v:documentType>10</v:documentType>"
    "<v:empty></v:empty><v:document>"
    + "QUJD" * 100
    + "</v:document></v:sendDocument></soap:Body></soap:Envelope>"
)


def _run(
    service: str = SERVICE,
    *,
    mo=None,
    result: str = "ok",
    total: int = 0,
    errors: int = 0,
    minutes_ago: int = 10,
    manual: bool = False,
    message: str | None = None,
) -> ServiceRun:
    started = utcnow() - timedelta(minutes=minutes_ago)
    run = ServiceRun(
        service=service,
        mo_id=mo.id if mo else None,
        started_at=started,
        result=result,
        total=total,
        errors=errors,
        finished_at=None if result == "running" else started + timedelta(seconds=3),
        manual=manual,
        message=message,
    )
    db.session.add(run)
    db.session.flush()
    return run


def _entry(
    run: ServiceRun,
    mo,
    *,
    level: str = "ok",
    packet_id: str | None = None,
    payload: str | None = None,
    answer: str | None = None,
    item: WorkItem | None = None,
    message: str = "Принят",
) -> JournalEntry:
    if item is None:
        item = WorkItem(channel="vimis", mo_id=mo.id, subject_type="semd_version", subject_id=1)
        db.session.add(item)
        db.session.flush()
    entry = JournalEntry(
        channel="vimis",
        mo_id=mo.id,
        subject_type="semd_version",
        subject_id=1,
        item_id=item.id,
        run_id=run.id,
        operation="Отправка",
        level=level,
        message=message,
        packet_id=packet_id or f"pkt-{item.id}",
        packet_type="СЭМД",
        item_state="failed" if level == "error" else "done",
        payload=payload,
        answer=answer,
        at=run.started_at + timedelta(seconds=1),
    )
    db.session.add(entry)
    db.session.flush()
    return entry


def _runs_shown(page: str) -> set[int]:
    return {int(n) for n in re.findall(r'<tr id="run-(\d+)"', page)}


def _row(page: str, run_id: int) -> str:
    start = page.index(f'<tr id="run-{run_id}"')
    return page[start : page.index("</tr>", start)]


def _cells(row: str) -> list[str]:
    return [
        unescape(re.sub(r"<[^>]+>", " ", cell)).split()
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]


def _get(client, params=None, target: str | None = None):
    headers = {**HX, "HX-Target": target} if target else {}
    return client.get(URL, query_string=params or {}, headers=headers)


# --- page, run log, filters -------------------------------------------------------------------------


def test_page_lists_services_and_the_run_log_of_the_selected_one(client, region):
    done = _run(total=4, errors=1, result="error", minutes_ago=30)
    idle = _run(minutes_ago=20)  # a scheduled run that found nothing: hidden by default
    working = _run(result="running", minutes_ago=1)
    db.session.commit()
    login(client, region.central)

    page = _get(client, {"service": SERVICE}).get_data(as_text=True)

    assert 'aria-label="Список сервисов"' in page and 'aria-label="Лог запусков выбранного сервиса"' in page
    assert TITLE in page and re.search(r"Наименование <span class=\"muted\">\d+ / \d+</span>", page)
    for column in ("Запуск", "Завершение", "МО", "Результат", "Всего пакетов", "Пакетов с ошибками"):
        assert f">{column}</th>" in page
    assert _runs_shown(page) == {done.id, working.id}
    assert page.index(f'id="run-{working.id}"') < page.index(f'id="run-{done.id}"')  # newest first
    cells = _cells(_row(page, done.id))
    assert (
        cells[2] == ["Все", "МО"]
        and cells[3] == ["Завершено", "с", "ошибкой"]
        and cells[4:] == [["4"], ["1"]]
    )
    # a running run refreshes itself; a finished one does not
    assert 'hx-trigger="every 5s"' in _row(page, working.id) and "every" not in _row(page, done.id)
    assert "Выполняется" in _row(page, working.id)

    shown_all = _get(client, {"service": SERVICE, "empty": "1"}).get_data(as_text=True)
    assert _runs_shown(shown_all) == {done.id, idle.id, working.id}
    # the checkbox posts empty=1 then empty=0 when checked: the last value wins
    hidden = _get(client, [("service", SERVICE), ("empty", "1"), ("empty", "0")]).get_data(as_text=True)
    assert _runs_shown(hidden) == {done.id, working.id}

    only_errors = _get(client, {"service": SERVICE, "status": "error", "empty": "1"}).get_data(as_text=True)
    assert _runs_shown(only_errors) == {done.id}
    assert '<option value="error" selected>' in only_errors
    assert _get(client, {"service": SERVICE, "status": "nonsense"}).status_code == 400
    assert _get(client, {"service": "no_such_service"}).status_code == 404


def test_real_job_run_is_listed_and_its_packets_counted(app, client, region):
    """A job run through the scheduler's run_job appears with the counts it recorded."""

    def deliver_three() -> str:
        tally = current_run()
        for n, ok in enumerate((True, True, False)):
            item = WorkItem(channel="vimis", mo_id=region.a.mo.id, subject_type="semd_version", subject_id=n)
            db.session.add(item)
            db.session.flush()
            db.session.add(
                JournalEntry(
                    channel="vimis",
                    mo_id=region.a.mo.id,
                    subject_type="semd_version",
                    subject_id=n,
                    item_id=item.id,
                    run_id=tally.run_id,
                    operation="Отправка",
                    level="ok" if ok else "error",
                    message="Принят" if ok else "Ошибка ФЛК: нет СНИЛС пациента",
                    packet_id=f"real-{n}",
                )
            )
            tally.count(item.id, ok)
        return "отправлено 3"

    register_job("test_journal_deliver", "Тестовая отправка пакетов", deliver_three, interval_seconds=60)
    try:
        run_job(app, "test_journal_deliver")
        run_job(app, SERVICE)  # finds nothing to clean: a run without packets
        login(client, region.central)
        page = _get(client, {"service": "test_journal_deliver"}).get_data(as_text=True)
        run = db.session.scalar(db.select(ServiceRun).where(ServiceRun.service == "test_journal_deliver"))
        assert "Тестовая отправка пакетов" in page
        assert _cells(_row(page, run.id))[3:] == [["Завершено", "с", "ошибкой"], ["3"], ["1"]]
        detail = _get(client, {"run": run.id}, target="journal-detail").get_data(as_text=True)
        assert "Ошибка ФЛК: нет СНИЛС пациента" in detail and "real-2" in detail

        cleanup = _get(client, {"service": SERVICE}).get_data(as_text=True)
        assert _runs_shown(cleanup) == set() and "Запусков нет по этим условиям" in cleanup
        assert len(_runs_shown(_get(client, {"service": SERVICE, "empty": "1"}).get_data(as_text=True))) == 1
    finally:
        JOBS.pop("test_journal_deliver", None)


def test_fragments_and_keyset_pages(app, client, region):
    app.config["PAGE_SIZE"] = 2
    runs = [_run(total=1, minutes_ago=50 - i) for i in range(3)]  # runs[2] is the newest
    db.session.commit()
    login(client, region.central)

    fragment = _get(client, {"service": SERVICE}, target="journal").get_data(as_text=True)
    assert fragment.lstrip().startswith('<div id="journal"') and "<html" not in fragment
    assert _runs_shown(fragment) == {runs[2].id, runs[1].id}
    more = re.search(r'<tr id="more-runs">.*?href="([^"]+)" hx-get="([^"]+)"', fragment, re.S)
    assert more and more.group(1) == more.group(2)  # every hx-get has its href
    rows = client.get(unescape(more.group(2)), headers={**HX, "HX-Target": "more-runs"}).get_data(
        as_text=True
    )
    assert _runs_shown(rows) == {runs[0].id} and "<table" not in rows and "more-runs" not in rows

    # every hx-get on the page has an href with the same URL, except the self-polling fragments
    page = _get(client, {"service": SERVICE}).get_data(as_text=True)
    for tag in re.findall(r"<a [^>]*hx-get=[^>]*>", page):
        assert re.search(r'href="([^"]+)".*hx-get="\1"', tag), tag


def test_selected_run_detail_shows_packet_data_as_tag_lines(client, region):
    run = _run(total=1)
    _entry(
        run,
        region.a.mo,
        packet_id="535AAF76-C2DC",
        payload=SEMD_PACKET,
        answer='{"status": "accepted", "result": {"code": 0, "errors": []}, "note": null}',
    )
    db.session.commit()
    login(client, region.central)

    page = _get(client, {"service": SERVICE, "run": run.id}).get_data(as_text=True)
    assert f'<tr id="run-{run.id}" class="selected"' in page
    detail = _get(client, {"run": run.id}, target="journal-detail").get_data(as_text=True)
    assert detail.lstrip().startswith('<section id="journal-detail"')
    for column in (
        "Дата/время",
        "Идентификатор пакета",
        "Тип пакета",
        "Операция",
        "Статус пакета",
        "Результат",
        "Данные пакета",
        "Ответ",
    ):
        assert f">{column}</th>" in detail
    text = unescape(re.sub(r"<[^>]+>", "", detail))
    assert "localUid: 5f0c6a1e-0001" in text and "documentType: 10" in text
    assert "document: <base64, 300 байт>" in text and "QUJDQUJD" not in detail
    assert "empty:" not in text
    assert "535AAF76-C2DC" in text and "Принят" in text
    assert "<details><summary>Ответ</summary>" in detail
    assert "status: accepted" in text and "result.code: 0" in text and "note" not in text
    # the toolbar follows the selection out of band: «Печать выбранной записи» now points at this run
    assert 'id="journal-toolbar"' in detail and 'hx-swap-oob="true"' in detail
    assert f"/journal/print?what=run&amp;service={SERVICE}&amp;run={run.id}" in detail


def test_packet_lines_read_xml_json_and_text():
    long_xml = "<r>" + "".join(f"<f{i}>{i}</f{i}>" for i in range(50)) + "</r>"
    data = packet_lines(long_xml)
    assert len(data.lines) == 40 and data.more == 10 and data.lines[0] == ("f0", "0")
    assert packet_lines('[{"a": {"b": true}}, "x"]').lines == [("[0].a.b", "true"), ("[1]", "x")]
    assert packet_lines("Файл SEMD.zip\n\nпринят").lines == [("", "Файл SEMD.zip"), ("", "принят")]
    assert packet_lines("<broken").lines == [("", "<broken")]
    assert packet_lines(None).lines == []


# --- scoping ----------------------------------------------------------------------------------------


def test_mo_admin_sees_own_and_region_wide_runs_counted_for_own_mo(client, region):
    a, b = region.a.mo, region.b.mo
    region_run = _run(result="error", total=5, errors=3, minutes_ago=30)  # stored counts: whole region
    _entry(region_run, a, packet_id="A-ok")
    _entry(region_run, a, level="error", packet_id="A-bad")
    for n in range(3):
        _entry(region_run, b, level="error" if n < 2 else "ok", packet_id=f"B-{n}")
    only_b_failed = _run(result="error", total=2, errors=1, minutes_ago=20)
    _entry(only_b_failed, a, packet_id="A-fine")
    _entry(only_b_failed, b, level="error", packet_id="B-bad")
    b_run = _run(mo=b, total=2, minutes_ago=10)
    _entry(b_run, b, packet_id="B-own")
    a_run = _run(mo=a, total=1, minutes_ago=5)
    db.session.commit()

    login(client, region.a.users["mo_admin"])
    page = _get(client, {"service": SERVICE}).get_data(as_text=True)
    assert _runs_shown(page) == {region_run.id, only_b_failed.id, a_run.id}
    assert _cells(_row(page, region_run.id))[3:] == [["Завершено", "с", "ошибкой"], ["2"], ["1"]]
    assert _cells(_row(page, only_b_failed.id))[3:] == [["Успешно"], ["1"], ["0"]]
    assert _runs_shown(_get(client, {"service": SERVICE, "status": "error"}).get_data(as_text=True)) == {
        region_run.id
    }

    detail = _get(client, {"run": region_run.id}, target="journal-detail").get_data(as_text=True)
    shown = re.findall(r'<td class="journal-packet-id">([^<]*)</td>', detail)  # not «B-» of a CSRF token
    assert "A-ok" in shown and "A-bad" in shown and not [p for p in shown if p.startswith("B-")]

    for params, target in (
        ({"run": b_run.id}, None),
        ({"run": b_run.id}, "journal-detail"),
        ({"run": b_run.id}, "journal"),
        ({"row": b_run.id}, f"run-{b_run.id}"),
    ):
        assert _get(client, params, target).status_code == 404, (params, target)
    assert client.get(f"/journal/print?what=run&run={b_run.id}").status_code == 404

    login(client, region.central)
    page = _get(client, {"service": SERVICE}).get_data(as_text=True)
    assert _runs_shown(page) == {region_run.id, only_b_failed.id, b_run.id, a_run.id}
    assert _cells(_row(page, region_run.id))[3:] == [["Завершено", "с", "ошибкой"], ["5"], ["3"]]
    detail = _get(client, {"run": region_run.id}, target="journal-detail").get_data(as_text=True)
    assert "A-ok" in detail and "B-0" in detail and ">МО</th>" in detail


def test_statistician_views_own_mo_tfoms_services_only_and_cannot_start(client, region):
    """Seed 4.6.1: a statistician sees only the ТФОМС services, of their own МО."""
    tfoms_service = "tfoms_ident_answers"
    run = _run(tfoms_service, mo=region.a.mo, total=1)
    _entry(run, region.a.mo, packet_id="stat-visible")
    other = _run(mo=region.a.mo, total=1)
    _entry(other, region.a.mo, packet_id="not-for-statistician")
    db.session.commit()
    statistician = region.a.users["statistician"]
    login(client, statistician)
    page = _get(client, {"service": tfoms_service, "run": run.id}).get_data(as_text=True)
    assert "stat-visible" in page and ">Запуск</button>" not in page
    assert "Пакетная идентификация ТФОМС: загрузка ответов" in page
    assert "Отправка СЭМД в ВИМИС" not in page and load_jobs()[SERVICE].title_ru not in page  # only ТФОМС
    assert _get(client, {"service": SERVICE}).status_code == 404
    assert _get(client, {"run": other.id}, target="journal-detail").status_code == 404
    token = csrf_token(client, URL)
    response = client.post("/journal/run", data={"service": tfoms_service, "csrf_token": token})
    assert response.status_code == 403 and "Доступ запрещён" in response.get_data(as_text=True)
    assert db.session.scalar(db.select(db.func.count(ServiceRun.id)).where(ServiceRun.manual.is_(True))) == 0


def test_doctor_has_no_journal(client, region):
    login(client, region.a.users["doctor"])
    assert _get(client).status_code == 403


# --- Запуск ----------------------------------------------------------------------------------------


def _start(client, service: str = SERVICE):
    token = csrf_token(client, URL)
    return client.post("/journal/run", data={"service": service, "csrf_token": token}, follow_redirects=True)


def test_manual_run_once_per_interval(app, client, region):
    app.config["JOURNAL_RUN_WAIT"] = True  # the job runs inside the request instead of a thread
    login(client, region.central)

    page = _start(client).get_data(as_text=True)
    run = db.session.scalar(db.select(ServiceRun).where(ServiceRun.manual.is_(True)))
    assert f"Сервис «{TITLE}» запущен." in page
    assert run.mo_id is None and run.user_id == region.central.id and run.result == "ok"
    assert f'<tr id="run-{run.id}" class="selected"' in page  # manual runs show even without packets
    assert "вручную: " + region.central.full_name in page
    audit = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "journal.run"))
    assert audit.object_id == str(run.id) and TITLE in audit.summary and audit.login == region.central.login

    refused = _start(client).get_data(as_text=True)
    started, allowed = run.started_at, run.started_at + timedelta(hours=1)
    assert (
        f"Сервис «{TITLE}» уже запускался вручную в {started:%H:%M}; "
        f"следующий ручной запуск возможен после {allowed:%H:%M}."
    ) in unescape(refused)
    assert db.session.scalar(db.select(db.func.count(ServiceRun.id))) == 1

    run.started_at -= timedelta(minutes=61)
    db.session.commit()
    assert "запущен." in _start(client).get_data(as_text=True)
    assert db.session.scalar(db.select(db.func.count(ServiceRun.id))) == 2

    assert "не найден" in _start(client, "no_such_service").get_data(as_text=True)


def test_interval_is_a_setting_and_mo_admin_runs_for_own_mo(app, client, region):
    app.config["JOURNAL_RUN_WAIT"] = True
    db.session.add(Setting(key="journal.manual_run_interval", mo_id=None, value="60"))
    db.session.commit()
    mo_admin = region.a.users["mo_admin"]
    login(client, mo_admin)
    assert "запущен." in _start(client).get_data(as_text=True)
    run = db.session.scalar(db.select(ServiceRun).where(ServiceRun.manual.is_(True)))
    assert run.mo_id == region.a.mo.id and run.user_id == mo_admin.id
    assert "уже запускался вручную" in _start(client).get_data(as_text=True)

    # another МО's administrator is not held back by it; the central administrator's region run is
    login(client, region.b.users["mo_admin"])
    assert "запущен." in _start(client).get_data(as_text=True)
    run.started_at -= timedelta(seconds=61)
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    assert "запущен." in _start(client).get_data(as_text=True)


@pytest.mark.parametrize("database", DATABASES)
def test_manual_run_in_a_background_thread(database, tmp_path):
    """The thread has its own connection: a file SQLite here (in-memory would share one)."""
    overrides = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'run.db'}"} if database == "sqlite" else {}
    app = make_app(database, **overrides)
    with app.app_context():
        if database == "postgresql":
            _reset_postgres()
        else:
            db.create_all()
        region = factories.make_region()
        started = start_manual_run(SERVICE, region.central, app=app)
        assert started.run_id is not None and started.thread is not None
        started.thread.join(timeout=30)
        db.session.expire_all()
        run = db.session.get(ServiceRun, started.run_id)
        assert run.manual and run.result == "ok" and run.finished_at is not None
        db.session.remove()
        db.engine.dispose()


# --- Печать ----------------------------------------------------------------------------------------


def _pdf_fonts(pdf: bytes) -> set[str]:
    """Names of the fonts embedded in a PDF (WeasyPrint compresses its object streams)."""
    names = set()
    # Each stream by its /Length: a compressed stream may itself end in a byte a pattern would eat.
    for match in re.finditer(rb"/Length (\d+)[^>]*>>\s*stream\r?\n", pdf):
        stream = pdf[match.end() : match.end() + int(match.group(1))]
        try:
            text = zlib.decompress(stream)
        except zlib.error:
            continue
        names.update(
            name.decode().split("+")[-1] for name in re.findall(rb"/BaseFont\s*/([A-Za-z+-]+)", text)
        )
    return names


def test_print_list_and_selected_run(app, client, region):
    run = _run(total=1, result="error", errors=1)
    _entry(run, region.a.mo, level="error", packet_id="PRINT-1", payload=SEMD_PACKET, message="Ошибка ФЛК")
    _run(total=2, minutes_ago=40)
    db.session.commit()
    login(client, region.central)

    response = client.get("/journal/print", query_string={"what": "list", "service": SERVICE})
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF")
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('inline; filename="Zhurnal_raboty_servisov_cleanup_login_failures_')
    assert "filename*=UTF-8''%D0%96%D1%83%D1%80%D0%BD%D0%B0%D0%BB" in disposition
    assert "DejaVu-Sans" in _pdf_fonts(response.data)  # Cyrillic needs a font that has it

    html = client.get(
        "/journal/print",
        query_string={"what": "list", "service": SERVICE, "status": "error", "format": "html"},
    ).get_data(as_text=True)
    assert f"Лог запусков сервиса «{TITLE}»" in html and "Результат: Завершено с ошибкой" in html
    assert 'Стр. " counter(page) " из " counter(pages)' in html and "DejaVu Sans" in html
    assert region.central.full_name in html and "Запусков в отчёте: 1" in html

    response = client.get("/journal/print", query_string={"what": "run", "run": run.id})
    assert response.status_code == 200 and response.data.startswith(b"%PDF")
    html = client.get("/journal/print", query_string={"what": "run", "run": run.id, "format": "html"})
    text = unescape(re.sub(r"<[^>]+>", "", html.get_data(as_text=True)))
    assert "PRINT-1" in text and "localUid: 5f0c6a1e-0001" in text and "Ошибка ФЛК" in text
    assert f"Запуск сервиса «{TITLE}» от {run.started_at:%d.%m.%Y %H:%M:%S}" in text

    # without a choice the print link leads back to the journal
    assert client.get("/journal/print", query_string={"service": SERVICE}).status_code == 303


def test_lines_without_work_items_count_their_subjects_as_packets(client, region):
    """ТФОМС files have no work items: a run counts each file (subject) once, errors if any line failed,
    and an МО user of a region-wide run sees only their МО's files."""
    from portal.exchange.delivery import journal
    from portal.exchange.runs import recording
    from portal.tfoms.channel import CHANNEL

    with recording("tfoms_ident_answers") as tally:
        for mo, package_id, level in ((region.a.mo, 1, "ok"), (region.a.mo, 2, "error"), (region.b.mo, 3, "ok")):
            journal(CHANNEL, None, "Загрузка ответа", f"Пакет {package_id}", level="info",
                    subject=("tfoms_ident_package", package_id), mo_id=mo.id, packet_id=f"P{package_id}")
            journal(CHANNEL, None, "Загрузка ответа", f"Пакет {package_id} обработан", level=level,
                    subject=("tfoms_ident_package", package_id), mo_id=mo.id, packet_id=f"P{package_id}")
        run_id = tally.run_id
    run = db.session.get(ServiceRun, run_id)
    assert (run.total, run.errors, run.result) == (3, 1, "error")

    login(client, region.a.users["mo_admin"])
    page = _get(client, {"service": "tfoms_ident_answers"}).get_data(as_text=True)
    assert _cells(_row(page, run_id))[3:] == [["Завершено", "с", "ошибкой"], ["2"], ["1"]]
    login(client, region.b.users["mo_admin"])
    page = _get(client, {"service": "tfoms_ident_answers"}).get_data(as_text=True)
    assert _cells(_row(page, run_id))[3:] == [["Успешно"], ["1"], ["0"]]
