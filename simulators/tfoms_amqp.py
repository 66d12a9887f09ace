"""ТФОМС stand-in for the packet exchange over RabbitMQ (issue 6; specs/tfoms/NOTES.md §1).

It reads the portal's packets from the request queue and the RPC queue through the same broker
interface the portal uses (portal.tfoms.broker: RabbitMQ or the queues in the portal database)
and answers as ТФОМС would:

* a packet that is not XML, fails its XSD, or is of a type ТФОМС does not know gets a message
  of type "ERROR": HEADER/MESSAGE_ID (the packet's message_id), HEADER/DESCRIPTION (what is
  wrong), BODY = base64 of the packet as received;
* an object packet (HEADER/OPERATIONTYPE Insert|Update|Delete, the object's id in the header)
  is checked against what ТФОМС has accepted before: a child needs its parent (BRANCH ← DIVISION
  ← DIVISION_LINK_STRUCTURE_BED ← AMOUNT_BED, FREE_BEDS_INFORMATION; HOSPITALISATION_REFERRAL ←
  CANCEL_HOSPITALISATION_REFERRAL; HOSPITALISATION ← MOTION_IN_HOSPITAL, CANCEL_HOSPITALISATION),
  an Update or Delete needs the object, a Delete needs the object to have no live children.
  A refusal is an ANSWER with RESULT ERROR and ERROR_RESULT (RESULT_CODE, Russian RESULT_NAME);
* PERS_LIST (a prophylactic plan): a person without a policy number, with a bad ЕНП (NPOLIS of
  a policy of type 3) or whose ID_PAC a test put into `refuse_people` («не найдено в РС ЕРЗ»)
  gets an ERROR_RESULT with ID_PAC = the person's ID_PAC;
* everything else: ANSWER RESULT OK. Answers go to the packet's reply_to with correlation_id =
  the packet's message_id;
* FREE_BEDS_REQUEST (stage 3 RPC, our own contract) gets FREE_BEDS_ANSWER built from the
  FREE_BEDS_INFORMATION, DIVISION and DIVISION_LINK_STRUCTURE_BED data accepted so far;
* an ANSWER (or ERROR) on the request queue is the portal's answer to a POLIS sent from here
  (`send_polis`, or POST /tfoms_amqp/_polis): it is recorded and acked, never answered.

A message_id seen before gets the very same answer again (same reply message_id) and is not
processed twice. A message is acked only after its answer is published (database transport:
the answer and the ack commit together, one commit per message).

Modes (simulator "tfoms_amqp" of the host): "down" — nothing is taken from the queues;
"slow" — sleeps `delay` seconds before each answer; "errors" — `share` of the packets get
ANSWER ERROR 500 «Внутренняя ошибка ТФОМС» and are not remembered (a resend is processed).

RESULT_CODE values are ours (the real list is not public): see CODE_*.
"""

from __future__ import annotations

import base64
import html
import logging
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from lxml import etree

from simulators.server import Control, register_simulator
from simulators.tfoms import date_field, enp_is_valid

log = logging.getLogger("simulators.tfoms_amqp")

NAME = "tfoms_amqp"
TITLE = "ТФОМС: обмен пакетами (RabbitMQ)"

bp = Blueprint("sim_tfoms_amqp", __name__)

DEFAULT_REQUEST_QUEUE = "request_queue"
DEFAULT_REPLY_QUEUE = "reply_queue"
DEFAULT_RPC_QUEUE = "rpc_queue"
OPERATIONS = ("Insert", "Update", "Delete")
LOG_SIZE = 1000
PAGE_LINES = 100

# RESULT_CODE of ANSWER/ERROR_RESULT (ours).
CODE_NO_PARENT = 101
CODE_NOT_FOUND = 102
CODE_HAS_CHILDREN = 103
CODE_BAD_OPERATION = 104
CODE_NO_ID = 105
CODE_NO_BODY = 106
CODE_NO_POLICY = 201
CODE_BAD_ENP = 202
CODE_NOT_INSURED = 203
CODE_INTERNAL = 500
INTERNAL_ERROR = "Внутренняя ошибка ТФОМС"

# Results as they are counted and logged.
RESULT_OK = "OK"
RESULT_ERROR = "ERROR"  # ANSWER with RESULT ERROR
RESULT_XML_ERROR = "ERROR_XML"  # a message of type ERROR: not XML, not valid, unknown type
RESULT_RECEIVED = "RECEIVED"  # the portal's answer to our POLIS
RESULT_LABELS = {
    RESULT_OK: "Принят (OK)",
    RESULT_ERROR: "Отклонён (ANSWER ERROR)",
    RESULT_XML_ERROR: "Не разобран (ERROR)",
    RESULT_RECEIVED: "Ответ портала получен",
}

TYPE_TITLES = {
    "BRANCH": "подразделение МО",
    "DIVISION": "отделение",
    "DIVISION_LINK_STRUCTURE_BED": "профиль коек отделения",
    "AMOUNT_BED": "коечный фонд",
    "FREE_BEDS_INFORMATION": "свободные места",
    "HOSPITALISATION_REFERRAL": "направление на госпитализацию",
    "CANCEL_HOSPITALISATION_REFERRAL": "аннулирование направления",
    "HOSPITALISATION": "госпитализация",
    "MOTION_IN_HOSPITAL": "движение в стационаре",
    "CANCEL_HOSPITALISATION": "отмена госпитализации",
    "PERS_LIST": "план профилактических мероприятий",
    "FREE_BEDS_REQUEST": "запрос свободных мест",
    "ANSWER": "ответ портала",
    "POLIS": "изменение страховой принадлежности",
}

