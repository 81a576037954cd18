"""Certificate counts per bucket, kept by triggers (migration 0011), so that exact totals and
statistics never count certificate rows. See docs/inventory-performance.md."""

from datetime import date

from sqlalchemy import BigInteger, Date, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tessera.storage.models import Base


class CertificateTally(Base):
    """How many certificates of one organization, CA (ca_key 0: none; -1: all of the
    organization's, so that its totals read one key range), stored status and expiry day
    exist, as of the last fold."""

    __tablename__ = "certificate_tally"
    org_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ca_key: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    expiry_day: Mapped[date] = mapped_column(Date, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class CertificateTallyDelta(Base):
    """+1/-1 per bucket, appended by the triggers on every change to `certificates`; folded
    into CertificateTally by a background job."""

    __tablename__ = "certificate_tally_delta"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(Integer)
    ca_key: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    expiry_day: Mapped[date] = mapped_column(Date)
    n: Mapped[int] = mapped_column(Integer)
