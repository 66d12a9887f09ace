"""ИЭМК documents as the МО sees them before anything is sent: made from events, signed with the
signer shown, queued by hand or by the МО's integration, each refusal named."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from portal import crypto
from portal.admin.services import ensure_demo_certificate, set_integration
from portal.auth.roles import DOCTOR
from portal.clinical.intake import ingest_batch
from portal.exchange.models import QUEUED, JournalEntry, WorkItem
from portal.extensions import db
from portal.iemk import documents
from portal.iemk import models as m
from tests import factories


@pytest.fixture
def setup(app):
    mo = factories.make_mo()
    doctor = factories.make_staff(mo)
    user = factories.make_user(DOCTOR, mo, staff_id=doctor.id, full_name="Смирнова Ольга Михайловна")
    ensure_demo_certificate("iemk", "Тест: подпись документов ИЭМК")
    db.session.commit()
    return mo, doctor, user


def _docs(**where) -> list[m.IemkDocument]:
    query = db.select(m.IemkDocument).order_by(m.IemkDocument.id)
    for key, value in where.items():
        query = query.where(getattr(m.IemkDocument, key) == value)
    return db.session.scalars(query).all()


def _lab(mo, doctor, **kw):
    patient = factories.make_patient(mo)
    data = {"hemoglobin_g_l": 118, "esr_mm_h": 18, "diagnosis": "Z34.0"}
    event = factories.make_event(patient, "lab_blood", doctor_id=doctor.id, data=data, **kw)
    documents.ensure_documents([event.id])
    return _docs(event_id=event.id)[0]


def test_events_make_one_document_each_and_an_inpatient_epicrisis_per_department(setup):
    mo, doctor, _user = setup
    patient = factories.make_patient(mo)
    admission, ward = factories.make_department(mo, name="Приёмное"), factories.make_department(mo, name="Патология")
    stay = factories.make_hospitalisation(patient, admission)
    factories.make_movement(stay, department_id=admission.id, ended_at=stay.admitted_at + timedelta(hours=2))
    factories.make_movement(stay, department_id=ward.id, began_at=stay.admitted_at + timedelta(hours=2))
    discharge = factories.make_event(patient, "discharge", hospitalisation_id=stay.id, care_conditions="1")
    visit = factories.make_event(patient, "exam_repeat")
    ward_exam = factories.make_event(patient, "exam_repeat", care_conditions="1")  # not outpatient
    scan = factories.make_event(patient, "ultrasound_2")
    other = factories.make_event(patient, "kas_notice")  # not an ИЭМК document

    made = documents.ensure_documents(patient_id=patient.id)

    assert made == 4
    epicrises = _docs(event_id=discharge.id)
    assert [(d.kind, d.department_id) for d in epicrises] == [
        ("stat_epicrisis", admission.id), ("stat_epicrisis", ward.id),
    ]
    assert [d.kind for d in _docs(event_id=visit.id)] == ["amb_epicrisis"]
    assert [d.kind for d in _docs(event_id=scan.id)] == ["instrumental"]
    assert _docs(event_id=ward_exam.id) == [] and _docs(event_id=other.id) == []
    assert {d.status_label for d in _docs(patient_id=patient.id)} == {"Не подписан"}
    assert documents.ensure_documents(patient_id=patient.id) == 0  # once per event and department


def test_intake_of_an_event_makes_its_document(setup):
    mo, doctor, _user = setup
    patient = factories.make_patient(mo)
    db.session.commit()
    result = ingest_batch([{
        "type": "event", "id": "lab-77", "kind": "lab_urine", "patient": patient.source_id,
        "mo": mo.source_id, "doctor": doctor.source_id, "at": "2026-11-20T10:00:00", "care_conditions": "3",
        "data": {"protein": "отр."},
    }])
    db.session.commit()
    assert [r["status"] for r in result.results] == ["stored"]
    (doc,) = _docs(patient_id=patient.id)
    assert (doc.kind, doc.title, doc.status_label) == ("lab", "Протокол лабораторного исследования", "Не подписан")


def test_signing_keeps_the_document_its_signature_and_the_signer(setup):
    mo, doctor, user = setup
    doc = _lab(mo, doctor)

    result = documents.sign_documents([doc], user)
    db.session.commit()

    assert result.signed == [doc] and result.refused == []
    assert doc.status_label == "Подписан"
    assert doc.signer == "Смирнова Ольга Михайловна, сертификат «Тест: подпись документов ИЭМК»"
    assert doc.signed_at is not None and doc.signed_by_id == user.id
    assert doc.local_uid in doc.xml  # the CDA document id is the document's localUid
    signer = crypto.verify_detached(base64.b64decode(doc.signature), doc.xml.encode("utf-8"))
    assert "Тест: подпись документов ИЭМК" in signer
    (line,) = documents.journal_lines(doc)
    assert line.operation == "Подписание" and line.user_id == user.id and "подписан" in line.message


def test_a_document_that_fails_a_control_stays_unsigned_with_the_reason(setup):
    mo, doctor, user = setup
    patient = factories.make_patient(mo, snils=None)
    event = factories.make_event(patient, "lab_blood", doctor_id=doctor.id, data={"hemoglobin_g_l": 118})
    documents.ensure_documents([event.id])
    (doc,) = _docs(event_id=event.id)

    result = documents.sign_documents([doc], user)

    assert result.signed == [] and result.refused[0][0] is doc
    assert "СНИЛС" in result.refused[0][1]
    assert doc.status == m.UNSIGNED and doc.signature is None and "СНИЛС" in doc.status_text


def test_signing_without_a_certificate_is_refused_by_name(app):
    mo = factories.make_mo()
    doctor = factories.make_staff(mo)
    user = factories.make_user(DOCTOR, mo)
    doc = _lab(mo, doctor)

    result = documents.sign_documents([doc], user)

    assert result.refused == [
        (doc, "Нет действующего сертификата «Подпись запросов ИЭМК» с закрытым ключом: добавьте его в разделе "
              "«Администрирование → Сертификаты»")
    ]
    assert doc.status == m.UNSIGNED


def test_transfer_queues_a_signed_document_once_and_names_every_refusal(setup):
    mo, doctor, user = setup
    signed, unsigned = _lab(mo, doctor), _lab(mo, doctor)
    documents.sign_documents([signed], user)

    result = documents.transfer([signed, unsigned], user)
    db.session.commit()

    assert result.queued == [signed]
    assert result.refused == [(unsigned, "Документ не подписан: сначала «Получить и подписать документы»")]
    item = db.session.scalars(db.select(WorkItem).where(WorkItem.subject_id == signed.id)).one()
    assert (item.channel, item.subject_type, item.state, item.mo_id) == ("iemk", "iemk_document", QUEUED, mo.id)
    assert signed.status_label == "Подписан" and signed.in_flight
    again = documents.transfer([signed], user)
    assert again.refused == [(signed, "Документ уже передаётся в ИЭМК")]
    assert documents.sign_documents([signed], user).refused == [
        (signed, "Документ передаётся в ИЭМК: подписать заново можно после ответа ИЭМК")
    ]


def test_the_job_collects_signed_documents_only_of_mo_with_the_integration_on(setup):
    mo, doctor, user = setup
    other_mo = factories.make_mo()
    other_doctor = factories.make_staff(other_mo)
    mine, theirs, unsigned = _lab(mo, doctor), _lab(other_mo, other_doctor), _lab(mo, doctor)
    documents.sign_documents([mine, theirs], user)
    db.session.commit()

    assert documents.collect() == 0  # 0/2: nothing goes by itself

    set_integration(mo, "iemk", True)
    assert documents.collect() == 1
    db.session.commit()
    assert mine.queued and not theirs.queued and not unsigned.queued
    assert documents.collect() == 0  # collected once
    lines = db.session.scalars(
        db.select(JournalEntry.message).where(JournalEntry.subject_id == mine.id, JournalEntry.channel == "iemk")
    ).all()
    assert any("интеграция МО включена" in line for line in lines)
