"""The «Текущий срок» text of the seeds (E-4) and the «Срок» column (V-7), computed in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pytest

from portal.clinical.gestation import format_weeks_days, gestational_age_text, gestational_weeks, plural

REGISTERED = date(2026, 5, 4)


@dataclass
class Preg:
    registered_on: date = REGISTERED
    weeks_at_registration: int = 8
    days_at_registration: int = 0
    outcome: str | None = None
    outcome_on: date | None = None


def on_term(weeks: int, days: int = 0, preg: Preg | None = None) -> date:
    """The calendar date on which a pregnancy registered at 8 weeks reaches weeks+days."""
    preg = preg or Preg()
    start = preg.weeks_at_registration * 7 + preg.days_at_registration
    return preg.registered_on + timedelta(days=weeks * 7 + days - start)


def test_current_term_as_in_the_seed():
    assert gestational_age_text(Preg(), on_term(32, 6)) == "32 недели 6 дней"


def test_whole_weeks_have_no_days():
    assert gestational_age_text(Preg(), on_term(20)) == "20 недель"


def test_after_birth_the_term_of_the_birth_is_shown():
    preg = Preg(outcome="birth", outcome_on=on_term(41, 2))
    later = preg.outcome_on + timedelta(days=30)
    assert gestational_age_text(preg, later) == "после родоразрешения в 41 неделя 2 дня"
    assert gestational_age_text(preg, preg.outcome_on) == "после родоразрешения в 41 неделя 2 дня"


def test_after_abortion():
    preg = Preg(outcome="abortion", outcome_on=on_term(10, 5))
    assert gestational_age_text(preg, preg.outcome_on + timedelta(days=3)) == "после прерывания в 10 недель 5 дней"


@pytest.mark.parametrize("outcome", ["miscarriage", "ectopic", "other"])
def test_after_another_outcome(outcome):
    preg = Preg(outcome=outcome, outcome_on=on_term(15, 2))
    assert gestational_age_text(preg, preg.outcome_on + timedelta(days=60)) == "после исхода в 15 недель 2 дня"


def test_before_the_outcome_date_the_running_term_is_shown():
    """A record of an exam made before the outcome still shows that day's term."""
    preg = Preg(outcome="birth", outcome_on=on_term(39, 4))
    assert gestational_age_text(preg, on_term(30, 1)) == "30 недель 1 день"


def test_registration_days_count():
    preg = Preg(weeks_at_registration=9, days_at_registration=3)
    assert gestational_age_text(preg, REGISTERED) == "9 недель 3 дня"
    assert gestational_age_text(preg, REGISTERED + timedelta(days=4)) == "10 недель"


def test_today_is_the_default():
    preg = Preg(registered_on=date.today() - timedelta(days=10), weeks_at_registration=12)
    assert gestational_age_text(preg) == "13 недель 3 дня"


@pytest.mark.parametrize(
    ("n", "word"),
    [
        (1, "неделя"), (2, "недели"), (3, "недели"), (4, "недели"), (5, "недель"), (10, "недель"),
        (11, "недель"), (12, "недель"), (13, "недель"), (14, "недель"), (15, "недель"), (20, "недель"),
        (21, "неделя"), (22, "недели"), (24, "недели"), (25, "недель"), (31, "неделя"), (41, "неделя"),
        (42, "недели"), (111, "недель"), (112, "недель"), (101, "неделя"),
    ],
)
def test_plural_of_weeks(n, word):
    assert plural(n, "неделя", "недели", "недель") == word


@pytest.mark.parametrize(
    ("total_days", "text"),
    [
        (7 + 1, "1 неделя 1 день"),
        (2 * 7 + 2, "2 недели 2 дня"),
        (3 * 7 + 3, "3 недели 3 дня"),
        (4 * 7 + 4, "4 недели 4 дня"),
        (5 * 7 + 5, "5 недель 5 дней"),
        (6 * 7 + 6, "6 недель 6 дней"),
        (11 * 7, "11 недель"),
        (12 * 7 + 1, "12 недель 1 день"),
        (13 * 7 + 2, "13 недель 2 дня"),
        (14 * 7 + 5, "14 недель 5 дней"),
        (21 * 7 + 1, "21 неделя 1 день"),
        (22 * 7 + 3, "22 недели 3 дня"),
        (0, "0 недель"),
        (3, "0 недель 3 дня"),
    ],
)
def test_weeks_and_days_text(total_days, text):
    assert format_weeks_days(total_days) == text


def test_negative_term_is_not_shown_as_negative():
    """An event dated before the pregnancy began (bad source data) never reads «-2 недели»."""
    assert gestational_age_text(Preg(), REGISTERED - timedelta(days=80)) == "0 недель"


def test_gestational_weeks_on_a_date():
    preg = Preg()
    assert gestational_weeks(preg, on_term(12, 6)) == 12
    assert gestational_weeks(preg, on_term(13, 0)) == 13
    assert gestational_weeks(preg, REGISTERED) == 8


def test_gestational_weeks_stop_at_the_outcome():
    preg = Preg(outcome="birth", outcome_on=on_term(39, 5))
    assert gestational_weeks(preg, on_term(36, 2)) == 36
    assert gestational_weeks(preg, preg.outcome_on) == 39
    assert gestational_weeks(preg, preg.outcome_on + timedelta(days=40)) == 39


def test_gestational_weeks_never_negative():
    assert gestational_weeks(Preg(), REGISTERED - timedelta(days=100)) == 0
