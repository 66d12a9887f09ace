"""A tiny built-in simulator that repeats what it gets; only for testing the host and its control API."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from simulators.server import behaviour, register_simulator, storage

bp = Blueprint("sim_echo", __name__)


@bp.route("/", methods=["GET", "POST"])
def echo():
    answer = behaviour("echo")
    if answer is not None:
        return answer
    calls = storage("echo")
    calls["count"] = calls.get("count", 0) + 1
    return jsonify(
        {
            "echo": request.get_json(silent=True) if request.is_json else request.get_data(as_text=True),
            "method": request.method,
            "calls": calls["count"],
        }
    )


def _error_answer():
    response = jsonify({"error": "Эхо-сервис отклонил запрос", "code": "ECHO-500"})
    response.status_code = 500
    return response


register_simulator("echo", "Эхо (проверка симуляторов)", bp, error_answer=_error_answer)
