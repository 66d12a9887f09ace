"""Packets over RabbitMQ with ТФОМС (T-4 … T-8): selection, ordering, delivery, answers, incoming.

A packet is a `TfomsPacket` row delivered by a work item of the shared mechanism
(`exchange.delivery`): `prepare` builds and validates it (a failure is «Ошибка формирования»:
«Пакет не сформирован: …»), `transmit` publishes it and returns once the broker confirmed
(«Отправлен»), and ТФОМС's answer, read from the reply queue, settles it («Принят ТФОМС» or
«Отклонен ТФОМС»: «Получен ответ с ошибкой: …»).

Order (T-5, seed 4.4.5.1.3): an INSERT whose parent's INSERT ТФОМС has not accepted yet is
written with `after_id` and gets its work item only when the parent is accepted; a DELETE waits
the same way for the DELETEs of its children; UPDATEs go at once. So a child never reaches
ТФОМС before its parent, whatever the transport, retries or restarts do.

At-least-once with recognisable repeats: a packet keeps its message_id across retries, so
after a crash between the broker's confirm and our commit the same message goes again and ТФОМС
(its stand-in here) answers a repeat without processing it twice; an answer that comes twice
settles the packet once. Replies are acknowledged only after their effect is committed; a reply
that cannot be read is journaled and acknowledged, so it never blocks the queue.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, or_
from sqlalchemy.orm import joinedload

from portal.admin import services as admin_services
from portal.admin.audit import audit
from portal.admin.registry import SettingDef, register_setting
from portal.auth.models import User
from portal.clinical.models import (
    PLAN_PERSON_ACCEPTED,
    PLAN_PERSON_ERROR,
    PLAN_PERSON_SENT,
    Attachment,
    BedProfile,
    Branch,
    Department,
    DispensaryObservation,
    Hospitalisation,
    HospitalMovement,
    HospitalReferral,
    Mo,
    Patient,
    PlanPerson,
)
from portal.exchange import delivery
from portal.exchange.delivery import (
    Channel,
    DataError,
    Outcome,
    TransientError,
    memo,
    register_channel,
    setting,
)
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
from portal.extensions import db
from portal.models_base import chunks, utcnow
from portal.tfoms import broker as transport
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
    PACKET_RESEND_STATUSES,
    PACKET_SEND_ERROR,
    PACKET_SENT,
    TfomsPacket,
    TfomsSync,
)

log = logging.getLogger("tfoms.packets")

SERVICE = "tfoms_auto"  # «Сервис автоматизированного взаимодействия с ТФОМС»
PLANS_SERVICE = "tfoms_prof"  # «Обмен планами профилактических осмотров» (plans.SERVICE)

REQUEST_QUEUE = register_setting(
    SettingDef("tfoms.request_queue", "ТФОМС", "Очередь пакетов в ТФОМС", "text", "request_queue")
)
REPLY_QUEUE = register_setting(
    SettingDef("tfoms.reply_queue", "ТФОМС", "Очередь ответов и пакетов от ТФОМС", "text", "reply_queue")
)
RPC_QUEUE = register_setting(
    SettingDef("tfoms.rpc_queue", "ТФОМС", "Очередь запросов свободных мест (RPC)", "text", "rpc_queue")
)
RPC_TIMEOUT = "tfoms.rpc_timeout"  # registered with the admin settings (15 s)

# Branch and department kinds ТФОМС gets (seed 4.4.5.1.2).
BRANCH_KINDS_SENT = ("hospital", "polyclinic", "ambulance")
DIVISION_KINDS_SENT = (
    "round_the_clock",
    "maternity",
    "perinatal_centre",
    "day_hospital",
    "home_hospital",
    "polyclinic_day_hospital",
    "admission",
)
REFERRAL_KINDS_SENT = ("planned", "emergency")
# Packets ТФОМС takes only as INSERT: a change goes as its own packet, not an UPDATE.
INSERT_ONLY = {
    "HOSPITALISATION_REFERRAL",
    "CANCEL_HOSPITALISATION_REFERRAL",
    "CANCEL_HOSPITALISATION",
    "DN_OUT",
}


class PacketError(Exception):
    """A refusal users read (an action not possible for this packet)."""


# --- the channel -------------------------------------------------------------------------------------


class PacketChannel(Channel):
    """Packets of one service; both services share the class and the reply queue."""

    procedure = None  # selection honours the МО switches; a packet once written goes
    lease_seconds = 120
    poll_seconds = 24 * 3600  # answers come through the reply queue, nothing to poll
    retry_base_seconds = 30
    retry_cap_seconds = 600
    batch_size = 200

    def __init__(self, name: str, title: str) -> None:
        self.name, self.title = name, title

    def packet(self, item: WorkItem) -> TfomsPacket:
        return memo(
            ("tfoms_packet", item.subject_id),
            lambda: db.session.get(TfomsPacket, item.subject_id),
            per_item=True,
        )

    def subject(self, item: WorkItem) -> tuple[str, int]:
        return "tfoms_packet", item.subject_id

    def packet_type(self, item: WorkItem) -> str:
        return self.packet(item).packet_type

    def label(self, item: WorkItem) -> str:
        packet = self.packet(item)
        return f"Пакет {packet.packet_type}" + (f" ({packet.operation})" if packet.operation else "")

    def prepare(self, item: WorkItem) -> bytes:
        from portal.tfoms.builders import PacketBuildError, build_answer, flat

        packet = self.packet(item)
        try:
            if packet.packet_type == "ANSWER":
                spec = (packet.data or {}).get("reply", {})
                xml = build_answer(
                    spec.get("type", ""),
                    spec.get("message_id", ""),
                    [tuple(e) for e in spec.get("errors", [])],
                    queue_name=setting(REQUEST_QUEUE.key),
                )
            else:
                xml = build_packet(packet)
        except PacketBuildError as error:
            raise DataError(f"Пакет не сформирован: {error}") from error
        packet.xml = xml.decode("utf-8")
        packet.data = {**(packet.data or {}), "answer": False, "packet": flat(xml)}
        return xml

    def transmit(self, item: WorkItem, prepared: object) -> Outcome:
        packet = self.packet(item)
        try:
            transport.get_broker().publish(
                setting(REQUEST_QUEUE.key),
                prepared,
                type=packet.packet_type,
                message_id=packet.message_id,
                reply_to=setting(REPLY_QUEUE.key),
            )
        except transport.BrokerUnavailable as error:
            raise TransientError(f"Ошибка отправки пакета: {error}") from error
        packet.sent_at = utcnow()
        if packet.packet_type == "ANSWER":  # our answer to ТФОМС's packet expects no answer back
            return Outcome.done("Ответ отправлен в ТФОМС", external_id=packet.message_id, payload=packet.xml)
        return Outcome.accepted("Пакет отправлен в ТФОМС", external_id=packet.message_id, payload=packet.xml)

    def check(self, item: WorkItem) -> Outcome:
        if item.state == WAITING:  # the answer comes through the reply queue
            return Outcome(WAITING, "")
        # A crash after the publish may have left the message with the broker: send the same
        # message again; ТФОМС recognises a repeat by its message_id.
        return Outcome.not_found(
            f"{self.label(item)}: отправка прервана, пакет отправляется снова с тем же идентификатором"
        )

    def on_outcome(self, item: WorkItem, entry: JournalEntry) -> None:
        packet = self.packet(item)
        status = _status_after(packet, item, entry)
        if status is None:
            return
        packet.status, packet.status_text, packet.status_at = status, entry.message, entry.at
        if status == PACKET_ACCEPTED:
            release_children(packet)
        if packet.object_type == "plan_person" and packet.object_id is not None:
            _plan_person_status(packet)


def _status_after(packet: TfomsPacket, item: WorkItem, entry: JournalEntry) -> str | None:
    """The packet's T-7 status after a journal line of its work item."""
    if item.state == DONE:  # our answer to ТФОМС's packet is done once sent
        return PACKET_SENT if packet.packet_type == "ANSWER" else PACKET_ACCEPTED
    if item.state == FAILED:
        return PACKET_BUILD_ERROR if entry.operation == "Формирование" else PACKET_REJECTED
    if item.state == WAITING:
        return PACKET_SENT
    if item.state == SENDING:
        return PACKET_BUILT
    if item.state in (QUEUED, UNKNOWN) and entry.level == "error":
        return PACKET_SEND_ERROR
    return None


