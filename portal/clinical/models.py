"""Source data from the regional MIS: МО structure, staff, patients, pregnancies, events.

Every row carries the source system's id (`source_id`), unique per table: intake upserts by it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models_base import TimestampMixin, utcnow

# Department kinds (the source MIS's words); ТФОМС stage 1 and ВИМИС care conditions use them.
DEPARTMENT_KINDS: dict[str, str] = {
    "round_the_clock": "Круглосуточный стационар",
    "day_hospital": "Дневной стационар при стационаре",
    "outpatient": "Поликлиника / женская консультация",
    "maternity": "Родильный дом (родильное отделение)",
    "admission": "Приёмное отделение",
    "home_hospital": "Стационар на дому",
    "polyclinic_day_hospital": "Дневной стационар при поликлинике",
    "perinatal_centre": "Перинатальный центр",
    "diagnostic": "Диагностическое отделение",
    "laboratory": "Лаборатория",
    "other": "Прочее",
}

# Kinds of a branch (подразделение) of an МО, the building departments belong to (ТФОМС stage 1).
BRANCH_KINDS: dict[str, str] = {
    "hospital": "Стационар",
    "polyclinic": "Поликлиника",
    "ambulance": "Подразделение СМП",
    "other": "Прочее",
}

# Kinds of a referral for hospitalisation (направление): ТФОМС gets the planned and emergency ones.
REFERRAL_KINDS: dict[str, str] = {
    "planned": "На госпитализацию плановую",
    "emergency": "На госпитализацию экстренную",
    "consultation": "На консультацию",
    "other": "Иное",
}

# Why a referral or a hospitalisation was cancelled (REASON 0..5 of the order-263 packets).
CANCEL_REASONS: dict[str, str] = {
    "0": "Иная причина",
    "1": "Отказ пациента",
    "2": "Отсутствие показаний",
    "3": "Смерть пациента",
    "4": "Отсутствие мест",
    "5": "Ошибка оформления",
}

# Who cancelled (CANCEL_SOURSE 0..3).
CANCEL_SOURCES: dict[str, str] = {
    "0": "Направившая МО",
    "1": "МО госпитализации",
    "2": "Пациент",
    "3": "СМО / ТФОМС",
}

# Obstetric and gynaecological bed profiles (ФОМС V020) the portal names: the demo's beds and the
# «Профиль койки» of the free beds request.
BED_PROFILE_NAMES: dict[int, str] = {
    2: "Для беременных и рожениц",
    3: "Патологии беременности",
    4: "Гинекологические",
    5: "Гинекологические для вспомогательных репродуктивных технологий",
}

# Outcome of a movement in hospital (MOTION_IN_HOSPITAL/OUTCOME).
MOVEMENT_OUTCOMES: dict[str, str] = {
    "1": "Улучшение / выздоровление",
    "2": "Без перемен",
    "3": "Ухудшение",
}

STAFF_CATEGORIES: dict[str, str] = {"doctor": "Врач", "nurse": "Средний медицинский персонал"}

SEXES: dict[str, str] = {"F": "Женский", "M": "Мужской"}

# Pregnancy outcome kinds: the gestational-age text names them («после родоразрешения …»).
OUTCOME_KINDS: dict[str, str] = {
    "birth": "Роды (родоразрешение)",
    "abortion": "Прерывание беременности",
    "miscarriage": "Самопроизвольный выкидыш",
    "ectopic": "Внематочная беременность",
    "other": "Иной исход",
}

POLICY_KINDS: dict[str, str] = {
    "С": "Полис ОМС старого образца",
    "В": "Временное свидетельство",
    "П": "Бумажный полис единого образца",
    "Э": "Электронный полис единого образца",
    "К": "Полис в составе УЭК",
}

# Identity document kinds (ФОМС F011 codes used by ТФОМС and ФСС).
DOCUMENT_KINDS: dict[str, str] = {
    "14": "Паспорт гражданина РФ",
    "3": "Свидетельство о рождении",
    "9": "Паспорт иностранного гражданина",
    "10": "Свидетельство о рассмотрении ходатайства о признании беженцем",
    "12": "Вид на жительство",
    "13": "Удостоверение беженца",
    "21": "Документ иностранного гражданина",
    "22": "Документ лица без гражданства",
    "23": "Разрешение на временное проживание",
    "24": "Свидетельство о рождении, выданное не в РФ",
}

SOCIAL_STATUSES: dict[str, str] = {
    "working": "Работающий",
    "unemployed": "Неработающий",
    "student": "Учащийся",
    "pensioner": "Пенсионер",
    "other": "Прочее",
}

# Why dispensary observation ended (DN_OUT/RESULT_OUT).
DISPENSARY_END_RESULTS: dict[str, str] = {
    "1": "Выздоровление",
    "2": "Смена места жительства",
    "3": "Смерть",
    "4": "Перевод под наблюдение другого врача",
    "5": "Иная причина",
}

CARE_CONDITIONS: dict[str, str] = {
    "1": "Стационарно",
    "2": "В дневном стационаре",
    "3": "Амбулаторно",
    "4": "Вне медицинской организации",
}

# Event kinds of the intake contract: V-1 triggers and the ЭРС exams.
EVENT_KINDS: dict[str, str] = {
    "referral_mo": "Направление в МО",
    "referral_neonatal_screening": "Направление на проведение неонатального скрининга",
    "ultrasound_1": "УЗИ I триместра",
    "ultrasound_2": "УЗИ II триместра",
    "ultrasound_3": "УЗИ III триместра",
    "prenatal_screening_1": "Комплекс пренатальной диагностики 1 триместра",
    "lab_blood": "Общий анализ крови (ОАК)",
    "lab_urine": "Общий анализ мочи (ОАМ)",
    "exam_primary": "Первичный осмотр",
    "exam_repeat": "Повторный осмотр",
    "consult_therapist": "Консультация врача-терапевта",
    "discharge": "Выписка",
    "death_certificate": "Медицинское свидетельство о смерти (106/у)",
    "perinatal_death_certificate": "Медицинское свидетельство о перинатальной смерти (106-2/у)",
    "kas_notice": "Извещение о КАС",
    "pregnancy_outcome": "Исход беременности",
}

KAS_STATUSES: dict[str, str] = {
    "put_on_control": "Поставить на контроль",
    "continue_control": "Продолжить наблюдение на контроле",
    "remove_from_control": "Снять с контроля",
}

PAYMENT_KINDS: dict[str, str] = {"oms": "ОМС", "budget": "Бюджет", "paid": "Платные услуги", "other": "Иное"}

# Способ прикрепления (seed ТФОМС 4.5.1.4): the codes go into the attachment file as they are.
ATTACHMENT_METHODS: dict[str, str] = {
    "0": "Нет данных о прикреплении",
    "1": "По месту регистрации",
    "2": "По личному заявлению",
}

# Тип прикрепления (the source MIS's attachment kinds).
ATTACHMENT_KINDS: dict[str, str] = {
    "1": "Основное",
    "2": "Гинекологическое",
    "3": "Стоматологическое",
    "4": "Служебное",
}

# Kinds of prophylactic plans that are exported to ТФОМС (seed 4.5.2.1.1), by the source MIS's
# codes of the dispensarisation class (the export form shows «5. Проф.осмотры взр. населения»).
PLAN_KINDS: dict[str, str] = {
    "1": "Дисп-ция взр. населения 1-ый этап",
    "3": "Дисп-ция детей-сирот стационарных 1-ый этап",
    "5": "Проф. осмотры взр. населения",
    "6": "Периодические осмотры несовершеннолетних",
    "7": "Дисп-ция детей-сирот усыновленных 1-ый этап",
    "9": "Предварительные осмотры несовершеннолетних 1-ый этап",
    "10": "Профилактические осмотры несовершеннолетних 1-ый этап",
}

# Where a person of a plan stands with ТФОМС (seed 4.5.2.1.3 and 4.4.5.2.1).
PLAN_PERSON_NEW = "new"
PLAN_PERSON_SENT = "sent"
PLAN_PERSON_ACCEPTED = "accepted"
PLAN_PERSON_ERROR = "error"
PLAN_PERSON_STATUSES: dict[str, str] = {
    PLAN_PERSON_NEW: "Новые",
    PLAN_PERSON_SENT: "Отправлен в ТФОМС",
    PLAN_PERSON_ACCEPTED: "Принята ТФОМС",
    PLAN_PERSON_ERROR: "Ошибка",
}


def join_name(*parts: str | None) -> str:
    """«Фамилия Имя Отчество» without the empty parts."""
    return " ".join(p for p in parts if p)


class Mo(TimestampMixin, db.Model):
    """Медицинская организация."""

    __tablename__ = "mo"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    short_name: Mapped[str] = mapped_column(String(120))
    registry_number: Mapped[str | None] = mapped_column(String(6))  # six-digit federal registry number
    f003_code: Mapped[str | None] = mapped_column(String(6))  # ФОМС F003
    oid: Mapped[str | None] = mapped_column(String(120))
    ogrn: Mapped[str | None] = mapped_column(String(15))
    inn: Mapped[str | None] = mapped_column(String(12))
    kpp: Mapped[str | None] = mapped_column(String(9))
    address: Mapped[str | None] = mapped_column(Text)

    departments: Mapped[list[Department]] = relationship(back_populates="mo", order_by="Department.name")

    def __str__(self) -> str:
        return self.short_name or self.name


class Insurer(TimestampMixin, db.Model):
    """Страховая медицинская организация (СМО), by its ФОМС F002 code."""

    __tablename__ = "insurer"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    code: Mapped[str] = mapped_column(String(5), unique=True)  # реестровый номер СМО (F002)
    ogrn: Mapped[str | None] = mapped_column(String(15), index=True)
    name: Mapped[str] = mapped_column(String(300))
    okato: Mapped[str | None] = mapped_column(String(11))

    def __str__(self) -> str:
        return self.name


class Branch(TimestampMixin, db.Model):
    """A branch (подразделение) of an МО: a building with departments (ТФОМС BRANCH)."""

    __tablename__ = "branch"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"), index=True)
    code: Mapped[str] = mapped_column(String(3))  # three-digit building code inside the МО
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(16))  # BRANCH_KINDS
    for_children: Mapped[bool | None] = mapped_column(Boolean)  # None: общее, True: детское, False: взрослое
    address: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(String(40))
    opened_on: Mapped[date | None] = mapped_column(Date)
    closed_on: Mapped[date | None] = mapped_column(Date)

    mo: Mapped[Mo] = relationship()

    @property
    def kind_label(self) -> str:
        return BRANCH_KINDS.get(self.kind, self.kind)


class Department(TimestampMixin, db.Model):
    __tablename__ = "department"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"), index=True)
    code: Mapped[str | None] = mapped_column(String(20))  # the МО's own code of the department
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(32))
    beds: Mapped[int | None] = mapped_column(Integer)
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branch.id"), index=True)
    phone: Mapped[str | None] = mapped_column(String(40))
    closed_on: Mapped[date | None] = mapped_column(Date)  # closed in the source MIS: ТФОМС gets a Delete

    mo: Mapped[Mo] = relationship(back_populates="departments")
    branch: Mapped[Branch | None] = relationship()

    @property
    def kind_label(self) -> str:
        return DEPARTMENT_KINDS.get(self.kind, self.kind)


class Staff(TimestampMixin, db.Model):
    """Медицинский работник."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"), index=True)
    last_name: Mapped[str] = mapped_column(String(100))
    first_name: Mapped[str] = mapped_column(String(100))
    middle_name: Mapped[str | None] = mapped_column(String(100))
    snils: Mapped[str | None] = mapped_column(String(14))  # stored as 11 digits
    position: Mapped[str | None] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(16), default="doctor")

    mo: Mapped[Mo] = relationship()

    @property
    def full_name(self) -> str:
        return join_name(self.last_name, self.first_name, self.middle_name)


