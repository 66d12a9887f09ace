"""Data checks run before a SEMD is built (SPEC V-4).

`check_event` names every problem that would make the document unbuildable or fail ВИМИС ФЛК
(protocol §6: patient data, ФРМО, medical worker's СНИЛС), one short Russian message each, in the
seed's words («Нет адреса регистрации пациента», «Нет данных медицинской карты» …). An empty list
means the event is ready to build.

«Нет данных медицинской карты»: every SEMD beta carries the section «Данные о медицинских картах
пациента» (vimisMedicalCard, R [1..1]) with the outpatient or inpatient card of the case
(protocol §2: the card number follows the care conditions). The portal's cards are:
* the hospitalisation (медицинская карта стационарного больного) — required for 8 and 17, used
  by 1/2/3/5 when the event is inpatient (care conditions 1/2) and linked to a stay;
* the pregnancy (индивидуальная карта беременной, outpatient) — otherwise, for 1/2/3/5/22.
The federal death certificates (13, 19) have no card section, so they need neither.
"""

from __future__ import annotations

import re

from portal.clinical.identifiers import digits, enp_is_valid, snils_is_valid
from portal.clinical.models import KAS_STATUSES, ClinicalEvent
from portal.vimis.semd_types import SEMD_TYPES

MSG_MO_OID = "Не указан OID МО"
MSG_MO_OID_INVALID = "Некорректный OID МО"
MSG_PATIENT_SNILS = "Нет СНИЛС пациента"
MSG_PATIENT_SNILS_CHECKSUM = "Некорректная контрольная сумма СНИЛС"
MSG_ENP_CHECKSUM = "Некорректная контрольная сумма ЕНП"
MSG_PATIENT_NAME = "Недопустимые символы в ФИО пациента"
MSG_BIRTH_DATE = "Нет даты рождения пациента"
MSG_REGISTRATION_ADDRESS = "Нет адреса регистрации пациента"
MSG_POLICY = "Нет данных полиса ОМС"
MSG_MEDICAL_CARD = "Нет данных медицинской карты"
MSG_OUTCOME = "Нет исхода беременности в госпитализации"
MSG_NO_DOCTOR = "Не указан врач"
MSG_DOCTOR_SNILS = "Нет СНИЛС врача"
MSG_DOCTOR_SNILS_CHECKSUM = "Некорректная контрольная сумма СНИЛС врача"
MSG_KAS_STATUS = "Не указан статус случая в регистре КАС"

INPATIENT_CONDITIONS = frozenset({"1", "2"})  # стационарно, в дневном стационаре
HOSPITAL_TYPES = frozenset({8, 17})
CARD_TYPES = frozenset({1, 2, 3, 5, 8, 17, 22})  # SEMD beta: section vimisMedicalCard

OID_PATTERN = re.compile(r"^[0-2](?:\.(?:0|[1-9][0-9]*))+$")

# ФЛК stage 1: a name part is Cyrillic or Latin letters (hyphen and space between words), not mixed.
_CYRILLIC_NAME = re.compile(r"^[А-Яа-яЁё]+(?:[ -][А-Яа-яЁё]+)*$")
_LATIN_NAME = re.compile(r"^[A-Za-z]+(?:[ -][A-Za-z]+)*$")


def name_is_valid(*parts: str | None) -> bool:
    """All given name parts use one alphabet and no digits or special signs."""
    present = [p.strip() for p in parts if p and p.strip()]
    return bool(present) and (
        all(_CYRILLIC_NAME.match(p) for p in present) or all(_LATIN_NAME.match(p) for p in present)
    )


def new_style_policy_number(patient) -> str:
    """The 16-digit number of a new-style ОМС policy (ЕНП), or '' when the patient has none."""
    enp = digits(patient.enp)
    if len(enp) == 16:
        return enp
    number = digits(patient.policy_number)
    if patient.policy_kind in {"Э", "П", "К"} and len(number) == 16:
        return number
    return ""


def medical_card(event: ClinicalEvent, semd_type: int):
    """The card the document cites: ("inpatient", hospitalisation) or ("outpatient", pregnancy), or None."""
    hospitalisation = event.hospitalisation
    if semd_type in HOSPITAL_TYPES:
        return ("inpatient", hospitalisation) if hospitalisation is not None else None
    if hospitalisation is not None and (
        event.care_conditions in INPATIENT_CONDITIONS or event.pregnancy is None
    ):
        return "inpatient", hospitalisation
    if event.pregnancy is not None:
        return "outpatient", event.pregnancy
    return None


def check_event(event: ClinicalEvent, semd_type: int) -> list[str]:
    """Every problem that stops building `semd_type` from `event`; [] when it is ready."""
    if semd_type not in SEMD_TYPES:
        raise ValueError(f"unknown SEMD type {semd_type}")
    problems: list[str] = []
    patient = event.patient

    if not digits(patient.snils):
        problems.append(MSG_PATIENT_SNILS)
    elif not snils_is_valid(patient.snils):
        problems.append(MSG_PATIENT_SNILS_CHECKSUM)
    if digits(patient.enp) and not enp_is_valid(patient.enp):
        problems.append(MSG_ENP_CHECKSUM)
    if not name_is_valid(patient.last_name, patient.first_name, patient.middle_name) or not (
        patient.last_name and patient.first_name
    ):
        problems.append(MSG_PATIENT_NAME)
    if patient.birth_date is None:
        problems.append(MSG_BIRTH_DATE)
    if not (patient.registration_address or "").strip():
        problems.append(MSG_REGISTRATION_ADDRESS)
    if semd_type == 17 and not new_style_policy_number(patient):
        problems.append(MSG_POLICY)  # SMSV17: «Сведения о страховой компании ОМС» R [1..1]

    if semd_type in CARD_TYPES and medical_card(event, semd_type) is None:
        problems.append(MSG_MEDICAL_CARD)
    if semd_type == 17 and event.hospitalisation is not None and not event.hospitalisation.outcome:
        problems.append(MSG_OUTCOME)

    doctor = event.doctor
    if doctor is None:
        problems.append(MSG_NO_DOCTOR)
    elif not digits(doctor.snils):
        problems.append(MSG_DOCTOR_SNILS)
    elif not snils_is_valid(doctor.snils):
        problems.append(MSG_DOCTOR_SNILS_CHECKSUM)

    oid = (event.mo.oid or "").strip()
    if not oid:
        problems.append(MSG_MO_OID)
    elif not OID_PATTERN.match(oid):
        problems.append(MSG_MO_OID_INVALID)

    data = event.data if isinstance(event.data, dict) else {}
    if semd_type == 22 and data.get("kas_status") not in KAS_STATUSES:
        problems.append(MSG_KAS_STATUS)
    return problems
