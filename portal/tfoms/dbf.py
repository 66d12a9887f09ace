"""dBase III tables of the ТФОМС batch identification (request and answer DBF), without dependencies.

Layout written and read here (dBase III, no memo):

    header      32 bytes: version 0x03; date of last update as YY-1900, MM, DD; record count
                (uint32 LE); header length (uint16 LE); record length (uint16 LE); byte 29 =
                language driver (0x65 cp866 «Russian MS-DOS», 0xC9 cp1251 «Russian Windows»)
    fields      32 bytes each: name (11 bytes, NUL padded), type, 4 reserved, length, decimals
    0x0D        end of the field descriptors; header length = 32 + 32 × fields + 1
    records     a deletion flag (" " live, "*" deleted) and the fields, fixed width
    0x1A        end of file

Character fields longer than 255 bytes (EERP C604, REPL C1534 of the answer) follow the
Clipper / FoxPro convention: length = length byte + 256 × decimal-count byte. dBase III itself
stops at 254; dbfread and the usual DBF viewers read the convention.

Values: C is text, left-aligned and space-padded (a value that does not fit or cannot be encoded
is refused, never cut); D is YYYYMMDD (blank for None); N is right-aligned digits (blank for
None). Reading strips trailing spaces; an empty C, a blank D (or "00000000") and a blank N read as
None; N reads as int, or Decimal when the field has decimals.

`write_dbf` streams: records are encoded and written in chunks, never collected. The record count
in the header is patched at the end when `out` is seekable; for a stream that cannot seek, give
`count` up front (a different number of records written is then an error).

`read_dbf` checks the header eagerly (bad version, inconsistent lengths, truncated data) and then
reads records lazily in chunks of about a megabyte: a single-byte code page is decoded one chunk at
a time and fields are cut from the text by precomputed offsets.
"""

from __future__ import annotations

import codecs
import functools
import io
import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, BinaryIO

__all__ = [
    "ANSWER_FIELDS",
    "REQUEST_FIELDS",
    "DbfError",
    "DbfField",
    "DbfTable",
    "dbf_bytes",
    "has_fields",
    "read_dbf",
    "write_dbf",
]


class DbfError(ValueError):
    """A DBF that cannot be written or read; the message is Russian and names what is wrong."""


@dataclass(frozen=True)
class DbfField:
    name: str
    type: str  # "C", "D", "N" (the reader also understands "F" and "L")
    length: int
    decimals: int = 0


def _fields(spec: str) -> tuple[DbfField, ...]:
    """'FAM C60, DR D8, ...' -> fields (N length.decimals allowed: 'SUM N10.2')."""
    result = []
    for item in spec.split(","):
        name, kind = item.split()
        length, _, decimals = kind[1:].partition(".")
        result.append(DbfField(name, kind[0], int(length), int(decimals or 0)))
    return tuple(result)


# The request of the batch identification (NOTES.md §2, ПроМед Krym_PersonIdentPackage_model).
REQUEST_FIELDS: tuple[DbfField, ...] = _fields(
    "FAM C60, IM C60, OT C60, DR D8, W N1, SS C14, C_DOC N2, S_DOC C10, N_DOC C30, OPDOC N1, "
    "SPOL C10, NPOL C19, ENP C16, DIN D8, DOUT D8"
)

# The answer of ТФОМС: the request's person (documents renamed DOCTP/DOCS/DOCN), the result
# (EERP not identified, REPL errors "code=text;") and the policy found (R* fields), NREC = record
# number in the request. ROKATO is N11: an 11-digit ОКАТО (the length is our assumption).
ANSWER_FIELDS: tuple[DbfField, ...] = _fields(
    "FAM C60, IM C60, OT C60, DR D8, W N1, SS C14, DOCTP N2, DOCS C10, DOCN C30, OPDOC N1, "
    "SPOL C10, NPOL C19, ENP C16, DIN D8, DOUT D8, EERP C604, REPL C1534, RQ C34, ROKATO N11, "
    "RQOGRN C94, ROPDOC N1, RSPOL C10, RNPOL C20, RENP C16, RDBEG D8, RDEND D8, NREC N8"
)

