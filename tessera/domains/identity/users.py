"""Users of one organization: CRUD, toggle, administrative password reset, bulk import with
invitations.

No one manages a user whose effective permissions (role plus groups) are wider than their own,
nor hands out a role wider than their own. An organization always keeps an active admin: the
last one can be neither demoted, deactivated nor deleted (nobody could manage users any more,
and there is no way back short of editing the database)."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from tessera.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tessera.domains import audit
from tessera.domains.actor import Actor
from tessera.domains.identity import passwords, permissions, throttle
from tessera.domains.identity.effective import user_permissions
from tessera.domains.identity.secrets import UNUSABLE_PASSWORD, hash_password
from tessera.domains.identity.twofactor import LOGIN_PURPOSE
from tessera.domains.mail import Message
from tessera.storage import models
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.identity import find_login_user

MAX_IMPORT = 500
ADMIN = "admin"


@dataclass(frozen=True)
class UserFields:
    username: str | None = None
    email: str | None = None
    password: str | None = None
    role: str | None = None
    full_name: str | None = None
    active: bool | None = None


@dataclass
class ImportResult:
    created: list[models.User]
    errors: list[dict[str, object]]
    messages: list[Message]


class UserService:
    def __init__(self, repos: Repositories, actor: Actor, now: datetime) -> None:
        self._repos, self._actor, self._now = repos, actor, now
        # Mail for the endpoint to send once the change has committed (domains/mail.py).
        self.outbox: list[Message] = []

    def all(self) -> Sequence[models.User]:
        return self._repos.users.all()

    def get(self, user_id: int) -> models.User:
        user = self._repos.users.get(user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return user

    def create(self, fields: UserFields, invited: bool = False) -> models.User:
        if not fields.username or not fields.username.strip():
            raise InvalidInput("username is required")
        if find_login_user(self._repos.session, fields.username.strip()):
            raise Conflict(f"user {fields.username!r} already exists")
        password = UNUSABLE_PASSWORD
        if not invited:
            password = hash_password(passwords.check_password(fields.password))
        user = models.User(
            username=fields.username.strip()[:150],
            email=check_email(fields.email),
            full_name=fields.full_name,
            role=self._grantable(fields.role or "viewer"),
            password_hash=password,
            active=True,
        )
        self._repos.users.add(user)
        details = {"username": user.username, "role": user.role, "invited": invited}
        audit.record(self._repos.audit, self._actor, "user.create", "user", user.id, details)
        return user

    def update(self, user_id: int, fields: UserFields) -> models.User:
        user = self._manageable(user_id)
        moved = fields.email is not None and not _same_address(fields.email, user.email)
        self._not_own_sign_in(user, moved or fields.password is not None)
        was_admin = self._hold_admins(user)
        changes: dict[str, object] = {}
        if fields.email is not None:
            old, user.email = user.email, check_email(fields.email)
            changes["email"] = user.email
            notice = passwords.address_changed(self._repos, user, old, self._now, self._actor)
            self.outbox.extend([notice] if notice else [])
        if fields.full_name is not None:
            user.full_name = changes["full_name"] = fields.full_name
        if fields.role is not None:
            role = self._grantable(fields.role)
            if role != user.role:
                # New privileges get new sessions: one opened (or stolen) before is not
                # carried over into them, nor kept after a demotion. Not the session making
                # the change (an admin changing their own role): permissions are read again
                # on every request, so it carries on under the new role.
                keep = self._actor.session_id
                self._repos.web_sessions.delete_for_user(user.id, keep_id=keep)
            user.role = changes["role"] = role
        if fields.active is not None:
            revoked = self._set_active(user, fields.active)
            changes["active"] = fields.active
            changes.update({"api_keys_revoked": revoked} if revoked else {})
        if fields.password is not None:
            passwords.set_password(self._repos, user, fields.password, self._now)
            changes["password_changed"] = True
        self._an_admin_remains(was_admin, "demoted or deactivated")
        audit.record(self._repos.audit, self._actor, "user.update", "user", user.id, changes)
        return user

    def toggle(self, user_id: int) -> models.User:
        user = self._manageable(user_id)
        was_admin = self._hold_admins(user)
        revoked = self._set_active(user, not user.active)
        self._an_admin_remains(was_admin, "deactivated")
        details: dict[str, object] = {"active": user.active}
        details.update({"api_keys_revoked": revoked} if revoked else {})
        audit.record(self._repos.audit, self._actor, "user.toggle", "user", user.id, details)
        return user

    def reset_password(
        self, user_id: int, new_password: str | None, policy: passwords.LinkPolicy
    ) -> Message | None:
        """Set the password given, or (none given) mail the user a reset link."""
        user = self._manageable(user_id)
        self._not_own_sign_in(user, new_password is not None)
        if new_password is not None:
            passwords.set_password(self._repos, user, new_password, self._now)
            details: dict[str, object] = {"method": "set"}
            message = None
        else:
            if not user.email:
                raise InvalidInput("the user has no email address; give new_password")
            self._repos.web_sessions.delete_for_user(user.id)
            message = passwords.reset_link(self._repos, user, policy, self._now)
            details = {"method": "email"}
        audit.record(
            self._repos.audit, self._actor, "user.reset_password", "user", user.id, details
        )
        return message

    def login_throttle(
        self, user_id: int, policy: throttle.ThrottlePolicy
    ) -> throttle.ThrottleState:
        return throttle.state(self._repos, self.get(user_id).username, policy, self._now)

    def clear_login_throttle(self, user_id: int) -> bool:
        """Lets the user's password logins through again at once (the owner, locked out by
        someone guessing, asked for it)."""
        user = self._manageable(user_id)
        cleared = throttle.clear(self._repos, user.username)
        details = {"was_throttled": cleared}
        audit.record(
            self._repos.audit, self._actor, "user.login_throttle_clear", "user", user.id, details
        )
        return cleared

    def reset_two_factor(self, user_id: int) -> models.User:
        """A user who lost both the authenticator and the recovery codes signs in with the
        password alone again and may enrol anew. Their pending logins, recovery codes and
        sessions end with it (a reset after a compromise must not leave one open). One's
        own second factor is turned off with a code instead (`account/2fa/disable`)."""
        user = self._manageable(user_id)
        if user.id == self._actor.user_id:
            raise Conflict("turn your own 2FA off with a code: POST /api/v2/account/2fa/disable")
        if not user.totp_enabled and user.encrypted_totp_secret is None:
            raise Conflict(f"user {user.id} has no two-factor authentication")
        user.totp_enabled, user.encrypted_totp_secret, user.totp_last_step = False, None, None
        self._repos.recovery_codes.clear(user.id)
        self._repos.account_tokens.revoke_for_user(user.id, [LOGIN_PURPOSE], self._now)
        self._repos.web_sessions.delete_for_user(user.id)
        audit.record(self._repos.audit, self._actor, "user.2fa_reset", "user", user.id)
        return user

    def delete(self, user_id: int) -> None:
        user = self._manageable(user_id)
        if user.id == self._actor.user_id:
            raise Conflict("you cannot delete your own account")
        was_admin = self._hold_admins(user)
        self._repos.users.delete(user)
        self._an_admin_remains(was_admin, "deleted")
        audit.record(
            self._repos.audit,
            self._actor,
            "user.delete",
            "user",
            user.id,
            {"username": user.username},
        )

    def import_users(
        self, rows: list[UserFields], send_invites: bool, policy: passwords.LinkPolicy
    ) -> ImportResult:
        """Each row is created or reported; one bad row does not stop the others. Imported
        users have no password until they follow their invitation (or an admin sets one)."""
        if len(rows) > MAX_IMPORT:
            raise InvalidInput(f"at most {MAX_IMPORT} users per import")
        result = ImportResult([], [], [])
        for index, row in enumerate(rows):
            try:
                if send_invites and not row.email:
                    raise InvalidInput("an invitation needs an email address")
                user = self._import_row(row)
            except (InvalidInput, Conflict, PermissionDenied) as exc:
                result.errors.append({"index": index, "username": row.username, "error": str(exc)})
                continue
            result.created.append(user)
            if send_invites:
                result.messages.append(passwords.invitation(self._repos, user, policy, self._now))
        audit.record(
            self._repos.audit,
            self._actor,
            "user.import",
            "user",
            None,
            {"created": len(result.created), "failed": len(result.errors)},
        )
        return result

    def _import_row(self, row: UserFields) -> models.User:
        """Created in a savepoint: a name another request took after create's check (its
        insert refused by the unique username) is reported like one taken before, and the
        import goes on."""
        try:
            with self._repos.session.begin_nested():
                return self.create(row, invited=row.password is None)
        except IntegrityError as exc:
            if find_login_user(self._repos.session, (row.username or "").strip()) is None:
                raise
            raise Conflict(f"user {row.username!r} already exists") from exc

    def effective(self, user: models.User) -> frozenset[str]:
        return user_permissions(self._repos.session, user)

    def _set_active(self, user: models.User, active: bool) -> int:
        """How many API keys the change revoked."""
        if not active and user.id == self._actor.user_id:
            raise Conflict("you cannot deactivate your own account")
        revoked = 0
        if not active:
            # Cut off: sessions end, and so do links mailed before, logins waiting for their
            # second factor and API keys (else they would work again once the account is
            # active: whoever reactivates a user means the person, not their old secrets).
            self._repos.web_sessions.delete_for_user(user.id)
            voided = passwords.VOIDED_BY_NEW_PASSWORD
            self._repos.account_tokens.revoke_for_user(user.id, voided, self._now)
            revoked = self._repos.api_keys.delete_for_user(user.id)
        elif not user.active:
            # Keys kept by a deactivation before they were revoked with it do not come back.
            revoked = self._repos.api_keys.delete_for_user(user.id)
        user.active = active
        return revoked

    def _hold_admins(self, user: models.User) -> bool:
        """Whether `user` is an active admin, whom the change at hand might take away. If so,
        the organization's active admins are locked first: two requests each removing one of
        the last two admins then run in turn, and the second is refused."""
        if user.role != ADMIN or not user.active:
            return False
        self._repos.users.lock_active_with_role(ADMIN)
        return True

    def _an_admin_remains(self, was_admin: bool, change: str) -> None:
        if was_admin and self._repos.users.count_active_with_role(ADMIN) == 0:
            raise Conflict(
                f"the organization's last active admin cannot be {change}; "
                "make another user admin first"
            )

    def _grantable(self, role: str) -> str:
        """No one hands out a role wider than what they hold themselves (a key narrowed to
        write:users must not be able to make an admin)."""
        if not permissions.covers(self._actor.permissions, permissions.role_permissions(role)):
            raise PermissionDenied(f"you cannot grant the role {check_role(role)!r}")
        return check_role(role)

    def _not_own_sign_in(self, user: models.User, changes_sign_in: bool) -> None:
        """One's own address (where reset links go) and password change at /account, which
        asks for the current password: here a stolen session of whoever manages users would
        skip it."""
        if changes_sign_in and user.id == self._actor.user_id:
            raise PermissionDenied(
                "change your own email address or password under /account, with your password"
            )

    def _manageable(self, user_id: int) -> models.User:
        user = self.get(user_id)
        if not permissions.covers(self._actor.permissions, self.effective(user)):
            raise PermissionDenied(f"user {user_id} holds more permissions than you")
        return user


def _same_address(email: str, current: str | None) -> bool:
    """A change of case is no change of address (passwords.address_changed)."""
    return (check_email(email) or "").lower() == (current or "").lower()


def check_role(role: str) -> str:
    if role not in permissions.ROLES:
        raise InvalidInput(f"unknown role {role!r}; roles: {', '.join(permissions.ROLES)}")
    return role


def check_email(email: str | None) -> str | None:
    """A plausible address (one @, no spaces, a dot in the domain) or none at all."""
    if email is None or not email.strip():
        return None
    email = email.strip()
    local, at, domain = email.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in email):
        raise InvalidInput(f"invalid email address {email!r}")
    return email
