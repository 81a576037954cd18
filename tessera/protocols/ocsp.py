"""OCSP over HTTP (RFC 6960 appendix A, RFC 5019 section 5): POST /ocsp and GET /ocsp/{b64}.

The fastest endpoint of the server, so it is plain ASGI in front of the FastAPI app: no
routing, dependencies or thread hop when a pre-signed response answers. Every OCSP-level
failure is an OCSP response with an error status and HTTP 200; only HTTP-level misuse (wrong
method, a body over the size limit) gets a 4xx.
"""

import asyncio
import base64
import binascii
import logging
import time
from datetime import timedelta
from email.utils import format_datetime
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.domains.ocsp.responder import (
    COUNTER_FLUSH_SECONDS,
    FOLLOW_SECONDS,
    INTERNAL_ERROR,
    MALFORMED,
    Answer,
    Responder,
)
from tessera.domains.ocsp.signers import SignerFactory
from tessera.protocols.body import read_body
from tessera.runtime import Runtime

log = logging.getLogger("tessera.ocsp")
PATH = "/ocsp"
RESPONSE_TYPE = (b"content-type", b"application/ocsp-response")
NO_STORE = (b"cache-control", b"no-store")


class OCSPEndpoint:
    """ASGI middleware: answers /ocsp and /ocsp/..., passes everything else on."""

    def __init__(self, app: ASGIApp, responder: Responder, max_request_bytes: int) -> None:
        self.app = app
        self.responder = responder
        self.max_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path != PATH and not path.startswith("/ocsp/"):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "POST" and path in (PATH, PATH + "/"):
            self.responder.counts["post"] += 1
            der = await read_body(scope, receive, self.max_bytes)
            if der is None:
                self.responder.counts["too_large"] += 1
                await _plain(send, 413, b"OCSP request too large")
                return
        elif method in ("GET", "HEAD") and path.startswith("/ocsp/"):
            # HEAD answers as GET (RFC 9110 9.3.2); the server leaves the body out.
            self.responder.counts["get"] += 1
            der = _from_url(scope.get("raw_path") or path.encode(), self.max_bytes)
            if der is None:
                self.responder.counts["too_large"] += 1
                await _plain(send, 414, b"OCSP request too large")
                return
        else:
            await _plain(send, 405, b"OCSP takes POST /ocsp or GET /ocsp/{base64 request}", path)
            return
        answer = await self._answer(der)
        await _respond(send, answer, cacheable=method != "POST")

    async def _answer(self, der: bytes) -> Answer:
        try:
            return await self._answer_or_raise(der)
        except Exception:
            # An OCSP internalError, never an HTTP 500 (the cause is in the log).
            log.exception("OCSP request failed")
            self.responder.counts["internal_error"] += 1
            return Answer(INTERNAL_ERROR)

    async def _answer_or_raise(self, der: bytes) -> Answer:
        found = self.responder.answer_cached(der)
        if isinstance(found, Answer):
            return found
        if found.nonce is not None:
            signed = self.responder.sign_with_nonce(found)
            if signed is not None:
                return signed
        return await asyncio.to_thread(self.responder.answer, found)


def _from_url(raw_path: bytes, limit: int) -> bytes | None:
    """GET /ocsp/{url-encoded base64 DER} (RFC 6960 A.1). The base64 text may hold slashes
    and '+' (not a space in a path); the URL-safe alphabet and missing padding are accepted
    too. Undecodable text is a malformed request; None means too large."""
    encoded = unquote_to_bytes(raw_path[len(PATH) + 1 :])
    if len(encoded) > limit * 4 // 3 + 4:
        return None
    text = encoded.strip().replace(b"-", b"+").replace(b"_", b"/")
    text += b"=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


async def _respond(send: Send, answer: Answer, cacheable: bool) -> None:
    headers = [RESPONSE_TYPE, (b"content-length", str(len(answer.der)).encode())]
    entry = answer.entry
    if cacheable and entry is not None:
        # RFC 5019 section 6.2: cacheable until nextUpdate, validated by ETag.
        max_age = max(0, int(entry.next_update.timestamp() - time.time()))
        headers += [
            (b"cache-control", b"max-age=%d, public, no-transform, must-revalidate" % max_age),
            (b"etag", entry.etag.encode()),
            (b"last-modified", format_datetime(entry.this_update, usegmt=True).encode()),
            (b"expires", format_datetime(entry.next_update, usegmt=True).encode()),
        ]
    else:
        headers.append(NO_STORE)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer.der})


async def _plain(send: Send, status: int, text: bytes, path: str = "") -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(text)).encode()),
    ]
    if status == 405:
        headers.append((b"allow", _allowed(path)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


def _allowed(path: str) -> bytes:
    """What the OCSP path takes (RFC 9110 10.2.1): /ocsp POST only, /ocsp/{request} GET and
    its HEAD, /ocsp/ both (an empty GET request is a malformed one, answered as such)."""
    if path == PATH:
        return b"POST"
    return b"GET, HEAD, POST" if path == PATH + "/" else b"GET, HEAD"


def install(app: FastAPI, rt: Runtime) -> Responder:
    """Put the responder in front of the app and register its background jobs."""
    settings = rt.settings
    factory = SignerFactory(
        rt.sessions,
        rt.authority,
        rt.keys,
        rt.publication,
        settings.ocsp_signer,
        settings.ocsp_signer_days,
    )
    validity = timedelta(seconds=settings.ocsp_validity_seconds)
    responder = Responder(rt.sessions, factory, rt.clock, validity, settings.ocsp_cache_entries)
    refresh_every = min(60.0, settings.ocsp_validity_seconds / 8)
    rt.jobs.every("ocsp-follow", FOLLOW_SECONDS, responder.follow_changes)
    rt.jobs.every("ocsp-refresh", refresh_every, responder.refresh)
    rt.jobs.every("ocsp-counters", COUNTER_FLUSH_SECONDS, responder.flush_counts)
    app.add_middleware(
        OCSPEndpoint, responder=responder, max_request_bytes=settings.ocsp_max_request_bytes
    )
    app.state.ocsp = responder
    # The plain-HTTP listener (app.public_only) calls this directly, ahead of the middleware.
    app.state.ocsp_lane = OCSPEndpoint(app, responder, settings.ocsp_max_request_bytes)
    return responder


__all__ = ["MALFORMED", "OCSPEndpoint", "install"]
