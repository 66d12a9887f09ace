"""PROF export of prophylactic plans (seed 4.5.2.1, T-10): the form's checks, the file, the СМО rule."""

from __future__ import annotations

import re

import pytest
from lxml import etree

from portal.admin.services import set_integration, set_setting
from portal.clinical.models import PlanPerson
from portal.exchange.models import JournalEntry, ServiceRun
from portal.extensions import db
from portal.tfoms.channel import PACKET_PROF
from portal.tfoms.models import PlanExport, PlanExportRecord
from portal.tfoms.plans import FORM_INVALID
from tests.conftest import login
from tests.tfoms.plans_support import YEAR, YY, exported, exports, post_export, setup_plans, statuses, unzip


@pytest.fixture
def data(region):
    return setup_plans(region)


def _marked(page: str) -> set[str]:
    """Names of the form fields marked invalid."""
    return set(re.findall(r'name="([a-z_]+)"[^>]*class="invalid" aria-invalid="true"', page))


# --- the form ---------------------------------------------------------------------------------


def test_form_shows_type_and_period_of_one_plan(client, region, data):
    login(client, region.a.users["statistician"])
    page = client.get(
        f"/tfoms/plans/export?plan={data.plan.id}",
        headers={"HX-Request": "true", "HX-Target": "export-panel"},
    )
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Экспорт данных плана профилактического мероприятия" in text
    assert 'value="5. Проф. осмотры взр. населения" readonly' in text
    assert f'value="II квартал {YEAR}" readonly' in text
    assert f'name="report_year" value="{YEAR}"' in text
    # the СМО of the plan's people are offered
    assert "35001 — СМО «Капитал»" in text and "35002 — СМО «Согаз»" in text


def test_form_type_and_period_for_several_plans(client, region, data):
    login(client, region.a.users["mo_admin"])
    text = client.get(f"/tfoms/plans/export?plan={data.plan.id}&plan={data.dvn.id}").get_data(as_text=True)
    # two kinds of one period: Тип and Период плана stay empty
    assert 'id="export-type" value="" readonly' in text
    assert 'id="export-period" value="" readonly' in text
    data.dvn.quarter = 3
    db.session.commit()
    text = client.get(f"/tfoms/plans/export?plan={data.plan.id}&plan={data.dvn.id}").get_data(as_text=True)
    assert f'id="export-period" value="{YEAR} год" readonly' in text


def test_export_without_selected_plans_says_so(client, region, data):
    login(client, region.a.users["mo_admin"])
    text = client.get("/tfoms/plans/export").get_data(as_text=True)
    assert "Не выбрано ни одного плана" in text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"report_month": ""}, "report_month"),
        ({"report_month": "13"}, "report_month"),
        ({"report_year": "20x6"}, "report_year"),
        ({"report_year": ""}, "report_year"),
        ({"load_quarter": "1"}, "load_quarter"),
        ({"packet": ""}, "packet"),
        ({"packet": "0"}, "packet"),
        ({"packet": "10"}, "packet"),
        ({"packet": "a"}, "packet"),
        ({"smo": "99999"}, "smo"),
    ],
)
def test_wrong_field_is_marked_and_nothing_is_exported(client, region, data, fields, field):
    login(client, region.a.users["mo_admin"])
    response = post_export(client, [data.plan], htmx=True, **fields)
    page = response.get_data(as_text=True)
    assert FORM_INVALID in page
    assert _marked(page) == {field}
    assert f'id="error-{field}"' in page
    assert exports() == []
    assert statuses(*data.people) == ["new", "new", "sent", "sent", "accepted"]


def test_wrong_fields_without_htmx_come_back_on_the_page(client, region, data):
    login(client, region.a.users["mo_admin"])
    response = post_export(client, [data.plan], report_month="", packet="x")
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert FORM_INVALID in page and _marked(page) == {"report_month", "packet"}
    assert "<h1>Планы диспансеризации и профилактических медицинских осмотров</h1>" in page


