"""The demo region (issue 2 item 6): what an operator gets from `flask portal demo-data` and what a
newcomer logs in with. The generator is checked at the real default size; the command on a
smaller region (the hidden --patients option), so that the suite stays fast on both databases."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from types import SimpleNamespace

import pytest

from portal.admin.models import Certificate
from portal.auth.models import ApiToken, User, hash_token
from portal.clinical.demo import MOS, demo_records
from portal.clinical.identifiers import enp_is_valid, snils_is_valid
from portal.clinical.models import (
    DEPARTMENT_KINDS,
    EVENT_KINDS,
    KAS_STATUSES,
    ClinicalEvent,
    Department,
    Hospitalisation,
    Mo,
    Patient,
    Pregnancy,
    Staff,
)
from portal.extensions import db
from tests.conftest import login

TODAY = date(2026, 11, 24)
SMALL = ["--patients", "60"]


@pytest.fixture(scope="module")
def default_region() -> SimpleNamespace:
    """The records of `flask portal demo-data` with no options (scale 1, default seed)."""
    records = list(demo_records(today=TODAY))
    by_type: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_type[record["type"]].append(record)
    return SimpleNamespace(records=records, **by_type)


def term_days(pregnancy: dict, on: date) -> int:
    registered = date.fromisoformat(pregnancy["registered_on"])
    return pregnancy["weeks_at_registration"] * 7 + pregnancy["days_at_registration"] + (on - registered).days


# --- The generated region at the default size -------------------------------------------------


def test_default_region_meets_the_issue_minimums(default_region):
    r = default_region
    assert len(r.mo) >= 5
    assert len(r.staff) >= 50
    assert {s["category"] for s in r.staff} == {"doctor", "nurse"}
    positions = {s["position"] for s in r.staff}
    assert {"врач-акушер-гинеколог", "врач ультразвуковой диагностики", "врач-терапевт", "акушерка"} <= positions
    assert len(r.patient) >= 1000
    assert {e["kind"] for e in r.event} == set(EVENT_KINDS)
    kinds = {d["kind"] for d in r.department}
    assert {"outpatient", "maternity", "round_the_clock", "day_hospital", "admission", "perinatal_centre"} <= kinds
    assert kinds <= set(DEPARTMENT_KINDS)
    names = {m["name"] for m in r.mo}
    assert any("перинатальный центр" in n for n in names)
    assert any("родильный дом" in n for n in names)
    assert any("центральная районная больница" in n for n in names)
    assert any("поликлиника" in n for n in names)


def test_pregnancies_at_every_stage(default_region):
    current = [p for p in default_region.pregnancy if not p["outcome"]]
    weeks = [term_days(p, TODAY) // 7 for p in current]
    assert any(w < 14 for w in weeks), "ранние сроки"
    assert any(14 <= w < 30 for w in weeks), "средние сроки"
    assert sum(w >= 30 for w in weeks) >= 100, "поздние сроки (от 30 недель, для Талона 1)"
    assert all(4 <= w <= 42 for w in weeks)
    assert any(p["multiple"] for p in current)
    assert any(p["multiple"] and p["outcome"] == "birth" for p in default_region.pregnancy)
    outcomes = Counter(p["outcome"] for p in default_region.pregnancy if p["outcome"])
    assert {"birth", "abortion", "miscarriage", "ectopic", "other"} <= set(outcomes)
    for p in default_region.pregnancy:
        if p["outcome"]:
            assert date.fromisoformat(p["outcome_on"]) >= date.fromisoformat(p["registered_on"])


def test_patients_are_russian_women_with_valid_identifiers(default_region):
    patients = default_region.patient
    assert all(p["sex"] == "F" for p in patients)
    assert all(re.fullmatch(r"[А-ЯЁ][а-яё]+", p["first_name"]) for p in patients)
    assert all(p["middle_name"].endswith(("вна", "ична")) for p in patients), "отчество в женской форме"
    male_endings = ("ов", "ев", "ёв", "ин", "ын", "ский", "цкий", "ой")
    assert not [p["last_name"] for p in patients if p["last_name"].endswith(male_endings)]
    assert len({(p["last_name"], p["first_name"], p["middle_name"]) for p in patients}) > 0.95 * len(patients)
    assert all(date(1980, 1, 1) <= date.fromisoformat(p["birth_date"]) <= date(2006, 12, 31) for p in patients)

    bad = [p for p in patients if p["snils"] and not snils_is_valid(p["snils"])]
    missing = [p for p in patients if not p["snils"]]
    assert len(bad) == 2 and len(missing) == 3, "ровно намеренно испорченные СНИЛС"
    snils = [re.sub(r"\D", "", p["snils"]) for p in patients if p["snils"]]
    assert len(set(snils)) == len(snils)
    assert all(enp_is_valid(p["enp"]) for p in patients)
    assert len({p["enp"] for p in patients}) == len(patients)
    assert sum(not p["registration_address"] for p in patients) == 3
    assert all(p["residence_address"].split(", ")[1] == "Вологодская обл." for p in patients)

    for p in patients:
        doc = p["document"]
        assert doc["kind"] == "14" and re.fullmatch(r"19\d{2}", doc["series"]) and re.fullmatch(r"\d{6}", doc["number"])
        issued = date.fromisoformat(doc["issued_on"])
        assert doc["series"][2:] == f"{issued.year % 100:02d}"  # the series carries the year of issue
        assert issued >= date.fromisoformat(p["birth_date"]) + timedelta(days=14 * 365)
        assert p["policy"]["kind"] in {"Э", "П", "В"} and p["policy"]["number"] and p["policy"]["insurer"]
    assert {p["social_status"] for p in patients} >= {"working", "unemployed", "student"}


def test_deliberately_incomplete_structure(default_region):
    assert sum(1 for m in default_region.mo if not m["oid"]) == 1
    assert sum(1 for s in default_region.staff if not s["snils"]) == 1
    assert all(snils_is_valid(s["snils"]) for s in default_region.staff if s["snils"])
    no_snils_doctor = next(s["id"] for s in default_region.staff if not s["snils"])
    assert any(e["doctor"] == no_snils_doctor for e in default_region.event), "его ошибки видны в реестрах"


def test_events_follow_the_pregnancy_term(default_region):
    r = default_region
    pregnancies = {p["id"]: p for p in r.pregnancy}
    stays = {h["id"]: h for h in r.hospitalisation}
    departments = {d["id"]: d["mo"] for d in r.department}
    staff = {s["id"]: s for s in r.staff}
    windows = {
        "ultrasound_1": (11, 13), "prenatal_screening_1": (11, 13), "ultrasound_2": (18, 21),
        "ultrasound_3": (28, 34),
    }
    for e in r.event:
        at = datetime.fromisoformat(e["at"])
        assert at.date() < TODAY, "ничего в будущем"
        assert departments[e["department"]] == e["mo"]
        assert staff[e["doctor"]]["category"] == "doctor"
        assert staff[e["doctor"]]["mo"] == e["mo"]
        p = pregnancies[e["pregnancy"]]
        assert at.date() >= date.fromisoformat(p["registered_on"]) - timedelta(days=7)
        weeks = term_days(p, at.date()) // 7
        if e["kind"] in windows:
            low, high = windows[e["kind"]]
            assert low <= weeks <= high, (e["id"], e["kind"], weeks)
        if e["kind"] in ("exam_primary", "exam_repeat", "consult_therapist"):
            assert e["care_conditions"] == "3"
            assert not p["outcome"] or at.date() <= date.fromisoformat(p["outcome_on"])
        if e["kind"] == "discharge":
            stay = stays[e["hospitalisation"]]
            assert stay["discharged_at"] == e["at"] and stay["mo"] == e["mo"]
        if e["kind"] == "pregnancy_outcome":
            assert at.date().isoformat() == p["outcome_on"]
            assert stays[e["hospitalisation"]]["outcome"] == p["outcome"]
        if e["kind"] == "kas_notice":
            assert e["data"]["kas_status"] in KAS_STATUSES
    assert {e["data"]["kas_status"] for e in r.event if e["kind"] == "kas_notice"} == set(KAS_STATUSES)

    discharges = [stays[e["hospitalisation"]] for e in r.event if e["kind"] == "discharge"]
    assert any(s["outcome"] for s in discharges), "выписка с исходом (СЭМД 17)"
    assert any(not s["outcome"] for s in discharges), "выписка без исхода (СЭМД 8)"
    assert any(h["discharged_at"] is None for h in r.hospitalisation), "кто-то сейчас в стационаре"
    payments = Counter(h["payment"] for h in r.hospitalisation)
    assert payments.most_common(1)[0][0] == "oms"
    recent = [e for e in r.event if datetime.fromisoformat(e["at"]).date() >= TODAY - timedelta(days=30)]
    assert len(recent) > 500, "события идут и в последний месяц"


def test_every_reference_points_to_an_earlier_record(default_region):
    """Records arrive in dependency order, so intake can store them chunk by chunk."""
    seen: set[tuple[str, str]] = set()
    targets = {"mo": "mo", "patient": "patient", "pregnancy": "pregnancy", "hospitalisation": "hospitalisation",
               "department": "department", "doctor": "staff", "event": "event"}
    for record in default_region.records:
        for name, target in targets.items():
            if record.get(name):
                assert (target, record[name]) in seen, (record["id"], name)
        assert (record["type"], record["id"]) not in seen, "идентификаторы уникальны"
        seen.add((record["type"], record["id"]))


def test_generation_is_deterministic_and_scales():
    first = list(demo_records(seed=7, today=TODAY, patients=100))
    again = list(demo_records(seed=7, today=TODAY, patients=100))
    other = list(demo_records(seed=8, today=TODAY, patients=100))
    assert first == again
    assert first != other
    one = Counter(r["type"] for r in demo_records(scale=1, today=TODAY))
    three = Counter(r["type"] for r in demo_records(scale=3, today=TODAY))
    assert three["patient"] == 3 * one["patient"]
    assert 2.5 * one["event"] < three["event"] < 3.5 * one["event"]
    assert three["mo"] == one["mo"]


# --- The command -------------------------------------------------------------------------------


def counts() -> dict[str, int]:
    db.session.expire_all()
    return {
        model.__name__: db.session.scalar(db.select(db.func.count()).select_from(model))
        for model in (Mo, Department, Staff, Patient, Pregnancy, Hospitalisation, ClinicalEvent, User, ApiToken)
    }


def run(app, *args: str):
    result = app.test_cli_runner().invoke(args=["portal", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_demo_data_command_loads_the_region_through_intake(app):
    result = run(app, "demo-data", *SMALL)
    stored = counts()
    assert stored["Mo"] == len(MOS) and stored["Patient"] == 60
    assert stored["Staff"] >= 50 and stored["ClinicalEvent"] > 600
    assert "Демо-регион загружен" in result.output and "пациентов: 60" in result.output
    assert "отклонено: 0" in result.output
    # Intake's own hook ran: a new МО starts with ВИМИС switched on.
    from portal.admin.services import is_enabled

    mo = db.session.scalar(db.select(Mo).where(Mo.source_id == "demo-mo-1"))
    assert is_enabled(mo.id, "vimis")
    kadui = db.session.scalar(db.select(Mo).where(Mo.short_name == "Кадуйская ЦРБ"))
    assert kadui.oid is None
    bad = db.session.scalars(db.select(Patient.snils).where(Patient.snils.is_not(None))).all()
    assert sum(not snils_is_valid(s) for s in bad) >= 1, "неверный СНИЛС сохранён, чтобы его ошибка была видна"


def test_running_twice_creates_no_duplicates(app):
    run(app, "demo-data", *SMALL)
    first = counts()
    result = run(app, "demo-data", *SMALL)
    assert counts() == first
    assert "Демо-пользователей создано: 0" in result.output


def test_once_does_nothing_when_the_region_is_there(app):
    run(app, "demo-data", "--once", *SMALL)
    first = counts()
    assert first["Patient"] == 60
    db.session.execute(db.delete(User).where(User.login == "mo3-admin"))
    db.session.commit()
    result = run(app, "demo-data", "--once", *SMALL)
    assert "Демо-данные уже загружены" in result.output
    after = counts()
    assert after["User"] == first["User"] - 1, "--once ничего не трогает, даже пропавшего пользователя"
    assert {k: v for k, v in after.items() if k != "User"} == {k: v for k, v in first.items() if k != "User"}


def test_demo_users_and_token(app):
    run(app, "demo-data", *SMALL)
    users = {u.login: u for u in db.session.scalars(db.select(User))}
    assert users["admin"].role == "central_admin" and users["admin"].mo.short_name == "ОПЦ"
    for mo in MOS:
        assert users[f"mo{mo.n}-admin"].role == "mo_admin"
        assert users[f"mo{mo.n}-ers"].role == "ers_operator"
        doctor = users[f"mo{mo.n}-doctor"]
        assert doctor.role == "doctor" and doctor.mo.short_name == mo.short_name
        assert doctor.staff is not None and doctor.staff.mo_id == doctor.mo_id
        assert doctor.staff.position == "врач-акушер-гинеколог" and doctor.full_name == doctor.staff.full_name
        operator = users[f"mo{mo.n}-ers"]  # the ЭРС operator is that doctor and has the doctor's ЭЦП
        assert operator.staff_id == doctor.staff_id and operator.staff.snils
        assert db.session.scalar(
            db.select(Certificate.id).where(Certificate.purpose == "doctor", Certificate.user_id == operator.id)
        )
    assert {u.role for u in users.values()} >= {"statistician", "ers_accountant"}
    for login_name in ("admin", "mo1-doctor", "mo2-stat", "mo2-ers-buh", "mo7-ers", "mo5-admin"):
        assert users[login_name].check_password(app.config["DEMO_PASSWORD"])
    assert not users["mo1-doctor"].check_password("demo")
    token = db.session.scalar(db.select(ApiToken).where(ApiToken.name == "Демо: исходная МИС"))
    assert token.token_hash == hash_token(app.config["DEMO_API_TOKEN"])


def test_demo_token_works_on_the_intake_api(app, client):
    run(app, "demo-data", *SMALL)
    response = client.post(
        "/api/v1/records",
        json={"records": [{"type": "patient", "id": "demo-pat-1", "mo": "demo-mo-1", "last_name": "Иванова",
                           "first_name": "Мария"}]},
        headers={"Authorization": f"Bearer {app.config['DEMO_API_TOKEN']}"},
    )
    assert response.status_code == 200
    assert response.get_json()["results"][0]["status"] == "stored"


def test_doctor_logs_in_and_sees_only_own_mo(app, client):
    run(app, "demo-data", *SMALL)
    doctor = db.session.scalar(db.select(User).where(User.login == "mo3-doctor"))
    login(client, doctor, app.config["DEMO_PASSWORD"])
    page = client.get("/").get_data(as_text=True)
    assert "Череповецкий РД" in page
    for mo in MOS:
        if mo.n != 3:
            assert mo.short_name not in page, mo.short_name


def test_central_admin_sees_every_mo(app, client):
    run(app, "demo-data", *SMALL)
    admin = db.session.scalar(db.select(User).where(User.login == "admin"))
    login(client, admin, app.config["DEMO_PASSWORD"])
    page = client.get("/").get_data(as_text=True)
    assert all(mo.short_name in page for mo in MOS)


def test_wrong_password_is_refused_for_demo_users(app, client):
    run(app, "demo-data", *SMALL)
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"login": "mo1-doctor", "password": "wrong", "csrf_token": token})
    assert response.status_code == 401


def test_demo_logins_prints_the_table_password_and_token(app):
    empty = run(app, "demo-logins")
    assert "Демо-пользователи не созданы" in empty.output
    run(app, "demo-data", *SMALL)
    output = run(app, "demo-logins").output
    lines = output.splitlines()
    assert re.search(r"admin\s+Администратор ЦОД\s+ОПЦ", output)
    assert re.search(r"mo3-doctor\s+Врач\s+Череповецкий РД", output)
    assert re.search(r"mo2-ers-buh\s+ЭРС-Бухгалтер\s+Вологодский РД", output)
    assert sum(1 for line in lines if re.match(r"\s+mo\d+-", line)) == 3 * len(MOS) + 2
    assert f"Пароль у всех демо-пользователей: {app.config['DEMO_PASSWORD']}" in output
    assert app.config["DEMO_API_TOKEN"] in output


def test_default_command_stores_the_whole_region(app):
    """`make run` runs exactly this: every record accepted, the issue's minimums in the database."""
    result = run(app, "demo-data")
    assert "отклонено: 0" in result.output
    stored = counts()
    assert stored["Mo"] >= 5 and stored["Staff"] >= 50 and stored["Patient"] >= 1000
    kinds = set(db.session.scalars(db.select(ClinicalEvent.kind).distinct()))
    assert kinds == set(EVENT_KINDS)
    assert db.session.scalar(db.select(db.func.count()).select_from(Pregnancy).where(Pregnancy.outcome.is_(None))) > 500
