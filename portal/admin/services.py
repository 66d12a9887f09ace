"""Per-МО integration switches and settings: read by every feature, changed in admin."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, or_
from sqlalchemy.orm import joinedload

from portal.admin.audit import audit
from portal.admin.certificates import CertificateError, check_private_key, parse_certificate
from portal.admin.forms import clean_full_name, clean_int, clean_login, clean_password, clean_setting
from portal.admin.models import AuditLog, Certificate, MoIntegration, Setting
from portal.admin.registry import (
    CERTIFICATE_PURPOSES,
    INTEGRATIONS,
    INTEGRATIONS_BY_KEY,
    SETTINGS,
    Integration,
    SettingDef,
)
from portal.auth.models import ApiToken, User, hash_token
from portal.auth.roles import CENTRAL_ADMIN, ROLES
from portal.auth.scoping import filter_mo_id, scoped, visible_mo_id
from portal.clinical.hooks import StoredRecord, on_stored
from portal.clinical.models import Mo, Staff
from portal.dates import parse_date
from portal.extensions import db
from portal.filters import contains_ci
from portal.models_base import utcnow


def enabled_procedures(mo_id: int) -> set[str]:
    rows = db.session.scalars(
        db.select(MoIntegration.key).where(MoIntegration.mo_id == mo_id, MoIntegration.enabled.is_(True))
    )
    return set(rows)


def is_enabled(mo_id: int, procedure: str) -> bool:
    """A switched-off МО sends nothing (X-4): every job asks this before it sends."""
    return bool(
        db.session.scalar(
            db.select(MoIntegration.enabled).where(
                MoIntegration.mo_id == mo_id, MoIntegration.key == procedure
            )
        )
    )


def enabled_mo_ids(procedure: str) -> set[int]:
    return set(
        db.session.scalars(
            db.select(MoIntegration.mo_id).where(
                MoIntegration.key == procedure, MoIntegration.enabled.is_(True)
            )
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


@on_stored("mo")
def _switch_on_defaults_for_new_mo(rows: list[StoredRecord]) -> None:
    """Intake hook: in the same transaction as the МО itself (sending to ВИМИС is mandatory)."""
    for row in rows:
        if row.created:
            switch_on_defaults(row.id)


def _default(key: str) -> str:
    definition = SETTINGS[key]
    config = current_app.config
    return definition.default.replace(
        "{simulators}", f"http://127.0.0.1:{config['SIMULATORS_PORT']}"
    ).replace("{portal}", config.get("PUBLIC_URL") or f"http://127.0.0.1:{config['PORT']}")


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
        db.select(Setting).where(
            Setting.key == key, Setting.mo_id.is_(None) if mo_id is None else Setting.mo_id == mo_id
        )
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


# ---------------------------------------------------------------------------------------------
# Administration pages (issue 2, item 8). Everything below flushes, never commits; a refusal
# raises `AdminError`/returns errors before anything is changed.
# ---------------------------------------------------------------------------------------------


class AdminError(Exception):
    """A refused administrative change; the message is shown to the user as is."""


SHORT_LABELS: dict[str, str] = {i.key: i.short for i in INTEGRATIONS}
GROUP_LABELS: dict[str, str] = {"tfoms": "ТФОМС"}
VIMIS_OFF_HINT = (
    "Отправка СЭМД в ВИМИС обязательна. Выключайте её только на время сбоя или перехода "
    "на другую систему и укажите причину."
)


@dataclass(frozen=True)
class SwitchState:
    """How much of one integration is on for one МО (ИЭМК: 0/2, 1/2, 2/2)."""

    integration: Integration
    on: int
    reason: str | None = None
    changed_at: datetime | None = None

    @property
    def total(self) -> int:
        return len(self.integration.procedures)

    @property
    def full(self) -> bool:
        return self.on == self.total


def integration_columns() -> list[tuple[str, list[Integration]]]:
    """Header groups of the МО list: single integrations, then the ТФОМС services together."""
    groups: list[tuple[str, list[Integration]]] = []
    for integration in INTEGRATIONS:
        group = integration.key.split("_")[0]
        label = GROUP_LABELS.get(group)
        if label and groups and groups[-1][0] == label:
            groups[-1][1].append(integration)
        else:
            groups.append((label or SHORT_LABELS.get(integration.key, integration.label), [integration]))
    return groups


def switch_states(mo_ids: list[int]) -> dict[int, list[SwitchState]]:
    """Every integration's state for many МО in one query, in INTEGRATIONS order."""
    rows: dict[int, dict[str, MoIntegration]] = {mo_id: {} for mo_id in mo_ids}
    if mo_ids:
        for row in db.session.scalars(db.select(MoIntegration).where(MoIntegration.mo_id.in_(mo_ids))):
            rows[row.mo_id][row.key] = row
    result: dict[int, list[SwitchState]] = {}
    for mo_id, by_key in rows.items():
        states = []
        for integration in INTEGRATIONS:
            procs = [by_key.get(p) for p, _ in integration.procedures]
            present = [r for r in procs if r is not None]
            reason = next((r.reason for r in present if not r.enabled and r.reason), None)
            changed = max((r.changed_at for r in present if r.changed_at), default=None)
            states.append(SwitchState(integration, sum(1 for r in present if r.enabled), reason, changed))
        result[mo_id] = states
    return result


