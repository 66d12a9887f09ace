"""The order-263 records as the source MIS sends them over POST /api/v1/records: branches, bed
profiles, referrals, movements, dispensary observation and the new department and hospitalisation
fields; and the demo region that carries them."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta

import pytest

from portal.auth.models import ApiToken, hash_token
from portal.clinical.demo import demo_records
from portal.clinical.models import (
    BedProfile,
    Branch,
    Department,
    DispensaryObservation,
    Hospitalisation,
    HospitalMovement,
    HospitalReferral,
)
from portal.extensions import db

TOKEN = "test-intake-263-token"
URL = "/api/v1/records"
TODAY = date(2026, 11, 24)
IN_PATIENT = {
    "round_the_clock",
    "maternity",
    "perinatal_centre",
    "day_hospital",
    "home_hospital",
    "polyclinic_day_hospital",
}


@pytest.fixture
def token(app):
    db.session.add(ApiToken(name="МИС региона", token_hash=hash_token(TOKEN), prefix=TOKEN[:8]))
    db.session.commit()


def post(client, records: list[dict]) -> list[dict]:
    response = client.post(
        URL,
        data=json.dumps({"records": records}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["results"]


def by_source(model, source_id: str):
    db.session.expire_all()
    return db.session.scalar(db.select(model).where(model.source_id == source_id))


def count(model) -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(model))


def batch() -> list[dict]:
    """A referral from a women's clinic (mo-2) to a maternity hospital (mo-1), the stay it led to
    (admission department, then the pathology department) and the patient's dispensary observation."""
    return [
        {"type": "mo", "id": "mo-1", "name": "БУЗ ВО «Родильный дом»", "f003_code": "350102"},
        {"type": "mo", "id": "mo-2", "name": "БУЗ ВО «Городская поликлиника № 1»", "f003_code": "350103"},
        {
            "type": "branch",
            "id": "br-1",
            "mo": "mo-1",
            "code": "001",
            "name": "Родильный дом",
            "kind": "hospital",
            "address": "г. Вологда, ул. Добролюбова, д. 40",
            "phone": "+7 (8172) 53-12-40",
            "opened_on": "1975-03-01",
        },
        {
            "type": "branch",
            "id": "br-2",
            "mo": "mo-2",
            "code": "001",
            "name": "Женская консультация",
            "kind": "polyclinic",
            "for_children": False,
        },
        {
            "type": "department",
            "id": "dep-adm",
            "mo": "mo-1",
            "branch": "br-1",
            "name": "Приёмное отделение",
            "kind": "admission",
            "phone": "+7 (8172) 53-12-41",
        },
        {
            "type": "department",
            "id": "dep-pat",
            "mo": "mo-1",
            "branch": "br-1",
            "name": "Отделение патологии беременности",
            "kind": "round_the_clock",
            "beds": 30,
        },
        {
            "type": "department",
            "id": "dep-wc",
            "mo": "mo-2",
            "branch": "br-2",
            "name": "Женская консультация",
            "kind": "outpatient",
        },
        {
            "type": "bed_profile",
            "id": "bp-1",
            "department": "dep-pat",
            "profile": 4,
            "care_profile": 136,
            "beds": 30,
            "beds_female": 30,
            "beds_repair": 2,
            "planned_beds": 30,
            "valid_from": "2026-01-01",
            "actual_on": "2026-11-24",
            "occupied": 21,
            "admitted_today": 3,
            "discharged_today": 2,
            "planned_today": 1,
            "free": 7,
            "free_adult": 7,
            "free_child": 0,
        },
        {"type": "staff", "id": "doc-2", "mo": "mo-2", "last_name": "Смирнова", "first_name": "Ольга"},
        {"type": "patient", "id": "pat-1", "mo": "mo-2", "last_name": "Иванова", "first_name": "Мария"},
        {
            "type": "pregnancy",
            "id": "preg-1",
            "patient": "pat-1",
            "mo": "mo-2",
            "registered_on": "2026-05-01",
            "weeks_at_registration": 8,
        },
        {
            "type": "referral",
            "id": "ref-1",
            "mo": "mo-2",
            "patient": "pat-1",
            "pregnancy": "preg-1",
            "branch": "br-2",
            "doctor": "doc-2",
            "number": 1543,
            "kind": "planned",
            "payment": "oms",
            "issued_on": "2026-11-16",
            "planned_on": "2026-11-18",
            "to_mo": "mo-1",
            "to_department": "dep-pat",
            "bed_profile": "bp-1",
            "diagnosis": "O24.4",
            "diagnosis_text": "Сахарный диабет, развившийся во время беременности",
        },
        {
            "type": "hospitalisation",
            "id": "hosp-1",
            "patient": "pat-1",
            "pregnancy": "preg-1",
            "mo": "mo-1",
            "department": "dep-pat",
            "referral": "ref-1",
            "admitted_at": "2026-11-18T09:00:00",
            "emergency": False,
            "card_number": "1234/26",
            "diagnosis": "O24.4",
            "diagnosis_text": "Сахарный диабет, развившийся во время беременности",
        },
        {
            "type": "movement",
            "id": "mov-1",
            "hospitalisation": "hosp-1",
            "department": "dep-adm",
            "began_at": "2026-11-18T09:00:00",
            "ended_at": "2026-11-18T09:40:00",
            "outcome": "2",
        },
        {
            "type": "movement",
            "id": "mov-2",
            "hospitalisation": "hosp-1",
            "department": "dep-pat",
            "bed_profile": "bp-1",
            "began_at": "2026-11-18T09:40:00",
        },
        {
            "type": "dispensary",
            "id": "dn-1",
            "patient": "pat-1",
            "mo": "mo-2",
            "doctor": "doc-2",
            "diagnosis": "O24.4",
            "began_on": "2026-06-10",
            "visits_per_year": 12,
            "place": "1",
        },
    ]


