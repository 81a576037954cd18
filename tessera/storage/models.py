"""Tables. Every inventory row belongs to an organization; repositories scope by it."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (SQLite keeps no zone), always returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime, dict[str, Any]: JSON}

    @staticmethod
    def __table_cls__(name: str, metadata: MetaData, *args: Any, **kwargs: Any) -> Table:
        """A table keyed by an `id` the database picks is AUTOINCREMENT on SQLite (as
        migration 0015 made the older ones), so that a deleted row's id is never given to
        another; without it SQLite takes the largest id in the table plus one. Only those:
        SQLAlchemy would write AUTOINCREMENT on any single integer key, given ones too
        (audit_chain_heads.chain_id, certificate_search.id, declared autoincrement=False)."""
        table = Table(name, metadata, *args, **kwargs)
        key = list(table.primary_key.columns)
        picked = len(key) == 1 and key[0].autoincrement is not False
        if picked and key[0].name == "id" and type(key[0].type) is Integer:
            table.dialect_kwargs["sqlite_autoincrement"] = True
        return table


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    full_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    last_login: Mapped[datetime | None]
    # Accounts (migration 0007): TOTP second factor. The secret is set by 2fa/enable and only
    # counts once confirmed; the last accepted time step makes every code single use. The
    # secret is sealed under the KEK (an `encrypted_*` column, so KEK rotation rewrites it).
    encrypted_totp_secret: Mapped[str | None] = mapped_column(Text)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    totp_last_step: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=_now)
    last_used_at: Mapped[datetime | None]


class CredentialGeneration(Base):
    """A counter moved by triggers on every change to users, API keys, groups and
    memberships that could change what a credential grants (migration 0012)."""

    __tablename__ = "credential_generation"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class WebSession(Base):
    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime]
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))


class CertificateAuthority(Base):
    __tablename__ = "certificate_authorities"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    refid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    common_name: Mapped[str] = mapped_column(String(200))
    ca_type: Mapped[str] = mapped_column(String(16))  # root | intermediate
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("certificate_authorities.id"))
    serial_number: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)
    issuer: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    key_algorithm: Mapped[str] = mapped_column(String(16))
    key_size: Mapped[int] = mapped_column(Integer)
    signature_algorithm: Mapped[str] = mapped_column(String(64))
    subject_key_id: Mapped[str | None] = mapped_column(String(128), index=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    encrypted_private_key: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    internal: Mapped[bool] = mapped_column(Boolean, default=False)
    imported: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    # Set when its issuer (held here) revoked the CA's certificate (migration 0019).
    revoked_at: Mapped[datetime | None]
    revocation_reason: Mapped[str | None] = mapped_column(String(32))


class Template(Base):
    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    template_type: Mapped[str] = mapped_column(String(32), default="server")
    validity_days: Mapped[int | None] = mapped_column(Integer)
    key_algorithm: Mapped[str | None] = mapped_column(String(16))
    key_size: Mapped[int | None] = mapped_column(Integer)
    key_usage: Mapped[list[str] | None] = mapped_column(JSON)
    extended_key_usage: Mapped[list[str] | None] = mapped_column(JSON)
    is_ca: Mapped[bool] = mapped_column(Boolean, default=False)
    path_length: Mapped[int | None] = mapped_column(Integer)
    subject_defaults: Mapped[dict[str, str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=_now)


ORIGIN_IMPORT = "import"  # a certificate issued elsewhere and imported here


class Certificate(Base):
    __tablename__ = "certificates"
    # Every list is newest first (ORDER BY id DESC) inside one organization; each filter has
    # an index that yields its rows in that order, and counts read ranges of narrow indexes.
    # Substring search reads a narrow copy of the names kept by triggers (migration 0013,
    # models_search.py): see docs/inventory-performance.md.
    __table_args__ = (
        Index("ix_certificates_org_status_not_after", "org_id", "status", "not_after"),
        Index("ix_certificates_org_status_id", "org_id", "status", "id", "not_after"),
        Index("ix_certificates_org_ca_id", "org_id", "ca_id", "id", "status", "not_after"),
        Index("ix_certificates_org_id", "org_id", "id"),
        Index("ix_certificates_org_created_at", "org_id", "created_at"),
        Index("ix_certificates_org_revoked_at", "org_id", "revoked_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    refid: Mapped[str] = mapped_column(String(36), unique=True)
    ca_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificate_authorities.id", ondelete="SET NULL")
    )
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id", ondelete="SET NULL"))
    serial_number: Mapped[str] = mapped_column(String(64), index=True)
    common_name: Mapped[str] = mapped_column(String(200), index=True)
    subject: Mapped[str] = mapped_column(Text)
    issuer: Mapped[str] = mapped_column(Text)
    san_text: Mapped[str] = mapped_column(Text, default="")
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | revoked
    revoked_at: Mapped[datetime | None]
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    revocation_comment: Mapped[str | None] = mapped_column(Text)
    # RFC 5280 5.3.2: when the certificate became invalid (e.g. the key was compromised),
    # given on revocation; listed in CRL entries (migration 0004).
    invalidity_date: Mapped[datetime | None]
    key_algorithm: Mapped[str] = mapped_column(String(16))
    key_size: Mapped[int] = mapped_column(Integer)
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), index=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    encrypted_private_key: Mapped[str | None] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(32), default="api")  # or ORIGIN_IMPORT, ...
    created_by: Mapped[str | None] = mapped_column(String(150))
    created_at: Mapped[datetime] = mapped_column(default=_now)


class StatusChange(Base):
    """One row per revocation, released hold or deletion, written in the same transaction,
    so CRL and OCSP publishers in every server process can follow changes in order by id."""

    __tablename__ = "status_changes"
    # delta CRLs read a CA's changes since their base CRL (migration 0004)
    __table_args__ = (Index("ix_status_changes_ca_changed_at", "ca_id", "changed_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    ca_id: Mapped[int | None] = mapped_column(Integer)
    certificate_id: Mapped[int] = mapped_column(Integer)
    serial_number: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(default=_now)


class CompromisedKey(Base):
    """A public key a certificate of the organization was revoked for as compromised, by the
    SHA-256 of its SubjectPublicKeyInfo: every certificate with that key is told to renew at
    once (ACME renewal information), and ACME and renewals certify the key no more."""

    __tablename__ = "compromised_keys"
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    spki_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    certificate_id: Mapped[int] = mapped_column(Integer)  # the first one revoked for it
    reported_at: Mapped[datetime] = mapped_column(default=_now)


class IssuedSerial(Base):
    """A serial is claimed here before signing, so no two certificates ever share one."""

    __tablename__ = "issued_serials"
    serial_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    reserved_at: Mapped[datetime] = mapped_column(default=_now)


class AuditLog(Base):
    __tablename__ = "audit_logs"
    __table_args__ = (
        Index("ix_audit_logs_org_time_id", "org_id", "timestamp", "id"),
        # One row per chain position: a forked chain fails loudly instead of silently.
        Index("ux_audit_logs_org_chain_seq", "org_id", "chain_seq", unique=True),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"))
    timestamp: Mapped[datetime] = mapped_column(default=_now)
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str | None] = mapped_column(String(150))
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    success: Mapped[bool] = mapped_column(Boolean, default=True)
    # Audit chain (migration 0006, docs/audit.md): who acted and in which request, and the
    # row's place in its organization's HMAC chain. Written once, never updated.
    actor_type: Mapped[str | None] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    chain_seq: Mapped[int | None] = mapped_column(Integer)
    chain_prev_id: Mapped[int | None] = mapped_column(Integer)
    chain_prev_mac: Mapped[str | None] = mapped_column(String(64))
    chain_mac: Mapped[str | None] = mapped_column(String(64))


class CertificateRequestRow(Base):
    """An uploaded CSR waiting to be signed (or kept as history once it was)."""

    __tablename__ = "csrs"
    __table_args__ = (Index("ix_csrs_org_status", "org_id", "status"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    refid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    common_name: Mapped[str] = mapped_column(String(200), index=True)
    subject: Mapped[str] = mapped_column(Text)
    san_text: Mapped[str] = mapped_column(Text, default="")
    key_algorithm: Mapped[str] = mapped_column(String(16))
    key_size: Mapped[int] = mapped_column(Integer)
    csr_pem: Mapped[str] = mapped_column(Text)
    encrypted_private_key: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | signed
    certificate_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificates.id", ondelete="SET NULL")
    )
    signed_at: Mapped[datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(150))
    created_at: Mapped[datetime] = mapped_column(default=_now)


class TrustedCertificate(Base):
    """A certificate this organization trusts (an external root or intermediate)."""

    __tablename__ = "trusted_certificates"
    __table_args__ = (UniqueConstraint("org_id", "fingerprint_sha256"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    purpose: Mapped[str | None] = mapped_column(String(64))
    notes: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32), default="manual")  # manual | system | import
    common_name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text)
    issuer: Mapped[str] = mapped_column(Text)
    serial_number: Mapped[str] = mapped_column(Text)  # whole, however long (migration 0026)
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    is_root: Mapped[bool] = mapped_column(Boolean, default=False)
    is_ca: Mapped[bool] = mapped_column(Boolean, default=True)
    fingerprint_sha256: Mapped[str] = mapped_column(String(64))
    certificate_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=_now)
