"""The substring-search copy of certificates' names, kept by triggers (migration 0013), and
the trigram shares that pick which trigrams to look up. See docs/inventory-performance.md."""

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tessera.storage.models import Base


class CertificateSearchRow(Base):
    """One per certificate (same id): lower(common_name), a newline, lower(san_text)."""

    __tablename__ = "certificate_search"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    org_id: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)


class SearchTrigramShare(Base):
    """The share of sampled search rows that contain a trigram (SQLite only; trigrams seen
    once or never in the sample have no row and count as rare)."""

    __tablename__ = "search_trigram_stats"
    trigram: Mapped[str] = mapped_column(String(16), primary_key=True)
    share: Mapped[float] = mapped_column(Float)
