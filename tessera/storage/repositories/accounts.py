"""Single-use account tokens, recovery codes and the server-wide mail settings."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tessera.storage.models_accounts import (
    AccountToken,
    LoginThrottle,
    MailSettings,
    RecoveryCode,
)

MAIL_SETTINGS_ID = 1


class AccountTokenRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, token: AccountToken) -> AccountToken:
        self._session.add(token)
        self._session.flush()
        return token

    def live(self, token_hash: str, purposes: Sequence[str], now: datetime) -> AccountToken | None:
        """An unused, unexpired token of one of the purposes."""
        return self._session.scalar(
            select(AccountToken).where(
                AccountToken.token_hash == token_hash,
                AccountToken.purpose.in_(purposes),
                AccountToken.used_at.is_(None),
                AccountToken.expires_at > now,
            )
        )

    def consume(self, token_id: int, now: datetime) -> bool:
        """Mark the token used; False when another request consumed it first (the conditional
        UPDATE is what makes a token single use under concurrency, on both databases)."""
        result = self._session.execute(
            update(AccountToken)
            .where(AccountToken.id == token_id, AccountToken.used_at.is_(None))
            .values(used_at=now)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def count_attempt(self, token_id: int, by: int = 1) -> int:
        """Add `by` to the token's attempts (one more try, or -1 to take back a try that
        succeeded) and return the new count."""
        self._session.execute(
            update(AccountToken)
            .where(AccountToken.id == token_id)
            .values(attempts=AccountToken.attempts + by)
        )
        attempts = self._session.scalar(
            select(AccountToken.attempts).where(AccountToken.id == token_id)
        )
        return int(attempts or 0)

    def attempts_since(self, user_id: int, purpose: str, since: datetime) -> int:
        """Attempts counted on the user's tokens of this purpose made since `since`."""
        total = self._session.scalar(
            select(func.coalesce(func.sum(AccountToken.attempts), 0)).where(
                AccountToken.user_id == user_id,
                AccountToken.purpose == purpose,
                AccountToken.created_at >= since,
            )
        )
        return int(total or 0)

    def revoke_for_user(self, user_id: int, purposes: Sequence[str], now: datetime) -> None:
        """Unused tokens of the user stop working (a newer link or a password set elsewhere)."""
        self._session.execute(
            update(AccountToken)
            .where(
                AccountToken.user_id == user_id,
                AccountToken.purpose.in_(purposes),
                AccountToken.used_at.is_(None),
            )
            .values(used_at=now)
        )

    def purge_expired(self, before: datetime) -> None:
        self._session.execute(delete(AccountToken).where(AccountToken.expires_at < before))


class LoginThrottleRepository:
    """Failed-login counts per username digest (domains/identity/throttle.py)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def hold(self, subject: str) -> LoginThrottle:
        """The subject's row, made if missing, held until the transaction ends: PostgreSQL
        locks it (FOR UPDATE); on SQLite the INSERT took the write lock already. Attempts
        for one name from any process are thus counted one after another."""
        values = {"subject": subject, "failures": 0, "lockouts": 0}
        dialect = postgresql if self._session.get_bind().dialect.name == "postgresql" else sqlite
        while True:
            insert = dialect.insert(LoginThrottle).values(values).on_conflict_do_nothing()
            self._session.execute(insert)
            held = self._session.scalar(
                select(LoginThrottle)
                .where(LoginThrottle.subject == subject)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if held is not None:
                return held
            # Deleted in between (an administrator's clear, the purge job): made again.

    def find(self, subject: str) -> LoginThrottle | None:
        return self._session.get(LoginThrottle, subject)

    def clear(self, subject: str) -> bool:
        result = self._session.execute(
            delete(LoginThrottle).where(LoginThrottle.subject == subject)
        )
        return bool(getattr(result, "rowcount", 0))

    def purge_quiet(self, before: datetime) -> None:
        """Rows with neither an attempt nor a lock since `before`: nothing left to count."""
        quiet = and_(
            or_(LoginThrottle.last_failure_at.is_(None), LoginThrottle.last_failure_at < before),
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < before),
        )
        self._session.execute(delete(LoginThrottle).where(quiet))


class RecoveryCodeRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def replace(self, user_id: int, digests: Sequence[str], now: datetime) -> None:
        self._session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        self._session.add_all(
            RecoveryCode(user_id=user_id, code_hash=d, created_at=now) for d in digests
        )
        self._session.flush()

    def clear(self, user_id: int) -> None:
        self._session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))

    def consume(self, user_id: int, digest: str, now: datetime) -> bool:
        """Use one unused code; the conditional UPDATE makes each code single use."""
        result = self._session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user_id,
                RecoveryCode.code_hash == digest,
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
        )
        return bool(getattr(result, "rowcount", 0) >= 1)

    def counts(self, user_id: int) -> tuple[int, int]:
        """(unused, total)."""
        total = self._session.scalar(
            select(func.count()).select_from(RecoveryCode).where(RecoveryCode.user_id == user_id)
        )
        unused = self._session.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )
        return int(unused or 0), int(total or 0)

    def created_at(self, user_id: int) -> datetime | None:
        return self._session.scalar(
            select(func.max(RecoveryCode.created_at)).where(RecoveryCode.user_id == user_id)
        )


class MailSettingsRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self) -> MailSettings | None:
        return self._session.get(MailSettings, MAIL_SETTINGS_ID)

    def add(self, row: MailSettings) -> MailSettings:
        row.id = MAIL_SETTINGS_ID
        self._session.add(row)
        self._session.flush()
        return row
