"""«Выгрузка прикреплений» (seed 4.5.1, SPEC T-9): the file as ТФОМС reads it, byte for byte; the
page, its refusals and МО scoping; the download's run and journal line; the daily job's outbox."""

from __future__ import annotations

import io
import re
from datetime import date, datetime
from html import unescape

import pytest

from portal.admin.models import MoIntegration
from portal.exchange.models import JournalEntry, ServiceRun
from portal.extensions import db
from portal.tfoms import attachments
from portal.tfoms.attachment_views import previous_month
from portal.tfoms.files import tfoms_dir
from tests import factories
from tests.conftest import csrf_token, login

START, END = date(2025, 3, 1), date(2025, 3, 31)
OLD = datetime(2024, 1, 10, 9, 0)  # long in the portal's database
URL = "/tfoms/attachments"
EXPORT_URL = "/tfoms/attachments/export"
HX = {"HX-Request": "true", "HX-Target": "attachments-preview"}
OID = "1.2.643.5.1.13.13.12.2.35.1234"


def _text(response) -> str:
    return unescape(response.get_data(as_text=True))


@pytest.fixture
def town(app):
    """One МО (registry number 351234) with people that exercise every rule of the file, in the
    order their attachments are created (the file's order)."""
    mo = factories.make_mo(registry_number="351234", oid=OID, short_name="Поликлиника № 1")
    other = factories.make_mo(registry_number="359999", short_name="Поликлиника № 2")
    dep = factories.make_department(mo, code="0101")
    doctor = factories.make_staff(mo, snils="11223344595", category="doctor")
    nurse = factories.make_staff(mo, snils="12345678901", category="nurse")
    uncategorised = factories.make_staff(mo, snils="22334455601", category="")
    common = dict(document_kind="14", document_series="1904", document_issued_on=date(2014, 6, 1),
                  document_issuer="ОУФМС России по Вологодской обл.")  # fmt: skip

    # 1. «И»: long in the database, no move from another МО; a quote inside a value.
    p1 = factories.make_patient(
        mo, last_name="Иванова", first_name="Мария", middle_name="Петровна", birth_date=date(1994, 5, 6),
        birth_place='с. "Заречье"', snils="12345678964", enp="3512345678901234", policy_kind="Э",
        policy_number="3512345678901234", document_number="123456", created_at=OLD, **common,
    )  # fmt: skip
    factories.make_attachment(p1, department_id=dep.id, district="5", doctor_id=doctor.id, method="1", kind="1",
                              attached_on=date(2020, 2, 1))  # fmt: skip
    # 2. «Р» by rule (a): entered the database 7 days before the period starts; an old-style
    # policy; no middle name, birth place or department; a nurse; detached within the period.
    p2 = factories.make_patient(
        mo, last_name="Петрова", first_name="Анна", middle_name=None, birth_date=date(1990, 1, 1),
        birth_place=None, snils="98765432100", enp=None, policy_kind="С", policy_series="ВЛГ",
        policy_number="123456", document_number="222222", created_at=datetime(2025, 2, 22, 0, 0), **common,
    )  # fmt: skip
    factories.make_attachment(p2, district="12", doctor_id=nurse.id, method="2", kind="1",
                              attached_on=date(2021, 1, 1), detached_on=date(2025, 3, 20))  # fmt: skip
    # 3. «Р» by rule (b): its attachment to another МО ended within the period; a temporary
    # certificate; no document, no СНИЛС; a doctor without a category (no trailing slot).
    p3 = factories.make_patient(
        mo, last_name="Сидорова", first_name="Ольга", middle_name="Ивановна", birth_date=date(1985, 3, 15),
        birth_place="г. Вологда", snils=None, enp=None, policy_kind="В", policy_series=None,
        policy_number="987654321", document_kind=None, document_series=None, document_number=None,
        document_issued_on=None, document_issuer=None, created_at=OLD,
    )  # fmt: skip
    factories.make_attachment(p3, mo_id=other.id, district="1", attached_on=date(2015, 1, 1),
                              detached_on=date(2025, 3, 10))  # fmt: skip
    factories.make_attachment(p3, department_id=dep.id, district="7", doctor_id=uncategorised.id, method="0",
                              kind="2", attached_on=date(2025, 3, 10))  # fmt: skip
    # 4. «И» on both boundaries: entered a second before the 7 days; left another МО the day
    # before the period; detached from this one after the period (no Дата_открепления yet).
    p4 = factories.make_patient(
        mo, last_name="Кузнецова", first_name="Дарья", middle_name="Олеговна", birth_date=date(2001, 12, 31),
        birth_place=None, snils="11111111145", enp="3598765432109876", policy_kind="П", policy_number=None,
        document_number="333333", created_at=datetime(2025, 2, 21, 23, 59, 59), **common,
    )  # fmt: skip
    factories.make_attachment(p4, mo_id=other.id, district="3", attached_on=date(2010, 1, 1),
                              detached_on=date(2025, 2, 28))  # fmt: skip
    factories.make_attachment(p4, department_id=dep.id, district="5", doctor_id=doctor.id, method="1", kind="1",
                              attached_on=date(2025, 3, 1), detached_on=date(2025, 4, 5))  # fmt: skip
    # 5. «Р» by rule (a) extended: entered the database during the period.
    p5 = factories.make_patient(
        mo, last_name="Орлова", first_name="Юлия", middle_name="Сергеевна", birth_date=date(1999, 7, 8),
        birth_place=None, snils=None, enp="3500000000000005", policy_kind="К", policy_number=None,
        document_number="555555", created_at=datetime(2025, 3, 15, 12, 0), **common,
    )  # fmt: skip
    factories.make_attachment(p5, district="5", doctor_id=doctor.id, method="1", kind="1",
                              attached_on=date(2025, 3, 15))  # fmt: skip
    # Not in the period at all: detached before it, attached after it.
    gone = factories.make_patient(mo, last_name="Ушедшая", created_at=OLD)
    factories.make_attachment(gone, district="5", doctor_id=doctor.id, attached_on=date(2019, 1, 1),
                              detached_on=date(2025, 2, 28))  # fmt: skip
    later = factories.make_patient(mo, last_name="Будущая", created_at=OLD)
    factories.make_attachment(later, district="5", doctor_id=doctor.id, attached_on=date(2025, 4, 1))
    # Another МО's people never appear in this МО's file.
    stranger = factories.make_patient(other, last_name="Чужая", created_at=OLD)
    factories.make_attachment(stranger, district="5", attached_on=date(2019, 1, 1))
    db.session.commit()
    return mo, other, doctor


