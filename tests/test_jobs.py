"""Scheduled jobs: `flask jobs list|run`, the cleanup job, the one-process lock, the scheduler set-up."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from jobs.scheduler import JOBS, acquire_services_lock, create_scheduler, register_job, release_services_lock
from portal.auth.models import LoginFailure
from portal.extensions import db
from portal.models_base import utcnow
from tests import factories


def _invoke(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def test_jobs_list_shows_name_title_and_interval(app):
    result = _invoke(app, "jobs", "list")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("cleanup_login_failures"))
    assert "Очистка журнала неудачных входов" in line and "каждые 1 ч" in line


def test_interval_comes_from_config_when_set(app):
    app.config["JOB_CLEANUP_LOGIN_FAILURES_SECONDS"] = 120
    result = _invoke(app, "jobs", "list")
    assert "Очистка журнала неудачных входов  (каждые 2 мин)" in result.output


def test_cleanup_job_deletes_old_login_failures_and_keeps_recent(app):
    window = app.config["LOGIN_WINDOW_SECONDS"]
    now = utcnow()
    db.session.add_all(
        [
            LoginFailure(login="old", ip="10.0.0.1", at=now - timedelta(seconds=window + 60)),
            LoginFailure(login="older", ip="10.0.0.1", at=now - timedelta(days=3)),
            LoginFailure(login="recent", ip="10.0.0.2", at=now - timedelta(seconds=window // 2)),
        ]
    )
    db.session.commit()

    result = _invoke(app, "jobs", "run", "cleanup_login_failures")

    assert result.exit_code == 0, result.output
    assert "Задание «Очистка журнала неудачных входов» выполнено: удалено записей: 2" in result.output
    db.session.expire_all()
    assert db.session.scalars(db.select(LoginFailure.login)).all() == ["recent"]


def test_recent_failures_still_throttle_after_cleanup(app, client, region):
    """The cleanup must not forget failures that still count: the lock-out stays."""
    user = region.a.users["doctor"]
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = {"login": user.login, "password": "wrong", "csrf_token": token}
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        assert client.post("/login", data=form).status_code == 401
    assert _invoke(app, "jobs", "run", "cleanup_login_failures").exit_code == 0
    page = client.post("/login", data={**form, "password": factories.PASSWORD})
    assert page.status_code == 429 and "Слишком много неудачных попыток" in page.get_data(as_text=True)


def test_unknown_job_is_refused_in_russian_with_exit_code_1(app):
    result = _invoke(app, "jobs", "run", "no_such_job")
    assert result.exit_code == 1
    assert "Задание «no_such_job» не найдено" in result.stderr and "cleanup_login_failures" in result.stderr


def test_failing_job_rolls_back_and_exits_1(app):
    def broken_job():
        db.session.add(LoginFailure(login="half-done", ip="10.0.0.9"))
        db.session.flush()
        raise RuntimeError("сервис недоступен")

    register_job("test_broken", "Сломанное задание", broken_job, interval_seconds=60)
    try:
        result = _invoke(app, "jobs", "run", "test_broken")
    finally:
        JOBS.pop("test_broken")
    assert result.exit_code == 1
    assert "Задание «test_broken» завершилось ошибкой: сервис недоступен" in result.stderr
    db.session.expire_all()
    assert db.session.scalar(db.select(LoginFailure).where(LoginFailure.login == "half-done")) is None


def test_second_process_cannot_take_the_services_lock(tmp_path):
    first = acquire_services_lock(tmp_path)
    assert first is not None
    try:
        assert acquire_services_lock(tmp_path) is None  # a separate open file: refused while held
    finally:
        release_services_lock(first)
    again = acquire_services_lock(tmp_path)
    assert again is not None
    release_services_lock(again)


def test_scheduler_registers_each_job_once_with_safe_options(app):
    scheduler = create_scheduler(app)  # not started: tests never run the scheduler
    job = scheduler.get_job("cleanup_login_failures")
    assert job is not None
    assert job.name == "Очистка журнала неудачных входов"
    assert job.max_instances == 1 and job.coalesce is True and job.misfire_grace_time > 0
    assert job.trigger.interval == timedelta(hours=1)


def test_duplicate_job_name_from_another_function_is_refused():
    with pytest.raises(ValueError):
        register_job("cleanup_login_failures", "Другое", lambda: None, interval_seconds=60)


def test_tidy_service_runs_keeps_runs_with_packets_and_closes_dead_ones(app):
    from jobs.housekeeping import tidy_service_runs
    from portal.exchange.models import RUN_ERROR, RUN_OK, RUN_RUNNING, ServiceRun

    old = utcnow() - timedelta(days=30)
    empty = ServiceRun(service="vimis_send", started_at=old, finished_at=old, result=RUN_OK, total=0)
    busy = ServiceRun(service="vimis_send", started_at=old, finished_at=old, result=RUN_OK, total=5)
    fresh = ServiceRun(service="vimis_send", result=RUN_OK, total=0)
    dead = ServiceRun(service="vimis_send", started_at=old, result=RUN_RUNNING)
    db.session.add_all([empty, busy, fresh, dead])
    db.session.commit()
    ids = {"empty": empty.id, "busy": busy.id, "fresh": fresh.id, "dead": dead.id}
    assert tidy_service_runs() == "прерванных запусков отмечено: 1, пустых запусков удалено: 1"
    db.session.expire_all()
    assert db.session.get(ServiceRun, ids["empty"]) is None
    assert db.session.get(ServiceRun, ids["busy"]) is not None and db.session.get(ServiceRun, ids["fresh"]) is not None
    assert db.session.get(ServiceRun, ids["dead"]).result == RUN_ERROR


def test_starting_the_scheduler_closes_runs_its_predecessor_left_running(app):
    from jobs.scheduler import start_scheduler
    from portal.exchange.models import RUN_ERROR, RUN_RUNNING, ServiceRun

    scheduled = ServiceRun(service="vimis_send", result=RUN_RUNNING)
    manual = ServiceRun(service="vimis_send", result=RUN_RUNNING, manual=True)  # a web worker's thread may own it
    db.session.add_all([scheduled, manual])
    db.session.commit()
    ids = scheduled.id, manual.id
    scheduler = start_scheduler(app)
    scheduler.shutdown(wait=False)
    db.session.expire_all()
    closed, still = (db.session.get(ServiceRun, i) for i in ids)
    assert closed.result == RUN_ERROR and "прерван" in closed.message and closed.finished_at is not None
    assert still.result == RUN_RUNNING
