"""Russian personal identifiers: СНИЛС and ЕНП (единый номер полиса ОМС) with their check digits."""

from __future__ import annotations

import re

_NON_DIGITS = re.compile(r"\D")


def digits(value: str | None) -> str:
    return _NON_DIGITS.sub("", value or "")


def snils_check_number(first9: str) -> str:
    """Control number of a СНИЛС from its first nine digits (ПФР rule)."""
    total = sum(int(d) * w for d, w in zip(first9, range(9, 0, -1), strict=True))
    if total < 100:
        return f"{total:02d}"
    if total in (100, 101):
        return "00"
    rest = total % 101
    return "00" if rest == 100 else f"{rest:02d}"


def snils_is_valid(value: str | None) -> bool:
    """Checksum is verified only above 001-001-998, as the rule says."""
    d = digits(value)
    if len(d) != 11:
        return False
    if int(d[:9]) <= 1001998:
        return True
    return snils_check_number(d[:9]) == d[9:]


def format_snils(value: str | None) -> str:
    """XXX-XXX-XXX XX, the form ТФОМС, ФСС and the registries show."""
    d = digits(value)
    if len(d) != 11:
        return value or ""
    return f"{d[0:3]}-{d[3:6]}-{d[6:9]} {d[9:11]}"


def enp_check_digit(first15: str) -> str:
    """Control digit of a 16-digit ЕНП (ФОМС rule).

    Digits in odd places counting from the right form a number (read right to left) that is
    doubled; the digits in even places, read the same way, are written before it; the control
    digit complements the sum of all the digits of the result to a multiple of ten.
    """
    reversed_digits = first15[::-1]
    odd = reversed_digits[0::2]
    even = reversed_digits[1::2]
    composed = even + str(int(odd) * 2)
    total = sum(int(c) for c in composed)
    return str((10 - total % 10) % 10)


def enp_is_valid(value: str | None) -> bool:
    d = digits(value)
    return len(d) == 16 and enp_check_digit(d[:15]) == d[15]
