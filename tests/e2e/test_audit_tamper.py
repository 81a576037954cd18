"""Tamper evidence: audit rows edited, deleted and inserted directly in SQLite (sqlite3) and
PostgreSQL (psycopg) are named by /api/v2/audit/verify; retention cleanup keeps the rest
verifiable; concurrent writers from several processes and threads keep one valid chain."""

import json
import sqlite3
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tessera.core import audit_chain
from tessera.storage.db import make_engine
from tessera.storage.models import AuditLog
from tessera.storage.models_audit import AuditChainHead
from tessera.storage.repositories.audit import covered_values
from tests.e2e.helpers import data, unique
from tests.support import Server, admin_api_key, database, start_server, stop_server

API = "/api/v2"
VERIFY = f"{API}/audit/verify"


def sql(server: Server, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One committed statement straight into the server's database (`?` placeholders)."""
    if server.database_url is None:
        values = tuple(json.dumps(p) if isinstance(p, dict) else p for p in params)
        with closing(sqlite3.connect(server.data_dir / "tessera.db", timeout=30)) as conn:
            rows = conn.execute(statement, values).fetchall()
            conn.commit()
            return rows
    import psycopg
    from psycopg.types.json import Json

    values = tuple(Json(p) if isinstance(p, dict) else p for p in params)
    with psycopg.connect(server.database_url) as conn:
        cursor = conn.execute(statement.replace("?", "%s"), values)
        return cursor.fetchall() if cursor.description else []


def columns(server: Server) -> list[str]:
    if server.database_url is None:
        return [r[1] for r in sql(server, "PRAGMA table_info(audit_logs)")]
    found = sql(
        server,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_logs' "
        "ORDER BY ordinal_position",
    )
    return [r[0] for r in found]


def snapshot(server: Server, row_id: int) -> dict[str, Any]:
    names = columns(server)
    (values,) = sql(server, f"SELECT {', '.join(names)} FROM audit_logs WHERE id = ?", (row_id,))
    return dict(zip(names, values, strict=True))


def restore(server: Server, row: dict[str, Any]) -> None:
    names = list(row)
    marks = ", ".join("?" for _ in names)
    sql(
        server, f"INSERT INTO audit_logs ({', '.join(names)}) VALUES ({marks})", tuple(row.values())
    )


def verdict(api: httpx.Client, **params: Any) -> dict[str, Any]:
    return dict(data(api.get(VERIFY, params=params)))


def named(found: dict[str, Any], kind: str) -> set[int]:
    return {i for e in found["errors"] if e["type"] == kind for i in e["ids"]}


def some_rows(api: httpx.Client, count: int) -> list[dict[str, Any]]:
    """`count` fresh rows of this chain (template creations), oldest first."""
    for _ in range(count):
        body = {"name": unique("tamper"), "validity_days": 10}
        data(api.post(f"{API}/templates", json=body), 201)
    rows = data(
        api.get(f"{API}/audit/logs", params={"action": "template.create", "per_page": count})
    )
    return list(reversed(rows))


@pytest.fixture(autouse=True)
def chain_is_valid_around_each_test(api: httpx.Client) -> Iterator[None]:
    assert verdict(api)["valid"] is True, verdict(api)
    yield
    assert verdict(api)["valid"] is True, verdict(api)


def test_the_key_is_a_private_file_outside_the_database(server: Server) -> None:
    key_file = server.data_dir / "audit.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    assert len(key) == 32
    if server.database_url is None:
        database = (server.data_dir / "tessera.db").read_bytes()
        assert key.hex().encode() not in database and key not in database


def test_an_edited_row_is_named(api: httpx.Client, server: Server) -> None:
    target = some_rows(api, 3)[1]["id"]
    original = snapshot(server, target)
    sql(server, "UPDATE audit_logs SET username = ? WHERE id = ?", ("mallory", target))
    found = verdict(api)
    assert found["valid"] is False and named(found, "modified") == {target}, found
    assert len(found["errors"]) == 1
    sql(server, "UPDATE audit_logs SET username = ? WHERE id = ?", (original["username"], target))


def test_edited_details_success_and_mac_are_named(api: httpx.Client, server: Server) -> None:
    rows = some_rows(api, 4)
    a, b, c = rows[0]["id"], rows[1]["id"], rows[2]["id"]
    saved = {i: snapshot(server, i) for i in (a, b, c)}
    sql(server, "UPDATE audit_logs SET details = ? WHERE id = ?", ({"name": "innocent"}, a))
    sql(server, "UPDATE audit_logs SET success = ? WHERE id = ?", (False, b))
    sql(server, "UPDATE audit_logs SET chain_mac = ? WHERE id = ?", ("0" * 64, c))
    found = verdict(api)
    assert named(found, "modified") == {a, b, c}, found
    assert all(e["type"] == "modified" for e in found["errors"]), found
    for row_id, row in saved.items():
        sql(server, "DELETE FROM audit_logs WHERE id = ?", (row_id,))
        restore(server, row)


def test_a_deleted_row_is_named(api: httpx.Client, server: Server) -> None:
    target = some_rows(api, 3)[1]["id"]
    saved = snapshot(server, target)
    sql(server, "DELETE FROM audit_logs WHERE id = ?", (target,))
    found = verdict(api)
    assert found["valid"] is False and named(found, "deleted") == {target}, found
    (deleted,) = found["errors"]
    assert deleted["seq_from"] == deleted["seq_to"] == saved["chain_seq"]
    restore(server, saved)


def test_deleting_the_newest_row_is_seen(api: httpx.Client, server: Server) -> None:
    some_rows(api, 1)
    (newest,) = sql(server, "SELECT max(id) FROM audit_logs")
    saved = snapshot(server, newest[0])
    sql(server, "DELETE FROM audit_logs WHERE id = ?", (newest[0],))
    found = verdict(api)
    assert named(found, "deleted") == {newest[0]}, found
    restore(server, saved)


def test_inserted_rows_are_named(api: httpx.Client, server: Server) -> None:
    rows = some_rows(api, 2)
    model = snapshot(server, rows[1]["id"])
    now = datetime.now(UTC).replace(tzinfo=None)
    # One with no chain fields at all, as a plain INSERT would leave it.
    plain = (model["org_id"], now, "mallory", "certificate.revoke", True, {"forged": True})
    sql(
        server,
        "INSERT INTO audit_logs (org_id, timestamp, username, action, success, details) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        plain,
    )
    # One that copies a genuine row's chain fields, next to it (its MAC cannot be right).
    copied = {k: v for k, v in model.items() if k != "id"}
    copied["username"] = "mallory"
    copied["chain_seq"] = model["chain_seq"] + 10_000  # beyond the head
    restore(server, copied)
    forged = [r[0] for r in sql(server, "SELECT id FROM audit_logs WHERE username = 'mallory'")]
    found = verdict(api)
    assert found["valid"] is False and named(found, "inserted") >= set(forged), found
    assert named(found, "modified") == set()
    sql(server, "DELETE FROM audit_logs WHERE username = 'mallory'")


def test_an_inserted_row_at_a_taken_position_is_named(api: httpx.Client, server: Server) -> None:
    rows = some_rows(api, 2)
    model = snapshot(server, rows[0]["id"])
    twin = {k: v for k, v in model.items() if k != "id"}
    twin["username"] = "mallory"
    sql(server, "DROP INDEX ux_audit_logs_org_chain_seq")  # an attacker can do this too
    try:
        restore(server, twin)
        (forged,) = sql(server, "SELECT id FROM audit_logs WHERE username = 'mallory'")
        found = verdict(api)
        assert named(found, "inserted") == {forged[0]}, found
        assert named(found, "modified") == set() and named(found, "deleted") == set()
    finally:
        sql(server, "DELETE FROM audit_logs WHERE username = 'mallory'")
        sql(
            server,
            "CREATE UNIQUE INDEX ux_audit_logs_org_chain_seq ON audit_logs (org_id, chain_seq)",
        )


def test_a_forged_checkpoint_is_named(api: httpx.Client, server: Server) -> None:
    (org,) = sql(server, "SELECT chain_id FROM audit_chain_heads ORDER BY chain_id LIMIT 1")
    sql(
        server,
        "INSERT INTO audit_checkpoints (chain_id, start_seq, prev_id, prev_mac, deleted, "
        "created_at, mac) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (org[0], 3, 2, "a" * 64, 2, datetime.now(UTC).replace(tzinfo=None), "b" * 64),
    )
    found = verdict(api)
    assert [e["type"] for e in found["errors"]] == ["checkpoint"], found
    sql(server, "DELETE FROM audit_checkpoints WHERE mac = ?", ("b" * 64,))


def test_verify_an_id_range(api: httpx.Client, server: Server) -> None:
    rows = some_rows(api, 5)
    first, last = rows[1]["id"], rows[3]["id"]
    inside = verdict(api, start_id=first, end_id=last)
    assert inside["valid"] is True and inside["checked"] >= 3
    target = rows[2]["id"]
    sql(server, "UPDATE audit_logs SET action = 'x.y' WHERE id = ?", (target,))
    assert named(verdict(api, start_id=first, end_id=last), "modified") == {target}
    assert verdict(api, start_id=rows[4]["id"])["valid"] is True  # outside the range
    sql(server, "UPDATE audit_logs SET action = 'template.create' WHERE id = ?", (target,))
    response = api.get(VERIFY, params={"start_id": 9, "end_id": 3})
    assert response.status_code == 400


# --- retention ------------------------------------------------------------------------------


@contextmanager
def chain_writer(server: Server) -> Iterator[tuple[Session, bytes]]:
    """A transaction holding the chain lock, with the key: what the server itself has."""
    key = bytes.fromhex((server.data_dir / "audit.key").read_text().strip())
    url = server.database_url or f"sqlite:///{server.data_dir / 'tessera.db'}"
    engine = make_engine(url)
    try:
        with Session(engine) as session, session.begin():
            yield session, key
    finally:
        engine.dispose()


def backdate_oldest(server: Server, count: int, days: int) -> int:
    """Make the chain's first `count` rows `days` old, re-computing the chain with the key:
    the legitimate passage of time, which the tests cannot wait for."""
    with chain_writer(server) as (session, key):
        session.execute(update(AuditChainHead).values(updated_at=datetime.now(UTC)))  # lock
        head = session.scalars(
            select(AuditChainHead).order_by(AuditChainHead.last_seq.desc())
        ).first()
        assert head is not None
        rows = session.scalars(
            select(AuditLog)
            .where(AuditLog.org_id == head.chain_id, AuditLog.chain_seq.is_not(None))
            .order_by(AuditLog.chain_seq)
        ).all()
        old = datetime.now(UTC) - timedelta(days=days)
        prev_mac = rows[0].chain_prev_mac
        for n, row in enumerate(rows):
            if n < count:
                row.timestamp = old + timedelta(seconds=n)
            row.chain_prev_mac = prev_mac
            row.chain_mac = audit_chain.row_mac(key, covered_values(row))
            prev_mac = row.chain_mac
        head.last_mac = prev_mac or ""
        return int(rows[count - 1].id)


def test_cleanup_deletes_old_rows_and_the_rest_still_verifies(
    api: httpx.Client, server: Server
) -> None:
    some_rows(api, 4)
    before = data(api.get(f"{API}/audit/logs"), 200)
    total = api.get(f"{API}/audit/logs").json()["meta"]["total"]
    assert before
    last_old = backdate_oldest(server, 3, days=200)
    assert verdict(api)["valid"] is True
    done = data(api.post(f"{API}/audit/cleanup", json={"retention_days": 90}))
    assert done["deleted"] == 3 and done["checkpoint"]["prev_id"] == last_old
    after = api.get(f"{API}/audit/logs").json()["meta"]["total"]
    assert after == total - 3 + 1  # the cleanup is itself audited
    found = verdict(api)
    assert found["valid"] is True and found["chain"]["checkpoint_id"] == done["checkpoint"]["id"]
    cleaned = data(api.get(f"{API}/audit/logs", params={"action": "audit.cleanup"}))
    assert cleaned[0]["details_data"]["deleted"] == 3
    # Deleting the first remaining row is still seen, though the chain no longer starts at 1.
    (first,) = sql(
        server,
        "SELECT id FROM audit_logs WHERE chain_seq = ?",
        (done["checkpoint"]["start_seq"],),
    )
    saved = snapshot(server, first[0])
    sql(server, "DELETE FROM audit_logs WHERE id = ?", (first[0],))
    assert named(verdict(api), "deleted") == {first[0]}
    restore(server, saved)
    # A second cleanup has nothing left to delete.
    assert data(api.post(f"{API}/audit/cleanup", json={"retention_days": 90}))["deleted"] == 0


def test_cleanup_refuses_to_erase_tampered_rows(api: httpx.Client, server: Server) -> None:
    some_rows(api, 2)
    last_old = backdate_oldest(server, 2, days=300)
    saved = snapshot(server, last_old)
    sql(server, "UPDATE audit_logs SET username = 'mallory' WHERE id = ?", (last_old,))
    response = api.post(f"{API}/audit/cleanup", json={"retention_days": 90})
    assert response.status_code == 409 and "do not verify" in response.json()["message"]
    assert snapshot(server, last_old)["username"] == "mallory"  # evidence kept
    sql(server, "UPDATE audit_logs SET username = ? WHERE id = ?", (saved["username"], last_old))
    assert data(api.post(f"{API}/audit/cleanup", json={"retention_days": 90}))["deleted"] >= 1


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_writers_in_several_processes_keep_one_chain(server: Server) -> None:
    backend = "sqlite" if server.database_url is None else "postgresql"
    with database(backend) as url:
        running = start_server(server.data_dir.parent / f"multi-{backend}", url, workers=2)
        try:
            running.api_key = admin_api_key(running)

            def write(n: int) -> int:
                with running.client() as client:
                    body = {"name": f"concurrent-{n}", "validity_days": 10}
                    return client.post(f"{API}/templates", json=body).status_code

            with ThreadPoolExecutor(12) as pool:
                statuses = list(pool.map(write, range(60)))
            assert statuses == [201] * 60
            with running.client() as client:
                found = dict(data(client.get(VERIFY)))
                assert found["valid"] is True, found
                seqs = sql(running, "SELECT chain_seq FROM audit_logs ORDER BY chain_seq")
                assert [s[0] for s in seqs] == list(range(1, len(seqs) + 1))
        finally:
            stop_server(running)


# --- rows from before the chain ---------------------------------------------------------------


def test_rows_from_before_the_chain_are_chained_at_the_upgrade(server: Server) -> None:
    """A database at revision 0005 with audit rows: the upgrade chains them, in id order."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from tessera.storage.db import MIGRATIONS

    backend = "sqlite" if server.database_url is None else "postgresql"
    data_dir = server.data_dir.parent / f"legacy-{backend}"
    data_dir.mkdir()
    with database(backend) as url:
        engine = make_engine(url or f"sqlite:///{data_dir / 'tessera.db'}")
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0005")
            connection.execute(
                text("INSERT INTO organizations (name, created_at) VALUES ('default', :t)"),
                {"t": datetime(2025, 1, 1)},
            )
            for n in range(3):
                connection.execute(
                    text(
                        "INSERT INTO audit_logs (org_id, timestamp, username, action, details, "
                        "success) VALUES (1, :t, 'old-admin', :a, :d, :s)"
                    ),
                    {"t": datetime(2025, 1, 1, 0, 0, n), "a": f"legacy.{n}", "d": "{}", "s": True},
                )
        engine.dispose()
        running = start_server(data_dir, url)
        try:
            running.api_key = admin_api_key(running)
            legacy = sql(
                running,
                "SELECT id, chain_seq FROM audit_logs WHERE action LIKE ?",
                ("legacy.%",),
            )
            assert sorted(s for _, s in legacy) == [1, 2, 3]
            with running.client() as client:
                found = dict(data(client.get(VERIFY)))
                assert found["valid"] is True and found["checked"] >= 4, found
                target = sorted(legacy)[1][0]
                sql(running, "UPDATE audit_logs SET username = 'mallory' WHERE id = ?", (target,))
                assert named(dict(data(client.get(VERIFY))), "modified") == {target}
        finally:
            stop_server(running)