def test_packet_number_is_unique_per_mo_and_reporting_period(client, region, data):
    first = exported(client, region.a.users["mo_admin"], [data.plan], packet="3")
    data.people[0].status = "new"  # a new person to export again
    db.session.commit()
    response = post_export(client, [data.plan], htmx=True, packet="3")
    page = response.get_data(as_text=True)
    assert f"Номер пакета 3 уже занят в отчётном периоде 01.{YEAR}" in page
    assert first.file_name in page
    assert _marked(page) == {"packet"}
    assert len(exports()) == 1
    # another month is another reporting period; another МО has its own numbers
    assert post_export(client, [data.plan], report_month="4", packet="3").status_code == 200
    assert [e.file_name[-5:] for e in exports()] == [f"{YY}013", f"{YY}043"]


def test_other_mo_numbers_do_not_count(client, region, data):
    exported(client, region.a.users["mo_admin"], [data.plan], packet="1")
    set_integration(region.b.mo, "tfoms_prof", True)
    db.session.commit()
    other = exported(client, region.b.users["mo_admin"], [data.other_plan], packet="1")
    assert other.mo_id == region.b.mo.id and other.packet_number == 1


# --- the file ---------------------------------------------------------------------------------


def test_file_names_with_and_without_smo(client, region, data):
    reg = data.mo.registry_number
    plain = exported(client, region.a.users["mo_admin"], [data.plan], report_month="4", packet="2")
    assert plain.file_name == f"PROF_M{reg}T35_{YY}042"
    by_smo = exported(
        client, region.a.users["mo_admin"], [data.plan], report_month="4", packet="5", smo="35001"
    )
    assert by_smo.file_name == f"PROF_M{reg}T35S35001_{YY}045"
    set_setting("tfoms.code", "59")
    db.session.commit()
    data.people[1].status = "new"
    db.session.commit()
    later = exported(
        client, region.a.users["mo_admin"], [data.plan], report_month="7", report_year="2027", packet="1"
    )
    assert later.file_name == f"PROF_M{reg}T59_27071"


def test_zip_holds_one_xml_in_windows_1251(client, region, data):
    export = exported(client, region.a.users["mo_admin"], [data.plan], load_quarter="3")
    names, xml = unzip(export)
    assert names == [f"{export.file_name}.XML"]
    assert xml.startswith(b'<?xml version="1.0" encoding="windows-1251"?>')
    assert "Иванова".encode("cp1251") in xml and "Иванова".encode() not in xml
    root = etree.fromstring(xml)
    header = root.find("ZGLV")
    assert [child.tag for child in header] == ["VERSION", "DATA", "FILENAME", "CODMOF", "YEAR", "QUART"]
    assert header.findtext("VERSION") == "1.0"
    assert header.findtext("FILENAME") == export.file_name
    assert header.findtext("CODMOF") == data.mo.f003_code
    assert header.findtext("YEAR") == str(YEAR) and header.findtext("QUART") == "3"
    records = root.findall("SV_PR_MER")
    assert [r.findtext("NOMER_Z") for r in records] == ["1", "2"]
    first = records[0]
    patient = data.patients[0]
    assert [child.tag for child in first] == [
        "NOMER_Z", "PERSON_ID", "SMOCOD", "ENP", "FAM", "IM", "OT", "DR", "W", "DOCTYPE", "DOCSER", "DOCNUM",
        "SNILS", "VPOLIS", "NPOLIS", "TEL", "SV_PL_MER",
    ]  # fmt: skip
    assert first.findtext("PERSON_ID") == str(patient.id)
    assert first.findtext("SMOCOD") == "35001" and first.findtext("ENP") == patient.enp
    assert (first.findtext("FAM"), first.findtext("IM"), first.findtext("OT")) == (
        "Иванова",
        "Мария",
        "Петровна",
    )
    assert first.findtext("DR") == "1994-05-06" and first.findtext("W") == "2"
    assert first.findtext("DOCTYPE") == "14" and first.findtext("DOCSER") == "1904"
    snils = patient.snils
    assert first.findtext("SNILS") == f"{snils[:3]}-{snils[3:6]}-{snils[6:9]} {snils[9:]}"
    assert first.findtext("VPOLIS") == "3" and first.findtext("NPOLIS") == patient.policy_number
    assert first.findtext("TEL") == "9000000000"
    assert [c.tag for c in first.find("SV_PL_MER")] == ["QUART", "DISP"]
    assert first.find("SV_PL_MER").findtext("QUART") == "2"
    assert first.find("SV_PL_MER").findtext("DISP") == "ОПВ"
    # no patronymic: «НЕТ»; the planned quarter of the person
    second = records[1]
    assert second.findtext("OT") == "НЕТ"
    assert second.find("SV_PL_MER").findtext("QUART") == "3"
    # no empty elements anywhere
    assert all((el.text or "").strip() or len(el) for el in root.iter())


