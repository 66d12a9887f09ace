"""ТФОМС RabbitMQ packets: what goes on the wire, checked against the XSDs, and how replies are read."""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta
from types import SimpleNamespace

import pytest
from lxml import etree

from portal.extensions import db
from portal.tfoms import builders
from portal.tfoms.builders import MalformedReply, PacketBuildError
from tests.factories import (
    make_attachment,
    make_bed_profile,
    make_branch,
    make_department,
    make_dispensary,
    make_hospitalisation,
    make_mo,
    make_movement,
    make_patient,
    make_plan,
    make_plan_person,
    make_referral,
    make_staff,
)

ON = date(2026, 3, 2)


@pytest.fixture
def world(app):
    mo = make_mo()
    other_mo = make_mo()
    branch = make_branch(mo, code="007", name="Главный корпус")
    department = make_department(
        mo, kind="maternity", branch_id=branch.id, code="Р/О-1", name="Родовое отделение", phone="8172111111"
    )
    bed = make_bed_profile(department, profile=3, care_profile=136)
    doctor = make_staff(mo)
    patient = make_patient(mo)
    other_branch = make_branch(other_mo, code="002")
    other_department = make_department(other_mo, kind="round_the_clock", branch_id=other_branch.id)
    make_bed_profile(other_department, profile=4, care_profile=137)
    referral = make_referral(
        patient, other_department, doctor_id=doctor.id, branch_id=branch.id, kind="planned",
        cancelled_on=ON, cancel_reason="1", cancel_source="2", cancel_text="Пациентка отказалась",
    )  # fmt: skip
    hospitalisation = make_hospitalisation(
        patient, department, card_number="4512", emergency=True,
        refused_at=datetime(2026, 3, 1, 11, 30), refusal_reason="2", refusal_source="1",
    )  # fmt: skip
    movement = make_movement(
        hospitalisation, bed_profile_id=bed.id, ended_at=datetime(2026, 3, 1, 15, 0), outcome="1"
    )
    observation = make_dispensary(patient, doctor_id=doctor.id, began_on=date(2026, 2, 10), visits_per_year=4)
    attachment = make_attachment(
        patient,
        department_id=department.id,
        doctor_id=doctor.id,
        method="2",
        kind="2",
        attached_on=date(2025, 9, 1),
    )
    plan = make_plan(mo, kind="5", year=2026)
    plan_person = make_plan_person(plan, patient, quarter=2)
    return SimpleNamespace(**locals())


def _root(xml: bytes) -> etree._Element:
    return etree.fromstring(xml)


def _tags(element: etree._Element | None) -> list[str]:
    assert element is not None
    return [child.tag for child in element]


def _built(packet_type: str, obj, operation: str = "Insert", **kw) -> etree._Element:
    xml = builders.build(packet_type, operation, obj, created_on=ON, **kw)
    assert xml.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    assert builders.validate(None, xml) == []  # ТФОМС's side checks by the root element
    root = _root(xml)
    assert root.tag == packet_type
    return root