# child type -> (body field, parent type): every field present in the body must name a live
# parent. "@id" is the packet's own header id: the portal sends DIVISION_LINK_STRUCTURE_BED,
# AMOUNT_BED and FREE_BEDS_INFORMATION of one bed profile under the same id, and
# FREE_BEDS_INFORMATION has no field naming its parent.
SAME_ID = "@id"
PARENT_LINKS: dict[str, tuple[tuple[str, str], ...]] = {
    "DIVISION": (("BRANCH_ID", "BRANCH"),),
    "DIVISION_LINK_STRUCTURE_BED": (("DIVISION_ID", "DIVISION"),),
    "AMOUNT_BED": (("DLSB", "DIVISION_LINK_STRUCTURE_BED"),),
    "FREE_BEDS_INFORMATION": ((SAME_ID, "DIVISION_LINK_STRUCTURE_BED"),),
    "MOTION_IN_HOSPITAL": (("HOSPITALISATION_ID", "HOSPITALISATION"),),
    "CANCEL_HOSPITALISATION": (("HOSPITALISATION_ID", "HOSPITALISATION"),),
}
PORTAL_ANSWER_TYPES = ("ANSWER", "ERROR")
ENP_POLICY_TYPES = ("3",)  # F008 3 «полис единого образца»: the policy number is the ЕНП


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True, huge_tree=False)


def _local(tag: Any) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _text(parent: etree._Element | None, name: str) -> str | None:
    if parent is None:
        return None
    for child in parent:
        if _local(child.tag) == name:
            value = (child.text or "").strip()
            return value or None
    return None


def _child(parent: etree._Element | None, name: str) -> etree._Element | None:
    if parent is None:
        return None
    return next((c for c in parent if _local(c.tag) == name), None)


def _leaves(parent: etree._Element | None) -> dict[str, str]:
    """The leaf children of BODY as tag → text (the 263 packets are flat)."""
    if parent is None:
        return {}
    return {_local(c.tag): (c.text or "").strip() for c in parent if isinstance(c.tag, str) and len(c) == 0}


def known_types() -> frozenset[str]:
    """Packet types ТФОМС knows: those with a schema in the portal's builders, and ERROR."""
    from portal.tfoms import builders

    return frozenset(builders.SCHEMA_FILES) | {"ERROR"}


def _validate(packet_type: str, body: bytes) -> list[str]:
    from portal.tfoms import builders

    return list(builders.validate(packet_type, body))


# --- the memory ------------------------------------------------------------------------------


@dataclass
class Reply:
    """An answer as published, kept to be published again for a repeated message_id."""

    queue: str
    type: str
    body: bytes
    message_id: str
    correlation_id: str | None


@dataclass
class StoredObject:
    """An object ТФОМС has accepted (BRANCH, HOSPITALISATION …) by (type, header id)."""

    type: str
    id: str
    mo: str | None
    body: dict[str, str]
    parents: list[tuple[str, str]]
    message_id: str | None
    operation: str
    deleted: bool = False
    updated_at: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))


@dataclass
class LogLine:
    at: str
    queue: str
    type: str
    operation: str | None
    object_id: str | None
    message_id: str | None
    result: str
    text: str


def _line(*values: Any) -> dict[str, Any]:
    return asdict(LogLine(*values))


@dataclass
class Decision:
    """What to do with one message: the answer to publish (None: none) and the log line."""

    reply: Reply | None
    packet_type: str
    result: str
    text: str
    operation: str | None = None
    object_id: str | None = None
    remember: bool = True  # False: a transient failure, a resend is processed


