"""ВИМИС as a channel of the shared delivery mechanism: build → check → sign → send → ФЛК.

`prepare` runs the data checks and builds and validates the CDA document; `transmit` sends it
with `sendDocument`; `check` asks `checkStatus`; `on_outcome` keeps the SEMD's status and its
newest journal line (the registry's Статус column) in step with every journal line.
"""

from __future__ import annotations

from sqlalchemy.orm import joinedload

from portal.clinical.models import ClinicalEvent
from portal.exchange.delivery import Channel, DataError, Outcome, memo, register_channel
from portal.exchange.models import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    SENDING,
    UNKNOWN,
    WAITING,
    JournalEntry,
    WorkItem,
)
from portal.extensions import db
from portal.models_base import utcnow
from portal.vimis import models as m

# Item state → SEMD status (V-3).
_STATUS_BY_STATE = {
    QUEUED: m.QUEUED,
    SENDING: m.QUEUED,
    UNKNOWN: m.QUEUED,
    WAITING: m.DELIVERED,
    DONE: m.PASSED,
    FAILED: m.ERROR,
    CANCELLED: m.PENDING,
}


class VimisChannel(Channel):
    name = "vimis"
    title = "ВИМИС «АКиНЕО»"
    procedure = "vimis"
    lease_seconds = 180
    poll_seconds = 60  # the real ВИМИС answers in 15–20 minutes; the callback usually comes first
    batch_size = 50  # small batches: two workers share the backlog evenly and fresh items go first
    workers = 2  # one builds and signs while the other waits for ВИМИС

    def version(self, item: WorkItem) -> m.SemdVersion:
        """The version with its SEMD and event loaded in one query, held for the delivery pass."""
        return memo(("semd_version", item.subject_id), lambda: _load_version(item.subject_id), per_item=True)

    def subject(self, item: WorkItem) -> tuple[str, int]:
        return "semd", self.version(item).semd_id

    def packet_type(self, item: WorkItem) -> str:
        return self.version(item).semd.label

    def label(self, item: WorkItem) -> str:
        version = self.version(item)
        return f"Версия {version.number} СЭМД{version.semd.semd_type}"

    def prepare(self, item: WorkItem) -> bytes:
        from portal.vimis.builders import CdaSchemaError, build_document, validate_cda
        from portal.vimis.checks import check_event

        version = self.version(item)
        semd = version.semd
        problems = check_event(semd.event, semd.semd_type)
        if problems:
            raise DataError("; ".join(problems))
        now = utcnow()
        kas_number = kas_case_number(semd) if semd.semd_type == 22 else None
        xml = build_document(
            semd.event, semd.semd_type, version=version.number, document_uuid=version.document_uuid,
            created_at=now, kas_case_number=kas_number,
        )
        try:
            validate_cda(xml)
        except CdaSchemaError as error:
            raise DataError(str(error)) from error
        version.xml, version.built_at = xml.decode("utf-8"), now
        return xml

    def transmit(self, item: WorkItem, prepared: object) -> Outcome:
        from portal.vimis.client import send_document

        version = self.version(item)
        sent = send_document(item, version.semd, prepared)  # raises TransientError / UnknownOutcome
        version.sent_at, version.msg_id = utcnow(), sent.msg_id
        return Outcome.accepted(
            f"{self.label(item)} доставлена в ВИМИС, ожидается результат ФЛК",
            external_id=sent.msg_id,
            payload=sent.request,
            answer=sent.response,
        )

    def check(self, item: WorkItem) -> Outcome:
        from portal.vimis.client import check_status

        status = check_status(item)
        return self.result(item, status.code, status.description, status.response, "Запрос результата")

    def result(
        self, item: WorkItem, code: int | None, description: str, answer: str | None, operation: str
    ) -> Outcome:
        """Outcome of a ФЛК answer (checkStatus or the sendResult callback): 1 ok, 0 error, 2 in work."""
        label = self.label(item)
        if code == 1:
            return Outcome.done(f"{label} прошла ФЛК", answer=answer, operation=operation)
        if code == 0:
            return Outcome.failed(f"{label} не прошла ФЛК: {description}", answer=answer, operation=operation)
        if code is None:
            return Outcome.not_found(description, answer=answer, operation=operation)
        return Outcome.accepted(f"{label}: ФЛК выполняется", answer=answer, operation=operation)

    def on_outcome(self, item: WorkItem, entry: JournalEntry) -> None:
        version = self.version(item)
        semd = version.semd
        semd.status = _STATUS_BY_STATE.get(item.state, semd.status)
        semd.last_message, semd.last_message_at = entry.message, entry.at
        if item.state in (DONE, FAILED):
            version.answered_at = entry.at
            version.result = m.PASSED if item.state == DONE else m.ERROR
            version.answer_text = entry.message


def _load_version(version_id: int) -> m.SemdVersion:
    """One query for everything a document needs; fresh even if a row lingers in the session."""
    event = joinedload(m.SemdVersion.semd).joinedload(m.Semd.event)
    query = (
        db.select(m.SemdVersion)
        .where(m.SemdVersion.id == version_id)
        .options(
            event.joinedload(ClinicalEvent.patient), event.joinedload(ClinicalEvent.pregnancy),
            event.joinedload(ClinicalEvent.doctor), event.joinedload(ClinicalEvent.mo),
            event.joinedload(ClinicalEvent.department), event.joinedload(ClinicalEvent.hospitalisation),
        )
        .execution_options(populate_existing=True)
    )
    return db.session.scalars(query).unique().one()


def kas_case_number(semd: m.Semd) -> str:
    """The КАС case id every notice of one case carries: from the source MIS, from an earlier
    notice of the same pregnancy, or a new one from ВИМИС's case id service (§5.3)."""
    given = (semd.event.data or {}).get("kas_case_number")
    if given or semd.kas_case_number:
        return str(given or semd.kas_case_number)
    from portal.clinical.models import ClinicalEvent

    pregnancy_id = semd.event.pregnancy_id
    if pregnancy_id is not None:
        # Two sending workers may build two notices of one case at once: the first to lock the
        # pregnancy takes (or fetches) the number; the other waits for its commit and finds it.
        from portal.clinical.models import Pregnancy

        db.session.execute(db.select(Pregnancy.id).where(Pregnancy.id == pregnancy_id).with_for_update())
        earlier = db.session.scalar(
            db.select(m.Semd.kas_case_number)
            .join(ClinicalEvent, ClinicalEvent.id == m.Semd.event_id)
            .where(ClinicalEvent.pregnancy_id == pregnancy_id, m.Semd.semd_type == 22,
                   m.Semd.kas_case_number.is_not(None))
            .limit(1)
        )
        if earlier:
            semd.kas_case_number = earlier
            return earlier
    from portal.vimis.client import new_kas_case_number

    semd.kas_case_number = new_kas_case_number(semd)
    return semd.kas_case_number


CHANNEL = register_channel(VimisChannel())
