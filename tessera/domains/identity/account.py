"""The caller's own account: profile, web sessions, activity."""

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from tessera.core.errors import InvalidInput, NotFound, PermissionDenied
from tessera.domains import audit
from tessera.domains.actor import Actor
from tessera.domains.identity import passwords, throttle
from tessera.domains.identity.effective import require_full_access
from tessera.domains.identity.users import check_email
from tessera.domains.mail import Message
from tessera.storage import models
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.accounts import AccountTokenRepository, LoginThrottleRepository
from tessera.storage.repositories.identity import WebSessionRepository, load_user

MAX_ACTIVITY = 500
PURGE_JOB = "accounts-purge"
PURGE_SECONDS = 3600.0
TOKEN_KEEP = timedelta(days=1)  # expired tokens stay a day, for investigating a failed reset


def purge_expired(sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
    """Background housekeeping: expired web sessions and account tokens are dead rows (every
    lookup already ignores them), as are login throttles left alone for a day. Plain
    idempotent DELETEs, so every process may run it."""
    now = clock()
    with sessions() as session:
        WebSessionRepository(session).purge_expired(now)
        AccountTokenRepository(session).purge_expired(now - TOKEN_KEEP)
        # Login throttles last a window (a day at most) after their last attempt or lock.
        LoginThrottleRepository(session).purge_quiet(now - TOKEN_KEEP)
        session.commit()


class AccountService:
    def __init__(self, repos: Repositories, actor: Actor, now: datetime) -> None:
        self._repos, self._actor, self._now = repos, actor, now
        # Mail for the endpoint to send once the change has committed (domains/mail.py).
        self.outbox: list[Message] = []

    def user(self) -> models.User:
        user = load_user(self._repos.session, self._actor.user_id) if self._actor.user_id else None
        if user is None:
            raise PermissionDenied("this endpoint needs a user account")
        return user

    def _changing(self) -> models.User:
        user = self.user()
        require_full_access(self._repos.session, self._actor, user)
        return user

    def update_profile(
        self,
        full_name: str | None,
        email: str | None,
        current_password: str | None,
        guard: throttle.Guard,
    ) -> models.User | throttle.Checked:
        """The refused check (audited, nothing changed) when the address would change and the
        current password is wrong or the name's logins are throttled; InvalidInput when none
        is given. A change of case is no change of address (passwords.address_changed)."""
        user = self._changing()
        new_email = check_email(email) if email is not None else user.email
        if (new_email or "").lower() != (user.email or "").lower():
            if not current_password:
                raise InvalidInput("changing the email address needs current_password")
            password_hash = user.password_hash
            checked = throttle.check_current(
                self._repos, user.username, password_hash, current_password, guard
            )
            if not checked.right:
                audit.record(
                    self._repos.audit,
                    self._actor,
                    "account.profile_update",
                    "user",
                    user.id,
                    {"reason": checked.reason},
                    False,
                )
                return checked
        changes: dict[str, object] = {}
        if full_name is not None:
            user.full_name = changes["full_name"] = full_name.strip() or None
        if email is not None:
            old, user.email = user.email, new_email
            changes["email"] = user.email
            notice = passwords.address_changed(self._repos, user, old, self._now, self._actor)
            self.outbox.extend([notice] if notice else [])
        audit.record(
            self._repos.audit, self._actor, "account.profile_update", "user", user.id, changes
        )
        return user

    def sessions(self) -> Sequence[models.WebSession]:
        return self._repos.web_sessions.for_user(self.user().id, self._now)

    def revoke_session(self, session_id: int) -> None:
        user = self._changing()
        if not self._repos.web_sessions.delete_one(user.id, session_id):
            raise NotFound(f"session {session_id} not found")
        audit.record(
            self._repos.audit, self._actor, "account.session_revoke", "session", session_id
        )

    def revoke_other_sessions(self, keep_id: int | None) -> int:
        user = self._changing()
        others = [s for s in self.sessions() if s.id != keep_id]
        self._repos.web_sessions.delete_for_user(user.id, keep_id=keep_id)
        audit.record(
            self._repos.audit,
            self._actor,
            "account.sessions_revoke_all",
            "user",
            user.id,
            {"revoked": len(others)},
        )
        return len(others)

    def activity(self, limit: int) -> Sequence[models.AuditLog]:
        if not 1 <= limit <= MAX_ACTIVITY:
            raise InvalidInput(f"limit must be between 1 and {MAX_ACTIVITY}")
        return self._repos.users.activity(self.user().id, limit)
