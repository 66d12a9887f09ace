"""Browser tests: a live portal on a free port (file SQLite in tmp_path) and headless Chromium.

Chromium is Debian's /usr/bin/chromium (`make test` installs it); Playwright never downloads
a browser. Without Chromium the tests fail in CI (CI=true or PORTAL_TEST_DATABASE_URL set)
and are skipped with a reason on a developer's machine.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from werkzeug.serving import make_server

from portal.extensions import db
from tests import factories
from tests.conftest import PG_URL, make_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "browser"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"} or bool(PG_URL)


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        message = f"Chromium не найден: {CHROMIUM} (установите пакет chromium или запустите make test)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="ru-RU")
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def screenshot():
    """Save a full-page screenshot under test-output/browser/ and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(tab, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def live_server(tmp_path):
    """The portal on 127.0.0.1:<free port> over a file database with a two-МО region."""
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'browser.db'}")
    with app.app_context():
        db.create_all()
        region = factories.make_region()
        # Plain values: the ORM objects are detached once this context ends.
        data = SimpleNamespace(
            password=factories.PASSWORD,
            doctor=region.a.users["doctor"].login,
            doctor_name=region.a.users["doctor"].full_name,
            central=region.central.login,
            mo_a=region.a.mo.short_name,
            mo_b=region.b.mo.short_name,
            patients_a=[p.full_name for p in region.a.patients],
        )
        db.session.remove()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-portal", daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}", region=data, app=app)
    finally:
        server.shutdown()
        server.server_close()
        with app.app_context():
            db.engine.dispose()


def log_in(page, base_url: str, login: str, password: str) -> None:
    """Log in through the form as a person would, and wait for the menu."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/login")
    page.get_by_label("Логин").fill(login)
    page.get_by_label("Пароль").fill(password)
    page.get_by_role("button", name="Войти").click()
    expect(page.get_by_role("navigation", name="Главное меню")).to_be_visible()
