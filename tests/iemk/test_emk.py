"""ИЭМК documents as the portal meets them: EMKService (cases, AddMedRecord) and the document
registry (lists, files, results) against the stand-in over real HTTP, and the asynchronous answer
arriving at the portal's callback — from the stand-in to a live portal, and malformed ones."""

from __future__ import annotations

import base64
import functools
import threading
import time
import uuid
from datetime import date, datetime, timedelta
from types import SimpleNamespace

import pytest
import requests
from lxml import etree
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from portal import crypto
from portal.admin.services import set_setting
from portal.exchange.delivery import DataError, TransientError, UnknownOutcome, enqueue, send_due
from portal.exchange.models import WAITING, WorkItem
from portal.extensions import db
from portal.iemk import emk, pix
from portal.iemk import models as m
from portal.iemk.channel import CHANNEL
from portal.iemk.emk import EmkError
from portal.models_base import utcnow
from simulators import start_simulators
from tests import factories
from tests.conftest import DATABASES, _reset_postgres, make_app

GUID = "0b7d4c1e-5a3e-4a5b-9d0e-1c2f3a4b5c6d"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"
HL7 = "urn:hl7-org:v3"
CALLBACK = "http://127.0.0.1:9/iemk/callback"  # nothing listens: these tests ask, not wait
TEMPLATES = {
    "lab": "1.2.643.5.1.13.13.15.18.4",
    "amb_epicrisis": "1.2.643.5.1.13.13.15.26.4",
    "stat_epicrisis": "1.2.643.5.1.13.13.15.25.4",
}
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@functools.cache
def _key() -> crypto.SigningKey:
    return crypto.load_signing_key(*crypto.generate_demo_certificate("Смирнова Ольга Михайловна"))


def _cda(kind: str, title: str) -> str:
    return (
        f'<ClinicalDocument xmlns="{HL7}"><templateId root="{TEMPLATES[kind]}"/>'
        f"<title>{title}</title></ClinicalDocument>"
    )


def make_doc(patient, doctor, kind: str = "lab", event=None, **event_kw) -> m.IemkDocument:
    """A signed document of `kind` (as «Получить и подписать документы» leaves it)."""
    event_kind = {"lab": "lab_blood", "amb_epicrisis": "exam_primary", "stat_epicrisis": "discharge"}[kind]
    event = event or factories.make_event(patient, event_kind, doctor_id=doctor.id, **event_kw)
    xml = _cda(kind, m.KINDS[kind].type_name)
    now = utcnow().replace(microsecond=0)
    doc = m.IemkDocument(
        kind=kind,
        event_id=event.id,
        part=0,
        mo_id=patient.mo_id,
        patient_id=patient.id,
        doctor_id=doctor.id,
        event_at=event.at,
        local_uid=str(uuid.uuid4()),
        status=m.SIGNED,
        xml=xml,
        built_at=now,
        signature=base64.b64encode(crypto.detached_signature(_key(), xml.encode())).decode("ascii"),
        signer="Смирнова Ольга Михайловна",
        signed_at=now,
    )
    db.session.add(doc)
    db.session.flush()
    return doc


def make_report(doc: m.IemkDocument, signed: bool = True) -> m.VisitReport:
    report = m.VisitReport(
        source_id=f"rep-{doc.id}",
        event_id=doc.event_id,
        mo_id=doc.mo_id,
        file_name="protocol.pdf",
        content=PDF,
        signature=crypto.detached_signature(_key(), PDF) if signed else None,
        signed_by="Смирнова О. М.",
        signed_at=utcnow(),
    )
    db.session.add(report)
    db.session.flush()
    return report


def point_at(sims: str, mo_id: int | None = None, callback_url: str = CALLBACK, timeout: str = "5") -> None:
    set_setting("iemk.pix_endpoint", f"{sims}/iemk/pix", mo_id)
    set_setting("iemk.emk_endpoint", f"{sims}/iemk/emk", mo_id)
    set_setting("iemk.registry_endpoint", f"{sims}/iemk/registry", mo_id)
    set_setting("iemk.callback_url", callback_url, mo_id)
    set_setting("iemk.guid", GUID, mo_id)
    set_setting("iemk.timeout", timeout, mo_id)


