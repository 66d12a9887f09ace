"""«Пакеты обмена с ТФОМС» (T-7, T-8) and «Свободные места в стационарах» (T-5, stage 3).

The packets page lists TfomsPacket rows newest first with the filters in the query string; one
URL serves the page and its fragments (HX-Target says which). A row expands to the packet's
and the answer's «Тег: Данные». «Не отправлять повторно» / «Снять запрет отправки» act on one
packet through portal.tfoms.packets. A packet of another МО is 404, as if it did not exist.

The free-beds page asks ТФОМС synchronously (RPC) and shows the answer as a table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from portal.auth.access import requires
from portal.auth.scoping import filter_mo_id, mo_choices, scoped
from portal.clinical.models import BED_PROFILE_NAMES, Mo
from portal.dates import parse_date
from portal.extensions import db
from portal.filters import contains_ci, newest_first
from portal.fragments import hx_target
from portal.journal.services import packet_lines
from portal.models_base import utcnow
from portal.tfoms import bp, packets
from portal.tfoms.builders import PACKET_TYPES
from portal.tfoms.models import (
    INCOMING,
    OUTGOING,
    PACKET_ACCEPTED,
    PACKET_BUILD_ERROR,
    PACKET_BUILT,
    PACKET_PROCESSED,
    PACKET_QUEUED,
    PACKET_RECEIVED,
    PACKET_REFUSED,
    PACKET_REJECTED,
    PACKET_SEND_ERROR,
    PACKET_SENT,
    PACKET_STATUSES,
    TfomsPacket,
)

PAGE_SIZE = 50
PRINT_LIMIT = 1000  # rows of a printed list
PERIOD_DAYS = 7  # the default period: the last seven days, today included
POLL_SECONDS = 10  # the list refreshes itself this often while a shown packet is in flight
MAX_QUERY = 64

# «Сервис»: the channel a packet belongs to, named as the journal names the service.
CHANNELS: dict[str, str] = {
    packets.SERVICE: "Сервис автоматизированного взаимодействия с ТФОМС",
    packets.PLANS_SERVICE: "Обмен планами профилактических осмотров",
}
CHANNEL_PREFIX = "tfoms"  # services of «Журнал работы сервисов» that link here
DIRECTIONS: dict[str, str] = {OUTGOING: "В ТФОМС", INCOMING: "Из ТФОМС"}
OPERATIONS: dict[str, str] = {"Insert": "Добавление", "Update": "Изменение", "Delete": "Удаление"}
# Packets still on their way: while one is shown the list polls itself.
IN_FLIGHT = frozenset({PACKET_QUEUED, PACKET_BUILT, PACKET_SENT})
# Colour of the status pill (CSS class packet-status-<colour>).
STATUS_COLOURS: dict[str, str] = {
    PACKET_QUEUED: "wait",
    PACKET_BUILT: "busy",
    PACKET_SENT: "busy",
    PACKET_BUILD_ERROR: "err",
    PACKET_SEND_ERROR: "err",
    PACKET_REJECTED: "err",
    PACKET_REFUSED: "err",
    PACKET_ACCEPTED: "ok",
    PACKET_RECEIVED: "busy",
    PACKET_PROCESSED: "ok",
}
_CHANNEL_RE = re.compile(r"[a-z0-9_]{1,32}")
_TYPE_RE = re.compile(r"[A-Z0-9_]{1,40}")

BED_PROFILES = BED_PROFILE_NAMES  # «Профиль койки» of the free-beds request


# --- the packet list ----------------------------------------------------------------------------


def _bad(message: str):
    abort(400, description=message)


@dataclass
class PacketFilters:
    """What the URL selects; `args` gives the query of a link that changes part of it."""

    date_from: date
    date_to: date
    status: str = ""
    packet_type: str = ""
    direction: str = ""
    channel: str = ""
    mo_id: int | None = None
    q: str = ""

    @classmethod
    def parse(cls, source: Any) -> PacketFilters:
        today = utcnow().date()
        try:
            date_from = parse_date(source.get("from")) or today - timedelta(days=PERIOD_DAYS - 1)
            date_to = parse_date(source.get("to")) or today
        except ValueError as error:
            _bad(f"Дата «{error}» не распознана: введите её как ДД.ММ.ГГГГ.")
        if date_from > date_to:
            date_from, date_to = date_to, date_from
        status = source.get("status") or ""
        if status and status not in PACKET_STATUSES:
            _bad(f"Неизвестный статус пакета «{status}».")
        packet_type = (source.get("type") or "").strip().upper()
        if packet_type and not _TYPE_RE.fullmatch(packet_type):
            _bad(f"Неизвестный тип пакета «{packet_type}».")
        direction = source.get("direction") or ""
        if direction and direction not in DIRECTIONS:
            _bad(f"Неизвестное направление «{direction}».")
        channel = source.get("channel") or ""
        if channel and not (_CHANNEL_RE.fullmatch(channel) and channel.startswith(CHANNEL_PREFIX)):
            _bad(f"Неизвестный сервис «{channel}».")
        return cls(
            date_from,
            date_to,
            status,
            packet_type,
            direction,
            channel,
            filter_mo_id(source.get("mo")),
            (source.get("q") or "").strip()[:MAX_QUERY],
        )

    def args(self, **changes: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "from": self.date_from.isoformat(),
            "to": self.date_to.isoformat(),
            "status": self.status,
            "type": self.packet_type,
            "direction": self.direction,
            "channel": self.channel,
            "mo": self.mo_id if current_user.is_central else None,
            "q": self.q,
        }
        values.update(changes)
        return {key: value for key, value in values.items() if value not in (None, "")}

    def url(self, endpoint: str = "tfoms.packets", **changes: Any) -> str:
        return url_for(endpoint, **self.args(**changes))

    def described(self) -> list[tuple[str, str]]:
        """The filters in words, for the printed list's header."""
        period = f"{self.date_from:%d.%m.%Y} – {self.date_to:%d.%m.%Y}"
        lines = [("Период", period)]
        if self.channel:
            lines.append(("Сервис", CHANNELS.get(self.channel, self.channel)))
        if self.direction:
            lines.append(("Направление", DIRECTIONS[self.direction]))
        if self.packet_type:
            lines.append(("Тип пакета", type_label(self.packet_type)))
        if self.status:
            lines.append(("Статус", PACKET_STATUSES[self.status]))
        if current_user.is_central:
            mo = db.session.get(Mo, self.mo_id) if self.mo_id else None
            lines.append(("МО", mo.short_name if mo else "Все МО"))
        elif current_user.mo is not None:
            lines.append(("МО", current_user.mo.short_name))
        if self.q:
            lines.append(("Идентификатор пакета содержит", self.q))
        return lines