class Patient(TimestampMixin, db.Model):
    __tablename__ = "patient"
    __table_args__ = (
        Index("ix_patient_mo_name", "mo_id", "last_name", "first_name", "id"),
        Index("ix_patient_name", "last_name", "first_name", "id"),  # region-wide list for ЦОД
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"), index=True)
    last_name: Mapped[str] = mapped_column(String(100))
    first_name: Mapped[str] = mapped_column(String(100))
    middle_name: Mapped[str | None] = mapped_column(String(100))
    sex: Mapped[str] = mapped_column(String(1), default="F")
    birth_date: Mapped[date | None] = mapped_column(Date)
    snils: Mapped[str | None] = mapped_column(String(11), index=True)
    enp: Mapped[str | None] = mapped_column(String(16), index=True)
    policy_kind: Mapped[str | None] = mapped_column(String(2))
    policy_series: Mapped[str | None] = mapped_column(String(20))
    policy_number: Mapped[str | None] = mapped_column(String(30))
    insurer_code: Mapped[str | None] = mapped_column(String(10))
    policy_begin: Mapped[date | None] = mapped_column(Date)
    policy_end: Mapped[date | None] = mapped_column(Date)
    document_kind: Mapped[str | None] = mapped_column(String(4))
    document_series: Mapped[str | None] = mapped_column(String(20))
    document_number: Mapped[str | None] = mapped_column(String(30))
    document_issued_on: Mapped[date | None] = mapped_column(Date)
    document_issuer: Mapped[str | None] = mapped_column(String(300))
    registration_address: Mapped[str | None] = mapped_column(Text)
    residence_address: Mapped[str | None] = mapped_column(Text)
    social_status: Mapped[str | None] = mapped_column(String(32))
    phone: Mapped[str | None] = mapped_column(String(40))
    birth_place: Mapped[str | None] = mapped_column(String(300))
    tfoms_identified_on: Mapped[date | None] = mapped_column(Date)  # identified by ТФОМС (batch answer)
    iemk_global_id: Mapped[str | None] = mapped_column(String(64))  # IdGlobal in the ИЭМК patient index

    mo: Mapped[Mo] = relationship()
    pregnancies: Mapped[list[Pregnancy]] = relationship(
        back_populates="patient", order_by="Pregnancy.registered_on.desc()"
    )

    @property
    def full_name(self) -> str:
        return join_name(self.last_name, self.first_name, self.middle_name)


class Pregnancy(TimestampMixin, db.Model):
    __tablename__ = "pregnancy"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"), index=True)
    registered_on: Mapped[date] = mapped_column(Date)
    weeks_at_registration: Mapped[int] = mapped_column(Integer)
    days_at_registration: Mapped[int] = mapped_column(Integer, default=0)
    multiple: Mapped[bool] = mapped_column(Boolean, default=False)
    outcome: Mapped[str | None] = mapped_column(String(16))
    outcome_on: Mapped[date | None] = mapped_column(Date)

    patient: Mapped[Patient] = relationship(back_populates="pregnancies")
    mo: Mapped[Mo] = relationship()

    def gestational_age(self, on: date | None = None) -> str:
        from portal.clinical.gestation import gestational_age_text

        return gestational_age_text(self, on)


class Hospitalisation(TimestampMixin, db.Model):
    __tablename__ = "hospitalisation"
    __table_args__ = (Index("ix_hospitalisation_mo_admitted", "mo_id", "admitted_at"),)  # ТФОМС daily selection

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    pregnancy_id: Mapped[int | None] = mapped_column(ForeignKey("pregnancy.id"), index=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"), index=True)
    department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    admitted_at: Mapped[datetime] = mapped_column(DateTime)
    discharged_at: Mapped[datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))  # pregnancy outcome inside the stay
    payment: Mapped[str] = mapped_column(String(16), default="oms")
    referral_id: Mapped[int | None] = mapped_column(ForeignKey("hospital_referral.id"), index=True)
    emergency: Mapped[bool] = mapped_column(Boolean, default=False)  # форма помощи: экстренная / плановая
    card_number: Mapped[str | None] = mapped_column(String(30))  # номер медицинской карты (КВС)
    diagnosis: Mapped[str | None] = mapped_column(String(10))  # МКБ-10 on admission
    diagnosis_text: Mapped[str | None] = mapped_column(String(300))
    # «Исход пребывания в приёмном»: the patient was refused or refused (CANCEL_HOSPITALISATION).
    refused_at: Mapped[datetime | None] = mapped_column(DateTime)
    refusal_reason: Mapped[str | None] = mapped_column(String(2))  # CANCEL_REASONS
    refusal_source: Mapped[str | None] = mapped_column(String(2))  # CANCEL_SOURCES
    refusal_text: Mapped[str | None] = mapped_column(Text)

    patient: Mapped[Patient] = relationship()
    pregnancy: Mapped[Pregnancy | None] = relationship()
    mo: Mapped[Mo] = relationship()
    department: Mapped[Department | None] = relationship()
    referral: Mapped[HospitalReferral | None] = relationship()


class BedProfile(TimestampMixin, db.Model):
    """A bed profile of a department (коечный фонд): counts and today's free beds (ТФОМС stage 1)."""

    __tablename__ = "bed_profile"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"), index=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"), index=True)
    profile: Mapped[int] = mapped_column(Integer)  # V020 bed profile
    care_profile: Mapped[int] = mapped_column(Integer)  # V002 medical care profile (STRUCTURE_BED)
    children: Mapped[bool] = mapped_column(Boolean, default=False)
    beds: Mapped[int] = mapped_column(Integer, default=0)
    beds_male: Mapped[int] = mapped_column(Integer, default=0)
    beds_female: Mapped[int] = mapped_column(Integer, default=0)
    beds_repair: Mapped[int] = mapped_column(Integer, default=0)
    planned_beds: Mapped[int] = mapped_column(Integer, default=0)
    valid_from: Mapped[date | None] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date)
    # Today's occupancy, refreshed by the source MIS (FREE_BEDS_INFORMATION).
    actual_on: Mapped[date | None] = mapped_column(Date)
    occupied: Mapped[int] = mapped_column(Integer, default=0)
    admitted_today: Mapped[int] = mapped_column(Integer, default=0)
    discharged_today: Mapped[int] = mapped_column(Integer, default=0)
    planned_today: Mapped[int] = mapped_column(Integer, default=0)
    free: Mapped[int] = mapped_column(Integer, default=0)
    free_adult: Mapped[int] = mapped_column(Integer, default=0)
    free_child: Mapped[int] = mapped_column(Integer, default=0)

    department: Mapped[Department] = relationship()
    mo: Mapped[Mo] = relationship()


