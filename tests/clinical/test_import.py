"""`flask portal import FILE.jsonl`: the intake records from a file, as an operator runs it."""

from __future__ import annotations

import json

from portal.admin.services import is_enabled
from portal.clinical.models import ClinicalEvent, Mo, Patient
from portal.extensions import db
from tests.clinical.test_api import contract_batch


def write_jsonl(path, lines: list) -> str:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return str(path)


def rows(model) -> list[str]:
    db.session.expire_all()
    return sorted(db.session.scalars(db.select(model.source_id)))


def test_import_stores_good_lines_and_reports_bad_ones_with_line_numbers(app, tmp_path):
    records = contract_batch()
    lines = [
        *records[:4],  # lines 1–4
        "",  # line 5: blank, ignored
        '{"type": "patient", "id": "pat-2", "mo": "mo-1", "last_name": "Петрова"',  # line 6: cut-off JSON
        *records[4:],  # lines 7–10
        {"type": "patient", "id": "pat-3", "mo": "mo-1", "last_name": "Сидорова", "first_name": "Анна",
         "snils": "12345"},  # line 11
        "   ",  # line 12: blank
        {"type": "event", "id": "ev-3", "kind": "exam_primary", "patient": "pat-404", "mo": "mo-1",
         "at": "2026-11-21T09:00:00"},  # line 13
    ]
    path = write_jsonl(tmp_path / "region.jsonl", lines)

    result = app.test_cli_runner().invoke(args=["portal", "import", path])

    assert result.exit_code == 1, result.output
    assert "Сохранено записей: 8, отклонено: 3." in result.output
    output_lines = result.output.splitlines()
    assert any(line.strip().startswith("строка 6: запись — не является JSON (столбец") for line in output_lines)
    assert any(line.strip().startswith("строка 11: patient pat-3, поле snils — «СНИЛС»: ожидается 11 цифр")
               for line in output_lines)
    assert "строка 13: event ev-3, поле patient — Пациент pat-404 не найден" in result.output
    assert rows(Patient) == ["pat-1"]
    assert rows(ClinicalEvent) == ["ev-1", "ev-2"]
    assert is_enabled(db.session.scalar(db.select(Mo.id)), "vimis")


def test_import_in_small_chunks_resolves_references_to_earlier_chunks_and_updates_on_repeat(app, tmp_path):
    records = contract_batch()
    path = write_jsonl(tmp_path / "region.jsonl", records)
    runner = app.test_cli_runner()

    first = runner.invoke(args=["portal", "import", path, "--chunk", "3"])
    records[3]["phone"] = "+7 911 000-00-00"
    second = runner.invoke(args=["portal", "import", write_jsonl(tmp_path / "again.jsonl", records), "--chunk", "3"])

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "Сохранено записей: 8, отклонено: 0." in first.output
    assert "Отклон" not in first.output.split("\n", 1)[1]  # no list of refusals when there are none
    assert rows(ClinicalEvent) == ["ev-1", "ev-2"]
    db.session.expire_all()
    assert db.session.scalar(db.select(Patient.phone).where(Patient.source_id == "pat-1")) == "+7 911 000-00-00"


def test_import_shows_only_the_first_refusals(app, tmp_path):
    lines = [{"type": "mo", "id": f"mo-{n}", "name": "ГБУЗ", "registry_number": "1"} for n in range(1, 31)]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)

    result = app.test_cli_runner().invoke(args=["portal", "import", path, "--show", "5"])

    assert "Сохранено записей: 0, отклонено: 30." in result.output
    assert "Первые отклонённые записи:" in result.output
    assert result.output.count("поле registry_number") == 5
    assert "строка 5:" in result.output and "строка 6:" not in result.output
    assert rows(Mo) == []