class TfomsStandIn:
    """ТФОМС's side of the exchange: its memory and the pump that answers the queues.

    Usable without the HTTP host: `TfomsStandIn()` has its own Control (mode, delay, share),
    settable through the `mode`, `delay` and `share` attributes; inside the host it shares the
    host's Control, so /tfoms_amqp/_control changes it at once.
    """

    def __init__(self, control: Control | None = None) -> None:
        self.control = control if control is not None else Control()
        self._lock = threading.RLock()
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.processed: dict[str, Reply | None] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self.duplicates = 0
        # What it did, oldest first: dicts of LogLine (type, operation, object_id, message_id, result …).
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self.refuse_people: set[int | str] = set()  # ID_PAC that PERS_LIST refuses («not in the register»)
        self.polis: dict[str, dict[str, Any]] = {}  # POLIS sent: message_id -> fields and answers
        self.polis_answers: list[dict[str, Any]] = []  # the portal's answers, as they came
        self.queues: dict[str, str] = {
            "request_queue": DEFAULT_REQUEST_QUEUE,
            "reply_queue": DEFAULT_REPLY_QUEUE,
            "rpc_queue": DEFAULT_RPC_QUEUE,
        }

    # mode, delay and share read and write the Control (shared with the host when bound).
    @property
    def mode(self) -> str:
        return self.control.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.control.mode = value

    @property
    def delay(self) -> float:
        return self.control.delay

    @delay.setter
    def delay(self, value: float) -> None:
        self.control.delay = value

    @property
    def share(self) -> float:
        return self.control.share

    @share.setter
    def share(self, value: float) -> None:
        self.control.share = value

    # --- the pump ---------------------------------------------------------------------------

    def pump(
        self,
        broker: Any,
        *,
        request_queue: str = DEFAULT_REQUEST_QUEUE,
        rpc_queue: str = DEFAULT_RPC_QUEUE,
        reply_queue: str = DEFAULT_REPLY_QUEUE,
        limit: int | None = None,
    ) -> int:
        """Answer every message waiting in the request and RPC queues; returns how many were taken.

        `reply_queue` is where answers go when a packet has no reply_to.
        """
        with self._lock:
            self.queues.update(request_queue=request_queue, reply_queue=reply_queue, rpc_queue=rpc_queue)
        handled = 0
        for queue in (request_queue, rpc_queue):
            if broker.name == "database" and not broker.size(queue):
                continue  # a read instead of the lease's write every round (SQLite)
            while limit is None or handled < limit:
                if self.mode == "down":  # ТФОМС is away: messages wait in the queue
                    return handled
                message = broker.get(queue)
                if message is None:
                    break
                self._handle(broker, queue, message, request_queue, reply_queue)
                handled += 1
        return handled

    def _handle(self, broker: Any, queue: str, message: Any, request_queue: str, reply_queue: str) -> None:
        try:
            decision = self._decide(queue, message, request_queue, reply_queue)
            if decision.reply is not None:
                if self.mode == "slow":
                    time.sleep(self.delay)
                reply = decision.reply
                broker.publish(
                    reply.queue,
                    reply.body,
                    type=reply.type,
                    message_id=reply.message_id,
                    correlation_id=reply.correlation_id,
                )
            message.ack()
            broker.commit()
        except Exception:
            broker.rollback()
            try:
                message.reject(requeue=True)
                broker.commit()
            except Exception:  # the connection is gone: the broker gives the message back itself
                log.debug("ТФОМС (RabbitMQ): не удалось вернуть сообщение в очередь", exc_info=True)
            raise

    def _decide(self, queue: str, message: Any, request_queue: str, reply_queue: str) -> Decision:
        """Decide on one message under the lock, remember it, and write its log line."""
        message_id = message.message_id
        with self._lock:
            if message_id and message_id in self.processed:
                self.duplicates += 1
                reply = self.processed[message_id]
                line = LogLine(
                    _now(),
                    queue,
                    message.type or "?",
                    None,
                    None,
                    message_id,
                    "DUPLICATE",
                    "Повтор уже обработанного сообщения: ответ отправлен повторно"
                    if reply is not None
                    else "Повтор уже полученного ответа портала",
                )
                self.log.append(asdict(line))
                return Decision(reply, message.type or "?", "DUPLICATE", line.text, remember=False)
            try:
                decision = self._judge(queue, message, request_queue, reply_queue)
            except Exception as error:  # a bug here must not block the queue behind one message
                log.exception("ТФОМС (RabbitMQ): сообщение %s не обработано", message_id)
                decision = self._xml_error(
                    message.reply_to or reply_queue,
                    message,
                    message.type or "?",
                    f"{INTERNAL_ERROR}: {error}",
                )
                decision.remember = False
            if message_id and decision.remember:
                self.processed[message_id] = decision.reply
            self.counts[(decision.packet_type, decision.result)] += 1
            self.log.append(
                _line(
                    _now(),
                    queue,
                    decision.packet_type,
                    decision.operation,
                    decision.object_id,
                    message_id,
                    decision.result,
                    decision.text,
                )
            )
            return decision

    def _judge(self, queue: str, message: Any, request_queue: str, reply_queue: str) -> Decision:
        reply_to = message.reply_to or reply_queue
        stated_type = message.type or ""
        if self.mode == "errors" and stated_type not in PORTAL_ANSWER_TYPES and random.random() < self.share:
            reply = self._answer(
                reply_to,
                stated_type or "UNKNOWN",
                message.message_id,
                [(None, CODE_INTERNAL, INTERNAL_ERROR)],
                queue,
            )
            return Decision(reply, stated_type or "?", RESULT_ERROR, INTERNAL_ERROR, remember=False)
        try:
            root = etree.fromstring(message.body, parser=_parser())
        except (etree.XMLSyntaxError, ValueError) as error:
            return self._xml_error(
                reply_to, message, stated_type or "?", f"Сообщение не является XML: {error}"
            )
        packet_type = _local(root.tag)
        if stated_type and stated_type != packet_type:
            return self._xml_error(
                reply_to,
                message,
                stated_type,
                f"Тип сообщения «{stated_type}» не совпадает с корневым элементом пакета «{packet_type}»",
            )
        if packet_type not in known_types():
            return self._xml_error(reply_to, message, packet_type, f"Неизвестный тип пакета «{packet_type}»")
        if packet_type == "ERROR":  # the portal could not read our POLIS
            return self._portal_answer(root, packet_type, message)
        errors = _validate(packet_type, message.body)
        if errors:
            return self._xml_error(
                reply_to, message, packet_type, "Пакет не соответствует схеме XSD: " + "; ".join(errors)
            )
        if packet_type == "ANSWER":
            return self._portal_answer(root, packet_type, message)
        if packet_type == "FREE_BEDS_REQUEST":
            return self._free_beds(root, reply_to, message)
        if packet_type == "PERS_LIST":
            return self._pers_list(root, reply_to, message, request_queue)
        header = _child(root, "HEADER")
        if _text(header, "OPERATIONTYPE") is not None:
            return self._object(root, header, packet_type, reply_to, message, request_queue)
        reply = self._answer(reply_to, packet_type, message.message_id, [], request_queue)
        return Decision(reply, packet_type, RESULT_OK, "Принят")

    # --- kinds of packets -------------------------------------------------------------------

    def _object(
        self,
        root: etree._Element,
        header: etree._Element | None,
        packet_type: str,
        reply_to: str,
        message: Any,
        request_queue: str,
    ) -> Decision:
        operation = _text(header, "OPERATIONTYPE") or ""
        id_field, object_id = _header_id(header)

        def refuse(code: int, text: str) -> Decision:
            reply = self._answer(
                reply_to, packet_type, message.message_id, [(None, code, text)], request_queue
            )
            return Decision(reply, packet_type, RESULT_ERROR, text, operation, object_id)

        if operation not in OPERATIONS:
            return refuse(
                CODE_BAD_OPERATION, f"Неизвестная операция «{operation}»: допустимы Insert, Update, Delete"
            )
        if object_id is None:
            return refuse(CODE_NO_ID, "В заголовке пакета нет идентификатора объекта")
        key = (packet_type, object_id)
        existing = self.objects.get(key)
        if existing is not None and existing.deleted:
            existing = None
        what = _what(packet_type)
        if operation != "Insert" and existing is None:
            verb = "изменять" if operation == "Update" else "удалять"
            return refuse(
                CODE_NOT_FOUND,
                f"Объект не найден: в ТФОМС нет записи {what} с {id_field} = {object_id}, {verb} нечего",
            )
        if operation == "Delete":
            children = self._children(key)
            if children:
                names = ", ".join(f"{t} {i}" for t, i in children)
                return refuse(
                    CODE_HAS_CHILDREN,
                    f"Нельзя удалить запись {what} с {id_field} = {object_id}: на неё ссылаются {names}. "
                    "Сначала удалите их",
                )
            existing.deleted = True
            existing.operation, existing.message_id, existing.updated_at = (
                operation,
                message.message_id,
                _now(),
            )
        else:
            body_element = _child(root, "BODY")
            if body_element is None:
                return refuse(CODE_NO_BODY, f"Нет тела пакета (BODY) для операции {operation}")
            body = _leaves(body_element)
            parents: list[tuple[str, str]] = []
            for link_field, parent_type in PARENT_LINKS.get(packet_type, ()):
                value = object_id if link_field == SAME_ID else body.get(link_field)
                if not value:
                    continue
                if self._live(parent_type, value) is None:
                    shown = id_field if link_field == SAME_ID else link_field
                    return refuse(
                        CODE_NO_PARENT,
                        f"Родительский объект не найден: {shown} = {value} — в ТФОМС нет записи "
                        f"{_what(parent_type)}; сначала передайте {parent_type} (Insert)",
                    )
                parents.append((parent_type, value))
            if packet_type == "CANCEL_HOSPITALISATION_REFERRAL":
                referral = self._live("HOSPITALISATION_REFERRAL", object_id) or self._referral(body)
                if referral is None:
                    number = body.get("REFERRAL_NUMBER") or "—"
                    return refuse(
                        CODE_NO_PARENT,
                        f"Родительский объект не найден: REFERRAL_NUMBER = {number} — в ТФОМС нет записи "
                        f"{_what('HOSPITALISATION_REFERRAL')}; сначала передайте HOSPITALISATION_REFERRAL (Insert)",
                    )
                parents.append(("HOSPITALISATION_REFERRAL", referral.id))
            self.objects[key] = StoredObject(
                packet_type, object_id, _text(header, "CODE_MO"), body, parents, message.message_id, operation
            )
        reply = self._answer(reply_to, packet_type, message.message_id, [], request_queue)
        return Decision(reply, packet_type, RESULT_OK, "Принят", operation, object_id)

    def _pers_list(self, root: etree._Element, reply_to: str, message: Any, request_queue: str) -> Decision:
        errors: list[tuple[str | None, int, str]] = []
        people = [p for p in root if _local(p.tag) == "PERS"]
        for person in people:
            id_pac = _text(person, "ID_PAC")
            number = _text(person, "NPOLIS")
            kind = _text(person, "VPOLIS")
            enp = _text(person, "ENP")
            who = " ".join(filter(None, (_text(person, "FAM"), _text(person, "IM"), _text(person, "OT"))))
            if not number:
                errors.append((id_pac, CODE_NO_POLICY, f"Не указан номер полиса ОМС (NPOLIS): {who}"))
                continue
            if id_pac in {str(x) for x in self.refuse_people}:
                errors.append((id_pac, CODE_NOT_INSURED, f"Застрахованное лицо не найдено в РС ЕРЗ: {who}"))
                continue
            candidate = enp or (number if kind in ENP_POLICY_TYPES else None)
            if candidate is not None and not enp_is_valid(candidate):
                errors.append(
                    (
                        id_pac,
                        CODE_BAD_ENP,
                        f"Неверный ЕНП {candidate}: не 16 цифр или не сходится контрольная цифра",
                    )
                )
        reply = self._answer(reply_to, "PERS_LIST", message.message_id, errors, request_queue)
        first = people[0] if people else None
        text = "; ".join(e[2] for e in errors) or f"Принят, людей: {len(people)}"
        return Decision(
            reply, "PERS_LIST", RESULT_ERROR if errors else RESULT_OK, text, None, _text(first, "ID_PAC")
        )

    def _portal_answer(self, root: etree._Element, packet_type: str, message: Any) -> Decision:
        """The portal's ANSWER (or ERROR) to a POLIS: record it; no answer goes back."""
        header = _child(root, "HEADER")
        answered = _text(header, "MESSAGE_ID") or message.correlation_id
        if packet_type == "ERROR":
            ok, errors = False, [{"code": None, "name": _text(header, "DESCRIPTION") or ""}]
        else:
            results = _child(_child(root, "BODY"), "RESULTS")
            ok = (_text(results, "RESULT") or "").upper() == "OK"
            errors = [
                {
                    "code": _text(e, "RESULT_CODE"),
                    "name": _text(e, "RESULT_NAME"),
                    "id_pac": _text(e, "ID_PAC"),
                }
                for e in (results if results is not None else [])
                if _local(e.tag) == "ERROR_RESULT"
            ]
        record = self.polis.get(answered or "")
        answer = {
            "at": _now(),
            "message_id": message.message_id,
            "polis": answered,
            "ok": ok,
            "errors": errors,
        }
        self.polis_answers.append(answer)
        if record is None:
            text = f"Ответ на неизвестное сообщение {answered}"
            self.polis[answered or f"?{message.message_id}"] = {"known": False, "answers": [answer]}
        else:
            record["answers"].append(answer)
            text = (
                "Портал принял изменение полиса"
                if ok
                else "Портал отклонил изменение полиса: " + "; ".join(str(e.get("name")) for e in errors)
            )
        return Decision(None, packet_type, RESULT_RECEIVED, text, None, answered)

    def _free_beds(self, root: etree._Element, reply_to: str, message: Any) -> Decision:
        from portal.tfoms import builders

        body = _child(root, "BODY")
        mo, profile = _text(body, "MO"), _text(body, "BEDPROFIL")
        items = self.free_beds(mo=mo, profile=profile)
        xml = builders.build_free_beds_answer(items, date.today())
        reply = Reply(
            reply_to,
            "FREE_BEDS_ANSWER",
            _as_bytes(xml),
            str(uuid.uuid4()),
            message.correlation_id or message.message_id,
        )
        text = f"Свободные места: МО {mo or 'все'}, профиль {profile or 'все'}, строк {len(items)}"
        return Decision(reply, "FREE_BEDS_REQUEST", RESULT_OK, text)

    # --- object relations -------------------------------------------------------------------

    def _live(self, packet_type: str, object_id: str) -> StoredObject | None:
        stored = self.objects.get((packet_type, object_id))
        return stored if stored is not None and not stored.deleted else None

    def _children(self, key: tuple[str, str]) -> list[tuple[str, str]]:
        return [(o.type, o.id) for o in self.objects.values() if not o.deleted and key in o.parents]

    def _referral(self, body: dict[str, str]) -> StoredObject | None:
        """The referral a CANCEL_HOSPITALISATION_REFERRAL cancels when its CHR_ID is not the
        referral's HR_ID (the portal sends both under the referral's id): by number and МО."""
        number, lpu = body.get("REFERRAL_NUMBER"), body.get("REFERRAL_LPU")
        for stored in self.objects.values():
            if stored.type != "HOSPITALISATION_REFERRAL" or stored.deleted:
                continue
            if (
                number
                and stored.body.get("REFERRAL_NUMBER") == number
                and (not lpu or stored.mo in (None, lpu))
            ):
                return stored
        return None

    def free_beds(self, *, mo: str | None = None, profile: str | None = None) -> list[dict[str, Any]]:
        """The latest free places per МО, department and bed profile, from the accepted data."""
        with self._lock:
            latest: dict[tuple[Any, ...], dict[str, Any]] = {}
            for stored in self.objects.values():
                if stored.type != "FREE_BEDS_INFORMATION" or stored.deleted:
                    continue
                item = self._free_beds_item(stored)
                if mo and _code(item["mo"]) != _code(mo):
                    continue
                if profile and _code(item["profile"]) != _code(profile):
                    continue
                if any(
                    item[k] in (None, "")
                    for k in ("mo", "division", "division_name", "profile", "care_profile")
                ):
                    continue  # FREE_BEDS_ANSWER requires them
                key = (item["mo"], item["division"], item["profile"], item["care_profile"])
                if key not in latest or str(item["actual_on"]) >= str(latest[key]["actual_on"]):
                    latest[key] = item
            return sorted(
                latest.values(), key=lambda i: tuple(str(i[k] or "") for k in ("mo", "division", "profile"))
            )

    def _free_beds_item(self, stored: StoredObject) -> dict[str, Any]:
        body = stored.body
        link = self._live_parent(stored, "DIVISION_LINK_STRUCTURE_BED")
        division = self._live_parent(stored, "DIVISION")
        if division is None and link is not None:
            division = self._live_parent(link, "DIVISION")
        branch = self._live_parent(division, "BRANCH") if division is not None else None
        link_body = link.body if link is not None else {}
        division_id = division.id if division is not None else body.get("DIVISION") or body.get("DIVISION_ID")
        branch_code = (branch.body.get("BR_CODE") if branch is not None else None) or body.get("BRANCH")
        return {
            "mo": stored.mo or (division.mo if division is not None else None),
            "branch": branch_code or None,
            "division": _int_or_text(division_id),
            "division_name": (division.body.get("NAME") if division is not None else None)
            or body.get("DIVISION_NAME"),
            "profile": _int_or_text(
                body.get("BEDPROFIL")
                or body.get("V020_STRUCTURE_BED")
                or link_body.get("BEDPROFIL")
                or link_body.get("V020_STRUCTURE_BED")
            ),
            "care_profile": _int_or_text(
                body.get("STRUCTURE_BED") or body.get("DIVISIONPROFIL") or link_body.get("STRUCTURE_BED")
            ),
            "free": _int_or_text(body.get("BEDFREE") or body.get("AMOUNT")) or 0,
            "free_adult": _int_or_text(body.get("BEDFREEADULT")) or 0,
            "free_child": _int_or_text(body.get("BEDFREECHILD")) or 0,
            "actual_on": _date_or_text(body.get("ACTUAL_DATE")),
        }

    def _live_parent(self, stored: StoredObject | None, parent_type: str) -> StoredObject | None:
        if stored is None:
            return None
        for kind, object_id in stored.parents:
            if kind == parent_type:
                return self._live(kind, object_id)
        return None

    # --- answers ----------------------------------------------------------------------------

    def _answer(
        self,
        reply_to: str,
        answered_type: str,
        answered_id: str | None,
        errors: list[tuple[str | None, int, str]],
        queue_name: str,
    ) -> Reply:
        body = build_answer(answered_type, answered_id or "", errors, queue_name=queue_name)
        return Reply(reply_to, "ANSWER", body, str(uuid.uuid4()), answered_id)

    def _xml_error(self, reply_to: str, message: Any, packet_type: str, description: str) -> Decision:
        body = build_error(message.message_id or "", description, message.body)
        reply = Reply(reply_to, "ERROR", body, str(uuid.uuid4()), message.message_id)
        return Decision(reply, packet_type, RESULT_XML_ERROR, description)

    # --- POLIS from ТФОМС -------------------------------------------------------------------

    def send_polis(
        self,
        broker: Any,
        reply_queue: str = DEFAULT_REPLY_QUEUE,
        *,
        request_queue: str | None = None,
        **fields: Any,
    ) -> str:
        """Publish an insurance change (POLIS) to the portal's queue; returns its message_id.

        `fields` are those of builders.build_polis; a packet that fails polis.xsd is not sent
        (ValueError with the errors). The portal's ANSWER comes back on the request queue.
        """
        from portal.tfoms import builders

        if fields.get("person"):
            fields["person"] = polis_person(fields["person"])
        try:
            xml = _as_bytes(builders.build_polis(**fields))
        except builders.PacketBuildError as error:
            raise ValueError(f"Пакет POLIS не сформирован: {error}") from None
        errors = _validate("POLIS", xml)
        if errors:
            raise ValueError("Пакет POLIS не соответствует схеме: " + "; ".join(errors))
        message_id = str(uuid.uuid4())
        request_queue = request_queue or self.queues["request_queue"]
        broker.publish(reply_queue, xml, type="POLIS", message_id=message_id, reply_to=request_queue)
        broker.commit()
        shown = _plain(fields)
        with self._lock:
            self.polis[message_id] = {"known": True, "sent_at": _now(), "fields": shown, "answers": []}
            self.counts[("POLIS", "SENT")] += 1
            self.log.append(
                _line(
                    _now(),
                    reply_queue,
                    "POLIS",
                    fields.get("operation", "Update"),
                    str(fields.get("bdz_id")),
                    message_id,
                    "SENT",
                    f"Изменение страховой принадлежности отправлено: ЕНП {fields.get('enp')}",
                )
            )
        return message_id

    # --- what the page shows ----------------------------------------------------------------

    def state(self, lines: int = PAGE_LINES) -> dict[str, Any]:
        with self._lock:
            objects = Counter(o.type for o in self.objects.values() if not o.deleted)
            return {
                "name": NAME,
                "title": TITLE,
                **self.control.as_dict(),
                "queues": dict(self.queues),
                "counts": [{"type": t, "result": r, "count": n} for (t, r), n in sorted(self.counts.items())],
                "duplicates": self.duplicates,
                "processed": len(self.processed),
                "objects": dict(sorted(objects.items())),
                "polis": [{"message_id": k, **v} for k, v in self.polis.items()],
                "log": [dict(line) for line in list(self.log)[-lines:]][::-1],
            }


