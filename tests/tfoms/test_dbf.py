"""The DBF files of the ТФОМС batch identification, as another program sees them: bytes of the
header and records, dbfread reading our files, and clear refusals of broken ones."""

from __future__ import annotations

import io
import struct
from datetime import date
from decimal import Decimal

import dbfread
import pytest

from portal.tfoms.dbf import (
    ANSWER_FIELDS,
    REQUEST_FIELDS,
    DbfError,
    DbfField,
    dbf_bytes,
    has_fields,
    read_dbf,
    write_dbf,
)

TODAY = date(2026, 11, 24)
MIXED = (
    DbfField("NAME", "C", 20),
    DbfField("BORN", "D", 8),
    DbfField("COUNT", "N", 5),
    DbfField("SUM", "N", 10, 2),
)
REQUEST = [
    {
        "FAM": "ИВАНОВА",
        "IM": "МАРИЯ",
        "OT": "ПЕТРОВНА",
        "DR": date(1990, 1, 2),
        "W": 2,
        "SS": "112-233-445 95",
        "C_DOC": 14,
        "S_DOC": "19 05",
        "N_DOC": "123456",
        "DIN": date(2026, 11, 1),
        "DOUT": date(2026, 11, 20),
    },
    {
        "FAM": "ЁЛКИНА-ЩУКИНА",
        "IM": "Анна",
        "DR": date(1985, 12, 31),
        "W": 2,
        "ENP": "3500000000000019",
        "OPDOC": 3,
    },
]


def _header(data: bytes) -> tuple[int, int, int, int]:
    count, header_length, record_length = struct.unpack_from("<IHH", data, 4)
    return data[0], count, header_length, record_length


def test_round_trip_of_every_type_with_empty_values():
    records = [
        {"NAME": "Иванова", "BORN": date(1990, 1, 2), "COUNT": 42, "SUM": Decimal("1234.50")},
        {"NAME": None, "BORN": None, "COUNT": None, "SUM": None},
        {"NAME": "  отступ", "BORN": date(2000, 2, 29), "COUNT": -7, "SUM": 0},
    ]
    table = read_dbf(dbf_bytes(MIXED, records, today=TODAY))
    assert table.fields == list(MIXED)
    assert list(table) == [
        {"NAME": "Иванова", "BORN": date(1990, 1, 2), "COUNT": 42, "SUM": Decimal("1234.50")},
        {"NAME": None, "BORN": None, "COUNT": None, "SUM": None},
        {"NAME": "  отступ", "BORN": date(2000, 2, 29), "COUNT": -7, "SUM": Decimal("0.00")},
    ]


def test_request_header_and_cp866_bytes():
    data = dbf_bytes(REQUEST_FIELDS, REQUEST, today=TODAY)
    version, count, header_length, record_length = _header(data)
    assert version == 0x03
    assert data[1:4] == bytes([126, 11, 24])  # 2026-11-24 as YY-1900, MM, DD
    assert count == 2
    assert header_length == 32 + 32 * 15 + 1 == 513
    assert record_length == 1 + 60 * 3 + 8 + 1 + 14 + 2 + 10 + 30 + 1 + 10 + 19 + 16 + 8 + 8
    assert data[29] == 0x65  # language driver: Russian MS-DOS (cp866)
    assert data[header_length - 1] == 0x0D
    assert data[-1] == 0x1A and len(data) == header_length + 2 * record_length + 1
    # the first descriptor: FAM, C, 60
    assert data[32:43] == b"FAM" + b"\0" * 8 and data[43:44] == b"C" and data[48] == 60
    record = data[header_length : header_length + record_length]
    assert record[:1] == b" "  # live record
    assert record[1:61] == "ИВАНОВА".encode("cp866").ljust(60) == b"\x88\x82\x80\x8d\x8e\x82\x80" + b" " * 53
    assert record[181:189] == b"19900102"  # DR
    assert record[189:190] == b"2"  # W, N1
    assert record[204:206] == b"14"  # C_DOC, N2
    # lower case and Ё in cp866, too
    second = data[header_length + record_length : header_length + 2 * record_length]
    assert second[61:121].rstrip() == "Анна".encode("cp866") == b"\x80\xad\xad\xa0"
    assert second[1:61].startswith("ЁЛКИНА".encode("cp866")) and second[1] == 0xF0


