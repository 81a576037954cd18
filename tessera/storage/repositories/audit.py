"""Audit rows: appended into an HMAC chain, queried, cleaned up and walked for verification.

Appends are serialised per organization by the chain head row: the first statement of an
append is an UPDATE of that row (a row lock on PostgreSQL held to commit; on SQLite a write,
so it runs under the database's write lock, see storage/sqlite_writes.py). The rows' ids are
drawn in the same statement, so each MAC can cover its row's id. Three statements per append,
however many rows it chains (the INSERT is executed for all of them at once): a batch of
issuances appends its rows together."""

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    Text,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tessera.core import audit_chain
from tessera.storage.models import AuditLog
from tessera.storage.models_audit import AuditChainHead, AuditCheckpoint, AuditSetting

# Where the process's chain key and the rows appended in a unit of work live on the session
# (set by the session factory, see domains/audit/wiring.py).
KEY_INFO = "tessera_audit_key"
APPENDED_INFO = "tessera_audit_appended"

# Columns a MAC covers, by their name in audit_chain.FIELDS.
_COVERED: dict[str, Any] = {
    "id": AuditLog.id,
    "org_id": AuditLog.org_id,
    "seq": AuditLog.chain_seq,
    "prev_id": AuditLog.chain_prev_id,
    "prev_mac": AuditLog.chain_prev_mac,
    "timestamp": AuditLog.timestamp,
    "user_id": AuditLog.user_id,
    "username": AuditLog.username,
    "actor_type": AuditLog.actor_type,
    "action": AuditLog.action,
    "resource_type": AuditLog.resource_type,
    "resource_id": AuditLog.resource_id,
    "details": AuditLog.details,
    "ip_address": AuditLog.ip_address,
    "user_agent": AuditLog.user_agent,
    "success": AuditLog.success,
    "request_id": AuditLog.request_id,
    "status_code": AuditLog.status_code,
}
_CHAIN_COLUMNS = [*_COVERED.values(), AuditLog.chain_mac]
_INSERT = insert(AuditLog)  # executed on the Connection: a plain Core INSERT
# The UPDATE takes the chain lock (a row lock on PostgreSQL; on SQLite, being a write, the
# database write lock) and returns the previous row's id and MAC and the new rows' ids. On
# SQLite they are max(id) + 1 onwards: no other writer runs until commit.
_ADVANCE = {
    True: text(
        "UPDATE audit_chain_heads SET last_seq = last_seq + :count WHERE chain_id = :chain "
        "RETURNING last_seq, last_id, last_mac, legacy_max_id, "
        "ARRAY(SELECT nextval(pg_get_serial_sequence('audit_logs', 'id')) "
        "FROM generate_series(1, :count))"
    ),
    False: text(
        "UPDATE audit_chain_heads SET last_seq = last_seq + :count WHERE chain_id = :chain "
        "RETURNING last_seq, last_id, last_mac, legacy_max_id, "
        "(SELECT coalesce(max(id), 0) + 1 FROM audit_logs)"
    ),
}
_SET_HEAD = text(
    "UPDATE audit_chain_heads SET last_seq = :seq, last_id = :id, last_mac = :mac "
    "WHERE chain_id = :chain"
)
# Raises a head's position to that of the row it names, where it lags (see settle_chains).
_REPAIR_STALE_HEADS = text(
    "UPDATE audit_chain_heads SET last_seq = (SELECT chain_seq FROM audit_logs "
    "WHERE audit_logs.id = audit_chain_heads.last_id) "
    "WHERE legacy_max_id IS NULL AND last_seq < (SELECT chain_seq FROM audit_logs "
    "WHERE audit_logs.id = audit_chain_heads.last_id "
    "AND audit_logs.org_id = audit_chain_heads.chain_id)"
)
VERIFY_BATCH = 2000


@dataclass(frozen=True)
class AuditFilter:
    """Every filter of both dialects; None means "any". `since` is inclusive, `before`
    exclusive. `nothing` matches no row (a filter value no row can have)."""

    username: str | None = None
    action: str | None = None
    success: bool | None = None
    since: datetime | None = None
    before: datetime | None = None
    search: str | None = None
    user_id: int | None = None
    actor_type: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    request_id: str | None = None
    status_code: int | None = None
    nothing: bool = False


