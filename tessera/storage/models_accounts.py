"""Accounts tables (migration 0007): single-use account tokens, recovery codes, user groups
and the mail settings every server process reads."""

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tessera.storage.models import Base, _now


class AccountToken(Base):
    """A single-use secret sent to or held by a user: a password reset or invitation link, or
    the pending state of a login waiting for its second factor. Only a SHA-256 digest is
    stored; `used_at` is set by a conditional UPDATE, so a token is consumed at most once."""

    __tablename__ = "account_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))  # reset | invite | login
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    used_at: Mapped[datetime | None]


class UserGroup(Base):
    __tablename__ = "user_groups"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class UserGroupMember(Base):
    __tablename__ = "user_group_members"
    group_id: Mapped[int] = mapped_column(
        ForeignKey("user_groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16), default="member")
    added_at: Mapped[datetime] = mapped_column(default=_now)


class MailSettings(Base):
    """One server-wide row (id 1): stored in the database so that every server process sends
    with the same settings; environment variables only give the defaults."""

    __tablename__ = "mail_settings"
    id: Mapped[int] = mapped_column(primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    smtp_host: Mapped[str | None] = mapped_column(String(253))
    smtp_port: Mapped[int] = mapped_column(Integer, default=587)
    smtp_user: Mapped[str | None] = mapped_column(String(254))
    # Sealed under the KEK (an `encrypted_*` column, so KEK rotation rewrites it).
    encrypted_password: Mapped[str | None] = mapped_column(Text)
    smtp_tls: Mapped[bool] = mapped_column(Boolean, default=True)
    from_address: Mapped[str | None] = mapped_column(String(254))
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class LoginThrottle(Base):
    """Failed password logins of one username, whether or not an account has it (migration
    0024). Kept in the database because every server process must see the same count; keyed
    by the SHA-256 of the name, so the table is no list of what was typed as usernames
    (often a password in the wrong field)."""

    __tablename__ = "login_throttles"
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # since the last lock or success
    lockouts: Mapped[int] = mapped_column(Integer, default=0)  # how far the back-off has grown
    last_failure_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
