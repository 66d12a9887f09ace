"""GET /api/v1/events/<source_event_id>/semd: what the source MIS learns about its event's SEMD."""

from __future__ import annotations

import pytest

from portal.auth.models import ApiToken, hash_token
from portal.clinical.intake import ingest_batch
from portal.extensions import db
from portal.vimis import models as m
from tests.vimis.test_registry import ERROR_LINE, finish, trigger

TOKEN = "feedback-token-0001"


@pytest.fixture
def token(app):
    db.session.add(ApiToken(name="МИС региона", token_hash=hash_token(TOKEN), prefix=TOKEN[:8]))
    db.session.commit()
    return TOKEN


def get(client, source_id: str, token: str | None = TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(f"/api/v1/events/{source_id}/semd", headers=headers)


def test_an_event_whose_semd_failed_names_the_error_and_the_versions(app, client, region, token):
    semd = finish(trigger(region.a)[0], m.ERROR)
    response = get(client, semd.event.source_id)
    assert response.status_code == 200 and response.is_json
    body = response.get_json()
    assert body["event"] == semd.event.source_id
    answer = body["semd"]
    assert answer["type"] == 5 and answer["title"] == "Прием (осмотр) врача-специалиста"
    assert answer["send_number"] == 1
    assert (answer["status"], answer["status_label"]) == ("error", "Ошибка")
    assert answer["error"] == ERROR_LINE == answer["last_message"]
    assert answer["last_message_at"] == semd.last_message_at.isoformat()
    (version,) = answer["versions"]
    assert version["number"] == 1 and version["result"] == "error" and version["answer"] == ERROR_LINE
    assert version["sent_at"] == semd.versions[0].sent_at.isoformat()
    assert version["xml_url"] == f"http://localhost/vimis/semd/{semd.id}/versions/1.xml"


def test_a_queued_semd_has_no_error_and_its_unbuilt_version_no_xml(app, client, region, token):
    semd = trigger(region.a)[0]
    body = get(client, semd.event.source_id).get_json()["semd"]
    assert body["status"] == "queued" and body["status_label"] == "Ожидает доставки в ВИМИС"
    assert body["error"] is None and body["last_message"] == "Появилось триггерное мероприятие"
    assert body["versions"] == [
        {
            "number": 1,
            "built_at": None,
            "sent_at": None,
            "answered_at": None,
            "result": None,
            "answer": None,
            "xml_url": None,
        }
    ]


def test_unknown_event_and_event_without_semd_are_404_saying_which(app, client, region, token):
    response = get(client, "no-such-event")
    assert response.status_code == 404
    assert response.get_json()["message"] == "Мероприятие «no-such-event» не найдено: МИС его не передавала."
    a = region.a
    ingest_batch(
        [
            {
                "type": "event",
                "id": "outcome-1",
                "kind": "pregnancy_outcome",
                "patient": a.patients[0].source_id,
                "mo": a.mo.source_id,
                "at": "2026-05-01T10:00:00",
            }
        ]
    )
    db.session.commit()
    response = get(client, "outcome-1")
    assert response.status_code == 404
    assert "не является триггерным" in response.get_json()["message"]


def test_the_token_is_required(app, client, region, token):
    semd = trigger(region.a)[0]
    assert get(client, semd.event.source_id, token=None).status_code == 401
    assert get(client, semd.event.source_id, token="wrong").status_code == 401


def test_openapi_describes_the_feedback(app, client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    operation = paths["/events/{source_event_id}/semd"]["get"]
    assert set(operation["responses"]) >= {"200", "401", "404"}
