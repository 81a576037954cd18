"""Rate limits: the seed's defaults, 429 with Retry-After in the dialect's error shape, the
X-RateLimit headers, trusted proxies, the configuration/stats/reset endpoints, a limit
shared by two server processes through Redis, and the in-memory fallback."""

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import BACKENDS
from tests.e2e.helpers import data, error
from tests.support import (
    ADMIN_PASSWORD,
    Server,
    admin_api_key,
    database,
    free_port,
    module_server,
    start_server,
    stop_server,
)
from tests.tools import openssl_csr

API = "/api/v2"
SEED_DEFAULTS = {
    "TESSERA_RATE_LIMIT_PER_MINUTE": "100",
    "TESSERA_RATE_LIMIT_AUTH_PER_MINUTE": "10",
    "TESSERA_RATE_LIMIT_EXPORT_PER_MINUTE": "10",
    "TESSERA_RATE_LIMIT_PROTOCOL_PER_MINUTE": "1200",
}
_counter = iter(range(1, 250))


def next_ip() -> str:
    """A fresh client address per test, passed through the trusted proxy (127.0.0.1)."""
    return f"198.51.100.{next(_counter)}"


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {**SEED_DEFAULTS, "TRUSTED_PROXY_IPS": "127.0.0.1/32, ::1/128"}
    with module_server(request.param, tmp_path_factory.mktemp("tessera") / "data", env) as running:
        yield running


