"""Migration 0015: on SQLite every table keyed by an `id` SQLite picks is AUTOINCREMENT, so a
deleted row's id is never given again; the rebuild keeps every row, reference, index and
trigger; and its downgrade gives back the tables of 0014."""

import importlib
import pkgutil
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateTable

from tessera import storage
from tessera.storage import models
from tessera.storage.db import make_engine
from tests.support import alembic

# Its id is the certificate's, written by the triggers of 0013: SQLite never picks it.
GIVEN_IDS = {"certificate_search"}
Schema = set[tuple[str, str, str, str | None]]


@pytest.fixture
def sqlite_at(tmp_path: Path) -> Iterator[Callable[[str], Engine]]:
    """Makes a new SQLite database migrated up to a revision."""
    engines: list[Engine] = []

    def make(revision: str) -> Engine:
        engine = make_engine(f"sqlite:///{tmp_path / f'{len(engines)}.db'}")
        engines.append(engine)
        alembic(engine, "upgrade", revision)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


def query(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.exec_driver_sql(sql)]


def schema(engine: Engine, *types: str) -> Schema:
    """sqlite_master, with the quotes SQLite puts around the name of a renamed table removed."""
    rows = query(engine, "SELECT type, name, tbl_name, sql FROM sqlite_master")
    return {
        (kind, name, table, sql and re.sub(r'^CREATE TABLE "(\w+)"', r"CREATE TABLE \1", sql))
        for kind, name, table, sql in rows
        if kind in types and name != "sqlite_sequence"
    }


def keyed_by_id(engine: Engine) -> dict[str, str]:
    """CREATE TABLE of each ordinary table whose key is one INTEGER `id`."""
    tables = query(engine, "SELECT name, sql FROM sqlite_master WHERE type = 'table'")
    virtual = tuple(f"{n}_" for n, sql in tables if sql.startswith("CREATE VIRTUAL"))
    found = {}
    for name, sql in tables:
        if name.startswith(("sqlite_", *virtual)) or sql.startswith("CREATE VIRTUAL"):
            continue
        info = query(engine, f'PRAGMA table_info("{name}")')
        if [(c[1], c[2]) for c in info if c[5]] == [("id", "INTEGER")]:
            found[name] = sql
    return found


def test_every_picked_id_is_autoincrement_as_the_models_say(
    sqlite_at: Callable[[str], Engine],
) -> None:
    """Guards the migrations to come too: a new table keyed by `id` must be created with
    sqlite_autoincrement=True (autogenerate writes it, from the models)."""
    for module in pkgutil.iter_modules(storage.__path__):
        if module.name.startswith("models"):
            importlib.import_module(f"tessera.storage.{module.name}")
    tables = keyed_by_id(sqlite_at("head"))
    assert {"certificates", "audit_logs", "certificate_authorities", "users"} <= set(tables)
    plain = {name for name, sql in tables.items() if "PRIMARY KEY AUTOINCREMENT" not in sql}
    assert plain == GIVEN_IDS
    for name, sql in tables.items():
        model = models.Base.metadata.tables[name]
        made = str(CreateTable(model).compile(dialect=sqlite.dialect()))
        assert ("AUTOINCREMENT" in made) == ("AUTOINCREMENT" in sql), name


def test_indexes_and_triggers_are_made_again_as_they_were(
    sqlite_at: Callable[[str], Engine],
) -> None:
    before, after = sqlite_at("0014"), sqlite_at("0015")
    # Names and SQL, the automatic indexes of UNIQUE constraints and the triggers on other
    # tables that name a rebuilt one (tally, search, credential generation) included.
    companions = schema(before, "index", "trigger", "view")
    assert len(companions) > 50
    assert schema(after, "index", "trigger", "view") == companions
    for table in keyed_by_id(before):
        for pragma in ("table_xinfo", "foreign_key_list", "index_list"):
            statement = f'PRAGMA {pragma}("{table}")'
            assert query(after, statement) == query(before, statement), statement


def test_downgrade_gives_back_the_tables_of_0014(sqlite_at: Callable[[str], Engine]) -> None:
    before, migrated = sqlite_at("0014"), sqlite_at("0015")
    alembic(migrated, "downgrade", "0014")
    kinds = ("table", "index", "trigger", "view")
    assert schema(migrated, *kinds) == schema(before, *kinds)
    assert query(migrated, "SELECT * FROM sqlite_sequence") == []  # left behind: SQLite's own
    alembic(migrated, "upgrade", "0015")
    assert "PRIMARY KEY AUTOINCREMENT" in keyed_by_id(migrated)["certificates"]


