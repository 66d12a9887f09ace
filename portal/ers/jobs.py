"""ЭРС job «Обмен с ФСС ЭРС»: send queued requests, ask for results (thin)."""

from __future__ import annotations

from jobs.scheduler import register_job
from portal.ers.channel import CHANNEL
from portal.exchange.delivery import poll_due, send_due


def exchange(mo_id: int | None = None) -> str:
    sent = send_due(CHANNEL, mo_id=mo_id)
    asked = poll_due(CHANNEL, mo_id=mo_id)
    return f"отправлено запросов: {sent}, запрошено результатов: {asked}"


register_job(
    "ers_exchange", "Обмен с ФСС ЭРС", exchange, interval_seconds=10, interval_config="JOB_ERS_SECONDS"
)
