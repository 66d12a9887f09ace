"""ИЭМК documents: made from clinical events, signed, queued for ИЭМК (SPEC I-2, I-7, I-8).

* Intake makes the rows («Не подписан»): every event of a kind in `KINDS` gets one document; a
  discharge gets one Эпикриз стационара per department of the stay (seed 2.1), found from the
  stay's movements.
* «Получить и подписать документы» builds the CDA, runs the format and logic controls and signs it
  with the МО's certificate «Подпись запросов ИЭМК» (CMS, detached): the signer and time are kept.
  A document that fails a control stays «Не подписан» with the reason.
* «Передать документ в ИЭМК» queues a signed document for the "iemk" channel at once. The two
  procedures of an МО («Включить интеграцию», 2/2) let the job collect every signed document of the
  МО by itself (`collect`); documents of other МО go only by hand.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography.x509.oid import NameOID
from sqlalchemy import insert
from sqlalchemy.orm import selectinload

from portal import crypto
from portal.admin.services import NoCertificate, enabled_mo_ids, signing_key
from portal.auth.models import User
from portal.clinical.hooks import StoredRecord, on_stored
from portal.clinical.models import ClinicalEvent, Hospitalisation, HospitalMovement, Patient
from portal.exchange.delivery import enqueue, journal
from portal.exchange.models import JournalEntry
from portal.extensions import db
from portal.iemk import models as m
from portal.models_base import chunks, utcnow

CHUNK = 900  # ids per IN (…) list
INPATIENT = ("1", "2")  # care conditions of a stay: visits there are not outpatient
PROCEDURES = ("iemk_collect", "iemk_upload")  # both on = «2/2»: the job collects and uploads


@on_stored("event")
def documents_for_events(rows: list[StoredRecord]) -> None:
    ids = [r.id for r in rows if r.changed]
    for chunk in chunks(ids, CHUNK):
        ensure_documents(chunk)


def ensure_documents(
    event_ids: list[int] | None = None, *, patient_id: int | None = None, mo_id: int | None = None
) -> int:
    """Rows for the events (or the patient's / МО's events) that have none yet; returns how many."""
    e = ClinicalEvent
    query = db.select(
        e.id,
        e.kind,
        e.mo_id,
        e.patient_id,
        e.department_id,
        e.doctor_id,
        e.at,
        e.care_conditions,
        e.hospitalisation_id,
    ).where(e.kind.in_(m.KIND_BY_EVENT))
    if event_ids is not None:
        query = query.where(e.id.in_(event_ids))
    if patient_id is not None:
        query = query.where(e.patient_id == patient_id)
    if mo_id is not None:
        query = query.where(e.mo_id == mo_id)
    events = db.session.execute(query).all()
    if not events:
        return 0
    existing: set[tuple[int, int]] = set()
    for chunk in chunks([ev.id for ev in events], CHUNK):
        existing.update(
            db.session.execute(
                db.select(m.IemkDocument.event_id, m.IemkDocument.part).where(
                    m.IemkDocument.event_id.in_(chunk)
                )
            ).all()
        )
    stays = _stay_departments({ev.hospitalisation_id for ev in events if ev.kind == "discharge"})
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for ev in events:
        kind = m.KIND_BY_EVENT[ev.kind]
        if kind.key == "amb_epicrisis" and ev.care_conditions in INPATIENT:
            continue
        if kind.key == "stat_epicrisis":
            departments = stays.get(ev.hospitalisation_id) or [ev.department_id]
            parts = [(d or 0, d) for d in departments]
        else:
            parts = [(0, ev.department_id)]
        for part, department_id in parts:
            if (ev.id, part) in existing:
                continue
            rows.append(
                dict(
                    kind=kind.key,
                    event_id=ev.id,
                    part=part,
                    mo_id=ev.mo_id,
                    patient_id=ev.patient_id,
                    department_id=department_id,
                    doctor_id=ev.doctor_id,
                    event_at=ev.at,
                    local_uid=str(uuid.uuid4()),
                    status=m.UNSIGNED,
                    queued=False,
                    created_at=now,
                    updated_at=now,
                )
            )
    if rows:
        db.session.execute(insert(m.IemkDocument), rows)
    return len(rows)


def _stay_departments(stay_ids: set[int | None]) -> dict[int, list[int]]:
    """Departments of each stay in the order the patient passed them (movements), else the stay's own."""
    stay_ids.discard(None)
    found: dict[int, list[int]] = {}
    for chunk in chunks(sorted(stay_ids), CHUNK):
        for stay_id, department_id in db.session.execute(
            db.select(HospitalMovement.hospitalisation_id, HospitalMovement.department_id)
            .where(HospitalMovement.hospitalisation_id.in_(chunk))
            .order_by(HospitalMovement.hospitalisation_id, HospitalMovement.began_at, HospitalMovement.id)
        ):
            departments = found.setdefault(stay_id, [])
            if department_id not in departments:
                departments.append(department_id)
        for stay_id, department_id in db.session.execute(
            db.select(Hospitalisation.id, Hospitalisation.department_id).where(Hospitalisation.id.in_(chunk))
        ):
            if stay_id not in found and department_id:
                found[stay_id] = [department_id]
    return found


