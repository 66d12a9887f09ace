"""The host of the local stand-ins for the outside systems.

One small Flask app on 127.0.0.1 mounts each simulator's blueprint under /<name>/ and gives
all of them the same control API, so a test or a demo can make any system slow, down or
answer with errors:

    GET  /                      the simulators and their current modes (JSON)
    GET  /<name>/_control       {"name", "title", "mode", "delay", "share"}
    POST /<name>/_control       {"mode": "normal"|"slow"|"down"|"errors", "delay": seconds,
                                 "share": 0..1}
    POST /_reset                every simulator back to normal

`share` is the part of requests that mode "errors" fails (default 1.0: every request; 0.3
fails about every third one at random, like a flaky real service). Fields left out keep
their current values.

Simulator views call `behaviour(name)` first and return its answer when it gives one. A view
that must apply a mode differently (ВИМИС processes a request in mode "slow" before delaying
its answer) reads it with `control_of(name)`.
State (modes and each simulator's memory) belongs to one host app, so tests that start
their own host do not see each other's changes.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger("simulators")

MODES = ("normal", "slow", "down", "errors")
DEFAULT_DELAY = 3.0
MAX_DELAY = 300.0
# Modules of this package that are machinery, not simulators.
_NOT_SIMULATOR_MODULES = {"server"}


@dataclass(frozen=True)
class SimulatorDef:
    name: str
    title_ru: str
    blueprint: Blueprint
    # The system's own failure answer for mode "errors" (a SOAP fault, a rejected packet …).
    error_answer: Callable[[], Response] | None = None


SIMULATORS: dict[str, SimulatorDef] = {}


def register_simulator(
    name: str,
    title_ru: str,
    blueprint: Blueprint,
    error_answer: Callable[[], Response] | None = None,
) -> SimulatorDef:
    """Add a simulator; its blueprint is mounted under /<name>/ by every host built afterwards."""
    if not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"bad simulator name {name!r}")
    definition = SimulatorDef(name, title_ru, blueprint, error_answer)
    SIMULATORS[name] = definition
    return definition


def load_simulators() -> dict[str, SimulatorDef]:
    """Import every module of this package so that its `register_simulator` call runs."""
    import simulators

    for info in pkgutil.iter_modules(simulators.__path__):
        if info.name not in _NOT_SIMULATOR_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"simulators.{info.name}")
    return SIMULATORS


@dataclass
class Control:
    mode: str = "normal"
    delay: float = DEFAULT_DELAY
    share: float = 1.0  # part of the requests that mode "errors" fails
    store: dict[str, Any] = field(default_factory=dict)  # the simulator's own memory

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "delay": self.delay, "share": self.share}


class Controls:
    """Modes of the simulators of one host; read and changed from several server threads."""

    def __init__(self, names: list[str]) -> None:
        self._lock = threading.Lock()
        self._controls = {name: Control() for name in names}

    def get(self, name: str) -> Control:
        with self._lock:
            return self._controls[name]

    def set(self, name: str, mode: str, delay: float, share: float | None = None) -> Control:
        with self._lock:
            control = self._controls[name]
            control.mode, control.delay = mode, delay
            if share is not None:
                control.share = share
            return control

    def reset(self) -> None:
        with self._lock:
            for control in self._controls.values():
                control.mode, control.delay, control.share = "normal", DEFAULT_DELAY, 1.0


def _controls() -> Controls:
    return current_app.extensions["simulators"]


def behaviour(name: str) -> Response | None:
    """What a simulator view calls first: None to answer normally, else the answer to give.

    slow sleeps for the delay and then lets the view answer; down answers 503; errors gives
    the simulator's own error answer (or a plain 500 when it has none) to `share` of the requests.
    """
    control = _controls().get(name)
    if control.mode == "slow":
        time.sleep(control.delay)
        return None
    if control.mode == "down":
        response = jsonify({"error": "Сервис недоступен", "simulator": name})
        response.status_code = 503
        response.headers["Retry-After"] = "60"
        return response
    if control.mode == "errors" and random.random() < control.share:
        definition = SIMULATORS.get(name)
        if definition is not None and definition.error_answer is not None:
            return definition.error_answer()
        response = jsonify({"error": "Внутренняя ошибка сервиса", "simulator": name})
        response.status_code = 500
        return response
    return None


def control_of(name: str) -> Control:
    """The current mode, delay and share of a simulator in this host."""
    return _controls().get(name)


def processed_then_answered(name: str, handle: Callable[[], Response]) -> Response:
    """The modes for a system that keeps what it receives: in "slow" the request is processed and
    stored first and only the answer is late (a client timeout loses just the answer); the other
    modes answer instead of `handle`."""
    control = control_of(name)
    if control.mode != "slow":
        return behaviour(name) or handle()
    response = handle()
    time.sleep(control.delay)
    return response


def storage(name: str) -> dict[str, Any]:
    """The simulator's memory in this host (received documents, issued ids …)."""
    return _controls().get(name).store


def _refuse(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def create_simulators_app(config: dict[str, Any] | None = None) -> Flask:
    """The host app with every registered simulator mounted under /<name>/."""
    definitions = load_simulators()
    app = Flask("simulators")
    app.json.ensure_ascii = False
    app.config.update(config or {})
    app.extensions["simulators"] = Controls(list(definitions))
    for definition in definitions.values():
        app.register_blueprint(definition.blueprint, url_prefix=f"/{definition.name}")

    @app.get("/")
    def index():
        controls = _controls()
        return jsonify(
            {
                "simulators": [
                    {"name": d.name, "title": d.title_ru, **controls.get(d.name).as_dict()}
                    for d in definitions.values()
                ]
            }
        )

    @app.route("/<name>/_control", methods=["GET", "POST"])
    def control(name: str):
        if name not in definitions:
            return _refuse(404, f"Симулятор «{name}» не найден.")
        controls = _controls()
        if request.method == "POST":
            payload = request.get_json(silent=True)
            if not isinstance(payload, dict):
                return _refuse(400, "Ожидается JSON-объект с полями mode, delay и share.")
            current = controls.get(name)
            mode = payload.get("mode", current.mode)
            if mode not in MODES:
                return _refuse(400, f"Неизвестный режим «{mode}». Допустимые: {', '.join(MODES)}.")
            delay = payload.get("delay", current.delay)
            if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= MAX_DELAY:
                return _refuse(400, f"Задержка delay должна быть числом секунд от 0 до {MAX_DELAY:g}.")
            share = payload.get("share", current.share)
            if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
                return _refuse(400, "Доля ошибок share должна быть числом от 0 до 1.")
            controls.set(name, mode, float(delay), float(share))
            log.info("Симулятор %s: режим %s, задержка %s с, доля ошибок %s", name, mode, delay, share)
        return jsonify({"name": name, "title": definitions[name].title_ru, **controls.get(name).as_dict()})

    @app.post("/_reset")
    def reset():
        _controls().reset()
        return jsonify({"status": "ok"})

    return app


def start_simulators(
    port: int = 0, host: str = "127.0.0.1", config: dict[str, Any] | None = None
) -> tuple[BaseWSGIServer, str]:
    """Serve the host in a daemon thread; port 0 picks a free port. Stop with server.shutdown()."""
    app = create_simulators_app(config)
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="simulators", daemon=True)
    thread.start()
    base_url = f"http://{host}:{server.server_port}"
    log.info("Симуляторы внешних систем: %s (%s)", base_url, ", ".join(SIMULATORS) or "нет")
    return server, base_url
