"""«Пакеты обмена с ТФОМС» and «Свободные места в стационарах»: list, filters, counts, a packet's
«Тег: Данные», scoping, «Не отправлять повторно» / «Снять запрет отправки», the free-beds request."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime, timedelta
from html import unescape

import pytest

from portal.admin.models import AuditLog
from portal.exchange.models import ServiceRun
from portal.extensions import db
from portal.models_base import utcnow
from portal.tfoms import packet_views, packets
from portal.tfoms.models import (
    INCOMING,
    OUTGOING,
    PACKET_ACCEPTED,
    PACKET_PROCESSED,
    PACKET_QUEUED,
    PACKET_REJECTED,
    PACKET_SENT,
    TfomsPacket,
)
from tests.conftest import csrf_token, login

URL = "/tfoms/packets"
RESULTS = {"HX-Request": "true", "HX-Target": "packets-results"}

PACKET_XML = (
    '<?xml version="1.0" encoding="utf-8"?><HOSPITALISATION><HEADER><OPERATIONTYPE>Insert</OPERATIONTYPE>'
    "<DATA>2026-05-04</DATA><CODE_MO>350001</CODE_MO></HEADER><BODY><MED_CARD_NUMBER>К-17</MED_CARD_NUMBER>"
    "</BODY></HOSPITALISATION>"
)


def _packet(
    mo,
    *,
    status: str = PACKET_SENT,
    packet_type: str = "HOSPITALISATION",
    direction: str = OUTGOING,
    channel: str = "tfoms_auto",
    created_at: datetime | None = None,
    **kw,
) -> TfomsPacket:
    packet = TfomsPacket(
        channel=channel,
        direction=direction,
        mo_id=mo.id if mo is not None else None,
        packet_type=packet_type,
        operation=kw.pop("operation", "Insert"),
        message_id=kw.pop("message_id", str(uuid.uuid4())),
        status=status,
        created_at=created_at or utcnow() - timedelta(minutes=5),
        **kw,
    )
    db.session.add(packet)
    db.session.flush()
    return packet


def _text(response) -> str:
    return unescape(re.sub(r"\s+", " ", response.get_data(as_text=True)))


def _row_ids(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr id="packet-(\d+)"', page)]


def _counts(page: str) -> dict[str, int]:
    legend = re.search(r'<div id="packets-counts".*?</div>', page).group(0)
    return {
        code: int(n) for code, n in re.findall(r'data-status="(\w*)">.*?<b class="count">(\d+)</b>', legend)
    }


@pytest.fixture
def data(region):
    now = utcnow()
    a, b = region.a.mo, region.b.mo
    packets_a = {
        "sent": _packet(
            a, status=PACKET_SENT, created_at=now - timedelta(hours=1), status_text="Ожидает ответа"
        ),
        "rejected": _packet(
            a,
            status=PACKET_REJECTED,
            packet_type="MOTION_IN_HOSPITAL",
            operation="Update",
            created_at=now - timedelta(hours=2),
            status_text="Получен ответ с ошибкой: неизвестное отделение",
        ),
        "accepted": _packet(a, status=PACKET_ACCEPTED, created_at=now - timedelta(hours=3)),
        "incoming": _packet(
            a,
            status=PACKET_PROCESSED,
            packet_type="POLIS",
            direction=INCOMING,
            operation=None,
            created_at=now - timedelta(hours=4),
        ),
        "prof": _packet(
            a,
            status=PACKET_ACCEPTED,
            packet_type="PERS_LIST",
            channel="tfoms_prof",
            created_at=now - timedelta(hours=5),
        ),
        "old": _packet(a, status=PACKET_ACCEPTED, created_at=now - timedelta(days=20)),
    }
    other = _packet(b, status=PACKET_REJECTED, created_at=now - timedelta(hours=1))
    db.session.commit()
    return packets_a, other


def test_list_of_own_mo_newest_first_with_counts(client, region, data):
    own, other = data
    login(client, region.a.users["mo_admin"])
    page = _text(client.get(URL))
    assert "<h1>Пакеты обмена с ТФОМС</h1>" in page
    # the last seven days, newest first; the packet of 20 days ago and another МО's are not shown
    assert _row_ids(page) == [own[k].id for k in ("sent", "rejected", "accepted", "incoming", "prof")]
    assert own["sent"].message_id in page and other.message_id not in page
    assert _counts(page) == {
        "": 5, "queued": 0, "build_error": 0, "built": 0, "sent": 1, "send_error": 0,
        "accepted": 2, "rejected": 1, "received": 0, "processed": 1, "refused": 0,
    }  # fmt: skip
    row = re.search(rf'<tr id="packet-{own["rejected"].id}".*?</tr>', page).group(0)
    assert "MOTION_IN_HOSPITAL" in row and "Изменение" in row and "Отклонен ТФОМС" in row
    assert "packet-status-err" in row and "Получен ответ с ошибкой: неизвестное отделение" in row
    assert "Из ТФОМС" in re.search(rf'<tr id="packet-{own["incoming"].id}".*?</tr>', page).group(0)
    # an МО user has no МО filter; the filters are in the form
    assert 'name="mo"' not in page
    for name in ("from", "to", "channel", "direction", "type", "status", "q"):
        assert f'name="{name}"' in page


def test_filters_kept_in_the_url(client, region, data):
    own, _other = data
    login(client, region.a.users["statistician"])

    def ids(query: str) -> list[int]:
        response = client.get(f"{URL}?{query}", headers=RESULTS)
        assert response.status_code == 200
        page = _text(response)
        assert page.lstrip().startswith('<div id="packets-results"')
        return _row_ids(page)

    assert ids("status=rejected") == [own["rejected"].id]
    assert ids("type=POLIS") == [own["incoming"].id]
    assert ids("direction=in") == [own["incoming"].id]
    assert ids("direction=out&status=accepted") == [own["accepted"].id, own["prof"].id]
    assert ids("channel=tfoms_prof") == [own["prof"].id]
    assert ids(f"q={own['accepted'].message_id[:13].upper()}") == [own["accepted"].id]
    old_day = own["old"].created_at.date()
    assert ids(f"from={old_day:%d.%m.%Y}&to={old_day.isoformat()}") == [own["old"].id]
    # the status counts keep the other filters but not the status one
    page = _text(client.get(f"{URL}?status=rejected&channel=tfoms_auto"))
    counts = _counts(page)
    assert counts[""] == 4 and counts["accepted"] == 1 and counts["rejected"] == 1
    assert '<option value="rejected" selected>' in page and '<option value="tfoms_auto" selected>' in page
    for bad in ("status=lost", "direction=up", "from=31.02.2026", "channel=vimis", "type=a;b", "after=x"):
        assert client.get(f"{URL}?{bad}").status_code == 400, bad


def test_keyset_pages_of_fifty(client, region):
    start = utcnow() - timedelta(hours=2)
    made = [_packet(region.a.mo, created_at=start + timedelta(seconds=n)) for n in range(53)]
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    page = _text(client.get(URL))
    newest_first = [p.id for p in reversed(made)]
    assert _row_ids(page) == newest_first[:50]
    more = re.search(r'<tr id="packets-more">.*?hx-get="([^"]+)"', page).group(1)
    rest = _text(client.get(more, headers={"HX-Request": "true", "HX-Target": "packets-more"}))
    assert _row_ids(rest) == newest_first[50:]
    assert 'class="packet-row later-page"' in rest and "packets-more" not in rest


def test_row_expands_to_tag_and_data_lines(client, region):
    packet = _packet(
        region.a.mo,
        status=PACKET_REJECTED,
        data={"answer": False, "packet": {"MED_CARD_NUMBER": "К-17", "HOSPITALISATION_DATE": "2026-05-04"}},
        answer={"answer": True, "packet": {"RESULT": "ERROR", "RESULT_NAME": "Неизвестное отделение"}},
        xml=PACKET_XML,
        answer_xml="<ANSWER><BODY><RESULTS><RESULT>ERROR</RESULT></RESULTS></BODY></ANSWER>",
    )
    without_json = _packet(region.a.mo, xml=PACKET_XML)
    db.session.commit()
    login(client, region.a.users["statistician"])
    list_page = _text(client.get(URL))
    assert (
        f'hx-get="/tfoms/packets/{packet.id}"' in list_page
        and f'data-expands="packet-detail-{packet.id}"' in list_page
    )
    hx = {"HX-Request": "true", "HX-Target": f"packet-{packet.id}"}
    page = _text(client.get(f"/tfoms/packets/{packet.id}", headers=hx))
    assert page.strip().startswith(f'<tr id="packet-detail-{packet.id}" class="packet-detail-row">')
    data, answer = page.split("<h3>Ответ")
    assert '<span class="journal-tag">MED_CARD_NUMBER:</span> К-17' in data
    assert '<span class="journal-tag">HOSPITALISATION_DATE:</span> 2026-05-04' in data
    assert '<span class="journal-tag">RESULT_NAME:</span> Неизвестное отделение' in answer
    assert "<summary>XML пакета</summary>" in page and "&lt;MED_CARD_NUMBER&gt;" in response_html(
        client, f"/tfoms/packets/{packet.id}", hx
    )
    # no JSON stored: the XML's leaves
    page = _text(client.get(f"/tfoms/packets/{without_json.id}", headers=hx))
    assert '<span class="journal-tag">CODE_MO:</span> 350001' in page and "Ответа нет." in page
    # without htmx: a page of its own
    standalone = _text(client.get(f"/tfoms/packets/{packet.id}"))
    assert packet.message_id in standalone and "Данные пакета" in standalone and "К-17" in standalone


def response_html(client, url: str, headers: dict) -> str:
    return client.get(url, headers=headers).get_data(as_text=True)


def test_mo_scoping_and_central_admin_sees_every_mo(client, region, data):
    own, other = data
    login(client, region.a.users["mo_admin"])
    assert client.get(f"/tfoms/packets/{other.id}").status_code == 404
    token = csrf_token(client, URL)
    for action in ("forbid", "allow"):
        response = client.post(f"/tfoms/packets/{other.id}/{action}", data={"csrf_token": token})
        assert response.status_code == 404
    db.session.refresh(other)
    assert other.no_resend is False
    # ?mo= of another МО is ignored for an МО user
    page = _text(client.get(f"{URL}?mo={region.b.mo.id}"))
    assert other.message_id not in page and own["sent"].message_id in page

    login(client, region.central)
    page = _text(client.get(URL))
    assert other.message_id in page and own["sent"].message_id in page
    assert 'name="mo"' in page and "<th>МО</th>" in page and region.b.mo.short_name in page
    page = _text(client.get(f"{URL}?mo={region.b.mo.id}", headers=RESULTS))
    assert _row_ids(page) == [other.id]
    assert client.get(f"/tfoms/packets/{other.id}").status_code == 200


def test_statistician_sees_no_actions_and_may_not_post(client, region, data):
    own, _other = data
    login(client, region.a.users["statistician"])
    page = _text(client.get(URL))
    assert "Не отправлять повторно" not in page and "Действия" not in page
    token = csrf_token(client, URL)
    response = client.post(f"/tfoms/packets/{own['rejected'].id}/forbid", data={"csrf_token": token})
    assert response.status_code == 403
    db.session.refresh(own["rejected"])
    assert own["rejected"].no_resend is False
    for role in ("doctor", "ers_operator", "ers_accountant"):
        login(client, region.a.users[role])
        assert client.get(URL).status_code == 403


def test_forbid_and_allow_resend(client, region, data):
    own, _other = data
    rejected = own["rejected"]
    login(client, region.a.users["mo_admin"])
    page = _text(client.get(URL))
    row = re.search(rf'<tr id="packet-{rejected.id}".*?</tr>', page).group(0)
    assert f'hx-post="/tfoms/packets/{rejected.id}/forbid"' in row and "hx-confirm=" in row
    # an accepted or incoming packet has no «Не отправлять повторно»
    for key in ("accepted", "incoming"):
        assert "Не отправлять повторно" not in re.search(
            rf'<tr id="packet-{own[key].id}".*?</tr>', page
        ).group(0)

    token = csrf_token(client, URL)
    hx = {"HX-Request": "true", "HX-Target": f"packet-{rejected.id}"}
    response = client.post(
        f"/tfoms/packets/{rejected.id}/forbid", data={"csrf_token": token, "status": "rejected"}, headers=hx
    )
    assert response.status_code == 200
    page = _text(response)
    assert page.strip().startswith(f'<tr id="packet-{rejected.id}"')
    assert "Запрет повторной отправки" in page and "Снять запрет отправки" in page
    assert "повторная отправка запрещена" in page and 'id="packets-counts"' in page
    db.session.refresh(rejected)
    assert rejected.no_resend is True
    assert db.session.scalar(
        db.select(AuditLog).where(
            AuditLog.action == "tfoms.packet.forbid", AuditLog.object_id == str(rejected.id)
        )
    )

    # forbidding twice is refused with the reason
    response = client.post(f"/tfoms/packets/{rejected.id}/forbid", data={"csrf_token": token}, headers=hx)
    assert "flash-error" in _text(response) and "уже запрещена" in _text(response)

    # «Снять запрет отправки»: the flag goes and the packet is queued again; the list polls again
    response = client.post(f"/tfoms/packets/{rejected.id}/allow", data={"csrf_token": token}, headers=hx)
    page = _text(response)
    assert "запрет отправки снят" in page and "Ожидает отправки" in page
    assert 'id="packets-poll"' in page and "every 10s" in page
    db.session.refresh(rejected)
    assert rejected.no_resend is False and rejected.status == PACKET_QUEUED

    # a plain form: a redirect to the list with the message
    response = client.post(
        f"/tfoms/packets/{own['sent'].id}/forbid", data={"csrf_token": token, "status": "sent"}
    )
    assert response.status_code == 303 and "status=sent" in response.headers["Location"]
    assert "повторная отправка запрещена" in _text(client.get(response.headers["Location"]))
    # without the CSRF token nothing happens
    assert client.post(f"/tfoms/packets/{own['accepted'].id}/forbid", headers=hx).status_code == 400


def test_list_polls_itself_while_a_packet_is_in_flight(client, region):
    _packet(region.a.mo, status=PACKET_ACCEPTED)
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    page = _text(client.get(URL))
    assert 'id="packets-poll"' in page and "hx-trigger=" not in re.search(
        r'<span id="packets-poll".*?>', page
    ).group(0)
    _packet(region.a.mo, status=PACKET_QUEUED)
    db.session.commit()
    page = _text(client.get(URL, headers=RESULTS))
    poll = re.search(r'<span id="packets-poll".*?>', page).group(0)
    assert 'hx-trigger="every 10s' in poll and 'hx-target="#packets-results"' in poll
    assert "список обновляется каждые 10 с" in page


def test_print_lists_the_filtered_packets_with_the_filters(client, region, data):
    own, other = data
    login(client, region.central)
    page = _text(client.get(f"{URL}/print?status=accepted&channel=tfoms_auto"))
    assert "data-print" in page and "<th>Статус</th><td>Принят ТФОМС</td>" in page
    assert "<th>Сервис</th><td>Сервис автоматизированного взаимодействия с ТФОМС</td>" in page
    assert "<th>МО</th><td>Все МО</td>" in page
    assert _row_ids(page) == [own["accepted"].id] and other.message_id not in page
    list_page = _text(client.get(f"{URL}?status=accepted&channel=tfoms_auto"))
    assert "/tfoms/packets/print?" in list_page


def test_journal_run_links_to_the_service_packets(client, region):
    today = utcnow().date()  # the page's days are UTC, as its times
    started = datetime.combine(today - timedelta(days=1), datetime.min.time()) + timedelta(hours=23)
    run = ServiceRun(
        service="tfoms_auto",
        mo_id=None,
        started_at=started,
        finished_at=started + timedelta(hours=2),
        result="ok",
        total=0,
        errors=0,
        manual=False,
    )
    other = ServiceRun(
        service="cleanup_login_failures",
        started_at=started,
        finished_at=started,
        result="ok",
        total=0,
        errors=0,
    )
    db.session.add_all([run, other])
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    page = client.get(f"/journal/?run={run.id}").get_data(as_text=True)
    link = re.search(r'<a href="([^"]+)">Пакеты сервиса</a>', page).group(1)
    assert unescape(link) == (
        f"/tfoms/packets?channel=tfoms_auto&from={started.date().isoformat()}&to={today.isoformat()}"
    )
    assert client.get(unescape(link)).status_code == 200
    assert "Пакеты сервиса" not in client.get(f"/journal/?run={other.id}").get_data(as_text=True)


def test_menu_items(client, region):
    login(client, region.a.users["mo_admin"])
    page = _text(client.get("/"))
    assert '<a href="/tfoms/packets">Пакеты обмена с ТФОМС</a>' in page
    assert '<a href="/tfoms/free-beds">Свободные места в стационарах</a>' in page
    login(client, region.a.users["doctor"])
    page = _text(client.get("/"))
    assert "Пакеты обмена с ТФОМС" not in page and "Свободные места в стационарах" in page


# --- «Свободные места в стационарах» ------------------------------------------------------------


def test_free_beds_form(client, region):
    login(client, region.a.users["doctor"])
    page = _text(client.get("/tfoms/free-beds"))
    assert "<h1>Свободные места в стационарах</h1>" in page
    assert (
        f'<option value="{region.b.mo.id}">{region.b.mo.short_name} ({region.b.mo.f003_code})</option>'
        in page
    )
    assert '<option value="3">3. Патологии беременности</option>' in page
    assert "Запросить" in page and "Запрос в ТФОМС…" in page and 'hx-indicator="#free-beds-progress"' in page
    assert client.get("/tfoms/free-beds?profile=999&ask=1").status_code == 400
    assert client.get("/tfoms/free-beds?mo=999999&ask=1").status_code == 400
    login(client, region.a.users["statistician"])
    assert client.get("/tfoms/free-beds").status_code == 403


def test_free_beds_answer_sorted_by_free_places(client, region, monkeypatch):
    asked = {}

    def fake(user, *, target_mo_id, profile):
        asked.update(user=user.id, mo=target_mo_id, profile=profile)
        row = {"branch": "001", "division": "17", "care_profile": 136, "free_child": 0}
        return packets.FreeBeds(
            [
                {
                    **row,
                    "mo_name": "РД № 1",
                    "division_name": "Патология",
                    "profile": 3,
                    "free": 2,
                    "free_adult": 2,
                    "actual_on": date(2026, 5, 4),
                },
                {
                    **row,
                    "mo_name": "РД № 2",
                    "division_name": "Обсервация",
                    "profile": 2,
                    "free": 11,
                    "free_adult": 10,
                    "free_child": 1,
                    "actual_on": "2026-05-04",
                },
            ],
            None,
            utcnow(),
            0.42,
        )

    monkeypatch.setattr(packets, "free_beds", fake)
    login(client, region.a.users["doctor"])
    hx = {"HX-Request": "true", "HX-Target": "free-beds-result"}
    response = client.get(f"/tfoms/free-beds?ask=1&mo={region.b.mo.id}&profile=3", headers=hx)
    page = _text(response)
    assert page.strip().startswith('<section id="free-beds-result"')
    assert asked == {"user": region.a.users["doctor"].id, "mo": region.b.mo.id, "profile": 3}
    rows = re.findall(r"<tr> <td class=\"nowrap\">(.*?)</td>.*?<td class=\"num free-count\">(\d+)</td>", page)
    assert rows == [("РД № 2", "11"), ("РД № 1", "2")]
    assert "2. Для беременных и рожениц" in page and "04.05.2026" in page and "0,4 с" in page
    for header in ("МО", "Подразделение", "Отделение", "Профиль койки", "Дата актуальности"):
        assert f"<th>{header}</th>" in page
    # the whole page with the answer, for a link or a reload
    page = _text(client.get(f"/tfoms/free-beds?ask=1&mo={region.b.mo.id}&profile=3"))
    assert "<h1>Свободные места в стационарах</h1>" in page and "Обсервация" in page
    assert f'<option value="{region.b.mo.id}" selected>' in page


def test_free_beds_timeout_is_an_alert(client, region, monkeypatch):
    monkeypatch.setattr(
        packets,
        "free_beds",
        lambda user, **kw: packets.FreeBeds(
            [], "ТФОМС не ответил за 15 с. Повторите запрос позже.", utcnow(), 15.0
        ),
    )
    login(client, region.a.users["mo_admin"])
    page = _text(
        client.get("/tfoms/free-beds?ask=1", headers={"HX-Request": "true", "HX-Target": "free-beds-result"})
    )
    assert (
        '<div class="flash flash-error" role="alert">ТФОМС не ответил за 15 с. Повторите запрос позже.</div>'
        in page
    )
    assert "<table" not in page
    monkeypatch.setattr(packets, "free_beds", lambda user, **kw: packets.FreeBeds([], None, utcnow(), 0.1))
    page = _text(client.get("/tfoms/free-beds?ask=1"))
    assert "Свободных мест по условиям запроса нет." in page


def test_packet_view_helpers():
    rows = packet_views.display_rows(
        [{"mo_name": "А", "free": "3", "free_adult": None, "free_child": 1, "profile": 4, "actual_on": None}]
    )
    assert (
        rows[0]["free"] == 3 and rows[0]["free_adult"] == 0 and rows[0]["profile_name"] == "Гинекологические"
    )
    assert rows[0]["actual_on"] == ""
    assert packet_views.tag_lines({"answer": False, "packet": {"A": {"B": "1"}, "C": [1, 2]}}, None) == [
        ("A.B", "1"), ("C[0]", "1"), ("C[1]", "2"),
    ]  # fmt: skip
