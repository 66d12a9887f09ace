"""Configuration: defaults overridden by PORTAL_* environment variables.

This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
INSTANCE_PATH = Path(os.environ.get("PORTAL_INSTANCE_DIR") or BASE_DIR / "instance")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"PORTAL_{name}")
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def _env_bool(name: str, default: bool) -> bool:
    return (_env(name, "1" if default else "0") or "").lower() in {"1", "true", "yes", "on"}


def normalise_database_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _secret_key() -> str:
    """A stable secret for the embedded default: generated once into instance/."""
    key = _env("SECRET_KEY")
    if key:
        return key
    path = INSTANCE_PATH / "secret_key"
    if not path.exists():
        INSTANCE_PATH.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


class Config:
    INSTANCE_DIR = str(INSTANCE_PATH)
    SECRET_KEY = _secret_key()
    SQLALCHEMY_DATABASE_URI = normalise_database_url(
        _env("DATABASE_URL", f"sqlite:///{INSTANCE_PATH / 'portal.db'}")
    )
    SQLALCHEMY_ENGINE_OPTIONS: dict = {"pool_pre_ping": True}
    AMQP_URL = _env("AMQP_URL")  # None: broker-less transport in the portal's database
    TFOMS_DIR = _env("TFOMS_DIR")  # ТФОМС file exchange folders; None: <instance>/tfoms
    TFOMS_MAX_UPLOAD_BYTES = _env_int("TFOMS_MAX_UPLOAD_BYTES", 50 * 1024 * 1024)  # an answer DBF or OSHIB_PR
    # How long a run of the ТФОМС packet service waits for answers, so children follow their parents.
    TFOMS_REPLY_WAIT_SECONDS = _env_int("TFOMS_REPLY_WAIT_SECONDS", 10)

    PORT = _env_int("PORT", 8000)
    # The address outside systems call back (ВИМИС sendResult); default: this machine's port.
    PUBLIC_URL = _env("PUBLIC_URL")
    SIMULATORS_PORT = _env_int("SIMULATORS_PORT", 8001)
    SIMULATORS_ENABLED = _env_bool("SIMULATORS", True)
    SCHEDULER_ENABLED = _env_bool("SCHEDULER", True)
    RUN_SERVICES = _env_bool(
        "RUN_SERVICES", False
    )  # set by `make run`: wsgi.py starts scheduler and simulators
    WORKERS = _env_int("WORKERS", 2)

    DEMO_PASSWORD = _env("DEMO_PASSWORD", "demo-2026")
    DEMO_API_TOKEN = _env("DEMO_API_TOKEN", "demo-intake-token")

    # Intake limits: a batch over either is refused whole with 413.
    INTAKE_MAX_RECORDS = _env_int("INTAKE_MAX_RECORDS", 5000)
    MAX_CONTENT_LENGTH = _env_int("MAX_REQUEST_BYTES", 20 * 1024 * 1024)

    # Login throttling: this many failures for one login (or 4x for one address) within
    # the window lock further attempts until the window passes.
    LOGIN_MAX_FAILURES = _env_int("LOGIN_MAX_FAILURES", 5)
    LOGIN_WINDOW_SECONDS = _env_int("LOGIN_WINDOW_SECONDS", 15 * 60)

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _env_bool("COOKIE_SECURE", False)  # set to 1 behind TLS
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    PERMANENT_SESSION_LIFETIME = _env_int("SESSION_HOURS", 12) * 3600
    WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session
    WTF_CSRF_HEADERS = ["X-CSRFToken"]

    PAGE_SIZE = _env_int("PAGE_SIZE", 50)
    TESTING = False


class TestConfig(Config):
    TESTING = True
    SQLALCHEMY_DATABASE_URI = normalise_database_url(
        os.environ.get("PORTAL_TEST_DATABASE_URL") or "sqlite://"
    )
    TEST_AMQP_URL = os.environ.get("PORTAL_TEST_AMQP_URL")
    SCHEDULER_ENABLED = False
    SIMULATORS_ENABLED = False
    TFOMS_REPLY_WAIT_SECONDS = 0  # tests pump ТФОМС's stand-in themselves
    LOGIN_MAX_FAILURES = 3
