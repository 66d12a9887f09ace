"""Administration pages: МО and integration switches, users, settings, certificates, tokens, audit.

Thin views: capability check, МО scoping of every object, one service call, one commit.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from portal.admin import bp
from portal.admin import services as svc
from portal.admin.certificates import MAX_BYTES
from portal.admin.forms import clean_int
from portal.admin.models import Certificate
from portal.admin.registry import CERTIFICATE_PURPOSES, INTEGRATIONS
from portal.auth.access import requires
from portal.auth.models import ApiToken, User
from portal.auth.roles import CENTRAL_ADMIN, ROLES
from portal.auth.scoping import check_mo, filter_mo_id, get_scoped, mo_choices, visible_mo_id
from portal.clinical.models import STAFF_CATEGORIES, Mo
from portal.extensions import db


def _is_fragment_request() -> bool:
    return bool(request.headers.get("HX-Request")) and not request.headers.get("HX-Boosted")


def _page(page_template: str, fragment_template: str, status: int = 200, /, **context: Any):
    """One URL, page and fragment: HTMX gets only the fragment the page includes."""
    template = fragment_template if _is_fragment_request() else page_template
    return render_template(template, **context), status


@bp.app_template_filter("admin_value")
def _admin_value(value: Any) -> str:
    """Audit details for people: «поле: было → стало» for changes, plain text otherwise."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "да" if value else "нет"
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            if isinstance(item, list | tuple) and len(item) == 2:
                parts.append(f"{key}: {_admin_value(item[0])} → {_admin_value(item[1])}")
            else:
                parts.append(f"{key}: {_admin_value(item)}")
        return "; ".join(parts)
    if isinstance(value, list | tuple):
        return ", ".join(_admin_value(item) for item in value)
    return str(value)


@bp.app_template_filter("admin_days")
def _admin_days(count: int) -> str:
    """«1 день», «3 дня», «11 дней»."""
    n = abs(int(count))
    if n % 10 == 1 and n % 100 != 11:
        word = "день"
    elif 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        word = "дня"
    else:
        word = "дней"
    return f"{n} {word}"


@bp.get("/")
@requires("admin.view")
def index():
    return redirect(url_for("admin.mo_list"))


# --- МО and integration switches ---------------------------------------------------------------


@bp.get("/mo")
@requires("admin.mo")
def mo_list():
    query = request.args.get("q", "")
    mos = svc.mo_list(query)
    return _page(
        "admin/mo_list.html",
        "admin/_mo_table.html",
        mos=mos,
        states=svc.switch_states([mo.id for mo in mos]),
        columns=svc.integration_columns(),
        column_count=len(INTEGRATIONS),
        short_labels=svc.SHORT_LABELS,
        query=query,
        vimis_hint=svc.VIMIS_OFF_HINT,
    )


@bp.post("/mo/<int:mo_id>/integrations/<key>")
@requires("admin.mo")
def mo_toggle(mo_id: int, key: str):
    mo = get_scoped(Mo, mo_id, mo_attr="id")
    enabled = request.form.get("enabled") == "1"
    error = message = None
    try:
        message = svc.toggle_integration(mo, key, enabled, request.form.get("reason"))
        db.session.commit()
    except svc.AdminError as exc:
        db.session.rollback()
        error = str(exc)
    if _is_fragment_request():
        # 200 even for a refusal: HTMX swaps only successful answers, and the row carries the message.
        return render_template(
            "admin/_mo_row.html",
            mo=mo,
            states=svc.switch_states([mo.id]),
            row_message=message,
            row_error=error,
            vimis_hint=svc.VIMIS_OFF_HINT,
        )
    flash(error or message, "error" if error else "success")
    if request.form.get("back") == "detail":
        return redirect(url_for("admin.mo_detail", mo_id=mo.id), 303)
    return redirect(url_for("admin.mo_list"), 303)