CHANNEL = register_channel(PacketChannel(SERVICE, "ТФОМС (RabbitMQ)"))
PLANS_CHANNEL = register_channel(PacketChannel(PLANS_SERVICE, "ТФОМС (RabbitMQ), планы профилактики"))


def channel_of(packet: TfomsPacket) -> PacketChannel:
    return PLANS_CHANNEL if packet.channel == PLANS_SERVICE else CHANNEL


# --- building ------------------------------------------------------------------------------------------

OBJECT_MODELS: dict[str, type] = {
    "branch": Branch,
    "department": Department,
    "bed_profile": BedProfile,
    "referral": HospitalReferral,
    "hospitalisation": Hospitalisation,
    "movement": HospitalMovement,
    "attachment": Attachment,
    "dispensary": DispensaryObservation,
    "plan_person": PlanPerson,
}


def build_packet(packet: TfomsPacket) -> bytes:
    """The packet's XML from the current state of its row (a retry sends today's data)."""
    from portal.tfoms.builders import PacketBuildError, build

    model = OBJECT_MODELS.get(packet.object_type or "")
    obj = None
    if model is not None:  # the row with its patient in one query (МО and departments repeat: identity map)
        related = [joinedload(model.patient)] if hasattr(model, "patient") else []
        obj = db.session.get(model, packet.object_id, options=related)
    if obj is None:
        raise PacketBuildError([f"Объект пакета не найден: {packet.object_type} №{packet.object_id}"])
    return build(packet.packet_type, packet.operation or "Insert", obj, created_on=date.today())


# --- writing packets --------------------------------------------------------------------------------