def _sim(sims: str, path: str, **payload):
    if payload:
        answer = requests.post(f"{sims}/iemk/{path}", json=payload, timeout=5)
        assert answer.status_code == 200, answer.text
        return answer.json()
    return requests.get(f"{sims}/iemk/{path}", timeout=5).json()


@pytest.fixture
def sims(app):
    server, base_url = start_simulators(0, config={"IEMK_RESULT_DELAY": 0, "IEMK_CALLBACKS": False})
    yield base_url
    server.shutdown()
    server.server_close()


@pytest.fixture
def setup(app, sims):
    mo = factories.make_mo()
    point_at(sims, mo.id)
    doctor = factories.make_staff(mo)
    patient = factories.make_patient(mo)
    pix.ensure_registered(patient)
    return SimpleNamespace(sims=sims, mo=mo, doctor=doctor, patient=patient)


def _uploaded(s, kind: str = "lab", report: bool = False, **kw) -> m.IemkDocument:
    doc = make_doc(s.patient, s.doctor, kind, **kw)
    emk.ensure_case(doc)
    emk.add_med_record(doc, make_report(doc) if report else None, str(uuid.uuid4()))
    return doc


# --- EMKService -----------------------------------------------------------------------------


def test_version_of_the_document_service(setup):
    assert emk.version(setup.mo)["ServiceVersion"].startswith("N3.Health EMKService")


def test_a_pregnancy_case_is_opened_once_and_the_epicrisis_goes_with_its_signed_pdf(setup):
    pregnancy = factories.make_pregnancy(setup.patient)
    doc = make_doc(setup.patient, setup.doctor, "amb_epicrisis", pregnancy_id=pregnancy.id)
    report = make_report(doc)

    assert emk.ensure_case(doc) == pregnancy.source_id
    assert emk.ensure_case(doc) == pregnancy.source_id  # known: no second CreateCase
    message_id = f"urn:uuid:{uuid.uuid4()}"
    sent = emk.add_med_record(doc, report, message_id)

    [case] = _sim(setup.sims, "_cases")
    assert (case["type"], case["IdCaseMis"], case["idLpu"]) == ("CaseAmb", pregnancy.source_id, setup.mo.oid)
    assert (case["IdPatientMis"], case["DoctorInCharge"]) == (
        setup.patient.source_id,
        "Смирнова Ольга Михайловна",
    )
    assert db.session.scalars(db.select(m.IemkCase.case_mis_id)).all() == [pregnancy.source_id]
    [stored] = _sim(setup.sims, "_documents")
    assert (stored["localUid"], stored["type"], stored["kind"]) == (doc.local_uid, "Form027U", 92)
    assert (stored["title"], stored["author"]) == ("Амбулаторный эпикриз", "Смирнова Ольга Михайловна")
    assert stored["attachments"] == [
        {"mimeType": "text/xml", "size": len(doc.xml.encode()), "signed": True},
        {"mimeType": "application/pdf", "size": len(PDF), "signed": True},
    ]
    assert (stored["message_id"], stored["reply_to"]) == (message_id, CALLBACK)
    # The journal keeps the envelopes: ours with the WS-Addressing header, ИЭМК's empty answer.
    request = etree.fromstring(sent.request.encode())
    assert request.findtext(f"{{{SOAP}}}Header/{{{WSA}}}MessageID") == message_id
    assert request.findtext(f"{{{SOAP}}}Header/{{{WSA}}}ReplyTo/{{{WSA}}}Address") == CALLBACK
    assert "AddMedRecordResponse" in sent.response


def test_documents_of_a_stay_go_in_a_stat_case_numbered_by_its_card(setup):
    department = factories.make_department(setup.mo)
    stay = factories.make_hospitalisation(setup.patient, department, card_number="КВС-77", emergency=True)
    doc = make_doc(
        setup.patient, setup.doctor, "stat_epicrisis", hospitalisation_id=stay.id, care_conditions="1"
    )

    assert emk.ensure_case(doc) == stay.source_id
    emk.add_med_record(doc, None, str(uuid.uuid4()))

    [case] = _sim(setup.sims, "_cases")
    assert (case["type"], case["IdCaseMis"], case["HistoryNumber"]) == ("CaseStat", stay.source_id, "КВС-77")
    assert _sim(setup.sims, "_documents")[0]["type"] == "DischargeSummary"


