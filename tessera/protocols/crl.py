"""CRL distribution points: GET /cdp/{ca}.crl (DER), /cdp/{ca}.pem, /cdp/{ca}-delta.crl
(and -delta.pem), by CA id or reference id, public and unauthenticated.

CRLs are served from storage, never built here. Each process keeps the newest DER of each
CA in memory and checks the database for a newer CRL number at most once a second (and at
once when this process published one), so a new CRL is served promptly by every process
while a busy distribution point costs no database work per request.
"""

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from tessera.api.deps import runtime
from tessera.api.routing import PrefixRouter
from tessera.core.errors import NotFound
from tessera.domains.crl.builder import to_pem
from tessera.domains.crl.follower import JOB_NAME, POLL_SECONDS, CRLFollower
from tessera.domains.crl.publisher import CRLPolicy, CRLPublisher, can_publish
from tessera.runtime import Runtime
from tessera.storage.repositories.cas import CARepository, find_public_ca
from tessera.storage.repositories.crl import CRLRepository

router = PrefixRouter(tags=["Public: CRL"])
FRESH_SECONDS = 1.0  # how long a cached CRL is served before its number is checked again
MAX_REFERENCES = 4096  # spellings remembered; an unknown reference is never remembered
MAX_AGE = 60  # seconds HTTP caches may keep a CRL (capped by its nextUpdate)
RETRY_AFTER = "2"


@dataclass
class _Cached:
    ca_id: int
    number: int
    sha256: str
    der: bytes
    etag: str
    headers: dict[str, str]
    checked: float
    pem: str | None = None

    def as_pem(self) -> str:
        if self.pem is None:
            self.pem = to_pem(self.der)
        return self.pem


class NotPublishedYet(Exception):
    """The CA can sign but its first CRL is still being made."""


class CRLCache:
    """The newest CRL per (CA, kind), and which CA each reference names. A CA is reachable
    under many spellings ("7", "007", its refid): they share one cached CRL."""

    def __init__(self) -> None:
        self._crls: dict[tuple[int, str], _Cached] = {}
        self._references: dict[str, int] = {}
        self._lock = threading.Lock()

    def fresh(self, reference: str, kind: str) -> _Cached | None:
        ca_id = self._references.get(reference)
        item = self._crls.get((ca_id, kind)) if ca_id is not None else None
        if item is not None and time.monotonic() - item.checked < FRESH_SECONDS:
            return item
        return None

    def invalidate(self, ca_id: int) -> None:
        with self._lock:
            for key in [k for k in self._crls if k[0] == ca_id]:
                del self._crls[key]

    def load(self, rt: Runtime, reference: str, kind: str) -> _Cached:
        """From the database: the CA, the newest CRL number, and the DER if it changed."""
        with rt.sessions() as session:
            ca = find_public_ca(session, reference)
            if ca is None:
                raise NotFound(f"no CA {reference!r}")
            repo = CRLRepository(session)
            latest = repo.latest(ca.id, kind)
            if latest is None:
                # a CA without its key whose re-issued root has it gets the group's CRLs
                if can_publish(CARepository(session, ca.org_id), ca, rt.clock()):
                    raise NotPublishedYet()
                raise NotFound(f"no CRL is published for CA {reference!r}")
            item = self._crls.get((ca.id, kind))
            # the digest too: on SQLite a deleted CA's id (and CRL numbers) can come back
            if item is not None and (item.number, item.sha256) == latest[1:]:
                item.checked = time.monotonic()
            else:
                crl = repo.published(latest[0])
                if crl is None:  # pruned between the two reads: a newer one exists
                    raise NotPublishedYet()
                item = _Cached(
                    ca.id,
                    crl.crl_number,
                    crl.sha256,
                    crl.der,
                    f'"{kind}-{crl.crl_number}-{crl.sha256[:16]}"',
                    _headers(crl.this_update, crl.next_update, rt),
                    time.monotonic(),
                )
        with self._lock:
            self._crls[(ca.id, kind)] = item
            if reference not in self._references and len(self._references) >= MAX_REFERENCES:
                self._references.pop(next(iter(self._references)))
            self._references[reference] = ca.id
        return item