EXPECTED_LINES = [
    '"И";"Э";;"3512345678901234";"Иванова";"Мария";"Петровна";"19940506";"с. ""Заречье""";"14";"1904 123456";'
    '"20140601";"ОУФМС России по Вологодской обл.";"123-456-789 64";"351234";"1";"1";;"'
    + OID
    + '";"0101";"5";'
    '"112-233-445 95";"1"',
    '"Р";"С";"ВЛГ № 123456";;"Петрова";"Анна";;"19900101";;"14";"1904 222222";"20140601";'
    '"ОУФМС России по Вологодской обл.";"987-654-321 00";"351234";"2";"1";"20250320";"' + OID + '";;"12";'
    '"123-456-789 01";"2"',
    '"Р";"В";"987654321";;"Сидорова";"Ольга";"Ивановна";"19850315";"г. Вологда";;;;;;"351234";"0";"2";;"'
    + OID
    + '";"0101";"7";"223-344-556 01"',
    '"И";"П";;"3598765432109876";"Кузнецова";"Дарья";"Олеговна";"20011231";;"14";"1904 333333";"20140601";'
    '"ОУФМС России по Вологодской обл.";"111-111-111 45";"351234";"1";"1";;"' + OID + '";"0101";"5";'
    '"112-233-445 95";"1"',
    '"Р";"К";;"3500000000000005";"Орлова";"Юлия";"Сергеевна";"19990708";;"14";"1904 555555";"20140601";'
    '"ОУФМС России по Вологодской обл.";;"351234";"1";"1";;"' + OID + '";;"5";"112-233-445 95";"1"',
]


def _file(mo_id: int, **kw) -> tuple[bytes, int, list]:
    out, left_out = io.BytesIO(), []
    rows = attachments.write_attachment_file(mo_id, START, END, out, left_out=left_out, **kw)
    return out.getvalue(), rows, left_out


# --- the file --------------------------------------------------------------------------------


