"""Gestational age («срок беременности») as the seeds write it, computed in one place.

«32 недели 6 дней», «после родоразрешения в 41 неделя 2 дня», «после прерывания в 10 недель 5 дней».
"""

from __future__ import annotations

from datetime import date
from typing import Protocol

OUTCOME_PREFIX = {
    "birth": "после родоразрешения в",
    "abortion": "после прерывания в",
}
OTHER_OUTCOME_PREFIX = "после исхода в"


class PregnancyLike(Protocol):
    registered_on: date
    weeks_at_registration: int
    days_at_registration: int
    outcome: str | None
    outcome_on: date | None


def plural(n: int, one: str, few: str, many: str) -> str:
    """Russian plural form for a number: 1 неделя, 2 недели, 5 недель, 41 неделя."""
    if n % 10 == 1 and n % 100 != 11:
        return one
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return few
    return many


def format_weeks_days(total_days: int) -> str:
    weeks, days = divmod(max(total_days, 0), 7)
    text = f"{weeks} {plural(weeks, 'неделя', 'недели', 'недель')}"
    if days:
        text += f" {days} {plural(days, 'день', 'дня', 'дней')}"
    return text


def gestation_days(pregnancy: PregnancyLike, on: date) -> int:
    """Days of pregnancy on a date, from the term recorded at registration."""
    start = pregnancy.weeks_at_registration * 7 + (pregnancy.days_at_registration or 0)
    return start + (on - pregnancy.registered_on).days


def gestational_weeks(pregnancy: PregnancyLike, on: date) -> int:
    """Whole weeks on a date (the «Срок» column of the registries)."""
    end = pregnancy.outcome_on if pregnancy.outcome and pregnancy.outcome_on and on > pregnancy.outcome_on else on
    return max(gestation_days(pregnancy, end), 0) // 7


def gestational_age_text(pregnancy: PregnancyLike, on: date | None = None) -> str:
    """The term on a date (today by default); after the outcome, the term at which it ended."""
    on = on or date.today()
    if pregnancy.outcome and pregnancy.outcome_on and on >= pregnancy.outcome_on:
        prefix = OUTCOME_PREFIX.get(pregnancy.outcome, OTHER_OUTCOME_PREFIX)
        return f"{prefix} {format_weeks_days(gestation_days(pregnancy, pregnancy.outcome_on))}"
    return format_weeks_days(gestation_days(pregnancy, on))
