from __future__ import annotations

from datetime import timedelta

from flask import render_template
from flask_login import login_required

from portal.main import bp
from portal.main.services import region_summary
from portal.models_base import utcnow


@bp.get("/")
@login_required
def index():
    since = utcnow() - timedelta(days=30)
    return render_template("main/index.html", rows=region_summary(since), since=since)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}
