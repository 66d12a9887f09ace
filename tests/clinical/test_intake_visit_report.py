"""Signed visit reports («емиас», seed 2.2) as the source MIS sends them over POST /api/v1/records:
a PDF of an outpatient visit that ИЭМК gets attached to the visit's Амбулаторный эпикриз; and the
demo region that carries some of them."""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import date, datetime

import pytest

from portal.admin.models import Certificate
from portal.auth.models import ApiToken, hash_token
from portal.clinical.demo import demo_records
from portal.clinical.models import ClinicalEvent
from portal.extensions import db
from portal.iemk.models import VisitReport

TOKEN = "test-intake-visit-report"
URL = "/api/v1/records"
TODAY = date(2026, 11, 24)
PDF = b"%PDF-1.7\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"
SIGNATURE = b"\x30\x82\x01\x0a\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02"  # the start of a CMS SignedData


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_json()["results"]


def visits() -> list[dict]:
    """An МО with a women's clinic, a patient and her events: two visits, a lab test, an inpatient exam."""
    event = {
        "type": "event",
        "patient": "pat-1",
        "mo": "mo-1",
        "department": "dep-1",
        "doctor": "doc-1",
        "data": {},
    }
    return [
        {"type": "mo", "id": "mo-1", "name": "ГБУЗ «Родильный дом № 1»", "registry_number": "350001"},
        {
            "type": "department",
            "id": "dep-1",
            "mo": "mo-1",
            "name": "Женская консультация",
            "kind": "outpatient",
        },
        {
            "type": "staff",
            "id": "doc-1",
            "mo": "mo-1",
            "last_name": "Смирнова",
            "first_name": "Ольга",
            "position": "врач-акушер-гинеколог",
        },
        {
            "type": "patient",
            "id": "pat-1",
            "mo": "mo-1",
            "last_name": "Иванова",
            "first_name": "Мария",
            "birth_date": "1994-05-06",
        },
        {**event, "id": "ev-1", "kind": "exam_primary", "at": "2026-03-12T09:30:00", "care_conditions": "3"},
        {**event, "id": "ev-2", "kind": "exam_repeat", "at": "2026-04-10T10:00:00"},
        {**event, "id": "ev-lab", "kind": "lab_blood", "at": "2026-03-13T08:15:00", "care_conditions": "3"},
        {
            **event,
            "id": "ev-stat",
            "kind": "exam_repeat",
            "at": "2026-05-02T11:00:00",
            "care_conditions": "1",
        },
    ]


def report(**overrides) -> dict:
    record = {
        "type": "visit_report",
        "id": "rep-1",
        "event": "ev-1",
        "file_name": "Протокол осмотра 12.03.2026.pdf",
        "content": b64(PDF),
        "signature": b64(SIGNATURE),
        "signed_by": "Смирнова Ольга, врач-акушер-гинеколог",
        "signed_at": "2026-03-12T09:55:00",
    }
    record.update(overrides)
    return record


def stored_reports() -> list[VisitReport]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(VisitReport).order_by(VisitReport.id)))


# --- Stored --------------------------------------------------------------------------------------


def test_a_valid_report_is_stored_with_its_visit(client, token):
    results = post(client, [report(), *visits()])  # the report may come before its visit in a batch

    assert results[0] == {"type": "visit_report", "id": "rep-1", "status": "stored"}
    [row] = stored_reports()
    event = db.session.scalar(db.select(ClinicalEvent).where(ClinicalEvent.source_id == "ev-1"))
    assert row.source_id == "rep-1" and row.event_id == event.id and row.event.kind == "exam_primary"
    assert row.mo_id == event.mo_id, "the report's МО is its visit's"
    assert row.file_name == "Протокол осмотра 12.03.2026.pdf"
    assert bytes(row.content) == PDF and bytes(row.signature) == SIGNATURE
    assert row.signed_by == "Смирнова Ольга, врач-акушер-гинеколог"
    assert row.signed_at == datetime(2026, 3, 12, 9, 55)
    assert row.to_iemk is True, "TO_IEMK defaults to 1"


def test_a_report_for_a_visit_sent_before_without_signature_and_not_for_iemk(client, token):
    post(client, visits())
    text = b64(PDF)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))  # MIME line breaks are fine

    results = post(
        client,
        [
            report(
                id="rep-2",
                event="ev-2",
                file_name="PROTOKOL.PDF",
                content=wrapped,
                signature=None,
                signed_by=None,
                signed_at=None,
                to_iemk=False,
            )
        ],
    )

    assert results[0]["status"] == "stored"
    [row] = stored_reports()
    assert row.event.source_id == "ev-2" and bytes(row.content) == PDF
    assert row.signature is None and row.signed_at is None and row.to_iemk is False


