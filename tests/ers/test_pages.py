"""The АИСТ_ЭРС start page as its users see it (SPEC E-1, E-3, E-4): the contract form of an МО
without a contract, the contract at the top (red when expired), the signature choice, and the
list of pregnant patients with search, sort, rows per page, МО scoping and roles."""

from __future__ import annotations

from datetime import date, timedelta

from lxml import html

from portal.admin.models import AuditLog, Certificate
from portal.clinical.models import Pregnancy
from portal.ers.models import PROCESSED, QUEUED, ErsContract, ErsRequest
from portal.ers.rules import contract_refusal
from portal.extensions import db
from tests import factories
from tests.conftest import csrf_token, login

TODAY = date.today()
HX = {"HX-Request": "true", "HX-Target": "ers-results"}


def add_contract(mo, *, number="14", signed_on=None, ends_on=None) -> ErsContract:
    contract = ErsContract(
        mo_id=mo.id,
        number=number,
        signed_on=signed_on or TODAY - timedelta(days=300),
        ends_on=ends_on or TODAY + timedelta(days=400),
    )
    db.session.add(contract)
    db.session.commit()
    return contract


def add_certificate(
    purpose: str, subject: str, *, mo=None, user=None, days_left=100, started=10
) -> Certificate:
    cert = Certificate(
        purpose=purpose,
        mo_id=mo.id if mo else None,
        user_id=user.id if user else None,
        subject=subject,
        serial=subject,
        valid_from=TODAY - timedelta(days=started),
        valid_to=TODAY + timedelta(days=days_left),
        cert_pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----",
    )
    db.session.add(cert)
    db.session.commit()
    return cert


def add_ers(patient, number: str | None, status: str = PROCESSED, method: str = "createErs") -> ErsRequest:
    pregnancy_id = db.session.scalar(
        db.select(db.func.max(Pregnancy.id)).where(Pregnancy.patient_id == patient.id)
    )
    request = ErsRequest(
        mo_id=patient.mo_id,
        patient_id=patient.id,
        pregnancy_id=pregnancy_id,
        method=method,
        info="Запрос ЭРС",
        status=status,
        ers_number=number,
    )
    db.session.add(request)
    db.session.commit()
    return request


def pregnant(mo, last_name: str, **kw):
    """A patient of the МО with a current pregnancy (registered at 8 weeks, 100 days ago)."""
    pregnancy_kw = {k: kw.pop(k) for k in list(kw) if k in ("outcome", "outcome_on", "registered_on")}
    patient = factories.make_patient(mo, last_name=last_name, **kw)
    factories.make_pregnancy(patient, **pregnancy_kw)
    db.session.commit()
    return patient


def table(page: str) -> list[list[str]]:
    """The patient list as text, row by row (the empty-list row included)."""
    tree = html.fromstring(page)
    return [
        [" ".join(cell.text_content().split()) for cell in row.xpath("./td")]
        for row in tree.xpath('//table[contains(@class, "ers-patients")]/tbody/tr')
    ]


def surnames(page: str) -> list[str]:
    return [row[1].split()[0] for row in table(page) if len(row) > 1]


def text(page: str) -> str:
    return " ".join(html.fromstring(page).text_content().split())


# --- the contract (E-3) --------------------------------------------------------------------------


def test_without_a_contract_the_page_asks_for_it(client, region):
    login(client, region.a.users["ers_operator"])  # may not enter it: told whom to ask
    shown = text(client.get("/ers/").get_data(as_text=True))
    assert "Договор МО с ФСС не введён" in shown and "Введите номер договора с ФСС:" not in shown

    login(client, region.a.users["ers_accountant"])
    response = client.get("/ers/")
    assert response.status_code == 200
    shown = text(response.get_data(as_text=True))
    for words in (
        "Введите номер договора с ФСС:",
        "Номер договора",
        "Дата договора",
        "Дата окончания договора",
    ):
        assert words in shown
    assert "отправить" in shown and "ОТМЕНА" in shown
    assert table(response.get_data(as_text=True)) == []  # no patient list before the contract


