"""The child process that renders one report run: `python -m portal.reports.worker <run_id>`.

Started by the job «Формирование отчётов» (`portal.reports.background.run_queued`) with the
database URL and the instance folder in its environment; its memory is its own and goes back to
the system when it ends, whatever the report's size.

It builds a small app rather than `create_app`: the configuration, the database, the templates
and the models, without the blueprints, which it does not need and which cost a third of its
start-up. The renderers come from the features' `report.py` modules (`load_renderers`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from flask import Flask


def worker_app() -> Flask:
    import portal.models  # noqa: F401  (every table and relationship known)
    from portal.config import BASE_DIR, Config
    from portal.extensions import db

    app = Flask(
        "portal",
        template_folder=str(BASE_DIR / "templates"),
        instance_path=str(Path(Config.INSTANCE_DIR).resolve()),
    )
    app.config.from_object(Config)
    app.config["SCHEDULER_ENABLED"] = False
    if os.environ.get("PORTAL_WORKER_TESTING"):
        app.config["TESTING"] = True
    db.init_app(app)
    return app


def main(argv: list[str]) -> int:
    from portal.reports.background import load_renderers, render_run
    from portal.reports.models import DONE

    run_id = int(argv[0])
    load_renderers()
    app = worker_app()
    with app.app_context():
        run = render_run(run_id)
        return 0 if run is not None and run.status == DONE else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
