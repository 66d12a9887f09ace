"""ТФОМС stand-in, file exchange: batch identification of insured persons by DBF (seed 4.3,
specs/tfoms/NOTES.md §2).

    GET    /tfoms/                  a page for a demo user: upload a request DBF, download the answer
    POST   /tfoms/ident             the request DBF as the raw body (file name in ?name= or the
                                    X-File-Name header) or as the multipart field "file"; answers
                                    200 with the answer DBF under the same file name. ?deliver=1
                                    also puts the answer into the host config TFOMS_EXCHANGE_DIR
                                    (written to a temporary ".part-" name, then renamed)
    GET    /tfoms/_register         the explicit register entries (JSON)
    POST   /tfoms/_register         add entries: a JSON list of {"fam", "im", "ot", "dr":
                                    "YYYY-MM-DD", "outcome": "insured"|"errors"|"eerp"|"missing",
                                    optional "rq", "rqogrn", "rokato", "ropdoc", "rspol",
                                    "rnpol", "renp", "rdbeg", "rdend", "repl", "eerp"}
    DELETE /tfoms/_register         forget the explicit entries

The answer (ANSWER_FIELDS, CP866) has one record per request record that ТФОМС answers, NREC =
the record's number in the request. It echoes the request's FAM, IM, OT, DR, W, SS, OPDOC, SPOL,
NPOL, ENP, DIN, DOUT unchanged and its C_DOC/S_DOC/N_DOC as DOCTP/DOCS/DOCN, so the portal can
find its record by those fields, and then by outcome:

* insured — the policy: RQ (СМО code, F002), RQOGRN (ОГРН of the СМО), ROKATO (ОКАТО of the
  territory of insurance), ROPDOC (policy type), RSPOL/RNPOL (series/number), RENP (ЕНП),
  RDBEG/RDEND (validity; RDEND empty = open-ended);
* errors — the policy as above and REPL "code=text;code=text;" (codes of REPL_ERRORS);
* eerp — EERP «Застрахованное лицо не найдено в РС ЕРЗ», no policy;
* missing — no answer record at all (the portal then says «Данные от ТФОМС не получены»).

A request record without FAM or DR gets EERP INSUFFICIENT (ТФОМС cannot look anyone up).

Who is who: explicit entries (loaded through /_register) by (FAM, IM, OT, DR), compared in upper
case; everybody else comes from a deterministic "virtual register" keyed by a SHA-256 of
FAM|IM|OT|DR: about 75 % insured, 8 % insured with REPL errors, 8 % EERP, 9 % missing, insured
by DEFAULT_INSURERS. The same person always gets the same answer (the temporary certificate's
dates follow the answer date, see `_virtual_policy`).

Our assumptions (not in the sources): ROPDOC is the ФОМС F008 code — 1 полис старого образца,
2 временное свидетельство, 3 полис единого образца, 4 электронный полис единого образца,
5 полис в составе УЭК; REPL codes and texts are ours (REPL_ERRORS); ROKATO is the 11-digit ОКАТО
of Вологодская область. The ЕНП check digit is computed here again (the outside system's own
code), so a bug in the portal's check cannot hide in the simulator.

Modes (behaviour("tfoms")) apply to POST /tfoms/ident before the file is read: "down" answers
503, "errors" a JSON 500, "slow" delays.
"""

from __future__ import annotations

import hashlib
import html
import io
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from portal.clinical.names import INSURER_LIST, insurer_of_enp
from portal.tfoms.dbf import (
    ANSWER_FIELDS,
    REQUEST_FIELDS,
    DbfError,
    dbf_bytes,
    has_fields,
    read_dbf,
)
from simulators.server import behaviour, control_of, register_simulator, storage

NAME = "tfoms"
TITLE = "ТФОМС (пакетная идентификация, файловый обмен)"
ENCODING = "cp866"

bp = Blueprint("sim_tfoms", __name__)