def type_label(code: str) -> str:
    name = PACKET_TYPES.get(code)
    return f"{name} ({code})" if name else code


def _filtered(stmt, filters: PacketFilters, *, with_status: bool = True):
    """Apply the user's МО scope and every filter (the status one only when asked)."""
    p = TfomsPacket
    stmt = scoped(stmt, p.mo_id)
    start = datetime.combine(filters.date_from, time.min)
    end = datetime.combine(filters.date_to + timedelta(days=1), time.min)
    stmt = stmt.where(p.created_at >= start, p.created_at < end)
    if with_status and filters.status:
        stmt = stmt.where(p.status == filters.status)
    if filters.packet_type:
        stmt = stmt.where(p.packet_type == filters.packet_type)
    if filters.direction:
        stmt = stmt.where(p.direction == filters.direction)
    if filters.channel:
        stmt = stmt.where(p.channel == filters.channel)
    if filters.mo_id is not None:
        stmt = stmt.where(p.mo_id == filters.mo_id)
    if filters.q:
        stmt = stmt.where(contains_ci(p.message_id, filters.q))
    return stmt


def _parse_cursor(raw: str | None) -> tuple[datetime, int] | None:
    if not raw:
        return None
    at_text, _, ident = raw.partition("|")
    try:
        return datetime.fromisoformat(at_text), int(ident)
    except ValueError:
        _bad("Некорректный параметр страницы.")


