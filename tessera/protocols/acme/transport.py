"""What every ACME request and response shares: the body limit and media type, nonces,
the JWS checks of RFC 8555 6.2-6.5, and the Replay-Nonce / Link / Cache-Control headers."""

import logging
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera.api.deps import answer_error, commit_before_answering
from tessera.api.openapi import request_body
from tessera.protocols.acme import jws
from tessera.protocols.acme.problems import (
    AcmeProblem,
    bad_nonce,
    inactive_account,
    malformed,
    problem_response,
    unauthorized,
)
from tessera.protocols.body import read_body
from tessera.runtime import Runtime
from tessera.storage.models_acme import AcmeAccount
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.acme import AcmeNonceRepository

PREFIX = "/acme"
NEW_NONCE = PREFIX + "/new-nonce"
MAX_BODY = 64 * 1024
NONCE_TTL = timedelta(hours=1)
JOSE = "application/jose+json"
# Every POST under /acme/ (`read_jws`), in the OpenAPI document: a flattened JWS (RFC 8555 6.2).
B64URL = {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"}
JWS_BODY = request_body(
    "a flattened JWS (RFC 7515 7.2.2), signed by the account key (kid) or a new key (jwk); "
    "an empty payload is a POST-as-GET",
    {
        JOSE: {
            "type": "object",
            "properties": {
                "protected": {**B64URL, "description": "base64url of the protected header"},
                "payload": {**B64URL, "description": "base64url of the JSON payload, or empty"},
                "signature": {**B64URL, "description": "base64url of the signature"},
            },
            "required": ["protected", "payload", "signature"],
        }
    },
)
# What the nonce stores raise when they are down: the SQLite deployment's nonce file, the
# database, Redis.
NONCE_STORE_ERRORS = (sqlite3.Error, SQLAlchemyError, RedisError)
NONCE_RETRY_AFTER = "5"  # seconds; a batch is stored again on the next request

log = logging.getLogger("tessera.acme")


def base_url(rt: Runtime) -> str:
    return rt.settings.https_base + PREFIX


class NoncePool:
    """Writing one nonce per response would cost a transaction each; a process instead stores
    a batch in one INSERT and hands them out from memory (each still spent exactly once, by
    its DELETE)."""

    BATCH = 32
    # Handed out with most of their lifetime left, so clients get usable nonces.
    FRESH = NONCE_TTL / 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: list[str] = []
        self._stored_at: datetime | None = None

    def ready(self, rt: Runtime) -> str | None:
        """A stored nonce without touching the database, or None when a batch must be
        stored first (`take`): the common case needs no thread-pool hop. Runs on the event
        loop, so it never waits for the lock: `take` holds it while waiting for SQLite's
        write lock, whose holder may need this very loop to commit."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._ready and self._stored_at and rt.clock() - self._stored_at <= self.FRESH:
                return self._ready.pop()
            return None
        finally:
            self._lock.release()

    def take(self, rt: Runtime) -> str:
        with self._lock:
            now = rt.clock()
            if not self._ready or self._stored_at is None or now - self._stored_at > self.FRESH:
                batch = [secrets.token_urlsafe(24) for _ in range(self.BATCH)]
                # Kept only once stored: a batch whose INSERT failed, handed out afterwards,
                # would make every request that uses one of them a badNonce.
                _store(rt, batch, now + NONCE_TTL)
                self._ready, self._stored_at = batch, now
            return self._ready.pop()


def _store(rt: Runtime, values: list[str], expires_at: datetime) -> None:
    """Nonces are rows, so any process can spend a nonce another one handed out: in the
    SQLite deployment's nonce file (storage/nonce_file.py), else in the database."""
    if rt.acme_nonces is not None:
        rt.acme_nonces.add(values, expires_at.timestamp())
        return
    with rt.sessions() as session:
        repo = AcmeNonceRepository(session)
        for value in values:
            repo.add(value, expires_at)
        session.commit()


class RedisNonces:
    """With REDIS_URL set, nonces live in Redis instead: one key each with the nonce's
    lifetime, spent by DEL (which reports 1 to exactly one caller)."""

    PREFIX = "tessera:acme:nonce:"

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)

    def issue(self) -> str:
        value = secrets.token_urlsafe(24)
        self._redis.set(self.PREFIX + value, b"1", ex=int(NONCE_TTL.total_seconds()))
        return value

    def consume(self, value: str) -> bool:
        return bool(self._redis.delete(self.PREFIX + value) == 1)


# One pool per place nonces are stored (processes that run several apps, as tests do, must
# not hand out a nonce stored for another).
_POOLS: dict[str, NoncePool] = {}
_REDIS: dict[str, RedisNonces] = {}