def mo_list(query: str = "") -> list[Mo]:
    """МО the user may administer, optionally filtered by name, registry number or F003."""
    stmt = scoped(db.select(Mo).order_by(Mo.short_name, Mo.id), Mo.id)
    query = (query or "").strip()
    if query:
        stmt = stmt.where(
            or_(
                contains_ci(Mo.short_name, query),
                contains_ci(Mo.name, query),
                Mo.registry_number.startswith(query, autoescape=True),
                Mo.f003_code.startswith(query, autoescape=True),
            )
        )
    return list(db.session.scalars(stmt))


def toggle_integration(mo: Mo, integration_key: str, enabled: bool, reason: str | None) -> str:
    """Switch an integration for an МО after the checks; returns the message for the user."""
    integration = INTEGRATIONS_BY_KEY.get(integration_key)
    if integration is None:
        raise AdminError("Неизвестная интеграция.")
    reason = " ".join((reason or "").split()) or None
    if reason and len(reason) > 300:
        raise AdminError("Причина — не длиннее 300 символов.")
    if not enabled and integration.key == "vimis" and not reason:
        raise AdminError(f"ВИМИС не выключен: укажите причину. {VIMIS_OFF_HINT}")
    state = switch_states([mo.id])[mo.id][INTEGRATIONS.index(integration)]
    if (enabled and state.full) or (not enabled and state.on == 0):
        word = "включена" if enabled else "выключена"
        return f"{mo.short_name}: интеграция «{integration.label}» уже {word}."
    set_integration(mo, integration.key, enabled, None if enabled else reason)
    db.session.flush()
    word = "включена" if enabled else "выключена"
    return f"{mo.short_name}: интеграция «{integration.label}» {word}."


def mo_staff_counts(mo_id: int) -> dict[str, int]:
    return dict(
        db.session.execute(
            db.select(Staff.category, func.count()).where(Staff.mo_id == mo_id).group_by(Staff.category)
        ).all()
    )


# --- settings ---------------------------------------------------------------------------------


@dataclass
class SettingRow:
    """One setting on a form: what is in force and what the user typed back (never a secret)."""

    definition: SettingDef
    value: str  # shown in the input; "" for secrets
    is_set: bool  # secrets: a value is stored
    error: str | None = None
    override: bool = False  # МО page: the МО has its own value
    inherited: str = ""  # МО page: the region's value (secrets: "")


def setting_groups(
    mo_id: int | None = None, submitted: dict[str, str] | None = None, errors: dict[str, str] | None = None
) -> list[tuple[str, list[SettingRow]]]:
    """Settings grouped as registered; for an МО only those that may be overridden."""
    errors = errors or {}
    overrides = {}
    if mo_id is not None:
        overrides = {
            row.key: row.value for row in db.session.scalars(db.select(Setting).where(Setting.mo_id == mo_id))
        }
    groups: dict[str, list[SettingRow]] = {}
    for definition in SETTINGS.values():
        if mo_id is not None and not definition.per_mo:
            continue
        key = definition.key
        secret = definition.kind == "secret"
        if mo_id is None:
            current = get_setting(key)
            row = SettingRow(definition, "" if secret else current, bool(current))
        else:
            own = overrides.get(key)
            inherited = get_setting(key)
            row = SettingRow(
                definition,
                "" if secret else (own or ""),
                bool(own) if secret else own is not None,
                override=own is not None,
                # a secret's value is never shown, only whether the region has one
                inherited=("задан" if inherited else "не задан") if secret else inherited,
            )
        if submitted is not None and not secret and key in submitted:
            row.value = submitted[key]
        row.error = errors.get(key)
        groups.setdefault(definition.group, []).append(row)
    return list(groups.items())