VERSION_DBASE3 = 0x03
# Version bytes of the dBase / FoxPro family whose header and records read the same way.
_KNOWN_VERSIONS = {0x02, 0x03, 0x04, 0x05, 0x30, 0x31, 0x32, 0x43, 0x63, 0x83, 0x8B, 0xCB, 0xF5, 0xFB}
_VISUAL_FOXPRO = {0x30, 0x31, 0x32}
_LANGUAGE_DRIVERS = {"cp866": 0x65, "cp1251": 0xC9, "cp437": 0x01, "cp850": 0x02, "cp1252": 0x03}
_HEADER = struct.Struct("<BBBBIHH20x")
_DESCRIPTOR = struct.Struct("<11sc4xBB14x")
_CHUNK_BYTES = 1 << 20
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,9}")


def _canonical(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise DbfError(f"Неизвестная кодировка «{encoding}».") from None


# --- writing ---------------------------------------------------------------------------------


def _check_fields(fields: Sequence[DbfField]) -> None:
    if not fields:
        raise DbfError("Нет ни одного поля DBF.")
    seen: set[str] = set()
    for f in fields:
        if not _FIELD_NAME.fullmatch(f.name):
            raise DbfError(f"Имя поля «{f.name}»: нужны 1–10 латинских букв, цифр или «_».")
        if f.name.upper() in seen:
            raise DbfError(f"Поле {f.name} указано дважды.")
        seen.add(f.name.upper())
        if f.type == "C":
            ok = 1 <= f.length <= 0xFFFF and f.decimals == 0
        elif f.type == "D":
            ok = f.length == 8 and f.decimals == 0
        elif f.type == "N":
            ok = 1 <= f.length <= 20 and (f.decimals == 0 or 0 < f.decimals <= f.length - 2)
        else:
            raise DbfError(f"Поле {f.name}: тип «{f.type}» не поддерживается (только C, D, N).")
        if not ok:
            raise DbfError(f"Поле {f.name}: недопустимая длина {f.length}.{f.decimals} для типа {f.type}.")
    record_length = 1 + sum(f.length for f in fields)
    if record_length > 0xFFFF:
        raise DbfError(f"Длина записи {record_length} байт больше допустимых 65535.")


def _header(fields: Sequence[DbfField], count: int, today: date, encoding: str) -> bytes:
    record_length = 1 + sum(f.length for f in fields)
    header_length = 32 + 32 * len(fields) + 1
    head = bytearray(
        _HEADER.pack(
            VERSION_DBASE3, today.year - 1900, today.month, today.day, count, header_length, record_length
        )
    )
    head[29] = _LANGUAGE_DRIVERS.get(encoding, 0)
    for f in fields:
        length, high = (f.length & 0xFF, f.length >> 8) if f.type == "C" else (f.length, f.decimals)
        head += _DESCRIPTOR.pack(f.name.upper().encode("ascii"), f.type.encode("ascii"), length, high)
    head += b"\r"
    return bytes(head)


def _encoder(field: DbfField, encoding: str):
    """value, record number -> exactly field.length bytes."""
    name, length, decimals = field.name, field.length, field.decimals
    blank = b" " * length

    if field.type == "C":

        def encode_text(value: Any, recno: int) -> bytes:
            if value is None:
                return blank
            if not isinstance(value, str):
                raise DbfError(f"Запись {recno}, поле {name}: ожидается текст, а не {type(value).__name__}.")
            try:
                data = value.encode(encoding)
            except UnicodeEncodeError as e:
                raise DbfError(
                    f"Запись {recno}, поле {name}: символ «{e.object[e.start : e.end]}» в значении «{value}» "
                    f"нельзя записать в кодировке {encoding}."
                ) from None
            if len(data) > length:
                raise DbfError(
                    f"Запись {recno}, поле {name}: значение длиной {len(data)} байт не помещается "
                    f"в поле длиной {length}: «{value}»."
                )
            return data.ljust(length, b" ")

        return encode_text

    if field.type == "D":

        def encode_date(value: Any, recno: int) -> bytes:
            if value is None:
                return blank
            if not isinstance(value, date):
                raise DbfError(f"Запись {recno}, поле {name}: ожидается дата, а не {type(value).__name__}.")
            return f"{value.year:04d}{value.month:02d}{value.day:02d}".encode("ascii")

        return encode_date

    def encode_number(value: Any, recno: int) -> bytes:
        if value is None:
            return blank
        if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
            raise DbfError(f"Запись {recno}, поле {name}: ожидается число, а не {type(value).__name__}.")
        if decimals:
            number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
            text = f"{number:.{decimals}f}"
            if Decimal(text) != number:
                raise DbfError(
                    f"Запись {recno}, поле {name}: в числе {value} больше {decimals} знаков после запятой."
                )
        else:
            if not isinstance(value, int):
                if value != int(value):
                    raise DbfError(f"Запись {recno}, поле {name}: ожидается целое число, а не {value}.")
                value = int(value)
            text = str(value)
        if len(text) > length:
            raise DbfError(f"Запись {recno}, поле {name}: число {value} не помещается в {length} знаков.")
        return text.rjust(length).encode("ascii")

    return encode_number


def _seekable(stream: Any) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def write_dbf(
    fields: Sequence[DbfField],
    records: Iterable[Mapping[str, Any]],
    out: BinaryIO,
    *,
    encoding: str = "cp866",
    today: date | None = None,
    count: int | None = None,
) -> int:
    """Write a dBase III table of `records` (mappings by field name; missing keys are blank,
    other keys are ignored) to `out` and return the number of records written.

    Without `count`, `out` must be seekable: the count is patched into the header at the end.
    """
    fields = tuple(fields)
    _check_fields(fields)
    encoding = _canonical(encoding)
    seekable = _seekable(out)
    if count is None and not seekable:
        raise DbfError("Поток нельзя перематывать: укажите число записей count заранее.")
    start = out.tell() if seekable else 0
    out.write(_header(fields, count or 0, today or date.today(), encoding))
    encoders = [(f.name, _encoder(f, encoding)) for f in fields]
    chunk: list[bytes] = []
    chunk_size = max(1, _CHUNK_BYTES // (1 + sum(f.length for f in fields)))
    written = 0
    for written, record in enumerate(records, 1):  # noqa: B007 - the count is the result
        get = record.get
        chunk.append(b" ")
        chunk.extend([encode(get(name), written) for name, encode in encoders])
        if written % chunk_size == 0:
            out.write(b"".join(chunk))
            chunk.clear()
    chunk.append(b"\x1a")
    out.write(b"".join(chunk))
    if count is not None and count != written:
        raise DbfError(f"Записано {written} записей, а в заголовке объявлено {count}.")
    if count is None:
        end = out.tell()
        out.seek(start + 4)
        out.write(struct.pack("<I", written))
        out.seek(end)
    return written


def dbf_bytes(fields: Sequence[DbfField], records: Iterable[Mapping[str, Any]], **kw: Any) -> bytes:
    """The whole table as bytes (keyword arguments as for write_dbf)."""
    buffer = io.BytesIO()
    write_dbf(fields, records, buffer, **kw)
    return buffer.getvalue()


# --- reading ---------------------------------------------------------------------------------


class DbfTable:
    """A DBF opened by `read_dbf`: `fields`, header facts, and iteration over live records as dicts.

    A table over bytes, a path or a seekable stream can be iterated many times; over a stream
    that cannot seek, once.
    """

    def __init__(
        self,
        *,
        fields: list[DbfField],
        version: int,
        last_update: date | None,
        record_count: int,
        header_length: int,
        record_length: int,
        language_driver: int,
        encoding: str,
        data: bytes | None,
        path: str | None,
        stream: BinaryIO | None,
        data_start: int,
    ) -> None:
        self.fields = fields
        self.version = version
        self.last_update = last_update
        self.record_count = record_count  # as the header says, deleted records included
        self.header_length = header_length
        self.record_length = record_length
        self.language_driver = language_driver
        self.encoding = encoding
        self._data, self._path, self._stream, self._data_start = data, path, stream, data_start
        self._consumed = False

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._records(numbered=False)

    def numbered(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(record number in the file, 1-based, deleted records counted; record) for live records."""
        return self._records(numbered=True)

    def _records(self, numbered: bool) -> Iterator[Any]:
        parse = _RecordParser(self.fields, self.encoding)
        first = 0
        for chunk in self._chunks():
            yield from parse(chunk, first, numbered)
            first += len(chunk) // self.record_length

    def _chunks(self) -> Iterator[bytes]:
        size = self.record_length
        per_chunk = max(1, _CHUNK_BYTES // size)
        total = self.record_count
        if self._data is not None:
            start = self._data_start
            for first in range(0, total, per_chunk):
                n = min(per_chunk, total - first)
                yield self._data[start + first * size : start + (first + n) * size]
            return
        if self._path is not None:
            with open(self._path, "rb") as stream:
                stream.seek(self._data_start)
                yield from self._read_chunks(stream, per_chunk)
            return
        stream = self._stream
        if _seekable(stream):
            stream.seek(self._data_start)
        elif self._consumed:
            raise DbfError("Записи DBF из потока уже прочитаны; поток нельзя перемотать.")
        self._consumed = True
        yield from self._read_chunks(stream, per_chunk)

    def _read_chunks(self, stream: BinaryIO, per_chunk: int) -> Iterator[bytes]:
        size, total, done = self.record_length, self.record_count, 0
        while done < total:
            n = min(per_chunk, total - done)
            chunk = _read_exactly(stream, n * size)
            if len(chunk) < n * size:
                raise _truncated(total, done + len(chunk) // size)
            done += n
            yield chunk


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = stream.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _truncated(expected: int, present: int) -> DbfError:
    return DbfError(
        f"Файл DBF обрезан: в заголовке {expected} записей, а в файле полностью есть только {present}."
    )


@functools.lru_cache(maxsize=32)
def _undecodable_bytes(encoding: str) -> bytes:
    """Bytes that a single-byte code page does not define."""
    return bytes(b for b in range(256) if bytes((b,)).decode(encoding, errors="replace") == "\ufffd")


@functools.lru_cache(maxsize=32)
def _single_byte(encoding: str) -> bool:
    """Whether every byte is one character in `encoding` (cp866, cp1251 …; not utf-8)."""
    return all(
        len(bytes((high, low)).decode(encoding, errors="replace")) == 2
        for high in range(0x80, 0x100)
        for low in (0x40, 0x80, 0xA0)
    )


class _RecordParser:
    """Turns the records of one chunk into dicts; raises DbfError naming the record and the field.

    For speed (a 2.6 KB answer record has 27 fields):
    * a single-byte code page is not decoded as a whole: the chunk is read as latin-1 (one
      character per byte, nearly a copy), fields are cut at byte offsets, and only a text field
      that holds non-ASCII bytes is decoded from its code page;
    * the per-record function is generated once per field layout (as dataclasses and namedtuple
      do): one dict display cutting every field by constant offsets. Only integers go into the
      generated source; names, blanks and converters are passed in as variables;
    * a long blank text field (EERP, REPL) is recognised by one comparison instead of stripping
      a kilobyte of spaces; dates and short numbers are cached by their text.
    Text loses trailing whitespace (the padding); an empty text is None.
    """

    LONG_TEXT = 32
    SHORT_NUMBER = 4
    CACHE_LIMIT = 100_000

    def __init__(self, fields: list[DbfField], encoding: str) -> None:
        self.fields = fields
        self.encoding = encoding
        self.single_byte = _single_byte(encoding)
        self.offsets: list[tuple[int, int]] = []
        position = 1
        for f in fields:
            self.offsets.append((position, position + f.length))
            position += f.length
        self.record_length = position
        self.dates: dict[str, date | None] = {}
        self.numbers: dict[str, int | None] = {}
        self.undecodable = _undecodable_bytes(encoding) if self.single_byte else b""
        self.parse = self._compile(encoding)

    def _compile(self, encoding: str):
        namespace: dict[str, Any] = {
            "DC": self.dates,
            "NC": self.numbers,
            "DEC": codecs.getdecoder(encoding),
            "D": self._date,
            "N": self._number,
            "M": self._decimal,
            "L": self._logical,
        }
        items = []
        for i, (f, (a, b)) in enumerate(zip(self.fields, self.offsets, strict=True)):
            namespace[f"K{i}"] = f.name
            if f.type == "D":
                value = f"DC[_x] if (_x := r[{a}:{b}]) in DC else D(_x, {i}, n)"
            elif f.type in "NF" and f.decimals == 0 and f.length <= self.SHORT_NUMBER:
                value = f"NC[_x] if (_x := r[{a}:{b}]) in NC else N(_x, {i}, n)"
            elif f.type in "NF" and f.decimals == 0:
                value = f"int(_x) if (_x := r[{a}:{b}].strip()).isdecimal() else N(_x, {i}, n)"
            elif f.type in "NF":
                value = f"M(r[{a}:{b}], {i}, n)"
            elif f.type == "L":
                value = f"L(r[{a}:{b}], {i}, n)"
            elif self.single_byte:  # C and any other type: text
                value = f"(_t.rstrip() if (_t := r[{a}:{b}]).isascii() else DEC(_t.encode('latin-1'))[0].rstrip()) or None"
            else:
                value = f"r[{a}:{b}].rstrip() or None"
            if f.type not in "DNFL" and f.length > self.LONG_TEXT:
                namespace[f"B{i}"] = " " * f.length
                value = f"None if r.startswith(B{i}, {a}) else ({value})"
            items.append(f"K{i}: {value}")
        source = "def parse(r, n):\n    return {" + ", ".join(items) + "}\n"
        exec(compile(source, "<dbf record parser>", "exec"), namespace)  # noqa: S102 - see the docstring
        return namespace["parse"]

    def __call__(self, chunk: bytes, first: int, numbered: bool) -> list[Any]:
        """The live records of a chunk whose first record is number first + 1: dicts, or
        (record number, dict) pairs when `numbered`."""
        size, parse = self.record_length, self.parse
        if self.single_byte:
            self._check_decodable(chunk, first)
            text = chunk.decode("latin-1")
            if numbered:
                return [
                    (first + base // size + 1, parse(text[base : base + size], first + base // size + 1))
                    for base in range(0, len(text), size)
                    if text[base] != "*"
                ]
            return [
                parse(text[base : base + size], first + base // size + 1)
                for base in range(0, len(text), size)
                if text[base] != "*"
            ]
        # A multi-byte encoding: decode field by field and pad each to its length in characters.
        result: list[Any] = []
        for i in range(len(chunk) // size):
            raw = chunk[i * size : (i + 1) * size]
            if raw[:1] == b"*":
                continue
            parts = [" "]
            for f, (a, b) in zip(self.fields, self.offsets, strict=True):
                try:
                    parts.append(raw[a:b].decode(self.encoding).ljust(f.length))
                except UnicodeDecodeError as e:
                    raise self._undecodable(first + i + 1, f.name, raw[a + e.start]) from None
            record = parse("".join(parts), first + i + 1)
            result.append((first + i + 1, record) if numbered else record)
        return result

    def _undecodable(self, recno: int, name: str, byte: int) -> DbfError:
        return DbfError(
            f"Запись {recno}, поле {name}: байт 0x{byte:02X} не является текстом в кодировке {self.encoding}."
        )

    def _check_decodable(self, chunk: bytes, first: int) -> None:
        """Refuse a byte that the code page leaves undefined (0x98 in cp1251; cp866 has none)."""
        size = self.record_length
        for byte in self.undecodable:
            position = chunk.find(byte)
            while position >= 0:
                index, offset = divmod(position, size)
                if chunk[index * size] != 0x2A:  # "*": a deleted record is not read
                    name = next(
                        (
                            f.name
                            for f, (a, b) in zip(self.fields, self.offsets, strict=True)
                            if a <= offset < b
                        ),
                        "(флаг удаления)",
                    )
                    raise self._undecodable(first + index + 1, name, byte)
                position = chunk.find(byte, (index + 1) * size)

    def _shown(self, carrier: str) -> str:
        """The field as the user would see it, for an error message."""
        text = carrier.strip(" \x00")
        if self.single_byte and not text.isascii():
            text = text.encode("latin-1").decode(self.encoding, errors="replace")
        return text

    def _date(self, carrier: str, i: int, recno: int) -> date | None:
        stripped = carrier.strip(" \x00")
        if not stripped or stripped.strip("0") == "":
            value = None
        elif len(stripped) == 8 and stripped.isascii() and stripped.isdigit():
            try:
                value = date(int(stripped[:4]), int(stripped[4:6]), int(stripped[6:]))
            except ValueError:
                raise DbfError(
                    f"Запись {recno}, поле {self.fields[i].name}: неверная дата «{stripped}»."
                ) from None
        else:
            raise DbfError(
                f"Запись {recno}, поле {self.fields[i].name}: неверная дата «{self._shown(carrier)}» "
                "(ожидается ГГГГММДД)."
            )
        if len(self.dates) < self.CACHE_LIMIT:
            self.dates[carrier] = value
        return value

    def _number(self, carrier: str, i: int, recno: int) -> int | None:
        stripped = carrier.strip(" \x00")
        if not stripped:
            value = None
        elif stripped.isascii() and stripped.isdecimal():
            value = int(stripped)
        else:
            number = self._parse_decimal(carrier, i, recno)
            if number != number.to_integral_value():
                raise DbfError(
                    f"Запись {recno}, поле {self.fields[i].name}: ожидается целое число, "
                    f"а не «{self._shown(carrier)}»."
                )
            value = int(number)
        if len(carrier) <= self.SHORT_NUMBER and len(self.numbers) < self.CACHE_LIMIT:
            self.numbers[carrier] = value
        return value

    def _decimal(self, carrier: str, i: int, recno: int) -> Decimal | None:
        return self._parse_decimal(carrier, i, recno) if carrier.strip(" \x00") else None

    def _parse_decimal(self, carrier: str, i: int, recno: int) -> Decimal:
        stripped = carrier.strip(" \x00")
        if not (stripped.isascii() and _NUMBER.fullmatch(stripped)):
            raise DbfError(
                f"Запись {recno}, поле {self.fields[i].name}: неверное число «{self._shown(carrier)}»."
            )
        return Decimal(stripped)

    def _logical(self, carrier: str, i: int, recno: int) -> bool | None:
        value = carrier.strip(" \x00")
        if value in ("T", "t", "Y", "y"):
            return True
        if value in ("F", "f", "N", "n"):
            return False
        if value in ("", "?"):
            return None
        raise DbfError(
            f"Запись {recno}, поле {self.fields[i].name}: неверное логическое значение «{self._shown(carrier)}»."
        )


def read_dbf(
    source: bytes | bytearray | memoryview | BinaryIO | str | os.PathLike, *, encoding: str = "cp866"
) -> DbfTable:
    """Open a DBF from bytes, a binary stream (read from its current position) or a path.

    The header is checked now; records are read when the table is iterated.
    """
    encoding = _canonical(encoding)
    data: bytes | None = None
    path: str | None = None
    stream: BinaryIO | None = None
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        head_stream: BinaryIO = io.BytesIO(data)
        origin, size = 0, len(data)
    elif isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        try:
            head_stream = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise DbfError(f"Не удалось открыть файл DBF «{path}»: {e.strerror}.") from None
        origin, size = 0, os.fstat(head_stream.fileno()).st_size
    else:
        stream = head_stream = source
        if _seekable(source):
            origin = source.tell()
            size = source.seek(0, io.SEEK_END) - origin
            source.seek(origin)
        else:
            origin, size = 0, None
    try:
        table = _read_header(head_stream, encoding)
    finally:
        if path is not None:
            head_stream.close()
    if size is not None:
        available = max(0, size - table["header_length"])
        present = available // table["record_length"]
        if present < table["record_count"]:
            raise _truncated(table["record_count"], present)
    return DbfTable(**table, data=data, path=path, stream=stream, data_start=origin + table["header_length"])


def _read_header(stream: BinaryIO, encoding: str) -> dict[str, Any]:
    head = _read_exactly(stream, 32)
    if len(head) < 32:
        raise DbfError(f"Это не файл DBF: заголовок короче 32 байт (в файле {len(head)} байт).")
    version, yy, mm, dd, count, header_length, record_length = _HEADER.unpack(head)
    if version not in _KNOWN_VERSIONS:
        raise DbfError(
            f"Это не файл DBF: неизвестный байт версии 0x{version:02X} (ожидается 0x03, dBase III)."
        )
    if header_length < 32 + 32 + 1:
        raise DbfError(f"Это не файл DBF: длина заголовка {header_length} байт меньше минимальной (65).")
    rest = _read_exactly(stream, header_length - 32)
    if len(rest) < header_length - 32:
        raise DbfError(
            f"Файл DBF обрезан: заголовок длиной {header_length} байт, а в файле {32 + len(rest)}."
        )
    fields: list[DbfField] = []
    position = 0
    while True:
        if position >= len(rest):
            raise DbfError("Это не файл DBF: в заголовке нет признака конца описания полей (0x0D).")
        if rest[position] == 0x0D:
            break
        if position + 32 > len(rest):
            raise DbfError(
                f"Длина заголовка {header_length} байт не соответствует описаниям полей: "
                f"описание поля {len(fields) + 1} выходит за заголовок."
            )
        raw_name, raw_type, length, decimals = _DESCRIPTOR.unpack_from(rest, position)
        name = raw_name.split(b"\0", 1)[0].decode("ascii", errors="replace").strip()
        kind = raw_type.decode("ascii", errors="replace")
        if not name or not kind.isalpha():
            raise DbfError(f"Это не файл DBF: описание поля {len(fields) + 1} повреждено.")
        if kind == "C":
            length, decimals = length | (decimals << 8), 0
        if length == 0:
            raise DbfError(f"Поле {name}: длина 0 в описании поля.")
        if any(f.name == name for f in fields):
            raise DbfError(f"Поле {name} описано в заголовке дважды.")
        fields.append(DbfField(name, kind, length, decimals))
        position += 32
    if not fields:
        raise DbfError("В файле DBF не описано ни одного поля.")
    described = 32 + 32 * len(fields) + 1
    # Visual FoxPro keeps a 263-byte backlink after the terminator; some dBase writers add a NUL.
    padding = (263,) if version in _VISUAL_FOXPRO else (0, 1)
    if header_length - described not in padding:
        raise DbfError(
            f"Длина заголовка {header_length} байт не соответствует описаниям полей "
            f"({len(fields)} полей дают {described} байт)."
        )
    expected = 1 + sum(f.length for f in fields)
    if record_length != expected:
        raise DbfError(
            f"Длина записи в заголовке ({record_length} байт) не соответствует описаниям полей "
            f"(флаг удаления и поля дают {expected} байт)."
        )
    try:
        last_update = date(1900 + yy, mm, dd)
    except ValueError:
        last_update = None
    return {
        "fields": fields,
        "version": version,
        "last_update": last_update,
        "record_count": count,
        "header_length": header_length,
        "record_length": record_length,
        "language_driver": head[29],
        "encoding": encoding,
    }


def has_fields(table: DbfTable | Iterable[DbfField], names: Iterable[str]) -> list[str]:
    """The names (in the given order) that the table lacks; field names compare case-insensitively."""
    fields = table.fields if isinstance(table, DbfTable) else table
    present = {f.name.upper() for f in fields}
    return [name for name in names if name.upper() not in present]
