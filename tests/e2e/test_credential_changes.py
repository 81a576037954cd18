"""What a change to an account does to the credentials it already handed out: a new role or
a change of what its groups grant ends its sessions, deactivation revokes its API keys for
good, and its email address (where reset links go) changes only with the current password."""

import httpx

from tests.e2e.accounts_helpers import (
    PASSWORD,
    audit_rows,
    can_login,
    create_user,
    email_address,
    key_for,
    logged_in,
)
from tests.e2e.helpers import API, data, error, unique
from tests.support import Server

VERIFY = f"{API}/auth/verify"


def test_a_role_change_ends_the_users_sessions(server: Server, api: httpx.Client) -> None:
    user = create_user(api, "viewer")
    path = f"{API}/users/{user['id']}"
    with logged_in(server, user["username"]) as (session, _):
        data(api.put(path, json={"full_name": "Same Role", "role": "viewer"}))
        data(session.get(VERIFY))  # nothing granted changed: the session goes on
        data(api.put(path, json={"role": "operator"}))
        error(session.get(VERIFY), 401)
    with logged_in(server, user["username"]) as (session, _):
        assert data(session.get(VERIFY))["role"] == "operator"  # a new login works
        data(api.put(path, json={"role": "viewer"}))
        error(session.get(VERIFY), 401)


def test_what_a_users_groups_grant_changing_ends_the_users_sessions(
    server: Server, api: httpx.Client
) -> None:
    user = create_user(api, "viewer")
    bystander = create_user(api, "viewer")
    granting = {"name": unique("writers"), "permissions": ["write:certificates"]}
    group = data(api.post(f"{API}/groups", json=granting), 201)
    empty = data(api.post(f"{API}/groups", json={"name": unique("nothing")}), 201)
    members = f"{API}/groups/{group['id']}/members"

    def ended_by(change: object) -> bool:
        with logged_in(server, user["username"]) as (session, _):
            data(session.get(VERIFY))
            change()  # type: ignore[operator]
            return session.get(VERIFY).status_code == 401

    assert not ended_by(
        lambda: data(
            api.post(f"{API}/groups/{empty['id']}/members", json={"user_id": user["id"]}), 201
        )
    )
    assert ended_by(lambda: data(api.post(members, json={"user_id": user["id"]}), 201))
    narrower = {"permissions": ["read:certificates"]}
    assert ended_by(lambda: data(api.put(f"{API}/groups/{group['id']}", json=narrower)))
    assert ended_by(lambda: api.delete(f"{members}/{user['id']}"))
    data(api.post(members, json={"user_id": user["id"]}), 201)
    with logged_in(server, bystander["username"]) as (other, _):
        assert ended_by(lambda: api.delete(f"{API}/groups/{group['id']}"))
        data(other.get(VERIFY))  # not a member: untouched


def test_an_admin_changing_their_own_group_keeps_the_session_making_the_change(
    server: Server, api: httpx.Client
) -> None:
    """The members' sessions end, the admin's other sessions too, but not the very session
    the change came with: its next request goes on (under the permissions read anew)."""
    admin, member = create_user(api, "admin"), create_user(api, "viewer")
    granting = {"name": unique("admins-too"), "permissions": ["write:certificates"]}
    group = data(api.post(f"{API}/groups", json=granting), 201)
    path, members = f"{API}/groups/{group['id']}", f"{API}/groups/{group['id']}/members"
    for user in (admin, member):
        data(api.post(members, json={"user_id": user["id"]}), 201)
    # (method, path, body, whether it ends the other member's sessions too)
    changes = [
        ("PUT", path, {"permissions": ["read:certificates"]}, True),
        ("DELETE", f"{members}/{admin['id']}", None, False),  # leaving it
        ("POST", members, {"user_id": admin["id"]}, False),  # joining it again
        ("DELETE", path, None, True),
    ]
    for method, url, body, whole_group in changes:
        with (
            logged_in(server, admin["username"]) as (acting, csrf),
            logged_in(server, admin["username"]) as (other, _),
            logged_in(server, member["username"]) as (theirs, _),
        ):
            headers = {"X-CSRF-Token": csrf}
            response = acting.request(method, url, json=body, headers=headers)
            assert response.status_code in (200, 201, 204), response.text
            assert data(acting.get(VERIFY))["user"]["id"] == admin["id"]
            error(other.get(VERIFY), 401)
            if whole_group:
                error(theirs.get(VERIFY), 401)
            else:
                data(theirs.get(VERIFY))


