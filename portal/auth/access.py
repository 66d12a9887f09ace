"""View guards: capability checks with the Russian 403 page."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort
from flask_login import current_user, login_required


def requires(capability: str) -> Callable:
    """Login required, then the capability; 403 with a Russian page otherwise."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.can(capability):
                abort(403, description="Вашей роли этот раздел недоступен.")
            return view(*args, **kwargs)

        wrapped.capability = capability  # type: ignore[attr-defined]
        return wrapped

    return decorator