def test_the_new_records_are_stored_with_their_fields(client, token):
    records = batch()

    results = post(client, records)

    assert [(r["id"], r["status"]) for r in results] == [(r["id"], "stored") for r in records]
    branch = by_source(Branch, "br-1")
    assert (branch.code, branch.name, branch.kind, branch.for_children, branch.phone, branch.opened_on) == (
        "001",
        "Родильный дом",
        "hospital",
        None,
        "+7 (8172) 53-12-40",
        date(1975, 3, 1),
    )
    assert branch.mo.source_id == "mo-1"
    assert by_source(Branch, "br-2").for_children is False
    department = by_source(Department, "dep-adm")
    assert (department.branch.source_id, department.phone, department.closed_on) == (
        "br-1",
        "+7 (8172) 53-12-41",
        None,
    )
    beds = by_source(BedProfile, "bp-1")
    assert beds.mo.source_id == "mo-1", "the МО of a bed profile is its department's"
    assert (
        beds.department.source_id,
        beds.profile,
        beds.care_profile,
        beds.children,
        beds.beds,
        beds.beds_male,
        beds.beds_female,
        beds.beds_repair,
        beds.planned_beds,
        beds.valid_from,
        beds.valid_to,
    ) == ("dep-pat", 4, 136, False, 30, 0, 30, 2, 30, date(2026, 1, 1), None)
    assert (
        beds.actual_on,
        beds.occupied,
        beds.admitted_today,
        beds.discharged_today,
        beds.planned_today,
        beds.free,
        beds.free_adult,
        beds.free_child,
    ) == (date(2026, 11, 24), 21, 3, 2, 1, 7, 7, 0)
    referral = by_source(HospitalReferral, "ref-1")
    assert (
        referral.mo.source_id,
        referral.patient.source_id,
        referral.branch.source_id,
        referral.doctor.source_id,
        referral.to_mo.source_id,
        referral.to_department.source_id,
        referral.bed_profile.source_id,
    ) == ("mo-2", "pat-1", "br-2", "doc-2", "mo-1", "dep-pat", "bp-1")
    assert (
        referral.number,
        referral.kind,
        referral.auto_created,
        referral.payment,
        referral.issued_on,
        referral.planned_on,
        referral.diagnosis,
        referral.cancelled_on,
    ) == (1543, "planned", False, "oms", date(2026, 11, 16), date(2026, 11, 18), "O24.4", None)
    stay = by_source(Hospitalisation, "hosp-1")
    assert (
        stay.referral.source_id,
        stay.emergency,
        stay.card_number,
        stay.diagnosis,
        stay.diagnosis_text,
        stay.refused_at,
    ) == ("ref-1", False, "1234/26", "O24.4", "Сахарный диабет, развившийся во время беременности", None)
    first, second = by_source(HospitalMovement, "mov-1"), by_source(HospitalMovement, "mov-2")
    assert (
        first.hospitalisation_id,
        first.mo_id,
        first.department.source_id,
        first.bed_profile,
        first.began_at,
        first.ended_at,
        first.outcome,
    ) == (stay.id, stay.mo_id, "dep-adm", None, datetime(2026, 11, 18, 9), datetime(2026, 11, 18, 9, 40), "2")
    assert (second.department.source_id, second.bed_profile.source_id, second.ended_at, second.outcome) == (
        "dep-pat",
        "bp-1",
        None,
        None,
    )
    observation = by_source(DispensaryObservation, "dn-1")
    assert (
        observation.patient.source_id,
        observation.mo.source_id,
        observation.doctor.source_id,
        observation.diagnosis,
        observation.began_on,
        observation.visits_per_year,
        observation.place,
        observation.ended_on,
        observation.end_result,
    ) == ("pat-1", "mo-2", "doc-2", "O24.4", date(2026, 6, 10), 12, "1", None, None)