def test_an_admin_changing_their_own_role_keeps_the_session_making_the_change(
    server: Server, api: httpx.Client
) -> None:
    admin = create_user(api, "admin")
    with (
        logged_in(server, admin["username"]) as (acting, csrf),
        logged_in(server, admin["username"]) as (other, _),
    ):
        demoted = {"role": "operator"}
        headers = {"X-CSRF-Token": csrf}
        data(acting.put(f"{API}/users/{admin['id']}", json=demoted, headers=headers))
        assert data(acting.get(VERIFY))["role"] == "operator"  # under the new role at once
        error(other.get(VERIFY), 401)


def test_deactivation_revokes_api_keys_for_good(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    for deactivate, reactivate in (
        (
            lambda: api.patch(f"{API}/users/{user['id']}/toggle"),
            lambda: api.patch(f"{API}/users/{user['id']}/toggle"),
        ),
        (
            lambda: api.put(f"{API}/users/{user['id']}", json={"active": False}),
            lambda: api.put(f"{API}/users/{user['id']}", json={"active": True}),
        ),
    ):
        key = key_for(server, user["username"])
        with server.client(api_key=key) as holder:
            data(holder.get(f"{API}/certificates"))
            assert data(deactivate())["active"] is False
            error(holder.get(f"{API}/certificates"), 401)
            assert data(reactivate())["active"] is True
            error(holder.get(f"{API}/certificates"), 401)  # the old key stays dead
        with logged_in(server, user["username"]) as (session, _):
            assert data(session.get(f"{API}/account/apikeys")) == []
    toggles = [r for r in audit_rows(server, "user.toggle") if r["details"]["active"] is False]
    assert toggles[-1]["details"]["api_keys_revoked"] == 1


def test_an_email_change_needs_the_current_password(server: Server, api: httpx.Client) -> None:
    before = email_address("before")
    user = create_user(api, email=before)
    profile = f"{API}/account/profile"
    with logged_in(server, user["username"]) as (session, csrf):
        headers = {"X-CSRF-Token": csrf}
        stolen = {"email": "thief@example.test"}
        assert "current_password" in error(
            session.patch(profile, json=stolen, headers=headers), 400
        )
        wrong = {**stolen, "current_password": "not-the-password"}
        assert "incorrect" in error(session.patch(profile, json=wrong, headers=headers), 400)
        assert data(session.get(profile))["email"] == before
        # A name, or the same address in other case, needs no password.
        same = {"full_name": "Renamed", "email": before.upper()}
        assert data(session.patch(profile, json=same, headers=headers))["full_name"] == "Renamed"
        moved = {"email": "moved@example.test", "current_password": PASSWORD}
        assert data(session.patch(profile, json=moved, headers=headers))["email"] == moved["email"]
    failed = [
        r for r in audit_rows(server, "account.profile_update", user["id"]) if not r["success"]
    ]
    assert len(failed) == 1 and PASSWORD not in str(failed[0]["details"])
    assert can_login(server, user["username"])


def test_own_address_and_password_change_only_with_the_current_password(
    server: Server, api: httpx.Client
) -> None:
    """Whoever may manage users may not, through the users API, move their own address or set
    their own password: that would skip the current password the account API asks for (a
    stolen administrator session would point the reset links elsewhere)."""
    before = email_address("admin-before")
    admin = create_user(api, role="admin", email=before)
    own = f"{API}/users/{admin['id']}"
    with logged_in(server, admin["username"]) as (session, csrf):
        headers = {"X-CSRF-Token": csrf}
        moved = {"email": "thief@example.test"}
        error(session.put(own, json=moved, headers=headers), 403)
        new = {"password": "a-password-chosen-by-a-thief"}
        error(session.put(own, json=new, headers=headers), 403)
        reset = {"new_password": "a-password-chosen-by-a-thief"}
        error(session.post(f"{own}/reset-password", json=reset, headers=headers), 403)
        # What does not touch how the account signs in is still theirs to change there.
        same = {"full_name": "Still Me", "email": before.upper()}
        assert data(session.put(own, json=same, headers=headers))["full_name"] == "Still Me"
    assert data(api.get(own))["email"].lower() == before.lower()
    assert can_login(server, admin["username"])
