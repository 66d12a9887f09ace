"""What other features do when intake stores source records (ВИМИС triggers, ТФОМС selection …).

A feature registers a handler for one record type of the intake contract:

    @on_stored("event")
    def create_semds(rows: list[StoredRecord]) -> None: ...

Intake calls it inside the same transaction, right after that type's records of a batch were
upserted, so whatever the handler writes (a SEMD, a packet) commits or rolls back together with
the records that caused it. `created` and `changed` let a handler act once per record and stay
quiet on a repeat of the same record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

RECORD_TYPES = (
    "mo", "insurer", "branch", "department", "bed_profile", "staff", "patient", "attachment", "pregnancy",
    "referral", "hospitalisation", "movement", "dispensary", "event", "visit_report",
    "plan", "plan_person",
)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    type: str  # record type of the contract: "mo", "event" …
    id: int  # primary key of the model row
    source_id: str  # the source MIS's id
    created: bool  # True: the row is new; False: an existing row was updated (or sent again unchanged)
    changed: bool  # True when the row was created or any stored value differs from before


Handler = Callable[[list[StoredRecord]], None]

_handlers: dict[str, list[Handler]] = {}


def on_stored(type_name: str) -> Callable[[Handler], Handler]:
    """Register `handler(rows)` to run after a batch's records of `type_name` are stored."""
    if type_name not in RECORD_TYPES:
        raise ValueError(f"unknown record type {type_name!r}; expected one of {RECORD_TYPES}")

    def register(handler: Handler) -> Handler:
        handlers = _handlers.setdefault(type_name, [])
        if handler not in handlers:  # a module imported twice must not run its handler twice
            handlers.append(handler)
        return handler

    return register


def handlers_for(type_name: str) -> list[Handler]:
    return list(_handlers.get(type_name, ()))


def notify(type_name: str, rows: list[StoredRecord]) -> None:
    """Run the handlers of one type; an exception propagates and the caller's transaction fails."""
    if not rows:
        return
    for handler in handlers_for(type_name):
        handler(rows)
