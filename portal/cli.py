"""`flask portal …` commands: demo data, import, users."""

from __future__ import annotations

from flask.cli import AppGroup

portal_cli = AppGroup("portal", help="Команды портала: демо-данные, импорт, пользователи.")

# Commands live beside what they do; importing registers them on `portal_cli`.
from portal.clinical import demo, importer  # noqa: E402,F401