# (F002 code, ОГРН, name) of the СМО of the demo region; the portal's demo data uses the same.
DEFAULT_INSURERS: tuple[tuple[str, str, str], ...] = INSURER_LIST  # the demo region's СМО
REGION_OKATO = 19000000000  # Вологодская область
ENP_REGION = "35"  # first digits of the ЕНП issued in the region (our assumption)

# ROPDOC, ФОМС F008 (our reading, see the module docstring).
POLICY_TYPES: dict[int, str] = {
    1: "Полис ОМС старого образца",
    2: "Временное свидетельство",
    3: "Полис ОМС единого образца",
    4: "Электронный полис ОМС единого образца",
    5: "Полис ОМС в составе УЭК",
}
TEMPORARY_DAYS = 45  # a temporary certificate is valid this long

# REPL codes of the simulator (invented: the real list is not public).
REPL_ERRORS: dict[int, str] = {
    1: "Не совпадает фамилия",
    2: "Не совпадает СНИЛС",
    3: "Не совпадают реквизиты документа, удостоверяющего личность",
    4: "Не совпадают серия и номер полиса",
    5: "Не совпадает дата рождения",
    6: "Не совпадает пол",
    7: "Не совпадает ЕНП",
}
EERP_NOT_FOUND = "Застрахованное лицо не найдено в РС ЕРЗ"
INSUFFICIENT = "Недостаточно данных для идентификации: не указаны фамилия или дата рождения"

OUTCOMES = ("insured", "errors", "eerp", "missing")
# Shares of the virtual register, in percent, in the order of OUTCOMES.
VIRTUAL_SHARES = (75, 8, 8, 9)

# Fields of the answer copied from the request, and the request's document fields renamed.
ECHOED = ("FAM", "IM", "OT", "DR", "W", "SS", "OPDOC", "SPOL", "NPOL", "ENP", "DIN", "DOUT")
RENAMED = {"C_DOC": "DOCTP", "S_DOC": "DOCS", "N_DOC": "DOCN"}

_LENGTHS = {f.name: f.length for f in ANSWER_FIELDS}
_SAFE_NAME = re.compile(r"[\w\-]+(\.[\w\-]+)*")


def enp_check_digit(first15: str) -> str:
    """Control digit of a 16-digit ЕНП: digits in odd places from the right, read right to left,
    form a number that is doubled; the even-place digits are written before it; the control
    digit brings the sum of all the digits of the result up to a multiple of ten."""
    from_right = first15[::-1]
    composed = from_right[1::2] + str(int(from_right[0::2]) * 2)
    return str(-sum(map(int, composed)) % 10)


# --- the register ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """What ТФОМС knows about one person: the outcome of identification and the policy."""

    fam: str
    im: str
    ot: str
    dr: date
    outcome: str
    rq: str | None = None
    rqogrn: str | None = None
    rokato: int | None = None
    ropdoc: int | None = None
    rspol: str | None = None
    rnpol: str | None = None
    renp: str | None = None
    rdbeg: date | None = None
    rdend: date | None = None
    repl: str | None = None
    eerp: str | None = None

    @property
    def key(self) -> tuple[str, str, str, date]:
        return person_key(self.fam, self.im, self.ot, self.dr)

    def as_json(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, date) else v for k, v in asdict(self).items()}


def person_key(fam: str | None, im: str | None, ot: str | None, dr: date) -> tuple[str, str, str, date]:
    return (_upper(fam), _upper(im), _upper(ot), dr)


def _upper(value: str | None) -> str:
    return " ".join((value or "").split()).upper()


def _digest(key: tuple[str, str, str, date]) -> bytes:
    fam, im, ot, dr = key
    return hashlib.sha256(f"{fam}|{im}|{ot}|{dr.isoformat()}".encode()).digest()


def _number(digest: bytes, start: int, length: int) -> int:
    return int.from_bytes(digest[start : start + length], "big")


def _digits(digest: bytes, start: int, count: int) -> str:
    return str(_number(digest, start, 8) % 10**count).zfill(count)


