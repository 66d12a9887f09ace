"""What every filtered list page shares: refusals of a filter value, row ids and the «Показать ещё»
cursor from the URL, dates people type."""

from __future__ import annotations

from datetime import date, datetime

from portal.dates import parse_date

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database


class FilterError(ValueError):
    """A filter value the page cannot use; the message is shown to the user as is."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def parse_id(raw: str | None, message: str) -> int:
    """A row id from the URL or a form; FilterError(message) unless it is one."""
    try:
        value = int(raw or "")
    except ValueError:
        raise FilterError(message) from None
    if not 0 < value <= MAX_ID:
        raise FilterError(message)
    return value


def parse_cursor(raw: str | None) -> tuple[datetime, int] | None:
    """«Показать ещё»: "<iso moment>|<id>" of the last row shown, None for the first page."""
    if not raw:
        return None
    try:
        at_text, ident = raw.split("|", 1)
        return datetime.fromisoformat(at_text), parse_id(ident, "")
    except ValueError:
        raise FilterError("Некорректный параметр страницы.") from None


def filter_date(raw: str | None, default: date, label: str) -> date:
    """A date filter («С», «По»): the default when empty, FilterError naming the field when not a date."""
    try:
        parsed = parse_date(raw)
    except ValueError:
        raise FilterError(f"{label} «{(raw or '').strip()}» должна быть в формате ГГГГ-ММ-ДД или ДД.ММ.ГГГГ.") from None
    return default if parsed is None else parsed
