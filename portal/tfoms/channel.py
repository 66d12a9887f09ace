"""The ТФОМС file exchanges write their journal lines through the shared journal.

Files are handed over by people (download, upload) or through folders, not sent by the delivery
loop, so the channel has no work items: lines name their subject (a package, an export) and,
inside a service run, count it as the run's packet.
"""

from __future__ import annotations

from portal.exchange.delivery import Channel, register_channel


class TfomsFiles(Channel):
    name = "tfoms_files"
    title = "ТФОМС (файловый обмен)"


CHANNEL = register_channel(TfomsFiles())

# Journal packet types of the file exchanges («Тип пакета» in «Журнал работы сервисов»).
PACKET_IDENT_REQUEST = "Запрос идентификации (DBF)"
PACKET_IDENT_ANSWER = "Ответ идентификации (DBF)"
PACKET_ATTACHMENTS = "Файл прикрепления (CSV)"
PACKET_PROF = "План профилактических мероприятий (PROF)"
PACKET_PROF_ERRORS = "Протокол ошибок плана (OSHIB_PR)"
