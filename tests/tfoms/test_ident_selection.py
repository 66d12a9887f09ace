"""Who is selected for identification (seed 4.3.3, T-2): new people from intake, the
«Идентифицировать» button of the patient card, and the daily run over the day's treatment cases."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from jobs.scheduler import run_job
from portal.clinical.intake import ingest_batch
from portal.clinical.models import Patient
from portal.exchange.models import RUN_OK, ServiceRun
from portal.extensions import db
from portal.tfoms import ident
from portal.tfoms.models import IDENT_SELECTED, IDENT_SENT, IdentPackage, IdentRecord
from tests import factories
from tests.conftest import csrf_token, login
from tests.tfoms.ident_support import HX, PAGE, package_of, switch_on


def _records(**where) -> list[IdentRecord]:
    db.session.expire_all()
    stmt = db.select(IdentRecord).order_by(IdentRecord.id)
    for name, value in where.items():
        stmt = stmt.where(getattr(IdentRecord, name) == value)
    return list(db.session.scalars(stmt))


def _patient_record(source_id: str, mo) -> dict:
    return {
        "type": "patient",
        "id": source_id,
        "mo": mo.source_id,
        "last_name": "Новикова",
        "first_name": "Ольга",
        "birth_date": "1990-02-03",
        "snils": factories.valid_snils(9000 + len(source_id)),
    }


def test_intake_selects_created_patients_of_switched_on_mo_only(app, client, region):
    a, b = region.a, region.b
    switch_on(a.mo)
    db.session.commit()
    existing = a.patients[0]
    result = ingest_batch(
        [
            _patient_record("new-a-1", a.mo),
            _patient_record("new-a-2", a.mo),
            _patient_record("new-b-1", b.mo),  # МО b: the procedure is off
            {
                "type": "patient",
                "id": existing.source_id,
                "mo": a.mo.source_id,
                "last_name": existing.last_name,
                "first_name": existing.first_name,
                "phone": "+7 900 111-22-33",
            },  # changed, not created
        ]
    )
    db.session.commit()
    assert result.refused == 0, result.results

    records = _records()
    selected = {db.session.get(Patient, r.patient_id).source_id for r in records}
    assert selected == {"new-a-1", "new-a-2"}
    assert {(r.reason, r.status, r.mo_id, r.period_from) for r in records} == {
        ("new_person", IDENT_SELECTED, a.mo.id, date.today())
    }

    # the same records again: nobody is new, nobody selected twice
    ingest_batch([_patient_record("new-a-1", a.mo), _patient_record("new-a-2", a.mo)])
    db.session.commit()
    assert len(_records()) == 2

    login(client, a.users["mo_admin"])
    page = client.get(PAGE).get_data(as_text=True)
    assert "Отобрано для идентификации: <b>2</b>" in page
    assert page.count("Новикова Ольга") == 2 and "Новый человек" in page


def test_identify_button_selects_and_refuses_while_a_record_waits(app, client, region):
    a = region.a
    patient = a.patients[1]
    card_url = f"/clinical/patients/{patient.id}"
    login(client, a.users["mo_admin"])
    card = client.get(card_url).get_data(as_text=True)
    assert "Идентификация в ТФОМС" in card and ">Идентифицировать</button>" in card
    assert "ТФОМС пациента ещё не идентифицировал" in card

    url = f"/tfoms/ident/patient/{patient.id}"
    token = csrf_token(client, card_url)
    first = client.post(url, data={"csrf_token": token}, headers=HX).get_data(as_text=True)
    assert f"{patient.full_name} отобран(а) для идентификации в ТФОМС" in first
    assert "Отобран(а) для идентификации" in first
    [record] = _records(patient_id=patient.id)
    assert (record.reason, record.status) == ("manual", IDENT_SELECTED)

    again = client.post(url, data={"csrf_token": token}, headers=HX).get_data(as_text=True)
    assert "уже отобран(а) для идентификации" in again
    assert len(_records(patient_id=patient.id)) == 1

    package = ident.form_packages(a.mo.id)
    db.session.commit()
    name = package.packages[0].name
    waiting = client.post(url, data={"csrf_token": token}, headers=HX).get_data(as_text=True)
    assert f"уже ожидает ответа ТФОМС в пакете {name}" in waiting
    assert (
        len(_records(patient_id=patient.id)) == 1 and _records(patient_id=patient.id)[0].status == IDENT_SENT
    )

    # without htmx: back to the card with the message
    plain = client.post(url, data={"csrf_token": token}, follow_redirects=True).get_data(as_text=True)
    assert f"уже ожидает ответа ТФОМС в пакете {name}" in plain and "<h1>" in plain


def test_identify_button_is_for_administrators_of_the_patients_mo(app, client, region):
    a, b = region.a, region.b
    login(client, a.users["doctor"])
    card_url = f"/clinical/patients/{a.patients[0].id}"
    card = client.get(card_url).get_data(as_text=True)
    assert "Идентифицировать" not in card
    token = csrf_token(client, card_url)
    assert (
        client.post(f"/tfoms/ident/patient/{a.patients[0].id}", data={"csrf_token": token}).status_code == 403
    )

    login(client, a.users["mo_admin"])
    token = csrf_token(client, card_url)
    assert (
        client.post(f"/tfoms/ident/patient/{b.patients[0].id}", data={"csrf_token": token}).status_code == 404
    )
    assert _records() == []

    login(client, region.central)
    token = csrf_token(client, card_url)
    response = client.post(f"/tfoms/ident/patient/{b.patients[0].id}", data={"csrf_token": token}, headers=HX)
    assert "отобран(а) для идентификации" in response.get_data(as_text=True)


def test_daily_run_selects_from_the_days_cases_and_packages_them(app, client, region):
    a, b = region.a, region.b
    switch_on(a.mo)
    today = date.today()
    morning = datetime.combine(today, time(9, 30))
    stay_patient, visit_patient = a.patients
    recent = factories.make_patient(
        a.mo, last_name="Недавняя", tfoms_identified_on=today - timedelta(days=10)
    )
    long_ago = factories.make_patient(
        a.mo, last_name="Давняя", tfoms_identified_on=today - timedelta(days=40)
    )
    inpatient_visit = factories.make_patient(a.mo, last_name="Стационарная")
    waiting = factories.make_patient(a.mo, last_name="Ожидающая")
    old_case = factories.make_patient(a.mo, last_name="Прошлая")
    stay = factories.make_hospitalisation(stay_patient, a.department, admitted_at=morning, discharged_at=None)
    visit = factories.make_event(visit_patient, at=morning + timedelta(hours=1), care_conditions="3")
    factories.make_event(
        stay_patient, at=morning + timedelta(hours=2), care_conditions="3"
    )  # one record a person
    factories.make_event(recent, at=morning, care_conditions="3")
    factories.make_event(long_ago, at=morning, care_conditions="3")
    factories.make_event(inpatient_visit, at=morning, care_conditions="1")
    factories.make_event(waiting, at=morning, care_conditions="3")
    factories.make_event(old_case, at=morning - timedelta(days=5), care_conditions="3")
    factories.make_hospitalisation(b.patients[0], b.department, admitted_at=morning)  # МО b is off
    ident.identify_patient(waiting)
    db.session.commit()

    summary = run_job(app, "tfoms_ident")
    assert "Отобрано по случаям лечения: 3" in summary and "Сформировано пакетов: 1" in summary

    cases = {r.patient_id: r for r in _records(reason="case")}
    assert set(cases) == {stay_patient.id, visit_patient.id, long_ago.id}
    kvs = cases[stay_patient.id]
    assert (kvs.case_type, kvs.case_id, kvs.case_number) == ("hospitalisation", stay.id, stay.source_id)
    assert (kvs.period_from, kvs.period_to) == (today, None)
    tap = cases[visit_patient.id]
    assert (tap.case_type, tap.case_id, tap.period_from, tap.period_to) == ("visit", visit.id, today, today)
    [package] = db.session.scalars(db.select(IdentPackage)).all()
    assert package.mo_id == a.mo.id and package.record_count == 4  # the three cases and the waiting person
    assert {r.status for r in _records(package_id=package.id)} == {IDENT_SENT}
    run = db.session.scalars(db.select(ServiceRun).where(ServiceRun.service == "tfoms_ident")).one()
    assert (run.result, run.total, run.errors) == (RUN_OK, 1, 0)

    # the next run the same day: the cases were taken, nobody is selected again
    assert "Отобрано по случаям лечения: 0" in run_job(app, "tfoms_ident")
    assert len(_records()) == 4

    login(client, a.users["mo_admin"])
    page = client.get(f"{PAGE}?package={package.id}").get_data(as_text=True)
    assert f"КВС № {stay.source_id}" in page and f"ТАП № {visit.source_id}" in page


def test_daily_run_without_switched_on_mo_does_nothing(app, region):
    factories.make_hospitalisation(region.a.patients[0], region.a.department, admitted_at=datetime.now())
    db.session.commit()
    assert "не включена ни для одной МО" in run_job(app, "tfoms_ident")
    assert _records() == []


def test_daily_run_names_an_mo_without_f003_code(app, region):
    a = region.a
    a.mo.f003_code = None
    switch_on(a.mo)
    package_patients = [a.patients[0]]
    for patient in package_patients:
        ident.identify_patient(patient)
    db.session.commit()
    summary = run_job(app, "tfoms_ident")
    assert f"Пакет для МО «{a.mo.short_name}» не сформирован: у МО не указан код F003" in summary
    assert {r.status for r in _records()} == {IDENT_SELECTED}
    run = db.session.scalars(db.select(ServiceRun).where(ServiceRun.service == "tfoms_ident")).one()
    assert run.errors == 1


def test_a_patient_in_an_answered_package_may_be_selected_again(app, region):
    patient = region.a.patients[0]
    package = package_of([patient])
    package.answer_loaded_at = datetime.now()
    db.session.execute(db.update(IdentRecord).values(status="identified"))
    db.session.commit()
    assert "отобран(а)" in ident.identify_patient(patient)
