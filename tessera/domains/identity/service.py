"""Logins, web sessions, API keys and users."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tessera.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tessera.domains import audit
from tessera.domains.actor import Actor
from tessera.domains.identity import permissions
from tessera.domains.identity.secrets import (
    MIN_PASSWORD_LENGTH,
    hash_password,
    new_token,
    token_digest,
    verify_password,
)
from tessera.storage import models
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.identity import find_login_user, load_user

API_KEY_PREFIX = "tsk_"


@dataclass(frozen=True)
class NewSession:
    user: models.User
    token: str
    csrf_token: str
    expires_at: datetime


def authenticate(
    repos: Repositories, username: str, password: str, now: datetime, anonymous: Actor
) -> models.User | None:
    """Check a password; success and failure are both audited."""
    user = find_login_user(repos.session, username)
    valid = verify_password(user.password_hash if user else None, password)
    ok = bool(user and valid and user.active)
    who = Actor(
        user.id if user else None,
        username,
        user.org_id if user else anonymous.org_id,
        user.role if user else "",
        frozenset(),
        anonymous.ip_address,
        anonymous.user_agent,
    )
    audit.record(
        repos.audit,
        who,
        "auth.login",
        "user",
        user.id if user else None,
        {"method": "password", **({} if ok else {"reason": "invalid credentials"})},
        ok,
    )
    if not ok or user is None:
        return None
    user.last_login = now
    return user


def open_session(
    repos: Repositories, user: models.User, now: datetime, minutes: int, actor: Actor
) -> NewSession:
    token, csrf = new_token(), new_token()
    expires = now + timedelta(minutes=minutes)
    repos.web_sessions.add(
        models.WebSession(
            token_hash=token_digest(token),
            csrf_token=csrf,
            user_id=user.id,
            created_at=now,
            expires_at=expires,
            ip_address=actor.ip_address,
            user_agent=(actor.user_agent or "")[:300],
        )
    )
    return NewSession(user, token, csrf, expires)


def close_session(repos: Repositories, token: str, actor: Actor) -> None:
    repos.web_sessions.delete_by_hash(token_digest(token))
    audit.record(repos.audit, actor, "auth.logout", "user", actor.user_id)


class ApiKeyService:
    def __init__(self, repos: Repositories, actor: Actor, now: datetime) -> None:
        self._repos, self._actor, self._now = repos, actor, now

    def mine(self) -> Sequence[models.ApiKey]:
        return self._repos.api_keys.for_user(self._require_user())

    def get(self, key_id: int) -> models.ApiKey:
        key = self._repos.api_keys.get(self._require_user(), key_id)
        if key is None:
            raise NotFound(f"API key {key_id} not found")
        return key

    def create(
        self, name: str, expires_days: int | None, requested: list[str] | None
    ) -> tuple[models.ApiKey, str]:
        user_id = self._require_user()
        if not name.strip():
            raise InvalidInput("name is required")
        if expires_days is not None and not 1 <= expires_days <= 3650:
            raise InvalidInput("expires_days must be between 1 and 3650")
        secret = new_token(API_KEY_PREFIX)
        key = models.ApiKey(
            user_id=user_id,
            name=name.strip()[:200],
            key_hash=token_digest(secret),
            prefix=secret[:12],
            # The caller's permissions, not the role's: a narrowed key cannot mint a wider one.
            permissions=permissions.narrow(self._actor.permissions, requested),
            expires_at=self._now + timedelta(days=expires_days) if expires_days else None,
            created_at=self._now,
        )
        self._repos.api_keys.add(key)
        audit.record(
            self._repos.audit,
            self._actor,
            "apikey.create",
            "api_key",
            key.id,
            {"name": key.name, "permissions": key.permissions},
        )
        return key, secret

    def update(self, key_id: int, name: str | None, enabled: bool | None) -> models.ApiKey:
        key = self._manageable(key_id)
        if name is not None:
            if not name.strip():
                raise InvalidInput("name cannot be empty")
            key.name = name.strip()[:200]
        if enabled is not None:
            key.enabled = enabled
        audit.record(
            self._repos.audit,
            self._actor,
            "apikey.update",
            "api_key",
            key.id,
            {"name": key.name, "enabled": key.enabled},
        )
        return key

    def regenerate(self, key_id: int) -> tuple[models.ApiKey, str]:
        key = self._manageable(key_id)
        secret = new_token(API_KEY_PREFIX)
        key.key_hash, key.prefix = token_digest(secret), secret[:12]
        audit.record(self._repos.audit, self._actor, "apikey.regenerate", "api_key", key.id)
        return key, secret

    def delete(self, key_id: int) -> None:
        key = self._manageable(key_id)
        self._repos.api_keys.delete(key)
        audit.record(self._repos.audit, self._actor, "apikey.delete", "api_key", key.id)

    def _require_user(self) -> int:
        if self._actor.user_id is None:
            raise PermissionDenied("API keys belong to users")
        return self._actor.user_id

    def _manageable(self, key_id: int) -> models.ApiKey:
        """A caller (often itself a narrowed key) may change only keys no wider than itself;
        otherwise a read-only key could regenerate an admin key and read its new secret."""
        key = self.get(key_id)
        user = load_user(self._repos.session, self._require_user())
        role = permissions.role_permissions(user.role) if user else frozenset()
        granted = permissions.effective(key.permissions, role)
        if any(not permissions.grants(self._actor.permissions, p) for p in granted):
            raise PermissionDenied(f"API key {key_id} grants more than this caller holds")
        return key


@dataclass(frozen=True)
class UserFields:
    username: str | None = None
    email: str | None = None
    password: str | None = None
    role: str | None = None
    full_name: str | None = None
    active: bool | None = None


class UserService:
    def __init__(self, repos: Repositories, actor: Actor) -> None:
        self._repos, self._actor = repos, actor

    def all(self) -> Sequence[models.User]:
        return self._repos.users.all()

    def get(self, user_id: int) -> models.User:
        user = self._repos.users.get(user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return user

    def create(self, fields: UserFields) -> models.User:
        if not fields.username or not fields.username.strip():
            raise InvalidInput("username is required")
        if find_login_user(self._repos.session, fields.username.strip()):
            raise Conflict(f"user {fields.username!r} already exists")
        check_password(fields.password)
        user = models.User(
            username=fields.username.strip()[:150],
            email=fields.email,
            full_name=fields.full_name,
            role=self._grantable(fields.role or "viewer"),
            password_hash=hash_password(fields.password or ""),
            active=True,
        )
        self._repos.users.add(user)
        audit.record(
            self._repos.audit,
            self._actor,
            "user.create",
            "user",
            user.id,
            {"username": user.username, "role": user.role},
        )
        return user

    def update(self, user_id: int, fields: UserFields) -> models.User:
        user = self._manageable(user_id)
        changes: dict[str, object] = {}
        if fields.email is not None:
            user.email = changes["email"] = fields.email
        if fields.full_name is not None:
            user.full_name = changes["full_name"] = fields.full_name
        if fields.role is not None:
            user.role = changes["role"] = self._grantable(fields.role)
        if fields.active is not None:
            user.active = changes["active"] = fields.active
        if fields.password is not None:
            check_password(fields.password)
            user.password_hash = hash_password(fields.password)
            self._repos.web_sessions.delete_for_user(user.id)
            changes["password_changed"] = True
        audit.record(self._repos.audit, self._actor, "user.update", "user", user.id, changes)
        return user

    def delete(self, user_id: int) -> None:
        user = self._manageable(user_id)
        if user.id == self._actor.user_id:
            raise Conflict("you cannot delete your own account")
        self._repos.users.delete(user)
        audit.record(
            self._repos.audit,
            self._actor,
            "user.delete",
            "user",
            user.id,
            {"username": user.username},
        )

    def _grantable(self, role: str) -> str:
        """No one hands out a role wider than what they hold themselves (a key narrowed to
        write:users must not be able to make an admin)."""
        if not _covers(self._actor.permissions, check_role(role)):
            raise PermissionDenied(f"you cannot grant the role {role!r}")
        return role

    def _manageable(self, user_id: int) -> models.User:
        user = self.get(user_id)
        if not _covers(self._actor.permissions, user.role):
            raise PermissionDenied(f"user {user_id} holds more permissions than you")
        return user


def _covers(held: frozenset[str], role: str) -> bool:
    return all(permissions.grants(held, p) for p in permissions.role_permissions(role))


def check_role(role: str) -> str:
    if role not in permissions.ROLES:
        raise InvalidInput(f"unknown role {role!r}; roles: {', '.join(permissions.ROLES)}")
    return role


def check_password(password: str | None) -> None:
    if not password or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
