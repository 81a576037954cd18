"""Migration 0007's downgrade drops the users' 2FA columns and nothing else: on SQLite a
rebuilt `users` table would be dropped first, and with foreign keys on that deletes every API
key and web session of its users (ON DELETE CASCADE)."""

from pathlib import Path

from sqlalchemy import Engine

from tessera.storage.db import make_engine
from tests.support import alembic

ROWS = (
    "INSERT INTO organizations (name, created_at) VALUES ('o', '2026-01-01')",
    "INSERT INTO users (org_id, username, email, password_hash, role, active, created_at,"
    " totp_enabled) VALUES (1, 'u', 'u@example.com', 'h', 'admin', 1, '2026-01-01', 0)",
    "INSERT INTO api_keys (user_id, name, key_hash, prefix, permissions, enabled, created_at)"
    " VALUES (1, 'k', 'hash', 'p', '[]', 1, '2026-01-01')",
    "INSERT INTO web_sessions (token_hash, csrf_token, user_id, created_at, expires_at)"
    " VALUES ('t', 'c', 1, '2026-01-01', '2027-01-01')",
)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
            for table in ("users", "api_keys", "web_sessions")
        }


def test_the_downgrade_keeps_users_keys_and_sessions(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'accounts.db'}")
    try:
        alembic(engine, "upgrade", "0007")
        with engine.begin() as connection:
            for statement in ROWS:
                connection.exec_driver_sql(statement)
        alembic(engine, "downgrade", "0006")
        assert counts(engine) == {"users": 1, "api_keys": 1, "web_sessions": 1}
        with engine.connect() as connection:
            columns = {row[1] for row in connection.exec_driver_sql("PRAGMA table_info(users)")}
        assert not columns & {"encrypted_totp_secret", "totp_enabled", "totp_last_step"}
    finally:
        engine.dispose()
