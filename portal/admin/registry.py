"""What administrators switch and set: integrations per МО (X-4), settings, certificate purposes.

Feature packages add their own settings with `register_setting`; pages list what is registered.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Integration:
    key: str
    label: str
    short: str  # column heading and summary pill
    procedures: tuple[tuple[str, str], ...]  # (procedure key, label); ИЭМК has two
    default_on: bool = False  # switched on for an МО that arrives through intake


INTEGRATIONS: tuple[Integration, ...] = (
    # Sending to ВИМИС is mandatory: on by default, off only for an outage or a transition.
    Integration("vimis", "ВИМИС «АКиНЕО»", "ВИМИС", (("vimis", "Отправка СЭМД в ВИМИС"),), default_on=True),
    Integration("iemk", "ИЭМК ЕГИСЗ", "ИЭМК",
        (("iemk_collect", "Сбор подписанных СЭМД"), ("iemk_upload", "Выгрузка документов в ИЭМК")),
    ),
    Integration("ers", "ФСС: электронный родовой сертификат", "ЭРС", (("ers", "Обмен с ФСС ЭРС"),)),
    Integration("tfoms_identification", "ТФОМС: пакетная идентификация", "Идентиф.", (("tfoms_identification", "Идентификация"),)),
    Integration("tfoms_hospitalisation", "ТФОМС: госпитализация (приказ 263)", "Госпит.", (("tfoms_hospitalisation", "Пакеты 263"),)),
    Integration("tfoms_attachment", "ТФОМС: прикрепление", "Прикреп.", (("tfoms_attachment", "Прикрепление"),)),
    Integration("tfoms_dispensary", "ТФОМС: диспансерное наблюдение", "Д-набл.", (("tfoms_dispensary", "Диспансерное наблюдение"),)),
    Integration("tfoms_insurance", "ТФОМС: страховая принадлежность", "Страх.", (("tfoms_insurance", "Страховая принадлежность"),)),
    Integration("tfoms_prof", "ТФОМС: планы профилактических мероприятий", "Профил.", (("tfoms_prof", "Планы профилактики"),)),
)
INTEGRATIONS_BY_KEY = {i.key: i for i in INTEGRATIONS}
PROCEDURE_TO_INTEGRATION = {p: i for i in INTEGRATIONS for p, _ in i.procedures}


@dataclass(frozen=True)
class SettingDef:
    key: str
    group: str
    label: str
    kind: str = "text"  # text | url | seconds | int | secret | path
    default: str = ""  # "{simulators}": the local simulators' base URL; "{portal}": the portal's own
    per_mo: bool = False  # may be overridden for one МО
    help: str = ""


SETTINGS: dict[str, SettingDef] = {}


def register_setting(definition: SettingDef) -> SettingDef:
    SETTINGS[definition.key] = definition
    return definition


for _d in (
    SettingDef("vimis.endpoint", "ВИМИС «АКиНЕО»", "Адрес сервиса ВИМИС", "url", "{simulators}/vimis/ws"),
    SettingDef("vimis.timeout", "ВИМИС «АКиНЕО»", "Тайм-аут запроса, с", "seconds", "30"),
    SettingDef("vimis.callback_url", "ВИМИС «АКиНЕО»", "Адрес callback-сервиса портала (sendResult)", "url",
               "{portal}/vimis/callback", help="Адрес, зарегистрированный в ИПС; ВИМИС присылает на него результат ФЛК."),
    SettingDef("vimis.client_entity_id", "ВИМИС «АКиНЕО»", "Идентификатор МИС в ИПС (clientEntityId)", "text",
               "demo-portal-mis"),
    SettingDef("vimis.kas_endpoint", "ВИМИС «АКиНЕО»", "Сервис номеров случаев КАС (REST ИПС)", "url",
               "{simulators}/vimis/kas"),
    SettingDef("vimis.send_interval", "ВИМИС «АКиНЕО»", "Интервал отправки СЭМД, с", "seconds", "20"),
    SettingDef("vimis.poll_interval", "ВИМИС «АКиНЕО»", "Интервал опроса результатов ФЛК, с", "seconds", "60"),
    SettingDef("iemk.pix_endpoint", "ИЭМК ЕГИСЗ", "Сервис пациентов (PixService)", "url", "{simulators}/iemk/pix", True),
    SettingDef("iemk.emk_endpoint", "ИЭМК ЕГИСЗ", "Сервис документов (EMKService)", "url", "{simulators}/iemk/emk", True),
    SettingDef("iemk.registry_endpoint", "ИЭМК ЕГИСЗ", "Сервис регистра и репозитория документов (списки, документ, результат)",
               "url", "{simulators}/iemk/registry", True,
               help="WSDL портала по образцу РЭМД (portal/schemas/iemk/IemkDocuments.wsdl): в WSDL N3 этих операций нет."),
    SettingDef("iemk.callback_url", "ИЭМК ЕГИСЗ", "Адрес сервиса асинхронных ответов портала", "url",
               "{portal}/iemk/callback", help="ИЭМК присылает на него результат проверки переданного документа."),
    SettingDef("iemk.guid", "ИЭМК ЕГИСЗ", "Токен МИС (guid)", "secret", "", True),
    SettingDef("iemk.timeout", "ИЭМК ЕГИСЗ", "Тайм-аут запроса, с", "seconds", "30", True),
    SettingDef("iemk.upload_interval", "ИЭМК ЕГИСЗ", "Интервал выгрузки документов в ИЭМК, с", "seconds", "30"),
    SettingDef("ers.endpoint", "ФСС ЭРС", "Адрес сервиса ЭРС", "url", "{simulators}/fss/ers"),
    SettingDef("ers.wsdl", "ФСС ЭРС", "Официальный WSDL (если есть)", "path", "",
               help="Пусто — используется реконструированный WSDL портала."),
    SettingDef("ers.timeout", "ФСС ЭРС", "Тайм-аут запроса, с", "seconds", "60"),
    SettingDef("tfoms.rpc_timeout", "ТФОМС", "Тайм-аут запроса свободных мест, с", "seconds", "15"),
    SettingDef("tfoms.inbox_dir", "ТФОМС", "Папка входящих ответов идентификации", "path", "inbox",
               help="Относительный путь — от папки обмена с ТФОМС (PORTAL_TFOMS_DIR, по умолчанию instance/tfoms). Задание загрузки ответов обрабатывает "
                    "появившиеся в ней файлы *.DBF так же, как кнопка «Загрузить»."),
):
    register_setting(_d)


CERTIFICATE_PURPOSES: dict[str, str] = {
    "mo": "Подпись МО",
    "doctor": "Подпись врача",
    "accountant": "Подпись бухгалтера",
    "fss": "Сертификат ФСС (шифрование)",
    "iemk": "Подпись запросов ИЭМК",
    "vimis": "Подпись СЭМД для ВИМИС",
}
