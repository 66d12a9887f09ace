"""ВИМИС jobs: «Отправка СЭМД в ВИМИС» and «Опрос результатов ФЛК» (thin: service → result)."""

from __future__ import annotations

from jobs.scheduler import register_job
from portal.exchange.delivery import poll_due, send_due
from portal.vimis.channel import CHANNEL


def send_semds(mo_id: int | None = None) -> str:
    return f"обработано СЭМД: {send_due(CHANNEL, mo_id=mo_id)}"


def poll_results(mo_id: int | None = None) -> str:
    return f"запрошено результатов: {poll_due(CHANNEL, mo_id=mo_id)}"


register_job(
    "vimis_send",
    "Отправка СЭМД в ВИМИС",
    send_semds,
    interval_seconds=20,
    interval_config="JOB_VIMIS_SEND_SECONDS",
    interval_setting="vimis.send_interval",
)
register_job(
    "vimis_poll",
    "Опрос результатов ФЛК",
    poll_results,
    interval_seconds=60,
    interval_config="JOB_VIMIS_POLL_SECONDS",
    interval_setting="vimis.poll_interval",
)
