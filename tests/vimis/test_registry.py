"""«Реестр СЭМД ВИМИС АКИНЕО» as its users see it: filters, legend, «+», pencil, mass operations."""

from __future__ import annotations

import itertools
import re
from datetime import date, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import html

from portal.clinical.intake import ingest_batch
from portal.exchange import delivery
from portal.exchange.models import JournalEntry, WorkItem
from portal.extensions import db
from portal.models_base import utcnow
from portal.vimis import models as m
from portal.vimis.channel import CHANNEL
from portal.vimis.services import current_version
from tests import factories
from tests.conftest import csrf_token, login

HX = {"HX-Request": "true", "HX-Target": "results"}
_ids = itertools.count(1)
ERROR_LINE = "Версия 1 СЭМД5 не прошла ФЛК: Нет адреса регистрации пациента"
ENVELOPE = (
    '<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><sendResult>'
    "<msg_id>{msg}</msg_id><status>0</status><description>Нет адреса регистрации пациента</description>"
    "</sendResult></S:Body></S:Envelope>"
)


# --- making SEMDs the way the portal does: an event through intake, the trigger hook makes the SEMD


def trigger(
    side,
    count: int = 1,
    *,
    kind: str = "exam_primary",
    care: str = "3",
    at: datetime | None = None,
    patient=None,
    doctor=None,
) -> list[m.Semd]:
    """Post `count` trigger events of one МО through intake; returns their SEMDs, newest first."""
    patient = patient or side.patients[0]
    doctor = doctor or side.doctor
    start = at or datetime.now().replace(microsecond=0) - timedelta(hours=3)
    records = []
    for k in range(count):
        record = {
            "type": "event",
            "id": f"reg-ev-{next(_ids)}",
            "kind": kind,
            "patient": patient.source_id,
            "mo": side.mo.source_id,
            "department": side.department.source_id,
            "doctor": doctor.source_id,
            "at": (start - timedelta(minutes=k)).isoformat(),
            "care_conditions": care,
        }
        if patient is side.patients[0]:
            record["pregnancy"] = side.pregnancy.source_id
        records.append(record)
    result = ingest_batch(records)
    db.session.commit()
    assert result.refused == 0, result.results
    ids = [r["id"] for r in records]
    from portal.clinical.models import ClinicalEvent

    semds = list(
        db.session.scalars(
            db.select(m.Semd)
            .join(ClinicalEvent, ClinicalEvent.id == m.Semd.event_id)
            .where(ClinicalEvent.source_id.in_(ids))
            .order_by(m.Semd.event_at.desc(), m.Semd.id.desc())
        )
    )
    assert len(semds) == count
    return semds


def _item(version: m.SemdVersion) -> WorkItem:
    return db.session.scalars(
        db.select(WorkItem)
        .where(WorkItem.subject_type == "semd_version", WorkItem.subject_id == version.id)
        .order_by(WorkItem.id.desc())
    ).first()


def finish(semd: m.Semd, status: str) -> m.Semd:
    """Bring the SEMD's current version to `status` through the delivery mechanism's own outcome
    handling, as the send job and the ВИМИС callback do: built, sent, then the ФЛК answer."""
    version = current_version(semd)
    item = _item(version)
    now = utcnow()
    version.xml = (
        f'<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="{version.document_uuid}"/></ClinicalDocument>'
    )
    version.built_at = version.sent_at = now
    version.msg_id = f"msg-{semd.id}-{version.number}"
    label = f"Версия {version.number} СЭМД{semd.semd_type}"
    delivery.apply_outcome(
        CHANNEL,
        item,
        delivery.Outcome.accepted(
            f"{label} доставлена в ВИМИС, ожидается результат ФЛК",
            external_id=version.msg_id,
            answer="<S:Envelope>sendDocumentResponse</S:Envelope>",
        ),
    )
    if status == m.PASSED:
        delivery.apply_outcome(
            CHANNEL,
            item,
            delivery.Outcome.done(
                f"{label} прошла ФЛК",
                answer="<S:Envelope>status 1</S:Envelope>",
                operation="Результат ФЛК (callback)",
            ),
        )
    elif status == m.ERROR:
        delivery.apply_outcome(
            CHANNEL,
            item,
            delivery.Outcome.failed(
                f"{label} не прошла ФЛК: Нет адреса регистрации пациента",
                answer=ENVELOPE.format(msg=version.msg_id),
                operation="Результат ФЛК (callback)",
            ),
        )
    db.session.commit()
    assert semd.status == status
    return semd


