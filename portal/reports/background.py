"""Long table reports rendered as PDF in the background, in bounded memory (SPEC E-14).

WeasyPrint keeps the whole laid-out document in memory, so a 10,000-row table rendered as one
document costs hundreds of megabytes. Here a report is rendered in chunks of a few pages, each
chunk a small WeasyPrint document written to a temporary file, and the chunks are merged with
pypdf into one file. Memory is that of one chunk plus the merge, whatever the number of rows.

Speed: WeasyPrint lays out every table cell as a box of its own (about half a millisecond each),
so a 10-column HTML table costs ~6 ms a row and 10,000 rows a minute. The table here is set as
lines instead: each row is one line of monospaced text (DejaVu Sans Mono) whose columns have
fixed widths in characters, cut with «…» when longer, separated by «│», under a heading line in
the same layout — one text box per row, about eight times faster, and it looks like a ruled table.

«Стр. N из M» must be right across chunks, so M is known before the first chunk: every page holds
a fixed number of rows (`rows_per_page`; a row is always one line) and the rows are counted first
(a COUNT in SQL, cheap beside the rendering), so M = ceil(rows / rows_per_page). Each page is its
own `<section>` with the report header (portal, title, filters, printed at/by) and the column
headings, and carries its own page number in a running element placed in the page's footer; a
chunk that lays out into another number of pages than planned fails the run rather than number
pages wrongly.

Who renders: `run_queued` (the scheduler job "reports", `portal/reports/jobs.py`) claims queued
runs — and runs left «running» by a crash — one by one and renders each in a child process
(`python -m portal.reports.worker <run_id>`), so the web server's and the scheduler's memory never
holds a document. A feature registers what its kind of run renders with `register_renderer`.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import or_, update

from portal.config import BASE_DIR
from portal.extensions import db
from portal.models_base import utcnow
from portal.reports import PORTAL_NAME, _data_only_fetcher
from portal.reports.models import DONE, FAILED, QUEUED, RUNNING, ReportRun

log = logging.getLogger("portal.reports")

ROWS_PER_PAGE = 33  # fits landscape A4 with the header and the one-line rows of reports/table_pages.html
PAGES_PER_CHUNK = 20  # one WeasyPrint document: 600 rows, a few tens of megabytes
LINE_CHARS = 170  # characters of DejaVu Sans Mono 7.5 pt across a landscape A4 page
KEEP_FILES = timedelta(days=7)  # a finished PDF is kept this long, then deleted (the run stays)
STALE_AFTER = timedelta(minutes=5)  # a «running» run with no progress for this long was left by a crash
CHILD_TIMEOUT = 3600  # seconds one rendering child may take

Progress = Callable[[int, int], None]  # (rows done, rows in all)


@dataclass(frozen=True)
class Column:
    heading: str
    width: int  # characters
    align: str = "left"  # "right" for numbers


SEPARATOR = " │ "


def format_line(values: Iterable[Any], columns: list[Column]) -> str:
    """One row as a line of fixed-width columns: one line whatever the text, cut with «…»."""
    parts = []
    for value, column in zip(values, columns, strict=True):
        text = " ".join(("" if value is None else str(value)).split())
        if len(text) > column.width:
            text = text[: column.width - 1] + "…"
        parts.append(text.rjust(column.width) if column.align == "right" else text.ljust(column.width))
    return SEPARATOR.join(parts)


@dataclass
class TablePage:
    number: int
    lines: list[str]


@dataclass
class TableReport:
    """What a renderer hands over: a template extending `reports/table_pages.html`, the columns,
    how a row gives its cells, the header's context (`filters_text`, `printed_at`, `printed_by`),
    the row count and the rows themselves (an iterator streaming from the database)."""

    template: str
    title: str
    columns: list[Column]
    cells: Callable[[Any], Iterable[Any]]
    total_rows: int
    rows: Iterable[Any]
    context: dict[str, Any] = field(default_factory=dict)
    rows_per_page: int = ROWS_PER_PAGE
    pages_per_chunk: int = PAGES_PER_CHUNK

    @property
    def page_count(self) -> int:
        return max(1, math.ceil(self.total_rows / self.rows_per_page))


class RenderError(RuntimeError):
    """A run that cannot be rendered; the message is Russian and shown to the user."""


# kind → function(run, out_path, progress) -> pages; a feature registers its own in its
# `report.py` at import time (portal/ers/report.py: "ers_requests").
RENDERERS: dict[str, Callable[[ReportRun, Path, Progress], int]] = {}


def register_renderer(kind: str, func: Callable[[ReportRun, Path, Progress], int]) -> None:
    RENDERERS[kind] = func


def load_renderers() -> dict[str, Callable[[ReportRun, Path, Progress], int]]:
    """Import every feature's `report.py` so that its `register_renderer` calls run (the worker
    process does not build the whole app, which imports them through the views)."""
    import importlib
    import pkgutil

    import portal

    for info in pkgutil.iter_modules(portal.__path__):
        if info.ispkg and (Path(portal.__path__[0]) / info.name / "report.py").exists():
            importlib.import_module(f"portal.{info.name}.report")
    return RENDERERS


def _pages(report: TableReport) -> Iterator[TablePage]:
    rows = iter(report.rows)
    for number in range(1, report.page_count + 1):
        chunk = itertools.islice(rows, report.rows_per_page)
        yield TablePage(number, [format_line(report.cells(row), report.columns) for row in chunk])


def render_table_pdf(report: TableReport, out_path: Path, progress: Progress | None = None) -> int:
    """Render the report chunk by chunk into `out_path`; returns the number of pages."""
    from pypdf import PdfWriter
    from weasyprint import HTML

    total_pages = report.page_count
    fetcher = _data_only_fetcher()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    template = current_app.jinja_env.get_template(report.template)
    done = 0
    if progress:
        progress(0, report.total_rows)
    with tempfile.TemporaryDirectory(prefix="report-", dir=out_path.parent) as workdir:
        chunk_files: list[Path] = []
        pages = _pages(report)
        while True:
            chunk = list(itertools.islice(pages, report.pages_per_chunk))
            if not chunk:
                break
            html = template.render(  # no request here: the template gets only what it is given
                title=report.title,
                portal_name=PORTAL_NAME,
                pages=chunk,
                page_total=total_pages,
                heading=format_line((c.heading for c in report.columns), report.columns),
                **report.context,
            )
            document = HTML(string=html, url_fetcher=fetcher).render()
            if len(document.pages) != len(chunk):
                raise RenderError(
                    f"Страницы {chunk[0].number}–{chunk[-1].number} не уместились в разметку отчёта "
                    f"({len(document.pages)} страниц вместо {len(chunk)})."
                )
            path = Path(workdir) / f"{len(chunk_files):05d}.pdf"
            document.write_pdf(target=str(path))
            chunk_files.append(path)
            done += sum(len(page.lines) for page in chunk)
            del document, html, chunk
            gc.collect()
            if progress:
                progress(done, report.total_rows)
        writer = PdfWriter()
        for path in chunk_files:
            writer.append(str(path))
        partial = out_path.with_suffix(".part")
        with open(partial, "wb") as handle:
            writer.write(handle)
        writer.close()
        os.replace(partial, out_path)
    return total_pages


# --- runs ------------------------------------------------------------------------------------------


def reports_dir() -> Path:
    return Path(current_app.instance_path) / "reports"


def run_file(run: ReportRun) -> Path:
    return reports_dir() / f"{run.kind}-{run.id}.pdf"


def _write_progress(run_id: int, done: int, total: int) -> None:
    """Progress on a connection of its own: the rows are still streaming on the session's."""
    with db.engine.begin() as conn:
        conn.execute(
            update(ReportRun)
            .where(ReportRun.id == run_id)
            .values(done=done, total=total, updated_at=utcnow())
        )