# --- XML of the answers ----------------------------------------------------------------------


def build_answer(
    answered_type: str, answered_id: str, errors: list[tuple[str | None, int, str]], *, queue_name: str
) -> bytes:
    """ANSWER (answer.xsd) through builders.build_answer; each error may carry its own ID_PAC."""
    from portal.tfoms import builders

    pairs = [(code, name) for _, code, name in errors]
    id_pacs = {id_pac for id_pac, _, _ in errors}
    if len(id_pacs) <= 1:  # one person (or none): builders puts the ID_PAC into every ERROR_RESULT
        single = next(iter(id_pacs), None)
        return _as_bytes(
            builders.build_answer(
                answered_type,
                answered_id,
                pairs,
                queue_name=queue_name,
                id_pac=int(single) if single else None,
            )
        )
    root = etree.fromstring(
        _as_bytes(builders.build_answer(answered_type, answered_id, pairs, queue_name=queue_name)),
        parser=_parser(),
    )
    results = [e for e in root.iter() if _local(e.tag) == "ERROR_RESULT"]
    for element, (id_pac, _, _) in zip(results, errors, strict=False):
        if id_pac is not None and _child(element, "ID_PAC") is None:
            node = etree.Element("ID_PAC")
            node.text = id_pac
            element.insert(0, node)
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


