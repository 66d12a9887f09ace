"""The Alembic migrations build the same schema as the models, on SQLite and on PostgreSQL.

PostgreSQL runs in a fresh schema of its own (search_path in the URL) so the migration does
not touch the tables the other tests use; the schema is dropped afterwards.
"""

from __future__ import annotations

import logging
import uuid

import flask_migrate
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from portal.config import normalise_database_url
from portal.extensions import db
from tests.conftest import PG_URL, make_app


@pytest.fixture(autouse=True)
def _keep_logging():
    """Alembic's env.py runs logging.fileConfig, which disables existing loggers; undo that."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    disabled = {name: lg.disabled for name, lg in logging.Logger.manager.loggerDict.items()
                if isinstance(lg, logging.Logger)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lg in logging.Logger.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.disabled = disabled.get(name, False)


def _sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'migrated.db'}"


@pytest.fixture
def pg_schema_url():
    """A URL whose connections see only a fresh, empty schema."""
    base = normalise_database_url(PG_URL)
    schema = f"mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _check_migrations(url: str) -> None:
    app = make_app(SQLALCHEMY_DATABASE_URI=url)
    with app.app_context():
        try:
            assert inspect(db.engine).get_table_names() == []  # really a fresh database

            flask_migrate.upgrade()

            tables = set(inspect(db.engine).get_table_names())
            assert {"alembic_version", "mo", "patient", "user_account", "login_failure", "audit_log"} <= tables
            assert set(db.metadata.tables) <= tables, set(db.metadata.tables) - tables

            with db.engine.connect() as conn:
                drift = compare_metadata(MigrationContext.configure(conn), db.metadata)
            assert drift == [], f"models and migrations differ, regenerate the migration: {drift}"

            flask_migrate.downgrade(revision="base")
            assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        finally:
            db.session.remove()
            db.engine.dispose()


def test_migrations_on_sqlite_file(tmp_path):
    _check_migrations(_sqlite_url(tmp_path))


def test_migrated_sqlite_database_serves_the_portal(tmp_path):
    """After `flask db upgrade` the portal works on the migrated file: login page and health check."""
    url = _sqlite_url(tmp_path)
    app = make_app(SQLALCHEMY_DATABASE_URI=url)
    with app.app_context():
        flask_migrate.upgrade()
        client = app.test_client()
        health = client.get("/healthz").get_json()
        assert health["status"] == "ok" and health["checks"]["database"]["ok"]
        assert "Войти" in client.get("/login").get_data(as_text=True)
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        db.session.remove()
        db.engine.dispose()


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="PORTAL_TEST_DATABASE_URL не задан")
def test_migrations_on_postgresql(pg_schema_url):
    _check_migrations(pg_schema_url)