def render_run(run_id: int) -> ReportRun:
    """Render one claimed run here and now (the worker process calls this): the file, then DONE;
    a failure marks the run FAILED with its Russian reason."""
    run = db.session.get(ReportRun, run_id)
    if run is None:
        raise RenderError(f"Отчёт № {run_id} не найден.")
    kind = run.kind
    renderer = RENDERERS.get(kind)
    try:
        if renderer is None:
            raise RenderError(f"Неизвестный вид отчёта «{kind}».")
        path = Path(run.file_path) if run.file_path else run_file(run)
        pages = renderer(run, path, lambda done, total: _write_progress(run_id, done, total))
        db.session.rollback()  # ends the streaming read; progress was written beside it
        run = db.session.get(ReportRun, run_id)
        run.status, run.pages, run.file_path = DONE, pages, str(path)
        run.size = path.stat().st_size
        run.done = run.total
        run.error = None
        run.finished_at = utcnow()
        db.session.commit()
    except Exception as error:
        db.session.rollback()
        log.exception("Отчёт № %s (%s) не сформирован", run_id, kind)
        message = (
            str(error) if isinstance(error, RenderError) else "Внутренняя ошибка при формировании отчёта."
        )
        _fail(run_id, message)
        run = db.session.get(ReportRun, run_id)
    return run


