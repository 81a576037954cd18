"""Password logins are throttled per username (domains/identity/throttle.py): after five
failures, from whatever addresses, the name's password logins are refused with 429 for a
back-off that grows, right password or not, known account or not, in every worker process."""

import hashlib
import itertools
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.accounts_helpers import (
    LOGIN,
    PASSWORD,
    audit_rows,
    create_user,
    db,
    logged_in,
    past,
)
from tests.e2e.helpers import API, data, error, unique
from tests.support import Server, module_server

ENV = {
    "TESSERA_LOGIN_THROTTLE_FAILURES": "5",
    "TESSERA_LOGIN_THROTTLE_BASE_SECONDS": "60",
    "TESSERA_LOGIN_THROTTLE_MAX_SECONDS": "900",
    "TRUSTED_PROXY_IPS": "127.0.0.1/32, ::1/128",
}
_addresses = itertools.count(1)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Two worker processes: they share the count only through the database."""
    data_dir = tmp_path_factory.mktemp("tessera") / "data"
    with module_server(request.param, data_dir, ENV, workers=2) as running:
        yield running


def attempt(server: Server, username: str, password: str) -> httpx.Response:
    """One login on a new connection (either worker) from a new address."""
    address = f"203.0.113.{next(_addresses) % 250 + 1}"
    with server.client(api_key="") as client:
        body = {"username": username, "password": password}
        return client.post(LOGIN, json=body, headers={"X-Forwarded-For": address})


def fail(server: Server, username: str, times: int) -> None:
    for _ in range(times):
        error(attempt(server, username, "wrong-password-123"), 401)


def refused(response: httpx.Response, most: int = 60) -> str:
    """A throttled answer: 429 in the native error shape, Retry-After, no session."""
    message = error(response, 429)
    assert 1 <= int(response.headers["retry-after"]) <= most, response.headers
    assert "set-cookie" not in response.headers
    return re.sub(r"\d+", "N", message)


def test_failures_throttle_the_name_from_any_address_known_or_not(
    server: Server, api: httpx.Client
) -> None:
    user = create_user(api)
    fail(server, user["username"], 5)
    throttled = refused(attempt(server, user["username"], PASSWORD))  # right, yet refused
    refused(attempt(server, user["username"], "wrong-password-123"))

    ghost = unique("nobody")
    fail(server, ghost, 5)
    assert refused(attempt(server, ghost, PASSWORD)) == throttled  # no account: the same

    rows = [r for r in audit_rows(server, "auth.login", user["id"]) if not r["success"]]
    assert len(rows) == 7
    assert [r["details"]["reason"] for r in rows[5:]] == ["too many failed logins: throttled"] * 2
    assert all(PASSWORD not in str(r["details"]) for r in rows)


def test_a_burst_across_workers_gets_no_more_tries(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    with ThreadPoolExecutor(10) as pool:
        answers = list(
            pool.map(lambda _: attempt(server, user["username"], "wrong-1234"), range(12))
        )
    assert sorted(a.status_code for a in answers) == [401] * 5 + [429] * 7


def test_a_right_password_starts_the_count_over(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    fail(server, user["username"], 4)
    data(attempt(server, user["username"], PASSWORD))
    fail(server, user["username"], 4)
    data(attempt(server, user["username"], PASSWORD))


def test_back_off_grows_and_an_admin_sees_and_clears_it(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    state = f"{API}/users/{user['id']}/login-throttle"
    assert data(api.get(state))["throttled"] is False
    fail(server, user["username"], 5)
    refused(attempt(server, user["username"], PASSWORD), most=60)
    shown = data(api.get(state))
    assert shown["throttled"] is True and 1 <= shown["retry_after"] <= 60, shown

    # The lock runs out (moved into the past here); five more failures lock for longer.
    subject = hashlib.sha256(user["username"].encode()).hexdigest()
    ended = past(server)
    db(server, "UPDATE login_throttles SET locked_until = ? WHERE subject = ?", (ended, subject))
    fail(server, user["username"], 5)
    second = attempt(server, user["username"], PASSWORD)
    refused(second, most=120)
    assert int(second.headers["retry-after"]) > 60

    assert data(api.delete(state))["cleared"] is True
    assert audit_rows(server, "user.login_throttle_clear", None)
    data(attempt(server, user["username"], PASSWORD))


def test_a_password_set_by_an_admin_lifts_it(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    fail(server, user["username"], 5)
    refused(attempt(server, user["username"], PASSWORD))
    new = {"new_password": "a-brand-new-password"}
    data(api.post(f"{API}/users/{user['id']}/reset-password", json=new))
    data(attempt(server, user["username"], "a-brand-new-password"))


def test_current_password_checks_count_against_the_name(server: Server, api: httpx.Client) -> None:
    """Changing the password or the email address checks the current password: a session or
    full-access key, from addresses that rotate, must not guess it there without end. Those
    guesses count for the name as failed logins do, and a throttled name is refused there."""
    user = create_user(api)
    new = "a-brand-new-password"
    with logged_in(server, user["username"]) as (session, csrf):
        headers = {"X-CSRF-Token": csrf}
        change, profile = f"{API}/account/password", f"{API}/account/profile"
        for n in range(3):
            guess = {"current_password": f"guess-{n}-wrong", "new_password": new}
            error(session.post(change, json=guess, headers=headers), 400)
        for n in range(2):
            guess = {"email": "thief@example.test", "current_password": f"guess-{n}-wrong"}
            error(session.patch(profile, json=guess, headers=headers), 400)
        right = {"email": "thief@example.test", "current_password": PASSWORD}
        refused(session.patch(profile, json=right, headers=headers))
        again = {"current_password": PASSWORD, "new_password": new}
        refused(session.post(change, json=again, headers=headers))
        refused(attempt(server, user["username"], PASSWORD))
        assert data(session.get(profile))["email"] != right["email"]
    rows = audit_rows(server, "account.password_change", user["id"])
    assert [r["details"]["reason"] for r in rows][-1] == "too many failed logins: throttled"


def test_a_right_current_password_starts_the_count_over(server: Server, api: httpx.Client) -> None:
    user = create_user(api)
    with logged_in(server, user["username"]) as (session, csrf):
        fail(server, user["username"], 4)
        right = {"email": "moved@example.test", "current_password": PASSWORD}
        data(session.patch(f"{API}/account/profile", json=right, headers={"X-CSRF-Token": csrf}))
    fail(server, user["username"], 4)
    data(attempt(server, user["username"], PASSWORD))


def test_a_right_current_password_counts_no_failure_when_the_change_is_refused(
    server: Server, api: httpx.Client
) -> None:
    """A change refused for another reason than the current password (a new one the policy
    refuses) still proved the current one: the name's count starts over, as after a login
    with the right password, instead of the attempt counting as a failure."""
    user = create_user(api)
    state = f"{API}/users/{user['id']}/login-throttle"
    change = f"{API}/account/password"
    with logged_in(server, user["username"]) as (session, csrf):
        fail(server, user["username"], 4)
        weak = {"current_password": PASSWORD, "new_password": "short"}
        assert "password must be" in error(
            session.post(change, json=weak, headers={"X-CSRF-Token": csrf}), 400
        )
        assert data(api.get(state))["failures"] == 0
        data(attempt(server, user["username"], PASSWORD))  # not the fifth failure: no lock
        wrong = {"current_password": "guess-wrong-1234", "new_password": "a-brand-new-password"}
        error(session.post(change, json=wrong, headers={"X-CSRF-Token": csrf}), 400)
        assert data(api.get(state))["failures"] == 1  # a wrong one still counts
