"""The patient card of АИСТ_ЭРС over real HTTP to the ФСС stand-in (E-6 … E-12): «Запрос ЭРС» →
the number, «Посещение» and its cancellation, Талон 1/2/3 with the seed's rules, deleting the
number with a reason, completing personal data, «Обновить данные ЭРС», an outage."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest
import requests
from lxml import html

from portal.admin.models import AuditLog, Certificate
from portal.admin.services import ensure_demo_certificate, set_integration
from portal.auth.roles import ERS_ACCOUNTANT, ERS_OPERATOR
from portal.ers import jobs
from portal.ers import models as m
from portal.ers.channel import CHANNEL
from portal.exchange.delivery import poll_due
from portal.extensions import db
from portal.models_base import utcnow
from tests import factories
from tests.conftest import csrf_token, login
from tests.ers.test_client import contract, fss_cert, mo, sims  # noqa: F401  (stand-in fixtures)


def _at(pregnancy, weeks: int) -> datetime:
    """The moment of an exam at `weeks` of this pregnancy (registered at 8 weeks)."""
    day = pregnancy.registered_on + timedelta(days=(weeks - pregnancy.weeks_at_registration) * 7)
    return datetime.combine(day, time(10, 24))


@pytest.fixture
def woman(mo, fss_cert):  # noqa: F811
    """A patient 33 weeks pregnant with a primary exam, repeat exams at 20 and 31 weeks; an
    operator and an accountant with their signatures chosen; ФСС's certificate; exchange on."""
    from portal.admin.services import add_certificate

    ensure_demo_certificate("mo", "ГБУЗ «Родильный дом»: подпись МО", mo.id)
    add_certificate("fss", None, None, fss_cert, None)
    set_integration(mo, "ers", True)
    operator = factories.make_user(ERS_OPERATOR, mo)
    accountant = factories.make_user(ERS_ACCOUNTANT, mo)
    ensure_demo_certificate("accountant", "Бухгалтер роддома", mo.id, accountant.id)
    patient = factories.make_patient(mo, last_name="Васильева")
    today = datetime.now().date()
    pregnancy = factories.make_pregnancy(
        patient, registered_on=today - timedelta(days=(33 - 8) * 7), weeks_at_registration=8
    )
    exams = {
        "primary": factories.make_event(
            patient, "exam_primary", pregnancy_id=pregnancy.id, at=_at(pregnancy, 8),
            data={"term": "8 недель", "diagnosis": "Z34.0"},
        ),
        20: factories.make_event(patient, "exam_repeat", pregnancy_id=pregnancy.id, at=_at(pregnancy, 20)),
        31: factories.make_event(patient, "exam_repeat", pregnancy_id=pregnancy.id, at=_at(pregnancy, 31)),
    }  # fmt: skip
    db.session.commit()
    return patient, pregnancy, exams, operator, accountant


def _choose_signatures(client, patient, with_accountant: bool = False):
    certs = {
        c.purpose: c.id
        for c in db.session.scalars(db.select(Certificate).where(Certificate.mo_id == patient.mo_id))
    }
    token = csrf_token(client, f"/ers/patients/{patient.id}")
    data = {"csrf_token": token, "sign_mo": certs["mo"]}
    if with_accountant:
        data["sign_accountant"] = certs["accountant"]
    assert client.post("/ers/signatures", data=data).status_code in (200, 303)
    return token


def _press(client, patient, action: str, token: str, **form):
    data = {"csrf_token": token, "action": action, **form}
    return client.post(f"/ers/patients/{patient.id}/requests", data=data)


def _deliver():
    """The job sends what is queued, then ФСС's results are asked (the stand-in has no delay)."""
    jobs.exchange()
    poll_due(CHANNEL, now=utcnow() + timedelta(minutes=1))
    db.session.expire_all()


def _card(client, patient) -> html.HtmlElement:
    response = client.get(f"/ers/patients/{patient.id}")
    assert response.status_code == 200
    return html.fromstring(response.get_data(as_text=True))


def _text(node) -> str:
    return " ".join(node.text_content().split())


def _number(client, patient) -> str:
    return _text(_card(client, patient).get_element_by_id("ers-number"))


def _reported_visits(client) -> str:
    """«Посещения» in «Итого» of the report of what ФСС accepted."""
    report = html.fromstring(client.get("/ers/report", query_string={"source": "fss"}).get_data(as_text=True))
    headings = [_text(th) for th in report.xpath('//table[contains(@class, "ers-report")]/thead//th')]
    totals = [_text(th) for th in report.xpath('//table[contains(@class, "ers-report")]/tfoot//th')]
    return totals[headings.index("Посещения") - len(headings)]  # «Итого» spans the first cells


