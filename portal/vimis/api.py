"""Feedback for the source MIS: GET /api/v1/events/<source_event_id>/semd.

The MIS asks what became of the SEMD its event caused (status, the error to fix, each version
with ВИМИС's answer), with the same bearer token as intake.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, url_for
from sqlalchemy import select

from portal.clinical import api_bp
from portal.clinical.api import api_error, authenticate
from portal.clinical.models import ClinicalEvent
from portal.extensions import db
from portal.vimis import models as m
from portal.vimis.registry import newest_error
from portal.vimis.semd_types import SEMD_TYPES


class FeedbackNotFound(LookupError):
    """No event with that source id, or the event caused no SEMD; the message says which."""


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def semd_feedback(source_event_id: str) -> dict[str, Any]:
    """The answer body for one source event; FeedbackNotFound with a Russian message otherwise."""
    event_id = db.session.scalar(select(ClinicalEvent.id).where(ClinicalEvent.source_id == source_event_id))
    if event_id is None:
        raise FeedbackNotFound(f"Мероприятие «{source_event_id}» не найдено: МИС его не передавала.")
    semd = db.session.scalars(select(m.Semd).where(m.Semd.event_id == event_id)).first()
    if semd is None:
        raise FeedbackNotFound(
            f"Мероприятие «{source_event_id}» не является триггерным для ВИМИС «АКиНЕО»: СЭМД по нему не формировался."
        )
    versions = list(
        db.session.scalars(
            select(m.SemdVersion).where(m.SemdVersion.semd_id == semd.id).order_by(m.SemdVersion.number)
        )
    )
    semd_type = SEMD_TYPES.get(semd.semd_type)
    return {
        "event": source_event_id,
        "semd": {
            "type": semd.semd_type,
            "title": semd_type.title if semd_type else None,
            "send_number": semd.send_number,
            "status": semd.status,
            "status_label": semd.status_label,
            "last_message": semd.last_message,
            "last_message_at": _iso(semd.last_message_at),
            "error": newest_error(semd) if semd.status == m.ERROR else None,
            "versions": [
                {
                    "number": v.number,
                    "built_at": _iso(v.built_at),
                    "sent_at": _iso(v.sent_at),
                    "answered_at": _iso(v.answered_at),
                    "result": v.result,
                    "answer": v.answer_text,
                    "xml_url": url_for("vimis.version_xml", semd_id=semd.id, number=v.number, _external=True)
                    if v.xml
                    else None,
                }
                for v in versions
            ],
        },
    }


@api_bp.get("/events/<path:source_event_id>/semd")
def event_semd(source_event_id: str) -> Response:
    _token_id, refusal = authenticate()
    if refusal is not None:
        return refusal
    try:
        return jsonify(semd_feedback(source_event_id))
    except FeedbackNotFound as error:
        return api_error(404, str(error))