def packet_page(filters: PacketFilters, after: tuple[datetime, int] | None = None, limit: int = PAGE_SIZE):
    """Packets newest first, keyset-paged by (created_at, id)."""
    p = TfomsPacket
    stmt = _filtered(select(p).options(joinedload(p.mo)), filters)
    return newest_first(stmt, p.created_at, p.id, after, limit)


def status_counts(filters: PacketFilters) -> dict[str, int]:
    """Packets per status under the filters, the status filter aside (one GROUP BY)."""
    p = TfomsPacket
    stmt = _filtered(select(p.status, func.count()), filters, with_status=False).group_by(p.status)
    return {status: int(count) for status, count in db.session.execute(stmt)}


def _visible_packet(packet_id: int) -> TfomsPacket:
    """A packet the user may see; another МО's packet is 404, as if it did not exist."""
    packet = db.session.scalar(
        scoped(select(TfomsPacket).options(joinedload(TfomsPacket.mo)), TfomsPacket.mo_id).where(
            TfomsPacket.id == packet_id
        )
    )
    if packet is None:
        abort(404, description="Пакет не найден.")
    return packet


# --- «Тег: Данные» ------------------------------------------------------------------------------


def _flatten(value: Any, path: str, lines: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), lines)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _flatten(item, f"{path}[{index}]", lines)
    elif value is not None and value != "":
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, bool) else str(value)
        lines.append((path or "значение", shown))


def tag_lines(stored: dict[str, Any] | None, xml: str | None) -> list[tuple[str, str]]:
    """«Тег: Данные» of a packet or an answer: the stored JSON's tags, else the XML's leaves."""
    if isinstance(stored, dict):
        content = stored.get("packet", stored)
        lines: list[tuple[str, str]] = []
        _flatten(content, "", lines)
        if lines:
            return lines
    return packet_lines(xml).lines if xml else []


# --- views --------------------------------------------------------------------------------------


def _type_choices(filters: PacketFilters) -> dict[str, str]:
    choices = {code: type_label(code) for code in sorted(PACKET_TYPES)}
    if filters.packet_type and filters.packet_type not in choices:
        choices[filters.packet_type] = filters.packet_type
    return choices


def _channel_choices(filters: PacketFilters) -> dict[str, str]:
    choices = dict(CHANNELS)
    if filters.channel and filters.channel not in choices:
        choices[filters.channel] = filters.channel
    return choices


def _row_context() -> dict[str, Any]:
    """What every packet row needs, besides the packet."""
    can_manage = current_user.can("tfoms.packets.manage")
    return {
        "can_manage": can_manage,
        "cols": 7 + int(current_user.is_central) + int(can_manage),
        "colours": STATUS_COLOURS,
        "operations": OPERATIONS,
        "directions": DIRECTIONS,
        "type_names": PACKET_TYPES,
        "channels": CHANNELS,
        "outgoing": OUTGOING,
        "accepted": PACKET_ACCEPTED,
        "show_mo": current_user.is_central,
    }


def _results_context(filters: PacketFilters, after: tuple[datetime, int] | None = None) -> dict[str, Any]:
    page = packet_page(filters, after)
    counts = status_counts(filters)
    return {
        **_row_context(),
        "filters": filters,
        "page": page,
        "counts": counts,
        "total": sum(counts.values()),
        "statuses": PACKET_STATUSES,
        "polling": any(p.status in IN_FLIGHT for p in page.rows),
        "poll_seconds": POLL_SECONDS,
        "later_page": after is not None,
    }


