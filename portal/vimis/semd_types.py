"""The nine SEMD types of ВИМИС «АКиНЕО» and the trigger table (SPEC V-1, specs/vimis/NOTES.md).

`docType` codes are ФНСИ 1.2.643.5.1.13.13.99.2.592; trigger points are the protocol's own codes
(Таблица 2; the ФНСИ directory 1.2.643.5.1.13.13.99.2.591 itself is not published).
"""

from __future__ import annotations

from dataclasses import dataclass

VMCL_AKINEO = 3  # ВИМИС code of «АКиНЕО»

TRIGGER_POINTS: dict[int, str] = {
    1: "Осмотр (консультация)",
    2: "Диагностические исследования",
    3: "Направление на медицинские услуги",
    5: "Госпитализация",
    8: "Завершение беременности",
    15: "Смерть пациента",
    19: "Постановка на учёт по беременности",
    20: "Критическое акушерское состояние",
}


@dataclass(frozen=True)
class SemdType:
    number: int  # «СЭМД 17» in the registry; equals docType
    title: str
    doc_type: int
    doc_type_version: int
    trigger_point: int
    code: str  # ClinicalDocument/code@code: SMSV… for SEMD beta, the federal kind otherwise
    event_kinds: tuple[str, ...]
    federal: bool = False  # a federal SEMD (not SEMD beta)

    @property
    def label(self) -> str:
        return f"СЭМД {self.number}"


SEMD_TYPES: dict[int, SemdType] = {
    t.number: t
    for t in (
        SemdType(
            1,
            "Направление на оказание медицинских услуг",
            1,
            2,
            3,
            "SMSV1",
            ("referral_mo", "referral_neonatal_screening"),
        ),
        SemdType(
            2,
            "Протокол инструментального исследования",
            2,
            2,
            2,
            "SMSV2",
            ("ultrasound_1", "ultrasound_2", "ultrasound_3", "prenatal_screening_1"),
        ),
        SemdType(3, "Протокол лабораторного исследования", 3, 2, 2, "SMSV3", ("lab_blood", "lab_urine")),
        SemdType(
            5,
            "Прием (осмотр) врача-специалиста",
            5,
            2,
            1,
            "SMSV5",
            ("exam_primary", "exam_repeat", "consult_therapist"),
        ),
        SemdType(
            8, "Выписной эпикриз из круглосуточного или дневного стационара", 8, 2, 5, "SMSV8", ("discharge",)
        ),
        SemdType(13, "Свидетельство о смерти матери", 13, 2, 15, "13", ("death_certificate",), federal=True),
        SemdType(17, "Выписной эпикриз из родильного дома", 17, 2, 8, "SMSV17", ("discharge",)),
        SemdType(
            19,
            "Свидетельство о перинатальной смерти",
            19,
            3,
            15,
            "14",
            ("perinatal_death_certificate",),
            federal=True,
        ),
        SemdType(22, "Извещение о критическом акушерском состоянии", 22, 3, 20, "339", ("kas_notice",)),
    )
}

TRIGGER_KINDS: frozenset[str] = frozenset(k for t in SEMD_TYPES.values() for k in t.event_kinds)
OUTPATIENT = "3"  # care_conditions code «Амбулаторно»: SEMD 5 only for these exams


def semd_type_for(
    kind: str, care_conditions: str | None, hospitalisation_outcome: str | None, kas_status: str | None
) -> int | None:
    """The SEMD type an event triggers, or None when it triggers nothing (V-1 conditions)."""
    if kind == "discharge":
        return 17 if hospitalisation_outcome else 8
    if kind == "kas_notice":
        from portal.clinical.models import KAS_STATUSES

        return 22 if kas_status in KAS_STATUSES else None
    for semd_type in SEMD_TYPES.values():
        if kind in semd_type.event_kinds:
            if semd_type.number == 5 and care_conditions != OUTPATIENT:
                return None
            return semd_type.number
    return None