def test_every_packet_type_is_valid_against_its_schema(world):
    w = world
    objects = {
        "BRANCH": w.branch,
        "DIVISION": w.department,
        "DIVISION_LINK_STRUCTURE_BED": w.bed,
        "AMOUNT_BED": w.bed,
        "FREE_BEDS_INFORMATION": w.bed,
        "HOSPITALISATION_REFERRAL": w.referral,
        "CANCEL_HOSPITALISATION_REFERRAL": w.referral,
        "HOSPITALISATION": w.hospitalisation,
        "MOTION_IN_HOSPITAL": w.movement,
        "CANCEL_HOSPITALISATION": w.hospitalisation,
        "ATTACH_DATA": w.attachment,
        "DN_IN": w.observation,
        "PERS_LIST": w.plan_person,
    }
    header_ids = {
        "BRANCH": "BR_ID", "DIVISION": "DV_ID", "DIVISION_LINK_STRUCTURE_BED": "DLSB_ID", "AMOUNT_BED": "AB_ID",
        "FREE_BEDS_INFORMATION": "FBI_ID", "HOSPITALISATION_REFERRAL": "HR_ID",
        "CANCEL_HOSPITALISATION_REFERRAL": "CHR_ID", "HOSPITALISATION": "H_ID", "MOTION_IN_HOSPITAL": "MIH_ID",
        "CANCEL_HOSPITALISATION": "CH_ID",
    }  # fmt: skip
    for packet_type, obj in objects.items():
        root = _built(packet_type, obj)
        assert packet_type in builders.PACKET_TYPES
        if packet_type in header_ids:
            assert root.findtext(f"HEADER/{header_ids[packet_type]}") == str(obj.id)
            assert root.findtext("HEADER/OPERATIONTYPE") == "Insert"
    assert builders.PACKET_TYPES["HOSPITALISATION"] == "Информация о госпитализации"
    # an explicit header id wins over the row id
    assert _built("HOSPITALISATION", w.hospitalisation, header_id=987654321012).findtext("HEADER/H_ID") == (
        "987654321012"
    )


def test_stage_one_packets_follow_the_notes_order_and_values(world):
    w = world
    branch = _built("BRANCH", w.branch)
    assert _tags(branch) == ["HEADER", "BODY"]
    assert _tags(branch.find("HEADER")) == ["OPERATIONTYPE", "DATA", "CODE_MO", "BR_ID"]
    assert _tags(branch.find("BODY")) == [
        "BR_CODE", "NAME", "DATE_ADD", "ADDRESS", "LPU_TYPE", "CATEGORY", "PHONE", "ACTIVE",
    ]  # fmt: skip
    assert branch.findtext("HEADER/CODE_MO") == w.mo.f003_code
    assert branch.findtext("HEADER/DATA") == "2026-03-02"
    assert (branch.findtext("BODY/BR_CODE"), branch.findtext("BODY/CATEGORY")) == ("007", "2")

    division = _built("DIVISION", w.department).find("BODY")
    assert _tags(division) == [
        "DV_CODE", "NAME", "FULLNAME", "LEVEL", "PHONE", "ADDRESS", "BRANCH_ID", "DIVISION_TYPE", "REVENUE_TYPE",
        "ACTIVE",
    ]  # fmt: skip
    assert division.findtext("DV_CODE") == "Р/О-1"
    assert division.findtext("BRANCH_ID") == str(w.branch.id)
    assert (division.findtext("DIVISION_TYPE"), division.findtext("ACTIVE")) == ("1", "2")

    link = _built("DIVISION_LINK_STRUCTURE_BED", w.bed).find("BODY")
    assert [(c.tag, c.text) for c in link] == [
        ("DIVISION_ID", str(w.department.id)), ("STRUCTURE_BED", "136"), ("V020_STRUCTURE_BED", "3"),
    ]  # fmt: skip

    amount = _built("AMOUNT_BED", w.bed).find("BODY")
    assert _tags(amount) == [
        "DATE_BEGIN", "FEMALE_BED", "MALE_BED", "BEDS_COUNT", "REPAIR_BED", "PLANNED_BEDS_COUNT", "DLSB",
    ]  # fmt: skip
    assert amount.findtext("DLSB") == str(w.bed.id)

    free = _built("FREE_BEDS_INFORMATION", w.bed).find("BODY")
    assert free.findtext("BRANCH") == "007"
    assert (free.findtext("DIVISIONPROFIL"), free.findtext("BEDPROFIL"), free.findtext("BEDFREE")) == (
        "136",
        "3",
        "8",
    )


