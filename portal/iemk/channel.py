"""ИЭМК as a channel of the shared delivery mechanism (SPEC I-4, I-6, I-9).

`prepare` makes sure the patient is in the patient index and the case is open in ИЭМК;
`transmit` uploads the signed document with AddMedRecord («Передан в ИЭМК»); the asynchronous
answer comes to our callback (`receive_result`) or, when it does not, is asked for with
getDocumentResult (`check`): «Сохранен в ИЭМК» or «Ошибка: <текст>». The document's own id
(IdDocumentMis = localUid) is known before sending, so a lost answer is resolved by asking, and
the same document is never stored twice.
"""

from __future__ import annotations

from sqlalchemy.orm import joinedload

from portal.exchange.delivery import (
    Channel,
    DataError,
    Outcome,
    TransientError,
    apply_outcome,
    memo,
    register_channel,
)
from portal.exchange.models import CANCELLED, DONE, FAILED, WAITING, JournalEntry, WorkItem
from portal.extensions import db
from portal.iemk import models as m
from portal.models_base import utcnow


class IemkChannel(Channel):
    name = "iemk"
    title = "ИЭМК ЕГИСЗ"
    procedure = (
        None  # «Передать документ в ИЭМК» goes at once; the МО switch governs collecting (documents.collect)
    )
    lease_seconds = 180
    poll_seconds = 60
    batch_size = 100
    workers = 2

    def document(self, item: WorkItem) -> m.IemkDocument:
        return memo(("iemk_document", item.subject_id), lambda: _load(item.subject_id), per_item=True)

    def subject(self, item: WorkItem) -> tuple[str, int]:
        return "iemk_document", item.subject_id

    def packet_type(self, item: WorkItem) -> str:
        return self.document(item).title

    def label(self, item: WorkItem) -> str:
        return f"{self.document(item).title} № {item.subject_id}"

    def prepare(self, item: WorkItem) -> m.VisitReport | None:
        from portal.iemk import emk, pix
        from portal.iemk.documents import visit_report

        doc = self.document(item)
        if not (doc.xml and doc.signature):
            raise DataError("Документ не подписан: сначала «Получить и подписать документы»")
        pix.ensure_registered(doc.patient)
        emk.ensure_case(doc)
        return visit_report(doc)

    def transmit(self, item: WorkItem, prepared: object) -> Outcome:
        from portal.iemk import emk

        doc = self.document(item)
        sent = emk.add_med_record(doc, prepared, item.request_id)
        doc.sent_at = utcnow()
        return Outcome.accepted(
            f"{doc.title} передан в ИЭМК, ожидается асинхронный ответ",
            external_id=doc.local_uid,
            payload=sent.request,
            answer=sent.response,
        )

    def check(self, item: WorkItem) -> Outcome:
        from portal.iemk import emk

        doc = self.document(item)
        result = emk.document_result(doc.mo, doc.local_uid)
        doc.emdr_id = result.emdr_id or doc.emdr_id
        return outcome_of(result, "Запрос результата")

    def on_outcome(self, item: WorkItem, entry: JournalEntry) -> None:
        doc = self.document(item)
        doc.last_message, doc.last_message_at = entry.message, entry.at
        doc.queued = item.state not in (DONE, FAILED, CANCELLED)
        if item.state == WAITING:
            doc.status = m.SENT
        elif item.state == DONE:
            doc.status, doc.status_text, doc.answered_at = m.SAVED, None, entry.at
        elif item.state == FAILED:
            doc.status, doc.status_text, doc.answered_at = m.ERROR, entry.message, entry.at
        else:  # queued, sending, asked about: still «Подписан» until ИЭМК takes it
            doc.status = m.SIGNED


def outcome_of(result, operation: str) -> Outcome:
    """ИЭМК's answer about a document → the item's outcome (errors as the user reads them)."""
    if result.status == "success":
        return Outcome.done(result.message, answer=result.answer, operation=operation)
    if result.status == "error":
        return Outcome.failed(result.message, answer=result.answer, operation=operation)
    if result.status == "not_found":
        return Outcome.not_found("ИЭМК не получил документ", answer=result.answer, operation=operation)
    return Outcome.accepted("ИЭМК проверяет документ", answer=result.answer, operation=operation)


def receive_result(local_uid: str, result) -> bool:
    """The asynchronous answer (callback sendDocumentResult); False when no such document was sent.

    A repeated answer settles nothing twice; one that comes while the upload is still being
    recorded raises TransientError (the callback answers a Server fault and ИЭМК repeats it).
    The caller commits."""
    doc = db.session.scalar(db.select(m.IemkDocument).where(m.IemkDocument.local_uid == local_uid))
    if doc is None:
        return False
    item = db.session.scalars(
        db.select(WorkItem)
        .where(
            WorkItem.channel == CHANNEL.name,
            WorkItem.subject_type == "iemk_document",
            WorkItem.subject_id == doc.id,
        )
        .order_by(WorkItem.id.desc())
        .limit(1)
    ).first()
    if item is None:
        return False
    if item.state in (DONE, FAILED, CANCELLED):
        return True
    if item.state != WAITING:  # the answer overtook our own record of the upload: ИЭМК repeats it
        raise TransientError("Документ ещё передаётся: повторите ответ позже")
    outcome = outcome_of(result, "Асинхронный ответ ИЭМК")
    if outcome.state == WAITING:
        return True
    doc.emdr_id = result.emdr_id or doc.emdr_id
    apply_outcome(CHANNEL, item, outcome, operation="Асинхронный ответ ИЭМК")
    return True


def _load(doc_id: int) -> m.IemkDocument:
    """The document with its rows in one query, fresh even if a row lingers in the session."""
    from portal.iemk.documents import building_rows

    query = (
        db.select(m.IemkDocument)
        .where(m.IemkDocument.id == doc_id)
        .options(*building_rows(joinedload))
        .execution_options(populate_existing=True)
    )
    return db.session.scalars(query).unique().one()


CHANNEL = register_channel(IemkChannel())
