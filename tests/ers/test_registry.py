"""«Реестр запросов» as its users see it (SPEC E-13): every request to ФСС with Дата, IP,
Информация, Запрос, Метод, Статус; search, the patient card's block, «Показать ещё», the arrow
with the error, the journal and both envelopes as readable XML; status cells that poll while a
request is on its way; МО scoping and roles."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from lxml import html

from portal.clinical.identifiers import format_snils
from portal.ers import jobs
from portal.ers import models as m
from portal.ers.channel import CHANNEL
from portal.exchange.delivery import journal, poll_due
from portal.extensions import db
from portal.models_base import utcnow
from tests import factories
from tests.conftest import login
from tests.ers.test_client import contract, fss_cert, mo, sims  # noqa: F401  (stand-in fixtures)
from tests.ers.test_flow import _create_ers, ready  # noqa: F401

HX = {"HX-Request": "true", "HX-Target": "ers-registry"}
SEED_INFO = "Метод: getErsData, Запрос: getErsData, Статус:Ok"
SIGNATURE = "QUJD" * 150  # a 600-character base64 value, like a signature or a certificate
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
REQUEST_XML = (
    f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Header><Security><BinarySecurityToken>{SIGNATURE}'
    "</BinarySecurityToken></Security></soap:Header><soap:Body><createErsRequest><snils>12345678901</snils>"
    "</createErsRequest></soap:Body></soap:Envelope>"
)
ANSWER_XML = (
    f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Body><getResultByIdResponse><status>PROCESSING_ERROR</status>'
    "<error><code>1204</code><message>Отсутствует заключенный договор</message></error>"
    "</getResultByIdResponse></soap:Body></soap:Envelope>"
)


def add_request(
    owner,
    *,
    patient=None,
    method: str = "createErs",
    status: str = m.PROCESSED,
    at: datetime | None = None,
    info: str = "Запрос ЭРС",
    **kw,
) -> m.ErsRequest:
    request = m.ErsRequest(
        mo_id=owner.id,
        patient_id=patient.id if patient else None,
        method=method,
        info=info,
        status=status,
        created_at=at or utcnow(),
        **kw,
    )
    db.session.add(request)
    db.session.commit()
    return request


def rows(page: str) -> list[list[str]]:
    """The registry table as text, row by row (the empty-table row included)."""
    tree = html.fromstring(page)
    return [
        [" ".join(cell.text_content().split()) for cell in row.xpath("./td")]
        for row in tree.xpath('//table[contains(@class, "ers-requests")]/tbody/tr')
    ]


def methods_shown(page: str) -> list[str]:
    return [row[4] for row in rows(page) if len(row) == 7]


def text(page: str) -> str:
    return " ".join(html.fromstring(page).text_content().split())


def pre(page: str, which: str) -> str:
    found = html.fromstring(page).xpath(f'//details[contains(@class, "ers-envelope-{which}")]//pre')
    return found[0].text_content() if found else ""


# --- the table (seed columns, dates) -------------------------------------------------------------


def test_rows_show_the_seed_columns_newest_first(client, region):
    a = region.a
    add_request(a.mo, patient=a.patients[0], method="getErsData", info=SEED_INFO, ip="10.22.0.1",
                at=datetime(2021, 12, 23, 2, 9, 11))  # fmt: skip
    add_request(a.mo, patient=a.patients[0], method="getErsData", info=SEED_INFO, ip="10.0.9.66",
                at=datetime(2021, 12, 23, 3, 48, 33))  # fmt: skip
    login(client, a.users["ers_operator"])

    response = client.get("/ers/requests")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    tree = html.fromstring(page)
    heads = [
        " ".join(th.text_content().split())
        for th in tree.xpath('//table[contains(@class, "ers-requests")]//th')
    ]
    assert heads == ["Дата", "IP", "Информация", "Запрос", "Метод", "Статус", ""]
    table = rows(page)
    assert [r[:2] for r in table] == [
        ["23.12.2021 03:48:33", "10.0.9.66"],
        ["23.12.2021 02:09:11", "10.22.0.1"],
    ]
    assert table[0][2].startswith(SEED_INFO) and a.patients[0].full_name in table[0][2]
    assert table[0][3:6] == ["Данные ЭРС", "getErsData", "Обработан"]
    assert "Интеграционные сервисы / АИСТ ЭРС / Реестр запросов" in text(page)
    assert tree.xpath('//a[@href="/ers/"]')  # back to the АИСТ ЭРС page
    arrow = tree.xpath('//tr[contains(@class, "ers-request-row")]//a[@data-expands]')[0]
    assert arrow.get("href") == arrow.get("hx-get") and arrow.get("href").startswith("/ers/requests/")


def test_an_mo_without_requests_says_so(client, region):
    login(client, region.a.users["ers_accountant"])
    page = client.get("/ers/requests").get_data(as_text=True)
    assert rows(page) == [["Запросов в ФСС ещё не было."]]


# --- search and filters --------------------------------------------------------------------------


def test_search_by_patient_name_snils_ers_number_method_and_fss_request_id(client, region):
    a = region.a
    smirnova = factories.make_patient(a.mo, last_name="Смирнова", first_name="Ольга")
    kuznetsova = factories.make_patient(a.mo, last_name="Кузнецова", first_name="Елена")
    add_request(a.mo, patient=smirnova, ers_number="9000943761", fss_request_id="a1b2c3d4-fss")
    add_request(a.mo, patient=kuznetsova, method="putVisit", info="Посещение от 01.12.2021")
    add_request(region.b.mo, patient=region.b.patients[0], method="putVisit")  # another МО: never found
    login(client, a.users["ers_operator"])

    def search(q: str) -> list[str]:
        response = client.get("/ers/requests", query_string={"q": q}, headers=HX)
        assert response.status_code == 200
        return methods_shown(response.get_data(as_text=True))

    assert search("Смирнова") == ["createErs"]
    assert search("смир") == ["createErs"]
    assert search("Кузнецова Елена") == ["putVisit"]
    assert search(format_snils(smirnova.snils)) == ["createErs"]
    assert search(kuznetsova.snils) == ["putVisit"]
    assert search("9000943761") == ["createErs"]
    assert search("a1b2c3d4") == ["createErs"]
    assert search("putVisit") == ["putVisit"]
    assert search("посещение") == ["putVisit"]  # the label «Посещение» and the info
    assert search("Запрос ЭРС") == ["createErs"]
    assert search("Никто") == []
    page = client.get("/ers/requests", query_string={"q": "Никто"}).get_data(as_text=True)
    assert rows(page) == [["По запросу «Никто» запросов в ФСС нет."]]


def test_method_status_and_period_filters(client, region):
    a = region.a
    add_request(a.mo, method="createErs", status=m.PROCESSED, at=datetime(2021, 12, 1, 10, 0))
    add_request(a.mo, method="putTicket1", status=m.PROCESSING_ERROR, at=datetime(2021, 12, 20, 10, 0),
                error_code="1204", error_text="Отсутствует заключенный договор")  # fmt: skip
    login(client, a.users["ers_operator"])

    def shown(**args) -> list[str]:
        return methods_shown(
            client.get("/ers/requests", query_string=args, headers=HX).get_data(as_text=True)
        )

    assert shown() == ["putTicket1", "createErs"]
    assert shown(method="createErs") == ["createErs"]
    assert shown(status=m.PROCESSING_ERROR) == ["putTicket1"]
    assert shown(**{"from": "10.12.2021", "to": "2021-12-31"}) == ["putTicket1"]
    assert shown(to="2021-12-01") == ["createErs"]
    error_row = rows(client.get("/ers/requests?method=putTicket1").get_data(as_text=True))[0]
    assert error_row[5] == "Ошибка обработки Код: 1204 Сообщение: Отсутствует заключенный договор"


def test_patient_filter_is_the_patient_cards_block(client, region):
    a = region.a
    first, second = a.patients
    for hour in range(3):
        add_request(a.mo, patient=first, at=datetime(2021, 12, 23, hour, 0))
    add_request(a.mo, patient=second, method="putVisit")
    client.application.config["PAGE_SIZE"] = 2
    login(client, a.users["ers_operator"])

    response = client.get(f"/ers/requests?patient={first.id}", headers=HX)

    fragment = response.get_data(as_text=True)
    assert "<html" not in fragment
    tree = html.fromstring(fragment)
    assert tree.get("id") == "ers-registry"
    assert [r[0] for r in rows(fragment)[:2]] == ["23.12.2021 02:00:00", "23.12.2021 01:00:00"]
    # the block's own search and «Показать ещё» keep the patient
    search = tree.xpath('//form[contains(@class, "ers-registry-search")]')[0]
    assert search.xpath('.//input[@name="patient"]/@value') == [str(first.id)]
    more = tree.xpath('//tr[@id="ers-registry-more"]//a')[0]
    assert f"patient={first.id}" in more.get("href") and more.get("href") == more.get("hx-get")
    rest = client.get(more.get("href"), headers={"HX-Request": "true", "HX-Target": "ers-registry-more"})
    assert [
        r[0]
        for r in rows(f"<table class='ers-requests'><tbody>{rest.get_data(as_text=True)}</tbody></table>")
    ] == ["23.12.2021 00:00:00"]
    assert client.get(f"/ers/requests?patient={second.id}&q=Visit", headers=HX).status_code == 200
    assert methods_shown(
        client.get(f"/ers/requests?patient={second.id}", headers=HX).get_data(as_text=True)
    ) == ["putVisit"]
    # on the registry page itself the page's filters serve: no second search field
    on_page = client.get(
        f"/ers/requests?patient={first.id}",
        headers={**HX, "HX-Current-URL": f"http://localhost/ers/requests?patient={first.id}"},
    )
    assert not html.fromstring(on_page.get_data(as_text=True)).xpath(
        '//form[contains(@class, "ers-registry-search")]'
    )
    # another МО's patient does not exist for this user
    assert client.get(f"/ers/requests?patient={region.b.patients[0].id}", headers=HX).status_code == 404


def test_show_more_pages_through_every_request_once_newest_first(client, region):
    a = region.a
    same_moment = datetime(2021, 12, 22, 12, 0, 0)
    made = [add_request(a.mo, at=datetime(2021, 12, 1 + day, 9, 0)) for day in range(5)]
    made += [add_request(a.mo, at=same_moment) for _ in range(2)]  # a tie is broken by id
    client.application.config["PAGE_SIZE"] = 3
    login(client, a.users["ers_operator"])
    expected = [r.id for r in sorted(made, key=lambda r: (r.created_at, r.id), reverse=True)]

    seen: list[int] = []
    page = client.get("/ers/requests").get_data(as_text=True)
    while True:
        tree = html.fromstring(page)
        seen += [
            int(tr.get("id").removeprefix("ers-row-"))
            for tr in tree.xpath('//tr[contains(@class, "ers-request-row")]')
        ]
        more = tree.xpath('//tr[@id="ers-registry-more"]//a/@href')
        if not more:
            break
        part = client.get(more[0], headers={"HX-Request": "true", "HX-Target": "ers-registry-more"})
        assert part.status_code == 200
        page = f"<table><tbody>{part.get_data(as_text=True)}</tbody></table>"
    assert seen == expected


# --- the arrow: error, ids, journal, envelopes ---------------------------------------------------


def test_expanded_row_shows_error_ids_sender_journal_and_pretty_xml(client, region):
    a = region.a
    operator = a.users["ers_operator"]
    request = add_request(a.mo, patient=a.patients[0], status=m.PROCESSING_ERROR, user_id=operator.id,
                          ip="10.0.9.66", fss_request_id="req-42", ers_number="9001760985",
                          error_code="1204", error_text="Отсутствует заключенный договор",
                          request_xml=REQUEST_XML, answer_xml=ANSWER_XML)  # fmt: skip
    journal(CHANNEL, None, "Отправка", "Запрос принят ФСС, requestId req-42",
            subject=("ers_request", request.id), mo_id=a.mo.id, notify=False)  # fmt: skip
    db.session.commit()
    login(client, operator)

    response = client.get(f"/ers/requests/{request.id}", headers=HX)

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    tree = html.fromstring(f"<table>{page}</table>")
    assert tree.xpath(f'//tr[@id="ers-request-{request.id}"]/td/@colspan') == ["7"]
    shown = text(page)
    assert "Код: 1204 Сообщение: Отсутствует заключенный договор" in shown
    assert "req-42" in shown and "9001760985" in shown and operator.full_name in shown
    assert "Запрос принят ФСС, requestId req-42" in shown
    sent = pre(page, "request")
    assert "\n  <soap:Header>" in sent and "\n    <soap:Body>" not in sent  # indented by depth
    assert "<snils>12345678901</snils>" in sent
    assert SIGNATURE not in sent and "… (ещё 560 символов)" in sent  # the certificate shortened
    answer = pre(page, "answer")
    assert "\n        <code>1204</code>" in answer
    # «показать полностью» gives the whole value; the raw link the envelope exactly as kept
    whole = html.fromstring(page).xpath('//a[text()="показать полностью"]')[0]
    assert whole.get("href") == whole.get("hx-get")
    full = client.get(
        whole.get("href"), headers={"HX-Request": "true", "HX-Target": f"ers-request-body-{request.id}"}
    )
    assert SIGNATURE in pre(full.get_data(as_text=True), "request")
    raw = client.get(f"/ers/requests/{request.id}/xml/request")
    assert raw.status_code == 200 and raw.get_data(as_text=True) == REQUEST_XML
    assert raw.mimetype == "text/xml" and "attachment" in raw.headers["Content-Disposition"]
    assert client.get(f"/ers/requests/{request.id}/xml/answer").get_data(as_text=True) == ANSWER_XML
    assert client.get(f"/ers/requests/{request.id}/xml/other").status_code == 404
    # without htmx the arrow's link is a page of its own
    alone = client.get(f"/ers/requests/{request.id}").get_data(as_text=True)
    assert (
        "<html" in alone
        and "Запрос № " in text(alone)
        and "<snils>12345678901</snils>" in pre(alone, "request")
    )


def test_a_queued_request_has_no_envelopes_yet(client, region):
    request = add_request(region.a.mo, status=m.QUEUED)
    login(client, region.a.users["ers_operator"])
    shown = text(client.get(f"/ers/requests/{request.id}", headers=HX).get_data(as_text=True))
    assert "Запрос ещё не отправлен в ФСС." in shown and "Ответа ФСС ещё нет." in shown
    missing = client.get(f"/ers/requests/{request.id}/xml/answer")
    assert missing.status_code == 404 and "Ответа ФСС на запрос ещё нет." in missing.get_data(as_text=True)


def test_a_real_request_shows_the_signed_envelope_and_the_decrypted_answer(client, mo, contract, ready, sims):  # noqa: F811
    patient, user, signers = ready
    request = _create_ers(mo, patient, user, signers)
    jobs.exchange()
    poll_due(CHANNEL, now=utcnow() + timedelta(minutes=1))
    db.session.expire_all()
    done = db.session.get(m.ErsRequest, request.id)
    assert done.status == m.PROCESSED
    login(client, user)

    table = rows(client.get("/ers/requests").get_data(as_text=True))
    assert [r[1:6] for r in table] == [["10.0.0.7", table[0][2], "Запрос ЭРС", "createErs", "Обработан"]]
    page = client.get(f"/ers/requests/{request.id}", headers=HX).get_data(as_text=True)
    shown = text(page)
    assert done.fss_request_id in shown and done.ers_number in shown and user.full_name in shown
    sent = pre(page, "request")
    assert "createErsRequest" in sent and "Signature" in sent and "\n  " in sent
    assert "символов)" in sent  # the signature value or certificate is shortened
    answer = pre(page, "answer")
    assert done.ers_number in answer and "EncryptedData" not in answer and "\n  " in answer
    journal_lines = html.fromstring(page).xpath('//table[contains(@class, "ers-journal")]/tbody/tr')
    assert len(journal_lines) >= 2  # queued, sent, answered …


# --- status cells ---------------------------------------------------------------------------------


def test_an_in_flight_status_cell_polls_and_a_final_one_does_not(client, region):
    request = add_request(region.a.mo, status=m.REGISTERED)
    login(client, region.a.users["ers_operator"])
    url = f"/ers/requests/{request.id}/status"

    cell = html.fromstring(client.get(url, headers={"HX-Request": "true"}).get_data(as_text=True))
    assert cell.get("id") == f"ers-status-{request.id}" and cell.text_content().strip() == "Принят ФСС"
    assert cell.get("hx-get") == url and cell.get("hx-trigger", "").startswith("every ")
    listed = html.fromstring(client.get("/ers/requests").get_data(as_text=True))
    assert listed.xpath(f'//td[@id="ers-status-{request.id}"]/@hx-get') == [url]

    request.status = m.PROCESSED
    db.session.commit()
    cell = html.fromstring(client.get(url, headers={"HX-Request": "true"}).get_data(as_text=True))
    assert cell.text_content().strip() == "Обработан"
    assert cell.get("hx-get") is None and cell.get("hx-trigger") is None


# --- МО scoping, roles, bad filters -------------------------------------------------------------


def test_another_mos_request_is_404_for_an_mo_user_and_visible_to_the_central_admin(client, region):
    theirs = add_request(
        region.b.mo, patient=region.b.patients[0], request_xml=REQUEST_XML, method="putVisit"
    )
    add_request(region.a.mo, patient=region.a.patients[0])
    login(client, region.a.users["ers_operator"])
    for url in (f"/ers/requests/{theirs.id}", f"/ers/requests/{theirs.id}/status",
                f"/ers/requests/{theirs.id}/xml/request"):  # fmt: skip
        refused = client.get(url)
        assert refused.status_code == 404, url
    assert "Запрос не найден." in client.get(f"/ers/requests/{theirs.id}").get_data(as_text=True)
    assert methods_shown(client.get(f"/ers/requests?mo={region.b.mo.id}").get_data(as_text=True)) == [
        "createErs"
    ]

    login(client, region.central)
    page = client.get("/ers/requests").get_data(as_text=True)
    assert sorted(methods_shown(page)) == ["createErs", "putVisit"]
    assert region.b.mo.short_name in text(page)  # all МО: each row names its МО
    assert methods_shown(client.get(f"/ers/requests?mo={region.b.mo.id}").get_data(as_text=True)) == [
        "putVisit"
    ]
    assert client.get(f"/ers/requests/{theirs.id}", headers=HX).status_code == 200
    assert client.get(f"/ers/requests/{theirs.id}/xml/request").get_data(as_text=True) == REQUEST_XML


@pytest.mark.parametrize("role", ["statistician", "doctor"])
def test_roles_without_ers_view_are_refused(client, region, role):
    request = add_request(region.a.mo)
    login(client, region.a.users[role])
    for url in ("/ers/requests", f"/ers/requests/{request.id}", f"/ers/requests/{request.id}/status",
                f"/ers/requests/{request.id}/xml/request"):  # fmt: skip
        refused = client.get(url)
        assert refused.status_code == 403, url
        assert "Вашей роли этот раздел недоступен." in refused.get_data(as_text=True)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=LOST", "Неизвестный статус «LOST»."),
        ("method=sendAll", "Неизвестный метод «sendAll»."),
        (
            "from=31.02.2021",
            "Дата начала периода «31.02.2021» должна быть в формате ГГГГ-ММ-ДД или ДД.ММ.ГГГГ.",
        ),
        ("from=2021-12-10&to=2021-12-01", "Начало периода 10.12.2021 позже его окончания 01.12.2021."),
        ("patient=abc", "Некорректный пациент «abc»."),
        ("after=yesterday", "Некорректный параметр страницы."),
    ],
)
def test_a_bad_filter_is_refused_in_russian(client, region, query, message):
    login(client, region.a.users["ers_operator"])
    response = client.get(f"/ers/requests?{query}")
    assert response.status_code == 400
    assert message in text(response.get_data(as_text=True))