def test_one_batch_carries_the_chain_in_any_order(client, token):
    """branch → department → bed_profile → referral → hospitalisation → movement, sent backwards."""
    results = post(client, list(reversed(batch())))

    assert {r["status"] for r in results} == {"stored"}
    movement = by_source(HospitalMovement, "mov-2")
    assert movement.bed_profile.department.branch.source_id == "br-1"
    assert movement.hospitalisation.referral.bed_profile_id == movement.bed_profile_id


def test_chain_split_over_two_batches(client, token):
    records = batch()
    post(client, records[:8])  # МО, branches, departments and the bed profile

    results = post(client, records[8:])

    assert {r["status"] for r in results} == {"stored"}
    assert by_source(HospitalReferral, "ref-1").bed_profile.source_id == "bp-1"


def test_a_cancelled_referral_and_a_refusal_are_stored(client, token):
    records = batch()
    records[11]["cancel"] = {
        "on": "2026-11-17",
        "reason": "4",
        "source": "1",
        "text": "Нет свободных мест в отделении",
    }
    records += [
        {
            "type": "hospitalisation",
            "id": "hosp-2",
            "patient": "pat-1",
            "pregnancy": "preg-1",
            "mo": "mo-1",
            "department": "dep-adm",
            "admitted_at": "2026-11-20T23:10:00",
            "emergency": True,
            "card_number": "1250/26",
            "diagnosis": "O20.0",
            "refusal": {
                "at": "2026-11-21T00:30:00",
                "reason": "1",
                "source": "2",
                "text": "Пациентка от госпитализации отказалась",
            },
        }
    ]

    results = post(client, records)

    assert {r["status"] for r in results} == {"stored"}
    referral = by_source(HospitalReferral, "ref-1")
    assert (referral.cancelled_on, referral.cancel_reason, referral.cancel_source, referral.cancel_text) == (
        date(2026, 11, 17),
        "4",
        "1",
        "Нет свободных мест в отделении",
    )
    refused = by_source(Hospitalisation, "hosp-2")
    assert (
        refused.refused_at,
        refused.refusal_reason,
        refused.refusal_source,
        refused.refusal_text,
        refused.emergency,
    ) == (datetime(2026, 11, 21, 0, 30), "1", "2", "Пациентка от госпитализации отказалась", True)

    records[11]["cancel"] = None  # the record is sent whole: the cancellation is withdrawn
    post(client, records)
    assert by_source(HospitalReferral, "ref-1").cancelled_on is None


