from __future__ import annotations

from urllib.parse import urlsplit

from flask import redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from portal.admin.audit import audit
from portal.auth import bp
from portal.auth.models import User
from portal.auth.services import authenticate
from portal.extensions import db, login_manager

login_manager.login_view = "auth.login"
login_manager.login_message = "Войдите, чтобы открыть эту страницу."
login_manager.login_message_category = "info"


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    user = db.session.get(User, int(user_id))
    return user if user is not None and user.active else None


def _safe_next(target: str | None) -> str:
    if target and not urlsplit(target).netloc and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("main.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    error = None
    status = 200
    if request.method == "POST":
        result = authenticate(request.form.get("login", ""), request.form.get("password", ""), request.remote_addr or "")
        db.session.commit()
        if result.user is not None:
            login_user(result.user)
            return redirect(_safe_next(request.args.get("next")))
        error = result.error
        status = 429 if "Слишком много" in (error or "") else 401
    return render_template("auth/login.html", error=error, login=request.form.get("login", "")), status


@bp.post("/logout")
@login_required
def logout():
    audit("auth.logout", f"Выход пользователя {current_user.login}", obj=current_user)
    db.session.commit()
    logout_user()
    return redirect(url_for("auth.login"))
