"""Benchmark of the background PDF report (issue item 8, 12; SPEC E-14): seconds and peak memory.

    .venv/bin/python bench/reports.py [--rows 1000,10000] [--strict]

For each size a fresh SQLite file gets that many ErsRequest rows (3 МО, 200 patients, requests of
the five counted methods over two years); «Отчёт запросов на сервер ФСС» grouped as «Реестр»
(one row per request) is queued as a ReportRun and rendered by the job «Формирование отчётов»
(`run_queued`), i.e. the portal's background path: a child process streams the rows and renders
chunks of pages with WeasyPrint, merged by pypdf. Measured: wall seconds from the job's start to
the finished file, and the peak RSS of the rendering child (`getrusage(RUSAGE_CHILDREN)` of a
measuring process that does nothing else).

Beside it, in the same run, the baseline: the same rows in one HTML document and one
`write_pdf` (what `render_pdf` does for the small reports), in a process of its own, with its
seconds and peak RSS. Goals: 1,000 rows ≤ 5 s; 10,000 rows ≤ 60 s and ≤ 500 MB peak.
Exit code 0 whatever the figures, unless --strict and a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METHODS = ["createErs", "putVisit", "putVisit", "putVisit", "putTicket1", "putTicket2", "putTicket3"]
GOALS = {1000: (5.0, None), 10000: (60.0, 500.0)}  # rows: (seconds, MB)


def _app(db_path: Path, instance: Path):
    from portal import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{db_path}", "SCHEDULER_ENABLED": False})
    app.instance_path = str(instance)
    return app


def build(db_path: Path, instance: Path, rows: int) -> int:
    """The database with `rows` requests and one queued «Реестр» run; returns the run id."""
    from sqlalchemy import insert

    from portal.auth.roles import CENTRAL_ADMIN
    from portal.ers import report
    from portal.ers.models import PROCESSED, ErsRequest
    from portal.extensions import db
    from tests import factories

    app = _app(db_path, instance)
    rng = random.Random(14)
    with app.app_context():
        db.create_all()
        mos = [factories.make_mo() for _ in range(3)]
        patients = [factories.make_patient(rng.choice(mos)) for _ in range(200)]
        admin = factories.make_user(CENTRAL_ADMIN, mos[0])
        start = datetime(2024, 1, 1)
        batch = []
        for n in range(rows):
            patient = rng.choice(patients)
            sent = start + timedelta(minutes=n * 97 % (2 * 365 * 24 * 60))
            batch.append(
                dict(
                    mo_id=patient.mo_id,
                    patient_id=patient.id,
                    user_id=admin.id,
                    method=rng.choice(METHODS),
                    info="запрос",
                    status=PROCESSED,
                    data={},
                    sent_at=sent,
                    answered_at=sent + timedelta(hours=1),
                    created_at=sent,
                    updated_at=sent,
                )
            )
        db.session.execute(insert(ErsRequest), batch)
        filters = report.ReportFilters.parse({"group": "registry"}, admin)
        run = report.queue_pdf(filters, admin)
        db.session.commit()
        return run.id


def measure_background(db_path: Path, instance: Path) -> dict:
    """In a process of its own: the job renders the queued run in its child; RUSAGE_CHILDREN is that child."""
    from portal.extensions import db
    from portal.reports.background import run_queued
    from portal.reports.models import ReportRun

    app = _app(db_path, instance)
    with app.app_context():
        started = time.perf_counter()
        outcome = run_queued()
        seconds = time.perf_counter() - started
        run = db.session.scalars(db.select(ReportRun)).one()
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        return {
            "seconds": seconds,
            "peak_mb": peak,
            "pages": run.pages,
            "status": run.status,
            "outcome": outcome,
            "size": run.size or 0,
            "error": run.error,
        }


TABLE_TEMPLATE = """{% extends "reports/base.html" %}
{% block page_size %}A4 landscape{% endblock %}
{% block content %}<table><thead><tr>{% for c in columns %}<th>{{ c.heading }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in rows %}<tr>{% for cell in cells(row) %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>{% endblock %}"""


def measure_plain(db_path: Path, instance: Path, layout: str) -> dict:
    """In a process of its own: every row in one HTML document and one write_pdf; RUSAGE_SELF.

    layout "lines": the portal's page template (rows as fixed-width lines) in one document;
    layout "table": an HTML <table> in reports/base.html, as `render_pdf` does for small reports.
    """
    import io

    from pypdf import PdfReader
    from weasyprint import HTML

    from portal.auth.models import User
    from portal.ers import report
    from portal.extensions import db
    from portal.models_base import utcnow
    from portal.reports import PORTAL_NAME, _data_only_fetcher
    from portal.reports.background import TablePage, format_line

    app = _app(db_path, instance)
    with app.app_context():
        started = time.perf_counter()
        admin = db.session.scalars(db.select(User)).first()
        filters = report.ReportFilters.parse({"group": "registry"}, admin)
        columns, cells = report.pdf_columns(filters), report.pdf_cells(filters)
        rows = list(report.iter_rows(filters, admin))
        common = dict(title=report.TITLE, portal_name=PORTAL_NAME, printed_at=utcnow(), printed_by=admin)
        if layout == "lines":
            lines = [format_line(cells(row), columns) for row in rows]
            html = app.jinja_env.get_template("ers/report_pdf.html").render(
                pages=[TablePage(1, lines)],
                page_total=1,
                filters_text=filters.described(None),
                heading=format_line((c.heading for c in columns), columns),
                **common,
            )
        else:
            html = app.jinja_env.from_string(TABLE_TEMPLATE).render(
                columns=columns, cells=cells, rows=rows, **common
            )
        pdf = HTML(string=html, url_fetcher=_data_only_fetcher()).write_pdf()
        seconds = time.perf_counter() - started
        pages = len(PdfReader(io.BytesIO(pdf)).pages)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"seconds": seconds, "peak_mb": peak, "pages": pages, "size": len(pdf)}


def _child(mode: str, db_path: Path, instance: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--measure", mode, str(db_path), str(instance)],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"измерение {mode} не удалось:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Бенчмарк фонового PDF-отчёта «Отчёт запросов на сервер ФСС»"
    )
    parser.add_argument("--rows", default="1000,10000", help="sizes, comma-separated")
    parser.add_argument(
        "--table-limit",
        type=int,
        default=10000,
        help="the <table> baseline only up to this many rows (it is the slow one)",
    )
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--measure", nargs=3, metavar=("MODE", "DB", "INSTANCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        mode, db_path, instance = args.measure
        if mode == "background":
            result = measure_background(Path(db_path), Path(instance))
        else:
            result = measure_plain(Path(db_path), Path(instance), mode)
        print(json.dumps(result, ensure_ascii=False))
        return

    sizes = [int(s) for s in args.rows.split(",") if s.strip()]
    print(
        "Отчёт запросов на сервер ФСС, «Реестр», PDF: фоновый путь портала (задание → дочерний процесс, "
        "куски по 600 строк, склейка pypdf) против одного HTML и одного write_pdf (те же строки; HTML-таблица "
        "как в render_pdf); SQLite-файл "
        f"(загрузка машины: {os.getloadavg()[0]:.1f} при {os.cpu_count()} ядрах)"
    )
    header = f"  {'строк':>7} {'способ':<28} {'секунд':>8} {'пик RSS, МБ':>12} {'страниц':>8} {'файл, КБ':>9}"
    print(header)
    passed = True
    for rows in sizes:
        workdir = Path(tempfile.mkdtemp(prefix="bench-reports-"))
        try:
            db_path, instance = workdir / "portal.db", workdir / "instance"
            started = time.perf_counter()
            build(db_path, instance, rows)
            built = time.perf_counter() - started
            background = _child("background", db_path, instance)
            plain = _child("lines", db_path, instance)
            table = _child("table", db_path, instance) if rows <= args.table_limit else None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        measured = [("фоновый (портал)", background), ("один документ, строки", plain)]
        if table is not None:
            measured.append(("один документ, <table>", table))
        for label, result in measured:
            print(
                f"  {rows:>7,} {label:<28} {result['seconds']:>8.1f} {result['peak_mb']:>12.0f} "
                f"{result['pages']!s:>8} {result['size'] / 1024:>9.0f}"
            )
        if background["status"] != "done":
            print(f"    фоновый отчёт не сформирован: {background['error']}")
        goal_seconds, goal_mb = GOALS.get(rows, (None, None))
        ok = background["status"] == "done"
        goal_text = []
        if goal_seconds is not None:
            ok = ok and background["seconds"] <= goal_seconds
            goal_text.append(f"≤ {goal_seconds:.0f} с")
        if goal_mb is not None:
            ok = ok and background["peak_mb"] <= goal_mb
            goal_text.append(f"≤ {goal_mb:.0f} МБ пик")
        print(
            f"    данные построены за {built:.1f} с; фоновый путь: {background['seconds'] / plain['seconds']:.2f}× "
            f"времени и {background['peak_mb'] / plain['peak_mb']:.2f}× памяти одного документа из тех же строк"
            + (
                f", {background['seconds'] / table['seconds']:.2f}× времени и "
                f"{background['peak_mb'] / table['peak_mb']:.2f}× памяти <table> одним документом"
                if table
                else ""
            )
            + (f"; цель {', '.join(goal_text)}: {'PASS' if ok else 'FAIL'}" if goal_text else "")
        )
        passed = passed and ok
    print(f"Цель: 1 000 строк ≤ 5 с; 10 000 строк ≤ 60 с и ≤ 500 МБ пик: {'PASS' if passed else 'FAIL'}")
    if args.strict and not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