def test_occupancy_sent_again_updates_the_bed_profile(client, token):
    post(client, batch())
    profile = dict(batch()[7], actual_on="2026-11-25", occupied=28, free=0, free_adult=0)

    post(client, [profile])

    beds = by_source(BedProfile, "bp-1")
    assert (beds.actual_on, beds.occupied, beds.free) == (date(2026, 11, 25), 28, 0)
    assert count(BedProfile) == 1


def _with(index: int, **changes) -> tuple[list[dict], int]:
    records = batch()
    records[index].update(changes)
    return records, index


BAD_RECORDS = [
    # (change to the batch, refused field, fragment of the Russian message)
    (lambda: _with(2, code="12"), "code", "«Код подразделения»: ожидается 3 цифр"),
    (lambda: _with(2, code=None), "code", "Не указано обязательное поле «Код подразделения»"),
    (lambda: _with(2, kind="clinic"), "kind", "«Вид подразделения»: недопустимое значение «clinic»"),
    (lambda: _with(2, for_children="да"), "for_children", "true или false"),
    (lambda: _with(2, opened_on="2020-01-01", closed_on="2019-12-31"), "closed_on", "раньше даты открытия"),
    (lambda: _with(2, mo="mo-404"), "mo", "МО mo-404 не найдена"),
    (lambda: _with(4, branch="br-404"), "branch", "Подразделение br-404 не найдено"),
    (lambda: _with(4, branch="br-2"), "branch", "Подразделение br-2 не относится к МО mo-1"),
    (lambda: _with(4, closed_on="31.12.2026"), "closed_on", "ГГГГ-ММ-ДД"),
    (lambda: _with(7, profile="4"), "profile", "«Профиль койки по V020»: ожидается целое число"),
    (
        lambda: _with(7, care_profile=None),
        "care_profile",
        "Не указано обязательное поле «Профиль медицинской",
    ),
    (lambda: _with(7, beds=-1), "beds", "«Количество коек»: допустимо от 0"),
    (lambda: _with(7, free=-2), "free", "«Свободных коек»: допустимо от 0"),
    (lambda: _with(7, valid_to="2025-12-31"), "valid_to", "раньше даты начала"),
    (lambda: _with(7, department=None), "department", "Не указано обязательное поле «Отделение»"),
    (lambda: _with(11, diagnosis="О24.4"), "diagnosis", "код МКБ-10"),  # Cyrillic О
    (lambda: _with(11, diagnosis=None), "diagnosis", "Не указано обязательное поле «Диагноз направления"),
    (lambda: _with(11, kind="urgent"), "kind", "«Вид направления»: недопустимое значение"),
    (lambda: _with(11, number="1543/26"), "number", "«Номер направления»: ожидается целое число"),
    (lambda: _with(11, payment="cash"), "payment", "допустимы: oms"),
    (lambda: _with(11, auto_created=1), "auto_created", "true или false"),
    (lambda: _with(11, planned_on="2026-11-10"), "planned_on", "раньше даты направления"),
    (lambda: _with(11, cancel={"on": "2026-11-17"}), "cancel.reason", "«Причина отмены направления»"),
    (
        lambda: _with(11, cancel={"on": "2026-11-17", "reason": "9", "source": "1"}),
        "cancel.reason",
        "недопустимое значение «9»; допустимы: 0, 1, 2, 3, 4, 5",
    ),
    (
        lambda: _with(11, cancel={"on": "2026-11-17", "reason": "1", "source": "7"}),
        "cancel.source",
        "«Кто отменил направление»: недопустимое значение",
    ),
    (lambda: _with(11, cancel="отменено"), "cancel", "«Отмена направления»: ожидается объект JSON"),
    (lambda: _with(11, to_department="dep-wc"), "to_department", "Отделение dep-wc не относится к МО mo-1"),
    (lambda: _with(11, doctor="doc-404"), "doctor", "Медицинский работник doc-404 не найден"),
    (lambda: _with(11, to_mo=None), "to_mo", "Не указано обязательное поле «МО госпитализации»"),
    (lambda: _with(12, diagnosis="o24"), "diagnosis", "код МКБ-10 вида O24.4"),
    (lambda: _with(12, emergency="нет"), "emergency", "true или false"),
    (
        lambda: _with(12, refusal={"at": "2026-11-18T10:00:00", "source": "2"}),
        "refusal.reason",
        "Для отказа в госпитализации укажите «Причина отказа»",
    ),
    (
        lambda: _with(12, refusal={"at": "2026-11-18T08:00:00", "reason": "1", "source": "2"}),
        "refusal.at",
        "раньше даты поступления",
    ),
    (
        lambda: _with(12, refusal={"at": "18.11.2026", "reason": "1", "source": "2"}),
        "refusal.at",
        "ГГГГ-ММ-ДДTЧЧ",
    ),
    (lambda: _with(12, referral="ref-404"), "referral", "Направление ref-404 не найдено"),
    (
        lambda: _with(13, outcome="4"),
        "outcome",
        "«Исход движения»: недопустимое значение «4»; допустимы: 1, 2, 3",
    ),
    (lambda: _with(13, ended_at="2026-11-18T08:00:00"), "ended_at", "раньше даты поступления"),
    (lambda: _with(14, outcome="1"), "ended_at", "Указан исход движения, но не указана дата выбытия"),
    (
        lambda: _with(14, hospitalisation=None),
        "hospitalisation",
        "Не указано обязательное поле «Госпитализация»",
    ),
    (
        lambda: _with(14, department="dep-wc"),
        "department",
        "Отделение dep-wc не относится к МО госпитализации hosp-1",
    ),
    (
        lambda: _with(14, department="dep-adm"),
        "bed_profile",
        "Профиль коек bp-1 не относится к отделению dep-adm",
    ),
    (lambda: _with(15, visits_per_year=13), "visits_per_year", "допустимо от 1 до 12"),
    (lambda: _with(15, place="3"), "place", "«Место наблюдения»: недопустимое значение «3»; допустимы: 1, 2"),
    (lambda: _with(15, ended_on="2026-11-01"), "end_result", "Для прекращения наблюдения укажите причину"),
    (lambda: _with(15, end_result="1"), "ended_on", "не указана дата «ended_on»"),
    (lambda: _with(15, ended_on="2026-01-01", end_result="1"), "ended_on", "раньше даты начала"),
    (
        lambda: _with(15, end_result="9", ended_on="2026-11-01"),
        "end_result",
        "«Причина прекращения наблюдения»",
    ),
    (lambda: _with(15, began_on=None), "began_on", "Не указано обязательное поле «Дата начала наблюдения»"),
]


