"""Shared path and query parameter types: ids fit the INTEGER columns, pages stay sane.

A query parameter sent empty (`?ca_id=&page=`, as a form with a cleared box sends it) is
taken as not sent: no filter, the default page and page size. That is the rule `status`
and `search` already follow, and what UCM's clients get from UCM (Flask's `type=int`
drops a value it cannot read). A value that is there but wrong stays a 422."""

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BeforeValidator

MAX_ROW_ID = 2**31 - 1
MAX_PER_PAGE = 100  # the seed's maximum; more is a 422 (docs/native-api.md)


def empty_is(default: Any) -> BeforeValidator:
    """Put beside a query parameter's Query(...): sent empty, it takes `default` (the
    route's own default, which FastAPI wants outside Annotated)."""
    return BeforeValidator(lambda value: default if value == "" else value)


RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
QueryRowId = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID), empty_is(None)]
Page = Annotated[int, Query(ge=1, le=10_000_000), empty_is(1)]
# One per default page size (a route's `= 20` must match), so that an empty per_page means
# what an absent one does. (FastAPI allows no default inside Annotated.)
PerPage20 = Annotated[int, Query(ge=1, le=MAX_PER_PAGE), empty_is(20)]
PerPage50 = Annotated[int, Query(ge=1, le=MAX_PER_PAGE), empty_is(50)]