@bp.route("/mo/<int:mo_id>", methods=["GET", "POST"])
@requires("admin.mo")
def mo_detail(mo_id: int):
    mo = get_scoped(Mo, mo_id, mo_attr="id")
    errors: dict[str, str] = {}
    submitted = None
    status = 200
    if request.method == "POST":
        # Overrides reach outside systems' addresses and tokens: region administrators only.
        if not current_user.can("admin.settings"):
            abort(403, description="Настройки обмена для МО изменяет администратор ЦОД.")
        errors, submitted, status = _save_settings(mo.id, "Настройки МО")
        if not errors:
            return redirect(url_for("admin.mo_detail", mo_id=mo.id), 303)
    staff_counts = svc.mo_staff_counts(mo.id)
    certificates = svc.certificate_list(mo.id)
    return render_template(
        "admin/mo_detail.html",
        mo=mo,
        states=svc.switch_states([mo.id])[mo.id],
        staff_counts=staff_counts,
        staff_total=sum(staff_counts.values()),
        staff_categories=STAFF_CATEGORIES,
        setting_groups=svc.setting_groups(mo.id, submitted, errors),
        may_edit_settings=current_user.can("admin.settings"),
        certificates=certificates,
        cert_users=svc.users_by_id([c.user_id for c in certificates]),
        purposes=CERTIFICATE_PURPOSES,
        today=date.today(),
        vimis_hint=svc.VIMIS_OFF_HINT,
    ), status


# --- settings -------------------------------------------------------------------------------------


def _save_settings(mo_id: int | None, what: str) -> tuple[dict[str, str], dict | None, int]:
    """Save the posted settings form all-or-nothing; (errors, submitted values to show again, status)."""
    errors, changed = svc.save_settings(request.form, mo_id=mo_id)
    if errors:
        db.session.rollback()
        flash(f"{what} не сохранены: исправьте отмеченные поля.", "error")
        return errors, request.form.to_dict(), 422
    db.session.commit()
    flash(f"{what} сохранены (изменено: {changed})." if changed else "Изменений нет.", "success")
    return {}, None, 200


@bp.route("/settings", methods=["GET", "POST"])
@requires("admin.settings")
def settings():
    errors: dict[str, str] = {}
    submitted = None
    status = 200
    if request.method == "POST":
        errors, submitted, status = _save_settings(None, "Настройки")
        if not errors:
            return redirect(url_for("admin.settings"), 303)
    return render_template("admin/settings.html", groups=svc.setting_groups(None, submitted, errors)), status


# --- certificates -----------------------------------------------------------------------------


def _upload_data(file_field: str, text_field: str) -> bytes | str | None:
    """A file if one was chosen, else the pasted text; None when neither was given."""
    upload = request.files.get(file_field)
    if upload is not None and upload.filename:
        return upload.read(MAX_BYTES + 1)
    text = request.form.get(text_field, "")
    return text if text.strip() else None


def _user_choices() -> list[User]:
    """Users who may own a signature certificate, in the current user's scope."""
    stmt = db.select(User).where(User.role != CENTRAL_ADMIN).order_by(User.mo_id, User.full_name)
    own = visible_mo_id()
    if own is not None:
        stmt = stmt.where(User.mo_id == own)
    return list(db.session.scalars(stmt))