# polis.xsd PERSON tags → builders.build_polis person keys (the Polis field names).
POLIS_PERSON_TAGS = {
    "FAM": "last_name",
    "IM": "first_name",
    "OT": "middle_name",
    "DR": "birth_date",
    "DOCTYPE": "document_kind",
    "DOCSER": "document_series",
    "DOCNUM": "document_number",
    "SNILS": "snils",
    "pADR": "registration_address",
    "uADR": "residence_address",
}


def polis_person(person: dict[str, Any]) -> dict[str, Any]:
    """The person for build_polis, given with its keys or with the polis.xsd tags (FAM, W 1/2 …)."""
    result = {POLIS_PERSON_TAGS.get(k, k): v for k, v in person.items() if k != "W"}
    if "W" in person and "sex" not in result:
        result["sex"] = {1: "M", 2: "F"}.get(int(person["W"])) if str(person["W"]).isdigit() else None
    return result


def _plain(value: Any) -> Any:
    """JSON-ready copy: dates as ISO text."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.isoformat() if isinstance(value, date) else value


def build_error(answered_id: str, description: str, original: bytes) -> bytes:
    """The ERROR message of NOTES §1: the reason and the packet as received, base64."""
    root = etree.Element("ERROR")
    header = etree.SubElement(root, "HEADER")
    etree.SubElement(header, "MESSAGE_ID").text = answered_id
    etree.SubElement(header, "DESCRIPTION").text = _xml_safe(description)
    etree.SubElement(root, "BODY").text = base64.b64encode(original).decode("ascii")
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def _xml_safe(text: str) -> str:
    return "".join(c for c in text if c in "\t\n\r" or ord(c) >= 0x20)


def _header_id(header: etree._Element | None) -> tuple[str, str | None]:
    """The object's id: the last header element whose name ends in ID (H_ID, MIH_ID, BDZID …)."""
    if header is None:
        return "ID", None
    for child in reversed(list(header)):
        name = _local(child.tag)
        if name.endswith("ID"):
            return name, (child.text or "").strip() or None
    return "ID", None


