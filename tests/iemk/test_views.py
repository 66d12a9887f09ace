"""«Документы ИЭМК» and the ИЭМК block of the patient card as their users see them: filters in
the URL, counts per status, МО scoping of every view and fragment, roles, the actions' messages,
the status refresh, the journal and the CDA of a document."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import html

from portal.admin.services import ensure_demo_certificate, set_setting
from portal.exchange import delivery
from portal.exchange.models import WorkItem
from portal.extensions import db
from portal.iemk import documents
from portal.iemk import models as m
from portal.iemk.channel import CHANNEL
from portal.iemk.jobs import upload
from portal.models_base import utcnow
from simulators import start_simulators
from tests import factories
from tests.conftest import csrf_token, login
from tests.iemk.test_emk import point_at

HX = {"HX-Request": "true", "HX-Target": "iemk-results"}
LAB = {"hemoglobin_g_l": 118, "esr_mm_h": 18, "diagnosis": "Z34.0"}


# --- documents made the portal's way: an event, ensure_documents, the real sign and transfer -----


def make_doc(
    side, kind: str = "lab_blood", *, patient=None, at: datetime | None = None, **kw
) -> m.IemkDocument:
    """One document of the МО `side` for a new event of `kind`."""
    patient = patient or side.patients[0]
    event = factories.make_event(
        patient,
        kind,
        department_id=side.department.id,
        doctor_id=side.doctor.id,
        at=at or datetime.now().replace(microsecond=0) - timedelta(hours=2),
        data=dict(LAB),
        **kw,
    )
    documents.ensure_documents([event.id])
    db.session.commit()
    return db.session.scalars(db.select(m.IemkDocument).where(m.IemkDocument.event_id == event.id)).one()


def sign(doc: m.IemkDocument, user) -> m.IemkDocument:
    result = documents.sign_documents([doc], user)
    db.session.commit()
    assert result.signed == [doc], result.refused
    return doc


def _item(doc: m.IemkDocument) -> WorkItem:
    return db.session.scalars(
        db.select(WorkItem)
        .where(WorkItem.subject_type == "iemk_document", WorkItem.subject_id == doc.id)
        .order_by(WorkItem.id.desc())
    ).first()


def bring(doc: m.IemkDocument, user, status: str) -> m.IemkDocument:
    """Sign, queue and settle the document through the delivery mechanism's own outcome handling,
    as the upload job and ИЭМК's asynchronous answer do."""
    sign(doc, user)
    if status == m.SIGNED:
        return doc
    assert documents.transfer([doc], user).queued == [doc]
    db.session.commit()
    if status == "queued":
        return doc
    item = _item(doc)
    delivery.apply_outcome(
        CHANNEL,
        item,
        delivery.Outcome.accepted(
            f"{doc.title} передан в ИЭМК, ожидается асинхронный ответ", external_id=doc.local_uid
        ),
        operation="Передача",
    )
    if status == m.SAVED:
        doc.emdr_id = "EMDR-2025-000042"
        delivery.apply_outcome(
            CHANNEL, item, delivery.Outcome.done("Документ сохранен в ИЭМК"), operation="Ответ"
        )
    elif status == m.ERROR:
        delivery.apply_outcome(
            CHANNEL,
            item,
            delivery.Outcome.failed("Не пройден логический контроль: нет СНИЛС врача"),
            operation="Ответ",
        )
    db.session.commit()
    assert doc.status == status
    return doc


@pytest.fixture
def cert(app):
    ensure_demo_certificate("iemk", "Тест: подпись документов ИЭМК")
    db.session.commit()


def doc_user(side):
    return side.users["doctor"]


# --- reading the page ---------------------------------------------------------------------------


_COMPOUND = re.compile(r"([\w-]+|\*)?((?:[#.][\w-]+|\[[^\]]+\])*)")
_PART = re.compile(r"#([\w-]+)|\.([\w-]+)|\[([\w-]+)(?:([\^$]?=)\"?([^\]\"]*)\"?)?\]")


def _xpath(selector: str) -> str:
    """The few CSS selectors these tests use (tag, #id, .class, [attr], [attr=v], [attr^=v],
    [attr$=v], descendants) as XPath: lxml's cssselect needs a package the portal does not use."""
    steps = []
    for compound in selector.split():
        tag, rest = _COMPOUND.fullmatch(compound).groups()
        tests = []
        for ident, cls, attr, op, value in _PART.findall(rest or ""):
            if ident:
                tests.append(f"@id='{ident}'")
            elif cls:
                tests.append(f"contains(concat(' ', normalize-space(@class), ' '), ' {cls} ')")
            elif not op:
                tests.append(f"@{attr}")
            elif op == "=":
                tests.append(f"@{attr}='{value}'")
            elif op == "^=":
                tests.append(f"starts-with(@{attr}, '{value}')")
            else:
                tests.append(f"substring(@{attr}, string-length(@{attr}) - {len(value) - 1})='{value}'")
        steps.append((tag or "*") + "".join(f"[{t}]" for t in tests))
    return "descendant-or-self::" + "//".join(steps)


