"""TOTP second factor: enrolment with a QR code, two-step login, replay refusal, recovery codes,
disable, and every wrong code counted as an audited failure."""

import base64
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pyotp

from tests.e2e.accounts_helpers import (
    API,
    LOGIN,
    LOGIN_2FA,
    PASSWORD,
    audit_rows,
    code,
    create_user,
    current_step,
    db,
    key_for,
    logged_in,
    past,
)
from tests.e2e.helpers import data, error
from tests.support import ADMIN_PASSWORD, Server


def enrol(server: Server, username: str) -> tuple[str, list[str], int]:
    """Enable and confirm TOTP through the user's own session: secret, recovery codes and the
    time step the confirmation used."""
    with logged_in(server, username) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        started = data(client.post(f"{API}/account/2fa/enable", headers=headers))
        secret = started["secret"]
        step = current_step() - 1  # the previous step: leaves now and next for the test
        confirmed = client.post(
            f"{API}/account/2fa/confirm", json={"code": code(secret, step)}, headers=headers
        )
        body = data(confirmed)
    assert body["enabled"] is True
    return secret, body["recovery_codes"], step


def password_step(client: httpx.Client, username: str) -> dict[str, Any]:
    body: dict[str, Any] = data(
        client.post(LOGIN, json={"username": username, "password": PASSWORD})
    )
    return body


