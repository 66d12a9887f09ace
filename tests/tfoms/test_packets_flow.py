"""ТФОМС over RabbitMQ end to end (issue 6): selection, order, statuses, answers, insurance changes.

Every test runs on the database transport and, when PORTAL_TEST_AMQP_URL is set (CI), on real
RabbitMQ too, against ТФОМС's stand-in (simulators.tfoms_amqp) pumping the same queues.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from datetime import date, datetime, timedelta
from types import SimpleNamespace

import pytest

from portal.admin import services as admin_services
from portal.admin.models import MoIntegration
from portal.clinical.models import PatientPolicy
from portal.exchange.models import JournalEntry, ServiceRun, WorkItem
from portal.extensions import db
from portal.tfoms import broker as transport
from portal.tfoms import packets
from portal.tfoms.models import (
    PACKET_ACCEPTED,
    PACKET_BUILD_ERROR,
    PACKET_PROCESSED,
    PACKET_QUEUED,
    PACKET_REFUSED,
    PACKET_REJECTED,
    PACKET_SEND_ERROR,
    PACKET_SENT,
    TfomsPacket,
)
from simulators.tfoms_amqp import TfomsStandIn
from tests import factories as f

AMQP_URL = os.environ.get("PORTAL_TEST_AMQP_URL")
if os.environ.get("CI") and not AMQP_URL:
    raise RuntimeError("PORTAL_TEST_AMQP_URL is required in CI: the RabbitMQ tests must run")
TRANSPORTS = ["database"] + (["rabbitmq"] if AMQP_URL else [])


@pytest.fixture(params=TRANSPORTS)
def env(app, request):
    """The portal and ТФОМС's stand-in on one transport, with queues of this test only."""
    suffix = uuid.uuid4().hex[:8]
    queues = {"request": f"t.request.{suffix}", "reply": f"t.reply.{suffix}", "rpc": f"t.rpc.{suffix}"}
    admin_services.set_setting(packets.REQUEST_QUEUE.key, queues["request"])
    admin_services.set_setting(packets.REPLY_QUEUE.key, queues["reply"])
    admin_services.set_setting(packets.RPC_QUEUE.key, queues["rpc"])
    if request.param == "rabbitmq":
        app.config["AMQP_URL"] = AMQP_URL
    db.session.commit()
    broker = transport.get_broker()
    standin = TfomsStandIn()
    yield SimpleNamespace(transport=request.param, broker=broker, standin=standin, queues=queues)
    if request.param == "rabbitmq":
        for name in queues.values():
            broker.delete_queue(name)


def pump(env) -> int:
    done = env.standin.pump(env.broker, request_queue=env.queues["request"], rpc_queue=env.queues["rpc"])
    db.session.commit()
    return done


def settle(env, channel=packets.CHANNEL, rounds: int = 12) -> None:
    """Service runs and the stand-in in turn until nothing is in flight."""
    for _ in range(rounds):
        packets.exchange(channel, wait=0)
        if pump(env) == 0 and not db.session.scalar(
            db.select(TfomsPacket.id).where(
                TfomsPacket.status.in_((PACKET_SENT,)), TfomsPacket.direction == "out"
            )
        ):
            packets.exchange(channel, wait=0, select=False)
            if pump(env) == 0:
                return


def switch_on(mo, *procedures):
    for key in procedures:
        db.session.add(MoIntegration(mo_id=mo.id, key=key, enabled=True))
    db.session.flush()


def hospital(mo=None):
    """An МО with a branch, an in-patient department and its bed profile, switched on for 263."""
    mo = mo or f.make_mo()
    switch_on(mo, "tfoms_hospitalisation")
    branch = f.make_branch(mo)
    department = f.make_department(mo, kind="round_the_clock", branch_id=branch.id, code="101")
    beds = f.make_bed_profile(department)
    return SimpleNamespace(mo=mo, branch=branch, department=department, beds=beds)


def insured_patient(mo):
    insurer = db.session.scalar(db.select(f.Insurer).where(f.Insurer.code == "35001")) or f.make_insurer(
        "35001"
    )
    return f.make_patient(mo, policy_kind="Э", policy_number=None, insurer_code=insurer.code)


def by_type(packet_type: str) -> list[TfomsPacket]:
    return list(
        db.session.scalars(
            db.select(TfomsPacket).where(TfomsPacket.packet_type == packet_type).order_by(TfomsPacket.id)
        )
    )


