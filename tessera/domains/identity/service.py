"""Logins, web sessions and API keys."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tessera.core.errors import InvalidInput, NotFound, PermissionDenied
from tessera.domains import audit
from tessera.domains.actor import Actor
from tessera.domains.identity import permissions, throttle
from tessera.domains.identity.effective import user_permissions
from tessera.domains.identity.secrets import new_token, token_digest, verify_password
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
    details: dict[str, object] = {"method": "password"}
    if not ok:
        details["reason"] = "invalid credentials"
    elif user and user.totp_enabled:
        details["second_factor"] = "required"  # the login completes at auth/login/2fa
    target = user.id if user else None
    status = None if ok else 401
    who = _login_actor(user, username, anonymous)
    audit.record(repos.audit, who, "auth.login", "user", target, details, ok, status)
    if not ok or user is None:
        return None
    if not user.totp_enabled:
        user.last_login = now
    return user


def refuse_throttled(repos: Repositories, username: str, anonymous: Actor) -> None:
    """A password attempt refused unchecked, the name having failed too often (throttle.py):
    audited as a failed login."""
    user = find_login_user(repos.session, username)
    details = {"method": "password", "reason": throttle.THROTTLED}
    who = _login_actor(user, username, anonymous)
    target = user.id if user else None
    audit.record(repos.audit, who, "auth.login", "user", target, details, False, 429)


def _login_actor(user: models.User | None, username: str, anonymous: Actor) -> Actor:
    return Actor(
        user.id if user else None,
        username,
        user.org_id if user else anonymous.org_id,
        user.role if user else "",
        frozenset(),
        anonymous.ip_address,
        anonymous.user_agent,
    )


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
        expires_at = self._expiry(expires_days)
        secret = new_token(API_KEY_PREFIX)
        key = models.ApiKey(
            user_id=user_id,
            name=name.strip()[:200],
            key_hash=token_digest(secret),
            prefix=secret[:12],
            # The caller's permissions, not the role's: a narrowed key cannot mint a wider one.
            permissions=permissions.narrow(self._actor.permissions, requested),
            expires_at=expires_at,
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
            if enabled and not key.enabled:
                self._no_outliving(key)  # a revived key is one more lasting credential
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
        self._no_outliving(key)  # its new secret is a credential handed to this caller
        secret = new_token(API_KEY_PREFIX)
        key.key_hash, key.prefix = token_digest(secret), secret[:12]
        audit.record(self._repos.audit, self._actor, "apikey.regenerate", "api_key", key.id)
        return key, secret

    def delete(self, key_id: int) -> None:
        key = self._manageable(key_id)
        self._repos.api_keys.delete(key)
        audit.record(self._repos.audit, self._actor, "apikey.delete", "api_key", key.id)

    def _expiry(self, expires_days: int | None) -> datetime | None:
        """A new key's expiry. Made with an expiring key, it expires no later than that key
        (by default with it): otherwise a leaked short-lived key could mint a lasting one."""
        if expires_days is not None and not 1 <= expires_days <= 3650:
            raise InvalidInput("expires_days must be between 1 and 3650")
        wanted = self._now + timedelta(days=expires_days) if expires_days else None
        if wanted is None and self._actor.credential_expires_at is not None:
            return self._actor.credential_expires_at
        self._refuse_outliving(wanted, "a key cannot outlive the key that creates it")
        return wanted

    def _no_outliving(self, key: models.ApiKey) -> None:
        """Nor may it regenerate or revive one that outlives it (see `_expiry`)."""
        text = f"API key {key.id} outlives the key this request is made with"
        self._refuse_outliving(key.expires_at, text)

    def _refuse_outliving(self, expires_at: datetime | None, text: str) -> None:
        bound = self._actor.credential_expires_at
        if bound is not None and (expires_at is None or expires_at > bound):
            raise PermissionDenied(f"{text} (expires {bound.isoformat()})")

    def _require_user(self) -> int:
        if self._actor.user_id is None:
            raise PermissionDenied("API keys belong to users")
        return self._actor.user_id

    def _manageable(self, key_id: int) -> models.ApiKey:
        """A caller (often itself a narrowed key) may change only keys no wider than itself;
        otherwise a read-only key could regenerate an admin key and read its new secret."""
        key = self.get(key_id)
        user = load_user(self._repos.session, self._require_user())
        owner = user_permissions(self._repos.session, user) if user else frozenset()
        granted = permissions.effective(key.permissions, owner)
        if any(not permissions.grants(self._actor.permissions, p) for p in granted):
            raise PermissionDenied(f"API key {key_id} grants more than this caller holds")
        return key
