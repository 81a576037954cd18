"""The request an audit row is written in: set per request by api/request_id.py, read by
`record` (context variables follow the request into the worker threads)."""

from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("tessera_request_id", default=None)