def as_ip(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


def assert_429(response: httpx.Response, limit: int, max_retry: int) -> int:
    error(response, 429)
    retry = int(response.headers["retry-after"])
    assert 1 <= retry <= max_retry
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert int(response.headers["x-ratelimit-reset"]) >= int(time.time())
    return retry


def test_default_limit_is_100_per_minute_per_ip(api: httpx.Client) -> None:
    ip = next_ip()
    remaining = []
    for _ in range(100):
        response = api.get(f"{API}/cas", headers=as_ip(ip))
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit"] == "100"
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == list(range(99, -1, -1))
    assert_429(api.get(f"{API}/cas", headers=as_ip(ip)), 100, 60)
    # Another client is not affected; health probes and protocol paths are not counted here.
    assert api.get(f"{API}/cas", headers=as_ip(next_ip())).status_code == 200
    for base in ("/api/v2/health", "/api/health", "/health"):  # every alias a balancer polls
        for path in (base, f"{base}/ready", f"{base}/live"):
            probed = api.get(path, headers=as_ip(ip))
            assert probed.status_code == 200 and "x-ratelimit-limit" not in probed.headers
    public = api.get("/ca/999999.pem", headers=as_ip(ip))
    assert public.status_code == 404
    assert public.headers["x-ratelimit-limit"] == "1200"


def test_scep_on_the_plain_listener_counts_under_the_protocol_limit(server: Server) -> None:
    ip = next_ip()
    with httpx.Client(base_url=server.http_url) as plain:
        first, second = (
            plain.get("/scep/pkiclient.exe?operation=GetCACaps", headers=as_ip(ip))
            for _ in range(2)
        )
    assert first.headers["x-ratelimit-limit"] == second.headers["x-ratelimit-limit"] == "1200"
    assert int(second.headers["x-ratelimit-remaining"]) == 1198


def test_login_limited_to_10_per_minute(server: Server) -> None:
    ip = next_ip()
    with server.client(api_key="") as client:
        for _ in range(10):
            wrong = client.post(
                f"{API}/auth/login/password",
                json={"username": "admin", "password": "wrong"},
                headers=as_ip(ip),
            )
            assert wrong.status_code == 401
        # Even the right password waits: the limit is per address, not per outcome.
        blocked = client.post(
            f"{API}/auth/login/password",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            headers=as_ip(ip),
        )
        assert_429(blocked, 10, 60)
        assert "set-cookie" not in blocked.headers
    # The failures were audited under the client's address (from the trusted proxy's
    # X-Forwarded-For), and the anomaly report names it.
    with server.client() as api:
        report = data(api.get(f"{API}/system/security/anomalies", headers=as_ip(next_ip())))
    assert {
        "type": "failed_logins_from_address",
        "subject": f"ip:{ip}",
        "count": 10,
    }.items() <= next(a for a in report["anomalies"] if a["subject"] == f"ip:{ip}").items()


def test_head_is_limited_as_the_get_it_answers_as(server: Server) -> None:
    """HEAD answers as GET (docs/routing.md), so it is a read and counts as one: a HEAD of
    an auth or second-factor resource counted against the login and 2FA limits, as a write
    (10 HEADs of /auth/verify, a monitor's say, left the address no login)."""
    ip = next_ip()
    with server.client() as api:
        for path in (f"{API}/auth/verify", f"{API}/account/2fa/recovery-codes"):
            for _ in range(10):
                head = api.head(path, headers=as_ip(ip))
                assert head.status_code == 200, (path, head.status_code)
                assert head.headers["x-ratelimit-limit"] == "100", path
    with server.client(api_key="") as client:
        login = client.post(
            f"{API}/auth/login/password",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            headers=as_ip(ip),
        )
        assert login.status_code == 200, login.text


def test_password_reset_request_limited_to_5_per_300s(server: Server) -> None:
    ip = next_ip()
    with server.client(api_key="") as client:
        for _ in range(5):
            response = client.post(
                f"{API}/auth/forgot-password", json={"email": "x@example.com"}, headers=as_ip(ip)
            )
            assert response.status_code != 429
        retry = assert_429(
            client.post(
                f"{API}/auth/forgot-password", json={"email": "x@example.com"}, headers=as_ip(ip)
            ),
            5,
            300,
        )
        assert retry > 60  # the 300-second window of the platform seed


def test_exports_limited_per_user_not_per_address(server: Server, api: httpx.Client) -> None:
    for _ in range(10):
        assert api.get(f"{API}/certificates/export", headers=as_ip(next_ip())).status_code == 200
    # From yet another address, the same user is still over the limit.
    assert_429(api.get(f"{API}/certificates/export", headers=as_ip(next_ip())), 10, 60)
    other = _user_key(server, api, "auditor")
    with server.client(api_key=other) as client:
        assert client.get(f"{API}/certificates/export").status_code == 200


def test_attaching_a_key_to_a_csr_is_no_export(
    server: Server, api: httpx.Client, tmp_path: Path
) -> None:
    """POST /csrs/{id}/key uploads a key; only POST /certificates/{id}/key hands one out."""
    key, csr = openssl_csr(tmp_path, "/CN=rl-attach.example.test")
    with server.client(api_key=_user_key(server, api, "operator")) as client:
        pending = data(client.post(f"{API}/csrs/upload", json={"pem": csr.read_text()}), 201)
        for _ in range(10):
            assert client.get(f"{API}/certificates/export").status_code == 200
        assert_429(client.post(f"{API}/certificates/1/key"), 10, 60)
        attached = client.post(f"{API}/csrs/{pending['id']}/key", json={"key": key.read_text()})
        assert data(attached)["has_private_key"] is True


def test_export_attempts_with_unknown_credentials_count_per_address(server: Server) -> None:
    """A credential that belongs to nobody is no user: a client inventing a new one for
    every request is counted under its address, not once per invented key."""
    ip = next_ip()
    with server.client(api_key="") as client:
        for _ in range(10):
            guessed = {**as_ip(ip), "X-API-Key": uuid.uuid4().hex}
            assert client.get(f"{API}/certificates/export", headers=guessed).status_code == 401
        guessed = {**as_ip(ip), "X-API-Key": uuid.uuid4().hex}
        assert_429(client.get(f"{API}/certificates/export", headers=guessed), 10, 60)
        bearer = {**as_ip(ip), "Authorization": f"Bearer {uuid.uuid4().hex}"}
        assert_429(client.get(f"{API}/certificates/export", headers=bearer), 10, 60)


def test_account_second_factor_steps_limited_per_user_not_per_address(
    server: Server, api: httpx.Client
) -> None:
    """Guessing the code that confirms or turns off 2FA with a stolen session or key: five
    tries in 300 s per user, whatever address each comes from."""
    key = _user_key(server, api, "viewer")
    with server.client(api_key=key) as client:
        enabled = client.post(f"{API}/account/2fa/enable", headers=as_ip(next_ip()))
        assert data(enabled)["secret"]
        for _ in range(4):
            wrong = {"code": "000000"}
            response = client.post(
                f"{API}/account/2fa/confirm", json=wrong, headers=as_ip(next_ip())
            )
            error(response, 400)
        retry = assert_429(
            client.post(
                f"{API}/account/2fa/confirm", json={"code": "000000"}, headers=as_ip(next_ip())
            ),
            5,
            300,
        )
        assert retry > 60
        # Reading the 2FA state is not a guess.
        assert client.get(f"{API}/account/2fa/recovery-codes").status_code == 200
    other = _user_key(server, api, "viewer")
    with server.client(api_key=other) as client:
        assert client.post(f"{API}/account/2fa/enable").status_code == 200


def test_a_decoy_credential_beside_the_real_one_is_still_counted_per_user(
    server: Server, api: httpx.Client
) -> None:
    """The limiter counts the credential the request is authenticated with. A second
    X-API-Key header, or the session cookie named twice, put an invented credential where
    the limiter looked (last header, first cookie) while the request was authenticated with
    the real one (first header, last cookie): each try then counted under its address, and a
    stolen key or session could guess 2FA codes from many addresses."""
    key = _user_key(server, api, "viewer")
    with server.client(api_key="") as client:

        def with_decoy_key(path: str, body: object = None) -> httpx.Response:
            headers = [("X-Forwarded-For", next_ip()), ("X-API-Key", key)]
            headers.append(("X-API-Key", uuid.uuid4().hex))  # the decoy, repeated header
            return client.post(f"{API}{path}", json=body, headers=headers)

        assert data(with_decoy_key("/account/2fa/enable"))["secret"]
        for _ in range(4):
            error(with_decoy_key("/account/2fa/confirm", {"code": "000000"}), 400)
        assert_429(with_decoy_key("/account/2fa/confirm", {"code": "000000"}), 5, 300)

    session, csrf = _user_session(server, api)
    with server.client(api_key="") as client:

        def with_decoy_cookie(path: str, body: object = None) -> httpx.Response:
            cookie = f"tessera_session={uuid.uuid4().hex}; tessera_session={session}"
            headers = {"X-Forwarded-For": next_ip(), "Cookie": cookie, "X-CSRF-Token": csrf}
            return client.post(f"{API}{path}", json=body, headers=headers)

        assert data(with_decoy_cookie("/account/2fa/enable"))["secret"]
        for _ in range(4):
            error(with_decoy_cookie("/account/2fa/confirm", {"code": "000000"}), 400)
        assert_429(with_decoy_cookie("/account/2fa/confirm", {"code": "000000"}), 5, 300)


def _user_session(server: Server, api: httpx.Client) -> tuple[str, str]:
    """A new viewer's session cookie value and CSRF token."""
    name = f"rl-session-{uuid.uuid4().hex[:8]}"
    password = "Password-for-" + uuid.uuid4().hex
    body = {"username": name, "password": password, "role": "viewer"}
    data(api.post(f"{API}/users", json=body), 201)
    with server.client(api_key="") as client:
        login = client.post(
            f"{API}/auth/login/password",
            json={"username": name, "password": password},
            headers=as_ip(next_ip()),
        )
        return str(login.cookies["tessera_session"]), str(data(login)["csrf_token"])


def _user_key(server: Server, api: httpx.Client, role: str) -> str:
    name = f"rl-{role}-{uuid.uuid4().hex[:8]}"
    password = "Password-for-" + uuid.uuid4().hex
    data(
        api.post(
            f"{API}/users",
            json={
                "username": name,
                "password": password,
                "role": role,
                "email": f"{name}@example.com",
            },
        ),
        201,
    )
    with server.client(api_key="") as client:
        login = client.post(
            f"{API}/auth/login/password",
            json={"username": name, "password": password},
            headers=as_ip(next_ip()),
        )
        csrf = data(login)["csrf_token"]
        created = client.post(
            f"{API}/account/apikeys", json={"name": "rl"}, headers={"X-CSRF-Token": csrf}
        )
        return str(data(created, 201)["key"])


def test_forwarded_for_from_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    env = {**SEED_DEFAULTS, "TESSERA_RATE_LIMIT_PER_MINUTE": "3"}
    running = start_server(tmp_path / "data", None, env=env)
    try:
        running.api_key = admin_api_key(running)
        with running.client() as api:
            statuses = [
                api.get(f"{API}/cas", headers=as_ip(f"203.0.113.{i}")).status_code for i in range(5)
            ]
        # Setting up the API key took one request already: 2 left, whatever the header says.
        assert statuses == [200, 200, 429, 429, 429]
        assert "TRUSTED_PROXY_IPS is not set" in running.log()
    finally:
        stop_server(running)


def test_config_update_stats_and_reset(server: Server, api: httpx.Client) -> None:
    admin = {"X-API-Key": server.api_key, **as_ip(next_ip())}
    config = data(api.get(f"{API}/system/security/rate-limit", headers=admin))
    assert config["requests_per_minute"] == 100 and config["enabled"] is True
    assert config["auth_requests_per_minute"] == 10
    assert config["backend"] == "memory"
    for bad in ({"requests_per_minute": 0}, {"requests_per_minute": "many"}, {"bogus": 1}, {}):
        response = api.put(f"{API}/system/security/rate-limit", json=bad, headers=admin)
        assert response.status_code in (400, 422), response.text
    try:
        updated = data(
            api.put(
                f"{API}/system/security/rate-limit", json={"requests_per_minute": 3}, headers=admin
            )
        )
        assert updated["requests_per_minute"] == 3
        ip = next_ip()
        statuses = [api.get(f"{API}/cas", headers=as_ip(ip)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        stats = data(api.get(f"{API}/system/security/rate-limit/stats", headers=as_ip(next_ip())))
        assert stats["total_blocked"] >= 1 and stats["rules"]["default"]["blocked"] >= 1
        reset = data(api.post(f"{API}/system/security/rate-limit/reset", headers=as_ip(next_ip())))
        assert reset["reset"] is True
        assert api.get(f"{API}/cas", headers=as_ip(ip)).status_code == 200
        off = data(
            api.put(
                f"{API}/system/security/rate-limit",
                json={"enabled": False},
                headers=as_ip(next_ip()),
            )
        )
        assert off["enabled"] is False
        unlimited = api.get(f"{API}/cas", headers=as_ip(ip))
        assert unlimited.status_code == 200 and "x-ratelimit-limit" not in unlimited.headers
    finally:
        data(
            api.put(
                f"{API}/system/security/rate-limit",
                json={"enabled": True, "requests_per_minute": 100},
                headers=as_ip(next_ip()),
            )
        )


def _spread(server: Server, count: int) -> list[int]:
    """One connection per request, so the kernel spreads them over both workers."""
    statuses = []
    for _ in range(count):
        with server.client() as client:
            statuses.append(client.get(f"{API}/cas").status_code)
    return statuses


def test_redis_shares_one_limit_across_two_processes(tmp_path: Path) -> None:
    prefix = f"tessera-test:{uuid.uuid4().hex}:"
    env = {
        **SEED_DEFAULTS,
        "TESSERA_RATE_LIMIT_PER_MINUTE": "12",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "TESSERA_REDIS_PREFIX": prefix,
    }
    with database("postgresql") as url:
        running = start_server(tmp_path / "data", url, workers=2, env=env)
        try:
            running.api_key = admin_api_key(running)  # one request of the default limit
            statuses = _spread(running, 20)
            # In-memory counting would allow up to 12 per process (24 here): 11 in all.
            assert statuses.count(200) == 11 and statuses.count(429) == 9, statuses
            with running.client() as api:
                response = api.get(f"{API}/system/security/rate-limit/stats")
            assert response.status_code == 429
            keys = redis.Redis.from_url("redis://127.0.0.1:6379/0").keys(prefix + "*")
            names = [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
            assert any(n.startswith(prefix + "default:ip:") for n in names)
        finally:
            stop_server(running)
            client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
            for key in client.scan_iter(match=prefix + "*"):
                client.delete(key)


def test_fallback_to_memory_when_redis_is_unreachable(tmp_path: Path) -> None:
    env = {
        **SEED_DEFAULTS,
        "TESSERA_RATE_LIMIT_PER_MINUTE": "4",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    running = start_server(tmp_path / "data", None, env=env)
    try:
        running.api_key = admin_api_key(running)
        with running.client() as api:
            statuses = [api.get(f"{API}/cas").status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
    finally:
        stop_server(running)


def _redis_server(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def test_redis_goes_away_and_comes_back(tmp_path: Path) -> None:
    port = free_port()
    own = _redis_server(port, tmp_path)
    env = {
        **SEED_DEFAULTS,
        "TESSERA_RATE_LIMIT_PER_MINUTE": "1000",
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
    }
    running = start_server(tmp_path / "data", None, env=env)
    try:
        running.api_key = admin_api_key(running)
        with running.client() as api:
            assert data(api.get(f"{API}/system/security/rate-limit"))["backend"] == "redis"
            assert redis.Redis(port=port).keys("tessera:rl:default:*")
            own.terminate()
            own.wait()
            for _ in range(3):  # answered (counted in memory), never a 500
                response = api.get(f"{API}/cas")
                assert response.status_code == 200 and "x-ratelimit-remaining" in response.headers
            backend = data(api.get(f"{API}/system/security/rate-limit"))["backend"]
            assert backend == "memory (redis unavailable)"
            own = _redis_server(port, tmp_path)
            deadline = time.monotonic() + 30
            while not redis.Redis(port=port).keys("tessera:rl:default:*"):
                assert time.monotonic() < deadline, "Redis was not used again"
                api.get(f"{API}/cas")
                time.sleep(0.5)
            assert data(api.get(f"{API}/system/security/rate-limit"))["backend"] == "redis"
    finally:
        stop_server(running)
        own.kill()
        own.wait()


def test_acme_requests_over_the_limit_are_rate_limited_problems(
    server: Server, api: httpx.Client
) -> None:
    """RFC 8555 6.6: "Once the rate limit is exceeded, the server MUST respond with an error
    with the type urn:ietf:params:acme:error:rateLimited", with Retry-After."""
    admin = {"X-API-Key": server.api_key, **as_ip(next_ip())}
    rule = f"{API}/system/security/rate-limit"
    try:
        data(api.put(rule, json={"protocol_requests_per_minute": 2}, headers=admin))
        ip = next_ip()
        answers = [api.get("/acme/new-nonce", headers=as_ip(ip)) for _ in range(3)]
        assert [a.status_code for a in answers] == [204, 204, 429]
        refused = answers[-1]
        assert refused.headers["content-type"].startswith("application/problem+json")
        body = refused.json()
        assert body["type"] == "urn:ietf:params:acme:error:rateLimited", body
        assert body["status"] == 429 and int(refused.headers["retry-after"]) >= 1
    finally:
        data(api.put(rule, json={"protocol_requests_per_minute": 1200}, headers=as_ip(next_ip())))