@pytest.mark.parametrize("make, field, fragment", BAD_RECORDS)
def test_each_bad_value_is_refused_with_its_field_and_a_russian_reason(client, token, make, field, fragment):
    records, index = make()

    refused = post(client, records)[index]

    assert (refused["status"], refused["field"]) == ("refused", field), refused
    assert fragment.lower() in refused["message"].lower(), refused["message"]


def test_rows_of_another_mo_or_patient_are_refused(client, token):
    records = batch() + [
        {"type": "patient", "id": "pat-2", "mo": "mo-2", "last_name": "Петрова", "first_name": "Анна"},
        {"type": "staff", "id": "doc-1", "mo": "mo-1", "last_name": "Кузнецова", "first_name": "Анна"},
        {
            "type": "department",
            "id": "dep-del",
            "mo": "mo-1",
            "name": "Родильное отделение",
            "kind": "maternity",
        },
    ]
    base = {
        "mo": "mo-2",
        "patient": "pat-1",
        "number": 7,
        "kind": "planned",
        "issued_on": "2026-11-16",
        "to_mo": "mo-1",
        "diagnosis": "O26.8",
    }
    records += [
        {"type": "referral", "id": "ref-2", **base, "doctor": "doc-1"},
        {"type": "referral", "id": "ref-3", **base, "branch": "br-1"},
        {"type": "referral", "id": "ref-4", **base, "bed_profile": "bp-1", "to_mo": "mo-2"},
        {"type": "referral", "id": "ref-5", **base, "to_department": "dep-del", "bed_profile": "bp-1"},
        {
            "type": "hospitalisation",
            "id": "hosp-2",
            "patient": "pat-2",
            "mo": "mo-1",
            "referral": "ref-1",
            "admitted_at": "2026-11-18T09:00:00",
        },
        {
            "type": "hospitalisation",
            "id": "hosp-3",
            "patient": "pat-1",
            "mo": "mo-2",
            "referral": "ref-1",
            "admitted_at": "2026-11-18T09:00:00",
        },
        {
            "type": "dispensary",
            "id": "dn-2",
            "patient": "pat-1",
            "mo": "mo-2",
            "doctor": "doc-1",
            "diagnosis": "O99.0",
            "began_on": "2026-06-10",
        },
    ]

    results = {r["id"]: r for r in post(client, records)}

    assert all(results[r["id"]]["status"] == "stored" for r in batch())
    expected = {
        "ref-2": ("doctor", "Медицинский работник doc-1 не относится к МО mo-2"),
        "ref-3": ("branch", "Подразделение br-1 не относится к МО mo-2"),
        "ref-4": ("bed_profile", "Профиль коек bp-1 не относится к МО mo-2"),
        "ref-5": ("bed_profile", "Профиль коек bp-1 не относится к отделению dep-del"),
        "hosp-2": ("referral", "Направление ref-1 относится к другому пациенту, не к pat-2"),
        "hosp-3": ("referral", "Направление ref-1 выдано в другую МО, не в mo-2"),
        "dn-2": ("doctor", "Медицинский работник doc-1 не относится к МО mo-2"),
    }
    assert {k: (results[k]["field"], results[k]["message"]) for k in expected} == expected
    assert count(HospitalReferral) == 1 and count(DispensaryObservation) == 1


