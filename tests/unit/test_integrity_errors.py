"""Which integrity errors are the request's fault: a null where the schema needs a value is
answered 422, a clash with another row 409 (tessera/api/errors.py), on both backends."""

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from tessera.api.errors import _missing_value


def _integrity_error(engine: Engine, statement: str) -> IntegrityError:
    with engine.connect() as connection:
        connection.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"))
        connection.execute(text("INSERT INTO probe (id, name) VALUES (1, 'taken')"))
        with pytest.raises(IntegrityError) as raised:
            connection.execute(text(statement))
        connection.rollback()
    return raised.value


def test_a_null_for_a_required_column_is_a_missing_value(bare_engine: Engine) -> None:
    error = _integrity_error(bare_engine, "INSERT INTO probe (id, name) VALUES (2, NULL)")
    assert _missing_value(error)


def test_a_clash_with_another_row_is_not(bare_engine: Engine) -> None:
    error = _integrity_error(bare_engine, "INSERT INTO probe (id, name) VALUES (1, 'again')")
    assert not _missing_value(error)
