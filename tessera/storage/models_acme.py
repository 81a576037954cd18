"""ACME server tables (RFC 8555): accounts, orders, authorizations, challenges, nonces,
external account binding keys, early-renewal marks and the per-organization settings."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from tessera.storage.models import Base, _now


class AcmeSettings(Base):
    """One row per organization; created with defaults on first read."""

    __tablename__ = "acme_settings"
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    issuing_ca_id: Mapped[int | None] = mapped_column(Integer)
    template_id: Mapped[int | None] = mapped_column(Integer)
    validity_days: Mapped[int] = mapped_column(Integer, default=90)
    require_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    require_eab: Mapped[bool] = mapped_column(Boolean, default=False)
    caa_check_ca_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    caa_identities: Mapped[list[str]] = mapped_column(JSON, default=list)
    terms_of_service: Mapped[str | None] = mapped_column(String(500))
    website: Mapped[str | None] = mapped_column(String(500))
    # name -> {"description", "template_id", "validity_days"}
    profiles: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class AcmeNonce(Base):
    __tablename__ = "acme_nonces"
    value: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AcmeAccount(Base):
    __tablename__ = "acme_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    thumbprint: Mapped[str] = mapped_column(String(64), unique=True)
    jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    contact: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="valid")  # valid|deactivated|revoked
    eab_kid: Mapped[str | None] = mapped_column(String(128))
    terms_agreed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class AcmeEabKey(Base):
    __tablename__ = "acme_eab_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    kid: Mapped[str] = mapped_column(String(128), unique=True)
    encrypted_hmac_key: Mapped[str] = mapped_column(Text)  # Fernet token under the KEK
    comment: Mapped[str | None] = mapped_column(String(300))
    account_id: Mapped[int | None] = mapped_column(Integer)  # bound once used
    created_by: Mapped[str | None] = mapped_column(String(150))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    revoked_at: Mapped[datetime | None]


REPLACING = "replaces IS NOT NULL AND status <> 'invalid'"


class AcmeOrder(Base):
    __tablename__ = "acme_orders"
    __table_args__ = (
        Index("ix_acme_orders_org_status", "org_id", "status", "expires_at"),
        # RFC 9773 5: one live order replaces a certificate; two new-orders racing past the
        # check in the service are parted here (migration 0016).
        Index(
            "uq_acme_orders_replaces",
            "org_id",
            "replaces",
            unique=True,
            sqlite_where=text(REPLACING),
            postgresql_where=text(REPLACING),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("acme_accounts.id"), index=True)
    # pending | ready | processing | valid | invalid
    status: Mapped[str] = mapped_column(String(16), default="pending")
    expires_at: Mapped[datetime]
    identifiers: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    not_before: Mapped[datetime | None]
    not_after: Mapped[datetime | None]
    profile: Mapped[str | None] = mapped_column(String(64))
    replaces: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    csr_pem: Mapped[str | None] = mapped_column(Text)
    awaiting_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    certificate_id: Mapped[int | None] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class AcmeAuthorization(Base):
    __tablename__ = "acme_authorizations"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    order_id: Mapped[int] = mapped_column(ForeignKey("acme_orders.id"), index=True)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    identifier_type: Mapped[str] = mapped_column(String(8))  # dns | ip
    identifier_value: Mapped[str] = mapped_column(String(255))
    wildcard: Mapped[bool] = mapped_column(Boolean, default=False)
    # pending | valid | invalid | deactivated | expired | revoked
    status: Mapped[str] = mapped_column(String(16), default="pending")
    expires_at: Mapped[datetime]


class AcmeChallenge(Base):
    __tablename__ = "acme_challenges"
    __table_args__ = (Index("ix_acme_challenges_work", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    authz_id: Mapped[int] = mapped_column(ForeignKey("acme_authorizations.id"), index=True)
    type: Mapped[str] = mapped_column(String(16))  # http-01 | dns-01 | tls-alpn-01
    token: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # A challenge being validated is "processing"; a server process claims it by moving
    # next_attempt_at forward (a lease), so two processes never validate it at once.
    next_attempt_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    validated_at: Mapped[datetime | None]
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AcmeRenewalMark(Base):
    """An administrator asked for early renewal: ARI moves the window to now."""

    __tablename__ = "acme_renewal_marks"
    certificate_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    marked_at: Mapped[datetime] = mapped_column(default=_now)
    marked_by: Mapped[str | None] = mapped_column(String(150))
