"""Column helpers shared by every feature's models."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import DateTime
from sqlalchemy.orm import Mapped, mapped_column

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Slices of at most `size` items: one statement per slice (IN lists stay under the
    databases' parameter limits, executemany batches stay bounded)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def utcnow() -> datetime:
    """Naive UTC timestamp: the same value on SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