def _what(packet_type: str) -> str:
    title = TYPE_TITLES.get(packet_type)
    return f"{packet_type} ({title})" if title else packet_type


def _code(value: Any) -> str:
    """A code compared as the number it is (xs:int fields may come with or without leading zeros)."""
    text = str(value if value is not None else "").strip()
    return str(int(text)) if text.isdigit() else text


def _int_or_text(value: Any) -> Any:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _date_or_text(value: str | None) -> Any:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return value


def _as_bytes(xml: bytes | str) -> bytes:
    return xml.encode("utf-8") if isinstance(xml, str) else xml


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


# --- the consumer thread ---------------------------------------------------------------------


def queue_names() -> dict[str, str]:
    """The queue names of the portal settings (inside the portal's app context), else the defaults."""
    names = {
        "request_queue": DEFAULT_REQUEST_QUEUE,
        "reply_queue": DEFAULT_REPLY_QUEUE,
        "rpc_queue": DEFAULT_RPC_QUEUE,
    }
    try:
        from portal.admin.services import get_setting
    except ImportError:
        return names
    for key in names:
        try:
            value = get_setting(f"tfoms.{key}")
        except Exception:  # the setting is not registered (yet)
            continue
        if value:
            names[key] = value
    return names


def standin_of(host_app: Flask) -> TfomsStandIn:
    """The stand-in of a simulators host (made when the host is built)."""
    return host_app.extensions["simulators"].get(NAME).store["standin"]