def test_a_referral_of_a_refused_record_is_refused_too(client, token):
    records, _ = _with(7, profile=0)  # the bed profile is refused, so the referral to it is

    results = {r["id"]: r for r in post(client, records)}

    assert results["bp-1"]["status"] == "refused"
    assert (results["ref-1"]["field"], results["ref-1"]["message"]) == (
        "bed_profile",
        "Профиль коек bp-1 отклонён в этом пакете",
    )
    assert (results["hosp-1"]["field"], results["hosp-1"]["message"]) == (
        "referral",
        "Направление ref-1 отклонено в этом пакете",
    )


def test_openapi_documents_the_new_types(client):
    schemas = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]

    assert [
        schemas[ref["$ref"].rsplit("/", 1)[1]]["properties"]["type"]["enum"][0]
        for ref in schemas["Record"]["oneOf"]
    ] == [
        "mo",
        "insurer",
        "branch",
        "department",
        "bed_profile",
        "staff",
        "patient",
        "attachment",
        "pregnancy",
        "referral",
        "hospitalisation",
        "movement",
        "dispensary",
        "event",
        "visit_report",
        "plan",
        "plan_person",
    ]
    referral = schemas["ReferralRecord"]
    assert set(referral["required"]) == {
        "type",
        "id",
        "mo",
        "patient",
        "number",
        "kind",
        "issued_on",
        "to_mo",
        "diagnosis",
    }
    assert referral["properties"]["cancel"]["properties"]["reason"]["enum"] == ["0", "1", "2", "3", "4", "5"]
    assert referral["properties"]["diagnosis"]["example"] == "O24.4"
    assert referral["properties"]["to_department"]["x-refers-to"] == "department"
    hospitalisation = schemas["HospitalisationRecord"]["properties"]
    assert set(hospitalisation["refusal"]["properties"]) == {"at", "reason", "source", "text"}
    assert {"emergency", "card_number", "diagnosis", "diagnosis_text", "referral"} <= set(hospitalisation)
    assert {"branch", "phone", "closed_on"} <= set(schemas["DepartmentRecord"]["properties"])
    beds = schemas["BedProfileRecord"]["properties"]
    assert {"free", "free_adult", "free_child", "actual_on", "occupied"} <= set(beds)
    assert beds["beds"]["minimum"] == 0
    assert schemas["MovementRecord"]["properties"]["outcome"]["enum"] == ["1", "2", "3"]
    assert schemas["DispensaryRecord"]["properties"]["visits_per_year"]["maximum"] == 12
    assert schemas["BranchRecord"]["properties"]["code"]["pattern"] == r"^(\d{3})$"