def test_card_shows_the_seed_sections_and_columns(client, woman):
    patient, pregnancy, exams, operator, _ = woman
    login(client, operator)
    page = _card(client, patient)
    summaries = [_text(s) for s in page.xpath("//details/summary")]
    for section in ("О пациенте", "Первичный осмотр", "Повторные осмотры", "Исход", "Реестр запросов"):
        assert section in summaries
    heads = [_text(th) for th in page.xpath('//table[@id="ers-repeat"]//th')]
    assert heads == ["Выбор", "Отправлено", "Дата", "Срок на момент осмотра", "Дополнительно", "Подробнее"]
    rows = page.xpath('//table[@id="ers-repeat"]/tbody/tr')
    assert [_text(r.xpath("td")[3]) for r in rows] == ["20 недель", "31 неделя"]
    assert [_text(r.xpath("td")[1]) for r in rows] == ["Нет", "Нет"]
    assert _text(page.get_element_by_id("ers-number")) == "Нет"
    buttons = [_text(b) for b in page.xpath('//form[@id="ers-actions"]//button')]
    assert buttons == [
        "ЗАПРОС ЭРС",
        "ПОСЕЩЕНИЕ",
        "ТАЛОН 1",
        "ТАЛОН 2",
        "ТАЛОН 3-1",
        "ТАЛОН 3-2",
        "✕ ПОСЕЩЕНИЕ",
    ]


def test_request_ers_then_visits_ticket1_and_deleting_the_number(client, woman, contract, sims):  # noqa: F811
    patient, pregnancy, exams, operator, accountant = woman
    login(client, operator)
    token = _choose_signatures(client, patient)

    # «Посещение» before a number: refused, nothing queued
    refused = _press(client, patient, "visit", token, exam=exams[20].id)
    assert refused.status_code == 400
    assert "нет номера ЭРС. Сначала нажмите «Запрос ЭРС»" in refused.get_data(as_text=True)

    response = _press(client, patient, "ers", token, exam=exams["primary"].id)
    assert response.status_code == 303
    page = _card(client, patient)
    assert "поставлен в очередь на отправку в ФСС" in _text(page)
    assert "Ожидает отправки в ФСС" in _text(page.get_element_by_id("ers-state"))
    assert page.get_element_by_id("ers-state").get("hx-trigger") == "every 3s"  # polls while it waits

    _deliver()
    number = _number(client, patient)
    assert number.isdigit() and len(number) == 10 and number.startswith("9")
    state = client.get(f"/ers/patients/{patient.id}/state").get_data(as_text=True)
    assert number in state and "hx-trigger" not in state  # answered: polling stops
    listed = client.get("/ers/").get_data(as_text=True)
    assert number in listed

    # visits: the chosen repeat exams go; sent again they are refused; cancelled, sent again
    assert _press(client, patient, "visit", token, exam=[exams[20].id, exams[31].id]).status_code == 303
    _deliver()
    assert _reported_visits(client) == "2"  # the report counts visits, not requests
    rows = _card(client, patient).xpath('//table[@id="ers-repeat"]/tbody/tr')
    assert [_text(r.xpath("td")[1]) for r in rows] == ["Да (посещение)", "Да (посещение)"]
    again = _press(client, patient, "visit", token, exam=exams[20].id)
    assert again.status_code == 400 and "уже принято ФСС" in again.get_data(as_text=True)
    assert _press(client, patient, "cancel_visit", token, exam=exams[20].id).status_code == 303
    _deliver()
    rows = _card(client, patient).xpath('//table[@id="ers-repeat"]/tbody/tr')
    assert _text(rows[0].xpath("td")[1]).startswith("Нет") or "Посещение: да" in _text(rows[0].xpath("td")[1])
    assert _text(rows[1].xpath("td")[1]) == "Да (посещение)"
    assert _press(client, patient, "visit", token, exam=exams[20].id).status_code == 303
    _deliver()
    held = requests.get(f"{sims}/fss/_requests", timeout=5).json()
    assert [r["method"] for r in held if r["method"] == "putVisit"] == ["putVisit"] * 3
    assert _reported_visits(client) == "3"  # 2 + 1 added; the cancellation adds none

    # Талон 1: the 20-week exam is refused with the seed's words; the accountant must sign
    early = _press(client, patient, "ticket1", token, exam=exams[20].id)
    assert early.status_code == 400
    assert "Талон 1 — только осмотры от 30-ти недель или от 28-ми недель при многоплодной беременности" in (
        early.get_data(as_text=True)
    )
    unsigned = _press(client, patient, "ticket1", token, exam=exams[31].id)
    assert "подписывает бухгалтер" in unsigned.get_data(as_text=True)
    token = _choose_signatures(client, patient, with_accountant=True)
    assert _press(client, patient, "ticket1", token, exam=exams[31].id).status_code == 303
    _deliver()
    assert "Талон 1: <strong>Да</strong>" in client.get(f"/ers/patients/{patient.id}/state").get_data(
        as_text=True
    )
    row = html.fromstring(client.get("/ers/").get_data(as_text=True)).xpath("//table//tbody/tr")[0]
    assert [_text(td) for td in row.xpath("td")[6:10]] == ["Да", "Нет", "Нет", "Нет"]

    # deleting the number needs a reason chosen and written
    short = client.post(f"/ers/patients/{patient.id}/disable", data={"csrf_token": token, "reason_code": "1"})
    assert short.status_code == 400 and "опишите причину" in short.get_data(as_text=True)
    gone = client.post(
        f"/ers/patients/{patient.id}/disable",
        data={"csrf_token": token, "reason_code": "1", "reason_text": "Номер запрошен по ошибке"},
    )
    assert gone.status_code == 303
    _deliver()
    assert _number(client, patient) == "Нет"
    disable = db.session.scalars(db.select(m.ErsRequest).where(m.ErsRequest.method == "disableErs")).one()
    assert "Номер запрошен по ошибке" in disable.request_xml and number in disable.request_xml


