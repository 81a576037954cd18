"""Rate limiting as pure ASGI middleware, in front of everything (including issuance).

Windows live in Redis when `REDIS_URL` is set, so every server process (and host) shares
one count per subject; one Lua script per request makes the check-and-count atomic. When
Redis is unset or unreachable the process counts in memory; after a failure Redis is tried
again a few seconds later, and used again as soon as it answers. The policy (limits, on/off)
lives in the database so a change through the API reaches every process within seconds.
"""

import dataclasses
import ipaddress
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera.api.deps import SESSION_COOKIE, presented_api_key
from tessera.api.headers import dialect_error
from tessera.config import Settings
from tessera.core.limits import Decision, MemoryWindows, Policy, Rule
from tessera.core.names import is_ip_address
from tessera.domains.identity.secrets import token_digest
from tessera.runtime import Runtime
from tessera.storage.repositories.identity import ApiKeyRepository, WebSessionRepository
from tessera.storage.repositories.security import SecurityRepository

log = logging.getLogger("tessera.ratelimit")
SETTING = "rate_limit"
RELOAD_SECONDS = 2.0
REDIS_RETRY_SECONDS = 5.0
SUBJECT_CACHE_SECONDS = 60.0
POLICY_FIELDS = {
    "enabled": "enabled",
    "requests_per_minute": "per_minute",
    "auth_requests_per_minute": "auth_per_minute",
    "export_requests_per_minute": "export_per_minute",
    "protocol_requests_per_minute": "protocol_per_minute",
}

# Sliding log in a sorted set, scored by Redis' own clock (one clock for every host).
# Returns {allowed, count, oldest_ms, now_ms}.
LUA_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  count = count + 1
  allowed = 1
  redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':allowed', 1)
else
  redis.call('HINCRBY', KEYS[2], ARGV[3] .. ':blocked', 1)
