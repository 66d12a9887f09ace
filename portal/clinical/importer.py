"""`flask portal import FILE.jsonl`: the intake API's records from a file, one JSON object per line.

The file goes through `ingest_batch` in chunks, each committed on its own, so a large file
neither holds one huge transaction nor loses what was already stored if a later chunk fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import click

from portal.cli import portal_cli
from portal.clinical.intake import ingest_batch, run_in_transaction


@dataclass
class LineRefusal:
    line: int
    type: str | None
    id: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        what = " ".join(str(p) for p in (self.type, self.id) if p) or "запись"
        where = f", поле {self.field}" if self.field else ""
        return f"строка {self.line}: {what}{where} — {self.message}"


@dataclass
class ImportReport:
    stored: int = 0
    refused: int = 0
    refusals: list[LineRefusal] = field(default_factory=list)  # the first `keep` of them

    def add_refusal(self, refusal: LineRefusal, keep: int) -> None:
        self.refused += 1
        if len(self.refusals) < keep:
            self.refusals.append(refusal)


def import_lines(lines: Iterable[str], chunk_size: int = 1000, keep: int = 20) -> ImportReport:
    """Read JSONL (blank lines ignored), ingest and commit chunk by chunk."""
    report = ImportReport()
    pending: list[tuple[int, Any]] = []

    def flush() -> None:
        if not pending:
            return
        result = run_in_transaction(lambda: ingest_batch([record for _line, record in pending]))
        for (line, _record), answer in zip(pending, result.results, strict=True):
            if answer["status"] == "stored":
                report.stored += 1
            else:
                report.add_refusal(
                    LineRefusal(line, answer["type"], answer["id"], answer["field"], answer["message"]), keep
                )
        pending.clear()

    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as exc:
            column = f" (столбец {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            report.add_refusal(LineRefusal(number, None, None, None, f"не является JSON{column}"), keep)
            continue
        pending.append((number, record))
        if len(pending) >= chunk_size:
            flush()
    flush()
    return report


@portal_cli.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@click.option("--chunk", "chunk_size", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="Сколько записей сохранять за одну транзакцию.")
@click.option("--show", default=20, show_default=True, type=click.IntRange(0),
              help="Сколько первых отклонённых записей показать.")
def import_command(file, chunk_size: int, show: int) -> None:
    """Загрузить записи из файла JSONL (одна запись API на строку; «-» — стандартный ввод).

    Код завершения 1, если хотя бы одна запись отклонена.
    """
    report = import_lines(file, chunk_size=chunk_size, keep=show)
    click.echo(f"Сохранено записей: {report.stored}, отклонено: {report.refused}.")
    if report.refusals:
        click.echo("Первые отклонённые записи:" if report.refused > len(report.refusals) else "Отклонённые записи:")
        for refusal in report.refusals:
            click.echo(f"  {refusal}")
    if report.refused:
        raise SystemExit(1)
