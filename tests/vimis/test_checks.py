"""Data checks before building a SEMD (V-4): the messages the registry shows as «Ошибка»."""

from __future__ import annotations

import pytest

from portal.extensions import db
from portal.vimis import checks
from portal.vimis.checks import check_event
from portal.vimis.semd_types import SEMD_TYPES
from tests.vimis.helpers import make_semd_case

ALL_TYPES = sorted(SEMD_TYPES)
BAD_SNILS = "11223344500"  # the last two digits should be 95
BAD_ENP = "3500000000000010"


@pytest.mark.parametrize("semd_type", ALL_TYPES)
def test_complete_data_is_ready_to_build(app, semd_type):
    assert check_event(make_semd_case(semd_type).event, semd_type) == []


# (message, SEMD type, how the case is spoiled)
SPOILED = [
    ("Нет адреса регистрации пациента", 17, {"patient_kw": {"registration_address": "  "}}),
    ("Нет СНИЛС пациента", 5, {"patient_kw": {"snils": None}}),
    ("Некорректная контрольная сумма СНИЛС", 2, {"patient_kw": {"snils": BAD_SNILS}}),
    ("Некорректная контрольная сумма ЕНП", 3, {"patient_kw": {"enp": BAD_ENP}}),
    ("Недопустимые символы в ФИО пациента", 1, {"patient_kw": {"last_name": "Ivanова"}}),
    ("Недопустимые символы в ФИО пациента", 1, {"patient_kw": {"first_name": "Мария2"}}),
    ("Нет даты рождения пациента", 13, {"patient_kw": {"birth_date": None}}),
    (
        "Нет данных полиса ОМС",
        17,
        {"patient_kw": {"enp": None, "policy_kind": "С", "policy_number": "77 123"}},
    ),
    ("Нет данных медицинской карты", 5, {"with_pregnancy": False}),
    ("Нет данных медицинской карты", 22, {"with_pregnancy": False}),
    ("Нет данных медицинской карты", 8, {"with_stay": False}),
    ("Нет данных медицинской карты", 17, {"with_stay": False}),
    ("Не указан врач", 19, {"with_doctor": False}),
    ("Нет СНИЛС врача", 3, {"doctor_kw": {"snils": ""}}),
    ("Некорректная контрольная сумма СНИЛС врача", 8, {"doctor_kw": {"snils": "112-233-445 00"}}),
    ("Не указан OID МО", 1, {"mo_kw": {"oid": None}}),
    ("Некорректный OID МО", 1, {"mo_kw": {"oid": "1.2.643.5.1.13.13.12.2.35.x"}}),
    ("Не указан статус случая в регистре КАС", 22, {"data": {"diagnosis": "O72.0"}}),
    ("Не указан статус случая в регистре КАС", 22, {"data": {"kas_status": "unknown"}}),
]


@pytest.mark.parametrize(("message", "semd_type", "spoil"), SPOILED, ids=[f"{m}-{t}" for m, t, _ in SPOILED])
def test_each_problem_is_named_in_the_seed_words(app, message, semd_type, spoil):
    problems = check_event(make_semd_case(semd_type, **spoil).event, semd_type)
    assert problems == [message]
    assert message not in check_event(make_semd_case(semd_type).event, semd_type)


def test_17_needs_the_outcome_inside_the_stay(app):
    case = make_semd_case(17)
    case.stay.outcome = None
    db.session.commit()
    assert check_event(case.event, 17) == ["Нет исхода беременности в госпитализации"]


def test_cards_are_not_required_for_death_certificates(app):
    for semd_type in (13, 19):
        assert check_event(make_semd_case(semd_type, with_pregnancy=False).event, semd_type) == []


def test_an_outpatient_document_may_cite_the_stay_instead_of_the_pregnancy(app):
    case = make_semd_case(3, with_pregnancy=False, with_stay=True)
    assert check_event(case.event, 3) == []
    assert checks.medical_card(case.event, 3) == ("inpatient", case.stay)


def test_old_style_policy_is_enough_where_the_policy_is_optional(app):
    case = make_semd_case(8, patient_kw={"enp": None, "policy_kind": "С", "policy_number": "77 123"})
    assert check_event(case.event, 8) == []


def test_every_problem_at_once_in_a_stable_order(app):
    case = make_semd_case(
        22,
        mo_kw={"oid": ""},
        doctor_kw={"snils": None},
        with_pregnancy=False,
        patient_kw={"snils": BAD_SNILS, "enp": BAD_ENP, "birth_date": None, "registration_address": None},
        data={},
    )
    assert check_event(case.event, 22) == [
        "Некорректная контрольная сумма СНИЛС",
        "Некорректная контрольная сумма ЕНП",
        "Нет даты рождения пациента",
        "Нет адреса регистрации пациента",
        "Нет данных медицинской карты",
        "Нет СНИЛС врача",
        "Не указан OID МО",
        "Не указан статус случая в регистре КАС",
    ]
    assert check_event(case.event, 22) == check_event(case.event, 22)


def test_unknown_type_is_a_programming_error(app):
    with pytest.raises(ValueError):
        check_event(make_semd_case(1).event, 4)