def test_file_bytes_follow_the_seed(town):
    mo, _, _ = town
    data, rows, left_out = _file(mo.id)

    assert rows == 5 and left_out == []
    assert data == "\r\n".join(EXPECTED_LINES).encode("cp1251")
    # Windows-1251 bytes: «Р» = D0, «И» = C8, «№» = B9, «Э» = DD; CRLF only between lines.
    assert data.startswith(b'"\xc8";"\xdd";;"3512345678901234";"\xc8\xe2\xe0\xed\xee\xe2\xe0";')
    assert b'\r\n"\xd0";"\xd1";"\xc2\xcb\xc3 \xb9 123456";;' in data
    assert data.count(b"\r\n") == 4 and b"\r\n\r\n" not in data
    assert not data.startswith(b"\r\n") and not data.endswith(b"\r\n") and not data.endswith(b";")
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    # a line without Категория_медработника ends on СНИЛС_врача: 22 values, 21 separators
    lines = data.split(b"\r\n")
    assert lines[2].endswith(b'"223-344-556 01"') and lines[2].count(b";") == 21
    assert lines[0].count(b";") == 22


def test_chunks_join_with_one_crlf_and_the_same_bytes(town):
    mo, _, _ = town
    whole, _, _ = _file(mo.id)
    for size in (1, 2, 3):
        assert _file(mo.id, chunk_rows=size)[0] == whole


def test_file_name_is_mo2_registry_number_and_report_date(app):
    mo = factories.make_mo(registry_number="123456")
    assert attachments.file_name(mo, date(2015, 6, 17)) == "MO212345620150617.csv"
    assert attachments.file_name(mo, date(2015, 6, 17)).startswith("MO")  # Latin letters
    assert attachments.file_name(mo, date(2015, 6, 17)).isascii()

    for bad in (None, "", "12345", "12345X"):
        mo.registry_number = bad
        with pytest.raises(attachments.AttachmentFileError, match="шестизначный реестровый номер"):
            attachments.file_name(mo, date(2015, 6, 17))
        with pytest.raises(attachments.AttachmentFileError, match="шестизначный реестровый номер"):
            attachments.write_attachment_file(mo.id, START, END, io.BytesIO())


def test_period_that_ends_before_it_starts_is_refused(town):
    mo, _, _ = town
    out = io.BytesIO()
    with pytest.raises(attachments.AttachmentFileError, match=r"Окончание периода \(28\.02\.2025\) раньше"):
        attachments.write_attachment_file(mo.id, START, date(2025, 2, 28), out)
    assert out.getvalue() == b""


def test_people_missing_required_values_are_left_out_and_named(town):
    mo, _, doctor = town
    no_birth = factories.make_patient(mo, last_name="Безднева", first_name="Ирина", middle_name=None,
                                      birth_date=None, created_at=OLD)  # fmt: skip
    factories.make_attachment(no_birth, district="5", doctor_id=doctor.id, attached_on=date(2020, 1, 1))
    no_doctor = factories.make_patient(mo, last_name="Безврачева", first_name="Нина", middle_name=None,
                                       birth_date=date(1980, 2, 3), created_at=OLD)  # fmt: skip
    factories.make_attachment(no_doctor, district="5", doctor_id=None, attached_on=date(2020, 1, 1))
    no_enp = factories.make_patient(mo, last_name="Безполисова", first_name="Зоя", middle_name=None,
                                    birth_date=date(1981, 2, 3), policy_kind="П", enp=None, created_at=OLD)  # fmt: skip
    factories.make_attachment(no_enp, district=" ", doctor_id=doctor.id, attached_on=date(2020, 1, 1))
    no_kind = factories.make_patient(mo, last_name="Бестипова", first_name="Ада", middle_name=None,
                                     birth_date=date(1982, 2, 3), policy_kind=None, created_at=OLD)  # fmt: skip
    factories.make_attachment(
        no_kind, district="5", doctor_id=doctor.id, method="", attached_on=date(2020, 1, 1)
    )
    db.session.commit()

    data, rows, left_out = _file(mo.id)
    assert rows == 5 and data == "\r\n".join(EXPECTED_LINES).encode("cp1251")  # the valid lines, unchanged
    texts = [person.text for person in left_out]
    assert texts == [
        f"Безднева Ирина (пациент № {no_birth.id}): не указана «Дата_рождения»",
        f"Безврачева Нина, д. р. 03.02.1980 (пациент № {no_doctor.id}): не указан «СНИЛС_врача» (врач участка)",
        f"Безполисова Зоя, д. р. 03.02.1981 (пациент № {no_enp.id}): не указан «ЕНП» (обязателен для полиса "
        "единого образца, Тип ДПФС «П»); не указан «Код_участка»",
        f"Бестипова Ада, д. р. 03.02.1982 (пациент № {no_kind.id}): не указан «Тип ДПФС»; "
        "не указан «Способ_прикрепления»",
    ]
    shown = attachments.preview(mo.id, START, END)
    assert (shown.rows, shown.errors) == (5, 4)
    assert [person.text for person in shown.left_out] == texts


