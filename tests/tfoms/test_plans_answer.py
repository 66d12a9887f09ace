"""The ТФОМС error answer OSHIB_PR to a PROF file: upload, inbox job, refusals that change nothing."""

from __future__ import annotations

import html

import pytest

from jobs.scheduler import run_job
from portal.clinical.models import PlanPerson
from portal.exchange.models import JournalEntry, ServiceRun
from portal.extensions import db
from portal.tfoms.channel import PACKET_PROF_ERRORS
from portal.tfoms.files import inbox_dir, tfoms_dir
from portal.tfoms.models import PlanExport
from portal.tfoms.plans import process_prof_inbox
from tests.conftest import login
from tests.tfoms.plans_support import exported, oshib_pr, setup_plans, statuses, upload, zipped


@pytest.fixture
def data(region):
    """МО «a» has exported its new people (two records: Иванова, Петрова) — all «Отправлен в ТФОМС»."""
    data = setup_plans(region)
    data.export = exported(region.client, region.a.users["mo_admin"], [data.plan])
    return data


@pytest.fixture
def region(region, client):
    region.client = client
    return region


def _export(data) -> PlanExport:
    db.session.expire_all()
    return db.session.get(PlanExport, data.export.id)


def _unchanged(data) -> None:
    assert statuses(*data.people) == ["sent", "sent", "sent", "sent", "accepted"]
    export = _export(data)
    assert export.answer_loaded_at is None and export.errors_count == 0


def test_answer_marks_errors_and_accepts_the_rest(client, region, data):
    answer = oshib_pr(f"{data.export.file_name}.XML", [(12, 2, "Неверный ЕНП"), (7, 2, None)])
    response = upload(client, "ERR_PROF.xml", answer, htmx=True)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f"к файлу {data.export.file_name} загружен: с ошибкой — 1, принято ТФОМС — 1" in page
    db.session.expire_all()
    first, second = (db.session.get(PlanPerson, p.id) for p in data.people[:2])
    assert first.status == "accepted" and first.status_text is None
    assert second.status == "error" and second.status_text == "12: Неверный ЕНП; 7"
    # people sent in other files are not touched
    assert statuses(*data.people[2:]) == ["sent", "sent", "accepted"]
    export = _export(data)
    assert export.answer_loaded_at is not None and export.errors_count == 1
    assert "Ответ загружен" in page and "ошибок: 1" in page  # the list of files, out of band
    people = client.get(f"/tfoms/plans/{data.plan.id}/people?status=error", headers={"HX-Request": "true"})
    assert "12: Неверный ЕНП; 7" in people.get_data(as_text=True)


def test_zipped_answer_without_errors_accepts_everyone(client, region, data):
    answer = zipped("ERR_PROF.XML", oshib_pr(data.export.file_name))
    response = upload(client, "ERR_PROF.zip", answer)
    assert response.status_code == 303
    assert statuses(*data.people[:2]) == ["accepted", "accepted"]
    page = client.get("/tfoms/plans").get_data(as_text=True)
    assert "с ошибкой — 0, принято ТФОМС — 2" in page and "ошибок нет" in page


def test_unknown_record_number_is_listed_and_the_rest_applies(client, region, data):
    answer = oshib_pr(data.export.file_name, [(5, 1, "Нет полиса"), (5, 9, "Нет полиса")])
    page = upload(client, "ERR.xml", answer, htmx=True).get_data(as_text=True)
    assert "NOMER_Z 9: такой записи нет в файле" in page
    assert statuses(*data.people[:2]) == ["error", "accepted"]


def test_answer_is_a_run_of_the_prof_service_in_the_journal(client, region, data):
    upload(client, "ERR.xml", oshib_pr(data.export.file_name, [(3, 1, "Ошибка")]))
    run = db.session.scalars(
        db.select(ServiceRun).where(ServiceRun.service == "tfoms_prof").order_by(ServiceRun.id)
    ).all()[-1]
    entry = db.session.scalars(db.select(JournalEntry).where(JournalEntry.run_id == run.id)).one()
    assert entry.packet_type == PACKET_PROF_ERRORS and entry.packet_id == "ERR_PROF"
    assert entry.level == "error" and "<OSHIB>3</OSHIB>" in entry.answer
    assert run.total == 1 and run.errors == 1 and run.manual


@pytest.mark.parametrize(
    ("name", "payload", "message"),
    [
        (
            "ERR.xml",
            lambda d: oshib_pr("PROF_M000000T35_99019"),
            "Файл PROF_M000000T35_99019 не найден среди выгруженных",
        ),
        ("ERR.xml", lambda d: b"<OSHIB_PR><VERSION>1.0</VERSION>", "не является корректным XML"),
        (
            "ERR.xml",
            lambda d: oshib_pr(d.export.file_name, [(1, 1, "Ошибка")]).replace(
                b' encoding="windows-1251"', b""
            ),
            "Проверьте кодировку файла",
        ),
        (
            "ERR.xml",
            lambda d: oshib_pr(d.export.file_name, version="2.0"),
            "не соответствует схеме протокола ошибок",
        ),
        (
            "ERR.xml",
            lambda d: oshib_pr(d.export.file_name).replace(b"<VERSION>1.0</VERSION>", b""),
            "не соответствует схеме протокола ошибок",
        ),
        ("ERR.xml", lambda d: b"<ZL_LIST/>", "корневой элемент <ZL_LIST> вместо <OSHIB_PR>"),
        ("ERR.zip", lambda d: b"not a zip at all", "не является zip-архивом"),
        (
            "ERR.zip",
            lambda d: zipped("a.xml", oshib_pr(d.export.file_name), ("b.xml", b"<x/>")),
            "ровно один XML-файл",
        ),
        (
            "ERR.txt",
            lambda d: oshib_pr(d.export.file_name),
            "ожидается протокол ошибок в формате .xml или .zip",
        ),
    ],
    ids=[
        "unknown",
        "malformed",
        "encoding",
        "version",
        "schema",
        "root",
        "not-zip",
        "two-files",
        "extension",
    ],
)
def test_refused_answer_changes_nothing(client, region, data, name, payload, message):
    response = upload(client, name, payload(data), htmx=True)
    page = html.unescape(response.get_data(as_text=True))
    assert message in page and 'class="flash flash-error"' in page
    _unchanged(data)
    entry = db.session.scalars(db.select(JournalEntry).order_by(JournalEntry.id.desc())).first()
    assert entry.level == "error" and "Протокол ошибок не загружен" in entry.message


