"""The portal's callback service (callback.wsdl): ВИМИС's sendResult and sendInterimMsg."""

from __future__ import annotations

import functools

import pytest
from lxml import etree

from portal import crypto
from portal.clinical.hooks import StoredRecord
from portal.exchange.models import WAITING, WorkItem
from portal.extensions import db
from portal.vimis.models import ERROR, PASSED, Semd
from portal.vimis.triggers import semds_for_events
from tests.vimis.helpers import make_semd_case

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
CALLBACK = "http://callback.mis.vimis.rosminzdrav.ru/"


@functools.cache
def _ips_key() -> crypto.SigningKey:
    return crypto.load_signing_key(*crypto.generate_demo_certificate("ips-test.rosminzdrav.ru"))


def _envelope(operation: str, signed: bool = True, **fields: str) -> bytes:
    envelope = etree.fromstring(
        f'<S:Envelope xmlns:S="{SOAP}"><S:Header/><S:Body><c:{operation} xmlns:c="{CALLBACK}">'
        + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
        + f"</c:{operation}></S:Body></S:Envelope>"
    )
    if signed:
        crypto.set_wsu_id(envelope.find(f"{{{SOAP}}}Body"), "body")
        crypto.sign_envelope(envelope, _ips_key(), ["body"], timestamp=600)
    return etree.tostring(envelope)


@pytest.fixture
def waiting(app):
    """A SEMD whose version 1 ВИМИС accepted as msg-1 and has not judged yet."""
    case = make_semd_case(5)
    semds_for_events([StoredRecord("event", case.event.id, case.event.source_id, True, True)])
    item = db.session.scalars(db.select(WorkItem)).one()
    item.state, item.external_id = WAITING, "msg-1"
    db.session.commit()
    return db.session.scalars(db.select(Semd)).one()


def _post(client, body: bytes):
    return client.post("/vimis/callback", data=body, content_type="text/xml; charset=utf-8")


def test_send_result_ok_passes_flk(client, waiting):
    answer = _post(client, _envelope("sendResult", msg_id="msg-1", status="1", description="Успешно"))
    assert answer.status_code == 200 and b"sendResultResponse" in answer.data
    db.session.expire_all()
    semd = db.session.get(Semd, waiting.id)
    assert (semd.status, semd.last_message) == (PASSED, "Версия 1 СЭМД5 прошла ФЛК")


def test_send_result_error_names_the_flk_reason(client, waiting):
    _post(client, _envelope("sendResult", msg_id="msg-1", status="0",
                            description="ФЛК: Этап 1. Не указан СНИЛС пациента"))
    db.session.expire_all()
    semd = db.session.get(Semd, waiting.id)
    assert semd.status == ERROR
    assert semd.last_message == "Версия 1 СЭМД5 не прошла ФЛК: ФЛК: Этап 1. Не указан СНИЛС пациента"
    assert semd.versions[0].answer_text == semd.last_message


def test_interim_message_is_journaled(client, waiting):
    assert _post(client, _envelope("sendInterimMsg", msg_id="msg-1", description="Документ принят")).status_code == 200
    db.session.expire_all()
    assert db.session.get(Semd, waiting.id).last_message == "Версия 1 СЭМД5: Документ принят"


@pytest.mark.parametrize(("body", "reason"), [
    (lambda: _envelope("sendResult", signed=False, msg_id="msg-1", status="1", description="x"), "не подписан"),
    (lambda: _envelope("sendResult", msg_id="msg-1", status="1", description="x").replace(b">x<", b">y<"),
     "не прошла проверку"),
    (lambda: _envelope("sendResult", msg_id="msg-404", status="1", description="x"), "Неизвестный msg_id"),
    (lambda: _envelope("sendResult", msg_id="msg-1", status="7", description="x"), "Недопустимый статус"),
    (lambda: b"<not-xml", "Некорректный XML"),
])
def test_bad_callbacks_get_a_fault_and_change_nothing(client, waiting, body, reason):
    answer = _post(client, body())
    assert answer.status_code == 500 and b"faultstring" in answer.data
    assert reason in answer.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Semd, waiting.id).status == "queued"  # untouched by the bad callback
