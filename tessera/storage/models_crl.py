"""CRL publication tables: per-CA state (the CRL number sequence and who is building),
the highest number taken per issuer (which outlives the CA rows), the published CRLs
themselves, and the entries of revoked certificates that were deleted."""

from datetime import UTC, datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tessera.storage.models import Base


def _now() -> datetime:
    return datetime.now(UTC)


class CRLState(Base):
    """One row per CA that publishes CRLs. `last_number` is the CRL number sequence that full
    and delta CRLs share (RFC 5280 5.2.3): numbers are taken with UPDATE ... RETURNING, so no
    two processes ever get the same one. A lease (owner, until) marks who is building now."""

    __tablename__ = "crl_state"
    ca_id: Mapped[int] = mapped_column(
        ForeignKey("certificate_authorities.id", ondelete="CASCADE"), primary_key=True
    )
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    last_number: Mapped[int] = mapped_column(BigInteger, default=0)
    # The full CRL that delta CRLs are computed against, and when it was taken.
    base_number: Mapped[int | None] = mapped_column(BigInteger)
    base_at: Mapped[datetime | None]
    # When the newest published CRLs read the revocation state, and when they were built.
    snapshot_at: Mapped[datetime | None]
    built_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]  # the scheduled refresh, well before nextUpdate
    lease_owner: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class IssuerCRLNumber(Base):
    """The highest CRL number taken for an issuer (an issuer group's name and key, as relying
    parties know it), per organization, with no reference to any CA row: deleting the last
    CA of a group and importing it again must not start its numbers over (RFC 5280 5.2.3:
    they increase for a given CRL issuer). A claim starts above it and raises it in the
    same transaction (migration 0023)."""

    __tablename__ = "crl_issuer_numbers"
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    name_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)  # the subject DER
    spki_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_number: Mapped[int] = mapped_column(BigInteger)


class PublishedCRL(Base):
    """A signed CRL as served: full or delta, in DER. Old ones are pruned after publication."""

    __tablename__ = "crls"
    __table_args__ = (Index("ix_crls_ca_kind_number", "ca_id", "kind", "crl_number", unique=True),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authorities.id", ondelete="CASCADE"))
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    kind: Mapped[str] = mapped_column(String(8))  # full | delta
    crl_number: Mapped[int] = mapped_column(BigInteger)
    base_number: Mapped[int | None] = mapped_column(BigInteger)  # delta CRLs only
    this_update: Mapped[datetime]
    next_update: Mapped[datetime]
    entries: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class RetainedCRLEntry(Base):
    """A revoked, unexpired certificate whose inventory row was deleted: its CRL entry must
    not vanish with it (a deleted certificate is still a revoked one until it expires)."""

    __tablename__ = "crl_retained_entries"
    __table_args__ = (Index("ix_crl_retained_ca_not_after", "ca_id", "not_after"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authorities.id", ondelete="CASCADE"))
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    certificate_id: Mapped[int] = mapped_column(Integer)
    serial_number: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(String(32))
    invalidity_date: Mapped[datetime | None]
    not_after: Mapped[datetime]
    deleted_at: Mapped[datetime] = mapped_column(default=_now)
