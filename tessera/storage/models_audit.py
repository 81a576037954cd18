"""Audit chain heads, retention checkpoints and audit settings (migration 0006)."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tessera.storage.models import Base, _now


class AuditChainHead(Base):
    """The newest row of one organization's chain. Appending updates this row first, which
    serialises appends on every backend (a row lock on PostgreSQL, the write lock on SQLite)."""

    __tablename__ = "audit_chain_heads"
    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_id: Mapped[int | None] = mapped_column(Integer)
    last_mac: Mapped[str] = mapped_column(String(64), default="")
    key_id: Mapped[str | None] = mapped_column(String(16))
    # Rows up to this id were written before the chain existed; they are chained, in id
    # order, by the first append (or start) after migration 0006.
    legacy_max_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class AuditCheckpoint(Base):
    """Signed record of where a chain starts after a retention cleanup deleted older rows."""

    __tablename__ = "audit_checkpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    chain_id: Mapped[int] = mapped_column(Integer, index=True)
    start_seq: Mapped[int] = mapped_column(Integer)
    prev_id: Mapped[int | None] = mapped_column(Integer)
    prev_mac: Mapped[str] = mapped_column(String(64))
    deleted: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    mac: Mapped[str] = mapped_column(String(64))


class AuditSetting(Base):
    """Audit settings changed through the API (retention, syslog), shared by every server
    process through the database."""

    __tablename__ = "audit_settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=_now)
    updated_by: Mapped[str | None] = mapped_column(String(150))