# --- The demo region ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> dict[str, list[dict]]:
    by_type: dict[str, list[dict]] = {}
    for record in demo_records(today=TODAY):
        by_type.setdefault(record["type"], []).append(record)
    return by_type


def test_demo_structure_has_branches_and_bed_profiles(demo):
    departments = {d["id"]: d for d in demo["department"]}
    branches = {b["id"]: b for b in demo["branch"]}
    assert all(
        d["branch"] in branches and branches[d["branch"]]["mo"] == d["mo"] for d in departments.values()
    )
    per_mo = Counter(b["mo"] for b in branches.values())
    assert set(per_mo) == {m["id"] for m in demo["mo"]} and all(1 <= n <= 3 for n in per_mo.values())
    hospitals = {d["mo"] for d in departments.values() if d["kind"] in IN_PATIENT - {"day_hospital"}}
    assert hospitals <= {b["mo"] for b in branches.values() if b["kind"] == "hospital"}
    assert {b["kind"] for b in branches.values()} == {"hospital", "polyclinic"}
    for profile in demo["bed_profile"]:
        department = departments[profile["department"]]
        assert department["kind"] in IN_PATIENT, "a bed profile belongs to an in-patient department"
        assert profile["care_profile"] == 136
        assert profile["free"] == profile["beds"] - profile["beds_repair"] - profile["occupied"] >= 0
        assert profile["actual_on"] == TODAY.isoformat()
    assert {p["profile"] for p in demo["bed_profile"]} == {2, 3, 4}  # V020: births, pathology, gynaecology
    assert any(p["free"] == 0 for p in demo["bed_profile"]), "a department with no free beds"
    for department_id in {p["department"] for p in demo["bed_profile"]}:
        beds = sum(p["beds"] for p in demo["bed_profile"] if p["department"] == department_id)
        assert beds == departments[department_id]["beds"], "the profiles share the department's beds"


