"""The bodies of the requests to ФСС (portal/schemas/ers/ErsTypes.xsd), built from the portal's
clinical data so the operator types nothing (seed 1.2, 1.3). `client.send` adds systemInfo and
medicalOrganization. Each builder returns plain dicts zeep fills the operation with, JSON-safe
(ISO dates) so the row keeps exactly what was sent.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from portal.clinical.gestation import gestational_weeks
from portal.clinical.models import ClinicalEvent, Patient, Pregnancy

GENDER = {"M": "1", "F": "2"}  # ErsTypes Gender: 1 мужской, 2 женский
WATCH_MONTHS = {"3-1": (0, 6), "3-2": (6, 12)}  # Талон 3: first and second half-year of the child


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value else None


def person(patient: Patient) -> dict[str, Any]:
    """Получатель услуг (Person): the fields `rules.missing_personal_data` has checked."""
    document = {
        "kind": patient.document_kind,
        "docNumber": patient.document_number,
        "docSerie": patient.document_series or None,
        "docIssueDate": _iso(patient.document_issued_on),
        "docIssuer": patient.document_issuer,
    }
    return {
        "birthdate": _iso(patient.birth_date),
        "firstName": patient.first_name,
        "secondName": patient.last_name,
        "patronymic": patient.middle_name or None,
        "medicalInsurance": {
            "medicalInsurance": {
                "insuranceNumber": patient.enp or patient.policy_number,
                "beginDate": _iso(patient.policy_begin),
            }
        },
        "snils": {"snils": patient.snils},
        "identifyingDocument": {"idDoc": document},
        "residenceAddress": {"residenceAddress": patient.residence_address or patient.registration_address},
    }


def create_ers(patient: Patient, pregnancy: Pregnancy) -> dict[str, Any]:
    """«Запрос ЭРС» from the primary exam: registerDate is the day she was registered."""
    return {"person": person(patient), "registerDate": _iso(pregnancy.registered_on)}


def get_ers_data(snils: str) -> dict[str, Any]:
    """«Обновить данные ЭРС»: the certificates ФСС holds for the woman, from any МО."""
    return {"params": {"snils": snils}}


def disable_ers(number: str, reason_code: str, reason_text: str) -> dict[str, Any]:
    return {
        "disableErsRequest": {
            "ersIdentifier": number,
            "reasonCode": reason_code,
            "reasonMessage": reason_text,
        }
    }


def visits(
    patient: Patient, pregnancy: Pregnancy, number: str, exams: list[ClinicalEvent], action: str
) -> dict[str, Any]:
    """«Посещение» (ADD) or its cancellation (CANCEL): one storage per repeat exam; the visit's
    id is the exam's id in the source MIS, so a cancelled visit sent again is the same visit."""
    who = person(patient)
    return {
        "visits": {
            "storage": [
                {
                    "person": who,
                    "visit": {
                        "ersNumber": number,
                        "visitId": exam.source_id,
                        "visitAction": action,
                        "visitDate": _iso(exam.at),
                        "pregnancyTimeOnVisitDate": gestational_weeks(pregnancy, exam.at.date()),
                        "diagnosis": (exam.data or {}).get("diagnosis") or None,
                    },
                }
                for exam in exams
            ]
        }
    }


def ticket1(patient: Patient, pregnancy: Pregnancy, number: str, exam: ClinicalEvent) -> dict[str, Any]:
    """Талон 1 from an exam at 30 weeks or later (28 for a multiple pregnancy): the обменная
    карта is the pregnancy's card in the source MIS, opened at registration."""
    data = exam.data or {}
    return {
        "tickets": {
            "storage": [
                {
                    "person": person(patient),
                    "ticket1": {
                        "ersNumber": number,
                        "createDate": _iso(exam.at.date()),
                        "pregnancyTimeOnRegisterDate": pregnancy.weeks_at_registration,
                        "pregnancyTimeOnPutDate": gestational_weeks(pregnancy, exam.at.date()),
                        "isMultiplePregnancy": bool(pregnancy.multiple),
                        "lnNumber": data.get("sick_leave_number") or None,
                        "exchangeCardNumber": data.get("exchange_card_number") or pregnancy.source_id,
                        "exchangeCardDate": _iso(pregnancy.registered_on),
                    },
                }
            ]
        }
    }


def newborns(outcome: ClinicalEvent) -> list[dict[str, Any]]:
    return [child for child in (outcome.data or {}).get("children") or [] if isinstance(child, dict)]


def ticket2(
    patient: Patient, pregnancy: Pregnancy, number: str, outcome: ClinicalEvent, arrival: date | None
) -> dict[str, Any]:
    """Талон 2 from the outcome: the birth, its diagnosis and every newborn."""
    data = outcome.data or {}
    children = newborns(outcome)
    ticket: dict[str, Any] = {
        "ersNumber": number,
        "createDate": _iso(outcome.at.date()),
        "arrivalDate": _iso(arrival or outcome.at.date()),
        "birthDateTime": _iso(outcome.at),
        "childbirthResultMKB10": data.get("diagnosis") or None,
        "deathReason": data.get("description") if any(not c.get("alive", True) for c in children) else None,
        "totalChildrenCount": len(children),
    }
    born = [
        {
            "gender": GENDER.get(str(child.get("sex") or "").upper(), "2"),
            "height": child.get("length_cm") or 0,
            "weight": child.get("weight_g") or 0,
            "deathReason": None
            if child.get("alive", True)
            else (data.get("description") or "Мертворождение"),
        }
        for child in children
        if child.get("sex")
    ]
    if born:
        ticket["newbornList"] = {"storage": born}
    return {"tickets": {"storage": [{"person": person(patient), "ticket2": ticket}]}}


def add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    for last in (31, 30, 29, 28):
        try:
            return date(year, month, min(day.day, last))
        except ValueError:
            continue
    raise ValueError(day)


def ticket3(
    patient: Patient, number: str, part: str, born_on: date, children: list[dict[str, str]], today: date
) -> dict[str, Any]:
    """Талон 3-1 / 3-2: the child's observation in the first / second half-year of life."""
    start, end = WATCH_MONTHS[part]
    storage = [
        {
            "birthdate": _iso(born_on),
            "firstName": child["first_name"],
            "secondName": child["last_name"],
            "patronymic": child.get("middle_name") or None,
            "medicalInsuranceNumber": child.get("policy") or None,
            "watchBeginDate": _iso(add_months(born_on, start)),
            "watchEndDate": _iso(add_months(born_on, end)),
        }
        for child in children
    ]
    return {
        "tickets": {
            "storage": [
                {
                    "person": person(patient),
                    "ticket3": {
                        "ersNumber": number,
                        "createDate": _iso(today),
                        "ticket3Part": part,
                        "childrenList": {"storage": storage},
                    },
                }
            ]
        }
    }