def test_old_style_policy_and_dvn_plan(client, region, data):
    patient = data.patients[5]
    patient.policy_kind, patient.policy_series, patient.policy_number = "С", "ВЛГ", "123456"
    patient.phone = "12-34"
    db.session.commit()
    export = exported(client, region.a.users["mo_admin"], [data.dvn])
    record = etree.fromstring(unzip(export)[1]).find("SV_PR_MER")
    assert (record.findtext("VPOLIS"), record.findtext("SPOLIS"), record.findtext("NPOLIS")) == (
        "1",
        "ВЛГ",
        "123456",
    )
    assert record.find("TEL") is None  # fewer than ten digits: left out
    assert record.find("SV_PL_MER").findtext("DISP") == "ДВ4"


def test_download_gives_the_stored_zip(client, region, data):
    export = exported(client, region.a.users["statistician"], [data.plan])
    response = client.get(f"/tfoms/plans/exports/{export.id}/download")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/zip"
    assert f'filename="{export.file_name}.zip"' in response.headers["Content-Disposition"]
    assert response.data == export.content


# --- the СМО rule -----------------------------------------------------------------------------


def test_without_smo_all_new_people_go_and_become_sent(client, region, data):
    login(client, region.a.users["mo_admin"])
    response = post_export(client, [data.plan, data.dvn], htmx=True)
    page = response.get_data(as_text=True)
    assert "Экспорт успешно завершён" in page and "Скачать и сохранить архив экспорта" in page
    [export] = exports()
    assert export.record_count == 3 and export.insurer_code is None
    records = db.session.scalars(
        db.select(PlanExportRecord)
        .where(PlanExportRecord.export_id == export.id)
        .order_by(PlanExportRecord.nomer_z)
    ).all()
    assert [r.plan_person_id for r in records] == [data.people[0].id, data.people[1].id, data.dvn_person.id]
    assert statuses(*data.people, data.dvn_person) == ["sent", "sent", "sent", "sent", "accepted", "sent"]
    assert db.session.get(PlanPerson, data.people[0].id).status_at is not None
    # the plan list comes back with the new counts, out of band
    assert 'id="plans-form" method="get"' in page and 'hx-swap-oob="true"' in page
    xml = unzip(export)[1]
    assert {r.find("SV_PL_MER").findtext("DISP") for r in etree.fromstring(xml).findall("SV_PR_MER")} == {
        "ОПВ",
        "ДВ4",
    }


def test_with_smo_only_sent_people_of_that_smo_one_file_each(client, region, data):
    login(client, region.a.users["mo_admin"])
    response = post_export(client, [data.plan], htmx=True, smo=["35001", "35002"], packet="4")
    assert "Экспорт успешно завершён" in response.get_data(as_text=True)
    first, second = exports()
    assert (first.insurer_code, second.insurer_code) == ("35001", "35002")
    assert first.batch == second.batch and first.packet_number == second.packet_number == 4
    fam = [
        [r.findtext("FAM") for r in etree.fromstring(unzip(e)[1]).findall("SV_PR_MER")]
        for e in (first, second)
    ]
    assert fam == [["Сидорова"], ["Кузнецова"]]
    assert {r.findtext("SMOCOD") for r in etree.fromstring(unzip(first)[1]).findall("SV_PR_MER")} == {"35001"}
    # statuses are not changed by a distributed (СМО) file
    assert statuses(*data.people) == ["new", "new", "sent", "sent", "accepted"]