def test_stage_two_packets_carry_patient_policy_and_beds(world):
    w = world
    referral = _built("HOSPITALISATION_REFERRAL", w.referral)
    assert _tags(referral.find("HEADER")) == ["OPERATIONTYPE", "DATA", "CODE_MO", "CODE_MO_TO", "HR_ID"]
    assert referral.findtext("HEADER/CODE_MO") == w.mo.f003_code
    assert referral.findtext("HEADER/CODE_MO_TO") == w.other_mo.f003_code
    body = referral.find("BODY")
    assert _tags(body)[:9] == [
        "REFERRAL_NUMBER", "REFERRAL_DATE", "HOSPITALISATION_DATE", "HOSPITALISATION_TYPE", "BRANCH_TO",
        "DIVISION_TO", "BEDPROFIL", "STRUCTURE_BED", "DLSB",
    ]  # fmt: skip
    assert _tags(body)[-3:] == ["PHONE", "PATIENT", "ANOTHER_REGION"]
    assert body.findtext("HOSPITALISATION_TYPE") == "0"
    assert (body.findtext("BRANCH_TO"), body.findtext("DIVISION_TO")) == ("002", str(w.other_department.id))
    assert (body.findtext("BEDPROFIL"), body.findtext("STRUCTURE_BED")) == (
        "4",
        "137",
    )  # the department's beds
    assert body.findtext("DOC_CODE") == w.doctor.snils
    assert (body.findtext("POLICY_TYPE"), body.findtext("POLIS_NUMBER")) == ("3", w.patient.enp)  # «Э» → 3
    assert (body.findtext("SEX"), body.findtext("BIRTHDAY")) == ("10302", "1994-05-06")
    assert (body.findtext("SMO"), body.findtext("PATIENT")) == ("35001", str(w.patient.id))

    hospitalisation = _built("HOSPITALISATION", w.hospitalisation).find("BODY")
    assert _tags(hospitalisation)[:8] == [
        "MO", "BRANCH", "DIVISION", "FORM_MEDICAL_CARE", "HOSPITALISATION_DATE", "HOSPITALISATION_TIME",
        "POLICY_TYPE", "POLIS_NUMBER",
    ]  # fmt: skip
    assert hospitalisation.findtext("FORM_MEDICAL_CARE") == "1"
    assert (hospitalisation.findtext("STRUCTURE_BED"), hospitalisation.findtext("DLSB")) == (
        "136",
        str(w.bed.id),
    )

    movement = _built("MOTION_IN_HOSPITAL", w.movement).find("BODY")
    assert movement.findtext("HOSPITALISATION_ID") == str(w.hospitalisation.id)
    assert (movement.findtext("DATE_IN"), movement.findtext("DATE_OUT")) == (
        w.hospitalisation.admitted_at.date().isoformat(), "2026-03-01",
    )  # fmt: skip

    cancel = _built("CANCEL_HOSPITALISATION", w.hospitalisation)
    assert _tags(cancel.find("HEADER")) == ["OPERATIONTYPE", "CODE_MO", "CH_ID"]  # its XSD has no DATA
    assert _tags(cancel.find("BODY")) == [
        "DATE", "HOSPITALISATION_ID", "BRANCH", "REASON", "CANCEL_SOURSE", "DATE_CANCEL", "CANCEL_TYPE",
        "HOSPITALISATION_DIVISION", "MED_CARD_NUMBER", "PATIENT",
    ]  # fmt: skip
    assert cancel.findtext("BODY/DATE_CANCEL") == "2026-03-01"

    cancel_referral = _built("CANCEL_HOSPITALISATION_REFERRAL", w.referral).find("BODY")
    # cancelled by «Пациент» (2): the referring МО's branch and code answer for it
    assert (cancel_referral.findtext("BRANCH"), cancel_referral.findtext("CANCEL_CODE")) == (
        "007",
        w.mo.f003_code,
    )
    assert cancel_referral.findtext("CANCEL_DESCRIPTION") == "Пациентка отказалась"


