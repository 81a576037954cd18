"""RFC 7807 problem documents with the ACME error types (RFC 8555 section 6.7).

Services raise `AcmeProblem`; `tessera/api/errors.py` turns it (and every other error under
/acme/) into an application/problem+json response."""

from typing import Any

from fastapi.responses import JSONResponse

from tessera.core.errors import TesseraError

NAMESPACE = "urn:ietf:params:acme:error:"
PROBLEM_JSON = "application/problem+json"

# The type an untyped error gets from its HTTP status.
_BY_STATUS = {
    401: "unauthorized",
    403: "unauthorized",
    404: "malformed",
    405: "malformed",
    409: "malformed",
    413: "malformed",
    415: "malformed",
    422: "malformed",
    429: "rateLimited",  # RFC 8555 6.6: MUST be this type (the rate limiter answers 429)
    500: "serverInternal",
    501: "serverInternal",
    503: "serverInternal",
}


class AcmeProblem(TesseraError):
    def __init__(
        self,
        kind: str,
        detail: str,
        status: int = 400,
        subproblems: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.extra = extra or {}
        self.kind = kind
        self.status = status
        self.subproblems = subproblems
        self.headers = headers or {}

    def document(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": NAMESPACE + self.kind, "detail": self.message}
        body["status"] = self.status
        body.update(self.extra)
        if self.subproblems:
            body["subproblems"] = self.subproblems
        return body


def problem_response(problem: AcmeProblem) -> JSONResponse:
    response = JSONResponse(problem.document(), status_code=problem.status, media_type=PROBLEM_JSON)
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


def generic_problem(status: int, message: str) -> JSONResponse:
    """Errors not raised as AcmeProblem (validation, not found, internal) get the type
    their status implies."""
    kind = _BY_STATUS.get(status, "malformed" if status < 500 else "serverInternal")
    return problem_response(AcmeProblem(kind, message, status))


def authorization_failed(identifier: dict[str, str], cause: dict[str, Any]) -> dict[str, Any]:
    """The `error` of an order made invalid by one of its authorizations (RFC 8555 7.1.3):
    the cause's type, its detail naming the identifier, and the cause itself as the
    subproblem for that identifier (RFC 8555 6.7.1), as clients such as lego report it."""
    kind = str(cause.get("type", NAMESPACE + "unauthorized")).removeprefix(NAMESPACE)
    detail = f"the authorization for {identifier.get('value')} failed: {cause.get('detail', '')}"
    # the cause's own subproblems (a challenge's failed attempts) stay on the challenge
    subproblem = {k: v for k, v in cause.items() if k != "subproblems"}
    subproblem["identifier"] = identifier
    return AcmeProblem(kind, detail, 403, subproblems=[subproblem]).document()


def malformed(detail: str, status: int = 400) -> AcmeProblem:
    return AcmeProblem("malformed", detail, status)


def unauthorized(detail: str) -> AcmeProblem:
    return AcmeProblem("unauthorized", detail, 403)


def inactive_account(status: str) -> AcmeProblem:
    """RFC 8555 7.3.6: a request from a deactivated account MUST be a 401 unauthorized (where
    other refusals of a known requester are 403); a revoked account is no more usable."""
    return AcmeProblem("unauthorized", f"the account is {status}", 401)


def bad_nonce(detail: str) -> AcmeProblem:
    return AcmeProblem("badNonce", detail, 400)


def not_found(detail: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail, 404)
