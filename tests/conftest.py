"""Test set-up: a real database per test — SQLite always, PostgreSQL too when
PORTAL_TEST_DATABASE_URL is set (CI sets it; then those tests must run, never skip)."""

from __future__ import annotations

import os
import re
import tempfile

import pytest
from flask import g
from flask.testing import FlaskClient
from sqlalchemy import text

from portal import create_app
from portal.config import TestConfig, normalise_database_url
from portal.extensions import db
from tests import factories

PG_URL = os.environ.get("PORTAL_TEST_DATABASE_URL")
DATABASES = ["sqlite"] + (["postgresql"] if PG_URL else [])
_pg_schema_ready = False


def make_app(database: str = "sqlite", **overrides):
    config = {k: getattr(TestConfig, k) for k in dir(TestConfig) if k.isupper()}
    config["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(PG_URL) if database == "postgresql" else "sqlite://"
    config["TFOMS_DIR"] = tempfile.mkdtemp(prefix="portal-tfoms-")  # files of the ТФОМС exchange, per app
    config.update(overrides)
    return create_app(config)


def _reset_postgres() -> None:
    """Create the schema once per session, then empty every table between tests."""
    global _pg_schema_ready
    if not _pg_schema_ready:
        db.drop_all()
        with db.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        db.create_all()
        _pg_schema_ready = True
    else:
        names = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
        with db.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=DATABASES)
def app(request):
    database = request.param
    application = make_app(database)
    with application.app_context():
        if database == "postgresql":
            _reset_postgres()
        else:
            db.create_all()
        yield application
        db.session.remove()
        db.engine.dispose()


class PortalClient(FlaskClient):
    """Test client whose requests do not inherit the test's logged-in user.

    The `app` fixture keeps an application context open for the whole test, and Flask reuses
    it for requests; Flask-Login and Flask-WTF cache the user and the CSRF token in `g`, so
    each request starts with an empty `g`, as it would in a server.
    """

    def open(self, *args, **kwargs):
        vars(g).clear()
        return super().open(*args, **kwargs)


@pytest.fixture
def client(app):
    app.test_client_class = PortalClient
    return app.test_client()


@pytest.fixture
def region(app):
    """Two МО with departments, staff, patients and one user of every role in each."""
    return factories.make_region()


def csrf_token(client, url: str = "/") -> str:
    page = client.get(url).get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match, f"no CSRF token on {url}"
    return match.group(1)


def login(client, user, password: str = factories.PASSWORD):
    with client.session_transaction() as session:  # start from a logged-out session
        session.clear()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"login": user.login, "password": password, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return client
