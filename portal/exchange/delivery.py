"""Claim due work items under a lease, deliver them through their channel, retry, journal.

A system plugs in by subclassing `Channel` (builder, transport, answer handling) and calling
`register_channel`. Its jobs call `send_due(channel)` and `poll_due(channel)`; its answer
endpoints (callbacks) call `apply_outcome`. Views never call an outside system: they change
domain rows and `enqueue` items in the same transaction.

Every step that talks to the outside world is committed before and after (X-6):

    claim (lease, commit) → prepare (build; a data error fails the item) → state SENDING +
    request id + journal (commit) → transmit → outcome + journal (commit)

- transient failure (timeout before sending, refused connection, 5xx): back to QUEUED with
  exponential back-off; the item waits as long as the system is away.
- unknown outcome (timeout after the request left) or a crash while SENDING (the lease expires
  and the item is claimed again): the channel is asked (`check`) before anything is resent, so
  one version never becomes two documents.
- data error: FAILED, no automatic retry; a person fixes the data and releases a new version.

Claiming is one UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING id: on PostgreSQL the inner
SELECT locks with FOR UPDATE SKIP LOCKED, on SQLite the single writer makes it atomic, so two
workers never hold the same item.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from flask import current_app
from sqlalchemy import and_, or_

from portal.exchange.models import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    SENDING,
    UNKNOWN,
    WAITING,
    JournalEntry,
    WorkItem,
)
from portal.exchange.runs import current_run
from portal.extensions import db
from portal.models_base import utcnow

log = logging.getLogger("exchange")

OWNER = f"{socket.gethostname()}:{os.getpid()}"
NOT_FOUND = "not_found"  # an Outcome state: the outside system has no such request


T = TypeVar("T")
_pass_memo: ContextVar[dict[Any, Any] | None] = ContextVar("delivery_pass_memo", default=None)
_item_memo: ContextVar[dict[Any, Any] | None] = ContextVar("delivery_item_memo", default=None)


@contextlib.contextmanager
def _one_pass() -> Iterator[None]:
    """A delivery pass: values a channel memoizes (settings, keys) are read once per pass, and
    rows are not reloaded after every commit (each item's rows are leased to this pass)."""
    token = _pass_memo.set({})
    session = db.session()
    expire = session.expire_on_commit
    session.expire_on_commit = False
    try:
        yield
    finally:
        session.expire_on_commit = expire
        _pass_memo.reset(token)


@contextlib.contextmanager
def _one_item() -> Iterator[None]:
    """Rows a channel memoizes per item (the document and its data) live until the item is done."""
    token = _item_memo.set({})
    try:
        yield
    finally:
        _item_memo.reset(token)


def memo(key: Any, load: Callable[[], T], *, per_item: bool = False) -> T:
    """`load()` once per delivery pass, or per item with `per_item` (every call outside one)."""
    store = (_item_memo if per_item else _pass_memo).get()
    if store is None:
        return load()
    if key not in store:
        store[key] = load()
    return store[key]


def setting(key: str, mo_id: int | None = None) -> str:
    """An administrator's setting (the МО's override, else the region's), read once per delivery pass."""
    from portal.admin.services import get_setting

    return memo(("setting", key, mo_id), lambda: get_setting(key, mo_id))


class TransientError(Exception):
    """The outside system could not take the request now (down, refused, 5xx): retry later."""


class UnknownOutcome(Exception):
    """The request left but its answer did not come back: ask before sending again."""


class DataError(Exception):
    """The item cannot be delivered as it is (missing data, schema, refusal): no retry."""


@dataclass
class Outcome:
    """What an attempt or a check learnt; `state` is the item's next state."""

    state: str  # WAITING, DONE, FAILED or NOT_FOUND
    message: str
    external_id: str | None = None
    payload: str | None = None  # what was sent
    answer: str | None = None  # what came back
    operation: str | None = None

    @classmethod
    def accepted(cls, message: str, external_id: str | None = None, **kw: str | None) -> Outcome:
        return cls(WAITING, message, external_id, **kw)

    @classmethod
    def done(cls, message: str, **kw: str | None) -> Outcome:
        return cls(DONE, message, **kw)

    @classmethod
    def failed(cls, message: str, **kw: str | None) -> Outcome:
        return cls(FAILED, message, **kw)

    @classmethod
    def not_found(cls, message: str, **kw: str | None) -> Outcome:
        return cls(NOT_FOUND, message, **kw)


class Channel:
    """One outside system's way of delivering items; subclasses fill in the four hooks."""

    name: ClassVar[str]
    title: ClassVar[str]  # Russian name of the service
    procedure: ClassVar[str | None] = None  # admin switch: items of switched-off МО wait
    lease_seconds: ClassVar[int] = 180  # longer than any request timeout of the channel
    poll_seconds: ClassVar[int] = 60  # how soon an accepted item is asked about
    retry_base_seconds: ClassVar[int] = 30
    retry_cap_seconds: ClassVar[int] = 3600
    batch_size: ClassVar[int] = 200
    workers: ClassVar[int] = 1  # sending threads of one job run

    def subject(self, item: WorkItem) -> tuple[str, int]:
        """The domain row whose journal the item's lines belong to."""
        return item.subject_type, item.subject_id

    def packet_type(self, item: WorkItem) -> str | None:
        return None

    def label(self, item: WorkItem) -> str:
        """How journal lines name the item («Версия 2 СЭМД17»)."""
        return f"Пакет {item.id}"

    def prepare(self, item: WorkItem) -> object:
        """Build what will be sent; raise DataError naming what is missing."""
        raise NotImplementedError

    def transmit(self, item: WorkItem, prepared: object) -> Outcome:
        """Send it; item.request_id is already set and committed. Raise TransientError or
        UnknownOutcome when the transport fails."""
        raise NotImplementedError

    def check(self, item: WorkItem) -> Outcome:
        """Ask the outside system about a sent item (by external_id, or request_id when the
        answer was lost). Return WAITING while it is still processing."""
        raise NotImplementedError

    def on_outcome(self, item: WorkItem, entry: JournalEntry) -> None:
        """Update the domain row after a journal line was written (status, newest line)."""


CHANNELS: dict[str, Channel] = {}


def register_channel(channel: Channel) -> Channel:
    CHANNELS[channel.name] = channel
    return channel


def enqueue(
    channel: Channel, subject_type: str, subject_id: int, mo_id: int | None, at: datetime | None = None
) -> WorkItem:
    """A new item due now (or at `at`), in the caller's transaction."""
    item = WorkItem(
        channel=channel.name,
        subject_type=subject_type,
        subject_id=subject_id,
        mo_id=mo_id,
        state=QUEUED,
        next_attempt_at=at or utcnow(),
    )
    db.session.add(item)
    return item


def journal(
    channel: Channel,
    item: WorkItem | None,
    operation: str,
    message: str,
    *,
    level: str = "info",
    subject: tuple[str, int] | None = None,
    mo_id: int | None = None,
    user_id: int | None = None,
    packet_id: str | None = None,
    packet_type: str | None = None,
    payload: str | None = None,
    answer: str | None = None,
    notify: bool = True,
) -> JournalEntry:
    """Append one journal line (in the caller's transaction) and let the channel react to it."""
    if subject is None:
        assert item is not None, "a journal line needs an item or a subject"
        subject = channel.subject(item)
    run = current_run()
    entry = JournalEntry(
        at=utcnow(),
        channel=channel.name,
        mo_id=item.mo_id if item is not None else mo_id,
        subject_type=subject[0],
        subject_id=subject[1],
        item_id=item.id if item is not None else None,
        run_id=run.run_id if run is not None else None,
        user_id=user_id,
        operation=operation,
        level=level,
        message=message,
        packet_id=packet_id or (item.external_id or item.request_id if item else None),
        packet_type=packet_type or (channel.packet_type(item) if item is not None else None),
        item_state=item.state if item is not None else None,
        payload=payload,
        answer=answer,
    )
    db.session.add(entry)
    if run is not None:  # a line without a work item counts its subject as the run's packet
        run.count(item.id if item is not None else subject, ok=level != "error")
    if notify and item is not None:
        channel.on_outcome(item, entry)
    return entry


def _release(item: WorkItem) -> None:
    item.lease_owner = item.lease_until = None


def apply_outcome(
    channel: Channel,
    item: WorkItem,
    outcome: Outcome,
    now: datetime | None = None,
    operation: str = "Результат",
) -> JournalEntry:
    """Move the item to the outcome's state and journal it; used by jobs and by callbacks."""
    now = now or utcnow()
    _release(item)
    level = "info"
    if outcome.state == DONE:
        item.state, item.finished_at, item.last_error, level = DONE, now, None, "ok"
    elif outcome.state == FAILED:
        item.state, item.finished_at, item.last_error, level = FAILED, now, outcome.message, "error"
    elif outcome.state == WAITING:
        item.state = WAITING
        item.next_attempt_at = now + timedelta(seconds=channel.poll_seconds)
    elif outcome.state == NOT_FOUND:  # the system never got it: send the same version again now
        item.state, item.next_attempt_at = QUEUED, now
    else:
        raise ValueError(f"unknown outcome state {outcome.state!r}")
    if outcome.external_id:
        item.external_id = outcome.external_id
    return journal(
        channel,
        item,
        outcome.operation or operation,
        outcome.message,
        level=level,
        payload=outcome.payload,
        answer=outcome.answer,
    )


def backoff(channel: Channel, failures: int) -> timedelta:
    """30 s, 1 min, 2 min … up to the cap: an outage costs a few requests an hour, not thousands."""
    seconds = channel.retry_base_seconds * 2 ** max(0, failures - 1)
    return timedelta(seconds=min(seconds, channel.retry_cap_seconds))


def _retry_later(
    channel: Channel, item: WorkItem, error: Exception, state: str, now: datetime, operation: str
) -> None:
    _release(item)
    item.state = state
    item.last_error = str(error)
    item.next_attempt_at = now + backoff(channel, max(1, item.attempts))
    journal(
        channel,
        item,
        operation,
        f"{channel.label(item)}: {error}. Повторная попытка после {item.next_attempt_at:%d.%m.%Y %H:%M} (UTC)",
        level="error",
    )


def claim(
    channel: Channel, states: tuple[str, ...], now: datetime, limit: int, mo_ids: set[int] | None = None
) -> list[int]:
    """Lease up to `limit` due items of the channel; returns their ids (committed)."""
    due = and_(
        WorkItem.channel == channel.name,
        WorkItem.state.in_(states),
        WorkItem.next_attempt_at <= now,
        or_(WorkItem.lease_until.is_(None), WorkItem.lease_until < now),
    )
    if mo_ids is not None:
        due = and_(due, WorkItem.mo_id.in_(mo_ids))
    # Newest due first: after an outage or a bulk load the backlog drains behind what people
    # are doing now, so a fresh event reaches ВИМИС in seconds, not after thousands of old ones.
    inner = db.select(WorkItem.id).where(due).order_by(WorkItem.next_attempt_at.desc(), WorkItem.id.desc())
    inner = inner.limit(limit)
    if db.engine.dialect.name == "postgresql":
        inner = inner.with_for_update(skip_locked=True)
    lease_until = now + timedelta(seconds=channel.lease_seconds)
    statement = (
        db.update(WorkItem)
        .where(WorkItem.id.in_(inner.scalar_subquery()))
        .values(lease_owner=OWNER, lease_until=lease_until)
        .returning(WorkItem.id)
        .execution_options(synchronize_session=False)
    )
    ids = sorted(db.session.scalars(statement).all())
    db.session.commit()
    for obj in list(db.session.identity_map.values()):  # a pass keeps rows unexpired: refresh these
        if isinstance(obj, WorkItem) and obj.id in ids:
            db.session.expire(obj)
    return ids


def _allowed_mo_ids(channel: Channel, mo_id: int | None) -> set[int] | None:
    if channel.procedure is None:
        return {mo_id} if mo_id is not None else None
    from portal.admin.services import enabled_mo_ids

    enabled = enabled_mo_ids(channel.procedure)
    return enabled & {mo_id} if mo_id is not None else enabled


def send_due(
    channel: Channel,
    *,
    mo_id: int | None = None,
    now: datetime | None = None,
    limit: int | None = None,
    workers: int | None = None,
    one_batch: bool = False,
) -> int:
    """Deliver every due item (new, retried, or with an outcome to resolve); returns how many.

    With several workers each thread claims its own batches (the lease keeps them apart), so
    one thread builds and signs while another waits for the outside system's answer.
    `one_batch` stops after one claim of `limit` items (a channel that reads answers between
    batches); a fixed clock `now` (tests) does the same.
    """
    workers = workers or channel.workers
    one_batch = one_batch or now is not None
    if workers <= 1 or one_batch or _single_connection():
        return _send_loop(channel, mo_id, now, limit or channel.batch_size, one_batch)
    app = current_app._get_current_object()
    counts: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        with app.app_context():
            try:
                counts.append(_send_loop(channel, mo_id, None, limit or channel.batch_size, False))
            except BaseException as error:  # re-raised in the calling thread
                errors.append(error)
            finally:
                db.session.remove()

    # Each thread runs in a copy of this context: journal lines keep counting into the run.
    threads = [
        threading.Thread(
            target=contextvars.copy_context().run, args=(worker,), name=f"{channel.name}-send-{n}"
        )
        for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts)


def _single_connection() -> bool:
    """In-memory SQLite (tests) has one shared connection: threads would trip over it."""
    url = db.engine.url
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _send_loop(channel: Channel, mo_id: int | None, now: datetime | None, limit: int, one_batch: bool) -> int:
    done = 0
    with _one_pass():
        while True:
            moment = now or utcnow()
            ids = claim(channel, (QUEUED, SENDING, UNKNOWN), moment, limit, _allowed_mo_ids(channel, mo_id))
            for item_id in ids:
                with _one_item():
                    _send_one(channel, item_id, moment)
                done += 1
            if len(ids) < limit or one_batch:
                return done


def poll_due(
    channel: Channel, *, mo_id: int | None = None, now: datetime | None = None, limit: int | None = None
) -> int:
    """Ask about accepted items whose answer is due (covers a callback that never comes)."""
    with _one_pass():
        return _poll(channel, mo_id, now or utcnow(), limit or channel.batch_size)


def _poll(channel: Channel, mo_id: int | None, moment: datetime, limit: int) -> int:
    ids = claim(channel, (WAITING,), moment, limit, _allowed_mo_ids(channel, mo_id))
    for item_id in ids:
        with _one_item():
            _poll_one(channel, item_id, moment)
    return len(ids)


def _poll_one(channel: Channel, item_id: int, moment: datetime) -> None:
    item = db.session.get(WorkItem, item_id)
    try:
        outcome = channel.check(item)
    except TransientError as error:
        _retry_later(channel, item, error, WAITING, moment, "Запрос результата")
    except Exception as error:  # a bug must not stop the other items
        log.exception("Канал %s: запрос результата элемента %s", channel.name, item_id)
        _retry_later(
            channel, item, RuntimeError(f"внутренняя ошибка: {error}"), WAITING, moment, "Запрос результата"
        )
    else:
        if outcome.state == WAITING:  # still processing: ask again later, no journal noise
            _release(item)
            item.next_attempt_at = moment + timedelta(seconds=channel.poll_seconds)
        else:
            apply_outcome(channel, item, outcome, moment, "Запрос результата")
    db.session.commit()


def _send_one(channel: Channel, item_id: int, now: datetime) -> None:
    item = db.session.get(WorkItem, item_id)
    if item.state in (SENDING, UNKNOWN) and not _resolve_unknown(channel, item, now):
        db.session.commit()
        return
    try:
        prepared = channel.prepare(item)
    except TransientError as error:  # a service the building needs is away (e.g. КАС numbers)
        _retry_later(channel, item, error, QUEUED, now, "Формирование")
        db.session.commit()
        return
    except DataError as error:
        apply_outcome(channel, item, Outcome.failed(str(error)), now, "Формирование")
        db.session.commit()
        return
    except Exception as error:
        log.exception("Канал %s: формирование элемента %s", channel.name, item_id)
        db.session.rollback()
        item = db.session.get(WorkItem, item_id)
        apply_outcome(
            channel, item, Outcome.failed(f"Внутренняя ошибка формирования: {error}"), now, "Формирование"
        )
        db.session.commit()
        return

    # From here the request may leave: say so durably first.
    item.state = SENDING
    item.request_id = str(uuid.uuid4())
    item.attempts += 1
    item.next_attempt_at = item.lease_until or now + timedelta(seconds=channel.lease_seconds)
    journal(
        channel,
        item,
        "Отправка",
        f"{channel.label(item)}: отправка в {channel.title}",
        packet_id=item.request_id,
    )
    db.session.commit()
    try:
        outcome = channel.transmit(item, prepared)
    except TransientError as error:
        _retry_later(channel, item, error, QUEUED, now, "Отправка")
    except UnknownOutcome as error:
        _release(item)
        item.state = UNKNOWN
        item.last_error = str(error)
        item.next_attempt_at = now + backoff(channel, 1)
        journal(
            channel,
            item,
            "Отправка",
            f"{channel.label(item)}: ответ не получен ({error}). Перед повторной отправкой будет "
            "запрошен статус, чтобы документ не задвоился",
            level="error",
        )
    except DataError as error:
        apply_outcome(channel, item, Outcome.failed(str(error)), now, "Отправка")
    except Exception as error:  # unknown failure after the request may have left: ask first
        log.exception("Канал %s: отправка элемента %s", channel.name, item_id)
        _release(item)
        item.state = UNKNOWN
        item.next_attempt_at = now + backoff(channel, 1)
        journal(
            channel,
            item,
            "Отправка",
            f"{channel.label(item)}: внутренняя ошибка отправки: {error}",
            level="error",
        )
    else:
        apply_outcome(channel, item, outcome, now, "Отправка")
    db.session.commit()


def _resolve_unknown(channel: Channel, item: WorkItem, now: datetime) -> bool:
    """Ask the outside system about an item whose send may have happened.

    Returns True when the item should be sent (again): the system does not know it.
    """
    try:
        outcome = channel.check(item)
    except TransientError as error:
        _retry_later(channel, item, error, UNKNOWN, now, "Запрос статуса")
        return False
    if outcome.state == NOT_FOUND:
        journal(
            channel,
            item,
            "Запрос статуса",
            f"{channel.label(item)}: {channel.title} не получил документ — отправляется снова",
        )
        return True
    apply_outcome(channel, item, outcome, now, "Запрос статуса")
    return False


def cancel(channel: Channel, item: WorkItem, message: str, user_id: int | None = None) -> bool:
    """Withdraw an item that has not left yet; False when it is already on its way."""
    if item.state != QUEUED or (item.lease_until is not None and item.lease_until > utcnow()):
        return False
    _release(item)
    item.state, item.finished_at = CANCELLED, utcnow()
    journal(channel, item, "Отмена отправки", message, user_id=user_id)
    return True


def find_by_external_id(channel: Channel, external_id: str) -> WorkItem | None:
    return db.session.scalars(
        db.select(WorkItem).where(WorkItem.channel == channel.name, WorkItem.external_id == external_id)
    ).first()