class StandInThread(threading.Thread):
    """The daemon that pumps the queues every `interval` seconds; `stop()` ends it."""

    def __init__(self, standin: TfomsStandIn, portal_app: Flask, interval: float) -> None:
        super().__init__(name="tfoms-amqp-standin", daemon=True)
        self.standin = standin
        self.portal_app = portal_app
        self.interval = interval
        self._stopped = threading.Event()
        self._last_error: str | None = None

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.pump_once()

    def pump_once(self) -> int:
        """One round; errors are logged (once per distinct error), never raised."""
        try:
            with self.portal_app.app_context():
                from portal.tfoms.broker import get_broker

                names = queue_names()
                handled = self.standin.pump(get_broker(), **names)
        except Exception as error:
            text = f"{type(error).__name__}: {error}"
            if text != self._last_error:
                log.exception("ТФОМС (RabbitMQ): ошибка при разборе очередей")
                self._last_error = text
            return 0
        if self._last_error is not None:
            log.info("ТФОМС (RabbitMQ): очереди снова разбираются")
            self._last_error = None
        return handled


def start_standin(portal_app: Flask, host_app: Flask | None = None, interval: float = 1.0) -> StandInThread:
    """Start ТФОМС's consumer beside the simulators host; its mode follows the host's controls."""
    if host_app is not None:
        standin = standin_of(host_app)
        host_app.extensions["simulators"].get(NAME).store["portal_app"] = portal_app
    else:
        standin = TfomsStandIn()
    thread = StandInThread(standin, portal_app, interval)
    thread.start()
    log.info("ТФОМС (RabbitMQ): заглушка разбирает очереди каждые %s с", interval)
    return thread


# --- HTTP -------------------------------------------------------------------------------------


@bp.record_once
def _start(setup_state) -> None:
    """One stand-in per host, sharing the host's Control of this simulator."""
    store = setup_state.app.extensions["simulators"].get(NAME).store
    store["standin"] = TfomsStandIn(setup_state.app.extensions["simulators"].get(NAME))


def _standin() -> TfomsStandIn:
    return standin_of(current_app)


@bp.get("/_state")
def state():
    return jsonify(_standin().state())


@bp.get("/")
def page():
    return Response(_page(), content_type="text/html; charset=utf-8")


POLIS_WHERE = "Изменение страховой принадлежности"
POLIS_FIELDS = ("bdz_id", "enp", "smo_code", "policy_type", "number", "begin", "end", "series", "operation")
# builders.build_polis person keys (the Polis field names).
PERSON_FIELDS = (
    "last_name",
    "first_name",
    "middle_name",
    "birth_date",
    "sex",
    "document_kind",
    "document_series",
    "document_number",
    "snils",
    "registration_address",
    "residence_address",
)
PERSON_REQUIRED = {
    "last_name": "фамилия",
    "first_name": "имя",
    "birth_date": "дата рождения",
    "sex": "пол",
    "document_kind": "вид документа",
    "document_number": "номер документа",
}


def parse_polis(payload: Any) -> dict[str, Any]:
    """build_polis arguments from the JSON (or form) of POST /_polis; ValueError in Russian.

    Person fields (optional; all or the required ones) go at the top level or in "person".
    """
    if not isinstance(payload, dict):
        raise ValueError("Ожидается JSON-объект: bdz_id, enp, smo_code, policy_type, number, begin, …")
    unknown = sorted(set(payload) - set(POLIS_FIELDS) - set(PERSON_FIELDS) - {"person", "html"})
    if unknown:
        raise ValueError(f"Неизвестные поля: {', '.join(unknown)}.")
    values: dict[str, Any] = {}
    bdz_id = str(payload.get("bdz_id") or "").strip()
    if not bdz_id.isdigit() or len(bdz_id) > 9:
        raise ValueError("bdz_id — идентификатор застрахованного в РС ЕРЗ, целое число до 9 цифр.")
    values["bdz_id"] = int(bdz_id)
    enp = str(payload.get("enp") or "").strip()
    if not enp_is_valid(enp):
        raise ValueError(f"ЕНП «{enp}» неверен: нужно 16 цифр с верной контрольной цифрой.")
    values["enp"] = enp
    smo = str(payload.get("smo_code") or "").strip()
    if not smo or len(smo) > 5:
        raise ValueError("smo_code — код СМО по F002, до 5 символов.")
    values["smo_code"] = smo
    kind = str(payload.get("policy_type") or "").strip()
    if kind not in ("1", "2", "3", "4", "5"):
        raise ValueError("policy_type — тип полиса по F008: от 1 до 5.")
    values["policy_type"] = int(kind)
    number = str(payload.get("number") or "").strip()
    if not number or len(number) > 16:
        raise ValueError("number — номер полиса, до 16 символов.")
    values["number"] = number
    values["begin"] = date_field(POLIS_WHERE, "begin", payload.get("begin"), required=True)
    end = date_field(POLIS_WHERE, "end", payload.get("end"), required=False)
    if end is not None and end < values["begin"]:
        raise ValueError("Дата окончания полиса end раньше даты начала begin.")
    values["end"] = end
    series = str(payload.get("series") or "").strip()
    if len(series) > 10:
        raise ValueError("series — серия полиса, до 10 символов.")
    values["series"] = series or None
    operation = str(payload.get("operation") or "Update").strip()
    if operation not in OPERATIONS:
        raise ValueError("operation — Insert, Update или Delete.")
    values["operation"] = operation
    source = payload.get("person")
    if source is not None and not isinstance(source, dict):
        raise ValueError("person — JSON-объект с данными человека.")
    source = source if source is not None else payload
    unknown = sorted(set(source) - set(PERSON_FIELDS)) if source is not payload else []
    if unknown:
        raise ValueError(f"Неизвестные поля person: {', '.join(unknown)}.")
    person = {k: str(source[k]).strip() for k in PERSON_FIELDS if str(source.get(k) or "").strip()}
    if person:
        missing = [title for key, title in PERSON_REQUIRED.items() if key not in person]
        if missing:
            raise ValueError(f"Данные человека неполны: не указаны {', '.join(missing)}.")
        person["birth_date"] = date_field(POLIS_WHERE, "birth_date", person["birth_date"], required=True)
        if person["sex"] not in ("M", "F"):
            raise ValueError("sex — пол: M мужской, F женский.")
    values["person"] = person or None
    return values


