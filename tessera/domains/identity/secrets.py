"""Password hashing (argon2id) and high-entropy tokens (stored as SHA-256 digests)."""

import functools
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


@functools.cache
def dummy_hash() -> str:
    """Verifying against this keeps a login for an unknown user as slow as one for a known
    user. Made on first use, not at import: every process importing this module (the
    supervisor, the CLI) would pay an argon2 hash; a server makes it as it starts."""
    return _hasher.hash(secrets.token_urlsafe(16))


MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    return _hasher.hash(password)


# Stored for accounts that have no password yet (invited, not yet accepted): no input matches.
UNUSABLE_PASSWORD = "!unusable"  # noqa: S105 - a marker, not a password


def verify_password(password_hash: str | None, password: str) -> bool:
    stored = password_hash or ""
    usable = bool(stored) and not stored.startswith("!")
    try:
        # The dummy hash keeps the answer as slow for an account without a password.
        checked = _hasher.verify(stored if usable else dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return checked and usable


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def new_recovery_code() -> str:
    """80 random bits in two groups of ten hex digits: easy to type, far beyond guessing."""
    raw = secrets.token_hex(10)
    return f"{raw[:10]}-{raw[10:]}"


def recovery_digest(code: str) -> str:
    """Digest of a recovery code as typed: case, spaces and dashes do not matter."""
    normal = "".join(ch for ch in code.lower() if ch.isalnum())
    return token_digest(normal)
