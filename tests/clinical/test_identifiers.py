"""СНИЛС and ЕНП check digits: ВИМИС, ФСС and ТФОМС reject records whose numbers fail them."""

from __future__ import annotations

import random

import pytest

from portal.clinical.identifiers import (
    digits,
    enp_check_digit,
    enp_is_valid,
    format_snils,
    snils_check_number,
    snils_is_valid,
)


@pytest.mark.parametrize(
    ("first9", "check"),
    [
        ("112233445", "95"),  # sum below 100: the sum itself
        ("087654303", "00"),  # sum 202: 202 mod 101 = 0
        ("123456789", "64"),  # sum 165: 165 mod 101 = 64
        ("920000003", "00"),  # sum exactly 100
        ("920000004", "00"),  # sum exactly 101
        ("996000006", "00"),  # sum 201: remainder 100 is written as 00
        ("999999999", "01"),  # sum 405: 405 mod 101 = 1
    ],
)
def test_snils_check_number(first9, check):
    assert snils_check_number(first9) == check
    assert snils_is_valid(first9 + check)


@pytest.mark.parametrize("value", ["112-233-445 95", "11223344595", "112 233 445 95", "087-654-303 00"])
def test_known_valid_snils_in_any_notation(value):
    assert snils_is_valid(value)


@pytest.mark.parametrize("value", ["112-233-445 96", "112-233-445 59", "087-654-303 01", "123-456-789 00"])
def test_wrong_check_number_is_invalid(value):
    assert not snils_is_valid(value)


@pytest.mark.parametrize("value", [None, "", "112-233-445 9", "112-233-445 951", "абв-где-жзи 12"])
def test_malformed_snils_is_invalid(value):
    assert not snils_is_valid(value)


def test_numbers_up_to_001_001_998_are_not_checked():
    assert snils_is_valid("001-001-998 77")
    assert snils_is_valid("000-000-001 00")
    # The first number above the boundary is checked: 7 + 4 + 27 + 18 + 9 = 65.
    assert snils_is_valid("001-001-999 65")
    assert not snils_is_valid("001-001-999 00")


def test_any_single_digit_change_of_a_valid_snils_is_caught():
    valid = "11223344595"
    for position in range(9):
        for replacement in "0123456789":
            if replacement == valid[position]:
                continue
            changed = valid[:position] + replacement + valid[position + 1 :]
            assert not snils_is_valid(changed), changed


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("11223344595", "112-233-445 95"),
        ("112 233 445 95", "112-233-445 95"),
        ("112-233-445-95", "112-233-445 95"),
        ("00100199800", "001-001-998 00"),
        ("1122334459", "1122334459"),  # not eleven digits: shown as received
        (None, ""),
    ],
)
def test_format_snils(value, shown):
    assert format_snils(value) == shown


def test_digits_drops_separators():
    assert digits("112-233-445 95") == "11223344595"
    assert digits(None) == ""


def _luhn_check_digit(first15: str) -> str:
    """Independent restatement: the ФОМС rule is the Luhn algorithm over the 16 digits."""
    total = 0
    for position, char in enumerate(reversed(first15)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def test_enp_hand_worked_example():
    # Odd places from the right: 1,0,0,0,0,0,0,7 → 10000007 × 2 = 20000014; even places 0000007 go first;
    # digit sum of 000000720000014 is 14, so the control digit is 6.
    assert enp_check_digit("770000000000001") == "6"
    assert enp_is_valid("7700000000000016")
    assert not enp_is_valid("7700000000000015")


def test_enp_check_digit_round_trip_and_luhn():
    rng = random.Random(35)
    for _ in range(500):
        first15 = "".join(str(rng.randint(0, 9)) for _ in range(15))
        check = enp_check_digit(first15)
        assert check == _luhn_check_digit(first15)
        assert enp_is_valid(first15 + check)
        wrong = str((int(check) + rng.randint(1, 9)) % 10)
        assert not enp_is_valid(first15 + wrong)


@pytest.mark.parametrize("value", [None, "", "770000000000001", "77000000000000160", "77000000000000a6"])
def test_malformed_enp_is_invalid(value):
    assert not enp_is_valid(value)
