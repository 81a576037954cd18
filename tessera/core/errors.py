"""Typed domain errors. Each dialect maps these to its own wire format in one place."""


class TesseraError(Exception):
    """Base of every error the core and the services raise on purpose."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(TesseraError):
    """The request is well-formed but its content is not acceptable."""

    status = 400


class UnparsableInput(TesseraError):
    """A PEM, DER, PKCS#12 or CSR blob could not be read."""

    status = 400


class PolicyViolation(TesseraError):
    """The request conflicts with a key floor, template or issuer constraint."""

    status = 422


class NotFound(TesseraError):
    status = 404


class Conflict(TesseraError):
    status = 409


class IssuerNotValid(Conflict):
    """The issuing CA is outside its own validity now: not valid yet (one imported dated
    ahead) or expired. Nothing it signed now would validate. The request itself is sound;
    the CA's state refuses it (another CA, or the same one later, would sign it)."""


class Unauthenticated(TesseraError):
    status = 401


class PermissionDenied(TesseraError):
    status = 403


class Unavailable(TesseraError):
    """The server cannot take this request now (a bounded resource is in use); later it may."""

    status = 503
