"""What users and ВИМИС do to SEMDs: release (send / send again), cancel, the callback result.

Views call these; they flush, never commit. Sending itself happens in the jobs
(portal/vimis/jobs.py) through the shared delivery mechanism.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from portal.exchange import delivery
from portal.exchange.models import QUEUED, WorkItem
from portal.extensions import db
from portal.vimis import models as m
from portal.vimis.channel import CHANNEL


@dataclass
class BulkResult:
    done: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)  # semd id → Russian reason

    def summary(self, verb: str) -> str:
        text = f"{verb}: {len(self.done)}"
        if self.refused:
            text += f"; не выполнено: {len(self.refused)} ({'; '.join(sorted(set(self.refused.values())))})"
        return text


def _version_item(version: m.SemdVersion) -> WorkItem | None:
    return db.session.scalars(
        db.select(WorkItem)
        .where(WorkItem.subject_type == "semd_version", WorkItem.subject_id == version.id)
        .order_by(WorkItem.id.desc())
    ).first()


def current_version(semd: m.Semd) -> m.SemdVersion | None:
    return db.session.scalars(
        db.select(m.SemdVersion).where(
            m.SemdVersion.semd_id == semd.id, m.SemdVersion.number == semd.send_number
        )
    ).first()


def release(semds: Iterable[m.Semd], user) -> BulkResult:
    """Pencil / «Отправить выделенные в ВИМИС» (V-9, V-10, V-12): the SEMD turns yellow.

    A version that never left is queued again under its number; after a send, the next send
    is a new version (№ отправки + 1). Items already on their way are refused.
    """
    result = BulkResult()
    who = user.full_name
    for semd in semds:
        if semd.status in m.IN_FLIGHT:
            result.refused[semd.id] = "уже ожидает доставки или ответа ВИМИС"
            continue
        version = current_version(semd)
        if version is None or version.sent_at is not None:
            number = (version.number + 1) if version is not None else 1
            version = m.SemdVersion(semd_id=semd.id, number=number, document_uuid=str(uuid.uuid4()))
            db.session.add(version)
            db.session.flush()
            semd.send_number = number
        else:  # built or refused before sending: its data may be fixed now, build it again
            version.xml = version.built_at = version.result = version.answer_text = None
        item = delivery.enqueue(CHANNEL, "semd_version", version.id, semd.mo_id)
        db.session.flush()
        delivery.journal(
            CHANNEL,
            item,
            "Отправка пользователем",
            f"{who}: версия {version.number} СЭМД{semd.semd_type} поставлена в очередь на отправку в ВИМИС",
            user_id=getattr(user, "id", None),
        )
        result.done.append(semd.id)
    return result


def cancel(semds: Iterable[m.Semd], user) -> BulkResult:
    """«Отменить отправку выделенных в ВИМИС»: a queued SEMD that has not left turns black."""
    result = BulkResult()
    who = user.full_name
    for semd in semds:
        version = current_version(semd)
        item = _version_item(version) if version is not None else None
        if semd.status != m.QUEUED or item is None or item.state != QUEUED:
            result.refused[semd.id] = "отменить можно только СЭМД, ожидающий доставки и ещё не отправленный"
            continue
        if not delivery.cancel(
            CHANNEL,
            item,
            f"{who}: отправка версии {version.number} СЭМД{semd.semd_type} в ВИМИС отменена",
            user_id=getattr(user, "id", None),
        ):
            result.refused[semd.id] = "СЭМД уже отправляется"
            continue
        result.done.append(semd.id)
    return result


class CallbackError(ValueError):
    """A callback ВИМИС sent that cannot be applied; the message goes back as a SOAP Fault."""


def apply_callback_result(msg_id: str, status: int, description: str, envelope: str) -> m.Semd:
    """sendResult from ВИМИС: the ФЛК result of one version (V-11)."""
    item = delivery.find_by_external_id(CHANNEL, msg_id)
    if item is None:
        raise CallbackError(f"Неизвестный msg_id: {msg_id}")
    semd = CHANNEL.version(item).semd
    if item.state != "waiting":  # already resolved by polling, or a repeated callback
        return semd
    outcome = CHANNEL.result(item, status, description, envelope, "Результат ФЛК (callback)")
    if outcome.state == "waiting":
        raise CallbackError(f"Недопустимый статус результата: {status}")
    delivery.apply_outcome(CHANNEL, item, outcome)
    return semd


def apply_interim_message(msg_id: str, description: str, envelope: str) -> m.Semd:
    item = delivery.find_by_external_id(CHANNEL, msg_id)
    if item is None:
        raise CallbackError(f"Неизвестный msg_id: {msg_id}")
    delivery.journal(
        CHANNEL, item, "Промежуточное сообщение", f"{CHANNEL.label(item)}: {description}", answer=envelope
    )
    return CHANNEL.version(item).semd