def css(tree, selector: str) -> list:
    return tree.xpath(_xpath(selector))


def get(client, url: str, headers=None):
    response = client.get(url, headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)[:800]
    return html.fromstring(response.get_data(as_text=True))


def row_ids(tree) -> list[int]:
    return [int(tr.get("id").rsplit("-", 1)[1]) for tr in css(tree, "tr.iemk-row")]


def counts(tree) -> dict[str, str]:
    return {a.get("data-status"): css(a, ".count")[0].text_content() for a in css(tree, "#iemk-counts a")}


def status_text(tree, doc_id: int) -> str:
    return " ".join(css(tree, f"#iemk-status-{doc_id}")[0].text_content().split())


def flash(tree) -> str:
    return " ".join(css(tree, ".flash")[0].text_content().split())


def post(client, url: str, data: dict, headers=None, token_url: str = "/iemk/documents"):
    data = {"csrf_token": csrf_token(client, token_url), **data}
    return client.post(url, data=data, headers=headers or {})


# --- the page -----------------------------------------------------------------------------------


def test_page_lists_the_own_mo_documents_with_the_seed_columns(app, client, region, cert):
    a, b = region.a, region.b
    mine = bring(make_doc(a), doc_user(a), m.SIGNED)
    theirs = make_doc(b)
    login(client, a.users["mo_admin"])

    tree = get(client, "/iemk/documents")

    assert css(tree, "h1")[0].text_content() == "Документы ИЭМК"
    assert row_ids(tree) == [mine.id]
    assert theirs.id not in row_ids(tree)
    headers = [th.text_content().strip() for th in css(tree, "table.iemk-documents thead th")]
    assert headers[2:9] == ["Дата", "Пациент", "Документ", "Отделение", "Врач", "Подпись", "Статус"]
    cells = [" ".join(td.text_content().split()) for td in css(tree, f"#iemk-doc-{mine.id} td")]
    assert cells[3].startswith("Иванова Мария Петровна")
    assert cells[4] == f"Протокол лабораторного исследования № {mine.id}"
    assert cells[5] == a.department.name and cells[6] == a.doctor.full_name
    assert cells[7].startswith(f"{doc_user(a).full_name}, сертификат «") and "UTC" in cells[7]
    assert cells[8] == "Подписан"
    # the МО filter is the user's own and cannot be changed
    assert css(tree, "#iemk-filters input[disabled]")[0].get("value") == a.mo.short_name
    assert css(tree, "#iemk-filters select[name=mo]") == []


def test_menu_leads_to_the_page(app, client, region):
    login(client, region.a.users["doctor"])
    tree = get(client, "/")
    links = [a.get("href") for a in css(tree, "nav.sidebar a") if a.text_content().strip() == "ИЭМК"]
    assert links == ["/iemk/documents"]


def test_each_filter_narrows_the_list_and_stays_in_the_url(app, client, region, cert):
    a = region.a
    old = make_doc(a, at=datetime.now().replace(microsecond=0) - timedelta(days=45))
    lab = make_doc(a)
    scan = make_doc(a, "ultrasound_1", patient=a.patients[1])
    bring(scan, doc_user(a), m.SIGNED)
    login(client, a.users["doctor"])

    assert set(row_ids(get(client, "/iemk/documents"))) == {lab.id, scan.id}  # the last 30 days
    since = (date.today() - timedelta(days=60)).isoformat()
    assert set(row_ids(get(client, f"/iemk/documents?from={since}"))) == {old.id, lab.id, scan.id}
    assert row_ids(get(client, "/iemk/documents?kind=instrumental")) == [scan.id]
    assert row_ids(get(client, "/iemk/documents?status=signed")) == [scan.id]
    assert set(row_ids(get(client, "/iemk/documents?status=unsigned"))) == {lab.id}
    assert row_ids(get(client, "/iemk/documents?patient=Петрова")) == [scan.id]
    assert row_ids(get(client, "/iemk/documents?patient=петрова ан")) == [scan.id]
    snils = a.patients[0].snils
    assert row_ids(
        get(client, f"/iemk/documents?patient={snils[:3]}-{snils[3:6]}-{snils[6:9]} {snils[9:]}")
    ) == [lab.id]
    assert row_ids(get(client, "/iemk/documents?patient=Сидорова")) == []

    # the htmx answer is the results alone; its links and hidden inputs carry every filter
    args = f"from={since}&kind=lab&patient=Иванова"
    tree = get(client, f"/iemk/documents?{args}", HX).get_element_by_id("iemk-results")
    assert row_ids(tree) == [lab.id, old.id]  # newest first
    refresh = tree.xpath("//a[normalize-space()='Обновить']")[0].get("href")
    expected = {"from": [since], "to": [date.today().isoformat()], "kind": ["lab"], "patient": ["Иванова"]}
    assert parse_qs(urlsplit(refresh).query) == expected
    printed = tree.xpath("//a[normalize-space()='Печать']")[0].get("href")
    assert urlsplit(printed).path == "/iemk/documents/print" and parse_qs(urlsplit(printed).query) == expected
    hidden = {i.get("name"): i.get("value") for i in css(tree, "#iemk-actions input[type=hidden]")}
    assert hidden["kind"] == "lab" and hidden["patient"] == "Иванова" and hidden["from"] == since
    # the filter form shows what the URL chose
    page = get(client, f"/iemk/documents?{args}&status=unsigned")
    assert css(page, "#iemk-filters select[name=kind] option[selected]")[0].get("value") == "lab"
    assert css(page, "#iemk-status-filter option[selected]")[0].get("value") == "unsigned"
    assert css(page, "#iemk-patient-filter")[0].get("value") == "Иванова"