def virtual_outcome(key: tuple[str, str, str, date]) -> str:
    bucket = _number(_digest(key), 0, 4) % 100
    for outcome, share in zip(OUTCOMES, VIRTUAL_SHARES, strict=True):
        if bucket < share:
            return outcome
        bucket -= share
    return OUTCOMES[-1]


def _virtual_policy(key: tuple[str, str, str, date], asked: Mapping[str, Any], today: date) -> dict[str, Any]:
    """The policy the virtual register gives the person: insurer, type, number, validity.

    A valid ЕНП in the request is taken as the person's own, and its СМО is the one the demo
    region gives that ЕНП (`insurer_of_enp`), so the register confirms the demo's policies;
    the policy type and number asked about are kept too. Otherwise all comes from the hash.
    The begin date is a fixed day in the past; a temporary certificate (type 2) was issued at
    most 30 days before `today` and runs TEMPORARY_DAYS days; other policies are open-ended.
    """
    digest = _digest(key)
    request_enp = str(asked.get("ENP") or "").strip()
    kind = digest[5] % 100
    ropdoc = 3 if kind < 70 else 4 if kind < 85 else 2 if kind < 93 else 1 if kind < 97 else 5
    if enp_is_valid(request_enp):
        enp = request_enp
        code, ogrn, _ = insurer_of_enp(enp)
        ropdoc = asked.get("OPDOC") if asked.get("OPDOC") in (1, 2, 3, 4, 5) else ropdoc
    else:
        code, ogrn, _ = DEFAULT_INSURERS[digest[4] % len(DEFAULT_INSURERS)]
        first15 = ENP_REGION + _digits(digest, 6, 13)
        enp = first15 + enp_check_digit(first15)
    policy: dict[str, Any] = {
        "rq": code,
        "rqogrn": ogrn,
        "rokato": REGION_OKATO,
        "ropdoc": ropdoc,
        "rspol": None,
        "rnpol": enp,
        "renp": enp,
        "rdbeg": date(2011, 5, 1) + timedelta(days=_number(digest, 14, 2) % 4000),
        "rdend": None,
    }
    asked_number = str(asked.get("NPOL") or "").strip() or None
    if ropdoc == 1:
        policy["rspol"] = str(asked.get("SPOL") or "").strip() or "35-ВО"
        policy["rnpol"] = asked_number if enp == request_enp and asked_number else _digits(digest, 16, 8)
    elif ropdoc == 2:
        policy["rnpol"] = asked_number if enp == request_enp and asked_number else _digits(digest, 16, 9)
        policy["rdbeg"] = today - timedelta(days=digest[24] % 30)
        policy["rdend"] = policy["rdbeg"] + timedelta(days=TEMPORARY_DAYS)
    return policy


def enp_is_valid(value: str) -> bool:
    return len(value) == 16 and value.isdigit() and enp_check_digit(value[:15]) == value[15]


def _virtual_repl(key: tuple[str, str, str, date]) -> str:
    digest = _digest(key)
    codes = sorted({2 + digest[25] % 6, 2 + digest[26] % 6} if digest[27] % 2 else {2 + digest[25] % 6})
    return "".join(f"{code}={REPL_ERRORS[code]};" for code in codes)


class Register:
    """Explicit people (tests and demos) before the deterministic virtual register. Thread-safe."""

    def __init__(self, people: list[Person] | None = None) -> None:
        self._lock = threading.Lock()
        self._people: dict[tuple[str, str, str, date], Person] = {}
        self.add(people or [])

    def add(self, people: list[Person]) -> None:
        with self._lock:
            for person in people:
                self._people[person.key] = person

    def clear(self) -> None:
        with self._lock:
            self._people.clear()

    def people(self) -> list[Person]:
        with self._lock:
            return list(self._people.values())

    def explicit(self, key: tuple[str, str, str, date]) -> Person | None:
        with self._lock:
            return self._people.get(key)