def test_missing_values_are_named_in_russian_and_no_xml_is_built(world):
    w = world
    w.mo.f003_code = None
    w.patient.policy_kind = w.patient.policy_number = w.patient.enp = None
    w.patient.birth_date = None
    with pytest.raises(PacketBuildError) as caught:
        builders.build("HOSPITALISATION_REFERRAL", "Insert", w.referral, created_on=ON)
    errors = caught.value.errors
    assert "Не указан код МО ФОМС (F003)" in errors
    assert "У пациента не указан полис ОМС" in errors
    assert "У пациента не указана дата рождения" in errors
    assert str(caught.value) == "; ".join(errors)

    w.department.branch_id = None
    db.session.flush()
    db.session.expire(w.department, ["branch"])
    with pytest.raises(PacketBuildError) as caught:
        builders.build("DIVISION", "Insert", w.department, created_on=ON)
    assert "Отделение «Родовое отделение» не привязано к подразделению (филиалу)" in caught.value.errors

    with pytest.raises(PacketBuildError) as caught:
        builders.build("DN_OUT", "Insert", w.observation, created_on=ON)  # observation not ended yet
    assert "Диспансерное наблюдение не завершено: не указана дата снятия" in caught.value.errors


def test_delete_goes_without_body_where_the_schema_allows(world):
    w = world
    w.patient.policy_kind = w.patient.policy_number = w.patient.enp = (
        None  # a Delete does not need the patient
    )
    for packet_type, obj in (
        ("BRANCH", w.branch), ("DIVISION", w.department), ("AMOUNT_BED", w.bed),
        ("HOSPITALISATION_REFERRAL", w.referral), ("HOSPITALISATION", w.hospitalisation),
        ("MOTION_IN_HOSPITAL", w.movement),
    ):  # fmt: skip
        root = _built(packet_type, obj, "Delete")
        assert _tags(root) == ["HEADER"]
        assert root.findtext("HEADER/OPERATIONTYPE") == "Delete"
    assert _tags(_built("DN_IN", w.observation, "Delete")) == ["ZGLV"]
    assert _built("DN_IN", w.observation, "Delete").findtext("ZGLV/TYPE") == "Delete"
    # FREE_BEDS_INFORMATION requires BODY; ATTACH_DATA names the attachment only in PERS
    assert _tags(_built("FREE_BEDS_INFORMATION", w.bed, "Delete")) == ["HEADER", "BODY"]
    attach = _built("ATTACH_DATA", w.attachment, "Delete")
    assert attach.findtext("PERS/OPER_TYPE") == "3"


def test_schema_errors_surface_with_line_numbers(world):
    w = world
    w.observation.diagnosis = "O24.4000000"  # DS_DISP is at most 10 characters
    with pytest.raises(PacketBuildError) as caught:
        builders.build("DN_IN", "Insert", w.observation, created_on=ON)
    assert caught.value.errors[0].startswith("строка ")
    assert "DS_DISP" in caught.value.errors[0]


def test_card_number_goes_as_a_number_where_the_schema_wants_one(world):
    w = world
    w.hospitalisation.card_number = "20/26"  # «номер/год», as КВС are numbered
    motion = builders.flat(builders.build("MOTION_IN_HOSPITAL", "Insert", w.movement, created_on=ON))
    hosp = builders.flat(builders.build("HOSPITALISATION", "Insert", w.hospitalisation, created_on=ON))
    assert (motion["MED_CARD_NUMBER"], hosp["MED_CARD_NUMBER"]) == ("20", "20/26")
    w.hospitalisation.card_number = "КВС-12"
    with pytest.raises(PacketBuildError) as caught:
        builders.build("MOTION_IN_HOSPITAL", "Insert", w.movement, created_on=ON)
    assert caught.value.errors == ["Номер медицинской карты «КВС-12» не начинается с цифр"]