def build_failed(semd: m.Semd) -> m.Semd:
    """The version could not be built (data missing): error, nothing left for ВИМИС."""
    item = _item(current_version(semd))
    delivery.apply_outcome(
        CHANNEL, item, delivery.Outcome.failed("Нет адреса регистрации пациента"), operation="Формирование"
    )
    db.session.commit()
    return semd


def page(client, **args):
    response = client.get("/vimis/", query_string=args)
    assert response.status_code == 200, response.get_data(as_text=True)[:800]
    return html.fromstring(response.get_data(as_text=True))


def row_ids(doc) -> list[int]:
    return [int(tr.get("id").split("-")[1]) for tr in doc.xpath("//tr[contains(@class, 'semd-row')]")]


def legend(doc) -> dict[str, int | str]:
    """Status → count of the legend; «…» while it is a placeholder that loads itself."""
    counts = {}
    for item in doc.xpath("//*[@data-status]"):
        text = item.xpath(".//b[@class='count']")[0].text
        counts[item.get("data-status")] = int(text) if text.isdigit() else text
    return counts


def row(doc, semd_id: int):
    found = doc.xpath(f"//tr[@id='semd-{semd_id}']")
    assert found, f"row of SEMD {semd_id} not on the page"
    return found[0]


def ball(tr) -> str:
    return tr.xpath(".//td[contains(@class, 'ball')]/span")[0].get("class")


# --- the page