def test_the_same_source_id_again_updates_the_report(client, token):
    post(client, [*visits(), report()])
    newer = PDF.replace(b"%%EOF", b"% corrected\n%%EOF")

    results = post(client, [report(event="ev-2", content=b64(newer), signed_at="2026-04-10T10:20:00")])

    assert results[0]["status"] == "stored"
    [row] = stored_reports()
    assert row.event.source_id == "ev-2" and bytes(row.content) == newer
    assert row.signed_at == datetime(2026, 4, 10, 10, 20)


# --- Refused -------------------------------------------------------------------------------------

TOO_BIG = b"%PDF-1.7\n" + b"0" * (10 * 1024 * 1024)

REFUSALS = [
    pytest.param(
        {"file_name": "Протокол осмотра.zip", "content": b64(b"PK\x03\x04zip")},
        "file_name",
        "Формат .zip не поддерживается: протокол визита передаётся в ИЭМК только в формате PDF",
        id="zip",
    ),
    pytest.param(
        {"file_name": "Протокол осмотра.docx"},
        "file_name",
        "«Имя файла»: ожидается файл .pdf, получено «Протокол осмотра.docx»",
        id="not-pdf-name",
    ),
    pytest.param(
        {"content": b64(b"<html>not a pdf</html>")},
        "content",
        "«Содержимое PDF»: содержимое не является файлом PDF (должно начинаться с «%PDF-»)",
        id="not-pdf",
    ),
    pytest.param(
        {"content": "JVBERi0x*not base64*"},
        "content",
        "«Содержимое PDF»: некорректная строка base64 (допустимы A–Z, a–z, 0–9, +, / и = в конце)",
        id="bad-base64",
    ),
    pytest.param(
        {"content": "JVBERi0xLjc"},
        "content",  # padding missing
        "«Содержимое PDF»: некорректная строка base64 (допустимы A–Z, a–z, 0–9, +, / и = в конце)",
        id="bad-padding",
    ),
    pytest.param(
        {"signature": "MIIB%%"},
        "signature",
        "«Открепленная подпись»: некорректная строка base64 (допустимы A–Z, a–z, 0–9, +, / и = в конце)",
        id="bad-signature",
    ),
    pytest.param(
        {"content": None},
        "content",
        "Не указано обязательное поле «Содержимое PDF»",
        id="no-content",
    ),
    pytest.param(
        {"event": "ev-lab"},
        "event",
        "Событие ev-lab — «Общий анализ крови (ОАК)», не амбулаторный приём: протокол визита прилагается только к "
        "первичному или повторному осмотру (exam_primary, exam_repeat)",
        id="wrong-event-kind",
    ),
    pytest.param(
        {"event": "ev-stat"},
        "event",
        "Осмотр ev-stat проведён в условиях «Стационарно», не амбулаторно: протокол визита прилагается "
        "только к амбулаторному приёму",
        id="inpatient-exam",
    ),
    pytest.param({"event": "ev-404"}, "event", "Событие ev-404 не найдено", id="unknown-event"),
    pytest.param(
        {"content": b64(TOO_BIG)},
        "content",
        "«Содержимое PDF»: файл больше допустимых 10 МБ, получено 10,1 МБ",
        id="too-big",
    ),
]


@pytest.mark.parametrize(("change", "field", "message"), REFUSALS)
def test_each_bad_report_is_refused_with_its_field_and_a_russian_reason(
    client, token, change, field, message
):
    post(client, visits())

    results = post(client, [report(**change)])

    assert results == [
        {"type": "visit_report", "id": "rep-1", "status": "refused", "field": field, "message": message}
    ]
    assert stored_reports() == []


@pytest.mark.parametrize(("change", "field", "message"), REFUSALS[:4] + REFUSALS[7:9])
def test_a_refused_repeat_leaves_the_stored_report_as_it_was(client, token, change, field, message):
    post(client, [*visits(), report()])
    before = stored_reports()[0]
    kept = (before.event_id, before.file_name, bytes(before.content), before.updated_at)

    results = post(client, [report(**change)])

    assert results[0]["status"] == "refused" and results[0]["field"] == field
    [after] = stored_reports()
    assert (after.event_id, after.file_name, bytes(after.content), after.updated_at) == kept