def test_admission_department_reports_the_profile_the_patient_is_admitted_to(world):
    w = world
    admission = make_department(w.mo, kind="admission", branch_id=w.branch.id, name="Приёмное отделение")
    stay = make_hospitalisation(w.patient, admission)
    first = make_movement(stay, department_id=admission.id)
    make_movement(stay, department_id=w.department.id)
    motion = builders.flat(builders.build("MOTION_IN_HOSPITAL", "Insert", first, created_on=ON))
    assert (motion["DIVISION"], motion["DLSB"]) == (str(admission.id), str(w.bed.id))
    lone = make_hospitalisation(w.patient, admission)  # refused in admission: nothing to take
    with pytest.raises(PacketBuildError) as caught:
        builders.build("HOSPITALISATION", "Insert", lone, created_on=ON)
    assert caught.value.errors == ["У отделения «Приёмное отделение» не указан коечный фонд (профиль коек)"]

    xml = builders.build("HOSPITALISATION", "Insert", w.hospitalisation, created_on=ON)
    too_long = xml.replace(b"<OPERATIONTYPE>Insert<", b"<OPERATIONTYPE>Inserted<")
    errors = builders.validate("HOSPITALISATION", too_long)
    assert errors and errors[0].startswith("строка 4: ") and "OPERATIONTYPE" in errors[0]
    assert "maxLength" in errors[0]
    assert builders.validate("HOSPITALISATION", b"<HOSPITALISATION><HEADER>")[0].startswith("строка 1: ")
    assert builders.validate("BRANCH", xml) == [
        "строка 2: корневой элемент «HOSPITALISATION», ожидался «BRANCH»"
    ]


def test_attachment_cases_of_the_seed(world):
    w = world
    attached = _built("ATTACH_DATA", w.attachment)
    assert _tags(attached.find("ZGLV")) == ["VERSION", "DATE", "CODE_MO", "ID_MO"]
    assert attached.findtext("ZGLV/ID_MO") == w.mo.oid
    assert _tags(attached.find("PERS")) == [
        "ID_PAC", "FAM", "IM", "OT", "W", "DR", "SMO", "VPOLIS", "NPOLIS", "OPER_TYPE", "INFO_TYPE", "DATE",
        "SP_PRIK", "T_PRIK", "KOD_PODR", "NUM_UCH", "SNILS_VR", "PHONE1",
    ]  # fmt: skip
    pers = attached.find("PERS")
    assert (pers.findtext("OPER_TYPE"), pers.findtext("INFO_TYPE"), pers.findtext("DATE")) == (
        "1",
        "1",
        "2025-09-01",
    )
    assert (pers.findtext("SP_PRIK"), pers.findtext("T_PRIK")) == ("2", "2")  # заявительное, гинекологическое
    snils = w.doctor.snils
    assert pers.findtext("SNILS_VR") == f"{snils[:3]}-{snils[3:6]}-{snils[6:9]} {snils[9:]}"

    conditional = make_attachment(w.patient, method="1", attached_on=date(2024, 1, 10))  # условное, без врача
    pers = _built("ATTACH_DATA", conditional).find("PERS")
    assert pers.findtext("SP_PRIK") == "1"
    assert pers.find("SNILS_VR") is None and pers.find("KOD_PODR") is None

    # перекрепление to another МО: the old attachment is detached, the new МО attaches
    w.attachment.detached_on = date(2026, 2, 28)
    moved = make_attachment(w.patient, mo_id=w.other_mo.id, method="2", attached_on=date(2026, 3, 1))
    detached = _built("ATTACH_DATA", w.attachment, "Update")
    assert detached.findtext("ZGLV/CODE_MO") == w.mo.f003_code
    assert [detached.findtext(f"PERS/{t}") for t in ("OPER_TYPE", "INFO_TYPE", "DATE")] == [
        "2",
        "0",
        "2026-02-28",
    ]
    new = _built("ATTACH_DATA", moved)
    assert new.findtext("ZGLV/CODE_MO") == w.other_mo.f003_code
    assert [new.findtext(f"PERS/{t}") for t in ("INFO_TYPE", "DATE")] == ["1", "2026-03-01"]


