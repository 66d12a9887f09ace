"""ТФОМС's stand-in for the packet exchange (simulators.tfoms_amqp) as the portal meets it: packets
put into the request queue come back as ANSWER / ERROR / FREE_BEDS_ANSWER messages on the reply
queues, on the database transport and on real RabbitMQ (PORTAL_TEST_AMQP_URL; required in CI)."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import date
from types import SimpleNamespace

import pytest
import requests
from lxml import etree

from portal.extensions import db
from portal.tfoms import builders
from portal.tfoms.broker import AmqpBroker, DbBroker
from simulators import start_simulators
from simulators.tfoms_amqp import TfomsStandIn, standin_of, start_standin
from tests import factories as f
from tests.conftest import make_app

AMQP_URL = os.environ.get("PORTAL_TEST_AMQP_URL")
IN_CI = bool(os.environ.get("CI") or os.environ.get("PORTAL_TEST_DATABASE_URL"))
TODAY = date.today()


def _need_rabbitmq() -> None:
    if not AMQP_URL:
        if IN_CI:
            pytest.fail("PORTAL_TEST_AMQP_URL is required in CI")
        pytest.skip("PORTAL_TEST_AMQP_URL не задан")


def _queues() -> SimpleNamespace:
    suffix = uuid.uuid4().hex[:10]
    return SimpleNamespace(
        request=f"sim.request.{suffix}",
        reply=f"sim.reply.{suffix}",
        rpc=f"sim.rpc.{suffix}",
        rpc_reply=f"sim.rpc.reply.{suffix}",
    )


@pytest.fixture(params=["database", "rabbitmq"])
def wire(app, request):
    """A transport with queues of this test only, and a fresh stand-in."""
    if request.param == "rabbitmq":
        _need_rabbitmq()
        broker = AmqpBroker(AMQP_URL)
    else:
        broker = DbBroker()
    queues = _queues()
    yield SimpleNamespace(broker=broker, q=queues, standin=TfomsStandIn())
    if request.param == "rabbitmq":
        for name in vars(queues).values():
            broker.delete_queue(name)
        broker.close()


@pytest.fixture
def hospital(app):
    """An МО with a branch, an in-patient department, its beds, and a patient staying there."""
    mo = f.make_mo()
    branch = f.make_branch(mo)
    department = f.make_department(mo, kind="round_the_clock", branch_id=branch.id, code="101")
    beds = f.make_bed_profile(department)
    patient = f.make_patient(mo)
    stay = f.make_hospitalisation(patient, department)
    movement = f.make_movement(stay)
    db.session.commit()
    return SimpleNamespace(
        mo=mo, branch=branch, department=department, beds=beds, patient=patient, stay=stay, movement=movement
    )


def packet(packet_type: str, obj, operation: str = "Insert") -> bytes:
    return builders.build(packet_type, operation, obj, created_on=TODAY)


def send(wire, packet_type: str, body: bytes, message_id: str | None = None, queue: str | None = None) -> str:
    message_id = message_id or str(uuid.uuid4())
    wire.broker.publish(
        queue or wire.q.request, body, type=packet_type, message_id=message_id, reply_to=wire.q.reply
    )
    db.session.commit()
    return message_id


def pump(wire) -> int:
    done = wire.standin.pump(
        wire.broker, request_queue=wire.q.request, rpc_queue=wire.q.rpc, reply_queue=wire.q.reply
    )
    db.session.commit()
    return done


def received(wire, queue: str | None = None) -> list:
    messages = []
    while (message := wire.broker.get(queue or wire.q.reply)) is not None:
        message.ack()
        db.session.commit()
        messages.append(message)
    return messages


def answer_of(message) -> builders.Reply:
    assert message.type == "ANSWER"
    assert builders.validate("ANSWER", message.body) == []
    return builders.parse_reply(message.type, message.body)


def stage1(wire, h) -> None:
    for packet_type, obj in (
        ("BRANCH", h.branch),
        ("DIVISION", h.department),
        ("DIVISION_LINK_STRUCTURE_BED", h.beds),
        ("AMOUNT_BED", h.beds),
        ("FREE_BEDS_INFORMATION", h.beds),
    ):
        send(wire, packet_type, packet(packet_type, obj))


# --- answers to packets ------------------------------------------------------------------------------


def test_accepted_packet_gets_answer_ok_on_its_reply_to(wire, hospital):
    message_id = send(wire, "BRANCH", packet("BRANCH", hospital.branch))
    assert pump(wire) == 1
    (message,) = received(wire)
    answer = answer_of(message)
    assert (answer.ok, answer.message_id, answer.answered_type) == (True, message_id, "BRANCH")
    assert message.correlation_id == message_id
    assert answer.data["QUEUE_NAME"] == wire.q.request
    assert wire.broker.size(wire.q.request) == 0  # acked
    state = wire.standin.state()
    assert {"type": "BRANCH", "result": "OK", "count": 1} in state["counts"]
    assert state["log"][0]["type"] == "BRANCH" and state["log"][0]["operation"] == "Insert"


def test_child_of_a_parent_tfoms_has_not_accepted_is_refused_naming_the_parent(wire, hospital):
    motion = send(wire, "MOTION_IN_HOSPITAL", packet("MOTION_IN_HOSPITAL", hospital.movement))
    division = send(wire, "DIVISION", packet("DIVISION", hospital.department))
    pump(wire)
    answers = {a.message_id: a for a in map(answer_of, received(wire))}
    assert answers[motion].ok is False
    (error,) = answers[motion].errors
    assert error.startswith("Код 101: Родительский объект не найден: HOSPITALISATION_ID = ")
    assert "HOSPITALISATION (госпитализация)" in error
    (error,) = answers[division].errors
    assert f"BRANCH_ID = {hospital.branch.id}" in error and "BRANCH (подразделение МО)" in error

    # Once the parents are accepted the same objects go through (new packets, new message ids).
    send(wire, "HOSPITALISATION", packet("HOSPITALISATION", hospital.stay))
    send(wire, "MOTION_IN_HOSPITAL", packet("MOTION_IN_HOSPITAL", hospital.movement))
    send(wire, "BRANCH", packet("BRANCH", hospital.branch))
    send(wire, "DIVISION", packet("DIVISION", hospital.department))
    pump(wire)
    assert [a.ok for a in map(answer_of, received(wire))] == [True, True, True, True]


def test_update_or_delete_of_unknown_objects_and_delete_of_a_parent_are_refused(wire, hospital):
    update = send(wire, "HOSPITALISATION", packet("HOSPITALISATION", hospital.stay, "Update"))
    pump(wire)
    (answer,) = map(answer_of, received(wire))
    assert answer.message_id == update and answer.errors[0].startswith("Код 102: Объект не найден")

    send(wire, "HOSPITALISATION", packet("HOSPITALISATION", hospital.stay))
    send(wire, "MOTION_IN_HOSPITAL", packet("MOTION_IN_HOSPITAL", hospital.movement))
    delete = send(wire, "HOSPITALISATION", packet("HOSPITALISATION", hospital.stay, "Delete"))
    pump(wire)
    answers = {a.message_id: a for a in map(answer_of, received(wire))}
    assert answers[delete].errors == [
        f"Код 103: Нельзя удалить запись HOSPITALISATION (госпитализация) с H_ID = {hospital.stay.id}: "
        f"на неё ссылаются MOTION_IN_HOSPITAL {hospital.movement.id}. Сначала удалите их"
    ]

    # Deletes in reverse order are accepted; the object is then gone for an Update.
    send(wire, "MOTION_IN_HOSPITAL", packet("MOTION_IN_HOSPITAL", hospital.movement, "Delete"))
    send(wire, "HOSPITALISATION", packet("HOSPITALISATION", hospital.stay, "Delete"))
    again = send(wire, "MOTION_IN_HOSPITAL", packet("MOTION_IN_HOSPITAL", hospital.movement, "Update"))
    pump(wire)
    answers = list(map(answer_of, received(wire)))
    assert [a.ok for a in answers] == [True, True, False]
    assert answers[2].message_id == again and "Код 102" in answers[2].errors[0]


def test_packet_failing_its_xsd_gets_an_error_message_with_the_original(wire, hospital):
    xml = packet("BRANCH", hospital.branch)
    root = etree.fromstring(xml)
    root.find("BODY/NAME").getparent().remove(root.find("BODY/NAME"))
    broken = etree.tostring(root, xml_declaration=True, encoding="utf-8")
    invalid = send(wire, "BRANCH", broken)
    not_xml = send(wire, "BRANCH", b"\x00not xml")
    unknown = send(wire, "SOMETHING", b"<SOMETHING><HEADER/></SOMETHING>")
    pump(wire)
    messages = {m.correlation_id: m for m in received(wire)}
    assert {m.type for m in messages.values()} == {"ERROR"}
    error = etree.fromstring(messages[invalid].body)
    assert error.tag == "ERROR" and error.findtext("HEADER/MESSAGE_ID") == invalid
    assert error.findtext("HEADER/DESCRIPTION").startswith("Пакет не соответствует схеме XSD: строка ")
    assert "NAME" in error.findtext("HEADER/DESCRIPTION")
    assert base64.b64decode(error.findtext("BODY")) == broken
    assert "не является XML" in etree.fromstring(messages[not_xml].body).findtext("HEADER/DESCRIPTION")
    assert etree.fromstring(messages[unknown].body).findtext("HEADER/DESCRIPTION") == (
        "Неизвестный тип пакета «SOMETHING»"
    )
    # The portal reads it as a rejection of its packet.
    reply = builders.parse_reply("ERROR", messages[invalid].body)
    assert reply.ok is False and reply.message_id == invalid and reply.answered_type == "BRANCH"


def test_a_repeated_message_is_answered_the_same_way_and_processed_once(wire, hospital):
    xml = packet("BRANCH", hospital.branch)
    message_id = send(wire, "BRANCH", xml)
    send(wire, "BRANCH", xml, message_id=message_id)
    assert pump(wire) == 2
    first, second = received(wire)
    assert (first.body, first.message_id) == (second.body, second.message_id)
    assert answer_of(first).ok and first.correlation_id == second.correlation_id == message_id
    assert wire.standin.duplicates == 1
    assert [line["result"] for line in wire.standin.log] == ["OK", "DUPLICATE"]
    assert {"type": "BRANCH", "result": "OK", "count": 1} in wire.standin.state()["counts"]


def test_mode_down_leaves_the_messages_waiting(wire, hospital):
    wire.standin.mode = "down"
    message_id = send(wire, "BRANCH", packet("BRANCH", hospital.branch))
    assert pump(wire) == 0
    assert wire.broker.size(wire.q.request) == 1 and received(wire) == []

    wire.standin.mode = "normal"
    assert pump(wire) == 1
    (answer,) = map(answer_of, received(wire))
    assert answer.ok and answer.message_id == message_id


def test_mode_errors_answers_internal_error_and_a_resend_is_processed(wire, hospital):
    wire.standin.mode, wire.standin.share = "errors", 1.0
    xml = packet("BRANCH", hospital.branch)
    message_id = send(wire, "BRANCH", xml)
    pump(wire)
    (answer,) = map(answer_of, received(wire))
    assert answer.message_id == message_id
    assert answer.errors == ["Код 500: Внутренняя ошибка ТФОМС"]

    wire.standin.mode = "normal"  # ТФОМС recovered: the same message is processed now
    send(wire, "BRANCH", xml, message_id=message_id)
    pump(wire)
    (answer,) = map(answer_of, received(wire))
    assert answer.ok and wire.standin.duplicates == 0


# --- prophylactic plans ---------------------------------------------------------------------------------


def test_plan_person_with_a_bad_enp_is_refused_with_the_id_pac(wire, app):
    mo = f.make_mo()
    plan = f.make_plan(mo)
    person = f.make_plan_person(plan, f.make_patient(mo))
    db.session.commit()
    good = send(wire, "PERS_LIST", packet("PERS_LIST", person))
    root = etree.fromstring(packet("PERS_LIST", person))
    root.find("PERS/NPOLIS").text = "3500000000000001"  # 16 digits, wrong check digit
    bad = send(wire, "PERS_LIST", etree.tostring(root, xml_declaration=True, encoding="utf-8"))
    pump(wire)
    messages = {m.correlation_id: m for m in received(wire)}
    assert answer_of(messages[good]).ok
    refused = answer_of(messages[bad])
    assert refused.ok is False and refused.errors[0].startswith("Код 202: Неверный ЕНП 3500000000000001")
    results = etree.fromstring(messages[bad].body).find("BODY/RESULTS")
    assert results.findtext("ERROR_RESULT/ID_PAC") == str(person.patient_id)


# --- stage 3: free places -------------------------------------------------------------------------------


def _ask_free_beds(wire, code_mo: str, target_mo: str | None = None, profile: int | None = None):
    correlation_id = str(uuid.uuid4())
    wire.broker.declare_temporary(wire.q.rpc_reply)
    body = builders.build_free_beds_request(code_mo, target_mo=target_mo, profile=profile, on=TODAY)
    wire.broker.publish(
        wire.q.rpc,
        body,
        type="FREE_BEDS_REQUEST",
        message_id=correlation_id,
        reply_to=wire.q.rpc_reply,
        correlation_id=correlation_id,
    )
    db.session.commit()
    pump(wire)
    (message,) = received(wire, wire.q.rpc_reply)
    assert message.type == "FREE_BEDS_ANSWER" and message.correlation_id == correlation_id
    return builders.parse_free_beds_answer(message.body)


def test_free_beds_request_is_answered_from_the_accepted_data(wire, hospital):
    stage1(wire, hospital)
    pump(wire)
    assert all(a.ok for a in map(answer_of, received(wire)))
    code = hospital.mo.f003_code
    (item,) = _ask_free_beds(wire, code, target_mo=code, profile=hospital.beds.profile)
    assert item == {
        "mo": code,
        "branch": hospital.branch.code,
        "division": hospital.department.id,
        "division_name": hospital.department.name,
        "profile": hospital.beds.profile,
        "care_profile": hospital.beds.care_profile,
        "free": hospital.beds.free,
        "free_adult": hospital.beds.free_adult,
        "free_child": hospital.beds.free_child,
        "actual_on": hospital.beds.actual_on,
    }
    assert _ask_free_beds(wire, code, profile=hospital.beds.profile + 1) == []
    assert _ask_free_beds(wire, code, target_mo="999999") == []


# --- insurance changes from ТФОМС -------------------------------------------------------------------


def test_send_polis_publishes_a_valid_polis_and_records_the_portal_answer(wire, app):
    enp = f.valid_enp(4711)
    message_id = wire.standin.send_polis(
        wire.broker,
        wire.q.reply,
        request_queue=wire.q.request,
        bdz_id=9001,
        enp=enp,
        smo_code="35002",
        policy_type=3,
        number=enp,
        begin=date(2026, 1, 1),
        person={
            "FAM": "Петрова",
            "IM": "Анна",
            "DR": date(1990, 2, 3),
            "W": 2,
            "DOCTYPE": "14",
            "DOCNUM": "123456",
        },
    )
    (message,) = received(wire)
    assert (message.type, message.message_id, message.reply_to) == ("POLIS", message_id, wire.q.request)
    assert builders.validate("POLIS", message.body) == []
    polis = builders.parse_polis(message.body)
    assert (polis.bdz_id, polis.enp, polis.insurer_code, polis.begin_on) == (
        9001,
        enp,
        "35002",
        date(2026, 1, 1),
    )
    assert (polis.last_name, polis.sex, polis.document_number) == ("Петрова", "F", "123456")

    # The portal answers on the request queue: recorded, nothing goes back.
    answer = builders.build_answer(
        "POLIS", message_id, [(12, "Период действия пересекается")], queue_name="x"
    )
    send(wire, "ANSWER", answer)
    assert pump(wire) == 1
    assert received(wire) == []
    (recorded,) = wire.standin.polis_answers
    assert recorded["ok"] is False and recorded["polis"] == message_id
    assert recorded["errors"][0]["name"] == "Период действия пересекается"


# --- the page, the controls and the consumer thread -----------------------------------------------------


@pytest.fixture
def host():
    server, base_url = start_simulators(port=0)
    yield SimpleNamespace(server=server, url=base_url)
    server.shutdown()
    server.server_close()


def test_page_and_state_show_what_was_received(app, host, hospital):
    standin = standin_of(host.server.app)
    broker, queues = DbBroker(), _queues()
    broker.publish(
        queues.request,
        packet("BRANCH", hospital.branch),
        type="BRANCH",
        message_id="m-1",
        reply_to=queues.reply,
    )
    broker.publish(
        queues.request,
        packet("DIVISION", hospital.department),
        type="DIVISION",
        message_id="m-2",
        reply_to=queues.reply,
    )
    broker.publish(
        queues.request,
        packet("DIVISION", hospital.department),
        type="DIVISION",
        message_id="m-2",
        reply_to=queues.reply,
    )
    db.session.commit()
    standin.pump(broker, request_queue=queues.request, rpc_queue=queues.rpc)

    state = requests.get(f"{host.url}/tfoms_amqp/_state", timeout=5).json()
    assert state["duplicates"] == 1 and state["mode"] == "normal"
    assert {"type": "DIVISION", "result": "OK", "count": 1} in state["counts"]
    assert [line["message_id"] for line in state["log"]] == ["m-2", "m-2", "m-1"]  # newest first
    page = requests.get(f"{host.url}/tfoms_amqp/", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "ТФОМС: обмен пакетами (RabbitMQ)" in page.text and "Принят (OK)" in page.text
    assert "Повторов (тот же message_id, ответ отправлен повторно): <b>1</b>" in page.text

    # The host's control switches the stand-in's mode.
    requests.post(f"{host.url}/tfoms_amqp/_control", json={"mode": "down"}, timeout=5)
    assert standin.mode == "down"


def test_polis_form_refuses_bad_input_in_russian(host):
    bad = requests.post(f"{host.url}/tfoms_amqp/_polis", json={"bdz_id": 1, "enp": "123"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["error"].startswith("ЕНП «123» неверен")
    unbound = requests.post(
        f"{host.url}/tfoms_amqp/_polis",
        json={
            "bdz_id": 1,
            "enp": f.valid_enp(1),
            "smo_code": "35001",
            "policy_type": 3,
            "number": f.valid_enp(1),
            "begin": "2026-01-01",
            "last_name": "Петрова",
        },
        timeout=5,
    )
    assert unbound.status_code == 400 and "не указаны имя, дата рождения, пол" in unbound.json()["error"]


@pytest.mark.parametrize("transport", ["database", "rabbitmq"])
def test_consumer_thread_answers_follows_the_host_mode_and_sends_polis(tmp_path, host, transport):
    """The thread wsgi starts: portal settings give the queues, the host's controls the mode."""
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'portal.db'}"}  # shared by threads
    if transport == "rabbitmq":
        _need_rabbitmq()
        config["AMQP_URL"] = AMQP_URL
    portal = make_app(**config)
    queues = _queues()
    with portal.app_context():
        from portal.admin.services import set_setting
        from portal.tfoms import packets

        db.create_all()
        set_setting(packets.REQUEST_QUEUE.key, queues.request)
        set_setting(packets.REPLY_QUEUE.key, queues.reply)
        set_setting(packets.RPC_QUEUE.key, queues.rpc)
        branch = f.make_branch(f.make_mo())
        db.session.commit()
        from portal.tfoms.broker import get_broker

        broker = get_broker()
        thread = start_standin(portal, host.server.app, interval=3600)  # rounds run by hand below
        try:
            message_id = str(uuid.uuid4())
            broker.publish(
                queues.request,
                packet("BRANCH", branch),
                type="BRANCH",
                message_id=message_id,
                reply_to=queues.reply,
            )
            db.session.commit()
            requests.post(f"{host.url}/tfoms_amqp/_control", json={"mode": "down"}, timeout=5)
            assert thread.pump_once() == 0 and broker.size(queues.request) == 1
            requests.post(f"{host.url}/tfoms_amqp/_control", json={"mode": "normal"}, timeout=5)
            assert thread.pump_once() == 1
            reply = broker.get(queues.reply)
            reply.ack()
            db.session.commit()
            assert answer_of(reply).ok and reply.correlation_id == message_id

            sent = requests.post(
                f"{host.url}/tfoms_amqp/_polis",
                json={
                    "bdz_id": 77,
                    "enp": f.valid_enp(77),
                    "smo_code": "35001",
                    "policy_type": 3,
                    "number": f.valid_enp(77),
                    "begin": "2026-01-01",
                },
                timeout=10,
            )
            assert sent.status_code == 200, sent.text
            polis = broker.get(queues.reply)
            polis.ack()
            db.session.commit()
            assert (polis.type, polis.message_id, polis.reply_to) == (
                "POLIS",
                sent.json()["message_id"],
                queues.request,
            )
            assert builders.parse_polis(polis.body).enp == f.valid_enp(77)
        finally:
            thread.stop()
            if transport == "rabbitmq":
                for name in vars(queues).values():
                    broker.delete_queue(name)
        db.session.remove()
