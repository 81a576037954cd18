"""System security state shared by every server process: settings changed through the API
(rate-limit policy) and the progress of key-encryption-key rotations."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from tessera.storage.models import Base, _now


class SecuritySetting(Base):
    """One named JSON document; `version` grows on every write so that processes reload
    only when something changed (one small indexed read per poll)."""

    __tablename__ = "security_settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class KekRotation(Base):
    """One re-encryption of every stored key under a new KEK. `progress` maps each key
    column to the last row id done, committed with that batch, so a crash resumes there."""

    __tablename__ = "kek_rotations"
    __table_args__ = (
        # One rotation at a time: requests racing past the service's check are parted here,
        # so only one of them writes the KEK file (migration 0018).
        Index(
            "uq_kek_rotations_running",
            "status",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # running, finished, failed
    new_fingerprint: Mapped[str] = mapped_column(String(32))
    old_fingerprints: Mapped[list[str]] = mapped_column(JSON)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON)
    rotated: Mapped[int] = mapped_column(Integer, default=0)
    requested_by: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(default=_now)
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
