"""The intake API (X-5): POST /api/v1/records and its OpenAPI description.

The source MIS authenticates with `Authorization: Bearer <token>` (tokens are issued in admin;
only their sha256 is stored). A batch that cannot be read at all is refused whole (400/413)
with nothing stored; otherwise every record gets its own result and the valid ones are stored.
"""

from __future__ import annotations

import json
from datetime import timedelta

from flask import Response, current_app, jsonify, request
from sqlalchemy import select, update
from werkzeug.exceptions import RequestEntityTooLarge

from portal import ERROR_TITLES
from portal.auth.models import ApiToken, hash_token
from portal.clinical import api_bp
from portal.clinical.intake import ingest_batch, run_in_transaction
from portal.clinical.openapi import build_document
from portal.extensions import db
from portal.models_base import utcnow

TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)  # last_used_at is written at most this often per token


def api_error(status: int, message: str) -> Response:
    response = jsonify({"error": ERROR_TITLES[status], "message": message})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="portal"'
    return response


def authenticate() -> tuple[int | None, Response | None]:
    """The token's id, or the 401 answer; marks the token as used (cheaply: once a minute)."""
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None, api_error(401, "Не передан токен доступа: нужен заголовок «Authorization: Bearer <токен>».")
    row = db.session.execute(
        select(ApiToken.id, ApiToken.last_used_at).where(
            ApiToken.token_hash == hash_token(value), ApiToken.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        return None, api_error(401, "Токен доступа недействителен или отозван.")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= TOKEN_TOUCH_INTERVAL:
        db.session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        db.session.commit()
    return row.id, None


def _read_batch() -> tuple[list | None, Response | None]:
    """The records list, or the whole-batch refusal (400 or 413) before anything is stored."""
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return None, api_error(413, f"Тело запроса больше допустимых {limit} байт. Разделите пакет на части.")
    if not raw.strip():
        return None, api_error(400, 'Пустое тело запроса: ожидается JSON вида {"records": [...]}.')
    try:
        payload = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        return None, api_error(400, "Тело запроса не в кодировке UTF-8.")
    except json.JSONDecodeError as exc:
        return None, api_error(
            400, f"Тело запроса не является корректным JSON (строка {exc.lineno}, столбец {exc.colno})."
        )
    if not isinstance(payload, dict):
        return None, api_error(400, 'Ожидается объект JSON вида {"records": [...]}.')
    records = payload.get("records")
    if not isinstance(records, list):
        return None, api_error(400, 'Поле «records» должно быть списком записей: {"records": [...]}.')
    limit = current_app.config["INTAKE_MAX_RECORDS"]
    if len(records) > limit:
        return None, api_error(
            413, f"В пакете {len(records)} записей, допускается не более {limit}. Разделите пакет на части."
        )
    return records, None


@api_bp.post("/records")
def post_records() -> Response:
    _token_id, refusal = authenticate()
    if refusal is not None:
        return refusal
    records, refusal = _read_batch()
    if refusal is not None:
        return refusal
    result = run_in_transaction(lambda: ingest_batch(records))
    return jsonify({"results": result.results})


@api_bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(build_document(current_app.config["INTAKE_MAX_RECORDS"]))
