"""The rules a request to ФСС must pass before it is signed (SPEC E-3, E-9, E-11), each refusal a
Russian sentence the operator can act on.

* the contract (E-3): an МО without a contract is asked for one; an expired contract refuses every
  request, naming its number and end date;
* personal data (E-11): every field ФСС needs, named when missing (ФСС also accepts a stated
  reason instead of a value; the operator completes the data on the card instead);
* Талон 1 (E-9, seed «Заполнение данных ЭРС (Талон 1)»): only from an exam at 30 weeks or later,
  28 for a multiple pregnancy.
"""

from __future__ import annotations

from datetime import date

from portal.clinical.gestation import gestational_weeks
from portal.clinical.models import Patient, Pregnancy
from portal.ers.models import ErsContract
from portal.extensions import db

TICKET1_WEEKS = 30
TICKET1_WEEKS_MULTIPLE = 28
TICKET1_REFUSAL = "Талон 1 — только осмотры от 30-ти недель или от 28-ми недель при многоплодной беременности"


def current_contract(mo_id: int) -> ErsContract | None:
    """The МО's newest contract with ФСС (shown at the top of the page), expired or not."""
    return db.session.scalars(
        db.select(ErsContract)
        .where(ErsContract.mo_id == mo_id)
        .order_by(ErsContract.signed_on.desc(), ErsContract.id.desc())
        .limit(1)
    ).first()


def contract_refusal(contract: ErsContract | None, today: date | None = None) -> str | None:
    """Why no request may go under this contract, or None."""
    today = today or date.today()
    if contract is None:
        return "Не введён договор МО с ФСС: введите номер, дату и дату окончания договора"
    if contract.ends_on < today:
        return (
            f"Договор с ФСС № {contract.number} от {contract.signed_on:%d.%m.%Y} истёк "
            f"{contract.ends_on:%d.%m.%Y}: запросы в ФСС не отправляются. Введите действующий договор"
        )
    if contract.signed_on > today:
        return f"Договор с ФСС № {contract.number} действует с {contract.signed_on:%d.%m.%Y}"
    return None


def contract_errors(number: str, signed_on: date | None, ends_on: date | None) -> dict[str, str]:
    """Field → message for the contract form («Номер договора», «Дата договора», «Дата окончания»)."""
    errors: dict[str, str] = {}
    if not number.strip():
        errors["number"] = "Укажите номер договора"
    elif len(number.strip()) > 64:
        errors["number"] = "Номер договора длиннее 64 знаков"
    if signed_on is None:
        errors["signed_on"] = "Укажите дату договора в формате ДД.ММ.ГГГГ"
    if ends_on is None:
        errors["ends_on"] = "Укажите дату окончания договора в формате ДД.ММ.ГГГГ"
    if signed_on and ends_on and ends_on < signed_on:
        errors["ends_on"] = "Дата окончания договора раньше даты договора"
    return errors


def missing_personal_data(patient: Patient) -> list[str]:
    """The personal data ФСС needs for any request, each missing field named (E-11, seed
    «Типичные ошибки»: фамилия, имя, тип документа ОМС, полис, документ, дата выдачи, кем выдан,
    дата рождения, адрес места жительства, СНИЛС; отчество only when she has one)."""
    missing = []
    for value, label in (
        (patient.last_name, "фамилия"),
        (patient.first_name, "имя"),
        (patient.policy_kind or patient.enp, "тип документа ОМС"),
        (patient.enp or patient.policy_number, "номер полиса ОМС"),
        (patient.document_kind, "вид документа, удостоверяющего личность"),
        (patient.document_number, "номер документа, удостоверяющего личность"),
        (patient.document_issued_on, "дата выдачи документа"),
        (patient.document_issuer, "кем выдан документ"),
        (patient.birth_date, "дата рождения"),
        (patient.residence_address or patient.registration_address, "адрес места жительства"),
        (patient.snils, "СНИЛС"),
    ):
        if value is None or (isinstance(value, str) and not value.strip()):
            missing.append(label)
    return missing


def personal_data_refusal(patient: Patient) -> str | None:
    missing = missing_personal_data(patient)
    if not missing:
        return None
    return f"У пациентки {patient.full_name} не заполнено: {', '.join(missing)}. Дополните данные в карточке"


def ticket1_refusal(pregnancy: Pregnancy | None, exam_on: date) -> str | None:
    """Талон 1 from this exam: None when its term allows it, else the seed's message."""
    if pregnancy is None:
        return "Осмотр не связан с беременностью: Талон 1 выдаётся по осмотру беременной"
    needed = TICKET1_WEEKS_MULTIPLE if pregnancy.multiple else TICKET1_WEEKS
    return None if gestational_weeks(pregnancy, exam_on) >= needed else TICKET1_REFUSAL
