"""`POST /api/v2/certificates` without FastAPI's routing, request parsing and dependency
resolution: a plain ASGI middleware (inside the security middleware, like the ACME and SCEP
lanes) that validates the body with the route's own model and issues through the route's own
steps (`certificates.issue_uncommitted`, `issued_answer`), after the same authentication and
permission check, with the app's exception handlers (`deps.answer_error`). On the FastAPI path
the same request takes two hops to anyio's threads (the actor, then the endpoint) and
resolves four dependencies; see docs/request-path-performance.md.

Issuances are batched. A process runs at most two batches at once, on the lane threads
(`deps.LANE_POOL`); requests that arrive meanwhile wait, and the next batch takes all of them
(up to MAX_BATCH). A batch starts on the event loop's next turn, not at once, so requests
read in the same turn go together (no timer: a lone request waits one turn). A batch signs
every issuance first, then writes all their rows and commits once (`issue_batch`), so
SQLite's single write lock is taken once per batch instead of once per certificate. Under
`bench/issue.py` the lock had been busy ~97 % of the time.

Only a well-formed JSON body is answered here. Anything else (another content type, a body
the model refuses, a trailing slash) goes on to FastAPI with its body replayed, so an error
is answered exactly as on every other route."""

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import cast

from fastapi import Request
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.api.deps import LANE_POOL, LANE_THREADS, answer_error, current_actor
from tessera.api.headers import replaying
from tessera.api.v2.certificates import ISSUE_STATUS, WRITER, issue_uncommitted, issued_answer
from tessera.api.v2.schemas import IssueCertificate
from tessera.domains.audit.context import SUCCESS_STATUS
from tessera.domains.issuance import Issued, deferred, write_issued
from tessera.storage import models

PATH = "/api/v2/certificates"
MAX_BATCH = 16
Outcome = models.Certificate | Exception


@dataclass
class _Pending:
    """One request's issuance, waiting for a batch: it runs in the request's own context
    (its request id and success status go into its audit row)."""

    request: Request
    spec: IssueCertificate
    context: contextvars.Context
    outcome: "asyncio.Future[Outcome]" = field(default_factory=asyncio.Future)


class IssuanceLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._waiting: list[_Pending] = []
        self._batches = 0
        self._start_scheduled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_issuance(scope):
            await self.app(scope, receive, send)
            return
        body = await Request(scope, receive).body()
        replay = replaying(body, receive)
        try:
            spec = IssueCertificate.model_validate_json(body)
        except ValidationError:
            await self.app(scope, replay, send)
            return
        request = Request(scope, replay)
        pending = _Pending(request, spec, contextvars.copy_context())
        self._waiting.append(pending)
        if self._batches < LANE_THREADS and not self._start_scheduled:
            self._start_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_waiting)
        outcome = await pending.outcome
        if isinstance(outcome, Exception):
            response = await answer_error(request, outcome)
        else:
            response = issued_answer(request, outcome)
        await response(scope, receive, send)

    def _start_waiting(self) -> None:
        """Run on the loop's turn after a request came in: by then every request read in
        that turn is waiting too (under `bench/issue.py` half as many are issued alone)."""
        self._start_scheduled = False
        self._start_batches()

    def _start_batches(self) -> None:
        """Issue what is waiting, up to MAX_BATCH a batch, on every free lane thread."""
        while self._waiting and self._batches < LANE_THREADS:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            self._start(batch)

    def _start(self, batch: list[_Pending]) -> None:
        """The batch on a lane thread, in one unit of work."""
        sessions = batch[0].request.app.state.runtime.sessions
        try:
            done = LANE_POOL.submit(issue_batch, batch, sessions)
        except RuntimeError as exc:  # the pool is shut down: the process is stopping
            _answer(batch, [exc] * len(batch))
            return
        self._batches += 1
        loop = asyncio.get_running_loop()
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._finished, batch, f))

    def _finished(self, batch: list[_Pending], done: "Future[list[Outcome]]") -> None:
        self._batches -= 1
        failure = done.exception()  # each request's handlers answer it
        outcomes = done.result() if failure is None else [cast(Exception, failure)] * len(batch)
        _answer(batch, outcomes)
        self._start_batches()


def _answer(batch: list[_Pending], outcomes: Sequence[Outcome]) -> None:
    for pending, outcome in zip(batch, outcomes, strict=True):
        if not pending.outcome.done():  # a client that went away cancelled its wait
            pending.outcome.set_result(outcome)


def issue_batch(batch: list[_Pending], sessions: Callable[[], Session]) -> list[Outcome]:
    """The batch's issuances in one unit of work: each is authenticated, checked and signed
    first, with its writes deferred (`deferred`, see domains/issuance.py); then all their
    rows are written together (`write_issued`) and the whole committed once. On SQLite the
    batch takes the write lock once, after all the signing, and holds it for a few
    statements.

    A request refused before it wrote anything (its key, its permission, the CA, the policy)
    gets its error and the others go on. When a write or the commit fails, or a refusal came
    from the database (on PostgreSQL it leaves the transaction unusable), the batch is rolled
    back and each issuance that had not been refused is done again in a unit of work of its
    own, so that what fails alone fails, and nothing is left half-written."""
    with sessions() as session:
        signed = [pending.context.run(_sign, pending, session) for pending in batch]
        outcomes = [outcome for outcome, _ in signed]
        try:
            issued: list[Issued] = []
            for outcome, items in signed:
                if isinstance(outcome, SQLAlchemyError):
                    raise outcome
                if not isinstance(outcome, Exception):
                    issued.extend(items)
            write_issued(issued)
            session.commit()
        except Exception as exc:  # noqa: BLE001 - rolled back; the rest is redone apart
            session.rollback()
            if len(batch) == 1:
                return [exc]
            return _again_apart(batch, outcomes, sessions)
    return outcomes


def _sign(pending: _Pending, session: Session) -> tuple[Outcome, list[Issued]]:
    SUCCESS_STATUS.set(ISSUE_STATUS)
    with deferred(session.info) as issued:
        try:
            actor = WRITER.check(current_actor(pending.request, session))
            return issue_uncommitted(pending.request, pending.spec, session, actor), issued
        except Exception as exc:  # noqa: BLE001 - answered by the app's handlers on the loop
            return exc, issued


def _again_apart(
    batch: list[_Pending], first: Sequence[Outcome], sessions: Callable[[], Session]
) -> list[Outcome]:
    """Each issuance that had not been refused, again in a batch of its own."""
    outcomes: list[Outcome] = []
    for pending, outcome in zip(batch, first, strict=True):
        refused = isinstance(outcome, Exception) and not isinstance(outcome, SQLAlchemyError)
        outcomes.extend([outcome] if refused else issue_batch([pending], sessions))
    return outcomes


def _is_issuance(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
        return False
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False
