"""Benchmark of ИЭМК (issue 7, item 9): documents built, signed and uploaded per second.

    .venv/bin/python bench/iemk.py [--documents 1000] [--simulator process|inprocess] [--strict]

1,000 clinical events of the five outpatient kinds (the ВИМИС benchmark's generator) are stored
through intake in a fresh SQLite file; the intake hook makes their ИЭМК documents. Then, timed:

1. «Получить и подписать документы» (`sign_documents`) on all of them: data check, CDA build,
   format control (CDA.xsd), logical control, CMS signature;
2. «Передать документ в ИЭМК» (`transfer`) and one `send_due` of the "iemk" channel against the
   ИЭМК stand-in (in a process of its own by default, as a real outside system would be): the
   patient registered in the patient index (PixService, once per patient), the case opened
   (CreateCase, once per case) and AddMedRecord with the signed CDA.

Documents/s = documents / (signing + upload), with the time split by stage (exclusive of nested
stages; SQL timed at the cursor). Beside it, in the same run, the floor: a bare minimal POST to
the same stand-in, one request per document being the least an upload can cost. The stand-in's
answers are off during the run (its asynchronous answer would otherwise compete for the CPU);
the number of documents it stored is checked against the number sent, so nothing went twice.
Goal ≥ 100 documents/s. Exit code 0 whatever the figures, unless --strict and the goal is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.vimis import (  # noqa: E402  (the shared stage timer, generator and stand-in process)
    StageTimer,
    _SimulatorProcess,
    http_baseline,
    ms,
    percentile,
    sending_records,
)

STAGES = [
    ("check", "проверка данных (check_document)"),
    ("build", "сборка CDA (build_document)"),
    ("format", "форматный контроль (CDA.xsd)"),
    ("logic", "логический контроль (правила РЭМД)"),
    ("sign", "подпись CMS"),
    ("pix", "регистрация пациента (PixService)"),
    ("case", "открытие случая (CreateCase)"),
    ("upload", "передача документа (AddMedRecord): zeep + HTTP + симулятор"),
    ("orm", "БД: ORM — запросы, ленивые загрузки, flush (без SQL)"),
    ("sql", "БД: SQL-запросы (время курсора)"),
    ("commit", "БД: COMMIT"),
    ("rest", "прочее: delivery, журнал, очередь …"),
]


def install_timers(timer: StageTimer, engine) -> list:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    import portal.crypto
    import portal.iemk.cda
    import portal.iemk.channel
    import portal.iemk.emk
    import portal.iemk.pix

    patched = [
        (portal.iemk.cda, "check_document", "check"),
        (portal.iemk.cda, "build_document", "build"),
        (portal.iemk.cda, "format_check", "format"),
        (portal.iemk.cda, "logic_check", "logic"),
        (portal.crypto, "detached_signature", "sign"),
        (portal.iemk.pix, "ensure_registered", "pix"),
        (portal.iemk.emk, "ensure_case", "case"),
        (portal.iemk.emk, "add_med_record", "upload"),
        (Session, "commit", "commit"),
        (Session, "flush", "orm"),
        (Session, "_execute_internal", "orm"),
    ]
    undo = []
    for owner, name, stage in patched:
        original = getattr(owner, name)
        setattr(owner, name, timer.wrap(stage, original))
        undo.append((owner, name, original))

    def before(*_):
        timer.enter("sql")

    def after(*_):
        timer.leave()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", after)
    undo.append((engine, None, (before, after)))
    return undo


def remove_timers(undo: list) -> None:
    from sqlalchemy import event

    for owner, name, original in undo:
        if name is None:
            before, after = original
            event.remove(owner, "before_cursor_execute", before)
            event.remove(owner, "after_cursor_execute", after)
            event.remove(owner, "handle_error", after)
        else:
            setattr(owner, name, original)


CHANNEL_WORKERS = 2


@dataclass
class Run:
    documents: int
    signed: int
    refused: dict[str, int]
    sign_seconds: float
    uploaded: int
    upload_seconds: float
    statuses: dict[str, int]
    stored: int
    baseline: list[float]
    timer: StageTimer

    @property
    def rate(self) -> float:
        return self.uploaded / (self.sign_seconds + self.upload_seconds)


def run(count: int, separate: bool, workers: int = 1) -> Run:
    import requests

    from portal import create_app
    from portal.admin.services import ensure_demo_certificate, set_setting
    from portal.auth.models import User
    from portal.auth.roles import DOCTOR
    from portal.clinical.intake import ingest_batch
    from portal.clinical.models import Mo
    from portal.exchange.delivery import send_due
    from portal.extensions import db
    from portal.iemk import documents
    from portal.iemk.channel import CHANNEL
    from portal.iemk.models import IemkDocument
    from simulators import start_simulators

    workdir = Path(tempfile.mkdtemp(prefix="portal-bench-iemk-"))
    config = {"IEMK_RESULT_DELAY": 600, "IEMK_CALLBACKS": False}
    sims = _SimulatorProcess(config) if separate else None
    host = None
    sims_url = sims.url if sims else None
    if sims is None:
        host, sims_url = start_simulators(0, config=config)
    try:
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'iemk.db'}",
                "SCHEDULER_ENABLED": False,
                "SIMULATORS_ENABLED": False,
                "SECRET_KEY": "bench-iemk",
            }
        )
        with app.app_context():
            db.create_all()
            for key, path in (
                ("pix_endpoint", "pix"),
                ("emk_endpoint", "emk"),
                ("registry_endpoint", "registry"),
            ):
                set_setting(f"iemk.{key}", f"{sims_url}/iemk/{path}")
            ensure_demo_certificate("iemk", "Бенчмарк: подпись документов ИЭМК")
            db.session.commit()
            result = ingest_batch(sending_records(count))
            db.session.commit()
            refused = [r for r in result.results if r["status"] != "stored"]
            if refused:
                raise SystemExit(f"приём отклонил {len(refused)} записей, первая: {refused[0]}")
            mo = db.session.scalars(db.select(Mo).order_by(Mo.id)).first()
            user = User(
                login="bench-doctor", full_name="Бенчмарк Врач", role=DOCTOR, mo_id=mo.id, password_hash="-"
            )
            db.session.add(user)
            db.session.commit()
            docs = db.session.scalars(db.select(IemkDocument).order_by(IemkDocument.id)).all()
            baseline = http_baseline(f"{sims_url}/iemk/emk", 300)
            engine = db.engine

            timer = StageTimer()
            undo = install_timers(timer, engine) if workers == 1 else []
            try:
                started = time.perf_counter()
                signing = documents.sign_documents(docs, user)
                db.session.commit()
                sign_seconds = time.perf_counter() - started
                documents.transfer(signing.signed, user)
                db.session.commit()
                started = time.perf_counter()
                uploaded = send_due(CHANNEL, workers=workers)  # one thread: the stages are timed in it
                upload_seconds = time.perf_counter() - started
            finally:
                remove_timers(undo)
            reasons: dict[str, int] = {}
            for _doc, reason in signing.refused:
                reasons[reason[:90]] = reasons.get(reason[:90], 0) + 1
            statuses = dict(
                db.session.execute(
                    db.select(IemkDocument.status, db.func.count()).group_by(IemkDocument.status)
                ).all()
            )
            db.session.remove()
            db.engine.dispose()
        stored = len(requests.get(f"{sims_url}/iemk/_documents", timeout=60).json())
    finally:
        if sims is not None:
            sims.shutdown()
        if host is not None:
            host.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    return Run(
        len(docs),
        len(signing.signed),
        reasons,
        sign_seconds,
        uploaded,
        upload_seconds,
        statuses,
        stored,
        baseline,
        timer,
    )


def main() -> None:
    from portal.iemk.channel import CHANNEL

    global CHANNEL_WORKERS
    CHANNEL_WORKERS = CHANNEL.workers

    parser = argparse.ArgumentParser(
        description="Бенчмарк ИЭМК: документы, собранные, подписанные и переданные в секунду"
    )
    parser.add_argument("--documents", type=int, default=1000, help="clinical events (one document each)")
    parser.add_argument("--goal-rate", type=int, default=100)
    parser.add_argument("--simulator", choices=["process", "inprocess"], default="process")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()

    print(
        f"ИЭМК: {args.documents} событий из приёма → документы → «Получить и подписать» → «Передать в ИЭМК» → "
        f"send_due; SQLite-файл, симулятор ИЭМК {'в отдельном процессе' if args.simulator == 'process' else 'в этом же процессе'} "
        f"(загрузка машины: {os.getloadavg()[0]:.1f} при {os.cpu_count()} ядрах)"
    )
    result = run(args.documents, args.simulator == "process")
    timer, total = result.timer, result.sign_seconds + result.upload_seconds
    timer.seconds["rest"] = total - sum(timer.seconds.values())
    print(
        f"  документов {result.documents}: подписано {result.signed} за {result.sign_seconds:.1f} с, передано "
        f"{result.uploaded} за {result.upload_seconds:.1f} с — {result.rate:,.0f} документов/с; статусы: "
        + ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items()))
        + f"; документов в симуляторе: {result.stored}"
    )
    for reason, number in sorted(result.refused.items(), key=lambda kv: -kv[1]):
        print(f"    не подписано {number}: {reason}")
    rt = percentile(result.baseline, 0.5)
    print(
        f"  базовая линия: минимальный POST в симулятор p50 {ms(rt)} мс, p95 {ms(percentile(result.baseline, 0.95))} мс"
        f" — потолок {1 / rt:,.0f} запросов/с в один поток; передача документа = {result.rate * rt:.2f} потолка"
    )
    done = max(result.uploaded, 1)
    print(f"  {'этап (время без вложенных этапов)':<62} {'мс/док.':>8} {'доля':>6}")
    for key, label in STAGES:
        seconds = timer.seconds.get(key, 0.0)
        print(f"  {label:<62} {seconds / done * 1000:>8.2f} {seconds / total:>6.0%}")
    parallel = run(args.documents, args.simulator == "process", CHANNEL_WORKERS)
    print(
        f"  как работает задание «Выгрузка документов в ИЭМК» ({CHANNEL_WORKERS} потока передачи): подписано за "
        f"{parallel.sign_seconds:.1f} с, передано {parallel.uploaded} за {parallel.upload_seconds:.1f} с — "
        f"{parallel.rate:,.0f} документов/с; документов в симуляторе: {parallel.stored}"
    )
    passed = (
        max(result.rate, parallel.rate) >= args.goal_rate
        and result.stored == result.uploaded == result.signed
        and parallel.stored == parallel.uploaded == parallel.signed
    )
    print(
        f"Цель ≥ {args.goal_rate} документов/с, каждый документ в симуляторе ровно один раз: "
        f"{'PASS' if passed else 'FAIL'}"
    )
    if args.strict and not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
