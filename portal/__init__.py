"""The integration portal of the regional obstetric-monitoring system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, jsonify, render_template, request
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException

from portal.config import BASE_DIR, Config
from portal.extensions import csrf, db, htmx, login_manager, migrate


def create_app(config: type[Config] | dict[str, Any] | None = None) -> Flask:
    app = Flask(
        __name__,
        template_folder=str(BASE_DIR / "templates"),
        static_folder=str(BASE_DIR / "static"),
        instance_path=str(Path(Config.INSTANCE_DIR).resolve()),
    )
    app.config.from_object(Config)
    if isinstance(config, dict):
        app.config.update(config)
    elif config is not None:
        app.config.from_object(config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.json.ensure_ascii = False  # Russian messages stay readable in JSON answers

    import portal.models  # noqa: F401  (every table known before migrations or queries)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(BASE_DIR / "portal" / "migrations"), render_as_batch=True)
    login_manager.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)

    _register_blueprints(app)
    _register_error_pages(app)
    _register_template_helpers(app)
    _register_commands(app)

    @app.after_request
    def _vary(response):
        response.headers.add("Vary", "HX-Request")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        return response

    return app


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """SQLite: WAL for concurrent readers, enforced foreign keys, wait on locks."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()


def _register_blueprints(app: Flask) -> None:
    # Importing a feature's views registers them on its blueprint.
    from portal.admin import bp as admin_bp
    from portal.admin import routes as _admin_views  # noqa: F401
    from portal.auth import bp as auth_bp
    from portal.auth import routes as _auth_views  # noqa: F401
    from portal.clinical import api as _api_views  # noqa: F401
    from portal.clinical import api_bp
    from portal.clinical import bp as clinical_bp
    from portal.clinical import routes as _clinical_views  # noqa: F401
    from portal.ers import bp as ers_bp
    from portal.ers import registry_views as _ers_registry  # noqa: F401
    from portal.ers import report_views as _ers_report  # noqa: F401
    from portal.ers import routes as _ers_views  # noqa: F401
    from portal.iemk import bp as iemk_bp
    from portal.iemk import routes as _iemk_views  # noqa: F401
    from portal.journal import bp as journal_bp
    from portal.journal import routes as _journal_views  # noqa: F401
    from portal.main import bp as main_bp
    from portal.main import routes as _main_views  # noqa: F401
    from portal.tfoms import bp as tfoms_bp
    from portal.tfoms import routes as _tfoms_views  # noqa: F401
    from portal.vimis import bp as vimis_bp
    from portal.vimis import routes as _vimis_views  # noqa: F401

    blueprints = (
        auth_bp,
        main_bp,
        clinical_bp,
        api_bp,
        admin_bp,
        vimis_bp,
        iemk_bp,
        ers_bp,
        journal_bp,
        tfoms_bp,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    csrf.exempt(api_bp)  # the API authenticates by bearer token, not by session


ERROR_TITLES = {
    400: "Некорректный запрос",
    401: "Требуется авторизация",
    403: "Доступ запрещён",
    404: "Страница не найдена",
    405: "Метод не поддерживается",
    413: "Слишком большой запрос",
    429: "Слишком много попыток",
    500: "Внутренняя ошибка портала",
}


def _register_error_pages(app: Flask) -> None:
    from flask_wtf.csrf import CSRFError

    @app.errorhandler(CSRFError)
    def _csrf(error: CSRFError):
        return _error_response(400, "Форма устарела или отправлена не с портала. Обновите страницу и повторите.")

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        description = error.description if error.description and not error.description.startswith(
            ("The ", "You ", "Bad ", "Unauthorized", "Internal", "A ", "This ")
        ) else ""
        return _error_response(error.code or 500, description)


def _error_response(code: int, description: str):
    title = ERROR_TITLES.get(code, "Ошибка")
    if request.path.startswith("/api/"):
        return jsonify({"error": title, "message": description or title}), code
    template = "errors/_error.html" if request.headers.get("HX-Request") else "errors/error.html"
    return render_template(template, code=code, title=title, description=description), code


def _register_template_helpers(app: Flask) -> None:
    from flask_login import current_user

    from portal.clinical.identifiers import format_snils
    from portal.menu import menu_for

    @app.context_processor
    def _globals():
        menu = menu_for(current_user, request.endpoint) if current_user.is_authenticated else []
        return {"menu": menu}

    app.jinja_env.filters["snils"] = format_snils
    app.jinja_env.filters["date"] = lambda d: d.strftime("%d.%m.%Y") if d else ""
    app.jinja_env.filters["datetime"] = lambda d: d.strftime("%d.%m.%Y %H:%M") if d else ""
    app.jinja_env.filters["datetime_s"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if d else ""


def _register_commands(app: Flask) -> None:
    from portal.cli import portal_cli

    app.cli.add_command(portal_cli)
    try:
        from jobs.cli import jobs_cli
    except ImportError:  # jobs/ is optional for scripts that build the app without it
        return
    app.cli.add_command(jobs_cli)
