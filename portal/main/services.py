from __future__ import annotations

from datetime import datetime

from flask import current_app
from kombu import Connection
from sqlalchemy import func, text

from portal.admin.registry import INTEGRATIONS
from portal.admin.services import switch_matrix
from portal.auth.scoping import scoped
from portal.clinical.models import ClinicalEvent, Mo, Patient, Pregnancy
from portal.extensions import db


def _counts(stmt) -> dict[int, int]:
    return dict(db.session.execute(stmt).all())


def region_summary(since: datetime) -> list[dict]:
    """One row per visible МО: patients, current pregnancies, recent events, integrations on."""
    mos = list(db.session.scalars(scoped(db.select(Mo).order_by(Mo.short_name), Mo.id)))
    ids = [mo.id for mo in mos]
    patients = _counts(db.select(Patient.mo_id, func.count()).where(Patient.mo_id.in_(ids)).group_by(Patient.mo_id))
    pregnancies = _counts(
        db.select(Pregnancy.mo_id, func.count())
        .where(Pregnancy.mo_id.in_(ids), Pregnancy.outcome.is_(None))
        .group_by(Pregnancy.mo_id)
    )
    events = _counts(
        db.select(ClinicalEvent.mo_id, func.count())
        .where(ClinicalEvent.mo_id.in_(ids), ClinicalEvent.at >= since)
        .group_by(ClinicalEvent.mo_id)
    )
    switches = switch_matrix(ids)
    rows = []
    for mo in mos:
        on = switches[mo.id]
        rows.append(
            {
                "mo": mo,
                "patients": patients.get(mo.id, 0),
                "pregnancies": pregnancies.get(mo.id, 0),
                "events": events.get(mo.id, 0),
                "integrations": [
                    (i.short, i.label, sum(p in on for p, _ in i.procedures), len(i.procedures)) for i in INTEGRATIONS
                ],
            }
        )
    return rows


def service_health() -> dict[str, dict]:
    """Reachability of what the portal cannot work without; messages in Russian."""
    checks: dict[str, dict] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True, "message": "База данных доступна"}
    except Exception as exc:  # noqa: BLE001 - any failure means «unavailable»
        db.session.rollback()
        checks["database"] = {"ok": False, "message": f"База данных недоступна: {exc.__class__.__name__}"}
    url = current_app.config.get("AMQP_URL")
    if url:
        try:
            with Connection(url, connect_timeout=3) as connection:
                connection.ensure_connection(max_retries=1)
            checks["broker"] = {"ok": True, "message": "Брокер сообщений ТФОМС доступен"}
        except Exception as exc:  # noqa: BLE001
            checks["broker"] = {"ok": False, "message": f"Брокер сообщений ТФОМС недоступен: {exc.__class__.__name__}"}
    else:
        checks["broker"] = {"ok": True, "message": "Брокер не настроен: пакеты ТФОМС хранятся в базе портала"}
    return checks