def test_a_case_ИЭМК_already_has_counts_as_opened(setup):
    doc = make_doc(setup.patient, setup.doctor)
    case_id = emk.ensure_case(doc)
    db.session.execute(db.delete(m.IemkCase))  # the answer to CreateCase «lost»

    assert emk.ensure_case(doc) == case_id
    assert db.session.scalars(db.select(m.IemkCase.case_mis_id)).all() == [case_id]
    assert len(_sim(setup.sims, "_cases")) == 1


def test_a_patient_missing_from_the_index_is_refused_in_russian(setup):
    stranger = factories.make_patient(setup.mo)  # never sent to the patient index
    doc = make_doc(stranger, setup.doctor)

    with pytest.raises(EmkError) as no_case:
        emk.ensure_case(doc)
    with pytest.raises(EmkError) as no_record:
        emk.add_med_record(doc, None, str(uuid.uuid4()))

    expected = (
        f"ИЭМК отказал: Пациент с IdPatientMIS {stranger.source_id} не найден в МО {setup.mo.oid}: "
        "сначала AddPatient (поле IdPatientMis, код 3)"
    )
    assert str(no_case.value) == str(no_record.value) == expected
    assert isinstance(no_record.value, DataError) and no_record.value.code == 3
    assert db.session.scalars(db.select(m.IemkCase)).all() == [] and _sim(setup.sims, "_documents") == []


def test_unsigned_documents_and_reports_do_not_leave(setup):
    doc = make_doc(setup.patient, setup.doctor, "amb_epicrisis")
    emk.ensure_case(doc)

    with pytest.raises(DataError, match="^Протокол визита «protocol.pdf» не подписан"):
        emk.add_med_record(doc, make_report(doc, signed=False), str(uuid.uuid4()))
    doc.signature = None
    with pytest.raises(DataError, match="^Документ не подписан"):
        emk.add_med_record(doc, None, str(uuid.uuid4()))

    assert _sim(setup.sims, "_documents") == []


def test_a_resend_after_a_lost_answer_stores_nothing_twice(setup):
    doc = make_doc(setup.patient, setup.doctor)
    emk.ensure_case(doc)
    _sim(setup.sims, "_control", mode="slow", delay=2)
    set_setting("iemk.timeout", "0.5", setup.mo.id)
    with pytest.raises(UnknownOutcome, match="ИЭМК не ответил за 0.5 с"):
        emk.add_med_record(doc, None, str(uuid.uuid4()))

    _sim(setup.sims, "_control", mode="normal")
    set_setting("iemk.timeout", "5", setup.mo.id)
    result = emk.document_result(setup.mo, doc.local_uid)  # asked before sending again: it is there
    emk.add_med_record(doc, None, str(uuid.uuid4()))

    assert result.status == "success"
    [stored] = _sim(setup.sims, "_documents")
    assert (stored["repeats"], stored["version"], stored["emdrId"]) == (1, 1, result.emdr_id)


def test_service_down_failing_or_slow_is_sorted_for_retry(setup):
    doc = make_doc(setup.patient, setup.doctor)
    emk.ensure_case(doc)

    _sim(setup.sims, "_control", mode="down")
    with pytest.raises(TransientError, match="ИЭМК ответил ошибкой HTTP 503"):
        emk.add_med_record(doc, None, str(uuid.uuid4()))
    with pytest.raises(TransientError, match="HTTP 503"):
        emk.document_result(setup.mo, doc.local_uid)
    _sim(setup.sims, "_control", mode="errors", share=1)
    with pytest.raises(TransientError, match="ошибкой сервера: Внутренняя ошибка сервиса ИЭМК"):
        emk.add_med_record(doc, None, str(uuid.uuid4()))
    _sim(setup.sims, "_control", mode="slow", delay=2)
    set_setting("iemk.timeout", "0.5", setup.mo.id)
    with pytest.raises(UnknownOutcome):
        emk.document_result(setup.mo, doc.local_uid)

    _sim(setup.sims, "_control", mode="normal")
    assert _sim(setup.sims, "_documents") == []


