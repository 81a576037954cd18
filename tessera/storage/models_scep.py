"""SCEP tables: profiles (one URL each, with its CA, template and RA certificate), challenge
passwords, and enrollment requests (the approval queue and the transaction log)."""

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tessera.storage.models import Base, _now


class ScepProfile(Base):
    """One SCEP endpoint. The profile named "default" is the seed's `/api/v2/scep/config` and
    answers at /scep/pkiclient.exe; the others at /scep/{slug}/pkiclient.exe."""

    __tablename__ = "scep_profiles"
    __table_args__ = (UniqueConstraint("org_id", "slug"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    slug: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    ca_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificate_authorities.id", ondelete="SET NULL")
    )
    ca_ident: Mapped[str | None] = mapped_column(String(200))
    next_ca_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificate_authorities.id", ondelete="SET NULL")
    )
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id", ondelete="SET NULL"))
    auto_approve: Mapped[bool] = mapped_column(Boolean, default=False)
    challenge_type: Mapped[str] = mapped_column(String(16), default="static")  # static|dynamic
    challenge_validity: Mapped[int] = mapped_column(Integer, default=24)  # hours (dynamic)
    queue_without_challenge: Mapped[bool] = mapped_column(Boolean, default=False)
    use_ra: Mapped[bool] = mapped_column(Boolean, default=True)  # False: the RSA CA answers
    ra_certificate_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificates.id", ondelete="SET NULL")
    )
    next_ra_certificate_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificates.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class ScepChallenge(Base):
    """A challenge password of one CA. Dynamic ones are single use, kept only as a SHA-256
    digest; the static one is also kept encrypted with the KEK so an admin can read it again."""

    __tablename__ = "scep_challenges"
    __table_args__ = (Index("ix_scep_challenges_ca_kind", "org_id", "ca_id", "kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authorities.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # static | dynamic
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    encrypted_value: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None]
    used_at: Mapped[datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(150))
    created_at: Mapped[datetime] = mapped_column(default=_now)


class ScepRequest(Base):
    """One enrollment (PKCSReq or RenewalReq) and what became of it."""

    __tablename__ = "scep_requests"
    __table_args__ = (
        Index("ix_scep_requests_org_status", "org_id", "status", "id"),
        Index("ix_scep_requests_transaction", "org_id", "profile_id", "transaction_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    profile_id: Mapped[int] = mapped_column(ForeignKey("scep_profiles.id", ondelete="CASCADE"))
    transaction_id: Mapped[str] = mapped_column(String(128))
    message_type: Mapped[str] = mapped_column(String(16))  # PKCSReq | RenewalReq
    status: Mapped[str] = mapped_column(String(16))  # pending | issued | rejected
    subject: Mapped[str] = mapped_column(Text)
    common_name: Mapped[str] = mapped_column(String(200), default="")
    key_digest: Mapped[str] = mapped_column(String(64))  # SHA-256 of the CSR's public key
    # SHA-256 of the signer certificate's public key: whose polls it answers (none before 0021)
    signer_key_digest: Mapped[str | None] = mapped_column(String(64))
    # the CSR as received, PEM, sealed under the KEK: it carries the challenge in clear
    encrypted_csr: Mapped[str] = mapped_column(Text)
    challenge: Mapped[str] = mapped_column(String(16))  # valid | missing | renewal
    certificate_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificates.id", ondelete="SET NULL")
    )
    reason: Mapped[str | None] = mapped_column(Text)
    # when a client was first given the rejection (see EnrollmentService._answers_again)
    rejection_answered_at: Mapped[datetime | None]
    client_ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(150))
