"""A ready-to-build event for each SEMD type, from the shared factories."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from types import SimpleNamespace

from portal.extensions import db
from tests import factories

# SEMD type → (event kind, care conditions, event data)
EVENT_FOR_TYPE: dict[int, tuple[str, str, dict]] = {
    1: (
        "referral_mo",
        "3",
        {"purpose": "Консультация", "target_mo": "Перинатальный центр", "diagnosis": "Z34.8"},
    ),
    2: (
        "ultrasound_1",
        "3",
        {"fetuses": 1, "term_by_biometry": "12 недель 3 дня", "conclusion": "Беременность 12 недель"},
    ),
    3: ("lab_blood", "3", {"hemoglobin_g_l": 118, "esr_mm_h": 18}),
    5: ("exam_primary", "3", {"diagnosis": "Z34.0", "bp": "110/70", "complaints": "Жалоб нет"}),
    8: ("discharge", "1", {"diagnosis": "O23.1", "bed_days": 7, "result": "Выписана домой"}),
    13: (
        "death_certificate",
        "1",
        {"form": "106/у", "series": "19", "number": "000123", "cause_code": "O72.1"},
    ),
    17: ("discharge", "1", {"diagnosis": "O80.0", "bed_days": 4, "result": "Выписана с ребёнком домой"}),
    19: (
        "perinatal_death_certificate",
        "1",
        {"form": "106-2/у", "kind": "мертворождение", "cause_code": "P20.9"},
    ),
    22: (
        "kas_notice",
        "1",
        {
            "kas_status": "put_on_control",
            "diagnosis": "O72.0",
            "condition": "Кровотечение в третьем периоде родов",
        },
    ),
}


def make_semd_case(
    semd_type: int,
    *,
    mo_kw: dict | None = None,
    patient_kw: dict | None = None,
    doctor_kw: dict | None = None,
    with_doctor: bool = True,
    with_pregnancy: bool = True,
    with_stay: bool | None = None,
    data: dict | None = None,
) -> SimpleNamespace:
    """МО, doctor, patient, pregnancy (and a stay for inpatient types) and the triggering event."""
    kind, care, default_data = EVENT_FOR_TYPE[semd_type]
    mo = factories.make_mo(**(mo_kw or {}))
    department = factories.make_department(mo, kind="maternity", name="Р/д Обсервация")
    doctor = factories.make_staff(mo, **(doctor_kw or {})) if with_doctor else None
    patient = factories.make_patient(mo, **(patient_kw or {}))
    now = datetime.now().replace(microsecond=0)
    pregnancy = None
    if with_pregnancy:
        pregnancy = factories.make_pregnancy(
            patient,
            registered_on=date.today() - timedelta(days=200),
            weeks_at_registration=10,
            **(
                {"outcome": "birth", "outcome_on": (now - timedelta(days=3)).date()}
                if semd_type == 17
                else {}
            ),
        )
    stay = None
    if with_stay if with_stay is not None else semd_type in (8, 17):
        stay = factories.make_hospitalisation(
            patient,
            department,
            pregnancy_id=pregnancy.id if pregnancy else None,
            admitted_at=now - timedelta(days=5),
            discharged_at=now - timedelta(hours=2),
            outcome="birth" if semd_type == 17 else None,
        )
    event = factories.make_event(
        patient,
        kind,
        pregnancy_id=pregnancy.id if pregnancy else None,
        hospitalisation_id=stay.id if stay else None,
        department_id=department.id,
        doctor_id=doctor.id if doctor else None,
        care_conditions=care,
        at=now - timedelta(hours=2),
        data=dict(default_data if data is None else data),
    )
    db.session.commit()
    return SimpleNamespace(
        mo=mo,
        department=department,
        doctor=doctor,
        patient=patient,
        pregnancy=pregnancy,
        stay=stay,
        event=event,
    )
