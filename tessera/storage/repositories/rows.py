"""Append-only rows written with Core INSERT ... RETURNING instead of the ORM's unit of work:
certificates and audit events are written on every issuance, and a flush (or even an ORM
insert built with `.values()`) costs several times more than the statement itself."""

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Insert, Table, insert, inspect, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tessera.storage.models import Base


def insert_row(session: Session, row: Base) -> None:
    """INSERT the mapped object's column values (filling Python-side defaults on the object
    too, so it reads like a flushed one) and set its new primary key."""
    values = _values(row)
    new_id = session.connection().execute(_insert(type(row).__table__), values).scalar_one()
    setattr(row, "id", new_id)  # noqa: B010 - `id` on every table


def insert_rows(session: Session, rows: Sequence[Base]) -> None:
    """`insert_row` for several objects of one model that has a unique `refid`, in one
    multi-row INSERT per set of columns given. The new keys are matched to the objects by
    refid: the order of a multi-row INSERT's RETURNING rows is not guaranteed (SQLAlchemy
    would otherwise send the rows one statement each on SQLite)."""
    by_columns: dict[tuple[str, ...], list[tuple[Base, dict[str, Any]]]] = {}
    for row in rows:
        values = _values(row)
        by_columns.setdefault(tuple(values), []).append((row, values))
    for group in by_columns.values():  # none for no rows: not even a connection is taken
        table = type(group[0][0]).__table__
        statement, parameters = _insert_many(table), [values for _, values in group]
        returned = session.connection().execute(statement, parameters)
        new_ids = {refid: new_id for new_id, refid in returned}
        for row, values in group:
            setattr(row, "id", new_ids[values["refid"]])  # noqa: B010 - `id` on every table


def _values(row: Base) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column in inspect(type(row)).columns:
        value = getattr(row, column.key, None)
        default = column.default
        if value is None and default is not None and not column.primary_key:
            arg = getattr(default, "arg", None)
            value = arg(None) if callable(arg) else arg
            setattr(row, column.key, value)
        if value is not None:
            values[column.name] = value
    return values


@cache
def _insert(table: Table) -> Insert:
    """One statement per table, parameters passed apart: SQLAlchemy then reuses the compiled
    form instead of coercing every value into a new statement."""
    return insert(table).returning(table.c.id)


@cache
def _insert_many(table: Table) -> Insert:
    return insert(table).returning(table.c.id, table.c.refid, sort_by_parameter_order=False)


def update_if(session: Session, row: Base, where: Sequence[Any], **values: Any) -> bool:
    """One guarded UPDATE of `row` (its id and `where`): True, and the object holds the new
    values as committed ones, when the guard held; False when another request changed the row
    first. How two requests racing on one row are parted without locks."""
    model = type(row)
    result = session.execute(
        update(model)
        .where(model.id == row.id, *where)  # type: ignore[attr-defined]
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    for name, value in values.items():
        set_committed_value(row, name, value)
    return True