class HospitalReferral(TimestampMixin, db.Model):
    """A referral for hospitalisation (направление) written in the source MIS."""

    __tablename__ = "hospital_referral"
    __table_args__ = (Index("ix_hospital_referral_mo_issued", "mo_id", "issued_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))  # the referring МО
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    pregnancy_id: Mapped[int | None] = mapped_column(ForeignKey("pregnancy.id"))
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branch.id"))  # referring branch
    doctor_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # REFERRAL_KINDS
    auto_created: Mapped[bool] = mapped_column(Boolean, default=False)  # «Автоматически созданное»
    payment: Mapped[str] = mapped_column(String(16), default="oms")
    issued_on: Mapped[date] = mapped_column(Date)
    planned_on: Mapped[date | None] = mapped_column(Date)  # planned hospitalisation date
    to_mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    to_department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    bed_profile_id: Mapped[int | None] = mapped_column(ForeignKey("bed_profile.id"))
    diagnosis: Mapped[str] = mapped_column(String(10))  # МКБ-10
    diagnosis_text: Mapped[str | None] = mapped_column(String(300))
    cancelled_on: Mapped[date | None] = mapped_column(Date)
    cancel_reason: Mapped[str | None] = mapped_column(String(2))  # CANCEL_REASONS
    cancel_source: Mapped[str | None] = mapped_column(String(2))  # CANCEL_SOURCES
    cancel_text: Mapped[str | None] = mapped_column(Text)

    patient: Mapped[Patient] = relationship()
    mo: Mapped[Mo] = relationship(foreign_keys=[mo_id])
    to_mo: Mapped[Mo] = relationship(foreign_keys=[to_mo_id])
    to_department: Mapped[Department | None] = relationship(foreign_keys=[to_department_id])
    branch: Mapped[Branch | None] = relationship()
    doctor: Mapped[Staff | None] = relationship()
    bed_profile: Mapped[BedProfile | None] = relationship()


class HospitalMovement(TimestampMixin, db.Model):
    """A movement of a hospitalised patient (движение): a stay in one department and bed profile."""

    __tablename__ = "hospital_movement"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    hospitalisation_id: Mapped[int] = mapped_column(ForeignKey("hospitalisation.id"), index=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"), index=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    bed_profile_id: Mapped[int | None] = mapped_column(ForeignKey("bed_profile.id"))
    began_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(String(1))  # MOVEMENT_OUTCOMES

    hospitalisation: Mapped[Hospitalisation] = relationship()
    department: Mapped[Department] = relationship()
    bed_profile: Mapped[BedProfile | None] = relationship()


class DispensaryObservation(TimestampMixin, db.Model):
    """Dispensary observation (диспансерное наблюдение) of a patient for one diagnosis."""

    __tablename__ = "dispensary_observation"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    doctor_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    diagnosis: Mapped[str] = mapped_column(String(10))  # МКБ-10
    began_on: Mapped[date] = mapped_column(Date)
    visits_per_year: Mapped[int] = mapped_column(Integer, default=1)  # KRAT 1..12
    place: Mapped[str] = mapped_column(String(1), default="1")  # DN_PLACE: 1 МО, 2 на дому
    ended_on: Mapped[date | None] = mapped_column(Date)
    end_result: Mapped[str | None] = mapped_column(String(2))  # DISPENSARY_END_RESULTS

    patient: Mapped[Patient] = relationship()
    mo: Mapped[Mo] = relationship()
    doctor: Mapped[Staff | None] = relationship()


class ClinicalEvent(TimestampMixin, db.Model):
    """A trigger event of the source MIS (осмотр, УЗИ, выписка, извещение …)."""

    __tablename__ = "clinical_event"
    __table_args__ = (
        Index("ix_clinical_event_mo_at", "mo_id", "at", "id"),
        Index("ix_clinical_event_at", "at", "id"),  # region-wide journal for ЦОД
        Index("ix_clinical_event_patient_at", "patient_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    pregnancy_id: Mapped[int | None] = mapped_column(ForeignKey("pregnancy.id"), index=True)
    hospitalisation_id: Mapped[int | None] = mapped_column(ForeignKey("hospitalisation.id"), index=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    doctor_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    care_conditions: Mapped[str | None] = mapped_column(String(2))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    patient: Mapped[Patient] = relationship()
    pregnancy: Mapped[Pregnancy | None] = relationship()
    hospitalisation: Mapped[Hospitalisation | None] = relationship()
    mo: Mapped[Mo] = relationship()
    department: Mapped[Department | None] = relationship()
    doctor: Mapped[Staff | None] = relationship()

    @property
    def kind_label(self) -> str:
        return EVENT_KINDS.get(self.kind, self.kind)

    def gestational_age(self) -> str:
        return self.pregnancy.gestational_age(self.at.date()) if self.pregnancy else ""


class PatientPolicy(db.Model):
    """A policy of a patient as ТФОМС reported it; the patient's current policy columns follow
    the newest one. Kept to refuse a policy whose period overlaps one saved before (seed 4.3.5)."""

    __tablename__ = "patient_policy"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    kind: Mapped[str | None] = mapped_column(String(2))  # POLICY_KINDS
    series: Mapped[str | None] = mapped_column(String(20))
    number: Mapped[str | None] = mapped_column(String(30))
    enp: Mapped[str | None] = mapped_column(String(16))
    insurer_code: Mapped[str | None] = mapped_column(String(10))
    begin_on: Mapped[date | None] = mapped_column(Date)
    end_on: Mapped[date | None] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(32))  # what saved it: "tfoms_ident" …
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Attachment(TimestampMixin, db.Model):
    """Прикрепление пациента к участку МО (the attachment file of seed 4.5.1 is built from these)."""

    __tablename__ = "attachment"
    __table_args__ = (Index("ix_attachment_mo_period", "mo_id", "attached_on", "detached_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))  # подразделение участка
    district: Mapped[str] = mapped_column(String(20))  # код (номер) участка
    doctor_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))  # основной врач участка
    method: Mapped[str] = mapped_column(String(1), default="0")  # ATTACHMENT_METHODS
    kind: Mapped[str] = mapped_column(String(2), default="1")  # ATTACHMENT_KINDS
    attached_on: Mapped[date] = mapped_column(Date)
    detached_on: Mapped[date | None] = mapped_column(Date)

    patient: Mapped[Patient] = relationship()
    mo: Mapped[Mo] = relationship()
    department: Mapped[Department | None] = relationship()
    doctor: Mapped[Staff | None] = relationship()


class ProphylacticPlan(TimestampMixin, db.Model):
    """План диспансеризации или профилактических медицинских осмотров of one МО."""

    __tablename__ = "prophylactic_plan"
    __table_args__ = (Index("ix_prophylactic_plan_mo_year", "mo_id", "year"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    mo_id: Mapped[int] = mapped_column(ForeignKey("mo.id"))
    kind: Mapped[str] = mapped_column(String(2))  # PLAN_KINDS
    year: Mapped[int] = mapped_column(Integer)
    quarter: Mapped[int | None] = mapped_column(Integer)  # None: the plan covers the whole year
    name: Mapped[str | None] = mapped_column(String(300))

    mo: Mapped[Mo] = relationship()

    @property
    def kind_label(self) -> str:
        return PLAN_KINDS.get(self.kind, self.kind)

    @property
    def period_label(self) -> str:
        roman = {1: "I", 2: "II", 3: "III", 4: "IV"}
        return f"{roman[self.quarter]} квартал {self.year}" if self.quarter else f"{self.year} год"


class PlanPerson(TimestampMixin, db.Model):
    """Человек в плане: one person of a plan, with the quarter planned and where ТФОМС stands."""

    __tablename__ = "plan_person"
    __table_args__ = (Index("ix_plan_person_plan_status", "plan_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), unique=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("prophylactic_plan.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    quarter: Mapped[int] = mapped_column(Integer)  # quarter of the planned event (SV_PL_MER/QUART)
    status: Mapped[str] = mapped_column(String(16), default=PLAN_PERSON_NEW)  # PLAN_PERSON_STATUSES
    status_text: Mapped[str | None] = mapped_column(Text)  # ТФОМС's error text with status «Ошибка»
    status_at: Mapped[datetime | None] = mapped_column(DateTime)

    plan: Mapped[ProphylacticPlan] = relationship()
    patient: Mapped[Patient] = relationship()

    @property
    def status_label(self) -> str:
        return PLAN_PERSON_STATUSES.get(self.status, self.status)
