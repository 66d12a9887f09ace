"""«Выгрузка прикреплений» (seed 4.5.1, SPEC T-9): the page, its preview fragment and the download.

The page and the preview are one URL (the preview is the fragment `#attachments-preview`); the
download is a POST of a real form, answered with the file, recorded as a manual run of the
service «tfoms_attachments» with its journal line.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date, timedelta

from flask import abort, render_template, request, send_file, url_for
from flask_login import current_user

from portal.auth.access import requires
from portal.auth.scoping import may_see_mo, mo_choices, visible_mo_id
from portal.clinical.models import Mo
from portal.dates import parse_date
from portal.exchange.runs import recording
from portal.extensions import db
from portal.tfoms import attachments, bp

PREVIEW_TARGET = "attachments-preview"


@dataclass
class Form:
    """The page's filters as typed, and what they mean once checked."""

    mo_raw: str
    from_raw: str
    to_raw: str
    mo: Mo | None = None
    period_from: date | None = None
    period_to: date | None = None
    error: str | None = None

    def query_args(self) -> dict[str, str]:
        args = {"from": self.from_raw, "to": self.to_raw}
        if self.mo_raw:
            args["mo"] = self.mo_raw
        return args


def previous_month(today: date | None = None) -> tuple[date, date]:
    first_this = (today or date.today()).replace(day=1)
    last = first_this - timedelta(days=1)
    return last.replace(day=1), last


def _parse_day(raw: str, label: str) -> date | None:
    try:
        return parse_date(raw)
    except ValueError:
        raise attachments.AttachmentFileError(
            f"«Отчётная дата {label}»: «{raw}» — не дата. Укажите дату в виде ДД.ММ.ГГГГ."
        ) from None


def _form(values) -> Form:
    """Read and check the filters; another МО's id is a 404 for an МО user, as if it did not exist."""
    default_from, default_to = previous_month()
    form = Form(
        mo_raw=(values.get("mo") or "").strip(),
        from_raw=(values.get("from") if values.get("from") is not None else default_from.isoformat()).strip(),
        to_raw=(values.get("to") if values.get("to") is not None else default_to.isoformat()).strip(),
    )
    own = visible_mo_id()
    if form.mo_raw:
        try:
            mo_id = int(form.mo_raw)
        except ValueError:
            abort(404)
        if not may_see_mo(mo_id):
            abort(404)
    else:
        mo_id = own
    if mo_id is not None:
        form.mo = db.session.get(Mo, mo_id)
        if form.mo is None:
            abort(404)
    try:
        form.period_from = _parse_day(form.from_raw, "с")
        form.period_to = _parse_day(form.to_raw, "по")
        attachments.check_period(form.period_from, form.period_to)
        if form.mo is None:
            raise attachments.AttachmentFileError(
                "Выберите МО." if current_user.is_central else "У вашей учётной записи не указана МО."
            )
        attachments.check_mo(form.mo)
    except attachments.AttachmentFileError as error:
        form.error = error.message
    return form


def _context(form: Form, with_preview: bool) -> dict:
    preview = None
    if with_preview and form.error is None:
        preview = attachments.preview(form.mo.id, form.period_from, form.period_to)
    return {
        "form": form,
        "preview": preview,
        "mos": mo_choices(),
        "file_name": attachments.file_name(form.mo, form.period_to) if form.error is None else None,
        "preview_url": url_for("tfoms.attachments", **form.query_args(), preview=1),
        "list_limit": attachments.LIST_LIMIT,
    }


@bp.get("/attachments", endpoint="attachments")
@requires("tfoms.attachments")
def attachments_page():
    """The page; the preview (counts, people left out, «Выгрузить») is its fragment."""
    form = _form(request.args)
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == PREVIEW_TARGET:
        response = render_template("tfoms/_attachments_preview.html", **_context(form, True))
    else:
        response = render_template(
            "tfoms/attachments.html", **_context(form, request.args.get("preview") == "1")
        )
    return response, 200, {"Vary": "HX-Request"}


@bp.post("/attachments/export", endpoint="attachments_export")
@requires("tfoms.attachments")
def attachments_export():
    """«Выгрузить»: the file as a download, written to a temporary file first so the run and its
    journal line are committed before the first byte goes out."""
    form = _form(request.form)
    if form.error is not None:
        return render_template("tfoms/attachments.html", **_context(form, False)), 400
    out = tempfile.TemporaryFile()  # noqa: SIM115  (closed by the response once sent)
    try:
        with recording(attachments.SERVICE, mo_id=form.mo.id, manual=True, user_id=current_user.id):
            result = attachments.export(
                form.mo.id, form.period_from, form.period_to, out, user_id=current_user.id
            )
    except BaseException:
        out.close()
        raise
    out.seek(0)
    response = send_file(
        out, mimetype="text/csv", as_attachment=True, download_name=result.name, max_age=0, conditional=False
    )
    response.headers["Content-Type"] = "text/csv; charset=windows-1251"
    return response
