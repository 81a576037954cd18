"""Request-scoped wiring: the unit of work, who is calling, and what they may do."""

import asyncio
import contextvars
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from tessera.core.errors import PermissionDenied, Unauthenticated
from tessera.domains.actor import Actor
from tessera.domains.audit.context import SUCCESS_STATUS
from tessera.domains.identity import permissions
from tessera.domains.identity.effective import user_permissions
from tessera.domains.identity.keycache import KnownKey
from tessera.domains.identity.secrets import token_digest
from tessera.domains.issuance import Issuance
from tessera.runtime import Runtime
from tessera.storage import sqlite_writes
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.identity import (
    ApiKeyRepository,
    credential_generation,
    load_user,
)

T = TypeVar("T")
SESSION_COOKIE = "tessera_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
KEY_USE_RESOLUTION = timedelta(minutes=1)
GENERATION_INFO = "tessera.credential_generation"


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def unit_of_work(request: Request) -> AsyncIterator[Session]:
    """The request owns the transaction: committed when the endpoint returns, rolled back (by
    close) if anything raised.

    The commit runs on the event loop right away: queued behind other requests in the thread
    pool, it would keep SQLite's write lock held while every writer waits. It never waits for
    that lock itself, since the endpoint's statements (run in a thread) already took it. Only
    changes still waiting for a flush would take the lock at commit, and a writer waiting on
    the loop would deadlock the worker, so that case goes to a thread."""
    session = runtime(request).sessions()
    route = request.scope.get("route")
    SUCCESS_STATUS.set(getattr(route, "status_code", None) or 200)
    succeeded = False
    try:
        yield session
        succeeded = True
    finally:
        if session.new or session.dirty or session.deleted:
            await run_in_threadpool(_finish, session, succeeded)
        else:
            # Nothing pending and nothing to commit (the endpoint committed early, ran no SQL,
            # or on SQLite only read): a commit would only go through SQLAlchemy's commit for
            # nothing, ~4 % of an issuance's CPU and ~5 % of a SCEP GetCACert's under load.
            _finish(session, succeeded and not sqlite_writes.nothing_to_commit(session))


def _finish(session: Session, commit: bool) -> None:
    try:
        if commit:
            session.commit()
    finally:
        session.close()


def commit_before_answering(session: Session) -> None:
    """Commit the unit of work where the work stands (the endpoint's worker thread), once its
    writes are done and before the answer is built. On SQLite the write lock is then held for
    the statements and the commit alone; left to the unit of work, it is also held while the
    answer is built and until the event loop comes round to the commit, which under
    concurrent issuance more than doubled the hold, and the hold bounds how many writes a
    second the database takes. The unit of work still closes the session; what fails before
    this is rolled back as always."""
    if not sqlite_writes.nothing_to_commit(session):
        session.commit()


UnitOfWork = Annotated[Session, Depends(unit_of_work, scope="function")]
_unit_of_work = asynccontextmanager(unit_of_work)


async def within_unit_of_work(
    request: Request,
    work: Callable[[Session], Awaitable[Response]],
    success_status: int | None = None,
) -> Response:
    """For the signed ACME endpoints, which run ahead of FastAPI's routing: `work` in the same
    unit of work an endpoint gets (committed before the answer is sent, rolled back on any
    error), errors answered as `answered` does. `success_status` is the status the route
    declares (what audit rows record), where FastAPI would have read it off the route."""

    async def run() -> Response:
        async with _unit_of_work(request) as session:
            if success_status is not None:
                SUCCESS_STATUS.set(success_status)
            return await work(session)

    return await answered(request, run())


async def in_lane_unit_of_work(
    request: Request, work: Callable[[Session], Response], success_status: int = 200
) -> Response:
    """For a lane whose work is synchronous from start to end (SCEP): the whole unit of work,
    session opened, `work` run, committed and closed, in one lane thread. Against
    `within_unit_of_work` it saves the event loop the async context manager, anyio's thread
    hop and the session's close (~8 % of a SCEP enrollment's CPU), and the commit never waits
    for the loop's turn. Errors are answered as `answered` does."""
    SUCCESS_STATUS.set(success_status)
    return await answered(request, in_lane_thread(_whole_unit, runtime(request).sessions, work))