def test_contract_form_names_each_wrong_field(client, region):
    login(client, region.a.users["ers_accountant"])
    token = csrf_token(client, "/ers/")
    response = client.post(
        "/ers/contract", data={"csrf_token": token, "number": " ", "signed_on": "", "ends_on": "32.13.2026"}
    )
    assert response.status_code == 400
    page = html.fromstring(response.get_data(as_text=True))
    errors = {e.get("id"): e.text_content() for e in page.xpath('//*[@class="field-error"]')}
    assert errors == {
        "error-number": "Укажите номер договора",
        "error-signed_on": "Укажите дату договора в формате ДД.ММ.ГГГГ",
        "error-ends_on": "Укажите дату окончания договора в формате ДД.ММ.ГГГГ",
    }
    assert page.xpath('//input[@name="ends_on"]/@value') == ["32.13.2026"]  # what was typed stays

    response = client.post(
        "/ers/contract",
        data={"csrf_token": token, "number": "14", "signed_on": "01.06.2026", "ends_on": "31.05.2026"},
    )
    assert response.status_code == 400
    assert "Дата окончания договора раньше даты договора" in text(response.get_data(as_text=True))
    assert db.session.scalar(db.select(db.func.count()).select_from(ErsContract)) == 0


def test_contract_is_saved_audited_and_shown(client, region):
    user = region.a.users["mo_admin"]
    login(client, user)
    token = csrf_token(client, "/ers/")
    response = client.post(
        "/ers/contract",
        data={"csrf_token": token, "number": "14", "signed_on": "01.01.2026", "ends_on": "2099-12-30"},
    )
    assert response.status_code == 303 and response.headers["Location"].endswith("/ers/")
    contract = db.session.scalars(db.select(ErsContract)).one()
    assert (contract.mo_id, contract.number, contract.signed_on, contract.ends_on) == (
        region.a.mo.id,
        "14",
        date(2026, 1, 1),
        date(2099, 12, 30),
    )
    entry = db.session.scalars(db.select(AuditLog).where(AuditLog.action == "ers.contract")).one()
    assert entry.user_id == user.id and entry.mo_id == region.a.mo.id and "№ 14" in entry.summary

    shown = text(client.get("/ers/").get_data(as_text=True))
    assert "Договор с ФСС № 14 от 01.01.2026 сохранён." in shown
    assert "Договор № 14 от 01.01.2026 до 30.12.2099" in shown
    assert "Введите номер договора с ФСС:" in shown  # inside «Ввести новый договор», closed
    assert region.a.patients[0].last_name in shown


def test_expired_contract_is_shown_in_red_with_the_refusal(client, region):
    contract = add_contract(region.a.mo, number="7", signed_on=date(2020, 1, 1), ends_on=date(2021, 12, 30))
    login(client, region.a.users["ers_operator"])
    page = html.fromstring(client.get("/ers/").get_data(as_text=True))
    alert = page.xpath('//div[contains(@class, "flash-error")]')
    assert [" ".join(a.text_content().split()) for a in alert] == [contract_refusal(contract)]
    assert "истёк 30.12.2021" in alert[0].text_content()
    assert "Договор № 7 от 01.01.2020 до 30.12.2021" in text(client.get("/ers/").get_data(as_text=True))


# --- signatures (E-1) ----------------------------------------------------------------------------


