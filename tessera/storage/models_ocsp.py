"""OCSP responder tables: the delegated signing certificate of each CA, and request counters
shared by every server process. Pre-signed responses live in each process's memory (see
docs/ocsp.md), not here."""

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tessera.storage.models import Base, _now

# Every counter /api/v2/ocsp/stats reports; migration 0005 creates one row each.
COUNTERS = (
    "requests",
    "get",
    "post",
    "nonce",
    "good",
    "revoked",
    "unknown",
    "malformed",
    "unauthorized",
    "internal_error",
    "too_large",
    "cache_hits",
    "signed",
)


class OCSPSigner(Base):
    """A delegated OCSP signing certificate (a row in `certificates`, key encrypted there).
    The newest generation of a CA is its current signer; the unique (ca_id, generation) pair
    lets only one server process win a rollover."""

    __tablename__ = "ocsp_signers"
    __table_args__ = (UniqueConstraint("ca_id", "generation"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ca_id: Mapped[int] = mapped_column(
        ForeignKey("certificate_authorities.id", ondelete="CASCADE"), index=True
    )
    certificate_id: Mapped[int] = mapped_column(
        ForeignKey("certificates.id", ondelete="CASCADE"), index=True
    )
    generation: Mapped[int] = mapped_column(Integer)
    not_after: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=_now)


class OCSPCounter(Base):
    """Totals since the database was made; processes add their deltas every few seconds."""

    __tablename__ = "ocsp_counters"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