def resolve(
    register: Register | None, key: tuple[str, str, str, date], asked: Mapping[str, Any], today: date
) -> Person:
    """The person's outcome and policy: the explicit entry, completed from the virtual register
    where it leaves policy fields out, or the virtual register alone."""
    fam, im, ot, dr = key
    person = register.explicit(key) if register is not None else None
    outcome = person.outcome if person is not None else virtual_outcome(key)
    if outcome in ("eerp", "missing"):
        eerp = (person.eerp if person is not None else None) or EERP_NOT_FOUND
        return Person(fam, im, ot, dr, outcome, eerp=eerp if outcome == "eerp" else None)
    virtual = Person(fam, im, ot, dr, outcome, **_virtual_policy(key, asked, today))
    if outcome == "errors":
        virtual = replace(virtual, repl=_virtual_repl(key))
    if person is None:
        return virtual
    given = {k: v for k, v in asdict(person).items() if v is not None and k not in ("fam", "im", "ot", "dr")}
    return replace(virtual, **given)


# --- answering a request file ----------------------------------------------------------------


def answer_dbf(request: bytes, register: Register | None = None, *, today: date | None = None) -> bytes:
    """The answer DBF (ANSWER_FIELDS, CP866) to a request DBF (REQUEST_FIELDS, CP866).

    Raises DbfError (a Russian message) when the request is not a DBF or lacks request fields.
    """
    today = today or date.today()
    table = read_dbf(request, encoding=ENCODING)
    missing = has_fields(table, [f.name for f in REQUEST_FIELDS])
    if missing:
        raise DbfError(f"В файле запроса нет полей: {', '.join(missing)}.")
    return dbf_bytes(
        ANSWER_FIELDS, _answers(table.numbered(), register, today), encoding=ENCODING, today=today
    )


def _answers(
    requests: Iterator[tuple[int, Mapping[str, Any]]], register: Register | None, today: date
) -> Iterator[dict[str, Any]]:
    for recno, asked in requests:
        record: dict[str, Any] = {name: asked.get(name) for name in ECHOED}
        for source, target in RENAMED.items():
            record[target] = asked.get(source)
        record["NREC"] = recno
        if not asked.get("FAM") or asked.get("DR") is None:
            record["EERP"] = INSUFFICIENT
            yield record
            continue
        key = person_key(asked.get("FAM"), asked.get("IM"), asked.get("OT"), asked["DR"])
        person = resolve(register, key, asked, today)
        if person.outcome == "missing":
            continue
        if person.outcome == "eerp":
            record["EERP"] = person.eerp
        else:
            record.update(
                RQ=person.rq,
                RQOGRN=person.rqogrn,
                ROKATO=person.rokato,
                ROPDOC=person.ropdoc,
                RSPOL=person.rspol,
                RNPOL=person.rnpol,
                RENP=person.renp,
                RDBEG=person.rdbeg,
                RDEND=person.rdend,
                REPL=person.repl if person.outcome == "errors" else None,
            )
        yield record


# --- explicit entries from JSON ----------------------------------------------------------------


_TEXT_FIELDS = ("rq", "rqogrn", "rspol", "rnpol", "repl", "eerp")
_ALLOWED = {"fam", "im", "ot", "dr", "outcome", "rokato", "ropdoc", "renp", "rdbeg", "rdend", *_TEXT_FIELDS}


def parse_people(payload: Any) -> list[Person]:
    """Register entries from the JSON of POST /_register; ValueError with a Russian message."""
    if isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list) or not payload:
        raise ValueError('Ожидается JSON-список людей: [{"fam", "im", "ot", "dr", "outcome", …}].')
    return [_parse_person(item, n) for n, item in enumerate(payload, 1)]