def test_empty_result_and_bad_filters_get_russian_messages(app, client, region):
    login(client, region.a.users["doctor"])
    tree = get(client, "/iemk/documents?kind=consult")
    assert "Документов за период" in css(tree, "td.empty")[0].text_content()
    for query, words in (
        ("from=32.13.2025", "Дата начала периода «32.13.2025»"),
        ("from=2025-03-10&to=2025-03-01", "Начало периода 10.03.2025 позже его окончания 01.03.2025"),
        ("kind=xray", "Неизвестный вид документа «xray»"),
        ("status=lost", "Неизвестный статус «lost»"),
        ("after=nonsense", "Некорректный параметр страницы"),
    ):
        response = client.get(f"/iemk/documents?{query}")
        assert response.status_code == 400, query
        assert words in response.get_data(as_text=True), query


def test_counts_per_status_ignore_the_status_filter_and_each_count_filters_by_it(app, client, region, cert):
    a = region.a
    user = doc_user(a)
    bring(make_doc(a), user, m.SIGNED)
    bring(make_doc(a), user, m.SIGNED)
    saved = bring(make_doc(a), user, m.SAVED)
    make_doc(a)
    make_doc(region.b)  # another МО: not counted
    login(client, a.users["doctor"])

    tree = get(client, "/iemk/documents?status=saved")
    assert counts(tree) == {"": "4", "unsigned": "1", "signed": "2", "sent": "0", "saved": "1", "error": "0"}
    assert row_ids(tree) == [saved.id]
    link = css(tree, "#iemk-counts a[data-status=signed]")[0]
    assert parse_qs(urlsplit(link.get("href")).query)["status"] == ["signed"]
    assert link.get("hx-get") == link.get("href") and link.get("hx-push-url") == "true"

    # following the count: the signed rows, and the status select of the form replaced out of band
    response = client.get(link.get("href"), headers=HX)
    body = response.get_data(as_text=True)
    results = html.fromstring(body).get_element_by_id("iemk-results")
    assert len(row_ids(results)) == 2
    assert 'id="iemk-status-filter" hx-swap-oob="true"' in body
    assert '<option value="signed" selected>' in body
    assert "HX-Request" in response.headers["Vary"]


def test_central_admin_sees_every_mo_and_may_pick_one_an_mo_user_may_not(app, client, region):
    a, b = region.a, region.b
    mine, theirs = make_doc(a), make_doc(b)

    login(client, region.central)
    tree = get(client, "/iemk/documents")
    assert set(row_ids(tree)) >= {mine.id, theirs.id}
    assert css(tree, f"#iemk-doc-{theirs.id} .mo-name")[0].text_content() == b.mo.short_name
    assert {o.text_content() for o in css(tree, "#iemk-filters select[name=mo] option")} >= {
        "Все МО",
        a.mo.short_name,
        b.mo.short_name,
    }
    only_b = get(client, f"/iemk/documents?mo={b.mo.id}")
    assert theirs.id in row_ids(only_b) and mine.id not in row_ids(only_b)
    assert css(only_b, ".mo-name") == []  # one МО: no МО in the rows
    assert client.get("/iemk/documents?mo=999999").status_code == 404

    login(client, a.users["mo_admin"])  # another МО in the URL is ignored: always their own
    tree = get(client, f"/iemk/documents?mo={b.mo.id}")
    assert mine.id in row_ids(tree) and theirs.id not in row_ids(tree)