def test_an_answer_that_is_not_soap_is_named(setup):
    def app(environ, start_response):
        return Response("<html><body>Вход в систему</body>", status=200, mimetype="text/html")(
            environ, start_response
        )

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"http://127.0.0.1:{server.server_port}/iemk"
        set_setting("iemk.emk_endpoint", f"{address}/emk", setup.mo.id)
        set_setting("iemk.registry_endpoint", f"{address}/registry", setup.mo.id)
        doc = make_doc(setup.patient, setup.doctor)
        db.session.add(m.IemkCase(mo_id=setup.mo.id, case_mis_id=emk.case_of(doc)[1]))
        with pytest.raises(
            EmkError, match="^ИЭМК вернул ответ не в формате SOAP: «<html><body>Вход в систему"
        ):
            emk.add_med_record(doc, None, str(uuid.uuid4()))
        with pytest.raises(EmkError, match="^ИЭМК вернул ответ не в формате SOAP"):
            emk.document_result(setup.mo, doc.local_uid)
    finally:
        server.shutdown()
        server.server_close()


def test_an_unknown_token_is_refused_by_both_services(setup):
    _sim(setup.sims, "_settings", required_guid="11111111-2222-3333-4444-555555555555")
    doc = make_doc(setup.patient, setup.doctor)

    with pytest.raises(
        EmkError,
        match=r"^ИЭМК отказал: Неизвестный токен МИС \(guid\): доступ запрещён \(поле guid, код 4\)$",
    ):
        emk.ensure_case(doc)
    with pytest.raises(EmkError, match=r"доступ запрещён \(код ACCESS_DENIED\)$"):
        emk.document_result(setup.mo, doc.local_uid)


# --- results ----------------------------------------------------------------------------------


def test_result_of_a_saved_document_carries_its_registration_number(setup):
    doc = _uploaded(setup)

    result = emk.document_result(setup.mo, doc.local_uid)

    assert result.status == "success" and result.errors == []
    assert (
        result.emdr_id
        and result.message == f"Документ сохранен в ИЭМК, регистрационный номер {result.emdr_id}"
    )
    assert isinstance(result.registered_at, datetime) and result.registered_at.tzinfo is None
    assert abs(result.registered_at - utcnow()) < timedelta(hours=1)
    assert "getDocumentResultResponse" in result.answer and result.emdr_id in result.answer


def test_a_coded_error_reads_with_the_directory_text_when_ИЭМК_gives_none(setup):
    _sim(setup.sims, "_settings", reject_next={"count": 1, "code": "NO_SNILS"})
    rejected = _uploaded(setup)
    _sim(
        setup.sims,
        "_settings",
        reject_next={"count": 1, "code": "VALIDATION_ERROR", "message": "Не указан диагноз"},
    )
    explained = _uploaded(setup)
    fine = _uploaded(setup)

    first = emk.document_result(setup.mo, rejected.local_uid)
    second = emk.document_result(setup.mo, explained.local_uid)

    assert (first.status, first.errors, first.emdr_id) == ("error", [("NO_SNILS", "")], None)
    assert (
        first.message == "Наличие СНИЛС пациента не соответствует требованиям вида документов (код NO_SNILS)"
    )
    assert second.message == "Не указан диагноз (код VALIDATION_ERROR)"
    assert emk.document_result(setup.mo, fine.local_uid).status == "success"  # only the next ones


def test_after_an_error_the_document_is_sent_again_and_replaces_the_rejected_one(setup):
    _sim(setup.sims, "_settings", reject_next={"count": 1, "code": "SIGNATURE_VERIFICATION_ERROR"})
    doc = _uploaded(setup)
    assert (
        emk.document_result(setup.mo, doc.local_uid).message
        == "Подпись не верна (код SIGNATURE_VERIFICATION_ERROR)"
    )

    emk.add_med_record(doc, None, str(uuid.uuid4()))

    assert emk.document_result(setup.mo, doc.local_uid).status == "success"
    [stored] = _sim(setup.sims, "_documents")
    assert (stored["version"], stored["status"]) == (2, "success")