# v1 order_by names -> columns; the id breaks ties so pages never overlap.
ORDER_COLUMNS: dict[str, Any] = {
    "occurred_at": AuditLog.timestamp,
    "id": AuditLog.id,
    "action": AuditLog.action,
    "actor_id": AuditLog.user_id,
    "actor_type": AuditLog.actor_type,
    "entity_type": AuditLog.resource_type,
    "entity_id": AuditLog.resource_id,
    "is_success": AuditLog.success,
    "status_code": AuditLog.status_code,
    "request_id": AuditLog.request_id,
}


@dataclass(frozen=True)
class ChainState:
    head: AuditChainHead | None
    checkpoints: Sequence[AuditCheckpoint]


def covered_values(row: Any) -> dict[str, Any]:
    """The MAC's inputs from an AuditLog, or from a row mapping keyed by column name."""
    if isinstance(row, AuditLog):
        return {name: getattr(row, column.key) for name, column in _COVERED.items()}
    return {name: row[column.key] for name, column in _COVERED.items()}


class AuditRepository:
    """Appends and reads audit rows of one organization (its chain id is the org id)."""

    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    # --- appending -----------------------------------------------------------------------

    def add(self, **fields: Any) -> dict[str, Any]:
        return self.add_many([fields])[0]

    def add_many(self, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append the events' rows in their order, each to the chain of its organization (the
        repository's unless the event names another), and return them as written (values by
        column; no mapped objects: an issuance appends one, and building it cost more than
        its INSERT). Chains are appended to in id order, as everywhere, so that two
        transactions never take two heads in opposite order."""
        rows: list[dict[str, Any]] = []
        chains: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
        for fields in events:
            values = {column.key: fields.get(column.key) for column in _COVERED.values()}
            values["org_id"] = chain_id = int(fields.get("org_id", self._org_id))
            values["timestamp"] = fields.get("timestamp") or datetime.now(UTC)
            values["success"] = fields.get("success", True)
            rows.append(values)
            chains[chain_id].append(values)
        key = self._key()
        for chain_id in sorted(chains):  # heads are locked in id order (PostgreSQL deadlocks)
            self._chain(chain_id, chains[chain_id], key)
        self._session.info.setdefault(APPENDED_INFO, []).extend(rows)
        return rows

    def _chain(self, chain_id: int, rows: list[dict[str, Any]], key: bytes) -> None:
        """Give the rows their ids, positions and MACs after the chain's head, and write them."""
        seq, prev_id, prev_mac, new_ids = self._advance_head(chain_id, key, len(rows))
        for values, new_id in zip(rows, new_ids, strict=True):
            values.update(id=new_id, chain_seq=seq, chain_prev_id=prev_id, chain_prev_mac=prev_mac)
            values["chain_mac"] = prev_mac = audit_chain.row_mac(key, covered_values(values))
            prev_id, seq = new_id, seq + 1
        # Core statements built once: on this hot path (every issuance) the ORM's statement
        # building and flush cost more than the SQL itself.
        connection = self._session.connection()
        connection.execute(_INSERT, rows)
        head = {"chain": chain_id, "seq": seq - 1, "id": prev_id, "mac": prev_mac}
        connection.execute(_SET_HEAD, head)

    def _key(self) -> bytes:
        key = self._session.info.get(KEY_INFO)
        if not key:
            raise RuntimeError(
                "this session has no audit chain key: open sessions from Runtime.sessions"
            )
        return bytes(key)

    def _advance_head(
        self, chain_id: int, key: bytes, count: int
    ) -> tuple[int, int | None, str, list[int]]:
        """Lock the head (by updating it); the first new row's position, the previous row's
        id and MAC, and `count` new row ids."""
        connection = self._session.connection()
        postgresql = connection.dialect.name == "postgresql"
        statement, params = _ADVANCE[postgresql], {"chain": chain_id, "count": count}
        found = connection.execute(statement, params).first()
        if found is None:
            self._create_head(chain_id, key)
            found = connection.execute(statement, params).one()
        last_seq, last_id, last_mac, legacy_max_id, ids = found
        first_seq = int(last_seq) - count + 1
        if legacy_max_id is not None:
            sealed, last_id, last_mac = self._seal_legacy(chain_id, key, legacy_max_id)
            first_seq = sealed + 1
        new_ids = sorted(int(i) for i in ids) if postgresql else list(range(ids, ids + count))
        return first_seq, last_id, str(last_mac), new_ids

    def _create_head(self, chain_id: int, key: bytes) -> None:
        dialect = self._session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        values = {
            "chain_id": chain_id,
            "last_seq": 0,
            "last_mac": audit_chain.GENESIS_MAC,
            "key_id": audit_chain.key_id(key),
            "updated_at": datetime.now(UTC),
        }
        self._session.execute(insert(AuditChainHead).values(values).on_conflict_do_nothing())

    def _seal_legacy(self, chain_id: int, key: bytes, upto_id: int) -> tuple[int, int | None, str]:
        """Chain rows written before migration 0006, in id order (the head is locked)."""
        rows = self._session.scalars(
            select(AuditLog)
            .where(
                AuditLog.org_id == chain_id,
                AuditLog.id <= upto_id,
                AuditLog.chain_seq.is_(None),
            )
            .order_by(AuditLog.id)
        ).all()
        prev_id: int | None = None
        prev_mac = audit_chain.GENESIS_MAC
        for seq, row in enumerate(rows, start=1):
            row.chain_seq, row.chain_prev_id, row.chain_prev_mac = seq, prev_id, prev_mac
            row.chain_mac = audit_chain.row_mac(key, covered_values(row))
            prev_id, prev_mac = row.id, row.chain_mac
        self._session.flush()
        self._session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.chain_id == chain_id)
            .values(
                last_seq=len(rows),
                last_id=prev_id,
                last_mac=prev_mac,
                legacy_max_id=None,
                key_id=audit_chain.key_id(key),
            )
        )
        return len(rows), prev_id, prev_mac

    def settle_chains(self) -> int:
        """At start: chain every organization's pre-chain rows still waiting (migration 0006),
        and repair heads left behind by the old first-append seal; returns the rows sealed.
        Until 2026-11-26 an append that sealed legacy rows left the head's position at the
        number sealed while naming the newest row, so every later append collided."""
        self._session.execute(_REPAIR_STALE_HEADS)
        waiting = self._session.scalars(
            select(AuditChainHead.chain_id)
            .where(AuditChainHead.legacy_max_id.is_not(None))
            .order_by(AuditChainHead.chain_id)
        ).all()
        sealed = 0
        for chain_id in waiting:
            # Lock the head, then read what is left to seal: another process's append may
            # have sealed it in between.
            legacy_max_id = self._session.execute(
                update(AuditChainHead)
                .where(AuditChainHead.chain_id == chain_id)
                .values(updated_at=datetime.now(UTC))
                .returning(AuditChainHead.legacy_max_id)
            ).scalar_one()
            if legacy_max_id is not None:
                sealed += self._seal_legacy(chain_id, self._key(), legacy_max_id)[0]
        return sealed

    # --- reading -------------------------------------------------------------------------

    def _scoped(self) -> Select[AuditLog]:
        return select(AuditLog).where(AuditLog.org_id == self._org_id)

    def _conditions(self, f: AuditFilter) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = [AuditLog.org_id == self._org_id]
        if f.nothing:
            found.append(AuditLog.id.is_(None))
        equal = (
            (AuditLog.username, f.username),
            (AuditLog.action, f.action),
            (AuditLog.success, f.success),
            (AuditLog.user_id, f.user_id),
            (AuditLog.actor_type, f.actor_type),
            (AuditLog.resource_type, f.resource_type),
            (AuditLog.resource_id, f.resource_id),
            (AuditLog.request_id, f.request_id),
            (AuditLog.status_code, f.status_code),
        )
        found.extend(column == value for column, value in equal if value is not None)
        if f.since is not None:
            found.append(AuditLog.timestamp >= f.since)
        if f.before is not None:
            found.append(AuditLog.timestamp < f.before)
        if f.search:
            escaped = f.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            found.append(
                or_(
                    cast(AuditLog.details, Text).ilike(pattern, escape="\\"),
                    AuditLog.resource_id.ilike(pattern, escape="\\"),
                )
            )
        return found

    def get(self, log_id: int) -> AuditLog | None:
        return self._session.scalar(self._scoped().where(AuditLog.id == log_id))

    def count(self, f: AuditFilter) -> int:
        query = select(func.count()).select_from(AuditLog).where(*self._conditions(f))
        return int(self._session.scalar(query) or 0)

    def page(self, f: AuditFilter, offset: int, limit: int) -> Sequence[AuditLog]:
        """Newest first."""
        query = (
            select(AuditLog)
            .where(*self._conditions(f))
            .order_by(AuditLog.timestamp.desc(), AuditLog.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return self._session.scalars(query).all()

    def ordered(
        self, f: AuditFilter, order_by: str, descending: bool, offset: int, limit: int
    ) -> Sequence[AuditLog]:
        column = ORDER_COLUMNS[order_by]
        direction = (column.desc(), AuditLog.id.desc()) if descending else (column, AuditLog.id)
        query = select(AuditLog).where(*self._conditions(f)).order_by(*direction)
        return self._session.scalars(query.offset(offset).limit(limit)).all()

    def newest_batches(self, f: AuditFilter, limit: int, batch: int) -> Iterator[list[AuditLog]]:
        """Up to `limit` rows, newest first, in batches (keyset paging: no OFFSET scans)."""
        after: tuple[datetime, int] | None = None
        left = limit
        while left > 0:
            query = select(AuditLog).where(*self._conditions(f))
            if after is not None:
                query = query.where(tuple_(AuditLog.timestamp, AuditLog.id) < tuple_(*after))
            query = query.order_by(AuditLog.timestamp.desc(), AuditLog.id.desc())
            rows = list(self._session.scalars(query.limit(min(batch, left))).all())
            if not rows:
                return
            yield rows
            left -= len(rows)
            after = (rows[-1].timestamp, rows[-1].id)

    def stats(self, since: datetime, top: int = 10) -> dict[str, Any]:
        where = [AuditLog.org_id == self._org_id, AuditLog.timestamp >= since]
        total, successes = self._session.execute(
            select(func.count(), func.coalesce(func.sum(case((AuditLog.success, 1), else_=0)), 0))
            .select_from(AuditLog)
            .where(*where)
        ).one()
        return {
            "total": int(total),
            "successes": int(successes),
            "top_actions": self._top(AuditLog.action, where, top),
            "top_users": self._top(AuditLog.username, where, top),
            "recent_failures": self._session.scalars(
                self._scoped()
                .where(*where, AuditLog.success.is_(False))
                .order_by(AuditLog.timestamp.desc(), AuditLog.id.desc())
                .limit(top)
            ).all(),
        }

    def _top(self, column: Any, where: list[Any], top: int) -> list[tuple[Any, int]]:
        counted = func.count().label("n")
        rows = self._session.execute(
            select(column, counted)
            .where(*where)
            .group_by(column)
            .order_by(counted.desc(), column)
            .limit(top)
        ).all()
        return [(value, int(n)) for value, n in rows]

    def actions(self) -> list[str]:
        query = select(AuditLog.action).where(AuditLog.org_id == self._org_id).distinct()
        return sorted(self._session.scalars(query).all())

    # --- chain: state, verification walk, retention --------------------------------------

    def chain_state(self) -> ChainState:
        head = self._session.get(AuditChainHead, self._org_id)
        checkpoints = self._session.scalars(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.chain_id == self._org_id)
            .order_by(AuditCheckpoint.id.desc())
        ).all()
        return ChainState(head, checkpoints)

    def chain_rows(
        self, start_seq: int, id_from: int | None = None, id_to: int | None = None
    ) -> Iterator[Row[Any]]:
        """Chained rows from a position on, in (seq, id) order, read in batches."""
        after: tuple[int, int] | None = None
        while True:
            query = select(*_CHAIN_COLUMNS).where(
                AuditLog.org_id == self._org_id, AuditLog.chain_seq >= start_seq
            )
            query = self._id_range(query, id_from, id_to)
            if after is not None:
                query = query.where(tuple_(AuditLog.chain_seq, AuditLog.id) > tuple_(*after))
            query = query.order_by(AuditLog.chain_seq, AuditLog.id).limit(VERIFY_BATCH)
            rows = self._session.execute(query).all()
            yield from rows
            if len(rows) < VERIFY_BATCH:
                return
            after = (rows[-1].chain_seq, rows[-1].id)

    def unchained(
        self, start_seq: int, id_from: int | None, id_to: int | None, legacy_upto: int | None
    ) -> Sequence[Any]:
        """Rows the walk never reaches: no position, or a position before the start."""
        outside = or_(AuditLog.chain_seq.is_(None), AuditLog.chain_seq < start_seq)
        query = select(AuditLog.id, AuditLog.chain_seq).where(
            AuditLog.org_id == self._org_id, outside
        )
        if legacy_upto is not None:  # pre-chain rows waiting to be sealed are not findings
            query = query.where(or_(AuditLog.id > legacy_upto, AuditLog.chain_seq.is_not(None)))
        query = self._id_range(query, id_from, id_to).order_by(AuditLog.id).limit(10_000)
        return self._session.execute(query).all()

    @staticmethod
    def _id_range(query: Any, id_from: int | None, id_to: int | None) -> Any:
        if id_from is not None:
            query = query.where(AuditLog.id >= id_from)
        if id_to is not None:
            query = query.where(AuditLog.id <= id_to)
        return query

    def lock_head(self) -> AuditChainHead | None:
        """Take the chain lock for a cleanup (the same row lock appends take)."""
        self._session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.chain_id == self._org_id)
            .values(updated_at=datetime.now(UTC))
        )
        head = self._session.get(AuditChainHead, self._org_id, populate_existing=True)
        return head

    def first_seq_since(self, start_seq: int, cutoff: datetime) -> int | None:
        """The first chain position, from `start_seq` on, of a row not older than `cutoff`."""
        return self._session.scalar(
            select(func.min(AuditLog.chain_seq)).where(
                AuditLog.org_id == self._org_id,
                AuditLog.chain_seq >= start_seq,
                AuditLog.timestamp >= cutoff,
            )
        )

    def at_seq(self, seq: int) -> Any:
        return self._session.execute(
            select(AuditLog.id, AuditLog.chain_mac).where(
                AuditLog.org_id == self._org_id, AuditLog.chain_seq == seq
            )
        ).first()

    def delete_before(self, start_seq: int, first_kept: int) -> int:
        result = self._session.execute(
            delete(AuditLog).where(
                AuditLog.org_id == self._org_id,
                and_(AuditLog.chain_seq >= start_seq, AuditLog.chain_seq < first_kept),
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def add_checkpoint(self, checkpoint: audit_chain.Checkpoint, key: bytes) -> AuditCheckpoint:
        row = AuditCheckpoint(
            chain_id=checkpoint.chain_id,
            start_seq=checkpoint.start_seq,
            prev_id=checkpoint.prev_id,
            prev_mac=checkpoint.prev_mac,
            deleted=checkpoint.deleted,
            created_at=checkpoint.created_at,
            mac=checkpoint.mac(key),
        )
        self._session.add(row)
        self._session.flush()
        return row

    def chain_key(self) -> bytes:
        return self._key()


class AuditSettingsRepository:
    """Named JSON settings of the audit area, global to the installation."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, name: str) -> dict[str, Any] | None:
        row = self._session.get(AuditSetting, name)
        return dict(row.value) if row is not None else None

    def put(self, name: str, value: dict[str, Any], by: str | None) -> None:
        row = self._session.get(AuditSetting, name)
        now = datetime.now(UTC)
        if row is None:
            self._session.add(AuditSetting(name=name, value=value, updated_at=now, updated_by=by))
        else:
            row.value, row.updated_at, row.updated_by = value, now, by
        self._session.flush()

    def claim(self, name: str, not_since: datetime, now: datetime) -> bool:
        """Compare-and-set on a timestamp row: True for exactly one caller per period, in
        any number of server processes."""
        dialect = self._session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._session.execute(
            insert(AuditSetting)
            .values(name=name, value={}, updated_at=datetime(1970, 1, 1, tzinfo=UTC))
            .on_conflict_do_nothing()
        )
        result = self._session.execute(
            update(AuditSetting)
            .where(AuditSetting.name == name, AuditSetting.updated_at < not_since)
            .values(updated_at=now)
        )
        return int(getattr(result, "rowcount", 0) or 0) == 1

    def organizations_with_chains(self) -> list[int]:
        return list(self._session.scalars(select(AuditChainHead.chain_id)).all())