def test_a_character_windows_1251_cannot_hold_leaves_the_person_out(town):
    mo, _, doctor = town
    foreign = factories.make_patient(mo, last_name="Дюпон", first_name="Renée", middle_name=None,
                                     birth_date=date(1970, 1, 2), created_at=OLD)  # fmt: skip
    factories.make_attachment(foreign, district="5", doctor_id=doctor.id, attached_on=date(2020, 1, 1))
    db.session.commit()

    data, rows, left_out = _file(mo.id)
    assert rows == 5 and data == "\r\n".join(EXPECTED_LINES).encode("cp1251")
    assert [person.text for person in left_out] == [
        f"Дюпон Renée, д. р. 02.01.1970 (пациент № {foreign.id}): символ «é» не представим в кодировке "
        "Windows-1251 (исправьте данные)"
    ]


def test_line_break_inside_a_value_becomes_a_space(town):
    mo, _, doctor = town
    person = factories.make_patient(
        mo, last_name="Иванова", birth_place="г. Вологда,\r\nул. Мира", created_at=OLD
    )
    factories.make_attachment(person, district="5", doctor_id=doctor.id, attached_on=date(2020, 1, 1))
    db.session.commit()
    data, rows, _ = _file(mo.id)
    assert rows == 6 and data.count(b"\r\n") == 5
    assert '"г. Вологда, ул. Мира"'.encode("cp1251") in data


def test_no_people_gives_an_empty_file(app):
    mo = factories.make_mo(registry_number="350077")
    data, rows, left_out = _file(mo.id)
    assert (data, rows, left_out) == (b"", 0, [])


# --- the page ----------------------------------------------------------------------------------


def test_page_defaults_to_the_previous_month_and_shows_counts(client, region, town):
    mo, _, _ = town
    admin = factories.make_user("mo_admin", mo)
    db.session.commit()
    login(client, admin)

    page = _text(client.get(URL))
    first, last = previous_month()
    assert "Выгрузка прикреплений" in page
    assert (
        f'name="from" value="{first.isoformat()}"' in page and f'name="to" value="{last.isoformat()}"' in page
    )
    assert 'hx-trigger="load"' in page  # the counts come as a fragment

    fragment = client.get(URL, query_string={"from": "01.03.2025", "to": "31.03.2025"}, headers=HX)
    assert fragment.status_code == 200 and "HX-Request" in fragment.headers["Vary"]
    body = _text(fragment)
    assert "<html" not in body
    assert re.search(r'id="attachments-rows">5<', body) and re.search(r'id="attachments-errors">0<', body)
    assert "MO235123420250331.csv" in body
    assert 'name="from" value="2025-03-01"' in body and 'name="to" value="2025-03-31"' in body  # export form

    # without JavaScript: the same counts inline
    plain = _text(client.get(URL, query_string={"from": "2025-03-01", "to": "2025-03-31", "preview": "1"}))
    assert re.search(r'id="attachments-rows">5<', plain) and 'value="2025-03-01"' in plain


def test_page_lists_people_left_out(client, town):
    mo, _, _ = town
    missing = factories.make_patient(mo, last_name="Безднева", first_name="Ирина", middle_name=None,
                                     birth_date=None, created_at=OLD)  # fmt: skip
    factories.make_attachment(missing, district="5", attached_on=date(2020, 1, 1))
    admin = factories.make_user("mo_admin", mo)
    db.session.commit()
    login(client, admin)

    body = _text(client.get(URL, query_string={"from": "2025-03-01", "to": "2025-03-31"}, headers=HX))
    assert re.search(r'id="attachments-errors">1<', body)
    assert "Не войдут в файл" in body and "Безднева Ирина" in body
    assert "не указана «Дата_рождения»; не указан «СНИЛС_врача» (врач участка)" in body