async def answered(request: Request, pending: Awaitable[Response]) -> Response:
    """`pending`'s answer, or, for what it raised, the answer of the app's own exception
    handlers, as if FastAPI had routed the request (the lanes run ahead of its routing)."""
    try:
        return await pending
    except Exception as exc:  # noqa: BLE001 - FastAPI's boundary: its handlers answer, or re-raise
        return await answer_error(request, exc)


def _whole_unit(sessions: Callable[[], Session], work: Callable[[Session], Response]) -> Response:
    session = sessions()
    succeeded = False
    try:
        answer = work(session)
        succeeded = True
        return answer
    finally:
        pending = session.new or session.dirty or session.deleted
        _finish(
            session, succeeded and (bool(pending) or not sqlite_writes.nothing_to_commit(session))
        )


async def answer_error(request: Request, exc: Exception) -> Response:
    """The app's exception handler's answer to `exc`, as FastAPI would give it; re-raised when
    no handler takes it (the server error middleware answers 500)."""
    handlers = request.app.exception_handlers
    handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
    if handler is None:
        raise exc
    answer: Response = await handler(request, exc)
    return answer


# Issuance and the signed ACME requests run their work on two threads per process rather than
# anyio's forty: with many requests of one process in threads at once, they spend their CPU
# taking the GIL from each other (side by side: issuances/s ~+40 %, ACME server CPU per order
# -10 to -28 %; 1 to 3 threads do about as well). Slow work on them (key generation, signing,
# SQLite) releases the GIL, and nothing that runs on them waits for another of them: a unit
# of work holding SQLite's write lock ends it in its own thread or on the event loop (or on
# anyio's threads). See docs/request-path-performance.md.
LANE_THREADS = 2
LANE_POOL = ThreadPoolExecutor(LANE_THREADS, thread_name_prefix="tessera-lane")


