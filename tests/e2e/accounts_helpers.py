"""Shared steps of the accounts tests: a real SMTP server (aiosmtpd) that the server mails,
cookie logins, users, TOTP codes computed with pyotp, and direct database reads."""

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import pyotp
from aiosmtpd.controller import Controller

from tests.e2e.helpers import data, unique
from tests.support import Server, free_port

API = "/api/v2"
LOGIN = f"{API}/auth/login/password"
LOGIN_2FA = f"{API}/auth/login/2fa"
PASSWORD = "user-password-1234"
TOKEN_IN_LINK = re.compile(r"/reset-password\?token=([A-Za-z0-9_\-]+)")


class _Collect:
    def __init__(self, inbox: "Mailbox") -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.inbox.add(list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        return "250 OK"


class Mailbox:
    """Messages received by a real SMTP server on 127.0.0.1 (plain SMTP, no TLS)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._messages: list[tuple[list[str], Message]] = []
        self._lock = threading.Lock()
        self._controller = Controller(_Collect(self), hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def add(self, recipients: list[str], message: Message) -> None:
        with self._lock:
            self._messages.append((recipients, message))

    def wait_for(self, to: str, count: int = 1, timeout: float = 30) -> Message:
        """The count-th message to this address (mail is sent after the response, in the
        background, so it may arrive a moment later)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            received = self.all_to(to)
            if len(received) >= count:
                return received[count - 1]
            time.sleep(0.05)
        raise AssertionError(f"no mail number {count} to {to} within {timeout}s")

    def all_to(self, to: str) -> list[Message]:
        with self._lock:
            return [m for r, m in self._messages if to in r]

    def settings(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "smtp_tls": False,
            "from_address": "tessera@example.test",
        }


@contextmanager
def running_mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.start()
    try:
        yield box
    finally:
        box.stop()


def body_of(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def token_from(message: Message) -> str:
    found = TOKEN_IN_LINK.search(body_of(message))
    assert found, body_of(message)
    return found.group(1)


def email_address(prefix: str = "user") -> str:
    return f"{unique(prefix)}@example.test"


def create_user(api: httpx.Client, role: str = "viewer", **extra: object) -> dict[str, Any]:
    body = {"username": unique(role), "password": PASSWORD, "role": role, **extra}
    return dict(data(api.post(f"{API}/users", json=body), 201))


@contextmanager
def logged_in(
    server: Server, username: str, password: str = PASSWORD
) -> Iterator[tuple[httpx.Client, str]]:
    """A cookie-only client after a password login (no 2FA), and its CSRF token."""
    with server.client(api_key="") as client:
        body = data(client.post(LOGIN, json={"username": username, "password": password}))
        assert "csrf_token" in body, body
        yield client, body["csrf_token"]


def can_login(server: Server, username: str, password: str = PASSWORD) -> bool:
    with server.client(api_key="") as client:
        response = client.post(LOGIN, json={"username": username, "password": password})
        return response.status_code == 200


def key_for(server: Server, username: str, password: str = PASSWORD, **body: object) -> str:
    with logged_in(server, username, password) as (client, csrf):
        created = client.post(
            f"{API}/account/apikeys",
            json={"name": "own key", **body},
            headers={"X-CSRF-Token": csrf},
        )
        return str(data(created, 201)["key"])


# --- TOTP -----------------------------------------------------------------------------------------


def code(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).generate_otp(step)


def current_step() -> int:
    """The current 30-second step, after waiting out the last two seconds of a step so that a
    code computed here is still in the server's window when it arrives."""
    remaining = 30 - time.time() % 30
    if remaining < 2:
        time.sleep(remaining + 0.1)
    return int(time.time()) // 30


# --- the server's database ------------------------------------------------------------------------


def db(server: Server, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement against the server's database (`?` placeholders; committed)."""
    if server.database_url is None:
        with closing(sqlite3.connect(server.data_dir / "tessera.db", timeout=30)) as conn:
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
            return rows
    import psycopg

    with psycopg.connect(server.database_url) as conn:
        cursor = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def audit_rows(server: Server, action: str, user_id: int | None = None) -> list[dict[str, Any]]:
    sql = "SELECT id, user_id, username, success, details FROM audit_logs WHERE action = ?"
    params: tuple[object, ...] = (action,)
    if user_id is not None:
        sql += " AND user_id = ?"
        params = (action, user_id)
    rows = db(server, sql + " ORDER BY id", params)
    result = []
    for row_id, uid, name, success, details in rows:
        if isinstance(details, str):
            details = json.loads(details)
        result.append(
            {
                "id": row_id,
                "user_id": uid,
                "username": name,
                "success": bool(success),
                "details": details or {},
            }
        )
    return result


def past(server: Server, seconds: int = 1) -> object:
    """A timestamp in the past as the server's database stores it (naive UTC)."""
    from datetime import UTC, datetime, timedelta

    naive = (datetime.now(UTC) - timedelta(seconds=seconds)).replace(tzinfo=None)
    return naive if server.database_url else naive.strftime("%Y-%m-%d %H:%M:%S.%f")