def _headers(this_update: datetime, next_update: datetime, rt: Runtime) -> dict[str, str]:
    remaining = int((next_update - rt.clock()).total_seconds())
    return {
        "Cache-Control": f"public, max-age={max(0, min(MAX_AGE, remaining))}",
        "Last-Modified": format_datetime(this_update, usegmt=True),
        "Expires": format_datetime(next_update, usegmt=True),
    }


async def _serve(request: Request, reference: str, kind: str, pem: bool) -> Response:
    if kind == "delta" and not runtime(request).publication.delta_crls:
        # Turned off: the last delta published before must not be served on, ever staler.
        raise NotFound("delta CRLs are not published")
    cache: CRLCache = request.app.state.crl_cache
    item = cache.fresh(reference, kind)
    if item is None:
        rt = runtime(request)
        try:
            item = await run_in_threadpool(cache.load, rt, reference, kind)
        except NotPublishedYet:
            rt.jobs.kick(JOB_NAME)
            return Response(
                b"the first CRL of this CA is being published; retry shortly",
                status_code=503,
                media_type="text/plain",
                headers={"Retry-After": RETRY_AFTER},
            )
    headers = {**item.headers, "ETag": item.etag}
    if _none_match(request.headers.get("if-none-match"), item.etag):
        return Response(status_code=304, headers=headers)
    if pem:
        return Response(item.as_pem(), media_type="application/x-pem-file", headers=headers)
    return Response(item.der, media_type="application/pkix-crl", headers=headers)


def _none_match(header: str | None, etag: str) -> bool:
    """Whether If-None-Match names this CRL (RFC 9110 13.1.2): "*", or a list of entity
    tags compared weakly, so a cache that weakened the tag or asks for several revalidates."""
    if header is None:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


# The delta routes come first: "{reference}.crl" would also match "x-delta.crl".
@router.get("/cdp/{reference}-delta.crl")
@router.head("/cdp/{reference}-delta.crl")
async def delta_der(request: Request, reference: str) -> Response:
    return await _serve(request, reference, "delta", pem=False)


@router.get("/cdp/{reference}-delta.pem")
@router.head("/cdp/{reference}-delta.pem")
async def delta_pem(request: Request, reference: str) -> Response:
    return await _serve(request, reference, "delta", pem=True)


@router.get("/cdp/{reference}.crl")
@router.head("/cdp/{reference}.crl")
async def full_der(request: Request, reference: str) -> Response:
    return await _serve(request, reference, "full", pem=False)


@router.get("/cdp/{reference}.pem")
@router.head("/cdp/{reference}.pem")
async def full_pem(request: Request, reference: str) -> Response:
    return await _serve(request, reference, "full", pem=True)


def policy(rt: Runtime) -> CRLPolicy:
    settings = rt.settings
    delta = timedelta(hours=settings.crl_delta_validity_hours)
    return CRLPolicy(
        validity=timedelta(hours=settings.crl_validity_hours),
        delta_validity=delta if settings.crl_delta_enabled else None,
        debounce=timedelta(seconds=settings.crl_debounce_seconds),
    )


def install(app: FastAPI, rt: Runtime) -> None:
    """Wire CRL publication into one app: the cache, the publisher, the background job. The
    distribution points (`router`) are included by the app, among the first routes."""
    cache = CRLCache()
    publisher = CRLPublisher(
        rt.sessions, rt.keys, rt.publication, policy(rt), rt.clock, on_publish=cache.invalidate
    )
    rt.jobs.every(JOB_NAME, POLL_SECONDS, CRLFollower(rt.sessions, publisher, rt.clock).tick)
    app.state.crl_cache = cache
    app.state.crl_publisher = publisher
