"""The ТФОМС simulator as the portal and a demo user meet it: request DBF files over real HTTP,
answer DBF files back (and into the exchange folder), explicit register entries, modes."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import pytest
import requests

from portal.clinical.identifiers import enp_is_valid
from portal.tfoms.dbf import ANSWER_FIELDS, REQUEST_FIELDS, DbfField, dbf_bytes, read_dbf
from simulators import start_simulators
from simulators.tfoms import DEFAULT_INSURERS, EERP_NOT_FOUND, INSUFFICIENT, answer_dbf

SURNAMES = ("ИВАНОВА", "ПЕТРОВА", "СМИРНОВА", "КУЗНЕЦОВА", "ПОПОВА", "ВАСИЛЬЕВА", "СОКОЛОВА", "МИХАЙЛОВА")
NAMES = ("МАРИЯ", "АННА", "ЕЛЕНА", "ОЛЬГА", "НАТАЛЬЯ")
PATRONYMICS = ("ПЕТРОВНА", "ИВАНОВНА", None, "СЕРГЕЕВНА")
FILE_NAME = "350001_24112026_1.DBF"
INSURER_CODES = {code: ogrn for code, ogrn, _ in DEFAULT_INSURERS}


def _people(count: int, start: int = 0) -> list[dict]:
    people = []
    for i in range(start, start + count):
        people.append(
            {
                "FAM": SURNAMES[i % len(SURNAMES)],
                "IM": NAMES[(i // len(SURNAMES)) % len(NAMES)],
                "OT": PATRONYMICS[i % len(PATRONYMICS)],
                "DR": date(1975, 1, 1) + timedelta(days=37 * i),
                "W": 2,
                "SS": f"{100 + i % 900:03d}-200-300 {i % 100:02d}" if i % 3 else None,
                "C_DOC": 14 if i % 2 else None,
                "S_DOC": f"19 {i % 100:02d}" if i % 2 else None,
                "N_DOC": f"{500000 + i}" if i % 2 else None,
                "OPDOC": 3 if i % 5 == 0 else None,
                "ENP": None,
                "DIN": date(2026, 11, 1),
                "DOUT": date(2026, 11, 24) if i % 4 else None,
            }
        )
    return people


def _request(people: list[dict]) -> bytes:
    return dbf_bytes(REQUEST_FIELDS, people)


@pytest.fixture(scope="module")
def _server(tmp_path_factory):
    exchange = tmp_path_factory.mktemp("tfoms") / "inbox"
    server, base_url = start_simulators(port=0, config={"TFOMS_EXCHANGE_DIR": str(exchange)})
    yield base_url, exchange
    server.shutdown()
    server.server_close()


@pytest.fixture
def exchange(_server):
    return _server[1]


@pytest.fixture
def host(_server):
    """One host for the module; every test starts with normal modes, an empty register and folder."""
    base_url, exchange = _server
    requests.post(f"{base_url}/_reset", timeout=5)
    requests.delete(f"{base_url}/tfoms/_register", timeout=5)
    if exchange.exists():
        for path in exchange.iterdir():
            path.unlink()
    return base_url


def _post(host: str, data: bytes, name: str | None = FILE_NAME, **params) -> requests.Response:
    return requests.post(
        f"{host}/tfoms/ident",
        data=data,
        params={"name": name, **params} if name else params,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )


def _answer(response: requests.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return list(read_dbf(response.content))


def test_answer_echoes_the_request_and_numbers_its_records(host):
    people = _people(50)
    response = _post(host, _request(people))
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"] == f"attachment; filename={FILE_NAME}"
    table = read_dbf(response.content)
    assert [f.name for f in table.fields] == [f.name for f in ANSWER_FIELDS]
    answers = list(table)
    assert 30 <= len(answers) < 50  # the virtual register leaves some people out
    numbers = [a["NREC"] for a in answers]
    assert numbers == sorted(set(numbers)) and all(1 <= n <= 50 for n in numbers)
    for answer in answers:
        asked = people[answer["NREC"] - 1]
        for name in ("FAM", "IM", "OT", "DR", "W", "SS", "OPDOC", "SPOL", "NPOL", "ENP", "DIN", "DOUT"):
            assert answer[name] == asked.get(name), name
        assert (answer["DOCTP"], answer["DOCS"], answer["DOCN"]) == (
            asked["C_DOC"],
            asked["S_DOC"],
            asked["N_DOC"],
        )
        if answer["EERP"]:
            assert answer["EERP"] == EERP_NOT_FOUND
            assert answer["RQ"] is answer["RENP"] is answer["ROPDOC"] is answer["RDBEG"] is None
        else:
            assert INSURER_CODES[answer["RQ"]] == answer["RQOGRN"]
            assert answer["ROKATO"] == 19000000000
            assert answer["ROPDOC"] in {1, 2, 3, 4, 5}
            assert enp_is_valid(answer["RENP"])  # the portal's own ЕНП check agrees
            assert answer["RDBEG"] < date.today() + timedelta(days=1)
            if answer["ROPDOC"] in (3, 4, 5):
                assert answer["RNPOL"] == answer["RENP"] and answer["RSPOL"] is None
                assert answer["RDEND"] is None


def test_explicit_register_entries_get_exactly_their_outcome(host):
    entries = [
        {
            "fam": "Орлова",
            "im": "Вера",
            "ot": "Игоревна",
            "dr": "1991-04-05",
            "outcome": "insured",
            "rq": "35003",
            "rqogrn": "1033500000033",
            "ropdoc": 4,
            "rnpol": "3512345678901234",
            "renp": "3512345678901234",
            "rdbeg": "2020-01-15",
            "rdend": "2030-12-31",
            "rokato": 19401000000,
        },
        {"fam": "ЗАЙЦЕВА", "im": "ИННА", "dr": "1988-08-08", "outcome": "errors"},
        {
            "fam": "Лебедева",
            "im": "Дарья",
            "dr": "1999-09-09",
            "outcome": "errors",
            "repl": "2=Не совпадает СНИЛС;5=Не совпадает дата рождения;",
        },
        {"fam": "Козлова", "im": "Юлия", "ot": "", "dr": "2001-01-01", "outcome": "eerp"},
        {"fam": "Новикова", "im": "Ирина", "dr": "1970-07-07", "outcome": "missing"},
    ]
    registered = requests.post(f"{host}/tfoms/_register", json=entries, timeout=5)
    assert registered.status_code == 200 and len(registered.json()["people"]) == 5
    asked = [
        {
            "FAM": "ОРЛОВА",
            "IM": "ВЕРА",
            "OT": "ИГОРЕВНА",
            "DR": date(1991, 4, 5),
            "W": 2,
            "SS": "112-233-445 95",
        },
        {"FAM": "Зайцева", "IM": "Инна", "DR": date(1988, 8, 8), "W": 2, "C_DOC": 14, "N_DOC": "1"},
        {"FAM": "ЛЕБЕДЕВА", "IM": "ДАРЬЯ", "DR": date(1999, 9, 9), "W": 2, "OPDOC": 3},
        {"FAM": "КОЗЛОВА", "IM": "ЮЛИЯ", "DR": date(2001, 1, 1), "W": 2, "C_DOC": 14},
        {"FAM": "НОВИКОВА", "IM": "ИРИНА", "DR": date(1970, 7, 7), "W": 2, "C_DOC": 14},
        {"FAM": None, "IM": "БЕЗ ФАМИЛИИ", "DR": date(1970, 7, 7), "W": 2},
    ]
    # through the multipart form field "file", as the demo page sends it
    response = requests.post(
        f"{host}/tfoms/ident",
        files={"file": (FILE_NAME, _request(asked), "application/octet-stream")},
        timeout=30,
    )
    answers = {a["NREC"]: a for a in _answer(response)}
    assert sorted(answers) == [1, 2, 3, 4, 6]  # Новикова is missing from the answer

    orlova = answers[1]
    assert (orlova["FAM"], orlova["IM"], orlova["OT"]) == ("ОРЛОВА", "ВЕРА", "ИГОРЕВНА")
    assert (orlova["RQ"], orlova["RQOGRN"], orlova["ROPDOC"], orlova["ROKATO"]) == (
        "35003",
        "1033500000033",
        4,
        19401000000,
    )
    assert (orlova["RNPOL"], orlova["RENP"]) == ("3512345678901234", "3512345678901234")
    assert (orlova["RDBEG"], orlova["RDEND"]) == (date(2020, 1, 15), date(2030, 12, 31))
    assert orlova["EERP"] is None and orlova["REPL"] is None

    zaytseva = answers[2]
    assert zaytseva["FAM"] == "Зайцева"  # echoed as asked, matched regardless of case
    assert zaytseva["REPL"] and zaytseva["REPL"].endswith(";") and "=" in zaytseva["REPL"]
    assert zaytseva["RQ"] in INSURER_CODES and enp_is_valid(zaytseva["RENP"]) and zaytseva["EERP"] is None

    assert answers[3]["REPL"] == "2=Не совпадает СНИЛС;5=Не совпадает дата рождения;"
    assert answers[3]["RQ"] in INSURER_CODES and answers[3]["RNPOL"]

    assert answers[4]["EERP"] == EERP_NOT_FOUND
    assert all(answers[4][f] is None for f in ("RQ", "RQOGRN", "ROPDOC", "RNPOL", "RENP", "RDBEG", "REPL"))

    assert answers[6]["EERP"] == INSUFFICIENT and answers[6]["IM"] == "БЕЗ ФАМИЛИИ"

    listed = requests.get(f"{host}/tfoms/_register", timeout=5).json()["people"]
    assert {p["fam"] for p in listed} == {"Орлова", "ЗАЙЦЕВА", "Лебедева", "Козлова", "Новикова"}
    assert requests.delete(f"{host}/tfoms/_register", timeout=5).json() == {"people": []}


def test_the_virtual_register_is_deterministic_and_keeps_its_shares(host):
    people = _people(1000)
    first = _answer(_post(host, _request(people)))
    again = _answer(_post(host, _request(people)))
    assert first == again
    outcomes = Counter("eerp" if a["EERP"] else "errors" if a["REPL"] else "insured" for a in first)
    outcomes["missing"] = 1000 - len(first)
    assert 700 <= outcomes["insured"] <= 800, outcomes
    assert 50 <= outcomes["errors"] <= 110, outcomes
    assert 50 <= outcomes["eerp"] <= 110, outcomes
    assert 60 <= outcomes["missing"] <= 120, outcomes
    insurers = Counter(a["RQ"] for a in first if not a["EERP"])
    assert set(insurers) == set(INSURER_CODES)
    # a person asked alone gets the same answer as in the big file
    sample = first[17]
    (alone,) = _answer(_post(host, _request([people[sample["NREC"] - 1]])))
    assert {k: v for k, v in alone.items() if k != "NREC"} == {k: v for k, v in sample.items() if k != "NREC"}


def test_garbage_is_refused_with_400_and_a_russian_reason(host):
    refused = _post(host, b"FAM;IM;DR\n\xc8\xc2\xc0\xcd\xce\xc2\xc0;\n" * 10)
    assert refused.status_code == 400
    assert refused.json()["error"].startswith(
        "Файл запроса не принят: Это не файл DBF: неизвестный байт версии"
    )

    not_a_request = dbf_bytes([DbfField("FAM", "C", 60), DbfField("DR", "D", 8)], [{"FAM": "ИВАНОВА"}])
    refused = _post(host, not_a_request)
    assert refused.status_code == 400
    assert (
        "нет полей: IM, OT, W, SS, C_DOC, S_DOC, N_DOC, OPDOC, SPOL, NPOL, ENP, DIN, DOUT"
        in refused.json()["error"]
    )

    assert _post(host, b"").json() == {"error": "Файл запроса пуст."}
    refused = _post(host, _request(_people(1)), name="запрос от МО?.DBF")
    assert refused.status_code == 400 and "Недопустимое имя файла" in refused.json()["error"]


def test_down_and_errors_modes(host):
    request_file = _request(_people(3))
    requests.post(f"{host}/tfoms/_control", json={"mode": "down"}, timeout=5)
    down = _post(host, request_file)
    assert down.status_code == 503 and down.json()["error"] == "Сервис недоступен"
    requests.post(f"{host}/tfoms/_control", json={"mode": "errors", "share": 1}, timeout=5)
    failed = _post(host, request_file)
    assert failed.status_code == 500 and "ТФОМС" in failed.json()["error"]
    requests.post(f"{host}/tfoms/_control", json={"mode": "normal"}, timeout=5)
    assert _post(host, request_file).status_code == 200


def test_deliver_puts_the_answer_into_the_exchange_folder(host, exchange):
    response = _post(host, _request(_people(20)), deliver=1)
    assert response.status_code == 200
    delivered = exchange / FILE_NAME
    assert delivered.read_bytes() == response.content
    assert [p.name for p in exchange.iterdir()] == [FILE_NAME]  # no temporary file left behind

    # the file name may come in the X-File-Name header too
    response = requests.post(
        f"{host}/tfoms/ident?deliver=1",
        data=_request(_people(5)),
        headers={"Content-Type": "application/octet-stream", "X-File-Name": "350001_24112026_2.DBF"},
        timeout=30,
    )
    assert response.status_code == 200
    assert (exchange / "350001_24112026_2.DBF").read_bytes() == response.content

    refused = _post(host, _request(_people(5)), name=None, deliver=1)
    assert refused.status_code == 400 and "Укажите имя файла запроса" in refused.json()["error"]


def test_deliver_without_an_exchange_folder_is_refused():
    server, base_url = start_simulators(port=0)
    try:
        refused = _post(base_url, _request(_people(2)), deliver=1)
        assert refused.status_code == 400
        assert "TFOMS_EXCHANGE_DIR" in refused.json()["error"]
        assert _post(base_url, _request(_people(2))).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("Орлова Вера 1991-04-05", "Ожидается JSON-список людей"),
        ([{"fam": "Орлова", "dr": "1991-04-05"}], "Запись 1: не указано поле im."),
        ([{"fam": "Орлова", "im": "Вера", "dr": "05.04.1991"}], "Запись 1: поле dr — дата в виде ГГГГ-ММ-ДД"),
        ([{"fam": "Орлова", "im": "Вера", "dr": "1991-04-05", "outcome": "dead"}], "исход «dead» неизвестен"),
        ([{"fam": "Орлова", "im": "Вера", "dr": "1991-04-05", "ropdoc": 9}], "ropdoc — тип полиса F008"),
        ([{"fam": "Орлова", "im": "Вера", "dr": "1991-04-05", "renp": "123"}], "renp — ЕНП из 16 цифр"),
        ([{"fam": "Орлова", "im": "Вера", "dr": "1991-04-05", "polis": "1"}], "неизвестные поля polis"),
        ([{"fam": "Орлова", "im": "Вера", "dr": "1991-04-05", "eerp": "€"}], "нет в кодировке CP866"),
    ],
)
def test_bad_register_entries_are_refused_and_change_nothing(host, entries, message):
    kept = {"fam": "Орлова", "im": "Вера", "dr": "1991-04-05", "outcome": "eerp"}
    requests.post(f"{host}/tfoms/_register", json=[kept], timeout=5)
    good = {"fam": "Волкова", "im": "Мария", "dr": "1992-02-02"}
    payload = [good, *entries] if isinstance(entries, list) else entries
    refused = requests.post(f"{host}/tfoms/_register", json=payload, timeout=5)
    assert refused.status_code == 400
    assert message.replace("Запись 1", "Запись 2") in refused.json()["error"]
    assert [p["fam"] for p in requests.get(f"{host}/tfoms/_register", timeout=5).json()["people"]] == [
        "Орлова"
    ]


def test_demo_page_uploads_a_request_and_gives_the_answer_back(host):
    page = requests.get(f"{host}/tfoms/", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert 'enctype="multipart/form-data"' in page.text and 'name="file"' in page.text
    assert "Положить ответ и в папку обмена" in page.text
    request_file = _request(_people(10))
    answer = requests.post(
        f"{host}/tfoms/ident",
        files={"file": (FILE_NAME, request_file)},
        data={"html": "1"},
        timeout=30,
    )
    assert answer.status_code == 200
    assert answer.headers["Content-Disposition"] == f"attachment; filename={FILE_NAME}"
    assert answer.content == answer_dbf(request_file)
    refused = requests.post(
        f"{host}/tfoms/ident", files={"file": ("notes.txt", b"hello")}, data={"html": "1"}, timeout=30
    )
    assert refused.status_code == 400 and "text/html" in refused.headers["Content-Type"]
    assert "Это не файл DBF" in refused.text and 'role="alert"' in refused.text


def test_the_host_lists_the_tfoms_simulator(host):
    listed = requests.get(f"{host}/", timeout=5).json()["simulators"]
    assert {"name": "tfoms", "title": "ТФОМС (пакетная идентификация, файловый обмен)"}.items() <= next(
        s for s in listed if s["name"] == "tfoms"
    ).items()


def test_temporary_certificates_run_from_the_answer_date():
    today = date(2026, 11, 24)
    answers = list(read_dbf(answer_dbf(_request(_people(400)), today=today)))
    assert read_dbf(answer_dbf(_request(_people(1)), today=today)).last_update == today
    temporary = [a for a in answers if a["ROPDOC"] == 2]
    assert temporary, "the virtual register gives some temporary certificates"
    for answer in temporary:
        assert today - timedelta(days=30) < answer["RDBEG"] <= today
        assert answer["RDEND"] - answer["RDBEG"] == timedelta(days=45)
        assert len(answer["RNPOL"]) == 9 and enp_is_valid(answer["RENP"])
    old_style = [a for a in answers if a["ROPDOC"] == 1]
    assert all(a["RSPOL"] == "35-ВО" and a["RDEND"] is None for a in old_style)