# --- signing (I-2) --------------------------------------------------------------------------


@dataclass
class SignResult:
    signed: list[m.IemkDocument] = field(default_factory=list)
    refused: list[tuple[m.IemkDocument, str]] = field(default_factory=list)


def _channel():
    from portal.iemk.channel import CHANNEL

    return CHANNEL


def _line(
    doc: m.IemkDocument, operation: str, message: str, *, user: User | None, level: str = "info"
) -> None:
    journal(
        _channel(),
        None,
        operation,
        message,
        level=level,
        subject=("iemk_document", doc.id),
        mo_id=doc.mo_id,
        user_id=user.id if user else None,
        packet_id=doc.local_uid,
        packet_type=doc.title,
        notify=False,
    )
    doc.last_message, doc.last_message_at = message, utcnow()


def sign_refusal(doc: m.IemkDocument) -> str | None:
    """Why this document cannot be (re)signed now, or None."""
    if doc.status == m.SAVED:
        return "Документ уже сохранен в ИЭМК"
    if doc.status == m.SENT or doc.queued:
        return "Документ передаётся в ИЭМК: подписать заново можно после ответа ИЭМК"
    return None


def sign_documents(docs: list[m.IemkDocument], user: User) -> SignResult:
    """«Получить и подписать документы»: build, control and sign each document (caller commits)."""
    from portal.iemk.cda import validate

    result = SignResult()
    keys: dict[int, crypto.SigningKey | NoCertificate] = {}  # per МО, looked up once
    _preload(docs)
    for doc in docs:
        refusal = sign_refusal(doc)
        if refusal:
            result.refused.append((doc, refusal))
            continue
        now = utcnow()
        xml, problems = validate(doc, created_at=now)
        if problems or xml is None:
            reason = "; ".join(problems) or "документ не сформирован"
            doc.status, doc.status_text = m.UNSIGNED, reason
            _line(doc, "Подписание", f"{doc.title} не подписан: {reason}", user=user, level="error")
            result.refused.append((doc, reason))
            continue
        if doc.mo_id not in keys:
            try:
                keys[doc.mo_id] = signing_key("iemk", doc.mo_id)
            except NoCertificate as error:
                keys[doc.mo_id] = error
        key = keys[doc.mo_id]
        if isinstance(key, NoCertificate):
            result.refused.append((doc, str(key)))
            continue
        doc.xml, doc.built_at = xml.decode("utf-8"), now
        doc.signature = base64.b64encode(crypto.detached_signature(key, xml)).decode("ascii")
        doc.signer = f"{user.full_name}, сертификат «{_common_name(key)}»"
        doc.signed_by_id, doc.signed_at = user.id, now
        doc.status, doc.status_text, doc.emdr_id, doc.answered_at = m.SIGNED, None, None, None
        _line(doc, "Подписание", f"{doc.title} подписан: {doc.signer}", user=user)
        result.signed.append(doc)
    return result


def building_rows(load) -> list:
    """Loader options for the rows a document is built and sent from (`load`: joinedload for one
    document, selectinload for a batch)."""
    event = load(m.IemkDocument.event)
    return [
        load(m.IemkDocument.patient),
        load(m.IemkDocument.mo),
        load(m.IemkDocument.doctor),
        load(m.IemkDocument.department),
        event.options(
            *(
                load(r)
                for r in (
                    ClinicalEvent.pregnancy,
                    ClinicalEvent.hospitalisation,
                    ClinicalEvent.doctor,
                    ClinicalEvent.department,
                )
            )
        ),
    ]


