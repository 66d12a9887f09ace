"""ТФОМС file-exchange jobs; each run is a row of «Журнал работы сервисов» (thin: service → result)."""

from __future__ import annotations

from jobs.scheduler import register_job
from portal.tfoms import attachments, ident, packets, plans


def select_and_package(mo_id: int | None = None) -> str:
    return ident.select_and_package(mo_id=mo_id)


def load_ident_answers(mo_id: int | None = None) -> str:
    return ident.process_inbox(mo_id=mo_id)


def export_attachments(mo_id: int | None = None) -> str:
    return attachments.export_daily(mo_id=mo_id)


def load_plan_answers(mo_id: int | None = None) -> str:
    """The plan exchange: error answers to PROF files from the inbox, and the packets per person."""
    files = plans.process_prof_inbox(mo_id=mo_id)
    sent = packets.exchange(packets.PLANS_CHANNEL, mo_id=mo_id, select=False)
    return files if sent.idle else f"{files}; пакеты: {sent}"


register_job(
    ident.SERVICE_PACKAGING,
    "Пакетная идентификация ТФОМС: отбор и формирование пакетов",
    select_and_package,
    interval_seconds=24 * 3600,
    interval_config="JOB_TFOMS_IDENT_SECONDS",
)
register_job(
    ident.SERVICE_ANSWERS,
    "Пакетная идентификация ТФОМС: загрузка ответов",
    load_ident_answers,
    interval_seconds=300,
    interval_config="JOB_TFOMS_IDENT_ANSWERS_SECONDS",
)
register_job(
    attachments.SERVICE,
    "Выгрузка прикреплений в ТФОМС",
    export_attachments,
    interval_seconds=24 * 3600,
    interval_config="JOB_TFOMS_ATTACHMENTS_SECONDS",
)
register_job(
    plans.SERVICE,
    "Обмен планами профилактических осмотров",
    load_plan_answers,
    interval_seconds=300,
    interval_config="JOB_TFOMS_PROF_SECONDS",
)


def exchange_packets(mo_id: int | None = None) -> str:
    return str(packets.exchange(packets.CHANNEL, mo_id=mo_id))


register_job(
    packets.SERVICE,
    "Сервис автоматизированного взаимодействия с ТФОМС",
    exchange_packets,
    interval_seconds=60,
    interval_config="JOB_TFOMS_PACKETS_SECONDS",
)
