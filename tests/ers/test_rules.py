"""What stops a request to ФСС before it is signed, in the words the operator reads."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from portal.ers import rules
from portal.ers.models import ErsContract
from portal.extensions import db
from tests import factories

TODAY = date(2026, 11, 24)


def _contract(mo, signed_on: date, ends_on: date, number: str = "14") -> ErsContract:
    contract = ErsContract(mo_id=mo.id, number=number, signed_on=signed_on, ends_on=ends_on)
    db.session.add(contract)
    db.session.flush()
    return contract


def test_an_mo_without_a_contract_is_asked_for_one(app):
    mo = factories.make_mo()
    assert rules.current_contract(mo.id) is None
    assert rules.contract_refusal(None, TODAY) == (
        "Не введён договор МО с ФСС: введите номер, дату и дату окончания договора"
    )


def test_the_newest_contract_counts_and_an_expired_one_refuses_by_number_and_date(app):
    mo = factories.make_mo()
    _contract(mo, date(2024, 1, 1), date(2026, 12, 31), "12")
    newest = _contract(mo, date(2025, 1, 10), date(2025, 12, 31), "14")

    assert rules.current_contract(mo.id) is newest
    assert rules.contract_refusal(newest, TODAY) == (
        "Договор с ФСС № 14 от 10.01.2025 истёк 31.12.2025: запросы в ФСС не отправляются. "
        "Введите действующий договор"
    )
    assert rules.contract_refusal(newest, date(2025, 12, 31)) is None  # valid through its last day
    assert rules.contract_refusal(newest, date(2025, 1, 9)) == "Договор с ФСС № 14 действует с 10.01.2025"


@pytest.mark.parametrize(
    ("number", "signed_on", "ends_on", "expected"),
    [
        ("", TODAY, TODAY, {"number": "Укажите номер договора"}),
        ("14", None, TODAY, {"signed_on": "Укажите дату договора в формате ДД.ММ.ГГГГ"}),
        ("14", TODAY, None, {"ends_on": "Укажите дату окончания договора в формате ДД.ММ.ГГГГ"}),
        ("14", TODAY, TODAY - timedelta(days=1), {"ends_on": "Дата окончания договора раньше даты договора"}),
        ("14", TODAY, TODAY + timedelta(days=365), {}),
    ],
)
def test_the_contract_form_names_each_wrong_field(number, signed_on, ends_on, expected):
    assert rules.contract_errors(number, signed_on, ends_on) == expected


def test_missing_personal_data_is_named_field_by_field(app):
    mo = factories.make_mo()
    complete = factories.make_patient(mo)
    assert rules.missing_personal_data(complete) == [] and rules.personal_data_refusal(complete) is None

    patient = factories.make_patient(
        mo,
        snils=None,
        policy_number=None,
        enp=None,
        document_issued_on=None,
        document_issuer="",
        registration_address=None,
        residence_address=" ",
    )
    assert rules.missing_personal_data(patient) == [
        "номер полиса ОМС",
        "дата выдачи документа",
        "кем выдан документ",
        "адрес места жительства",
        "СНИЛС",
    ]
    assert rules.personal_data_refusal(patient) == (
        f"У пациентки {patient.full_name} не заполнено: номер полиса ОМС, дата выдачи документа, "
        "кем выдан документ, адрес места жительства, СНИЛС. Дополните данные в карточке"
    )
    patient.policy_kind = None
    assert rules.missing_personal_data(patient)[0] == "тип документа ОМС"


@pytest.mark.parametrize(
    ("multiple", "weeks", "allowed"),
    [(False, 29, False), (False, 30, True), (True, 27, False), (True, 28, True)],
)
def test_ticket_1_only_from_30_weeks_or_28_for_a_multiple_pregnancy(app, multiple, weeks, allowed):
    patient = factories.make_patient(factories.make_mo())
    pregnancy = factories.make_pregnancy(
        patient, registered_on=TODAY - timedelta(weeks=weeks - 8), weeks_at_registration=8, multiple=multiple
    )
    refusal = rules.ticket1_refusal(pregnancy, TODAY)
    assert (refusal is None) == allowed
    if not allowed:
        assert (
            refusal
            == "Талон 1 — только осмотры от 30-ти недель или от 28-ми недель при многоплодной беременности"
        )
    assert (
        rules.ticket1_refusal(None, TODAY)
        == "Осмотр не связан с беременностью: Талон 1 выдаётся по осмотру беременной"
    )