def test_enable_returns_png_qr_code_and_secret(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    with logged_in(server, user["username"]) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        assert_no_csrf = client.post(f"{API}/account/2fa/enable")
        error(assert_no_csrf, 403)
        started = data(client.post(f"{API}/account/2fa/enable", headers=headers))
        prefix = "data:image/png;base64,"
        assert started["qr_code"].startswith(prefix)
        png = base64.b64decode(started["qr_code"][len(prefix) :])
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 200
        secret = started["secret"]
        assert len(base64.b32decode(secret)) >= 20  # at least 160 bits
        parsed = pyotp.parse_uri(started["uri"])
        assert parsed.secret == secret and parsed.issuer == "Tessera"
        assert parsed.name == user["username"]
        # Not in force until confirmed: the login still needs only the password.
        with server.client(api_key="") as other:
            assert "csrf_token" in password_step(other, user["username"])
        # A wrong code does not confirm, and is audited as a failure.
        wrong = client.post(f"{API}/account/2fa/confirm", json={"code": "000000"}, headers=headers)
        if code(secret, current_step()) != "000000":
            assert "invalid code" in error(wrong, 400)
        failures = [r for r in audit_rows(server, "account.2fa_confirm", user["id"])]
        assert failures and failures[-1]["success"] is False
        assert data(client.get(f"{API}/account/profile"))["totp_enabled"] is False
        assert_error_422 = client.post(f"{API}/account/2fa/confirm", json={}, headers=headers)
        error(assert_error_422, 422)
    # The secret is not in any response after enrolment, nor in the audit details.
    rows = db(server, "SELECT details FROM audit_logs WHERE user_id = ?", (user["id"],))
    assert secret not in str(rows)


def test_login_needs_the_second_factor_and_refuses_replay(
    server: Server, api: httpx.Client
) -> None:
    user = create_user(api)
    secret, _, confirm_step = enrol(server, user["username"])
    with server.client(api_key="") as client:
        methods = data(client.post(f"{API}/auth/methods", json={"username": user["username"]}))
        assert methods["totp_enabled"] is True
        first = password_step(client, user["username"])
        assert first["requires_2fa"] is True and "csrf_token" not in first
        assert set(first["methods"]) == {"totp", "recovery_code"}
        # The pending state is no session: no cookie, and it opens nothing by itself.
        assert "tessera_session" not in client.cookies
        error(client.get(f"{API}/auth/verify"), 401)
        with server.client(api_key=first["pending_token"]) as misuse:
            error(misuse.get(f"{API}/auth/verify"), 401)
        pending = first["pending_token"]
        # The code already used to confirm enrolment is refused (replay).
        replay = {"pending_token": pending, "code": code(secret, confirm_step)}
        error(client.post(LOGIN_2FA, json=replay), 401)
        step = current_step()
        good = {"pending_token": pending, "code": code(secret, step)}
        session = data(client.post(LOGIN_2FA, json=good))
        assert session["auth_method"] == "password+totp" and session["csrf_token"]
        assert data(client.get(f"{API}/auth/verify"))["user"]["id"] == user["id"]
        # The pending token worked once.
        error(client.post(LOGIN_2FA, json=good), 401)
    with server.client(api_key="") as client:
        again = password_step(client, user["username"])["pending_token"]
        # The same code in a new login: replay, refused.
        reused = client.post(LOGIN_2FA, json={"pending_token": again, "code": code(secret, step)})
        assert "invalid" in error(reused, 401)
        assert "tessera_session" not in client.cookies
        later = {"pending_token": again, "code": code(secret, step + 1)}
        assert data(client.post(LOGIN_2FA, json=later))["user"]["id"] == user["id"]
    failures = [r for r in audit_rows(server, "auth.login_2fa", user["id"]) if not r["success"]]
    assert len(failures) == 2 and failures[-1]["details"]["reason"] == "invalid code"


def test_pending_login_expires_and_dies_after_wrong_codes(
    server: Server, api: httpx.Client
) -> None:
    user = create_user(api)
    _secret, recovery, _ = enrol(server, user["username"])
    with server.client(api_key="") as client:
        pending = password_step(client, user["username"])["pending_token"]
        for _ in range(5):
            wrong = client.post(LOGIN_2FA, json={"pending_token": pending, "code": "12345x"})
            error(wrong, 401)
        # Five wrong codes void the pending login, even for a right code afterwards.
        right = {"pending_token": pending, "code": recovery[0]}
        error(client.post(LOGIN_2FA, json=right), 401)
        # An expired pending login is refused.
        pending = password_step(client, user["username"])["pending_token"]
        digest = hashlib.sha256(pending.encode()).hexdigest()
        db(
            server,
            "UPDATE account_tokens SET expires_at = ? WHERE token_hash = ?",
            (past(server), digest),
        )
        error(client.post(LOGIN_2FA, json={"pending_token": pending, "code": recovery[0]}), 401)
        error(client.post(LOGIN_2FA, json={"pending_token": "made-up", "code": "123456"}), 401)
        error(client.post(LOGIN_2FA, json={"pending_token": pending}), 422)
    # The recovery code was never consumed by those refusals.
    with server.client(api_key="") as client:
        pending = password_step(client, user["username"])["pending_token"]
        done = data(client.post(LOGIN_2FA, json={"pending_token": pending, "code": recovery[0]}))
        assert done["auth_method"] == "password+recovery_code"


def test_recovery_codes_are_single_use_hashed_and_regenerated(
    server: Server, api: httpx.Client
) -> None:
    user = create_user(api)
    secret, recovery, _ = enrol(server, user["username"])
    assert len(recovery) == 10 and len(set(recovery)) == 10
    stored = db(server, "SELECT code_hash FROM recovery_codes WHERE user_id = ?", (user["id"],))
    assert len(stored) == 10 and not {r[0] for r in stored} & set(recovery)
    with server.client(api_key="") as client:
        pending = password_step(client, user["username"])["pending_token"]
        # Typed in capitals with spaces: still the same code.
        typed = recovery[0].upper().replace("-", " ")
        data(client.post(LOGIN_2FA, json={"pending_token": pending, "code": typed}))
        assert data(client.get(f"{API}/auth/verify"))["user"]["id"] == user["id"]
    with server.client(api_key="") as client:
        pending = password_step(client, user["username"])["pending_token"]
        reused = client.post(LOGIN_2FA, json={"pending_token": pending, "code": recovery[0]})
        error(reused, 401)
        session = data(client.post(LOGIN_2FA, json={"pending_token": pending, "code": recovery[1]}))
        csrf = session["csrf_token"]
        headers = {"X-CSRF-Token": csrf}
        status = data(client.get(f"{API}/account/2fa/recovery-codes"))
        assert status["enabled"] is True and status["remaining"] == 8 and status["total"] == 10
        assert "codes" not in status
        regenerate = f"{API}/account/2fa/recovery-codes/regenerate"
        error(client.post(regenerate, json={"code": recovery[2]}), 403)  # CSRF
        # Minting second factors takes one, as disabling does: a session alone is not enough.
        assert "code is required" in error(client.post(regenerate, headers=headers), 400)
        wrong = client.post(regenerate, json={"code": "not-a-code"}, headers=headers)
        assert error(wrong, 400) == "invalid code"
        used = client.post(regenerate, json={"code": recovery[1]}, headers=headers)
        assert error(used, 400) == "invalid code"
        assert data(client.get(f"{API}/account/2fa/recovery-codes"))["remaining"] == 8
        totp = {"code": code(secret, current_step())}
        fresh = data(client.post(regenerate, json=totp, headers=headers))
        codes = fresh["recovery_codes"]
        assert len(codes) == 10 and not set(codes) & set(recovery)
        assert data(client.get(f"{API}/account/2fa/recovery-codes"))["remaining"] == 10
    with server.client(api_key="") as client:
        pending = password_step(client, user["username"])["pending_token"]
        old = client.post(LOGIN_2FA, json={"pending_token": pending, "code": recovery[2]})
        error(old, 401)
        data(client.post(LOGIN_2FA, json={"pending_token": pending, "code": codes[0]}))


def test_disable_needs_a_valid_code(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    secret, recovery, _ = enrol(server, user["username"])
    with server.client(api_key="") as client:
        pending = password_step(client, user["username"])["pending_token"]
        csrf = data(client.post(LOGIN_2FA, json={"pending_token": pending, "code": recovery[0]}))[
            "csrf_token"
        ]
        headers = {"X-CSRF-Token": csrf}
        again = client.post(f"{API}/account/2fa/enable", headers=headers)
        assert "already enabled" in error(again, 409)
        wrong = client.post(f"{API}/account/2fa/disable", json={"code": "999999"}, headers=headers)
        if code(secret, current_step()) != "999999":
            error(wrong, 400)
        used = {"code": recovery[0]}  # a used recovery code does not disable either
        error(client.post(f"{API}/account/2fa/disable", json=used, headers=headers), 400)
        fails = [r for r in audit_rows(server, "account.2fa_disable", user["id"])]
        assert len(fails) == 2 and not any(r["success"] for r in fails)
        good = {"code": code(secret, current_step())}
        assert data(client.post(f"{API}/account/2fa/disable", json=good, headers=headers)) == {
            "enabled": False
        }
        left = db(server, "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ?", (user["id"],))
        assert left == [(0,)]
        again = {"code": recovery[1]}
        regenerate = f"{API}/account/2fa/recovery-codes/regenerate"
        error(client.post(regenerate, json=again, headers=headers), 409)
    with server.client(api_key="") as client:
        assert "csrf_token" in password_step(client, user["username"])


def test_admin_login_without_2fa_is_unchanged(server: Server) -> None:
    with logged_in(server, "admin", password=ADMIN_PASSWORD) as (client, _):
        assert data(client.get(f"{API}/account/profile"))["totp_enabled"] is False


def test_one_code_in_two_racing_logins_opens_one_session(server: Server, api: httpx.Client) -> None:
    """The replay guard is a conditional UPDATE in the database, not a check-then-write: two
    logins racing with the same code cannot both pass."""
    user = create_user(api)
    secret, _, _ = enrol(server, user["username"])
    clients = [server.client(api_key="") for _ in range(4)]
    try:
        pendings = [password_step(c, user["username"])["pending_token"] for c in clients]
        same = code(secret, current_step())
        barrier = threading.Barrier(len(clients))

        def attempt(index: int) -> int:
            barrier.wait()
            body = {"pending_token": pendings[index], "code": same}
            return clients[index].post(LOGIN_2FA, json=body).status_code

        with ThreadPoolExecutor(len(clients)) as pool:
            statuses = list(pool.map(attempt, range(len(clients))))
    finally:
        for client in clients:
            client.close()
    assert sorted(statuses) == [200, 401, 401, 401], statuses


def test_a_new_password_voids_logins_waiting_for_their_second_factor(
    server: Server, api: httpx.Client
) -> None:
    """A pending login proves the old password; once the password changes (by the user, or by
    an administrator ending a compromise) it must not open a session any more."""
    user = create_user(api)
    _secret, recovery, _ = enrol(server, user["username"])
    with server.client(api_key="") as stale:
        pending = password_step(stale, user["username"])["pending_token"]
        with server.client(api_key="") as owner:
            first = password_step(owner, user["username"])["pending_token"]
            body = {"pending_token": first, "code": recovery[0]}
            csrf = data(owner.post(LOGIN_2FA, json=body))["csrf_token"]
            change = {"current_password": PASSWORD, "new_password": "changed-password-1"}
            changed = owner.post(
                f"{API}/account/password", json=change, headers={"X-CSRF-Token": csrf}
            )
            data(changed)
        late = stale.post(LOGIN_2FA, json={"pending_token": pending, "code": recovery[1]})
        error(late, 401)
        assert "tessera_session" not in stale.cookies
    with server.client(api_key="") as stale:
        body = {"username": user["username"], "password": "changed-password-1"}
        pending = data(stale.post(LOGIN, json=body))["pending_token"]
        reset = {"new_password": "set-by-admin-123"}
        data(api.post(f"{API}/users/{user['id']}/reset-password", json=reset))
        late = stale.post(LOGIN_2FA, json={"pending_token": pending, "code": recovery[1]})
        error(late, 401)
    # The refused attempts did not use up the recovery code.
    with server.client(api_key="") as client:
        body = {"username": user["username"], "password": "set-by-admin-123"}
        pending = data(client.post(LOGIN, json=body))["pending_token"]
        data(client.post(LOGIN_2FA, json={"pending_token": pending, "code": recovery[1]}))


def test_an_account_takes_no_totp_code_after_too_many_wrong_ones(
    server: Server, api: httpx.Client
) -> None:
    """A pending login dies after five wrong codes, but whoever has the password can start
    another at once: the account itself stops taking TOTP codes after ten wrong ones (over
    all its pending logins, from any address), so the six digits cannot be worked through.
    A recovery code, which cannot be guessed, still opens the session."""
    user = create_user(api)
    secret, recovery, _ = enrol(server, user["username"])
    step = current_step()
    valid = {code(secret, s) for s in range(step - 1, step + 4)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)
    with server.client(api_key="") as client:
        for _ in range(2):
            pending = password_step(client, user["username"])["pending_token"]
            for _ in range(5):
                error(client.post(LOGIN_2FA, json={"pending_token": pending, "code": wrong}), 401)
        pending = password_step(client, user["username"])["pending_token"]
        right = {"pending_token": pending, "code": code(secret, current_step())}
        assert "only a recovery code" in error(client.post(LOGIN_2FA, json=right), 401)
        assert "tessera_session" not in client.cookies
        body = {"pending_token": pending, "code": recovery[0]}
        assert data(client.post(LOGIN_2FA, json=body))["auth_method"] == "password+recovery_code"
    reasons = [
        r["details"]["reason"]
        for r in audit_rows(server, "auth.login_2fa", user["id"])
        if not r["success"]
    ]
    assert reasons == ["invalid code"] * 10 + ["too many wrong codes: TOTP not accepted"]


def test_an_administrator_resets_a_lost_second_factor(server: Server, api: httpx.Client) -> None:
    """Authenticator and recovery codes both lost: without this the account stays locked
    out. The reset ends the user's pending logins and sessions, and drops the old codes."""
    user = create_user(api)
    _, recovery, _ = enrol(server, user["username"])
    with server.client(api_key="") as client:
        pending = password_step(client, user["username"])["pending_token"]
    session = server.client(api_key="")
    try:
        opened = session.post(LOGIN_2FA, json={"pending_token": pending, "code": recovery[0]})
        data(opened)
        viewer = key_for(server, create_user(api)["username"])
        with server.client(api_key=viewer) as other:
            error(other.post(f"{API}/users/{user['id']}/2fa/reset"), 403)
        done = data(api.post(f"{API}/users/{user['id']}/2fa/reset"))
        assert done["id"] == user["id"]
        error(session.get(f"{API}/auth/verify"), 401)  # its session ended
    finally:
        session.close()
    assert db(server, "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ?", (user["id"],)) == [
        (0,)
    ]
    with server.client(api_key="") as client:
        answered = password_step(client, user["username"])
        assert "csrf_token" in answered and "pending_token" not in answered
        assert data(client.get(f"{API}/account/profile"))["totp_enabled"] is False
    assert "no two-factor" in error(api.post(f"{API}/users/{user['id']}/2fa/reset"), 409)
    error(api.post(f"{API}/users/999999/2fa/reset"), 404)
    assert any(r["success"] for r in audit_rows(server, "user.2fa_reset"))
