from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.orm import Session

from tessera.storage.models import (
    ApiKey,
    AuditLog,
    CredentialGeneration,
    Organization,
    User,
    WebSession,
)
from tessera.storage.models_accounts import UserGroupMember

_GENERATION = select(CredentialGeneration.n).where(CredentialGeneration.id == 1)

DEFAULT_ORGANIZATION = "default"


class OrganizationRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def default(self) -> Organization | None:
        return self._session.scalar(
            select(Organization).where(Organization.name == DEFAULT_ORGANIZATION)
        )

    def add(self, name: str) -> Organization:
        org = Organization(name=name)
        self._session.add(org)
        self._session.flush()
        return org

    def hold(self, org_id: int) -> None:
        """Hold the organization's row until the transaction ends, so that checks which no
        unique index backs (is this certificate here already?) run one at a time across
        processes. A no-op UPDATE rather than FOR UPDATE: on SQLite it is the first write, which
        takes the database's write lock before the check reads; on PostgreSQL it locks the row
        without changing a key, so inserts that merely reference the organization (their
        foreign-key check) are not held up."""
        self._session.execute(
            update(Organization)
            .where(Organization.id == org_id)
            .values(created_at=Organization.created_at)
            .execution_options(synchronize_session=False)
        )


class UserRepository:
    """Users of one organization; login looks users up across organizations by name."""

    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def add(self, user: User) -> User:
        user.org_id = self._org_id
        self._session.add(user)
        self._session.flush()
        return user

    def get(self, user_id: int) -> User | None:
        return self._session.scalar(
            select(User).where(User.id == user_id, User.org_id == self._org_id)
        )

    def by_username(self, username: str) -> User | None:
        return self._session.scalar(
            select(User).where(User.username == username, User.org_id == self._org_id)
        )

    def all(self) -> Sequence[User]:
        return self._session.scalars(
            select(User).where(User.org_id == self._org_id).order_by(User.id)
        ).all()

    def delete(self, user: User) -> None:
        self._session.execute(delete(User).where(User.id == user.id, User.org_id == self._org_id))

    def lock_active_with_role(self, role: str) -> None:
        """Lock the rows of the organization's active users with this role until the
        transaction ends (PostgreSQL: FOR UPDATE, in id order; SQLite's writers queue on one
        lock anyway). Two requests that each take one of the last two away then run one after
        the other, and the second sees what the first left."""
        self._session.execute(self._active_with_role(role).order_by(User.id).with_for_update())

    def count_active_with_role(self, role: str) -> int:
        """Active users of the organization with this role, this transaction's changes
        included."""
        self._session.flush()
        counted = select(func.count()).select_from(self._active_with_role(role).subquery())
        return int(self._session.scalar(counted) or 0)

    def _active_with_role(self, role: str) -> Select[int]:
        return select(User.id).where(
            User.org_id == self._org_id, User.role == role, User.active.is_(True)
        )

    def activity(self, user_id: int, limit: int) -> Sequence[AuditLog]:
        """The user's own audit rows, newest first."""
        return self._session.scalars(
            select(AuditLog)
            .where(AuditLog.user_id == user_id, AuditLog.org_id == self._org_id)
            .order_by(AuditLog.id.desc())
            .limit(limit)
        ).all()


def credential_generation(session: Session) -> int:
    """Moves whenever what some credential grants may have changed (migration 0012)."""
    return int(session.connection().execute(_GENERATION).scalar_one())


def users_by_email(session: Session, email: str) -> Sequence[User]:
    """Active users with this address, in any organization (a reset request names no
    organization); compared case-insensitively."""
    return session.scalars(
        select(User).where(func.lower(User.email) == email.strip().lower(), User.active.is_(True))
    ).all()


def claim_totp_step(session: Session, user_id: int, step: int) -> bool:
    """Record the TOTP time step just used; False if it (or a later one) was used already.
    A conditional UPDATE, so two requests racing with one code cannot both pass."""
    result = session.execute(
        update(User)
        .where(
            User.id == user_id,
            or_(User.totp_last_step.is_(None), User.totp_last_step < step),
        )
        .values(totp_last_step=step)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def find_login_user(session: Session, username: str) -> User | None:
    """Login happens before the organization is known: usernames are unique server-wide."""
    return session.scalar(select(User).where(User.username == username))


def load_user(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def lock_user(session: Session, user_id: int) -> None:
    """Hold the user's row until the transaction ends (PostgreSQL: FOR UPDATE; on SQLite a
    transaction that has written already holds the database's write lock)."""
    session.execute(select(User.id).where(User.id == user_id).with_for_update())


class ApiKeyRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, key: ApiKey) -> ApiKey:
        self._session.add(key)
        self._session.flush()
        return key

    def by_hash(self, key_hash: str) -> ApiKey | None:
        return self._session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))

    def with_owner(self, key_hash: str) -> tuple[ApiKey, User] | None:
        """The key and its user in one round trip: this runs on every API-key request."""
        query = select(ApiKey, User).join(User, User.id == ApiKey.user_id)
        row = self._session.execute(query.where(ApiKey.key_hash == key_hash)).first()
        return (row[0], row[1]) if row else None

    def touch(self, key_id: int, moment: datetime) -> None:
        self._session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=moment))

    def for_user(self, user_id: int) -> Sequence[ApiKey]:
        return self._session.scalars(
            select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)
        ).all()

    def get(self, user_id: int, key_id: int) -> ApiKey | None:
        return self._session.scalar(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id)
        )

    def delete(self, key: ApiKey) -> None:
        self._session.execute(delete(ApiKey).where(ApiKey.id == key.id))

    def delete_for_user(self, user_id: int) -> int:
        """Every key of the user; how many there were."""
        result = self._session.execute(delete(ApiKey).where(ApiKey.user_id == user_id))
        return int(getattr(result, "rowcount", 0) or 0)


class WebSessionRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, web_session: WebSession) -> WebSession:
        self._session.add(web_session)
        self._session.flush()
        return web_session

    def by_hash(self, token_hash: str, now: datetime) -> WebSession | None:
        return self._session.scalar(
            select(WebSession).where(
                WebSession.token_hash == token_hash, WebSession.expires_at > now
            )
        )

    def delete_by_hash(self, token_hash: str) -> None:
        self._session.execute(delete(WebSession).where(WebSession.token_hash == token_hash))

    def delete_for_user(self, user_id: int, keep_id: int | None = None) -> None:
        query = delete(WebSession).where(WebSession.user_id == user_id)
        if keep_id is not None:
            query = query.where(WebSession.id != keep_id)
        self._session.execute(query)

    def delete_for_group_members(self, group_id: int, keep_id: int | None = None) -> None:
        members = select(UserGroupMember.user_id).where(UserGroupMember.group_id == group_id)
        query = delete(WebSession).where(WebSession.user_id.in_(members))
        if keep_id is not None:
            query = query.where(WebSession.id != keep_id)
        self._session.execute(query)

    def for_user(self, user_id: int, now: datetime) -> Sequence[WebSession]:
        return self._session.scalars(
            select(WebSession)
            .where(WebSession.user_id == user_id, WebSession.expires_at > now)
            .order_by(WebSession.created_at.desc(), WebSession.id.desc())
        ).all()

    def purge_expired(self, now: datetime) -> None:
        self._session.execute(delete(WebSession).where(WebSession.expires_at <= now))

    def delete_one(self, user_id: int, session_id: int) -> bool:
        result = self._session.execute(
            delete(WebSession).where(WebSession.id == session_id, WebSession.user_id == user_id)
        )
        return bool(getattr(result, "rowcount", 0) == 1)