def test_refusals_name_what_is_wrong(client, region, town):
    mo, _, _ = town
    admin = factories.make_user("mo_admin", mo)
    db.session.commit()
    login(client, admin)

    body = _text(client.get(URL, query_string={"from": "2025-03-31", "to": "2025-03-01"}, headers=HX))
    assert "Окончание периода (01.03.2025) раньше его начала (31.03.2025)." in body
    assert "Выгрузить" not in body
    body = _text(client.get(URL, query_string={"from": "31.02.2025", "to": "2025-03-01"}, headers=HX))
    assert "«Отчётная дата с»: «31.02.2025» — не дата." in body

    token = csrf_token(client, URL)
    response = client.post(EXPORT_URL, data={"from": "2025-03-31", "to": "2025-03-01", "csrf_token": token})
    assert response.status_code == 400
    assert "Окончание периода (01.03.2025) раньше его начала (31.03.2025)." in _text(response)
    assert db.session.scalar(db.select(db.func.count()).select_from(ServiceRun)) == 0


def test_mo_without_registry_number_is_refused(client, region):
    mo = region.a.mo
    mo.registry_number = None
    db.session.commit()
    login(client, region.a.users["mo_admin"])

    body = _text(client.get(URL, query_string={"from": "2025-03-01", "to": "2025-03-31"}, headers=HX))
    assert f"У МО «{mo.short_name}» не указан шестизначный реестровый номер МО" in body
    token = csrf_token(client, URL)
    response = client.post(EXPORT_URL, data={"from": "2025-03-01", "to": "2025-03-31", "csrf_token": token})
    assert response.status_code == 400 and "шестизначный реестровый номер" in _text(response)
    assert db.session.scalar(db.select(db.func.count()).select_from(ServiceRun)) == 0


def test_mo_user_gets_404_for_another_mo_and_central_admin_chooses(client, region):
    a, b = region.a.mo, region.b.mo
    login(client, region.b.users["mo_admin"])
    assert client.get(URL, query_string={"mo": a.id}).status_code == 404
    assert client.get(URL, query_string={"mo": a.id, "from": "2025-03-01", "to": "2025-03-31"},
                      headers=HX).status_code == 404  # fmt: skip
    token = csrf_token(client, URL)
    response = client.post(
        EXPORT_URL, data={"mo": a.id, "from": "2025-03-01", "to": "2025-03-31", "csrf_token": token}
    )
    assert response.status_code == 404
    assert client.get(URL, query_string={"mo": b.id}).status_code == 200  # their own, named explicitly

    login(client, region.central)
    body = _text(client.get(URL, query_string={"from": "2025-03-01", "to": "2025-03-31"}, headers=HX))
    assert "Выберите МО." in body
    page = _text(client.get(URL))
    assert a.short_name in page and b.short_name in page
    body = _text(
        client.get(URL, query_string={"mo": b.id, "from": "2025-03-01", "to": "2025-03-31"}, headers=HX)
    )
    assert f"MO2{b.registry_number}20250331.csv" in body
    assert client.get(URL, query_string={"mo": 999999}).status_code == 404


def test_statistician_may_export_doctor_may_not(client, region):
    login(client, region.a.users["statistician"])
    assert client.get(URL).status_code == 200
    login(client, region.a.users["doctor"])
    assert client.get(URL).status_code == 403
    token = csrf_token(client, "/")
    response = client.post(EXPORT_URL, data={"from": "2025-03-01", "to": "2025-03-31", "csrf_token": token})
    assert response.status_code == 403


