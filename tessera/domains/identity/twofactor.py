"""TOTP second factor (RFC 6238 via pyotp): enrolment with a QR code, confirmation, recovery
codes, and the second step of a login.

Replay: a code is accepted only for a time step later than the last one this account used
(a conditional UPDATE on users.totp_last_step), so a code seen on the wire cannot be reused,
not even by two racing requests. Recovery codes are stored as SHA-256 digests and consumed
by a conditional UPDATE as well."""

import base64
import hmac
import io
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import qrcode
from qrcode.image.pure import PyPNGImage

from tessera.core.errors import Conflict, InvalidInput, PermissionDenied
from tessera.core.keystore import KeyEncryptor
from tessera.domains import audit
from tessera.domains.actor import Actor, as_user
from tessera.domains.identity.effective import require_full_access
from tessera.domains.identity.secrets import (
    new_recovery_code,
    new_token,
    recovery_digest,
    token_digest,
)
from tessera.storage import models
from tessera.storage.models_accounts import AccountToken
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.identity import claim_totp_step, load_user, lock_user

ISSUER = "Tessera"
RECOVERY_CODES = 10
STEP_SECONDS = 30
MAX_CODE_ATTEMPTS = 5  # wrong codes before a pending login is void
# Wrong codes, over all of an account's pending logins, after which its TOTP codes are not
# taken for a while (a pending login is cheap to whoever has the password).
MAX_ACCOUNT_FAILURES = 10
ACCOUNT_FAILURE_WINDOW = timedelta(minutes=15)
LOGIN_PURPOSE = "login"


@dataclass(frozen=True)
class Enrolment:
    secret: str
    uri: str
    qr_code: str  # data:image/png;base64,...


@dataclass(frozen=True)
class PendingLogin:
    token: str
    expires_at: datetime


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step (now +/- one, for clock drift) whose code this is, if any."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP_SECONDS
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()):
            return step
    return None


def _qr_data_uri(uri: str) -> str:
    image = qrcode.make(uri, image_factory=PyPNGImage, box_size=6, border=2)
    buffer = io.BytesIO()
    image.save(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class TwoFactor:
    def __init__(
        self, repos: Repositories, keys: KeyEncryptor, actor: Actor, now: datetime
    ) -> None:
        self._repos, self._keys, self._actor, self._now = repos, keys, actor, now

    def user(self) -> models.User:
        if self._actor.user_id is None:
            raise PermissionDenied("two-factor settings belong to users")
        user = load_user(self._repos.session, self._actor.user_id)
        if user is None:
            raise PermissionDenied("two-factor settings belong to users")
        return user

    def _changing(self) -> models.User:
        user = self.user()
        require_full_access(self._repos.session, self._actor, user)
        return user

    def enable(self) -> Enrolment:
        """A new secret, not yet in force: the next confirm with a valid code turns it on."""
        user = self._changing()
        if user.totp_enabled:
            raise Conflict("two-factor authentication is already enabled; disable it first")
        secret = pyotp.random_base32(32)
        user.encrypted_totp_secret = self._keys.seal(secret.encode("ascii"))
        user.totp_last_step = None
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=ISSUER)
        audit.record(self._repos.audit, self._actor, "account.2fa_enable", "user", user.id)
        return Enrolment(secret, uri, _qr_data_uri(uri))

    def confirm(self, code: str) -> list[str] | None:
        """Recovery codes when the code fits the pending secret; None (audited) otherwise."""
        user = self._changing()
        if user.totp_enabled:
            raise Conflict("two-factor authentication is already enabled")
        if not user.encrypted_totp_secret:
            raise InvalidInput("call 2fa/enable first")
        if not self.accept_totp(user, code):
            self._failed(user, "account.2fa_confirm")
            return None
        user.totp_enabled = True
        codes = self._new_recovery_codes(user)
        audit.record(self._repos.audit, self._actor, "account.2fa_confirm", "user", user.id)
        return codes

    def disable(self, code: str) -> bool:
        user = self._changing()
        if not user.totp_enabled:
            raise Conflict("two-factor authentication is not enabled")
        if not self.check_second_factor(user, code):
            self._failed(user, "account.2fa_disable")
            return False
        user.totp_enabled, user.encrypted_totp_secret, user.totp_last_step = False, None, None
        self._repos.recovery_codes.clear(user.id)
        audit.record(self._repos.audit, self._actor, "account.2fa_disable", "user", user.id)
        return True

    def recovery_status(self) -> dict[str, object]:
        user = self.user()
        unused, total = self._repos.recovery_codes.counts(user.id)
        return {
            "enabled": user.totp_enabled,
            "remaining": unused,
            "total": total,
            "generated_at": self._repos.recovery_codes.created_at(user.id),
        }

    def regenerate(self, code: str | None) -> list[str] | None:
        """New codes for a current TOTP code or an unused recovery code; None (audited)
        otherwise. Disabling asks for one, so minting codes must too: else whoever holds a
        session could regenerate, then disable, or keep codes for later logins."""
        user = self._changing()
        if not user.totp_enabled:
            raise Conflict("two-factor authentication is not enabled")
        if code is None:
            raise InvalidInput("code is required: a current TOTP code or an unused recovery code")
        if not self.check_second_factor(user, code):
            self._failed(user, "account.2fa_recovery_regenerate")
            return None
        codes = self._new_recovery_codes(user)
        audit.record(
            self._repos.audit, self._actor, "account.2fa_recovery_regenerate", "user", user.id
        )
        return codes

    def check_second_factor(self, user: models.User, code: str) -> bool:
        """A current TOTP code (once) or an unused recovery code (once)."""
        if self.accept_totp(user, code):
            return True
        digest = recovery_digest(code)
        return bool(code.strip()) and self._repos.recovery_codes.consume(user.id, digest, self._now)

    def accept_totp(self, user: models.User, code: str) -> bool:
        if not user.encrypted_totp_secret:
            return False
        secret = self._keys.unseal(user.encrypted_totp_secret).decode("ascii")
        step = matching_step(secret, code, self._now)
        return step is not None and claim_totp_step(self._repos.session, user.id, step)

    def _new_recovery_codes(self, user: models.User) -> list[str]:
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        self._repos.recovery_codes.replace(user.id, [recovery_digest(c) for c in codes], self._now)
        return codes

    def _failed(self, user: models.User, action: str) -> None:
        audit.record(
            self._repos.audit,
            self._actor,
            action,
            "user",
            user.id,
            {"reason": "invalid code"},
            False,
        )


