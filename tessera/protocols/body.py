"""Reading a request body in the protocol lanes (OCSP, SCEP, ACME), which run as plain ASGI
ahead of FastAPI: each protocol has its own size limit, checked before anything is read."""

from starlette.types import Receive, Scope


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed the limit (from Content-Length,
    before reading anything, or while reading a chunked body)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or int(value) > limit:
                return None
            break
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)
