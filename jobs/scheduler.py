"""The job registry, the one-process lock and the APScheduler set-up.

Jobs are module-level functions registered with `register_job`. Each runs the same way from
the scheduler and from `flask jobs run NAME`: inside an app context, one commit at the end,
a rollback and a log line when it fails. The scheduler itself starts only from `wsgi.py`
(never in `create_app` or in tests) and only in the process that holds the services lock, so
several gunicorn workers still run each job once.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import inspect
import logging
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from portal.extensions import db

log = logging.getLogger("jobs")

LOCK_FILE = "services.lock"
# Modules of this package that are machinery, not jobs.
_NOT_JOB_MODULES = {"scheduler", "cli"}


@dataclass(frozen=True)
class JobDef:
    """A scheduled job: its name for the CLI, its Russian title, what it runs and how often.

    The interval is `interval_seconds` unless the app config key `interval_config` or the
    administrator's setting `interval_setting` (portal.admin.registry) gives another one.
    """

    name: str
    title_ru: str
    func: Callable[[], Any]
    interval_seconds: int
    interval_config: str | None = None
    interval_setting: str | None = None


JOBS: dict[str, JobDef] = {}


def register_job(
    name: str,
    title_ru: str,
    func: Callable[[], Any],
    interval_seconds: int,
    *,
    interval_config: str | None = None,
    interval_setting: str | None = None,
) -> JobDef:
    """Add a job to the registry; a feature calls this at import time of its jobs module."""
    existing = JOBS.get(name)
    if existing is not None and _qualname(existing.func) != _qualname(func):
        raise ValueError(f"job {name!r} is already registered by {_qualname(existing.func)}")
    if interval_seconds <= 0:
        raise ValueError("interval_seconds must be positive")
    job = JobDef(name, title_ru, func, interval_seconds, interval_config, interval_setting)
    JOBS[name] = job
    return job


def _qualname(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def load_jobs() -> dict[str, JobDef]:
    """Import every job module so that its `register_job` calls run.

    Job modules are the modules of this package (jobs/housekeeping.py, …) and a `jobs`
    module in any feature package (portal/vimis/jobs.py, …): a new integration adds its
    module and nothing here changes.
    """
    import jobs
    import portal

    for info in pkgutil.iter_modules(jobs.__path__):
        if info.name not in _NOT_JOB_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"jobs.{info.name}")
    for info in pkgutil.iter_modules(portal.__path__):
        if info.ispkg and (Path(portal.__path__[0]) / info.name / "jobs.py").exists():
            importlib.import_module(f"portal.{info.name}.jobs")
    return JOBS


def job_interval(app: Flask, job: JobDef) -> int:
    """The job's interval in seconds: administrator's setting, else app config, else default."""
    if job.interval_setting:
        try:
            from portal.admin.services import get_setting

            with app.app_context():
                value = get_setting(job.interval_setting)
            if value and int(value) > 0:
                return int(value)
        except Exception:  # an unmigrated database or a bad value must not stop the scheduler
            log.warning("Задание %s: настройка %s не прочитана, интервал по умолчанию",
                        job.name, job.interval_setting, exc_info=True)
    if job.interval_config and app.config.get(job.interval_config):
        return int(app.config[job.interval_config])
    return job.interval_seconds


class UnknownJob(KeyError):
    pass


def run_job(app: Flask, name: str, *, mo_id: int | None = None, manual: bool = False,
            user_id: int | None = None) -> Any:
    """Run one job now, recorded as a service run (T-11): app context → job → one commit.

    `mo_id` limits the run to one МО (a manual run by an МО administrator); jobs that work
    per МО take it as a keyword argument. On error: rollback, the run marked «Завершено с
    ошибкой», a log line, and the exception re-raised.
    """
    from portal.exchange.runs import recording

    job = load_jobs().get(name)
    if job is None:
        raise UnknownJob(name)
    kwargs = {"mo_id": mo_id} if "mo_id" in inspect.signature(job.func).parameters else {}
    with app.app_context():
        try:
            with recording(name, mo_id=mo_id, manual=manual, user_id=user_id):
                result = job.func(**kwargs)
                db.session.commit()
        except Exception:
            db.session.rollback()
            log.exception("Задание «%s» (%s) завершилось ошибкой", job.title_ru, job.name)
            raise
    log.debug("Задание «%s» (%s) выполнено%s", job.title_ru, job.name, f": {result}" if result else "")
    return result


def _scheduled_run(app: Flask, name: str) -> None:
    """What APScheduler calls: a failure is logged by run_job and must not kill the scheduler."""
    with contextlib.suppress(Exception):  # already logged with its traceback
        run_job(app, name)


def acquire_services_lock(instance_path: str | os.PathLike[str]) -> IO[str] | None:
    """Take the lock that says "this process runs the scheduler and the simulators".

    Non-blocking `flock` on a file under the instance directory: the first process gets it and
    keeps the open file for its lifetime (the OS releases it when the process ends, so a worker
    gunicorn replaces hands it to its successor); every other process gets None.
    """
    path = Path(instance_path) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 — kept open on purpose: the lock lives with it
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def release_services_lock(handle: IO[str]) -> None:
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


def create_scheduler(app: Flask) -> BackgroundScheduler:
    """A BackgroundScheduler with every registered job; not started."""
    scheduler = BackgroundScheduler(
        timezone="UTC",
        job_defaults={"max_instances": 1, "coalesce": True},
    )
    for job in load_jobs().values():
        seconds = job_interval(app, job)
        scheduler.add_job(
            _scheduled_run,
            "interval",
            seconds=seconds,
            args=(app, job.name),
            id=job.name,
            name=job.title_ru,
            replace_existing=True,
            max_instances=1,  # a slow run is never overlapped by the next one
            coalesce=True,  # runs missed while busy or asleep collapse into one
            # A run missed by more than half an interval (the machine slept) is skipped.
            misfire_grace_time=max(30, seconds // 2),
        )
    return scheduler


def start_scheduler(app: Flask) -> BackgroundScheduler:
    from portal.exchange.runs import close_interrupted_runs

    try:
        with app.app_context():
            closed = close_interrupted_runs("Запуск прерван: портал перезапущен, не дождавшись завершения")
            db.session.commit()
        if closed:
            log.info("Запусков, прерванных остановкой портала, отмечено: %s", closed)
    except Exception:  # an unmigrated database must not stop the scheduler
        log.warning("Прерванные запуски не отмечены", exc_info=True)
    scheduler = create_scheduler(app)
    scheduler.start()
    for job in scheduler.get_jobs():
        log.info("Задание «%s» (%s): каждые %s, следующий запуск %s",
                 job.name, job.id, job.trigger.interval, job.next_run_time)
    return scheduler
