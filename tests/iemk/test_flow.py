"""The whole ИЭМК path as the МО lives it, over real HTTP to the stand-in: events → documents →
«Получить и подписать» → the МО's integration on → the job uploads → «Сохранен в ИЭМК»; an outage
in between leaves the documents queued and loses or doubles nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from portal.admin.services import ensure_demo_certificate, set_integration
from portal.auth.roles import DOCTOR
from portal.exchange.delivery import poll_due, send_due
from portal.exchange.models import JournalEntry, WorkItem
from portal.extensions import db
from portal.iemk import documents, jobs
from portal.iemk import models as m
from portal.iemk.channel import CHANNEL
from portal.models_base import utcnow
from tests import factories
from tests.iemk.test_emk import _sim, point_at, sims  # noqa: F401  (the stand-in fixture)


@pytest.fixture
def mo_docs(app, sims):  # noqa: F811
    """Two МО with three signed lab protocols each; ИЭМК at the stand-in, answers asked for."""
    ensure_demo_certificate("iemk", "Тест: подпись документов ИЭМК")
    made = {}
    for name in ("on", "off"):
        mo = factories.make_mo()
        point_at(sims, mo.id)
        doctor = factories.make_staff(mo)
        user = factories.make_user(DOCTOR, mo, staff_id=doctor.id)
        events = [
            factories.make_event(
                factories.make_patient(mo),
                "lab_blood",
                doctor_id=doctor.id,
                data={"hemoglobin_g_l": 110 + n, "diagnosis": "Z34.0"},
            )
            for n in range(3)
        ]
        documents.ensure_documents([e.id for e in events])
        docs = db.session.scalars(db.select(m.IemkDocument).where(m.IemkDocument.mo_id == mo.id)).all()
        assert documents.sign_documents(docs, user).signed == docs
        made[name] = (mo, docs)
    db.session.commit()
    return made


def _statuses(docs) -> list[str]:
    db.session.expire_all()
    return [db.session.get(m.IemkDocument, d.id).status_label for d in docs]


def test_switching_the_integration_on_sends_the_mo_s_signed_documents_and_nothing_of_others(mo_docs, sims):  # noqa: F811
    (mo, docs), (_other, others) = mo_docs["on"], mo_docs["off"]
    jobs.upload()
    assert _statuses(docs + others) == ["Подписан"] * 6 and _sim(sims, "_documents") == []  # 0/2

    set_integration(mo, "iemk", True)
    db.session.commit()
    jobs.upload()
    assert _statuses(docs) == ["Передан в ИЭМК"] * 3

    poll_due(CHANNEL, now=utcnow() + timedelta(minutes=2))  # the stand-in answered; the answer is asked for
    assert _statuses(docs) == ["Сохранен в ИЭМК"] * 3
    assert _statuses(others) == ["Подписан"] * 3
    stored = _sim(sims, "_documents")
    assert sorted(d["localUid"] for d in stored) == sorted(d.local_uid for d in docs)
    assert all(db.session.get(m.IemkDocument, d.id).emdr_id for d in docs)


def test_an_outage_leaves_documents_queued_and_recovery_sends_each_once(mo_docs, sims):  # noqa: F811
    (mo, docs) = mo_docs["on"]
    set_integration(mo, "iemk", True)
    db.session.commit()
    _sim(sims, "_control", mode="down")

    jobs.upload()

    assert _statuses(docs) == ["Подписан"] * 3
    db.session.expire_all()
    assert all(db.session.get(m.IemkDocument, d.id).in_flight for d in docs)  # the page shows them waiting
    errors = db.session.scalars(
        db.select(JournalEntry.message).where(JournalEntry.channel == "iemk", JournalEntry.level == "error")
    ).all()
    assert errors and all("Повторная попытка после" in line for line in errors)
    jobs.upload()  # the back-off holds: nothing is tried again at once
    assert _sim(sims, "_documents") == []

    _sim(sims, "_control", mode="normal")
    later = utcnow() + timedelta(minutes=5)
    send_due(CHANNEL, now=later)
    poll_due(CHANNEL, now=later + timedelta(minutes=2))

    assert _statuses(docs) == ["Сохранен в ИЭМК"] * 3
    assert len(_sim(sims, "_documents")) == 3
    items = db.session.scalars(db.select(WorkItem).where(WorkItem.channel == "iemk")).all()
    assert len(items) == 3 and {i.state for i in items} == {"done"}


def test_a_coded_rejection_shows_the_error_and_the_document_can_go_again(mo_docs, sims):  # noqa: F811
    (mo, docs) = mo_docs["on"]
    doc, user = docs[0], factories.make_user(DOCTOR, mo)
    _sim(sims, "_settings", reject_next={"count": 1, "code": "NO_SNILS"})
    documents.transfer([doc], user)
    db.session.commit()

    send_due(CHANNEL)
    poll_due(CHANNEL, now=utcnow() + timedelta(minutes=2))

    (label,) = _statuses([doc])
    assert (
        label == "Ошибка: Наличие СНИЛС пациента не соответствует требованиям вида документов (код NO_SNILS)"
    )
    doc = db.session.get(m.IemkDocument, doc.id)
    assert documents.transfer([doc], user).queued == [doc]  # sent again by hand
    db.session.commit()
    send_due(CHANNEL)
    poll_due(CHANNEL, now=utcnow() + timedelta(minutes=2))
    assert _statuses([doc]) == ["Сохранен в ИЭМК"]
    assert [d["localUid"] for d in _sim(sims, "_documents")] == [doc.local_uid]  # replaced, not doubled
