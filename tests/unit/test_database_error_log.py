"""What the server logs of a database error names the table, column and constraint, never
the values: PostgreSQL's own message quotes them (a unique key, a whole failing row, a value
that is not a number)."""

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DataError, IntegrityError

from tessera.api.errors import loggable
from tests import support

SECRET = "hunter2-secret"


def _error(statement: str) -> IntegrityError | DataError:
    url = support.PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            table = "CREATE TEMP TABLE vault (secret text UNIQUE, n smallint NOT NULL)"
            connection.execute(sa.text(table))
            connection.execute(sa.text(f"INSERT INTO vault VALUES ('{SECRET}', 1)"))
            with pytest.raises((IntegrityError, DataError)) as raised:
                connection.execute(sa.text(statement))
        error = raised.value
        assert isinstance(error, IntegrityError | DataError)
        return error
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("statement", "named"),
    [
        (f"INSERT INTO vault VALUES ('{SECRET}', 2)", "constraint vault_secret_key"),
        (f"INSERT INTO vault VALUES ('{SECRET}-2', NULL)", "column n"),
        (f"INSERT INTO vault VALUES ('x', '{SECRET}')", "SQLSTATE 22P02"),
    ],
)
def test_postgresql_errors_are_logged_without_their_values(statement: str, named: str) -> None:
    error = _error(statement)
    assert SECRET in str(error.orig)  # what the driver's own message would have logged
    text = loggable(error)
    assert named in text and SECRET not in text