def save_settings(form: Any, mo_id: int | None = None) -> tuple[dict[str, str], int]:
    """Validate every field first; store only when all are valid. Returns (errors, changed count).

    Secrets: an empty input keeps the stored value, «очистить» removes it. On an МО page an
    empty input removes the МО's own value, so the region's applies again.
    """
    errors: dict[str, str] = {}
    planned: list[tuple[str, str]] = []
    for definition in SETTINGS.values():
        if mo_id is not None and not definition.per_mo:
            continue
        key = definition.key
        own = None
        if mo_id is not None:
            own = db.session.scalar(
                db.select(Setting.value).where(Setting.key == key, Setting.mo_id == mo_id)
            )
        current = get_setting(key) if mo_id is None else own
        if definition.kind == "secret":
            if form.get(f"{key}__clear"):
                if current:
                    planned.append((key, ""))
                continue
            raw = (form.get(key) or "").strip()
            if not raw:
                continue
            value, error = clean_setting(definition, raw)
        else:
            if key not in form:
                continue  # not on this form: leave it as it is
            raw = (form.get(key) or "").strip()
            if mo_id is not None and raw == "":
                if own is not None:
                    planned.append((key, ""))
                continue
            value, error = clean_setting(definition, raw)
        if error:
            errors[key] = error
        elif value != current:
            planned.append((key, value))
    if errors:
        return errors, 0
    changed = sum(1 for key, value in planned if set_setting(key, value, mo_id))
    db.session.flush()
    return {}, changed


# --- certificates -----------------------------------------------------------------------------


USER_CERTIFICATE_PURPOSES = frozenset({"doctor", "accountant"})  # a person's signature, not the МО's


def certificate_list(mo_id: int | None = None, purpose: str | None = None) -> list[Certificate]:
    stmt = scoped(db.select(Certificate).options(joinedload(Certificate.mo)), Certificate.mo_id)
    if mo_id is not None:
        stmt = stmt.where(Certificate.mo_id == mo_id)
    if purpose:
        stmt = stmt.where(Certificate.purpose == purpose)
    return list(db.session.scalars(stmt.order_by(Certificate.valid_to, Certificate.id)))


def users_by_id(ids: list[int | None]) -> dict[int, User]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {u.id: u for u in db.session.scalars(db.select(User).where(User.id.in_(wanted)))}