def test_rows_and_references_survive_and_ids_never_come_back(bare_engine: Engine) -> None:
    alembic(bare_engine, "upgrade", "0014")
    with bare_engine.begin() as connection:
        ids = Rows(connection).fill()
    before = snapshot(bare_engine)
    alembic(bare_engine, "upgrade", "0015")
    assert snapshot(bare_engine) == before
    if bare_engine.dialect.name == "sqlite":
        assert query(bare_engine, "PRAGMA foreign_key_check") == []
        assert query(bare_engine, "PRAGMA foreign_keys") == [(1,)]
        assert query(bare_engine, "PRAGMA integrity_check") == [("ok",)]
        search = "INSERT INTO certificate_search_fts (certificate_search_fts) VALUES"
        with bare_engine.begin() as connection:
            connection.exec_driver_sql(f"{search} ('integrity-check')")
        sequence = dict(query(bare_engine, "SELECT name, seq FROM sqlite_sequence"))
        assert sequence["certificates"] == ids["certificates"]
        assert sequence["certificate_authorities"] == ids["intermediate"]
    still_working(bare_engine, ids)


def test_broken_references_stop_the_rebuild_and_change_nothing(
    sqlite_at: Callable[[str], Engine],
) -> None:
    engine = sqlite_at("0014")
    with engine.begin() as connection:
        Rows(connection).fill()
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.exec_driver_sql("UPDATE api_keys SET user_id = 424242")
        connection.commit()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
    tables = schema(engine, "table", "index", "trigger")
    with pytest.raises(RuntimeError, match="api_keys row 1 -> users"):
        alembic(engine, "upgrade", "0015")
    assert schema(engine, "table", "index", "trigger") == tables
    assert query(engine, "SELECT version_num FROM alembic_version") == [("0014",)]
    assert query(engine, "PRAGMA foreign_keys") == [(1,)]
    assert query(engine, "PRAGMA legacy_alter_table") == [(0,)]


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as connection:
        names = set(sa.inspect(connection).get_table_names()) - {"alembic_version"}
        rows = {name: connection.exec_driver_sql(f'SELECT * FROM "{name}"') for name in names}
        return {name: sorted(map(tuple, r), key=repr) for name, r in rows.items()}


def still_working(engine: Engine, ids: dict[str, int]) -> None:
    """The newest certificate deleted, the next one gets a new id, and the triggers on the
    rebuilt tables (tally, search, credential generation) still write to rebuilt tables."""
    with engine.begin() as connection:

        def scalar(sql: str) -> Any:
            return connection.exec_driver_sql(sql).scalar()

        generation = scalar("SELECT n FROM credential_generation")
        connection.exec_driver_sql(f"DELETE FROM certificates WHERE id = {ids['certificates']}")
        deltas = scalar("SELECT count(*) FROM certificate_tally_delta")
        again = Rows(connection).add(
            "certificates", org_id=ids["organizations"], ca_id=ids["intermediate"]
        )
        assert again > ids["certificates"]
        assert scalar(f"SELECT id FROM certificate_search WHERE id = {again}") == again
        assert scalar("SELECT count(*) FROM certificate_tally_delta") == deltas + 1
        connection.exec_driver_sql(f"UPDATE users SET role = 'viewer' WHERE id = {ids['users']}")
        assert scalar("SELECT n FROM credential_generation") > generation


class Rows:
    """Rows written through the database's own tables as they stand (reflected, so that this
    keeps working at 0014 whatever later models add), every required column filled."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.metadata = sa.MetaData()
        self.count = 0

    def add(self, name: str, **given: Any) -> int:
        table = sa.Table(name, self.metadata, autoload_with=self.connection)
        self.count += 1
        values = {
            column.name: self._value(column)
            for column in table.columns
            if not column.nullable and column.server_default is None and not column.primary_key
        }
        inserted = self.connection.execute(table.insert().values({**values, **given}))
        return int(inserted.inserted_primary_key[0])

    def _value(self, column: sa.Column[Any]) -> Any:
        if isinstance(column.type, sa.JSON):
            return {}
        now = datetime.now(UTC).replace(tzinfo=None)
        made = {str: f"{column.name[:8]}-{self.count}", int: 1, bool: False, bytes: b"x"}
        return {datetime: now, date: now.date(), **made}[column.type.python_type]

    def fill(self) -> dict[str, int]:
        """An organization, users and what cascades from them, a CA hierarchy with a
        certificate of a template, and rows that cascade or go NULL when those go."""
        ids: dict[str, int] = {}
        org = ids["organizations"] = self.add("organizations")
        user = ids["users"] = self.add("users", org_id=org)
        for name in ("api_keys", "web_sessions", "recovery_codes", "account_tokens"):
            self.add(name, user_id=user)
        group = self.add("user_groups", org_id=org)
        self.add("user_group_members", group_id=group, user_id=user)
        root = self.add("certificate_authorities", org_id=org)
        ids["intermediate"] = self.add("certificate_authorities", org_id=org, parent_id=root)
        template = self.add("templates", org_id=org)
        certificate = ids["certificates"] = self.add(
            "certificates", org_id=org, ca_id=ids["intermediate"], template_id=template
        )
        self.add("csrs", org_id=org, certificate_id=certificate)
        owned = {"ca_id": ids["intermediate"], "org_id": org}
        self.add("crls", **owned)
        self.add("crl_state", **owned)
        self.add("crl_retained_entries", **owned, certificate_id=certificate)
        self.add("ocsp_signers", ca_id=ids["intermediate"], certificate_id=certificate)
        self.add("audit_logs", org_id=org, resource_id=str(certificate))
        return ids
