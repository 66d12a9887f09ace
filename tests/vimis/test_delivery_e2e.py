"""The whole ВИМИС path over real HTTP: intake API → trigger → SEMD → signed sendDocument to
the simulator → sendResult callback to the live portal → «Прошел ФЛК»; and what happens when
data are wrong, ВИМИС is down or slow, or a worker dies mid-way.

The portal runs on a live HTTP server over a file SQLite (or PostgreSQL) so the simulator
can call it back; jobs run by hand through `run_job`, as `flask jobs run` does.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests
from werkzeug.serving import make_server

from jobs.scheduler import run_job
from portal.admin.services import ensure_demo_certificate, set_setting
from portal.clinical.demo import ensure_demo_token
from portal.exchange import delivery
from portal.exchange.models import QUEUED, UNKNOWN, JournalEntry, ServiceRun, WorkItem
from portal.extensions import db
from portal.models_base import utcnow
from portal.vimis import services
from portal.vimis.channel import CHANNEL
from portal.vimis.models import DELIVERED, ERROR, PASSED, Semd
from simulators import start_simulators
from tests import factories
from tests.conftest import DATABASES, _reset_postgres, make_app

TOKEN = "e2e-intake-token"


@pytest.fixture(params=DATABASES)
def stack(request, tmp_path):
    """Live portal + simulators host, settings pointing each at the other."""
    database = request.param
    overrides = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'e2e.db'}"} if database == "sqlite" else {}
    app = make_app(database, **overrides)
    sims, sims_url = start_simulators(0, config={"VIMIS_RESULT_DELAY": 0})
    portal_server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=portal_server.serve_forever, daemon=True).start()
    portal_url = f"http://127.0.0.1:{portal_server.server_port}"
    with app.app_context():
        if database == "postgresql":
            _reset_postgres()
        else:
            db.create_all()
        set_setting("vimis.endpoint", f"{sims_url}/vimis/ws")
        set_setting("vimis.kas_endpoint", f"{sims_url}/vimis/kas")
        set_setting("vimis.callback_url", f"{portal_url}/vimis/callback")
        set_setting("vimis.timeout", "2")
        ensure_demo_certificate("vimis", "Тест: подпись запросов ВИМИС")
        ensure_demo_token(TOKEN)
        db.session.commit()
        yield SimpleNamespace(app=app, sims=sims_url, portal=portal_url)
        db.session.remove()
        portal_server.shutdown()
        sims.shutdown()
        db.engine.dispose()


def _post(stack, records: list[dict]) -> dict:
    answer = requests.post(f"{stack.portal}/api/v1/records", json={"records": records},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert all(r["status"] == "stored" for r in results), results
    return answer.json()


def _region(oid: str = "1.2.643.5.1.13.13.12.2.35.3501", address: str | None = "г. Вологда, ул. Мира, д. 1") -> list:
    return [
        {"type": "mo", "id": "e2e-mo", "name": "БУЗ ВО «Вологодский родильный дом»", "short_name": "ВРД",
         "registry_number": "350101", "f003_code": "350101", "oid": oid, "ogrn": "1023500000001",
         "address": "г. Вологда, ул. Мира, д. 2"},
        {"type": "department", "id": "e2e-dep", "mo": "e2e-mo", "name": "Женская консультация", "kind": "outpatient"},
        {"type": "staff", "id": "e2e-doc", "mo": "e2e-mo", "last_name": "Смирнова", "first_name": "Ольга",
         "middle_name": "Михайловна", "snils": factories.valid_snils(701), "position": "врач-акушер-гинеколог",
         "category": "doctor"},
        {"type": "patient", "id": "e2e-pat", "mo": "e2e-mo", "last_name": "Иванова", "first_name": "Мария",
         "middle_name": "Петровна", "sex": "F", "birth_date": "1994-05-06", "snils": factories.valid_snils(702),
         "enp": factories.valid_enp(703), "registration_address": address, "residence_address": address,
         "policy": {"kind": "Э", "number": factories.valid_enp(703), "insurer": "35001"},
         "document": {"kind": "14", "series": "1904", "number": "123456", "issued_on": "2014-06-01",
                      "issuer": "УМВД России по Вологодской области"}},
        {"type": "pregnancy", "id": "e2e-preg", "patient": "e2e-pat", "mo": "e2e-mo",
         "registered_on": "2026-09-01", "weeks_at_registration": 8},
    ]


def _exam(event_id: str = "e2e-ev-1") -> dict:
    return {"type": "event", "id": event_id, "kind": "exam_primary", "patient": "e2e-pat", "pregnancy": "e2e-preg",
            "mo": "e2e-mo", "department": "e2e-dep", "doctor": "e2e-doc", "at": "2026-11-20T10:00:00",
            "care_conditions": "3", "data": {"diagnosis": "Z34.0"}}


def _semd(event_source_id: str = "e2e-ev-1") -> Semd:
    db.session.expire_all()
    from portal.clinical.models import ClinicalEvent

    return db.session.scalars(
        db.select(Semd).join(ClinicalEvent, ClinicalEvent.id == Semd.event_id)
        .where(ClinicalEvent.source_id == event_source_id)
    ).one()


def _wait_for_status(status: str, source_id: str = "e2e-ev-1", timeout: float = 15.0) -> None:
    """Wait for the SEMD's status (the callback arrives on another thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _semd(source_id).status == status:
            return
        time.sleep(0.1)
    semd = _semd(source_id)
    raise AssertionError(f"статус {semd.status} вместо {status}: {semd.last_message}")