def received_order(env) -> list[str]:
    return [entry["type"] for entry in env.standin.log if entry.get("result") == "OK"]


# --- selection and order ---------------------------------------------------------------------------


def test_children_wait_for_their_parents_and_reach_tfoms_after_them(env):
    h = hospital()
    patient = insured_patient(h.mo)
    referral = f.make_referral(patient, h.department, doctor_id=f.make_staff(h.mo).id)
    stay = f.make_hospitalisation(patient, h.department, referral_id=referral.id)
    f.make_movement(stay)
    db.session.commit()

    selected = packets.select_changes()
    db.session.commit()
    assert selected.by_type == {
        "BRANCH": 1,
        "DIVISION": 1,
        "DIVISION_LINK_STRUCTURE_BED": 1,
        "AMOUNT_BED": 1,
        "FREE_BEDS_INFORMATION": 1,
        "HOSPITALISATION_REFERRAL": 1,
        "HOSPITALISATION": 1,
        "MOTION_IN_HOSPITAL": 1,
    }
    division = by_type("DIVISION")[0]
    assert division.after_id == by_type("BRANCH")[0].id
    assert division.status == PACKET_QUEUED and "Ожидает принятия ТФОМС пакета BRANCH" in division.status_text
    # Only the roots have work items: BRANCH and the referral.
    queued = set(
        db.session.scalars(
            db.select(TfomsPacket.packet_type).join(
                WorkItem, (WorkItem.subject_id == TfomsPacket.id) & (WorkItem.subject_type == "tfoms_packet")
            )
        )
    )
    assert queued == {"BRANCH", "HOSPITALISATION_REFERRAL"}

    settle(env)
    statuses = {p.packet_type: p.status for p in db.session.scalars(db.select(TfomsPacket))}
    assert set(statuses.values()) == {PACKET_ACCEPTED}, statuses
    order = received_order(env)
    for parent, child in [
        ("BRANCH", "DIVISION"),
        ("DIVISION", "DIVISION_LINK_STRUCTURE_BED"),
        ("DIVISION_LINK_STRUCTURE_BED", "AMOUNT_BED"),
        ("AMOUNT_BED", "FREE_BEDS_INFORMATION"),
        ("HOSPITALISATION_REFERRAL", "HOSPITALISATION"),
        ("HOSPITALISATION", "MOTION_IN_HOSPITAL"),
    ]:
        assert order.index(parent) < order.index(child), order
    assert all(p.status_text == "Принят ТФОМС" for p in db.session.scalars(db.select(TfomsPacket)))


def test_only_what_the_seed_lists_and_only_what_changed(env):
    h = hospital()
    f.make_department(h.mo, kind="laboratory", branch_id=h.branch.id)  # not a kind ТФОМС gets
    f.make_branch(h.mo, kind="other")
    patient = insured_patient(h.mo)
    f.make_referral(patient, h.department, auto_created=True)
    f.make_referral(patient, h.department, payment="budget")
    f.make_referral(patient, h.department, kind="consultation")
    f.make_hospitalisation(patient, h.department, payment="paid")
    other = f.make_mo()  # integration off: nothing of it goes
    f.make_hospitalisation(insured_patient(other), f.make_department(other, kind="round_the_clock"))
    db.session.commit()

    first = packets.select_changes()
    db.session.commit()
    assert first.by_type == {
        "BRANCH": 1,
        "DIVISION": 1,
        "DIVISION_LINK_STRUCTURE_BED": 1,
        "AMOUNT_BED": 1,
        "FREE_BEDS_INFORMATION": 1,
    }
    again = packets.select_changes()
    assert again.packets == 0  # nothing changed since


def test_a_run_for_one_mo_and_the_regional_run_do_not_send_a_row_twice(env):
    h = hospital()
    other = hospital()
    db.session.commit()
    assert packets.select_changes(mo_id=h.mo.id).packets == 5  # a manual run of the МО administrator
    db.session.commit()
    regional = packets.select_changes()
    db.session.commit()
    assert regional.packets == 5 and {p.mo_id for p in db.session.scalars(db.select(TfomsPacket))} == {
        h.mo.id,
        other.mo.id,
    }
    assert len(by_type("BRANCH")) == 2