def test_a_document_still_being_checked_and_one_never_sent(setup):
    _sim(setup.sims, "_settings", result_delay=300)
    doc = _uploaded(setup)

    checking = emk.document_result(setup.mo, doc.local_uid)
    never = emk.document_result(setup.mo, str(uuid.uuid4()))

    assert (checking.status, checking.message, checking.emdr_id) == (
        "processing",
        "ИЭМК проверяет документ",
        None,
    )
    assert (never.status, never.message) == ("not_found", "ИЭМК не получил документ")
    assert "REGISTRY_ITEM_NOT_FOUND" in never.answer


def test_the_305_directory_spells_recipient_codes_its_own_way():
    assert emk.code_description("RECIPIENT_SNILS_MISMATCH") == emk.code_description(
        "RECEPIENT_SNILS_MISMATCH"
    )
    assert emk.code_description("RECEPIENT_SNILS_MISMATCH")
    assert (
        emk.result_of("error", None, None, [("NO_SUCH_CODE", "")], "").message
        == "без описания (код NO_SUCH_CODE)"
    )


# --- the repository -------------------------------------------------------------------------


def test_documents_of_the_patient_from_every_mo_are_listed_and_fetched(setup, sims):
    other_mo = factories.make_mo()
    point_at(sims, other_mo.id)
    # The same woman in another МО: the patient index gives her the same IdGlobal (by СНИЛС).
    twin = factories.make_patient(other_mo, snils=setup.patient.snils)
    pix.ensure_registered(twin)
    assert twin.iemk_global_id == setup.patient.iemk_global_id
    lab = _uploaded(setup, "lab", event=None)
    epicrisis = _uploaded(setup, "amb_epicrisis", report=True)
    theirs = make_doc(twin, factories.make_staff(other_mo), "lab")
    emk.ensure_case(theirs)
    emk.add_med_record(theirs, None, str(uuid.uuid4()))
    _sim(sims, "_settings", reject_next={"count": 1, "code": "NO_SNILS"})
    _uploaded(setup)  # rejected: not in the repository

    found = emk.search_documents(setup.patient)

    assert sorted((d.local_uid, d.kind, d.title, d.organization) for d in found) == sorted(
        [
            (lab.local_uid, 75, "Протокол лабораторного исследования", setup.mo.oid),
            (epicrisis.local_uid, 92, "Амбулаторный эпикриз", setup.mo.oid),
            (theirs.local_uid, 75, "Протокол лабораторного исследования", other_mo.oid),
        ]
    )
    assert all(d.emdr_id and d.created_at.date() == utcnow().date() for d in found)
    tomorrow = date.today() + timedelta(days=1)
    assert emk.search_documents(setup.patient, date_from=tomorrow) == []
    setup.patient.iemk_global_id = None  # known only by our own id: our МО's documents
    assert {d.local_uid for d in emk.search_documents(setup.patient)} == {lab.local_uid, epicrisis.local_uid}

    setup.patient.iemk_global_id = twin.iemk_global_id
    fetched = emk.get_document(setup.patient, epicrisis.local_uid)
    assert (fetched.local_uid, fetched.kind, fetched.mime) == (epicrisis.local_uid, 92, "text/xml")
    assert fetched.xml == epicrisis.xml.encode() and fetched.pdf == PDF
    assert crypto.verify_detached(fetched.signature, fetched.xml)
    assert crypto.verify_detached(fetched.pdf_signature, fetched.pdf)
    assert emk.get_document(setup.patient, theirs.local_uid).organization == other_mo.oid
    assert emk.get_document(setup.patient, lab.local_uid).pdf is None
    with pytest.raises(EmkError, match=r"не найден в ИЭМК \(код REGISTRY_ITEM_NOT_FOUND\)$"):
        emk.get_document(setup.patient, str(uuid.uuid4()))
    stranger = factories.make_patient(setup.mo)
    pix.ensure_registered(stranger)
    with pytest.raises(EmkError, match=r"относится к другому пациенту \(код ACCESS_DENIED\)$"):
        emk.get_document(stranger, lab.local_uid)


# --- the callback service -------------------------------------------------------------------