def test_ticket2_and_ticket3_from_the_outcome(client, woman, contract, sims):  # noqa: F811
    patient, pregnancy, exams, operator, accountant = woman
    outcome = factories.make_event(
        patient, "pregnancy_outcome", pregnancy_id=pregnancy.id, at=_at(pregnancy, 39),
        data={"outcome": "birth", "diagnosis": "O80", "children": [
            {"sex": "F", "weight_g": 3400, "length_cm": 52, "alive": True}]},
    )  # fmt: skip
    db.session.commit()
    login(client, operator)
    token = _choose_signatures(client, patient, with_accountant=True)
    _press(client, patient, "ers", token, exam=exams["primary"].id)
    _deliver()

    assert _press(client, patient, "ticket3-2", token, outcome=outcome.id, child_last_0="Васильева",
                  child_first_0="Анна").status_code == 400  # fmt: skip
    nameless = _press(client, patient, "ticket3-1", token, outcome=outcome.id, child_last_0="Васильева")
    assert "укажите фамилию и имя каждого ребёнка" in nameless.get_data(as_text=True)
    assert _press(client, patient, "ticket2", token, outcome=outcome.id).status_code == 303
    assert _press(client, patient, "ticket3-1", token, outcome=outcome.id, child_last_0="Васильева",
                  child_first_0="Анна").status_code == 303  # fmt: skip
    _deliver()
    state = client.get(f"/ers/patients/{patient.id}/state").get_data(as_text=True)
    assert "Талон 2: <strong>Да</strong>" in state and "Талон 3-1: <strong>Да</strong>" in state
    ticket2 = db.session.scalars(db.select(m.ErsRequest).where(m.ErsRequest.method == "putTicket2")).one()
    assert "<ns0:weight>3400</ns0:weight>" in ticket2.request_xml or "3400" in ticket2.request_xml