def add_certificate(
    purpose: str, mo_id: int | None, user_id: int | None, cert_data: bytes | str, key_data: bytes | str | None
) -> tuple[Certificate | None, dict[str, str]]:
    """Parse and store an uploaded certificate (and key); errors by field, nothing stored on error.

    The caller has already checked that the user may act for `mo_id` (МО scoping).
    """
    errors: dict[str, str] = {}
    if purpose not in CERTIFICATE_PURPOSES:
        errors["purpose"] = "Выберите назначение сертификата."
    needs_user = purpose in USER_CERTIFICATE_PURPOSES
    owner_user = db.session.get(User, user_id) if user_id else None
    if user_id and owner_user is None:
        errors["user"] = "Пользователь не найден."
    elif needs_user and owner_user is None:
        errors["user"] = (
            f"Для назначения «{CERTIFICATE_PURPOSES[purpose]}» выберите пользователя — владельца подписи."
        )
    elif owner_user is not None and not needs_user and purpose in CERTIFICATE_PURPOSES:
        errors["user"] = "Пользователь указывается только для подписи врача или бухгалтера."
    elif owner_user is not None:
        if mo_id is None:
            mo_id = owner_user.mo_id
        if owner_user.mo_id != mo_id:
            errors["user"] = "Пользователь должен относиться к выбранной МО."
    if mo_id is not None and db.session.get(Mo, mo_id) is None:
        errors["mo"] = "МО не найдена."
    parsed = None
    key_pem = None
    try:
        parsed = parse_certificate(cert_data)
    except CertificateError as exc:
        errors["cert"] = str(exc)
    if parsed is not None and key_data:
        try:
            key_pem = check_private_key(key_data, parsed)
        except CertificateError as exc:
            errors["key"] = str(exc)
    if parsed is not None and not errors:
        duplicate = db.session.scalar(
            db.select(Certificate.id).where(
                Certificate.serial == parsed.serial,
                Certificate.issuer == parsed.issuer[:500],
                Certificate.purpose == purpose,
                Certificate.mo_id.is_(None) if mo_id is None else Certificate.mo_id == mo_id,
                Certificate.user_id.is_(None) if user_id is None else Certificate.user_id == user_id,
            )
        )
        if duplicate:
            errors["cert"] = "Этот сертификат уже загружен для этого владельца и назначения."
    if errors or parsed is None:
        return None, errors
    cert = Certificate(
        purpose=purpose,
        mo_id=mo_id,
        user_id=owner_user.id if owner_user else None,
        subject=parsed.subject[:500],
        issuer=parsed.issuer[:500],
        serial=parsed.serial[:100],
        valid_from=parsed.valid_from,
        valid_to=parsed.valid_to,
        cert_pem=parsed.pem,
        key_pem=key_pem,
    )
    db.session.add(cert)
    db.session.flush()
    owner_mo = db.session.get(Mo, mo_id) if mo_id else None
    owner = (
        f"пользователь {owner_user.login}" if owner_user else (owner_mo.short_name if owner_mo else "регион")
    )
    audit(
        "certificate.upload",
        f"Загружен сертификат «{CERTIFICATE_PURPOSES[purpose]}» ({owner}): {parsed.subject}",
        obj=cert,
        mo_id=mo_id,
        details={
            "purpose": purpose,
            "subject": parsed.subject,
            "serial": parsed.serial,
            "valid_from": parsed.valid_from.isoformat(),
            "valid_to": parsed.valid_to.isoformat(),
            "user": owner_user.login if owner_user else None,
            "key": key_pem is not None,
        },
    )
    return cert, {}


def ensure_demo_certificate(
    purpose: str, common_name: str, mo_id: int | None = None, user_id: int | None = None
) -> bool:
    """Give the demo a working key: a self-signed RSA certificate unless a valid one exists.

    Production loads real (GOST) certificates through the certificates page instead.
    """
    from portal.crypto import generate_demo_certificate

    today = date.today()
    exists = db.session.scalar(
        db.select(Certificate.id).where(
            Certificate.purpose == purpose,
            Certificate.key_pem.is_not(None),
            Certificate.valid_to >= today,
            Certificate.mo_id.is_(None) if mo_id is None else Certificate.mo_id == mo_id,
            Certificate.user_id.is_(None) if user_id is None else Certificate.user_id == user_id,
        )
    )
    if exists:
        return False
    cert_pem, key_pem = generate_demo_certificate(common_name)
    cert, errors = add_certificate(purpose, mo_id, user_id, cert_pem, key_pem)
    if cert is None:
        raise ValueError(f"демо-сертификат не создан: {errors}")
    return True


class NoCertificate(Exception):
    """No valid certificate with a private key for a purpose: the Russian message says which."""


_keys: dict[int, Any] = {}


def valid_certificate(purpose: str, mo_id: int | None, *, with_key: bool = True) -> Certificate:
    """The МО's own certificate of `purpose` (with its key), else the region's; valid today.
    NoCertificate names what to add when there is none."""
    today = date.today()
    query = db.select(Certificate).where(
        Certificate.purpose == purpose, (Certificate.mo_id == mo_id) | Certificate.mo_id.is_(None)
    )
    if with_key:
        query = query.where(Certificate.key_pem.is_not(None))
    rows = db.session.scalars(query.order_by(Certificate.mo_id.is_(None), Certificate.valid_to.desc())).all()
    valid = [c for c in rows if c.valid_from <= today <= c.valid_to]
    if not valid:
        detail = (
            f" (сертификат «{rows[0].subject}» действовал до {rows[0].valid_to:%d.%m.%Y})" if rows else ""
        )
        raise NoCertificate(
            f"Нет действующего сертификата «{CERTIFICATE_PURPOSES.get(purpose, purpose)}»"
            + (" с закрытым ключом" if with_key else "")
            + detail
            + ": добавьте его в разделе «Администрирование → Сертификаты»"
        )
    return valid[0]


