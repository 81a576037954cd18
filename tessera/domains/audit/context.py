"""The request an audit row is written in: set per request by api/request_id.py, read by
`record` (context variables follow the request into the worker threads)."""

from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("tessera_request_id", default=None)
# The HTTP status a request answers with when it succeeds (its route's declared status), so
# the audit rows a request writes carry it; set by the request's unit of work.
SUCCESS_STATUS: ContextVar[int | None] = ContextVar("tessera_success_status", default=None)