def test_page_lists_semds_of_the_own_mo_with_the_seed_columns(app, client, region):
    semd = trigger(region.a)[0]
    other = trigger(region.b)[0]
    login(client, region.a.users["doctor"])
    doc = page(client)
    assert doc.xpath("//h1")[0].text == "Реестр СЭМД ВИМИС АКИНЕО"
    headers = [
        th.text_content().strip() for th in doc.xpath("//table[contains(@class,'registry')]/thead//th")
    ]
    assert headers[3:] == [
        "СЭМД",
        "№ отправки",
        "Пациент",
        "Д.Р.",
        "Дата",
        "Мероприятие",
        "Срок",
        "Отделение",
        "Условия оказания МП",
        "Врач",
        "Статус",
    ]
    assert row_ids(doc) == [semd.id]  # МО «b» never reaches a user of МО «a»
    cells = [td.text_content().strip() for td in row(doc, semd.id).xpath("./td")]
    patient = region.a.patients[0]
    assert cells[3:13] == [
        "СЭМД 5",
        "1",
        patient.full_name,
        "06.05.1994",
        semd.event_at.strftime("%d.%m.%Y"),
        "Первичный осмотр",
        str(semd.gestation_weeks),
        region.a.department.name,
        "3",
        region.a.doctor.full_name,
    ]
    assert semd.gestation_weeks is not None
    status = row(doc, semd.id).xpath("./td[contains(@class,'status-line')]")[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d Появилось триггерное мероприятие", cells[13])
    assert status.get("title") == cells[13]  # the full line, whatever the column cuts off
    assert "yellow" in ball(row(doc, semd.id))
    # filters in the seed's order
    labels = [lbl.text.strip() for lbl in doc.xpath("//form[@id='filters']/label") if lbl.text]
    assert labels == ["МО", "Врач", "Даты мероприятий", "Пациент", "Мероприятие", "Статус", "СЭМД"]
    assert doc.xpath("//form[@id='filters']//input[@name='mass']")
    assert doc.xpath("//form[@id='filters']/a[.='Обновить']")
    assert other.id not in row_ids(page(client, mo=region.b.mo.id))  # a forced МО filter


def test_empty_result_is_a_friendly_russian_message(app, client, region):
    login(client, region.a.users["mo_admin"])
    doc = page(client)
    assert "СЭМД не найдены" in doc.xpath("//td[@class='empty']")[0].text_content()
    assert set(legend(doc).values()) == {0}


def test_each_filter_narrows_the_list_and_stays_in_the_url(app, client, region):
    a = region.a
    other_doctor = factories.make_staff(a.mo, last_name="Юдина", first_name="Анна", middle_name="Павловна")
    db.session.commit()
    exam = trigger(a)[0]
    ultrasound = trigger(
        a, kind="ultrasound_1", at=datetime.now().replace(microsecond=0) - timedelta(days=2)
    )[0]
    by_other = trigger(
        a,
        doctor=other_doctor,
        patient=a.patients[1],
        at=datetime.now().replace(microsecond=0) - timedelta(days=3),
    )[0]
    old = trigger(a, at=datetime.now().replace(microsecond=0) - timedelta(days=45))[0]
    finish(ultrasound, m.ERROR)
    login(client, a.users["statistician"])

    assert set(row_ids(page(client))) == {exam.id, ultrasound.id, by_other.id}  # last 30 days by default
    assert row_ids(page(client, doctor=other_doctor.id)) == [by_other.id]
    assert row_ids(page(client, patient="петр")) == [by_other.id]  # surname prefix, any case
    assert row_ids(page(client, patient="Петрова Ан")) == [by_other.id]
    assert row_ids(page(client, patient=str(a.patients[1].id))) == [by_other.id]
    assert row_ids(page(client, kind="ultrasound_1")) == [ultrasound.id]
    assert row_ids(page(client, status="error")) == [ultrasound.id]
    assert row_ids(page(client, semd="2")) == [ultrasound.id]
    period = {
        "from": (date.today() - timedelta(days=60)).isoformat(),
        "to": (date.today() - timedelta(days=40)).isoformat(),
    }
    assert row_ids(page(client, **period)) == [old.id]
    assert row_ids(page(client, **{"from": old.event_at.strftime("%d.%m.%Y")}))[-1] == old.id

    # every filter is in the form, in «Обновить» and in «Показать ещё», so the URL reproduces the list
    app.config["PAGE_SIZE"] = 1
    args = {
        "doctor": str(a.doctor.id),
        "from": period["from"],
        "to": date.today().isoformat(),
        "patient": "Иван",
        "kind": "exam_primary",
        "status": "queued",
        "semd": "5",
        "mass": "1",
    }
    trigger(a, count=2)
    doc = page(client, **args)
    form = doc.xpath("//form[@id='filters']")[0]
    assert form.get("method") == "get" and form.get("hx-push-url") == "true"
    assert form.xpath(".//select[@name='doctor']/option[@selected]")[0].get("value") == args["doctor"]
    assert form.xpath(".//input[@name='from']")[0].get("value") == args["from"]
    assert form.xpath(".//input[@name='patient']")[0].get("value") == "Иван"
    assert form.xpath(".//select[@name='kind']/option[@selected]")[0].get("value") == "exam_primary"
    assert form.xpath(".//select[@name='status']/option[@selected]")[0].get("value") == "queued"
    assert form.xpath(".//select[@name='semd']/option[@selected]")[0].get("value") == "5"
    assert form.xpath(".//input[@name='mass']")[0].get("checked") is not None
    for link in (form.xpath("./a[.='Обновить']")[0], doc.xpath("//tr[@id='more']//a")[0]):
        query = {k: v[0] for k, v in parse_qs(urlsplit(link.get("href")).query).items()}
        query.pop("after", None)
        assert query == {**args, "mo": str(a.mo.id)}


def test_central_admin_picks_any_mo_or_all_and_gets_that_mo_s_doctors(app, client, region):
    semd_a, semd_b = trigger(region.a)[0], trigger(region.b)[0]
    login(client, region.central)
    doc = page(client)
    assert set(row_ids(doc)) == {semd_a.id, semd_b.id}
    assert "МО, отделение" in [th.text for th in doc.xpath("//thead//th")]  # all МО: each row names its МО
    doc = page(client, mo=region.b.mo.id)
    assert row_ids(doc) == [semd_b.id]
    doctors = [o.get("value") for o in doc.xpath("//select[@name='doctor']/option")]
    assert doctors == ["", str(region.b.doctor.id)]
    # an htmx change of МО also refreshes the doctor list (out of band)
    response = client.get(
        "/vimis/", query_string={"mo": region.a.mo.id, "doctor": region.b.doctor.id}, headers=HX
    )
    fragment = response.get_data(as_text=True)
    assert 'id="doctor-filter" hx-swap-oob="true"' in fragment
    assert f'value="{region.a.doctor.id}"' in fragment and str(semd_a.id) in fragment
    assert client.get("/vimis/?mo=999999").status_code == 404


def test_bad_filter_values_get_a_russian_message(app, client, region):
    login(client, region.a.users["doctor"])
    for args, text in [
        ({"status": "lost"}, "Неизвестный статус «lost»"),
        ({"from": "31.02.2026"}, "должна быть в формате ГГГГ-ММ-ДД"),
        ({"from": "2026-05-02", "to": "2026-05-01"}, "позже его окончания"),
        ({"kind": "dance"}, "Неизвестное мероприятие «dance»"),
        ({"semd": "4"}, "Неизвестный тип СЭМД «4»"),
        ({"after": "yesterday"}, "Некорректный параметр страницы"),
        ({"after": "2026-01-01T00:00:00|99999999999"}, "Некорректный параметр страницы"),
        ({"doctor": "99999999999"}, "Некорректный врач «99999999999»"),
    ]:
        response = client.get("/vimis/", query_string=args)
        assert response.status_code == 400, args
        assert text in response.get_data(as_text=True)
    assert client.get("/vimis/", query_string={"doctor": region.b.doctor.id}).status_code == 403
    assert client.get("/vimis/", query_string={"doctor": 999999}).status_code == 404


def test_legend_counts_each_status_under_the_filters_except_status(app, client, region):
    semds = trigger(region.a, count=6)
    finish(semds[0], m.ERROR)
    finish(semds[1], m.ERROR)
    finish(semds[2], m.PASSED)
    finish(semds[3], m.DELIVERED)
    trigger(region.a, kind="ultrasound_1")  # another type: out of the «СЭМД 5» count below
    trigger(region.b, count=3)  # another МО: never counted
    login(client, region.a.users["doctor"])
    doc = page(client, status="error")  # МО and period only: counted with the page, from the index
    assert legend(doc) == {"pending": 0, "queued": 3, "delivered": 1, "passed": 1, "error": 2}
    assert sorted(row_ids(doc)) == sorted([semds[0].id, semds[1].id])
    assert "selected" in doc.xpath("//*[@data-status='error']")[0].get("class")
    labels = [
        e.text_content().strip() for e in doc.xpath("//*[@data-status]/span[contains(@class,'status')]")
    ]
    assert labels == list(m.STATUSES.values())

    # another filter (СЭМД 5): the page comes first, the legend loads itself right after
    doc = page(client, semd="5", status="error")
    placeholder = doc.xpath("//div[@id='legend']")[0]
    assert placeholder.get("hx-trigger") == "load" and set(legend(doc).values()) == {"…"}
    assert sorted(row_ids(doc)) == sorted([semds[0].id, semds[1].id])
    response = client.get(placeholder.get("hx-get"), headers={"HX-Request": "true"})
    loaded = html.fromstring(response.get_data(as_text=True))
    assert loaded.get("id") == "legend" and loaded.get("hx-trigger") is None
    assert legend(loaded) == {"pending": 0, "queued": 2, "delivered": 1, "passed": 1, "error": 2}
    # without JavaScript the same page with ?legend=1 counts inline
    assert legend(page(client, semd="5", status="error", legend="1"))["queued"] == 2


def test_show_more_walks_the_list_by_keyset_without_gaps(app, client, region):
    semds = trigger(
        region.a, count=5, at=datetime.now().replace(microsecond=0, second=0) - timedelta(hours=1)
    )
    app.config["PAGE_SIZE"] = 2
    login(client, region.a.users["doctor"])
    doc = page(client)
    seen = row_ids(doc)
    assert len(seen) == 2 and legend(doc)["queued"] == 5  # the legend counts every page, not just this one
    more = doc.xpath("//tr[@id='more']//a")[0]
    while more is not None:
        assert more.get("hx-target") == "#more" and more.get("href") == more.get("hx-get")
        response = client.get(more.get("href"), headers={"HX-Request": "true", "HX-Target": "more"})
        fragment = html.fragment_fromstring(f"<table>{response.get_data(as_text=True)}</table>")
        assert not fragment.xpath("//thead")  # only rows: they are appended under the others
        seen += row_ids(fragment)
        links = fragment.xpath("//tr[@id='more']//a")
        more = links[0] if links else None
    assert seen == [s.id for s in semds]


def test_plus_shows_the_journal_with_versions_xml_and_answer(app, client, region):
    semd = finish(trigger(region.a)[0], m.ERROR)
    login(client, region.a.users["doctor"])
    toggle = row(page(client), semd.id).xpath(".//a[contains(@class,'toggle')]")[0]
    assert toggle.text == "+" and toggle.get("href") == f"/vimis/semd/{semd.id}"  # no-JS fallback
    assert toggle.get("hx-get") == f"/vimis/semd/{semd.id}/journal" and toggle.get("hx-swap") == "afterend"
    response = client.get(toggle.get("hx-get"), headers={"HX-Request": "true"})
    assert response.status_code == 200
    fragment = html.fragment_fromstring(f"<table>{response.get_data(as_text=True)}</table>")
    journal = fragment.xpath(f"//tr[@id='journal-{semd.id}']")[0]
    lines = [
        [td.text_content().strip() for td in tr.xpath("./td")] for tr in journal.xpath(".//table//tbody/tr")
    ]
    assert [line[2] for line in lines] == [
        "Появилось триггерное мероприятие",
        "Версия 1 СЭМД5 доставлена в ВИМИС, ожидается результат ФЛК",
        ERROR_LINE,
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lines[0][0])
    assert journal.xpath(".//tr[contains(@class,'level-error')]/td")[2].text == ERROR_LINE
    link = journal.xpath(".//a[.='XML версии 1']")[0]
    assert link.get("href") == f"/vimis/semd/{semd.id}/versions/1.xml"
    assert client.get(link.get("href")).get_data(as_text=True).startswith("<ClinicalDocument")
    answer = journal.xpath(".//details[summary='Ответ ВИМИС']")[0].text_content()
    assert ERROR_LINE in answer and f"<msg_id>msg-{semd.id}-1</msg_id>" in answer

    card = client.get(f"/vimis/semd/{semd.id}")  # the page the «+» opens without JavaScript
    text = card.get_data(as_text=True)
    assert card.status_code == 200 and ERROR_LINE in text and "XML версии 1" in text and "Печать" in text
    assert "Триггерная точка" in text  # what ВИМИС receives with the document: docType and trigger point


def test_pencil_turns_the_row_yellow_and_a_sent_version_gets_a_successor(app, client, region):
    semd = finish(trigger(region.a)[0], m.ERROR)
    login(client, region.a.users["doctor"])
    form = row(page(client), semd.id).xpath(".//form")[0]
    assert form.get("action") == f"/vimis/semd/{semd.id}/send" and "в ВИМИС?" in form.get(
        "data-confirm-yes-no"
    )
    assert form.xpath(".//input[@name='csrf_token']")
    token = csrf_token(client, "/vimis/")
    response = client.post(form.get("action"), data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    tr = html.fragment_fromstring(f"<table>{response.get_data(as_text=True)}</table>").xpath("//tr")[0]
    assert tr.get("id") == f"semd-{semd.id}" and "yellow" in ball(tr)
    cells = [td.text_content().strip() for td in tr.xpath("./td")]
    assert cells[4] == "2"  # № отправки: version 1 went to ВИМИС, so this send is version 2
    assert "версия 2 СЭМД5 поставлена в очередь на отправку в ВИМИС" in cells[-1]
    db.session.expire_all()
    assert semd.status == m.QUEUED and [v.number for v in semd.versions] == [1, 2]

    # again while it waits: refused, nothing new
    response = client.post(form.get("action"), data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert "Не отправлено: уже ожидает доставки" in response.get_data(as_text=True)
    db.session.expire_all()
    assert len(semd.versions) == 2

    # without htmx: back to the registry with a message
    other = build_failed(trigger(region.a)[0])
    response = client.post(
        f"/vimis/semd/{other.id}/send",
        data={"csrf_token": token},
        headers={"Referer": "http://localhost/vimis/?status=error"},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/vimis/?status=error"
    db.session.expire_all()
    assert other.status == m.QUEUED and other.send_number == 1  # never sent: the same version again
    assert "поставлен в очередь на отправку в ВИМИС (версия 1)" in client.get("/vimis/").get_data(
        as_text=True
    )


def test_mass_operations_replace_pencils_and_send_or_cancel_with_a_summary(app, client, region):
    queued = trigger(region.a, count=3)
    failed = finish(trigger(region.a)[0], m.ERROR)
    login(client, region.a.users["mo_admin"])
    doc = page(client)
    assert doc.xpath("//form[contains(@action,'/send')]") and not doc.xpath("//input[@name='ids']")
    doc = page(client, mass="1")
    assert not doc.xpath("//form[contains(@action,'/send')]")  # the pencils are gone …
    assert doc.xpath("//thead//input[@data-check-all='ids']")  # … for checkboxes, header included
    assert len(doc.xpath("//tbody//input[@name='ids'][@form='bulk']")) == 4
    bulk = doc.xpath("//form[@id='bulk']")[0]
    buttons = {b.text: b for b in bulk.xpath(".//button")}
    assert set(buttons) == {"Отправить выделенные в ВИМИС", "Отменить отправку выделенных в ВИМИС"}
    assert "{n}" in buttons["Отправить выделенные в ВИМИС"].get("data-confirm-count")
    assert bulk.get("hx-indicator") == "#bulk-progress" and doc.xpath("//*[@id='bulk-progress']")
    hidden = {i.get("name"): i.get("value") for i in bulk.xpath(".//input[@type='hidden']")}
    assert hidden["mass"] == "1" and hidden["mo"] == str(region.a.mo.id)

    token = hidden.pop("csrf_token")
    ids = [s.id for s in queued[:2]] + [failed.id]
    response = client.post(
        "/vimis/bulk", data={**hidden, "csrf_token": token, "action": "cancel", "ids": ids}, headers=HX
    )
    text = response.get_data(as_text=True)
    assert (
        "Отменена отправка в ВИМИС: 2; не выполнено: 1 (отменить можно только СЭМД, ожидающий доставки"
        in text
    )
    result = html.fromstring(text)
    assert "black" in ball(row(result, queued[0].id)) and "red" in ball(row(result, failed.id))
    assert legend(result)["pending"] == 2 and result.xpath("//tbody//input[@name='ids']")  # still mass mode

    response = client.post(
        "/vimis/bulk",
        data={**hidden, "csrf_token": token, "action": "send", "ids": ids + [queued[2].id]},
        headers=HX,
    )
    text = response.get_data(as_text=True)
    assert "Поставлено в очередь на отправку в ВИМИС: 3; не выполнено: 1 (уже ожидает доставки" in text
    db.session.expire_all()
    assert {s.status for s in queued} | {failed.status} == {m.QUEUED}
    assert failed.send_number == 2

    # without htmx: a flash message and the registry with the same filters
    response = client.post("/vimis/bulk", data={**hidden, "csrf_token": token, "action": "send"})
    assert response.status_code == 302 and "mass=1" in response.headers["Location"]
    assert "Не выделено ни одного СЭМД." in client.get(response.headers["Location"]).get_data(as_text=True)


def test_bulk_with_another_mo_s_semd_changes_nothing(app, client, region):
    own = trigger(region.a)[0]
    foreign = trigger(region.b)[0]
    login(client, region.a.users["doctor"])
    token = csrf_token(client, "/vimis/")
    for ids, status in (([own.id, foreign.id], 403), ([own.id, 999999], 404)):
        response = client.post(
            "/vimis/bulk", data={"csrf_token": token, "action": "cancel", "ids": ids}, headers=HX
        )
        assert response.status_code == status
    response = client.post("/vimis/bulk", data={"csrf_token": token, "action": "erase", "ids": [own.id]})
    assert response.status_code == 400 and "Неизвестное действие" in response.get_data(as_text=True)
    response = client.post("/vimis/bulk", data={"csrf_token": token, "action": "send", "ids": ["1e9999"]})
    assert response.status_code == 400 and "Некорректный список СЭМД" in response.get_data(as_text=True)
    db.session.expire_all()
    assert own.status == foreign.status == m.QUEUED
    assert (
        db.session.scalar(
            db.select(db.func.count())
            .select_from(JournalEntry)
            .where(JournalEntry.operation == "Отмена отправки")
        )
        == 0
    )


@pytest.mark.parametrize("role", ["mo_admin", "doctor"])
def test_every_fragment_and_the_xml_refuse_another_mo(app, client, region, role):
    foreign = finish(trigger(region.b)[0], m.ERROR)
    own = finish(trigger(region.a)[0], m.ERROR)
    login(client, region.a.users[role])
    token = csrf_token(client, "/vimis/")
    for semd, expected in ((foreign, 403), (own, 200)):
        for url in (
            f"/vimis/semd/{semd.id}",
            f"/vimis/semd/{semd.id}/journal",
            f"/vimis/semd/{semd.id}/status",
            f"/vimis/semd/{semd.id}/versions/1.xml",
        ):
            assert client.get(url, headers={"HX-Request": "true"}).status_code == expected, url
    assert client.post(f"/vimis/semd/{foreign.id}/send", data={"csrf_token": token}).status_code == 403
    assert client.get("/vimis/semd/999999/journal").status_code == 404
    db.session.expire_all()
    assert foreign.status == m.ERROR and len(foreign.versions) == 1
    assert row_ids(page(client)) == [own.id]


def test_a_role_without_the_registry_gets_403(app, client, region):
    trigger(region.a)
    login(client, region.a.users["ers_operator"])
    assert client.get("/vimis/").status_code == 403


def test_status_cell_polls_while_in_flight_and_stops_at_a_final_status(app, client, region):
    semd = trigger(region.a)[0]
    login(client, region.a.users["doctor"])
    cell = row(page(client), semd.id).xpath("./td[contains(@class,'status-line')]")[0]
    assert cell.get("hx-trigger") == "every 5s" and cell.get("hx-get") == f"/vimis/semd/{semd.id}/status"
    finish(semd, m.DELIVERED)
    fragment = client.get(cell.get("hx-get"), headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'hx-trigger="every 5s"' in fragment and "доставлена в ВИМИС" in fragment
    delivery.apply_outcome(
        CHANNEL,
        _item(current_version(semd)),
        delivery.Outcome.done("Версия 1 СЭМД5 прошла ФЛК"),
        operation="Результат ФЛК",
    )
    db.session.commit()
    fragment = client.get(cell.get("hx-get"), headers={"HX-Request": "true"}).get_data(as_text=True)
    cells = html.fragment_fromstring(f"<table><tr>{fragment}</tr></table>").xpath("//td")
    assert cells[0].get("hx-trigger") is None and "Версия 1 СЭМД5 прошла ФЛК" in cells[0].text_content()
    assert cells[1].get("id") == f"ball-{semd.id}" and cells[1].get("hx-swap-oob") == "true"
    assert "green" in ball(cells[1].getparent())
