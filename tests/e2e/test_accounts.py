"""The caller's own account (profile, password, sessions, activity, API keys) and password
reset by email, received by a real SMTP server (aiosmtpd)."""

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx

from tests.e2e.accounts_helpers import (
    API,
    LOGIN,
    PASSWORD,
    Mailbox,
    audit_rows,
    body_of,
    can_login,
    create_user,
    db,
    email_address,
    key_for,
    logged_in,
    past,
    token_from,
)
from tests.e2e.helpers import data, error, unique
from tests.support import Server

RESET = f"{API}/auth/reset-password"
FORGOT = f"{API}/auth/forgot-password"


# --- profile ------------------------------------------------------------------------------------


def test_profile_get_and_update(server: Server, api: httpx.Client) -> None:
    user = create_user(api, "operator", email="before@example.test")
    with logged_in(server, user["username"]) as (client, csrf):
        profile = data(client.get(f"{API}/account/profile"))
        assert profile["username"] == user["username"] and profile["role"] == "operator"
        assert profile["totp_enabled"] is False and profile["groups"] == []
        assert "read:*" in profile["permissions"] and "password_hash" not in profile
        change = {"full_name": "John Doe", "email": "john@example.test"}
        error(client.patch(f"{API}/account/profile", json=change), 403)  # no CSRF token
        headers = {"X-CSRF-Token": csrf}
        refused = client.patch(f"{API}/account/profile", json=change, headers=headers)
        assert "current_password" in error(refused, 400)  # the address moves reset links
        change["current_password"] = PASSWORD
        updated = data(client.patch(f"{API}/account/profile", json=change, headers=headers))
        assert updated["full_name"] == "John Doe" and updated["email"] == "john@example.test"
        bad = client.patch(
            f"{API}/account/profile", json={"email": "not an address"}, headers=headers
        )
        assert "email" in error(bad, 400)
        long = client.patch(
            f"{API}/account/profile", json={"full_name": "x" * 500}, headers=headers
        )
        error(long, 422)
        # The role is not the user's to change here.
        data(client.patch(f"{API}/account/profile", json={"role": "admin"}, headers=headers))
    assert data(api.get(f"{API}/users/{user['id']}"))["role"] == "operator"
    assert data(api.get(f"{API}/users/{user['id']}"))["email"] == "john@example.test"


# --- password change, sessions ------------------------------------------------------------------


def test_password_change_reauthenticates_and_ends_other_sessions(
    server: Server, api: httpx.Client
) -> None:
    user = create_user(api)
    with (
        logged_in(server, user["username"]) as (other, _),
        logged_in(server, user["username"]) as (client, csrf),
    ):
        headers = {"X-CSRF-Token": csrf}
        wrong = {"current_password": "not-my-password", "new_password": "brand-new-password"}
        assert "incorrect" in error(
            client.post(f"{API}/account/password", json=wrong, headers=headers), 400
        )
        failures = [r for r in audit_rows(server, "account.password_change", user["id"])]
        assert len(failures) == 1 and failures[0]["success"] is False
        assert data(other.get(f"{API}/auth/verify"))["authenticated"] is True
        short = {"current_password": PASSWORD, "new_password": "short"}
        error(client.post(f"{API}/account/password", json=short, headers=headers), 400)
        no_csrf = {"current_password": PASSWORD, "new_password": "brand-new-password"}
        error(client.post(f"{API}/account/password", json=no_csrf), 403)
        done = client.post(f"{API}/account/password", json=no_csrf, headers=headers)
        data(done)
        # This session lives on; the other one is gone.
        assert data(client.get(f"{API}/auth/verify"))["user"]["id"] == user["id"]
        assert "log in" in error(other.get(f"{API}/auth/verify"), 401)
    assert not can_login(server, user["username"], PASSWORD)
    assert can_login(server, user["username"], "brand-new-password")