def test_demo_stays_have_referrals_movements_and_refusals(demo):
    departments = {d["id"]: d for d in demo["department"]}
    referrals = {r["id"]: r for r in demo["referral"]}
    stays = [h for h in demo["hospitalisation"] if not h["refusal"]]
    refusals = [h for h in demo["hospitalisation"] if h["refusal"]]
    assert all(h["card_number"] and h["diagnosis"] for h in demo["hospitalisation"])
    with_referral = [h for h in stays if h["referral"]]
    assert 0.4 * len(stays) < len(with_referral) < 0.9 * len(stays)
    for stay in with_referral:
        referral = referrals[stay["referral"]]
        assert (referral["patient"], referral["to_mo"]) == (stay["patient"], stay["mo"])
        assert referral["kind"] == ("emergency" if stay["emergency"] else "planned")
        assert referral["cancel"] is None
    assert {True, False} == {h["emergency"] for h in stays}
    kinds = Counter(
        (r["kind"], r["auto_created"], r["payment"], bool(r["cancel"])) for r in referrals.values()
    )
    assert any(auto for _k, auto, _p, _c in kinds), "a few auto-created"
    assert any(payment == "budget" for _k, _a, payment, _c in kinds), "a few paid by the budget"
    cancelled = [r for r in referrals.values() if r["cancel"]]
    assert 5 <= len(cancelled) < 0.2 * len(referrals)
    assert all(r["cancel"]["on"] >= r["issued_on"] for r in cancelled)

    movements: dict[str, list[dict]] = {}
    for movement in demo["movement"]:
        movements.setdefault(movement["hospitalisation"], []).append(movement)
    assert set(movements) == {h["id"] for h in stays}, "every stay moves, a refusal does not"
    for stay in stays:
        moves = movements[stay["id"]]
        assert 1 <= len(moves) <= 3
        assert moves[0]["began_at"] == stay["admitted_at"]
        if len(moves) > 1:
            assert departments[moves[0]["department"]]["kind"] == "admission"
        assert all(departments[m["department"]]["mo"] == stay["mo"] for m in moves)
        for before, after in zip(moves, moves[1:], strict=False):
            assert before["ended_at"] == after["began_at"] and before["outcome"]
        assert moves[-1]["ended_at"] == stay["discharged_at"]
        assert (moves[-1]["outcome"] is None) == (stay["discharged_at"] is None), (
            "outcomes for finished stays"
        )
    assert 5 <= len(refusals) < 0.1 * len(stays)
    assert all(departments[h["department"]]["kind"] == "admission" for h in refusals)


def test_demo_dispensary_observation(demo):
    patients = {p["id"]: p for p in demo["patient"]}
    observations = demo["dispensary"]
    assert 0.1 * len(patients) < len(observations) < 0.35 * len(patients)
    assert all(o["mo"] == patients[o["patient"]]["mo"] for o in observations)
    ended = [o for o in observations if o["ended_on"]]
    assert ended and len(ended) < len(observations)
    assert all(o["end_result"] and o["began_on"] <= o["ended_on"] < TODAY.isoformat() for o in ended)


def test_demo_data_command_stores_the_new_rows(app):
    result = app.test_cli_runner().invoke(args=["portal", "demo-data", "--patients", "60"])

    assert result.exit_code == 0 and "отклонено: 0" in result.output, result.output
    kinds = {row.id: row.kind for row in db.session.execute(db.select(Department.id, Department.kind))}
    profiles = db.session.scalars(db.select(BedProfile)).all()
    assert profiles and all(kinds[p.department_id] in IN_PATIENT for p in profiles)
    assert all(p.mo_id == p.department.mo_id for p in profiles)
    assert (
        db.session.scalar(
            db.select(db.func.count()).select_from(Department).where(Department.branch_id.is_(None))
        )
        == 0
    )
    assert count(HospitalMovement) >= count(Hospitalisation) - count_refusals()
    assert count(HospitalReferral) > 0 and count(DispensaryObservation) > 0
    assert all(m.mo_id == m.hospitalisation.mo_id for m in db.session.scalars(db.select(HospitalMovement)))
    recent = date.today() - timedelta(days=400)
    assert all(r.issued_on > recent for r in db.session.scalars(db.select(HospitalReferral)))


def count_refusals() -> int:
    return db.session.scalar(
        db.select(db.func.count()).select_from(Hospitalisation).where(Hospitalisation.refused_at.is_not(None))
    )
