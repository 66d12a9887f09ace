"""Dates people type: the one parser every filter and form uses."""

from __future__ import annotations

from datetime import date, datetime

DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y")  # the browser's date input, and how people write it


def parse_date(raw: str | None) -> date | None:
    """None for an empty value; ValueError for text that is not a date in either format."""
    raw = (raw or "").strip()
    if not raw:
        return None
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(raw, fmt).date()
        except ValueError:
            continue
    raise ValueError(raw)
