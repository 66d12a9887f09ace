"""V-1, V-2: a trigger event stored through intake makes exactly one SEMD and releases it.

Runs inside intake's transaction (clinical.hooks), set-based: a batch of 5,000 events costs a
handful of queries. A repeated event (same source id) finds its SEMD by the unique event_id and
only refreshes the registry's copy of the event's fields.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import insert

from portal.clinical.gestation import gestational_weeks
from portal.clinical.hooks import StoredRecord, on_stored
from portal.clinical.models import ClinicalEvent, Hospitalisation, Pregnancy
from portal.exchange.delivery import journal
from portal.exchange.models import QUEUED, JournalEntry, WorkItem
from portal.extensions import db
from portal.models_base import chunks, utcnow
from portal.vimis import models as m
from portal.vimis.semd_types import TRIGGER_KINDS, semd_type_for

TRIGGER_LINE = "Появилось триггерное мероприятие"
CHUNK = 900  # ids per IN (…) list


@on_stored("event")
def semds_for_events(rows: list[StoredRecord]) -> None:
    ids = [r.id for r in rows if r.changed]
    for chunk in chunks(ids, CHUNK):
        _handle(chunk)


def _handle(event_ids: list[int]) -> None:
    e = ClinicalEvent
    events = db.session.execute(
        db.select(
            e.id,
            e.kind,
            e.mo_id,
            e.patient_id,
            e.doctor_id,
            e.department_id,
            e.at,
            e.care_conditions,
            e.data,
            e.pregnancy_id,
            e.hospitalisation_id,
        ).where(e.id.in_(event_ids), e.kind.in_(TRIGGER_KINDS))
    ).all()
    if not events:
        return
    outcomes = _hospitalisation_outcomes({ev.hospitalisation_id for ev in events if ev.kind == "discharge"})
    weeks = _weeks({ev.pregnancy_id for ev in events if ev.pregnancy_id}, events)
    existing = {
        s.event_id: s
        for s in db.session.scalars(db.select(m.Semd).where(m.Semd.event_id.in_([ev.id for ev in events])))
    }
    new_rows: list[dict[str, Any]] = []
    for ev in events:
        semd_type = semd_type_for(
            ev.kind,
            ev.care_conditions,
            outcomes.get(ev.hospitalisation_id),
            (ev.data or {}).get("kas_status"),
        )
        fields = {
            "mo_id": ev.mo_id,
            "patient_id": ev.patient_id,
            "doctor_id": ev.doctor_id,
            "department_id": ev.department_id,
            "event_kind": ev.kind,
            "event_at": ev.at,
            "care_conditions": ev.care_conditions,
            "gestation_weeks": weeks.get(ev.id),
        }
        semd = existing.get(ev.id)
        if semd is not None:
            _refresh(semd, fields, semd_type)
        elif semd_type is not None:
            new_rows.append({**fields, "event_id": ev.id, "semd_type": semd_type})
    if new_rows:
        _create(new_rows)


def _hospitalisation_outcomes(ids: set[int | None]) -> dict[int, str | None]:
    ids.discard(None)
    if not ids:
        return {}
    return dict(
        db.session.execute(
            db.select(Hospitalisation.id, Hospitalisation.outcome).where(Hospitalisation.id.in_(ids))
        ).all()
    )


def _weeks(pregnancy_ids: set[int], events: list[Any]) -> dict[int, int]:
    if not pregnancy_ids:
        return {}
    pregnancies = {
        p.id: p for p in db.session.scalars(db.select(Pregnancy).where(Pregnancy.id.in_(pregnancy_ids)))
    }
    result = {}
    for ev in events:
        pregnancy = pregnancies.get(ev.pregnancy_id)
        if pregnancy is not None:
            on: date = ev.at.date()
            if pregnancy.outcome_on and on > pregnancy.outcome_on:
                continue  # after the outcome there is no term to show
            result[ev.id] = gestational_weeks(pregnancy, on)
    return result


def _refresh(semd: m.Semd, fields: dict[str, Any], semd_type: int | None) -> None:
    """The event came again with changes: keep the registry's copy current.

    The SEMD type may change only while nothing has gone to ВИМИС under the old one.
    """
    for key, value in fields.items():
        setattr(semd, key, value)
    if (
        semd_type is not None
        and semd_type != semd.semd_type
        and semd.status in (m.PENDING, m.QUEUED, m.ERROR)
    ):
        from portal.vimis.channel import CHANNEL

        line = f"Мероприятие изменено в МИС: вместо СЭМД {semd.semd_type} формируется СЭМД {semd_type}"
        semd.semd_type = semd_type
        entry = journal(
            CHANNEL, None, "Изменение мероприятия", line, subject=("semd", semd.id), mo_id=semd.mo_id
        )
        semd.last_message, semd.last_message_at = line, entry.at


def _create(rows: list[dict[str, Any]]) -> None:
    """Insert SEMDs, their first versions, work items and journal lines in bulk.

    The first send is automatic (V-2): the SEMD starts «Ожидает доставки в ВИМИС» with
    version 1 queued; a switched-off МО keeps it queued until ВИМИС is switched on again.
    """
    now = utcnow()
    for row in rows:
        row.update(
            status=m.QUEUED,
            send_number=1,
            last_message=TRIGGER_LINE,
            last_message_at=now,
            created_at=now,
            updated_at=now,
        )
    semd_ids = db.session.scalars(
        insert(m.Semd).returning(m.Semd.id, sort_by_parameter_order=True), rows
    ).all()
    version_ids = db.session.scalars(
        insert(m.SemdVersion).returning(m.SemdVersion.id, sort_by_parameter_order=True),
        [
            {
                "semd_id": sid,
                "number": 1,
                "document_uuid": str(uuid.uuid4()),
                "created_at": now,
                "updated_at": now,
            }
            for sid in semd_ids
        ],
    ).all()
    item_ids = db.session.scalars(
        insert(WorkItem).returning(WorkItem.id, sort_by_parameter_order=True),
        [
            {
                "channel": "vimis",
                "mo_id": row["mo_id"],
                "subject_type": "semd_version",
                "subject_id": vid,
                "state": QUEUED,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for row, vid in zip(rows, version_ids, strict=True)
        ],
    ).all()
    db.session.execute(
        insert(JournalEntry),
        [
            {
                "at": now,
                "channel": "vimis",
                "mo_id": row["mo_id"],
                "subject_type": "semd",
                "subject_id": sid,
                "item_id": iid,
                "operation": "Триггер",
                "level": "info",
                "message": TRIGGER_LINE,
                "packet_type": f"СЭМД {row['semd_type']}",
                "item_state": QUEUED,
            }
            for row, sid, iid in zip(rows, semd_ids, item_ids, strict=True)
        ],
    )