def test_answer_loaded_twice_is_refused(client, region, data):
    upload(client, "ERR.xml", oshib_pr(data.export.file_name, [(1, 1, "Ошибка")]))
    data.people[0].status = "sent"  # as if someone re-sent it: a second load must not touch it
    db.session.commit()
    page = upload(client, "ERR.xml", oshib_pr(data.export.file_name), htmx=True).get_data(as_text=True)
    assert f"Протокол ошибок к файлу {data.export.file_name} уже загружен" in page
    assert statuses(*data.people[:2]) == ["sent", "accepted"]


def test_mo_user_cannot_load_an_answer_to_another_mo_file(client, region, data):
    login(client, region.b.users["mo_admin"])
    page = upload(client, "ERR.xml", oshib_pr(data.export.file_name), htmx=True).get_data(as_text=True)
    assert f"Файл {data.export.file_name} не найден среди выгруженных" in page
    _unchanged(data)


def test_central_admin_loads_an_answer_of_any_mo(client, region, data):
    login(client, region.central)
    upload(client, "ERR.xml", oshib_pr(data.export.file_name))
    assert statuses(*data.people[:2]) == ["accepted", "accepted"]


def test_upload_may_exceed_the_app_request_limit(client, region, data, app):
    answer = oshib_pr(data.export.file_name, [(1, 1, "Ошибка " + "я" * 400)])
    app.config["MAX_CONTENT_LENGTH"] = 300  # the app's own limit is smaller than the answer
    response = upload(client, "ERR.xml", answer, htmx=True)
    assert response.status_code == 200 and "загружен" in response.get_data(as_text=True)


def test_answer_over_the_tfoms_limit_is_refused(client, region, data, app):
    app.config["TFOMS_MAX_UPLOAD_BYTES"] = 200
    answer = oshib_pr(data.export.file_name, [(1, 1, "Ошибка " + "я" * 400)])
    page = upload(client, "ERR.xml", answer, htmx=True).get_data(as_text=True)
    assert "Файл ERR.xml слишком велик" in page
    _unchanged(data)


def test_empty_upload_asks_for_a_file(client, region, data):
    page = upload(client, "", b"", htmx=True).get_data(as_text=True)
    assert "Выберите файл протокола ошибок" in page


# --- the inbox --------------------------------------------------------------------------------


def test_inbox_job_loads_answers_and_moves_files(app, region, data):
    inbox = inbox_dir()
    (inbox / "PROF_ERR_1.zip").write_bytes(
        zipped("PROF_ERR_1.XML", oshib_pr(data.export.file_name, [(4, 2, "Дубль")]))
    )
    (inbox / "ERR_broken.xml").write_bytes(b"<OSHIB_PR>")
    (inbox / "other.DBF").write_bytes(b"not ours")
    result = run_job(app, "tfoms_prof")
    assert result == "Протоколов ошибок загружено: 1, отклонено: 1"
    assert statuses(*data.people[:2]) == ["accepted", "error"]
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["other.DBF"]
    loaded = [p.name for p in tfoms_dir("prof_answers", "loaded").iterdir()]
    rejected = [p.name for p in tfoms_dir("prof_answers", "rejected").iterdir()]
    assert len(loaded) == 1 and loaded[0].endswith("_PROF_ERR_1.zip")
    assert len(rejected) == 1 and rejected[0].endswith("_ERR_broken.xml")
    run = db.session.scalars(
        db.select(ServiceRun).where(ServiceRun.service == "tfoms_prof", ServiceRun.manual.is_(False))
    ).one()
    assert run.total == 2 and run.errors == 2 and run.result == "error"
    messages = db.session.scalars(db.select(JournalEntry.message).where(JournalEntry.run_id == run.id)).all()
    assert any("не является корректным XML" in m for m in messages)
    assert any("с ошибкой — 1, принято ТФОМС — 1" in m for m in messages)
    assert run_job(app, "tfoms_prof") == "Новых протоколов ошибок нет"


def test_inbox_run_for_one_mo_leaves_other_files(app, region, data):
    inbox = inbox_dir()
    (inbox / "ERR_a.xml").write_bytes(oshib_pr(data.export.file_name))
    (inbox / "ERR_unknown.xml").write_bytes(oshib_pr("PROF_M000000T35_99019"))
    assert (
        process_prof_inbox(mo_id=region.b.mo.id)
        == "Протоколов ошибок загружено: 0, отклонено: 0, оставлено для других МО: 2"
    )
    assert statuses(*data.people[:2]) == ["sent", "sent"]
    assert process_prof_inbox(mo_id=region.a.mo.id).startswith("Протоколов ошибок загружено: 1, отклонено: 0")
    assert statuses(*data.people[:2]) == ["accepted", "accepted"]
    assert [p.name for p in inbox.iterdir() if p.is_file()] == ["ERR_unknown.xml"]