def _parse_person(item: Any, n: int) -> Person:
    where = f"Запись {n}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: ожидается JSON-объект.")
    unknown = sorted(set(item) - _ALLOWED)
    if unknown:
        raise ValueError(
            f"{where}: неизвестные поля {', '.join(unknown)}; допустимы {', '.join(sorted(_ALLOWED))}."
        )
    values: dict[str, Any] = {}
    for name in ("fam", "im", "ot"):
        value = item.get(name)
        if value is None or value == "":
            if name != "ot":
                raise ValueError(f"{where}: не указано поле {name}.")
            value = ""
        values[name] = _text(where, name, value, _LENGTHS[name.upper()])
    values["dr"] = date_field(where, "dr", item.get("dr"), required=True)
    outcome = item.get("outcome", "insured")
    if outcome not in OUTCOMES:
        raise ValueError(f"{where}: исход «{outcome}» неизвестен; допустимы {', '.join(OUTCOMES)}.")
    values["outcome"] = outcome
    for name in _TEXT_FIELDS:
        if item.get(name) is not None:
            values[name] = _text(where, name, item[name], _LENGTHS[name.upper()]) or None
    for name in ("rdbeg", "rdend"):
        values[name] = date_field(where, name, item.get(name), required=False)
    ropdoc = item.get("ropdoc")
    if ropdoc is not None:
        if isinstance(ropdoc, bool) or ropdoc not in POLICY_TYPES:
            raise ValueError(f"{where}: ropdoc — тип полиса F008, число от 1 до 5, а не «{ropdoc}».")
        values["ropdoc"] = ropdoc
    rokato = item.get("rokato")
    if rokato is not None:
        text = str(rokato)
        if isinstance(rokato, bool) or not text.isdigit() or len(text) > _LENGTHS["ROKATO"]:
            raise ValueError(f"{where}: rokato — код ОКАТО до 11 цифр, а не «{rokato}».")
        values["rokato"] = int(text)
    renp = item.get("renp")
    if renp is not None:
        if not isinstance(renp, str) or len(renp) != 16 or not renp.isdigit():
            raise ValueError(f"{where}: renp — ЕНП из 16 цифр, а не «{renp}».")
        values["renp"] = renp
    return Person(**values)


def _text(where: str, name: str, value: Any, length: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: поле {name} должно быть строкой.")
    try:
        size = len(value.strip().encode(ENCODING))
    except UnicodeEncodeError:
        raise ValueError(f"{where}: поле {name} содержит символы, которых нет в кодировке CP866.") from None
    if size > length:
        raise ValueError(f"{where}: поле {name} длиннее {length} символов.")
    return value.strip()


def date_field(where: str, name: str, value: Any, *, required: bool) -> date | None:
    if value is None or value == "":
        if required:
            raise ValueError(f"{where}: не указано поле {name} (дата ГГГГ-ММ-ДД).")
        return None
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where}: поле {name} — дата в виде ГГГГ-ММ-ДД, а не «{value}».") from None


# --- HTTP -------------------------------------------------------------------------------------


@bp.record_once
def _start(setup_state) -> None:
    """One register per host, made when the host app is built."""
    setup_state.app.extensions["simulators"].get(NAME).store["register"] = Register()


def _register() -> Register:
    return storage(NAME)["register"]


def _refuse(message: str, status: int = 400) -> Response:
    if request.form.get("html"):
        page = _page(error=message)
        return Response(page, status=status, content_type="text/html; charset=utf-8")
    response = jsonify({"error": message})
    response.status_code = status
    return response


def _error_answer() -> Response:
    response = jsonify({"error": "Внутренняя ошибка ТФОМС: файл не обработан, повторите позже"})
    response.status_code = 500
    return response