def test_smo_without_sent_people_makes_no_file_and_says_so(client, region, data):
    data.people[3].status = "new"  # the only sent person of 35002 is new again
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    page = post_export(client, [data.plan], htmx=True, smo=["35001", "35002"]).get_data(as_text=True)
    assert "Экспорт успешно завершён" in page
    assert "СМО 35002 (СМО «Согаз»): файл не сформирован" in page
    assert [e.insurer_code for e in exports()] == ["35001"]


def test_nothing_to_export_makes_no_file(client, region, data):
    for person in data.people[:2]:
        person.status = "sent"
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    response = post_export(client, [data.plan], htmx=True)
    page = response.get_data(as_text=True)
    assert "Экспорт не выполнен" in page and "нет людей со статусом «Новые»" in page
    assert exports() == []


def test_switched_off_exchange_refuses_and_changes_nothing(client, region, data):
    set_integration(data.mo, "tfoms_prof", False)
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    page = post_export(client, [data.plan], htmx=True).get_data(as_text=True)
    assert "Обмен планами профилактических мероприятий с ТФОМС выключен" in page
    assert exports() == [] and statuses(*data.people[:2]) == ["new", "new"]


def test_a_failure_leaves_no_export_and_no_status_change(client, region, data):
    """The second file's name is already used (by a row made outside the form): the whole export,
    the first file included, is undone."""
    reg = data.mo.registry_number
    db.session.add(
        PlanExport(mo_id=data.mo.id, batch="x", file_name=f"PROF_M{reg}T35S35002_{YY}011", year=2000, month=1,
                   packet_number=9, record_count=0, content=b"")
    )  # fmt: skip
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    page = post_export(client, [data.plan], htmx=True, smo=["35001", "35002"]).get_data(as_text=True)
    assert "Номер пакета 1 уже занят" in page
    assert [e.batch for e in exports()] == ["x"]
    assert db.session.scalar(db.select(db.func.count()).select_from(PlanExportRecord)) == 0
    assert statuses(*data.people) == ["new", "new", "sent", "sent", "accepted"]


def test_export_is_a_run_of_the_prof_service_in_the_journal(client, region, data):
    user = region.a.users["mo_admin"]
    export = exported(client, user, [data.plan])
    run = db.session.scalars(db.select(ServiceRun).where(ServiceRun.service == "tfoms_prof")).one()
    assert run.manual and run.user_id == user.id and run.mo_id == data.mo.id
    assert run.result == "ok" and run.total == 1 and run.errors == 0
    entry = db.session.scalars(db.select(JournalEntry).where(JournalEntry.run_id == run.id)).one()
    assert entry.packet_id == export.file_name and entry.packet_type == PACKET_PROF
    assert entry.level == "ok" and "записей 2" in entry.message
    assert "<FAM>Иванова</FAM>" in entry.payload and entry.subject_id == export.id
    login(client, user)
    journal = client.get("/journal/?service=tfoms_prof").get_data(as_text=True)
    assert "Обмен планами профилактических осмотров" in journal


def test_tfoms_code_is_a_setting_and_must_be_two_digits(client, region, data):
    login(client, region.central)
    assert "Код ТФОМС (двузначный)" in client.get("/admin/settings").get_data(as_text=True)
    set_setting("tfoms.code", "5")
    db.session.commit()
    login(client, region.a.users["mo_admin"])
    page = post_export(client, [data.plan], htmx=True).get_data(as_text=True)
    assert "Код ТФОМС в настройках должен состоять из двух цифр (сейчас: «5»)" in page
    assert exports() == [] and statuses(*data.people[:2]) == ["new", "new"]
