"""The message transport of the ТФОМС exchange: RabbitMQ through kombu, or queues in our database.

Both speak the same small interface, so the packet code, the answer processing and ТФОМС's
stand-in do not know which one runs:

    publish(queue, body, type=…, message_id=…, reply_to=…)   returns once the broker has the
                                                              message (publisher confirm / commit)
    get(queue) → Message | None                               one message, to ack or reject
    message.ack() / message.reject(requeue=…)

- `AmqpBroker` (PORTAL_AMQP_URL set): durable queues on the default exchange, persistent
  messages with the properties of specs/tfoms/NOTES.md §1, publisher confirms, manual acks.
  A lost connection (the broker restarted) is reopened on the next call.
- `DbBroker` (no broker configured): a message is a row of `tfoms_queue_message` written in the
  caller's transaction, so a packet and its «Отправлен» commit together; `get` leases a row
  (committed) and `ack` deletes it in the caller's transaction. A consumer that dies leaves
  the lease to expire and the message comes again — consumers recognise a repeat by message_id.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import current_app, has_app_context

from portal.extensions import db
from portal.models_base import utcnow

log = logging.getLogger("tfoms.broker")

CONTENT_TYPE = "Xml"  # as ПроМед sends it (NOTES §1)
CONTENT_ENCODING = "utf-8"
APP_ID = "Portal"
LEASE_SECONDS = 60  # an unacked message of the database transport comes back after this


class BrokerUnavailable(Exception):
    """The broker cannot be reached or did not confirm: the message did not (surely) go."""


@dataclass
class Message:
    body: bytes
    properties: dict[str, Any]
    _ack: Callable[[], None] = field(repr=False)
    _reject: Callable[[bool], None] = field(repr=False)
    settled: bool = False

    @property
    def type(self) -> str | None:
        return self.properties.get("type")

    @property
    def message_id(self) -> str | None:
        return self.properties.get("message_id")

    @property
    def reply_to(self) -> str | None:
        return self.properties.get("reply_to")

    @property
    def correlation_id(self) -> str | None:
        return self.properties.get("correlation_id")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def ack(self) -> None:
        if not self.settled:
            self._ack()
            self.settled = True

    def reject(self, requeue: bool = False) -> None:
        if not self.settled:
            self._reject(requeue)
            self.settled = True


def properties(type: str, message_id: str, reply_to: str | None = None,
               correlation_id: str | None = None) -> dict[str, Any]:
    """The message properties of NOTES.md §1."""
    props: dict[str, Any] = {
        "type": type, "message_id": message_id, "content_type": CONTENT_TYPE,
        "content_encoding": CONTENT_ENCODING, "app_id": APP_ID,
    }
    if reply_to:
        props["reply_to"] = reply_to
    if correlation_id:
        props["correlation_id"] = correlation_id
    return props


class DbBroker:
    """Queues kept in the portal's database (the broker-less default of `make run`)."""

    name = "database"

    def publish(self, queue: str, body: bytes, *, type: str, message_id: str, reply_to: str | None = None,
                correlation_id: str | None = None) -> None:
        from portal.tfoms.models import QueueMessage

        db.session.add(QueueMessage(queue=queue, body=body,
                                    properties=properties(type, message_id, reply_to, correlation_id)))
        db.session.flush()

    def get(self, queue: str) -> Message | None:
        """Lease the oldest free message of the queue (committed, so others skip it)."""
        from portal.tfoms.models import QueueMessage

        now = utcnow()
        free = db.select(QueueMessage.id).where(
            QueueMessage.queue == queue,
            (QueueMessage.locked_until.is_(None)) | (QueueMessage.locked_until < now),
        ).order_by(QueueMessage.id).limit(1)
        if db.engine.dialect.name == "postgresql":
            free = free.with_for_update(skip_locked=True)
        message_id = db.session.scalar(
            db.update(QueueMessage)
            .where(QueueMessage.id == free.scalar_subquery())
            .values(locked_until=now + timedelta(seconds=LEASE_SECONDS))
            .returning(QueueMessage.id)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        if message_id is None:
            return None
        row = db.session.get(QueueMessage, message_id, populate_existing=True)

        def ack() -> None:  # in the caller's transaction: the work and the ack commit together
            db.session.execute(db.delete(QueueMessage).where(QueueMessage.id == message_id))

        def reject(requeue: bool) -> None:
            if requeue:
                db.session.execute(
                    db.update(QueueMessage).where(QueueMessage.id == message_id).values(locked_until=None)
                )
            else:
                ack()

        return Message(bytes(row.body), dict(row.properties), ack, reject)

    def size(self, queue: str) -> int:
        from portal.tfoms.models import QueueMessage

        return db.session.scalar(db.select(db.func.count()).where(QueueMessage.queue == queue)) or 0

    def purge(self, queue: str) -> None:
        from portal.tfoms.models import QueueMessage

        db.session.execute(db.delete(QueueMessage).where(QueueMessage.queue == queue))
        db.session.commit()

    def declare_temporary(self, queue: str) -> None:
        """A reply queue of one RPC call: nothing to declare in the database."""

    def delete_queue(self, queue: str) -> None:
        self.purge(queue)

    def close(self) -> None:
        """Nothing to close: the messages live in the session's database."""

    def commit(self) -> None:
        """What was published and acknowledged in the caller's transaction takes effect."""
        db.session.commit()

    def rollback(self) -> None:
        db.session.rollback()

    def settle(self, message: Message) -> None:
        """The caller's work for `message` is done: the ack and the work commit together."""
        message.ack()
        db.session.commit()


class AmqpBroker:
    """RabbitMQ through kombu: durable queues, persistent messages, confirms, manual acks."""

    name = "rabbitmq"

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._lock = threading.RLock()
        self._connection: Any = None
        self._channel: Any = None
        self._producer: Any = None
        self._declared: set[str] = set()

    # --- connection ---------------------------------------------------------------------------

    def _open(self) -> None:
        from kombu import Connection, Producer

        connection = Connection(self.url, connect_timeout=self.connect_timeout,
                                transport_options={"confirm_publish": True})
        try:
            connection.ensure_connection(max_retries=1)
        except Exception as error:
            with contextlib.suppress(Exception):
                connection.release()
            raise BrokerUnavailable(f"брокер RabbitMQ недоступен: {error}") from error
        self._connection = connection
        self._channel = connection.channel()
        self._producer = Producer(self._channel)
        self._declared = set()

    def _drop(self) -> None:
        with contextlib.suppress(Exception):
            if self._connection is not None:
                self._connection.release()
        self._connection = self._channel = self._producer = None
        self._declared = set()

    def _call(self, action: Callable[[], Any]) -> Any:
        """Run `action` on an open channel; a connection lost since the last call (broker restart)
        is reopened once before the failure is reported."""
        from kombu.exceptions import OperationalError

        recoverable = (OSError, ConnectionError, OperationalError, BrokerUnavailable)
        with self._lock:
            for attempt in (1, 2):
                if self._connection is None:
                    self._open()
                try:
                    return action()
                except recoverable as error:
                    if not self._is_connection_error(error):
                        raise
                    self._drop()
                    if attempt == 2:
                        raise BrokerUnavailable(f"связь с брокером RabbitMQ потеряна: {error}") from error
        return None  # unreachable

    def _is_connection_error(self, error: Exception) -> bool:
        if isinstance(error, OSError | ConnectionError | BrokerUnavailable):
            return True
        connection = self._connection
        errors = ()
        if connection is not None:
            errors = tuple(connection.connection_errors) + tuple(connection.channel_errors)
        return isinstance(error, errors) or "connection" in str(error).lower() or "closed" in str(error).lower()

    def _queue(self, name: str, **options: Any) -> Any:
        from kombu import Queue

        queue = Queue(name, routing_key=name, durable=options.get("durable", True),
                      auto_delete=options.get("auto_delete", False), exclusive=options.get("exclusive", False))
        bound = queue(self._channel)
        if name not in self._declared:
            bound.declare()
            self._declared.add(name)
        return bound

    # --- interface ------------------------------------------------------------------------------

    def publish(self, queue: str, body: bytes, *, type: str, message_id: str, reply_to: str | None = None,
                correlation_id: str | None = None) -> None:
        props = properties(type, message_id, reply_to, correlation_id)

        def send() -> None:
            self._queue(queue)
            self._producer.publish(
                body, routing_key=queue, exchange="", delivery_mode=2, serializer=None,
                content_type=props.pop("content_type"), content_encoding=props.pop("content_encoding"),
                retry=False, **props,
            )

        try:
            self._call(send)
        except BrokerUnavailable:
            raise
        except Exception as error:  # a nack or an unexpected channel error: not confirmed
            self._drop()
            raise BrokerUnavailable(f"брокер не подтвердил приём сообщения: {error}") from error

    def get(self, queue: str) -> Message | None:
        def fetch() -> Any:
            return self._queue(queue).get(no_ack=False, accept=None)

        raw = self._call(fetch)
        if raw is None:
            return None
        props = dict(raw.properties)
        props.setdefault("content_type", raw.content_type)
        props.setdefault("content_encoding", raw.content_encoding)
        props.pop("delivery_info", None)
        props.pop("application_headers", None)

        def ack() -> None:
            with self._lock:
                raw.ack()

        def reject(requeue: bool) -> None:
            with self._lock:
                raw.reject(requeue=requeue)

        return Message(raw.body if isinstance(raw.body, bytes) else raw.body.encode(), props, ack, reject)

    def size(self, queue: str) -> int:
        def count() -> int:
            _name, messages, _consumers = self._queue(queue).queue_declare(passive=True)
            return int(messages)

        return self._call(count)

    def purge(self, queue: str) -> None:
        self._call(lambda: self._queue(queue).purge())

    def declare_temporary(self, queue: str) -> None:
        self._call(lambda: self._queue(queue, durable=False, auto_delete=True))

    def delete_queue(self, queue: str) -> None:
        def delete() -> None:
            self._queue(queue, durable=False, auto_delete=True).delete()
            self._declared.discard(queue)

        with contextlib.suppress(Exception):
            self._call(delete)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def commit(self) -> None:
        """Nothing to do: the broker took each message when it confirmed it."""

    def rollback(self) -> None:
        """Nothing to undo at the broker: an unacknowledged message comes again."""

    def settle(self, message: Message) -> None:
        """The caller's work for `message` is done: commit it, then acknowledge (a crash between
        the two delivers the message again, and its repeat is recognised)."""
        db.session.commit()
        message.ack()


_brokers: dict[str, AmqpBroker] = {}
_brokers_lock = threading.Lock()


def get_broker(url: str | None = None) -> DbBroker | AmqpBroker:
    """The configured transport: RabbitMQ when PORTAL_AMQP_URL is set, else the database.

    One AMQP connection per URL and process, shared by the jobs (calls are serialised).
    """
    if url is None and has_app_context():
        url = current_app.config.get("AMQP_URL")
    if not url:
        return DbBroker()
    with _brokers_lock:
        broker = _brokers.get(url)
        if broker is None:
            broker = _brokers[url] = AmqpBroker(url)
        return broker


def rpc_call(broker: DbBroker | AmqpBroker, queue: str, body: bytes, *, type: str, timeout: float,
             poll: float = 0.05) -> Message | None:
    """A synchronous request (stage 3): publish with a private reply queue and wait for the
    answer carrying our correlation id; None after `timeout` seconds."""
    import time

    correlation_id = str(uuid.uuid4())
    reply_queue = f"rpc.reply.{correlation_id}"
    broker.declare_temporary(reply_queue)
    try:
        broker.publish(queue, body, type=type, message_id=correlation_id, reply_to=reply_queue,
                       correlation_id=correlation_id)
        broker.commit()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = broker.get(reply_queue)
            if message is not None:
                broker.settle(message)
                if message.correlation_id in (None, correlation_id):
                    return message
                continue
            time.sleep(poll)
        return None
    finally:
        broker.delete_queue(reply_queue)
