"""The left menu (issue 2, item 9): groups of items, each behind a capability.

Items a role may not use are hidden. An item whose page is not installed yet (its feature
package has not landed) is shown greyed, so the menu keeps the shape users know.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, url_for


@dataclass(frozen=True)
class MenuItem:
    label: str
    endpoint: str
    capability: str


@dataclass(frozen=True)
class MenuGroup:
    label: str
    items: tuple[MenuItem, ...]


MENU: tuple[MenuGroup, ...] = (
    MenuGroup(
        "Интеграционные сервисы",
        (
            MenuItem("Реестр СЭМД ВИМИС АКИНЕО", "vimis.registry", "vimis.view"),
            MenuItem("АИСТ ЭРС", "ers.patients", "ers.view"),
            MenuItem("ИЭМК", "iemk.documents", "iemk.view"),
            MenuItem("Пакетная идентификация ТФОМС", "tfoms.ident", "tfoms.ident"),
            MenuItem("Выгрузка прикреплений", "tfoms.attachments", "tfoms.attachments"),
            MenuItem("Планы диспансеризации и профосмотров", "tfoms.plans", "tfoms.plans"),
            MenuItem("Пакеты обмена с ТФОМС", "tfoms.packets", "tfoms.packets"),
            MenuItem("Свободные места в стационарах", "tfoms.free_beds", "tfoms.free_beds"),
            MenuItem("Журнал работы сервисов", "journal.services", "journal.view"),
        ),
    ),
    MenuGroup(
        "Исходные данные",
        (
            MenuItem("Пациенты", "clinical.patients", "clinical.view"),
            MenuItem("Мероприятия", "clinical.events", "clinical.view"),
        ),
    ),
    MenuGroup(
        "Администрирование",
        (
            MenuItem("Медицинские организации", "admin.mo_list", "admin.mo"),
            MenuItem("Пользователи", "admin.users", "admin.users"),
            MenuItem("Настройки обмена", "admin.settings", "admin.settings"),
            MenuItem("Сертификаты", "admin.certificates", "admin.mo"),
            MenuItem("Токены API", "admin.tokens", "admin.tokens"),
            MenuItem("Журнал аудита", "admin.audit", "admin.audit"),
        ),
    ),
)


def menu_for(user, active_endpoint: str | None) -> list[dict]:
    groups = []
    for group in MENU:
        items = []
        for item in group.items:
            if not user.can(item.capability):
                continue
            installed = item.endpoint in current_app.view_functions
            items.append(
                {
                    "label": item.label,
                    "url": url_for(item.endpoint) if installed else None,
                    "active": active_endpoint is not None
                    and active_endpoint.split(".")[0] == item.endpoint.split(".")[0]
                    and (active_endpoint == item.endpoint or item.endpoint.split(".")[0] not in {"admin", "clinical", "tfoms"}),
                }
            )
        if items:
            groups.append({"label": group.label, "items": items})
    return groups
