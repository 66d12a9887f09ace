"""Per-МО integration switches and settings: read by every feature, changed in admin."""

from __future__ import annotations

from flask import current_app

from portal.admin.audit import audit
from portal.admin.models import MoIntegration, Setting
from portal.admin.registry import INTEGRATIONS, INTEGRATIONS_BY_KEY, SETTINGS
from portal.clinical.models import Mo
from portal.extensions import db


def enabled_procedures(mo_id: int) -> set[str]:
    rows = db.session.scalars(
        db.select(MoIntegration.key).where(MoIntegration.mo_id == mo_id, MoIntegration.enabled.is_(True))
    )
    return set(rows)


def is_enabled(mo_id: int, procedure: str) -> bool:
    """A switched-off МО sends nothing (X-4): every job asks this before it sends."""
    return bool(
        db.session.scalar(
            db.select(MoIntegration.enabled).where(MoIntegration.mo_id == mo_id, MoIntegration.key == procedure)
        )
    )


def enabled_mo_ids(procedure: str) -> set[int]:
    return set(
        db.session.scalars(
            db.select(MoIntegration.mo_id).where(MoIntegration.key == procedure, MoIntegration.enabled.is_(True))
        )
    )


def switch_matrix(mo_ids: list[int]) -> dict[int, set[str]]:
    """Enabled procedures for many МО in one query (the МО list)."""
    result: dict[int, set[str]] = {mo_id: set() for mo_id in mo_ids}
    if not mo_ids:
        return result
    rows = db.session.execute(
        db.select(MoIntegration.mo_id, MoIntegration.key).where(
            MoIntegration.mo_id.in_(mo_ids), MoIntegration.enabled.is_(True)
        )
    )
    for mo_id, key in rows:
        result[mo_id].add(key)
    return result


def set_integration(mo: Mo, integration_key: str, enabled: bool, reason: str | None = None) -> None:
    """Switch every procedure of one integration for an МО (ИЭМК: 0/2 ↔ 2/2) and audit it."""
    integration = INTEGRATIONS_BY_KEY[integration_key]
    existing = {
        row.key: row
        for row in db.session.scalars(db.select(MoIntegration).where(MoIntegration.mo_id == mo.id))
    }
    for procedure, _label in integration.procedures:
        row = existing.get(procedure)
        if row is None:
            row = MoIntegration(mo_id=mo.id, key=procedure)
            db.session.add(row)
        row.enabled = enabled
        row.reason = reason
    state = "включена" if enabled else "выключена"
    audit(
        "integration.switch",
        f"{mo.short_name}: интеграция «{integration.label}» {state}" + (f" ({reason})" if reason else ""),
        obj=mo,
        mo_id=mo.id,
        details={"integration": integration_key, "enabled": enabled, "reason": reason},
    )


def switch_on_defaults(mo_id: int) -> None:
    """A new МО from intake gets the integrations that are on by default (ВИМИС)."""
    for integration in INTEGRATIONS:
        if integration.default_on:
            for procedure, _label in integration.procedures:
                db.session.add(MoIntegration(mo_id=mo_id, key=procedure, enabled=True))


def _default(key: str) -> str:
    definition = SETTINGS[key]
    base = f"http://127.0.0.1:{current_app.config['SIMULATORS_PORT']}"
    return definition.default.replace("{simulators}", base)


def get_setting(key: str, mo_id: int | None = None) -> str:
    """The МО's override, else the region's value, else the default."""
    rows = {
        row.mo_id: row.value
        for row in db.session.scalars(
            db.select(Setting).where(Setting.key == key, (Setting.mo_id.is_(None)) | (Setting.mo_id == mo_id))
        )
    }
    if mo_id is not None and mo_id in rows:
        return rows[mo_id]
    if None in rows:
        return rows[None]
    return _default(key)


def set_setting(key: str, value: str, mo_id: int | None = None) -> bool:
    """Store a setting (empty value removes an override); True when something changed."""
    definition = SETTINGS[key]
    row = db.session.scalar(
        db.select(Setting).where(Setting.key == key, Setting.mo_id.is_(None) if mo_id is None else Setting.mo_id == mo_id)
    )
    old = row.value if row else None
    if value == "" and mo_id is not None:
        if row is None:
            return False
        db.session.delete(row)
    elif old == value:
        return False
    elif row is None:
        db.session.add(Setting(key=key, mo_id=mo_id, value=value))
    else:
        row.value = value
    shown_new = "••••••" if definition.kind == "secret" else value
    shown_old = "••••••" if definition.kind == "secret" and old else old
    audit(
        "setting.change",
        f"Настройка «{definition.label}»" + (f" для МО #{mo_id}" if mo_id else "") + " изменена",
        mo_id=mo_id,
        details={"key": key, "old": shown_old, "new": shown_new},
    )
    return True
