"""Bulk operations: each id in its own savepoint, so one failure undoes only itself."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from tessera.core.errors import TesseraError


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
