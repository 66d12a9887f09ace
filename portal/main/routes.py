from __future__ import annotations

from datetime import timedelta

from flask import render_template
from flask_login import login_required

from portal.main import bp
from portal.main.services import region_summary, service_health
from portal.models_base import utcnow


@bp.get("/")
@login_required
def index():
    since = utcnow() - timedelta(days=30)
    return render_template("main/index.html", rows=region_summary(since), since=since)


@bp.get("/healthz")
def healthz():
    """For monitoring: the database and, when configured, the ТФОМС broker answer."""
    checks = service_health()
    healthy = all(check["ok"] for check in checks.values())
    return {"status": "ok" if healthy else "error", "checks": checks}, 200 if healthy else 503
