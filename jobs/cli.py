"""`flask jobs …`: list the jobs and run one by hand."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

jobs_cli = AppGroup("jobs", help="Задания планировщика.")


def _format_interval(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} ч"
    if seconds % 60 == 0:
        return f"{seconds // 60} мин"
    return f"{seconds} с"


@jobs_cli.command("list")
def list_jobs() -> None:
    """Задания: имя, название, интервал."""
    from jobs.scheduler import job_interval, load_jobs

    app = current_app._get_current_object()
    jobs = load_jobs()
    if not jobs:
        click.echo("Заданий нет.")
        return
    width = max(len(name) for name in jobs)
    for name in sorted(jobs):
        job = jobs[name]
        click.echo(f"{name:<{width}}  {job.title_ru}  (каждые {_format_interval(job_interval(app, job))})")


@jobs_cli.command("run")
@click.argument("name")
def run(name: str) -> None:
    """Выполнить задание NAME сейчас."""
    from jobs.scheduler import UnknownJob, load_jobs, run_job

    app = current_app._get_current_object()
    try:
        result = run_job(app, name)
    except UnknownJob:
        known = ", ".join(sorted(load_jobs())) or "нет"
        click.echo(f"Задание «{name}» не найдено. Известные задания: {known}.", err=True)
        raise SystemExit(1) from None
    except Exception as error:  # run_job has logged the traceback and rolled back
        click.echo(f"Задание «{name}» завершилось ошибкой: {error}", err=True)
        raise SystemExit(1) from None
    title = load_jobs()[name].title_ru
    click.echo(f"Задание «{title}» выполнено" + (f": {result}" if result else "."))