end
redis.call('PEXPIRE', KEYS[1], window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local first = now
if oldest[2] then first = tonumber(oldest[2]) end
return {allowed, count, first, now}
"""


def policy_from_settings(settings: Settings) -> Policy:
    return Policy(
        enabled=settings.rate_limit_enabled,
        per_minute=settings.rate_limit_per_minute,
        auth_per_minute=settings.rate_limit_auth_per_minute,
        export_per_minute=settings.rate_limit_export_per_minute,
        protocol_per_minute=settings.rate_limit_protocol_per_minute,
    )


def policy_document(policy: Policy) -> dict[str, Any]:
    return {wire: getattr(policy, attr) for wire, attr in POLICY_FIELDS.items()}


def apply_document(base: Policy, document: dict[str, Any]) -> Policy:
    changes = {POLICY_FIELDS[k]: v for k, v in document.items() if k in POLICY_FIELDS}
    return dataclasses.replace(base, **changes)


class RedisWindows:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._client = aioredis.Redis.from_url(
            url, socket_connect_timeout=0.25, socket_timeout=0.5, retry_on_timeout=False
        )
        self._script = self._client.register_script(LUA_SLIDING_WINDOW)
        self._members = itertools.count()
        self._tag = f"{os.getpid()}-{os.urandom(3).hex()}"
        self.down_until = 0.0

    @property
    def stats_key(self) -> str:
        return f"{self.prefix}stats"

    def available(self) -> bool:
        return time.monotonic() >= self.down_until

    def mark_down(self, exc: BaseException) -> None:
        if self.available():
            log.warning("Redis unavailable (%s); counting in memory for now", exc)
        self.down_until = time.monotonic() + REDIS_RETRY_SECONDS

    async def hit(self, key: str, rule: Rule) -> Decision:
        window_ms = int(rule.window * 1000)
        member = f"{self._tag}-{next(self._members)}"
        result = await self._script(
            keys=[self.prefix + key, self.stats_key],
            args=[window_ms, rule.limit, rule.name, member],
        )
        allowed, count, first, _now = (int(v) for v in result)
        return Decision(
            bool(allowed), rule.limit, max(0, rule.limit - count), (first + window_ms) / 1000
        )

    async def stats(self) -> dict[str, int]:
        raw = await self._client.hgetall(self.stats_key)
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}

    def reset_blocking(self) -> int:
        """From a worker thread: a short-lived synchronous client (the async one belongs to
        the event loop)."""
        removed = 0
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=2)
        try:
            for key in client.scan_iter(match=f"{self.prefix}*", count=500):
                removed += int(client.delete(key))
        finally:
            client.close()
        return removed


class Limiter:
    """One per process: the policy in force, the windows, and the counters."""

    def __init__(self, settings: Settings) -> None:
        self.base = policy_from_settings(settings)
        self.policy = self.base
        self.memory = MemoryWindows()
        self.redis = (
            RedisWindows(settings.redis_url, settings.redis_prefix)
            if (settings.redis_url)
            else None
        )
        self.trusted = _networks(settings.trusted_proxy_ips)
        self.counts: Counter[str] = Counter()
        self.setting_version: int | None = None
        self.reset_generation = 0
        self._subjects: dict[str, tuple[str | None, float]] = {}

    @property
    def backend(self) -> str:
        if self.redis is None:
            return "memory"
        return "redis" if self.redis.available() else "memory (redis unavailable)"

    async def hit(self, key: str, rule: Rule) -> Decision:
        if self.redis is not None and self.redis.available():
            try:
                return await self.redis.hit(key, rule)
            except (TimeoutError, RedisError, OSError) as exc:
                self.redis.mark_down(exc)
        decision = self.memory.hit(key, rule.limit, rule.window, time.time())
        self.counts[f"{rule.name}:{'allowed' if decision.allowed else 'blocked'}"] += 1
        return decision

    def client_ip(self, scope: Scope) -> str:
        """The peer address; X-Forwarded-For only when the peer is a trusted proxy, read
        from the right, skipping further trusted proxies (the left end is client-written)."""
        peer = scope["client"][0] if scope.get("client") else "unknown"
        if not self.trusted or not _within(peer, self.trusted):
            return peer
        forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
        hops = [h.strip() for h in ",".join(forwarded).split(",") if h.strip()]
        for hop in reversed(hops):
            if not is_ip_address(hop):
                return peer
            if not _within(hop, self.trusted):
                return hop
        return hops[0] if hops else peer

    async def user_subject(self, scope: Scope, runtime: Runtime, ip: str) -> str:
        """The credential's owner; the address when there is none, or when the credential
        is nobody's: an invented key per request must not make a new subject each time."""
        credential = _credential(scope)
        if credential is None:
            return f"ip:{ip}"
        digest = token_digest(credential)
        cached = self._subjects.get(digest)
        now = time.monotonic()
        if cached and cached[1] > now:
            return cached[0] or f"ip:{ip}"
        user = await run_in_threadpool(_resolve_user, runtime, digest)
        if len(self._subjects) > 10_000:
            self._subjects.clear()
        self._subjects[digest] = (user, now + SUBJECT_CACHE_SECONDS)
        return user or f"ip:{ip}"

    def reload(self, runtime: Runtime) -> None:
        """The job: pick up the policy and resets written by any process (one small read)."""
        with runtime.sessions() as session:
            repo = SecurityRepository(session)
            version = repo.setting_version(SETTING)
            if version is None or version == self.setting_version:
                return
            row = repo.setting(SETTING)
            document = dict(row.value) if row else {}
        self.apply(document, version)

    def apply(self, document: dict[str, Any], version: int | None) -> None:
        self.policy = apply_document(self.base, document)
        generation = int(document.get("reset_generation", 0))
        if generation != self.reset_generation:
            self.reset_generation = generation
            self.memory.clear()
        self.setting_version = version


def _credential(scope: Scope) -> str | None:
    """The credential the request is authenticated with, read as `deps.current_actor` reads
    it: a decoy credential beside the real one must not move the count elsewhere."""
    connection = HTTPConnection(scope)
    return presented_api_key(connection) or connection.cookies.get(SESSION_COOKIE) or None


def _resolve_user(runtime: Runtime, digest: str) -> str | None:
    with runtime.sessions() as session:
        found = ApiKeyRepository(session).with_owner(digest)
        if found is not None:
            return f"user:{found[1].id}"
        web = WebSessionRepository(session).by_hash(digest, runtime.clock())
        return f"user:{web.user_id}" if web is not None else None


def _networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for item in (s.strip() for s in spec.split(",")):
        if item:
            networks.append(ipaddress.ip_network(item, strict=False))
    return networks


def _within(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


class RateLimit:
    def __init__(self, app: ASGIApp, limiter: Limiter, runtime: Runtime) -> None:
        self.app = app
        self.limiter = limiter
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ip = self.limiter.client_ip(scope)
        if self.limiter.trusted and scope.get("client") and ip != scope["client"][0]:
            # Everything downstream (audit rows, sessions) sees the client, not the proxy.
            scope["client"] = (ip, scope["client"][1])
        policy = self.limiter.policy
        rule = policy.rule(scope["method"], scope["path"]) if policy.enabled else None
        if rule is None:
            await self.app(scope, receive, send)
            return
        subject = (
            await self.limiter.user_subject(scope, self.runtime, ip)
            if rule.per_user
            else f"ip:{ip}"
        )
        decision = await self.limiter.hit(f"{rule.name}:{subject}", rule)
        headers = _headers(decision)
        if not decision.allowed:
            await self._refuse(scope, receive, send, rule, decision, headers)
            return
        await self.app(scope, receive, _adding(send, headers))

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rule: Rule,
        decision: Decision,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        retry = decision.retry_after(time.time())
        response = dialect_error(
            scope["path"],
            429,
            f"rate limit exceeded: {rule.limit} requests per {int(rule.window)} s; "
            f"retry in {retry} s",
        )
        response.headers["Retry-After"] = str(retry)
        for name, value in headers:
            response.headers[name.decode()] = value.decode()
        await response(scope, receive, send)


def _headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit", str(decision.limit).encode()),
        (b"x-ratelimit-remaining", str(decision.remaining).encode()),
        (b"x-ratelimit-reset", str(int(decision.reset + 0.999)).encode()),
    ]


def _adding(send: Send, headers: list[tuple[bytes, bytes]]) -> Callable[[Message], Any]:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *headers]}
        await send(message)

    return wrapped


def install(app: FastAPI, runtime: Runtime) -> Limiter:
    settings = runtime.settings
    limiter = Limiter(settings)
    app.state.limiter = limiter
    app.add_middleware(RateLimit, limiter=limiter, runtime=runtime)
    runtime.jobs.every("rate-limit-policy", RELOAD_SECONDS, lambda: limiter.reload(runtime))
    return limiter