def test_request_reads_back_unchanged_from_bytes_path_and_stream(tmp_path):
    data = dbf_bytes(REQUEST_FIELDS, REQUEST, today=TODAY)
    path = tmp_path / "350001_24112026_1.DBF"
    path.write_bytes(data)
    expected = [{f.name: r.get(f.name) for f in REQUEST_FIELDS} for r in REQUEST]
    assert list(read_dbf(data)) == expected
    assert list(read_dbf(path)) == expected
    assert list(read_dbf(str(path))) == expected
    with path.open("rb") as stream:
        table = read_dbf(stream)
        assert list(table) == expected
        assert list(table) == expected  # a seekable stream reads again
    assert read_dbf(data).last_update == TODAY


def test_long_character_fields_of_the_answer_round_trip():
    eerp = "Застрахованное лицо не найдено в РС ЕРЗ. " * 14 + "Я" * 30  # exactly 604 characters
    repl = "".join(f"{n}=Не совпадает поле номер {n:04d};" for n in range(1, 54))[:1534]
    assert len(eerp) == 604 and len(repl) == 1534
    data = dbf_bytes(ANSWER_FIELDS, [{"FAM": "ПЕТРОВА", "EERP": eerp, "REPL": repl, "NREC": 1}], today=TODAY)
    # Clipper/FoxPro convention: length = length byte + 256 × decimal-count byte
    eerp_descriptor = 32 + 32 * [f.name for f in ANSWER_FIELDS].index("EERP")
    assert data[eerp_descriptor : eerp_descriptor + 4] == b"EERP"
    assert data[eerp_descriptor + 16] + 256 * data[eerp_descriptor + 17] == 604
    repl_descriptor = eerp_descriptor + 32
    assert data[repl_descriptor + 16] + 256 * data[repl_descriptor + 17] == 1534
    table = read_dbf(data)
    assert [(f.name, f.length) for f in table.fields if f.name in ("EERP", "REPL")] == [
        ("EERP", 604),
        ("REPL", 1534),
    ]
    (record,) = list(table)
    assert record["EERP"] == eerp and record["REPL"] == repl and record["NREC"] == 1
    assert record["RQ"] is None and record["RDBEG"] is None and record["ROKATO"] is None


def test_dbfread_reads_our_files(tmp_path):
    path = tmp_path / "answer.dbf"
    answer = {
        "FAM": "ИВАНОВА",
        "IM": "МАРИЯ",
        "DR": date(1990, 1, 2),
        "W": 2,
        "DOCTP": 14,
        "EERP": None,
        "REPL": "2=Не совпадает СНИЛС;5=Не совпадает дата рождения;",
        "RQ": "35001",
        "ROKATO": 19000000000,
        "RQOGRN": "1033500000011",
        "ROPDOC": 3,
        "RENP": "3500000000000019",
        "RDBEG": date(2015, 3, 4),
        "NREC": 7,
    }
    with path.open("wb") as out:
        write_dbf(ANSWER_FIELDS, iter([answer]), out, today=TODAY)
    table = dbfread.DBF(str(path), encoding="cp866")
    assert [(f.name, f.type, f.length) for f in table.fields] == [
        (f.name, f.type, f.length) for f in ANSWER_FIELDS
    ]
    assert table.date == TODAY
    (record,) = list(table)
    assert record["FAM"] == "ИВАНОВА" and record["IM"] == "МАРИЯ" and record["OT"] == ""
    assert (
        record["DR"] == date(1990, 1, 2) and record["RDBEG"] == date(2015, 3, 4) and record["RDEND"] is None
    )
    assert record["W"] == 2 and record["ROKATO"] == 19000000000 and record["NREC"] == 7
    assert record["REPL"] == answer["REPL"] and record["EERP"] == ""
    # and dbfread takes the code page from the language driver byte
    assert dbfread.DBF(str(path)).encoding == "cp866"
    assert next(iter(dbfread.DBF(str(path))))["FAM"] == "ИВАНОВА"


def test_a_cp1251_file_carries_its_language_driver(tmp_path):
    data = dbf_bytes(REQUEST_FIELDS, REQUEST, encoding="cp1251", today=TODAY)
    assert data[29] == 0xC9  # Russian Windows
    assert data[513 + 1 : 513 + 8] == "ИВАНОВА".encode("cp1251")
    assert [r["FAM"] for r in read_dbf(data, encoding="cp1251")] == ["ИВАНОВА", "ЁЛКИНА-ЩУКИНА"]
    path = tmp_path / "request.dbf"
    path.write_bytes(data)
    assert [r["FAM"] for r in dbfread.DBF(str(path))] == ["ИВАНОВА", "ЁЛКИНА-ЩУКИНА"]