def test_update_goes_at_once_and_delete_goes_in_reverse_order(env):
    h = hospital()
    db.session.commit()
    settle(env)
    assert {p.status for p in db.session.scalars(db.select(TfomsPacket))} == {PACKET_ACCEPTED}

    time.sleep(0.01)
    h.beds.free = 3
    h.department.phone = "8172555555"
    db.session.commit()
    selected = packets.select_changes()
    db.session.commit()
    updates = list(db.session.scalars(db.select(TfomsPacket).where(TfomsPacket.operation == "Update")))
    assert {p.packet_type for p in updates} >= {"DIVISION", "FREE_BEDS_INFORMATION"}
    assert all(p.after_id is None for p in updates) and selected.packets == len(updates)
    settle(env)

    time.sleep(0.01)
    h.department.closed_on = date.today()
    db.session.commit()
    packets.select_changes()
    db.session.commit()
    deletes = list(
        db.session.scalars(
            db.select(TfomsPacket).where(TfomsPacket.operation == "Delete").order_by(TfomsPacket.id)
        )
    )
    assert [p.packet_type for p in deletes] == [
        "FREE_BEDS_INFORMATION",
        "AMOUNT_BED",
        "DIVISION_LINK_STRUCTURE_BED",
        "DIVISION",
    ]
    assert [p.after_id for p in deletes[1:]] == [p.id for p in deletes[:-1]]
    settle(env)
    assert {p.status for p in deletes} == {PACKET_ACCEPTED}
    order = [e["type"] for e in env.standin.log if e.get("operation") == "Delete" and e.get("result") == "OK"]
    assert order == ["FREE_BEDS_INFORMATION", "AMOUNT_BED", "DIVISION_LINK_STRUCTURE_BED", "DIVISION"]


# --- statuses and messages (T-7) -----------------------------------------------------------------------


def test_build_error_names_the_problem_and_keeps_children_waiting(env):
    h = hospital()
    stay = f.make_hospitalisation(insured_patient(h.mo), h.department, diagnosis=None)
    f.make_movement(stay)
    db.session.commit()
    settle(env)
    hosp = by_type("HOSPITALISATION")[0]
    assert hosp.status == PACKET_BUILD_ERROR
    assert hosp.status_text.startswith("Пакет не сформирован: ")
    motion = by_type("MOTION_IN_HOSPITAL")[0]
    assert motion.status == PACKET_QUEUED and motion.after_id == hosp.id
    line = db.session.scalar(
        db.select(JournalEntry).where(
            JournalEntry.subject_type == "tfoms_packet",
            JournalEntry.subject_id == hosp.id,
            JournalEntry.level == "error",
        )
    )
    assert line.message == hosp.status_text and line.operation == "Формирование"

    settle(env)  # unchanged data is not sent again
    assert by_type("HOSPITALISATION")[0].status == PACKET_BUILD_ERROR
    # Fixed in the source MIS: the next run sends it rebuilt, then its child.
    stay.diagnosis = "O24.4"
    db.session.commit()
    settle(env)
    assert by_type("HOSPITALISATION")[0].status == PACKET_ACCEPTED
    assert by_type("MOTION_IN_HOSPITAL")[0].status == PACKET_ACCEPTED


def test_rejected_packet_shows_tfoms_error_and_no_resend_is_honoured(env):
    hospital()
    db.session.commit()
    env.standin.mode = "errors"
    packets.exchange(packets.CHANNEL, wait=0)
    pump(env)
    packets.exchange(packets.CHANNEL, wait=0, select=False)
    branch = by_type("BRANCH")[0]
    assert branch.status == PACKET_REJECTED
    assert branch.status_text.startswith("Получен ответ с ошибкой: ")
    assert branch.answer["answer"] is True and branch.answer["ok"] is False
    assert by_type("DIVISION")[0].status == PACKET_QUEUED  # its child waits

    admin = f.make_user("central_admin", None)
    packets.forbid_resend(branch, admin)
    db.session.commit()
    env.standin.mode = "normal"
    first_id = branch.message_id
    settle(env)
    assert by_type("BRANCH")[0].status == PACKET_REJECTED  # not sent again
    assert by_type("BRANCH")[0].message_id == first_id

    packets.allow_resend(branch, admin)
    db.session.commit()
    settle(env)
    branch = by_type("BRANCH")[0]
    assert branch.status == PACKET_ACCEPTED and branch.message_id != first_id
    assert by_type("DIVISION")[0].status == PACKET_ACCEPTED


