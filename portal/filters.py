"""What every filtered list page shares: refusals of a filter value, row ids and the «Показать ещё»
cursor from the URL, dates people type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import or_, tuple_

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


@dataclass
class KeysetPage:
    rows: list[Any]
    next_cursor: str | None  # «Показать ещё»: "<moment iso>|<id>" of the last row, None at the end


def newest_first(
    stmt: Any, moment: Any, ident: Any, after: tuple[datetime, int] | None, limit: int
) -> KeysetPage:
    """One keyset page of ORM rows, newest `moment` first, with the «Показать ещё» cursor of its
    last row. `moment` and `ident` are the columns; rows carry them by name."""
    from portal.extensions import db

    if after is not None:
        stmt = stmt.where(tuple_(moment, ident) < tuple_(*after))
    rows = list(db.session.scalars(stmt.order_by(moment.desc(), ident.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return KeysetPage(rows, None)
    rows = rows[:limit]
    last = rows[-1]
    return KeysetPage(rows, f"{getattr(last, moment.key).isoformat()}|{getattr(last, ident.key)}")


def contains_ci(column: Any, text: str) -> Any:
    """Case-insensitive substring match that also folds Cyrillic on SQLite (its LIKE folds ASCII only)."""
    from portal.extensions import db

    if db.session.get_bind().dialect.name == "postgresql":
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.ilike(f"%{escaped}%", escape="\\")
    variants = {text, text.lower(), text.upper(), text.capitalize(), text.title()}
    return or_(*(column.contains(v, autoescape=True) for v in variants))


ROWS_PER_PAGE = (10, 30, 50)  # «Количество строк» of the lists paged by number


def _positive(raw: Any, allowed: tuple[int, ...] | None, default: int, message: str) -> int:
    text = str(raw or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise FilterError(message) from None
    if (allowed is not None and value not in allowed) or not 0 < value < 1_000_000:
        raise FilterError(message)
    return value


def filter_paging(args: Mapping[str, Any]) -> tuple[int, int]:
    """«Количество строк» (`rows`: 10, 30 or 50) and the page number (`page`) of a numbered list."""
    per_page = _positive(
        args.get("rows"), ROWS_PER_PAGE, ROWS_PER_PAGE[0], "Количество строк: 10, 30 или 50."
    )
    return per_page, _positive(args.get("page"), None, 1, "Некорректный номер страницы.")


def page_count(total: int, per_page: int, page: int) -> tuple[int, int]:
    """(the page to show — the last one when asked for a page beyond it —, how many pages)."""
    pages = max(1, -(-total // per_page))
    return min(page, pages), pages


def filter_date(raw: str | None, default: date, label: str) -> date:
    """A date filter («С», «По»): the default when empty, FilterError naming the field when not a date."""
    try:
        parsed = parse_date(raw)
    except ValueError:
        raise FilterError(
            f"{label} «{(raw or '').strip()}» должна быть в формате ГГГГ-ММ-ДД или ДД.ММ.ГГГГ."
        ) from None
    return default if parsed is None else parsed


def filter_mo(args: Mapping[str, str], user: Any) -> int | None:
    """The «МО» filter: an МО user's own МО whatever the URL says; ЦОД chooses any existing one."""
    from portal.auth.scoping import filter_mo_id
    from portal.clinical.models import Mo
    from portal.extensions import db

    raw_mo = (args.get("mo") or "").strip()
    mo_id = filter_mo_id(raw_mo, user)
    if user.is_central and raw_mo:
        mo_id = parse_id(raw_mo, f"Некорректная МО «{raw_mo}».")
        if db.session.get(Mo, mo_id) is None:
            raise FilterError(f"МО с кодом {mo_id} не найдена.", 404)
    return mo_id


def filter_period(args: Mapping[str, str], today: date, default_days: int) -> tuple[date, date]:
    """«Период» (from, to): the last `default_days` days by default; the start not after the end."""
    date_from = filter_date(args.get("from"), today - timedelta(days=default_days), "Дата начала периода")
    date_to = filter_date(args.get("to"), today, "Дата окончания периода")
    if date_from > date_to:
        raise FilterError(f"Начало периода {date_from:%d.%m.%Y} позже его окончания {date_to:%d.%m.%Y}.")
    return date_from, date_to


def snils_digits(text: str) -> str | None:
    """The digits of a СНИЛС typed with or without «-» and spaces; None when it is not a number."""
    digits = text.replace("-", "").replace(" ", "")
    return digits if digits.isdigit() else None


def patient_match(text: str) -> list[Any] | None:
    """«Пациент» / «Поиск»: a СНИЛС (or its first digits), else prefixes of surname, name and
    patronymic in that order, as conditions on Patient; None when the text holds nothing to match."""
    from sqlalchemy import or_

    from portal.clinical.models import Patient

    digits = snils_digits(text)
    if digits is not None:
        return [Patient.snils.startswith(digits)]
    parts = [p for p in (p.replace("%", "").replace("_", "") for p in text.split()) if p]
    if not parts:
        return None
    columns = (Patient.last_name, Patient.first_name, Patient.middle_name)
    # names are stored capitalised and SQLite folds only ASCII case: match the stored form too
    return [
        or_(column.startswith(part[:1].upper() + part[1:]), column.ilike(part + "%"))
        for column, part in zip(columns, parts, strict=False)
    ]