async def in_lane_thread(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` on a lane thread, with this request's context variables."""
    call = partial(contextvars.copy_context().run, work, *args)
    return await asyncio.get_running_loop().run_in_executor(LANE_POOL, call)


def now(request: Request) -> datetime:
    return runtime(request).clock()


def default_org_id(request: Request) -> int:
    org_id: int = request.app.state.default_org_id
    return org_id


def anonymous(request: Request) -> Actor:
    return Actor(None, "anonymous", default_org_id(request), "", frozenset(), *_origin(request))


def _origin(request: Request) -> tuple[str | None, str | None]:
    host = request.client.host if request.client else None
    return host, (request.headers.get("user-agent") or "")[:300] or None


def current_actor(request: Request, session: UnitOfWork) -> Actor:
    """An API key (X-API-Key or Bearer), else a session cookie with CSRF on writes."""
    key = presented_api_key(request)
    if key:
        return _actor_from_key(request, session, key)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return _actor_from_cookie(request, session, cookie)
    raise Unauthenticated("authentication required")


def presented_api_key(connection: HTTPConnection) -> str | None:
    """The API key a request is authenticated with (X-API-Key, else Bearer): the first of
    a repeated header, as Starlette reads it. The rate limiter counts per-user limits
    under this same credential (and the cookie as `connection.cookies` reads it, the last
    of a repeated name): read any other way, a decoy beside the real one would be counted
    instead."""
    key = connection.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _actor_from_key(request: Request, session: Session, key: str) -> Actor:
    moment, digest = now(request), token_digest(key)
    generation = _generation(session)  # read first: a later change moves it
    cache = runtime(request).api_keys
    known = cache.get(digest, generation)
    if known is None:
        known = _load_key(session, digest, generation)
        cache.put(digest, known)
    if known.expires_at is not None and known.expires_at <= moment:
        raise Unauthenticated("invalid or expired API key")
    if known.last_used_at is None or moment - known.last_used_at > KEY_USE_RESOLUTION:
        # coarse, so a busy key costs no write per request
        ApiKeyRepository(session).touch(known.key_id, moment)
        known.last_used_at = moment
    return Actor(
        known.user_id,
        known.username,
        known.org_id,
        known.role,
        known.permissions,
        *_origin(request),
        credential_expires_at=known.expires_at,
    )


def _generation(session: Session) -> int:
    """The credential generation, read once per unit of work. A batch of issuances
    authenticates all its requests in one session; each of them arrived before the session
    began, so answering it under the generation read first is what answering it first would
    have been. A change committed while the batch signs (a few milliseconds) applies from
    the next unit of work on."""
    known: int | None = session.info.get(GENERATION_INFO)
    if known is None:
        known = session.info[GENERATION_INFO] = credential_generation(session)
    return known


def _load_key(session: Session, digest: str, generation: int) -> KnownKey:
    found = ApiKeyRepository(session).with_owner(digest)
    if found is None:
        raise Unauthenticated("invalid or expired API key")
    record, user = found
    if not record.enabled or not user.active:
        raise Unauthenticated("invalid or expired API key")
    owner = user_permissions(session, user)  # role plus groups
    return KnownKey(
        generation=generation,
        key_id=record.id,
        expires_at=record.expires_at,
        last_used_at=record.last_used_at,
        user_id=user.id,
        username=user.username,
        org_id=user.org_id,
        role=user.role,
        permissions=permissions.effective(record.permissions, owner),
    )


def _actor_from_cookie(request: Request, session: Session, cookie: str) -> Actor:
    repos = Repositories(session, default_org_id(request))
    web_session = repos.web_sessions.by_hash(token_digest(cookie), now(request))
    if web_session is None:
        raise Unauthenticated("session expired; log in again")
    user = load_user(session, web_session.user_id)
    if user is None or not user.active:
        raise Unauthenticated("session expired; log in again")
    if request.method not in SAFE_METHODS:
        # Bytes, not str: compare_digest refuses non-ASCII str and would raise instead.
        sent = request.headers.get(CSRF_HEADER, "").encode()
        if not hmac.compare_digest(sent, web_session.csrf_token.encode()):
            raise PermissionDenied("missing or wrong CSRF token")
    granted = user_permissions(session, user)  # role plus groups
    return Actor(
        user.id,
        user.username,
        user.org_id,
        user.role,
        granted,
        *_origin(request),
        session_id=web_session.id,
    )


CurrentActor = Annotated[Actor, Depends(current_actor)]


class Require:
    """A dependency that checks one permission; routes declare it so a test can list them."""

    def __init__(self, permission: str) -> None:
        self.permission = permission

    async def __call__(self, actor: CurrentActor) -> Actor:
        return self.check(actor)

    def check(self, actor: Actor) -> Actor:
        if not permissions.grants(actor.permissions, self.permission):
            raise PermissionDenied(f"permission {self.permission!r} required")
        return actor


def require(permission: str) -> Require:
    return Require(permission)


class RequireSystem(Require):
    """A permission over what every organization shares (the KEK, rate limits, email,
    syslog, audit retention): held by the default organization's users alone. An admin of
    another organization holds '*' within it, and with it would redirect every organization's
    password-reset links (email) or audit events (syslog) to a server of theirs."""

    async def __call__(self, request: Request, actor: CurrentActor) -> Actor:  # type: ignore[override]
        self.check(actor)
        if actor.org_id != default_org_id(request):
            raise PermissionDenied("system-wide settings belong to the default organization")
        return actor


def require_system(permission: str) -> RequireSystem:
    return RequireSystem(permission)


def declared_permissions(dependant: Dependant) -> list[str]:
    """Every permission a route's dependency tree requires (`route.dependant`): how the
    authorization matrix test finds what each route declares."""
    found: set[str] = set()
    stack = [dependant]
    while stack:
        node = stack.pop()
        if isinstance(node.call, Require):
            found.add(node.call.permission)
        stack.extend(node.dependencies)
    return sorted(found)


def repositories(session: Session, actor: Actor) -> Repositories:
    return Repositories(session, actor.org_id)


def issuance(request: Request, session: Session, actor: Actor) -> Issuance:
    rt = runtime(request)
    return Issuance(
        repositories(session, actor), rt.authority, rt.keys, rt.publication, actor, rt.serials
    )
