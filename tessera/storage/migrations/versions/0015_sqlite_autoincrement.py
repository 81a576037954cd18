"""sqlite autoincrement

SQLite gives a new row the largest id in its table plus one, so after the newest row of a
table was deleted the next row got its id again, and an audit row or a client still naming
the deleted one named another. On SQLite, every table keyed by one INTEGER column `id` is
rebuilt with `id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT` (the form SQLAlchemy writes for
`sqlite_autoincrement=True`, which the models now set), so that SQLite never hands out an id
twice: it keeps the largest id ever given in `sqlite_sequence`, seeded here by the copy with
each table's largest id.

The rebuild is SQLite's procedure for changes ALTER TABLE cannot make
(https://www.sqlite.org/lang_altertable.html, section 7): foreign-key enforcement off, so
that dropping the old table cannot cascade into or block on the tables that reference it;
`legacy_alter_table` on, so that the rename neither rewrites nor rejects the triggers of other
tables that name the rebuilt one (tally, search, credential generation); a new table from the
stored CREATE TABLE with only the key changed, the rows copied column for column, the old
table dropped, the new one renamed, its indexes and triggers created again from their stored
SQL, and `PRAGMA foreign_key_check` before the commit. The pragma cannot change inside a
transaction, so the migrations run before this one are committed first. Left alone: virtual
tables and their shadow tables, SQLite's own, alembic_version, and `certificate_search`, whose
id is the certificate's, set by the triggers of 0013 and never picked by SQLite.

PostgreSQL: nothing to do, its sequences never give an id twice.

Revision ID: 0015
Revises: 0014
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import op
from sqlalchemy import Connection

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

LEFT_ALONE = {"alembic_version", "certificate_search"}
_ID_COLUMN = r'"?id"?\s+INTEGER\s+NOT\s+NULL'
_KEYWORDS = " PRIMARY KEY AUTOINCREMENT"  # exactly as SQLAlchemy writes them
_ID = re.compile(_ID_COLUMN, re.IGNORECASE)
_AUTOINCREMENT_ID = re.compile(_ID_COLUMN + _KEYWORDS, re.IGNORECASE)
_TABLE_KEY = re.compile(r'PRIMARY\s+KEY\s*\(\s*"?id"?\s*\)', re.IGNORECASE)
_CONSTRAINT = re.compile(r"(CONSTRAINT|PRIMARY|UNIQUE|CHECK|FOREIGN)\b", re.IGNORECASE)
_TEMPORARY = "_rebuilt_{}"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _rebuild_tables(bind, autoincrement=True)


def downgrade() -> None:
    """Back to the tables of 0014 (and to ids given again), in the same words but for the
    quotes SQLite's rename puts around a table's name; `sqlite_sequence`, which SQLite does
    not let go, stays, empty."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _rebuild_tables(bind, autoincrement=False)


def _rebuild_tables(bind: Connection, autoincrement: bool) -> None:
    change = _with_autoincrement if autoincrement else _without_autoincrement
    with _rebuilding(bind):
        # Listed inside the transaction: another process may have rebuilt them meanwhile.
        for name, sql in _keyed_by_id(bind):
            if _autoincrement(sql) != autoincrement:
                _rebuild(bind, name, change(name, sql))


@contextmanager
def _rebuilding(bind: Connection) -> Iterator[None]:
    """Steps 1, 2 and 10 to 12 of the procedure, around the rebuilds: foreign keys off, one
    transaction, foreign_key_check, commit, foreign keys back as they were.

    PRAGMA foreign_keys does nothing inside a transaction. The caller's SQLAlchemy transaction
    is only bookkeeping on SQLite (connections run in autocommit, storage/db.py): the real one
    was opened by sqlite_writes at this run's first write, if any. That one is committed here,
    with the migrations before this one, through the DBAPI connection, leaving the caller's
    transaction and the write lock to their owner."""
    raw = bind.connection.dbapi_connection
    assert raw is not None
    raw.commit()
    enforced = bind.exec_driver_sql("PRAGMA foreign_keys").scalar_one()
    legacy = bind.exec_driver_sql("PRAGMA legacy_alter_table").scalar_one()
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    bind.exec_driver_sql("PRAGMA legacy_alter_table=ON")
    try:
        # A write: on a file, sqlite_writes takes its lock and opens the transaction as for
        # any other first write; elsewhere the savepoint opens (and RELEASE ends) it.
        bind.exec_driver_sql("SAVEPOINT rebuild_tables")
        yield
        _check_foreign_keys(bind)
        bind.exec_driver_sql("RELEASE rebuild_tables")
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        bind.exec_driver_sql(f"PRAGMA legacy_alter_table={int(legacy)}")
        bind.exec_driver_sql(f"PRAGMA foreign_keys={int(enforced)}")