def test_missing_personal_data_are_named_and_completed_with_an_audit(client, woman):
    patient, pregnancy, exams, operator, _ = woman
    patient.document_issuer = None
    patient.snils = None
    db.session.commit()
    login(client, operator)
    page = _card(client, patient)
    assert _text(page.get_element_by_id("ers-missing")) == (
        "Для запросов в ФСС не заполнено: кем выдан документ, СНИЛС."
    )
    token = _choose_signatures(client, patient)
    refused = _press(client, patient, "ers", token, exam=exams["primary"].id)
    assert "не заполнено: кем выдан документ, СНИЛС" in refused.get_data(as_text=True)
    assert db.session.scalars(db.select(m.ErsRequest)).all() == []

    form = {i.get("name"): i.get("value") or "" for i in page.xpath('//form[@id="ers-person"]//input')}
    form.update(
        {
            o.getparent().get("name"): o.get("value")
            for o in page.xpath('//form[@id="ers-person"]//option[@selected]')
        }
    )
    bad = client.post(f"/ers/patients/{patient.id}/person", data={**form, "snils": "123"})
    assert bad.status_code == 400
    assert "СНИЛС: 11 цифр с верной контрольной суммой" in bad.get_data(as_text=True)
    snils = factories.valid_snils(4242)
    saved = client.post(
        f"/ers/patients/{patient.id}/person",
        data={**form, "csrf_token": token, "snils": snils, "document_issuer": "ОВД Центрального района"},
    )
    assert saved.status_code == 303
    db.session.expire_all()
    assert patient.snils == snils and patient.document_issuer == "ОВД Центрального района"
    entry = db.session.scalars(db.select(AuditLog).where(AuditLog.action == "ers.person")).one()
    assert entry.user_id == operator.id and "снилс" in entry.summary.lower()
    assert "ers-missing" not in client.get(f"/ers/patients/{patient.id}").get_data(as_text=True)


def test_fss_away_the_request_waits_and_goes_once_when_it_returns(client, woman, contract, sims):  # noqa: F811
    patient, pregnancy, exams, operator, _ = woman
    login(client, operator)
    token = _choose_signatures(client, patient)
    _press(client, patient, "ers", token, exam=exams["primary"].id)
    requests.post(f"{sims}/fss/_control", json={"mode": "down"}, timeout=5)
    jobs.exchange()
    db.session.expire_all()
    waiting = _text(_card(client, patient).get_element_by_id("ers-state"))
    assert "Ожидает отправки в ФСС" in waiting and "уйдёт, как только сервер ФСС будет доступен" in waiting
    assert requests.get(f"{sims}/fss/_requests", timeout=5).json() == []
    requests.post(f"{sims}/fss/_control", json={"mode": "normal"}, timeout=5)
    from portal.exchange.models import WorkItem

    item = db.session.scalars(db.select(WorkItem).where(WorkItem.channel == "ers")).one()
    item.next_attempt_at = utcnow()
    db.session.commit()
    _deliver()
    assert _number(client, patient).isdigit()
    held = requests.get(f"{sims}/fss/_requests", timeout=5).json()
    assert [r["method"] for r in held].count("createErs") == 1