def test_broker_away_gives_send_error_then_the_packet_goes(app):
    h = hospital()
    db.session.commit()
    app.config["AMQP_URL"] = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens there
    packets.exchange(packets.CHANNEL, wait=0)
    branch = by_type("BRANCH")[0]
    assert branch.status == PACKET_SEND_ERROR
    assert "Ошибка отправки пакета" in branch.status_text
    item = db.session.scalar(db.select(WorkItem).where(WorkItem.subject_id == branch.id))
    assert item.state == "queued" and item.next_attempt_at > datetime.utcnow()
    assert h.mo.id == branch.mo_id


# --- answers that cannot be read, repeats --------------------------------------------------------------


def test_poison_reply_is_journaled_and_does_not_block_the_queue(env):
    hospital()
    db.session.commit()
    packets.exchange(packets.CHANNEL, wait=0)
    env.broker.publish(env.queues["reply"], b"\x00not xml at all", type="ANSWER", message_id="poison-1")
    db.session.commit()
    pump(env)  # the stand-in answers BRANCH behind the poison message
    result = packets.consume_replies()
    db.session.commit()
    assert result.refused == 1 and result.answers == 1
    assert by_type("BRANCH")[0].status == PACKET_ACCEPTED
    poison = db.session.scalar(db.select(JournalEntry).where(JournalEntry.packet_id == "poison-1"))
    assert poison.level == "error" and "не обработано" in poison.message
    assert packets.consume_replies().refused == 0  # acknowledged: it does not come back


def test_a_repeated_answer_settles_the_packet_once(env):
    hospital()
    db.session.commit()
    packets.exchange(packets.CHANNEL, wait=0)
    branch = by_type("BRANCH")[0]
    # The same packet reaches ТФОМС twice (a resend after a crash): one processing, answers twice.
    env.broker.publish(
        env.queues["request"],
        branch.xml.encode(),
        type="BRANCH",
        message_id=branch.message_id,
        reply_to=env.queues["reply"],
    )
    db.session.commit()
    pump(env)
    assert env.standin.duplicates == 1
    packets.consume_replies()
    db.session.commit()
    lines = db.session.scalars(
        db.select(JournalEntry).where(
            JournalEntry.subject_id == branch.id,
            JournalEntry.subject_type == "tfoms_packet",
            JournalEntry.message == "Принят ТФОМС",
        )
    ).all()
    assert len(lines) == 1


# --- incoming: insurance changes (T-6) -----------------------------------------------------------------


def test_insurance_change_from_tfoms_updates_the_patient_and_is_answered(env):
    mo = f.make_mo()
    switch_on(mo, "tfoms_insurance")
    f.make_insurer("35002")
    enp = f.valid_enp(4242)
    patient = f.make_patient(
        mo,
        enp=enp,
        policy_kind="П",
        policy_number=enp,
        insurer_code="35001",
        policy_begin=date(2020, 1, 1),
        policy_end=date(2025, 12, 31),
        document_kind=None,
        document_series=None,
        document_number=None,
    )
    db.session.commit()
    env.standin.send_polis(
        env.broker,
        env.queues["reply"],
        bdz_id=9001,
        enp=enp,
        smo_code="35002",
        policy_type=4,
        number=enp,
        begin=date(2026, 1, 1),
        person={
            "FAM": patient.last_name,
            "IM": patient.first_name,
            "DR": patient.birth_date,
            "W": 2,
            "DOCTYPE": "14",
            "DOCSER": "1904",
            "DOCNUM": "123456",
        },
    )
    db.session.commit()
    packets.exchange(packets.CHANNEL, wait=0, select=False)
    db.session.refresh(patient)
    assert (patient.insurer_code, patient.policy_kind, patient.policy_begin) == (
        "35002",
        "Э",
        date(2026, 1, 1),
    )
    assert (patient.document_kind, patient.document_series, patient.document_number) == (
        "14",
        "1904",
        "123456",
    )
    history = db.session.scalars(db.select(PatientPolicy).where(PatientPolicy.patient_id == patient.id)).all()
    assert [(p.insurer_code, p.source) for p in history] == [("35002", "tfoms_polis")]
    incoming = by_type("POLIS")[0]
    assert (incoming.direction, incoming.status, incoming.status_text) == (
        "in",
        PACKET_PROCESSED,
        "Пакет обработан",
    )
    assert incoming.data["answer"] is True
    pump(env)
    answers = env.standin.polis_answers
    assert len(answers) == 1 and answers[0]["ok"] is True
    assert by_type("ANSWER")[0].status == PACKET_SENT


