"""МО scoping: the one place that limits queries on МО-owned data to what a user may see (X-3).

Every query on МО-owned rows goes through `scoped`; every object loaded by id through
`get_scoped`; every МО id taken from a form or URL through `check_mo`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import abort
from flask_login import current_user
from sqlalchemy import Select, false

from portal.clinical.models import Mo
from portal.extensions import db

T = TypeVar("T")


def _user(user: Any = None) -> Any:
    return user if user is not None else current_user


def visible_mo_id(user: Any = None) -> int | None:
    """None for a central administrator (every МО), else the user's own МО."""
    user = _user(user)
    return None if user.is_central else user.mo_id


def scoped(stmt: Select, mo_column: Any, user: Any = None) -> Select:
    """Limit a select to the user's МО unless they are a central administrator.

    A non-central user without an МО sees nothing rather than everything.
    """
    user = _user(user)
    if user.is_central:
        return stmt
    return stmt.where(false()) if user.mo_id is None else stmt.where(mo_column == user.mo_id)


def may_see_mo(mo_id: int | None, user: Any = None) -> bool:
    user = _user(user)
    if user.is_central:
        return True
    return mo_id is not None and user.mo_id is not None and mo_id == user.mo_id


def check_mo(mo_id: int | None, user: Any = None) -> None:
    """403 unless the user may see or change data of that МО."""
    if not may_see_mo(mo_id, user):
        abort(403, description="Данные другой медицинской организации недоступны.")


def get_scoped(model: type[T], ident: Any, user: Any = None, mo_attr: str = "mo_id") -> T:
    """Load one МО-owned row by primary key: 404 if absent, 403 if of another МО."""
    obj = db.session.get(model, ident)
    if obj is None:
        abort(404)
    check_mo(getattr(obj, mo_attr), user)
    return obj


def mo_choices(user: Any = None) -> list[Mo]:
    """The МО a user may pick in a filter: all for ЦОД, only their own otherwise."""
    return list(db.session.scalars(scoped(db.select(Mo).order_by(Mo.short_name), Mo.id, user)))


def filter_mo_id(raw: str | None, user: Any = None) -> int | None:
    """The МО of a filter: a user's own МО is forced; ЦОД may pick any or none."""
    own = visible_mo_id(user)
    if own is not None:
        return own
    try:
        return int(raw) if raw else None
    except ValueError:
        return None