@bp.route("/certificates", methods=["GET", "POST"])
@requires("admin.mo")
def certificates():
    errors: dict[str, str] = {}
    form: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        form = request.form.to_dict()
        own = visible_mo_id()
        mo_id = clean_int(form.get("mo"))
        if own is not None and mo_id is None:
            mo_id = own
        user_id = clean_int(form.get("user"))
        if user_id is not None:
            owner = db.session.get(User, user_id)
            if owner is not None:
                check_mo(owner.mo_id)
        check_mo(mo_id)
        cert_data = _upload_data("cert_file", "cert_text")
        key_data = _upload_data("key_file", "key_text")
        if cert_data is None:
            errors["cert"] = "Выберите файл сертификата или вставьте его текст (PEM)."
        else:
            cert, errors = svc.add_certificate(form.get("purpose", ""), mo_id, user_id, cert_data, key_data)
        if errors:
            db.session.rollback()
            status = 422
            flash("Сертификат не загружен: " + " ".join(errors.values()), "error")
        else:
            db.session.commit()
            flash(
                f"Сертификат загружен: {cert.subject}" + ("; ключ загружен." if cert.key_pem else "."),
                "success",
            )
            days = cert.days_left()
            if days < 0:
                flash(f"Внимание: срок действия сертификата истёк {cert.valid_to:%d.%m.%Y}.", "warning")
            elif days < 30:
                flash(f"Внимание: сертификат действует ещё {_admin_days(days)}.", "warning")
            return redirect(url_for("admin.certificates", mo=request.args.get("mo") or None), 303)
    mo_id = filter_mo_id(request.args.get("mo"))
    purpose = request.args.get("purpose") or None
    rows = svc.certificate_list(mo_id, purpose)
    return _page(
        "admin/certificates.html",
        "admin/_certificates_table.html",
        status,
        rows=rows,
        cert_users=svc.users_by_id([c.user_id for c in rows]),
        mos=mo_choices(),
        mo_id=mo_id,
        purpose=purpose,
        purposes=CERTIFICATE_PURPOSES,
        user_choices=_user_choices(),
        errors=errors,
        form=form,
        today=date.today(),
    )


@bp.post("/certificates/<int:cert_id>/delete")
@requires("admin.mo")
def certificate_delete(cert_id: int):
    cert = get_scoped(Certificate, cert_id)
    mo_id, subject = cert.mo_id, cert.subject
    svc.delete_certificate(cert)
    db.session.commit()
    flash(f"Сертификат удалён: {subject}", "success")
    if request.form.get("back") == "detail" and mo_id is not None:
        return redirect(url_for("admin.mo_detail", mo_id=mo_id), 303)
    return redirect(url_for("admin.certificates"), 303)


# --- users ------------------------------------------------------------------------------------


def _managed_user(user_id: int) -> User:
    """A user the current administrator may change: same МО, and ЦОД accounts only by ЦОД."""
    user = get_scoped(User, user_id)
    if user.role == CENTRAL_ADMIN and not current_user.is_central:
        abort(403, description="Учётные записи администраторов ЦОД изменяет только администратор ЦОД.")
    return user


def _user_form_context(**context: Any) -> dict[str, Any]:
    mo_id = context.get("form_mo_id")
    return {
        "roles": svc.grantable_roles(current_user),
        "mos": mo_choices(),
        "staff": svc.staff_choices(mo_id),
        **context,
    }


@bp.get("/users")
@requires("admin.users")
def users():
    role = request.args.get("role") or None
    mo_id = filter_mo_id(request.args.get("mo"))
    page = svc.users_page(
        request.args.get("q", ""),
        role if role in ROLES else None,
        mo_id,
        request.args.get("active"),
        request.args.get("after") or None,
        current_app.config["PAGE_SIZE"],
    )
    return _page(
        "admin/users.html",
        "admin/_users_table.html",
        page=page,
        roles=ROLES,
        mos=mo_choices(),
        mo_id=mo_id,
        role=role,
    )


@bp.get("/users/staff-options")
@requires("admin.users")
def user_staff_options():
    """The «Сотрудник» select for the МО chosen on the user form (HTMX)."""
    mo_id = clean_int(request.args.get("mo"))
    if mo_id is not None:
        check_mo(mo_id)
    return render_template("admin/_staff_options.html", staff=svc.staff_choices(mo_id), selected=None)


