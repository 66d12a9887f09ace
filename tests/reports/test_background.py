"""Long table reports rendered in chunks (portal/reports/background.py): one file whose pages read
«Стр. N из M» across the chunks, each with the header and the column headings, progress reported
as chunks finish, cells cut rather than wrapped, and a run that cannot be rendered failing with
a Russian reason the user sees."""

from __future__ import annotations

from pypdf import PdfReader

from portal.extensions import db
from portal.models_base import utcnow
from portal.reports import PORTAL_NAME
from portal.reports.background import Column, TableReport, render_table_pdf, run_queued
from portal.reports.models import FAILED, ReportRun

COLUMNS = [Column("№", 5, "right"), Column("Наименование", 20)]


def report(rows, total, **kw) -> TableReport:
    return TableReport(
        template="reports/table_pages.html",
        title="Проверочный отчёт",
        columns=COLUMNS,
        cells=lambda row: row,
        total_rows=total,
        rows=rows,
        context={"filters_text": "Период: 2024", "printed_at": utcnow(), "printed_by": None},
        **kw,
    )


def test_chunks_make_one_file_numbered_across_chunks(app, tmp_path):
    progress = []
    rows = ((n, f"Строка {n}") for n in range(1, 71))  # a generator: nothing is held in a list
    out = tmp_path / "report.pdf"
    pages = render_table_pdf(
        report(rows, 70, rows_per_page=10, pages_per_chunk=3),
        out,
        lambda done, total: progress.append((done, total)),
    )
    assert pages == 7
    assert progress == [(0, 70), (30, 70), (60, 70), (70, 70)]  # after each chunk of 3 pages
    reader = PdfReader(out)
    assert len(reader.pages) == 7
    for number, page in enumerate(reader.pages, 1):
        assert page.mediabox.width > page.mediabox.height
        text = page.extract_text()
        assert f"Стр. {number} из 7" in text
        assert PORTAL_NAME in text and "Проверочный отчёт" in text and "Период: 2024" in text
        assert "Наименование" in text
        first, last = 10 * (number - 1) + 1, 10 * number
        assert f"Строка {first} " in text and f"Строка {last}" in text
        assert f"Строка {last + 1} " not in text + " "


def test_long_cells_are_cut_so_pages_hold_their_rows(app, tmp_path):
    rows = [(n, "Очень длинное наименование " * 20) for n in range(1, 31)]
    out = tmp_path / "long.pdf"
    assert render_table_pdf(report(rows, 30, rows_per_page=30), out) == 1
    text = PdfReader(out).pages[0].extract_text()
    assert "Очень длинное наиме…" in text and "Стр. 1 из 1" in text


def test_empty_report_is_one_page_saying_so(app, tmp_path):
    out = tmp_path / "empty.pdf"
    assert render_table_pdf(report(iter(()), 0), out) == 1
    assert "Данных нет." in PdfReader(out).pages[0].extract_text()


def test_run_of_unknown_kind_fails_with_a_russian_reason(app):
    run = ReportRun(kind="nope", title="Отчёт", params={})
    db.session.add(run)
    db.session.commit()
    assert run_queued() == "сформировано отчётов: 0, с ошибкой: 1"
    db.session.expire_all()
    run = db.session.get(ReportRun, run.id)
    assert run.status == FAILED and run.error == "Неизвестный вид отчёта «nope»."
    assert run_queued() == "сформировано отчётов: 0, с ошибкой: 0"  # not taken again


def test_files_of_old_runs_are_deleted(app, tmp_path):
    from datetime import timedelta

    from portal.reports.background import purge_old_files
    from portal.reports.models import DONE

    old, fresh = tmp_path / "old.pdf", tmp_path / "fresh.pdf"
    old.write_bytes(b"%PDF-1.7")
    fresh.write_bytes(b"%PDF-1.7")
    now = utcnow()
    for path, days in ((old, 8), (fresh, 1)):
        db.session.add(
            ReportRun(
                kind="x",
                title="Отчёт",
                params={},
                status=DONE,
                file_path=str(path),
                finished_at=now - timedelta(days=days),
            )
        )
    db.session.commit()
    assert purge_old_files(now) == 1
    assert not old.exists() and fresh.exists()
    assert [r.file_path for r in db.session.scalars(db.select(ReportRun).order_by(ReportRun.id))] == [
        None,
        str(fresh),
    ]