def test_show_more_walks_the_list_without_gaps(app, client, region):
    app.config["PAGE_SIZE"] = 2
    a = region.a
    start = datetime.now().replace(microsecond=0) - timedelta(hours=1)
    made = [make_doc(a, at=start - timedelta(minutes=k)) for k in range(5)]
    login(client, a.users["doctor"])

    tree = get(client, "/iemk/documents")
    seen = row_ids(tree)
    while css(tree, "#iemk-more a"):
        tree = html.fromstring(
            "<table>"
            + client.get(
                css(tree, "#iemk-more a")[0].get("href"),
                headers={"HX-Request": "true", "HX-Target": "iemk-more"},
            ).get_data(as_text=True)
            + "</table>"
        )
        seen += row_ids(tree)
    assert seen == [d.id for d in made]


# --- «+»: the details ---------------------------------------------------------------------------


def test_plus_shows_journal_signer_registration_number_and_the_cda(app, client, region, cert):
    a = region.a
    doc = bring(make_doc(a), doc_user(a), m.SAVED)
    login(client, a.users["statistician"])

    tree = get(
        client,
        f"/iemk/documents/{doc.id}?place=registry",
        {"HX-Request": "true", "HX-Target": f"iemk-doc-{doc.id}"},
    )
    assert tree.tag == "tr" and tree.get("id") == f"iemk-detail-{doc.id}"
    text = " ".join(tree.text_content().split())
    assert "Сохранен в ИЭМК" in text and "EMDR-2025-000042" in text
    assert f"{doc_user(a).full_name}, сертификат «" in text and "Тест: подпись документов ИЭМК" in text
    journal = [" ".join(tr.text_content().split()) for tr in css(tree, "table.iemk-journal tbody tr")]
    assert "Документ сохранен в ИЭМК" in journal[0]  # newest first
    assert "Подписание" in journal[-1]
    xml = css(tree, "details.iemk-xml pre")[0].text_content()
    assert "<ClinicalDocument" in xml and doc.local_uid in xml and "\n  <" in xml  # indented for reading
    download = tree.xpath("//a[normalize-space()='Скачать XML документа']")[0].get("href")
    response = client.get(download)
    assert response.status_code == 200 and response.mimetype == "application/xml"
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.get_data(as_text=True) == doc.xml

    # without htmx the same details are a page of their own
    page = get(client, f"/iemk/documents/{doc.id}")
    assert css(page, "h1")[0].text_content() == f"Протокол лабораторного исследования № {doc.id}"
    assert "EMDR-2025-000042" in page.text_content()


def test_an_unsigned_document_has_no_xml_yet(app, client, region):
    doc = make_doc(region.a)
    login(client, region.a.users["doctor"])
    tree = get(client, f"/iemk/documents/{doc.id}", {"HX-Request": "true", "HX-Target": "x"})
    assert "CDA-документ ещё не сформирован" in tree.text_content()
    response = client.get(f"/iemk/documents/{doc.id}.xml")
    assert response.status_code == 404 and "ещё не сформирован" in response.get_data(as_text=True)


# --- actions --------------------------------------------------------------------------------------


def test_sign_selected_rows_answers_with_the_rows_and_names_every_refusal(app, client, region, cert):
    a = region.a
    good = make_doc(a)
    no_snils = make_doc(a, patient=factories.make_patient(a.mo, snils=None, last_name="Сергеева"))
    saved = bring(make_doc(a), doc_user(a), m.SAVED)
    login(client, a.users["doctor"])

    response = post(
        client,
        "/iemk/documents/action",
        {"action": "sign", "ids": [good.id, no_snils.id, saved.id], "kind": "lab"},
        HX,
    )

    assert response.status_code == 200
    tree = html.fromstring(response.get_data(as_text=True))
    message = flash(tree)
    assert message.startswith("Подписано документов: 1. Не подписаны: ")
    assert f"Протокол лабораторного исследования № {no_snils.id} (Сергеева Мария Петровна" in message
    assert "СНИЛС" in message
    assert f"№ {saved.id} (Иванова Мария Петровна, " in message and "Документ уже сохранен в ИЭМК" in message
    assert "flash-warning" in css(tree, ".flash")[0].get("class")
    assert status_text(tree, good.id) == "Подписан"
    assert status_text(tree, no_snils.id).startswith("Не подписан")
    db.session.expire_all()
    assert db.session.get(m.IemkDocument, good.id).signer.startswith(doc_user(a).full_name)
    # the refreshed results keep the filters the form carried
    hidden = {i.get("name"): i.get("value") for i in css(tree, "#iemk-actions input[type=hidden]")}
    assert hidden["kind"] == "lab"