def _redis(rt: Runtime) -> RedisNonces | None:
    url = rt.settings.redis_url
    if not url:
        return None
    if url not in _REDIS:
        _REDIS[url] = RedisNonces(url)
    return _REDIS[url]


def _pool(rt: Runtime) -> NoncePool:
    where = rt.acme_nonces.path if rt.acme_nonces is not None else rt.settings.db_url
    return _POOLS.setdefault(where, NoncePool())


def new_nonce(rt: Runtime) -> str:
    store = _redis(rt)
    return store.issue() if store else _pool(rt).take(rt)


async def fresh_nonce(rt: Runtime) -> str:
    stored = None if _redis(rt) else _pool(rt).ready(rt)
    if stored is not None:
        return stored
    issued: str = await run_in_threadpool(new_nonce, rt)
    return issued


def consume_nonce(rt: Runtime, value: str) -> bool:
    """In its own transaction: a nonce is spent even when the request then fails."""
    store = _redis(rt)
    if store is not None:
        return store.consume(value)
    if rt.acme_nonces is not None:
        return rt.acme_nonces.consume(value, rt.clock().timestamp())
    with rt.sessions() as session:
        spent = AcmeNonceRepository(session).consume(value, rt.clock())
        session.commit()
    return spent


def purge_nonces(rt: Runtime) -> None:
    """The nonce file's expired rows (the database's are purged with the orders)."""
    if rt.acme_nonces is not None:
        rt.acme_nonces.purge(rt.clock().timestamp())


async def read_jws(request: Request, path: str) -> jws.Jws:
    """Parse the body, then check url and that a nonce is there; the caller spends it
    (`spend_around`, in the thread that does the work) and checks the signature, which
    needs the key (see below)."""
    rt: Runtime = request.app.state.runtime
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != JOSE:
        raise malformed(f"the Content-Type must be {JOSE}", 415)
    body = await read_body(request.scope, request.receive, MAX_BODY)
    if body is None:
        raise malformed(f"the body is larger than {MAX_BODY} bytes", 413)
    signed = jws.parse(body)
    if signed.url != f"{base_url(rt)}/{path}":
        raise unauthorized("the JWS url does not match the request URL")
    if not isinstance(signed.nonce, str) or not signed.nonce:
        raise bad_nonce("the JWS has no nonce")
    if not _BASE64URL.fullmatch(signed.nonce):  # RFC 8555 6.5.2: then malformed, not badNonce
        raise malformed("the nonce is not base64url")
    return signed


NONCE_REFUSED = "the nonce is unknown, used or expired; get a new one"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def spend_nonce(rt: Runtime, signed: jws.Jws) -> None:
    if not consume_nonce(rt, str(signed.nonce)):
        raise bad_nonce(NONCE_REFUSED)


def spend_around(
    rt: Runtime, session: Session, signed: jws.Jws, work: Callable[[], Response]
) -> Response:
    """Spend the request's nonce and do its work, committing in the worker thread once the
    work is done (`commit_before_answering`) rather than after the event loop's next turn.

    Where nonces are kept outside the database (the SQLite deployment's nonce file, Redis),
    the nonce is spent first, in a statement of its own. Where they are database rows
    (PostgreSQL), it is spent in the request's own transaction: the work first, then the
    nonce's DELETE, so no request pays a transaction of its own for its nonce; when the nonce
    turns out spent meanwhile, everything is rolled back (badNonce). A request that fails is
    rolled back and its nonce spent in a transaction of its own, so it is used up all the
    same; an unknown nonce is then reported rather than the work's own error, as when the
    nonce was checked first (RFC 8555 section 6.5)."""
    if _redis(rt) is not None or rt.acme_nonces is not None:
        spend_nonce(rt, signed)
        response = work()
    else:
        response = _work_then_spend(rt, session, signed, work)
    commit_before_answering(session)
    return response


def _work_then_spend(
    rt: Runtime, session: Session, signed: jws.Jws, work: Callable[[], Response]
) -> Response:
    try:
        response = work()
        session.flush()  # the work's own errors surface here, not at commit
    except Exception:
        session.rollback()  # first: on SQLite its write lock would block the spend below
        spend_nonce(rt, signed)
        raise
    if not AcmeNonceRepository(session).consume(str(signed.nonce), rt.clock()):
        raise bad_nonce(NONCE_REFUSED)
    return response


@dataclass(frozen=True)
class Caller:
    account: AcmeAccount