def test_dispensary_observation_and_its_end(world):
    w = world
    direct = _built("DN_IN", w.observation).find("DIRECT")
    assert [(t, direct.findtext(t)) for t in ("DATE_IN", "DS_DISP", "KRAT", "DN_PLACE")] == [
        ("DATE_IN", "2026-02-10"), ("DS_DISP", "O24.4"), ("KRAT", "4"), ("DN_PLACE", "1"),
    ]  # fmt: skip
    assert [direct.findtext(f"DN_MONTH{i}") for i in range(1, 6)] == ["2", "5", "8", "11", None]
    assert _tags(direct)[-7:] == [
        "SNILS_VR",
        "KRAT",
        "DN_MONTH1",
        "DN_MONTH2",
        "DN_MONTH3",
        "DN_MONTH4",
        "DN_PLACE",
    ]

    w.observation.ended_on = date(2026, 3, 1)
    with pytest.raises(PacketBuildError) as caught:
        builders.build("DN_OUT", "Insert", w.observation, created_on=ON)
    assert caught.value.errors == ["Не указана причина снятия с диспансерного наблюдения"]
    w.observation.end_result = "2"
    out = _built("DN_OUT", w.observation).find("DIRECT")
    assert _tags(out)[-4:] == ["DATE_OUT", "DS_DISP", "SNILS_VR", "RESULT_OUT"]
    assert (out.findtext("DATE_OUT"), out.findtext("RESULT_OUT")) == ("2026-03-01", "2")


def test_plan_person_is_one_message_with_one_pers(world):
    w = world
    root = _built("PERS_LIST", w.plan_person)
    assert [c.tag for c in root] == ["ZGLV", "PERS"]
    zglv = root.find("ZGLV")
    assert _tags(zglv) == ["VERSION", "DATA", "YEAR", "TYPE", "CODE_MO", "ID_MO", "SMO", "ZAP"]
    assert (zglv.findtext("YEAR"), zglv.findtext("SMO"), zglv.findtext("ZAP")) == ("2026", "35001", "1")
    pers = root.find("PERS")
    assert (pers.findtext("ID"), pers.findtext("ID_PAC")) == (str(w.plan_person.id), str(w.patient.id))
    assert (pers.findtext("DISP"), pers.findtext("DISP_MONTH")) == ("ОПВ", "4")  # 2nd quarter → April


def test_flat_lists_leaves_and_numbers_repeats(world):
    xml = builders.build("HOSPITALISATION", "Insert", world.hospitalisation, created_on=ON)
    data = builders.flat(xml)
    assert list(data)[:4] == ["OPERATIONTYPE", "DATA", "CODE_MO", "H_ID"]
    assert data["FIRST_NAME"] == "Мария" and "HEADER" not in data and "BODY" not in data
    answer = builders.build_answer(
        "PERS_LIST", "m-1", [(1, "Первая"), (2, "Вторая")], queue_name="reply_queue"
    )
    assert builders.flat(answer.decode())["RESULT_NAME[2]"] == "Вторая"


def test_answer_round_trip():
    ok = builders.build_answer("HOSPITALISATION", "guid-1", [], queue_name="request_queue")
    assert builders.validate("ANSWER", ok) == []
    reply = builders.parse_reply("ANSWER", ok)
    assert (reply.message_id, reply.answered_type, reply.ok, reply.errors) == (
        "guid-1",
        "HOSPITALISATION",
        True,
        [],
    )
    assert reply.data["RESULT"] == "OK"

    rejected = builders.build_answer(
        "PERS_LIST", "guid-2", [(12, "Не найден полис"), (30, "Неверная дата")], queue_name="q", id_pac=77
    )
    reply = builders.parse_reply(None, rejected)  # found by the root element too
    assert not reply.ok
    assert reply.errors == ["Код 12: Не найден полис", "Код 30: Неверная дата"]
    assert (reply.data["ID_PAC"], reply.data["RESULT_CODE[2]"]) == ("77", "30")