def new_packet(
    channel: PacketChannel,
    packet_type: str,
    operation: str | None,
    obj_type: str | None,
    obj_id: int | None,
    mo_id: int | None,
    *,
    after: TfomsPacket | None = None,
    user_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> TfomsPacket:
    """A packet to send; queued now, or held until `after` is accepted by ТФОМС."""
    packet = TfomsPacket(
        channel=channel.name,
        direction=OUTGOING,
        mo_id=mo_id,
        packet_type=packet_type,
        operation=operation,
        object_type=obj_type,
        object_id=obj_id,
        message_id=str(uuid.uuid4()),
        status=PACKET_QUEUED,
        status_at=utcnow(),
        created_at=utcnow(),
        user_id=user_id,
        data=data,
    )
    waits = after is not None and after.status != PACKET_ACCEPTED
    if waits:
        packet.after_id = after.id
        packet.status_text = (
            f"Ожидает принятия ТФОМС пакета {after.packet_type} ({after.operation or ''})".replace(" ()", "")
        )
    db.session.add(packet)
    db.session.flush()
    if not waits:
        delivery.enqueue(channel, "tfoms_packet", packet.id, mo_id)
    return packet


def release_children(parent: TfomsPacket) -> int:
    """Queue the packets that waited for `parent` to be accepted (in the caller's transaction)."""
    children = list(
        db.session.scalars(
            db.select(TfomsPacket).where(
                TfomsPacket.after_id == parent.id,
                TfomsPacket.status == PACKET_QUEUED,
                TfomsPacket.no_resend.is_(False),
            )
        )
    )
    for child in children:
        child.status_text = None
        delivery.enqueue(channel_of(child), "tfoms_packet", child.id, child.mo_id)
    return len(children)


@dataclass
class _Latest:
    packets: dict[tuple[str, str, int], TfomsPacket]

    def get(self, packet_type: str, obj_type: str, obj_id: int) -> TfomsPacket | None:
        return self.packets.get((packet_type, obj_type, obj_id))


def _latest(obj_type: str, ids: Iterable[int]) -> _Latest:
    """The newest outgoing packet of each (type, object) for these rows."""
    found: dict[tuple[str, str, int], TfomsPacket] = {}
    ids = sorted(set(ids))
    for chunk in chunks(ids, 500):
        newest = (
            db.select(func.max(TfomsPacket.id))
            .where(
                TfomsPacket.direction == OUTGOING,
                TfomsPacket.object_type == obj_type,
                TfomsPacket.object_id.in_(chunk),
            )
            .group_by(TfomsPacket.packet_type, TfomsPacket.object_id)
        )
        for packet in db.session.scalars(db.select(TfomsPacket).where(TfomsPacket.id.in_(newest))):
            found[(packet.packet_type, obj_type, packet.object_id)] = packet
    return _Latest(found)


def _inserted(latest: _Latest, packet_type: str, obj_type: str, obj_id: int) -> TfomsPacket | None:
    """The packet that inserted the object, if one was written (the newest of its type)."""
    packet = latest.get(packet_type, obj_type, obj_id)
    return packet if packet is not None and packet.operation != "Delete" else None


def _pending(packet: TfomsPacket | None) -> bool:
    """Not yet gone: it will be built from the row's current data when it goes."""
    return packet is not None and packet.status in (PACKET_QUEUED, PACKET_BUILT, PACKET_SEND_ERROR)


@dataclass
class Selection:
    packets: int = 0
    by_type: dict[str, int] | None = None

    def add(self, packet_type: str) -> None:
        self.packets += 1
        self.by_type = self.by_type or {}
        self.by_type[packet_type] = self.by_type.get(packet_type, 0) + 1


class _Writer:
    """Writes the packets of one selection: INSERT, UPDATE or DELETE by what ТФОМС already has."""

    def __init__(self, channel: PacketChannel) -> None:
        self.channel = channel
        self.result = Selection()

    def write(
        self,
        packet_type: str,
        obj_type: str,
        row: Any,
        latest: _Latest,
        *,
        delete: bool = False,
        parent: TfomsPacket | None = None,
    ) -> TfomsPacket | None:
        """The packet this change of `row` needs, or None when nothing is to be sent."""
        obj_id, mo_id = row.id, row.mo_id
        last = latest.get(packet_type, obj_type, obj_id)
        if _pending(last) and (last.operation == "Delete") == delete:
            return last  # not gone yet: it goes with today's data
        if not delete and last is not None and last.created_at >= row.updated_at:
            return None  # already sent since it changed (by a run for one МО)
        if delete:
            if last is None or last.operation == "Delete":
                return None  # ТФОМС never had it, or has had it deleted
            operation = "Delete"
        elif last is None or last.operation == "Delete":
            operation = "Insert"
        elif packet_type in INSERT_ONLY:
            return None
        else:
            operation = "Update"
        packet = new_packet(
            self.channel,
            packet_type,
            operation,
            obj_type,
            obj_id,
            mo_id,
            after=parent if operation != "Update" else None,
        )
        latest.packets[(packet_type, obj_type, obj_id)] = packet
        self.result.add(packet_type)
        return packet


def _changed(model: type, since: datetime | None, until: datetime, *where: Any) -> list[Any]:
    stmt = db.select(model).where(model.updated_at <= until, *where)
    if since is not None:
        stmt = stmt.where(model.updated_at > since)
    return list(db.session.scalars(stmt.order_by(model.id)))


def select_changes(mo_id: int | None = None, now: datetime | None = None) -> Selection:
    """Packets for what changed since the last selection (seed 4.4.5.1.2), in the T-5 order.

    Only МО with the procedure switched on; the watermark moves in the same transaction as the
    packets, so a crash selects the same changes again and nothing is lost or doubled.
    """
    now = now or utcnow()
    key = SERVICE if mo_id is None else f"{SERVICE}:{mo_id}"
    sync = db.session.get(TfomsSync, key)
    since = sync.selected_until if sync is not None else None
    if mo_id is not None and sync is None:
        region = db.session.get(TfomsSync, SERVICE)
        since = region.selected_until if region is not None else None
    writer = _Writer(CHANNEL)

    def scope(procedure: str, column: Any) -> Any:
        ids = admin_services.enabled_mo_ids(procedure)
        if mo_id is not None:
            ids &= {mo_id}
        return column.in_(ids) if ids else db.false()

    hosp_scope = lambda column: scope("tfoms_hospitalisation", column)  # noqa: E731
    # The delivery claims the newest items first, so the order-263 roots, written last, lead the
    # backlog and their children (queued when ТФОМС accepts them) follow ahead of the rest.
    _attachments(writer, since, now, scope("tfoms_attachment", Attachment.mo_id))
    _dispensary(writer, since, now, scope("tfoms_dispensary", DispensaryObservation.mo_id))
    _stage2(writer, since, now, hosp_scope)
    _stage1(writer, since, now, hosp_scope)
    if sync is None:
        db.session.add(TfomsSync(name=key, selected_until=now))
    else:
        sync.selected_until = now
    return writer.result


def _stage1(writer: _Writer, since: datetime | None, now: datetime, scope: Callable[[Any], Any]) -> None:
    branches = _changed(Branch, since, now, scope(Branch.mo_id), Branch.kind.in_(BRANCH_KINDS_SENT))
    departments = _changed(
        Department, since, now, scope(Department.mo_id), Department.kind.in_(DIVISION_KINDS_SENT)
    )
    beds = _changed(BedProfile, since, now, scope(BedProfile.mo_id))
    # Rows whose parent or children are needed for the order, changed or not.
    dep_ids = {d.id for d in departments} | {b.department_id for b in beds}
    branch_ids = {b.id for b in branches} | {d.branch_id for d in departments if d.branch_id}
    closing_deps = [d for d in departments if d.closed_on]
    bed_rows = (
        beds
        + list(
            db.session.scalars(
                db.select(BedProfile).where(BedProfile.department_id.in_([d.id for d in closing_deps]))
            )
        )
        if closing_deps
        else beds
    )
    latest_branch = _latest("branch", branch_ids)
    latest_dep = _latest("department", dep_ids)
    latest_bed = _latest("bed_profile", {b.id for b in bed_rows})
    departments_by_id = (
        {d.id: d for d in db.session.scalars(db.select(Department).where(Department.id.in_(dep_ids)))}
        if dep_ids
        else {}
    )

    for branch in branches:
        if not branch.closed_on:
            writer.write("BRANCH", "branch", branch, latest_branch)
    last_delete: dict[int, TfomsPacket] = {}  # branch id → the last DELETE of its departments
    for dep in departments:
        if dep.closed_on:
            continue
        parent = _inserted(latest_branch, "BRANCH", "branch", dep.branch_id) if dep.branch_id else None
        writer.write("DIVISION", "department", dep, latest_dep, parent=parent)
    for bed in beds:
        dep = departments_by_id.get(bed.department_id)
        if dep is None or dep.kind not in DIVISION_KINDS_SENT or dep.closed_on:
            continue
        division = _inserted(latest_dep, "DIVISION", "department", dep.id)
        link = writer.write("DIVISION_LINK_STRUCTURE_BED", "bed_profile", bed, latest_bed, parent=division)
        amount = writer.write("AMOUNT_BED", "bed_profile", bed, latest_bed, parent=link)
        writer.write("FREE_BEDS_INFORMATION", "bed_profile", bed, latest_bed, parent=amount)
    # DELETEs in reverse order: beds of a closed department, then the department, then its branch.
    for dep in closing_deps:
        previous = None
        for bed in (b for b in bed_rows if b.department_id == dep.id):
            for packet_type in ("FREE_BEDS_INFORMATION", "AMOUNT_BED", "DIVISION_LINK_STRUCTURE_BED"):
                previous = (
                    writer.write(
                        packet_type,
                        "bed_profile",
                        bed,
                        latest_bed,
                        delete=True,
                        parent=previous,
                    )
                    or previous
                )
        deleted = writer.write("DIVISION", "department", dep, latest_dep, delete=True, parent=previous)
        if deleted is not None and dep.branch_id:
            last_delete[dep.branch_id] = deleted
    for branch in branches:
        if branch.closed_on:
            writer.write(
                "BRANCH",
                "branch",
                branch,
                latest_branch,
                delete=True,
                parent=last_delete.get(branch.id),
            )


def _stage2(writer: _Writer, since: datetime | None, now: datetime, scope: Callable[[Any], Any]) -> None:
    referrals = _changed(
        HospitalReferral,
        since,
        now,
        scope(HospitalReferral.mo_id),
        HospitalReferral.kind.in_(REFERRAL_KINDS_SENT),
        HospitalReferral.auto_created.is_(False),
        HospitalReferral.payment == "oms",
    )
    stays = _changed(
        Hospitalisation, since, now, scope(Hospitalisation.mo_id), Hospitalisation.payment == "oms"
    )
    movements = _changed(
        HospitalMovement,
        since,
        now,
        scope(HospitalMovement.mo_id),
        HospitalMovement.hospitalisation_id.in_(
            db.select(Hospitalisation.id).where(Hospitalisation.payment == "oms")
        ),
    )
    latest_ref = _latest(
        "referral", {r.id for r in referrals} | {s.referral_id for s in stays if s.referral_id}
    )
    latest_hosp = _latest(
        "hospitalisation", {s.id for s in stays} | {m.hospitalisation_id for m in movements}
    )
    latest_mov = _latest("movement", {m.id for m in movements})
    for ref in referrals:
        sent = writer.write("HOSPITALISATION_REFERRAL", "referral", ref, latest_ref)
        if ref.cancelled_on:
            writer.write("CANCEL_HOSPITALISATION_REFERRAL", "referral", ref, latest_ref, parent=sent)
    for stay in stays:
        parent = (
            _inserted(latest_ref, "HOSPITALISATION_REFERRAL", "referral", stay.referral_id)
            if stay.referral_id
            else None
        )
        hosp = writer.write("HOSPITALISATION", "hospitalisation", stay, latest_hosp, parent=parent)
        if stay.refused_at:
            writer.write("CANCEL_HOSPITALISATION", "hospitalisation", stay, latest_hosp, parent=hosp)
    for movement in movements:
        hosp = _inserted(latest_hosp, "HOSPITALISATION", "hospitalisation", movement.hospitalisation_id)
        writer.write("MOTION_IN_HOSPITAL", "movement", movement, latest_mov, parent=hosp)


def _attachments(writer: _Writer, since: datetime | None, now: datetime, scope: Any) -> None:
    rows = _changed(Attachment, since, now, scope)
    latest = _latest("attachment", {a.id for a in rows})
    for attachment in rows:
        writer.write("ATTACH_DATA", "attachment", attachment, latest)


def _dispensary(writer: _Writer, since: datetime | None, now: datetime, scope: Any) -> None:
    rows = _changed(DispensaryObservation, since, now, scope)
    latest = _latest("dispensary", {d.id for d in rows})
    for obs in rows:
        opened = writer.write("DN_IN", "dispensary", obs, latest)
        if obs.ended_on:
            writer.write("DN_OUT", "dispensary", obs, latest, parent=opened)


def resend_failed(channel: PacketChannel, mo_id: int | None = None) -> int:
    """Packets that failed to build or that ТФОМС rejected go again once their data were fixed in
    the source MIS (the row or its patient changed since), rebuilt and under a new message id,
    unless «Не отправлять повторно» is set (seed 4.4.5.3.1.2). Unchanged data would be refused again."""
    stmt = db.select(TfomsPacket).where(
        TfomsPacket.channel == channel.name,
        TfomsPacket.direction == OUTGOING,
        TfomsPacket.status.in_(PACKET_RESEND_STATUSES),
        TfomsPacket.no_resend.is_(False),
    )
    if mo_id is not None:
        stmt = stmt.where(TfomsPacket.mo_id == mo_id)
    count = 0
    for packet in db.session.scalars(stmt):
        if _data_changed(packet):
            _requeue(packet)
            count += 1
    return count


def _data_changed(packet: TfomsPacket) -> bool:
    model = OBJECT_MODELS.get(packet.object_type or "")
    obj = db.session.get(model, packet.object_id) if model is not None else None
    if obj is None:
        return False
    moments = [obj.updated_at, getattr(getattr(obj, "patient", None), "updated_at", None)]
    return max(m for m in moments if m is not None) > (packet.status_at or datetime.min)


def _requeue(packet: TfomsPacket) -> None:
    packet.message_id = str(uuid.uuid4())
    packet.status, packet.status_text, packet.status_at = PACKET_QUEUED, None, utcnow()
    delivery.enqueue(channel_of(packet), "tfoms_packet", packet.id, packet.mo_id)


# --- answers and packets from ТФОМС ----------------------------------------------------------------------


@dataclass
class Consumed:
    answers: int = 0
    incoming: int = 0
    refused: int = 0  # replies that could not be read (journaled and acknowledged)


def consume_replies(limit: int = 1000) -> Consumed:
    """Read the reply queue: answers settle our packets, POLIS packets change patients."""
    from portal.tfoms.builders import MalformedReply, parse_reply

    broker = transport.get_broker()
    queue = setting(REPLY_QUEUE.key)
    result = Consumed()
    for _ in range(limit):
        try:
            message = broker.get(queue)
        except transport.BrokerUnavailable as error:
            log.warning("Очередь ответов ТФОМС недоступна: %s", error)
            break
        if message is None:
            break
        try:
            if message.type == "POLIS":
                process_polis(message)
                result.incoming += 1
            else:
                try:
                    reply = parse_reply(message.type, message.body)
                except MalformedReply as error:
                    _journal_poison(message, str(error))
                    result.refused += 1
                else:
                    if _settle(reply, message):
                        result.answers += 1
                    else:
                        result.refused += 1
            broker.settle(message)
        except Exception as error:  # a bug must not block the queue behind one message
            log.exception("Ответ ТФОМС %s не обработан", message.message_id)
            db.session.rollback()
            _journal_poison(message, f"внутренняя ошибка обработки: {error}")
            result.refused += 1
            broker.settle(message)
    return result


def storable(text: str) -> str:
    """Text of a message as a database keeps it: PostgreSQL refuses NUL characters in text."""
    return text.replace("\x00", "\\x00")


def _journal_poison(message: transport.Message, error: str) -> None:
    delivery.journal(
        CHANNEL,
        None,
        "Ответ ТФОМС",
        f"Сообщение из очереди ответов не обработано: {error}",
        level="error",
        subject=("tfoms_reply", 0),
        packet_id=message.message_id,
        packet_type=message.type,
        answer=storable(message.text)[:20000],
    )


def _by_message_id(message_id: str | None, direction: str) -> TfomsPacket | None:
    if not message_id:
        return None
    return db.session.scalar(
        db.select(TfomsPacket).where(TfomsPacket.message_id == message_id, TfomsPacket.direction == direction)
    )


def _settle(reply: Any, message: transport.Message) -> bool:
    packet = _by_message_id(reply.message_id, OUTGOING)
    if packet is None:
        _journal_poison(message, f"ответ на неизвестный пакет {reply.message_id or '(без идентификатора)'}")
        return False
    channel = channel_of(packet)
    item = _latest_item(packet)
    if item is None or item.state not in (WAITING, SENDING, UNKNOWN):
        return True  # a repeated answer: the packet is already settled
    packet.answer = {"answer": True, "ok": reply.ok, "errors": reply.errors, "packet": reply.data}
    packet.answer_xml = storable(message.text)
    packet.answered_at = utcnow()
    if reply.ok:
        outcome = Outcome.done("Принят ТФОМС", answer=packet.answer_xml, operation="Ответ ТФОМС")
    else:
        outcome = Outcome.failed(
            "Получен ответ с ошибкой: " + "; ".join(reply.errors or ["причина не указана"]),
            answer=packet.answer_xml,
            operation="Ответ ТФОМС",
        )
    item.external_id = item.external_id or packet.message_id
    delivery.apply_outcome(channel, item, outcome, operation="Ответ ТФОМС")
    return True


def _plan_person_status(packet: TfomsPacket) -> None:
    person = db.session.get(PlanPerson, packet.object_id)
    if person is None:
        return
    status = {
        PACKET_SENT: PLAN_PERSON_SENT,
        PACKET_ACCEPTED: PLAN_PERSON_ACCEPTED,
        PACKET_REJECTED: PLAN_PERSON_ERROR,
        PACKET_BUILD_ERROR: PLAN_PERSON_ERROR,
    }.get(packet.status)
    if status is not None:
        person.status, person.status_at = status, utcnow()
        person.status_text = packet.status_text if status == PLAN_PERSON_ERROR else None


# --- incoming: changes of insurance (T-6, seed 4.4.5.5) -------------------------------------------------


def process_polis(message: transport.Message) -> TfomsPacket:
    """Save an insurance change from ТФОМС and queue our answer; a repeat is answered once."""
    from portal.tfoms.builders import MalformedReply, flat, parse_polis

    existing = _by_message_id(message.message_id, INCOMING)
    if existing is not None:
        return existing
    packet = TfomsPacket(
        channel=SERVICE,
        direction=INCOMING,
        packet_type="POLIS",
        message_id=message.message_id or str(uuid.uuid4()),
        status=PACKET_RECEIVED,
        status_at=utcnow(),
        created_at=utcnow(),
        xml=storable(message.text),
    )
    db.session.add(packet)
    errors: list[tuple[int, str]] = []
    patient = None
    try:
        packet.data = {"answer": True, "packet": flat(message.body)}
    except Exception:  # not XML: the parser below says so
        packet.data = {"answer": True, "packet": {}}
    try:
        polis = parse_polis(message.body)
    except MalformedReply as error:
        errors.append((1, str(error)))
    else:
        packet.operation = polis.operation
        patient = _find_patient(polis)
        if patient is None:
            errors.append((2, f"Пациент с ЕНП {polis.enp} не найден"))
        else:
            packet.mo_id, packet.object_type, packet.object_id = patient.mo_id, "patient", patient.id
            if patient.mo_id not in admin_services.enabled_mo_ids("tfoms_insurance"):
                errors.append((3, "Для МО пациента не включена интеграция «ТФОМС: страховая принадлежность»"))
            else:
                errors.extend(_apply_polis(patient, polis))
    db.session.flush()
    delivery.journal(
        CHANNEL,
        None,
        "Получение",
        "Получен от ТФОМС",
        subject=("tfoms_packet", packet.id),
        mo_id=packet.mo_id,
        packet_id=packet.message_id,
        packet_type="POLIS",
        payload=packet.xml,
    )
    if errors:
        text = "; ".join(e[1] for e in errors)
        packet.status, packet.status_text = PACKET_REFUSED, f"Пакет отклонен: {text}"
        level = "error"
    else:
        packet.status, packet.status_text = PACKET_PROCESSED, "Пакет обработан"
        level = "ok"
    packet.status_at = utcnow()
    delivery.journal(
        CHANNEL,
        None,
        "Обработка",
        packet.status_text,
        level=level,
        subject=("tfoms_packet", packet.id),
        mo_id=packet.mo_id,
        packet_id=packet.message_id,
        packet_type="POLIS",
    )
    new_packet(  # our answer: its object is the packet it answers
        CHANNEL,
        "ANSWER",
        None,
        "tfoms_packet",
        packet.id,
        packet.mo_id,
        data={"reply": {"type": "POLIS", "message_id": packet.message_id, "errors": errors}},
    )
    return packet


def _replaced_policy(conflict: Any, new: Any) -> Any:
    """The open policy a change of insurance replaces: same ЕНП, begun before the new one."""
    if conflict is None or not new.enp or conflict.enp != new.enp or new.begin is None:
        return None
    return conflict if (conflict.begin or date.min) < new.begin else None


def _save_history(patient: Patient, policy: Any, end: date | None) -> None:
    """A policy from ТФОМС's insurance change into the patient's policy history."""
    from portal.clinical.models import PatientPolicy

    db.session.add(
        PatientPolicy(
            patient_id=patient.id,
            kind=policy.kind,
            series=policy.series,
            number=policy.number,
            enp=policy.enp,
            insurer_code=policy.insurer_code,
            begin_on=policy.begin,
            end_on=end,
            source="tfoms_polis",
            created_at=utcnow(),
        )
    )


def _close_policy(patient: Patient, old: Any, end: date) -> None:
    from portal.clinical.models import PatientPolicy

    if old.id is not None:
        db.session.get(PatientPolicy, old.id).end_on = end
    else:  # the current policy columns: keep it in the history, closed
        _save_history(patient, old, end)
        patient.policy_end = end
    db.session.flush()


def _find_patient(polis: Any) -> Patient | None:
    conditions = [Patient.enp == polis.enp] if polis.enp else []
    if polis.number:
        conditions.append(Patient.policy_number == polis.number)
    if not conditions:
        return None
    return db.session.scalar(db.select(Patient).where(or_(*conditions)).order_by(Patient.id).limit(1))


def _apply_polis(patient: Patient, polis: Any) -> list[tuple[int, str]]:
    """The policy (with the overlap check), the identity document and the social status as the seed
    says; returns the errors (nothing is saved when there are any)."""
    from portal.clinical.models import Insurer, PatientPolicy
    from portal.tfoms.ident import Policy, existing_policies, match_policy

    if db.session.scalar(db.select(Insurer.id).where(Insurer.code == polis.insurer_code)) is None:
        return [(4, f"СМО с кодом {polis.insurer_code} не найдена в справочнике СМО")]
    new = Policy(
        None,
        polis.policy_kind,
        polis.series,
        polis.number or polis.enp,
        polis.enp,
        polis.insurer_code,
        polis.begin_on,
        polis.end_on,
    )
    olds = existing_policies([patient.id]).get(patient.id, [])
    same, conflict = match_policy(olds, new)
    replaced = _replaced_policy(conflict, new)
    if replaced is not None:  # a change of СМО for the same ЕНП: the previous policy ends the day before
        _close_policy(patient, replaced, new.begin - timedelta(days=1))
        olds = existing_policies([patient.id]).get(patient.id, [])
        same, conflict = match_policy(olds, new)
    if conflict is not None:
        return [
            (
                5,
                f"Период действия полиса пересекается с полисом {conflict.label()}. "
                f"Полис {new.label()} не сохранён",
            )
        ]
    if same is not None:
        row = db.session.get(PatientPolicy, same.id)
        row.kind, row.series, row.begin_on, row.end_on = new.kind, new.series, new.begin, new.end
    else:
        _save_history(patient, new, new.end)
    patient.policy_kind, patient.policy_series, patient.policy_number = new.kind, new.series, new.number
    patient.enp = new.enp or patient.enp
    patient.insurer_code, patient.policy_begin, patient.policy_end = new.insurer_code, new.begin, new.end
    # Identity document (4.4.5.5.2.1): all of it when the patient has none, else only the issuer
    # when type, series and number match.
    if polis.document_kind or polis.document_number:
        has_none = not any((patient.document_kind, patient.document_series, patient.document_number))
        if has_none:
            patient.document_kind, patient.document_series = polis.document_kind, polis.document_series
            patient.document_number = polis.document_number
            patient.document_issued_on = getattr(polis, "document_issued_on", None)
            patient.document_issuer = getattr(polis, "document_issuer", None)
        elif (
            (patient.document_kind, patient.document_series or None, patient.document_number)
            == (polis.document_kind, polis.document_series or None, polis.document_number)
            and not patient.document_issuer
            and getattr(polis, "document_issuer", None)
        ):
            patient.document_issuer = polis.document_issuer
    # Social status (4.4.5.5.2.2): only when the patient has none.
    if getattr(polis, "social_status", None) and not patient.social_status:
        patient.social_status = polis.social_status
    return []


# --- actions on a packet (T-8) ---------------------------------------------------------------------------


def _latest_item(packet: TfomsPacket) -> WorkItem | None:
    return db.session.scalar(
        db.select(WorkItem)
        .where(
            WorkItem.channel == packet.channel,
            WorkItem.subject_type == "tfoms_packet",
            WorkItem.subject_id == packet.id,
        )
        .order_by(WorkItem.id.desc())
        .limit(1)
    )


def forbid_resend(packet: TfomsPacket, user: User) -> None:
    """«Не отправлять повторно»: the packet is not sent again, by the retries nor by the next run."""
    if packet.direction != OUTGOING:
        raise PacketError("Пакет получен от ТФОМС: запрет отправки к нему не относится.")
    if packet.status == PACKET_ACCEPTED:
        raise PacketError("Пакет уже принят ТФОМС: запрещать повторную отправку нечего.")
    if packet.no_resend:
        raise PacketError("Повторная отправка пакета уже запрещена.")
    item = _latest_item(packet)
    if item is not None and item.state in (SENDING, UNKNOWN):
        raise PacketError("Пакет сейчас отправляется; повторите через минуту.")
    packet.no_resend = True
    if item is not None and item.state == QUEUED:
        delivery.cancel(channel_of(packet), item, "Не отправлять повторно", user_id=user.id)
    _record(
        packet,
        user,
        "tfoms.packet.forbid",
        "Установлен запрет повторной отправки пакета",
        "Не отправлять повторно",
    )


def _record(packet: TfomsPacket, user: User, action: str, message: str, audit_text: str) -> None:
    """A user's action on a packet: a line of its journal and of the audit log."""
    delivery.journal(
        channel_of(packet),
        None,
        "Запрет отправки",
        message,
        subject=("tfoms_packet", packet.id),
        mo_id=packet.mo_id,
        user_id=user.id,
        packet_id=packet.message_id,
        packet_type=packet.packet_type,
    )
    audit(
        action,
        f"{audit_text}: пакет {packet.packet_type} {packet.message_id}",
        obj=packet,
        mo_id=packet.mo_id,
        user=user,
    )
    db.session.flush()


def allow_resend(packet: TfomsPacket, user: User) -> None:
    """«Снять запрет отправки»: the flag goes, and a packet not accepted is queued again."""
    if packet.direction != OUTGOING:
        raise PacketError("Пакет получен от ТФОМС: запрет отправки к нему не относится.")
    if not packet.no_resend:
        raise PacketError("Запрета повторной отправки у пакета нет.")
    packet.no_resend = False
    item = _latest_item(packet)
    queued_again = False
    parent = db.session.get(TfomsPacket, packet.after_id) if packet.after_id else None
    waiting_parent = parent is not None and parent.status != PACKET_ACCEPTED
    if (
        packet.status != PACKET_ACCEPTED
        and not waiting_parent
        and (item is None or item.state in (CANCELLED, FAILED))
    ):
        _requeue(packet)
        queued_again = True
    _record(
        packet,
        user,
        "tfoms.packet.allow",
        "Запрет повторной отправки снят" + (": пакет поставлен в очередь" if queued_again else ""),
        "Снят запрет отправки",
    )


admin_services.ACTION_LABELS.setdefault("tfoms.packet.forbid", "Запрет повторной отправки пакета ТФОМС")
admin_services.ACTION_LABELS.setdefault("tfoms.packet.allow", "Снятие запрета отправки пакета ТФОМС")
admin_services.OBJECT_LABELS.setdefault("TfomsPacket", "Пакет ТФОМС")


# --- prophylactic plans, one message per person (seed 4.4.5.2) -----------------------------------------


def send_plan(plan_id: int, user: User | None = None) -> int:
    """«Отправить»: one PERS_LIST packet per person of the plan not yet sent or with an error."""
    people = list(
        db.session.scalars(
            db.select(PlanPerson).where(
                PlanPerson.plan_id == plan_id, PlanPerson.status.in_(("new", PLAN_PERSON_ERROR))
            )
        )
    )
    from portal.clinical.models import ProphylacticPlan

    plan = db.session.get(ProphylacticPlan, plan_id)
    for person in people:
        new_packet(
            PLANS_CHANNEL,
            "PERS_LIST",
            "Insert",
            "plan_person",
            person.id,
            plan.mo_id,
            user_id=user.id if user is not None else None,
        )
    return len(people)


# --- a run of a service ------------------------------------------------------------------------------------


@dataclass
class ExchangeResult:
    """What one run did; its text is the run's message in the journal."""

    selected: int | None  # None: the run does not select changes (plans)
    resent: int = 0
    sent: int = 0
    answers: int = 0
    incoming: int = 0
    refused: int = 0

    @property
    def idle(self) -> bool:
        return not (
            self.selected or self.resent or self.sent or self.answers or self.incoming or self.refused
        )

    def __str__(self) -> str:
        parts = [f"отобрано пакетов: {self.selected}"] if self.selected is not None else []
        parts += [
            f"повторно: {self.resent}",
            f"отправлено: {self.sent}",
            f"ответов: {self.answers}",
            f"получено от ТФОМС: {self.incoming}",
        ]
        if self.refused:
            parts.append(f"нераспознанных сообщений: {self.refused}")
        return ", ".join(parts)


def exchange(
    channel: PacketChannel, *, mo_id: int | None = None, select: bool = True, wait: float | None = None
) -> ExchangeResult:
    """One run: select changes, resend failed packets, send, and read answers until the packets
    it sent are answered (children released by an answer go in the same run) or `wait` passes."""
    result = ExchangeResult(select_changes(mo_id).packets if select else None)
    # Plan messages go again only when a person presses «Отправить» (seed 4.4.5.2.1).
    result.resent = resend_failed(channel, mo_id) if channel is CHANNEL else 0
    db.session.commit()
    if wait is None:
        wait = float(current_app.config.get("TFOMS_REPLY_WAIT_SECONDS", 10))
    deadline = time.monotonic() + wait
    while True:
        # One batch at a time, then the answers: children of accepted packets follow in the run.
        sent = delivery.send_due(channel, mo_id=mo_id, one_batch=True)
        got = consume_replies()
        result.sent += sent
        result.answers += got.answers
        result.incoming += got.incoming
        result.refused += got.refused
        if sent == 0 and got.answers + got.incoming + got.refused == 0:
            if time.monotonic() >= deadline or not _awaiting(channel, mo_id):
                break
            time.sleep(0.2)
    db.session.commit()
    return result


def _awaiting(channel: PacketChannel, mo_id: int | None) -> bool:
    stmt = db.select(WorkItem.id).where(WorkItem.channel == channel.name, WorkItem.state == WAITING)
    if mo_id is not None:
        stmt = stmt.where(WorkItem.mo_id == mo_id)
    return db.session.scalar(stmt.limit(1)) is not None


# --- stage 3: free places (synchronous RPC) ---------------------------------------------------------------


@dataclass
class FreeBeds:
    rows: list[dict[str, Any]]
    error: str | None
    asked_at: datetime
    seconds: float


def free_beds(user: User, *, target_mo_id: int | None, profile: int | None) -> FreeBeds:
    """Ask ТФОМС where free beds are, and wait for the answer up to the configured timeout."""
    from portal.tfoms.builders import MalformedReply, build_free_beds_request, parse_free_beds_answer

    started, asked_at = time.monotonic(), utcnow()
    own = db.session.get(Mo, user.mo_id) if user.mo_id else None
    target = db.session.get(Mo, target_mo_id) if target_mo_id else None
    code = (own.f003_code if own is not None else None) or "0"
    try:
        timeout = float(setting(RPC_TIMEOUT) or 15)
    except ValueError:
        timeout = 15.0
    body = build_free_beds_request(
        code, target_mo=target.f003_code if target else None, profile=profile, on=date.today()
    )
    try:
        answer = transport.rpc_call(
            transport.get_broker(),
            setting(RPC_QUEUE.key),
            body,
            type="FREE_BEDS_REQUEST",
            timeout=timeout,
        )
    except transport.BrokerUnavailable as error:
        return FreeBeds([], f"Брокер сообщений недоступен: {error}", asked_at, time.monotonic() - started)
    if answer is None:
        return FreeBeds(
            [],
            f"ТФОМС не ответил за {timeout:g} с. Повторите запрос позже.",
            asked_at,
            time.monotonic() - started,
        )
    try:
        rows = parse_free_beds_answer(answer.body)
    except MalformedReply as error:
        return FreeBeds([], f"Ответ ТФОМС не распознан: {error}", asked_at, time.monotonic() - started)
    codes = {str(row.get("mo")) for row in rows if row.get("mo") is not None}
    names = dict(
        db.session.execute(db.select(Mo.f003_code, Mo.short_name).where(Mo.f003_code.in_(codes))).all()
    )
    for row in rows:  # the page orders them (most free places first)
        row["mo_name"] = names.get(str(row.get("mo")), str(row.get("mo") or ""))
    return FreeBeds(rows, None, asked_at, time.monotonic() - started)


__all__ = [
    "CHANNEL",
    "PLANS_CHANNEL",
    "FreeBeds",
    "PacketError",
    "allow_resend",
    "consume_replies",
    "exchange",
    "forbid_resend",
    "free_beds",
    "process_polis",
    "release_children",
    "select_changes",
    "send_plan",
]
