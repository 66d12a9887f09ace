"""Checks of administrators' form input: each returns a clean value or a Russian message.

Plain functions rather than WTForms classes: the settings form is built from the registry at
run time, and every page renders its own fields; CSRF is checked globally by Flask-WTF.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from portal.admin.registry import SettingDef

MAX_SECONDS = 1_000_000
MAX_TEXT = 500
MIN_PASSWORD = 8
LOGIN_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_setting(definition: SettingDef, raw: str) -> tuple[str, str | None]:
    """(value, error) for one setting of the given kind; `raw` is already stripped."""
    kind = definition.kind
    if len(raw) > MAX_TEXT:
        return raw, f"Не длиннее {MAX_TEXT} символов."
    if _CONTROL.search(raw):
        return raw, "Значение содержит недопустимые символы."
    if kind == "url":
        if not raw:
            return raw, "Укажите адрес сервиса."
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in raw:
            return raw, "Адрес должен начинаться с http:// или https:// и содержать имя сервера."
        try:
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            return raw, "Порт в адресе должен быть числом от 1 до 65535."
        return raw, None
    if kind == "seconds":
        if not raw.isdigit() or int(raw) <= 0:
            return raw, "Укажите целое положительное число секунд."
        if int(raw) > MAX_SECONDS:
            return raw, f"Не больше {MAX_SECONDS} секунд."
        return str(int(raw)), None
    if kind == "int":
        if not raw.isdigit():
            return raw, "Укажите целое неотрицательное число."
        return str(int(raw)), None
    if kind == "path":
        if ".." in raw.replace("\\", "/").split("/"):
            return raw, "Путь не должен содержать «..»."
        return raw, None
    if kind == "secret" and not raw:
        return raw, "Значение не может быть пустым: чтобы очистить, отметьте «очистить»."
    return raw, None


def clean_login(raw: str) -> tuple[str, str | None]:
    login = (raw or "").strip().lower()
    if not login:
        return login, "Укажите логин."
    if not LOGIN_RE.match(login):
        return login, (
            "Логин: от 3 до 64 символов — латинские буквы, цифры, точка, дефис и подчёркивание, "
            "начинается с буквы или цифры."
        )
    return login, None


def clean_password(password: str, confirm: str) -> str | None:
    """An error for an unacceptable new password, else None."""
    if len(password or "") < MIN_PASSWORD:
        return f"Пароль должен быть не короче {MIN_PASSWORD} символов."
    if password != confirm:
        return "Пароли не совпадают."
    return None


def clean_full_name(raw: str) -> tuple[str, str | None]:
    name = " ".join((raw or "").split())
    if not name:
        return name, "Укажите ФИО."
    if len(name) > 200:
        return name, "ФИО не длиннее 200 символов."
    return name, None


def clean_int(raw: str | None) -> int | None:
    """An id from a select; None for empty or junk (the caller decides if it is required)."""
    raw = (raw or "").strip()
    return int(raw) if raw.isdigit() else None