def _error_xml(message_id: str | None, description: str, original: bytes | None) -> bytes:
    header = (
        f"<MESSAGE_ID>{message_id}</MESSAGE_ID>" if message_id else ""
    ) + f"<DESCRIPTION>{description}</DESCRIPTION>"
    body = f"<BODY>{base64.b64encode(original).decode()}</BODY>" if original else ""
    return f"<ERROR><HEADER>{header}</HEADER>{body}</ERROR>".encode()


def test_error_replies(world):
    original = builders.build("HOSPITALISATION", "Insert", world.hospitalisation, created_on=ON)
    reply = builders.parse_reply("ERROR", _error_xml("guid-3", "Пакет не прошёл проверку XSD", original))
    assert (reply.message_id, reply.answered_type, reply.ok) == ("guid-3", "HOSPITALISATION", False)
    assert reply.errors == ["Пакет не прошёл проверку XSD"]
    assert reply.data["H_ID"] == str(world.hospitalisation.id)

    # no MESSAGE_ID: the packet inside still says what was rejected
    reply = builders.parse_reply("HOSPITALISATION_ERROR", _error_xml(None, "Ошибка разбора", original))
    assert reply.message_id is None
    assert (reply.answered_type, reply.data["TYPE"], reply.data["H_ID"]) == (
        "HOSPITALISATION", "HOSPITALISATION", str(world.hospitalisation.id),
    )  # fmt: skip

    with pytest.raises(MalformedReply, match="нет MESSAGE_ID"):
        builders.parse_reply("ERROR", _error_xml(None, "Ошибка", b"not xml at all"))


def test_malformed_replies_are_refused_in_russian():
    with pytest.raises(MalformedReply, match="не является XML"):
        builders.parse_reply("ANSWER", b"RESULT=OK")
    with pytest.raises(MalformedReply, match="корневой элемент «POLIS», ожидался «ANSWER»"):
        builders.parse_reply("ANSWER", b"<POLIS/>")
    with pytest.raises(MalformedReply, match="не является ответом"):
        builders.parse_reply("POLIS", b"<POLIS/>")
    no_id = (
        b"<ANSWER><HEADER><QUEUE_NAME>q</QUEUE_NAME><TYPE>DN_IN</TYPE></HEADER>"
        b"<BODY><RESULTS><RESULT>OK</RESULT></RESULTS></BODY></ANSWER>"
    )
    with pytest.raises(MalformedReply) as caught:
        builders.parse_reply("ANSWER", no_id)
    assert "answer.xsd" in str(caught.value) and "MESSAGE_ID" in str(caught.value)