def test_one_row_transfer_queues_it_and_the_row_refreshes_itself(app, client, region, cert):
    a = region.a
    doc = bring(make_doc(a), doc_user(a), m.SIGNED)
    other = make_doc(a)
    login(client, a.users["statistician"])  # may send, may not sign

    tree = get(client, "/iemk/documents")
    row = css(tree, f"#iemk-doc-{doc.id}")[0]
    assert [b.get("value") for b in css(row, "button")] == [f"transfer:{doc.id}"]
    assert tree.xpath("//button[normalize-space()='Получить и подписать документы']") == []

    response = post(client, "/iemk/documents/action", {"action": f"transfer:{doc.id}", "ids": [other.id]}, HX)
    tree = html.fromstring(response.get_data(as_text=True))
    assert flash(tree) == "Поставлено в очередь на передачу в ИЭМК: 1."
    assert status_text(tree, doc.id) == "Подписан в очереди на передачу в ИЭМК"
    assert css(tree, f"#iemk-status-{doc.id} input.iemk-in-flight")[0].get("value") == str(doc.id)
    assert _item(doc).state == "queued"
    assert db.session.get(m.IemkDocument, other.id).queued is False  # only the row's document

    response = post(client, "/iemk/documents/action", {"action": "transfer", "ids": [doc.id, other.id]}, HX)
    message = flash(html.fromstring(response.get_data(as_text=True)))
    assert message.startswith("Поставлено в очередь на передачу в ИЭМК: 0. Не переданы: ")
    assert "Документ уже передаётся в ИЭМК" in message
    assert "Документ не подписан: сначала «Получить и подписать документы»" in message


def test_action_without_htmx_redirects_back_with_a_flash(app, client, region, cert):
    a = region.a
    doc = make_doc(a)
    login(client, a.users["doctor"])
    response = post(
        client, "/iemk/documents/action", {"action": "sign", "ids": [doc.id], "status": "unsigned"}
    )
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["Location"]).query)["status"] == ["unsigned"]
    tree = get(client, response.headers["Location"])
    assert flash(tree) == "Подписано документов: 1."

    response = post(client, "/iemk/documents/action", {"action": f"transfer:{doc.id}", "back": "document"})
    assert response.headers["Location"].endswith(f"/iemk/documents/{doc.id}")
    assert flash(get(client, response.headers["Location"])) == "Поставлено в очередь на передачу в ИЭМК: 1."


def test_nothing_ticked_bad_action_and_missing_csrf(app, client, region):
    a = region.a
    doc = make_doc(a)
    login(client, a.users["doctor"])
    tree = html.fromstring(
        post(client, "/iemk/documents/action", {"action": "transfer"}, HX).get_data(as_text=True)
    )
    assert flash(tree) == "Не выбрано ни одного документа."
    response = post(client, "/iemk/documents/action", {"action": "delete", "ids": [doc.id]}, HX)
    assert response.status_code == 400 and "Неизвестное действие" in response.get_data(as_text=True)
    response = client.post("/iemk/documents/action", data={"action": "sign", "ids": [doc.id]})
    assert response.status_code == 400 and "Форма устарела" in response.get_data(as_text=True)
    assert db.session.get(m.IemkDocument, doc.id).status == m.UNSIGNED


def test_roles_without_the_capability(app, client, region, cert):
    a = region.a
    doc = make_doc(a)
    login(client, a.users["ers_operator"])  # no ИЭМК at all
    for url in (
        "/iemk/documents",
        f"/iemk/documents/{doc.id}",
        f"/iemk/documents/status?id={doc.id}",
        f"/iemk/patients/{a.patients[0].id}/documents",
        "/iemk/documents/print",
    ):
        assert client.get(url).status_code == 403, url
    tree = get(client, f"/clinical/patients/{a.patients[0].id}")
    assert css(tree, "#iemk-patient") == []  # no block on the card either

    login(client, a.users["statistician"])  # sees and sends, does not sign
    response = post(client, "/iemk/documents/action", {"action": f"sign:{doc.id}"}, HX)
    assert response.status_code == 403
    response = post(client, f"/iemk/patients/{a.patients[0].id}/action", {"action": "sign"}, HX)
    assert response.status_code == 403
    assert db.session.get(m.IemkDocument, doc.id).status == m.UNSIGNED


# --- МО scoping of every view and fragment ------------------------------------------------------


@pytest.mark.parametrize("role", ["doctor", "mo_admin", "statistician"])
def test_every_view_and_fragment_hides_another_mo(app, client, region, cert, role):
    a, b = region.a, region.b
    theirs = bring(make_doc(b), doc_user(b), m.SIGNED)
    mine = make_doc(a)
    patient = b.patients[0]
    login(client, a.users[role])

    for url in (
        f"/iemk/documents/{theirs.id}",
        f"/iemk/documents/{theirs.id}.xml",
        f"/iemk/documents/status?id={mine.id}&id={theirs.id}",
        f"/iemk/patients/{patient.id}/documents",
        f"/iemk/patients/{patient.id}/remote",
        f"/iemk/patients/{patient.id}/remote/{theirs.local_uid}",
        f"/clinical/patients/{patient.id}",
    ):
        assert client.get(url, headers={"HX-Request": "true", "HX-Target": "x"}).status_code in (403, 404), (
            url
        )
        assert client.get(url).status_code in (403, 404), url
    for url, data in (
        ("/iemk/documents/action", {"action": "transfer", "ids": [mine.id, theirs.id]}),
        ("/iemk/documents/action", {"action": f"transfer:{theirs.id}"}),
        (f"/iemk/patients/{patient.id}/action", {"action": "transfer"}),
        (f"/iemk/patients/{a.patients[0].id}/action", {"action": f"transfer:{theirs.id}"}),
    ):
        assert post(client, url, data, HX).status_code == 404, (url, data)
    # ours is untouched, theirs was not queued
    db.session.expire_all()
    assert db.session.get(m.IemkDocument, theirs.id).queued is False
    assert _item(theirs) is None


