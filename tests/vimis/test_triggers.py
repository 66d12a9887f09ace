"""V-1, V-2: which events make which SEMD, exactly once, sent the first time by themselves."""

from __future__ import annotations

import pytest

from portal.clinical.intake import ingest_batch
from portal.exchange.models import JournalEntry, WorkItem
from portal.extensions import db
from portal.vimis.models import QUEUED, Semd, SemdVersion
from tests import factories


@pytest.fixture
def source(app):
    """The source MIS's base records (МО, department, doctor, patient, pregnancy, two stays)."""
    records = [
        {"type": "mo", "id": "t-mo", "name": "БУЗ ВО «Тестовый роддом»", "short_name": "ТРД",
         "registry_number": "350201", "oid": "1.2.643.5.1.13.13.12.2.35.3601"},
        {"type": "department", "id": "t-dep", "mo": "t-mo", "name": "Р/д Обсервация", "kind": "maternity"},
        {"type": "staff", "id": "t-doc", "mo": "t-mo", "last_name": "Смирнова", "first_name": "Ольга",
         "snils": factories.valid_snils(801)},
        {"type": "patient", "id": "t-pat", "mo": "t-mo", "last_name": "Иванова", "first_name": "Мария",
         "birth_date": "1994-05-06", "snils": factories.valid_snils(802), "registration_address": "г. Вологда"},
        {"type": "pregnancy", "id": "t-preg", "patient": "t-pat", "mo": "t-mo", "registered_on": "2026-05-01",
         "weeks_at_registration": 8},
        {"type": "hospitalisation", "id": "t-birth", "patient": "t-pat", "pregnancy": "t-preg", "mo": "t-mo",
         "department": "t-dep", "admitted_at": "2026-11-10T09:00:00", "discharged_at": "2026-11-14T12:00:00",
         "outcome": "birth"},
        {"type": "hospitalisation", "id": "t-stay", "patient": "t-pat", "pregnancy": "t-preg", "mo": "t-mo",
         "department": "t-dep", "admitted_at": "2026-10-01T09:00:00", "discharged_at": "2026-10-05T12:00:00"},
    ]
    _store(records)
    return records


def _store(records: list[dict]) -> None:
    result = ingest_batch(records)
    refused = [r for r in result.results if r["status"] != "stored"]
    assert not refused, refused
    db.session.commit()


def _event(event_id: str, kind: str, care: str = "3", **extra) -> dict:
    return {"type": "event", "id": event_id, "kind": kind, "patient": "t-pat", "pregnancy": "t-preg",
            "mo": "t-mo", "department": "t-dep", "doctor": "t-doc", "at": "2026-11-14T12:00:00",
            "care_conditions": care, "data": {}, **extra}


def _types() -> dict[str, int]:
    from portal.clinical.models import ClinicalEvent

    return dict(db.session.execute(
        db.select(ClinicalEvent.source_id, Semd.semd_type).join(Semd, Semd.event_id == ClinicalEvent.id)
    ).all())


@pytest.mark.parametrize(("kind", "semd_type"), [
    ("referral_mo", 1), ("referral_neonatal_screening", 1),
    ("ultrasound_1", 2), ("ultrasound_2", 2), ("ultrasound_3", 2), ("prenatal_screening_1", 2),
    ("lab_blood", 3), ("lab_urine", 3),
    ("exam_primary", 5), ("exam_repeat", 5), ("consult_therapist", 5),
    ("death_certificate", 13), ("perinatal_death_certificate", 19),
])
def test_each_trigger_event_makes_its_semd(source, kind, semd_type):
    _store([_event("e1", kind)])
    assert _types() == {"e1": semd_type}


def test_discharge_makes_17_with_an_outcome_in_the_stay_and_8_without(source):
    _store([_event("with-outcome", "discharge", "1", hospitalisation="t-birth"),
            _event("without", "discharge", "1", hospitalisation="t-stay")])
    assert _types() == {"with-outcome": 17, "without": 8}


def test_exams_make_semd_5_only_outpatient(source):
    _store([_event("amb", "exam_primary", "3"), _event("hosp", "exam_repeat", "1"),
            _event("day", "consult_therapist", "2")])
    assert _types() == {"amb": 5}


def test_kas_notice_makes_22_with_a_register_status(source):
    _store([_event("kas", "kas_notice", "1", data={"kas_status": "remove_from_control"})])
    assert _types() == {"kas": 22}
    result = ingest_batch([_event("kas-no-status", "kas_notice", "1")])
    assert result.results[0]["status"] == "refused" and result.results[0]["field"] == "data.kas_status"
    db.session.rollback()
    assert "kas-no-status" not in _types()


def test_events_without_a_semd_make_none(source):
    _store([_event("outcome", "pregnancy_outcome")])
    assert _types() == {}


def test_one_event_one_semd_even_when_sent_again(source):
    _store([_event("e1", "ultrasound_2")])
    _store([_event("e1", "ultrasound_2")])  # unchanged repeat
    _store([_event("e1", "ultrasound_2", at="2026-11-15T09:30:00")])  # corrected date
    semd = db.session.scalars(db.select(Semd)).one()
    assert semd.event_at.isoformat() == "2026-11-15T09:30:00"  # the registry shows the correction
    assert db.session.scalar(db.select(db.func.count()).select_from(SemdVersion)) == 1
    assert db.session.scalar(db.select(db.func.count()).select_from(WorkItem)) == 1


def test_the_first_send_is_automatic(source):
    _store([_event("e1", "lab_urine")])
    semd = db.session.scalars(db.select(Semd)).one()
    assert (semd.status, semd.send_number, semd.gestation_weeks) == (QUEUED, 1, 36)
    item = db.session.scalars(db.select(WorkItem)).one()
    assert (item.channel, item.state, item.subject_type) == ("vimis", "queued", "semd_version")
    lines = db.session.scalars(db.select(JournalEntry.message).where(JournalEntry.subject_id == semd.id)).all()
    assert lines == ["Появилось триггерное мероприятие"]


def test_a_discharge_whose_stay_gains_an_outcome_before_sending_becomes_17(source):
    _store([_event("d", "discharge", "1", hospitalisation="t-stay")])
    assert _types() == {"d": 8}
    _store([_event("d", "discharge", "1", hospitalisation="t-birth")])
    assert _types() == {"d": 17}
    semd = db.session.scalars(db.select(Semd)).one()
    assert semd.last_message == "Мероприятие изменено в МИС: вместо СЭМД 8 формируется СЭМД 17"