def test_a_report_of_a_refused_visit_is_refused_too(client, token):
    batch = visits()
    batch[4] = {**batch[4], "at": "12.03.2026"}  # ev-1 refused: wrong date format

    results = post(client, [*batch, report()])

    assert results[4]["status"] == "refused"
    assert (
        results[-1]["field"] == "event" and results[-1]["message"] == "Событие ev-1 отклонено в этом пакете"
    )
    assert stored_reports() == []


# --- Documented ----------------------------------------------------------------------------------


def test_openapi_documents_the_visit_report(client):
    document = client.get("/api/v1/openapi.json").get_json()
    schemas = document["components"]["schemas"]

    order = [ref["$ref"].rsplit("/", 1)[1] for ref in schemas["Record"]["oneOf"]]
    assert order.index("VisitReportRecord") == order.index("EventRecord") + 1
    assert document["components"]["schemas"]["Record"]["discriminator"]["mapping"]["visit_report"].endswith(
        "/VisitReportRecord"
    )
    schema = schemas["VisitReportRecord"]
    assert schema["title"] == "Протокол визита (подписанный PDF)"
    assert set(schema["required"]) == {"type", "id", "event", "file_name", "content"}
    properties = schema["properties"]
    assert properties["event"]["x-refers-to"] == "event"
    assert properties["content"]["format"] == "byte" and "10 МБ" in properties["content"]["description"]
    assert properties["signature"]["format"] == "byte" and properties["signature"]["nullable"] is True
    assert properties["to_iemk"] == {**properties["to_iemk"], "type": "boolean", "default": True}
    assert ".zip" in properties["file_name"]["description"]
    assert "visit_report" in document["info"]["description"]


# --- The demo region -----------------------------------------------------------------------------


def test_demo_region_has_about_thirty_reports_of_outpatient_visits():
    records = list(demo_records(today=TODAY))
    events = {r["id"]: r for r in records if r["type"] == "event"}
    reports = [r for r in records if r["type"] == "visit_report"]

    assert 20 <= len(reports) <= 45
    seen: set[str] = set()
    for record in records:
        if record["type"] == "visit_report":
            assert record["event"] in seen, "the visit comes before its report"
            visit = events[record["event"]]
            assert visit["kind"] in ("exam_primary", "exam_repeat") and visit["care_conditions"] == "3"
            assert record["to_iemk"] is True and record["file_name"].endswith(".pdf")
            content = base64.b64decode(record["content"], validate=True)
            assert content.startswith(b"%PDF-") and content.rstrip().endswith(b"%%EOF")
            assert record["signed_at"] > visit["at"]
        seen.add(record["id"])
    assert len({r["event"] for r in reports}) == len(reports)
    assert len({r["content"] for r in reports}) == len(reports), "each report is its own visit's"
    counts = Counter(r["type"] for r in records)
    assert counts["event"] > 10_000, "the reports are a modest share of the visits"


def test_demo_data_command_stores_reports_and_an_iemk_certificate(app):
    result = app.test_cli_runner().invoke(args=["portal", "demo-data", "--patients", "60"])

    assert result.exit_code == 0 and "отклонено: 0" in result.output, result.output
    reports = stored_reports()
    assert reports and f"протоколов визитов: {len(reports)}" in result.output
    for row in reports:
        assert row.event.kind in ("exam_primary", "exam_repeat") and row.mo_id == row.event.mo_id
        assert bytes(row.content).startswith(b"%PDF-") and bytes(row.content).rstrip().endswith(b"%%EOF")
        assert row.to_iemk is True and row.signed_by
    certificates = db.session.scalars(db.select(Certificate).where(Certificate.purpose == "iemk")).all()
    assert len(certificates) == 1 and certificates[0].key_pem
    assert "Демо-МИС: подпись документов ИЭМК" in certificates[0].subject
    assert certificates[0].valid_from <= date.today() <= certificates[0].valid_to

    again = app.test_cli_runner().invoke(args=["portal", "demo-data", "--patients", "60"])
    assert again.exit_code == 0 and "демо-сертификатов создано: 0" in again.output, again.output
    assert [(r.source_id, bytes(r.content)) for r in stored_reports()] == [
        (r.source_id, bytes(r.content)) for r in reports
    ], "a second run stores the same reports, no duplicates"
