"""The audit log: who changed what, when and from where (issue 2, item 8)."""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from flask_login import current_user

from portal.admin.models import AuditLog
from portal.extensions import db


def client_ip() -> str | None:
    if not has_request_context():
        return None
    return request.remote_addr


def audit(
    action: str,
    summary: str,
    *,
    obj: Any = None,
    mo_id: int | None = None,
    details: dict[str, Any] | None = None,
    user: Any = None,
) -> AuditLog:
    """Append an audit entry in the current transaction (committed with the change itself)."""
    user = user if user is not None else (current_user if has_request_context() else None)
    authenticated = bool(user is not None and getattr(user, "is_authenticated", False))
    entry = AuditLog(
        user_id=user.id if authenticated else None,
        login=user.login if authenticated else None,
        ip=client_ip(),
        action=action,
        object_type=type(obj).__name__ if obj is not None else None,
        object_id=str(getattr(obj, "id", "")) if obj is not None else None,
        mo_id=mo_id if mo_id is not None else getattr(obj, "mo_id", None),
        summary=summary[:500],
        details=details or {},
    )
    db.session.add(entry)
    return entry