def _documents(stack) -> list[dict]:
    return requests.get(f"{stack.sims}/vimis/_documents", timeout=5).json()


def _control(stack, **payload) -> None:
    requests.post(f"{stack.sims}/vimis/_control", json=payload, timeout=5).raise_for_status()


def _journal(semd: Semd) -> list[str]:
    return db.session.scalars(
        db.select(JournalEntry.message).where(JournalEntry.subject_type == "semd", JournalEntry.subject_id == semd.id)
        .order_by(JournalEntry.id)
    ).all()


def test_an_event_from_the_api_passes_flk_by_itself(stack):
    _post(stack, [*_region(), _exam()])
    semd = _semd()
    assert (semd.semd_type, semd.send_number, semd.last_message) == (5, 1, "Появилось триггерное мероприятие")
    # The same event again through the API: no second SEMD.
    _post(stack, [_exam()])
    assert db.session.scalar(db.select(db.func.count()).select_from(Semd)) == 1

    run_job(stack.app, "vimis_send")
    _wait_for_status(PASSED)
    semd = _semd()
    assert semd.last_message == "Версия 1 СЭМД5 прошла ФЛК"
    journal = _journal(semd)
    assert journal[0] == "Появилось триггерное мероприятие"
    assert "Версия 1 СЭМД5: отправка в ВИМИС «АКиНЕО»" in journal
    assert journal[-1] == "Версия 1 СЭМД5 прошла ФЛК"
    version = semd.versions[0]
    assert version.msg_id and version.xml.startswith("<?xml") and version.result == PASSED
    # ВИМИС got one signed document of docType 5 from us, with our MessageID.
    [document] = _documents(stack)
    assert (document["docType"], document["msg_id"], document["status"]) == (5, version.msg_id, 1)
    assert document["message_id"] == db.session.scalars(db.select(WorkItem.request_id)).one()
    run = db.session.scalars(db.select(ServiceRun).where(ServiceRun.service == "vimis_send")).one()
    assert (run.total, run.errors, run.result) == (1, 0, "ok")


def test_missing_data_is_named_then_fixed_and_version_2_passes(stack):
    _post(stack, [*_region(address=None), _exam()])
    run_job(stack.app, "vimis_send")
    semd = _semd()
    assert semd.status == ERROR
    assert "Нет адреса регистрации пациента" in semd.last_message
    assert _documents(stack) == []  # nothing went out with the gap
    # The source MIS fixes the patient; a user sends the SEMD again (V-12).
    _post(stack, _region())
    user = factories.make_user("doctor", semd.mo)
    services.release([semd], user)
    db.session.commit()
    assert _semd().status == "queued" and _semd().send_number == 1  # version 1 never left: same number
    run_job(stack.app, "vimis_send")
    _wait_for_status(PASSED)


def test_a_flk_error_from_vimis_then_data_fixed_and_version_2_passes(stack):
    # Our checks accept any OID; ВИМИС's ФЛК (stage 3) wants an ФРМО OID.
    _post(stack, [*_region(oid="1.2.643.2.99.1"), _exam()])
    run_job(stack.app, "vimis_send")
    _wait_for_status(ERROR)
    semd = _semd()
    assert semd.last_message.startswith("Версия 1 СЭМД5 не прошла ФЛК: ФЛК: Этап 3")
    _post(stack, _region())  # the МО's OID corrected at the source
    services.release([semd], factories.make_user("doctor", semd.mo))
    db.session.commit()
    assert _semd().send_number == 2
    run_job(stack.app, "vimis_send")
    _wait_for_status(PASSED)
    assert _semd().last_message == "Версия 2 СЭМД5 прошла ФЛК"
    assert [d["version"] for d in _documents(stack)] == ["1", "2"]
    assert len({d["setId"] for d in _documents(stack)}) == 1  # two versions of one document


