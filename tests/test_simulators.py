"""The simulators host: a real HTTP server on 127.0.0.1 whose systems can be told to misbehave."""

from __future__ import annotations

import time

import pytest
import requests

from simulators import start_simulators


@pytest.fixture
def host():
    server, base_url = start_simulators(port=0)
    yield base_url
    server.shutdown()
    server.server_close()


def _control(base_url: str, name: str, **payload) -> requests.Response:
    return requests.post(f"{base_url}/{name}/_control", json=payload, timeout=5)


def test_index_lists_simulators_and_modes(host):
    answer = requests.get(f"{host}/", timeout=5)
    assert answer.status_code == 200
    echo = next(s for s in answer.json()["simulators"] if s["name"] == "echo")
    assert echo["mode"] == "normal" and echo["title"].startswith("Эхо")


def test_echo_answers_what_it_got(host):
    answer = requests.post(f"{host}/echo/", json={"снилс": "112-233-445 95"}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["echo"] == {"снилс": "112-233-445 95"}
    assert answer.json()["calls"] == 1


def test_modes_change_the_http_answers(host):
    assert _control(host, "echo", mode="down").json()["mode"] == "down"
    down = requests.get(f"{host}/echo/", timeout=5)
    assert down.status_code == 503 and down.json()["error"] == "Сервис недоступен"

    assert _control(host, "echo", mode="errors").status_code == 200
    errors = requests.get(f"{host}/echo/", timeout=5)
    assert errors.status_code == 500 and errors.json()["code"] == "ECHO-500"  # the simulator's own error

    assert _control(host, "echo", mode="slow", delay=0.6).json() == {
        "name": "echo",
        "title": "Эхо (проверка симуляторов)",
        "mode": "slow",
        "delay": 0.6,
        "share": 1.0,
    }
    started = time.monotonic()
    slow = requests.get(f"{host}/echo/", timeout=5)
    assert slow.status_code == 200 and time.monotonic() - started >= 0.6
    with pytest.raises(requests.Timeout):  # a client with a shorter timeout gives up
        requests.get(f"{host}/echo/", timeout=0.2)

    _control(host, "echo", mode="normal")
    started = time.monotonic()
    normal = requests.get(f"{host}/echo/", timeout=5)
    assert normal.status_code == 200 and time.monotonic() - started < 0.5
    assert requests.get(f"{host}/echo/_control", timeout=5).json()["mode"] == "normal"


def test_errors_share_fails_only_that_part_of_the_requests(host):
    assert _control(host, "echo", mode="errors", share=0).json()["share"] == 0
    assert all(requests.get(f"{host}/echo/", timeout=5).status_code == 200 for _ in range(5))

    _control(host, "echo", share=0.5)  # mode stays "errors"
    codes = {requests.get(f"{host}/echo/", timeout=5).status_code for _ in range(40)}
    assert codes == {200, 500}  # a flaky service: some requests fail, some pass

    _control(host, "echo", share=1)
    assert all(requests.get(f"{host}/echo/", timeout=5).status_code == 500 for _ in range(5))
    assert requests.post(f"{host}/_reset", timeout=5).status_code == 200
    assert requests.get(f"{host}/echo/_control", timeout=5).json()["share"] == 1.0


def test_reset_puts_every_simulator_back_to_normal(host):
    _control(host, "echo", mode="down")
    assert requests.post(f"{host}/_reset", timeout=5).status_code == 200
    assert requests.get(f"{host}/echo/", timeout=5).status_code == 200


def test_bad_control_requests_are_refused_in_russian_and_change_nothing(host):
    bad_mode = _control(host, "echo", mode="broken")
    assert bad_mode.status_code == 400 and "Неизвестный режим" in bad_mode.json()["error"]
    bad_delay = _control(host, "echo", mode="slow", delay=-1)
    assert bad_delay.status_code == 400 and "Задержка" in bad_delay.json()["error"]
    bad_share = _control(host, "echo", mode="errors", share=1.5)
    assert bad_share.status_code == 400 and "Доля ошибок" in bad_share.json()["error"]
    not_json = requests.post(f"{host}/echo/_control", data="mode=down", timeout=5)
    assert not_json.status_code == 400
    unknown = _control(host, "nosuch", mode="down")
    assert unknown.status_code == 404 and "не найден" in unknown.json()["error"]
    assert requests.get(f"{host}/echo/_control", timeout=5).json()["mode"] == "normal"
    assert requests.get(f"{host}/echo/", timeout=5).status_code == 200


def test_each_host_keeps_its_own_modes(host):
    other_server, other = start_simulators(port=0)
    try:
        _control(other, "echo", mode="down")
        assert requests.get(f"{other}/echo/", timeout=5).status_code == 503
        assert requests.get(f"{host}/echo/", timeout=5).status_code == 200
    finally:
        other_server.shutdown()
        other_server.server_close()