def test_a_patient_s_action_takes_only_that_patient_s_documents(app, client, region):
    a = region.a
    first, second = make_doc(a), make_doc(a, patient=a.patients[1])
    login(client, a.users["doctor"])
    response = post(
        client,
        f"/iemk/patients/{a.patients[0].id}/action",
        {"action": "sign", "ids": [first.id, second.id]},
        HX,
    )
    assert response.status_code == 404


# --- the status refresh ---------------------------------------------------------------------------


def test_status_refresh_answers_each_asked_cell_and_polling_stops_at_a_final_status(
    app, client, region, cert
):
    a = region.a
    user = doc_user(a)
    queued = bring(make_doc(a), user, "queued")
    sent = bring(make_doc(a), user, m.SENT)
    login(client, a.users["doctor"])

    # the page has one poller that sends the in-flight ids the cells carry
    tree = get(client, "/iemk/documents")
    poll = tree.get_element_by_id("iemk-poll")
    assert (
        poll.get("hx-get") == "/iemk/documents/status"
        and poll.get("hx-include") == "input.iemk-in-flight, #iemk-filters"
    )
    assert "every 5s" in poll.get("hx-trigger")
    flying = sorted(int(i.get("value")) for i in css(tree, "input.iemk-in-flight"))
    assert flying == sorted([queued.id, sent.id])
    assert status_text(tree, sent.id) == "Передан в ИЭМК ожидается ответ ИЭМК"

    # ИЭМК answers: one with «Сохранен», one with an error
    item = _item(sent)
    delivery.apply_outcome(
        CHANNEL, item, delivery.Outcome.done("Документ сохранен в ИЭМК"), operation="Ответ"
    )
    item = _item(queued)
    delivery.apply_outcome(CHANNEL, item, delivery.Outcome.accepted("передан", external_id=queued.local_uid))
    delivery.apply_outcome(
        CHANNEL, item, delivery.Outcome.failed("Ошибка ФЛК: неверный OID МО"), operation="Ответ"
    )
    db.session.commit()

    body = client.get(
        f"/iemk/documents/status?id={queued.id}&id={sent.id}", headers={"HX-Request": "true"}
    ).get_data(as_text=True)
    cells = html.fromstring(f"<table><tr>{body}</tr></table>")
    assert [c.get("hx-swap-oob") for c in css(cells, "td")] == ["true", "true"]
    assert status_text(cells, sent.id) == "Сохранен в ИЭМК"
    assert status_text(cells, queued.id) == "Ошибка: Ошибка ФЛК: неверный OID МО"
    assert css(cells, "input.iemk-in-flight") == []  # final: nothing left to ask about
    assert css(cells, f"#iemk-status-{queued.id} .status")[0].get("class") == "status red"
    assert css(cells, f"#iemk-status-{sent.id} .status")[0].get("class") == "status green"

    assert "iemk-counts" not in body  # the patient card's poller sends no filters: cells only

    # the registry's poller sends its filters too: the counts per status come back with the cells
    today = date.today()
    body = client.get(
        f"/iemk/documents/status?id={sent.id}&from={today - timedelta(days=30)}&to={today}&status=sent",
        headers={"HX-Request": "true"},
    ).get_data(as_text=True)
    tree = html.fromstring(f"<div><table><tr>{body}</tr></table></div>")
    assert css(tree, "#iemk-counts")[0].get("hx-swap-oob") == "true"
    assert counts(tree) == {"": "2", "unsigned": "0", "signed": "0", "sent": "0", "saved": "1", "error": "1"}
    assert "selected" in css(tree, "#iemk-counts a[data-status=sent]")[0].get("class")

    for bad in ("id=abc", "id=0", "id=99999"):
        assert client.get(f"/iemk/documents/status?{bad}").status_code in (400, 404), bad


# --- print --------------------------------------------------------------------------------------