def _fail(run_id: int, message: str) -> None:
    db.session.execute(
        update(ReportRun)
        .where(ReportRun.id == run_id)
        .values(status=FAILED, error=message, finished_at=utcnow(), updated_at=utcnow())
    )
    db.session.commit()


def _claim(run: ReportRun) -> bool:
    """Take a queued (or abandoned) run; False when another runner took it first."""
    result = db.session.execute(
        update(ReportRun)
        .where(ReportRun.id == run.id, ReportRun.status == run.status, ReportRun.updated_at == run.updated_at)
        .values(
            status=RUNNING,
            done=0,
            started_at=utcnow(),
            updated_at=utcnow(),
            error=None,
            file_path=str(run_file(run)),
        )
    )
    db.session.commit()
    return result.rowcount == 1


def _claimable() -> list[ReportRun]:
    stale = utcnow() - STALE_AFTER
    stmt = (
        db.select(ReportRun)
        .where(
            or_(ReportRun.status == QUEUED, (ReportRun.status == RUNNING) & (ReportRun.updated_at < stale))
        )
        .order_by(ReportRun.created_at, ReportRun.id)
    )
    return list(db.session.scalars(stmt))


def _in_memory_database() -> bool:
    url = db.engine.url
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _render_in_child(run_id: int) -> None:
    """`python -m portal.reports.worker <run_id>` against the same database and instance folder."""
    env = dict(os.environ)
    env["PORTAL_DATABASE_URL"] = db.engine.url.render_as_string(hide_password=False)
    env["PORTAL_INSTANCE_DIR"] = current_app.instance_path
    env["PORTAL_WORKER_TESTING"] = "1" if current_app.testing else ""
    completed = subprocess.run(
        [sys.executable, "-m", "portal.reports.worker", str(run_id)],
        cwd=str(BASE_DIR),
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        log.error(
            "Отчёт № %s: процесс формирования завершился с кодом %s\n%s",
            run_id,
            completed.returncode,
            completed.stderr[-4000:],
        )


def purge_old_files(now: datetime | None = None) -> int:
    """Delete the files of runs finished more than KEEP_FILES ago; the page then says to render again."""
    now = now or utcnow()
    old = db.session.scalars(
        db.select(ReportRun).where(
            ReportRun.status == DONE,
            ReportRun.file_path.is_not(None),
            ReportRun.finished_at < now - KEEP_FILES,
        )
    )
    purged = 0
    for run in old:
        Path(run.file_path).unlink(missing_ok=True)
        run.file_path = None
        purged += 1
    db.session.commit()
    return purged


def run_queued(limit: int | None = None) -> str:
    """The job «Формирование отчётов»: render queued runs (and runs a crash left «running»), oldest
    first, each in a child process; commits as it goes so the child sees and updates the run."""
    purge_old_files()
    rendered = failed = 0
    for run in _claimable()[:limit]:
        if not _claim(run):
            continue
        run_id = run.id
        try:
            if _in_memory_database():  # an in-memory database is invisible to another process
                render_run(run_id)
            else:
                _render_in_child(run_id)
        except subprocess.TimeoutExpired:
            _fail(run_id, "Формирование отчёта заняло слишком много времени и остановлено.")
        db.session.expire_all()
        run = db.session.get(ReportRun, run_id)
        if run.status == RUNNING:  # the child died without a word (killed, out of memory)
            _fail(run_id, "Формирование отчёта прервано. Попробуйте ещё раз или сузьте период.")
            run = db.session.get(ReportRun, run_id)
        if run.status == DONE:
            rendered += 1
        else:
            failed += 1
    return f"сформировано отчётов: {rendered}, с ошибкой: {failed}"