def by_account(
    repos: Repositories, rt: Runtime, signed: jws.Jws, allow_inactive: bool = False
) -> AcmeAccount:
    """A request signed by an existing account: kid, never jwk (RFC 8555 6.2)."""
    if signed.kid is None:
        raise malformed("this request must be signed with the account's kid, not a jwk")
    account = repos.acme.account(_account_id(rt, signed.kid))
    if account is None:
        raise AcmeProblem("accountDoesNotExist", "no such account")
    jws.verify(signed, jws.public_key(account.jwk))
    if account.status != "valid" and not allow_inactive:
        raise inactive_account(account.status)
    return account


def _account_id(rt: Runtime, kid: str) -> int:
    """The number of the account whose URL the kid is, exactly as new-account gave it out
    (RFC 8555 6.2: the kid "MUST contain the account URL"). Another spelling of the number
    (`acct/007` for account 7) is no URL of this server, so it names no account either:
    the same answer as a number no account has, without looking anything up."""
    prefix = f"{base_url(rt)}/acct/"
    tail = kid[len(prefix) :] if kid.startswith(prefix) else ""
    # isdigit alone takes "²"; str(int(...)) is the spelling new-account gives (no zeros)
    if not (tail.isascii() and tail.isdigit()) or len(tail) > 18 or str(int(tail)) != tail:
        raise AcmeProblem("accountDoesNotExist", "the kid is not an account URL of this server")
    return int(tail)


def by_jwk(signed: jws.Jws) -> dict[str, object]:
    """A request signed by a key carried in the header (new-account, revoke by cert key)."""
    if signed.jwk is None:
        raise malformed("this request must carry the key as jwk, not a kid")
    jws.verify(signed, jws.public_key(signed.jwk))
    return signed.jwk


class AcmeHeaders:
    """Every /acme/ response, errors included, carries a fresh nonce and the index link
    (RFC 8555 6.5 and 7.1) and is never cached.

    When no nonce can be had (the nonce store is down), a response goes out without one:
    the request's work may have committed already (an order created, a certificate issued),
    and a 500 would tell the client it failed. RFC 8555 6.5 asks for the header on every
    successful POST response, but the client can get a nonce from new-nonce later, whereas a
    lost answer loses it the order's URL. new-nonce itself, whose only content is the
    nonce, answers 503 with Retry-After instead.

    Errors no handler inside answered (FastAPI's GET endpoints raise them out to the
    server's outermost middleware, which knows nothing of ACME) are answered here by the
    app's own handler, so they carry these headers too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        rt: Runtime = scope["app"].state.runtime
        nonce: str | None = None
        if scope["path"] == NEW_NONCE:
            nonce = await _nonce(rt)
            if nonce is None:
                await _send_with_headers(rt, _nonce_unavailable(), scope, receive, send)
                return
        started = False

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                value = nonce or await _nonce(rt)
                _add_headers(rt, MutableHeaders(scope=message), value)
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception as exc:  # the ACME boundary: the app's own handler answers
            if started:
                raise
            response = await answer_error(Request(scope, receive), exc)
            await response(scope, receive, with_headers)


def _add_headers(rt: Runtime, headers: MutableHeaders, nonce: str | None) -> None:
    if nonce is not None:
        headers["Replay-Nonce"] = nonce
    headers.append("Link", f'<{base_url(rt)}/directory>;rel="index"')
    headers["Cache-Control"] = "no-store"


async def _send_with_headers(
    rt: Runtime, response: Response, scope: Scope, receive: Receive, send: Send
) -> None:
    _add_headers(rt, response.headers, None)
    await response(scope, receive, send)


def _nonce_unavailable() -> Response:
    problem = AcmeProblem(
        "serverInternal",
        "no nonce can be issued at the moment; retry later",
        503,
        headers={"Retry-After": NONCE_RETRY_AFTER},
    )
    return problem_response(problem)


async def _nonce(rt: Runtime) -> str | None:
    """A fresh nonce, or None when the store cannot give one (logged once per outage)."""
    try:
        value = await fresh_nonce(rt)
    except NONCE_STORE_ERRORS as exc:
        _OUTAGE.failed(exc)
        return None
    _OUTAGE.recovered()
    return value


class _Outage:
    """Logs a nonce store going down once, and its coming back, rather than every response
    of the outage. Only the error's type is logged: the messages of database errors carry
    the statement's parameters, here the nonces themselves."""

    def __init__(self) -> None:
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            cause = getattr(exc, "orig", None) or exc.__cause__
            kinds = type(exc).__name__ + (f" ({type(cause).__name__})" if cause else "")
            log.warning("ACME nonce store unavailable (%s): answering without nonces", kinds)

    def recovered(self) -> None:
        if self.down:
            self.down = False
            log.warning("ACME nonce store available again")


_OUTAGE = _Outage()


def utc(rt: Runtime) -> datetime:
    return rt.clock()