def _callback(local_uid: str, status: str = "success", **fields: str) -> bytes:
    extra = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items() if k != "errors")
    return (
        f'<s:Envelope xmlns:s="{SOAP}"><s:Body><sendDocumentResult xmlns="{emk.NS_DOCS}">'
        f"<relatesToMessage>urn:uuid:1</relatesToMessage><localUid>{local_uid}</localUid>"
        f"<status>{status}</status>{extra}{fields.get('errors', '')}</sendDocumentResult></s:Body></s:Envelope>"
    ).encode()


@pytest.fixture
def waiting(app, client):
    """A document ИЭМК accepted (its work item waits for the answer)."""
    mo = factories.make_mo()
    doc = make_doc(factories.make_patient(mo), factories.make_staff(mo))
    item = enqueue(CHANNEL, "iemk_document", doc.id, mo.id)
    item.state, item.external_id = WAITING, doc.local_uid
    doc.status, doc.queued = m.SENT, True
    db.session.commit()
    return doc


def _post(client, body: bytes):
    return client.post("/iemk/callback", data=body, content_type="text/xml; charset=utf-8")


def _status(doc: m.IemkDocument) -> tuple[str, str | None, str | None]:
    db.session.expire_all()
    fresh = db.session.get(m.IemkDocument, doc.id)
    return fresh.status, fresh.status_text, fresh.emdr_id


def test_a_positive_answer_saves_the_document(client, waiting):
    answer = _post(
        client,
        _callback(
            waiting.local_uid, emdrId="2026000000042", registrationDateTime="2026-11-20T10:00:00+03:00"
        ),
    )

    assert answer.status_code == 200
    assert etree.fromstring(answer.data).findtext(f".//{{{emk.NS_DOCS}}}acknowledgment") == "accepted"
    assert _status(waiting) == (m.SAVED, None, "2026000000042")


def test_an_error_answer_shows_the_codes_in_russian(client, waiting):
    errors = (
        "<errors><item><code>NO_SNILS</code><message/></item><item><code>VALIDATION_ERROR</code>"
        "<message>Не указан диагноз</message></item></errors>"
    )

    assert _post(client, _callback(waiting.local_uid, "error", errors=errors)).status_code == 200

    assert _status(waiting) == (
        m.ERROR,
        "Наличие СНИЛС пациента не соответствует требованиям вида документов (код NO_SNILS); "
        "Не указан диагноз (код VALIDATION_ERROR)",
        None,
    )


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        (lambda uid: b"<not-xml", "VALIDATION_ERROR", "Некорректный XML"),
        (lambda uid: b"<a/>", "VALIDATION_ERROR", "Ожидается конверт SOAP"),
        (
            lambda uid: _callback(uid).replace(b"sendDocumentResult", b"sendNotice"),
            "VALIDATION_ERROR",
            "Неизвестная операция: sendNotice",
        ),
        (lambda uid: _callback(""), "VALIDATION_ERROR", "Не указан localUid документа"),
        (lambda uid: _callback(uid, "done"), "VALIDATION_ERROR", "Недопустимый статус результата: «done»"),
        (lambda uid: _callback(uid), "VALIDATION_ERROR", "нет регистрационного номера (emdrId)"),
        (lambda uid: _callback(uid, "error"), "VALIDATION_ERROR", "нет ни одного кода ошибки"),
        (
            lambda uid: _callback(uid, emdrId="1", registrationDateTime="вчера"),
            "VALIDATION_ERROR",
            "Некорректная дата регистрации registrationDateTime: «вчера»",
        ),
        (
            lambda uid: _callback(str(uuid.uuid4()), emdrId="1"),
            "REGISTRY_ITEM_NOT_FOUND",
            "портал в ИЭМК не передавал",
        ),
    ],
)
def test_bad_answers_get_a_fault_naming_the_problem_and_change_nothing(client, waiting, body, code, reason):
    answer = _post(client, body(waiting.local_uid))

    assert answer.status_code == 500
    fault = etree.fromstring(answer.data).find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert reason in fault.findtext("faultstring")
    assert fault.findtext(f"detail/{{{emk.NS_DOCS}}}fault/{{{emk.NS_DOCS}}}code") == code
    assert _status(waiting) == (m.SENT, None, None)