def test_download_is_the_file_with_a_manual_run_and_journal_line(client, town):
    mo, _, _ = town
    missing = factories.make_patient(mo, last_name="Безднева", first_name="Ирина", middle_name=None,
                                     birth_date=None, created_at=OLD)  # fmt: skip
    factories.make_attachment(missing, district="5", attached_on=date(2020, 1, 1))
    statistician = factories.make_user("statistician", mo)
    db.session.commit()
    login(client, statistician)

    token = csrf_token(client, URL)
    response = client.post(EXPORT_URL, data={"from": "01.03.2025", "to": "31.03.2025", "csrf_token": token})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=windows-1251"
    assert "filename=MO235123420250331.csv" in response.headers["Content-Disposition"]
    assert response.get_data() == "\r\n".join(EXPECTED_LINES).encode("cp1251")

    run = db.session.scalars(db.select(ServiceRun)).one()
    assert (run.service, run.mo_id, run.manual, run.user_id) == (
        "tfoms_attachments",
        mo.id,
        True,
        statistician.id,
    )
    assert (run.result, run.total, run.errors) == ("error", 1, 1)  # the file counts with errors: one left out
    entry = db.session.scalars(db.select(JournalEntry)).one()
    assert entry.run_id == run.id and entry.mo_id == mo.id and entry.user_id == statistician.id
    assert (entry.packet_id, entry.packet_type) == ("MO235123420250331.csv", "Файл прикрепления (CSV)")
    assert (entry.subject_type, entry.subject_id) == ("tfoms_attachment_file", mo.id)
    assert entry.message == (
        "Файл MO235123420250331.csv: записей 5, не включено людей с ошибками в данных: 1; "
        "период 01.03.2025–31.03.2025"
    )
    assert entry.payload == (
        f"Безднева Ирина (пациент № {missing.id}): не указана «Дата_рождения»; не указан «СНИЛС_врача» (врач участка)"
    )


def test_clean_download_is_a_successful_run(client, town):
    mo, _, _ = town
    admin = factories.make_user("mo_admin", mo)
    db.session.commit()
    login(client, admin)
    token = csrf_token(client, URL)
    response = client.post(
        EXPORT_URL, data={"mo": mo.id, "from": "2025-03-01", "to": "2025-03-31", "csrf_token": token}
    )
    assert response.status_code == 200 and response.get_data().count(b"\r\n") == 4
    run = db.session.scalars(db.select(ServiceRun)).one()
    assert (run.result, run.total, run.errors) == ("ok", 1, 0)
    entry = db.session.scalars(db.select(JournalEntry)).one()
    assert entry.level == "ok" and entry.payload is None
    assert entry.message == "Файл MO235123420250331.csv: записей 5; период 01.03.2025–31.03.2025"


# --- the daily job ---------------------------------------------------------------------------------


def test_export_daily_writes_into_outbox_only_for_switched_on_mo(app, town):
    mo, other, doctor = town
    third = factories.make_mo(registry_number=None, short_name="ФАП без номера")
    db.session.add_all([
        MoIntegration(mo_id=mo.id, key="tfoms_attachment", enabled=True),
        MoIntegration(mo_id=other.id, key="tfoms_attachment", enabled=False),
        MoIntegration(mo_id=third.id, key="tfoms_attachment", enabled=True),
    ])  # fmt: skip
    db.session.commit()
    outbox = tfoms_dir("outbox")

    summary = attachments.export_daily(day=date(2025, 3, 10))
    db.session.commit()
    assert summary == (
        "Файлов прикрепления за 10.03.2025: 1, записей 4; не сформированы (нет реестрового номера МО): ФАП без номера"
    )
    assert sorted(path.name for path in outbox.iterdir()) == ["MO235123420250310.csv"]
    data = (outbox / "MO235123420250310.csv").read_bytes()
    lines = data.decode("cp1251").split("\r\n")
    # on 10.03: p1, p2 (not yet detached), p3 (moved in that day from another МО: «Р»), p4
    assert [line.split(";")[4] for line in lines] == ['"Иванова"', '"Петрова"', '"Сидорова"', '"Кузнецова"']
    assert lines[2].startswith('"Р";"В"') and ';"20250320";' not in lines[1]
    entries = db.session.scalars(db.select(JournalEntry).order_by(JournalEntry.id)).all()
    assert [(e.mo_id, e.subject_id, e.packet_id, e.level) for e in entries] == [
        (mo.id, mo.id, "MO235123420250310.csv", "ok"),
        (third.id, third.id, None, "error"),
    ]

    # only one МО asked: a switched-off МО writes nothing
    assert attachments.export_daily(mo_id=other.id, day=date(2025, 3, 10)) == (
        "Нет МО с включённой выгрузкой прикреплений в ТФОМС"
    )
    assert sorted(path.name for path in outbox.iterdir()) == ["MO235123420250310.csv"]
    assert not [path for path in outbox.iterdir() if path.name.startswith(".part-")]
