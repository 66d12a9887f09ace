"""Roles (X-3, E-2) and what each may use. Views check capabilities, never role names."""

from __future__ import annotations

CENTRAL_ADMIN = "central_admin"
MO_ADMIN = "mo_admin"
STATISTICIAN = "statistician"
DOCTOR = "doctor"
ERS_OPERATOR = "ers_operator"
ERS_ACCOUNTANT = "ers_accountant"

ROLES: dict[str, str] = {
    CENTRAL_ADMIN: "Администратор ЦОД",
    MO_ADMIN: "Администратор МО",
    STATISTICIAN: "Медицинский статистик",
    DOCTOR: "Врач",
    ERS_OPERATOR: "ЭРС-Оператор",
    ERS_ACCOUNTANT: "ЭРС-Бухгалтер",
}

ALL = frozenset(ROLES)
ADMINS = frozenset({CENTRAL_ADMIN, MO_ADMIN})

# Capability → roles that have it. Feature packages add their own with `grant`.
CAPABILITIES: dict[str, frozenset[str]] = {
    "clinical.view": ALL,
    "clinical.edit": frozenset({CENTRAL_ADMIN, MO_ADMIN, DOCTOR, ERS_OPERATOR}),
    "vimis.view": frozenset({CENTRAL_ADMIN, MO_ADMIN, STATISTICIAN, DOCTOR}),
    # Staff of the МО fix the data and send again (seed 3.1.4); viewers are the same people.
    "vimis.send": frozenset({CENTRAL_ADMIN, MO_ADMIN, STATISTICIAN, DOCTOR}),
    # АИСТ_ЭРС (E-2): the МО's ЭРС staff and its administrator (who enters the contract, seed 1).
    "ers.view": frozenset({CENTRAL_ADMIN, MO_ADMIN, ERS_OPERATOR, ERS_ACCOUNTANT}),
    "ers.contract": frozenset({CENTRAL_ADMIN, MO_ADMIN, ERS_ACCOUNTANT}),
    # «Запрос ЭРС», «Посещение», deleting a number, «Обновить данные ЭРС», completing personal data
    "ers.request": frozenset({CENTRAL_ADMIN, ERS_OPERATOR}),
    "ers.tickets": frozenset({CENTRAL_ADMIN, ERS_OPERATOR, ERS_ACCOUNTANT}),  # Талон 1, 2, 3-1, 3-2
    "iemk.view": frozenset({CENTRAL_ADMIN, MO_ADMIN, STATISTICIAN, DOCTOR}),
    "iemk.sign": frozenset({CENTRAL_ADMIN, MO_ADMIN, DOCTOR}),  # «Получить и подписать документы»
    "iemk.send": frozenset({CENTRAL_ADMIN, MO_ADMIN, STATISTICIAN, DOCTOR}),  # «Передать документ в ИЭМК»
    "tfoms.view": frozenset({CENTRAL_ADMIN, MO_ADMIN, STATISTICIAN}),
    "tfoms.ident": ADMINS,  # «Пакетная идентификация ТФОМС» (seed 4.3.1)
    "tfoms.attachments": frozenset({CENTRAL_ADMIN, MO_ADMIN, STATISTICIAN}),  # «Выгрузка прикреплений»
    "tfoms.plans": frozenset({CENTRAL_ADMIN, MO_ADMIN, STATISTICIAN}),  # plan export (seed 4.5.2.1.2)
    "tfoms.packets": frozenset({CENTRAL_ADMIN, MO_ADMIN, STATISTICIAN}),  # «Пакеты обмена с ТФОМС» (seed 4.6.3)
    "tfoms.packets.manage": ADMINS,  # «Не отправлять повторно» / «Снять запрет отправки»
    # «Свободные места в стационарах» (stage 3): whoever refers patients, as for clinical.edit.
    "tfoms.free_beds": frozenset({CENTRAL_ADMIN, MO_ADMIN, DOCTOR, ERS_OPERATOR}),
    "journal.view": frozenset({CENTRAL_ADMIN, MO_ADMIN, STATISTICIAN}),
    "journal.all_services": ADMINS,  # a statistician sees only the ТФОМС services (seed 4.6.1)
    "journal.run": ADMINS,  # «Запуск» of a service; an МО administrator's run covers their МО
    "admin.view": ADMINS,
    "admin.mo": ADMINS,  # per-МО integration switches and МО certificates
    "admin.users": ADMINS,
    "admin.settings": frozenset({CENTRAL_ADMIN}),  # region-wide endpoints and timeouts
    "admin.tokens": frozenset({CENTRAL_ADMIN}),
    "admin.audit": ADMINS,
}


def grant(capability: str, roles: frozenset[str] | set[str]) -> None:
    CAPABILITIES[capability] = frozenset(roles)


def role_can(role: str, capability: str) -> bool:
    return role in CAPABILITIES.get(capability, frozenset())