def start_login(
    repos: Repositories, user: models.User, now: datetime, seconds: int
) -> PendingLogin:
    """The state between a correct password and the second factor: a stored single-use token,
    not a session (it opens nothing by itself and expires in minutes)."""
    token = new_token()
    expires = now + timedelta(seconds=seconds)
    repos.account_tokens.add(
        AccountToken(
            user_id=user.id,
            purpose=LOGIN_PURPOSE,
            token_hash=token_digest(token),
            created_at=now,
            expires_at=expires,
        )
    )
    return PendingLogin(token, expires)


@dataclass(frozen=True)
class SecondStep:
    """How a login's second step ended: the user and the factor used, or a refusal (audited).
    `totp_locked`: the account had too many wrong codes of late, so no TOTP code was taken."""

    user: models.User | None = None
    factor: str | None = None
    totp_locked: bool = False


def finish_login(
    repos: Repositories,
    keys: KeyEncryptor,
    pending_token: str,
    code: str,
    now: datetime,
    anonymous: Actor,
) -> SecondStep:
    """The user and the factor used, or a refusal (audited). A pending login is void after
    MAX_CODE_ATTEMPTS wrong codes; and since whoever has the password can start any number of
    them, an account takes no TOTP code at all once its pending logins started within the
    last ACCOUNT_FAILURE_WINDOW hold MAX_ACCOUNT_FAILURES wrong codes, whatever the addresses
    they came from: so for as long as wrong codes keep coming (an unused recovery code, which
    cannot be guessed, still opens the session)."""
    pending = repos.account_tokens.live(token_digest(pending_token), [LOGIN_PURPOSE], now)
    user = load_user(repos.session, pending.user_id) if pending else None
    if pending is None or user is None or not user.active or not user.totp_enabled:
        audit.record(
            repos.audit,
            anonymous,
            "auth.login_2fa",
            "user",
            None,
            {"reason": "unknown or expired login"},
            False,
        )
        return SecondStep()
    who = as_user(user, anonymous)
    # The account's row is held from here to commit (PostgreSQL; on SQLite the write that
    # counts the try takes the database's write lock), and the try is counted before the
    # code is looked at: tries of one account run in turn, each seeing those before it, so a
    # burst of requests cannot all pass the check below at once. The user row is taken
    # before the token's, as a password change takes them.
    lock_user(repos.session, user.id)
    tries = repos.account_tokens.count_attempt(pending.id)
    since = now - ACCOUNT_FAILURE_WINDOW
    earlier = repos.account_tokens.attempts_since(user.id, LOGIN_PURPOSE, since) - 1
    totp_locked = earlier >= MAX_ACCOUNT_FAILURES
    factor = _factor_used(repos, keys, who, user, code, now, totp=not totp_locked)
    if factor is None:
        if tries >= MAX_CODE_ATTEMPTS:
            repos.account_tokens.consume(pending.id, now)
        reason = "too many wrong codes: TOTP not accepted" if totp_locked else "invalid code"
        audit.record(repos.audit, who, "auth.login_2fa", "user", user.id, {"reason": reason}, False)
        return SecondStep(totp_locked=totp_locked)
    repos.account_tokens.count_attempt(pending.id, -1)  # a right code is no failure
    if not repos.account_tokens.consume(pending.id, now):
        return SecondStep()
    audit.record(repos.audit, who, "auth.login_2fa", "user", user.id, {"method": factor})
    user.last_login = now
    return SecondStep(user, factor)


def _factor_used(
    repos: Repositories,
    keys: KeyEncryptor,
    who: Actor,
    user: models.User,
    code: str,
    now: datetime,
    totp: bool,
) -> str | None:
    checker = TwoFactor(repos, keys, who, now)
    if totp and checker.accept_totp(user, code):
        return "totp"
    if code.strip() and repos.recovery_codes.consume(user.id, recovery_digest(code), now):
        return "recovery_code"
    return None