def _check_foreign_keys(bind: Connection) -> None:
    broken = bind.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        shown = ", ".join(f"{t} row {r} -> {p}" for t, r, p, _ in broken[:20])
        raise RuntimeError(
            f"foreign_key_check found {len(broken)} broken reference(s) after rebuilding the "
            f"tables, nothing was changed: {shown}"
        )


def _keyed_by_id(bind: Connection) -> list[tuple[str, str]]:
    """(name, CREATE TABLE) of the ordinary tables whose key is one INTEGER column `id`."""
    tables = bind.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
    ).all()
    # An FTS5 table's shadow tables are named after it (certificate_search_fts_data...).
    virtual = tuple(f"{n}_" for n, sql in tables if sql.upper().startswith("CREATE VIRTUAL"))
    return [
        (name, sql)
        for name, sql in tables
        if not name.startswith(("sqlite_", *virtual))
        and name not in LEFT_ALONE
        and not sql.upper().startswith("CREATE VIRTUAL")
        and _integer_id_key(bind, name)
    ]


def _integer_id_key(bind: Connection, table: str) -> bool:
    columns = bind.exec_driver_sql(f'PRAGMA table_info("{table}")').all()
    key = [(column[1], column[2].upper()) for column in columns if column[5]]
    return key == [("id", "INTEGER")]


def _rebuild(bind: Connection, name: str, create: str) -> None:
    """Steps 3 to 8: `create` is the table's CREATE TABLE as it is to become."""
    temporary = _TEMPORARY.format(name)
    # Dropping the table drops its indexes and triggers: kept to be made again, as they were.
    companions = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY rowid",
        (name,),
    ).all()
    bind.exec_driver_sql(f'CREATE TABLE "{temporary}" ' + create[create.index("(") :])
    bind.exec_driver_sql(f'INSERT INTO "{temporary}" SELECT * FROM "{name}"')
    bind.exec_driver_sql(f'DROP TABLE "{name}"')
    bind.exec_driver_sql(f'ALTER TABLE "{temporary}" RENAME TO "{name}"')
    for (sql,) in companions:
        bind.exec_driver_sql(sql)


def _autoincrement(sql: str) -> bool:
    return any(_AUTOINCREMENT_ID.fullmatch(sql[s:e].strip()) for s, e in _items(sql))


def _with_autoincrement(name: str, sql: str) -> str:
    """`id INTEGER NOT NULL, ..., PRIMARY KEY (id), ...` (as SQLAlchemy made every one) to
    `id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, ...`: SQLite accepts AUTOINCREMENT only
    on the column, so the table's key constraint moves there."""
    items = _items(sql)
    column = _only(name, sql, items, _ID)
    key = _only(name, sql, items, _TABLE_KEY)
    if column[1] > key[0]:
        raise RuntimeError(f"{name}: the key constraint comes before the id column in {sql!r}")
    # The key constraint goes with the comma before it.
    return sql[: column[1]] + _KEYWORDS + sql[column[1] : key[0] - 1] + sql[key[1] :]


def _without_autoincrement(name: str, sql: str) -> str:
    """The reverse of _with_autoincrement: the key constraint goes back after the last column,
    set off as the item after it is."""
    items = _items(sql)
    end = _only(name, sql, items, _AUTOINCREMENT_ID)[1]
    columns = [span for span in items if not _CONSTRAINT.match(sql[span[0] : span[1]].lstrip())]
    following = items[len(columns)] if len(columns) < len(items) else columns[-1]
    space = re.match(r"\s*", sql[following[0] :])
    assert space is not None
    after = columns[-1][0] + len(sql[columns[-1][0] : columns[-1][1]].rstrip())
    return (
        sql[: end - len(_KEYWORDS)]
        + sql[end:after]
        + f",{space.group()}PRIMARY KEY (id)"
        + sql[after:]
    )


def _only(
    name: str, sql: str, items: list[tuple[int, int]], pattern: re.Pattern[str]
) -> tuple[int, int]:
    """The one item `pattern` matches, without the blanks after it."""
    found = [(s, e) for s, e in items if pattern.fullmatch(sql[s:e].strip())]
    if len(found) != 1:
        raise RuntimeError(f"{name}: expected one {pattern.pattern!r} in {sql!r}")
    start, end = found[0]
    return start, start + len(sql[start:end].rstrip())


def _items(sql: str) -> list[tuple[int, int]]:
    """Spans of the column definitions and table constraints of a CREATE TABLE: the text
    between its outer parentheses, split at the commas outside nested ones and quotes."""
    spans: list[tuple[int, int]] = []
    depth, start, quote = 0, 0, ""
    for i, char in enumerate(sql):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"`[":
            quote = "]" if char == "[" else char
        elif char == "(":
            depth += 1
            start = i + 1 if depth == 1 else start
        elif char == ")":
            depth -= 1
            if depth == 0:
                return [*spans, (start, i)]
        elif char == "," and depth == 1:
            spans.append((start, i))
            start = i + 1
    raise RuntimeError(f"cannot read the columns of {sql!r}")
