"""Bulk operations: each id in its own savepoint, so one failure undoes only itself; or, for
actions that leave their writes to the caller, no savepoint at all (`each_unwritten`)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.orm import Session

from tessera.core.errors import TesseraError

T = TypeVar("T")


@dataclass
class BulkResult:
    """The seed's {"success": [...], "failed": [...]}, with the reason for each failure."""

    success: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    errors: list[dict[str, object]] = field(default_factory=list)
    renewed: list[dict[str, int]] = field(default_factory=list)


def each(session: Session, ids: Sequence[int], action: Callable[[int], object]) -> BulkResult:
    result = BulkResult()
    for item_id in dict.fromkeys(ids):
        try:
            with session.begin_nested():
                action(item_id)
            result.success.append(item_id)
        except TesseraError as exc:
            result.failed.append(item_id)
            result.errors.append({"id": item_id, "error": exc.message})
    return result


def each_unwritten(
    ids: Sequence[int], action: Callable[[int], T]
) -> tuple[BulkResult, list[tuple[int, T]]]:
    """Each id's action, for actions that write nothing (the caller writes what they leave):
    no savepoint, which on SQLite would take the database's write lock for the whole loop.
    Returns the result, its failures filled in, and what each action that succeeded gave."""
    result, done = BulkResult(), []
    for item_id in dict.fromkeys(ids):
        try:
            done.append((item_id, action(item_id)))
        except TesseraError as exc:
            result.failed.append(item_id)
            result.errors.append({"id": item_id, "error": exc.message})
    result.success = [item_id for item_id, _ in done]
    return result, done