def test_a_generator_is_written_with_the_count_patched_and_unseekable_streams_need_a_count():
    class Pipe(io.RawIOBase):
        def __init__(self):
            self.data = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.data += b
            return len(b)

    buffer = io.BytesIO()
    assert write_dbf(REQUEST_FIELDS, (dict(r) for r in REQUEST * 500), buffer, today=TODAY) == 1000
    assert _header(buffer.getvalue())[1] == 1000
    assert sum(1 for _ in read_dbf(buffer.getvalue())) == 1000

    pipe = Pipe()
    with pytest.raises(DbfError, match="укажите число записей count"):
        write_dbf(REQUEST_FIELDS, iter(REQUEST), pipe)
    pipe = Pipe()
    assert write_dbf(REQUEST_FIELDS, iter(REQUEST), pipe, count=2, today=TODAY) == 2
    assert bytes(pipe.data) == dbf_bytes(REQUEST_FIELDS, REQUEST, today=TODAY)
    with pytest.raises(DbfError, match="Записано 2 записей, а в заголовке объявлено 3"):
        write_dbf(REQUEST_FIELDS, iter(REQUEST), Pipe(), count=3)


def test_deleted_records_are_skipped_and_numbers_kept():
    data = bytearray(dbf_bytes(REQUEST_FIELDS, REQUEST, today=TODAY))
    data[513] = ord("*")
    table = read_dbf(bytes(data))
    assert [r["FAM"] for r in table] == ["ЁЛКИНА-ЩУКИНА"]
    assert [n for n, _ in table.numbered()] == [2]
    assert table.record_count == 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"FAM": "Ф" * 61}, "Запись 2, поле FAM: значение длиной 61 байт не помещается в поле длиной 60"),
        (
            {"FAM": "Смит €"},
            "Запись 2, поле FAM: символ «€» в значении «Смит €» нельзя записать в кодировке cp866",
        ),
        ({"W": 12}, "Запись 2, поле W: число 12 не помещается в 1 знаков"),
        ({"DR": "1990-01-02"}, "Запись 2, поле DR: ожидается дата"),
        ({"SS": 11223344595}, "Запись 2, поле SS: ожидается текст"),
        ({"C_DOC": True}, "Запись 2, поле C_DOC: ожидается число"),
    ],
)
def test_values_that_do_not_fit_are_refused_not_cut(value, message):
    with pytest.raises(DbfError) as refused:
        dbf_bytes(REQUEST_FIELDS, [REQUEST[0], {**REQUEST[1], **value}])
    assert message in str(refused.value)


def test_bad_field_definitions_are_refused():
    with pytest.raises(DbfError, match="Имя поля «ОЧЕНЬ_ДЛИННОЕ»"):
        dbf_bytes([DbfField("ОЧЕНЬ_ДЛИННОЕ", "C", 5)], [])
    with pytest.raises(DbfError, match="тип «M» не поддерживается"):
        dbf_bytes([DbfField("NOTE", "M", 10)], [])
    with pytest.raises(DbfError, match="недопустимая длина 6.0 для типа D"):
        dbf_bytes([DbfField("DR", "D", 6)], [])


def _request_with(patch) -> bytes:
    data = bytearray(dbf_bytes(REQUEST_FIELDS, REQUEST, today=TODAY))
    patch(data)
    return bytes(data)