def key_of(cert: Certificate) -> Any:
    """The signing key of a certificate row, parsed once while its PEM is unchanged."""
    from portal.crypto import load_signing_key

    key = _keys.get(cert.id)
    if key is None or key.cert_pem != cert.cert_pem:
        key = _keys[cert.id] = load_signing_key(cert.cert_pem, cert.key_pem)
    return key


def signing_key(purpose: str, mo_id: int | None) -> Any:
    """The key of `valid_certificate(purpose, mo_id)`."""
    return key_of(valid_certificate(purpose, mo_id))


def delete_certificate(cert: Certificate) -> None:
    audit(
        "certificate.delete",
        f"Удалён сертификат «{CERTIFICATE_PURPOSES.get(cert.purpose, cert.purpose)}»: {cert.subject}",
        obj=cert,
        mo_id=cert.mo_id,
        details={
            "purpose": cert.purpose,
            "subject": cert.subject,
            "serial": cert.serial,
            "valid_to": cert.valid_to.isoformat(),
        },
    )
    db.session.delete(cert)
    db.session.flush()


# --- users ------------------------------------------------------------------------------------


@dataclass
class UsersPage:
    rows: list[User]
    next_after: str | None


def users_page(
    query: str, role: str | None, mo_id: int | None, active: str | None, after: str | None, limit: int
) -> UsersPage:
    """Users the current user may manage, by login, keyset-paginated on the login."""
    stmt = scoped(db.select(User).options(joinedload(User.mo), joinedload(User.staff)), User.mo_id)
    query = (query or "").strip()
    if query:
        stmt = stmt.where(
            or_(User.login.startswith(query.lower(), autoescape=True), contains_ci(User.full_name, query))
        )
    if role:
        stmt = stmt.where(User.role == role)
    if mo_id is not None:
        stmt = stmt.where(User.mo_id == mo_id)
    if active in ("1", "0"):
        stmt = stmt.where(User.active.is_(active == "1"))
    if after:
        stmt = stmt.where(User.login > after)
    rows = list(db.session.scalars(stmt.order_by(User.login).limit(limit + 1)))
    next_after = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_after = rows[-1].login
    return UsersPage(rows, next_after)


def grantable_roles(actor: Any) -> dict[str, str]:
    """An МО administrator cannot make anyone a central administrator."""
    return {k: v for k, v in ROLES.items() if actor.is_central or k != CENTRAL_ADMIN}


def staff_choices(mo_id: int | None) -> list[Staff]:
    if mo_id is None:
        return []
    return list(
        db.session.scalars(
            db.select(Staff).where(Staff.mo_id == mo_id).order_by(Staff.last_name, Staff.first_name, Staff.id)
        )
    )


