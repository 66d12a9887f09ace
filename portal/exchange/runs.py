"""Service runs (T-11): every job run is recorded with its start, end, result and packet counts.

`recording(...)` wraps one run. The row is committed at the start, so the journal shows
«Выполняется» while the run works, and again at the end. Inside, `current_run()` gives the run
that journal entries and counts attach to; outside a run it is None.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

from portal.exchange.models import RUN_ERROR, RUN_OK, RUN_RUNNING, ServiceRun
from portal.extensions import db
from portal.models_base import utcnow


@dataclass
class RunTally:
    run_id: int
    mo_id: int | None
    items: set[object] = field(default_factory=set)
    failed_items: set[object] = field(default_factory=set)

    def count(self, item_id: object, ok: bool) -> None:
        """Count a packet once per run — a work item's id, or the (type, id) of a subject that has
        no work item (a file exchanged with ТФОМС); one that failed at any step counts as with errors."""
        self.items.add(item_id)
        if not ok:
            self.failed_items.add(item_id)


_current: ContextVar[RunTally | None] = ContextVar("service_run", default=None)


def current_run() -> RunTally | None:
    return _current.get()


@contextlib.contextmanager
def recording(service: str, *, mo_id: int | None = None, manual: bool = False,
              user_id: int | None = None) -> Iterator[RunTally]:
    """Record one run of `service`; commits the run row at the start and at the end.

    An exception inside marks the run «Завершено с ошибкой» with its text and propagates.
    """
    run = ServiceRun(service=service, mo_id=mo_id, manual=manual, user_id=user_id, started_at=utcnow())
    db.session.add(run)
    db.session.commit()
    tally = RunTally(run.id, mo_id)
    token = _current.set(tally)
    error: BaseException | None = None
    try:
        yield tally
    except BaseException as exc:
        error = exc
        raise
    finally:
        _current.reset(token)
        if error is not None:
            db.session.rollback()
        run = db.session.get(ServiceRun, tally.run_id)
        run.finished_at = utcnow()
        run.total = len(tally.items)
        run.errors = len(tally.failed_items)
        run.result = RUN_ERROR if error is not None or tally.failed_items else RUN_OK
        if error is not None:
            run.message = f"{type(error).__name__}: {error}"[:2000]
        db.session.commit()


def close_interrupted_runs(message: str, *, started_before: datetime | None = None,
                           include_manual: bool = False) -> int:
    """Mark runs left «Выполняется» by a process that died as «Завершено с ошибкой».

    At scheduler start every scheduled run is such a run (the scheduler runs in one process);
    manual runs live in web workers' threads, so only an age limit closes them.
    """
    stmt = db.update(ServiceRun).where(ServiceRun.result == RUN_RUNNING)
    if started_before is not None:
        stmt = stmt.where(ServiceRun.started_at < started_before)
    if not include_manual:
        stmt = stmt.where(ServiceRun.manual.is_(False))
    return db.session.execute(stmt.values(result=RUN_ERROR, finished_at=utcnow(), message=message)).rowcount or 0