def test_print_lists_the_filtered_documents_with_the_filters_described(app, client, region, cert):
    a = region.a
    doc = bring(make_doc(a), doc_user(a), m.SIGNED)
    make_doc(a, "ultrasound_1")
    login(client, a.users["doctor"])
    tree = get(client, "/iemk/documents/print?kind=lab")
    assert row_ids_print(tree) == [doc.id]
    facts = {
        css(tr, "th")[0].text_content(): css(tr, "td")[0].text_content()
        for tr in css(tree, "table.packets-print-filters tr")
    }
    assert facts["Вид документа"] == "Протокол лабораторного исследования"
    assert facts["МО"] == a.mo.short_name
    assert css(tree, "button[data-print]")
    assert css(tree, 'link[media=print][href$="print.css"]')


def row_ids_print(tree) -> list[int]:
    return [int(tr.get("id").rsplit("-", 1)[1]) for tr in css(tree, "tr[id^=iemk-doc-]")]


# --- the patient card -----------------------------------------------------------------------------


def test_patient_card_shows_the_documents_and_get_and_sign_makes_and_signs_them(app, client, region, cert):
    a = region.a
    patient = a.patients[0]
    visit = a.event  # the region's primary exam: no document made yet (it did not come through intake)
    lab = factories.make_event(
        patient, "lab_blood", doctor_id=a.doctor.id, department_id=a.department.id, data=LAB
    )
    db.session.commit()
    login(client, a.users["doctor"])

    tree = get(client, f"/clinical/patients/{patient.id}")
    block = tree.get_element_by_id("iemk-patient")
    assert css(block, "h2")[0].text_content() == "Документы ИЭМК"
    assert "Документов ИЭМК у пациента нет" in block.text_content()
    buttons = [b.text_content().strip() for b in css(block, "form#iemk-patient-actions button")]
    assert buttons == ["Получить и подписать документы", "Передать документ в ИЭМК"]
    remote = block.xpath(".//a[normalize-space()='Получить все СЭМД пациента']")[0]
    assert remote.get("hx-get") == f"/iemk/patients/{patient.id}/remote" and remote.get("hx-indicator")

    response = post(
        client,
        f"/iemk/patients/{patient.id}/action",
        {"action": "sign"},
        HX,
        token_url=f"/clinical/patients/{patient.id}",
    )
    block = html.fromstring(response.get_data(as_text=True))
    assert block.get("id") == "iemk-patient"
    docs = db.session.scalars(db.select(m.IemkDocument).where(m.IemkDocument.patient_id == patient.id)).all()
    assert {d.event_id for d in docs} == {visit.id, lab.id}
    signed = [d for d in docs if d.status == m.SIGNED]
    assert flash(block).startswith(f"Подписано документов: {len(signed)}.")
    assert signed, flash(block)
    for d in docs:
        assert status_text(block, d.id).startswith(d.status_label)
    assert row_ids(block) == [d.id for d in sorted(docs, key=lambda d: (d.event_at, d.id), reverse=True)]

    # and again: nothing left unsigned, or only what the controls refuse
    response = post(
        client,
        f"/iemk/patients/{patient.id}/action",
        {"action": "sign"},
        HX,
        token_url=f"/clinical/patients/{patient.id}",
    )
    message = flash(html.fromstring(response.get_data(as_text=True)))
    assert message == "Неподписанных документов у пациента нет." or message.startswith(
        "Подписано документов: 0."
    )

    # «Передать документ в ИЭМК» for a ticked row
    response = post(
        client,
        f"/iemk/patients/{patient.id}/action",
        {"action": "transfer", "ids": [signed[0].id]},
        HX,
        token_url=f"/clinical/patients/{patient.id}",
    )
    block = html.fromstring(response.get_data(as_text=True))
    assert flash(block) == "Поставлено в очередь на передачу в ИЭМК: 1."
    assert css(block, f"#iemk-status-{signed[0].id} input.iemk-in-flight")
    assert block.get_element_by_id("iemk-poll").get("hx-include").startswith("input.iemk-in-flight")

    # without htmx: back to the card with the message
    response = post(
        client,
        f"/iemk/patients/{patient.id}/action",
        {"action": "transfer"},
        token_url=f"/clinical/patients/{patient.id}",
    )
    assert response.status_code == 303 and response.headers["Location"].endswith(
        f"/clinical/patients/{patient.id}"
    )
    assert flash(get(client, response.headers["Location"])) == "Не выбрано ни одного документа."


def test_patient_block_refresh_fragment(app, client, region):
    a = region.a
    doc = make_doc(a)
    login(client, a.users["statistician"])
    tree = get(
        client,
        f"/iemk/patients/{a.patients[0].id}/documents",
        {"HX-Request": "true", "HX-Target": "iemk-patient"},
    )
    assert tree.get("id") == "iemk-patient" and row_ids(tree) == [doc.id]
    buttons = [b.text_content().strip() for b in css(tree, "form#iemk-patient-actions button")]
    assert buttons == ["Передать документ в ИЭМК"]  # a statistician does not sign