def test_signature_selects_offer_only_valid_certificates_of_the_user_and_the_mo(client, region):
    add_contract(region.a.mo)
    operator = region.a.users["ers_operator"]
    accountant = region.a.users["ers_accountant"]
    own = add_certificate("doctor", "CN=Свой врач", user=operator, days_left=45)
    add_certificate("doctor", "CN=Чужой врач", user=region.a.users["doctor"])
    add_certificate("doctor", "CN=Истёкший врач", user=operator, days_left=-1)
    add_certificate("doctor", "CN=Будущий врач", user=operator, started=-5)
    mo_cert = add_certificate("mo", "CN=Больница А", mo=region.a.mo, days_left=10)
    add_certificate("mo", "CN=Больница Б", mo=region.b.mo)
    add_certificate("accountant", "CN=Бухгалтер А", user=accountant, days_left=200)
    add_certificate("accountant", "CN=Бухгалтер Б", user=region.b.users["ers_accountant"])
    add_certificate("fss", "CN=ФСС")

    login(client, operator)
    page = html.fromstring(client.get("/ers/").get_data(as_text=True))

    def options(name):
        return [
            " ".join(o.text_content().split())
            for o in page.xpath(f'//select[@name="{name}"]/option[@value!=""]')
        ]

    assert options("sign_doctor") == ["CN=Свой врач (осталось 45 дн.)"]
    assert options("sign_mo") == ["CN=Больница А (осталось 10 дн.)"]
    assert options("sign_accountant") == ["CN=Бухгалтер А (осталось 200 дн.)"]
    labels = [
        " ".join(lbl.text_content().split()).split(" CN=")[0].split(" —")[0]
        for lbl in page.xpath('//form[@id="ers-signatures"]/label')
    ]
    assert labels == ["ЭЦП врача", "ЭЦП МО", "ЭЦП бухгалтера"]

    token = csrf_token(client, "/ers/")
    response = client.post(
        "/ers/signatures",
        data={"csrf_token": token, "sign_doctor": own.id, "sign_mo": mo_cert.id, "sign_accountant": ""},
    )
    assert response.status_code == 303
    page = html.fromstring(client.get("/ers/").get_data(as_text=True))
    assert page.xpath('//select[@name="sign_doctor"]/option[@selected]/@value') == [str(own.id)]
    assert page.xpath('//select[@name="sign_mo"]/option[@selected]/@value') == [str(mo_cert.id)]
    assert page.xpath('//select[@name="sign_accountant"]/option[@selected]') == []
    chosen = " ".join(page.xpath('//p[contains(@class, "ers-chosen")]')[0].text_content().split())
    assert chosen == "ЭЦП врача: CN=Свой врач; ЭЦП МО: CN=Больница А; ЭЦП бухгалтера: не выбрана"

    # htmx gets the block back with the message
    response = client.post(
        "/ers/signatures", data={"csrf_token": token, "sign_mo": mo_cert.id}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200 and "Подписи выбраны." in text(response.get_data(as_text=True))

    other_mo = db.session.scalars(db.select(Certificate).where(Certificate.subject == "CN=Больница Б")).one()
    refused = client.post("/ers/signatures", data={"csrf_token": token, "sign_mo": other_mo.id})
    assert refused.status_code == 400
    assert "ЭЦП МО: сертификат недоступен или недействителен" in refused.get_data(as_text=True)


# --- the patient list (E-4) ----------------------------------------------------------------------


def test_list_shows_the_seed_columns_for_current_pregnancies(client, region):
    add_contract(region.a.mo)
    mo = region.a.mo
    with_ers = pregnant(
        mo, "Васильева", birth_date=date(1989, 11, 12), registered_on=TODAY - timedelta(days=69)
    )
    add_ers(with_ers, "8000010452")
    add_ers(with_ers, "8000010459")  # the newest processed number wins
    add_ers(with_ers, None, status=QUEUED)
    add_ers(with_ers, "9999999999", status="PROCESSING_ERROR")  # refused: not her number
    pregnant(mo, "Громова", outcome="birth", outcome_on=TODAY - timedelta(days=10))
    pregnant(mo, "Давняя", outcome="birth", outcome_on=TODAY - timedelta(days=91))
    factories.make_patient(mo, last_name="Небеременная")
    db.session.commit()

    login(client, region.a.users["ers_operator"])
    page = client.get("/ers/").get_data(as_text=True)
    tree = html.fromstring(page)
    headings = [
        " ".join(th.text_content().split())
        for th in tree.xpath('//table[contains(@class, "ers-patients")]//th')
    ]
    assert headings[1] == "ФИО ▲"  # sorted by ФИО by default
    headings[1] = "ФИО"
    assert headings == ["Подробнее", "ФИО", "Д.Р.", "СНИЛС", "Полис", "ЭРС", "Талон 1", "Талон 2", "Талон 3-1",
                        "Талон 3-2", "Текущий срок"]  # fmt: skip
    rows = {row[1].split()[0]: row for row in table(page)}
    assert set(rows) == {"Васильева", "Громова", region.a.patients[0].last_name}
    assert rows["Васильева"] == [
        "Подробнее", with_ers.full_name, "12.11.1989",
        f"{with_ers.snils[0:3]}-{with_ers.snils[3:6]}-{with_ers.snils[6:9]} {with_ers.snils[9:]}",
        with_ers.policy_number, "8000010459 (запрос в ФСС)", "Нет", "Нет", "Нет", "Нет", "17 недель 6 дней",
    ]  # fmt: skip
    assert rows["Громова"][5] == "Нет"
    assert rows["Громова"][10].startswith("после родоразрешения в ")
    link = tree.xpath(f'//a[@href="/ers/patients/{with_ers.id}"]')
    assert [a.text_content() for a in link] == ["Подробнее"]


def test_search_by_name_or_snils(client, region):
    add_contract(region.a.mo)
    first = pregnant(region.a.mo, "Требушинина", first_name="Екатерина")
    pregnant(region.a.mo, "Трофимова")
    login(client, region.a.users["ers_operator"])

    assert surnames(client.get("/ers/?q=тре").get_data(as_text=True)) == ["Требушинина"]
    assert surnames(client.get("/ers/?q=Тр").get_data(as_text=True)) == ["Требушинина", "Трофимова"]
    assert surnames(client.get("/ers/?q=Трофимова Екатерина").get_data(as_text=True)) == []
    formatted = f"{first.snils[0:3]}-{first.snils[3:6]}-{first.snils[6:9]} {first.snils[9:]}"
    assert surnames(client.get("/ers/", query_string={"q": formatted}).get_data(as_text=True)) == [
        "Требушинина"
    ]
    empty = client.get("/ers/?q=Нетакой").get_data(as_text=True)
    assert table(empty) == [["По запросу «Нетакой» пациентов нет."]]

    fragment = client.get("/ers/?q=тре", headers=HX)
    assert fragment.status_code == 200 and fragment.headers.get("Vary", "").find("HX-Request") >= 0
    body = fragment.get_data(as_text=True)
    assert 'id="ers-results"' in body and "<html" not in body
    assert surnames(body) == ["Требушинина"]


def test_sort_by_each_column_both_ways(client, region):
    add_contract(region.a.mo)
    mo = region.a.mo
    for patient in region.a.patients:  # the region's pregnant patient is not part of this test
        patient.mo_id = region.b.mo.id
    db.session.commit()
    a = pregnant(mo, "Антонова", birth_date=date(1990, 1, 1), snils="00000000300")
    b = pregnant(mo, "Борисова", birth_date=date(1980, 1, 1), snils="00000000100")
    c = pregnant(mo, "Волкова", birth_date=date(2000, 1, 1), snils="00000000200")
    add_ers(a, "8000000002")
    add_ers(c, "8000000001")
    login(client, region.a.users["ers_operator"])

    def order(query: str) -> list[str]:
        return surnames(client.get(f"/ers/?{query}").get_data(as_text=True))

    assert order("") == ["Антонова", "Борисова", "Волкова"]
    assert order("dir=desc") == ["Волкова", "Борисова", "Антонова"]
    assert order("sort=birth") == ["Борисова", "Антонова", "Волкова"]
    assert order("sort=birth&dir=desc") == ["Волкова", "Антонова", "Борисова"]
    assert order("sort=snils") == ["Борисова", "Волкова", "Антонова"]
    assert order("sort=ers") == ["Волкова", "Антонова", "Борисова"]  # «Нет» last
    assert order("sort=ers&dir=desc") == ["Антонова", "Волкова", "Борисова"]
    assert client.get("/ers/?sort=polis").status_code == 400
    assert b.id  # listed above

    # the heading of the current column turns the order round
    tree = html.fromstring(client.get("/ers/?sort=birth").get_data(as_text=True))
    assert tree.xpath('//th[@aria-sort="ascending"]/a/@href') == ["/ers/?sort=birth&dir=desc"]
    # and the search form keeps the order chosen by a heading
    kept = tree.xpath('//input[@form="ers-filters"]')
    assert [(i.get("name"), i.get("value")) for i in kept] == [("sort", "birth")]
    assert tree.xpath('//form[@id="ers-filters"]')


def test_rows_per_page_and_pages(client, region):
    add_contract(region.a.mo)
    for n in range(31):
        pregnant(region.a.mo, f"Пациентка{n:02d}")
    login(client, region.a.users["ers_operator"])  # 32 with the region's own

    first = client.get("/ers/").get_data(as_text=True)
    assert len(table(first)) == 10 and "Всего: 32" in text(first) and "Страница 1 из 4" in text(first)
    assert len(table(client.get("/ers/?rows=30").get_data(as_text=True))) == 30
    fifty = client.get("/ers/?rows=50").get_data(as_text=True)
    assert len(table(fifty)) == 32 and "Страница" not in text(fifty)
    last = client.get("/ers/?rows=30&page=2").get_data(as_text=True)
    assert len(table(last)) == 2 and "Страница 2 из 2" in text(last)
    tree = html.fromstring(first)
    assert tree.xpath('//select[@name="rows"]/option/@value') == ["10", "30", "50"]
    assert tree.xpath('//div[@class="pager"]//a/@href') == ["/ers/?page=2"]
    assert client.get("/ers/?rows=7").status_code == 400
    assert client.get("/ers/?page=x").status_code == 400


# --- МО scoping and roles (E-2) ------------------------------------------------------------------


def test_mo_user_sees_only_their_mo_whatever_the_url_says(client, region):
    add_contract(region.a.mo, number="A-1")
    add_contract(region.b.mo, number="B-2")
    pregnant(region.b.mo, "Чужая")
    login(client, region.a.users["ers_operator"])
    page = client.get(f"/ers/?mo={region.b.mo.id}").get_data(as_text=True)
    assert "Договор № A-1" in text(page) and "B-2" not in text(page)
    assert surnames(page) == [region.a.patients[0].last_name]
    login(client, region.a.users["ers_accountant"])
    token = csrf_token(client, "/ers/")
    client.post("/ers/contract", data={"csrf_token": token, "mo": region.b.mo.id, "number": "X",
                                       "signed_on": "01.01.2026", "ends_on": "01.01.2099"})  # fmt: skip
    assert db.session.scalars(db.select(ErsContract.mo_id).where(ErsContract.number == "X")).all() == [
        region.a.mo.id
    ]


def test_central_administrator_picks_an_mo(client, region):
    add_contract(region.b.mo, number="B-2")
    pregnant(region.b.mo, "Чужая")
    login(client, region.central)
    page = client.get("/ers/").get_data(as_text=True)
    assert "Выберите МО" in text(page) and table(page) == []
    page = client.get(f"/ers/?mo={region.b.mo.id}").get_data(as_text=True)
    assert "Договор № B-2" in text(page)
    assert set(surnames(page)) == {"Чужая", region.b.patients[0].last_name}
    assert html.fromstring(page).xpath('//form[@id="ers-filters"]//input[@name="mo"]/@value') == [
        str(region.b.mo.id)
    ]
    # the contract form of an МО without one keeps the МО
    page = client.get(f"/ers/?mo={region.a.mo.id}").get_data(as_text=True)
    assert html.fromstring(page).xpath('//form[@id="ers-contract-form"]//input[@name="mo"]/@value') == [
        str(region.a.mo.id)
    ]
    assert client.get("/ers/?mo=999999").status_code == 404
    token = csrf_token(client, "/ers/")
    response = client.post(
        "/ers/contract",
        data={
            "csrf_token": token,
            "mo": region.a.mo.id,
            "number": "A-9",
            "signed_on": "01.01.2026",
            "ends_on": "01.01.2099",
        },
    )
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/ers/?mo={region.a.mo.id}")
    assert db.session.scalars(db.select(ErsContract.mo_id).where(ErsContract.number == "A-9")).all() == [
        region.a.mo.id
    ]
    assert client.post("/ers/contract", data={"csrf_token": token, "number": "A-10"}).status_code == 400


def test_accountant_sees_contract_and_list_statistician_is_refused(client, region):
    add_contract(region.a.mo, number="14")
    login(client, region.a.users["ers_accountant"])
    page = client.get("/ers/").get_data(as_text=True)
    assert "Договор № 14" in text(page) and surnames(page) == [region.a.patients[0].last_name]

    login(client, region.a.users["statistician"])
    refused = client.get("/ers/")
    assert refused.status_code == 403 and "Вашей роли этот раздел недоступен." in refused.get_data(
        as_text=True
    )
    token = csrf_token(client)
    assert client.post("/ers/contract", data={"csrf_token": token, "number": "1"}).status_code == 403
    assert client.post("/ers/signatures", data={"csrf_token": token}).status_code == 403

    login(client, region.a.users["ers_operator"])  # makes requests, but the contract is not theirs
    token = csrf_token(client, "/ers/")
    assert client.post("/ers/contract", data={"csrf_token": token, "number": "1"}).status_code == 403
