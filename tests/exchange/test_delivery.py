"""The shared delivery mechanism: leases, retries, unknown outcomes, crash recovery, runs.

A small channel defined here stands for an outside system; it keeps what it "received" so
each test can see exactly what the other side would have seen.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from portal.exchange import delivery
from portal.exchange.delivery import Channel, DataError, Outcome, TransientError, UnknownOutcome
from portal.exchange.models import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUN_ERROR,
    RUN_OK,
    SENDING,
    UNKNOWN,
    WAITING,
    JournalEntry,
    ServiceRun,
    WorkItem,
)
from portal.exchange.runs import recording
from portal.extensions import db
from portal.models_base import utcnow
from tests import factories
from tests.conftest import DATABASES, _reset_postgres, make_app


class Remote(Channel):
    """An outside system that remembers every request it received, by our request id."""

    name = "test_remote"
    title = "Тестовая система"
    retry_base_seconds = 10

    def __init__(self) -> None:
        self.received: dict[str, int] = {}  # request_id → subject_id
        self.mode = "ok"  # ok | down | lose_answer | refuse | waiting
        self.results: dict[str, Outcome] = {}

    def label(self, item: WorkItem) -> str:
        return f"Пакет {item.subject_id}"

    def prepare(self, item: WorkItem) -> object:
        if item.subject_id < 0:
            raise DataError("Нет СНИЛС пациента")
        return f"payload-{item.subject_id}"

    def transmit(self, item: WorkItem, prepared: object) -> Outcome:
        if self.mode == "down":
            raise TransientError("сервис недоступен")
        self.received[item.request_id] = item.subject_id
        if self.mode == "lose_answer":
            raise UnknownOutcome("нет ответа за 30 с")
        if self.mode == "refuse":
            raise DataError("запрос отклонён")
        return Outcome.accepted("принят", external_id=f"ext-{item.request_id}", payload=str(prepared))

    def check(self, item: WorkItem) -> Outcome:
        if self.mode == "down":
            raise TransientError("сервис недоступен")
        asked = item.external_id or item.request_id
        key = asked.removeprefix("ext-")
        if key not in self.received:
            return Outcome.not_found("не найден")
        if self.mode == "waiting":
            return Outcome.accepted("обрабатывается", external_id=f"ext-{key}")
        return self.results.get(key, Outcome.done("прошёл проверку"))

    def sends_of(self, subject_id: int) -> int:
        return sum(1 for s in self.received.values() if s == subject_id)


@pytest.fixture
def remote(app):
    channel = Remote()
    delivery.register_channel(channel)
    yield channel
    delivery.CHANNELS.pop(channel.name, None)


def _item(remote: Remote, subject_id: int, mo_id: int | None = None) -> WorkItem:
    item = delivery.enqueue(remote, "packet", subject_id, mo_id)
    db.session.commit()
    return item


def _reload(item: WorkItem) -> WorkItem:
    db.session.expire_all()
    return db.session.get(WorkItem, item.id)


def test_sent_item_waits_for_its_answer_then_is_done(remote):
    item = _item(remote, 1)
    assert delivery.send_due(remote) == 1
    item = _reload(item)
    assert item.state == WAITING and item.external_id.startswith("ext-") and item.attempts == 1
    # Not asked before its poll time …
    assert delivery.poll_due(remote) == 0
    # … and done once asked after it.
    assert delivery.poll_due(remote, now=utcnow() + timedelta(minutes=2)) == 1
    assert _reload(item).state == DONE
    lines = db.session.scalars(db.select(JournalEntry.message).where(JournalEntry.item_id == item.id)
                               .order_by(JournalEntry.id)).all()
    assert lines == ["Пакет 1: отправка в Тестовая система", "принят", "прошёл проверку"]


def test_a_leased_item_is_not_claimed_twice_until_the_lease_expires(remote):
    _item(remote, 1)
    now = utcnow()
    first = delivery.claim(remote, (QUEUED,), now, 10)
    assert len(first) == 1
    assert delivery.claim(remote, (QUEUED,), now, 10) == []
    later = now + timedelta(seconds=remote.lease_seconds + 1)
    assert delivery.claim(remote, (QUEUED,), later, 10) == first


@pytest.mark.parametrize("database", DATABASES)
def test_two_workers_never_take_the_same_item(database, tmp_path):
    """Three threads with their own connections claim at once, on a file SQLite and PostgreSQL."""
    overrides = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'claim.db'}"} if database == "sqlite" else {}
    app = make_app(database, **overrides)
    remote = Remote()
    delivery.register_channel(remote)
    with app.app_context():
        if database == "postgresql":
            _reset_postgres()
        else:
            db.create_all()
        for n in range(60):
            delivery.enqueue(remote, "packet", n, None)
        db.session.commit()
        taken: list[list[int]] = []
        barrier = threading.Barrier(3)

        def worker() -> None:
            with app.app_context():
                barrier.wait()
                ids: list[int] = []
                for _ in range(10):
                    ids += delivery.claim(remote, (QUEUED,), utcnow(), 4)
                taken.append(ids)
                db.session.remove()

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        everything = [i for ids in taken for i in ids]
        assert len(everything) == len(set(everything)) == 60
        db.session.remove()
        db.engine.dispose()
    delivery.CHANNELS.pop(remote.name, None)


def test_an_outage_leaves_the_item_queued_with_back_off_until_the_system_returns(remote):
    item = _item(remote, 7)
    remote.mode = "down"
    delivery.send_due(remote)
    item = _reload(item)
    assert item.state == QUEUED and item.last_error == "сервис недоступен"
    first_retry = item.next_attempt_at
    assert first_retry > utcnow()
    # Still down at the retry: the wait doubles.
    delivery.send_due(remote, now=first_retry + timedelta(seconds=1))
    item = _reload(item)
    assert item.next_attempt_at - first_retry > timedelta(seconds=remote.retry_base_seconds)
    remote.mode = "ok"
    assert delivery.send_due(remote) == 0  # not due yet: no hammering
    delivery.send_due(remote, now=item.next_attempt_at + timedelta(seconds=1))
    assert _reload(item).state == WAITING
    assert remote.sends_of(7) == 1


def test_a_lost_answer_is_resolved_by_asking_not_by_sending_again(remote):
    item = _item(remote, 3)
    remote.mode = "lose_answer"
    delivery.send_due(remote)
    item = _reload(item)
    assert item.state == UNKNOWN and remote.sends_of(3) == 1
    remote.mode = "ok"
    delivery.send_due(remote, now=item.next_attempt_at + timedelta(seconds=1))
    item = _reload(item)
    assert item.state == DONE
    assert remote.sends_of(3) == 1  # the other side got exactly one document


def test_a_crash_between_claim_and_send_delivers_exactly_once(remote):
    item = _item(remote, 4)
    # A worker claims the item and dies before sending anything.
    delivery.claim(remote, (QUEUED,), utcnow(), 10)
    assert delivery.send_due(remote) == 0  # the lease still holds
    later = utcnow() + timedelta(seconds=remote.lease_seconds + 1)
    delivery.send_due(remote, now=later)
    assert _reload(item).state == WAITING
    assert remote.sends_of(4) == 1


def test_a_crash_after_the_request_left_asks_before_resending(remote):
    item = _item(remote, 5)
    # A worker marked SENDING, the request reached the other side, then the process died.
    delivery.claim(remote, (QUEUED,), utcnow(), 10)
    item = _reload(item)
    item.state, item.request_id = SENDING, "req-5"
    item.next_attempt_at = item.lease_until
    db.session.commit()
    remote.received["req-5"] = 5
    delivery.send_due(remote, now=item.lease_until + timedelta(seconds=1))
    assert _reload(item).state == DONE
    assert remote.sends_of(5) == 1


def test_a_crash_before_the_request_left_sends_it_once(remote):
    item = _item(remote, 6)
    delivery.claim(remote, (QUEUED,), utcnow(), 10)
    item = _reload(item)
    item.state, item.request_id = SENDING, "req-never-left"
    item.next_attempt_at = item.lease_until
    db.session.commit()
    delivery.send_due(remote, now=item.lease_until + timedelta(seconds=1))
    item = _reload(item)
    assert item.state == WAITING and remote.sends_of(6) == 1
    messages = db.session.scalars(db.select(JournalEntry.message).where(JournalEntry.item_id == item.id)).all()
    assert any("отправляется снова" in m for m in messages)


def test_data_errors_fail_without_automatic_retry(remote):
    item = _item(remote, -1)
    delivery.send_due(remote)
    item = _reload(item)
    assert item.state == FAILED and item.last_error == "Нет СНИЛС пациента"
    delivery.send_due(remote, now=utcnow() + timedelta(days=1))
    assert _reload(item).state == FAILED and remote.received == {}


def test_a_refusal_by_the_system_fails_the_item(remote):
    item = _item(remote, 8)
    remote.mode = "refuse"
    delivery.send_due(remote)
    assert _reload(item).state == FAILED


def test_cancel_only_before_the_item_left(remote):
    queued = _item(remote, 9)
    assert delivery.cancel(remote, queued, "отменено") is True
    db.session.commit()  # as the view does
    assert _reload(queued).state == CANCELLED
    sent = _item(remote, 10)
    delivery.send_due(remote)
    assert delivery.cancel(remote, _reload(sent), "отменено") is False
    assert remote.sends_of(9) == 0


def test_items_of_a_switched_off_mo_wait(app, remote):
    from portal.admin.services import set_integration

    remote.procedure = "vimis"
    try:
        region = factories.make_region()
        on, off = region.a.mo, region.b.mo
        set_integration(off, "vimis", False, "Плановые работы")
        set_integration(on, "vimis", True)
        db.session.commit()
        item_on, item_off = _item(remote, 11, on.id), _item(remote, 12, off.id)
        delivery.send_due(remote)
        assert _reload(item_on).state == WAITING
        assert _reload(item_off).state == QUEUED
    finally:
        remote.procedure = None


def test_a_run_records_its_packets_and_errors(remote):
    _item(remote, 20)
    _item(remote, -2)
    with recording("test_service") as tally:
        delivery.send_due(remote)
    run = db.session.get(ServiceRun, tally.run_id)
    assert (run.total, run.errors, run.result) == (2, 1, RUN_ERROR)
    assert run.finished_at is not None
    entries = db.session.scalars(db.select(JournalEntry).where(JournalEntry.run_id == run.id)).all()
    assert {e.item_id for e in entries} == {run_item for run_item in tally.items}

    with recording("test_service") as tally:
        pass
    run = db.session.get(ServiceRun, tally.run_id)
    assert (run.total, run.errors, run.result) == (0, 0, RUN_OK)


def test_a_failing_run_is_marked_with_its_error(remote):
    with pytest.raises(RuntimeError), recording("test_service") as tally:
        raise RuntimeError("база недоступна")
    run = db.session.get(ServiceRun, tally.run_id)
    assert run.result == RUN_ERROR and "база недоступна" in run.message
