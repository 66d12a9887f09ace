"""What a view needs to know of an htmx request."""

from __future__ import annotations

from flask import request


def hx_target() -> str | None:
    """The id of the element an htmx request will swap (its fragment), None for a full page."""
    return request.headers.get("HX-Target") if request.headers.get("HX-Request") else None
