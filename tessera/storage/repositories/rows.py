"""Append-only rows written with one INSERT ... RETURNING instead of the ORM's unit of work:
certificates and audit events are written on every issuance, and a flush costs several times
more than the statement itself."""

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from tessera.storage.models import Base


def insert_row(session: Session, row: Base) -> None:
    """INSERT the mapped object's column values (filling Python-side defaults on the object
    too, so it reads like a flushed one) and set its new primary key."""
    table = row.__table__
    values: dict[str, Any] = {}
    for column in table.columns:
        value = getattr(row, column.key, None)
        if value is None and column.default is not None and not column.primary_key:
            default = column.default
            value = default.arg(None) if default.is_callable else default.arg  # type: ignore[attr-defined]
            setattr(row, column.key, value)
        if value is not None:
            values[column.key] = value
    primary_key = table.c.id
    row_id = session.execute(insert(table).values(values).returning(primary_key)).scalar_one()
    setattr(row, "id", row_id)  # noqa: B010 - every table using this has an integer `id`
