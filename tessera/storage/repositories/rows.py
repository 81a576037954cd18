"""Append-only rows written with one Core INSERT ... RETURNING instead of the ORM's unit of
work: certificates and audit events are written on every issuance, and a flush (or even an
ORM insert built with `.values()`) costs several times more than the statement itself."""

from functools import cache
from typing import Any

from sqlalchemy import Insert, Table, insert, inspect
from sqlalchemy.orm import Session

from tessera.storage.models import Base


def insert_row(session: Session, row: Base) -> None:
    """INSERT the mapped object's column values (filling Python-side defaults on the object
    too, so it reads like a flushed one) and set its new primary key."""
    model = type(row)
    values: dict[str, Any] = {}
    for column in inspect(model).columns:
        value = getattr(row, column.key, None)
        default = column.default
        if value is None and default is not None and not column.primary_key:
            arg = getattr(default, "arg", None)
            value = arg(None) if callable(arg) else arg
            setattr(row, column.key, value)
        if value is not None:
            values[column.name] = value
    new_id = session.connection().execute(_insert(model.__table__), values).scalar_one()
    setattr(row, "id", new_id)  # noqa: B010 - `id` on every table


@cache
def _insert(table: Table) -> Insert:
    """One statement per table, parameters passed apart: SQLAlchemy then reuses the compiled
    form instead of coercing every value into a new statement."""
    return insert(table).returning(table.c.id)