def test_refresh_finds_a_certificate_issued_in_another_mo(client, woman, contract, sims):  # noqa: F811
    patient, pregnancy, exams, operator, _ = woman
    other = factories.make_mo(name="ГБУЗ «Другой роддом»", short_name="Другой роддом")
    twin = factories.make_patient(other, snils=patient.snils, last_name=patient.last_name)
    factories.make_pregnancy(twin)
    from portal.ers.models import ErsContract

    db.session.add(ErsContract(mo_id=other.id, number="99", signed_on=pregnancy.registered_on,
                               ends_on=pregnancy.registered_on + timedelta(days=900)))  # fmt: skip
    ensure_demo_certificate("mo", "Другой роддом: подпись МО", other.id)
    set_integration(other, "ers", True)
    db.session.commit()
    requests.post(f"{sims}/fss/_contracts", json={"ogrn": other.ogrn, "number": "99",
                  "date": pregnancy.registered_on.isoformat(),
                  "ends": (pregnancy.registered_on + timedelta(days=900)).isoformat()}, timeout=5)  # fmt: skip
    # the other МО gets her a certificate first
    other_user = factories.make_user(ERS_OPERATOR, other)
    db.session.commit()
    login(client, other_user)
    token = _choose_signatures_for(client, twin, other.id)
    exam = factories.make_event(twin, "exam_primary", pregnancy_id=twin.pregnancies[0].id)
    db.session.commit()
    assert _press(client, twin, "ers", token, exam=exam.id).status_code == 303
    _deliver()
    issued = _number(client, twin)

    login(client, operator)
    token = _choose_signatures(client, patient)
    started = client.post("/ers/refresh", data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert started.status_code == 200 and "получено ответов ФСС 0 из" in _text(
        html.fromstring(started.get_data(as_text=True))
    )
    _deliver()
    batch = db.session.scalars(db.select(m.ErsRequest.batch).where(m.ErsRequest.batch.is_not(None))).first()
    done = _text(html.fromstring(client.get(f"/ers/refresh/{batch}").get_data(as_text=True)))
    assert "Данные ЭРС обновлены" in done and f"{patient.full_name}: {issued} — выдан в" in done
    assert _number(client, patient) == issued


def test_an_operator_who_is_the_doctor_signs_as_the_doctor_and_the_mo(client, woman, contract, sims):  # noqa: F811
    """As in the demo: the ЭРС operator's account is linked to a doctor with a СНИЛС, so ФСС
    gets the doctor's signature (actor with the МО's ОГРН and the doctor's СНИЛС) beside the МО's."""
    patient, pregnancy, exams, operator, accountant = woman
    doctor = factories.make_staff(patient.mo)
    operator.staff_id = doctor.id
    ensure_demo_certificate("doctor", "Смирнова О. М.: ЭЦП врача", patient.mo_id, operator.id)
    db.session.commit()
    login(client, operator)
    mine = db.select(Certificate).where(Certificate.mo_id == patient.mo_id)
    certs = {c.purpose: c.id for c in db.session.scalars(mine)}
    token = csrf_token(client, f"/ers/patients/{patient.id}")
    chosen = {"csrf_token": token, "sign_doctor": certs["doctor"], "sign_mo": certs["mo"]}
    assert client.post("/ers/signatures", data=chosen).status_code in (200, 303)

    assert _press(client, patient, "ers", token, exam=exams["primary"].id).status_code == 303
    _deliver()
    assert _number(client, patient).isdigit()
    held = requests.get(f"{sims}/fss/_requests", timeout=5).json()
    created = [r for r in held if r["method"] == "createErs"]
    assert len(created) == 1 and created[0]["status"] == "PROCESSED"
    assert created[0]["signers"] == [
        f"http://eln.fss.ru/actor/doc/{patient.mo.ogrn}_{doctor.snils}",
        f"http://eln.fss.ru/actor/mo/{patient.mo.ogrn}",
    ]


def _choose_signatures_for(client, patient, mo_id):
    cert = db.session.scalars(
        db.select(Certificate).where(Certificate.purpose == "mo", Certificate.mo_id == mo_id)
    ).one()
    token = csrf_token(client, f"/ers/patients/{patient.id}")
    client.post("/ers/signatures", data={"csrf_token": token, "sign_mo": cert.id})
    return token


def test_roles_operator_requests_accountant_sends_talons_only(client, woman):
    patient, pregnancy, exams, operator, accountant = woman
    login(client, accountant)
    page = _card(client, patient)
    buttons = [_text(b) for b in page.xpath('//form[@id="ers-actions"]//button')]
    assert buttons == ["ТАЛОН 1", "ТАЛОН 2", "ТАЛОН 3-1", "ТАЛОН 3-2"]
    token = csrf_token(client, f"/ers/patients/{patient.id}")
    assert _press(client, patient, "ers", token, exam=exams["primary"].id).status_code == 403
    assert client.post(f"/ers/patients/{patient.id}/person", data={"csrf_token": token}).status_code == 403
    assert client.post("/ers/refresh", data={"csrf_token": token}).status_code == 403
    doctor = factories.make_user("doctor", patient.mo)
    db.session.commit()
    login(client, doctor)
    assert client.get(f"/ers/patients/{patient.id}").status_code == 403


def test_refresh_clears_a_number_fss_no_longer_holds(client, woman, contract, sims):  # noqa: F811
    patient, pregnancy, exams, operator, _ = woman
    db.session.add(
        m.ErsRequest(mo_id=patient.mo_id, patient_id=patient.id, pregnancy_id=pregnancy.id, method="createErs",
                     info="Запрос ЭРС", status=m.PROCESSED, ers_number="9000000001")
    )  # fmt: skip
    db.session.commit()
    login(client, operator)
    assert _number(client, patient) == "9000000001"
    token = _choose_signatures(client, patient)
    assert client.post("/ers/refresh", data={"csrf_token": token}).status_code == 303
    _deliver()
    batch = db.session.scalars(db.select(m.ErsRequest.batch).where(m.ErsRequest.batch.is_not(None))).one()
    done = _text(html.fromstring(client.get(f"/ers/refresh/{batch}").get_data(as_text=True)))
    assert f"Номера, которых больше нет в ФСС (1): {patient.full_name}" in done
    assert _number(client, patient) == "Нет"
    row = html.fromstring(client.get("/ers/").get_data(as_text=True)).xpath("//table//tbody/tr")[0]
    assert _text(row.xpath("td")[5]) == "Нет"