def test_vimis_down_the_semd_waits_and_is_delivered_when_it_returns(stack):
    _post(stack, [*_region(), _exam()])
    _control(stack, mode="down")
    run_job(stack.app, "vimis_send")
    semd = _semd()
    assert semd.status == "queued" and "ВИМИС ответил ошибкой HTTP 503" in semd.last_message
    run = db.session.scalars(db.select(ServiceRun)).one()
    assert run.result == "error" and run.errors == 1
    _control(stack, mode="normal")
    item = db.session.scalars(db.select(WorkItem)).one()
    assert item.state == QUEUED and item.next_attempt_at > utcnow()
    with stack.app.app_context():
        delivery.send_due(CHANNEL, now=item.next_attempt_at + timedelta(seconds=1))
    _wait_for_status(PASSED)
    assert len(_documents(stack)) == 1


def test_a_lost_answer_is_resolved_by_check_status_without_a_duplicate(stack):
    _post(stack, [*_region(), _exam()])
    _control(stack, mode="slow", delay=3)  # accepted and stored, answer after our 2 s timeout
    run_job(stack.app, "vimis_send")
    item = db.session.scalars(db.select(WorkItem)).one()
    assert item.state == UNKNOWN
    assert len(_documents(stack)) == 1
    _control(stack, mode="normal")
    with stack.app.app_context():
        delivery.send_due(CHANNEL, now=item.next_attempt_at + timedelta(seconds=1))
    db.session.expire_all()
    assert _semd().status in (DELIVERED, PASSED)
    _wait_for_status(PASSED)
    assert len(_documents(stack)) == 1  # one version, one document in ВИМИС


def test_a_worker_killed_after_claiming_delivers_exactly_once(stack):
    _post(stack, [*_region(), _exam()])
    with stack.app.app_context():
        claimed = delivery.claim(CHANNEL, (QUEUED,), utcnow(), 10)  # … and the worker dies
    assert len(claimed) == 1
    run_job(stack.app, "vimis_send")
    assert _documents(stack) == []  # the lease still holds
    with stack.app.app_context():
        delivery.send_due(CHANNEL, now=utcnow() + timedelta(seconds=CHANNEL.lease_seconds + 1))
    _wait_for_status(PASSED)
    assert len(_documents(stack)) == 1


def test_polling_covers_a_callback_that_never_comes(stack):
    requests.post(f"{stack.sims}/vimis/_settings", json={"callbacks": False}, timeout=5).raise_for_status()
    _post(stack, [*_region(), _exam()])
    run_job(stack.app, "vimis_send")
    assert _semd().status == DELIVERED
    time.sleep(0.2)
    with stack.app.app_context():
        delivery.poll_due(CHANNEL, now=utcnow() + timedelta(seconds=CHANNEL.poll_seconds + 1))
    assert _semd().status == PASSED
    assert _semd().last_message == "Версия 1 СЭМД5 прошла ФЛК"


def test_kas_notices_of_one_case_share_the_number_from_the_case_service(stack):
    def notice(event_id: str, status: str) -> dict:
        return {"type": "event", "id": event_id, "kind": "kas_notice", "patient": "e2e-pat", "pregnancy": "e2e-preg",
                "mo": "e2e-mo", "department": "e2e-dep", "doctor": "e2e-doc", "at": "2026-11-21T08:00:00",
                "care_conditions": "1", "data": {"kas_status": status, "criterion": "Эклампсия"}}

    _post(stack, [*_region(), notice("kas-1", "put_on_control"), notice("kas-2", "continue_control")])
    run_job(stack.app, "vimis_send")
    first, second = _semd("kas-1"), _semd("kas-2")
    assert first.status != ERROR and first.kas_case_number, (first.status, first.last_message)
    assert first.kas_case_number and first.kas_case_number == second.kas_case_number
    assert first.kas_case_number.startswith("26-35-")
    for source_id in ("kas-1", "kas-2"):
        _wait_for_status(PASSED, source_id)
        assert first.kas_case_number in _semd(source_id).versions[0].xml


def test_two_sending_workers_deliver_every_semd_exactly_once(stack):
    assert CHANNEL.workers >= 2
    _post(stack, [*_region(), *(_exam(f"e2e-many-{n}") for n in range(30))])
    run_job(stack.app, "vimis_send")
    documents = _documents(stack)
    assert len(documents) == 30 and len({d["message_id"] for d in documents}) == 30
    run = db.session.scalars(db.select(ServiceRun).where(ServiceRun.service == "vimis_send")).one()
    assert (run.total, run.errors, run.result) == (30, 0, "ok")
    for n in range(30):
        _wait_for_status(PASSED, f"e2e-many-{n}")
