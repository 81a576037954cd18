"""System-wide security state (not scoped to an organization): API-managed settings, KEK
rotations, and the stored key columns every rotation and status report walks.

Key columns are found in the live schema rather than in a hand-kept list, so a table another
module adds later is covered as soon as it exists: a column named `encrypted_*` holds tokens
of the KEK (the house convention), and any other column whose name contains `private_key`
is reported, since it could hold a key in the clear."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, column, func, inspect, or_, select, table, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnClause

from tessera.storage.models import AuditLog
from tessera.storage.models_security import KekRotation, SecuritySetting

# Every Fernet token starts with version byte 0x80 and a 64-bit timestamp whose high bytes
# are zero: "gAAAAA" in urlsafe base64.
FERNET_PREFIX = "gAAAAA"


@dataclass(frozen=True)
class KeyColumn:
    table: str
    column: str
    encrypted_by_convention: bool  # an `encrypted_*` column: rotation rewrites it

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    @property
    def holds_private_keys(self) -> bool:
        return "key" in self.column


@dataclass(frozen=True)
class KeyCounts:
    encrypted: int
    unencrypted: int


def _id_and(key_column: KeyColumn) -> tuple[ColumnClause[Any], ColumnClause[Any]]:
    return column("id"), column(key_column.column)


class SecurityRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    # Settings -----------------------------------------------------------------------------

    def setting(self, name: str) -> SecuritySetting | None:
        return self._session.get(SecuritySetting, name)

    def setting_version(self, name: str) -> int | None:
        found = self._session.execute(
            select(SecuritySetting.version).where(SecuritySetting.name == name)
        ).scalar_one_or_none()
        return int(found) if found is not None else None

    def put_setting(self, name: str, value: dict[str, Any], moment: datetime) -> SecuritySetting:
        row = self.setting(name)
        if row is None:
            row = SecuritySetting(name=name, value=value, version=1, updated_at=moment)
            self._session.add(row)
        else:
            row.value = value
            row.version = row.version + 1
            row.updated_at = moment
        self._session.flush()
        return row

    # Rotations ----------------------------------------------------------------------------

    def add_rotation(self, row: KekRotation) -> KekRotation:
        self._session.add(row)
        self._session.flush()
        return row

    def rotation(self, rotation_id: int) -> KekRotation | None:
        return self._session.get(KekRotation, rotation_id)

    def running_rotation(self) -> KekRotation | None:
        return (
            self._session.execute(
                select(KekRotation).where(KekRotation.status == "running").order_by(KekRotation.id)
            )
            .scalars()
            .first()
        )

    def latest_rotation(self, status: str | None = None) -> KekRotation | None:
        query = select(KekRotation).order_by(KekRotation.id.desc()).limit(1)
        if status is not None:
            query = query.where(KekRotation.status == status)
        return self._session.execute(query).scalars().first()

    def claim_rotation(self, rotation_id: int, moment: datetime, stale_before: datetime) -> bool:
        """Take over a running rotation nobody has touched lately (its worker died), or
        extend our own claim. One UPDATE, so two processes cannot both win."""
        result = self._session.execute(
            update(KekRotation)
            .where(
                KekRotation.id == rotation_id,
                KekRotation.status == "running",
                or_(KekRotation.heartbeat_at.is_(None), KekRotation.heartbeat_at < stale_before),
            )
            .values(heartbeat_at=moment)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    # Stored keys --------------------------------------------------------------------------

    def key_columns(self) -> list[KeyColumn]:
        found = []
        inspector = inspect(self._session.get_bind())
        for table_name in sorted(inspector.get_table_names()):
            columns = inspector.get_columns(table_name)
            if not any(c["name"] == "id" for c in columns):
                continue
            for col in columns:
                name = str(col["name"])
                if name.startswith("encrypted_"):
                    found.append(KeyColumn(table_name, name, True))
                elif "private_key" in name:
                    found.append(KeyColumn(table_name, name, False))
        return found

    def key_counts(self, key_column: KeyColumn) -> KeyCounts:
        value: ColumnClause[Any] = column(key_column.column)
        source = table(key_column.table, value)
        sealed = value.like(f"{FERNET_PREFIX}%")
        row = self._session.execute(
            select(
                func.count().filter(and_(value.is_not(None), value != "", sealed)),
                func.count().filter(and_(value.is_not(None), value != "", ~sealed)),
            ).select_from(source)
        ).one()
        return KeyCounts(int(row[0]), int(row[1]))

    def key_batch(self, key_column: KeyColumn, after_id: int, limit: int) -> list[tuple[int, str]]:
        ident, value = _id_and(key_column)
        rows = self._session.execute(
            select(ident, value)
            .select_from(table(key_column.table, ident, value))
            .where(ident > after_id, value.is_not(None), value != "")
            .order_by(ident)
            .limit(limit)
        ).all()
        return [(int(r[0]), str(r[1])) for r in rows]

    def swap_key(self, key_column: KeyColumn, row_id: int, old: str, new: str) -> bool:
        """Compare-and-set: a request that replaced the value meanwhile wins, and the caller
        reads the row again."""
        ident, value = _id_and(key_column)
        result = self._session.execute(
            update(table(key_column.table, ident, value))
            .where(ident == row_id, value == old)
            .values({key_column.column: new})
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def key_value(self, key_column: KeyColumn, row_id: int) -> str | None:
        ident, value = _id_and(key_column)
        found = self._session.execute(
            select(value).select_from(table(key_column.table, ident, value)).where(ident == row_id)
        ).scalar_one_or_none()
        return None if found is None else str(found)

    # Audit-based anomaly detection ----------------------------------------------------------

    def audit_bursts(
        self,
        org_id: int,
        action_prefixes: tuple[str, ...],
        success: bool,
        by: str,
        since: datetime,
        threshold: int,
    ) -> list[tuple[str, int, datetime, datetime]]:
        """(subject, count, first, last) of audit rows grouped by `by` ("ip" or "user")
        since a moment, for groups of at least `threshold` rows (uses the org/time index)."""
        subject = AuditLog.ip_address if by == "ip" else AuditLog.username
        count = func.count(AuditLog.id)
        rows = self._session.execute(
            select(subject, count, func.min(AuditLog.timestamp), func.max(AuditLog.timestamp))
            .where(
                AuditLog.org_id == org_id,
                AuditLog.timestamp >= since,
                AuditLog.success.is_(success),
                or_(*(AuditLog.action.like(f"{p}%") for p in action_prefixes)),
                subject.is_not(None),
            )
            .group_by(subject)
            .having(count >= threshold)
            .order_by(count.desc())
            .limit(50)
        ).all()
        return [(str(r[0]), int(r[1]), r[2], r[3]) for r in rows]