# --- «Получить все СЭМД пациента»: ИЭМК asked from the card -----------------------------------


@pytest.fixture
def sims(app):
    server, base_url = start_simulators(0, config={"IEMK_RESULT_DELAY": 0, "IEMK_CALLBACKS": False})
    yield base_url
    server.shutdown()
    server.server_close()


def test_patient_s_documents_in_iemk_are_listed_and_opened_readable(app, client, region, cert, sims):
    a = region.a
    point_at(sims, a.mo.id)
    doc = bring(make_doc(a), doc_user(a), "queued")
    upload(mo_id=a.mo.id)  # the job: registers the patient, opens the case, AddMedRecord
    delivery.poll_due(CHANNEL, now=utcnow() + timedelta(minutes=5))  # ИЭМК's answer, asked for
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(m.IemkDocument, doc.id).status == m.SAVED
    patient = a.patients[0]
    login(client, a.users["statistician"])

    tree = get(
        client, f"/iemk/patients/{patient.id}/remote", {"HX-Request": "true", "HX-Target": "iemk-remote"}
    )
    rows = [[" ".join(td.text_content().split()) for td in tr.xpath("td")] for tr in css(tree, "tbody tr")]
    assert len(rows) == 1
    assert rows[0][1:] == ["Протокол лабораторного исследования", a.mo.short_name, "Открыть"]
    opened = css(tree, "tbody a")[0]
    assert opened.get("hx-target") == "#iemk-remote-view"

    view = get(client, opened.get("href"), {"HX-Request": "true", "HX-Target": "iemk-remote-view"})
    assert css(view, "h3")[0].text_content() == "Протокол лабораторного исследования"
    headings = [h.text_content() for h in css(view, ".cda-section h4")]
    assert "РЕЗУЛЬТАТЫ ЛАБОРАТОРНЫХ ИССЛЕДОВАНИЙ" in headings and "ДИАГНОЗЫ" in headings
    cells = [" ".join(td.text_content().split()) for td in css(view, ".cda-section table td")]
    assert "Z34.0" in " ".join(cells)
    facts = {
        css(tr, "th")[0].text_content(): css(tr, "td")[0].text_content()
        for tr in css(view, ".iemk-cda table.kv tr")
    }
    assert facts["Пациент"] == "Иванова Мария Петровна"
    assert css(view, "details.packet-xml pre")[0].text_content().lstrip().startswith("<ClinicalDocument")
    saved = client.get(view.xpath("//a[normalize-space()='Скачать XML документа']")[0].get("href"))
    assert saved.status_code == 200 and "attachment" in saved.headers["Content-Disposition"]
    assert saved.get_data(as_text=True) == db.session.get(m.IemkDocument, doc.id).xml
    assert view.xpath("//a[contains(., 'PDF')]") == []  # a laboratory protocol has no PDF
    assert client.get(opened.get("href") + "?download=pdf").status_code == 404

    # without JavaScript the list and the document are pages of their own
    page = get(client, f"/iemk/patients/{patient.id}/remote")
    assert css(page, "h1")[0].text_content() == f"{patient.full_name}: СЭМД в ИЭМК"
    page = get(client, opened.get("href"))
    assert "РЕЗУЛЬТАТЫ ЛАБОРАТОРНЫХ ИССЛЕДОВАНИЙ" in page.text_content()

    # a document ИЭМК does not have: its own words, nothing breaks
    view = get(
        client, f"/iemk/patients/{patient.id}/remote/{uuid.uuid4()}", {"HX-Request": "true", "HX-Target": "x"}
    )
    assert flash(view).startswith("Не удалось получить документ из ИЭМК: ")
    assert "REGISTRY_ITEM_NOT_FOUND" in flash(view)


def test_iemk_unreachable_is_a_clear_message_in_the_block(app, client, region):
    a = region.a
    for key in ("iemk.pix_endpoint", "iemk.emk_endpoint", "iemk.registry_endpoint"):
        set_setting(key, "http://127.0.0.1:9/iemk", a.mo.id)
    set_setting("iemk.timeout", "2", a.mo.id)
    db.session.commit()
    patient = a.patients[1]
    login(client, a.users["doctor"])

    tree = get(
        client, f"/iemk/patients/{patient.id}/remote", {"HX-Request": "true", "HX-Target": "iemk-remote"}
    )
    message = flash(tree)
    assert message == "Не удалось получить документы из ИЭМК: ИЭМК недоступен: соединение отклонено"
    assert css(tree, "table") == []
    # the card itself is not touched by ИЭМК at all
    card = get(client, f"/clinical/patients/{patient.id}")
    assert css(card, "#iemk-patient") and css(card, "#iemk-remote")[0].text_content().strip() == ""