def _request_file() -> tuple[str | None, bytes | None, str | None]:
    """(file name, content, refusal) of POST /ident."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            return None, None, "Не выбран файл запроса (поле формы «file»)."
        return upload.filename, upload.read(), None
    name = request.args.get("name") or request.headers.get("X-File-Name")
    return name, request.get_data(), None


@bp.post("/ident")
def ident():
    answer = behaviour(NAME)
    if answer is not None:
        return answer
    name, content, refusal = _request_file()
    if refusal:
        return _refuse(refusal)
    if name is not None:
        name = Path(name.replace("\\", "/")).name
        if not _SAFE_NAME.fullmatch(name):
            return _refuse(f"Недопустимое имя файла «{name}»: ожидается вида 350001_24112026_1.DBF.")
    deliver = (request.args.get("deliver") or request.form.get("deliver")) in ("1", "true", "on")
    folder = current_app.config.get("TFOMS_EXCHANGE_DIR")
    if deliver and not folder:
        return _refuse("Папка обмена с порталом не настроена (TFOMS_EXCHANGE_DIR): ответ некуда положить.")
    if deliver and not name:
        return _refuse(
            "Укажите имя файла запроса (?name= или X-File-Name): ответ кладётся под тем же именем."
        )
    if not content:
        return _refuse("Файл запроса пуст.")
    try:
        answer_file = answer_dbf(content, _register())
    except DbfError as e:
        return _refuse(f"Файл запроса не принят: {e}")
    if deliver:
        _deliver(Path(folder), name, answer_file)
    return send_file(
        io.BytesIO(answer_file),
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=name or "ANSWER.DBF",
    )


def _deliver(folder: Path, name: str, data: bytes) -> None:
    """Write the answer into the exchange folder so that a reader never sees half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".part-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, folder / name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@bp.route("/_register", methods=["GET", "POST", "DELETE"])
def register_entries():
    register = _register()
    if request.method == "POST":
        try:
            people = parse_people(request.get_json(silent=True))
        except ValueError as e:
            return _refuse(str(e))
        register.add(people)
    elif request.method == "DELETE":
        register.clear()
    return jsonify({"people": [p.as_json() for p in register.people()]})


@bp.get("/")
def page():
    return Response(_page(), content_type="text/html; charset=utf-8")


def _page(error: str | None = None) -> str:
    folder = current_app.config.get("TFOMS_EXCHANGE_DIR")
    mode = control_of(NAME).mode
    deliver = (
        f'<p><label><input type="checkbox" name="deliver" value="1"> Положить ответ и в папку обмена '
        f"портала ({html.escape(str(folder))})</label></p>"
        if folder
        else ""
    )
    notice = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    people = len(_register().people())
    insurers = "".join(
        f"<li>{html.escape(code)} — {html.escape(title)}, ОГРН {html.escape(ogrn)}</li>"
        for code, ogrn, title in DEFAULT_INSURERS
    )
    return f"""<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><title>{html.escape(TITLE)}</title>
<style>body{{font-family:sans-serif;max-width:48rem;margin:2rem auto;line-height:1.4}}
.error{{color:#a00;font-weight:bold}}form{{border:1px solid #ccc;padding:1rem}}</style></head>
<body><h1>{html.escape(TITLE)}</h1>
<p>Симулятор ТФОМС для проверки пакетной идентификации. Скачайте файл запроса на портале
(«Пакетная идентификация ТФОМС» → «Скачать»), загрузите его здесь и получите файл ответа
с тем же именем; затем загрузите ответ на портале кнопкой «Загрузить».</p>
<p>Режим симулятора: <b>{html.escape(mode)}</b>.</p>
{notice}
<form method="post" action="ident" enctype="multipart/form-data">
<input type="hidden" name="html" value="1">
<p><label>Файл запроса (DBF, CP866): <input type="file" name="file" accept=".dbf,.DBF" required></label></p>
{deliver}
<p><button type="submit">Получить ответ</button></p>
</form>
<h2>Как отвечает ТФОМС</h2>
<p>Люди, заданные явно (сейчас {people}), получают заданный исход. Остальные — по «виртуальному
регистру»: один и тот же человек (фамилия, имя, отчество, дата рождения) всегда получает один
ответ: около 75 % застрахованы, 8 % застрахованы с ошибками (REPL), 8 % не найдены (EERP),
9 % в ответ не попадают.</p>
<ul>{insurers}</ul>
</body></html>"""


register_simulator(NAME, TITLE, bp, error_answer=_error_answer)