def _user_fields(form: Any, actor: Any, target: User | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Checked values of the fields shared by «create» and «edit»."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    values["full_name"], error = clean_full_name(form.get("full_name", ""))
    if error:
        errors["full_name"] = error
    role = (form.get("role") or "").strip()
    if role not in ROLES:
        errors["role"] = "Выберите роль."
    elif role == CENTRAL_ADMIN and not actor.is_central and (target is None or target.role != CENTRAL_ADMIN):
        errors["role"] = "Администратор МО не может назначать роль «Администратор ЦОД»."
    elif target is not None and target.id == actor.id and role != target.role:
        errors["role"] = "Нельзя изменить собственную роль."
    values["role"] = role
    own_mo = visible_mo_id(actor)
    mo_id = clean_int(form.get("mo"))
    if own_mo is not None:
        if mo_id is None:
            mo_id = target.mo_id if target is not None else own_mo
        if mo_id != own_mo:
            errors["mo"] = (
                "Нельзя перевести пользователя в другую МО."
                if target is not None
                else "Администратор МО заводит пользователей только своей МО."
            )
    elif mo_id is not None and db.session.get(Mo, mo_id) is None:
        errors["mo"] = "МО не найдена."
    elif mo_id is None and role != CENTRAL_ADMIN:
        errors["mo"] = "Укажите МО пользователя."
    values["mo_id"] = mo_id
    staff_id = clean_int(form.get("staff"))
    if staff_id is not None:
        staff = db.session.get(Staff, staff_id)
        if staff is None or staff.mo_id != mo_id:
            errors["staff"] = "Сотрудник должен работать в МО пользователя."
    values["staff_id"] = staff_id
    values["active"] = bool(form.get("active"))
    if target is not None and target.id == actor.id and not values["active"]:
        errors["active"] = "Нельзя заблокировать собственную учётную запись."
    return values, errors


def create_user(form: Any, actor: Any) -> tuple[User | None, dict[str, str]]:
    values, errors = _user_fields(form, actor, None)
    login, error = clean_login(form.get("login", ""))
    if error:
        errors["login"] = error
    elif db.session.scalar(db.select(User.id).where(func.lower(User.login) == login)):
        errors["login"] = f"Логин «{login}» уже занят."
    error = clean_password(form.get("password", ""), form.get("password2", ""))
    if error:
        errors["password"] = error
    if errors:
        return None, errors
    user = User(login=login, **values)
    user.set_password(form.get("password", ""))
    db.session.add(user)
    db.session.flush()
    audit(
        "user.create",
        f"Создан пользователь {login} ({ROLES[user.role]})",
        obj=user,
        mo_id=user.mo_id,
        details={
            "login": login,
            "full_name": user.full_name,
            "role": user.role,
            "mo_id": user.mo_id,
            "staff_id": user.staff_id,
            "active": user.active,
        },
    )
    return user, {}


def update_user(user: User, form: Any, actor: Any) -> tuple[list[str], dict[str, str]]:
    """Apply the edit form; returns (names of changed fields, errors)."""
    values, errors = _user_fields(form, actor, user)
    if errors:
        return [], errors
    labels = {"full_name": "ФИО", "role": "роль", "mo_id": "МО", "staff_id": "сотрудник", "active": "активен"}
    changes = {}
    for name, new in values.items():
        old = getattr(user, name)
        if old != new:
            changes[name] = [old, new]
            setattr(user, name, new)
    if changes:
        db.session.flush()
        audit(
            "user.update",
            f"Изменён пользователь {user.login}: " + ", ".join(labels[f] for f in changes),
            obj=user,
            mo_id=user.mo_id,
            details={"login": user.login, "changes": changes},
        )
    return [labels[f] for f in changes], {}


def reset_password(user: User, password: str, confirm: str) -> str | None:
    """Set a new password; returns an error message instead when it is unacceptable."""
    error = clean_password(password, confirm)
    if error:
        return error
    user.set_password(password)
    audit(
        "user.password",
        f"Пароль пользователя {user.login} изменён администратором",
        obj=user,
        mo_id=user.mo_id,
        details={"login": user.login},
    )
    db.session.flush()
    return None


def set_user_active(user: User, active: bool, actor: Any) -> str:
    if not active and user.id == actor.id:
        raise AdminError("Нельзя заблокировать собственную учётную запись.")
    if user.active == active:
        return f"Пользователь {user.login} уже {'активен' if active else 'заблокирован'}."
    user.active = active
    audit(
        "user.unblock" if active else "user.block",
        f"Пользователь {user.login} {'разблокирован' if active else 'заблокирован'}",
        obj=user,
        mo_id=user.mo_id,
        details={"login": user.login},
    )
    db.session.flush()
    return f"Пользователь {user.login} {'разблокирован' if active else 'заблокирован'}."


# --- API tokens -------------------------------------------------------------------------------


def token_list() -> list[ApiToken]:
    return list(
        db.session.scalars(
            db.select(ApiToken)
            .options(joinedload(ApiToken.created_by))
            .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
        )
    )


def issue_token(name: str, actor: Any) -> tuple[ApiToken, str]:
    """A new intake token: the plain value is returned once, only its sha256 is stored."""
    name = " ".join((name or "").split())
    if not name:
        raise AdminError("Укажите название токена (например, «МИС РАМ — выгрузка»).")
    if len(name) > 120:
        raise AdminError("Название токена — не длиннее 120 символов.")
    plain = secrets.token_urlsafe(32)
    token = ApiToken(
        name=name, token_hash=hash_token(plain), prefix=plain[:8], created_by_id=getattr(actor, "id", None)
    )
    db.session.add(token)
    db.session.flush()
    audit(
        "token.issue",
        f"Выпущен токен API «{name}» ({token.prefix}…)",
        obj=token,
        details={"name": name, "prefix": token.prefix},
    )
    return token, plain


def revoke_token(token: ApiToken) -> str:
    if token.revoked_at is not None:
        return f"Токен «{token.name}» уже отозван."
    token.revoked_at = utcnow()
    audit(
        "token.revoke",
        f"Отозван токен API «{token.name}» ({token.prefix}…)",
        obj=token,
        details={"name": token.name, "prefix": token.prefix},
    )
    db.session.flush()
    return f"Токен «{token.name}» отозван: запросы с ним больше не принимаются."


# --- audit log --------------------------------------------------------------------------------


ACTION_LABELS: dict[str, str] = {
    "auth.login": "Вход в портал",
    "auth.logout": "Выход из портала",
    "integration.switch": "Переключение интеграции",
    "setting.change": "Изменение настройки",
    "certificate.upload": "Загрузка сертификата",
    "certificate.delete": "Удаление сертификата",
    "user.create": "Создание пользователя",
    "user.update": "Изменение пользователя",
    "user.password": "Смена пароля",
    "user.block": "Блокировка пользователя",
    "user.unblock": "Разблокировка пользователя",
    "token.issue": "Выпуск токена API",
    "token.revoke": "Отзыв токена API",
}
ACTION_GROUPS: dict[str, str] = {
    "auth.*": "Вход и выход",
    "integration.*": "Интеграции МО",
    "setting.*": "Настройки",
    "certificate.*": "Сертификаты",
    "user.*": "Пользователи",
    "token.*": "Токены API",
}
OBJECT_LABELS: dict[str, str] = {
    "Mo": "МО",
    "User": "Пользователь",
    "Certificate": "Сертификат",
    "ApiToken": "Токен API",
    "Setting": "Настройка",
}


@dataclass
class AuditFilters:
    date_from: date | None = None
    date_to: date | None = None
    login: str = ""
    action: str = ""
    mo_id: int | None = None
    q: str = ""
    errors: list[str] = field(default_factory=list)


def _parse_date(raw: str | None, label: str, errors: list[str]) -> date | None:
    try:
        return parse_date(raw)
    except ValueError:
        errors.append(f"Дата «{label}» не распознана: укажите её как ДД.ММ.ГГГГ.")
        return None


def parse_audit_filters(args: Any) -> AuditFilters:
    errors: list[str] = []
    filters = AuditFilters(
        date_from=_parse_date(args.get("from"), "с", errors),
        date_to=_parse_date(args.get("to"), "по", errors),
        login=(args.get("login") or "").strip().lower(),
        action=(args.get("action") or "").strip(),
        mo_id=filter_mo_id(args.get("mo")),
        q=(args.get("q") or "").strip(),
        errors=errors,
    )
    if filters.date_from and filters.date_to and filters.date_from > filters.date_to:
        errors.append("Начало периода позже его конца: период не применён.")
        filters.date_from = filters.date_to = None
    return filters


@dataclass
class AuditPage:
    rows: list[AuditLog]
    next_before: int | None


def audit_page(filters: AuditFilters, before: int | None, limit: int) -> AuditPage:
    """Newest first, keyset on the id (no OFFSET), limited to the user's МО unless central."""
    stmt = scoped(db.select(AuditLog), AuditLog.mo_id)
    if filters.mo_id is not None:
        stmt = stmt.where(AuditLog.mo_id == filters.mo_id)
    if filters.date_from:
        stmt = stmt.where(AuditLog.at >= datetime.combine(filters.date_from, time.min))
    if filters.date_to:
        stmt = stmt.where(AuditLog.at < datetime.combine(filters.date_to + timedelta(days=1), time.min))
    if filters.login:
        stmt = stmt.where(AuditLog.login == filters.login)
    if filters.action.endswith(".*"):
        stmt = stmt.where(AuditLog.action.startswith(filters.action[:-1], autoescape=True))
    elif filters.action:
        stmt = stmt.where(AuditLog.action == filters.action)
    if filters.q:
        stmt = stmt.where(contains_ci(AuditLog.summary, filters.q))
    if before is not None:
        stmt = stmt.where(AuditLog.id < before)
    rows = list(db.session.scalars(stmt.order_by(AuditLog.id.desc()).limit(limit + 1)))
    next_before = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_before = rows[-1].id
    return AuditPage(rows, next_before)
