"""The intake API as the source MIS sees it: POST /api/v1/records and /api/v1/openapi.json."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest

from portal.admin.services import is_enabled
from portal.auth.models import ApiToken, hash_token
from portal.clinical import hooks
from portal.clinical.intake import ingest_batch
from portal.clinical.models import (
    EVENT_KINDS,
    ClinicalEvent,
    Department,
    Hospitalisation,
    Mo,
    Patient,
    Pregnancy,
    Staff,
)
from portal.extensions import db
from portal.models_base import utcnow

TOKEN = "test-intake-token-0001"
URL = "/api/v1/records"


@pytest.fixture
def token(app):
    row = ApiToken(name="МИС региона", token_hash=hash_token(TOKEN), prefix=TOKEN[:8])
    db.session.add(row)
    db.session.commit()
    return row


def post(client, body, token: str | None = TOKEN, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)  # \uXXXX escapes, as many clients send
    return client.post(URL, data=data, headers=headers, content_type="application/json", **kw)


def contract_batch() -> list[dict]:
    """The example of SPEC «Intake contract», complete."""
    return [
        {"type": "mo", "id": "mo-1", "name": "ГБУЗ «Родильный дом № 1»", "short_name": "РД № 1",
         "registry_number": "350001", "f003_code": "350001", "oid": "1.2.643.5.1.13.13.12.2.35.1001",
         "ogrn": "1023500000001", "inn": "3525000001", "kpp": "352501001", "address": "г. Вологда, ул. Ленина, 1"},
        {"type": "department", "id": "dep-1", "mo": "mo-1", "name": "Р/д Обсервация", "kind": "maternity"},
        {"type": "staff", "id": "doc-1", "mo": "mo-1", "last_name": "Смирнова", "first_name": "Ольга",
         "middle_name": "Михайловна", "snils": "112-233-445 95", "position": "врач-акушер-гинеколог",
         "category": "doctor"},
        {"type": "patient", "id": "pat-1", "mo": "mo-1", "last_name": "Иванова", "first_name": "Мария",
         "middle_name": "Петровна", "sex": "F", "birth_date": "1994-05-06", "snils": "11223344595",
         "enp": "3500000000000019",
         "policy": {"kind": "Э", "series": None, "number": "3500000000000019", "insurer": "35001"},
         "document": {"kind": "14", "series": "1904", "number": "123456", "issued_on": "2014-06-01",
                      "issuer": "УМВД России по Вологодской области"},
         "registration_address": "г. Вологда, ул. Мира, 5", "residence_address": "г. Вологда, ул. Мира, 7",
         "phone": "+7 900 123-45-67", "social_status": "working"},
        {"type": "pregnancy", "id": "preg-1", "patient": "pat-1", "mo": "mo-1", "registered_on": "2026-05-01",
         "weeks_at_registration": 8, "multiple": False, "outcome": None, "outcome_on": None},
        {"type": "hospitalisation", "id": "hosp-1", "patient": "pat-1", "pregnancy": "preg-1", "mo": "mo-1",
         "department": "dep-1", "admitted_at": "2026-11-18T09:00:00", "discharged_at": None, "outcome": None,
         "payment": "oms"},
        {"type": "event", "id": "ev-1", "kind": "ultrasound_1", "patient": "pat-1", "pregnancy": "preg-1",
         "mo": "mo-1", "department": "dep-1", "doctor": "doc-1", "at": "2026-11-20T10:00:00",
         "care_conditions": "3", "data": {"fetuses": 1}},
        {"type": "event", "id": "ev-2", "kind": "discharge", "patient": "pat-1", "pregnancy": "preg-1",
         "hospitalisation": "hosp-1", "mo": "mo-1", "department": "dep-1", "doctor": "doc-1",
         "at": "2026-11-22T12:30:00", "care_conditions": "1"},
    ]


def count(model) -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(model))


def by_source(model, source_id: str):
    db.session.expire_all()
    return db.session.scalar(db.select(model).where(model.source_id == source_id))


def test_good_batch_is_stored(client, token):
    response = post(client, {"records": contract_batch()})

    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [(r["type"], r["id"], r["status"]) for r in results] == [
        (r["type"], r["id"], "stored") for r in contract_batch()
    ]
    mo = by_source(Mo, "mo-1")
    assert (mo.short_name, mo.registry_number, mo.oid, mo.kpp) == ("РД № 1", "350001", "1.2.643.5.1.13.13.12.2.35.1001", "352501001")
    assert by_source(Department, "dep-1").mo_id == mo.id
    assert by_source(Staff, "doc-1").snils == "11223344595"  # "112-233-445 95" kept as 11 digits
    patient = by_source(Patient, "pat-1")
    assert (patient.policy_kind, patient.policy_series, patient.policy_number, patient.insurer_code) == (
        "Э", None, "3500000000000019", "35001")
    assert (patient.document_kind, patient.document_series, patient.document_number, patient.document_issued_on,
            patient.document_issuer) == ("14", "1904", "123456", date(2014, 6, 1), "УМВД России по Вологодской области")
    assert (patient.birth_date, patient.social_status, patient.residence_address) == (
        date(1994, 5, 6), "working", "г. Вологда, ул. Мира, 7")
    pregnancy = by_source(Pregnancy, "preg-1")
    assert (pregnancy.patient_id, pregnancy.weeks_at_registration, pregnancy.days_at_registration) == (patient.id, 8, 0)
    hosp = by_source(Hospitalisation, "hosp-1")
    assert (hosp.admitted_at, hosp.department.source_id, hosp.pregnancy_id) == (
        datetime(2026, 11, 18, 9, 0), "dep-1", pregnancy.id)
    event = by_source(ClinicalEvent, "ev-1")
    assert (event.kind, event.at, event.doctor.source_id, event.care_conditions, event.data) == (
        "ultrasound_1", datetime(2026, 11, 20, 10, 0), "doc-1", "3", {"fetuses": 1})
    assert by_source(ClinicalEvent, "ev-2").hospitalisation_id == hosp.id
    assert "Иванова" not in response.get_data(as_text=True)  # the answer carries ids, not personal data


def test_references_within_the_batch_in_any_order(client, token):
    response = post(client, {"records": list(reversed(contract_batch()))})

    assert {r["status"] for r in response.get_json()["results"]} == {"stored"}
    event = by_source(ClinicalEvent, "ev-1")
    assert (event.patient.source_id, event.pregnancy.source_id, event.mo.source_id) == ("pat-1", "preg-1", "mo-1")


def test_references_to_records_stored_before(client, token):
    batch = contract_batch()
    post(client, {"records": batch[:4]})
    response = post(client, {"records": batch[4:]})

    assert {r["status"] for r in response.get_json()["results"]} == {"stored"}
    assert by_source(ClinicalEvent, "ev-1").patient.source_id == "pat-1"


def test_partly_bad_batch_stores_the_valid_records_and_names_the_bad_field(client, token):
    batch = contract_batch()
    batch.append({"type": "patient", "id": "pat-2", "mo": "mo-1", "last_name": "Петрова", "first_name": "Анна",
                  "snils": "112-233-44"})
    batch.append({"type": "event", "id": "ev-9", "kind": "exam_primary", "patient": "pat-9", "mo": "mo-1",
                  "at": "2026-11-20T10:00:00"})
    batch.append({"type": "event", "id": "ev-10", "kind": "exam_primary", "patient": "pat-2", "mo": "mo-1",
                  "at": "2026-11-20T10:00:00"})

    response = post(client, {"records": batch})

    assert response.status_code == 200
    results = response.get_json()["results"]
    assert len(results) == len(batch)
    assert all(r["status"] == "stored" for r in results[: len(contract_batch())])
    bad_patient, unknown_ref, refused_ref = results[-3:]
    assert bad_patient == {"type": "patient", "id": "pat-2", "status": "refused", "field": "snils",
                           "message": bad_patient["message"]}
    assert "СНИЛС" in bad_patient["message"] and "11 цифр" in bad_patient["message"]
    assert (unknown_ref["field"], unknown_ref["message"]) == ("patient", "Пациент pat-9 не найден")
    assert (refused_ref["field"], refused_ref["message"]) == ("patient", "Пациент pat-2 отклонён в этом пакете")
    assert by_source(Patient, "pat-2") is None
    assert by_source(ClinicalEvent, "ev-9") is None and by_source(ClinicalEvent, "ev-10") is None
    assert count(ClinicalEvent) == 2 and count(Patient) == 1


def test_snils_with_a_wrong_checksum_is_stored_for_the_downstream_checks(client, token):
    batch = contract_batch()
    batch[3]["snils"] = "112-233-445 96"  # right format, wrong check number

    results = post(client, {"records": batch}).get_json()["results"]

    assert results[3]["status"] == "stored"
    assert by_source(Patient, "pat-1").snils == "11223344596"


def _with(index: int, **changes):
    batch = contract_batch()
    batch[index].update(changes)
    return batch, index


BAD_RECORDS = [
    # (change to the contract batch, refused field, fragment of the Russian message)
    (lambda: _with(0, registry_number="35001"), "registry_number", "6 цифр"),
    (lambda: _with(0, oid="1.2.643.x"), "oid", "OID"),
    (lambda: _with(0, inn="35250000011"), "inn", "10 или 12 цифр"),
    (lambda: _with(0, kpp="35250100"), "kpp", "9 цифр"),
    (lambda: _with(0, name=""), "name", "Не указано обязательное поле «Полное наименование»"),
    (lambda: _with(0, name="РД\x00 № 1"), "name", "недопустимые символы"),  # PostgreSQL cannot store NUL
    (lambda: _with(3, last_name="Иван\ud800ова"), "last_name", "недопустимые символы"),  # not encodable
    (lambda: _with(1, kind="ward"), "kind", "недопустимое значение «ward»"),
    (lambda: _with(1, mo="mo-404"), "mo", "МО mo-404 не найдена"),
    (lambda: _with(2, category="surgeon"), "category", "допустимы: doctor, nurse"),
    (lambda: _with(3, sex="Ж"), "sex", "допустимы: F, M"),
    (lambda: _with(3, birth_date="06.05.1994"), "birth_date", "Дата должна быть в формате ГГГГ-ММ-ДД".lower()),
    (lambda: _with(3, birth_date="1994-02-30"), "birth_date", "несуществующая дата"),
    (lambda: _with(3, enp="350000000000001"), "enp", "16 цифр"),
    (lambda: _with(3, last_name=None), "last_name", "Не указано обязательное поле «Фамилия»"),
    (lambda: _with(3, policy={"kind": "Z", "number": "1"}), "policy.kind", "Тип полиса"),
    (lambda: _with(3, document={"kind": "14", "issued_on": "2014/06/01"}), "document.issued_on", "ГГГГ-ММ-ДД"),
    (lambda: _with(3, social_status="rich"), "social_status", "недопустимое значение"),
    (lambda: _with(4, weeks_at_registration="8"), "weeks_at_registration", "целое число"),
    (lambda: _with(4, weeks_at_registration=60), "weeks_at_registration", "от 0 до 45"),
    (lambda: _with(4, multiple="нет"), "multiple", "true или false"),
    (lambda: _with(4, outcome="birth"), "outcome_on", "дату исхода"),
    (lambda: _with(4, outcome="twins", outcome_on="2026-12-01"), "outcome", "недопустимое значение"),
    (lambda: _with(5, admitted_at="18.11.2026 09:00"), "admitted_at", "ГГГГ-ММ-ДДTЧЧ:ММ:СС"),
    (lambda: _with(5, payment="cash"), "payment", "допустимы: oms"),
    (lambda: _with(5, discharged_at="2026-11-01T00:00:00"), "discharged_at", "раньше даты поступления"),
    (lambda: _with(6, kind="ultrasound_4"), "kind", "Вид события"),
    (lambda: _with(6, care_conditions="9"), "care_conditions", "Условия оказания"),
    (lambda: _with(6, at=None), "at", "Не указано обязательное поле"),
    (lambda: _with(6, data=[1, 2]), "data", "объект JSON"),
    (lambda: _with(6, doctor="doc-404"), "doctor", "Медицинский работник doc-404 не найден"),
    (lambda: _with(6, kind="kas_notice", data={}), "data.kas_status", "Статус случая в регистре КАС"),
    (lambda: _with(6, kind="kas_notice", data={"kas_status": "forget"}), "data.kas_status", "недопустимое значение"),
    (lambda: _with(6, kind="kas_notice", data={"kas_status": ["put_on_control"]}), "data.kas_status", "недопустимое"),
    (lambda: _with(7, hospitalisation=None), "hospitalisation", "Для выписки укажите госпитализацию"),
    (lambda: _with(7, id=None), "id", "Не указано обязательное поле «Идентификатор записи»"),
    (lambda: _with(7, type="visit"), "type", "Неизвестный тип записи «visit»"),
    (lambda: _with(7, type="visit\ud800"), "type", "Неизвестный тип записи «visit\ufffd»"),
]


@pytest.mark.parametrize("make, field, fragment", BAD_RECORDS)
def test_each_bad_value_is_refused_with_its_field_and_a_russian_reason(client, token, make, field, fragment):
    batch, index = make()

    results = post(client, {"records": batch}).get_json()["results"]

    refused = results[index]
    assert refused["status"] == "refused"
    assert refused["field"] == field
    assert fragment.lower() in refused["message"].lower(), refused["message"]


def test_department_of_another_mo_and_pregnancy_of_another_patient_are_refused(client, token):
    batch = contract_batch()
    batch += [
        {"type": "mo", "id": "mo-2", "name": "ГБУЗ «ЦРБ»"},
        {"type": "patient", "id": "pat-2", "mo": "mo-2", "last_name": "Петрова", "first_name": "Анна"},
        {"type": "event", "id": "ev-3", "kind": "exam_repeat", "patient": "pat-1", "mo": "mo-2",
         "department": "dep-1", "at": "2026-11-21T10:00:00"},
        {"type": "event", "id": "ev-4", "kind": "exam_repeat", "patient": "pat-2", "pregnancy": "preg-1",
         "mo": "mo-2", "at": "2026-11-21T10:00:00"},
    ]

    results = post(client, {"records": batch}).get_json()["results"]

    assert (results[-2]["field"], results[-2]["message"]) == ("department", "Отделение dep-1 не относится к МО mo-2")
    assert results[-1]["field"] == "pregnancy" and "другому пациенту" in results[-1]["message"]


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"records": [', "не является корректным JSON"),
        (b"", "Пустое тело запроса"),
        (b"[]", "Ожидается объект JSON"),
        (b'{"items": []}', "«records» должно быть списком"),
        (b'{"records": {"type": "mo"}}', "«records» должно быть списком"),
        ('{"records": []}'.encode("utf-16"), "не в кодировке UTF-8"),
        (b'{"records": [{"type": "mo", "id": "mo-1", "name": "\xcf\xf0"}]}', "не в кодировке UTF-8"),
    ],
)
def test_unreadable_batch_is_refused_whole_with_400_and_nothing_stored(client, token, body, message):
    response = post(client, body)

    assert response.status_code == 400
    assert response.is_json
    assert message in response.get_json()["message"]
    assert count(Mo) == 0


def test_malformed_json_after_good_records_stores_nothing(client, token):
    text = json.dumps({"records": contract_batch()}, ensure_ascii=False)[:-2]  # cut off the end

    response = post(client, text)

    assert response.status_code == 400
    assert response.get_json()["error"] == "Некорректный запрос"
    assert count(Mo) == 0 and count(ClinicalEvent) == 0


def test_batch_over_the_record_limit_is_refused_whole_with_413(app, client, token):
    app.config["INTAKE_MAX_RECORDS"] = 5
    batch = contract_batch()  # 8 records, all valid

    response = post(client, {"records": batch})

    assert response.status_code == 413
    assert response.get_json()["message"] == (
        "В пакете 8 записей, допускается не более 5. Разделите пакет на части."
    )
    assert count(Mo) == 0 and count(Patient) == 0


def test_body_over_the_size_limit_is_refused_whole_with_a_russian_413(app, client, token):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    body = json.dumps({"records": contract_batch()}, ensure_ascii=False).encode()
    assert len(body) > 1000

    response = post(client, body)

    assert response.status_code == 413
    assert response.get_json()["error"] == "Слишком большой запрос"
    assert "1000 байт" in response.get_json()["message"]
    assert count(Mo) == 0


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "Не передан токен доступа"),
        ("Bearer ", "Не передан токен доступа"),
        ("Basic dXNlcjpwYXNz", "Не передан токен доступа"),
        ("Bearer wrong-token", "Токен доступа недействителен или отозван"),
    ],
)
def test_missing_or_bad_token_gets_401_and_nothing_stored(client, token, header, message):
    headers = {"Authorization": header} if header is not None else {}

    response = client.post(URL, json={"records": contract_batch()}, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json() == {"error": "Требуется авторизация", "message": response.get_json()["message"]}
    assert message in response.get_json()["message"]
    assert count(Mo) == 0


def test_revoked_token_gets_401(client, token):
    token.revoked_at = utcnow()
    db.session.commit()

    response = post(client, {"records": contract_batch()})

    assert response.status_code == 401
    assert count(Mo) == 0


def test_token_use_is_recorded(client, token):
    assert token.last_used_at is None

    post(client, {"records": []})

    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).last_used_at is not None


def test_repeat_of_a_batch_updates_and_never_duplicates(client, token):
    post(client, {"records": contract_batch()})
    batch = contract_batch()
    batch[3]["phone"] = "+7 911 000-00-00"
    batch[3]["policy"] = None  # the record is sent whole: no policy now
    batch[6]["data"] = {"fetuses": 2}

    response = post(client, {"records": batch})

    assert {r["status"] for r in response.get_json()["results"]} == {"stored"}
    assert [count(m) for m in (Mo, Department, Staff, Patient, Pregnancy, Hospitalisation, ClinicalEvent)] == [
        1, 1, 1, 1, 1, 1, 2]
    patient = by_source(Patient, "pat-1")
    assert (patient.phone, patient.policy_kind, patient.policy_number) == ("+7 911 000-00-00", None, None)
    assert by_source(ClinicalEvent, "ev-1").data == {"fetuses": 2}


def test_the_same_id_twice_in_one_batch_keeps_the_last_valid_record(client, token):
    batch = contract_batch()
    batch.append({**batch[3], "phone": "+7 999 999-99-99"})
    batch.append({**batch[3], "birth_date": "06.05.1994"})  # refused: does not override

    results = post(client, {"records": batch}).get_json()["results"]

    assert [r["status"] for r in results[-2:]] == ["stored", "refused"]
    assert count(Patient) == 1
    assert by_source(Patient, "pat-1").phone == "+7 999 999-99-99"


def test_a_new_mo_gets_vimis_switched_on(client, token):
    post(client, {"records": contract_batch()[:1]})

    mo = by_source(Mo, "mo-1")
    assert is_enabled(mo.id, "vimis")
    assert not is_enabled(mo.id, "ers")  # only the integrations that are on by default


def test_an_mo_sent_again_keeps_its_switches(client, token):
    from portal.admin.services import set_integration

    post(client, {"records": contract_batch()[:1]})
    mo = by_source(Mo, "mo-1")
    set_integration(mo, "vimis", False, "переходный период")
    db.session.commit()

    post(client, {"records": contract_batch()[:1]})

    assert not is_enabled(mo.id, "vimis")


def test_hooks_see_created_then_unchanged_then_changed(app, client, token, monkeypatch):
    """What a ВИМИС trigger relies on: one `created` per event, a plain repeat changes nothing."""
    seen: list[list[tuple]] = []
    monkeypatch.setitem(hooks._handlers, "event", [lambda rows: seen.append(
        sorted((r.source_id, r.created, r.changed) for r in rows))])

    post(client, {"records": contract_batch()})
    post(client, {"records": contract_batch()})
    changed = contract_batch()
    changed[6]["care_conditions"] = "2"
    post(client, {"records": changed})

    assert seen == [
        [("ev-1", True, True), ("ev-2", True, True)],
        [("ev-1", False, False), ("ev-2", False, False)],
        [("ev-1", False, True), ("ev-2", False, False)],
    ]


def test_a_failing_hook_stores_nothing_of_the_batch(app, token, monkeypatch):
    def broken(rows):
        raise RuntimeError("trigger failed")

    monkeypatch.setitem(hooks._handlers, "event", [broken])
    client = app.test_client()
    app.config["PROPAGATE_EXCEPTIONS"] = False

    response = post(client, {"records": contract_batch()})

    assert response.status_code == 500
    db.session.rollback()
    assert count(Mo) == 0


def test_ingest_batch_flushes_but_leaves_the_commit_to_the_caller(app):
    result = ingest_batch(contract_batch() + [{"type": "patient", "id": "pat-2"}])

    assert (result.stored, result.refused, result.created) == (8, 1, 8)
    assert result.results[-1]["field"] == "mo"
    assert count(Patient) == 1  # visible inside the transaction
    db.session.rollback()
    assert count(Patient) == 0


def test_openapi_document_describes_every_record_type_and_event_kind(client):
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    document = json.loads(response.get_data(as_text=True))
    assert document["openapi"].startswith("3.0")
    schemas = document["components"]["schemas"]
    record_types = {schemas[ref["$ref"].rsplit("/", 1)[1]]["properties"]["type"]["enum"][0]
                    for ref in schemas["Record"]["oneOf"]}
    assert record_types == {"mo", "insurer", "branch", "department", "bed_profile", "staff", "patient",
                            "attachment", "pregnancy", "referral", "hospitalisation", "movement", "dispensary",
                            "event", "visit_report", "plan", "plan_person"}
    assert set(schemas["EventRecord"]["properties"]["kind"]["enum"]) == set(EVENT_KINDS)
    assert "kas_status" in schemas["EventRecord"]["properties"]["data"]["description"]
    assert schemas["PatientRecord"]["properties"]["policy"]["properties"]["kind"]["enum"] == ["С", "В", "П", "Э", "К"]
    assert schemas["PatientRecord"]["properties"]["sex"]["enum"] == ["F", "M"]
    operation = document["paths"]["/records"]["post"]
    assert set(operation["responses"]) == {"200", "400", "401", "413"}
    assert operation["security"] == [{"bearerAuth": []}]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"]}

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(document):  # every reference points at a schema that exists
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