def test_the_callback_contract_is_served_with_its_own_address(client, app):
    wsdl = etree.fromstring(client.get("/iemk/callback?wsdl").data)
    locations = {
        port.get("name"): port.find("{http://schemas.xmlsoap.org/wsdl/soap/}address").get("location")
        for port in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/}port")
    }
    assert locations["IemkCallbackPort"] == "http://localhost/iemk/callback"


# --- the whole way over HTTP: upload, then the answer comes to the live portal ---------------


@pytest.fixture(params=DATABASES)
def stack(request, tmp_path):
    """Live portal + simulators host, each pointing at the other; ИЭМК answers at once, so its
    answer may overtake the upload's own outcome (the portal then asks it to repeat the answer)."""
    database = request.param
    overrides = (
        {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'iemk.db'}"} if database == "sqlite" else {}
    )
    app = make_app(database, **overrides)
    sims, sims_url = start_simulators(0, config={"IEMK_RESULT_DELAY": 0})
    portal_server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=portal_server.serve_forever, daemon=True).start()
    portal_url = f"http://127.0.0.1:{portal_server.server_port}"
    with app.app_context():
        if database == "postgresql":
            _reset_postgres()
        else:
            db.create_all()
        mo = factories.make_mo()
        point_at(sims_url, callback_url=f"{portal_url}/iemk/callback")
        db.session.commit()
        yield SimpleNamespace(app=app, sims=sims_url, portal=portal_url, mo=mo)
        db.session.remove()
        portal_server.shutdown()
        sims.shutdown()
        db.engine.dispose()


def _wait(doc: m.IemkDocument, status: str, timeout: float = 15.0) -> m.IemkDocument:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.expire_all()
        fresh = db.session.get(m.IemkDocument, doc.id)
        if fresh.status == status:
            return fresh
        time.sleep(0.1)
    raise AssertionError(f"статус {fresh.status} вместо {status}: {fresh.last_message}")


def _send(stack, doc: m.IemkDocument) -> None:
    enqueue(CHANNEL, "iemk_document", doc.id, doc.mo_id)
    doc.queued = True
    db.session.commit()
    send_due(CHANNEL)


def test_the_asynchronous_answer_reaches_the_portal_and_saves_the_document(stack):
    doc = make_doc(factories.make_patient(stack.mo), factories.make_staff(stack.mo))
    db.session.commit()

    _send(stack, doc)

    saved = _wait(doc, m.SAVED)
    [stored] = _sim(stack.sims, "_documents")
    assert saved.emdr_id == stored["emdrId"] and saved.status_label == "Сохранен в ИЭМК"
    assert stored["message_id"] == db.session.scalars(db.select(WorkItem.request_id)).one()
    deadline = time.monotonic() + 10
    while not _sim(stack.sims, "_documents")[0]["callbacks"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sim(stack.sims, "_documents")[0]["callbacks"] == ["sendDocumentResult: доставлен (HTTP 200)"]


def test_a_rejection_arrives_as_an_error_with_the_directory_text(stack):
    _sim(stack.sims, "_settings", reject_next={"count": 1, "code": "NO_SNILS"})
    doc = make_doc(factories.make_patient(stack.mo), factories.make_staff(stack.mo))
    db.session.commit()

    _send(stack, doc)

    failed = _wait(doc, m.ERROR)
    assert failed.status_label == (
        "Ошибка: Наличие СНИЛС пациента не соответствует требованиям вида документов (код NO_SNILS)"
    )


def test_an_answer_the_portal_cannot_take_yet_is_refused_for_a_retry(client, waiting, monkeypatch):
    def not_yet(local_uid, result):
        raise TransientError("документ ещё передаётся")

    monkeypatch.setattr("portal.iemk.channel.receive_result", not_yet)
    answer = _post(client, _callback(waiting.local_uid, emdrId="1"))

    fault = etree.fromstring(answer.data).find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert answer.status_code == 500 and fault.findtext("faultcode") == "s:Server"
    assert fault.findtext("faultstring") == "Ответ не принят сейчас, повторите позже: документ ещё передаётся"
    assert _status(waiting) == (m.SENT, None, None)
