"""Authentication with throttling of repeated failures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import func

from portal.admin.audit import audit
from portal.auth.models import LoginFailure, User
from portal.extensions import db
from portal.models_base import utcnow


@dataclass
class LoginResult:
    user: User | None
    error: str | None = None


def _recent_failures(column, value: str) -> int:
    since = utcnow() - timedelta(seconds=current_app.config["LOGIN_WINDOW_SECONDS"])
    return db.session.scalar(
        db.select(func.count(LoginFailure.id)).where(column == value, LoginFailure.at >= since)
    ) or 0


def authenticate(login: str, password: str, ip: str) -> LoginResult:
    login = (login or "").strip().lower()
    limit = current_app.config["LOGIN_MAX_FAILURES"]
    if _recent_failures(LoginFailure.login, login) >= limit or _recent_failures(LoginFailure.ip, ip) >= limit * 4:
        minutes = current_app.config["LOGIN_WINDOW_SECONDS"] // 60
        return LoginResult(None, f"Слишком много неудачных попыток входа. Повторите через {minutes} мин.")
    user = db.session.scalar(db.select(User).where(User.login == login))
    if user is None or not user.check_password(password or ""):
        db.session.add(LoginFailure(login=login[:64], ip=ip[:64]))
        return LoginResult(None, "Неверный логин или пароль.")
    if not user.active:
        return LoginResult(None, "Учётная запись заблокирована. Обратитесь к администратору.")
    db.session.execute(db.delete(LoginFailure).where(LoginFailure.login == login))
    user.last_login_at = utcnow()
    audit("auth.login", f"Вход пользователя {user.login}", obj=user, user=user)
    return LoginResult(user)