def _preload(docs: list[m.IemkDocument]) -> None:
    """The rows of all the documents in a few queries (not a few per document)."""
    for chunk in chunks([doc.id for doc in docs], CHUNK):
        db.session.scalars(
            db.select(m.IemkDocument)
            .where(m.IemkDocument.id.in_(chunk))
            .options(*building_rows(selectinload))
        ).all()


def _common_name(key: crypto.SigningKey) -> str:
    """The certificate's CN («Иванова …» or «Демо-МИС: …»), as a person recognises it."""
    names = key.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else key.subject


# --- transfer (I-8) -------------------------------------------------------------------------


@dataclass
class TransferResult:
    queued: list[m.IemkDocument] = field(default_factory=list)
    refused: list[tuple[m.IemkDocument, str]] = field(default_factory=list)


def transfer_refusal(doc: m.IemkDocument) -> str | None:
    if doc.status == m.UNSIGNED or not doc.signature:
        return "Документ не подписан: сначала «Получить и подписать документы»"
    if doc.status == m.SAVED:
        return "Документ уже сохранен в ИЭМК"
    if doc.queued or doc.status == m.SENT:
        return "Документ уже передаётся в ИЭМК"
    return None


def _queue(doc: m.IemkDocument, message: str, user: User | None) -> None:
    enqueue(_channel(), "iemk_document", doc.id, doc.mo_id)
    doc.queued = True
    if doc.status == m.ERROR:  # a document sent again after an error is signed and waiting again
        doc.status = m.SIGNED
    _line(doc, "Постановка в очередь", message, user=user)


def transfer(docs: list[m.IemkDocument], user: User) -> TransferResult:
    """«Передать документ в ИЭМК»: queue each signed document now, whatever the МО's procedures."""
    result = TransferResult()
    for doc in docs:
        refusal = transfer_refusal(doc)
        if refusal:
            result.refused.append((doc, refusal))
        else:
            _queue(doc, f"{doc.title}: передача в ИЭМК запрошена пользователем {user.full_name}", user)
            result.queued.append(doc)
    return result


def integration_mo_ids() -> set[int]:
    """МО with both ИЭМК procedures switched on («2/2»)."""
    on = [enabled_mo_ids(p) for p in PROCEDURES]
    return set.intersection(*on) if on else set()


def collect(mo_id: int | None = None, limit: int = 5000) -> int:
    """Procedure «Сбор подписанных СЭМД»: queue every signed, never queued document of switched-on МО."""
    mo_ids = integration_mo_ids()
    if mo_id is not None:
        mo_ids &= {mo_id}
    if not mo_ids:
        return 0
    docs = db.session.scalars(
        db.select(m.IemkDocument)
        .where(
            m.IemkDocument.mo_id.in_(mo_ids),
            m.IemkDocument.status == m.SIGNED,
            m.IemkDocument.queued.is_(False),
            m.IemkDocument.sent_at.is_(None),
        )
        .order_by(m.IemkDocument.id)
        .limit(limit)
    ).all()
    for doc in docs:
        _queue(doc, f"{doc.title}: поставлен в очередь выгрузки в ИЭМК (интеграция МО включена)", None)
    return len(docs)


# --- reading ------------------------------------------------------------------------------------


def journal_lines(doc: m.IemkDocument) -> list[JournalEntry]:
    return db.session.scalars(
        db.select(JournalEntry)
        .where(JournalEntry.subject_type == "iemk_document", JournalEntry.subject_id == doc.id)
        .order_by(JournalEntry.at.desc(), JournalEntry.id.desc())
    ).all()


def patient_remote_documents(patient: Patient) -> list[Any]:
    """«Получить все СЭМД пациента»: what ИЭМК holds for the patient (registered first if needed)."""
    from portal.iemk import emk, pix

    pix.ensure_registered(patient)
    return emk.search_documents(patient)


def remote_document(patient: Patient, local_uid: str) -> Any:
    from portal.iemk import emk

    return emk.get_document(patient, local_uid)


def visit_report(doc: m.IemkDocument) -> m.VisitReport | None:
    """The signed PDF report of the visit to attach to an Амбулаторный эпикриз (seed 2.2), if any."""
    if doc.kind != "amb_epicrisis":
        return None
    return db.session.scalars(
        db.select(m.VisitReport)
        .where(m.VisitReport.event_id == doc.event_id, m.VisitReport.to_iemk.is_(True))
        .order_by(m.VisitReport.signed_at.desc().nulls_last(), m.VisitReport.id.desc())
        .limit(1)
    ).first()