RECORD = 1 + 60 * 3 + 8 + 1 + 14 + 2 + 10 + 30 + 1 + 10 + 19 + 16 + 8 + 8  # request record length


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "Это не файл DBF: заголовок короче 32 байт (в файле 0 байт)"),
        (b"\x03\x7e\x0b", "Это не файл DBF: заголовок короче 32 байт (в файле 3 байт)"),
        ("Фамилия;Имя\nИванова;Мария\n".encode() * 3, "Это не файл DBF: неизвестный байт версии 0xD0"),
        (b"PK\x03\x04" + b"\0" * 60, "Это не файл DBF: неизвестный байт версии 0x50"),
        (
            _request_with(lambda d: d.__setitem__(slice(10, 12), struct.pack("<H", RECORD + 5))),
            f"Длина записи в заголовке ({RECORD + 5} байт) не соответствует описаниям полей "
            f"(флаг удаления и поля дают {RECORD} байт)",
        ),
        (
            _request_with(lambda d: d.__setitem__(slice(8, 10), struct.pack("<H", 32 + 32 * 3))),
            "Это не файл DBF: в заголовке нет признака конца описания полей (0x0D)",
        ),
        (
            _request_with(lambda d: d.__setitem__(slice(8, 10), struct.pack("<H", 3000))),
            "Файл DBF обрезан: заголовок длиной 3000 байт",
        ),
        (
            _request_with(lambda d: d.__setitem__(slice(8, 10), struct.pack("<H", 513 + 32))),
            "Длина заголовка 545 байт не соответствует описаниям полей (15 полей дают 513 байт)",
        ),
        (
            dbf_bytes(REQUEST_FIELDS, REQUEST, today=TODAY)[: 513 + RECORD + 100],
            "Файл DBF обрезан: в заголовке 2 записей, а в файле полностью есть только 1",
        ),
        (
            _request_with(lambda d: d.__setitem__(slice(4, 8), struct.pack("<I", 5))),
            "Файл DBF обрезан: в заголовке 5 записей, а в файле полностью есть только 2",
        ),
    ],
)
def test_broken_files_are_refused_with_what_is_wrong(data, message):
    with pytest.raises(DbfError) as refused:
        read_dbf(data)
    assert message in str(refused.value)
    assert isinstance(refused.value, ValueError)


@pytest.mark.parametrize(
    ("offset", "raw", "message"),
    [
        (181, "19901302", "Запись 2, поле DR: неверная дата «19901302»"),
        (181, "02.01.90", "Запись 2, поле DR: неверная дата «02.01.90» (ожидается ГГГГММДД)"),
        (189, "Ж", "Запись 2, поле W: неверное число «Ж»"),
        (204, ".5", "Запись 2, поле C_DOC: ожидается целое число, а не «.5»"),
        (204, "--", "Запись 2, поле C_DOC: неверное число «--»"),
    ],
)
def test_bad_dates_and_numbers_name_field_and_record(offset, raw, message):
    start = 513 + RECORD + offset
    data = _request_with(lambda d: d.__setitem__(slice(start, start + len(raw)), raw.encode("cp866")))
    table = read_dbf(data)  # the header is fine; the record is refused when read
    with pytest.raises(DbfError) as refused:
        list(table)
    assert message in str(refused.value)


def test_undecodable_text_names_field_and_record():
    # cp866 defines all 256 bytes, so a cp866 file cannot hold undecodable text; cp1251 leaves 0x98 undefined.
    data = bytearray(dbf_bytes(REQUEST_FIELDS, REQUEST, encoding="cp1251", today=TODAY))
    data[513 + RECORD + 61 + 2] = 0x98  # IM of the second record
    with pytest.raises(DbfError) as refused:
        list(read_dbf(bytes(data), encoding="cp1251"))
    assert "Запись 2, поле IM: байт 0x98 не является текстом в кодировке cp1251" in str(refused.value)


def test_has_fields_names_what_a_file_lacks():
    request = read_dbf(dbf_bytes(REQUEST_FIELDS, REQUEST))
    assert has_fields(request, ["FAM", "dr", "NREC", "EERP"]) == ["NREC", "EERP"]
    assert has_fields(ANSWER_FIELDS, [f.name for f in ANSWER_FIELDS]) == []


class _Pipe(io.RawIOBase):
    """A stream that reads once and cannot seek, like a socket or a pipe."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self._data.read(min(len(buffer), 100))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_an_unseekable_stream_is_read_once_and_truncation_found_while_reading():
    data = dbf_bytes(REQUEST_FIELDS, REQUEST, today=TODAY)
    table = read_dbf(_Pipe(data))
    assert [r["FAM"] for r in table] == ["ИВАНОВА", "ЁЛКИНА-ЩУКИНА"]
    with pytest.raises(DbfError, match="поток нельзя перемотать"):
        list(table)
    truncated = read_dbf(_Pipe(data[: 513 + RECORD + 10]))
    with pytest.raises(DbfError, match="в заголовке 2 записей, а в файле полностью есть только 1"):
        list(truncated)
