"""Benchmark of the ТФОМС packets over RabbitMQ (issue 6).

    .venv/bin/python bench/tfoms_amqp.py [--packets 10000] [--amqp URL] [--strict]

A fresh SQLite file in a temporary directory holds one МО with the order-263 integration on and
N hospitalisations (patients with policies, departments with bed profiles). The portal's path is
measured on N HOSPITALISATION packets to a private queue of the RabbitMQ at --amqp
(PORTAL_BENCH_AMQP_URL, default the local one), stage by stage:

  select   select_changes(): the packets written for what changed (rows, work items)
  build    the XML of every packet from its rows (builders.build, which includes the schema check)
  validate the XSD check of every packet alone (so build without it is the difference)
  publish  the portal's publish step (broker.AmqpBroker.publish: persistent, publisher confirm)
  whole    delivery.send_due(): claim, build, validate, journal, publish with confirm, mark
           «Отправлен» and commit — what the service run does, per packet

and, in the same run, a bare pika BlockingConnection publishing the same N bodies with
confirm_delivery to another private queue (the baseline). Goal: the portal's publish step
≥ 0.8 × the bare rate. Exit code 0 whatever the figures, unless --strict and the goal is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_RATIO = 0.8


def n(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ")


def populate(packets: int) -> None:
    """One МО, its branch, department, bed profile, and N patients with a hospitalisation each."""
    from portal.admin.models import MoIntegration
    from portal.clinical.models import BedProfile, Branch, Department, Hospitalisation, Insurer, Mo, Patient
    from portal.extensions import db

    mo = Mo(source_id="mo-1", name="БУЗ ВО «Вологодский областной родильный дом»", short_name="Роддом",
            registry_number="350001", f003_code="350001")
    db.session.add_all([mo, Insurer(source_id="smo-1", code="35001", ogrn="1023500000001", name="СМО")])
    db.session.flush()
    db.session.add(MoIntegration(mo_id=mo.id, key="tfoms_hospitalisation", enabled=True))
    branch = Branch(source_id="br-1", mo_id=mo.id, code="001", name="Стационар", kind="hospital")
    db.session.add(branch)
    db.session.flush()
    department = Department(source_id="dep-1", mo_id=mo.id, name="Отделение патологии беременности",
                            kind="round_the_clock", branch_id=branch.id, code="101")
    db.session.add(department)
    db.session.flush()
    db.session.add(BedProfile(source_id="bed-1", mo_id=mo.id, department_id=department.id, profile=4,
                              care_profile=136, beds=40, beds_female=40))
    admitted = datetime(2026, 11, 20, 9, 30)
    patients = [
        dict(source_id=f"p-{i}", mo_id=mo.id, last_name="Иванова", first_name="Мария", middle_name="Петровна",
             sex="F", birth_date=date(1990, 1, 1) + timedelta(days=i % 5000), enp=f"{3500000000000000 + i}",
             policy_kind="Э", policy_number=f"{3500000000000000 + i}", insurer_code="35001")
        for i in range(packets)
    ]
    db.session.execute(Patient.__table__.insert(), [
        {**p, "created_at": admitted, "updated_at": admitted} for p in patients])
    ids = db.session.scalars(db.select(Patient.id).order_by(Patient.id)).all()
    db.session.execute(Hospitalisation.__table__.insert(), [
        dict(source_id=f"h-{i}", patient_id=pid, mo_id=mo.id, department_id=department.id, admitted_at=admitted,
             payment="oms", emergency=False, card_number=str(10000 + i), diagnosis="O24.4",
             created_at=admitted, updated_at=admitted)
        for i, pid in enumerate(ids)
    ])
    db.session.commit()


def bare_pika(url: str, bodies: list[bytes], queue: str) -> float:
    import pika

    if url.endswith("//"):  # kombu's "//" is the default vhost "/", which pika spells %2F
        url = url[:-1] + "%2F"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    channel.confirm_delivery()
    started = time.perf_counter()
    for body in bodies:
        channel.basic_publish(
            exchange="", routing_key=queue, body=body,
            properties=pika.BasicProperties(type="HOSPITALISATION", message_id=str(uuid.uuid4()),
                                            content_type="Xml", content_encoding="utf-8", delivery_mode=2,
                                            reply_to="reply_queue", app_id="Portal"),
        )
    elapsed = time.perf_counter() - started
    channel.queue_delete(queue=queue)
    connection.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=10_000)
    parser.add_argument("--amqp", default=os.environ.get("PORTAL_BENCH_AMQP_URL")
                        or os.environ.get("PORTAL_TEST_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-tfoms-amqp-"))
    suffix = uuid.uuid4().hex[:8]
    request_queue, bare_queue = f"bench.request.{suffix}", f"bench.bare.{suffix}"
    try:
        from portal import create_app
        from portal.config import TestConfig

        config = {k: getattr(TestConfig, k) for k in dir(TestConfig) if k.isupper()}
        config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp / 'bench.db'}", AMQP_URL=args.amqp,
                      TFOMS_DIR=str(tmp / "tfoms"))
        app = create_app(config)
        with app.app_context():
            from portal.admin import services as admin_services
            from portal.exchange import delivery
            from portal.extensions import db
            from portal.tfoms import broker as transport
            from portal.tfoms import builders, packets
            from portal.tfoms.models import TfomsPacket

            db.create_all()
            print(f"ТФОМС, пакеты по RabbitMQ: {n(args.packets)} пакетов HOSPITALISATION, брокер {args.amqp}")
            started = time.perf_counter()
            populate(args.packets)
            print(f"  данные: {time.perf_counter() - started:.1f} с")
            admin_services.set_setting(packets.REQUEST_QUEUE.key, request_queue)
            db.session.commit()

            t = time.perf_counter()
            selected = packets.select_changes()
            db.session.commit()
            t_select = time.perf_counter() - t
            hosp = [p for p in db.session.scalars(db.select(TfomsPacket).where(
                TfomsPacket.packet_type == "HOSPITALISATION").order_by(TfomsPacket.id))]
            print(f"  отбор изменений: {n(selected.packets)} пакетов за {t_select:.2f} с "
                  f"({n(selected.packets / t_select)}/с)")

            # Stages on the same rows, outside the delivery loop.
            from portal.clinical.models import Hospitalisation

            rows = {h.id: h for h in db.session.scalars(db.select(Hospitalisation))}
            t = time.perf_counter()
            bodies = [builders.build(p.packet_type, p.operation, rows[p.object_id], created_on=date.today())
                      for p in hosp]
            t_build = time.perf_counter() - t
            t = time.perf_counter()
            problems = sum(1 for body in bodies if builders.validate("HOSPITALISATION", body))
            t_validate = time.perf_counter() - t
            broker = transport.AmqpBroker(args.amqp)
            broker.purge(request_queue)
            t = time.perf_counter()
            for p, body in zip(hosp, bodies, strict=True):
                broker.publish(request_queue, body, type=p.packet_type, message_id=p.message_id,
                               reply_to="reply_queue")
            t_publish = time.perf_counter() - t
            broker.purge(request_queue)
            t_bare = bare_pika(args.amqp, bodies, bare_queue)

            # The whole path: the service's delivery of the same packets.
            t = time.perf_counter()
            sent = delivery.send_due(packets.CHANNEL, workers=1)
            t_whole = time.perf_counter() - t
            statuses = dict(db.session.execute(db.select(TfomsPacket.status, db.func.count()).group_by(
                TfomsPacket.status)).all())
            queued = broker.size(request_queue)
            broker.delete_queue(request_queue)
            broker.close()

        count = len(hosp)
        print(f"  сборка XML (с проверкой): {n(count / t_build):>8}/с; без проверки ≈ "
              f"{n(count / max(t_build - t_validate, 1e-9))}/с")
        print(f"  проверка по XSD:   {n(count / t_validate):>8}/с (ошибок: {problems})")
        print(f"  публикация портала (подтверждение брокера): {n(count / t_publish):>8}/с")
        print(f"  голый pika с подтверждением (база):         {n(count / t_bare):>8}/с")
        ratio = (count / t_publish) / (count / t_bare)
        print(f"  отношение портал / pika: {ratio:.2f} (цель ≥ {GOAL_RATIO})")
        print(f"  весь путь send_due (сборка, XSD, журнал, публикация, «Отправлен», commit): "
              f"{n(sent / t_whole)}/с, отправлено {n(sent)}, в очереди брокера {n(queued)}, статусы {statuses}")
        missed = ratio < GOAL_RATIO
        print("  цель достигнута" if not missed else "  ЦЕЛЬ НЕ ДОСТИГНУТА")
        return 1 if (missed and args.strict) else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