def insured_since_2020(n: int):
    """A patient of an МО with insurance changes switched on, insured by СМО 35001 since 2020."""
    mo = f.make_mo()
    switch_on(mo, "tfoms_insurance")
    for code in ("35001", "35002"):
        if db.session.scalar(db.select(f.Insurer).where(f.Insurer.code == code)) is None:
            f.make_insurer(code)
    enp = f.valid_enp(n)
    patient = f.make_patient(
        mo,
        enp=enp,
        policy_kind="Э",
        policy_number=enp,
        insurer_code="35001",
        policy_begin=date(2020, 1, 1),
        policy_end=None,
    )
    db.session.commit()
    return patient


def test_insurance_change_overlapping_a_policy_is_refused_with_an_error_answer(env):
    patient = insured_since_2020(4343)
    enp = patient.enp
    env.standin.send_polis(
        env.broker,
        env.queues["reply"],
        bdz_id=9002,
        enp=f.valid_enp(9),
        smo_code="35002",
        policy_type=3,
        number="7700000000000001",
        begin=date(2026, 1, 1),
    )
    env.standin.send_polis(
        env.broker,
        env.queues["reply"],
        bdz_id=9003,
        enp=enp,
        smo_code="35002",
        policy_type=1,
        number="123456",
        series="ВЛГ",
        begin=date(2019, 1, 1),  # before the policy the patient has had since 2020: not a replacement
        end=date(2021, 12, 31),
    )
    db.session.commit()
    packets.exchange(packets.CHANNEL, wait=0, select=False)
    unknown, overlap = by_type("POLIS")
    assert unknown.status == PACKET_REFUSED and "не найден" in unknown.status_text
    assert overlap.status == PACKET_REFUSED and overlap.status_text.startswith(
        "Пакет отклонен: Период действия"
    )
    db.session.refresh(patient)
    assert patient.insurer_code == "35001"
    pump(env)
    assert [a["ok"] for a in env.standin.polis_answers] == [False, False]


def test_change_of_insurer_for_the_same_enp_closes_the_previous_policy(env):
    patient = insured_since_2020(4444)
    enp = patient.enp
    env.standin.send_polis(
        env.broker,
        env.queues["reply"],
        bdz_id=9004,
        enp=enp,
        smo_code="35002",
        policy_type=4,
        number=enp,
        begin=date(2026, 1, 1),
    )
    db.session.commit()
    packets.exchange(packets.CHANNEL, wait=0, select=False)
    assert by_type("POLIS")[0].status == PACKET_PROCESSED
    db.session.refresh(patient)
    assert (patient.insurer_code, patient.policy_begin, patient.policy_end) == (
        "35002",
        date(2026, 1, 1),
        None,
    )
    history = db.session.scalars(
        db.select(PatientPolicy)
        .where(PatientPolicy.patient_id == patient.id)
        .order_by(PatientPolicy.begin_on)
    ).all()
    assert [(p.insurer_code, p.begin_on, p.end_on) for p in history] == [
        ("35001", date(2020, 1, 1), date(2025, 12, 31)),
        ("35002", date(2026, 1, 1), None),
    ]


# --- prophylactic plans, one message per person ----------------------------------------------------------


def test_plan_people_get_accepted_or_error_from_the_answers(env):
    mo = f.make_mo()
    plan = f.make_plan(mo)
    good = f.make_plan_person(
        plan, f.make_patient(mo, policy_kind="Э", enp=f.valid_enp(51), policy_number=f.valid_enp(51))
    )
    bad = f.make_plan_person(
        plan, f.make_patient(mo, policy_kind="Э", enp=f.valid_enp(52), policy_number=f.valid_enp(52))
    )
    db.session.commit()
    env.standin.refuse_people = {bad.patient_id}
    assert packets.send_plan(plan.id) == 2
    db.session.commit()
    settle(env, packets.PLANS_CHANNEL)
    db.session.refresh(good)
    db.session.refresh(bad)
    assert good.status == "accepted"
    assert bad.status == "error" and bad.status_text.startswith("Получен ответ с ошибкой")
    assert {p.channel for p in by_type("PERS_LIST")} == {"tfoms_prof"}


# --- stage 3 ----------------------------------------------------------------------------------------------


