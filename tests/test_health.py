"""/healthz reports the database and the ТФОМС broker (RabbitMQ when PORTAL_TEST_AMQP_URL is set)."""

import os

import pytest

from tests.conftest import make_app

AMQP_URL = os.environ.get("PORTAL_TEST_AMQP_URL")
IN_CI = bool(os.environ.get("CI") or os.environ.get("PORTAL_TEST_DATABASE_URL"))


def _health(**config):
    app = make_app(**config)
    with app.app_context():
        from portal.extensions import db

        db.create_all()
        response = app.test_client().get("/healthz")
    return response.status_code, response.get_json()


def test_health_without_broker_uses_the_database_transport():
    status, body = _health(AMQP_URL=None)
    assert status == 200 and body["checks"]["database"]["ok"]
    assert "хранятся в базе портала" in body["checks"]["broker"]["message"]


def test_health_names_an_unreachable_broker():
    status, body = _health(AMQP_URL="amqp://guest:guest@127.0.0.1:1//")
    assert status == 503 and body["status"] == "error"
    assert "Брокер сообщений ТФОМС недоступен" in body["checks"]["broker"]["message"]


def test_health_with_the_real_broker():
    if not AMQP_URL:
        if IN_CI:
            pytest.fail("PORTAL_TEST_AMQP_URL is required in CI")
        pytest.skip("PORTAL_TEST_AMQP_URL не задан")
    status, body = _health(AMQP_URL=AMQP_URL)
    assert status == 200, body
    assert body["checks"]["broker"] == {"ok": True, "message": "Брокер сообщений ТФОМС доступен"}
