"""Authentication, sessions, API keys, users and roles through the native API (/api/v2)."""

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import data, unique
from tests.e2e.helpers import error as assert_error
from tests.support import ADMIN_PASSWORD, Server

SEED_PERMISSIONS = {
    "*",
    "read:*",
    "read:certificates",
    "write:certificates",
    "delete:certificates",
    "read:cas",
    "write:cas",
    "delete:cas",
    "read:users",
    "write:users",
    "delete:users",
    "read:audit",
    "delete:audit",
    "admin:system",
}
# Grants for the inventory sections that the seed's table does not name.
INVENTORY_PERMISSIONS = {
    f"{action}:{resource}"
    for action in ("read", "write", "delete")
    for resource in ("csrs", "templates", "truststore")
} | {f"{action}:{protocol}" for action in ("read", "write") for protocol in ("acme", "scep")}
LOGIN = "/api/v2/auth/login/password"
USER_PASSWORD = "user-password-1234"


# --- helpers --------------------------------------------------------------------------------------


def db(server: Server, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement against the server's own database (there is no audit read API yet).
    `?` placeholders; committed; rows returned when the statement yields any."""
    if server.database_url is None:
        with closing(sqlite3.connect(server.data_dir / "tessera.db", timeout=30)) as conn:
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
            return rows
    import psycopg

    with psycopg.connect(server.database_url) as conn:
        cursor = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def audit_rows(server: Server, action: str, username: str) -> list[dict[str, Any]]:
    rows = db(
        server,
        "SELECT id, user_id, username, success, details, resource_type FROM audit_logs"
        " WHERE action = ? AND username = ? ORDER BY id",
        (action, username),
    )
    result = []
    for row_id, user_id, name, success, details, resource_type in rows:
        if isinstance(details, str):
            details = json.loads(details)
        result.append(
            {
                "id": row_id,
                "user_id": user_id,
                "username": name,
                "success": bool(success),
                "details": details or {},
                "resource_type": resource_type,
            }
        )
    return result


def set_cookie_attributes(response: httpx.Response) -> tuple[str, str, dict[str, str]]:
    """Name, value and attributes (lower-cased names) of the one raw Set-Cookie header."""
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    first, *rest = (part.strip() for part in headers[0].split(";"))
    name, _, value = first.partition("=")
    attributes = {}
    for part in rest:
        key, _, val = part.partition("=")
        attributes[key.lower()] = val
    return name, value, attributes


@contextmanager
def logged_in(server: Server, username: str, password: str) -> Iterator[tuple[httpx.Client, str]]:
    """A cookie-only client (no API key) after a password login, and its CSRF token."""
    with server.client(api_key="") as client:
        login = client.post(LOGIN, json={"username": username, "password": password})
        body = data(login)
        yield client, body["csrf_token"]


def create_user(api: httpx.Client, role: str, **extra: object) -> dict[str, Any]:
    body = {"username": unique(role), "password": USER_PASSWORD, "role": role, **extra}
    user = data(api.post("/api/v2/users", json=body), 201)
    assert user["role"] == role
    return dict(user)


def key_for(server: Server, username: str, **body: object) -> str:
    """Log in as the user and create an API key for them through their own session."""
    with logged_in(server, username, USER_PASSWORD) as (client, csrf):
        created = client.post(
            "/api/v2/account/apikeys",
            json={"name": "own key", **body},
            headers={"X-CSRF-Token": csrf},
        )
        return str(data(created, 201)["key"])


def ca_body(name: str) -> dict[str, object]:
    return {"common_name": name, "key_algorithm": "EC", "key_size": 256, "validity_days": 365}


def ca_total(api: httpx.Client) -> int:
    return int(api.get("/api/v2/cas").json()["meta"]["total"])


# --- login, session cookie, CSRF, verify, logout --------------------------------------------------


def test_login_sets_hardened_session_cookie(server: Server) -> None:
    with server.client(api_key="") as client:
        login = client.post(LOGIN, json={"username": "admin", "password": ADMIN_PASSWORD})
        body = login.json()
    assert login.status_code == 200, login.text
    assert body["message"] == "Login successful"
    name, token, attributes = set_cookie_attributes(login)
    assert name == "tessera_session" and len(token) >= 32
    assert "httponly" in attributes and "secure" in attributes
    assert attributes.get("samesite", "").lower() in ("strict", "lax")
    assert attributes.get("path") == "/" and int(attributes["max-age"]) > 0
    session = body["data"]
    assert session["user"]["username"] == "admin" and session["role"] == "admin"
    assert session["permissions"] == ["*"] and session["auth_method"] == "password"
    assert len(session["csrf_token"]) >= 32 and session["csrf_token"] != token
    # UTC to the second with a Z, as every date of the native API (docs/native-api.md)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", session["expires_at"]), session
    expires = datetime.fromisoformat(session["expires_at"].replace("Z", "+00:00"))
    lifetime = expires - datetime.now(UTC)
    assert abs(lifetime.total_seconds() - int(attributes["max-age"])) < 120
    assert "password_hash" not in session["user"]
    # Only a digest of the session token is stored.
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert db(server, "SELECT COUNT(*) FROM web_sessions WHERE token_hash = ?", (digest,)) == [(1,)]
    assert db(server, "SELECT COUNT(*) FROM web_sessions WHERE token_hash = ?", (token,)) == [(0,)]


def test_cookie_writes_need_the_csrf_token(server: Server, api: httpx.Client) -> None:
    before = ca_total(api)
    with logged_in(server, "admin", ADMIN_PASSWORD) as (client, csrf):
        assert isinstance(data(client.get("/api/v2/cas")), list)  # reads need no CSRF token
        missing = client.post("/api/v2/cas", json=ca_body(unique("No CSRF")))
        assert "CSRF" in assert_error(missing, 403)
        wrong = client.post(
            "/api/v2/cas", json=ca_body(unique("Wrong CSRF")), headers={"X-CSRF-Token": "x" * 43}
        )
        assert "CSRF" in assert_error(wrong, 403)
        # A non-ASCII token is just as wrong (and must not crash the comparison).
        latin = client.post(
            "/api/v2/cas",
            json=ca_body(unique("Latin CSRF")),
            headers={"X-CSRF-Token": b"\xe9t\xe9"},
        )
        assert "CSRF" in assert_error(latin, 403)
        # Another session's token does not fit this session.
        with logged_in(server, "admin", ADMIN_PASSWORD) as (_, other_csrf):
            assert other_csrf != csrf
            crossed = client.post(
                "/api/v2/cas",
                json=ca_body(unique("Crossed CSRF")),
                headers={"X-CSRF-Token": other_csrf},
            )
            assert_error(crossed, 403)
        assert ca_total(api) == before
        right = client.post(
            "/api/v2/cas", json=ca_body(unique("CSRF OK")), headers={"X-CSRF-Token": csrf}
        )
        assert data(right, 201)["ca_type"] == "root"
    assert ca_total(api) == before + 1


def test_verify_with_cookie_and_with_api_key(server: Server, api: httpx.Client) -> None:
    with logged_in(server, "admin", ADMIN_PASSWORD) as (client, _):
        by_cookie = data(client.get("/api/v2/auth/verify"))
    assert by_cookie["authenticated"] is True
    assert by_cookie["user"]["username"] == "admin" and by_cookie["role"] == "admin"
    assert by_cookie["permissions"] == ["*"]
    by_key = data(api.get("/api/v2/auth/verify"))
    assert by_key["authenticated"] is True and by_key["user"]["username"] == "admin"
    assert by_key["user"]["id"] == by_cookie["user"]["id"]
    with server.client(api_key="") as anonymous:
        assert_error(anonymous.get("/api/v2/auth/verify"), 401)


def test_logout_invalidates_the_session_on_the_server(server: Server) -> None:
    with logged_in(server, "admin", ADMIN_PASSWORD) as (client, csrf):
        token = client.cookies["tessera_session"]
        assert_error(client.post("/api/v2/auth/logout"), 403)  # no CSRF token: still logged in
        assert data(client.get("/api/v2/auth/verify"))["authenticated"] is True
        logout = client.post("/api/v2/auth/logout", headers={"X-CSRF-Token": csrf})
        assert logout.status_code == 200, logout.text
        assert logout.json()["message"] == "Logged out"
        name, value, attributes = set_cookie_attributes(logout)
        assert name == "tessera_session" and value in ("", '""')
        assert attributes.get("max-age") == "0"
    # Replaying the old cookie by hand: the server itself must have forgotten it.
    with server.client(api_key="", cookies={"tessera_session": token}) as replay:
        assert "log in" in assert_error(replay.get("/api/v2/auth/verify"), 401)
        assert_error(replay.get("/api/v2/cas"), 401)
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert db(server, "SELECT COUNT(*) FROM web_sessions WHERE token_hash = ?", (digest,)) == [(0,)]


def test_expired_session_is_refused(server: Server) -> None:
    with logged_in(server, "admin", ADMIN_PASSWORD) as (client, _):
        token = client.cookies["tessera_session"]
        assert data(client.get("/api/v2/auth/verify"))["authenticated"] is True
        # Sessions last hours; let them pass in the database.
        naive = (datetime.now(UTC) - timedelta(seconds=1)).replace(tzinfo=None)
        stamp = naive if server.database_url else naive.strftime("%Y-%m-%d %H:%M:%S.%f")
        digest = hashlib.sha256(token.encode()).hexdigest()
        db(server, "UPDATE web_sessions SET expires_at = ? WHERE token_hash = ?", (stamp, digest))
        assert "log in" in assert_error(client.get("/api/v2/auth/verify"), 401)
        assert_error(client.get("/api/v2/cas"), 401)


def test_auth_methods(server: Server) -> None:
    expected = {
        "password": True,
        "webauthn": False,
        "webauthn_credentials": 0,
        "mtls": False,
        "mtls_status": "not_present",
        "totp_enabled": False,
    }
    with server.client(api_key="") as client:
        known = data(client.post("/api/v2/auth/methods", json={"username": "admin"}))
        unknown = data(client.post("/api/v2/auth/methods", json={"username": unique("ghost")}))
        anyone = data(client.post("/api/v2/auth/methods", json={}))
        # A login page asks before it knows the username: no body at all is the same question.
        bare = data(client.post("/api/v2/auth/methods"))
    assert known == expected
    assert unknown == known == anyone == bare  # the answer does not reveal which accounts exist


def test_wrong_password_is_401_and_every_login_is_audited(server: Server) -> None:
    failed_before = [r for r in audit_rows(server, "auth.login", "admin") if not r["success"]]
    good_before = [r for r in audit_rows(server, "auth.login", "admin") if r["success"]]
    ghost = unique("ghost")
    with server.client(api_key="") as client:
        wrong = client.post(LOGIN, json={"username": "admin", "password": "not-the-password"})
        message = assert_error(wrong, 401)
        assert "set-cookie" not in wrong.headers
        nobody = client.post(LOGIN, json={"username": ghost, "password": "whatever-password"})
        assert assert_error(nobody, 401) == message  # same answer for unknown users
        assert "tessera_session" not in client.cookies
        assert_error(client.get("/api/v2/auth/verify"), 401)
    rows = audit_rows(server, "auth.login", "admin")
    failed = [r for r in rows if not r["success"]]
    assert len(failed) == len(failed_before) + 1
    assert failed[-1]["details"]["method"] == "password"
    assert failed[-1]["details"]["reason"] == "invalid credentials"
    assert failed[-1]["resource_type"] == "user"
    ghost_rows = audit_rows(server, "auth.login", ghost)
    assert len(ghost_rows) == 1 and ghost_rows[0]["success"] is False
    assert ghost_rows[0]["user_id"] is None
    with logged_in(server, "admin", ADMIN_PASSWORD) as (_, csrf):
        assert csrf
    good = [r for r in audit_rows(server, "auth.login", "admin") if r["success"]]
    assert len(good) == len(good_before) + 1
    assert good[-1]["user_id"] is not None and "reason" not in good[-1]["details"]


def test_login_input_is_validated(server: Server) -> None:
    with server.client(api_key="") as client:
        assert_error(client.post(LOGIN, json={"username": "admin"}), 422)
        assert_error(client.post(LOGIN, json={"username": "admin", "password": ""}), 422)
        assert_error(client.post(LOGIN, json={"username": "admin", "password": 12345678}), 422)
        assert_error(client.post(LOGIN, json={"username": "ad\u0000min", "password": "x"}), 422)
        garbled = client.post(
            LOGIN, content=b'{"username": "admin", ', headers={"content-type": "application/json"}
        )
        assert_error(garbled, 400)


# --- API keys -------------------------------------------------------------------------------------


def test_api_key_lifecycle(server: Server, api: httpx.Client) -> None:
    created = api.post(
        "/api/v2/account/apikeys",
        json={"name": "CI/CD Integration", "expires_days": 365},
    )
    key = data(created, 201)
    assert "only once" in created.json()["message"]
    secret, key_id = key["key"], key["id"]
    assert secret.startswith("tsk_") and key["prefix"] == secret[:12]
    assert key["name"] == "CI/CD Integration" and key["enabled"] is True
    assert key["permissions"] == ["*"]
    expires = datetime.fromisoformat(key["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=365))) < timedelta(hours=1)
    # Only its digest is stored: no column of its row holds the key itself.
    (row,) = db(server, "SELECT * FROM api_keys WHERE id = ?", (key_id,))
    assert hashlib.sha256(secret.encode()).hexdigest() in row
    assert not any(secret in str(value) for value in row)
    # Shown once: neither the listing nor the details carry it again.
    listed = data(api.get("/api/v2/account/apikeys"))
    mine = next(k for k in listed if k["id"] == key_id)
    assert "key" not in mine and secret not in json.dumps(listed)
    details = data(api.get(f"/api/v2/account/apikeys/{key_id}"))
    assert details == mine
    with server.client(api_key=secret) as holder:
        assert data(holder.get("/api/v2/auth/verify"))["user"]["username"] == "admin"
        # Disabled: refused; enabled again: accepted.
        disabled = api.patch(
            f"/api/v2/account/apikeys/{key_id}", json={"name": "Renamed", "enabled": False}
        )
        assert data(disabled)["enabled"] is False and data(disabled)["name"] == "Renamed"
        assert_error(holder.get("/api/v2/cas"), 401)
        data(api.patch(f"/api/v2/account/apikeys/{key_id}", json={"enabled": True}))
        assert data(holder.get("/api/v2/cas")) is not None
        # Regenerated: the old secret is dead, the new one works.
        regenerated = data(api.post(f"/api/v2/account/apikeys/{key_id}/regenerate"))
        assert regenerated["id"] == key_id and regenerated["key"] != secret
        assert regenerated["prefix"] == regenerated["key"][:12]
        assert_error(holder.get("/api/v2/cas"), 401)
    with server.client(api_key=regenerated["key"]) as holder:
        assert data(holder.get("/api/v2/cas")) is not None
        deleted = api.delete(f"/api/v2/account/apikeys/{key_id}")
        assert deleted.status_code == 204 and deleted.content == b""
        assert_error(holder.get("/api/v2/cas"), 401)
    assert_error(api.get(f"/api/v2/account/apikeys/{key_id}"), 404)
    assert_error(api.delete(f"/api/v2/account/apikeys/{key_id}"), 404)
    assert key_id not in [k["id"] for k in data(api.get("/api/v2/account/apikeys"))]


def test_api_key_input_is_validated(api: httpx.Client) -> None:
    before = len(data(api.get("/api/v2/account/apikeys")))
    assert_error(api.post("/api/v2/account/apikeys", json={"name": "   "}), 400)
    assert_error(api.post("/api/v2/account/apikeys", json={"name": "k", "expires_days": 0}), 400)
    too_long = {"name": "k", "expires_days": 5000}
    assert_error(api.post("/api/v2/account/apikeys", json=too_long), 400)
    assert_error(api.post("/api/v2/account/apikeys", json={"name": "k", "permissions": []}), 400)
    unknown = {"name": "k", "permissions": ["read:certificates", "read:everything"]}
    assert "read:everything" in assert_error(api.post("/api/v2/account/apikeys", json=unknown), 400)
    assert_error(api.post("/api/v2/account/apikeys", json={"name": "k", "expires_days": "x"}), 422)
    assert_error(api.patch("/api/v2/account/apikeys/999999", json={"enabled": False}), 404)
    assert_error(api.post("/api/v2/account/apikeys/999999/regenerate"), 404)
    assert len(data(api.get("/api/v2/account/apikeys"))) == before


def test_bearer_header_works_like_x_api_key(server: Server, api: httpx.Client) -> None:
    with server.client(api_key="") as client:
        bearer = client.get(
            "/api/v2/auth/verify", headers={"Authorization": f"Bearer {server.api_key}"}
        )
        assert data(bearer)["user"]["username"] == "admin"
        lower = {"Authorization": "bearer " + server.api_key}
        assert isinstance(data(client.get("/api/v2/cas", headers=lower)), list)
        assert_error(
            client.get("/api/v2/cas", headers={"Authorization": "Bearer tsk_unknown"}), 401
        )
        assert_error(client.get("/api/v2/cas", headers={"Authorization": "Bearer"}), 401)
        basic = client.get("/api/v2/cas", headers={"Authorization": f"Basic {server.api_key}"})
        assert_error(basic, 401)


def test_unknown_and_expired_keys_are_rejected(server: Server, api: httpx.Client) -> None:
    with server.client(api_key="tsk_" + "A" * 43) as unknown:
        assert "API key" in assert_error(unknown.get("/api/v2/cas"), 401)
        assert_error(unknown.get("/api/v2/auth/verify"), 401)
    key = data(api.post("/api/v2/account/apikeys", json={"name": "short", "expires_days": 1}), 201)
    with server.client(api_key=key["key"]) as holder:
        assert data(holder.get("/api/v2/cas")) is not None
        # Keys cannot be created already expired, so let a day pass in the database.
        past = datetime.now(UTC) - timedelta(minutes=5)
        naive = past.replace(tzinfo=None)  # the column holds naive UTC
        stamp = naive if server.database_url else naive.strftime("%Y-%m-%d %H:%M:%S.%f")
        db(server, "UPDATE api_keys SET expires_at = ? WHERE id = ?", (stamp, key["id"]))
        assert "expired" in assert_error(holder.get("/api/v2/cas"), 401)
        assert_error(holder.get("/api/v2/auth/verify"), 401)


def test_key_limited_to_read_certificates(server: Server, api: httpx.Client) -> None:
    root = data(api.post("/api/v2/cas", json=ca_body(unique("Scoped Key Root"))), 201)
    limited = api.post(
        "/api/v2/account/apikeys",
        json={"name": "read-only", "permissions": ["read:certificates"]},
    )
    key = data(limited, 201)
    assert key["permissions"] == ["read:certificates"]
    stats = data(api.get("/api/v2/certificates/stats"))
    with server.client(api_key=key["key"]) as reader:
        assert data(reader.get("/api/v2/auth/verify"))["permissions"] == ["read:certificates"]
        assert isinstance(data(reader.get("/api/v2/certificates")), list)
        issue = {"common_name": "scoped.example.com", "ca_id": root["id"], "key_algorithm": "EC"}
        assert "write:certificates" in assert_error(
            reader.post("/api/v2/certificates", json=issue), 403
        )
        assert "read:cas" in assert_error(reader.get("/api/v2/cas"), 403)
        assert_error(reader.get(f"/api/v2/cas/{root['id']}"), 403)
        assert_error(reader.get("/api/v2/users"), 403)
    assert data(api.get("/api/v2/certificates/stats")) == stats


def test_narrow_key_cannot_mint_or_take_over_wider_keys(server: Server, api: httpx.Client) -> None:
    narrow = data(
        api.post(
            "/api/v2/account/apikeys",
            json={"name": "narrow", "permissions": ["read:certificates"]},
        ),
        201,
    )
    wide = data(api.post("/api/v2/account/apikeys", json={"name": "wide"}), 201)
    assert wide["permissions"] == ["*"]
    with server.client(api_key=narrow["key"]) as holder:
        # A new key inherits the caller's permissions, not the owner's role.
        child = data(holder.post("/api/v2/account/apikeys", json={"name": "child"}), 201)
        assert child["permissions"] == ["read:certificates"]
        with server.client(api_key=child["key"]) as grandchild:
            assert_error(grandchild.get("/api/v2/cas"), 403)
        star = {"name": "star", "permissions": ["*"]}
        assert_error(holder.post("/api/v2/account/apikeys", json=star), 403)
        cas = {"name": "cas", "permissions": ["read:cas"]}
        assert_error(holder.post("/api/v2/account/apikeys", json=cas), 403)
        # Nor may it regenerate (and so read), disable or delete a wider key.
        assert_error(holder.post(f"/api/v2/account/apikeys/{wide['id']}/regenerate"), 403)
        patch = {"enabled": False}
        assert_error(holder.patch(f"/api/v2/account/apikeys/{wide['id']}", json=patch), 403)
        assert_error(holder.delete(f"/api/v2/account/apikeys/{wide['id']}"), 403)
        # Its own kind it may manage.
        renewed = data(holder.post(f"/api/v2/account/apikeys/{child['id']}/regenerate"))
        assert renewed["permissions"] == ["read:certificates"]
    with server.client(api_key=wide["key"]) as owner:
        assert data(owner.get("/api/v2/cas")) is not None
        assert data(owner.get(f"/api/v2/account/apikeys/{wide['id']}"))["enabled"] is True


def test_an_expiring_key_cannot_mint_a_longer_lived_one(server: Server, api: httpx.Client) -> None:
    """A key made to expire (a CI job's, say) must not outlive its expiry by minting another:
    a child key expires no later than the key that made it, as it holds no more than it."""
    parent = data(api.post("/api/v2/account/apikeys", json={"name": "ci", "expires_days": 2}), 201)
    limit = datetime.fromisoformat(parent["expires_at"].replace("Z", "+00:00"))
    with server.client(api_key=parent["key"]) as holder:
        forever = holder.post("/api/v2/account/apikeys", json={"name": "forever"})
        inherited = data(forever, 201)
        assert inherited["expires_at"] is not None
        until = datetime.fromisoformat(inherited["expires_at"].replace("Z", "+00:00"))
        assert until <= limit
        longer = {"name": "longer", "expires_days": 30}
        assert "expir" in assert_error(holder.post("/api/v2/account/apikeys", json=longer), 403)
        shorter = data(
            holder.post("/api/v2/account/apikeys", json={"name": "s", "expires_days": 1}), 201
        )
        assert datetime.fromisoformat(shorter["expires_at"].replace("Z", "+00:00")) <= limit
    names = [k["name"] for k in data(api.get("/api/v2/account/apikeys"))]
    assert "longer" not in names


def test_an_expiring_key_cannot_take_over_a_lasting_one(server: Server, api: httpx.Client) -> None:
    """Nor by regenerating (it would read the new secret) or re-enabling a key of the same
    user that outlives it; one that expires first it may."""
    lasting = data(api.post("/api/v2/account/apikeys", json={"name": "lasting"}), 201)
    dormant = data(api.post("/api/v2/account/apikeys", json={"name": "dormant"}), 201)
    data(api.patch(f"/api/v2/account/apikeys/{dormant['id']}", json={"enabled": False}))
    short = {"name": "ci-short", "expires_days": 1}
    ci = data(api.post("/api/v2/account/apikeys", json={"name": "ci", "expires_days": 2}), 201)
    with server.client(api_key=ci["key"]) as holder:
        within = data(holder.post("/api/v2/account/apikeys", json=short), 201)
        taken = holder.post(f"/api/v2/account/apikeys/{lasting['id']}/regenerate")
        assert "outlives" in assert_error(taken, 403)
        revived = holder.patch(f"/api/v2/account/apikeys/{dormant['id']}", json={"enabled": True})
        assert "outlives" in assert_error(revived, 403)
        data(holder.post(f"/api/v2/account/apikeys/{within['id']}/regenerate"))
        renamed = {"name": "renamed"}  # what gives no credential stays allowed
        data(holder.patch(f"/api/v2/account/apikeys/{lasting['id']}", json=renamed))
    with server.client(api_key=lasting["key"]) as still:
        assert still.get("/api/v2/account/apikeys").status_code == 200  # the old secret works
    listed = {k["id"]: k for k in data(api.get("/api/v2/account/apikeys"))}
    assert listed[dormant["id"]]["enabled"] is False


def test_key_permissions_cannot_exceed_the_owner_role(server: Server, api: httpx.Client) -> None:
    viewer = create_user(api, "viewer")
    with logged_in(server, viewer["username"], USER_PASSWORD) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}

        def create(permissions: list[str]) -> httpx.Response:
            body = {"name": "v", "permissions": permissions}
            return client.post("/api/v2/account/apikeys", json=body, headers=headers)

        assert "write:cas" in assert_error(create(["write:cas"]), 403)
        assert_error(create(["read:*"]), 403)
        assert_error(create(["*"]), 403)
        assert_error(create(["read:certificates", "read:users"]), 403)
        assert_error(create(["read:cas", "not:a-permission"]), 400)
        assert data(client.get("/api/v2/account/apikeys")) == []
        granted = data(create(["read:cas"]), 201)
        assert granted["permissions"] == ["read:cas"]
        default = data(
            client.post("/api/v2/account/apikeys", json={"name": "all"}, headers=headers), 201
        )
        viewer_grants = ["read:cas", "read:certificates", "read:csrs", "read:templates"]
        assert default["permissions"] == [*viewer_grants, "read:truststore"]
        # Keys are per user: the admin's keys are invisible here, and theirs to the admin.
        listed = data(client.get("/api/v2/account/apikeys"))
        assert sorted(k["id"] for k in listed) == sorted([granted["id"], default["id"]])
    assert_error(api.get(f"/api/v2/account/apikeys/{granted['id']}"), 404)
    assert_error(api.delete(f"/api/v2/account/apikeys/{granted['id']}"), 404)


# --- users and roles ------------------------------------------------------------------------------


def test_user_crud(server: Server, api: httpx.Client) -> None:
    made = {}
    for role in ("admin", "operator", "auditor", "viewer"):
        user = create_user(api, role, email=f"{role}@example.com", full_name=f"A {role}")
        assert user["active"] is True and user["email"] == f"{role}@example.com"
        assert "password" not in json.dumps(user)
        made[role] = user
    listed = {u["id"]: u for u in data(api.get("/api/v2/users"))}
    for user in made.values():
        assert listed[user["id"]] == user
        assert data(api.get(f"/api/v2/users/{user['id']}")) == user
    count = len(listed)
    viewer = made["viewer"]
    update = {"email": "new@example.com", "full_name": "Renamed", "role": "auditor"}
    changed = data(api.put(f"/api/v2/users/{viewer['id']}", json=update))
    assert changed["email"] == "new@example.com" and changed["full_name"] == "Renamed"
    assert changed["role"] == "auditor" and changed["username"] == viewer["username"]
    assert data(api.get(f"/api/v2/users/{viewer['id']}")) == changed
    # Refusals, and nothing written by them.
    duplicate = {"username": viewer["username"], "password": USER_PASSWORD}
    assert viewer["username"] in assert_error(api.post("/api/v2/users", json=duplicate), 409)
    bad_role = {"username": unique("u"), "password": USER_PASSWORD, "role": "superuser"}
    assert "role" in assert_error(api.post("/api/v2/users", json=bad_role), 400)
    short = {"username": unique("u"), "password": "short", "role": "viewer"}
    assert "password" in assert_error(api.post("/api/v2/users", json=short), 400)
    assert_error(api.post("/api/v2/users", json={"username": "", "password": USER_PASSWORD}), 422)
    assert_error(api.put(f"/api/v2/users/{viewer['id']}", json={"role": "root"}), 400)
    assert_error(api.put(f"/api/v2/users/{viewer['id']}", json={"password": "short"}), 400)
    assert data(api.get(f"/api/v2/users/{viewer['id']}"))["role"] == "auditor"
    assert len(data(api.get("/api/v2/users"))) == count
    assert_error(api.get("/api/v2/users/999999"), 404)
    assert_error(api.put("/api/v2/users/999999", json={"full_name": "x"}), 404)
    # Delete; the admin cannot delete their own account.
    removed = api.delete(f"/api/v2/users/{viewer['id']}")
    assert removed.status_code == 204 and removed.content == b""
    assert_error(api.get(f"/api/v2/users/{viewer['id']}"), 404)
    assert_error(api.delete(f"/api/v2/users/{viewer['id']}"), 404)
    assert len(data(api.get("/api/v2/users"))) == count - 1
    me = data(api.get("/api/v2/auth/verify"))["user"]["id"]
    assert_error(api.delete(f"/api/v2/users/{me}"), 409)
    assert data(api.get(f"/api/v2/users/{me}"))["username"] == "admin"
    # The user-management audit trail.
    created = [r for r in audit_rows(server, "user.create", "admin") if r["success"]]
    assert made["operator"]["username"] in [r["details"].get("username") for r in created]


def test_viewer_is_read_only(server: Server, api: httpx.Client) -> None:
    viewer = create_user(api, "viewer")
    root = data(api.post("/api/v2/cas", json=ca_body(unique("Viewer Root"))), 201)
    cas, users = ca_total(api), len(data(api.get("/api/v2/users")))
    key = key_for(server, viewer["username"])
    with server.client(api_key=key) as client:
        assert data(client.get("/api/v2/auth/verify"))["role"] == "viewer"
        assert data(client.get(f"/api/v2/cas/{root['id']}"))["id"] == root["id"]
        assert isinstance(data(client.get("/api/v2/certificates")), list)
        assert_error(client.post("/api/v2/cas", json=ca_body(unique("Viewer CA"))), 403)
        new_user = {"username": unique("v"), "password": USER_PASSWORD}
        assert_error(client.post("/api/v2/users", json=new_user), 403)
        assert_error(client.get("/api/v2/users"), 403)
        assert_error(client.get("/api/v2/rbac/roles"), 403)
        issue = {"common_name": "viewer.example.com", "ca_id": root["id"], "key_algorithm": "EC"}
        assert_error(client.post("/api/v2/certificates", json=issue), 403)
        assert_error(client.delete(f"/api/v2/cas/{root['id']}"), 403)
    # With a cookie and a valid CSRF token the answer is the same: it is the role that refuses.
    with logged_in(server, viewer["username"], USER_PASSWORD) as (client, csrf):
        post = client.post(
            "/api/v2/cas", json=ca_body(unique("Viewer CA")), headers={"X-CSRF-Token": csrf}
        )
        assert "write:cas" in assert_error(post, 403)
    assert ca_total(api) == cas and len(data(api.get("/api/v2/users"))) == users


def test_operator_issues_but_does_not_manage_users(server: Server, api: httpx.Client) -> None:
    operator = create_user(api, "operator")
    users = len(data(api.get("/api/v2/users")))
    key = key_for(server, operator["username"])
    with server.client(api_key=key) as client:
        root = data(client.post("/api/v2/cas", json=ca_body(unique("Operator Root"))), 201)
        issue = {"common_name": "op.example.com", "ca_id": root["id"], "key_algorithm": "EC"}
        cert = data(client.post("/api/v2/certificates", json=issue), 201)
        assert cert["created_by"] == operator["username"] and cert["status"] == "active"
        revoked = client.post(f"/api/v2/certificates/{cert['id']}/revoke", json={})
        assert data(revoked)["status"] == "revoked"
        assert len(data(client.get("/api/v2/users"))) == users  # read:* covers users
        new_user = {"username": unique("o"), "password": USER_PASSWORD}
        assert "write:users" in assert_error(client.post("/api/v2/users", json=new_user), 403)
        assert_error(client.delete(f"/api/v2/users/{operator['id']}"), 403)
        assert_error(client.delete(f"/api/v2/cas/{root['id']}"), 403)  # no delete:cas
    assert len(data(api.get("/api/v2/users"))) == users
    assert data(api.get(f"/api/v2/cas/{root['id']}"))["id"] == root["id"]


def test_auditor_reads_everything_and_changes_nothing(server: Server, api: httpx.Client) -> None:
    auditor = create_user(api, "auditor")
    key = key_for(server, auditor["username"])
    with server.client(api_key=key) as client:
        assert auditor["id"] in [u["id"] for u in data(client.get("/api/v2/users"))]
        assert data(client.get("/api/v2/rbac/roles"))["roles"]
        assert isinstance(data(client.get("/api/v2/cas")), list)
        assert_error(client.post("/api/v2/cas", json=ca_body(unique("Auditor CA"))), 403)
        assert_error(client.put(f"/api/v2/users/{auditor['id']}", json={"role": "admin"}), 403)
    assert data(api.get(f"/api/v2/users/{auditor['id']}"))["role"] == "auditor"


def test_role_change_and_deactivation_apply_to_existing_keys(
    server: Server, api: httpx.Client
) -> None:
    user = create_user(api, "operator")
    root = data(api.post("/api/v2/cas", json=ca_body(unique("Demotion Root"))), 201)
    key = key_for(server, user["username"])
    issue = {"common_name": "demoted.example.com", "ca_id": root["id"], "key_algorithm": "EC"}
    with server.client(api_key=key) as client:
        data(client.post("/api/v2/certificates", json=issue), 201)
        data(api.put(f"/api/v2/users/{user['id']}", json={"role": "viewer"}))
        # The key's "read:*" shrinks to what a viewer reads; its writes are gone.
        viewer_grants = ["read:cas", "read:certificates", "read:csrs", "read:templates"]
        assert data(client.get("/api/v2/auth/verify"))["permissions"] == [
            *viewer_grants,
            "read:truststore",
        ]
        assert_error(client.post("/api/v2/certificates", json=issue), 403)
        assert isinstance(data(client.get("/api/v2/certificates")), list)
        assert data(client.get(f"/api/v2/cas/{root['id']}"))["id"] == root["id"]
        assert_error(client.get("/api/v2/users"), 403)
        data(api.put(f"/api/v2/users/{user['id']}", json={"active": False}))
        assert_error(client.get("/api/v2/certificates"), 401)
    with server.client(api_key="") as client:
        login = {"username": user["username"], "password": USER_PASSWORD}
        assert_error(client.post(LOGIN, json=login), 401)


def test_password_change_ends_sessions_and_deletion_ends_keys(
    server: Server, api: httpx.Client
) -> None:
    user = create_user(api, "viewer")
    key = key_for(server, user["username"])
    with logged_in(server, user["username"], USER_PASSWORD) as (session, _):
        assert data(session.get("/api/v2/auth/verify"))["user"]["id"] == user["id"]
        new_password = "a-brand-new-password"
        data(api.put(f"/api/v2/users/{user['id']}", json={"password": new_password}))
        assert_error(session.get("/api/v2/auth/verify"), 401)
    with server.client(api_key="") as client:
        old = {"username": user["username"], "password": USER_PASSWORD}
        assert_error(client.post(LOGIN, json=old), 401)
        new = {"username": user["username"], "password": new_password}
        assert data(client.post(LOGIN, json=new))["user"]["id"] == user["id"]
    with server.client(api_key=key) as holder:
        assert data(holder.get("/api/v2/cas")) is not None
        assert api.delete(f"/api/v2/users/{user['id']}").status_code == 204
        assert_error(holder.get("/api/v2/cas"), 401)
    assert db(server, "SELECT COUNT(*) FROM api_keys WHERE user_id = ?", (user["id"],)) == [(0,)]


def test_rbac_endpoints(api: httpx.Client) -> None:
    roles = data(api.get("/api/v2/rbac/roles"))
    assert set(roles) == {"roles", "role_permissions"}
    assert roles["roles"] == ["admin", "operator", "auditor", "viewer"]
    assert set(roles["role_permissions"]) == set(roles["roles"])
    assert roles["role_permissions"]["admin"] == ["*"]
    assert {"read:*", "write:certificates", "write:cas"} <= set(
        roles["role_permissions"]["operator"]
    )
    for granted in roles["role_permissions"].values():
        assert set(granted) <= SEED_PERMISSIONS | INVENTORY_PERMISSIONS
    operator = data(api.get("/api/v2/rbac/roles/operator"))
    assert operator["role"] == "operator" and operator["description"]
    assert operator["permissions"] == roles["role_permissions"]["operator"]
    assert "write:users" not in operator["permissions"]
    assert "superuser" in assert_error(api.get("/api/v2/rbac/roles/superuser"), 404)
    listed = data(api.get("/api/v2/rbac/permissions"))
    assert {p["name"] for p in listed} == SEED_PERMISSIONS | INVENTORY_PERMISSIONS
    assert all(p["description"] for p in listed)
    assert {p["name"]: p["description"] for p in listed}["*"] == "Full access (admin only)"


PROTECTED = [
    ("GET", "/api/v2/cas"),
    ("POST", "/api/v2/cas"),
    ("GET", "/api/v2/cas/1"),
    ("GET", "/api/v2/certificates"),
    ("POST", "/api/v2/certificates"),
    ("GET", "/api/v2/certificates/stats"),
    ("GET", "/api/v2/users"),
    ("POST", "/api/v2/users"),
    ("DELETE", "/api/v2/users/1"),
    ("GET", "/api/v2/rbac/roles"),
    ("GET", "/api/v2/rbac/permissions"),
    ("GET", "/api/v2/account/apikeys"),
    ("POST", "/api/v2/account/apikeys"),
    ("GET", "/api/v2/auth/verify"),
    ("POST", "/api/v2/auth/logout"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_unauthenticated_requests_are_401(server: Server, method: str, path: str) -> None:
    body = {"name": "x", "common_name": "x", "ca_id": 1, "username": "x", "password": "x" * 12}
    with server.client(api_key="") as client:
        assert_error(client.request(method, path, json=body), 401)
    with server.client(api_key="", cookies={"tessera_session": "forged-token"}) as client:
        assert_error(client.request(method, path, json=body), 401)


def test_api_key_records_when_it_was_last_used(server: Server) -> None:
    with server.client() as client:
        created = client.post("/api/v2/account/apikeys", json={"name": "usage"}).json()["data"]
        assert created["last_used_at"] is None
        with server.client(api_key=created["key"]) as user:
            assert user.get("/api/v2/certificates").status_code == 200
        shown = client.get(f"/api/v2/account/apikeys/{created['id']}").json()["data"]
        assert shown["last_used_at"] is not None


def test_user_writers_cannot_grant_or_touch_roles_wider_than_their_own(
    server: Server, api: httpx.Client
) -> None:
    narrowed_body = {"name": "users only", "permissions": ["read:*", "write:users"]}
    users_only = data(api.post("/api/v2/account/apikeys", json=narrowed_body), 201)["key"]
    admin = next(u for u in data(api.get("/api/v2/users")) if u["username"] == "admin")
    with server.client(api_key=users_only) as narrowed:
        make_admin = {"username": unique("mallory"), "password": USER_PASSWORD, "role": "admin"}
        assert_error(narrowed.post("/api/v2/users", json=make_admin), 403)
        reset = {"password": "taken-over-password"}
        assert_error(narrowed.put(f"/api/v2/users/{admin['id']}", json=reset), 403)
        viewer = data(
            narrowed.post(
                "/api/v2/users",
                json={"username": unique("v"), "password": USER_PASSWORD, "role": "viewer"},
            ),
            201,
        )
        promote = {"role": "operator"}
        assert_error(narrowed.put(f"/api/v2/users/{viewer['id']}", json=promote), 403)
    assert not any(
        u["role"] == "admin" and u["username"].startswith("mallory")
        for u in data(api.get("/api/v2/users"))
    )


def test_the_server_tls_key_cannot_be_exported(api: httpx.Client) -> None:
    own = [
        c
        for c in data(api.get("/api/v2/certificates", params={"per_page": 100}))
        if c["source"] == "bootstrap"
    ]
    assert own, "the server's own certificate is in the inventory"
    assert own[0]["private_key_available"] is False
    assert_error(api.post(f"/api/v2/certificates/{own[0]['id']}/key", json={}), 404)
