"""Headers every response carries, CORS, and the request-body size limit: pure ASGI
middleware, so they cost a few dictionary operations per request and also cover the error
responses other middleware (rate limiting, body limit) produce."""

import re
import uuid
from collections.abc import Iterable

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera import __version__
from tessera.api import errors
from tessera.config import Settings
from tessera.core import jsontext
from tessera.domains.audit.context import REQUEST_ID

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming request id is echoed only if it is short and plain, so it cannot smuggle
# header or log injection; anything else is replaced by a fresh one.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# The API returns JSON and files, never markup to render: nothing may load, nothing may frame.
API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The OpenAPI page (Swagger UI) loads its bundle from the CDN FastAPI points at.
DOCS_CSP = (
    b"default-src 'none'; script-src https://cdn.jsdelivr.net 'unsafe-inline'; "
    b"style-src https://cdn.jsdelivr.net 'unsafe-inline'; img-src 'self' data: "
    b"https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'none'"
)
HSTS = b"max-age=31536000; includeSubDomains"

_STATIC: tuple[tuple[bytes, bytes], ...] = (
    (b"x-api-version", __version__.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class SecurityHeaders:
    """X-API-Version, X-Request-ID and the security headers on every response. Headers a
    route set itself (a download's Cache-Control, a page's own CSP) are kept."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        # Audit rows written while this request runs carry the same id (a context variable
        # follows the request into the worker threads).
        token = REQUEST_ID.set(request_id)
        path: str = scope["path"]
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                extra = [*_STATIC, (b"x-request-id", request_id.encode())]
                extra.append(
                    (b"content-security-policy", DOCS_CSP if path == "/api/docs" else API_CSP)
                )
                if https:
                    extra.append((b"strict-transport-security", HSTS))
                if path.startswith("/api/"):
                    # API answers may hold keys or personal data: no shared or disk caches.
                    extra.append((b"cache-control", b"no-store"))
                headers.extend(item for item in extra if item[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            REQUEST_ID.reset(token)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _SAFE_REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class BodyTooLarge(HTTPException):
    """Raised from receive() when a streamed body passes the limit. An HTTPException, so
    that FastAPI's body reading passes it on (it turns other errors into a 400) and the
    error handlers answer 413 in the dialect's shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the {limit}-byte limit")


class BodyLimit:
    """Refuses bodies over the limit with 413 before reading them: at once when
    Content-Length says so, else as soon as the streamed bytes pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope["headers"])
        if declared is not None and declared > self.max_bytes:
            await _too_large(scope, receive, send, self.max_bytes)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _too_large(scope, receive, send, self.max_bytes)


class JsonText:
    """Refuses, with a 400 in the dialect's shape, a JSON body that is not Unicode text in
    UTF-8 (`core.jsontext`: UTF-16 or UTF-32, which `json.loads` would read, or an unpaired
    surrogate escape): FastAPI's parser and pydantic let either through to the database.
    Inside BodyLimit, which bounds what is read here. A UTF-8 body with no `\\u` escape, the
    usual case, is only passed on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope["headers"]):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        refusal = _not_unicode(body)
        if refusal:
            await dialect_error(scope["path"], 400, refusal)(scope, receive, send)
            return
        await self.app(scope, replaying(body, receive), send)


async def _read_body(receive: Receive) -> bytes:
    """The whole body (what came before a disconnect, if the client went away)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body over once, then waits on the real one (for
    a disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _not_unicode(body: bytes) -> str | None:
    """Why the body is no UTF-8 Unicode text, or None (malformed JSON is the app's to answer)."""
    try:
        text = jsontext.decode(body)
    except ValueError:  # another encoding, or bytes that are no UTF-8 at all
        return "the JSON body must be UTF-8 text (RFC 8259 8.1)"
    if "\\u" not in text:
        return None
    try:
        jsontext.loads(text)
    except UnicodeEncodeError:
        return "the JSON body has an unpaired surrogate escape, which is no character"
    except (ValueError, RecursionError):
        pass
    return None


def _is_json(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def dialect_error(path: str, status: int, message: str) -> Response:
    """An error in the shape of the dialect that owns the path (longest registered prefix)."""
    prefix = max((p for p in errors.FORMATTERS if path.startswith(p)), key=len)
    return errors.FORMATTERS[prefix](status, message)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = dialect_error(scope["path"], 413, f"request body larger than the {limit}-byte limit")
    # Close the connection: the rest of the unread body must not be parsed as a request.
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


def cors_origins(settings: Settings) -> list[str]:
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]


def install_body_limit(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(JsonText)  # inside the limit: it reads whole bodies
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)


def install(app: FastAPI, settings: Settings) -> None:
    """Added last, so outermost: security headers wrap CORS, so that preflight answers and
    the rate limiter's 429 carry them too. With no origins configured every cross-origin
    preflight is refused (400)."""
    # The platform seed: every method and header for listed origins, with credentials.
    # Cookie-authenticated writes still need the CSRF header, which a foreign page cannot
    # read.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=cors_origins(settings),
        allow_methods=["*"],
        allow_headers=["*"],
        allow_credentials=True,
        expose_headers=[
            "X-API-Version",
            "X-Request-ID",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "Retry-After",
            "Content-Disposition",
        ],
        max_age=600,
    )
    app.add_middleware(SecurityHeaders)