def test_sessions_list_revoke_one_and_all_but_current(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    with (
        logged_in(server, user["username"]) as (first, _),
        logged_in(server, user["username"]) as (second, _),
        logged_in(server, user["username"]) as (client, csrf),
    ):
        headers = {"X-CSRF-Token": csrf}
        listed = data(client.get(f"{API}/account/sessions"))
        assert len(listed) == 3 and sum(s["current"] for s in listed) == 1
        assert all(s["ip_address"] == "127.0.0.1" for s in listed)
        assert not any("token" in key for s in listed for key in s)
        others = [s["id"] for s in listed if not s["current"]]
        error(client.delete(f"{API}/account/sessions/{others[0]}"), 403)  # CSRF
        data(client.delete(f"{API}/account/sessions/{others[0]}", headers=headers))
        error(client.delete(f"{API}/account/sessions/{others[0]}", headers=headers), 404)
        alive = [c.get(f"{API}/auth/verify").status_code for c in (first, second)]
        assert sorted(alive) == [200, 401]
        # Someone else's session id is not found, and stays alive.
        with logged_in(server, create_user(api)["username"]) as (stranger, _):
            theirs = data(stranger.get(f"{API}/account/sessions"))[0]["id"]
            error(client.delete(f"{API}/account/sessions/{theirs}", headers=headers), 404)
            assert stranger.get(f"{API}/auth/verify").status_code == 200
        revoked = data(client.post(f"{API}/account/sessions/revoke-all", headers=headers))
        assert revoked == {"revoked": 1}
        assert [c.get(f"{API}/auth/verify").status_code for c in (first, second)] == [401, 401]
        assert len(data(client.get(f"{API}/account/sessions"))) == 1


def test_new_session_id_on_every_login(server: Server, api: httpx.Client) -> None:
    """Session fixation: a session id the client arrives with is never kept or promoted."""
    user = create_user(api)
    credentials = {"username": user["username"], "password": PASSWORD}
    with server.client(api_key="") as client:
        planted = client.post(
            LOGIN, json=credentials, headers={"Cookie": "tessera_session=attacker-chosen"}
        )
        data(planted)
        assert planted.cookies["tessera_session"] not in ("", "attacker-chosen")
    with server.client(api_key="") as client:
        data(client.post(LOGIN, json=credentials))
        first = client.cookies["tessera_session"]
        again = client.post(LOGIN, json=credentials)
        data(again)
        second = again.cookies["tessera_session"]
        assert second != first
    # The session the client came back with was ended by the new login.
    digest = hashlib.sha256(first.encode()).hexdigest()
    assert db(server, "SELECT COUNT(*) FROM web_sessions WHERE token_hash = ?", (digest,)) == [(0,)]


def test_activity_lists_own_audit_rows(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    with server.client(api_key="") as client:
        client.post(LOGIN, json={"username": user["username"], "password": "wrong-password"})
    with logged_in(server, user["username"]) as (client, _):
        rows = data(client.get(f"{API}/account/activity", params={"limit": 50}))
        actions = [(r["action"], r["success"]) for r in rows]
        assert ("auth.login", True) in actions and ("auth.login", False) in actions
        assert rows == sorted(rows, key=lambda r: -r["id"])
        assert len(data(client.get(f"{API}/account/activity", params={"limit": 1}))) == 1
        error(client.get(f"{API}/account/activity", params={"limit": 0}), 422)
        error(client.get(f"{API}/account/activity", params={"limit": "many"}), 422)
        # Nobody else's rows (the admin created this user).
        assert all(r["action"] != "user.create" for r in rows)


# --- API keys -----------------------------------------------------------------------------------


def test_api_key_subsets_expiry_disable_and_regenerate(server: Server, api: httpx.Client) -> None:
    user = create_user(api, "operator")
    narrow = key_for(server, user["username"], permissions=["read:certificates"])
    with server.client(api_key=narrow) as client:
        assert data(client.get(f"{API}/auth/verify"))["permissions"] == ["read:certificates"]
        data(client.get(f"{API}/certificates"))
        error(client.get(f"{API}/cas"), 403)  # beyond the key, though within the owner's role
        # A narrowed key cannot mint a wider one, nor touch a wider key.
        wider = client.post(
            f"{API}/account/apikeys", json={"name": "w", "permissions": ["read:cas"]}
        )
        error(wider, 403)
    with logged_in(server, user["username"]) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        beyond = {"name": "x", "permissions": ["write:users"]}
        assert "beyond" in error(
            client.post(f"{API}/account/apikeys", json=beyond, headers=headers), 403
        )
        bad_days = {"name": "x", "expires_days": 0}
        error(client.post(f"{API}/account/apikeys", json=bad_days, headers=headers), 400)
        made = data(
            client.post(
                f"{API}/account/apikeys", json={"name": "ci", "expires_days": 30}, headers=headers
            ),
            201,
        )
        assert made["expires_at"] and made["enabled"] is True
        key_id, secret = made["id"], made["key"]
        with server.client(api_key=secret) as holder:
            data(holder.get(f"{API}/certificates"))
            off = {"enabled": False}
            data(client.patch(f"{API}/account/apikeys/{key_id}", json=off, headers=headers))
            error(holder.get(f"{API}/certificates"), 401)
            on = {"enabled": True}
            data(client.patch(f"{API}/account/apikeys/{key_id}", json=on, headers=headers))
            data(holder.get(f"{API}/certificates"))
            regenerated = data(
                client.post(f"{API}/account/apikeys/{key_id}/regenerate", headers=headers)
            )
            assert regenerated["key"] != secret and regenerated["id"] == key_id
            error(holder.get(f"{API}/certificates"), 401)
        with server.client(api_key=regenerated["key"]) as holder:
            data(holder.get(f"{API}/certificates"))
            db(server, "UPDATE api_keys SET expires_at = ? WHERE id = ?", (past(server), key_id))
            error(holder.get(f"{API}/certificates"), 401)


# --- forgot / reset password by email -----------------------------------------------------------


def test_email_settings_and_test_mail(server: Server, api: httpx.Client, mail: Mailbox) -> None:
    shown = data(api.get(f"{API}/settings/email"))
    assert shown["configured"] is True and shown["smtp_port"] == mail.port
    assert "smtp_password" not in shown
    data(api.patch(f"{API}/settings/email", json={"smtp_password": "s3cret-smtp"}))
    shown = data(api.get(f"{API}/settings/email"))
    assert shown["smtp_password_set"] is True and "s3cret-smtp" not in str(shown)
    data(api.patch(f"{API}/settings/email", json={"smtp_password": None}))
    with server.client(api_key="") as anonymous:
        assert data(anonymous.get(f"{API}/auth/email-configured")) == {"configured": True}
    to = email_address("test")
    sent = data(api.post(f"{API}/settings/email/test", json={"to": to}))
    assert sent["sent"] is True
    assert mail.wait_for(to)["Subject"] == "Tessera test mail"
    error(api.post(f"{API}/settings/email/test", json={"to": "nobody"}), 400)
    error(api.patch(f"{API}/settings/email", json={"smtp_port": 70000}), 422)
    error(api.patch(f"{API}/settings/email", json={"from_address": "bad address"}), 400)
    viewer = key_for(server, create_user(api)["username"])
    with server.client(api_key=viewer) as client:
        error(client.get(f"{API}/settings/email"), 403)
        error(client.patch(f"{API}/settings/email", json={"smtp_host": "evil.test"}), 403)
    assert data(api.get(f"{API}/settings/email"))["smtp_host"] == "127.0.0.1"


def test_only_everything_may_say_where_mail_goes(
    server: Server, api: httpx.Client, mail: Mailbox
) -> None:
    """Whoever sets the SMTP server receives every reset link, the admins' included: neither
    an admin's API key narrowed to admin:system nor a user holding it through a group may
    change the email settings (reading them and sending a test mail is what it is for)."""
    narrowed = data(
        api.post(f"{API}/account/apikeys", json={"name": "sys", "permissions": ["admin:system"]}),
        201,
    )["key"]
    group = data(
        api.post(f"{API}/groups", json={"name": unique("Sys"), "permissions": ["admin:system"]}),
        201,
    )
    member = create_user(api)
    data(api.post(f"{API}/groups/{group['id']}/members", json={"user_id": member["id"]}), 201)
    to = email_address("systest")
    for key in (narrowed, key_for(server, member["username"])):
        with server.client(api_key=key) as client:
            assert data(client.get(f"{API}/settings/email"))["smtp_host"] == "127.0.0.1"
            data(client.post(f"{API}/settings/email/test", json={"to": to}))
            elsewhere = {"smtp_host": "mail.attacker.test", "smtp_port": 25}
            error(client.patch(f"{API}/settings/email", json=elsewhere), 403)
            error(client.patch(f"{API}/settings/email", json={"enabled": False}), 403)
    shown = data(api.get(f"{API}/settings/email"))
    assert (shown["smtp_host"], shown["smtp_port"], shown["enabled"]) == (
        "127.0.0.1",
        mail.port,
        True,
    )
    assert not [
        r for r in audit_rows(server, "settings.email_update") if r["user_id"] == member["id"]
    ]


def test_the_old_address_is_told_when_the_email_changes(
    server: Server, api: httpx.Client, mail: Mailbox
) -> None:
    """Reset links follow the address, so whoever changes it can take the account: the old
    mailbox hears of it, whether the user or an administrator changed it."""
    old, new, newer = (email_address(n) for n in ("was", "now", "later"))
    user = create_user(api, email=old)
    with logged_in(server, user["username"]) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        same = {"email": old.upper()}  # the same mailbox: no notice
        data(client.patch(f"{API}/account/profile", json=same, headers=headers))
        moved = {"email": new, "current_password": PASSWORD}
        data(client.patch(f"{API}/account/profile", json=moved, headers=headers))
    notice = mail.wait_for(old.upper())
    assert notice["Subject"] == "Tessera: your account's email address was changed"
    text = body_of(notice)
    assert user["username"] in text and old.upper() in text and new in text
    assert "127.0.0.1" in text
    data(api.put(f"{API}/users/{user['id']}", json={"email": newer}))
    assert new in body_of(mail.wait_for(new)) and newer in body_of(mail.wait_for(new))
    data(api.put(f"{API}/users/{user['id']}", json={"full_name": "Unchanged Address"}))
    assert len(mail.all_to(old.upper())) == 1 and not mail.all_to(old) and not mail.all_to(newer)


def test_forgot_and_reset_password_by_mail(
    server: Server, api: httpx.Client, mail: Mailbox
) -> None:
    address = email_address("forgot")
    user = create_user(api, email=address)
    with logged_in(server, user["username"]) as (session, _):
        with server.client(api_key="") as anonymous:
            known = anonymous.post(FORGOT, json={"email": address.upper()})
            unknown = anonymous.post(FORGOT, json={"email": email_address("nobody")})
            assert known.status_code == unknown.status_code == 200
            assert known.json() == unknown.json()  # nothing tells the two apart
            message = mail.wait_for(address)
            assert message["Subject"] == "Tessera: reset your password"
            token = token_from(message)
            assert f"{server.url}/reset-password?token=" in body_of(message)
            # Only a digest is stored.
            digest = hashlib.sha256(token.encode()).hexdigest()
            assert db(
                server, "SELECT COUNT(*) FROM account_tokens WHERE token_hash = ?", (token,)
            ) == [(0,)]
            assert db(
                server, "SELECT COUNT(*) FROM account_tokens WHERE token_hash = ?", (digest,)
            ) == [(1,)]
            weak = anonymous.post(RESET, json={"token": token, "password": "short"})
            error(weak, 400)  # and the link still works afterwards
            done = anonymous.post(RESET, json={"token": token, "password": "reset-password-123"})
            data(done)
            reused = anonymous.post(RESET, json={"token": token, "password": "another-password-1"})
            assert "invalid or expired" in error(reused, 400)
        # The reset ended the sessions the user had.
        error(session.get(f"{API}/auth/verify"), 401)
    assert not can_login(server, user["username"], PASSWORD)
    assert can_login(server, user["username"], "reset-password-123")
    assert any(r["success"] for r in audit_rows(server, "auth.password_reset", user["id"]))
    assert token not in str(db(server, "SELECT details FROM audit_logs"))
    assert token not in server.log()


@contextmanager
def account_tokens_write_locked(server: Server) -> Iterator[None]:
    """Nobody stores an account token meanwhile. On SQLite the write lock every server
    writer takes first is held (a flock, storage/sqlite_writes.py); on PostgreSQL the table
    is locked EXCLUSIVE (reads go on)."""
    if server.database_url is None:
        fd = os.open(server.data_dir / "tessera.db.writelock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    import psycopg

    with psycopg.connect(server.database_url) as conn:
        conn.execute("LOCK TABLE account_tokens IN EXCLUSIVE MODE")
        yield


def test_a_reset_request_is_answered_before_the_address_is_looked_up(
    server: Server, api: httpx.Client, mail: Mailbox
) -> None:
    """The answer must not tell an address with an account from one without, in its words
    nor in its time: the link an existing address gets (a token stored, an audit row, a
    commit) took ten times as long as nothing at all. So the work is done apart from the
    request. Shown without a stopwatch: while no token can be stored, the answer still
    arrives (it used to wait for the lock), and so does the next request on the same
    connection; the link follows once the lock is gone."""
    address = email_address("answered-first")
    create_user(api, email=address)
    answered = threading.Event()
    with server.client(api_key="") as anonymous:

        def ask() -> tuple[httpx.Response, httpx.Response]:
            response = anonymous.post(FORGOT, json={"email": address})
            following = anonymous.get(f"{API}/auth/email-configured")
            answered.set()
            return response, following

        with ThreadPoolExecutor(1) as pool:
            with account_tokens_write_locked(server):
                pending = pool.submit(ask)
                arrived_while_locked = answered.wait(30)  # a bound on the test, not a timing
            response, following = pending.result()
    assert arrived_while_locked, "the answers waited for the reset link to be stored"
    assert data(following) == {"configured": True}
    unknown = {"email": email_address("nobody")}
    with server.client(api_key="") as anonymous:
        other = anonymous.post(FORGOT, json=unknown)
    assert response.status_code == other.status_code == 200
    assert response.json() == other.json()
    token_from(mail.wait_for(address))
    assert audit_rows(server, "auth.password_reset_request")[-1]["success"] is True


def test_expired_and_superseded_reset_tokens_are_refused(
    server: Server, api: httpx.Client, mail: Mailbox
) -> None:
    address = email_address("expired")
    user = create_user(api, email=address)
    with server.client(api_key="") as anonymous:
        data(anonymous.post(FORGOT, json={"email": address}))
        first = token_from(mail.wait_for(address))
        data(anonymous.post(FORGOT, json={"email": address}))
        second = token_from(mail.wait_for(address, count=2))
        assert first != second
        # A newer link voids the older one.
        superseded = anonymous.post(RESET, json={"token": first, "password": "new-password-111"})
        error(superseded, 400)
        digest = hashlib.sha256(second.encode()).hexdigest()
        db(
            server,
            "UPDATE account_tokens SET expires_at = ? WHERE token_hash = ?",
            (past(server), digest),
        )
        expired = anonymous.post(RESET, json={"token": second, "password": "new-password-111"})
        assert "expired" in error(expired, 400)
        error(
            anonymous.post(RESET, json={"token": "made-up-token", "password": "new-password-111"}),
            400,
        )
        error(anonymous.post(RESET, json={"token": second}), 422)
        error(anonymous.post(FORGOT, json={}), 422)
    assert can_login(server, user["username"], PASSWORD)
    failures = [r for r in audit_rows(server, "auth.password_reset") if not r["success"]]
    assert len(failures) >= 3


def test_reset_of_unknown_or_inactive_account_sends_nothing(
    server: Server, api: httpx.Client, mail: Mailbox
) -> None:
    address = email_address("inactive")
    user = create_user(api, email=address)
    data(api.patch(f"{API}/users/{user['id']}/toggle"))
    with server.client(api_key="") as anonymous:
        data(anonymous.post(FORGOT, json={"email": address}))
        ghost = email_address("ghost")
        data(anonymous.post(FORGOT, json={"email": ghost}))
        probe = email_address("probe")
        data(api.post(f"{API}/settings/email/test", json={"to": probe}))
        mail.wait_for(probe)  # mail sent after ours has arrived, so ours would have too
    assert mail.all_to(address) == [] and mail.all_to(ghost) == []


def test_unconfigured_email(server: Server, api: httpx.Client, mailbox: Mailbox) -> None:
    data(api.patch(f"{API}/settings/email", json={"enabled": False}))
    try:
        with server.client(api_key="") as anonymous:
            assert data(anonymous.get(f"{API}/auth/email-configured")) == {"configured": False}
            address = email_address("off")
            create_user(api, email=address)
            response = anonymous.post(FORGOT, json={"email": address})
            assert response.status_code == 200
        assert "not configured" in error(
            api.post(f"{API}/settings/email/test", json={"to": address}), 400
        )
        body = {"users": [{"username": unique("inv"), "email": address}], "send_invites": True}
        assert "email" in error(api.post(f"{API}/users/import", json=body), 400)
    finally:
        data(api.patch(f"{API}/settings/email", json=mailbox.settings()))


def test_a_narrowed_key_cannot_change_how_the_account_signs_in(
    server: Server, api: httpx.Client
) -> None:
    """A leaked read-only key must not mint recovery codes, enrol a second factor, redirect
    password resets to another address or change the password."""
    user = create_user(api, "operator", email=email_address("narrow"))
    narrow = key_for(server, user["username"], permissions=["read:certificates"])
    full = key_for(server, user["username"])
    with server.client(api_key=narrow) as client:
        assert data(client.get(f"{API}/account/profile"))["username"] == user["username"]
        error(client.post(f"{API}/account/2fa/enable"), 403)
        error(client.post(f"{API}/account/2fa/recovery-codes/regenerate"), 403)
        error(client.patch(f"{API}/account/profile", json={"email": "thief@example.test"}), 403)
        change = {"current_password": PASSWORD, "new_password": "taken-over-password"}
        error(client.post(f"{API}/account/password", json=change), 403)
        error(client.post(f"{API}/account/sessions/revoke-all"), 403)
    assert data(api.get(f"{API}/users/{user['id']}"))["email"] != "thief@example.test"
    assert can_login(server, user["username"], PASSWORD)
    with server.client(api_key=full) as client:
        renamed = {"full_name": "Full Key"}
        assert data(client.patch(f"{API}/account/profile", json=renamed))["full_name"] == "Full Key"
