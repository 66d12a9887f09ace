"""A request to ФСС through the shared delivery mechanism, over real HTTP to the ФСС stand-in:
checked and queued by the portal, signed and encrypted by the job, ФСС's asynchronous result read
back (E-3, E-7, E-10, E-11, E-12, E-13)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests

from portal.admin.models import Certificate
from portal.admin.services import add_certificate, ensure_demo_certificate, set_integration
from portal.auth.roles import ERS_OPERATOR
from portal.ers import jobs, services
from portal.ers import models as m
from portal.ers.channel import CHANNEL
from portal.exchange.delivery import poll_due, send_due
from portal.exchange.models import JournalEntry
from portal.extensions import db
from portal.models_base import utcnow
from tests import factories
from tests.ers.test_client import contract, fss_cert, mo, sims  # noqa: F401  (stand-in fixtures)


@pytest.fixture
def ready(mo, fss_cert):  # noqa: F811
    """The МО's signature, ФСС's certificate, the ЭРС exchange switched on, a patient and an operator."""
    ensure_demo_certificate("mo", "ГБУЗ «Родильный дом»: подпись МО", mo.id)
    cert, errors = add_certificate("fss", None, None, fss_cert, None)
    assert cert is not None, errors
    set_integration(mo, "ers", True)
    patient = factories.make_patient(mo)
    user = factories.make_user(ERS_OPERATOR, mo)
    mo_cert = db.session.scalars(db.select(Certificate).where(Certificate.purpose == "mo")).one()
    db.session.commit()
    return patient, user, {"mo": mo_cert.id}


def _person(patient) -> dict:
    return {
        "birthdate": patient.birth_date.isoformat(),
        "firstName": patient.first_name,
        "secondName": patient.last_name,
        "patronymic": patient.middle_name,
        "medicalInsurance": {"medicalInsurance": {"insuranceNumber": patient.policy_number or patient.enp}},
        "snils": {"snils": patient.snils},
        "identifyingDocument": {
            "idDoc": {
                "kind": patient.document_kind,
                "docNumber": patient.document_number,
                "docSerie": patient.document_series,
                "docIssueDate": patient.document_issued_on.isoformat(),
                "docIssuer": patient.document_issuer,
            }
        },
        "residenceAddress": {"residenceAddress": patient.residence_address or patient.registration_address},
    }


def _create_ers(mo, patient, user, signers) -> m.ErsRequest:  # noqa: F811
    request = services.new_request(
        mo,
        "createErs",
        "Запрос ЭРС",
        {"person": _person(patient), "registerDate": utcnow().date().isoformat()},
        signers=signers,
        user=user,
        ip="10.0.0.7",
        patient=patient,
    )
    db.session.commit()
    return request


def _fresh(request: m.ErsRequest) -> m.ErsRequest:
    db.session.expire_all()
    return db.session.get(m.ErsRequest, request.id)


def test_a_requested_ers_gets_its_number_from_fss(mo, contract, ready, sims):  # noqa: F811
    patient, user, signers = ready
    request = _create_ers(mo, patient, user, signers)
    assert request.status_label == "Ожидает отправки в ФСС"

    jobs.exchange()
    sent = _fresh(request)
    assert sent.status in (m.REGISTERED, m.READY_TO_PROCESS, m.PROCESSING) and sent.fss_request_id
    assert "Signature" in sent.request_xml and "createErsRequest" in sent.request_xml  # signed, readable
    assert "EncryptedData" not in sent.answer_xml  # kept decrypted for «Реестр запросов»

    poll_due(CHANNEL, now=utcnow() + timedelta(minutes=1))
    done = _fresh(request)
    assert done.status_label == "Обработан" and done.ers_number and done.ers_number.isdigit()
    assert done.ers_number in done.answer_xml and done.ip == "10.0.0.7"
    received = requests.get(f"{sims}/fss/_requests", timeout=5).json()
    assert [r["method"] for r in received] == ["createErs", "getResultById"]


def test_without_a_contract_at_fss_the_answer_reads_code_1204(mo, ready):  # noqa: F811
    patient, user, signers = ready
    request = _create_ers(mo, patient, user, signers)

    jobs.exchange()
    poll_due(CHANNEL, now=utcnow() + timedelta(minutes=1))

    failed = _fresh(request)
    assert failed.status == m.PROCESSING_ERROR and failed.error_code == "1204"
    assert failed.error_label.startswith("Код: 1204 Сообщение: Отсутствует заключенный договор с ТОФ")


def test_requests_are_refused_before_the_queue_when_the_contract_or_data_are_missing(mo, ready):  # noqa: F811
    patient, user, signers = ready
    incomplete = factories.make_patient(mo, snils=None)
    with pytest.raises(services.RequestRefused, match="не заполнено: СНИЛС"):
        _create_ers(mo, incomplete, user, signers)
    db.session.execute(db.delete(m.ErsContract))
    with pytest.raises(services.RequestRefused, match="Не введён договор МО с ФСС"):
        _create_ers(mo, patient, user, signers)
    assert db.session.scalars(db.select(m.ErsRequest)).all() == []


def test_fss_away_keeps_the_request_waiting_and_it_goes_when_fss_returns(mo, contract, ready, sims):  # noqa: F811
    patient, user, signers = ready
    request = _create_ers(mo, patient, user, signers)
    requests.post(f"{sims}/fss/_control", json={"mode": "down"}, timeout=5)

    jobs.exchange()

    assert _fresh(request).status_label == "Ожидает отправки в ФСС"
    line = db.session.scalars(
        db.select(JournalEntry.message).where(JournalEntry.channel == "ers", JournalEntry.level == "error")
    ).one()
    assert "Повторная попытка после" in line
    requests.post(f"{sims}/fss/_control", json={"mode": "normal"}, timeout=5)
    later = utcnow() + timedelta(minutes=5)
    send_due(CHANNEL, now=later)
    poll_due(CHANNEL, now=later + timedelta(minutes=1))
    assert _fresh(request).status == m.PROCESSED
    assert [r["method"] for r in requests.get(f"{sims}/fss/_requests", timeout=5).json()].count(
        "createErs"
    ) == 1


def test_a_tampered_answer_is_refused_and_kept(mo, contract, ready, sims):  # noqa: F811
    patient, user, signers = ready
    requests.post(f"{sims}/fss/_settings", json={"tamper_answers": True}, timeout=5)
    request = _create_ers(mo, patient, user, signers)

    jobs.exchange()

    refused = _fresh(request)
    assert refused.status_label == "Отклонён"
    assert refused.error_text.startswith("Ответ ФСС отклонён: подпись ФСС не прошла проверку")
    assert refused.answer_xml  # the answer as it came, for the registry