@bp.get("/packets", endpoint="packets")
@requires("tfoms.packets")
def packets_page():
    """The page; for htmx the results (filters changed, polling) or the next rows («Показать ещё»)."""
    filters = PacketFilters.parse(request.args)
    after = _parse_cursor(request.args.get("after"))
    target = hx_target()
    if target == "packets-more":
        return render_template("tfoms/_packets_rows.html", **_results_context(filters, after))
    if target == "packets-results":
        return render_template("tfoms/_packets_results.html", **_results_context(filters))
    return render_template(
        "tfoms/packets.html",
        **_results_context(filters),
        mos=mo_choices(),
        type_choices=_type_choices(filters),
        channel_choices=_channel_choices(filters),
    )


@bp.get("/packets/print", endpoint="packets_print")
@requires("tfoms.packets")
def packets_print():
    """«Печать»: the list as filtered (up to PRINT_LIMIT rows) with the filters in its header."""
    filters = PacketFilters.parse(request.args)
    page = packet_page(filters, limit=PRINT_LIMIT)
    counts = status_counts(filters)
    return render_template(
        "tfoms/packets_print.html",
        **_row_context(),
        filters=filters,
        page=page,
        counts=counts,
        total=sum(counts.values()),
        statuses=PACKET_STATUSES,
        limit=PRINT_LIMIT,
        printed_at=utcnow(),
    )


@bp.get("/packets/<int:packet_id>", endpoint="packet")
@requires("tfoms.packets")
def packet_detail(packet_id: int):
    """«Данные пакета» and «Ответ»: a row under the packet's row (htmx) or a page of its own."""
    packet = _visible_packet(packet_id)
    context = {
        **_row_context(),
        "packet": packet,
        "data_lines": tag_lines(packet.data, packet.xml),
        "answer_lines": tag_lines(packet.answer, packet.answer_xml),
        "after": db.session.get(TfomsPacket, packet.after_id) if packet.after_id else None,
    }
    if hx_target():
        return render_template("tfoms/_packets_detail.html", **context)
    return render_template("tfoms/packets_detail.html", **context)


def _act(packet_id: int, action: Callable[..., None], done: Callable[[TfomsPacket], str]):
    """Run one action on a visible packet; htmx gets the row back with the message and counts."""
    packet = _visible_packet(packet_id)
    filters = PacketFilters.parse(request.form)
    try:
        action(packet, current_user._get_current_object())
    except packets.PacketError as error:
        db.session.rollback()
        message, level = str(error), "error"
    else:
        db.session.commit()
        message, level = done(packet), "success"
    packet = _visible_packet(packet_id)
    if not request.headers.get("HX-Request"):
        flash(message, level)
        return redirect(filters.url(), code=303)
    counts = status_counts(filters)
    return render_template(
        "tfoms/_packets_action.html",
        **_row_context(),
        packet=packet,
        filters=filters,
        message=message,
        level=level,
        counts=counts,
        total=sum(counts.values()),
        statuses=PACKET_STATUSES,
        polling=packet.status in IN_FLIGHT,
        poll_seconds=POLL_SECONDS,
    )


@bp.post("/packets/<int:packet_id>/forbid", endpoint="packet_forbid")
@requires("tfoms.packets.manage")
def packet_forbid(packet_id: int):
    """«Не отправлять повторно»."""
    return _act(
        packet_id,
        packets.forbid_resend,
        lambda p: f"Пакет {p.packet_type} {p.message_id}: повторная отправка запрещена.",
    )


@bp.post("/packets/<int:packet_id>/allow", endpoint="packet_allow")
@requires("tfoms.packets.manage")
def packet_allow(packet_id: int):
    """«Снять запрет отправки»."""

    def done(p: TfomsPacket) -> str:
        if p.status == PACKET_QUEUED:  # queued again under a new message id
            return f"Пакет {p.packet_type}: запрет отправки снят, пакет {p.message_id} поставлен в очередь на отправку."
        return f"Пакет {p.packet_type} {p.message_id}: запрет отправки снят."

    return _act(packet_id, packets.allow_resend, done)


