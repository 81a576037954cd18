"""Shared path and query parameter types: ids fit the INTEGER columns, pages stay sane."""

from typing import Annotated

from fastapi import Path, Query

MAX_ROW_ID = 2**31 - 1

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
QueryRowId = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]
Page = Annotated[int, Query(ge=1, le=10_000_000)]
PerPage = Annotated[int, Query(ge=1, le=100)]