def test_polis_round_trip():
    person = dict(
        last_name="Сидорова", first_name="Елена", middle_name="Ивановна", birth_date=date(1990, 7, 15), sex="F",
        document_kind="14", document_series="19 04", document_number="654321", snils="112-233-445 95",
        registration_address="г. Вологда, ул. Мира, д. 1", residence_address="г. Череповец, пр. Победы, д. 2",
    )  # fmt: skip
    xml = builders.build_polis(
        bdz_id=4242, enp="3551234567890123", smo_code="35002", policy_type=3, number="3551234567890123",
        begin=date(2026, 1, 1), end=date(2026, 12, 31), person=person,
    )  # fmt: skip
    assert builders.validate(None, xml) == []
    polis = builders.parse_polis(xml)
    assert (polis.operation, polis.bdz_id, polis.insurer_code, polis.policy_kind) == (
        "Update",
        4242,
        "35002",
        "П",
    )
    assert (polis.enp, polis.number, polis.begin_on, polis.end_on) == (
        "3551234567890123", "3551234567890123", date(2026, 1, 1), date(2026, 12, 31),
    )  # fmt: skip
    assert (polis.last_name, polis.middle_name, polis.birth_date, polis.sex) == (
        "Сидорова", "Ивановна", date(1990, 7, 15), "F",
    )  # fmt: skip
    assert (polis.document_kind, polis.document_series, polis.document_number) == ("14", "19 04", "654321")
    assert polis.snils == "11223344595"
    assert polis.registration_address.startswith("г. Вологда") and polis.residence_address.startswith(
        "г. Череповец"
    )
    assert polis.social_status is None and polis.document_issuer is None and polis.has_person
    assert polis.data["SMOCODE"] == "35002"

    bare = builders.parse_polis(
        builders.build_polis(
            bdz_id=1, enp="1", smo_code="35001", policy_type=1, number="12", begin=date(2020, 1, 1)
        )
    )
    assert (bare.policy_kind, bare.has_person, bare.end_on) == ("С", False, None)

    with pytest.raises(PacketBuildError):  # DOCTYPE has two characters at most
        builders.build_polis(
            bdz_id=1, enp="1", smo_code="35001", policy_type=3, number="1", begin=date(2020, 1, 1),
            person={**person, "document_kind": "паспорт"},
        )  # fmt: skip
    broken = xml.replace(b"<SMOCODE>35002</SMOCODE>", b"<SMOCODE>3500200</SMOCODE>")
    with pytest.raises(MalformedReply) as caught:
        builders.parse_polis(broken)
    assert "polis.xsd" in str(caught.value) and caught.value.errors[0].startswith("строка ")


def test_free_beds_rpc_round_trip():
    request = builders.build_free_beds_request("350001", target_mo="350002", profile=3, on=ON)
    assert builders.validate(None, request) == []
    assert builders.parse_free_beds_request(request) == {
        "code_mo": "350001", "target_mo": "350002", "profile": 3, "on": ON,
    }  # fmt: skip
    every = builders.build_free_beds_request("350001", target_mo=None, profile=None, on=ON)
    assert _tags(_root(every).find("BODY")) == []

    items = [
        dict(mo="350002", branch="002", division=15, division_name="Родовое отделение", profile=3, care_profile=136,
             free=5, free_adult=5, free_child=0, actual_on=ON),
        dict(mo="350003", branch=None, division=16, division_name="Патология", profile=4, care_profile=137,
             free=0, free_adult=0, free_child=0, actual_on=None),
    ]  # fmt: skip
    answer = builders.build_free_beds_answer(items, ON)
    assert builders.validate(None, answer) == []
    assert _tags(_root(answer).find("BODY/ITEM")) == [
        "MO", "BRANCH", "DIVISION", "DIVISION_NAME", "BEDPROFIL", "STRUCTURE_BED", "BEDFREE", "BEDFREEADULT",
        "BEDFREECHILD", "ACTUAL_DATE",
    ]  # fmt: skip
    assert builders.parse_free_beds_answer(answer) == items
    assert builders.parse_free_beds_answer(builders.build_free_beds_answer([], ON)) == []
    with pytest.raises(MalformedReply):
        builders.parse_free_beds_answer(request)


def test_reference_rows_not_for_tfoms_are_refused(world):
    w = world
    lab = make_department(w.mo, kind="laboratory", branch_id=w.branch.id)
    with pytest.raises(PacketBuildError, match="Отделения вида «Лаборатория» не передаются в ТФОМС"):
        builders.build("DIVISION", "Insert", lab, created_on=ON)
    w.hospitalisation.card_number = None
    w.hospitalisation.diagnosis = None
    with pytest.raises(PacketBuildError) as caught:
        builders.build("HOSPITALISATION", "Insert", w.hospitalisation, created_on=ON + timedelta(days=1))
    assert caught.value.errors == [
        "Не указан номер медицинской карты (КВС)", "Не указан диагноз при поступлении (МКБ-10)",
    ]  # fmt: skip