@bp.app_template_global("tfoms_packets_url")
def packets_url_for_run(run: Any) -> str | None:
    """«Пакеты сервиса» of a run in «Журнал работы сервисов»: the packets of its service and days."""
    service = getattr(run, "service", "") or ""
    if not service.startswith(CHANNEL_PREFIX) or not _CHANNEL_RE.fullmatch(service):
        return None
    if not current_user.is_authenticated or not current_user.can("tfoms.packets"):
        return None
    start = run.started_at.date()
    end = (run.finished_at or utcnow()).date()
    return url_for("tfoms.packets", channel=service, **{"from": start.isoformat(), "to": end.isoformat()})


# --- «Свободные места в стационарах» ------------------------------------------------------------


@dataclass
class FreeBedsQuery:
    mo_id: int | None
    profile: int | None
    asked: bool

    @classmethod
    def parse(cls, source: Any, mo_ids: set[int]) -> FreeBedsQuery:
        raw_mo = (source.get("mo") or "").strip()
        raw_profile = (source.get("profile") or "").strip()
        mo_id = profile = None
        if raw_mo:
            if not raw_mo.isdigit() or int(raw_mo) not in mo_ids:
                _bad("Неизвестная МО госпитализации.")
            mo_id = int(raw_mo)
        if raw_profile:
            if not raw_profile.isdigit() or int(raw_profile) not in BED_PROFILES:
                _bad(f"Неизвестный профиль койки «{raw_profile}».")
            profile = int(raw_profile)
        return cls(mo_id, profile, source.get("ask") == "1")


def _hospital_mos() -> list[Mo]:
    """МО a patient may be referred to: those with an F003 code, which ТФОМС knows them by."""
    return list(db.session.scalars(select(Mo).where(Mo.f003_code.is_not(None)).order_by(Mo.short_name)))


def _shown_date(value: Any) -> str:
    if isinstance(value, datetime | date):
        return f"{value:%d.%m.%Y}"
    try:
        return f"{date.fromisoformat(str(value)[:10]):%d.%m.%Y}" if value else ""
    except ValueError:
        return str(value)


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def display_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ТФОМС's rows ready to show: most free places first, profile named, dates as ДД.ММ.ГГГГ."""
    shown = []
    for row in rows:
        profile = row.get("profile")
        shown.append(
            {
                **{key: "" if value is None else value for key, value in row.items()},
                "profile_name": row.get("profile_name") or BED_PROFILES.get(_count(profile), ""),
                "free": _count(row.get("free")),
                "free_adult": _count(row.get("free_adult")),
                "free_child": _count(row.get("free_child")),
                "actual_on": _shown_date(row.get("actual_on")),
            }
        )
    return sorted(
        shown, key=lambda r: (-r["free"], str(r.get("mo_name", "")), str(r.get("division_name", "")))
    )


@bp.get("/free-beds", endpoint="free_beds")
@requires("tfoms.free_beds")
def free_beds_page():
    """The request form; with ask=1 the synchronous request to ТФОМС and its answer."""
    mos = _hospital_mos()
    query = FreeBedsQuery.parse(request.args, {mo.id for mo in mos})
    result = rows = None
    if query.asked:
        result = packets.free_beds(
            current_user._get_current_object(), target_mo_id=query.mo_id, profile=query.profile
        )
        rows = display_rows(list(result.rows or []))
    context = {
        "query": query,
        "mos": mos,
        "profiles": BED_PROFILES,
        "result": result,
        "rows": rows,
        "target_mo": next((mo for mo in mos if mo.id == query.mo_id), None),
    }
    if hx_target() == "free-beds-result":
        return render_template("tfoms/_free_beds_result.html", **context)
    return render_template("tfoms/free_beds.html", **context)
