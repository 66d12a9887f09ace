"""«Сформировать пакет» and «Скачать» (seed 4.3.2, NOTES.md §2): the request DBF
`{F003}_{ddmmyyyy}_{n}.DBF` in CP866, who goes into it, numbering, splitting, download."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import insert

from portal.clinical.models import Patient
from portal.extensions import db
from portal.models_base import utcnow
from portal.tfoms import ident
from portal.tfoms.dbf import REQUEST_FIELDS, read_dbf
from portal.tfoms.files import tfoms_dir
from portal.tfoms.models import IDENT_NOT_IDENTIFIED, IDENT_SELECTED, IDENT_SENT, IdentPackage, IdentRecord
from tests import factories
from tests.conftest import csrf_token, login
from tests.tfoms.ident_support import HX, PAGE, package_of, record_of, request_file, today_name


def _form(client, mo=None):
    token = csrf_token(client, PAGE)
    data = {"csrf_token": token}
    if mo is not None:
        data["mo"] = mo.id
    return client.post(f"{PAGE}/form", data=data, headers=HX)


def test_form_writes_the_request_dbf_in_cp866_with_the_person_fields(app, client, region):
    a = region.a
    patient = factories.make_patient(
        a.mo,
        last_name="Ёлкина",
        first_name="Дарья",
        middle_name="Юрьевна",
        birth_date=date(1991, 7, 15),
        snils="11223344595",
        document_kind="14",
        document_series="19 04",
        document_number="123456",
        policy_kind="Э",
        policy_series=None,
        policy_number="3550000000000011",
        enp="3550000000000011",
    )
    ident.identify_patient(patient)
    db.session.commit()
    login(client, a.users["mo_admin"])
    page = _form(client).get_data(as_text=True)
    name = today_name(a.mo)
    assert f"Сформирован пакет {name}: записей в файле запроса 1." in page
    assert f">{name}</a>" in page and "Ответ не загружен" in page

    path = tfoms_dir("ident") / f"{name}.DBF"
    data = path.read_bytes()
    assert "Ёлкина".encode("cp866") in data and "Ёлкина".encode() not in data
    table = read_dbf(data)
    assert [(f.name, f.type, f.length) for f in table.fields] == [
        (f.name, f.type, f.length) for f in REQUEST_FIELDS
    ]
    assert table.language_driver == 0x65  # cp866
    [row] = list(table)
    assert row == {
        "FAM": "Ёлкина",
        "IM": "Дарья",
        "OT": "Юрьевна",
        "DR": date(1991, 7, 15),
        "W": 2,
        "SS": "112-233-445 95",
        "C_DOC": 14,
        "S_DOC": "19 04",
        "N_DOC": "123456",
        "OPDOC": 4,
        "SPOL": None,
        "NPOL": "3550000000000011",
        "ENP": "3550000000000011",
        "DIN": date.today(),
        "DOUT": None,
    }
    record = record_of(patient)
    assert (record.status, record.nrec, record.status_on) == (IDENT_SENT, 1, date.today())
    assert record.request["FAM"] == "Ёлкина" and record.request["DR"] == "1991-07-15"
    package = db.session.scalars(db.select(IdentPackage)).one()
    assert (package.name, package.number, package.record_count, package.user_id) == (
        name,
        1,
        1,
        a.users["mo_admin"].id,
    )


def test_only_people_with_an_identifying_combination_go_into_the_file(app, region):
    mo = region.a.mo
    empty = {
        "snils": None,
        "document_kind": None,
        "document_series": None,
        "document_number": None,
        "policy_kind": None,
        "policy_number": None,
        "enp": None,
    }
    by_snils = factories.make_patient(
        mo, last_name="Снилсова", **{**empty, "snils": factories.valid_snils(77)}
    )
    by_document = factories.make_patient(
        mo, last_name="Паспортова", **{**empty, "document_kind": "14", "document_number": "654321"}
    )
    by_policy = factories.make_patient(
        mo, last_name="Полисова", **{**empty, "policy_kind": "П", "policy_number": "1234567890"}
    )
    nothing = factories.make_patient(mo, last_name="Безданных", **empty)
    no_birth = factories.make_patient(mo, last_name="Безрождения", birth_date=None)
    package = package_of([by_snils, by_document, by_policy, nothing, no_birth])

    names = [row["FAM"] for row in read_dbf(request_file(package))]
    assert names == ["Снилсова", "Паспортова", "Полисова"]
    rows = list(read_dbf(request_file(package)))
    assert rows[0]["SS"] and rows[0]["C_DOC"] is None and rows[0]["OPDOC"] is None
    assert rows[1]["C_DOC"] == 14 and rows[1]["N_DOC"] == "654321" and rows[1]["SS"] is None
    assert rows[2]["OPDOC"] == 3 and rows[2]["NPOL"] == "1234567890"
    assert package.record_count == 3

    for patient, missing in ((nothing, "СНИЛС, документ или полис"), (no_birth, "дата рождения")):
        record = record_of(patient)
        assert (
            record.status == IDENT_NOT_IDENTIFIED and record.nrec is None and record.package_id == package.id
        )
        assert record.result.startswith(
            "Не отправлено в ТФОМС: для запроса нужны фамилия, дата рождения, пол"
        )
        assert missing in record.result


def test_package_number_grows_per_day_and_mo(app, client, region):
    a, b = region.a, region.b
    first = package_of([a.patients[0]])
    second = package_of([a.patients[1]])
    other = package_of([b.patients[0]])
    assert (first.name, second.name, other.name) == (
        today_name(a.mo, 1),
        today_name(a.mo, 2),
        today_name(b.mo, 1),
    )
    assert ident.form_packages(a.mo.id).message.startswith(f"Для МО «{a.mo.short_name}» нет отобранных")


def test_central_admin_chooses_the_mo_and_an_mo_without_f003_is_refused(app, client, region):
    a, b = region.a, region.b
    b.mo.f003_code = None
    ident.identify_patient(b.patients[0])
    ident.identify_patient(a.patients[0])
    db.session.commit()
    login(client, region.central)
    assert "Выберите МО, для которой сформировать пакет." in _form(client).get_data(as_text=True)
    refusal = _form(client, b.mo).get_data(as_text=True)
    assert f"Пакет для МО «{b.mo.short_name}» не сформирован: у МО не указан код F003" in refusal
    assert record_of(b.patients[0]).status == IDENT_SELECTED
    assert db.session.scalars(db.select(IdentPackage)).all() == []
    made = _form(client, a.mo).get_data(as_text=True)
    assert f"Сформирован пакет {today_name(a.mo)}" in made
    assert record_of(b.patients[0]).status == IDENT_SELECTED


def test_a_large_selection_is_split_into_packages_of_ten_thousand(app, region):
    mo = region.a.mo
    count = ident.PACKAGE_LIMIT + 1
    now = utcnow()
    db.session.execute(
        insert(Patient),
        [
            {
                "source_id": f"bulk-{i}",
                "mo_id": mo.id,
                "last_name": "Массовая",
                "first_name": "Анна",
                "sex": "F",
                "birth_date": date(1990, 1, 1),
                "snils": factories.valid_snils(i),
                "created_at": now,
                "updated_at": now,
            }
            for i in range(count)
        ],
    )
    ids = db.session.scalars(db.select(Patient.id).where(Patient.source_id.like("bulk-%"))).all()
    db.session.execute(
        insert(IdentRecord),
        [
            {
                "mo_id": mo.id,
                "patient_id": pid,
                "reason": "manual",
                "period_from": date.today(),
                "status": IDENT_SELECTED,
                "created_at": now,
            }
            for pid in ids
        ],
    )
    result = ident.form_packages(mo.id)
    db.session.commit()
    assert [p.record_count for p in result.packages] == [ident.PACKAGE_LIMIT, 1]
    assert [p.name for p in result.packages] == [today_name(mo, 1), today_name(mo, 2)]
    assert read_dbf(request_file(result.packages[1])).record_count == 1
    assert read_dbf(request_file(result.packages[0])).record_count == ident.PACKAGE_LIMIT


def test_download_gives_the_request_file_only_while_no_answer_is_loaded(app, client, region):
    a = region.a
    package = package_of(a.patients)
    login(client, a.users["mo_admin"])
    response = client.get(f"{PAGE}/{package.id}/download")
    assert response.status_code == 200
    assert response.data == request_file(package)
    assert f'filename="{package.file_name}"' in response.headers["Content-Disposition"]

    # the file went missing from the disk: rebuilt from the stored request values
    (tfoms_dir("ident") / package.file_name).unlink()
    rebuilt = client.get(f"{PAGE}/{package.id}/download")
    assert [r["FAM"] for r in read_dbf(rebuilt.data)] == [p.last_name for p in a.patients]

    package.answer_loaded_at = datetime(2026, 1, 5, 10, 30)
    db.session.commit()
    refused = client.get(f"{PAGE}/{package.id}/download", follow_redirects=True)
    text = refused.get_data(as_text=True)
    assert refused.status_code == 200 and refused.headers["Content-Type"].startswith("text/html")
    assert (
        f"Ответ на пакет {package.name} загружен 05.01.2026 10:30: файл запроса удалён, скачать его нельзя."
        in text
    )
    page = client.get(f"{PAGE}?package={package.id}").get_data(as_text=True)
    assert 'aria-disabled="true"' in page and f"{PAGE}/{package.id}/download" not in page