@bp.post("/_polis")
def polis():
    form = request.mimetype != "application/json"
    payload = request.form.to_dict() if form else request.get_json(silent=True)
    try:
        fields = parse_polis(payload)
    except ValueError as error:
        return _refuse(str(error), form)
    portal_app = current_app.extensions["simulators"].get(NAME).store.get("portal_app")
    if portal_app is None:
        return _refuse("Заглушка ТФОМС не подключена к порталу: отправлять изменение некуда.", form, 503)
    standin = _standin()
    try:
        with portal_app.app_context():
            from portal.tfoms.broker import get_broker

            names = queue_names()
            message_id = standin.send_polis(
                get_broker(), names["reply_queue"], request_queue=names["request_queue"], **fields
            )
    except ValueError as error:
        return _refuse(str(error), form)
    except Exception as error:  # the broker is down
        log.warning("ТФОМС (RabbitMQ): POLIS не отправлен: %s", error)
        return _refuse(f"Не удалось отправить пакет POLIS: {error}", form, 503)
    if form:
        return Response(
            _page(notice=f"Изменение полиса отправлено, сообщение {message_id}."),
            content_type="text/html; charset=utf-8",
        )
    return jsonify({"message_id": message_id, "queue": names["reply_queue"]})


def _refuse(message: str, form: bool, status: int = 400) -> Response:
    if form:
        return Response(_page(error=message), status=status, content_type="text/html; charset=utf-8")
    response = jsonify({"error": message})
    response.status_code = status
    return response


def _rows(cells: Iterable[Iterable[Any]]) -> str:
    return "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c if c is not None else '—'))}</td>" for c in row) + "</tr>"
        for row in cells
    )


def _page(error: str | None = None, notice: str | None = None) -> str:
    data = _standin().state()
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    info = f'<p class="notice" role="status">{html.escape(notice)}</p>' if notice else ""
    counts = (
        _rows(
            (
                c["type"],
                TYPE_TITLES.get(c["type"], ""),
                RESULT_LABELS.get(c["result"], c["result"]),
                c["count"],
            )
            for c in data["counts"]
        )
        or '<tr><td colspan="4">Пакетов ещё не было</td></tr>'
    )
    objects = _rows((t, TYPE_TITLES.get(t, ""), n) for t, n in data["objects"].items()) or (
        '<tr><td colspan="3">Нет</td></tr>'
    )
    lines = _rows(
        (
            x["at"],
            x["queue"],
            x["type"],
            x["operation"],
            x["object_id"],
            x["message_id"],
            RESULT_LABELS.get(x["result"], x["result"]),
            x["text"],
        )
        for x in data["log"]
    ) or ('<tr><td colspan="8">Журнал пуст</td></tr>')
    polis_rows = (
        _rows(
            (
                p["message_id"],
                p.get("sent_at"),
                (p.get("fields") or {}).get("enp"),
                "; ".join(
                    ("OK" if a["ok"] else "Ошибка: " + ", ".join(str(e.get("name")) for e in a["errors"]))
                    for a in p["answers"]
                )
                or "ответа нет",
            )
            for p in data["polis"]
        )
        or '<tr><td colspan="4">Не отправлялись</td></tr>'
    )
    queues = data["queues"]
    return f"""<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><title>{html.escape(TITLE)}</title>
<style>body{{font-family:sans-serif;max-width:72rem;margin:2rem auto;line-height:1.4}}
table{{border-collapse:collapse;margin-bottom:1rem}}td,th{{border:1px solid #ccc;padding:.2rem .4rem;
vertical-align:top;font-size:.9rem}}.error{{color:#a00;font-weight:bold}}.notice{{color:#060}}
form{{border:1px solid #ccc;padding:1rem}}label{{display:inline-block;margin:.2rem 1rem .2rem 0}}</style></head>
<body><h1>{html.escape(TITLE)}</h1>
<p>Заглушка ТФОМС читает пакеты портала из очереди <b>{html.escape(queues["request_queue"])}</b> и запросы
свободных мест из <b>{html.escape(queues["rpc_queue"])}</b>, отвечает в очередь, указанную в reply_to
(по умолчанию <b>{html.escape(queues["reply_queue"])}</b>). Режим: <b>{html.escape(data["mode"])}</b>.</p>
{alert}{info}
<h2>Получено</h2>
<table><tr><th>Тип пакета</th><th>Что это</th><th>Результат</th><th>Количество</th></tr>{counts}</table>
<p>Повторов (тот же message_id, ответ отправлен повторно): <b>{data["duplicates"]}</b>.
Обработано сообщений: <b>{data["processed"]}</b>.</p>
<h2>Принятые объекты</h2>
<table><tr><th>Тип</th><th>Что это</th><th>Действующих</th></tr>{objects}</table>
<h2>Изменения страховой принадлежности (POLIS)</h2>
<table><tr><th>Сообщение</th><th>Отправлено</th><th>ЕНП</th><th>Ответ портала</th></tr>{polis_rows}</table>
<form method="post" action="_polis">
<input type="hidden" name="html" value="1">
<label>ID в РС ЕРЗ (bdz_id) <input name="bdz_id" required></label>
<label>ЕНП <input name="enp" required maxlength="16"></label>
<label>Код СМО <input name="smo_code" required maxlength="5"></label>
<label>Тип полиса (F008) <input name="policy_type" value="4" required></label>
<label>Номер полиса <input name="number" required maxlength="16"></label>
<label>Серия <input name="series" maxlength="10"></label>
<label>Начало <input name="begin" type="date" required></label>
<label>Окончание <input name="end" type="date"></label>
<p><button type="submit">Отправить изменение полиса</button></p>
</form>
<h2>Журнал (последние {PAGE_LINES})</h2>
<table><tr><th>Время</th><th>Очередь</th><th>Тип</th><th>Операция</th><th>Объект</th><th>message_id</th>
<th>Результат</th><th>Пояснение</th></tr>{lines}</table>
</body></html>"""


register_simulator(NAME, TITLE, bp)