@bp.route("/users/new", methods=["GET", "POST"])
@requires("admin.users")
def user_new():
    errors: dict[str, str] = {}
    form = request.form.to_dict() if request.method == "POST" else {"active": "1"}
    status = 200
    if request.method == "POST":
        user, errors = svc.create_user(request.form, current_user)
        if not errors:
            db.session.commit()
            flash(f"Пользователь {user.login} создан.", "success")
            return redirect(url_for("admin.user_edit", user_id=user.id), 303)
        db.session.rollback()
        status = 422
    # An МО administrator's form always shows their own МО (and its staff), whatever was posted.
    form_mo_id = visible_mo_id() or clean_int(form.get("mo")) or clean_int(request.args.get("mo"))
    return render_template(
        "admin/user_form.html",
        **_user_form_context(user=None, form=form, errors=errors, form_mo_id=form_mo_id),
    ), status


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@requires("admin.users")
def user_edit(user_id: int):
    user = _managed_user(user_id)
    errors: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        form = request.form.to_dict()
        changed, errors = svc.update_user(user, request.form, current_user)
        if not errors:
            db.session.commit()
            flash(f"Сохранено: {', '.join(changed)}." if changed else "Изменений нет.", "success")
            return redirect(url_for("admin.user_edit", user_id=user.id), 303)
        db.session.rollback()
        status = 422
    else:
        form = {
            "full_name": user.full_name,
            "role": user.role,
            "mo": str(user.mo_id or ""),
            "staff": str(user.staff_id or ""),
            "active": "1" if user.active else "",
        }
    form_mo_id = clean_int(form.get("mo")) if current_user.is_central else user.mo_id
    return render_template(
        "admin/user_form.html",
        **_user_form_context(
            user=user, form=form, errors=errors, form_mo_id=form_mo_id, is_self=user.id == current_user.id
        ),
    ), status


@bp.post("/users/<int:user_id>/password")
@requires("admin.users")
def user_password(user_id: int):
    user = _managed_user(user_id)
    error = svc.reset_password(user, request.form.get("password", ""), request.form.get("password2", ""))
    if error:
        db.session.rollback()
        flash(f"Пароль не изменён: {error}", "error")
    else:
        db.session.commit()
        flash(f"Пароль пользователя {user.login} изменён. Сообщите его пользователю лично.", "success")
    return redirect(url_for("admin.user_edit", user_id=user.id), 303)


@bp.post("/users/<int:user_id>/active")
@requires("admin.users")
def user_active(user_id: int):
    user = _managed_user(user_id)
    try:
        message = svc.set_user_active(user, request.form.get("active") == "1", current_user)
        db.session.commit()
        flash(message, "success")
    except svc.AdminError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    if request.form.get("back") == "list":
        return redirect(url_for("admin.users"), 303)
    return redirect(url_for("admin.user_edit", user_id=user.id), 303)


# --- API tokens -------------------------------------------------------------------------------


@bp.route("/tokens", methods=["GET", "POST"])
@requires("admin.tokens")
def tokens():
    new_token = None
    new_plain = None
    error = None
    status = 200
    if request.method == "POST":
        try:
            new_token, new_plain = svc.issue_token(request.form.get("name", ""), current_user)
            db.session.commit()
            status = 201
        except svc.AdminError as exc:
            db.session.rollback()
            error = str(exc)
            status = 422
    response = render_template(
        "admin/tokens.html",
        tokens=svc.token_list(),
        new_token=new_token,
        new_plain=new_plain,
        error=error,
        name=request.form.get("name", "") if error else "",
    )
    headers = {"Cache-Control": "no-store"} if new_plain else {}
    return response, status, headers


@bp.post("/tokens/<int:token_id>/revoke")
@requires("admin.tokens")
def token_revoke(token_id: int):
    token = db.session.get(ApiToken, token_id) or abort(404)
    message = svc.revoke_token(token)
    db.session.commit()
    flash(message, "success")
    return redirect(url_for("admin.tokens"), 303)


# --- audit log --------------------------------------------------------------------------------


@bp.get("/audit")
@requires("admin.audit")
def audit():
    filters = svc.parse_audit_filters(request.args)
    before = clean_int(request.args.get("before"))
    page = svc.audit_page(filters, before, current_app.config["PAGE_SIZE"])
    mo_names = {mo.id: mo.short_name for mo in mo_choices()}
    return _page(
        "admin/audit.html",
        "admin/_audit_table.html",
        page=page,
        filters=filters,
        before=before,
        mos=mo_choices(),
        mo_names=mo_names,
        action_labels=svc.ACTION_LABELS,
        action_groups=svc.ACTION_GROUPS,
        object_labels=svc.OBJECT_LABELS,
    )
