"""Benchmark of the intake API (issue 2, item 11): 100,000 events through real HTTP.

    .venv/bin/python bench/intake.py [--events 100000] [--batch 1000]

A fresh SQLite file in a temporary directory, a gunicorn server on a free 127.0.0.1 port, a
small reference set (МО, departments, staff, patients, pregnancies) posted first, then the events
in batches. For scale, the same event rows are inserted into another fresh file directly with
SQLAlchemy Core (no HTTP, no validation, no upsert) in the same run; both rates and their ratio
are printed. Goal: ≥ 2,000 records/s through the API on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-intake-token"
EVENT_KINDS = ["exam_primary", "exam_repeat", "ultrasound_1", "ultrasound_2", "lab_blood", "lab_urine", "referral_mo"]
DEPARTMENT_KINDS = ["outpatient", "maternity", "round_the_clock", "day_hospital"]


def reference_records(mos: int, patients: int) -> list[dict]:
    """МО with departments and doctors, patients with one pregnancy each: what events refer to."""
    from portal.clinical.identifiers import enp_check_digit, snils_check_number

    rng = random.Random(1)
    records: list[dict] = []
    for m in range(1, mos + 1):
        records.append({
            "type": "mo", "id": f"mo-{m}", "name": f"ГБУЗ «Родильный дом № {m}»", "short_name": f"РД № {m}",
            "registry_number": f"35{m:04d}", "f003_code": f"35{m:04d}", "oid": f"1.2.643.5.1.13.13.12.2.35.{1000 + m}",
            "ogrn": f"10235000{m:05d}", "inn": f"35250{m:05d}", "kpp": "352501001", "address": "г. Вологда",
        })
        for d, kind in enumerate(DEPARTMENT_KINDS, start=1):
            records.append({"type": "department", "id": f"dep-{m}-{d}", "mo": f"mo-{m}", "name": f"Отделение {d}",
                            "kind": kind})
        for s in range(1, 11):
            first9 = f"{rng.randrange(2_000_000, 999_999_999):09d}"
            records.append({"type": "staff", "id": f"doc-{m}-{s}", "mo": f"mo-{m}", "last_name": "Смирнова",
                            "first_name": "Ольга", "middle_name": "Михайловна", "snils": first9 + snils_check_number(first9),
                            "position": "врач-акушер-гинеколог", "category": "doctor"})
    for p in range(1, patients + 1):
        m = p % mos + 1
        first9 = f"{rng.randrange(2_000_000, 999_999_999):09d}"
        first15 = f"35{p:013d}"
        records.append({
            "type": "patient", "id": f"pat-{p}", "mo": f"mo-{m}", "last_name": "Иванова", "first_name": "Мария",
            "middle_name": "Петровна", "sex": "F", "birth_date": f"19{rng.randrange(80, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(0, 9)}",
            "snils": first9 + snils_check_number(first9), "enp": first15 + enp_check_digit(first15),
            "policy": {"kind": "Э", "series": None, "number": first15 + enp_check_digit(first15), "insurer": "35001"},
            "document": {"kind": "14", "series": "1904", "number": f"{p:06d}", "issued_on": "2014-06-01",
                         "issuer": "УМВД России по Вологодской области"},
            "registration_address": "г. Вологда, ул. Мира, д. 5", "residence_address": "г. Вологда, ул. Мира, д. 5",
            "social_status": "working", "phone": "+7 900 000-00-00",
        })
        records.append({"type": "pregnancy", "id": f"preg-{p}", "patient": f"pat-{p}", "mo": f"mo-{m}",
                        "registered_on": (date(2026, 1, 1) + timedelta(days=p % 180)).isoformat(),
                        "weeks_at_registration": 6 + p % 6, "multiple": False, "outcome": None, "outcome_on": None})
    return records


def event_records(count: int, mos: int, patients: int) -> list[dict]:
    rng = random.Random(2)
    start = datetime(2026, 3, 1, 8, 0)
    events = []
    for e in range(1, count + 1):
        p = rng.randrange(1, patients + 1)
        m = p % mos + 1
        events.append({
            "type": "event", "id": f"ev-{e}", "kind": EVENT_KINDS[e % len(EVENT_KINDS)], "patient": f"pat-{p}",
            "pregnancy": f"preg-{p}", "mo": f"mo-{m}", "department": f"dep-{m}-1", "doctor": f"doc-{m}-{e % 10 + 1}",
            "at": (start + timedelta(minutes=e * 3)).isoformat(), "care_conditions": "3",
            "data": {"weight_kg": 60 + e % 20, "bp": "120/80", "note": "без особенностей"},
        })
    return events


def make_database(path: Path) -> None:
    """Fresh schema (create_all: the benchmark must not depend on the state of the migrations)."""
    from portal import create_app
    from portal.auth.models import ApiToken, hash_token
    from portal.extensions import db

    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", "SCHEDULER_ENABLED": False})
    with app.app_context():
        db.create_all()
        db.session.add(ApiToken(name="Бенчмарк", token_hash=hash_token(TOKEN), prefix=TOKEN[:8]))
        db.session.commit()
        db.engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(path: Path, instance: Path, port: int, workers: int, app: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update({
        "PORTAL_DATABASE_URL": f"sqlite:///{path}", "PORTAL_INSTANCE_DIR": str(instance),
        "PORTAL_SCHEDULER": "0", "PORTAL_SIMULATORS": "0", "PORTAL_RUN_SERVICES": "0",
        "PORTAL_SECRET_KEY": "bench",
    })
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", "120",
         "--log-level", "warning", app],
        cwd=ROOT, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=10).status_code == 200:
                    return process
            except requests.RequestException:
                pass
            if process.poll() is not None:
                raise SystemExit(f"сервер завершился с кодом {process.returncode}")
            time.sleep(0.2)
        raise SystemExit("сервер не запустился за 60 с")
    except BaseException:
        stop_server(process)
        raise


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # the server's own process group: master and workers
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def post_all(url: str, records: list[dict], batch: int) -> tuple[float, int, int]:
    """Post the records in batches; seconds spent, stored and refused counts."""
    bodies = [json.dumps({"records": records[i : i + batch]}, ensure_ascii=False).encode()
              for i in range(0, len(records), batch)]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    stored = refused = 0
    first_refusal = None
    with requests.Session() as session:
        started = time.perf_counter()
        for body in bodies:
            answer = session.post(url, data=body, headers=headers, timeout=120)
            if answer.status_code != 200:
                raise SystemExit(f"ответ {answer.status_code}: {answer.text[:500]}")
            for result in answer.json()["results"]:
                if result["status"] == "stored":
                    stored += 1
                else:
                    refused += 1
                    first_refusal = first_refusal or result
        elapsed = time.perf_counter() - started
    if first_refusal:
        print(f"  первый отказ: {first_refusal}")
    return elapsed, stored, refused


def count_events(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM clinical_event").fetchone()[0]


def core_baseline(path: Path, references: list[dict], events: list[dict], batch: int) -> float:
    """Seconds to insert the same event rows with SQLAlchemy Core: no HTTP, no validation, no lookup."""
    from sqlalchemy import insert, select

    from portal import create_app
    from portal.clinical.intake import ingest_batch
    from portal.clinical.models import ClinicalEvent, Department, Mo, Patient, Pregnancy, Staff
    from portal.extensions import db
    from portal.models_base import utcnow

    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", "SCHEDULER_ENABLED": False})
    with app.app_context():
        ingest_batch(references)  # the reference rows only; not timed
        db.session.commit()
        ids = {
            model: dict(db.session.execute(select(model.source_id, model.id)).all())
            for model in (Mo, Department, Staff, Patient, Pregnancy)
        }
        now = utcnow()
        rows = [
            {
                "source_id": e["id"], "kind": e["kind"], "patient_id": ids[Patient][e["patient"]],
                "pregnancy_id": ids[Pregnancy][e["pregnancy"]], "hospitalisation_id": None,
                "mo_id": ids[Mo][e["mo"]], "department_id": ids[Department][e["department"]],
                "doctor_id": ids[Staff][e["doctor"]], "at": datetime.fromisoformat(e["at"]),
                "care_conditions": e["care_conditions"], "data": e["data"], "created_at": now, "updated_at": now,
            }
            for e in events
        ]
        table = ClinicalEvent.__table__
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            with db.engine.begin() as conn:
                conn.execute(insert(table), rows[i : i + batch])
        elapsed = time.perf_counter() - started
        db.engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description="Бенчмарк приёма событий через API")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--mos", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers")
    parser.add_argument("--repeat", type=int, default=10_000, help="how many events to send again (updates path)")
    parser.add_argument("--app", default="wsgi:app", help="WSGI application for gunicorn")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    api_db, core_db = workdir / "api.db", workdir / "core.db"
    try:
        print(f"Готовлю данные: {args.events} событий, {args.patients} пациенток, {args.mos} МО …")
        references = reference_records(args.mos, args.patients)
        events = event_records(args.events, args.mos, args.patients)
        make_database(api_db)
        make_database(core_db)

        port = free_port()
        server = start_server(api_db, workdir, port, args.workers, args.app)
        url = f"http://127.0.0.1:{port}/api/v1/records"
        try:
            ref_seconds, ref_stored, ref_refused = post_all(url, references, args.batch)
            print(f"Справочные записи: {ref_stored} сохранено, {ref_refused} отклонено за {ref_seconds:.1f} с "
                  f"({ref_stored / ref_seconds:,.0f} записей/с)")
            api_seconds, stored, refused = post_all(url, events, args.batch)
            repeat = events[: args.repeat]
            for e in repeat:  # a changed value: every repeated record is a real update
                e["data"] = {**e["data"], "note": "уточнено"}
            rep_seconds, rep_stored, _ = post_all(url, repeat, args.batch) if repeat else (0.0, 0, 0)
        finally:
            stop_server(server)
        in_db = count_events(api_db)
        if refused or in_db != args.events:
            raise SystemExit(f"ошибка: отклонено {refused}, в базе {in_db} событий из {args.events}")

        core_seconds = core_baseline(core_db, references, events, args.batch)

        api_rate = stored / api_seconds
        core_rate = args.events / core_seconds
        print(f"API (HTTP, gunicorn × {args.workers}, пакеты по {args.batch}): {stored} событий за {api_seconds:.1f} с — "
              f"{api_rate:,.0f} записей/с")
        if rep_stored:
            print(f"API, повторная отправка с изменениями: {rep_stored} событий за {rep_seconds:.1f} с — "
                  f"{rep_stored / rep_seconds:,.0f} записей/с")
        print(f"Базовая линия (SQLAlchemy Core insert, без API): {args.events} событий за {core_seconds:.1f} с — "
              f"{core_rate:,.0f} записей/с")
        print(f"Отношение API / базовая линия: {api_rate / core_rate:.2f}")
        goal = 2000
        print(f"Цель ≥ {goal} записей/с: {'достигнута' if api_rate >= goal else 'НЕ достигнута'}")
    finally:
        if args.keep:
            print(f"Файлы оставлены в {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