def test_free_beds_rpc_answers_from_what_tfoms_knows_and_times_out_when_away(env, monkeypatch):
    h = hospital()
    db.session.commit()
    settle(env)
    user = f.make_user("doctor", h.mo)
    db.session.commit()
    real_sleep = time.sleep

    def tfoms_answers_while_the_portal_waits(seconds: float) -> None:
        pump(env)
        real_sleep(min(seconds, 0.01))

    monkeypatch.setattr(time, "sleep", tfoms_answers_while_the_portal_waits)
    result = packets.free_beds(user, target_mo_id=h.mo.id, profile=None)
    assert result.error is None, result.error
    assert [(r["free"], r["mo_name"]) for r in result.rows] == [(h.beds.free, h.mo.short_name)]

    env.standin.mode = "down"
    admin_services.set_setting(packets.RPC_TIMEOUT, "1")
    db.session.commit()
    away = packets.free_beds(user, target_mo_id=None, profile=None)
    assert away.rows == [] and away.error == "ТФОМС не ответил за 1 с. Повторите запрос позже."


# --- the journal (T-8, T-11) ------------------------------------------------------------------------------


def test_service_run_counts_packets_and_errors(env):
    from jobs.scheduler import run_job

    h = hospital()
    f.make_hospitalisation(insured_patient(h.mo), h.department, diagnosis=None)
    db.session.commit()
    from flask import current_app

    run_job(current_app._get_current_object(), packets.SERVICE)
    run = db.session.scalar(db.select(ServiceRun).where(ServiceRun.service == packets.SERVICE))
    assert run.total >= 2 and run.errors == 1
    assert run.result == "error"


def test_journal_of_a_regional_run_shows_an_mo_user_only_their_packets(env):
    from flask import current_app

    from jobs.scheduler import run_job
    from portal.journal import services as journal

    ours, theirs = hospital(), hospital()
    f.make_hospitalisation(insured_patient(theirs.mo), theirs.department, diagnosis=None)  # their error
    db.session.commit()
    run_job(current_app._get_current_object(), packets.SERVICE)
    run = db.session.scalar(db.select(ServiceRun).where(ServiceRun.service == packets.SERVICE))
    statistician = f.make_user("statistician", ours.mo)
    db.session.commit()
    row = journal.get_run(run.id, statistician)
    assert (row.total, row.errors, row.result) == (1, 0, "ok")  # their BRANCH and failed HOSPITALISATION not
    entries = journal.run_entries(run, statistician).rows
    assert entries and {e.mo_id for e in entries} == {ours.mo.id}
    assert (run.total, run.errors) == (3, 1)  # the central administrator's view: the whole region


# --- a broker restart in the middle of a batch ----------------------------------------------------------


@pytest.mark.skipif(not AMQP_URL, reason="needs RabbitMQ (PORTAL_TEST_AMQP_URL)")
def test_broker_restart_in_the_middle_of_a_batch_delivers_every_packet_once(app):
    suffix = uuid.uuid4().hex[:8]
    queues = {"request": f"t.request.{suffix}", "reply": f"t.reply.{suffix}"}
    admin_services.set_setting(packets.REQUEST_QUEUE.key, queues["request"])
    admin_services.set_setting(packets.REPLY_QUEUE.key, queues["reply"])
    app.config["AMQP_URL"] = AMQP_URL
    h = hospital()
    for _ in range(60):
        f.make_hospitalisation(insured_patient(h.mo), h.department)
    db.session.commit()
    packets.select_changes()
    db.session.commit()
    broker = transport.get_broker()
    standin = TfomsStandIn()
    from portal.exchange import delivery

    delivery.send_due(packets.CHANNEL, limit=20, workers=1)  # part of the batch leaves
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            packets.exchange(packets.CHANNEL, wait=0, select=False)
            standin.pump(broker, request_queue=queues["request"], rpc_queue=f"t.rpc.{suffix}")
        except transport.BrokerUnavailable:
            time.sleep(1)
            continue
        db.session.execute(
            db.update(WorkItem)
            .values(next_attempt_at=datetime.utcnow() - timedelta(seconds=1))
            .where(WorkItem.state == "queued")
        )
        db.session.commit()
        if all(p.status == PACKET_ACCEPTED for p in db.session.scalars(db.select(TfomsPacket))):
            break
        time.sleep(0.2)
    hosp = by_type("HOSPITALISATION")
    assert len(hosp) == 60 and {p.status for p in hosp} == {PACKET_ACCEPTED}
    processed = [e for e in standin.log if e["type"] == "HOSPITALISATION" and e.get("result") == "OK"]
    assert sorted(e["message_id"] for e in processed) == sorted(p.message_id for p in hosp)  # once each
    for name in queues.values():
        broker.delete_queue(name)
