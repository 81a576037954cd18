"""Users (toggle, admin password reset, bulk import with mailed invitations) and user groups
(permissions on top of the role, members, stats), organization isolation and RBAC views."""

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from argon2 import PasswordHasher

from tests.e2e.accounts_helpers import (
    API,
    PASSWORD,
    Mailbox,
    audit_rows,
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


def ca_body(name: str) -> dict[str, Any]:
    return {"common_name": name, "key_algorithm": "EC", "key_size": 256, "validity_days": 365}


# --- users --------------------------------------------------------------------------------------


def test_toggle_user(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    key = key_for(server, user["username"])
    with logged_in(server, user["username"]) as (session, _):
        off = data(api.patch(f"{API}/users/{user['id']}/toggle"))
        assert off["active"] is False
        error(session.get(f"{API}/auth/verify"), 401)
        with server.client(api_key=key) as holder:
            error(holder.get(f"{API}/certificates"), 401)
        assert not can_login(server, user["username"])
        on = data(api.patch(f"{API}/users/{user['id']}/toggle"))
        assert on["active"] is True
        with server.client(api_key=key) as holder:  # revoked with the deactivation
            error(holder.get(f"{API}/certificates"), 401)
    assert can_login(server, user["username"])
    me = data(api.get(f"{API}/auth/verify"))["user"]["id"]
    assert "own account" in error(api.patch(f"{API}/users/{me}/toggle"), 409)
    error(api.patch(f"{API}/users/999999/toggle"), 404)
    rows = audit_rows(server, "user.toggle")
    assert [r["details"]["active"] for r in rows[-2:]] == [False, True]


def test_admin_reset_password(server: Server, api: httpx.Client, mail: Mailbox) -> None:
    address = email_address("adminreset")
    user = create_user(api, email=address)
    with logged_in(server, user["username"]) as (session, _):
        done = api.post(
            f"{API}/users/{user['id']}/reset-password", json={"new_password": "set-by-admin-1"}
        )
        assert data(done) == {"email_sent": False}
        error(session.get(f"{API}/auth/verify"), 401)
    assert can_login(server, user["username"], "set-by-admin-1")
    assert not can_login(server, user["username"])
    short = {"new_password": "short"}
    assert "password" in error(
        api.post(f"{API}/users/{user['id']}/reset-password", json=short), 400
    )
    # Without a password: a reset link by mail.
    linked = data(api.post(f"{API}/users/{user['id']}/reset-password", json={}))
    assert linked == {"email_sent": True}
    token = token_from(mail.wait_for(address))
    with server.client(api_key="") as anonymous:
        data(anonymous.post(RESET, json={"token": token, "password": "chosen-by-user-1"}))
    assert can_login(server, user["username"], "chosen-by-user-1")
    # A user writer cannot reset an admin's password.
    narrowed = data(
        api.post(
            f"{API}/account/apikeys",
            json={"name": "users", "permissions": ["read:users", "write:users"]},
        ),
        201,
    )["key"]
    admin_id = data(api.get(f"{API}/auth/verify"))["user"]["id"]
    with server.client(api_key=narrowed) as client:
        takeover = {"new_password": "taken-over-pass"}
        error(client.post(f"{API}/users/{admin_id}/reset-password", json=takeover), 403)


def test_deactivation_voids_links_mailed_before_it(
    server: Server, api: httpx.Client, mail: Mailbox
) -> None:
    """Deactivating an account cuts it off: a reset link mailed before must not set the
    password once the account is active again (a reactivated user asks for a new one), or
    deactivating a compromised account would leave whoever reads its mail a way back in."""
    address = email_address("deactivated")
    user = create_user(api, email=address)
    for off in (
        lambda: api.patch(f"{API}/users/{user['id']}/toggle"),
        lambda: api.put(f"{API}/users/{user['id']}", json={"active": False}),
    ):
        assert data(api.post(f"{API}/users/{user['id']}/reset-password", json={}))["email_sent"]
        token = token_from(mail.wait_for(address))
        assert data(off())["active"] is False
        assert data(api.put(f"{API}/users/{user['id']}", json={"active": True}))["active"]
        with server.client(api_key="") as anonymous:
            late = {"token": token, "password": "after-reactivation-1"}
            assert "invalid or expired" in error(anonymous.post(RESET, json=late), 400)
        assert can_login(server, user["username"])


def test_import_users_with_invitations(server: Server, api: httpx.Client, mail: Mailbox) -> None:
    existing = create_user(api)
    first, second = email_address("inv"), email_address("inv")
    body = {
        "users": [
            {"username": unique("imp"), "email": first, "role": "operator", "full_name": "One"},
            {"username": unique("imp"), "email": second},
            {"username": existing["username"], "email": email_address("dup")},
            {"username": unique("imp"), "email": email_address("bad"), "role": "superuser"},
            {"username": unique("imp")},  # no address: no invitation possible
        ],
        "send_invites": True,
    }
    result = data(api.post(f"{API}/users/import", json=body))
    assert result["imported"] == 2 and result["failed"] == 3 and result["invites_sent"] == 2
    assert [e["index"] for e in result["errors"]] == [2, 3, 4]
    assert "already exists" in result["errors"][0]["error"]
    imported = {u["email"]: u for u in result["users"]}
    assert imported[first]["role"] == "operator" and imported[second]["role"] == "viewer"
    # No password until the invitation is followed.
    assert not can_login(server, imported[first]["username"], "")
    message = mail.wait_for(first)
    assert message["Subject"] == "Tessera: you are invited"
    token = token_from(message)
    with server.client(api_key="") as anonymous:
        data(anonymous.post(RESET, json={"token": token, "password": "invited-password-1"}))
        again = anonymous.post(RESET, json={"token": token, "password": "invited-password-2"})
        error(again, 400)
    assert can_login(server, imported[first]["username"], "invited-password-1")
    # An expired invitation is refused.
    other = token_from(mail.wait_for(second))
    digest = hashlib.sha256(other.encode()).hexdigest()
    db(
        server,
        "UPDATE account_tokens SET expires_at = ? WHERE token_hash = ?",
        (past(server), digest),
    )
    with server.client(api_key="") as anonymous:
        error(anonymous.post(RESET, json={"token": other, "password": "invited-password-3"}), 400)
    # Bad bodies.
    error(api.post(f"{API}/users/import", json={"users": []}), 422)
    error(api.post(f"{API}/users/import", json={"users": "alice"}), 422)
    error(api.post(f"{API}/users/import", json={"users": [{"email": first}]}), 422)
    viewer = key_for(server, create_user(api)["username"])
    with server.client(api_key=viewer) as client:
        error(client.post(f"{API}/users/import", json=body), 403)


def test_a_new_address_voids_links_mailed_to_the_old_one(
    server: Server, api: httpx.Client, mail: Mailbox
) -> None:
    """An invitation mailed to a mistyped address, or a reset link sitting in a mailbox the
    user no longer trusts, must stop working once the address is corrected."""
    wrong, right = email_address("typo"), email_address("fixed")
    body = {"users": [{"username": unique("inv"), "email": wrong}], "send_invites": True}
    (user,) = data(api.post(f"{API}/users/import", json=body))["users"]
    invitation = token_from(mail.wait_for(wrong))
    data(api.put(f"{API}/users/{user['id']}", json={"email": right}))
    with server.client(api_key="") as stranger:
        taken = {"token": invitation, "password": "stranger-password-1"}
        error(stranger.post(RESET, json=taken), 400)
    assert not can_login(server, user["username"], "stranger-password-1")
    # The user's own change of address does the same to a pending reset link.
    data(api.put(f"{API}/users/{user['id']}", json={"password": PASSWORD}))
    with server.client(api_key="") as anonymous:
        data(anonymous.post(f"{API}/auth/forgot-password", json={"email": right}))
    reset = token_from(mail.wait_for(right))
    newer = email_address("newer")
    with logged_in(server, user["username"]) as (client, csrf):
        moved = client.patch(
            f"{API}/account/profile",
            json={"email": newer, "current_password": PASSWORD},
            headers={"X-CSRF-Token": csrf},
        )
        assert data(moved)["email"] == newer
    with server.client(api_key="") as anonymous:
        error(anonymous.post(RESET, json={"token": reset, "password": "from-old-box-1"}), 400)
    assert can_login(server, user["username"])


def test_delete_user_and_write_refusals(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    viewer_key = key_for(server, create_user(api)["username"])
    with server.client(api_key=viewer_key) as client:
        error(client.delete(f"{API}/users/{user['id']}"), 403)
        error(client.patch(f"{API}/users/{user['id']}/toggle"), 403)
        error(client.post(f"{API}/users/{user['id']}/reset-password", json={}), 403)
    assert api.delete(f"{API}/users/{user['id']}").status_code == 204
    error(api.get(f"{API}/users/{user['id']}"), 404)


# --- groups -------------------------------------------------------------------------------------


def test_group_crud_members_and_stats(server: Server, api: httpx.Client) -> None:
    name = unique("Engineering")
    body = {"name": name, "description": "Engineering team", "permissions": ["read:certificates"]}
    group = data(api.post(f"{API}/groups", json=body), 201)
    assert group["name"] == name and group["member_count"] == 0
    assert group["permissions"] == ["read:certificates"]
    error(api.post(f"{API}/groups", json=body), 409)
    error(
        api.post(f"{API}/groups", json={**body, "name": unique("x"), "permissions": ["fly"]}), 400
    )
    error(api.post(f"{API}/groups", json={"description": "no name"}), 422)
    found = data(api.get(f"{API}/groups", params={"search": name.lower()}))
    assert [g["id"] for g in found] == [group["id"]]
    assert data(api.get(f"{API}/groups", params={"search": "%"})) == []  # LIKE wildcards escaped
    update = {
        "name": name,
        "description": "Updated",
        "permissions": ["read:*", "write:certificates"],
    }
    changed = data(api.put(f"{API}/groups/{group['id']}", json=update))
    assert changed["description"] == "Updated"
    assert changed["permissions"] == ["read:*", "write:certificates"]
    alice, bob = create_user(api), create_user(api)
    added = data(
        api.post(f"{API}/groups/{group['id']}/members", json={"user_id": alice["id"]}), 201
    )
    assert added["user_id"] == alice["id"] and added["role"] == "member"
    owner = {"user_id": bob["id"], "role": "owner"}
    data(api.post(f"{API}/groups/{group['id']}/members", json=owner), 201)
    error(api.post(f"{API}/groups/{group['id']}/members", json=owner), 409)
    error(
        api.post(
            f"{API}/groups/{group['id']}/members", json={"user_id": alice["id"], "role": "king"}
        ),
        400,
    )
    error(api.post(f"{API}/groups/{group['id']}/members", json={"user_id": 999999}), 404)
    members = data(api.get(f"{API}/groups/{group['id']}/members"))
    assert {m["user_id"] for m in members} == {alice["id"], bob["id"]}
    shown = data(api.get(f"{API}/groups/{group['id']}"))
    assert shown["member_count"] == 2 and len(shown["members"]) == 2
    stats = data(api.get(f"{API}/groups/stats"))
    assert stats["total_groups"] >= 1 and stats["total_memberships"] >= 2
    assert stats["users_in_groups"] >= 2
    assert api.delete(f"{API}/groups/{group['id']}/members/{bob['id']}").status_code == 204
    error(api.delete(f"{API}/groups/{group['id']}/members/{bob['id']}"), 404)
    assert [m["user_id"] for m in data(api.get(f"{API}/groups/{group['id']}/members"))] == [
        alice["id"]
    ]
    assert api.delete(f"{API}/groups/{group['id']}").status_code == 204
    error(api.get(f"{API}/groups/{group['id']}"), 404)
    error(api.get(f"{API}/groups/{group['id']}/members"), 404)
    assert db(
        server, "SELECT COUNT(*) FROM user_group_members WHERE group_id = ?", (group["id"],)
    ) == [(0,)]
    assert {r["details"].get("name") for r in audit_rows(server, "group.create")} >= {name}


def test_group_grants_permissions_on_top_of_the_role(server: Server, api: httpx.Client) -> None:
    root = data(api.post(f"{API}/cas", json=ca_body(unique("Group Root"))), 201)
    viewer = create_user(api, "viewer")
    issue = {"common_name": "group.example.com", "ca_id": root["id"], "key_algorithm": "EC"}
    group = data(
        api.post(
            f"{API}/groups", json={"name": unique("Issuers"), "permissions": ["write:certificates"]}
        ),
        201,
    )
    with logged_in(server, viewer["username"]) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        error(client.post(f"{API}/certificates", json=issue, headers=headers), 403)
        data(api.post(f"{API}/groups/{group['id']}/members", json={"user_id": viewer["id"]}), 201)
        # The session opened before the grant ends with it (docs/accounts.md).
        error(client.post(f"{API}/certificates", json=issue, headers=headers), 401)
    with logged_in(server, viewer["username"]) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        cert = data(client.post(f"{API}/certificates", json=issue, headers=headers), 201)
        assert cert["created_by"] == viewer["username"]
        profile = data(client.get(f"{API}/account/profile"))
        assert "write:certificates" in profile["permissions"]
        assert profile["groups"] == [{"id": group["id"], "name": group["name"]}]
        # An API key made now may carry the group's grant.
        key = data(
            client.post(
                f"{API}/account/apikeys",
                json={"name": "issuer", "permissions": ["write:certificates", "read:cas"]},
                headers=headers,
            ),
            201,
        )["key"]
        with server.client(api_key=key) as holder:
            data(holder.post(f"{API}/certificates", json=issue), 201)
            # Leaving the group takes the grant away from the key, and ends the session.
            api.delete(f"{API}/groups/{group['id']}/members/{viewer['id']}")
            error(holder.post(f"{API}/certificates", json=issue), 403)
        error(client.post(f"{API}/certificates", json=issue, headers=headers), 401)
    effective = data(api.get(f"{API}/rbac/users/{viewer['id']}/permissions"))
    assert (
        effective["groups"] == [] and "write:certificates" not in effective["effective_permissions"]
    )
    data(api.post(f"{API}/groups/{group['id']}/members", json={"user_id": viewer["id"]}), 201)
    effective = data(api.get(f"{API}/rbac/users/{viewer['id']}/permissions"))
    assert effective["role"] == "viewer" and effective["groups"][0]["id"] == group["id"]
    assert "write:certificates" in effective["effective_permissions"]
    assert "read:certificates" in effective["effective_permissions"]


def test_no_escalation_through_groups(server: Server, api: httpx.Client) -> None:
    manager = create_user(api, "viewer")
    helper_group = data(
        api.post(
            f"{API}/groups",
            json={"name": unique("User managers"), "permissions": ["read:users", "write:users"]},
        ),
        201,
    )
    data(
        api.post(f"{API}/groups/{helper_group['id']}/members", json={"user_id": manager["id"]}), 201
    )
    admins = data(
        api.post(f"{API}/groups", json={"name": unique("Admins"), "permissions": ["*"]}), 201
    )
    key = key_for(server, manager["username"])
    with server.client(api_key=key) as client:
        # Can manage users now, but cannot add themselves to a wider group or widen one.
        error(
            client.post(f"{API}/groups/{admins['id']}/members", json={"user_id": manager["id"]}),
            403,
        )
        wide = {"name": unique("Mine"), "permissions": ["write:cas"]}
        assert "beyond" in error(client.post(f"{API}/groups", json=wide), 403)
        widen = {"permissions": ["read:users", "write:users", "delete:cas"]}
        error(client.put(f"{API}/groups/{helper_group['id']}", json=widen), 403)
        error(client.delete(f"{API}/groups/{admins['id']}"), 403)
        own = data(
            client.post(
                f"{API}/groups", json={"name": unique("Small"), "permissions": ["read:users"]}
            ),
            201,
        )
        assert own["permissions"] == ["read:users"]
    # A user in a wide group is out of reach of a narrower user manager.
    member = create_user(api, "viewer")
    data(api.post(f"{API}/groups/{admins['id']}/members", json={"user_id": member["id"]}), 201)
    with server.client(api_key=key) as client:
        error(client.put(f"{API}/users/{member['id']}", json={"full_name": "pwned"}), 403)
        error(client.patch(f"{API}/users/{member['id']}/toggle"), 403)


def test_other_organizations_objects_are_404(server: Server, api: httpx.Client) -> None:
    """A user of another organization (made directly in the database: there is no
    organization API yet) sees none of the default organization's users or groups."""
    org_name = unique("other-org")
    now = past(server, 0)
    org_id = db(
        server,
        "INSERT INTO organizations (name, created_at) VALUES (?, ?) RETURNING id",
        (org_name, now),
    )[0][0]
    username = unique("foreign")
    db(
        server,
        "INSERT INTO users (org_id, username, email, full_name, password_hash, role, active,"
        " created_at, totp_enabled) VALUES (?, ?, NULL, NULL, ?, 'admin', ?, ?, ?)",
        (org_id, username, PasswordHasher().hash(PASSWORD), True, now, False),
    )
    local_user = create_user(api)
    group = data(api.post(f"{API}/groups", json={"name": unique("Local")}), 201)
    with logged_in(server, username) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        assert [u["username"] for u in data(client.get(f"{API}/users"))] == [username]
        error(client.get(f"{API}/users/{local_user['id']}"), 404)
        error(
            client.put(f"{API}/users/{local_user['id']}", json={"full_name": "x"}, headers=headers),
            404,
        )
        error(client.patch(f"{API}/users/{local_user['id']}/toggle", headers=headers), 404)
        error(
            client.post(
                f"{API}/users/{local_user['id']}/reset-password",
                json={"new_password": "stolen-password"},
                headers=headers,
            ),
            404,
        )
        error(client.delete(f"{API}/users/{local_user['id']}", headers=headers), 404)
        error(client.get(f"{API}/groups/{group['id']}"), 404)
        error(client.get(f"{API}/groups/{group['id']}/members"), 404)
        error(
            client.put(f"{API}/groups/{group['id']}", json={"description": "x"}, headers=headers),
            404,
        )
        error(client.delete(f"{API}/groups/{group['id']}", headers=headers), 404)
        error(client.get(f"{API}/rbac/users/{local_user['id']}/permissions"), 404)
        assert group["id"] not in [g["id"] for g in data(client.get(f"{API}/groups"))]
        assert data(client.get(f"{API}/groups/stats"))["total_groups"] == 0
        # Their own group cannot take in a user of the default organization.
        theirs = data(
            client.post(f"{API}/groups", json={"name": unique("Theirs")}, headers=headers), 201
        )
        error(
            client.post(
                f"{API}/groups/{theirs['id']}/members",
                json={"user_id": local_user["id"]},
                headers=headers,
            ),
            404,
        )
        error(api.get(f"{API}/groups/{theirs['id']}"), 404)  # and the other way round
    assert data(api.get(f"{API}/users/{local_user['id']}"))["full_name"] is None


def _sole_admin_of_a_new_organization(server: Server) -> str:
    """The username of the one admin of a fresh organization (made in the database: there
    is no organization API yet)."""
    now = past(server, 0)
    org_id = db(
        server,
        "INSERT INTO organizations (name, created_at) VALUES (?, ?) RETURNING id",
        (unique("lone-admin-org"), now),
    )[0][0]
    username = unique("lone-admin")
    db(
        server,
        "INSERT INTO users (org_id, username, email, full_name, password_hash, role, active,"
        " created_at, totp_enabled) VALUES (?, ?, NULL, NULL, ?, 'admin', ?, ?, ?)",
        (org_id, username, PasswordHasher().hash(PASSWORD), True, now, False),
    )
    return username


def test_an_organization_keeps_an_active_admin(server: Server) -> None:
    """The last active admin can be neither demoted, deactivated nor deleted, not by
    themselves and not by someone holding '*' through a group: nobody could manage users
    any more. With a second admin, either may go."""
    first = _sole_admin_of_a_new_organization(server)
    with logged_in(server, first) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        me = data(client.get(f"{API}/auth/verify"))["user"]["id"]
        for role in ("operator", "auditor", "viewer"):
            refused = client.put(f"{API}/users/{me}", json={"role": role}, headers=headers)
            assert "last active admin" in error(refused, 409)
        error(client.put(f"{API}/users/{me}", json={"active": False}, headers=headers), 409)
        assert data(client.get(f"{API}/users/{me}"))["role"] == "admin"
        # A second admin: now the first may step down, and the second is the last one.
        second = {"username": unique("second-admin"), "password": PASSWORD, "role": "admin"}
        second_id = data(client.post(f"{API}/users", json=second, headers=headers), 201)["id"]
        # Someone who holds '*' through a group, not through the admin role.
        everything = {"name": unique("Everything"), "permissions": ["*"]}
        group = data(client.post(f"{API}/groups", json=everything, headers=headers), 201)
        holder = {"username": unique("star"), "password": PASSWORD, "role": "viewer"}
        holder_id = data(client.post(f"{API}/users", json=holder, headers=headers), 201)["id"]
        member = {"user_id": holder_id}
        data(client.post(f"{API}/groups/{group['id']}/members", json=member, headers=headers), 201)
        stepped_down = client.put(f"{API}/users/{me}", json={"role": "viewer"}, headers=headers)
        assert data(stepped_down)["role"] == "viewer"
    with logged_in(server, holder["username"]) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        path = f"{API}/users/{second_id}"
        error(client.put(path, json={"role": "operator"}, headers=headers), 409)
        error(client.put(path, json={"active": False}, headers=headers), 409)
        error(client.patch(f"{path}/toggle", headers=headers), 409)
        error(client.delete(path, headers=headers), 409)
        after = data(client.get(path))
        assert (after["role"], after["active"]) == ("admin", True)
        # The first admin, no longer one, may go.
        assert client.delete(f"{API}/users/{me}", headers=headers).status_code == 204
    assert can_login(server, second["username"])


def _step_down(client: httpx.Client, csrf: str, user_id: int, barrier: threading.Barrier) -> int:
    barrier.wait()
    path, body = f"{API}/users/{user_id}", {"role": "viewer"}
    return client.put(path, json=body, headers={"X-CSRF-Token": csrf}).status_code


def test_two_admins_stepping_down_at_once_leave_one(server: Server) -> None:
    """Each of the last two admins demotes themselves at the same moment: one of them is
    refused, whichever runs second (the active admins are locked before the change)."""
    first = _sole_admin_of_a_new_organization(server)
    with logged_in(server, first) as (client, csrf):
        second = {"username": unique("second-admin"), "password": PASSWORD, "role": "admin"}
        data(client.post(f"{API}/users", json=second, headers={"X-CSRF-Token": csrf}), 201)
    for _ in range(3):
        with (
            logged_in(server, first) as (one, one_csrf),
            logged_in(server, second["username"]) as (two, two_csrf),
        ):
            ids = [data(c.get(f"{API}/auth/verify"))["user"]["id"] for c in (one, two)]
            barrier = threading.Barrier(2)
            calls = [(one, one_csrf, ids[0], barrier), (two, two_csrf, ids[1], barrier)]
            with ThreadPoolExecutor(2) as pool:
                statuses = list(pool.map(lambda call: _step_down(*call), calls))
            assert sorted(statuses) == [200, 409], statuses
            # The one refused is still admin, and makes the other admin again for the next
            # round.
            winner = (one, one_csrf) if statuses[0] == 409 else (two, two_csrf)
            stayed, other = ids[statuses.index(409)], ids[statuses.index(200)]
            assert data(winner[0].get(f"{API}/users/{stayed}"))["role"] == "admin"
            assert data(winner[0].get(f"{API}/users/{other}"))["role"] == "viewer"
            again = winner[0].put(
                f"{API}/users/{other}", json={"role": "admin"}, headers={"X-CSRF-Token": winner[1]}
            )
            assert data(again)["role"] == "admin"
